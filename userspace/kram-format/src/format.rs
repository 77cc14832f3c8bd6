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

const fn crc32c_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}
static CRC32C: [u32; 256] = crc32c_table();

/// CRC32C (Castagnoli) of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC32C[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
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

impl Superblock {
    /// Encode into `buf` (at least `SB_LEN` bytes), checksum last: a write
    /// torn anywhere leaves a slot whose checksum fails.
    pub fn encode(&self, buf: &mut [u8]) -> Result<(), Error> {
        let buf = buf.get_mut(..SB_LEN).ok_or(Error::Geometry)?;
        buf.fill(0);
        put(buf, SB_MAGIC, &MAGIC);
        put(buf, SB_VERSION, &FORMAT_VERSION.to_le_bytes());
        put(buf, SB_PAGE_SIZE, &(PAGE_SIZE as u32).to_le_bytes());
        put(buf, SB_BASE, &self.geo.base.to_le_bytes());
        put(buf, SB_PAGES, &self.geo.pages.to_le_bytes());
        put(buf, SB_GEN, &self.generation.to_le_bytes());
        put(buf, SB_MAP_PAGES, &self.geo.map_pages.to_le_bytes());
        let (op, id, first, npages) = match self.intent {
            Intent::None => (0u32, 0u16, 0u64, 0u64),
            Intent::Create { id, first, npages } => (1, id, first, npages),
            Intent::Delete { id } => (2, id, 0, 0),
        };
        put(buf, SB_INTENT, &op.to_le_bytes());
        put(buf, SB_INTENT + 4, &(id as u32).to_le_bytes());
        put(buf, SB_INTENT + 8, &first.to_le_bytes());
        put(buf, SB_INTENT + 16, &npages.to_le_bytes());
        for (i, a) in self.areas.iter().enumerate() {
            let o = SB_AREAS + i * AREA_LEN;
            put(buf, o, &a.name);
            put(buf, o + 32, &a.first.to_le_bytes());
            put(buf, o + 40, &a.npages.to_le_bytes());
            put(buf, o + 48, &a.created.to_le_bytes());
        }
        let c = crc32c(&buf[..SB_CSUM]);
        put(buf, SB_CSUM, &c.to_le_bytes());
        Ok(())
    }

    /// Check a slot's magic, checksum and version without decoding it;
    /// return its generation.
    pub fn peek(buf: &[u8]) -> Result<u64, Error> {
        let buf = buf.get(..SB_LEN).ok_or(Error::NoSuperblock)?;
        if buf.get(..8) != Some(&MAGIC[..]) || crc32c(&buf[..SB_CSUM]) != get_u32(buf, SB_CSUM) {
            return Err(Error::NoSuperblock);
        }
        if get_u32(buf, SB_VERSION) != FORMAT_VERSION
            || get_u32(buf, SB_PAGE_SIZE) != PAGE_SIZE as u32
        {
            return Err(Error::Version);
        }
        Ok(get_u64(buf, SB_GEN))
    }

