//! Bindings to Intel QATzip's C API, loaded at run time.
//!
//! Nothing here links against libqatzip: [`QatZip::load`] opens the shared
//! library with `dlopen` and resolves the handful of entry points liveup
//! uses, so the crate builds, runs and tests on hosts without QAT or QATzip.
//! [`Session`] wraps one `QzSession_T` (one per thread: QATzip sessions are
//! not shareable) and tears it down on drop. [`devices`] lists QAT PCI
//! functions from sysfs.
//!
//! The types mirror `qatzip.h` of QATzip 1.x (API 2.x), which keeps the
//! layout of `QzSession_T` and `QzSessionParams_T` stable.

pub mod chroot_test;
mod sysfs;

pub use sysfs::{devices, devices_in, QatDevice};

use std::ffi::{c_int, c_uchar, c_uint, c_ulong, c_void};
use std::path::Path;
use std::sync::Arc;

// Status codes (qatzip.h).
pub const QZ_OK: c_int = 0;
pub const QZ_DUPLICATE: c_int = 1;
pub const QZ_FORCE_SW: c_int = 2;
pub const QZ_PARAMS: c_int = -1;
pub const QZ_FAIL: c_int = -2;
pub const QZ_BUF_ERROR: c_int = -3;
pub const QZ_DATA_ERROR: c_int = -4;
pub const QZ_TIMEOUT: c_int = -5;
pub const QZ_INTEG: c_int = -100;
pub const QZ_NO_HW: c_int = 11;
pub const QZ_NO_MDRV: c_int = 12;
pub const QZ_NO_INST_ATTACH: c_int = 13;
pub const QZ_LOW_MEM: c_int = 14;
pub const QZ_LOW_DEST_MEM: c_int = 15;
pub const QZ_UNSUPPORTED_FMT: c_int = 16;
pub const QZ_NONE: c_int = 100;
pub const QZ_NOSW_NO_HW: c_int = -101;
pub const QZ_NOSW_NO_MDRV: c_int = -102;
pub const QZ_NOSW_NO_INST_ATTACH: c_int = -103;
pub const QZ_NOSW_LOW_MEM: c_int = -104;
pub const QZ_NO_SW_AVAIL: c_int = -105;
pub const QZ_NOSW_UNSUPPORTED_FMT: c_int = -116;
pub const QZ_POST_PROCESS_ERROR: c_int = -117;
pub const QZ_METADATA_OVERFLOW: c_int = -118;
pub const QZ_OUT_OF_RANGE: c_int = -119;
pub const QZ_NOT_SUPPORTED: c_int = -200;

/// `comp_algorithm` for deflate.
pub const QZ_DEFLATE: c_uchar = 8;

/// `QzDirection_T`.
pub const QZ_DIR_COMPRESS: c_uint = 0;
pub const QZ_DIR_DECOMPRESS: c_uint = 1;
pub const QZ_DIR_BOTH: c_uint = 2;

/// `QzDataFormat_T`.
pub const QZ_DEFLATE_4B: c_uint = 0;
pub const QZ_DEFLATE_GZIP: c_uint = 1;
pub const QZ_DEFLATE_GZIP_EXT: c_uint = 2;
pub const QZ_DEFLATE_RAW: c_uint = 3;

/// `QzHuffmanHdr_T`.
pub const QZ_DYNAMIC_HDR: c_uint = 0;
pub const QZ_STATIC_HDR: c_uint = 1;

