//! The layout of the DMA memory, recorded in the memory itself so that a
//! later `attach` (another process, or a kernel after a kexec) finds the
//! ring without being told.
//!
//! ```text
//! 0x0000  Header (128 bytes, CRC-protected, written once by `init`)
//! 0x0080  Progress (64 bytes, CRC-protected, rewritten while watching)
//! 0x1000  RX descriptor ring (ring_len x 16 bytes)
//! ...     receive buffers (ring_len x buf_size), page aligned
//! ```
//! All integers little-endian.

use crate::desc::{DescKind, DESC_LEN};
use serde::Serialize;

pub const MAGIC: &[u8; 8] = b"KHE1KRX1";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 128;
pub const PROGRESS_OFFSET: usize = 128;
pub const PROGRESS_LEN: usize = 64;
pub const PROGRESS_MAGIC: &[u8; 8] = b"KHE1KPRG";
pub const PAGE: u64 = 4096;
pub const BDF_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("no ring header in the DMA memory (bad magic): was `init` run on this memory?")]
    Magic,
    #[error("ring header version {0}, this tool knows {VERSION}")]
    Version(u32),
    #[error("ring header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Crc { stored: u32, computed: u32 },
    #[error("ring header: unknown descriptor kind {0}")]
    DescKind(u32),
    #[error("bad ring layout: {0}")]
    Layout(String),
}

/// Where everything lives: what `init` decided and `attach` reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    /// IOVA of byte 0 of the DMA memory.
    pub iova: u64,
    pub mem_size: u64,
    pub ring_offset: u64,
    pub ring_len: u32,
    pub desc_kind: DescKind,
    pub buf_offset: u64,
    pub buf_size: u32,
    /// Byte offset of the sequence number in a test frame.
    pub seq_offset: u32,
    pub bdf: String,
    /// Changes at every `init` (its wall-clock time in ns).
    pub generation: u64,
}

impl Header {
    /// The standard layout for `ring_len` descriptors of `buf_size` bytes
    /// in `mem_size` bytes mapped at `iova`.
    pub fn plan(
        iova: u64,
        mem_size: u64,
        ring_len: u32,
        desc_kind: DescKind,
        buf_size: u32,
        bdf: &str,
        generation: u64,
    ) -> Result<Self, LayoutError> {
        let ring_offset = PAGE;
        let ring_bytes = u64::from(ring_len) * DESC_LEN as u64;
        let buf_offset = (ring_offset + ring_bytes).div_ceil(PAGE) * PAGE;
        let h = Header {
            iova,
            mem_size,
            ring_offset,
            ring_len,
            desc_kind,
            buf_offset,
            buf_size,
            seq_offset: crate::seq::SEQ_OFFSET as u32,
            bdf: bdf.to_string(),
            generation,
        };
        h.check()?;
        Ok(h)
    }

    /// Bytes the layout needs.
    pub fn needed(&self) -> u64 {
        self.buf_offset + u64::from(self.ring_len) * u64::from(self.buf_size)
    }

    pub fn ring_iova(&self) -> u64 {
        self.iova + self.ring_offset
    }

    pub fn ring_bytes(&self) -> u32 {
        self.ring_len * DESC_LEN as u32
    }

    pub fn buf_iova(&self, i: u32) -> u64 {
        self.iova + self.buf_offset + u64::from(i) * u64::from(self.buf_size)
    }

    /// Offset in the DMA memory of buffer `i`.
    pub fn buf_pos(&self, i: u32) -> usize {
        (self.buf_offset + u64::from(i) * u64::from(self.buf_size)) as usize
    }

    /// Offset in the DMA memory of descriptor `i`.
    pub fn desc_pos(&self, i: u32) -> usize {
        (self.ring_offset + u64::from(i) * DESC_LEN as u64) as usize
    }

