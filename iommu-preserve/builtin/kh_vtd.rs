// SPDX-License-Identifier: GPL-2.0

//! The next kernel's check of a preserved VT-d record and its page tables
//! (`intel_iommu_adopt=`, patches/0003), built into the kernel: the IOMMU is
//! adopted at `rootfs_initcall`, before any module exists.
//!
//! The checks are kram-format's (`vtd/record.rs`'s `Record::check`,
//! `vtd/verify.rs`), the code the iommu_preserve module and the host tests
//! use, so the validation and walk are written once. tools/build-kernel.sh
//! copies this file and those (`kh_vtd/`) into drivers/iommu/intel/; their
//! contents are part of the kernel's cache key.
//!
//! C calls two functions, each returning NULL when the record passes or
//! the one line that says why not; the second also gets the spans the
//! device may reach, from the command line. What only C can say (mapping a
//! physical page, whether a range is System RAM) it gives back through
//! `kh_vtd_map`, `kh_vtd_unmap` and `kh_vtd_owned` (patches/0003,
//! drivers/iommu/intel/iommu.c): direct calls both ways, no function
//! pointers.
//!
//! Locking: none; called once, single-threaded, from `init_dmars()`.

use core::ffi::{c_char, c_void};

#[path = "kh_vtd/crc.rs"]
#[allow(dead_code, unreachable_pub)]
mod crc;
/// What `vtd/record.rs` imports as `crate::format::crc32c`.
mod format {
    pub(crate) use super::crc::crc32c;
}
#[path = "kh_vtd/vtd.rs"]
#[allow(dead_code, unreachable_pub)]
mod vtd;

extern "C" {
    fn kh_vtd_map(pa: u64) -> *const u64;
    fn kh_vtd_unmap(va: *const u64);
    fn kh_vtd_owned(pa: u64, size: u64) -> bool;
}

/// A 4 KiB table page mapped by `kh_vtd_map`, unmapped on drop.
struct Mapped(*const u64);

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `kh_vtd_map` and is unmapped once.
        unsafe { kh_vtd_unmap(self.0) };
    }
}

struct Kernel;

impl vtd::Phys for Kernel {
    type Table = Mapped;
    fn map(&mut self, table: u64) -> Option<Mapped> {
        // SAFETY: maps one page for reading (memremap); NULL on failure.
        let va = unsafe { kh_vtd_map(table) };
        (!va.is_null()).then_some(Mapped(va))
    }
    fn entry(&self, t: &Mapped, idx: usize) -> u64 {
        if idx >= vtd::TABLE_ENTRIES {
            return 0;
        }
        // SAFETY: `t` maps 4096 bytes (512 entries) and `idx` < 512; a
        // volatile read takes each entry once, as READ_ONCE() did.
        unsafe { t.0.add(idx).read_volatile() }
    }
    fn owned(&mut self, addr: u64, size: u64) -> bool {
        // SAFETY: a query of the resource tree, no memory touched.
        unsafe { kh_vtd_owned(addr, size) }
    }
}

/// The record page at `rec`, `len` bytes long, as a slice.
///
/// # Safety
///
/// `rec` maps `len` readable bytes for the duration of the call.
unsafe fn record<'a>(rec: *const c_void, len: usize) -> &'a [u8] {
    // SAFETY: the caller's promise; the bytes are only read.
    unsafe { core::slice::from_raw_parts(rec.cast::<u8>(), len) }
}

fn record_why(e: vtd::Error) -> *const c_char {
    let why = match e {
        vtd::Error::BadMagic => c"bad magic",
        vtd::Error::BadVersion(_) => c"unknown version",
        vtd::Error::BadChecksum => c"bad checksum",
        vtd::Error::Reserved => c"reserved fields set",
        _ => c"bad length",
    };
    why.as_ptr()
}

/// The record's own checks: magic, version, length, CRC32C, reserved
/// bytes. NULL if they pass, else why not.
///
/// # Safety
///
/// `rec` maps `len` readable bytes (the record page).
#[no_mangle]
pub unsafe extern "C" fn kh_vtd_record_check(rec: *const c_void, len: usize) -> *const c_char {
    // SAFETY: the caller's promise.
    match vtd::Record::check(unsafe { record(rec, len) }) {
        Ok(Some(_)) => core::ptr::null(),
        Ok(None) => c"bad magic".as_ptr(),
        Err(e) => record_why(e),
    }
}

/// The record's page tables (`vtd/verify.rs`), after
/// `kh_vtd_record_check` passed: every leaf inside `areas`, the spans
/// after the record's address on the command line
/// (`intel_iommu_adopt=0xRECORD,0xSTART+0xLEN,...`). NULL if they may be
/// adopted, else why not.
///
/// # Safety
///
/// `rec` maps `len` readable bytes (the record page); `areas` is a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn kh_vtd_tables_check(
    rec: *const c_void,
    len: usize,
    areas: *const c_char,
) -> *const c_char {
    // SAFETY: the caller's promise.
    let text = unsafe { core::ffi::CStr::from_ptr(areas) };
    let spans = match text.to_str().map(vtd::Spans::parse) {
        Ok(Ok(s)) => s,
        Ok(Err(vtd::SpanError::Empty)) => vtd::Spans::default(),
        _ => return c"the device's areas on the command line do not parse (START+LEN,... page-aligned, at most 8, none overlapping)".as_ptr(),
    };
    // SAFETY: the caller's promise.
    let b = unsafe { record(rec, len) };
    let h = match vtd::Record::check(b) {
        Ok(Some(h)) => h,
        Ok(None) => return c"bad magic".as_ptr(),
        Err(e) => return record_why(e),
    };
    match vtd::verify(&mut Kernel, b, h.top, h.levels, h.npages, &spans) {
        Ok(()) => core::ptr::null(),
        Err(r) => r.why().as_ptr(),
    }
}
