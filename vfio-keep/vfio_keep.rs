// SPDX-License-Identifier: GPL-2.0

//! Keep VFIO-PCI devices untouched across kexec
//!
//! Placeholder module: it loads and unloads cleanly so the rig can build and
//! test every component directory. The real implementation has its own issue.

use kernel::prelude::*;

module! {
    type: VfioKeep,
    name: "vfio_keep",
    authors: ["kvmhost developers"],
    description: "Keep VFIO-PCI devices untouched across kexec",
    license: "GPL",
}

struct VfioKeep;

impl kernel::Module for VfioKeep {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("loaded\n");
        Ok(VfioKeep)
    }
}

impl Drop for VfioKeep {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