    /// Everything a device and this driver need of the numbers.
    pub fn check(&self) -> Result<(), LayoutError> {
        let bad = |m: String| Err(LayoutError::Layout(m));
        if !self.iova.is_multiple_of(PAGE) {
            return bad(format!("IOVA {:#x} is not page aligned", self.iova));
        }
        // RDLEN: a multiple of 128 bytes, i.e. of 8 descriptors.
        if self.ring_len < 8 || !self.ring_len.is_multiple_of(8) || self.ring_len > 65536 {
            return bad(format!(
                "ring of {} descriptors: need a multiple of 8, 8..=65536",
                self.ring_len
            ));
        }
        if crate::regs::rctl_bsize(self.buf_size).is_none() {
            return bad(format!(
                "buffer size {}: need 256, 512, 1024 or 2048",
                self.buf_size
            ));
        }
        if self.ring_offset < (HEADER_LEN + PROGRESS_LEN) as u64
            || !self.ring_offset.is_multiple_of(128)
        {
            return bad(format!("ring offset {:#x}", self.ring_offset));
        }
        if self.buf_offset < self.ring_offset + u64::from(self.ring_bytes()) {
            return bad("buffers overlap the ring".into());
        }
        if self.needed() > self.mem_size {
            return bad(format!(
                "{} descriptors of {} bytes need {} bytes of DMA memory, have {}",
                self.ring_len,
                self.buf_size,
                self.needed(),
                self.mem_size
            ));
        }
        if self.seq_offset as usize != crate::seq::SEQ_OFFSET {
            return bad(format!(
                "sequence number at byte {}: only {} is supported",
                self.seq_offset,
                crate::seq::SEQ_OFFSET
            ));
        }
        if self.bdf.len() >= BDF_LEN {
            return bad(format!("device name {:?} too long", self.bdf));
        }
        Ok(())
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        put32(&mut b, 8, VERSION);
        put32(&mut b, 12, HEADER_LEN as u32);
        put64(&mut b, 16, self.iova);
        put64(&mut b, 24, self.mem_size);
        put64(&mut b, 32, self.ring_offset);
        put32(&mut b, 40, self.ring_len);
        put32(&mut b, 44, self.desc_kind.code());
        put64(&mut b, 48, self.buf_offset);
        put32(&mut b, 56, self.buf_size);
        put32(&mut b, 60, self.seq_offset);
        let n = self.bdf.len().min(BDF_LEN - 1);
        b[64..64 + n].copy_from_slice(&self.bdf.as_bytes()[..n]);
        put64(&mut b, 80, self.generation);
        let crc = crc32fast::hash(&b[..HEADER_LEN - 4]);
        put32(&mut b, HEADER_LEN - 4, crc);
        b
    }

    /// The header in the first bytes of DMA memory of `mapped` bytes,
    /// checked (magic, version, CRC, and that the layout fits the memory).
    pub fn decode(b: &[u8], mapped: u64) -> Result<Self, LayoutError> {
        if b.len() < HEADER_LEN || &b[0..8] != MAGIC {
            return Err(LayoutError::Magic);
        }
        let b = &b[..HEADER_LEN];
        let version = get32(b, 8);
        if version != VERSION {
            return Err(LayoutError::Version(version));
        }
        let stored = get32(b, HEADER_LEN - 4);
        let computed = crc32fast::hash(&b[..HEADER_LEN - 4]);
        if stored != computed {
            return Err(LayoutError::Crc { stored, computed });
        }
        let kind = get32(b, 44);
        let desc_kind = DescKind::from_code(kind).ok_or(LayoutError::DescKind(kind))?;
        let bdf_raw = &b[64..64 + BDF_LEN];
        let n = bdf_raw.iter().position(|&c| c == 0).unwrap_or(BDF_LEN);
        let h = Header {
            iova: get64(b, 16),
            mem_size: get64(b, 24),
            ring_offset: get64(b, 32),
            ring_len: get32(b, 40),
            desc_kind,
            buf_offset: get64(b, 48),
            buf_size: get32(b, 56),
            seq_offset: get32(b, 60),
            bdf: String::from_utf8_lossy(&bdf_raw[..n]).into_owned(),
            generation: get64(b, 80),
        };
        h.check()?;
        if h.mem_size > mapped {
            return Err(LayoutError::Layout(format!(
                "header describes {} bytes of DMA memory, {mapped} are mapped",
                h.mem_size
            )));
        }
        Ok(h)
    }
}

/// Software's position in the ring and what it has seen, checkpointed in
/// the DMA memory while watching (the device's registers stay the truth
/// for the ring; this adds the last sequence number across a re-attach).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub next_to_clean: u32,
    pub frames: u64,
    pub last_seq: Option<u64>,
}

