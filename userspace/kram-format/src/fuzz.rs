//! Bounded fuzzing of what the next kernel reads from KRAM, run by
//! `cargo test` (so by `make check`) in seconds: a checksum proves no
//! intent, so every input here carries a valid one.
//!
//! - superblocks: a formatted region with areas, random bytes changed, the
//!   CRC recomputed; opening it must either refuse or give a region whose
//!   areas are in range, named, unique and disjoint;
//! - VT-d records: random fields and page lists with the CRC recomputed;
//!   decoding must refuse or give a record that encodes back to the same
//!   bytes;
//! - VT-d table walks: random table trees (cycles, shared pages, any
//!   levels) through `snapshot` and `translate`: no panic, no overflow, a
//!   bounded number of pages.
//!
//! The case counts are fixed (`FUZZ_CASES`, more with `PROPTEST_CASES`).

use crate::tests::Region;
use crate::vtd::{self, Record, Tables};
use crate::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::vec::Vec;

const FUZZ_CASES: u32 = 400;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(FUZZ_CASES),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A region of 4096 pages with three areas, its first slot holding the
/// newest superblock.
fn populated() -> Region {
    let mut r = Region::formatted(4096);
    {
        let (mut k, _) = r.open().unwrap();
        k.create_area(b"vm1", 700).unwrap();
        let b = k.create_area(b"iommu-tables", 2).unwrap();
        k.alloc_page(b).unwrap();
        k.create_area(b"liveup-state", 3).unwrap();
    }
    r
}

fn recrc(slot: &mut [u8]) {
    let c = crc32c(&slot[..SB_LEN - 4]);
    slot[SB_LEN - 4..SB_LEN].copy_from_slice(&c.to_le_bytes());
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn superblocks_with_a_valid_crc(
        edits in proptest::collection::vec((0..SB_LEN - 4, any::<u8>()), 1..24),
        both in any::<bool>(),
    ) {
        let mut r = populated();
        for i in 0..if both { 2 } else { 1 } {
            for &(off, v) in &edits {
                r.slots[i][off] = v;
            }
            recrc(&mut r.slots[i]);
        }
        let pages = r.geo.pages;
        if let Ok((k, _)) = r.open() {
            let sb = k.superblock();
            prop_assert!(sb.generation <= MAX_GENERATION);
            let live: Vec<_> = sb.areas.iter().filter(|a| a.in_use()).collect();
            for (i, a) in live.iter().enumerate() {
                prop_assert!(valid_name(a.name()).is_ok());
                prop_assert!(a.first >= k.geometry().data_first());
                prop_assert!(a.first.checked_add(a.npages).is_some_and(|e| e <= pages));
                for b in &live[i + 1..] {
                    prop_assert!(a.name() != b.name());
                    prop_assert!(a.first + a.npages <= b.first || b.first + b.npages <= a.first);
                }
            }
            let st = k.stats();
            prop_assert!(st.meta + st.used + st.free <= st.pages);
        }
    }

    #[test]
    fn vtd_records_with_a_valid_crc(
        head in proptest::collection::vec(any::<u8>(), 48),
        n in prop_oneof![0u32..8, any::<u32>()],
        pages in proptest::collection::vec(any::<u64>(), 0..8),
    ) {
        let mut b = std::vec![0u8; 4096];
        b[0..8].copy_from_slice(&vtd::MAGIC);
        b[8..12].copy_from_slice(&vtd::VERSION.to_le_bytes());
        b[16..64].copy_from_slice(&head);
        b[56..60].copy_from_slice(&n.to_le_bytes());
        for (i, p) in pages.iter().enumerate() {
            b[64 + 8 * i..72 + 8 * i].copy_from_slice(&p.to_le_bytes());
        }
        let end = (64 + 8 * (n as usize).min(vtd::MAX_PAGES)).min(4096);
        let c = crc32c(&b[16..end]);
        b[12..16].copy_from_slice(&c.to_le_bytes());
        match Record::decode(&b) {
            Ok(Some(r)) => {
                prop_assert!(r.npages <= vtd::MAX_PAGES);
                let mut again = std::vec![0u8; 4096];
                r.encode(&mut again).unwrap();
                prop_assert_eq!(&again[..64 + 8 * r.npages], &b[..64 + 8 * r.npages]);
            }
            Ok(None) => prop_assert!(false, "a record with a magic read as none"),
            Err(_) => {}
        }
    }

    #[test]
    fn vtd_walks_of_hostile_tables(
        entries in proptest::collection::vec((0u64..6, 0usize..512, any::<u64>()), 0..64),
        levels in 0u8..8,
        iovas in proptest::collection::vec(any::<u64>(), 1..8),
    ) {
        // Six table pages at 0x1000..0x6000 whose entries point anywhere,
        // at each other (cycles) included.
        let mut t = Fake::default();
        for p in 1..=6u64 {
            t.pages.insert(p << 12, std::vec![0; 512]);
        }
        for &(p, i, v) in &entries {
            // half of them aimed at the table pages
            let v = if v & 1 == 0 { (v & !ADDR) | (((v >> 1) % 6 + 1) << 12) } else { v };
            t.pages.get_mut(&((p + 1) << 12)).unwrap()[i] = v;
        }
        for &iova in &iovas {
            let _ = vtd::translate(&mut t, 0x1000, levels, iova);
        }
        let mut made = 0usize;
        let r = vtd::snapshot(&mut t, 0x1000, levels, &mut |_| {
            made += 1;
            if made > vtd::MAX_PAGES { Err(vtd::Error::TooManyPages) } else { Ok(()) }
        });
        prop_assert!(made <= vtd::MAX_PAGES + 1);
        if r.is_ok() {
            prop_assert!((3..=5).contains(&levels));
        }
    }
}

const ADDR: u64 = vtd::ADDR_MASK;

/// Table pages in a map; copies get new addresses above 1 GiB; every
/// leaf is allowed (the walk's structure is what is fuzzed).
#[derive(Default)]
struct Fake {
    pages: HashMap<u64, Vec<u64>>,
    next: u64,
}

impl Tables for Fake {
    fn copy_table(&mut self, src: u64) -> Result<u64, vtd::Error> {
        let copy = self
            .pages
            .get(&src)
            .cloned()
            .unwrap_or_else(|| std::vec![0; 512]);
        self.next += 1;
        let at = (1 << 30) + (self.next << 12);
        self.pages.insert(at, copy);
        Ok(at)
    }
    fn get(&mut self, table: u64, idx: usize) -> u64 {
        self.pages
            .get(&table)
            .and_then(|p| p.get(idx))
            .copied()
            .unwrap_or(0)
    }
    fn set(&mut self, table: u64, idx: usize, v: u64) {
        if let Some(e) = self.pages.get_mut(&table).and_then(|p| p.get_mut(idx)) {
            *e = v;
        }
    }
    fn leaf_ok(&mut self, _addr: u64, _size: u64) -> bool {
        true
    }
}
