// SPDX-License-Identifier: GPL-2.0

//! The C glue's functions (kram_glue.c, include/kram_glue.h): what Rust in
//! this kernel cannot express yet. Each is called from one place.

use kernel::bindings;
use kernel::ffi::{c_int, c_void};

// C glue (kram_glue.c, include/kram_glue.h): struct pages for the region,
// user mappings of them, zeroing.
// Only pointers to kernel structs cross here, and Rust never reads through
// them: a struct's own layout (the debug build's folio holds an empty
// `ref_tracker_dir`, which the lint calls not FFI-safe) does not matter.
#[allow(improper_ctypes)]
extern "C" {
    pub(crate) fn kram_glue_pages_get(base: u64, size: u64) -> c_int;
    pub(crate) fn kram_glue_pages_exit();
    pub(crate) fn kram_glue_set_vm_ops(vma: *mut bindings::vm_area_struct, region_pfn: u64, area: u16, pages: bool);
    pub(crate) fn kram_glue_zero(p: *mut c_void, len: usize);
    pub(crate) fn kram_glue_iommu_tables(start: u64, end: u64, out: *mut u64, max: c_int) -> c_int;
}
