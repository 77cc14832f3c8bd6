// SPDX-License-Identifier: GPL-2.0
//! The preserved record's codec: its field offsets, encoding, sealing and
//! fail-closed decoding.

use super::{Error, PAGE};
use crate::format::crc32c;

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

pub(super) const HEADER: usize = off::PAGES;
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
///
/// The fixed fields are a [`Header`] (what `Record::check` reads without
/// copying the page list); `Record` derefs to it, so `rec.top` is the
/// header's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub head: Header,
    pub pages: [u64; MAX_PAGES],
}

impl core::ops::Deref for Record {
    type Target = Header;
    fn deref(&self) -> &Header {
        &self.head
    }
}

impl core::ops::DerefMut for Record {
    fn deref_mut(&mut self) -> &mut Header {
        &mut self.head
    }
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
        let Some(h) = Self::check(b)? else {
            return Ok(None);
        };
        let mut r = Record {
            head: h,
            pages: [0; MAX_PAGES],
        };
        for (i, p) in r.pages.iter_mut().enumerate().take(h.npages) {
            *p = Self::page(b, i).unwrap_or(0);
        }
        Ok(Some(r))
    }

    /// The checks of `decode` without copying the page list (the kernel's
    /// adoption check reads the record where it lies, `verify.rs`): magic,
    /// version, length, CRC32C, reserved bytes, in that order. `Ok(None)`:
    /// an all-zero header, no record.
    pub fn check(b: &[u8]) -> Result<Option<Header>, Error> {
        if b.len() < HEADER {
            return Err(Error::BadLength);
        }
        if b[..HEADER].iter().all(|&x| x == 0) {
            return Ok(None);
        }
        if b[off::MAGIC..off::MAGIC + 8] != MAGIC {
            return Err(Error::BadMagic);
        }
        let v = u32_at(b, off::VERSION);
        if v != VERSION {
            return Err(Error::BadVersion(v));
        }
        let n = u32_at(b, off::NPAGES) as usize;
        if n > MAX_PAGES || HEADER + 8 * n > b.len() {
            return Err(Error::BadLength);
        }
        if crc32c(&b[off::SEG..HEADER + 8 * n]) != u32_at(b, off::CRC) {
            return Err(Error::BadChecksum);
        }
        if b[off::RESERVED0] != 0 || u32_at(b, off::RESERVED1) != 0 {
            return Err(Error::Reserved);
        }
        Ok(Some(Header {
            seg: u16::from_le_bytes([b[off::SEG], b[off::SEG + 1]]),
            bus: b[off::BUS],
            devfn: b[off::DEVFN],
            did: u16::from_le_bytes([b[off::DID], b[off::DID + 1]]),
            levels: b[off::LEVELS],
            old_root: u64_at(b, off::OLD_ROOT),
            root: u64_at(b, off::ROOT),
            ctx: u64_at(b, off::CTX),
            top: u64_at(b, off::TOP),
            npages: n,
        }))
    }

    /// Table page `i` of the record in `b` (`None` past the bytes).
    pub fn page(b: &[u8], i: usize) -> Option<u64> {
        let o = i.checked_mul(8)?.checked_add(off::PAGES)?;
        let w = b.get(o..o.checked_add(8)?)?;
        Some(u64_at(w, 0))
    }
}

/// A checked record's fields (`Record::check`); its pages stay where they
/// are (`Record::page`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub seg: u16,
    pub bus: u8,
    pub devfn: u8,
    pub did: u16,
    pub levels: u8,
    pub old_root: u64,
    pub root: u64,
    pub ctx: u64,
    pub top: u64,
    pub npages: usize,
}

/// Little-endian words at `o` (callers checked `b` is long enough).
fn u32_at(b: &[u8], o: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(w)
}
