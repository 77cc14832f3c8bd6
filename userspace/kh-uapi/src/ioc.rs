// SPDX-License-Identifier: GPL-2.0
//! Linux's ioctl request numbers (include/uapi/asm-generic/ioctl.h, the
//! encoding x86 uses): direction in bits 30-31, argument size in 16-29,
//! type in 8-15, number in 0-7. Evaluated at compile time only: a size
//! that does not fit is a build error, not a runtime one.

/// Neither direction.
pub const NONE: u32 = 0;
/// Userspace writes the argument (`_IOW`).
pub const WRITE: u32 = 1;
/// Userspace reads the argument (`_IOR`).
pub const READ: u32 = 2;

/// `_IOC(dir, ty, nr, size)`.
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    if dir > 3 || ty > 0xff || nr > 0xff || size >= 1 << 14 {
        panic!("ioctl number out of range");
    }
    (dir << 30) | ((size as u32) << 16) | (ty << 8) | nr
}

/// `_IOR(ty, nr, T)`.
pub const fn ior<T>(ty: u32, nr: u32) -> u32 {
    ioc(READ, ty, nr, core::mem::size_of::<T>())
}

/// `_IOW(ty, nr, T)`.
pub const fn iow<T>(ty: u32, nr: u32) -> u32 {
    ioc(WRITE, ty, nr, core::mem::size_of::<T>())
}

/// `_IOWR(ty, nr, T)`.
pub const fn iowr<T>(ty: u32, nr: u32) -> u32 {
    ioc(READ | WRITE, ty, nr, core::mem::size_of::<T>())
}
