// SPDX-License-Identifier: GPL-2.0
//! The superblock's codec (encode, decode, the slot rules) and area names.
//! Part of format.rs (shared with the kernel module; `core` only, no
//! `unsafe`, no panics on what it reads).

use super::*;

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
