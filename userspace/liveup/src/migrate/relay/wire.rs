//! The relay's wire format (pictured in relay.rs): the magics and sizes of
//! the hello, the chunk header and the receiver's confirmation; the hello
//! and chunk headers encoded and checked; the MAC that follows each of them.

use super::RelayError;
use crate::migrate::auth::Key;
use crate::migrate::codec::Format;
use std::io::Write;

pub const HELLO_MAGIC: [u8; 8] = *b"LVRELAY1";
pub const DONE_MAGIC: [u8; 8] = *b"LVRDONE1";
pub const CHUNK_MAGIC: [u8; 4] = *b"LVCK";
/// 2: every hello, frame and confirmation carries a MAC (version 1 had a
/// CRC only, and anyone who reached the port could join or end a stream).
pub const VERSION: u16 = 2;
pub const HELLO_LEN: usize = 32;
pub const HDR_LEN: usize = 32;
pub const DONE_LEN: usize = 24;
/// The HMAC-SHA256 tag after each hello, frame and confirmation.
pub const TAG_LEN: usize = 32;
/// Largest chunk either side accepts.
pub const MAX_CHUNK: usize = 16 << 20;
pub const FLAG_END: u8 = 1;

/// The hello each connection opens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub session: u64,
    pub conn: u16,
    pub conns: u16,
    pub chunk_size: u32,
}

impl Hello {
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[0..8].copy_from_slice(&HELLO_MAGIC);
        b[8..16].copy_from_slice(&self.session.to_le_bytes());
        b[16..18].copy_from_slice(&VERSION.to_le_bytes());
        b[18..20].copy_from_slice(&self.conn.to_le_bytes());
        b[20..22].copy_from_slice(&self.conns.to_le_bytes());
        // 22..24 flags: none defined
        b[24..28].copy_from_slice(&self.chunk_size.to_le_bytes());
        seal32(&mut b);
        b
    }

    pub fn decode(b: &[u8; HELLO_LEN]) -> Result<Self, RelayError> {
        if b[0..8] != HELLO_MAGIC {
            return Err(RelayError::BadMagic("hello"));
        }
        if !sealed32(b) {
            return Err(RelayError::HeaderCrc("hello"));
        }
        let version = u16::from_le_bytes([b[16], b[17]]);
        if version != VERSION {
            return Err(RelayError::Hello(format!(
                "version {version}, we speak {VERSION}"
            )));
        }
        // no flags are defined: a peer that sets one speaks something else
        if b[22..24] != [0, 0] {
            return Err(RelayError::Hello(format!(
                "flags {:#x}: none defined",
                u16::from_le_bytes([b[22], b[23]])
            )));
        }
        let h = Hello {
            session: le64(&b[8..16]),
            conn: u16::from_le_bytes([b[18], b[19]]),
            conns: u16::from_le_bytes([b[20], b[21]]),
            chunk_size: le32(&b[24..28]),
        };
        if h.conns == 0
            || h.conn >= h.conns
            || h.chunk_size == 0
            || h.chunk_size as usize > MAX_CHUNK
        {
            return Err(RelayError::Hello(format!("{h:?}")));
        }
        Ok(h)
    }
}

/// A chunk frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub flags: u8,
    pub format: Format,
    pub seq: u64,
    pub raw_len: u32,
    pub wire_len: u32,
    pub raw_crc: u32,
}

