// SPDX-License-Identifier: GPL-2.0

//! KRAM: fixed physical pages that survive kexec
//!
//! Placeholder module: it loads and unloads cleanly so the rig can build and
//! test every component directory. The real implementation has its own issue.

use kernel::prelude::*;

module! {
    type: Kram,
    name: "kram",
    authors: ["kvmhost developers"],
    description: "KRAM: fixed physical pages that survive kexec",
    license: "GPL",
}

struct Kram;

impl kernel::Module for Kram {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("loaded\n");
        Ok(Kram)
    }
}

impl Drop for Kram {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
