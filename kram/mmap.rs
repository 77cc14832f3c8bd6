// SPDX-License-Identifier: GPL-2.0

//! mmap of an area's fixed run, and the count of each area's mappings that
//! keeps a mapped area from being deleted or formatted away.

use crate::format::PAGE_SIZE;
use crate::glue::{kram_glue_pages_get, kram_glue_set_vm_ops};
use crate::region::with_region;
use kernel::{error::to_result, mm::virt::VmaNew, prelude::*};

/// Map pages of one area's fixed run. Through `/dev/kram` and
/// `/dev/kram-pages` (`bound` None) the mmap offset is the offset from the
/// region's start (`KramArea::offset` plus a page multiple); through an
/// area's own node (`bound` its id) it is the offset in that area, and the
/// VMA's `vm_pgoff` is rewritten to the region-relative page the faults
/// use. `pages`:
/// ordinary pages inserted at fault time (`/dev/kram-pages`), else a PFN
/// range filled at fault time, 2 MiB at a time where aligned (`/dev/kram`).
/// EBUSY while the area is still being zeroed after its create.
/// The mapping is counted in
/// `Region::maps` from here until the VMA's close (the glue's vm_ops count
/// the copies made by fork, split and mremap).
pub(crate) fn map_area(vma: &VmaNew, pages: bool, bound: Option<u16>) -> Result {
    if vma.flags() & kernel::mm::virt::flags::SHARED == 0 {
        return Err(EINVAL);
    }
    let len = (vma.end() - vma.start()) as u64;
    // SAFETY: reading a field of the VMA being set up, which we may access.
    let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff } as u64;
    let (base, size, id, first) = with_region(|r| {
        let k = r.ready()?;
        let first = match bound {
            None => pgoff,
            Some(id) => k
                .area(id)
                .map_err(|_| ENOENT)?
                .first
                .checked_add(pgoff)
                .ok_or(EINVAL)?,
        };
        let last = first.checked_add(len / PAGE_SIZE as u64).ok_or(EINVAL)?;
        let (owner, fixed) = k.page_owner(first).map_err(|_| EINVAL)?;
        let a = k.area(owner).map_err(|_| EINVAL)?;
        let end = a.first.checked_add(a.npages).ok_or(EINVAL)?;
        if !fixed || last > end || bound.is_some_and(|b| b != owner) {
            return Err(EINVAL);
        }
        // (no line in the log: another opener racing a create is expected)
        if crate::region::is_zeroing(r, owner) {
            return Err(EBUSY);
        }
        let n = r.maps.get_mut(usize::from(owner)).ok_or(EINVAL)?;
        *n = n.checked_add(1).ok_or(EBUSY)?;
        Ok((r.geo.base, r.geo.pages * PAGE_SIZE as u64, owner, first))
    })?;
    if bound.is_some() {
        // SAFETY: the VMA is being set up by this mmap call, with the mmap
        // lock held for writing; nothing has read its offset for mapping
        // yet (the fault handlers, set below, read it region-relative).
        unsafe { (*vma.as_ptr()).vm_pgoff = first as _ };
    }
    let res = map_counted(vma, pages, base, size, id);
    if res.is_err() {
        // The VMA got no vm_ops of ours: nothing else will uncount it.
        kram_map_put(id);
    }
    res
}

fn map_counted(vma: &VmaNew, pages: bool, base: u64, size: u64, id: u16) -> Result {
    vma.set_dontexpand();
    vma.set_dontdump();
    if pages {
        // SAFETY: the region is ours while the module is loaded; the glue
        // serialises the first call, which may sleep (no lock held here).
        to_result(unsafe { kram_glue_pages_get(base, size) })?;
    }
    // SAFETY: the VMA is being set up by this mmap call (mmap lock held
    // for writing); its range was checked against area `id`, whose mapping
    // count `map_area` raised. Faults insert the area's fixed run inside
    // our region (vm_pgoff plus the offset in the VMA, which cannot grow),
    // and the struct pages (`pages`) or the reservation live while the
    // module does: the VMA holds the file and so the module.
    unsafe { kram_glue_set_vm_ops(vma.as_ptr(), base / PAGE_SIZE as u64, id, pages) };
    Ok(())
}

/// A copy of a counted mapping was made (fork, split, mremap): called by
/// the glue's vm_ops `open`, mmap lock held.
#[no_mangle]
pub(crate) extern "C" fn kram_map_get(area: u16) {
    let _ = with_region(|r| {
        if let Some(n) = r.maps.get_mut(usize::from(area)) {
            *n = n.saturating_add(1);
        }
        Ok(())
    });
}

/// A counted mapping went away: vm_ops `close`, or a failed mmap.
#[no_mangle]
pub(crate) extern "C" fn kram_map_put(area: u16) {
    let _ = with_region(|r| {
        if let Some(n) = r.maps.get_mut(usize::from(area)) {
            *n = n.saturating_sub(1);
        }
        Ok(())
    });
}
