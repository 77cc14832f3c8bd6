// SPDX-License-Identifier: GPL-2.0

//! The C glue's functions (iommu_preserve_glue.c, include/iopr_glue.h): the
//! VT-d driver's internals, which no Rust abstraction reaches; and the
//! KRAM kernel API (kram/include/kram.h).

use kernel::bindings;
use kernel::ffi::{c_char, c_int, c_void};

include!("../kram/include/kram_api.rs");


// Only pointers to kernel structs cross here; Rust never reads through them
// (a struct's own layout, which the lint may call not FFI-safe, does not
// matter).
#[allow(improper_ctypes)]
extern "C" {
    pub(crate) fn iopr_glue_get_dev(seg: c_int, bus: c_int, devfn: c_int) -> *mut bindings::device;
    pub(crate) fn iopr_glue_put_dev(dev: *mut bindings::device);
    pub(crate) fn iopr_glue_is_kept(dev: *mut bindings::device) -> bool;
    pub(crate) fn iopr_glue_map(phys: u64) -> *mut c_void;
    pub(crate) fn iopr_glue_unmap(virt: *mut c_void);
    pub(crate) fn iopr_glue_flush(virt: *mut c_void);
    pub(crate) fn iopr_glue_outside_ram(phys: u64, size: u64) -> bool;
    pub(crate) fn iopr_glue_switch_root(dev: *mut bindings::device, new_root: u64, hw_root: *mut u64, own_root: *mut u64) -> c_int;
    pub(crate) fn iopr_glue_keep_translation(keep: bool);
    pub(crate) fn iopr_glue_release_adopted(dev: *mut bindings::device) -> c_int;
}

// The calls that take no pointer, each wrapped once so `unsafe` stays here.

/// Whether `[phys, phys + size)` lies wholly outside System RAM.
pub(crate) fn outside_ram(phys: u64, size: u64) -> bool {
    // SAFETY: a query of the resource tree, no memory touched.
    unsafe { iopr_glue_outside_ram(phys, size) }
}

/// Whether `intel_iommu_shutdown()` leaves translation on at kexec.
pub(crate) fn keep_translation(keep: bool) {
    // SAFETY: sets a flag the VT-d driver reads at shutdown.
    unsafe { iopr_glue_keep_translation(keep) }
}

/// Delete KRAM area `area` (an id from a lookup); KRAM refuses (EBUSY) an
/// area holding a table an IOMMU reads. 0 or a negative errno.
pub(crate) fn area_delete(area: c_int) -> c_int {
    // SAFETY: KRAM checks the id under its own lock; no pointer crosses.
    unsafe { kram_area_delete(area) }
}
