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
//!
//! Files: `account.rs` (sizes, counters, hook registration, fault-path
//! callbacks), `zero.rs` (zeroing and the idle worker's step), `dev.rs`
//! (`/dev/prezero`), `knobs.rs` (debugfs), `glue.rs` (the C glue's
//! declarations); the ABI is `kh-uapi`'s `prezero.rs`.

use kernel::{
    debugfs,
    miscdevice::{MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
};

// The ioctl ABI, one definition shared with liveup.
#[path = "../userspace/kh-uapi/src/ioc.rs"]
#[allow(dead_code, unreachable_pub)]
mod ioc;
#[path = "../userspace/kh-uapi/src/prezero.rs"]
#[allow(dead_code, unreachable_pub)]
mod uapi;

mod account;
mod dev;
mod glue;
mod knobs;
mod zero;

use account::{set_enabled, REG};
use dev::PrezeroDev;
use glue::{prezero_glue_idle_start, prezero_glue_idle_stop, prezero_glue_pool_exit, prezero_glue_pool_init};

module! {
    type: PrezeroModule,
    name: "prezero",
    authors: ["kvmhost developers"],
    description: "Zero free memory ahead of time (hugetlb pages, 4K/THP pools)",
    license: "GPL",
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
    /// `/sys/kernel/debug/prezero/`: the knobs and `stats` (knobs.rs).
    #[pin]
    _debugfs: debugfs::Scope<()>,
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
        try_pin_init!(Self {
            _core: setup()?,
            _dev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"prezero" }),
            _debugfs <- debugfs::Scope::dir((), c"prezero", |_, dir| knobs::create_files(dir)),
        })
    }
}

