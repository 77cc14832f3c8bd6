// SPDX-License-Identifier: GPL-2.0
//! Intel VT-d (legacy mode) translation tables kept across kexec: entry
//! decoding, the page-table snapshot and the preserved record.
//!
//! Shared like `format.rs`: the `iommu_preserve` module includes this file
//! by path (next to `format.rs`, whose CRC32C it uses), and the host tests
//! it against a fake physical memory. `core` only, no `unsafe`, no panics
//! on any input.
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

use super::format::crc32c;

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

/// What the snapshot needs from the kernel.
pub trait Tables {
    /// A new page that survives kexec holding a copy of the table at
    /// `src`; returns its physical address.
    fn copy_table(&mut self, src: u64) -> Result<u64, Error>;
    /// Entry `idx` of a table made by `copy_table`.
    fn get(&mut self, table: u64, idx: usize) -> u64;
    fn set(&mut self, table: u64, idx: usize, v: u64);
    /// Whether `[addr, addr + size)` may be mapped across kexec: memory the
    /// next kernel does not own.
    fn leaf_ok(&mut self, addr: u64, size: u64) -> bool;
}

/// Copy the second-level table tree at `top` (`levels` deep) into pages
/// from `t`, every next-level pointer rewritten to the copies, leaves
/// unchanged. `page` is told each page made (also on error, so the caller
/// can give them back). Returns the new top.
pub fn snapshot<T: Tables>(
    t: &mut T,
    top: u64,
    levels: u8,
    page: &mut dyn FnMut(u64) -> Result<(), Error>,
) -> Result<u64, Error> {
    if !(3..=5).contains(&levels) {
        return Err(Error::Levels(levels));
    }
    copy_level(t, top, u32::from(levels), page)
}

fn copy_level<T: Tables>(
    t: &mut T,
    src: u64,
    level: u32,
    page: &mut dyn FnMut(u64) -> Result<(), Error>,
) -> Result<u64, Error> {
    let dst = t.copy_table(src & ADDR_MASK)?;
    page(dst)?;
    for i in 0..TABLE_ENTRIES {
        let e = t.get(dst, i);
        if !pte_present(e) {
            continue;
        }
        if pte_leaf(e, level) {
            let a = e & ADDR_MASK;
            if !t.leaf_ok(a, leaf_size(level)) {
                return Err(Error::LeafInRam(a));
            }
            continue;
        }
        let child = copy_level(t, e & ADDR_MASK, level - 1, page)?;
        t.set(dst, i, with_table(e, child));
    }
    Ok(dst)
}

/// Translate `iova` through a table tree (for checks): the physical
/// address, or `None` if unmapped.
/// `levels` outside 3..=5 (what VT-d defines) is `None`: the levels come
/// from a record, which is untrusted.
pub fn translate<T: Tables>(t: &mut T, top: u64, levels: u8, iova: u64) -> Option<u64> {
    if !(3..=5).contains(&levels) {
        return None;
    }
    let mut table = top;
    let mut level = u32::from(levels);
    while level >= 1 {
        let shift = 12 + 9 * (level - 1);
        let idx = ((iova >> shift) & 511) as usize;
        let e = t.get(table, idx);
        if !pte_present(e) {
            return None;
        }
        if pte_leaf(e, level) {
            let size = leaf_size(level);
            return Some((e & ADDR_MASK & !(size - 1)) | (iova & (size - 1)));
        }
        table = e & ADDR_MASK;
        level -= 1;
    }
    None
}

pub const MAGIC: [u8; 8] = *b"KHIOPRV1";
pub const VERSION: u32 = 1;

/// Byte offsets of the record's fields (the table below), the one
/// definition the encoder and decoder use; the C side's
/// `struct kh_vtd_record` (iommu-preserve/include/vtd_record.h, the
/// contract the next kernel's intel-iommu reads) is checked against these
/// on the host (userspace/kh-uapi/tests/c_headers.rs).
pub mod off {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const CRC: usize = 12;
    pub const SEG: usize = 16;
    pub const BUS: usize = 18;
    pub const DEVFN: usize = 19;
    pub const DID: usize = 20;
    pub const LEVELS: usize = 22;
    pub const RESERVED0: usize = 23;
    pub const OLD_ROOT: usize = 24;
    pub const ROOT: usize = 32;
    pub const CTX: usize = 40;
    pub const TOP: usize = 48;
    pub const NPAGES: usize = 56;
    pub const RESERVED1: usize = 60;
    pub const PAGES: usize = 64;
}

const HEADER: usize = off::PAGES;
/// Table pages one record page can list.
pub const MAX_PAGES: usize = (PAGE as usize - HEADER) / 8;

