//! liveup: host kernel hot-upgrade and accelerated live migration for
//! KVM/QEMU hosts. The CLI is `src/main.rs`; these modules are its pieces.

pub mod host;
pub mod iomem;
pub mod journal;
pub mod keep;
pub mod kmod;
pub mod kram;
pub mod libvirt;
pub mod logging;
pub mod migrate;
pub mod parallel;
pub mod prezero;
pub mod qga;
pub mod qmp;
pub mod units;
pub mod upgrade;
pub mod vfio_abi;
