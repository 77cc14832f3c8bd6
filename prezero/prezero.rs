// SPDX-License-Identifier: GPL-2.0

//! Zero free pages ahead of time
//!
//! Placeholder module: it loads and unloads cleanly so the rig can build and
//! test every component directory. The real implementation has its own issue.

use kernel::prelude::*;

module! {
    type: Prezero,
    name: "prezero",
    authors: ["kvmhost developers"],
    description: "Zero free pages ahead of time",
    license: "GPL",
}

struct Prezero;

impl kernel::Module for Prezero {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("loaded\n");
        Ok(Prezero)
    }
}

impl Drop for Prezero {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
