// SPDX-License-Identifier: GPL-2.0

//! The tables: the old kernel's mapped read-only, the snapshot and the
//! root/context pair in KRAM, and the KRAM areas holding them and the
//! record.

use crate::glue::*;
use crate::vtd;
use core::ptr::NonNull;
use kernel::ffi::{c_int, c_void};
use kernel::{c_str, prelude::*};

pub(crate) const AREA: &CStr = c_str!("iommu-preserve");
/// Root and context table: fixed pages 0 and 1. The next kernel adopts them
/// in place and uses them until `release` moves them to its own pages.
pub(crate) const TABLES: &CStr = c_str!("iommu-tables");
pub(crate) const TABLE_PAGES: u64 = 2;
pub(crate) const WORDS: usize = 512;

pub(crate) struct Mapped(NonNull<u64>);

impl Mapped {
    pub(crate) fn new(phys: u64) -> Option<Mapped> {
        // SAFETY: maps one page; NULL on failure.
        NonNull::new(unsafe { iopr_glue_map(phys) }.cast::<u64>()).map(Mapped)
    }

    pub(crate) fn word(&self, i: usize) -> u64 {
        if i >= WORDS {
            return 0;
        }
        // SAFETY: a mapped page of `WORDS` words; `i` is in range.
        unsafe { self.0.as_ptr().add(i).read_volatile() }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, used no more.
        unsafe { iopr_glue_unmap(self.0.as_ptr().cast()) };
    }
}

/// Physical memory as the next kernel's check sees it (`vtd::verify`),
/// read through `Mapped`: the freeze runs that check on what it wrote.
pub(crate) struct Live;

impl vtd::Phys for Live {
    type Table = Mapped;
    fn map(&mut self, table: u64) -> Option<Mapped> {
        Mapped::new(table)
    }
    fn entry(&self, t: &Mapped, idx: usize) -> u64 {
        t.word(idx)
    }
    fn owned(&mut self, addr: u64, size: u64) -> bool {
        !outside_ram(addr, size)
    }
}

/// The table pages made in KRAM: physical and virtual address. Dropped,
/// it frees them all, unless `keep` said the IOMMU uses them.
pub(crate) struct Kt {
    pub(crate) area: c_int,
    pub(crate) pages: KVec<(u64, *mut u64)>,
    /// The last table looked up: the walk reads and writes one table's
    /// 512 entries in a row, so most lookups are this one.
    pub(crate) hint: Option<(u64, *mut u64)>,
    kept: bool,
}

impl Drop for Kt {
    fn drop(&mut self) {
        if !self.kept {
            self.free_all();
        }
    }
}

impl Kt {
    pub(crate) fn new(area: c_int) -> Kt {
        Kt { area, pages: KVec::new(), hint: None, kept: false }
    }

    /// The pages stay allocated when this is dropped.
    pub(crate) fn keep(&mut self) {
        self.kept = true;
    }

    pub(crate) fn alloc(&mut self) -> core::result::Result<(u64, *mut u64), vtd::Error> {
        let (mut phys, mut virt) = (0u64, core::ptr::null_mut());
        // SAFETY: valid out-pointers.
        if unsafe { kram_alloc_page(self.area, &mut phys, &mut virt) } != 0 || virt.is_null() {
            return Err(vtd::Error::NoMemory);
        }
        let virt = virt.cast::<u64>();
        if self.pages.push((phys, virt), GFP_KERNEL).is_err() {
            // SAFETY: the page just allocated to this area.
            unsafe { kram_free_page(self.area, phys) };
            return Err(vtd::Error::NoMemory);
        }
        Ok((phys, virt))
    }

    /// A new KRAM page holding a copy of the page at `src`.
    pub(crate) fn copy_of(&mut self, src: u64) -> core::result::Result<u64, vtd::Error> {
        let m = Mapped::new(src).ok_or(vtd::Error::NoMemory)?;
        let (phys, virt) = self.alloc()?;
        for i in 0..WORDS {
            // SAFETY: `virt` is a whole KRAM page, valid while kram is loaded.
            unsafe { virt.add(i).write_volatile(m.word(i)) };
        }
        Ok(phys)
    }

    pub(crate) fn virt(&mut self, phys: u64) -> Option<*mut u64> {
        if let Some((p, v)) = self.hint {
            if p == phys {
                return Some(v);
            }
        }
        let v = self.pages.iter().find(|p| p.0 == phys).map(|p| p.1)?;
        self.hint = Some((phys, v));
        Some(v)
    }

    pub(crate) fn flush(&self) {
        for &(_, v) in self.pages.iter() {
            // SAFETY: a KRAM page of ours.
            unsafe { iopr_glue_flush(v.cast()) };
        }
    }

    fn free_all(&mut self) {
        for &(p, _) in self.pages.iter() {
            // SAFETY: a page allocated to this area.
            unsafe { kram_free_page(self.area, p) };
        }
        self.pages.clear();
        self.hint = None;
    }
}

impl vtd::Tables for Kt {
    fn copy_table(&mut self, src: u64) -> core::result::Result<u64, vtd::Error> {
        self.copy_of(src)
    }

