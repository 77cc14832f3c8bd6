// SPDX-License-Identifier: GPL-2.0
//! A region in use: `Kram` (format, open with recovery, area create and
//! delete, page alloc and free) and the owner-map validation. Part of
//! format.rs (shared with the kernel module; `core` only, no `unsafe`, no
//! panics on what it reads).

use super::*;

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
