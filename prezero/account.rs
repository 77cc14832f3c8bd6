// SPDX-License-Identifier: GPL-2.0

//! What is handled (sizes and kinds), its counters, registration with the
//! hugetlb and pool hooks (`REG`), and the fault-path callbacks that count
//! hits and misses and, in verify mode, check the page handed out.

use crate::glue::*;
use crate::knobs::{ENABLED, VERIFY};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use kernel::bindings;
use kernel::ffi::{c_int, c_uint};
use kernel::{prelude::*, sync::global_lock};

/// Nodes with counters; pages on higher nodes are refused (EINVAL).
/// Equal to `PREZERO_POOL_NODES` of the glue.
pub(crate) const NODES: usize = 8;

/// Where zeroed pages wait.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    /// Free hugetlb pages, marked in place (patches/0001).
    Hugetlb,
    /// Buddy pages held in this module's pools (patches/0004).
    Pool,
}

/// What is handled: (order, name in stats, kind). x86-64, 4 KiB base pages;
/// the pool orders 2 ..= 8 are the anonymous mTHP sizes.
pub(crate) const SIZES: [(u32, &str, Kind); 11] = [
    (9, "2M", Kind::Hugetlb),
    (18, "1G", Kind::Hugetlb),
    (9, "thp", Kind::Pool),
    (0, "4K", Kind::Pool),
    (2, "16K", Kind::Pool),
    (3, "32K", Kind::Pool),
    (4, "64K", Kind::Pool),
    (5, "128K", Kind::Pool),
    (6, "256K", Kind::Pool),
    (7, "512K", Kind::Pool),
    (8, "1M", Kind::Pool),
];
/// Subpages zeroed between checks for "stop": 2 MiB.
pub(crate) const CHUNK: u64 = 512;
/// Upper bound of one request, in pages.
pub(crate) const MAX_COUNT: u64 = 1 << 20;

pub(crate) struct Counters {
    pub(crate) zeroed: AtomicU64,
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) violations: AtomicU64,
    pub(crate) aborted: AtomicU64,
    pub(crate) zero_ns: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const COUNTERS: Counters = Counters {
    zeroed: AtomicU64::new(0),
    hits: AtomicU64::new(0),
    misses: AtomicU64::new(0),
    violations: AtomicU64::new(0),
    aborted: AtomicU64::new(0),
    zero_ns: AtomicU64::new(0),
};
#[allow(clippy::declare_interior_mutable_const)]
const NODE_COUNTERS: [Counters; SIZES.len()] = [COUNTERS; SIZES.len()];
pub(crate) static STATS: [[Counters; SIZES.len()]; NODES] = [NODE_COUNTERS; NODES];

/// Violations are reported once per load; the counter has the rest.
static VIOLATION_REPORTED: AtomicBool = AtomicBool::new(false);

global_lock! {
    // SAFETY: initialised in `PrezeroModule::init` before anything uses it.
    pub(crate) unsafe(uninit) static REG: Mutex<()> = ();
}

pub(crate) fn size_index(order: u32, kind: Kind) -> Option<usize> {
    SIZES.iter().position(|&(o, _, k)| o == order && k == kind)
}

pub(crate) fn counters(nid: c_int, idx: usize) -> Option<&'static Counters> {
    let n = usize::try_from(nid).ok().filter(|&n| n < NODES)?;
    STATS[n].get(idx)
}

/// Register with the hugetlb and pool hooks (turns their static keys on)
/// or not. Disabling also gives every pooled page back to the allocator.
pub(crate) fn set_enabled(on: bool) -> Result {
    let _g = REG.lock();
    if on == ENABLED.load(Relaxed) {
        return Ok(());
    }
    if on {
        // SAFETY: registers a static ops table of the glue; undone before unload.
        let r = unsafe { prezero_glue_register() };
        if r != 0 {
            pr_err!("cannot register with hugetlb (errno {})\n", -r);
            return Err(Error::from_errno(r));
        }
        // SAFETY: as above, for the anonymous fault hooks.
        let r = unsafe { prezero_glue_pool_register() };
        if r != 0 {
            // SAFETY: undoes the hugetlb registration just made.
            unsafe { prezero_glue_unregister() };
            pr_err!("cannot register with the fault path (errno {})\n", -r);
            return Err(Error::from_errno(r));
        }
    } else {
        // SAFETY: undo the registrations above; each waits for callers to
        // leave, so nothing takes from the pools while they are drained.
        unsafe {
            prezero_glue_pool_unregister();
            prezero_glue_unregister();
            prezero_glue_pool_drain();
        }
    }
    ENABLED.store(on, Relaxed);
    Ok(())
}

/// Count a hit (checking the page in verify mode) or a miss; false if a
/// page that should be zero is not (the caller then clears it).
fn account(c: Option<&Counters>, nid: c_int, order: u32, folio: Option<*mut bindings::folio>) -> bool {
    let Some(folio) = folio else {
        if let Some(c) = c {
            c.misses.fetch_add(1, Relaxed);
        }
        return false;
    };
    // SAFETY: `folio` was just allocated by the faulting task, which owns it.
    if VERIFY.load(Relaxed) && !unsafe { prezero_glue_is_zero(folio) } {
        if let Some(c) = c {
            c.violations.fetch_add(1, Relaxed);
        }
        if !VIOLATION_REPORTED.swap(true, Relaxed) {
            pr_err!(
                "verify: page marked zeroed is not zero (node {} order {}); cleared it\n",
                nid,
                order
            );
        }
        return false;
    }
    if let Some(c) = c {
        c.hits.fetch_add(1, Relaxed);
    }
    true
}

/// Pool callback of the anonymous fault path (through the glue): `folio`
/// is the pooled folio taken, or NULL when the pool was empty.
#[no_mangle]
pub(crate) extern "C" fn prezero_rs_pool_consume(nid: c_int, order: c_uint, folio: *mut bindings::folio) -> bool {
    let c = size_index(order, Kind::Pool).and_then(|i| counters(nid, i));
    account(c, nid, order, (!folio.is_null()).then_some(folio))
}

/// Hugetlb fault-path callback (through the glue): `marked` pages may skip clearing.
#[no_mangle]
pub(crate) extern "C" fn prezero_rs_consume(
    nid: c_int,
    order: c_uint,
    marked: bool,
    folio: *mut bindings::folio,
) -> bool {
    let c = size_index(order, Kind::Hugetlb).and_then(|i| counters(nid, i));
    account(c, nid, order, marked.then_some(folio))
}
