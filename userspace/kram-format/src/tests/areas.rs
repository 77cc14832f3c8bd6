//! Tests of areas and pages: placement, fixed runs, allocation and
//! freeing, and state that survives reopening.

use crate::*;

use super::{Region, BASE};

#[test]
fn runs_of_2m_or_more_are_placed_2m_aligned_when_they_fit() {
    const H: u64 = HUGE_RUN; // 512 pages
                             // 16 MiB region at a 2 MiB-aligned base: pages 0-5 are metadata.
    let mut r = Region::formatted(4096);
    let (mut k, _) = r.open().unwrap();
    let d = k.geometry().data_first();
    let first = |k: &Kram<'_, Direct>, id| k.area(id).unwrap().first;
    // Under 2 MiB: first fit, right after the metadata.
    let small = k.create_area(b"small", 3).unwrap();
    assert_eq!(first(&k, small), d);
    // 2 MiB and more: the next 2 MiB boundary, 512.
    let x = k.create_area(b"x", H + H / 2).unwrap();
    assert_eq!(first(&k, x), H);
    // Small ones still fill the gap before it.
    let gap = k.create_area(b"gap", 100).unwrap();
    assert_eq!(first(&k, gap), d + 3);
    // x ends at 1280; the next boundary with room is 1536 (to the end).
    let y = k.create_area(b"y", 5 * H).unwrap();
    assert_eq!(first(&k, y), 3 * H);
    // No aligned run is left, and no unaligned one of 2 MiB either.
    assert_eq!(k.create_area(b"z", H), Err(Error::NoSpace));
    // Free 6..1536 (x and the small ones deleted): 1200 pages fit there,
    // but not from the boundary at 512 (y starts at 1536): first fit.
    for id in [small, x, gap] {
        k.delete_area(id).unwrap();
    }
    let z = k.create_area(b"z", 1200).unwrap();
    assert_eq!(first(&k, z), d);
    drop(k);
    // A base that is not 2 MiB aligned: the boundary is a physical one.
    let mut r2 = Region::new(4096);
    r2.geo = Geometry::new(BASE + 10 * PAGE_SIZE as u64, 4096 * PAGE_SIZE as u64).unwrap();
    let geo = r2.geo;
    Kram::format(geo, r2.media(), Direct).unwrap();
    let (mut k2, _) = r2.open().unwrap();
    let a = k2.create_area(b"big", H).unwrap();
    assert_eq!(k2.area(a).unwrap().first, H - 10);
    assert_eq!(k2.geometry().phys(H - 10) % (2 << 20), 0);
}

#[test]
fn format_then_open_gives_an_empty_region() {
    let mut r = Region::formatted(256);
    let (k, rep) = r.open().unwrap();
    assert_eq!(
        rep,
        OpenReport {
            generation: 2,
            other_slot_bad: false,
            recovered: Intent::None
        }
    );
    let s = k.stats();
    assert_eq!(
        s,
        Stats {
            pages: 256,
            meta: 3,
            used: 0,
            free: 253
        }
    );
}

#[test]
fn areas_fixed_pages_and_allocation() {
    let mut r = Region::formatted(256);
    let (mut k, _) = r.open().unwrap();
    let a = k.create_area(b"guest-ram.0", 10).unwrap();
    assert_eq!(k.create_area(b"guest-ram.0", 1), Err(Error::Exists));
    assert_eq!(k.create_area(b"", 1), Err(Error::Invalid));
    assert_eq!(k.create_area(b"bad/name", 1), Err(Error::Invalid));
    assert_eq!(k.create_area(&[b'x'; NAME_LEN], 1), Err(Error::Invalid));
    assert_eq!(k.create_area(b"huge", 1000), Err(Error::NoSpace));
    assert_eq!(k.lookup(b"guest-ram.0"), Ok(a));
    assert_eq!(k.lookup(b"nope"), Err(Error::NoArea));
    let p0 = k.fixed_page(a, 0).unwrap();
    assert_eq!(k.fixed_page(a, 9), Ok(p0 + 9));
    assert_eq!(k.fixed_page(a, 10), Err(Error::Invalid));
    assert_eq!(k.fixed_page(9, 0), Err(Error::NoArea));
    assert_eq!(k.fixed_page(0, 0), Err(Error::NoArea));

    let b = k.create_area(b"iommu", 0).unwrap();
    let x = k.alloc_page(b).unwrap();
    let y = k.alloc_page(b).unwrap();
    assert_ne!(x, y);
    assert!(!(p0..p0 + 10).contains(&x));
    assert_eq!(k.page_owner(x), Ok((b, false)));
    assert_eq!(
        k.free_page(a, x),
        Err(Error::NotOwner),
        "another area's page"
    );
    assert_eq!(k.free_page(a, p0), Err(Error::NotOwner), "a fixed page");
    assert_eq!(k.free_page(b, 0), Err(Error::NotOwner), "metadata");
    assert_eq!(k.free_page(b, 1 << 40), Err(Error::Invalid));
    k.free_page(b, x).unwrap();
    assert_eq!(k.free_page(b, x), Err(Error::NotOwner), "double free");
    assert_eq!(k.stats().used, 11);
    k.delete_area(a).unwrap();
    assert_eq!(k.stats().used, 1);
    assert_eq!(k.delete_area(a), Err(Error::NoArea));
}

#[test]
fn allocation_exhausts_then_recovers() {
    let mut r = Region::formatted(64);
    let (mut k, _) = r.open().unwrap();
    let a = k.create_area(b"a", 0).unwrap();
    let free = k.stats().free;
    let mut got = std::collections::BTreeSet::new();
    for _ in 0..free {
        assert!(got.insert(k.alloc_page(a).unwrap()));
    }
    assert_eq!(k.alloc_page(a), Err(Error::NoSpace));
    let p = *got.iter().next().unwrap();
    k.free_page(a, p).unwrap();
    assert_eq!(k.alloc_page(a), Ok(p));
}

#[test]
fn state_survives_reopen() {
    let mut r = Region::formatted(256);
    let (a, x) = {
        let (mut k, _) = r.open().unwrap();
        let a = k.create_area(b"vm1", 5).unwrap();
        let x = k.alloc_page(a).unwrap();
        (a, x)
    };
    for _ in 0..3 {
        let (k, rep) = r.open().unwrap();
        assert_eq!(rep.recovered, Intent::None);
        assert_eq!(k.lookup(b"vm1"), Ok(a));
        assert_eq!(k.page_owner(x), Ok((a, false)));
        assert_eq!(k.area(a).unwrap().npages, 5);
        assert_eq!(k.stats().used, 6);
    }
}