    /// Decode and check one slot. The geometry inside is checked for sanity
    /// here and against the region by the caller.
    pub fn decode(buf: &[u8]) -> Result<Self, Error> {
        let buf = buf.get(..SB_LEN).ok_or(Error::NoSuperblock)?;
        if buf.get(..8) != Some(&MAGIC[..]) {
            return Err(Error::NoSuperblock);
        }
        if crc32c(&buf[..SB_CSUM]) != get_u32(buf, SB_CSUM) {
            return Err(Error::NoSuperblock);
        }
        if get_u32(buf, SB_VERSION) != FORMAT_VERSION
            || get_u32(buf, SB_PAGE_SIZE) != PAGE_SIZE as u32
        {
            return Err(Error::Version);
        }
        let base = get_u64(buf, SB_BASE);
        let pages = get_u64(buf, SB_PAGES);
        let geo = Geometry::new(
            base,
            pages.checked_mul(PAGE_SIZE as u64).ok_or(Error::Foreign)?,
        )
        .map_err(|_| Error::Foreign)?;
        if geo.map_pages != get_u64(buf, SB_MAP_PAGES) {
            return Err(Error::Foreign);
        }
        let id = get_u32(buf, SB_INTENT + 4);
        let first = get_u64(buf, SB_INTENT + 8);
        let npages = get_u64(buf, SB_INTENT + 16);
        let idok = (1..=MAX_AREAS as u32).contains(&id);
        let intent = match get_u32(buf, SB_INTENT) {
            0 => Intent::None,
            1 if idok => Intent::Create {
                id: id as u16,
                first,
                npages,
            },
            2 if idok => Intent::Delete { id: id as u16 },
            _ => return Err(Error::Corrupt(0)),
        };
        let mut areas = [NO_AREA; MAX_AREAS];
        for (i, a) in areas.iter_mut().enumerate() {
            let o = SB_AREAS + i * AREA_LEN;
            a.name
                .copy_from_slice(buf.get(o..o + NAME_LEN).ok_or(Error::Corrupt(0))?);
            a.first = get_u64(buf, o + 32);
            a.npages = get_u64(buf, o + 40);
            a.created = get_u64(buf, o + 48);
            if a.in_use() {
                valid_name(a.name()).map_err(|_| Error::Corrupt(0))?;
                let end = a.first.checked_add(a.npages).ok_or(Error::Corrupt(0))?;
                if a.first < geo.data_first() || end > geo.pages {
                    return Err(Error::Corrupt(0));
                }
            } else if *a != NO_AREA {
                return Err(Error::Corrupt(0));
            }
        }
        // A checksum proves no intent: two areas with one name, or fixed
        // runs that overlap, would give one page two owners. (Each run's
        // end was checked above: no overflow.)
        for (i, a) in areas.iter().enumerate().filter(|(_, a)| a.in_use()) {
            for b in areas.iter().skip(i + 1).filter(|b| b.in_use()) {
                let overlap = a.first < b.first + b.npages && b.first < a.first + a.npages;
                if a.name() == b.name() || overlap {
                    return Err(Error::Corrupt(0));
                }
            }
        }
        // Each commit adds one; a generation this high was never written
        // (and would overflow on the next commit).
        let generation = get_u64(buf, SB_GEN);
        if generation > MAX_GENERATION {
            return Err(Error::Corrupt(0));
        }
        Ok(Superblock {
            geo,
            generation,
            intent,
            areas,
        })
    }
}

/// Area names: 1 to 31 bytes of `[A-Za-z0-9._-]`.
pub fn valid_name(name: &[u8]) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() < NAME_LEN
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid)
    }
}

/// What `open` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenReport {
    /// Generation adopted.
    pub generation: u64,
    /// The other slot did not validate (a torn commit, or damage to an old copy).
    pub other_slot_bad: bool,
    /// The pending intent that was rolled back (create) or forward (delete).
    pub recovered: Intent,
}

/// Page counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Pages in the region.
    pub pages: u64,
    /// Metadata pages.
    pub meta: u64,
    /// Pages owned by areas (fixed runs and allocated pages).
    pub used: u64,
    /// Free data pages.
    pub free: u64,
}

/// A region in use: the decoded current superblock plus the media.
///
/// About 2 KiB: the kernel keeps it on the heap, and the code below avoids
/// more than one superblock on the stack at a time (kernel stacks are small).
pub struct Kram<'a, P: Persist> {
    media: Media<'a>,
    sb: Superblock,
    used: u64,
    hint: u64,
    pub(crate) persist: P,
}

impl<'a, P: Persist> Kram<'a, P> {
    fn check_media(geo: &Geometry, media: &Media<'_>) -> Result<(), Error> {
        if media.map.len() as u64 != geo.pages || media.slots.iter().any(|s| s.len() < SB_LEN) {
            return Err(Error::Geometry);
        }
        Ok(())
    }

    /// Write a fresh, empty KRAM over the region. Only an explicit request
    /// may call this: whatever the region held is forgotten.
    pub fn format(geo: Geometry, media: Media<'a>, persist: P) -> Result<Self, Error> {
        Self::check_media(&geo, &media)?;
        let mut k = Kram {
            media,
            sb: Superblock {
                geo,
                generation: 0,
                intent: Intent::None,
                areas: [NO_AREA; MAX_AREAS],
            },
            used: 0,
            hint: geo.data_first(),
            persist,
        };
        // Invalidate old superblocks first, so a crash half-way through
        // leaves a region that is refused, not one that looks valid.
        for slot in k.media.slots.iter_mut() {
            k.persist.erase_sb(slot)?;
        }
        for (i, w) in k.media.map.iter().enumerate() {
            let page = i as u64;
            let owner = if page < geo.data_first() {
                OWNER_META
            } else {
                OWNER_FREE
            };
            k.persist.store(w, encode_entry(page, owner, false))?;
        }
        // Generations 1 and 2 carry the same empty table.
        k.commit_mirrored()?;
        Ok(k)
    }

