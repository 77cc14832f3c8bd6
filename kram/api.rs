// SPDX-License-Identifier: GPL-2.0

//! The kernel API other modules call (prototypes in include/kram.h),
//! exported by kram_glue.c. Callable from atomic context, never from
//! hard-IRQ context (`STATE` is a spinlock), except `kram_area_create`
//! and `kram_area_delete`, which may sleep.

use crate::format;
use crate::region::{create_zeroed, errno, with_region, IommuTables, Region};
use kernel::ffi::{c_char, c_int, c_void};
use kernel::prelude::*;

fn ret(r: Result<c_int>) -> c_int {
    match r {
        Ok(v) => v,
        Err(e) => e.to_errno(),
    }
}

/// Copy a NUL-terminated name of at most `NAME_LEN - 1` bytes.
///
/// # Safety
///
/// `name` must be null or point to a NUL-terminated string.
unsafe fn name_from_c(name: *const c_char, buf: &mut [u8; format::NAME_LEN]) -> Result<usize> {
    if name.is_null() {
        return Err(EINVAL);
    }
    for (i, b) in buf.iter_mut().enumerate() {
        // SAFETY: the caller passes a NUL-terminated string; we stop at NUL.
        let c = unsafe { *name.add(i) } as u8;
        if c == 0 {
            return Ok(i);
        }
        *b = c;
    }
    Err(EINVAL)
}

/// Look up an area by name. Returns its id (> 0) or a negative errno.
#[no_mangle]
pub(crate) extern "C" fn kram_area_lookup(name: *const c_char) -> c_int {
    let mut buf = [0u8; format::NAME_LEN];
    // SAFETY: API contract: `name` is a NUL-terminated string.
    let r = unsafe { name_from_c(name, &mut buf) }.and_then(|n| {
        with_region(|r| Ok(r.ready()?.lookup(&buf[..n]).map_err(errno)? as c_int))
    });
    ret(r)
}

/// Create an area with a fixed run of `npages` pages, zeroed. Returns its
/// id. Sleeps (process context only).
#[no_mangle]
pub(crate) extern "C" fn kram_area_create(name: *const c_char, npages: u64) -> c_int {
    let mut buf = [0u8; format::NAME_LEN];
    // SAFETY: API contract: `name` is a NUL-terminated string.
    let r = unsafe { name_from_c(name, &mut buf) }
        .and_then(|n| Ok(create_zeroed(&buf[..n], npages)? as c_int));
    ret(r)
}

/// Delete an area and free all its pages.
#[no_mangle]
pub(crate) extern "C" fn kram_area_delete(area: c_int) -> c_int {
    let id = u16::try_from(area).map_err(|_| EINVAL);
    ret(id.and_then(|id| {
        let t = IommuTables::get()?;
        with_region(|r| r.delete_area(id, &t).map(|_| 0))
    }))
}

fn out_page(r: &Region, index: u64, phys: *mut u64, virt: *mut *mut c_void) {
    if !phys.is_null() {
        // SAFETY: API contract: `phys` is null or valid for a write.
        unsafe { *phys = r.geo.phys(index) };
    }
    if !virt.is_null() {
        // SAFETY: API contract: `virt` is null or valid for a write.
        unsafe { *virt = r.page_virt(index) };
    }
}

/// Page `index` of an area's fixed run: the same physical page in every
/// kernel. Fills `*phys` and `*virt` (either may be null).
#[no_mangle]
pub(crate) extern "C" fn kram_get_fixed_page(area: c_int, index: u64, phys: *mut u64, virt: *mut *mut c_void) -> c_int {
    let id = u16::try_from(area).map_err(|_| EINVAL);
    ret(id.and_then(|id| {
        with_region(|r| {
            crate::region::not_zeroing(r, id, "fixed page")?;
            let page = r.ready()?.fixed_page(id, index).map_err(errno)?;
            out_page(r, page, phys, virt);
            Ok(0)
        })
    }))
}

/// Allocate a page owned by `area`; it stays allocated across kexec.
#[no_mangle]
pub(crate) extern "C" fn kram_alloc_page(area: c_int, phys: *mut u64, virt: *mut *mut c_void) -> c_int {
    let id = u16::try_from(area).map_err(|_| EINVAL);
    ret(id.and_then(|id| {
        with_region(|r| {
            let page = r.ready()?.alloc_page(id).map_err(errno)?;
            out_page(r, page, phys, virt);
            Ok(0)
        })
    }))
}

/// Free a page `kram_alloc_page(area, ...)` returned.
#[no_mangle]
pub(crate) extern "C" fn kram_free_page(area: c_int, phys: u64) -> c_int {
    let id = u16::try_from(area).map_err(|_| EINVAL);
    ret(id.and_then(|id| {
        with_region(|r| {
            let page = r.geo.index_of(phys).ok_or(EINVAL)?;
            r.ready()?.free_page(id, page).map_err(errno)?;
            Ok(0)
        })
    }))
}
