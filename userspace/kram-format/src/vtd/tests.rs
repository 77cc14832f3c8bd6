//! Host tests of the VT-d code against a fake physical memory: the
//! snapshot and translation, entry decoding, and the record codec.

use super::record::HEADER;
use super::*;
use std::collections::{BTreeMap, BTreeSet};
use std::vec::Vec;

/// Physical memory of 4 KiB tables; "RAM" below `ram_end`.
struct Fake {
    mem: BTreeMap<u64, Vec<u64>>,
    next: u64,
    ram_end: u64,
    limit: usize,
}

impl Fake {
    fn new() -> Self {
        Fake {
            mem: BTreeMap::new(),
            next: 0x10_0000,
            ram_end: 0x1_0000_0000,
            limit: usize::MAX,
        }
    }
    fn table(&mut self) -> u64 {
        let p = self.next;
        self.next += PAGE;
        self.mem.insert(p, std::vec![0; 512]);
        p
    }
    /// Map `iova` -> `pa` (4 KiB, or 2 MiB with `big`) in a 4-level tree.
    fn map(&mut self, top: u64, iova: u64, pa: u64, big: bool) {
        let mut t = top;
        for level in (1..=4u32).rev() {
            let idx = ((iova >> (12 + 9 * (level - 1))) & 511) as usize;
            if level == 1 || (big && level == 2) {
                let sp = if level == 2 { 1 << 7 } else { 0 };
                self.mem.get_mut(&t).unwrap()[idx] = pa | 3 | sp;
                return;
            }
            let e = self.mem[&t][idx];
            t = if pte_present(e) {
                e & ADDR_MASK
            } else {
                let n = self.table();
                self.mem.get_mut(&t).unwrap()[idx] = n | 3;
                n
            };
        }
    }
}

impl Tables for Fake {
    fn copy_table(&mut self, src: u64) -> Result<u64, Error> {
        if self.limit == 0 {
            return Err(Error::NoMemory);
        }
        self.limit -= 1;
        let c = self.mem.get(&src).cloned().ok_or(Error::NoMemory)?;
        let p = self.next.max(0x2_0000_0000);
        self.next = p + PAGE;
        self.mem.insert(p, c);
        Ok(p)
    }
    fn get(&mut self, table: u64, idx: usize) -> u64 {
        self.mem[&table][idx]
    }
    fn set(&mut self, table: u64, idx: usize, v: u64) {
        self.mem.get_mut(&table).unwrap()[idx] = v;
    }
    fn leaf_ok(&mut self, addr: u64, size: u64) -> bool {
        addr >= self.ram_end && addr + size > addr
    }
}

fn tree(f: &mut Fake) -> (u64, Vec<(u64, u64)>) {
    let top = f.table();
    let mut maps = Vec::new();
    // 4 KiB pages at an IOVA window and a 2 MiB superpage, all in KRAM
    for i in 0..700u64 {
        let (iova, pa) = (
            0x4000_0000 + i * PAGE,
            0x1_4000_0000 + ((i * 7919) % 4096) * PAGE,
        );
        f.map(top, iova, pa, false);
        maps.push((iova, pa));
    }
    f.map(top, 0x8000_0000, 0x1_8000_0000, true);
    maps.push((0x8000_0000 + 0x1234, 0x1_8000_1234));
    (top, maps)
}

#[test]
fn snapshot_translates_like_the_original_and_shares_no_table() {
    let mut f = Fake::new();
    let (top, maps) = tree(&mut f);
    let old: BTreeSet<u64> = f.mem.keys().copied().collect();
    let mut made = Vec::new();
    let new = snapshot(&mut f, top, 4, &mut |p| {
        made.push(p);
        Ok(())
    })
    .unwrap();
    assert_eq!(made[0], new);
    assert!(
        made.iter().all(|p| !old.contains(p)),
        "a copy reuses an old table"
    );
    assert_eq!(
        made.len(),
        1 + 1 + 1 + 2 + 1,
        "top, L3, L2, two L1 tables, and the superpage's L3/L2 share"
    );
    for &(iova, pa) in &maps {
        assert_eq!(translate(&mut f, new, 4, iova), Some(pa), "iova {iova:#x}");
        assert_eq!(translate(&mut f, top, 4, iova), Some(pa));
    }
    assert_eq!(translate(&mut f, new, 4, 0x1000), None);
    // later changes to the old tree do not reach the snapshot
    f.map(top, 0x9000_0000, 0x1_9000_0000, false);
    assert_eq!(translate(&mut f, new, 4, 0x9000_0000), None);
    // Levels from a hostile record: no shift overflow, no answer.
    for levels in [0, 1, 2, 6, 7, 8, 200, 255] {
        assert_eq!(
            translate(&mut f, new, levels, 0x1000),
            None,
            "levels {levels}"
        );
    }
}