    /// Adopt the KRAM found in the region: choose the newest valid
    /// superblock, validate the whole owner map against it, and only then
    /// finish a pending intent. Nothing is written if anything is wrong.
    pub fn open(geo: Geometry, media: Media<'a>, persist: P) -> Result<(Self, OpenReport), Error> {
        Self::check_media(&geo, &media)?;
        // Generations of the slots that pass magic, checksum and version.
        let mut gens = [None, None];
        let mut first_err = Error::NoSuperblock;
        for (s, slot) in media.slots.iter().enumerate() {
            match Superblock::peek(slot) {
                Ok(g) if g % 2 == s as u64 && g > 0 => gens[s] = Some(g),
                Ok(_) => {}
                Err(e) => {
                    if e != Error::NoSuperblock {
                        first_err = e;
                    }
                }
            }
        }
        if let [Some(a), Some(b)] = gens {
            if a.abs_diff(b) != 1 {
                return Err(Error::Corrupt(0));
            }
        }
        // Decode the newest; fall back to the other if it does not decode.
        let order = if gens[0] > gens[1] { [0, 1] } else { [1, 0] };
        let mut chosen = None;
        for s in order {
            if gens[s].is_none() {
                continue;
            }
            match media.slots.get(s).map(|slot| Superblock::decode(slot)) {
                Some(Ok(sb)) => {
                    chosen = Some(sb);
                    break;
                }
                Some(Err(e)) => first_err = e,
                None => {}
            }
        }
        let Some(sb) = chosen else {
            return Err(first_err);
        };
        // The other slot is bad if it did not validate, or if it was the newer
        // one and did not decode.
        let other = gens
            .get(1 - (sb.generation % 2) as usize)
            .copied()
            .flatten();
        let other_bad = other.is_none_or(|g| g > sb.generation);
        if sb.geo != geo {
            return Err(Error::Foreign);
        }
        let used = validate(&sb, media.map)?;
        let mut k = Kram {
            media,
            sb,
            used,
            hint: geo.data_first(),
            persist,
        };
        let recovered = k.sb.intent;
        match recovered {
            Intent::None => {}
            Intent::Create { id, .. } => {
                k.release_all(id)?;
                k.sb.intent = Intent::None;
                k.commit_mirrored()?;
            }
            Intent::Delete { id } => {
                k.release_all(id)?;
                if let Some(a) = k.sb.areas.get_mut(id as usize - 1) {
                    *a = NO_AREA;
                }
                k.sb.intent = Intent::None;
                k.commit_mirrored()?;
            }
        }
        let generation = k.sb.generation;
        Ok((
            k,
            OpenReport {
                generation,
                other_slot_bad: other_bad,
                recovered,
            },
        ))
    }

    /// Commit twice, so both slots hold the same finished state.
    fn commit_mirrored(&mut self) -> Result<(), Error> {
        self.commit()?;
        self.commit()
    }

    fn commit(&mut self) -> Result<(), Error> {
        self.sb.generation = self
            .sb
            .generation
            .checked_add(1)
            .filter(|&g| g <= MAX_GENERATION)
            .ok_or(Error::Invalid)?;
        let slot = (self.sb.generation % 2) as usize;
        match self.media.slots.get_mut(slot) {
            Some(s) => self.persist.write_sb(s, &self.sb),
            None => Err(Error::Geometry),
        }
    }

    /// Free every page owned by `id` (fixed and allocated).
    fn release_all(&mut self, id: u16) -> Result<(), Error> {
        let first = self.sb.geo.data_first();
        for (i, w) in self.media.map.iter().enumerate().skip(first as usize) {
            let page = i as u64;
            let (owner, _) = decode_entry(page, w.load(Ordering::Acquire))?;
            if owner == id {
                self.persist
                    .store(w, encode_entry(page, OWNER_FREE, false))?;
                self.used -= 1;
            }
        }
        Ok(())
    }

