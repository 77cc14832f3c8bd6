//! The codec layer: one encoder/decoder pair per relay thread over five
//! codecs that all emit standard formats, so that one host may compress on
//! QAT and the other decode in software, or the reverse.
//!
//! | codec | wire format                          | decoders                 |
//! |-------|--------------------------------------|--------------------------|
//! | none  | raw bytes                            | copy                     |
//! | gzip  | gzip member (RFC 1952)               | QATzip or flate2         |
//! | qat   | gzip member from QATzip (extra field)| QATzip or flate2         |
//! | lz4   | LZ4 frame                            | lz4_flex (any LZ4 frame) |
//! | zstd  | Zstandard frame                      | libzstd                  |

use qatzip_sys::{QatZip, Session, SessionConfig};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::sync::Arc;

/// What a host compresses with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CodecKind {
    None,
    Gzip,
    Qat,
    Lz4,
    Zstd,
}

impl CodecKind {
    pub const ALL: [CodecKind; 5] = [
        CodecKind::None,
        CodecKind::Gzip,
        CodecKind::Qat,
        CodecKind::Lz4,
        CodecKind::Zstd,
    ];

    /// The format on the wire.
    pub fn format(self) -> Format {
        match self {
            CodecKind::None => Format::Raw,
            CodecKind::Gzip | CodecKind::Qat => Format::Gzip,
            CodecKind::Lz4 => Format::Lz4,
            CodecKind::Zstd => Format::Zstd,
        }
    }