/// What iommu_preserve leaves in KRAM for the next kernel: which device
/// translates through which tables. Page 0 of the KRAM area
/// "iommu-preserve", little endian:
///
/// | off | size | field |
/// |-----|------|-------|
/// | 0   | 8    | magic `KHIOPRV1` |
/// | 8   | 4    | version (1) |
/// | 12  | 4    | CRC32C of bytes 16 .. 64 + 8 * npages |
/// | 16  | 2    | PCI segment |
/// | 18  | 1    | bus |
/// | 19  | 1    | devfn |
/// | 20  | 2    | domain id |
/// | 22  | 1    | page-table levels |
/// | 23  | 1    | 0 |
/// | 24  | 8    | the old kernel's own root table (for the log) |
/// | 32  | 8    | root table in KRAM |
/// | 40  | 8    | context table in KRAM (the device's bus) |
/// | 48  | 8    | top of the second-level snapshot in KRAM |
/// | 56  | 4    | npages |
/// | 60  | 4    | 0 |
/// | 64  | 8 * npages | the snapshot's table pages (top first) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seg: u16,
    pub bus: u8,
    pub devfn: u8,
    pub did: u16,
    pub levels: u8,
    pub old_root: u64,
    pub root: u64,
    pub ctx: u64,
    pub top: u64,
    pub pages: [u64; MAX_PAGES],
    pub npages: usize,
}

impl Record {
    pub fn pages(&self) -> &[u64] {
        &self.pages[..self.npages.min(MAX_PAGES)]
    }

    pub fn encode(&self, out: &mut [u8]) -> Result<(), Error> {
        let n = self.npages;
        if n > MAX_PAGES {
            return Err(Error::TooManyPages);
        }
        let end = HEADER + 8 * n;
        if out.len() < end {
            return Err(Error::BadLength);
        }
        out[..end].fill(0);
        out[off::MAGIC..off::MAGIC + 8].copy_from_slice(&MAGIC);
        out[off::VERSION..off::VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
        out[off::SEG..off::SEG + 2].copy_from_slice(&self.seg.to_le_bytes());
        out[off::BUS] = self.bus;
        out[off::DEVFN] = self.devfn;
        out[off::DID..off::DID + 2].copy_from_slice(&self.did.to_le_bytes());
        out[off::LEVELS] = self.levels;
        out[off::OLD_ROOT..off::OLD_ROOT + 8].copy_from_slice(&self.old_root.to_le_bytes());
        out[off::ROOT..off::ROOT + 8].copy_from_slice(&self.root.to_le_bytes());
        out[off::CTX..off::CTX + 8].copy_from_slice(&self.ctx.to_le_bytes());
        out[off::TOP..off::TOP + 8].copy_from_slice(&self.top.to_le_bytes());
        out[off::NPAGES..off::NPAGES + 4].copy_from_slice(&(n as u32).to_le_bytes());
        for (i, p) in self.pages().iter().enumerate() {
            out[off::PAGES + 8 * i..off::PAGES + 8 * i + 8].copy_from_slice(&p.to_le_bytes());
        }
        Self::seal(out, n)
    }

    /// Write the CRC32C of a record of `npages` pages already in `out`
    /// (the encoder's last step; a test that edits bytes of a record seals
    /// it again with this).
    pub fn seal(out: &mut [u8], npages: usize) -> Result<(), Error> {
        let end = off::PAGES + 8 * npages.min(MAX_PAGES);
        let Some(covered) = out.get(off::SEG..end) else {
            return Err(Error::BadLength);
        };
        let crc = crc32c(covered);
        out[off::CRC..off::CRC + 4].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// `Ok(None)`: no record (an all-zero page). Anything else that is not
    /// a valid record is an error, never a guess.
    pub fn decode(b: &[u8]) -> Result<Option<Record>, Error> {
        if b.len() < HEADER {
            return Err(Error::BadLength);
        }
        if b[..HEADER].iter().all(|&x| x == 0) {
            return Ok(None);
        }
        if b[off::MAGIC..off::MAGIC + 8] != MAGIC {
            return Err(Error::BadMagic);
        }
        let u32at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(w)
        };
        let v = u32at(off::VERSION);
        if v != VERSION {
            return Err(Error::BadVersion(v));
        }
        let n = u32at(off::NPAGES) as usize;
        if n > MAX_PAGES || HEADER + 8 * n > b.len() {
            return Err(Error::BadLength);
        }
        if crc32c(&b[off::SEG..HEADER + 8 * n]) != u32at(off::CRC) {
            return Err(Error::BadChecksum);
        }
        if b[off::RESERVED0] != 0 || u32at(off::RESERVED1) != 0 {
            return Err(Error::Reserved);
        }
        let mut r = Record {
            seg: u16::from_le_bytes([b[off::SEG], b[off::SEG + 1]]),
            bus: b[off::BUS],
            devfn: b[off::DEVFN],
            did: u16::from_le_bytes([b[off::DID], b[off::DID + 1]]),
            levels: b[off::LEVELS],
            old_root: u64at(off::OLD_ROOT),
            root: u64at(off::ROOT),
            ctx: u64at(off::CTX),
            top: u64at(off::TOP),
            pages: [0; MAX_PAGES],
            npages: n,
        };
        for i in 0..n {
            r.pages[i] = u64at(off::PAGES + 8 * i);
        }
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests {
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
            seg: 0,
            bus: 0,
            devfn: 0x18,
            did: 3,
            levels: 4,
            old_root: 0x1000,
            root: 0x1_0000_2000,
            ctx: 0x1_0000_3000,
            top: 0x1_0000_4000,
            pages: [0; MAX_PAGES],
            npages: 3,
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
}
