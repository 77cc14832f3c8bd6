// SPDX-License-Identifier: GPL-2.0
//! Intel VT-d (legacy mode) translation tables kept across kexec: entry
//! decoding, the page-table snapshot and the preserved record.
//!
//! Shared like `format.rs`: the `iommu_preserve` module includes this file
//! by path (next to `format.rs`, whose CRC32C it uses), and the host tests
//! it against a fake physical memory. `core` only, no `unsafe`, no panics
//! on any input.
//!
//! Files: this one (entry decoding), `vtd/walk.rs` (the snapshot and
//! translation), `vtd/record.rs` (the record), `vtd/verify.rs` (the next
//! kernel's check of the tables, built into the kernel), declared with `#[path]`
//! so they resolve the same in the crate and in the module, which includes
//! this file by path.
//!
//! Legacy-mode structures (VT-d specification, chapter 9):
//! - root entry (16 bytes, one per bus): bit 0 present, bits 63:12 the
//!   context table;
//! - context entry (16 bytes, one per devfn): low word bit 0 present,
//!   bits 3:2 translation type (0: untranslated requests through the
//!   second-level table), bits 63:12 the second-level table root; high
//!   word bits 2:0 address width (1: 3 levels, 2: 4, 3: 5), bits 23:8 the
//!   domain id;
//! - second-level entry (8 bytes, 512 per table): bit 0 read, bit 1 write
//!   (present if either), bit 7 a superpage leaf at levels 2 and 3,
//!   bits 51:12 the next table or the page.

pub const TABLE_ENTRIES: usize = 512;
pub const PAGE: u64 = 4096;
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// A decoded legacy context entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub present: bool,
    /// Translation type: 0 untranslated via the second-level table,
    /// 1 also translated requests (device TLB), 2 pass-through.
    pub tt: u8,
    /// Second-level table root.
    pub table: u64,
    /// Page-table levels (3, 4 or 5), from the address width.
    pub levels: u8,
    pub did: u16,
}

pub fn root_context_table(lo: u64) -> Option<u64> {
    (lo & 1 != 0).then_some(lo & ADDR_MASK)
}

pub fn context(lo: u64, hi: u64) -> Context {
    Context {
        present: lo & 1 != 0,
        tt: ((lo >> 2) & 3) as u8,
        table: lo & ADDR_MASK,
        levels: (hi & 7) as u8 + 2,
        did: ((hi >> 8) & 0xffff) as u16,
    }
}

/// The low word of a root or context entry with its table replaced.
pub fn with_table(lo: u64, table: u64) -> u64 {
    (lo & !ADDR_MASK) | (table & ADDR_MASK)
}

pub fn pte_present(e: u64) -> bool {
    e & 3 != 0
}

/// A leaf at `level` (1 = 4 KiB pages): the last level, or a superpage.
pub fn pte_leaf(e: u64, level: u32) -> bool {
    level == 1 || (level <= 3 && e & (1 << 7) != 0)
}

/// Bytes a leaf at `level` maps.
pub fn leaf_size(level: u32) -> u64 {
    PAGE << (9 * (level.saturating_sub(1)).min(4))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The device's context entry is not present.
    NotPresent,
    /// Pass-through or device-TLB translation: nothing to keep this way.
    TranslationType(u8),
    /// An address width the snapshot does not handle.
    Levels(u8),
    /// A mapped page is in memory the next kernel owns (System RAM).
    LeafInRam(u64),
    /// More table pages than the record can list.
    TooManyPages,
    /// Out of KRAM pages, or a table could not be read.
    NoMemory,
    BadMagic,
    BadVersion(u32),
    BadChecksum,
    BadLength,
    /// A byte the format keeps zero (offsets 23 and 60-63) is not: a record
    /// this code did not write.
    Reserved,
}

#[path = "vtd/record.rs"]
mod record;
#[path = "vtd/spans.rs"]
mod spans;
#[path = "vtd/verify.rs"]
mod verify;
#[path = "vtd/walk.rs"]
mod walk;

// Each includer uses only some of these (iommu_preserve not `translate`,
// `off`, `MAGIC`, `VERSION` or `verify`; the kernel's adoption check only
// `Record::check` and `verify`).
#[allow(unused_imports)]
pub use record::{off, Header, Record, MAGIC, MAX_PAGES, VERSION};
#[allow(unused_imports)]
pub use spans::{Span, SpanError, Spans, MAX_SPANS};
#[allow(unused_imports)]
pub use verify::{verify, Phys, Refusal};
#[allow(unused_imports)]
pub use walk::{snapshot, translate, Tables};

#[cfg(test)]
#[path = "vtd/tests.rs"]
mod tests;
#[cfg(test)]
#[path = "vtd/verify_tests.rs"]
mod verify_tests;