    /// The current superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// Geometry of the region.
    pub fn geometry(&self) -> Geometry {
        self.sb.geo
    }

    /// Page counts.
    pub fn stats(&self) -> Stats {
        let meta = self.sb.geo.data_first();
        Stats {
            pages: self.sb.geo.pages,
            meta,
            used: self.used,
            free: self.sb.geo.pages - meta - self.used,
        }
    }

    /// The area with this id.
    pub fn area(&self, id: u16) -> Result<&Area, Error> {
        match self.sb.areas.get((id as usize).wrapping_sub(1)) {
            Some(a) if a.in_use() => Ok(a),
            _ => Err(Error::NoArea),
        }
    }

    /// Id of the area called `name`.
    pub fn lookup(&self, name: &[u8]) -> Result<u16, Error> {
        self.sb
            .areas
            .iter()
            .position(|a| a.in_use() && a.name() == name)
            .map(|i| i as u16 + 1)
            .ok_or(Error::NoArea)
    }

    /// Create area `name` with a fixed run of `npages` contiguous pages.
    pub fn create_area(&mut self, name: &[u8], npages: u64) -> Result<u16, Error> {
        valid_name(name)?;
        if self.lookup(name).is_ok() {
            return Err(Error::Exists);
        }
        let slot = self
            .sb
            .areas
            .iter()
            .position(|a| !a.in_use())
            .ok_or(Error::NoSpace)?;
        let id = slot as u16 + 1;
        let first = if npages == 0 {
            self.sb.geo.data_first()
        } else {
            self.find_run(npages)?
        };
        self.sb.intent = Intent::Create { id, first, npages };
        self.commit()?;
        for page in first..first + npages {
            let w = self.media.map.get(page as usize).ok_or(Error::Geometry)?;
            self.persist.store(w, encode_entry(page, id, true))?;
            self.used += 1;
        }
        let mut area = Area {
            name: [0; NAME_LEN],
            first,
            npages,
            created: self.sb.generation,
        };
        area.name[..name.len()].copy_from_slice(name);
        self.sb.areas[slot] = area;
        self.sb.intent = Intent::None;
        self.commit_mirrored()?;
        Ok(id)
    }

    /// Where a new run of `npages` pages goes: first fit, except that a run
    /// of 2 MiB or more starts at a 2 MiB-aligned physical address when a
    /// free run there is long enough, so that a user mapping of the area
    /// can use PMD entries (and KVM 2 MiB pages for guest RAM kept there).
    fn find_run(&self, npages: u64) -> Result<u64, Error> {
        if npages >= HUGE_RUN {
            if let Some(first) = self.find_run_aligned(npages, HUGE_RUN)? {
                return Ok(first);
            }
        }
        self.find_run_aligned(npages, 1)?.ok_or(Error::NoSpace)
    }

    /// The first free run of `npages` pages whose physical page number is a
    /// multiple of `align`.
    fn find_run_aligned(&self, npages: u64, align: u64) -> Result<Option<u64>, Error> {
        let base_pfn = self.sb.geo.base / PAGE_SIZE as u64;
        let mut start = self.sb.geo.data_first();
        let mut len = 0u64;
        for (i, w) in self.media.map.iter().enumerate().skip(start as usize) {
            let (owner, _) = decode_entry(i as u64, w.load(Ordering::Acquire))?;
            if owner != OWNER_FREE {
                len = 0;
                continue;
            }
            if len == 0 {
                if !(base_pfn + i as u64).is_multiple_of(align) {
                    continue;
                }
                start = i as u64;
            }
            len += 1;
            if len == npages {
                return Ok(Some(start));
            }
        }
        Ok(None)
    }

    /// Delete area `id` and free every page it owns.
    pub fn delete_area(&mut self, id: u16) -> Result<(), Error> {
        self.area(id)?;
        self.sb.intent = Intent::Delete { id };
        self.commit()?;
        self.release_all(id)?;
        self.sb.areas[id as usize - 1] = NO_AREA;
        self.sb.intent = Intent::None;
        self.commit_mirrored()
    }

