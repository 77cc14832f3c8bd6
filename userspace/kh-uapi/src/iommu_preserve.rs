// SPDX-License-Identifier: GPL-2.0
//! `/dev/iommu-preserve`: the ioctl ABI, version 1.
//!
//! The one definition: the `iommu_preserve` module includes this file,
//! liveup uses it through the `kh-uapi` crate, and
//! `iommu-preserve/include/uapi/iommu_preserve.h` is checked against it
//! (`tests/c_headers.rs`). Plain integers, no padding.
//!
//! Each operation is one ioctl on the open device (CAP_SYS_ADMIN); they are
//! serialised by the module. What each does is in
//! Documentation/iommu-preserve.rst.

use super::ioc;
use core::mem::size_of;

/// `struct iopr_dev`: a PCI device.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dev {
    pub seg: u16,
    pub bus: u8,
    pub devfn: u8,
}

const _: () = assert!(size_of::<Dev>() == 4);

/// Spans in a FREEZE at most (kram-format's `vtd::MAX_SPANS`).
pub const MAX_SPANS: usize = 8;

/// `struct iopr_span`: physical memory the device may reach, page-aligned.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub len: u64,
}

const _: () = assert!(size_of::<Span>() == 16);

/// `struct iopr_freeze`: the argument of FREEZE: the kept device and the
/// memory it may reach (its KRAM areas' fixed runs). Every page its tables
/// map must lie in `spans[..nspans]`, or the freeze is refused; the next
/// kernel is told the same spans on its command line.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Freeze {
    pub dev: Dev,
    /// 1 to `MAX_SPANS`.
    pub nspans: u32,
    pub spans: [Span; MAX_SPANS],
}

const _: () = assert!(size_of::<Freeze>() == 8 + 16 * MAX_SPANS);

/// `Status::state`: no record in KRAM.
pub const STATE_NONE: u32 = 0;
/// Frozen in this kernel: the IOMMU translates through the KRAM tables
/// until the kexec (THAW undoes it).
pub const STATE_FROZEN: u32 = 1;
/// Adopted in place by this kernel: the device still translates through
/// the preserved tables (RELEASE refused until it is attached anew).
pub const STATE_ADOPTED: u32 = 2;
/// Not adopted: the device is blocked (no context entry).
pub const STATE_BLOCKED: u32 = 3;
/// The device was attached to a new domain: RELEASE frees the tables.
pub const STATE_ATTACHED: u32 = 4;
/// The record failed its checks: nothing adopted, DISCARD drops it.
pub const STATE_REFUSED: u32 = 5;

/// `struct iopr_status`: the answer of STATUS.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// One of the `STATE_*` values.
    pub state: u32,
    /// The recorded device (STATE_NONE and STATE_REFUSED: 0).
    pub seg: u16,
    pub bus: u8,
    pub devfn: u8,
    /// Its domain id and page-table levels.
    pub did: u16,
    pub levels: u8,
    pub pad: u8,
    /// Page-table pages copied into KRAM.
    pub npages: u32,
    /// Physical address of the record page (what the next kernel's
    /// `intel_iommu_adopt=` names); 0 without KRAM area.
    pub record: u64,
    /// The root table the IOMMU uses now.
    pub root: u64,
}

const _: () = assert!(size_of::<Status>() == 32);

/// `IOPR_IOC_MAGIC` (free in the kernel's ioctl-number.rst of 7.3; 0xBC is KRAM's).
pub const IOC_MAGIC: u32 = 0xBD;
/// STATUS: where the preserved record and its device stand.
pub const IOC_STATUS: u32 = ioc::ior::<Status>(IOC_MAGIC, 0);
/// FREEZE: copy the kept device's tables into KRAM, record them and switch
/// its IOMMU to the copies (the VMM must be stopped); refused if a page
/// they map lies outside the spans given.
pub const IOC_FREEZE: u32 = ioc::iow::<Freeze>(IOC_MAGIC, 1);
/// THAW: in the kernel that froze, back to its own root table, tables freed.
pub const IOC_THAW: u32 = ioc::ioc(ioc::NONE, IOC_MAGIC, 2, 0);
/// RELEASE: free the tables once nothing translates through them.
pub const IOC_RELEASE: u32 = ioc::ioc(ioc::NONE, IOC_MAGIC, 3, 0);
/// DISCARD: drop a record (refused or not) with its areas; refused while
/// an IOMMU reads a table in them.
pub const IOC_DISCARD: u32 = ioc::ioc(ioc::NONE, IOC_MAGIC, 4, 0);
