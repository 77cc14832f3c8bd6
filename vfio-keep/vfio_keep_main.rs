// SPDX-License-Identifier: GPL-2.0

//! vfio_keep: which PCI devices are kept, and the `pci_keep=` the next
//! kernel needs.
//!
//! The keep flag itself (no reset, disable or bus-master clear on close or
//! kexec; only vfio-pci may bind in the next kernel) is core code in
//! patches/0002, set through `VFIO_DEVICE_FEATURE_PCI_KEEP` or sysfs `kept`.
//! This module is what the upgrade tooling reads:
//!
//! - `/sys/kernel/debug/vfio_keep/devices`: one line per kept device:
//!   `ssss:bb:dd.f vvvv:dddd driver=NAME bus_master=0|1 memory=0|1`;
//! - `/sys/kernel/debug/vfio_keep/cmdline`: `pci_keep=DEV;DEV...` for the
//!   next kernel's command line (empty if nothing is kept).
//!
//! Both are computed when read, from the PCI device list (each device
//! referenced while it is looked at); no state, no locking of its own.

use kernel::bindings;
use kernel::ffi::c_char;
use kernel::{c_str, debugfs, prelude::*};

module! {
    type: VfioKeep,
    name: "vfio_keep",
    authors: ["kvmhost developers"],
    description: "Kept VFIO-PCI devices and the pci_keep= for the next kernel",
    license: "GPL",
}

// Only pointers to kernel structs cross here; Rust never reads through them
// (a struct's own layout, which the lint may call not FFI-safe, does not
// matter).
#[allow(improper_ctypes)]
extern "C" {
    fn vk_glue_next(from: *mut bindings::pci_dev) -> *mut bindings::pci_dev;
    fn vk_glue_put(pdev: *mut bindings::pci_dev);
    fn vk_glue_kept(pdev: *mut bindings::pci_dev) -> bool;
    fn vk_glue_bdf(pdev: *mut bindings::pci_dev) -> u32;
    fn vk_glue_ids(pdev: *mut bindings::pci_dev) -> u32;
    fn vk_glue_command(pdev: *mut bindings::pci_dev) -> u16;
    fn vk_glue_driver(pdev: *mut bindings::pci_dev, buf: *mut c_char, len: usize);
}

const PCI_COMMAND_MEMORY: u16 = 1 << 1;
const PCI_COMMAND_MASTER: u16 = 1 << 2;

/// Call `f` for each kept device.
fn for_each_kept(mut f: impl FnMut(*mut bindings::pci_dev) -> core::fmt::Result) -> core::fmt::Result {
    let mut p = core::ptr::null_mut();
    loop {
        // SAFETY: `p` is NULL or the device the previous call returned,
        // whose reference this call drops; the result is referenced.
        p = unsafe { vk_glue_next(p) };
        if p.is_null() {
            return Ok(());
        }
        // SAFETY: `p` is a referenced PCI device.
        if unsafe { vk_glue_kept(p) } {
            if let Err(e) = f(p) {
                // SAFETY: drops the reference the walk holds.
                unsafe { vk_glue_put(p) };
                return Err(e);
            }
        }
    }
}

fn bdf(f: &mut core::fmt::Formatter<'_>, p: *mut bindings::pci_dev) -> core::fmt::Result {
    // SAFETY: `p` is a referenced PCI device.
    let b = unsafe { vk_glue_bdf(p) };
    write!(f, "{:04x}:{:02x}:{:02x}.{}", b >> 16, (b >> 8) & 0xff, (b >> 3) & 0x1f, b & 7)
}

fn show_devices(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    for_each_kept(|p| {
        bdf(f, p)?;
        let mut name = [0u8; 64];
        // SAFETY: `p` is a referenced PCI device; `name` is writable for
        // its length and the glue NUL-terminates what it copies.
        let (ids, cmd) = unsafe {
            vk_glue_driver(p, name.as_mut_ptr().cast(), name.len());
            (vk_glue_ids(p), vk_glue_command(p))
        };
        let drv = CStr::from_bytes_until_nul(&name).map(|c| c.to_str().unwrap_or("?")).unwrap_or("?");
        writeln!(
            f,
            " {:04x}:{:04x} driver={} bus_master={} memory={}",
            ids >> 16,
            ids & 0xffff,
            drv,
            u8::from(cmd & PCI_COMMAND_MASTER != 0),
            u8::from(cmd & PCI_COMMAND_MEMORY != 0)
        )
    })
}

fn show_cmdline(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    let mut first = true;
    for_each_kept(|p| {
        f.write_str(if first { "pci_keep=" } else { ";" })?;
        first = false;
        bdf(f, p)
    })?;
    if !first {
        writeln!(f)?;
    }
    Ok(())
}

/// Fields drop in declaration order: the files before their directory.
#[pin_data]
struct VfioKeep {
    #[pin]
    _devices: debugfs::File<()>,
    #[pin]
    _cmdline: debugfs::File<()>,
    _dir: debugfs::Dir,
}

impl kernel::InPlaceModule for VfioKeep {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        let dir = debugfs::Dir::new(c_str!("vfio_keep"));
        try_pin_init!(Self {
            _devices <- dir.read_callback_file(c_str!("devices"), (), &show_devices),
            _cmdline <- dir.read_callback_file(c_str!("cmdline"), (), &show_cmdline),
            _dir: dir,
        })
    }
}
