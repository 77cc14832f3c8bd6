//! Host tests of the next kernel's table check (`verify.rs`) against a
//! fake physical memory: preserved trees accepted, each way a tree can be
//! wrong refused with its reason, hostile trees never panic or loop.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::vec::Vec;

/// 4 KiB tables by physical address; System RAM below `ram_end`.
struct Mem {
    t: BTreeMap<u64, Vec<u64>>,
    ram_end: u64,
    unmappable: Option<u64>,
    maps: usize,
}

impl Phys for Mem {
    type Table = Vec<u64>;
    fn map(&mut self, table: u64) -> Option<Vec<u64>> {
        self.maps += 1;
        if self.unmappable == Some(table) {
            return None;
        }
        self.t.get(&table).cloned()
    }
    fn entry(&self, t: &Vec<u64>, idx: usize) -> u64 {
        t[idx]
    }
    fn owned(&mut self, addr: u64, size: u64) -> bool {
        size > 0 && addr < self.ram_end
    }
}

const KRAM_TABLES: u64 = 0x2_0000_0000;
const KRAM_DATA: u64 = 0x1_4000_0000;

/// A preserved tree of `levels`: 4 KiB pages, a 2 MiB and (4 or 5 levels)
/// a 1 GiB superpage, all in KRAM; its pages top first.
fn tree(levels: u32) -> (Mem, u64, Vec<u64>) {
    let mut m = Mem {
        t: BTreeMap::new(),
        ram_end: 0x1_0000_0000,
        unmappable: None,
        maps: 0,
    };
    let mut pages = Vec::new();
    let mut new = |m: &mut Mem| {
        let p = KRAM_TABLES + PAGE * pages.len() as u64;
        m.t.insert(p, std::vec![0; 512]);
        pages.push(p);
        p
    };
    let top = new(&mut m);
    // one chain of tables from the top down to level 1
    let mut t = top;
    for level in (2..=levels).rev() {
        let n = new(&mut m);
        m.t.get_mut(&t).unwrap()[0] = n | 3;
        if level == 3 {
            // a 1 GiB leaf beside the chain (level 3 only)
            m.t.get_mut(&t).unwrap()[5] = (KRAM_DATA + (1 << 30)) | 3 | 1 << 7;
        }
        if level == 2 {
            m.t.get_mut(&t).unwrap()[7] = (KRAM_DATA + (2 << 20)) | 3 | 1 << 7;
        }
        t = n;
    }
    for i in 0..64u64 {
        m.t.get_mut(&t).unwrap()[i as usize] = (KRAM_DATA + i * PAGE) | 3;
    }
    (m, top, pages)
}

fn record(top: u64, levels: u8, pages: &[u64]) -> Vec<u8> {
    let mut r = Record {
        head: Header {
            seg: 0,
            bus: 1,
            devfn: 0,
            did: 5,
            levels,
            old_root: 0x1000,
            root: 0x3_0000_0000,
            ctx: 0x3_0000_1000,
            top,
            npages: pages.len(),
        },
        pages: [0; MAX_PAGES],
    };
    r.pages[..pages.len()].copy_from_slice(pages);
    let mut b = std::vec![0u8; PAGE as usize];
    r.encode(&mut b).unwrap();
    b
}

/// The device's areas in these tests: 2 GiB of KRAM data from `KRAM_DATA`
/// (every leaf `tree` makes); the tables lie outside them.
fn areas() -> Spans {
    Spans::parse(&std::format!("{:#x}+{:#x}", KRAM_DATA, 2u64 << 30)).unwrap()
}

fn check(m: &mut Mem, top: u64, levels: u8, pages: &[u64]) -> Result<(), Refusal> {
    check_in(m, top, levels, pages, &areas())
}

fn check_in(
    m: &mut Mem,
    top: u64,
    levels: u8,
    pages: &[u64],
    areas: &Spans,
) -> Result<(), Refusal> {
    let b = record(top, levels, pages);
    let h = Record::check(&b).unwrap().unwrap();
    assert_eq!((h.top, h.levels, h.npages), (top, levels, pages.len()));
    verify(m, &b, h.top, h.levels, h.npages, areas)
}

#[test]
fn a_leaf_outside_the_devices_areas_is_refused() {
    // at a KRAM page outside the areas (metadata, another VM's area): not
    // System RAM, so only the areas catch it
    let (mut m, top, pages) = tree(4);
    let l1 = *pages.last().unwrap();
    m.t.get_mut(&l1).unwrap()[100] = (KRAM_TABLES + 64 * PAGE) | 3;
    assert_eq!(
        check(&mut m, top, 4, &pages),
        Err(Refusal::LeafOutsideAreas)
    );
    // a run that starts inside and goes on past the end of the areas
    let (mut m, top, pages) = tree(4);
    let one = Spans::parse(&std::format!("{:#x}+{:#x}", KRAM_DATA, 100 * PAGE)).unwrap();
    assert_eq!(
        check_in(&mut m, top, 4, &pages, &one),
        Err(Refusal::LeafOutsideAreas)
    );
    // the same memory as two spans that touch is one area
    let two = Spans::parse(&std::format!(
        "{:#x}+{:#x},{:#x}+{:#x}",
        KRAM_DATA + (1 << 30),
        1u64 << 30,
        KRAM_DATA,
        1u64 << 30
    ))
    .unwrap();
    assert_eq!(check_in(&mut m, top, 4, &pages, &two), Ok(()));
}