    fn get(&mut self, table: u64, idx: usize) -> u64 {
        match self.virt(table) {
            // SAFETY: a KRAM page of ours; `idx` < 512 by the walk.
            Some(v) if idx < WORDS => unsafe { v.add(idx).read_volatile() },
            _ => 0,
        }
    }

    fn set(&mut self, table: u64, idx: usize, val: u64) {
        if let Some(v) = self.virt(table) {
            if idx < WORDS {
                // SAFETY: as in `get`.
                unsafe { v.add(idx).write_volatile(val) };
            }
        }
    }

    fn leaf_ok(&mut self, addr: u64, size: u64) -> bool {
        outside_ram(addr, size)
    }
}

/// The record page (fixed page 0 of the area) as bytes.
///
/// # Safety
///
/// `virt` must be the area's fixed page 0 from the KRAM API, valid while
/// kram is loaded, and not otherwise referenced during the borrow.
pub(crate) unsafe fn record_page<'a>(virt: *mut c_void) -> &'a mut [u8] {
    // SAFETY: guaranteed by the caller: one whole page.
    unsafe { core::slice::from_raw_parts_mut(virt.cast::<u8>(), 4096) }
}

/// The KRAM area `name`, created with `fixed` fixed pages if given and
/// missing; `None` if it does not exist.
pub(crate) fn area_id(name: &CStr, fixed: Option<u64>) -> Result<Option<c_int>> {
    // SAFETY: NUL-terminated name.
    let mut a = unsafe { kram_area_lookup(name.as_char_ptr()) };
    if let (true, Some(n)) = (a == ENOENT.to_errno(), fixed) {
        // SAFETY: NUL-terminated name.
        a = unsafe { kram_area_create(name.as_char_ptr(), n) };
    }
    if a == ENOENT.to_errno() {
        return Ok(None);
    }
    if a < 0 {
        return Err(Error::from_errno(a));
    }
    Ok(Some(a))
}

/// Fixed page `index` of `area`: physical and virtual address.
pub(crate) fn fixed_page(area: c_int, index: u64) -> Result<(u64, *mut c_void)> {
    let (mut phys, mut virt) = (0u64, core::ptr::null_mut());
    // SAFETY: valid out-pointers.
    let r = unsafe { kram_get_fixed_page(area, index, &mut phys, &mut virt) };
    if r < 0 || virt.is_null() {
        return Err(if r < 0 { Error::from_errno(r) } else { ENOMEM });
    }
    Ok((phys, virt))
}

/// The record's area, its record page's physical and virtual address.
pub(crate) fn area(create: bool) -> Result<Option<(c_int, u64, *mut c_void)>> {
    let Some(a) = area_id(AREA, create.then_some(1))? else {
        return Ok(None);
    };
    let (phys, virt) = fixed_page(a, 0)?;
    Ok(Some((a, phys, virt)))
}

/// The root and context table pages of the tables area; EBUSY if the
/// IOMMU reads that root table now (`hw`: an adoption not yet released).
pub(crate) fn table_pair(hw: u64) -> Result<[(u64, *mut u64); 2]> {
    let a = area_id(TABLES, Some(TABLE_PAGES))?.ok_or(ENOENT)?;
    let (rp, rv) = fixed_page(a, 0)?;
    if rp == hw {
        return Err(EBUSY);
    }
    let (cp, cv) = fixed_page(a, 1)?;
    Ok([(rp, rv.cast()), (cp, cv.cast())])
}

/// Delete the tables area, unless the IOMMU reads a table in it (KRAM
/// refuses then, EBUSY).
pub(crate) fn drop_tables() {
    if let Ok(Some(t)) = area_id(TABLES, None) {
        area_delete(t);
    }
}

/// Fill the KRAM page `dst` with a copy of `src`, entry `idx` set to `val`.
pub(crate) fn fill(dst: *mut u64, src: &Mapped, idx: usize, val: u64) {
    for i in 0..WORDS {
        let w = if i == idx { val } else { src.word(i) };
        // SAFETY: `dst` is a whole fixed page of the tables area, valid
        // while kram is loaded, that the IOMMU does not read (`table_pair`).
        unsafe { dst.add(i).write_volatile(w) };
    }
    // SAFETY: as above.
    unsafe { iopr_glue_flush(dst.cast()) };
}

/// The page-table top of the context entry the IOMMU uses now for `bus`,
/// `devfn` under the root table `root`, if present.
pub(crate) fn live_table(root: u64, bus: u8, devfn: u8) -> Option<u64> {
    let r = Mapped::new(root)?;
    let c = Mapped::new(vtd::root_context_table(r.word(usize::from(bus) * 2))?)?;
    let e = vtd::context(c.word(usize::from(devfn) * 2), c.word(usize::from(devfn) * 2 + 1));
    e.present.then_some(e.table)
}

pub(crate) fn vtd_errno(e: vtd::Error) -> Error {
    match e {
        vtd::Error::NoMemory => ENOSPC,
        vtd::Error::TooManyPages => E2BIG,
        vtd::Error::BadMagic | vtd::Error::BadVersion(_) | vtd::Error::BadChecksum | vtd::Error::BadLength => EUCLEAN,
        _ => EINVAL,
    }
}