impl Progress {
    pub fn encode(&self) -> [u8; PROGRESS_LEN] {
        let mut b = [0u8; PROGRESS_LEN];
        b[0..8].copy_from_slice(PROGRESS_MAGIC);
        put32(&mut b, 8, self.next_to_clean);
        put32(&mut b, 12, u32::from(self.last_seq.is_some()));
        put64(&mut b, 16, self.frames);
        put64(&mut b, 24, self.last_seq.unwrap_or(0));
        let crc = crc32fast::hash(&b[..PROGRESS_LEN - 4]);
        put32(&mut b, PROGRESS_LEN - 4, crc);
        b
    }

    /// `None` when there is no valid checkpoint.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < PROGRESS_LEN || &b[0..8] != PROGRESS_MAGIC {
            return None;
        }
        if get32(b, PROGRESS_LEN - 4) != crc32fast::hash(&b[..PROGRESS_LEN - 4]) {
            return None;
        }
        Some(Progress {
            next_to_clean: get32(b, 8),
            frames: get64(b, 16),
            last_seq: (get32(b, 12) != 0).then(|| get64(b, 24)),
        })
    }
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}
fn get64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header::plan(
            0x4000_0000,
            2 << 20,
            512,
            DescKind::Legacy,
            2048,
            "0000:00:03.0",
            42,
        )
        .unwrap()
    }

    #[test]
    fn the_standard_plan() {
        let h = sample();
        assert_eq!(h.ring_offset, 0x1000);
        assert_eq!(h.ring_bytes(), 8192);
        assert_eq!(h.buf_offset, 0x3000);
        assert_eq!(h.needed(), 0x3000 + 512 * 2048);
        assert_eq!(h.ring_iova(), 0x4000_1000);
        assert_eq!(h.buf_iova(1), 0x4000_3800);
        assert_eq!(h.desc_pos(2), 0x1020);
        assert_eq!(h.buf_pos(0), 0x3000);
    }

    #[test]
    fn header_round_trips() {
        let h = sample();
        assert_eq!(Header::decode(&h.encode(), 2 << 20).unwrap(), h);
    }

    #[test]
    fn damaged_headers_are_refused() {
        let h = sample();
        let size = 2 << 20;
        assert_eq!(
            Header::decode(&[0u8; HEADER_LEN], size),
            Err(LayoutError::Magic)
        );
        assert_eq!(
            Header::decode(&h.encode()[..64], size),
            Err(LayoutError::Magic),
            "short"
        );
        let mut b = h.encode();
        b[40] ^= 1; // ring_len
        assert!(matches!(
            Header::decode(&b, size),
            Err(LayoutError::Crc { .. })
        ));
        let mut b = h.encode();
        b[8] = 9;
        assert_eq!(Header::decode(&b, size), Err(LayoutError::Version(9)));
        // A valid header for more memory than is mapped.
        assert!(matches!(
            Header::decode(&h.encode(), 1 << 20),
            Err(LayoutError::Layout(_))
        ));
    }

    #[test]
    fn impossible_layouts_are_refused() {
        let plan =
            |iova, size, ring, buf| Header::plan(iova, size, ring, DescKind::Extended, buf, "x", 0);
        assert!(plan(0x4000_0000, 2 << 20, 512, 2048).is_ok());
        assert!(
            plan(0x4000_0800, 2 << 20, 512, 2048).is_err(),
            "unaligned IOVA"
        );
        assert!(
            plan(0x4000_0000, 2 << 20, 12, 2048).is_err(),
            "ring not a multiple of 8"
        );
        assert!(
            plan(0x4000_0000, 2 << 20, 512, 4096).is_err(),
            "buffer size"
        );
        assert!(
            plan(0x4000_0000, 1 << 20, 512, 2048).is_err(),
            "does not fit"
        );
        let long = Header::plan(
            0,
            2 << 20,
            8,
            DescKind::Legacy,
            256,
            "0000:00:03.0-toolong",
            0,
        );
        assert!(long.is_err());
    }

    #[test]
    fn progress_round_trips_and_rejects_damage() {
        let p = Progress {
            next_to_clean: 17,
            frames: 1000,
            last_seq: Some(123_456),
        };
        let mut b = p.encode();
        assert_eq!(Progress::decode(&b), Some(p));
        let none = Progress {
            last_seq: None,
            ..p
        };
        assert_eq!(Progress::decode(&none.encode()), Some(none));
        b[16] ^= 0xff;
        assert_eq!(Progress::decode(&b), None);
        assert_eq!(Progress::decode(&[0u8; PROGRESS_LEN]), None);
    }
}