#[test]
fn no_areas_is_refused_before_any_table_is_read() {
    let (mut m, top, pages) = tree(4);
    assert_eq!(
        check_in(&mut m, top, 4, &pages, &Spans::default()),
        Err(Refusal::NoAreas)
    );
    assert_eq!(m.maps, 0);
}

#[test]
fn a_preserved_tree_is_accepted_at_every_depth() {
    for levels in 3..=5u8 {
        let (mut m, top, pages) = tree(u32::from(levels));
        assert_eq!(
            check(&mut m, top, levels, &pages),
            Ok(()),
            "{levels} levels"
        );
        assert_eq!(m.maps, pages.len(), "each table mapped once");
    }
}

#[test]
fn a_leaf_in_system_ram_is_refused() {
    let (mut m, top, pages) = tree(4);
    let l1 = *pages.last().unwrap();
    m.t.get_mut(&l1).unwrap()[100] = 0x5000 | 3;
    assert_eq!(check(&mut m, top, 4, &pages), Err(Refusal::LeafOwned));
    // a superpage reaching into RAM from below KRAM, and a run that ends in it
    let (mut m, top, pages) = tree(4);
    let l1 = *pages.last().unwrap();
    m.ram_end = KRAM_DATA + 10 * PAGE;
    assert_eq!(check(&mut m, top, 4, &pages), Err(Refusal::LeafOwned));
    m.t.get_mut(&l1).unwrap().fill(0);
    m.ram_end = KRAM_DATA + (2 << 20) + 1;
    assert_eq!(
        check(&mut m, top, 4, &pages),
        Err(Refusal::LeafOwned),
        "the 2 MiB leaf"
    );
}

#[test]
fn a_table_the_record_does_not_list_is_refused() {
    let (mut m, top, pages) = tree(4);
    assert_eq!(
        check(&mut m, top, 4, &pages[..pages.len() - 1]),
        Err(Refusal::NotInRecord)
    );
    assert_eq!(
        check(&mut m, top + PAGE * 100, 4, &pages),
        Err(Refusal::NotInRecord),
        "another top"
    );
}

#[test]
fn a_table_reached_twice_or_a_cycle_is_refused() {
    let (mut m, top, pages) = tree(4);
    let l1 = *pages.last().unwrap();
    let l2 = pages[pages.len() - 2];
    m.t.get_mut(&l2).unwrap()[1] = l1 | 3;
    assert_eq!(check(&mut m, top, 4, &pages), Err(Refusal::ReachedTwice));
    let (mut m, top, pages) = tree(5);
    let l3 = pages[2];
    m.t.get_mut(&l3).unwrap()[9] = top | 3;
    assert_eq!(
        check(&mut m, top, 5, &pages),
        Err(Refusal::ReachedTwice),
        "back to the top"
    );
}

#[test]
fn a_listed_page_no_walk_reaches_is_refused() {
    let (mut m, top, mut pages) = tree(3);
    pages.push(KRAM_TABLES + PAGE * 50);
    assert_eq!(check(&mut m, top, 3, &pages), Err(Refusal::Unused));
}

#[test]
fn tables_in_system_ram_or_unmappable_are_refused() {
    let (mut m, top, pages) = tree(4);
    m.ram_end = KRAM_TABLES + PAGE;
    assert_eq!(check(&mut m, top, 4, &pages), Err(Refusal::TableOwned));
    let (mut m, top, pages) = tree(4);
    m.unmappable = Some(pages[1]);
    assert_eq!(check(&mut m, top, 4, &pages), Err(Refusal::NotMappable));
}

#[test]
fn levels_other_than_3_to_5_are_refused_before_any_table_is_read() {
    let (mut m, top, pages) = tree(4);
    for levels in [0u8, 1, 2, 6, 7, 255] {
        assert_eq!(check(&mut m, top, levels, &pages), Err(Refusal::Levels));
    }
    assert_eq!(m.maps, 0);
}

#[test]
fn every_refusal_has_the_kernels_line() {
    use Refusal::*;
    for r in [
        Levels,
        NotInRecord,
        ReachedTwice,
        TableOwned,
        NotMappable,
        LeafOwned,
        Unused,
        NoAreas,
        LeafOutsideAreas,
    ] {
        let s = r.why().to_str().unwrap();
        assert!(!s.is_empty() && s.is_ascii(), "{r:?}");
    }
    assert_eq!(LeafOwned.why(), c"a page table maps System RAM");
}

