//! The relay: carries a QEMU migration stream between QEMU's local socket
//! and N TCP connections, compressing chunks in parallel through the codec
//! layer. Every chunk has a sequence number and a CRC-32 of its
//! uncompressed bytes; the receiver decodes on N threads, verifies, puts
//! chunks back in order and writes them to the destination QEMU. It never
//! writes a chunk that failed verification, and stops at the first fault,
//! so the destination QEMU sees a truncated stream (and refuses to load it)
//! rather than a wrong one.
//!
//! Every hello, frame and confirmation is followed by a 32-byte
//! HMAC-SHA256 tag under a key derived from the migration's authenticated
//! control session (wire.rs, `FrameMac`): a connection whose hello fails
//! it is dropped and the receiver goes on waiting for the sender's (a port
//! scanner or a stray connection no longer aborts a migration); a frame
//! that fails it stops the stream before anything of it reaches QEMU (a
//! forged END can no longer truncate a stream the receiver then reports
//! complete).
//!
//! Wire format (little-endian; Documentation/migrate.rst has the picture):
//!
//! * per connection, sender to receiver, once: a 32-byte hello
//!   `"LVRELAY1" session:u64 version:u16 conn:u16 conns:u16 flags:u16
//!   chunk_size:u32 crc:u32` (crc over the first 28 bytes), then its tag;
//! * then frames: a 32-byte header `"LVCK" flags:u8 format:u8 rsvd:u16
//!   seq:u64 raw_len:u32 wire_len:u32 raw_crc:u32 hdr_crc:u32`,
//!   `wire_len` payload bytes and the tag of (session, connection, header,
//!   payload). Flag 1 (END) closes a connection's stream; its `seq` is the
//!   total number of chunks;
//! * receiver to sender, on connection 0, after the last byte went to QEMU:
//!   `"LVRDONE1" chunks:u64 bytes:u64` and the tag of (session, those).
//!
//! In relay/: `wire.rs` the frames, `send.rs` the sender, `receive.rs` the
//! receiver, `tests.rs` and tests/ their tests; the errors and counters
//! are here.

#[cfg(test)]
mod fuzz;
mod receive;
mod send;
#[cfg(test)]
mod tests;
mod wire;

pub use receive::{receive, ReceiveConfig, MAX_PENDING_BYTES};
pub use send::{send, SendConfig};
pub use wire::{
    ChunkHeader, FrameMac, FrameTo, Hello, CHUNK_MAGIC, DONE_LEN, DONE_MAGIC, FLAG_END, HDR_LEN,
    HELLO_LEN, HELLO_MAGIC, MAX_CHUNK, TAG_LEN, VERSION,
};

use super::codec::CodecError;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("relay I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("relay: bad {0} magic")]
    BadMagic(&'static str),
    #[error("relay: {0} header checksum mismatch")]
    HeaderCrc(&'static str),
    #[error("relay: bad hello: {0}")]
    Hello(String),
    #[error("relay: chunk {seq}: checksum mismatch (corrupt data)")]
    ChunkCrc { seq: u64 },
    #[error("relay: chunk {seq}: {cause}")]
    Codec { seq: u64, cause: CodecError },
    #[error("relay: chunk {seq}: unknown flags or reserved bytes set ({0:#x})", .bits)]
    Reserved { seq: u64, bits: u32 },
    #[error("relay: chunk {seq}: bad lengths raw {raw} wire {wire}")]
    Lengths { seq: u64, raw: u32, wire: u32 },
    #[error("relay: chunk {0} received twice or out of range")]
    Duplicate(u64),
    #[error("relay: stream ended with chunk {next} of {total} missing")]
    Missing { next: u64, total: u64 },
    #[error("relay: connections disagree on the chunk count ({0} vs {1})")]
    EndMismatch(u64, u64),
    #[error("relay: connection {0} closed before its end marker")]
    Truncated(u16),
    #[error("relay: connection {0} silent for {1:?} (link cut or sender gone)")]
    Stalled(u16, Duration),
    #[error("relay: more than {MAX_PENDING_BYTES} bytes waiting for chunk {0}")]
    Window(u64),
    #[error("relay: receiver did not confirm: {0}")]
    NoConfirm(String),
    #[error("relay: receiver confirmed {got_chunks} chunks / {got_bytes} bytes, sent {chunks} / {bytes}")]
    ConfirmMismatch {
        chunks: u64,
        bytes: u64,
        got_chunks: u64,
        got_bytes: u64,
    },
    #[error("relay: connection {conn}: frame {seq} fails its MAC (forged, altered, or from another session)")]
    Forged { conn: u16, seq: u64 },
    #[error("relay: the receiver's confirmation fails its MAC")]
    ForgedConfirm,
    #[error("relay: codec: {0}")]
    Setup(#[from] CodecError),
    #[error("relay: cancelled")]
    Cancelled,
}

/// Counters both ends update while the relay runs (for progress output).
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Uncompressed stream bytes.
    pub raw_bytes: AtomicU64,
    /// Bytes on the TCP connections (headers and MACs included).
    pub wire_bytes: AtomicU64,
    pub chunks: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct RelaySummary {
    pub raw_bytes: u64,
    pub wire_bytes: u64,
    pub chunks: u64,
}

impl RelayStats {
    pub fn snapshot(&self) -> RelaySummary {
        RelaySummary {
            raw_bytes: self.raw_bytes.load(Ordering::Relaxed),
            wire_bytes: self.wire_bytes.load(Ordering::Relaxed),
            chunks: self.chunks.load(Ordering::Relaxed),
        }
    }
}
