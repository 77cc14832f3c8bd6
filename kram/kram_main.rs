// SPDX-License-Identifier: GPL-2.0

//! KRAM: fixed physical pages that survive kexec.
//!
//! The module owns one physical range reserved at boot (`memmap=SIZE$ADDR`,
//! given to the module as `base=` and `size=`). The region carries its own
//! metadata (see `userspace/kram-format/src/format.rs`, included below): a
//! superblock with named areas and an owner word per page. On load the
//! module validates and adopts what the previous kernel left; it never
//! formats a region on its own. Other modules use the exported API
//! (`include/kram.h`); userspace uses `/dev/kram` (`include/uapi/kram.h`).
//!
//! Files: `region.rs` (the region, its adoption, `STATE`), `api.rs` (the
//! exported kernel API), `dev.rs` (the device nodes and their ioctls, one
//! function per command), `area_node.rs` (a node per area, whose files
//! reach that area only), `mmap.rs` (mappings and their count), `glue.rs`
//! (the C glue's declarations); the ABI is `kh-uapi`'s `kram.rs`.
//!
//! Locking: one spinlock, `STATE`, protects the region mapping and all
//! metadata changes. It is taken by the exported API (callable from atomic
//! context, never from hard-IRQ context), by ioctls, by mmap and by the
//! vm_ops that count an area's mappings (`kram_map_get`/`kram_map_put`, from
//! fork, munmap and exit, in process context); user memory
//! is copied before it is taken and after it is dropped. Zeroing a new
//! area and making the region's struct pages (first `/dev/kram-pages` mmap,
//! serialised by a mutex in kram_glue.c) happen without it: both sleep.

use kernel::{c_str, debugfs, miscdevice::{MiscDeviceOptions, MiscDeviceRegistration}, prelude::*};

// The shared format code is a library API; not all of it is used here.
#[path = "../userspace/kram-format/src/format.rs"]
#[allow(dead_code, unreachable_pub)]
mod format;

// The ioctl ABI, one definition shared with liveup.
#[path = "../userspace/kh-uapi/src/ioc.rs"]
#[allow(dead_code, unreachable_pub)]
mod ioc;
#[path = "../userspace/kh-uapi/src/kram.rs"]
#[allow(dead_code, unreachable_pub)]
mod uapi;

mod api;
mod area_node;
mod dev;
mod glue;
mod mmap;
mod region;

use area_node::{AreaNode, NAMES, NODES};
use dev::{KramDev, KramPagesDev};
use region::{adopt, debugfs_status, discover, map_region, RegionGuard, Source, STATE};

module! {
    type: KramModule,
    name: "kram",
    authors: ["kvmhost developers"],
    description: "KRAM: fixed physical pages that survive kexec",
    license: "GPL",
    params: {
        base: u64 {
            default: 0,
            description: "Physical address of the reserved region (memmap=SIZE$ADDR)",
        },
        size: u64 {
            default: 0,
            description: "Size of the reserved region in bytes",
        },
    },
}

/// Fields drop in declaration order: debugfs and the device go before the
/// region they show.
#[pin_data]
struct KramModule {
    #[pin]
    _status: debugfs::File<()>,
    _debugfs: debugfs::Dir,
    #[pin]
    _dev: MiscDeviceRegistration<KramDev>,
    #[pin]
    _pages_dev: MiscDeviceRegistration<KramPagesDev>,
    #[pin]
    _area_nodes: [MiscDeviceRegistration<AreaNode>; NODES],
    _region: RegionGuard,
}

impl kernel::InPlaceModule for KramModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        // SAFETY: called once, before anything uses `STATE`.
        unsafe { STATE.init() };
        let (b, s) = (module_parameters::base.value(), module_parameters::size.value());
        let setup = move || -> Result<RegionGuard> {
            let (b, s, source) = match (b, s) {
                (0, 0) => discover()?,
                (0, _) | (_, 0) => {
                    pr_err!("give both base= and size=, or neither to use the command line's reservation (EINVAL)\n");
                    return Err(EINVAL);
                }
                _ => (b, s, Source::Reserved),
            };
            let mut r = map_region(b, s, source)?;
            adopt(&mut r);
            *STATE.lock() = Some(r);
            Ok(RegionGuard)
        };
        let dir = debugfs::Dir::new(c_str!("kram"));
        try_pin_init!(Self {
            _region: setup()?,
            _dev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c_str!("kram") }),
            _pages_dev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c_str!("kram-pages") }),
            _area_nodes <- pin_init::pin_init_array_from_fn(|i| {
                MiscDeviceRegistration::register(MiscDeviceOptions { name: NAMES[i] })
            }),
            _status <- dir.read_callback_file(c_str!("status"), (), &debugfs_status),
            _debugfs: dir,
        })
    }
}

