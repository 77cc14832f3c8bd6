// SPDX-License-Identifier: GPL-2.0

//! prezero: zero free memory ahead of time.
//!
//! Two kinds of memory:
//!
//! * hugetlb: free hugetlb pages (2 MiB and 1 GiB) are taken off their free
//!   list one at a time, zeroed while this module owns them, and put back
//!   marked `HPG_zeroed` (patches/0001). The hugetlb fault path, which is
//!   also the path of `MAP_POPULATE` and of `pin_user_pages()` under
//!   `VFIO_IOMMU_MAP_DMA`, then skips clearing a marked page.
//! * pools: buddy pages of order 0 (4 KiB), the mTHP orders and PMD order
//!   (THP) are allocated, zeroed and kept in per-node pools
//!   (prezero_glue.c); the anonymous fault paths take one instead of
//!   allocating and clearing (patches/0004). A shrinker gives pooled pages
//!   back under pressure.
//!
//! Zeroing runs
//!
//! * in the caller's context: `ioctl(PREZERO_IOC_ZERO)` on `/dev/prezero`
//!   (`liveup prezero zero`), so the CPU time is charged to the caller's
//!   cgroup and throttled with it;
//! * optionally in an idle worker (`SCHED_IDLE` kthread, rate-capped).
//!
//! Both stop when memory is short (`MemAvailable` below a knob), when no
//! unreserved free page is left (hugetlb) or no page can be allocated
//! without reclaim (pools), on a signal (caller) or as soon as another task
//! wants the CPU (worker). The worker zeroes free hugetlb pages and, if
//! `idle_pool_mb` is set, keeps each node's THP pool at that size; pools
//! otherwise grow only by what a caller asked for.
//!
//! Knobs and counters: `/sys/kernel/debug/prezero/` (Documentation/prezero.rst).
//!
//! Locking: knobs and counters are atomics. `REG` (a mutex) serialises
//! registration with the hugetlb and pool hooks (enable/disable); it is
//! never taken from the fault path. The fault-path callbacks only touch
//! atomics and read the page they were given, which the faulting task owns.
//! The pools' lists are the glue's (one spinlock per pool).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use kernel::ffi::{c_int, c_long, c_uint, c_ulong, c_void};
use kernel::{
    bindings, c_str, debugfs,
    fs::File,
    ioctl::_IOWR,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
    sync::global_lock,
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice, UserSliceReader},
};

// The ioctl ABI, one definition shared with liveup.
#[path = "../userspace/kh-uapi/src/ioc.rs"]
#[allow(dead_code, unreachable_pub)]
mod ioc;
#[path = "../userspace/kh-uapi/src/prezero.rs"]
#[allow(dead_code, unreachable_pub)]
mod uapi;

module! {
    type: PrezeroModule,
    name: "prezero",
    authors: ["kvmhost developers"],
    description: "Zero free memory ahead of time (hugetlb pages, 4K/THP pools)",
    license: "GPL",
}

// The C glue (prezero_glue.c).
extern "C" {
    fn prezero_glue_register() -> c_int;
    fn prezero_glue_unregister();
    fn prezero_glue_take(order: c_uint, nid: c_int) -> *mut c_void;
    fn prezero_glue_ptr_err(p: *const c_void) -> c_long;
    fn prezero_glue_return(folio: *mut c_void, zeroed: bool);
    fn prezero_glue_count(
        order: c_uint,
        nid: c_int,
        nr_free: *mut c_ulong,
        nr_marked: *mut c_ulong,
    ) -> c_int;
    fn prezero_glue_zero(folio: *mut c_void, first: c_ulong, nr: c_ulong);
    fn prezero_glue_dirty(folio: *mut c_void, index: c_ulong);
    fn prezero_glue_is_zero(folio: *mut c_void) -> bool;
    fn prezero_glue_pool_alloc(order: c_uint, nid: c_int) -> *mut c_void;
    fn prezero_glue_pool_put(folio: *mut c_void);
    fn prezero_glue_folio_put(folio: *mut c_void);
    fn prezero_glue_pool_count(
        order: c_uint,
        nid: c_int,
        nr: *mut c_ulong,
        taken: *mut c_ulong,
        reclaimed: *mut c_ulong,
    ) -> c_int;
    fn prezero_glue_pool_drain();
    fn prezero_glue_pool_init() -> c_int;
    fn prezero_glue_pool_exit();
    fn prezero_glue_pool_register() -> c_int;
    fn prezero_glue_pool_unregister();
    fn prezero_glue_need_resched() -> bool;
    fn prezero_glue_signal_pending() -> bool;
    fn prezero_glue_cond_resched();
    fn prezero_glue_now_ns() -> u64;
    fn prezero_glue_available_pct() -> c_uint;
    fn prezero_glue_node_online(nid: c_int) -> bool;
    fn prezero_glue_idle_start() -> c_int;
    fn prezero_glue_idle_stop();
    fn prezero_glue_should_stop() -> bool;
}

