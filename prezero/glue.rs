// SPDX-License-Identifier: GPL-2.0

//! The C glue's functions (prezero_glue.c, include/prezero_glue.h): the
//! hugetlb and page-allocator internals, kthread and shrinker that Rust in
//! this kernel cannot reach yet. Pointers carry their C types (a folio is
//! `bindings::folio`, as in the header), not `void *`.

use kernel::bindings::folio;
use kernel::ffi::{c_int, c_long, c_uint, c_ulong, c_void};

// Only pointers to kernel structs cross here, and Rust never reads through
// them: a struct's own layout (the debug build's folio holds an empty
// `ref_tracker_dir`, which the lint calls not FFI-safe) does not matter.
#[allow(improper_ctypes)]
extern "C" {
    pub(crate) fn prezero_glue_register() -> c_int;
    pub(crate) fn prezero_glue_unregister();
    pub(crate) fn prezero_glue_take(order: c_uint, nid: c_int) -> *mut folio;
    pub(crate) fn prezero_glue_ptr_err(p: *const c_void) -> c_long;
    pub(crate) fn prezero_glue_return(folio: *mut folio, zeroed: bool);
    pub(crate) fn prezero_glue_count(
        order: c_uint,
        nid: c_int,
        nr_free: *mut c_ulong,
        nr_marked: *mut c_ulong,
    ) -> c_int;
    pub(crate) fn prezero_glue_zero(folio: *mut folio, first: c_ulong, nr: c_ulong);
    pub(crate) fn prezero_glue_dirty(folio: *mut folio, index: c_ulong);
    pub(crate) fn prezero_glue_is_zero(folio: *mut folio) -> bool;
    pub(crate) fn prezero_glue_pool_alloc(order: c_uint, nid: c_int) -> *mut folio;
    pub(crate) fn prezero_glue_pool_put(folio: *mut folio) -> c_int;
    pub(crate) fn prezero_glue_folio_put(folio: *mut folio);
    pub(crate) fn prezero_glue_pool_count(
        order: c_uint,
        nid: c_int,
        nr: *mut c_ulong,
        taken: *mut c_ulong,
        reclaimed: *mut c_ulong,
    ) -> c_int;
    pub(crate) fn prezero_glue_pool_drain();
    pub(crate) fn prezero_glue_pool_init() -> c_int;
    pub(crate) fn prezero_glue_pool_exit();
    pub(crate) fn prezero_glue_pool_register() -> c_int;
    pub(crate) fn prezero_glue_pool_unregister();
    pub(crate) fn prezero_glue_need_resched() -> bool;
    pub(crate) fn prezero_glue_signal_pending() -> bool;
    pub(crate) fn prezero_glue_cond_resched();
    pub(crate) fn prezero_glue_now_ns() -> u64;
    pub(crate) fn prezero_glue_available_pct() -> c_uint;
    pub(crate) fn prezero_glue_node_online(nid: c_int) -> bool;
    pub(crate) fn prezero_glue_idle_start() -> c_int;
    pub(crate) fn prezero_glue_idle_stop();
    pub(crate) fn prezero_glue_should_stop() -> bool;
}
