//! Tests that unformatted, foreign and corrupt metadata is refused and
//! left as it is.

use crate::*;
use core::sync::atomic::Ordering;
use std::vec::Vec;

use super::{Region, BASE};

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
