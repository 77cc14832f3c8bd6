//! The ioctl ABI of `/dev/kram`, `/dev/prezero` and `/dev/iommu-preserve`,
//! defined once.
//!
//! `kram.rs`, `prezero.rs` and `iommu_preserve.rs` (with `ioc.rs`) are compiled into the kernel
//! modules as they are (included by path, like kram-format's `format.rs`)
//! and into liveup as this crate. The C headers for other userspace
//! (`kram/include/uapi/kram.h`, `prezero/include/uapi/prezero.h`,
//! `iommu-preserve/include/uapi/iommu_preserve.h`) are
//! checked against these definitions field by field by
//! `tests/c_headers.rs`, which compiles static assertions with the C
//! compiler; the kernel modules check the request numbers against the
//! kernel's own `_IOR`/`_IOW`/`_IOWR` at compile time.
#![no_std]
#![forbid(unsafe_code)]

pub mod ioc;
pub mod iommu_preserve;
pub mod kram;
pub mod prezero;