/// The symbolic name of a QATzip status code.
pub fn status_name(code: c_int) -> &'static str {
    match code {
        QZ_OK => "QZ_OK",
        QZ_DUPLICATE => "QZ_DUPLICATE",
        QZ_FORCE_SW => "QZ_FORCE_SW",
        QZ_PARAMS => "QZ_PARAMS",
        QZ_FAIL => "QZ_FAIL",
        QZ_BUF_ERROR => "QZ_BUF_ERROR",
        QZ_DATA_ERROR => "QZ_DATA_ERROR",
        QZ_TIMEOUT => "QZ_TIMEOUT",
        QZ_INTEG => "QZ_INTEG",
        QZ_NO_HW => "QZ_NO_HW",
        QZ_NO_MDRV => "QZ_NO_MDRV",
        QZ_NO_INST_ATTACH => "QZ_NO_INST_ATTACH",
        QZ_LOW_MEM => "QZ_LOW_MEM",
        QZ_LOW_DEST_MEM => "QZ_LOW_DEST_MEM",
        QZ_UNSUPPORTED_FMT => "QZ_UNSUPPORTED_FMT",
        QZ_NONE => "QZ_NONE",
        QZ_NOSW_NO_HW => "QZ_NOSW_NO_HW",
        QZ_NOSW_NO_MDRV => "QZ_NOSW_NO_MDRV",
        QZ_NOSW_NO_INST_ATTACH => "QZ_NOSW_NO_INST_ATTACH",
        QZ_NOSW_LOW_MEM => "QZ_NOSW_LOW_MEM",
        QZ_NO_SW_AVAIL => "QZ_NO_SW_AVAIL",
        QZ_NOSW_UNSUPPORTED_FMT => "QZ_NOSW_UNSUPPORTED_FMT",
        QZ_POST_PROCESS_ERROR => "QZ_POST_PROCESS_ERROR",
        QZ_METADATA_OVERFLOW => "QZ_METADATA_OVERFLOW",
        QZ_OUT_OF_RANGE => "QZ_OUT_OF_RANGE",
        QZ_NOT_SUPPORTED => "QZ_NOT_SUPPORTED",
        _ => "QZ_?",
    }
}

/// Whether `qzInit`/`qzSetupSession` returned a code that still leaves a
/// usable session: OK, already initialised, or hardware missing but the
/// software fallback enabled.
pub fn status_usable(code: c_int) -> bool {
    matches!(
        code,
        QZ_OK | QZ_DUPLICATE | QZ_FORCE_SW | QZ_NO_HW | QZ_NO_MDRV | QZ_NO_INST_ATTACH | QZ_LOW_MEM
    )
}

/// `QzSession_T`.
#[repr(C)]
#[derive(Debug)]
pub struct QzSessionT {
    pub hw_session_stat: std::ffi::c_long,
    pub thd_sess_stat: c_int,
    pub internal: *mut c_void,
    pub total_in: c_ulong,
    pub total_out: c_ulong,
}

/// `QzSessionParams_T` (without the ERR_INJECTION debug fields).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct QzSessionParamsT {
    pub huffman_hdr: c_uint,
    pub direction: c_uint,
    pub data_fmt: c_uint,
    pub comp_lvl: c_uint,
    pub comp_algorithm: c_uchar,
    pub max_forks: c_uint,
    pub sw_backup: c_uchar,
    pub hw_buff_sz: c_uint,
    pub strm_buff_sz: c_uint,
    pub input_sz_thrshold: c_uint,
    pub req_cnt_thrshold: c_uint,
    pub wait_cnt_thrshold: c_uint,
}

/// Params with slack after them: a library built with ERR_INJECTION has two
/// more pointers in the struct, and `qzGetDefaults` writes all of it.
#[repr(C)]
#[derive(Clone, Copy)]
struct ParamsBuf {
    p: QzSessionParamsT,
    _slack: [u64; 8],
}

type InitFn = unsafe extern "C" fn(*mut QzSessionT, c_uchar) -> c_int;
type SetupFn = unsafe extern "C" fn(*mut QzSessionT, *mut QzSessionParamsT) -> c_int;
type CompressFn = unsafe extern "C" fn(
    *mut QzSessionT,
    *const c_uchar,
    *mut c_uint,
    *mut c_uchar,
    *mut c_uint,
    c_uint,
) -> c_int;
type DecompressFn = unsafe extern "C" fn(
    *mut QzSessionT,
    *const c_uchar,
    *mut c_uint,
    *mut c_uchar,
    *mut c_uint,
) -> c_int;
type SessFn = unsafe extern "C" fn(*mut QzSessionT) -> c_int;
type DefaultsFn = unsafe extern "C" fn(*mut QzSessionParamsT) -> c_int;
type MaxLenFn = unsafe extern "C" fn(c_uint, *mut QzSessionT) -> c_uint;

