// SPDX-License-Identifier: GPL-2.0
//! `/dev/kram` (and `/dev/kram-pages`): the ioctl ABI, version 1.
//!
//! The one definition: the `kram` module includes this file, liveup uses it
//! through the `kh-uapi` crate, and `kram/include/uapi/kram.h` is checked
//! against it (`tests/c_headers.rs`). Documentation/kram.rst describes each
//! call and its errors. Every struct is plain integers with no padding, so
//! every bit pattern is a valid value; the size assertions below keep it so.

use super::ioc;
use core::mem::size_of;

/// Bytes of an area name, NUL included.
pub const NAME_LEN: usize = 32;
/// Areas a region holds.
pub const MAX_AREAS: u32 = 32;
/// `Format::confirm` must hold this ("FORMAT!!" little-endian).
pub const FORMAT_CONFIRM: u64 = u64::from_le_bytes(*b"FORMAT!!");
/// `Status::state`: the region is in use.
pub const STATE_READY: u32 = 0;
/// `Status::state`: the preserved metadata was refused (see `error`).
pub const STATE_REFUSED: u32 = 1;

/// `KRAM_IOC_STATUS` result: `struct kram_status`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Status {
    /// Physical address of the region.
    pub base: u64,
    /// Bytes.
    pub size: u64,
    pub pages: u64,
    pub meta_pages: u64,
    pub used_pages: u64,
    pub free_pages: u64,
    /// Metadata generation.
    pub generation: u64,
    /// `STATE_READY` or `STATE_REFUSED`.
    pub state: u32,
    /// Positive errno of the refusal.
    pub error: u32,
    pub areas: u32,
    pub max_areas: u32,
}

/// `struct kram_area`: the argument of CREATE, DELETE, LOOKUP and AREA_AT.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    /// NUL-terminated, `[A-Za-z0-9._-]`.
    pub name: [u8; NAME_LEN],
    /// Pages in the fixed run.
    pub npages: u64,
    /// First fixed page from the region's start: the mmap offset.
    pub offset: u64,
    /// 1..=`MAX_AREAS`.
    pub id: u32,
    /// 0.
    pub flags: u32,
}

impl Default for Area {
    fn default() -> Self {
        Area {
            name: [0; NAME_LEN],
            npages: 0,
            offset: 0,
            id: 0,
            flags: 0,
        }
    }
}

/// `struct kram_page`: the argument of ALLOC and FREE.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Owning area.
    pub id: u32,
    pub pad: u32,
    /// Page offset from the region's start, in bytes.
    pub offset: u64,
}

/// `struct kram_format`: the argument of FORMAT.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// `FORMAT_CONFIRM`.
    pub confirm: u64,
}

const _: () = assert!(size_of::<Status>() == 72);
const _: () = assert!(size_of::<Area>() == NAME_LEN + 24);
const _: () = assert!(size_of::<Page>() == 16);
const _: () = assert!(size_of::<Format>() == 8);

/// `KRAM_IOC_MAGIC`.
pub const IOC_MAGIC: u32 = 0xBC;
pub const IOC_STATUS: u32 = ioc::ior::<Status>(IOC_MAGIC, 0);
/// EBUSY while an area is mapped.
pub const IOC_FORMAT: u32 = ioc::iow::<Format>(IOC_MAGIC, 1);
pub const IOC_CREATE: u32 = ioc::iowr::<Area>(IOC_MAGIC, 2);
/// EBUSY while the area is mapped.
pub const IOC_DELETE: u32 = ioc::iow::<Area>(IOC_MAGIC, 3);
pub const IOC_LOOKUP: u32 = ioc::iowr::<Area>(IOC_MAGIC, 4);
pub const IOC_AREA_AT: u32 = ioc::iowr::<Area>(IOC_MAGIC, 5);
pub const IOC_ALLOC: u32 = ioc::iowr::<Page>(IOC_MAGIC, 6);
pub const IOC_FREE: u32 = ioc::iow::<Page>(IOC_MAGIC, 7);
