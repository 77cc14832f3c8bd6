// SPDX-License-Identifier: GPL-2.0
//! KRAM on-media format, version 1, and the logic that changes it.
//!
//! This file is shared: the `kram` kernel module includes it by path and the
//! `kram-format` crate tests it on the host. It uses `core` only, has no
//! `unsafe` and never panics on what it reads from the region.
//!
//! # Layout of a region of `P` pages (4 KiB each)
//!
//! | pages                    | content                                        |
//! |--------------------------|------------------------------------------------|
//! | 0, 1                     | superblock slots (generation `g` lives in slot `g % 2`) |
//! | 2 .. 2 + M               | owner map: one little-endian `u32` per page of the region |
//! | 2 + M .. P               | data pages (area runs and allocated pages)     |
//!
//! A superblock holds the geometry, the generation, the area table and one
//! pending intent, and ends with a CRC32C of everything before it. An owner
//! map word is `owner | flags << 16 | crc8 << 24`: owner 0 is free, 1..=32
//! an area, 0xffff metadata; flag bit 0 marks a page of its area's fixed run;
//! the CRC8 covers the page index and the low 24 bits, so a word copied to
//! another page or damaged is detected.
//!
//! # Update protocol
//!
//! One page changes owner by one aligned 32-bit store, so after a kexec,
//! panic or crash at any instant a page has exactly one owner or is free:
//! never two owners, never lost. Area creation and deletion touch many words:
//! they first commit an intent to the superblock (write the other slot with
//! generation + 1; a torn write fails its CRC and the older slot stays
//! current), then change the words, then commit the area table with the
//! intent cleared, twice, so that both slots hold the finished state and
//! damage to either one loses nothing. Opening a region with an intent
//! pending rolls a create back and a delete forward. Opening validates everything before changing
//! anything: corrupt or foreign metadata is refused and left as it is.

use core::sync::atomic::{AtomicU32, Ordering};

/// Size of a KRAM page.
pub const PAGE_SIZE: usize = 4096;
/// Identifies a KRAM superblock.
pub const MAGIC: [u8; 8] = *b"KRAMfmt\x01";
/// On-media format version written and accepted.
pub const FORMAT_VERSION: u32 = 1;
/// Areas a region can hold.
pub const MAX_AREAS: usize = 32;
/// Pages in 2 MiB: runs this long or longer are placed 2 MiB-aligned
/// when they can be (`Kram::create_area`).
pub const HUGE_RUN: u64 = (2 << 20) / PAGE_SIZE as u64;
/// Bytes of an area name, NUL padded; at most `NAME_LEN - 1` are used.
pub const NAME_LEN: usize = 32;
/// Owner of a free page.
pub const OWNER_FREE: u16 = 0;
/// Owner of the region's own metadata pages.
pub const OWNER_META: u16 = 0xffff;
/// Smallest region: metadata plus one data page is pointless below this.
pub const MIN_PAGES: u64 = 16;
/// Largest region: page indices fit the owner map's reach.
pub const MAX_PAGES: u64 = 1 << 32;

const SB_MAGIC: usize = 0;
pub(crate) const SB_VERSION: usize = 8;
const SB_PAGE_SIZE: usize = 12;
const SB_BASE: usize = 16;
const SB_PAGES: usize = 24;
const SB_GEN: usize = 32;
const SB_MAP_PAGES: usize = 40;
const SB_INTENT: usize = 48;
pub(crate) const SB_AREAS: usize = 128;
const AREA_LEN: usize = 64;
pub(crate) const SB_CSUM: usize = SB_AREAS + MAX_AREAS * AREA_LEN;
/// Bytes of a superblock (the rest of its page is zero).
pub const SB_LEN: usize = SB_CSUM + 4;
/// The highest generation a superblock may carry: 2^62 commits, more than a
/// region sees in any lifetime; above it a superblock is refused as corrupt.
pub const MAX_GENERATION: u64 = 1 << 62;

const ENTRY_FIXED: u32 = 1 << 16;

/// Errors, each with one errno in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The region's size or address is not usable (EINVAL).
    Geometry,
    /// No superblock slot holds a valid KRAM superblock: not formatted,
    /// foreign or corrupt (EUCLEAN).
    NoSuperblock,
    /// A valid superblock describes another region (EUCLEAN).
    Foreign,
    /// A superblock of a format version we do not know (EPROTO).
    Version,
    /// The owner map disagrees with itself or the area table at this page (EUCLEAN).
    Corrupt(u64),
    /// No such area (ENOENT).
    NoArea,
    /// An area of that name exists (EEXIST).
    Exists,
    /// Bad name or argument (EINVAL).
    Invalid,
    /// No free area slot, contiguous run or page (ENOSPC).
    NoSpace,
    /// The page does not belong to that area as an allocated page (EPERM).
    NotOwner,
    /// A write did not happen (only test doubles of [`Persist`] say so).
    Crashed,
}

/// How the format code writes to the region. The kernel writes directly;
/// tests inject crashes between (and inside) writes.
pub trait Persist {
    /// Store one owner-map word.
    fn store(&self, word: &AtomicU32, value: u32) -> Result<(), Error> {
        word.store(value, Ordering::Release);
        Ok(())
    }
    /// Write a superblock into a slot (its checksum last).
    fn write_sb(&self, slot: &mut [u8], sb: &Superblock) -> Result<(), Error> {
        sb.encode(slot)
    }
    /// Make a slot invalid.
    fn erase_sb(&self, slot: &mut [u8]) -> Result<(), Error> {
        slot.get_mut(..SB_LEN).ok_or(Error::Geometry)?.fill(0);
        Ok(())
    }
}

