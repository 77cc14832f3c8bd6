// SPDX-License-Identifier: GPL-2.0

//! iommu_preserve: a kept PCI device's DMA stays translated through a host
//! kexec (Intel VT-d, legacy mode).
//!
//! `/dev/iommu-preserve` (ABI: kh-uapi's `iommu_preserve.rs`), one ioctl per
//! operation:
//!
//! - FREEZE, for a kept device (patches/0002) while its VMM still has it
//!   mapped: copies the device's second-level page tables into KRAM pages
//!   (every mapped page must itself be outside System RAM, i.e. guest RAM
//!   in KRAM), builds a root and context table there that point at the
//!   copy (the other entries copied as they are; area "iommu-tables"),
//!   switches the IOMMU to that root with translation on (patches/0003) and
//!   asks the kernel to leave translation on at kexec. A record in KRAM
//!   (area "iommu-preserve", format in `userspace/kram-format/src/vtd.rs`,
//!   shared with host tests) tells the next kernel what was kept. That
//!   kernel, booted with `intel_iommu_adopt=RECORD pci_keep=DEV`, checks
//!   the record and adopts the root, context and page-table pages in
//!   place: the IOMMU goes on reading the same pages until the device is
//!   attached to a new domain.
//! - STATUS: whether a record exists, passed its checks, and whether its
//!   device is frozen, adopted, blocked or attached anew (also logged when
//!   the module loads).
//! - RELEASE: once nothing translates through the tables (the device is
//!   attached anew), the kernel moves an adopted root and context table to
//!   pages of its own and every KRAM page is freed.
//! - DISCARD: drops a record, refused or not, with its areas (KRAM refuses
//!   to delete an area holding a table the IOMMU reads, so a record in use
//!   is never discarded).
//! - THAW, in the kernel that froze (an upgrade that gave up before its
//!   kexec): the IOMMU goes back to that kernel's own root table, which it
//!   kept up to date all along, translation may go off at a later kexec
//!   again, and the tables are freed.
//!
//! Locking: `OPS` (dev.rs), a mutex, serialises the operations (each may
//! sleep); KRAM's API has its own lock. The device's tables must not
//! change during FREEZE (the VMM is stopped); later changes by the old
//! kernel reach its own tables, which the IOMMU no longer reads.
//!
//! Files: `dev.rs` (the device node and its ioctls), `freeze.rs`,
//! `check.rs` (status, release, discard, thaw), `tables.rs` (table copies
//! and KRAM areas), `device.rs`, `glue.rs` (the C glue's and KRAM's
//! declarations); the record's format is kram-format's `vtd.rs`.

use kernel::{c_str, miscdevice::{MiscDeviceOptions, MiscDeviceRegistration}, prelude::*};

#[path = "../userspace/kram-format/src/format.rs"]
#[allow(dead_code, unreachable_pub)]
mod format;
#[path = "../userspace/kram-format/src/vtd.rs"]
#[allow(dead_code, unreachable_pub)]
mod vtd;
// The ioctl ABI, one definition shared with liveup.
#[path = "../userspace/kh-uapi/src/ioc.rs"]
#[allow(dead_code, unreachable_pub)]
mod ioc;
#[path = "../userspace/kh-uapi/src/iommu_preserve.rs"]
#[allow(dead_code, unreachable_pub)]
mod uapi;

mod check;
mod dev;
mod device;
mod freeze;
mod glue;
mod tables;

use dev::{IoprDevice, OPS};

module! {
    type: IommuPreserve,
    name: "iommu_preserve",
    authors: ["kvmhost developers"],
    description: "Keep a kept device's VT-d translation across kexec",
    license: "GPL",
}

#[pin_data]
struct IommuPreserve {
    #[pin]
    _dev: MiscDeviceRegistration<IoprDevice>,
}

impl kernel::InPlaceModule for IommuPreserve {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        // SAFETY: called once, before the device that uses `OPS` exists.
        unsafe { OPS.init() };
        // Say where a preserved record stands; a refused one is left for
        // DISCARD, so the load itself does not fail on it.
        let _ = check::run(check::Op::Status, true);
        try_pin_init!(Self {
            _dev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c_str!("iommu-preserve") }),
        })
    }
}