#[test]
fn record_check_agrees_with_decode() {
    let (_, top, pages) = tree(4);
    let b = record(top, 4, &pages);
    let h = Record::check(&b).unwrap().unwrap();
    let r = Record::decode(&b).unwrap().unwrap();
    assert_eq!(
        (h.seg, h.bus, h.devfn, h.did, h.levels),
        (r.seg, r.bus, r.devfn, r.did, r.levels)
    );
    assert_eq!(
        (h.old_root, h.root, h.ctx, h.top, h.npages),
        (r.old_root, r.root, r.ctx, r.top, r.npages)
    );
    for (i, p) in r.pages().iter().enumerate() {
        assert_eq!(Record::page(&b, i), Some(*p));
    }
    assert_eq!(Record::page(&b, PAGE as usize), None);
    assert_eq!(Record::page(&b, usize::MAX), None);
    let mut z = std::vec![0u8; PAGE as usize];
    assert_eq!(Record::check(&z), Ok(None));
    z[0] = 1;
    assert_eq!(Record::check(&z), Err(Error::BadMagic));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Any tree over a few pages (entries pointing anywhere among them,
    /// into RAM or KRAM, leaves or not) ends in Ok or a refusal, each
    /// table mapped at most once.
    #[test]
    fn hostile_trees_end_without_panic(
        levels in 0u8..8,
        entries in proptest::collection::vec((0usize..8, 0usize..512, 0u64..12, any::<bool>(), any::<bool>()), 0..200),
        listed in proptest::collection::vec(0u64..10, 0..12),
    ) {
        let mut m = Mem { t: BTreeMap::new(), ram_end: 0x1_0000_0000, unmappable: None, maps: 0 };
        for p in 0..8u64 {
            m.t.insert(KRAM_TABLES + p * PAGE, std::vec![0; 512]);
        }
        for (t, idx, target, big, present) in entries {
            // targets 10 and 11 lie in System RAM
            let base = if target >= 10 { 0x10_0000 } else { KRAM_TABLES };
            let e = (base + target * PAGE) | if present { 3 } else { 0 } | if big { 1 << 7 } else { 0 };
            m.t.get_mut(&(KRAM_TABLES + t as u64 * PAGE)).unwrap()[idx] = e;
        }
        let pages: Vec<u64> = listed.iter().map(|p| KRAM_TABLES + p * PAGE).collect();
        let _ = check(&mut m, KRAM_TABLES, levels, &pages);
        prop_assert!(m.maps <= pages.len());
    }
}

#[test]
fn spans_parse_print_and_refuse() {
    let s = Spans::parse("0x100000000+0x200000,4096+8192").unwrap();
    assert_eq!(
        s.as_slice(),
        &[
            Span {
                start: 0x1_0000_0000,
                len: 0x20_0000
            },
            Span {
                start: 4096,
                len: 8192
            }
        ]
    );
    assert_eq!(std::format!("{s}"), "0x100000000+0x200000,0x1000+0x2000");
    assert_eq!(Spans::parse(&std::format!("{s}")), Ok(s));
    use SpanError::*;
    for (text, e) in [
        ("", Empty),
        ("0x1000", Bad),
        ("0x1000+0", Bad),
        ("0x1001+0x1000", Bad),
        ("0x1000+0x1001", Bad),
        ("+", Bad),
        ("0x+0x1000", Bad),
        ("4096++4096", Bad),
        ("+4096+4096", Bad),
        ("1+2+3", Bad),
        ("0x1000+0x1000,", Bad),
        ("0xfffffffffffff000+0x2000", Bad),
        ("0x10000000000000000+0x1000", Bad),
        ("0x1000+0x2000,0x2000+0x1000", Overlap),
    ] {
        assert_eq!(Spans::parse(text), Err(e), "{text:?}");
    }
    let nine: std::vec::Vec<std::string::String> = (1..=9u64)
        .map(|i| std::format!("{:#x}+0x1000", i << 20))
        .collect();
    assert_eq!(Spans::parse(&nine.join(",")), Err(TooMany));
    assert!(Spans::parse(&nine[..8].join(",")).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// Any text parses or is refused, never panics.
    #[test]
    fn span_text_never_panics(text in "[0-9a-fx+,]{0,64}") {
        let _ = Spans::parse(&text);
    }

    /// `cover` agrees with a page-by-page look at the spans.
    #[test]
    fn cover_agrees_with_pages(
        spans in proptest::collection::vec((0u64..64, 1u64..8), 0..6),
        start in 0u64..80,
        len in 0u64..20,
    ) {
        let mut s = Spans::default();
        for (a, n) in spans {
            let _ = s.push(Span::new(a * PAGE, n * PAGE).unwrap());
        }
        let by_page = (start..start + len).all(|p| {
            s.as_slice().iter().any(|x| x.start <= p * PAGE && p * PAGE < x.end())
        });
        prop_assert_eq!(s.cover(start * PAGE, len * PAGE), by_page);
    }
}
