// SPDX-License-Identifier: GPL-2.0

//! Zeroing: in the caller's context (the ioctl) or in the idle worker, in
//! chunks, stopping when memory is short, on a signal or when another task
//! wants the CPU.

use crate::account::*;
use crate::glue::*;
use crate::knobs::{ENABLED, IDLE, IDLE_POOL_MB, IDLE_RATE_MB, INJECT, MIN_AVAIL_PCT, VERIFY};
use core::sync::atomic::Ordering::Relaxed;
use kernel::ffi::{c_int, c_long, c_ulong};
use kernel::{bindings, prelude::*};

/// PMD order: the THP pool.
const THP_ORDER: u32 = 9;

pub(crate) fn memory_short() -> bool {
    // SAFETY: reads global counters.
    let pct = unsafe { prezero_glue_available_pct() };
    pct < MIN_AVAIL_PCT.load(Relaxed)
}

/// Why zeroing stopped early.
#[derive(PartialEq)]
pub(crate) enum Stop {
    /// Nothing stopped it (or no free unmarked page was left).
    No,
    /// A signal (caller) or another task wanting the CPU (worker).
    Interrupted,
    /// Memory is short.
    Pressure,
}

/// Should zeroing stop now? `worker`: the idle kthread, else the caller.
fn stop_now(worker: bool) -> Stop {
    // SAFETY: the glue helpers read the current task's state.
    let wanted = unsafe {
        if worker {
            prezero_glue_should_stop() || prezero_glue_need_resched()
        } else {
            prezero_glue_signal_pending()
        }
    };
    if wanted {
        Stop::Interrupted
    } else if memory_short() {
        Stop::Pressure
    } else {
        Stop::No
    }
}

/// Zero up to `count` pages of size `SIZES[idx]` on `nid`: free hugetlb
/// pages (marked where they are) or new pages for a pool.
/// Returns pages zeroed, nanoseconds spent and why it stopped.
pub(crate) fn zero_pages(idx: usize, nid: c_int, count: u64, worker: bool) -> Result<(u64, u64, Stop)> {
    let c = counters(nid, idx).ok_or(EINVAL)?;
    let (order, _, kind) = SIZES[idx];
    let nr_sub = 1u64 << order;
    let (mut done, mut ns) = (0u64, 0u64);
    while done < count {
        let why = stop_now(worker);
        if why != Stop::No {
            return Ok((done, ns, why));
        }
        // SAFETY: order and node were checked; the glue returns a folio we
        // own (reference count 1, off the free list or newly allocated),
        // NULL (none free / no memory without reclaim) or an ERR_PTR.
        let folio = unsafe {
            match kind {
                Kind::Hugetlb => prezero_glue_take(order, nid),
                Kind::Pool => prezero_glue_pool_alloc(order, nid),
            }
        };
        if folio.is_null() {
            break;
        }
        // SAFETY: reads the pointer value only.
        let err = unsafe { prezero_glue_ptr_err(folio.cast()) };
        if err != 0 {
            return Err(Error::from_errno(err as c_int));
        }
        // SAFETY: reads the clock.
        let t0 = unsafe { prezero_glue_now_ns() };
        let mut first = 0;
        let mut why = Stop::No;
        while first < nr_sub {
            let n = CHUNK.min(nr_sub - first);
            // SAFETY: we own `folio`; the range is inside it.
            unsafe { prezero_glue_zero(folio, first as c_ulong, n as c_ulong) };
            first += n;
            why = stop_now(worker);
            if why != Stop::No && first < nr_sub {
                break;
            }
            why = Stop::No;
            // SAFETY: may sleep; we are in process context without locks.
            unsafe { prezero_glue_cond_resched() };
        }
        let complete = first == nr_sub;
        if complete && VERIFY.load(Relaxed) {
            let inject = INJECT
                .fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1))
                .is_ok();
            if inject {
                // SAFETY: we own `folio`; subpage 0 exists.
                unsafe { prezero_glue_dirty(folio, 0) };
            }
        }
        // SAFETY: gives back the folio taken above; marks it (hugetlb) or
        // pools it only if complete, else frees it. A pool whose owner
        // lists are all other cgroups' frees it too (-ENOSPC).
        let refused = unsafe {
            match (kind, complete) {
                (Kind::Hugetlb, _) => {
                    prezero_glue_return(folio, complete);
                    0
                }
                (Kind::Pool, true) => prezero_glue_pool_put(folio),
                (Kind::Pool, false) => {
                    prezero_glue_folio_put(folio);
                    0
                }
            }
        };
        // SAFETY: reads the clock.
        let dt = unsafe { prezero_glue_now_ns() }.saturating_sub(t0);
        ns += dt;
        c.zero_ns.fetch_add(dt, Relaxed);
        if !complete {
            c.aborted.fetch_add(1, Relaxed);
            return Ok((done, ns, why));
        }
        if refused != 0 {
            // the pool holds pages of PZ_OWNERS other cgroups: stop here,
            // what was filled stays
            pr_info!(
                "zero: pool of order {} on node {} holds pages of four other cgroups: this cgroup's fill stops after {} (ENOSPC)\n",
                order,
                nid,
                done
            );
            return if done > 0 {
                Ok((done, ns, Stop::No))
            } else {
                Err(Error::from_errno(refused))
            };
        }
        c.zeroed.fetch_add(1, Relaxed);
        done += 1;
    }
    Ok((done, ns, Stop::No))
}

/// Does the worker fill the pool of `order` on `nid`? Only the THP pool,
/// and only while it holds less than `idle_pool_mb`.
fn pool_below_idle_target(order: u32, nid: c_int) -> bool {
    let target = u64::from(IDLE_POOL_MB.load(Relaxed)) << 20;
    if order != THP_ORDER || target == 0 {
        return false;
    }
    let (mut nr, mut taken, mut reclaimed): (c_ulong, c_ulong, c_ulong) = (0, 0, 0);
    // SAFETY: valid out-pointers; the glue checks order and node.
    if unsafe { prezero_glue_pool_count(order, nid, &mut nr, &mut taken, &mut reclaimed) } != 0 {
        return false;
    }
    (nr as u64).saturating_mul((bindings::PAGE_SIZE as u64) << order) < target
}

/// One step of the idle worker; returns milliseconds to sleep.
#[no_mangle]
pub(crate) extern "C" fn prezero_rs_idle_step() -> c_long {
    if !IDLE.load(Relaxed) || !ENABLED.load(Relaxed) {
        return 500;
    }
    for nid in 0..NODES as c_int {
        // SAFETY: checks a node number.
        if !unsafe { prezero_glue_node_online(nid) } {
            continue;
        }
        for (idx, &(order, _, kind)) in SIZES.iter().enumerate() {
            if kind == Kind::Pool && !pool_below_idle_target(order, nid) {
                continue;
            }
            match zero_pages(idx, nid, 1, true) {
                Ok((1, _, _)) => {
                    let rate = u64::from(IDLE_RATE_MB.load(Relaxed).max(1)) << 20;
                    let ms = ((bindings::PAGE_SIZE as u64) << order).saturating_mul(1000) / rate;
                    return ms.clamp(1, 60_000) as c_long;
                }
                Ok((_, _, Stop::No)) | Err(_) => continue,
                Ok((_, _, Stop::Interrupted)) => return 100,
                Ok((_, _, Stop::Pressure)) => return 1000,
            }
        }
    }
    1000
}