/// Nodes with counters; pages on higher nodes are refused (EINVAL).
/// Equal to `PREZERO_POOL_NODES` of the glue.
const NODES: usize = 8;

/// Where zeroed pages wait.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Free hugetlb pages, marked in place (patches/0001).
    Hugetlb,
    /// Buddy pages held in this module's pools (patches/0004).
    Pool,
}

/// What is handled: (order, name in stats, kind). x86-64, 4 KiB base pages;
/// the pool orders 2 ..= 8 are the anonymous mTHP sizes.
const SIZES: [(u32, &str, Kind); 11] = [
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
const CHUNK: u64 = 512;
/// Upper bound of one request, in pages.
const MAX_COUNT: u64 = 1 << 20;

struct Counters {
    zeroed: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    violations: AtomicU64,
    aborted: AtomicU64,
    zero_ns: AtomicU64,
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
static STATS: [[Counters; SIZES.len()]; NODES] = [NODE_COUNTERS; NODES];

// Knobs (debugfs). `ENABLED` mirrors the registration and changes under `REG`.
static ENABLED: AtomicBool = AtomicBool::new(false);
static VERIFY: AtomicBool = AtomicBool::new(false);
static IDLE: AtomicBool = AtomicBool::new(false);
static IDLE_RATE_MB: AtomicU32 = AtomicU32::new(64);
static MIN_AVAIL_PCT: AtomicU32 = AtomicU32::new(5);
/// The idle worker keeps each node's THP pool at this many MiB (0: off).
static IDLE_POOL_MB: AtomicU32 = AtomicU32::new(0);
/// Pending fault injections: zeroing leaves one byte set (verify mode only).
static INJECT: AtomicU32 = AtomicU32::new(0);
/// Violations are reported once per load; the counter has the rest.
static VIOLATION_REPORTED: AtomicBool = AtomicBool::new(false);

global_lock! {
    // SAFETY: initialised in `PrezeroModule::init` before anything uses it.
    unsafe(uninit) static REG: Mutex<()> = ();
}

fn size_index(order: u32, kind: Kind) -> Option<usize> {
    SIZES.iter().position(|&(o, _, k)| o == order && k == kind)
}

fn counters(nid: c_int, idx: usize) -> Option<&'static Counters> {
    let n = usize::try_from(nid).ok().filter(|&n| n < NODES)?;
    STATS[n].get(idx)
}

/// Register with the hugetlb and pool hooks (turns their static keys on)
/// or not. Disabling also gives every pooled page back to the allocator.
fn set_enabled(on: bool) -> Result {
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
fn account(c: Option<&Counters>, nid: c_int, order: u32, folio: Option<*mut c_void>) -> bool {
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
pub extern "C" fn prezero_rs_pool_consume(nid: c_int, order: c_uint, folio: *mut c_void) -> bool {
    let c = size_index(order, Kind::Pool).and_then(|i| counters(nid, i));
    account(c, nid, order, (!folio.is_null()).then_some(folio))
}

/// Hugetlb fault-path callback (through the glue): `marked` pages may skip clearing.
#[no_mangle]
pub extern "C" fn prezero_rs_consume(
    nid: c_int,
    order: c_uint,
    marked: bool,
    folio: *mut c_void,
) -> bool {
    let c = size_index(order, Kind::Hugetlb).and_then(|i| counters(nid, i));
    account(c, nid, order, marked.then_some(folio))
}

fn memory_short() -> bool {
    // SAFETY: reads global counters.
    let pct = unsafe { prezero_glue_available_pct() };
    pct < MIN_AVAIL_PCT.load(Relaxed)
}

/// Why zeroing stopped early.
#[derive(PartialEq)]
enum Stop {
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
fn zero_pages(idx: usize, nid: c_int, count: u64, worker: bool) -> Result<(u64, u64, Stop)> {
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
        let err = unsafe { prezero_glue_ptr_err(folio) };
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
        // pools it only if complete, else frees it.
        unsafe {
            match (kind, complete) {
                (Kind::Hugetlb, _) => prezero_glue_return(folio, complete),
                (Kind::Pool, true) => prezero_glue_pool_put(folio),
                (Kind::Pool, false) => prezero_glue_folio_put(folio),
            }
        }
        // SAFETY: reads the clock.
        let dt = unsafe { prezero_glue_now_ns() }.saturating_sub(t0);
        ns += dt;
        c.zero_ns.fetch_add(dt, Relaxed);
        if !complete {
            c.aborted.fetch_add(1, Relaxed);
            return Ok((done, ns, why));
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
pub extern "C" fn prezero_rs_idle_step() -> c_long {
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

// The ioctl ABI is defined once, in userspace/kh-uapi/src/prezero.rs
// (liveup uses the same file; prezero/include/uapi/prezero.h is checked
// against it by kh-uapi's tests).
use uapi::{Req as PrezeroReq, IOC_ZERO as PREZERO_IOC_ZERO, ZERO_POOL as PREZERO_ZERO_POOL};

const _: () = assert!(PREZERO_IOC_ZERO == _IOWR::<PrezeroReq>(uapi::IOC_MAGIC, 1));
const _: () = assert!(uapi::MAX_COUNT == MAX_COUNT);

// SAFETY: plain integers, no padding (8 + 4 + 4 + 3 * 8 bytes, asserted in
// kh-uapi), every bit pattern valid.
unsafe impl FromBytes for PrezeroReq {}
// SAFETY: as above.
unsafe impl AsBytes for PrezeroReq {}

/// PMD order: the THP pool.
const THP_ORDER: u32 = 9;


fn index_of_size(size: u64, kind: Kind) -> Option<usize> {
    SIZES
        .iter()
        .position(|&(o, _, k)| k == kind && (bindings::PAGE_SIZE as u64) << o == size)
}

struct PrezeroDev;

#[vtable]
impl MiscDevice for PrezeroDev {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        // SAFETY: `capable` only reads the current task's credentials.
        if !unsafe { bindings::capable(bindings::CAP_SYS_ADMIN as c_int) } {
            return Err(EPERM);
        }
        Ok(KBox::new(PrezeroDev, GFP_KERNEL)?)
    }

    fn ioctl(_me: &PrezeroDev, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        if cmd != PREZERO_IOC_ZERO {
            return Err(ENOTTY);
        }
        let (mut rd, mut wr) =
            UserSlice::new(UserPtr::from_addr(arg), size_of::<PrezeroReq>()).reader_writer();
        let mut req: PrezeroReq = rd.read()?;
        if req.flags & !PREZERO_ZERO_POOL != 0 {
            pr_err!("zero: flags {:#x}: only bit 0 (pool) is defined (EINVAL)\n", req.flags);
            return Err(EINVAL);
        }
        let pool = req.flags & PREZERO_ZERO_POOL != 0;
        let kind = if pool { Kind::Pool } else { Kind::Hugetlb };
        let Some(idx) = index_of_size(req.size, kind) else {
            if pool {
                pr_err!(
                    "zero: pool size {} is not a power of two from 4 KiB to 2 MiB other than 8 KiB (EINVAL)\n",
                    req.size
                );
            } else {
                pr_err!("zero: size {} is not 2 MiB or 1 GiB (EINVAL)\n", req.size);
            }
            return Err(EINVAL);
        };
        // SAFETY: checks a node number.
        if req.node < 0
            || req.node as usize >= NODES
            || !unsafe { prezero_glue_node_online(req.node) }
        {
            pr_err!(
                "zero: node {} is not an online node below {} (EINVAL)\n",
                req.node,
                NODES
            );
            return Err(EINVAL);
        }
        if req.count == 0 || req.count > MAX_COUNT {
            pr_err!(
                "zero: count {} not in 1..={} (EINVAL)\n",
                req.count,
                MAX_COUNT
            );
            return Err(EINVAL);
        }
        if !ENABLED.load(Relaxed) {
            pr_err!("zero: prezero is disabled (ENODEV)\n");
            return Err(ENODEV);
        }
        let (done, ns, why) = zero_pages(idx, req.node, req.count, false)?;
        if done == 0 && why == Stop::Interrupted {
            return Err(EINTR);
        }
        req.done = done;
        req.ns = ns;
        wr.write(&req)?;
        Ok(0)
    }
}

/// Read a decimal number written to a knob, in `lo..=hi`.
fn parse_knob(name: &str, r: &mut UserSliceReader, lo: u64, hi: u64) -> Result<u64> {
    let mut buf = [0u8; 24];
    let n = r.len();
    let bad = |what: &str| {
        pr_err!("{}: {} (EINVAL)\n", name, what);
        EINVAL
    };
    if n == 0 || n > buf.len() {
        return Err(bad("write one decimal number"));
    }
    r.read_slice(&mut buf[..n])?;
    let s = core::str::from_utf8(&buf[..n]).map_err(|_| bad("not text"))?;
    let v: u64 = s.trim().parse().map_err(|_| bad("not a decimal number"))?;
    if v < lo || v > hi {
        pr_err!("{}: {} not in {}..={} (EINVAL)\n", name, v, lo, hi);
        return Err(EINVAL);
    }
    Ok(v)
}

fn show_bool(b: &AtomicBool, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    writeln!(f, "{}", b.load(Relaxed) as u32)
}

fn enabled_read(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    show_bool(&ENABLED, f)
}
fn enabled_write(_: &(), r: &mut UserSliceReader) -> Result {
    set_enabled(parse_knob("enabled", r, 0, 1)? == 1)
}
fn verify_read(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    show_bool(&VERIFY, f)
}
fn verify_write(_: &(), r: &mut UserSliceReader) -> Result {
    VERIFY.store(parse_knob("verify", r, 0, 1)? == 1, Relaxed);
    Ok(())
}
fn idle_read(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    show_bool(&IDLE, f)
}
fn idle_write(_: &(), r: &mut UserSliceReader) -> Result {
    IDLE.store(parse_knob("idle", r, 0, 1)? == 1, Relaxed);
    Ok(())
}
fn rate_read(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    writeln!(f, "{}", IDLE_RATE_MB.load(Relaxed))
}
fn rate_write(_: &(), r: &mut UserSliceReader) -> Result {
    IDLE_RATE_MB.store(parse_knob("idle_rate_mb", r, 1, 1 << 20)? as u32, Relaxed);
    Ok(())
}
fn pool_mb_read(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    writeln!(f, "{}", IDLE_POOL_MB.load(Relaxed))
}
fn pool_mb_write(_: &(), r: &mut UserSliceReader) -> Result {
    IDLE_POOL_MB.store(parse_knob("idle_pool_mb", r, 0, 1 << 20)? as u32, Relaxed);
    Ok(())
}
fn avail_read(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    writeln!(f, "{}", MIN_AVAIL_PCT.load(Relaxed))
}
fn avail_write(_: &(), r: &mut UserSliceReader) -> Result {
    MIN_AVAIL_PCT.store(parse_knob("min_available_pct", r, 0, 100)? as u32, Relaxed);
    Ok(())
}
fn inject_read(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    writeln!(f, "{}", INJECT.load(Relaxed))
}
fn inject_write(_: &(), r: &mut UserSliceReader) -> Result {
    let v = parse_knob("inject_dirty", r, 0, 1000)?;
    if v > 0 && !VERIFY.load(Relaxed) {
        pr_err!("inject_dirty: only with verify=1, which catches it (EPERM)\n");
        return Err(EPERM);
    }
    INJECT.store(v as u32, Relaxed);
    Ok(())
}

fn stats_read(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    writeln!(
        f,
        "node size free marked zeroed hits misses violations aborted zero_us taken reclaimed"
    )?;
    for nid in 0..NODES {
        // SAFETY: checks a node number.
        if !unsafe { prezero_glue_node_online(nid as c_int) } {
            continue;
        }
        for (i, &(order, name, kind)) in SIZES.iter().enumerate() {
            // hugetlb: free pages and marked ones; pool: pooled pages (all
            // zero), how many faults took and the shrinker gave back (one
            // snapshot under the pool's lock).
            let (mut free, mut marked): (c_ulong, c_ulong) = (0, 0);
            let (mut taken, mut reclaimed): (c_ulong, c_ulong) = (0, 0);
            // SAFETY: valid out-pointers; the glue checks order and node.
            let r = unsafe {
                match kind {
                    Kind::Hugetlb => prezero_glue_count(order, nid as c_int, &mut free, &mut marked),
                    Kind::Pool => {
                        prezero_glue_pool_count(
                            order,
                            nid as c_int,
                            &mut free,
                            &mut taken,
                            &mut reclaimed,
                        )
                    }
                }
            };
            if r != 0 {
                continue;
            }
            if kind == Kind::Pool {
                marked = free;
            }
            let c = &STATS[nid][i];
            writeln!(
                f,
                "{} {} {} {} {} {} {} {} {} {} {} {}",
                nid,
                name,
                free,
                marked,
                c.zeroed.load(Relaxed),
                c.hits.load(Relaxed),
                c.misses.load(Relaxed),
                c.violations.load(Relaxed),
                c.aborted.load(Relaxed),
                c.zero_ns.load(Relaxed) / 1000,
                taken,
                reclaimed
            )?;
        }
    }
    Ok(())
}

/// Undoes what `init` set up outside the struct's other fields: stops the
/// idle worker, unregisters from the hooks, frees the shrinker and gives
/// every pooled page back. Marked hugetlb pages stay marked: they are free
/// and still zero, and the hooks ignore the mark while no module is
/// registered.
struct Core;

impl Drop for Core {
    fn drop(&mut self) {
        // SAFETY: stops the kthread started in `init` (waits for it).
        unsafe { prezero_glue_idle_stop() };
        let _ = set_enabled(false);
        // SAFETY: nothing takes from the pools any more (unregistered);
        // frees the shrinker registered in `init` and drains the pools.
        unsafe { prezero_glue_pool_exit() };
    }
}

/// Fields drop in declaration order: files and the device go before `Core`.
#[pin_data]
struct PrezeroModule {
    #[pin]
    _enabled: debugfs::File<()>,
    #[pin]
    _verify: debugfs::File<()>,
    #[pin]
    _idle: debugfs::File<()>,
    #[pin]
    _rate: debugfs::File<()>,
    #[pin]
    _pool_mb: debugfs::File<()>,
    #[pin]
    _avail: debugfs::File<()>,
    #[pin]
    _inject: debugfs::File<()>,
    #[pin]
    _stats: debugfs::File<()>,
    _debugfs: debugfs::Dir,
    #[pin]
    _dev: MiscDeviceRegistration<PrezeroDev>,
    _core: Core,
}

impl kernel::InPlaceModule for PrezeroModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        // SAFETY: called once, before anything uses `REG`.
        unsafe { REG.init() };
        let setup = || -> Result<Core> {
            // SAFETY: sets up the pools and their shrinker once; undone by
            // `prezero_glue_pool_exit` (in `Core::drop` or below).
            let r = unsafe { prezero_glue_pool_init() };
            if r != 0 {
                return Err(Error::from_errno(r));
            }
            if let Err(e) = set_enabled(true) {
                // SAFETY: undoes the init above; nothing registered.
                unsafe { prezero_glue_pool_exit() };
                return Err(e);
            }
            // SAFETY: starts the idle kthread; `Core::drop` stops it.
            let r = unsafe { prezero_glue_idle_start() };
            if r != 0 {
                let _ = set_enabled(false);
                // SAFETY: undoes the pool init; hooks unregistered above.
                unsafe { prezero_glue_pool_exit() };
                return Err(Error::from_errno(r));
            }
            Ok(Core)
        };
        let dir = debugfs::Dir::new(c_str!("prezero"));
        try_pin_init!(Self {
            _core: setup()?,
            _dev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c_str!("prezero") }),
            _enabled <- dir.read_write_callback_file(c_str!("enabled"), (), &enabled_read, &enabled_write),
            _verify <- dir.read_write_callback_file(c_str!("verify"), (), &verify_read, &verify_write),
            _idle <- dir.read_write_callback_file(c_str!("idle"), (), &idle_read, &idle_write),
            _rate <- dir.read_write_callback_file(c_str!("idle_rate_mb"), (), &rate_read, &rate_write),
            _pool_mb <- dir.read_write_callback_file(c_str!("idle_pool_mb"), (), &pool_mb_read, &pool_mb_write),
            _avail <- dir.read_write_callback_file(c_str!("min_available_pct"), (), &avail_read, &avail_write),
            _inject <- dir.read_write_callback_file(c_str!("inject_dirty"), (), &inject_read, &inject_write),
            _stats <- dir.read_callback_file(c_str!("stats"), (), &stats_read),
            _debugfs: dir,
        })
    }
}