/// Writes straight to the region.
pub struct Direct;
impl Persist for Direct {}

/// The region's memory, as the format code sees it.
pub struct Media<'a> {
    /// The two superblock pages.
    pub slots: [&'a mut [u8]; 2],
    /// The owner map: one word per page of the region.
    pub map: &'a [AtomicU32],
}

/// Where things are in a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Physical address of page 0.
    pub base: u64,
    /// Pages in the region.
    pub pages: u64,
    /// Pages of the owner map.
    pub map_pages: u64,
}

impl Geometry {
    /// Geometry of a region at physical `base` of `size` bytes.
    pub fn new(base: u64, size: u64) -> Result<Self, Error> {
        let ps = PAGE_SIZE as u64;
        if !base.is_multiple_of(ps) || !size.is_multiple_of(ps) {
            return Err(Error::Geometry);
        }
        let pages = size / ps;
        if !(MIN_PAGES..=MAX_PAGES).contains(&pages) || base.checked_add(size).is_none() {
            return Err(Error::Geometry);
        }
        let map_pages = (pages * 4).div_ceil(ps);
        Ok(Geometry {
            base,
            pages,
            map_pages,
        })
    }
    /// First page after the metadata.
    pub fn data_first(&self) -> u64 {
        2 + self.map_pages
    }
    /// Physical address of page `index`.
    pub fn phys(&self, index: u64) -> u64 {
        self.base + index * PAGE_SIZE as u64
    }
    /// Page index of physical address `phys`, if it is a page of the region.
    pub fn index_of(&self, phys: u64) -> Option<u64> {
        let off = phys.checked_sub(self.base)?;
        (off % PAGE_SIZE as u64 == 0 && off / (PAGE_SIZE as u64) < self.pages)
            .then_some(off / PAGE_SIZE as u64)
    }
}

/// One area of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    /// NUL-padded name; all zero for an unused slot.
    pub name: [u8; NAME_LEN],
    /// First page of the fixed run.
    pub first: u64,
    /// Pages in the fixed run (may be 0).
    pub npages: u64,
    /// Generation that created it.
    pub created: u64,
}

const NO_AREA: Area = Area {
    name: [0; NAME_LEN],
    first: 0,
    npages: 0,
    created: 0,
};

impl Area {
    /// Whether the slot holds an area.
    pub fn in_use(&self) -> bool {
        self.name[0] != 0
    }
    /// The name as bytes, without padding.
    pub fn name(&self) -> &[u8] {
        let n = self.name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        self.name.get(..n).unwrap_or(&[])
    }
}

/// A multi-word change in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Nothing pending.
    None,
    /// Area `id` is being created over `[first, first + npages)`.
    Create { id: u16, first: u64, npages: u64 },
    /// Area `id` is being deleted.
    Delete { id: u16 },
}

/// A decoded superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Geometry recorded at format time.
    pub geo: Geometry,
    /// Increases by one on every commit.
    pub generation: u64,
    /// Pending multi-word change.
    pub intent: Intent,
    /// Area `id` lives in `areas[id - 1]`.
    pub areas: [Area; MAX_AREAS],
}

const fn crc8_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u8;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x80 != 0 {
                (c << 1) ^ 0x07
            } else {
                c << 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}
static CRC8: [u8; 256] = crc8_table();

fn entry_check(page: u64, low: u32) -> u8 {
    let mut c = 0xa5u8;
    for b in page
        .to_le_bytes()
        .iter()
        .chain(low.to_le_bytes()[..3].iter())
    {
        c = CRC8[(c ^ b) as usize];
    }
    c
}

/// Owner-map word saying page `page` belongs to `owner`.
pub fn encode_entry(page: u64, owner: u16, fixed: bool) -> u32 {
    let low = owner as u32 | if fixed { ENTRY_FIXED } else { 0 };
    low | (entry_check(page, low) as u32) << 24
}

/// Owner and fixed flag of page `page` from its word, or `Corrupt(page)`.
pub fn decode_entry(page: u64, word: u32) -> Result<(u16, bool), Error> {
    let low = word & 0x00ff_ffff;
    if low & !(0xffff | ENTRY_FIXED) != 0 || (word >> 24) as u8 != entry_check(page, low) {
        return Err(Error::Corrupt(page));
    }
    Ok((low as u16, low & ENTRY_FIXED != 0))
}

fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    if let Some(d) = buf.get_mut(off..off + bytes.len()) {
        d.copy_from_slice(bytes);
    }
}
fn get_u32(buf: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = buf.get(off..off + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}
fn get_u64(buf: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = buf.get(off..off + 8) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}

// The rest of the format, one concern a file. `path` attributes: this file
// is also included by path from the kernel modules, where the nested
// files are found relative to it in both builds.
#[path = "crc.rs"]
mod crc;
pub use crc::crc32c;
#[path = "format/region.rs"]
mod region;
#[path = "format/superblock.rs"]
mod superblock;
// (a kernel module that includes this file uses part of it)
#[allow(unused_imports)]
pub use region::{validate, Kram, OpenReport, Stats};
#[allow(unused_imports)]
pub use superblock::valid_name;
