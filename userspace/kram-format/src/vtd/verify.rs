// SPDX-License-Identifier: GPL-2.0
//! The next kernel's check of a record's page tables before its IOMMU goes
//! on translating through them (`intel_iommu_adopt=`, patches/0003, which
//! calls this through `iommu-preserve/builtin/kh_vtd.rs`, built into the
//! kernel): every table reachable from the top is one of the record's
//! pages, reached once, all of them reached, none in memory the kernel
//! owns, and every leaf maps memory the kernel does not own (contiguous
//! leaves checked as one range). The tables are untrusted: any tree, cycle
//! or depth ends in `Ok` or a `Refusal`, never a panic or an unbounded
//! walk (each table is entered at most once).

use super::record::Record;
use super::spans::Spans;
use super::{leaf_size, pte_leaf, pte_present, ADDR_MASK, MAX_PAGES, PAGE, TABLE_ENTRIES};
use core::ffi::CStr;

/// What the check needs from the kernel.
pub trait Phys {
    /// A table page mapped for reading (unmapped when dropped).
    type Table;
    /// Map the 4 KiB table at physical `table`; `None` if it cannot be.
    fn map(&mut self, table: u64) -> Option<Self::Table>;
    /// Entry `idx` (below 512) of a mapped table, read once.
    fn entry(&self, t: &Self::Table, idx: usize) -> u64;
    /// Whether `[addr, addr + size)` touches memory the kernel owns
    /// (System RAM): tables or pages there may already be reused.
    fn owned(&mut self, addr: u64, size: u64) -> bool;
}

/// Why the tables are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Levels outside 3..=5.
    Levels,
    NotInRecord,
    ReachedTwice,
    TableOwned,
    NotMappable,
    /// A leaf maps memory the kernel owns.
    LeafOwned,
    /// The record lists a page no walk reaches.
    Unused,
    /// No spans: the next kernel was not told what the device may reach.
    NoAreas,
    /// A leaf maps memory outside the device's areas (the spans).
    LeafOutsideAreas,
}

impl Refusal {
    /// The kernel's one log line for it (what patches/0003 printed before
    /// the check moved here; the rig's dma_kexec test looks for these).
    pub fn why(self) -> &'static CStr {
        match self {
            Refusal::Levels => c"tables do not match the record",
            Refusal::NotInRecord => c"a page table not in the record",
            Refusal::ReachedTwice => c"a page table reached twice",
            Refusal::TableOwned => c"tables in System RAM",
            Refusal::NotMappable => c"tables not mappable",
            Refusal::LeafOwned => c"a page table maps System RAM",
            Refusal::Unused => c"record lists page tables not in use",
            Refusal::NoAreas => {
                c"the device's areas not given (intel_iommu_adopt=RECORD,START+LEN,...)"
            }
            Refusal::LeafOutsideAreas => c"a page table maps memory outside the device's areas",
        }
    }
}

struct Walk<'a, P> {
    p: &'a mut P,
    rec: &'a [u8],
    n: usize,
    seen: [u64; MAX_PAGES.div_ceil(64)],
    reached: usize,
    run_start: u64,
    run_end: u64,
    areas: &'a Spans,
}

/// Check the page tables of the record in `rec` (already checked by
/// `Record::check`: `top`, `levels` and `npages` are its fields); every
/// leaf must also lie inside `areas`, the device's own (from the command
/// line, not from the record).
pub fn verify<P: Phys>(
    p: &mut P,
    rec: &[u8],
    top: u64,
    levels: u8,
    npages: usize,
    areas: &Spans,
) -> Result<(), Refusal> {
    if areas.as_slice().is_empty() {
        return Err(Refusal::NoAreas);
    }
    if !(3..=5).contains(&levels) {
        return Err(Refusal::Levels);
    }
    let mut w = Walk {
        p,
        rec,
        n: npages.min(MAX_PAGES),
        seen: [0; MAX_PAGES.div_ceil(64)],
        reached: 0,
        run_start: 0,
        run_end: 0,
        areas,
    };
    w.table(top, u32::from(levels))?;
    w.run(0, 0)?;
    if w.reached != npages {
        return Err(Refusal::Unused);
    }
    Ok(())
}

impl<P: Phys> Walk<'_, P> {
    /// Leaves are gathered into runs of contiguous memory, each checked
    /// once when the next leaf does not continue it (and at the end).
    fn run(&mut self, pa: u64, size: u64) -> Result<(), Refusal> {
        if pa == self.run_end && self.run_end != self.run_start {
            self.run_end = self.run_end.saturating_add(size);
            return Ok(());
        }
        if self.run_end != self.run_start {
            let len = self.run_end - self.run_start;
            if self.p.owned(self.run_start, len) {
                return Err(Refusal::LeafOwned);
            }
            if !self.areas.cover(self.run_start, len) {
                return Err(Refusal::LeafOutsideAreas);
            }
        }
        self.run_start = pa;
        self.run_end = pa.saturating_add(size);
        Ok(())
    }

    fn table(&mut self, table: u64, level: u32) -> Result<(), Refusal> {
        let i = (0..self.n)
            .position(|i| Record::page(self.rec, i) == Some(table))
            .ok_or(Refusal::NotInRecord)?;
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if self.seen[word] & bit != 0 {
            return Err(Refusal::ReachedTwice);
        }
        self.seen[word] |= bit;
        self.reached += 1;
        if self.p.owned(table, PAGE) {
            return Err(Refusal::TableOwned);
        }
        let t = self.p.map(table).ok_or(Refusal::NotMappable)?;
        for idx in 0..TABLE_ENTRIES {
            let e = self.p.entry(&t, idx);
            if !pte_present(e) {
                continue;
            }
            if pte_leaf(e, level) {
                let size = leaf_size(level);
                self.run(e & ADDR_MASK & !(size - 1), size)?;
            } else {
                // not a leaf, so level >= 2 (level 1 is always a leaf)
                self.table(e & ADDR_MASK, level - 1)?;
            }
        }
        Ok(())
    }
}
