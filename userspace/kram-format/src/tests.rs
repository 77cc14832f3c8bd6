//! Host tests of the shared format code: semantics, persistence, refusal of
//! corrupt and foreign metadata, and a crash injected at every write.

#![allow(clippy::drop_non_drop)] // drops end borrows of the region, for readability

use crate::*;
use core::cell::Cell;
use core::sync::atomic::{AtomicU32, Ordering};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::vec::Vec;

pub(crate) const BASE: u64 = 0x1_0000_0000;

/// A region in host memory: the two superblock pages and the owner map.
pub(crate) struct Region {
    pub(crate) geo: Geometry,
    pub(crate) slots: [Vec<u8>; 2],
    pub(crate) map: Vec<AtomicU32>,
}

impl Region {
    pub(crate) fn new(pages: u64) -> Self {
        let geo = Geometry::new(BASE, pages * PAGE_SIZE as u64).unwrap();
        Region {
            geo,
            slots: [std::vec![0; PAGE_SIZE], std::vec![0; PAGE_SIZE]],
            map: (0..pages).map(|_| AtomicU32::new(0)).collect(),
        }
    }
    pub(crate) fn media(&mut self) -> Media<'_> {
        let [a, b] = &mut self.slots;
        Media {
            slots: [a.as_mut_slice(), b.as_mut_slice()],
            map: &self.map,
        }
    }
    fn snapshot(&self) -> (Vec<u8>, Vec<u8>, Vec<u32>) {
        (
            self.slots[0].clone(),
            self.slots[1].clone(),
            self.map.iter().map(|w| w.load(Ordering::Relaxed)).collect(),
        )
    }
    fn restore(&mut self, s: &(Vec<u8>, Vec<u8>, Vec<u32>)) {
        self.slots[0].copy_from_slice(&s.0);
        self.slots[1].copy_from_slice(&s.1);
        for (w, v) in self.map.iter().zip(&s.2) {
            w.store(*v, Ordering::Relaxed);
        }
    }
    pub(crate) fn formatted(pages: u64) -> Self {
        let mut r = Region::new(pages);
        let geo = r.geo;
        Kram::format(geo, r.media(), Direct).unwrap();
        r
    }
    pub(crate) fn open(&mut self) -> Result<(Kram<'_, Direct>, OpenReport), Error> {
        let geo = self.geo;
        Kram::open(geo, self.media(), Direct)
    }
}

/// Performs `left` writes, then tears the next superblock write in half and
/// refuses everything after: a kexec or panic at that instant.
struct CrashAfter {
    left: Cell<usize>,
}

impl Persist for CrashAfter {
    fn store(&self, word: &AtomicU32, value: u32) -> Result<(), Error> {
        if self.left.get() == 0 {
            return Err(Error::Crashed);
        }
        self.left.set(self.left.get() - 1);
        word.store(value, Ordering::Release);
        Ok(())
    }
    fn write_sb(&self, slot: &mut [u8], sb: &Superblock) -> Result<(), Error> {
        let mut buf = [0u8; SB_LEN];
        sb.encode(&mut buf)?;
        if self.left.get() == 0 {
            slot[..SB_LEN / 2].copy_from_slice(&buf[..SB_LEN / 2]);
            return Err(Error::Crashed);
        }
        self.left.set(self.left.get() - 1);
        slot[..SB_LEN].copy_from_slice(&buf);
        Ok(())
    }
    fn erase_sb(&self, slot: &mut [u8]) -> Result<(), Error> {
        if self.left.get() == 0 {
            return Err(Error::Crashed);
        }
        self.left.set(self.left.get() - 1);
        slot[..SB_LEN].fill(0);
        Ok(())
    }
}

#[test]
fn geometry_is_checked() {
    assert_eq!(Geometry::new(BASE + 1, 1 << 20), Err(Error::Geometry));
    assert_eq!(Geometry::new(BASE, (1 << 20) + 1), Err(Error::Geometry));
    assert_eq!(Geometry::new(BASE, 4096 * 4), Err(Error::Geometry));
    assert_eq!(
        Geometry::new(u64::MAX - 0xfff, 1 << 20),
        Err(Error::Geometry)
    );
    let g = Geometry::new(BASE, 256 << 20).unwrap();
    assert_eq!(g.pages, 65536);
    assert_eq!(g.map_pages, 64);
    assert_eq!(g.data_first(), 66);
    assert_eq!(g.phys(2), BASE + 8192);
    assert_eq!(g.index_of(BASE + 8192), Some(2));
    assert_eq!(g.index_of(BASE + 8193), None);
    assert_eq!(g.index_of(BASE + (256 << 20)), None);
    assert_eq!(g.index_of(BASE - 4096), None);
}

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
fn crc32c_known_answer() {
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
}

