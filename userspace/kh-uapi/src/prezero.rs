// SPDX-License-Identifier: GPL-2.0
//! `/dev/prezero`: the ioctl ABI, version 1.
//!
//! The one definition: the `prezero` module includes this file, liveup uses
//! it through the `kh-uapi` crate, and `prezero/include/uapi/prezero.h` is
//! checked against it (`tests/c_headers.rs`). Plain integers, no padding.

use super::ioc;
use core::mem::size_of;

/// `Req::flags`: allocate, zero and pool new pages (4 KiB, mTHP or 2 MiB
/// THP) instead of marking free hugetlb pages.
pub const ZERO_POOL: u32 = 1 << 0;
/// `Req::count` upper bound.
pub const MAX_COUNT: u64 = 1 << 20;

/// `struct prezero_req`: the argument of ZERO.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Req {
    /// In: page size in bytes: 2 MiB or 1 GiB (hugetlb); 4 KiB, 16 KiB ..
    /// 1 MiB (mTHP) or 2 MiB (pool).
    pub size: u64,
    /// In: NUMA node.
    pub node: i32,
    /// In: 0 or `ZERO_POOL`.
    pub flags: u32,
    /// In: zero up to this many pages (1..=`MAX_COUNT`).
    pub count: u64,
    /// Out: pages zeroed and marked or pooled.
    pub done: u64,
    /// Out: time spent zeroing, in nanoseconds.
    pub ns: u64,
}

const _: () = assert!(size_of::<Req>() == 40);

/// `PREZERO_IOC_MAGIC`.
pub const IOC_MAGIC: u32 = 0xb7;
pub const IOC_ZERO: u32 = ioc::iowr::<Req>(IOC_MAGIC, 1);
