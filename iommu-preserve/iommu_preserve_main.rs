// SPDX-License-Identifier: GPL-2.0

//! iommu_preserve: a kept PCI device's DMA stays translated through a host
//! kexec (Intel VT-d, legacy mode).
//!
//! Loaded with `freeze=` (the device as `(segment << 16) | (bus << 8) |
//! devfn`, kept through patches/0002 first), while its VMM still has it
//! mapped, the module copies the device's second-level page tables into
//! KRAM pages (every mapped page must itself be outside System RAM, i.e.
//! guest RAM in KRAM), builds a root and context table there that point at
//! the copy (the other entries copied as they are; area "iommu-tables"),
//! switches the IOMMU to that root with translation on
//! (patches/0003) and asks the kernel to leave translation on at kexec. A
//! record in KRAM (area "iommu-preserve", format in
//! `userspace/kram-format/src/vtd.rs`, shared with host tests) tells the
//! next kernel what was kept. That kernel, booted with
//! `intel_iommu_adopt=RECORD pci_keep=DEV`, checks the record and adopts
//! the root, context and page-table pages in place: the IOMMU goes on
//! reading the same pages until the device is attached to a new domain;
//! `release=1` then has the kernel move the root and context table to pages
//! of its own and frees every KRAM page.
//!
//! Loaded without `freeze=` it checks the record (a corrupt one is refused
//! and left as it is) and says whether the tables are adopted in place or
//! the device was attached anew; with `release=1` it then frees them, but
//! only once nothing translates through them; `discard=1` drops a refused
//! record with its areas (KRAM refuses to delete an area holding a table
//! the IOMMU reads, so a record in use is never discarded). `thaw=1`, in
//! the kernel that froze (an upgrade that gave up before its kexec),
//! switches the IOMMU back to that kernel's own root table, which it kept
//! up to date all along, lets translation go off at a later kexec again,
//! and frees the tables.
//!
//! Locking: everything happens in module init, which the module loader
//! serialises; KRAM's API has its own lock. The device's tables must not
//! change during `freeze` (the VMM is stopped); later changes by the old
//! kernel reach its own tables, which the IOMMU no longer reads.
//!
//! Files: `freeze.rs`, `check.rs` (the two ways to load it), `tables.rs`
//! (table copies and KRAM areas), `device.rs`, `glue.rs` (the C glue's and
//! KRAM's declarations); the record's format is kram-format's `vtd.rs`.

use kernel::prelude::*;

#[path = "../userspace/kram-format/src/format.rs"]
#[allow(dead_code, unreachable_pub)]
mod format;
#[path = "../userspace/kram-format/src/vtd.rs"]
#[allow(dead_code, unreachable_pub)]
mod vtd;

mod check;
mod device;
mod freeze;
mod glue;
mod tables;

use check::check;
use freeze::freeze;

module! {
    type: IommuPreserve,
    name: "iommu_preserve",
    authors: ["kvmhost developers"],
    description: "Keep a kept device's VT-d translation across kexec",
    license: "GPL",
    params: {
        freeze: i64 {
            default: -1,
            description: "Device to keep translated across kexec: (segment << 16) | (bus << 8) | devfn",
        },
        release: bool {
            default: false,
            description: "Free the preserved tables once the device is attached anew",
        },
        discard: bool {
            default: false,
            description: "Drop a refused (corrupt) record and every page it may name",
        },
        thaw: bool {
            default: false,
            description: "Undo a freeze in the kernel that made it (an upgrade aborted before kexec): back to the kernel's own root table, tables freed",
        },
    },
}

struct IommuPreserve;

impl kernel::Module for IommuPreserve {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let f = module_parameters::freeze.value();
        if f >= 0 {
            freeze(f)?;
        } else {
            check(
                module_parameters::release.value(),
                module_parameters::discard.value(),
                module_parameters::thaw.value(),
            )?;
        }
        Ok(IommuPreserve)
    }
}