#[derive(Debug, thiserror::Error)]
pub enum QzError {
    #[error("cannot load QATzip ({name}): {cause}")]
    Load {
        name: String,
        cause: libloading::Error,
    },
    #[error("QATzip library lacks {symbol}: {cause}")]
    Symbol {
        symbol: &'static str,
        cause: libloading::Error,
    },
    #[error("{call} failed: {} ({code})", status_name(*.code))]
    Status { call: &'static str, code: c_int },
    #[error("buffer of {0} bytes is too large for QATzip (32-bit lengths)")]
    TooLarge(usize),
    #[error("qzDecompress produced {got} bytes, expected {expected}")]
    Length { got: usize, expected: usize },
}

/// The loaded library: resolved entry points. Cheap to share via [`Arc`].
pub struct QatZip {
    init: InitFn,
    setup: SetupFn,
    compress: CompressFn,
    decompress: DecompressFn,
    teardown: SessFn,
    close: SessFn,
    defaults: DefaultsFn,
    max_len: MaxLenFn,
    /// Keeps the code the pointers above point into mapped.
    _lib: libloading::Library,
    name: String,
}

impl std::fmt::Debug for QatZip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QatZip").field("name", &self.name).finish()
    }
}

/// Names tried by [`QatZip::load`], most specific first.
pub const LIBRARY_NAMES: &[&str] = &["libqatzip.so.3", "libqatzip.so"];

impl QatZip {
    /// Load libqatzip from the default search path.
    pub fn load() -> Result<Arc<Self>, QzError> {
        let mut last = None;
        for name in LIBRARY_NAMES {
            match Self::load_from(name) {
                Ok(l) => return Ok(l),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(QzError::Status {
            call: "dlopen",
            code: QZ_FAIL,
        }))
    }

    /// Load libqatzip from `name` (a path, or a soname for the search path).
    pub fn load_from(name: impl AsRef<Path>) -> Result<Arc<Self>, QzError> {
        let name = name.as_ref();
        // SAFETY: loading QATzip runs its (trusted, system-installed)
        // constructors; nothing else.
        let lib = unsafe { libloading::Library::new(name) }.map_err(|cause| QzError::Load {
            name: name.display().to_string(),
            cause,
        })?;
        macro_rules! sym {
            ($name:literal, $ty:ty) => {{
                // SAFETY: the symbol's C signature is the one in qatzip.h,
                // mirrored by $ty.
                let s: libloading::Symbol<$ty> =
                    unsafe { lib.get($name) }.map_err(|cause| QzError::Symbol {
                        symbol: std::str::from_utf8(&$name[..$name.len() - 1]).unwrap_or("?"),
                        cause,
                    })?;
                *s
            }};
        }
        Ok(Arc::new(QatZip {
            init: sym!(b"qzInit\0", InitFn),
            setup: sym!(b"qzSetupSession\0", SetupFn),
            compress: sym!(b"qzCompress\0", CompressFn),
            decompress: sym!(b"qzDecompress\0", DecompressFn),
            teardown: sym!(b"qzTeardownSession\0", SessFn),
            close: sym!(b"qzClose\0", SessFn),
            defaults: sym!(b"qzGetDefaults\0", DefaultsFn),
            max_len: sym!(b"qzMaxCompressedLength\0", MaxLenFn),
            _lib: lib,
            name: name.display().to_string(),
        }))
    }

    /// What was loaded.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The library's default session parameters (`qzGetDefaults`).
    pub fn defaults(&self) -> Result<QzSessionParamsT, QzError> {
        let mut buf = ParamsBuf {
            p: QzSessionParamsT::default(),
            _slack: [0; 8],
        };
        // SAFETY: buf is at least as large as the library's struct.
        let rc = unsafe { (self.defaults)(&mut buf.p) };
        if rc != QZ_OK {
            return Err(QzError::Status {
                call: "qzGetDefaults",
                code: rc,
            });
        }
        Ok(buf.p)
    }
}

/// Session options liveup sets; the rest stay at the library's defaults.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// Deflate level 1..=9.
    pub level: u32,
    /// Fall back to software when no QAT instance is usable.
    pub sw_backup: bool,
    /// Output format: [`QZ_DEFLATE_GZIP_EXT`] (gzip members with QATzip's
    /// extra field, readable by any gzip decoder) or [`QZ_DEFLATE_GZIP`].
    pub data_fmt: c_uint,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            level: 1,
            sw_backup: true,
            data_fmt: QZ_DEFLATE_GZIP_EXT,
        }
    }
}

