// SPDX-License-Identifier: GPL-2.0

//! The device whose translation is kept: its name for the log and a
//! reference to it.

use crate::glue::*;
use core::ptr::NonNull;
use kernel::bindings;
use kernel::prelude::*;

/// `ssss:bb:dd.f` for the log.
pub(crate) struct Bdf(pub(crate) u16, pub(crate) u8, pub(crate) u8);

impl kernel::fmt::Display for Bdf {
    fn fmt(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{}", self.0, self.1, self.2 >> 3, self.2 & 7)
    }
}

/// A referenced PCI device.
pub(crate) struct Dev(pub(crate) NonNull<bindings::device>);

/// Root table addresses of a device's IOMMU (see `Dev::roots`).
pub(crate) struct Roots {
    pub(crate) hw: u64,
    pub(crate) own: u64,
}

impl Dev {
    pub(crate) fn get(bdf: &Bdf) -> Option<Dev> {
        // SAFETY: a lookup by numbers; the result is referenced or NULL.
        NonNull::new(unsafe { iopr_glue_get_dev(bdf.0.into(), bdf.1.into(), bdf.2.into()) }).map(Dev)
    }

    pub(crate) fn kept(&self) -> bool {
        // SAFETY: `self.0` is a live, referenced PCI device.
        unsafe { iopr_glue_is_kept(self.0.as_ptr()) }
    }

    /// The device's IOMMU's root tables: the one the hardware uses and the
    /// one the kernel keeps up to date (they differ only between a freeze
    /// and the kexec); with `new` not 0, the hardware is switched to `new`
    /// afterwards (translation stays on).
    pub(crate) fn roots(&self, new: u64) -> Result<Roots> {
        let (mut hw, mut own) = (0u64, 0u64);
        // SAFETY: live device; valid out-pointers.
        let r = unsafe { iopr_glue_switch_root(self.0.as_ptr(), new, &mut hw, &mut own) };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        Ok(Roots { hw, own })
    }

    /// Have the kernel move the adopted root and context table of the
    /// device's IOMMU to pages of its own (translation stays on).
    pub(crate) fn release_adopted(&self) -> Result {
        // SAFETY: `self.0` is a live, referenced PCI device.
        let r = unsafe { iopr_glue_release_adopted(self.0.as_ptr()) };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        Ok(())
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SAFETY: drops the reference `get` took.
        unsafe { iopr_glue_put_dev(self.0.as_ptr()) };
    }
}