    /// The level used when none is given.
    pub fn default_level(self) -> u32 {
        match self {
            CodecKind::None | CodecKind::Lz4 => 0,
            CodecKind::Gzip | CodecKind::Qat | CodecKind::Zstd => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CodecKind::None => "none",
            CodecKind::Gzip => "gzip",
            CodecKind::Qat => "qat",
            CodecKind::Lz4 => "lz4",
            CodecKind::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for CodecKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The format byte of a relay chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Format {
    Raw = 0,
    Gzip = 1,
    Lz4 = 2,
    Zstd = 3,
}

impl TryFrom<u8> for Format {
    type Error = CodecError;
    fn try_from(b: u8) -> Result<Self, CodecError> {
        Ok(match b {
            0 => Format::Raw,
            1 => Format::Gzip,
            2 => Format::Lz4,
            3 => Format::Zstd,
            _ => return Err(CodecError::UnknownFormat(b)),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown chunk format {0}")]
    UnknownFormat(u8),
    #[error("codec qat: {0}")]
    Qat(#[from] qatzip_sys::QzError),
    #[error("codec qat needs libqatzip, which is not loaded")]
    NoQatLib,
    #[error("{format:?} decode: {cause}")]
    Decode {
        format: Format,
        cause: std::io::Error,
    },
    #[error("{0:?} encode: {1}")]
    Encode(Format, std::io::Error),
    #[error("{format:?} chunk decodes to {got} bytes, header says {expected}")]
    Length {
        format: Format,
        got: usize,
        expected: usize,
    },
}

/// Compresses chunks with one codec. Not shared between threads.
pub struct Encoder {
    kind: CodecKind,
    level: u32,
    qat: Option<Session>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Encoder {
    /// `qat` must be given for [`CodecKind::Qat`]; a session opened on it
    /// runs on QAT when the host has it, in QATzip's software otherwise.
    pub fn new(kind: CodecKind, level: u32, qat: Option<&Arc<QatZip>>) -> Result<Self, CodecError> {
        let mut e = Encoder {
            kind,
            level,
            qat: None,
            zstd: None,
        };
        match kind {
            CodecKind::Qat => {
                let lib = qat.ok_or(CodecError::NoQatLib)?;
                e.qat = Some(Session::new(
                    lib,
                    SessionConfig {
                        level: level.clamp(1, 9),
                        ..Default::default()
                    },
                )?);
            }
            CodecKind::Zstd => {
                let lvl = level.clamp(1, 19) as i32;
                e.zstd = Some(
                    zstd::bulk::Compressor::new(lvl)
                        .map_err(|err| CodecError::Encode(Format::Zstd, err))?,
                );
            }
            _ => {}
        }
        Ok(e)
    }

    pub fn kind(&self) -> CodecKind {
        self.kind
    }

    /// True when QAT hardware (not the software fallback) does the work.
    pub fn on_hardware(&self) -> bool {
        self.qat.as_ref().is_some_and(Session::hardware)
    }

    /// Compress `src` into `dst` (cleared first); returns the format used.
    pub fn compress(&mut self, src: &[u8], dst: &mut Vec<u8>) -> Result<Format, CodecError> {
        dst.clear();
        let fmt = self.kind.format();
        match self.kind {
            CodecKind::None => dst.extend_from_slice(src),
            CodecKind::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(
                    std::mem::take(dst),
                    flate2::Compression::new(self.level.clamp(1, 9)),
                );
                enc.write_all(src).map_err(|e| CodecError::Encode(fmt, e))?;
                *dst = enc.finish().map_err(|e| CodecError::Encode(fmt, e))?;
            }
            CodecKind::Qat => {
                let s = self.qat.as_mut().ok_or(CodecError::NoQatLib)?;
                s.compress(src, dst)?;
            }
            CodecKind::Lz4 => {
                let mut enc = lz4_flex::frame::FrameEncoder::new(std::mem::take(dst));
                enc.write_all(src).map_err(|e| CodecError::Encode(fmt, e))?;
                *dst = enc
                    .finish()
                    .map_err(|e| CodecError::Encode(fmt, std::io::Error::other(e)))?;
            }
            CodecKind::Zstd => {
                let z = self.zstd.as_mut().ok_or(CodecError::UnknownFormat(3))?;
                let bound = zstd::zstd_safe::compress_bound(src.len());
                dst.reserve(bound);
                z.compress_to_buffer(src, dst)
                    .map_err(|e| CodecError::Encode(fmt, e))?;
            }
        }
        Ok(fmt)
    }
}

/// Decodes chunks of any format. Gzip goes through QATzip when a session
/// was given (hardware, or its software fallback), through flate2 otherwise.
pub struct Decoder {
    qat: Option<Session>,
    zstd: zstd::bulk::Decompressor<'static>,
}

impl Decoder {
    pub fn new(qat: Option<&Arc<QatZip>>) -> Result<Self, CodecError> {
        let qat = match qat {
            Some(lib) => Some(Session::new(lib, SessionConfig::default())?),
            None => None,
        };
        let zstd = zstd::bulk::Decompressor::new().map_err(|cause| CodecError::Decode {
            format: Format::Zstd,
            cause,
        })?;
        Ok(Decoder { qat, zstd })
    }

    /// True when gzip chunks are decoded by QATzip.
    pub fn uses_qatzip(&self) -> bool {
        self.qat.is_some()
    }

    /// Decode `src` of `format`, which must expand to exactly `raw_len`
    /// bytes, into `dst` (cleared first).
    pub fn decompress(
        &mut self,
        format: Format,
        src: &[u8],
        raw_len: usize,
        dst: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        dst.clear();
        let derr = |cause| CodecError::Decode { format, cause };
        match format {
            Format::Raw => dst.extend_from_slice(src),
            Format::Gzip => {
                if let Some(s) = self.qat.as_mut() {
                    s.decompress(src, raw_len, dst)?;
                } else {
                    read_bounded(flate2::read::MultiGzDecoder::new(src), raw_len, dst)
                        .map_err(derr)?;
                }
            }
            Format::Lz4 => {
                read_bounded(lz4_flex::frame::FrameDecoder::new(src), raw_len, dst)
                    .map_err(derr)?;
            }
            Format::Zstd => {
                dst.reserve(raw_len + 1);
                // Capacity raw_len + 1: a frame that expands further fails.
                let mut buf = Vec::with_capacity(raw_len + 1);
                self.zstd
                    .decompress_to_buffer(src, &mut buf)
                    .map_err(derr)?;
                *dst = buf;
            }
        }
        if dst.len() != raw_len {
            return Err(CodecError::Length {
                format,
                got: dst.len(),
                expected: raw_len,
            });
        }
        Ok(())
    }
}

/// Read at most `limit + 1` bytes: enough to notice a chunk that expands
/// beyond what its header promised, without letting it blow up memory.
fn read_bounded(r: impl Read, limit: usize, dst: &mut Vec<u8>) -> std::io::Result<()> {
    dst.reserve(limit + 1);
    r.take(limit as u64 + 1).read_to_end(dst)?;
    Ok(())
}

// Guest-memory-like test data, shared with tests/codec_interop.rs.
#[cfg(test)]
#[path = "../../tests/support/guest_like.rs"]
mod guest_like;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub use super::guest_like::sample;

    #[test]
    fn every_software_codec_roundtrips_and_compresses() {
        let data = sample(1 << 20, 7);
        let mut dec = Decoder::new(None).unwrap();
        for kind in CodecKind::ALL {
            if kind == CodecKind::Qat {
                assert!(matches!(
                    Encoder::new(kind, 1, None),
                    Err(CodecError::NoQatLib)
                ));
                continue;
            }
            let mut enc = Encoder::new(kind, kind.default_level(), None).unwrap();
            let mut z = Vec::new();
            let fmt = enc.compress(&data, &mut z).unwrap();
            assert_eq!(fmt, kind.format());
            if kind != CodecKind::None {
                assert!(z.len() * 2 < data.len(), "{kind}: {} bytes", z.len());
            }
            let mut back = Vec::new();
            dec.decompress(fmt, &z, data.len(), &mut back).unwrap();
            assert!(back == data, "{kind} roundtrip");
            // Empty input works too.
            enc.compress(&[], &mut z).unwrap();
            dec.decompress(fmt, &z, 0, &mut back).unwrap();
            assert!(back.is_empty());
        }
    }

    #[test]
    fn formats_are_the_standard_ones() {
        let data = sample(10_000, 3);
        let mut z = Vec::new();
        Encoder::new(CodecKind::Gzip, 6, None)
            .unwrap()
            .compress(&data, &mut z)
            .unwrap();
        assert_eq!(&z[..3], &[0x1f, 0x8b, 8], "gzip, deflate");
        Encoder::new(CodecKind::Lz4, 0, None)
            .unwrap()
            .compress(&data, &mut z)
            .unwrap();
        assert_eq!(&z[..4], &[0x04, 0x22, 0x4d, 0x18], "LZ4 frame magic");
        Encoder::new(CodecKind::Zstd, 3, None)
            .unwrap()
            .compress(&data, &mut z)
            .unwrap();
        assert_eq!(&z[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd frame magic");
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), data);
    }

    #[test]
    fn wrong_length_and_corruption_are_errors() {
        let data = sample(200_000, 11);
        let mut dec = Decoder::new(None).unwrap();
        for kind in [CodecKind::Gzip, CodecKind::Lz4, CodecKind::Zstd] {
            let mut z = Vec::new();
            let fmt = Encoder::new(kind, 1, None)
                .unwrap()
                .compress(&data, &mut z)
                .unwrap();
            let mut out = Vec::new();
            assert!(
                dec.decompress(fmt, &z, data.len() - 1, &mut out).is_err(),
                "{kind}: longer than promised"
            );
            assert!(
                dec.decompress(fmt, &z, data.len() + 1, &mut out).is_err(),
                "{kind}: shorter than promised"
            );
            assert!(
                dec.decompress(fmt, &z[..z.len() / 2], data.len(), &mut out)
                    .is_err(),
                "{kind}: truncated"
            );
        }
        assert!(matches!(
            Format::try_from(9),
            Err(CodecError::UnknownFormat(9))
        ));
    }
}
