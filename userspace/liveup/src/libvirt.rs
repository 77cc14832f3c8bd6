//! libvirt-managed domains through a host kernel upgrade, libvirt keeping
//! them: their RAM in KRAM through libvirt's qemu hook, saved and restored
//! through libvirt's managed save (Documentation/upgrade.rst, "Hosts run by
//! libvirt").

pub mod cli;
pub mod domain;
pub mod hook;
pub mod keep;
pub mod virsh;