/// Both 32-byte headers end with a CRC-32 of their first 28 bytes.
fn seal32(b: &mut [u8; 32]) {
    let crc = crc32fast::hash(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
}

fn sealed32(b: &[u8; 32]) -> bool {
    crc32fast::hash(&b[..28]) == le32(&b[28..32])
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

pub(super) fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Largest payload a chunk of `raw` bytes may have on the wire: codecs may
/// expand incompressible data slightly; the sender sends such chunks raw.
fn max_wire(raw: u32) -> u32 {
    raw.saturating_add(raw / 8).saturating_add(1024)
}

impl ChunkHeader {
    pub fn end(total: u64) -> Self {
        ChunkHeader {
            flags: FLAG_END,
            format: Format::Raw,
            seq: total,
            raw_len: 0,
            wire_len: 0,
            raw_crc: 0,
        }
    }

    pub fn is_end(&self) -> bool {
        self.flags & FLAG_END != 0
    }

    pub fn encode(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..4].copy_from_slice(&CHUNK_MAGIC);
        b[4] = self.flags;
        b[5] = self.format as u8;
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..20].copy_from_slice(&self.raw_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.wire_len.to_le_bytes());
        b[24..28].copy_from_slice(&self.raw_crc.to_le_bytes());
        seal32(&mut b);
        b
    }

    pub fn decode(b: &[u8; HDR_LEN]) -> Result<Self, RelayError> {
        if b[0..4] != CHUNK_MAGIC {
            return Err(RelayError::BadMagic("chunk"));
        }
        if !sealed32(b) {
            return Err(RelayError::HeaderCrc("chunk"));
        }
        let seq = le64(&b[8..16]);
        // only FLAG_END is defined; bytes 6-7 are reserved (zero)
        if b[4] & !FLAG_END != 0 || b[6..8] != [0, 0] {
            return Err(RelayError::Reserved {
                seq,
                bits: u32::from_le_bytes([b[4], 0, b[6], b[7]]),
            });
        }
        let h = ChunkHeader {
            flags: b[4],
            format: Format::try_from(b[5]).map_err(|cause| RelayError::Codec { seq, cause })?,
            seq,
            raw_len: le32(&b[16..20]),
            wire_len: le32(&b[20..24]),
            raw_crc: le32(&b[24..28]),
        };
        let bad = if h.is_end() {
            h.raw_len != 0 || h.wire_len != 0
        } else {
            h.raw_len as usize > MAX_CHUNK || h.wire_len > max_wire(h.raw_len)
        };
        if bad {
            return Err(RelayError::Lengths {
                seq,
                raw: h.raw_len,
                wire: h.wire_len,
            });
        }
        Ok(h)
    }
}

/// The relay's MACs: HMAC-SHA256 (auth.rs) under a key derived from the
/// migration's authenticated control session, so that only the peer that
/// proved it holds the pre-shared key can open a relay connection, and
/// nobody can forge, alter, move between connections or sessions, or drop
/// the end of a stream, or confirm one that did not arrive. The CRC in
/// each header stays: it checks the decompressor, the MAC the sender.
#[derive(Clone, Debug)]
pub struct FrameMac(Key);

impl FrameMac {
    pub fn new(key: Key) -> Self {
        FrameMac(key)
    }

    pub fn hello(&self, hello: &[u8; HELLO_LEN]) -> [u8; TAG_LEN] {
        self.0.sign(&[b"relay hello", hello])
    }

    pub fn hello_ok(&self, hello: &[u8; HELLO_LEN], tag: &[u8]) -> bool {
        self.0.verify(&[b"relay hello", hello], tag)
    }

    /// A frame (`hdr`, then `payload`) on connection `conn` of `session`.
    pub fn frame(
        &self,
        session: u64,
        conn: u16,
        hdr: &[u8; HDR_LEN],
        payload: &[u8],
    ) -> [u8; TAG_LEN] {
        self.0.sign(&[
            b"relay frame",
            &session.to_le_bytes(),
            &conn.to_le_bytes(),
            hdr,
            payload,
        ])
    }

    pub fn frame_ok(
        &self,
        session: u64,
        conn: u16,
        hdr: &[u8; HDR_LEN],
        payload: &[u8],
        tag: &[u8],
    ) -> bool {
        self.0.verify(
            &[
                b"relay frame",
                &session.to_le_bytes(),
                &conn.to_le_bytes(),
                hdr,
                payload,
            ],
            tag,
        )
    }

    pub fn done(&self, session: u64, done: &[u8; DONE_LEN]) -> [u8; TAG_LEN] {
        self.0.sign(&[b"relay done", &session.to_le_bytes(), done])
    }

    pub fn done_ok(&self, session: u64, done: &[u8; DONE_LEN], tag: &[u8]) -> bool {
        self.0
            .verify(&[b"relay done", &session.to_le_bytes(), done], tag)
    }
}

/// Where a frame goes: its relay session and connection, and the MAC key.
#[derive(Clone, Copy)]
pub struct FrameTo<'a> {
    pub mac: &'a FrameMac,
    pub session: u64,
    pub conn: u16,
}

impl FrameTo<'_> {
    /// Write one frame: `hdr`, `payload`, its MAC.
    pub fn write(
        &self,
        w: &mut impl Write,
        hdr: &ChunkHeader,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let hb = hdr.encode();
        w.write_all(&hb)?;
        w.write_all(payload)?;
        w.write_all(&self.mac.frame(self.session, self.conn, &hb, payload))
    }

    /// Write one data chunk frame.
    pub fn chunk(
        &self,
        w: &mut impl Write,
        seq: u64,
        format: Format,
        raw: &[u8],
        wire: &[u8],
    ) -> std::io::Result<()> {
        let h = ChunkHeader {
            flags: 0,
            format,
            seq,
            raw_len: raw.len() as u32,
            wire_len: wire.len() as u32,
            raw_crc: crc32fast::hash(raw),
        };
        self.write(w, &h, wire)
    }
}