    /// Page `index` of area `id`'s fixed run: the same page in every kernel.
    pub fn fixed_page(&self, id: u16, index: u64) -> Result<u64, Error> {
        let a = self.area(id)?;
        if index >= a.npages {
            return Err(Error::Invalid);
        }
        Ok(a.first + index)
    }

    /// Allocate one page for area `id`; the page keeps that owner until
    /// freed, in this kernel and the next.
    pub fn alloc_page(&mut self, id: u16) -> Result<u64, Error> {
        self.area(id)?;
        let first = self.sb.geo.data_first();
        let pages = self.sb.geo.pages;
        let span = pages - first;
        let mut page = self.hint.clamp(first, pages - 1);
        for _ in 0..span {
            let w = self.media.map.get(page as usize).ok_or(Error::Geometry)?;
            let (owner, _) = decode_entry(page, w.load(Ordering::Acquire))?;
            if owner == OWNER_FREE {
                self.persist.store(w, encode_entry(page, id, false))?;
                self.used += 1;
                self.hint = if page + 1 >= pages { first } else { page + 1 };
                return Ok(page);
            }
            page = if page + 1 >= pages { first } else { page + 1 };
        }
        Err(Error::NoSpace)
    }

    /// Free a page `alloc_page(id)` returned.
    pub fn free_page(&mut self, id: u16, page: u64) -> Result<(), Error> {
        self.area(id)?;
        if page < self.sb.geo.data_first() {
            return Err(Error::NotOwner);
        }
        let w = self.media.map.get(page as usize).ok_or(Error::Invalid)?;
        match decode_entry(page, w.load(Ordering::Acquire))? {
            (owner, false) if owner == id => {
                self.persist
                    .store(w, encode_entry(page, OWNER_FREE, false))?;
                self.used -= 1;
                Ok(())
            }
            _ => Err(Error::NotOwner),
        }
    }

    /// Owner of page `page` and whether it is part of a fixed run.
    pub fn page_owner(&self, page: u64) -> Result<(u16, bool), Error> {
        let w = self.media.map.get(page as usize).ok_or(Error::Invalid)?;
        decode_entry(page, w.load(Ordering::Acquire))
    }
}

/// Check every owner-map word against the superblock; return the pages
/// owned by areas. Words owned by the id of a pending intent are accepted
/// (open finishes the intent); anything else out of place is `Corrupt`.
pub fn validate(sb: &Superblock, map: &[AtomicU32]) -> Result<u64, Error> {
    let geo = sb.geo;
    let pending = match sb.intent {
        Intent::None => 0,
        Intent::Create { id, .. } | Intent::Delete { id } => id,
    };
    if let Intent::Create { id, .. } = sb.intent {
        if sb.areas.get(id as usize - 1).is_some_and(|a| a.in_use()) {
            return Err(Error::Corrupt(0));
        }
    }
    let mut used = 0u64;
    for (i, w) in map.iter().enumerate() {
        let page = i as u64;
        let (owner, fixed) = decode_entry(page, w.load(Ordering::Acquire))?;
        if page < geo.data_first() {
            if owner != OWNER_META || fixed {
                return Err(Error::Corrupt(page));
            }
            continue;
        }
        match owner {
            OWNER_FREE if !fixed => {}
            OWNER_FREE | OWNER_META => return Err(Error::Corrupt(page)),
            id if id == pending => used += 1,
            id => {
                let a = match sb.areas.get(id as usize - 1) {
                    Some(a) if a.in_use() => a,
                    _ => return Err(Error::Corrupt(page)),
                };
                let in_run = page >= a.first && page < a.first + a.npages;
                if in_run != fixed {
                    return Err(Error::Corrupt(page));
                }
                used += 1;
            }
        }
    }
    // Every page of every fixed run must be there.
    for (i, a) in sb.areas.iter().enumerate() {
        if !a.in_use() || i + 1 == pending as usize {
            continue;
        }
        for page in a.first..a.first + a.npages {
            let w = map.get(page as usize).ok_or(Error::Corrupt(page))?;
            if decode_entry(page, w.load(Ordering::Acquire))? != (i as u16 + 1, true) {
                return Err(Error::Corrupt(page));
            }
        }
    }
    Ok(used)
}