#[test]
fn a_leaf_in_ram_is_refused_and_every_page_made_is_reported() {
    let mut f = Fake::new();
    let (top, _) = tree(&mut f);
    f.map(top, 0x5000_0000, 0x20_0000, false); // System RAM
    let mut made = Vec::new();
    let r = snapshot(&mut f, top, 4, &mut |p| {
        made.push(p);
        Ok(())
    });
    assert_eq!(r, Err(Error::LeafInRam(0x20_0000)));
    assert!(!made.is_empty());
}

#[test]
fn out_of_pages_and_bad_levels() {
    let mut f = Fake::new();
    let (top, _) = tree(&mut f);
    f.limit = 2;
    assert_eq!(
        snapshot(&mut f, top, 4, &mut |_| Ok(())),
        Err(Error::NoMemory)
    );
    assert_eq!(
        snapshot(&mut f, top, 6, &mut |_| Ok(())),
        Err(Error::Levels(6))
    );
    let mut n = 0;
    f.limit = usize::MAX;
    let r = snapshot(&mut f, top, 4, &mut |_| {
        n += 1;
        if n > 3 {
            Err(Error::TooManyPages)
        } else {
            Ok(())
        }
    });
    assert_eq!(r, Err(Error::TooManyPages));
}

#[test]
fn entries_decode() {
    assert_eq!(root_context_table(0x1234_5001), Some(0x1234_5000));
    assert_eq!(root_context_table(0x1234_5000), None);
    let c = context(0x0000_0001_2345_6001, (0x2a << 8) | 2);
    assert_eq!(
        c,
        Context {
            present: true,
            tt: 0,
            table: 0x1_2345_6000,
            levels: 4,
            did: 0x2a
        }
    );
    assert_eq!(context(0x9, 1).tt, 2);
    assert_eq!(with_table(0x1_2345_6001, 0x7_0000_0000), 0x7_0000_0001);
    assert!(pte_leaf(1 << 7 | 3, 2) && !pte_leaf(1 << 7 | 3, 4) && pte_leaf(3, 1));
    assert_eq!(leaf_size(2), 2 << 20);
    assert_eq!(leaf_size(3), 1 << 30);
}

fn rec() -> Record {
    let mut r = Record {
        head: Header {
            seg: 0,
            bus: 0,
            devfn: 0x18,
            did: 3,
            levels: 4,
            old_root: 0x1000,
            root: 0x1_0000_2000,
            ctx: 0x1_0000_3000,
            top: 0x1_0000_4000,
            npages: 3,
        },
        pages: [0; MAX_PAGES],
    };
    r.pages[..3].copy_from_slice(&[0x1_0000_4000, 0x1_0000_5000, 0x1_0000_6000]);
    r
}

#[test]
fn record_round_trips_and_fails_closed() {
    let mut page = [0u8; 4096];
    assert_eq!(Record::decode(&page), Ok(None));
    let r = rec();
    r.encode(&mut page).unwrap();
    assert_eq!(Record::decode(&page), Ok(Some(r.clone())));
    for (off, want) in [
        (0, Error::BadMagic),
        (8, Error::BadVersion(1 ^ 4)),
        (18, Error::BadChecksum),
        (70, Error::BadChecksum),
    ] {
        let mut p = page;
        p[off] ^= 4;
        assert_eq!(Record::decode(&p), Err(want), "byte {off}");
    }
    let mut p = page;
    p[56..60].copy_from_slice(&(MAX_PAGES as u32 + 1).to_le_bytes());
    assert_eq!(Record::decode(&p), Err(Error::BadLength));
    // A reserved byte set, the checksum made valid again: refused.
    for off in [23, 63] {
        let mut p = page;
        p[off] = 1;
        let c = crate::crc32c(&p[16..HEADER + 8 * 3]);
        p[12..16].copy_from_slice(&c.to_le_bytes());
        assert_eq!(Record::decode(&p), Err(Error::Reserved), "byte {off}");
    }
    let mut big = rec();
    big.npages = MAX_PAGES + 1;
    assert_eq!(big.encode(&mut page), Err(Error::TooManyPages));
    assert_eq!(Record::decode(&page[..10]), Err(Error::BadLength));
}

#[test]
fn decode_never_panics_on_garbage() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        let mut p = [0u8; 4096];
        for b in p.iter_mut().take(600) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        p[0..8].copy_from_slice(&MAGIC);
        p[8..12].copy_from_slice(&VERSION.to_le_bytes());
        let _ = Record::decode(&p);
    }
}
