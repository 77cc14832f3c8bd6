// SPDX-License-Identifier: GPL-2.0
// The KRAM kernel API (kram.h) for Rust modules that call it: include!()
// this file with `kernel::ffi::{c_char, c_int, c_void}` in scope.
extern "C" {
    pub(crate) fn kram_area_lookup(name: *const c_char) -> c_int;
    pub(crate) fn kram_area_create(name: *const c_char, npages: u64) -> c_int;
    pub(crate) fn kram_area_delete(area: c_int) -> c_int;
    pub(crate) fn kram_get_fixed_page(area: c_int, index: u64, phys: *mut u64, virt: *mut *mut c_void) -> c_int;
    pub(crate) fn kram_alloc_page(area: c_int, phys: *mut u64, virt: *mut *mut c_void) -> c_int;
    pub(crate) fn kram_free_page(area: c_int, phys: u64) -> c_int;
}
