// SPDX-License-Identifier: GPL-2.0

//! The C glue's functions (iommu_preserve_glue.c, include/iopr_glue.h): the
//! VT-d driver's internals, which no Rust abstraction reaches; and the
//! KRAM kernel API (kram/include/kram.h). A device is the PCI device's
//! `struct device` (include/iopr_glue.h).

use core::marker::{PhantomData, PhantomPinned};
use kernel::ffi::{c_char, c_int, c_void};

/// The C glue's `struct device` of a PCI device, opaque: Rust only passes it
/// back to the glue. (Not `bindings::device`: with the debug config it holds
/// a `ref_tracker_dir` that Rust's FFI-safety lint refuses.)
#[repr(C)]
pub(crate) struct device {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

include!("../kram/include/kram_api.rs");


extern "C" {
    pub(crate) fn iopr_glue_get_dev(seg: c_int, bus: c_int, devfn: c_int) -> *mut device;
    pub(crate) fn iopr_glue_put_dev(dev: *mut device);
    pub(crate) fn iopr_glue_is_kept(dev: *mut device) -> bool;
    pub(crate) fn iopr_glue_map(phys: u64) -> *mut c_void;
    pub(crate) fn iopr_glue_unmap(virt: *mut c_void);
    pub(crate) fn iopr_glue_flush(virt: *mut c_void);
    pub(crate) fn iopr_glue_outside_ram(phys: u64, size: u64) -> bool;
    pub(crate) fn iopr_glue_switch_root(dev: *mut device, new_root: u64, hw_root: *mut u64, own_root: *mut u64) -> c_int;
    pub(crate) fn iopr_glue_keep_translation(keep: bool);
    pub(crate) fn iopr_glue_release_adopted(dev: *mut device) -> c_int;
}