/// One QATzip session (`qzInit` + `qzSetupSession`), closed on drop.
pub struct Session {
    lib: Arc<QatZip>,
    sess: Box<QzSessionT>,
    /// What `qzInit` returned: [`QZ_OK`] with hardware, [`QZ_NO_HW`] etc.
    /// when running on the software fallback.
    pub init_status: c_int,
    /// What `qzSetupSession` returned.
    pub setup_status: c_int,
}

// SAFETY: a QATzip session may move between threads; it must not be used
// from two at once, which &mut self guarantees.
unsafe impl Send for Session {}

impl Session {
    pub fn new(lib: &Arc<QatZip>, cfg: SessionConfig) -> Result<Self, QzError> {
        let mut sess = Box::new(QzSessionT {
            hw_session_stat: 0,
            thd_sess_stat: 0,
            internal: std::ptr::null_mut(),
            total_in: 0,
            total_out: 0,
        });
        // SAFETY: sess is a zeroed QzSession_T that outlives the session
        // (it is boxed and freed only after qzClose in Drop).
        let init_status = unsafe { (lib.init)(&mut *sess, cfg.sw_backup as c_uchar) };
        if !status_usable(init_status) {
            return Err(QzError::Status {
                call: "qzInit",
                code: init_status,
            });
        }
        let mut params = ParamsBuf {
            p: lib.defaults()?,
            _slack: [0; 8],
        };
        params.p.comp_lvl = cfg.level.clamp(1, 9);
        params.p.sw_backup = cfg.sw_backup as c_uchar;
        params.p.data_fmt = cfg.data_fmt;
        params.p.direction = QZ_DIR_BOTH;
        params.p.comp_algorithm = QZ_DEFLATE;
        // SAFETY: as for qzInit; params is a valid, slack-padded struct.
        let setup_status = unsafe { (lib.setup)(&mut *sess, &mut params.p) };
        let s = Session {
            lib: lib.clone(),
            sess,
            init_status,
            setup_status,
        };
        if !status_usable(setup_status) {
            return Err(QzError::Status {
                call: "qzSetupSession",
                code: setup_status,
            });
        }
        Ok(s)
    }

    /// The session's hardware status as QATzip records it
    /// (`hw_session_stat`): [`QZ_OK`] on QAT, [`QZ_NO_HW`] and friends on
    /// the software fallback.
    pub fn hw_status(&self) -> c_int {
        self.sess.hw_session_stat as c_int
    }

    /// True when the session runs on QAT hardware rather than in software.
    pub fn hardware(&self) -> bool {
        self.hw_status() == QZ_OK
    }

    /// Upper bound of the compressed size of `len` input bytes.
    pub fn max_compressed_len(&mut self, len: usize) -> Result<usize, QzError> {
        let l = c_uint::try_from(len).map_err(|_| QzError::TooLarge(len))?;
        // SAFETY: a set-up session.
        let m = unsafe { (self.lib.max_len)(l, &mut *self.sess) };
        if m == 0 && len != 0 {
            return Err(QzError::TooLarge(len));
        }
        Ok(m as usize)
    }

