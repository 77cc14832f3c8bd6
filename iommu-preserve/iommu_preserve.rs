// SPDX-License-Identifier: GPL-2.0

//! Intel VT-d tables kept in KRAM across kexec
//!
//! Placeholder module: it loads and unloads cleanly so the rig can build and
//! test every component directory. The real implementation has its own issue.

use kernel::prelude::*;

module! {
    type: IommuPreserve,
    name: "iommu_preserve",
    authors: ["kvmhost developers"],
    description: "Intel VT-d tables kept in KRAM across kexec",
    license: "GPL",
}

struct IommuPreserve;

impl kernel::Module for IommuPreserve {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("loaded\n");
        Ok(IommuPreserve)
    }
}

impl Drop for IommuPreserve {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