#[test]
fn entries_detect_damage_and_misplacement() {
    let w = encode_entry(100, 7, true);
    assert_eq!(decode_entry(100, w), Ok((7, true)));
    assert_eq!(decode_entry(101, w), Err(Error::Corrupt(101)));
    for bit in 0..32 {
        assert!(decode_entry(100, w ^ (1 << bit)).is_err(), "bit {bit}");
    }
    assert_eq!(decode_entry(5, 0), Err(Error::Corrupt(5)));
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

#[test]
fn unformatted_foreign_and_corrupt_regions_are_refused_untouched() {
    let mut r = Region::new(256);
    assert_eq!(r.open().err(), Some(Error::NoSuperblock));

    let mut r = Region::formatted(256);
    let empty = r.snapshot();
    {
        let (mut k, _) = r.open().unwrap();
        let a = k.create_area(b"vm", 4).unwrap();
        k.alloc_page(a).unwrap();
    }
    let good = r.snapshot();

    // Another base address: the metadata belongs to another region.
    let geo = Geometry::new(BASE + (1 << 30), 256 * 4096).unwrap();
    assert_eq!(
        Kram::open(geo, r.media(), Direct).err(),
        Some(Error::Foreign)
    );

    // A damaged owner-map word.
    r.map[100].fetch_xor(0x10, Ordering::Relaxed);
    let bad = r.snapshot();
    assert_eq!(r.open().err(), Some(Error::Corrupt(100)));
    assert_eq!(r.snapshot(), bad, "refusal wrote nothing");
    r.restore(&good);

    // A valid word moved to another page.
    let w = r.map[10].load(Ordering::Relaxed);
    r.map[200].store(w, Ordering::Relaxed);
    assert_eq!(r.open().err(), Some(Error::Corrupt(200)));
    r.restore(&good);

    // A valid-looking word naming an area that does not exist.
    r.map[150].store(encode_entry(150, 9, false), Ordering::Relaxed);
    assert_eq!(r.open().err(), Some(Error::Corrupt(150)));
    r.restore(&good);

    // Both superblocks damaged.
    r.slots[0][40] ^= 1;
    r.slots[1][200] ^= 1;
    let bad = r.snapshot();
    assert_eq!(r.open().err(), Some(Error::NoSuperblock));
    assert_eq!(r.snapshot(), bad);
    r.restore(&good);

    // Either superblock damaged: the other holds the same finished state,
    // adopted with a warning and nothing lost.
    let (k, _) = r.open().unwrap();
    let cur = (k.superblock().generation % 2) as usize;
    drop(k);
    for s in [cur, 1 - cur] {
        r.slots[s][SB_AREAS + 5] ^= 0x40;
        let (k, rep) = r.open().unwrap();
        assert!(rep.other_slot_bad);
        assert_eq!(k.area(k.lookup(b"vm").unwrap()).unwrap().npages, 4);
        drop(k);
        r.restore(&good);
    }

    // Stale superblocks over a newer owner map (metadata rolled back): the
    // map names an area the table does not have, so the region is refused.
    r.slots[0].copy_from_slice(&empty.0);
    r.slots[1].copy_from_slice(&empty.1);
    assert!(matches!(r.open().err(), Some(Error::Corrupt(_))));
    r.restore(&good);

    // A newer format version is not guessed at.
    let mut buf = [0u8; SB_LEN];
    let (k, _) = r.open().unwrap();
    let mut sb = k.superblock().clone();
    drop(k);
    sb.generation += 2;
    sb.encode(&mut buf).unwrap();
    buf[SB_VERSION] = 2;
    let c = crc32c(&buf[..SB_CSUM]);
    buf[SB_CSUM..].copy_from_slice(&c.to_le_bytes());
    r.slots[cur][..SB_LEN].copy_from_slice(&buf);
    r.slots[1 - cur][..SB_LEN].copy_from_slice(&buf);
    assert_eq!(r.open().err(), Some(Error::Version));
}

/// Owner of every page, as the format reports it.
fn owners(r: &mut Region) -> Vec<(u16, bool)> {
    let (k, _) = r.open().unwrap();
    (0..k.geometry().pages)
        .map(|p| k.page_owner(p).unwrap())
        .collect()
}

/// Run `op` against a crash after each possible number of writes; every
/// outcome must open cleanly and equal either the state before or after.
fn crash_everywhere(
    setup: impl Fn(&mut Kram<'_, Direct>) -> u16,
    op: impl Fn(&mut Kram<'_, CrashAfter>, u16),
) {
    let mut r = Region::formatted(96);
    let id = {
        let (mut k, _) = r.open().unwrap();
        setup(&mut k)
    };
    let before_snap = r.snapshot();
    let before = owners(&mut r);
    let after = {
        let geo = r.geo;
        let (mut k, _) = Kram::open(
            geo,
            r.media(),
            CrashAfter {
                left: Cell::new(usize::MAX),
            },
        )
        .unwrap();
        op(&mut k, id);
        drop(k);
        owners(&mut r)
    };
    assert_ne!(before, after, "the operation changes something");
    let mut n = 0;
    loop {
        r.restore(&before_snap);
        let geo = r.geo;
        let done = {
            let persist = CrashAfter { left: Cell::new(n) };
            let (mut k, _) = Kram::open(geo, r.media(), persist).unwrap();
            op(&mut k, id);
            k.persist.left.get() > 0
        };
        let now = owners(&mut r);
        assert!(
            now == before || now == after,
            "crash after {n} writes left a third state"
        );
        // The recovery is itself complete: opening again changes nothing.
        let again = owners(&mut r);
        assert_eq!(now, again);
        let (k, _) = r.open().unwrap();
        let counted = now
            .iter()
            .filter(|(o, _)| *o != OWNER_FREE && *o != OWNER_META)
            .count() as u64;
        assert_eq!(k.stats().used, counted, "no page lost or counted twice");
        if done {
            break;
        }
        n += 1;
    }
    assert!(n > 1);
}

#[test]
fn crash_during_create_area() {
    crash_everywhere(
        |k| k.create_area(b"keep", 3).unwrap(),
        |k, _| {
            let _ = k.create_area(b"new", 7);
        },
    );
}

#[test]
fn crash_during_delete_area() {
    crash_everywhere(
        |k| {
            let a = k.create_area(b"doomed", 6).unwrap();
            for _ in 0..4 {
                k.alloc_page(a).unwrap();
            }
            a
        },
        |k, id| {
            let _ = k.delete_area(id);
        },
    );
}

#[test]
fn crash_during_alloc_and_free() {
    crash_everywhere(
        |k| k.create_area(b"pool", 0).unwrap(),
        |k, id| {
            let _ = k.alloc_page(id);
        },
    );
    crash_everywhere(
        |k| {
            let a = k.create_area(b"pool", 0).unwrap();
            k.alloc_page(a).unwrap();
            a
        },
        |k, id| {
            let first = k.geometry().data_first();
            let _ = k.free_page(id, first);
        },
    );
}

#[derive(Debug, Clone)]
enum Op {
    Create(u8, u8),
    Delete(u8),
    Alloc(u8),
    Free(u8, u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6, 0u8..12).prop_map(|(n, p)| Op::Create(n, p)),
        (0u8..6).prop_map(Op::Delete),
        (0u8..6).prop_map(Op::Alloc),
        (0u8..6, any::<u8>()).prop_map(|(n, i)| Op::Free(n, i)),
        Just(Op::Reopen),
    ]
}

proptest! {
    /// Random operations against a model: the region always agrees with it,
    /// a page never has two owners, and reopening changes nothing.
    #[test]
    fn random_operations_match_a_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut r = Region::formatted(128);
        // name -> (fixed run, allocated pages)
        let mut model: BTreeMap<u8, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
        for op in ops {
            let (mut k, _) = r.open().unwrap();
            let name = |n: u8| std::format!("area{n}").into_bytes();
            match op {
                Op::Create(n, p) => match k.create_area(&name(n), p as u64) {
                    Ok(id) => {
                        prop_assert!(!model.contains_key(&n));
                        let run = (0..p as u64).map(|i| k.fixed_page(id, i).unwrap()).collect();
                        model.insert(n, (run, Vec::new()));
                    }
                    Err(Error::Exists) => prop_assert!(model.contains_key(&n)),
                    Err(Error::NoSpace) => {}
                    Err(e) => prop_assert!(false, "create: {:?}", e),
                },
                Op::Delete(n) => match k.lookup(&name(n)) {
                    Ok(id) => { k.delete_area(id).unwrap(); model.remove(&n); }
                    Err(_) => prop_assert!(!model.contains_key(&n)),
                },
                Op::Alloc(n) => if let Ok(id) = k.lookup(&name(n)) {
                    match k.alloc_page(id) {
                        Ok(p) => model.get_mut(&n).unwrap().1.push(p),
                        Err(Error::NoSpace) => prop_assert_eq!(k.stats().free, 0),
                        Err(e) => prop_assert!(false, "alloc: {:?}", e),
                    }
                },
                Op::Free(n, i) => if let Ok(id) = k.lookup(&name(n)) {
                    let pages = &mut model.get_mut(&n).unwrap().1;
                    if !pages.is_empty() {
                        let p = pages.remove(i as usize % pages.len());
                        k.free_page(id, p).unwrap();
                    }
                },
                Op::Reopen => {}
            }
            drop(k);
            // The region agrees with the model, page by page.
            let own = owners(&mut r);
            let mut expect = std::vec![None; own.len()];
            let (k, _) = r.open().unwrap();
            for (n, (run, alloc)) in &model {
                let id = k.lookup(&name(*n)).unwrap();
                for &p in run { prop_assert!(expect[p as usize].replace((id, true)).is_none()); }
                for &p in alloc { prop_assert!(expect[p as usize].replace((id, false)).is_none()); }
            }
            let data_first = k.geometry().data_first() as usize;
            for (p, o) in own.iter().enumerate() {
                let want = if p < data_first { (OWNER_META, false) } else { expect[p].unwrap_or((OWNER_FREE, false)) };
                prop_assert_eq!(*o, want, "page {}", p);
            }
        }
    }
}

/// Superblocks with a valid checksum but contents no commit writes: refused
/// as corrupt at open, nothing written, no overflow (issue 18).
#[test]
fn checksum_valid_but_impossible_superblocks_are_refused() {
    let mut r = Region::formatted(256);
    {
        let (mut k, _) = r.open().unwrap();
        k.create_area(b"vm1", 4).unwrap();
        k.create_area(b"vm2", 4).unwrap();
    }
    let good = r.snapshot();
    let (k, _) = r.open().unwrap();
    let sb = k.superblock().clone();
    drop(k);
    // Writes `sb` into both slots with a valid checksum.
    let forge = |r: &mut Region, sb: &Superblock| {
        let mut buf = [0u8; SB_LEN];
        sb.encode(&mut buf).unwrap();
        for slot in r.slots.iter_mut() {
            slot[..SB_LEN].copy_from_slice(&buf);
        }
    };
    let ids: Vec<usize> = (0..MAX_AREAS).filter(|&i| sb.areas[i].in_use()).collect();
    assert_eq!(ids.len(), 2);

    // Generation at the top of u64: the next commit would overflow.
    for g in [u64::MAX, u64::MAX - 1, MAX_GENERATION + 1] {
        let mut bad = sb.clone();
        bad.generation = g;
        forge(&mut r, &bad);
        let before = r.snapshot();
        assert!(
            matches!(r.open().err(), Some(Error::Corrupt(_))),
            "generation {g}"
        );
        assert_eq!(r.snapshot(), before, "refusal wrote nothing");
        r.restore(&good);
    }

    // Two areas with one name.
    let mut bad = sb.clone();
    bad.areas[ids[1]].name = bad.areas[ids[0]].name;
    forge(&mut r, &bad);
    assert!(matches!(r.open().err(), Some(Error::Corrupt(_))));
    r.restore(&good);

    // Two areas whose fixed runs overlap.
    let mut bad = sb.clone();
    bad.areas[ids[1]].first = bad.areas[ids[0]].first + 1;
    forge(&mut r, &bad);
    assert!(matches!(r.open().err(), Some(Error::Corrupt(_))));
    r.restore(&good);

    // The control: the same superblock re-signed opens.
    forge(&mut r, &sb);
    assert!(r.open().is_ok());
}