    /// Compress all of `src` (as the last block) and append the result to
    /// `dst`. Returns the number of bytes appended.
    pub fn compress(&mut self, src: &[u8], dst: &mut Vec<u8>) -> Result<usize, QzError> {
        let bound = self.max_compressed_len(src.len())?.max(64);
        let start = dst.len();
        dst.resize(start + bound, 0);
        let mut src_len = c_uint::try_from(src.len()).map_err(|_| QzError::TooLarge(src.len()))?;
        let mut dst_len = c_uint::try_from(bound).map_err(|_| QzError::TooLarge(bound))?;
        // SAFETY: src and dst[start..] are valid for the lengths passed.
        let rc = unsafe {
            (self.lib.compress)(
                &mut *self.sess,
                src.as_ptr(),
                &mut src_len,
                dst[start..].as_mut_ptr(),
                &mut dst_len,
                1,
            )
        };
        if rc != QZ_OK || src_len as usize != src.len() {
            dst.truncate(start);
            return Err(QzError::Status {
                call: "qzCompress",
                code: if rc == QZ_OK { QZ_BUF_ERROR } else { rc },
            });
        }
        dst.truncate(start + dst_len as usize);
        Ok(dst_len as usize)
    }

    /// Decompress `src` (one or more complete gzip members), which must
    /// expand to exactly `expected` bytes; append them to `dst`.
    pub fn decompress(
        &mut self,
        src: &[u8],
        expected: usize,
        dst: &mut Vec<u8>,
    ) -> Result<(), QzError> {
        let start = dst.len();
        // One spare byte to notice output longer than promised.
        dst.resize(start + expected + 1, 0);
        let mut src_len = c_uint::try_from(src.len()).map_err(|_| QzError::TooLarge(src.len()))?;
        let mut dst_len =
            c_uint::try_from(expected + 1).map_err(|_| QzError::TooLarge(expected))?;
        // SAFETY: as in compress.
        let rc = unsafe {
            (self.lib.decompress)(
                &mut *self.sess,
                src.as_ptr(),
                &mut src_len,
                dst[start..].as_mut_ptr(),
                &mut dst_len,
            )
        };
        if rc != QZ_OK {
            dst.truncate(start);
            return Err(QzError::Status {
                call: "qzDecompress",
                code: rc,
            });
        }
        if dst_len as usize != expected || src_len as usize != src.len() {
            dst.truncate(start);
            return Err(QzError::Length {
                got: dst_len as usize,
                expected,
            });
        }
        dst.truncate(start + expected);
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: the session was initialised by qzInit; teardown and close
        // are the documented way to release it.
        unsafe {
            (self.lib.teardown)(&mut *self.sess);
            (self.lib.close)(&mut *self.sess);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_cover_the_header_codes() {
        assert_eq!(status_name(QZ_NO_HW), "QZ_NO_HW");
        assert_eq!(status_name(QZ_NOSW_NO_HW), "QZ_NOSW_NO_HW");
        assert_eq!(status_name(QZ_DATA_ERROR), "QZ_DATA_ERROR");
        assert_eq!(status_name(12345), "QZ_?");
        assert!(status_usable(QZ_NO_HW));
        assert!(!status_usable(QZ_NOSW_NO_HW));
        assert!(!status_usable(QZ_FAIL));
    }

    #[test]
    fn param_layout_matches_the_c_header() {
        // Twelve 4-byte fields, two of them unsigned char padded to 4.
        assert_eq!(std::mem::size_of::<QzSessionParamsT>(), 48);
        assert_eq!(std::mem::offset_of!(QzSessionParamsT, sw_backup), 24);
        assert_eq!(std::mem::size_of::<QzSessionT>(), 40);
    }

    #[test]
    fn a_missing_library_is_a_load_error() {
        let e = QatZip::load_from("/nonexistent/libqatzip.so.3").unwrap_err();
        assert!(matches!(e, QzError::Load { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/libqatzip.so.3"));
    }
}
