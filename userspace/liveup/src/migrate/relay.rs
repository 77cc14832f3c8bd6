//! The relay: carries a QEMU migration stream between QEMU's local socket
//! and N TCP connections, compressing chunks in parallel through the codec
//! layer. Every chunk has a sequence number and a CRC-32 of its
//! uncompressed bytes; the receiver decodes on N threads, verifies, puts
//! chunks back in order and writes them to the destination QEMU. It never
//! writes a chunk that failed verification, and stops at the first fault,
//! so the destination QEMU sees a truncated stream (and refuses to load it)
//! rather than a wrong one.
//!
//! Wire format (little-endian; Documentation/migrate.rst has the picture):
//!
//! * per connection, sender to receiver, once: a 32-byte hello
//!   `"LVRELAY1" session:u64 version:u16 conn:u16 conns:u16 flags:u16
//!   chunk_size:u32 crc:u32` (crc over the first 28 bytes);
//! * then frames: a 32-byte header `"LVCK" flags:u8 format:u8 rsvd:u16
//!   seq:u64 raw_len:u32 wire_len:u32 raw_crc:u32 hdr_crc:u32` and
//!   `wire_len` payload bytes. Flag 1 (END) closes a connection's stream;
//!   its `seq` is the total number of chunks;
//! * receiver to sender, on connection 0, after the last byte went to QEMU:
//!   `"LVRDONE1" chunks:u64 bytes:u64`.

use super::codec::{CodecError, CodecKind, Decoder, Encoder, Format};
use qatzip_sys::QatZip;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const HELLO_MAGIC: [u8; 8] = *b"LVRELAY1";
pub const DONE_MAGIC: [u8; 8] = *b"LVRDONE1";
pub const CHUNK_MAGIC: [u8; 4] = *b"LVCK";
pub const VERSION: u16 = 1;
pub const HELLO_LEN: usize = 32;
pub const HDR_LEN: usize = 32;
pub const DONE_LEN: usize = 24;
/// Largest chunk either side accepts.
pub const MAX_CHUNK: usize = 16 << 20;
pub const FLAG_END: u8 = 1;
/// Most bytes the receiver holds while waiting for an earlier chunk.
pub const MAX_PENDING_BYTES: usize = 512 << 20;

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
    #[error("relay: codec: {0}")]
    Setup(#[from] CodecError),
    #[error("relay: cancelled")]
    Cancelled,
}

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

fn le64(b: &[u8]) -> u64 {
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

/// Write one data chunk frame.
pub fn write_chunk(
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
    w.write_all(&h.encode())?;
    w.write_all(wire)
}

/// Counters both ends update while the relay runs (for progress output).
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Uncompressed stream bytes.
    pub raw_bytes: AtomicU64,
    /// Bytes on the TCP connections (headers included).
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

/// How the sender compresses.
#[derive(Clone)]
pub struct SendConfig {
    pub codec: CodecKind,
    pub level: u32,
    pub chunk_size: usize,
    pub qat: Option<Arc<QatZip>>,
    /// How long to wait for the receiver's confirmation at the end.
    pub confirm_timeout: Duration,
    /// A connection that accepts nothing for this long is dead (a cut link
    /// does not reset TCP connections; this does not wait for TCP to give up).
    pub stall_timeout: Duration,
    /// Test hook: flip a payload byte of this chunk after its checksum was
    /// computed, as a bad link or memory would.
    pub corrupt_chunk: Option<u64>,
    /// SO_SNDBUF for each connection. What sits in socket buffers when QEMU
    /// stops the VM is downtime: keep it near what the link drains quickly.
    pub sndbuf: Option<usize>,
}

fn set_sndbuf(c: &TcpStream, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: v is a valid c_int for the option's size.
    let rc = unsafe {
        libc::setsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Keeps the first error of several threads.
#[derive(Default)]
struct FirstError(Mutex<Option<RelayError>>, AtomicBool);

impl FirstError {
    fn set(&self, e: RelayError) {
        if let Ok(mut g) = self.0.lock() {
            if g.is_none() {
                *g = Some(e);
            }
        }
        self.1.store(true, Ordering::SeqCst);
    }
    fn failed(&self) -> bool {
        self.1.load(Ordering::SeqCst)
    }
    fn take(&self) -> Option<RelayError> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }
}

fn session_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ ((std::process::id() as u64) << 40) ^ 0x9e37_79b9_7f4a_7c15
}

/// Read the stream from `source` in chunks of `cfg.chunk_size` (a partial
/// chunk when `source` has nothing more for now: give it a read timeout)
/// and send them over `conns`, one compressing thread per connection.
/// Returns after the receiver confirmed every chunk. On any error, shuts
/// the connections down (the receiver then discards the stream) and
/// returns it; the caller closes `source`, which fails the source QEMU's
/// migration, and QEMU keeps the VM running.
pub fn send(
    mut source: impl Read,
    conns: Vec<TcpStream>,
    cfg: &SendConfig,
    stats: &RelayStats,
    cancel: &AtomicBool,
) -> Result<RelaySummary, RelayError> {
    let n = conns.len();
    if n == 0 || n > u16::MAX as usize || cfg.chunk_size == 0 || cfg.chunk_size > MAX_CHUNK {
        return Err(RelayError::Hello(format!(
            "{n} connections, chunk size {}",
            cfg.chunk_size
        )));
    }
    let session = session_id();
    let mut shut = Vec::with_capacity(n);
    for (i, c) in conns.iter().enumerate() {
        let mut c2 = c.try_clone()?;
        c.set_nodelay(true)?;
        c.set_write_timeout(Some(cfg.stall_timeout))?;
        if let Some(b) = cfg.sndbuf {
            set_sndbuf(c, b)?;
        }
        c2.write_all(
            &Hello {
                session,
                conn: i as u16,
                conns: n as u16,
                chunk_size: cfg.chunk_size as u32,
            }
            .encode(),
        )?;
        shut.push(c2);
    }
    let err = FirstError::default();
    let total = AtomicU64::new(0);
    // Little queueing: what waits here at switchover is downtime.
    let (tx, rx) = sync_channel::<(u64, Vec<u8>)>(n);
    let rx = Mutex::new(rx);
    let mut confirm = shut[0].try_clone()?;

    let res = std::thread::scope(|s| {
        for conn in conns {
            let (rx, err, total) = (&rx, &err, &total);
            s.spawn(move || {
                if let Err(e) = send_worker(conn, rx, cfg, stats, total, err) {
                    err.set(e);
                }
            });
        }
        read_source(&mut source, tx, cfg.chunk_size, stats, &err, cancel, &total)
        // tx dropped: the workers drain the queue, write END and exit.
    });
    let count = match res {
        Ok(c) if !err.failed() => c,
        other => {
            for c in &shut {
                let _ = c.shutdown(Shutdown::Both);
            }
            return Err(err.take().unwrap_or(match other {
                Err(e) => e,
                Ok(_) => RelayError::Cancelled,
            }));
        }
    };
    let sent = stats.snapshot();
    confirm.set_read_timeout(Some(cfg.confirm_timeout))?;
    let mut done = [0u8; DONE_LEN];
    if let Err(e) = confirm.read_exact(&mut done) {
        for c in &shut {
            let _ = c.shutdown(Shutdown::Both);
        }
        return Err(RelayError::NoConfirm(e.to_string()));
    }
    if done[..8] != DONE_MAGIC {
        return Err(RelayError::BadMagic("done"));
    }
    let (got_chunks, got_bytes) = (le64(&done[8..16]), le64(&done[16..24]));
    if got_chunks != count || got_bytes != sent.raw_bytes {
        return Err(RelayError::ConfirmMismatch {
            chunks: count,
            bytes: sent.raw_bytes,
            got_chunks,
            got_bytes,
        });
    }
    Ok(sent)
}

fn read_source(
    source: &mut impl Read,
    tx: SyncSender<(u64, Vec<u8>)>,
    chunk_size: usize,
    stats: &RelayStats,
    err: &FirstError,
    cancel: &AtomicBool,
    total: &AtomicU64,
) -> Result<u64, RelayError> {
    let mut seq = 0u64;
    let mut buf = vec![0u8; chunk_size];
    let mut filled = 0;
    loop {
        if err.failed() {
            return Err(RelayError::Cancelled);
        }
        if cancel.load(Ordering::SeqCst) {
            return Err(RelayError::Cancelled);
        }
        let (eof, flush) = match source.read(&mut buf[filled..]) {
            Ok(0) => (true, filled > 0),
            Ok(k) => {
                filled += k;
                (false, filled == chunk_size)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                (false, filled > 0)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => (false, false),
            Err(e) => return Err(e.into()),
        };
        if flush {
            let mut chunk = std::mem::replace(&mut buf, vec![0u8; chunk_size]);
            chunk.truncate(filled);
            stats.raw_bytes.fetch_add(filled as u64, Ordering::Relaxed);
            filled = 0;
            let mut item = (seq, chunk);
            // Not a blocking send: if every worker died, nobody would take it.
            loop {
                match tx.try_send(item) {
                    Ok(()) => break,
                    Err(TrySendError::Full(back)) => {
                        if err.failed() || cancel.load(Ordering::SeqCst) {
                            return Err(RelayError::Cancelled);
                        }
                        item = back;
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    Err(TrySendError::Disconnected(_)) => return Err(RelayError::Cancelled),
                }
            }
            seq += 1;
        }
        if eof {
            // Before tx is dropped: the workers put it in their END markers.
            total.store(seq, Ordering::SeqCst);
            return Ok(seq);
        }
    }
}

fn send_worker(
    mut conn: TcpStream,
    rx: &Mutex<Receiver<(u64, Vec<u8>)>>,
    cfg: &SendConfig,
    stats: &RelayStats,
    total: &AtomicU64,
    err: &FirstError,
) -> Result<(), RelayError> {
    let mut enc = Encoder::new(cfg.codec, cfg.level, cfg.qat.as_ref())?;
    let mut wire = Vec::with_capacity(cfg.chunk_size + cfg.chunk_size / 8 + 1024);
    loop {
        let msg = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return Err(RelayError::Cancelled),
        };
        let Ok((seq, raw)) = msg else { break };
        if err.failed() {
            return Err(RelayError::Cancelled);
        }
        let mut fmt = enc
            .compress(&raw, &mut wire)
            .map_err(|cause| RelayError::Codec { seq, cause })?;
        // Incompressible: send it as it is (cheaper to decode, never larger).
        if wire.len() >= raw.len() {
            fmt = Format::Raw;
        }
        if fmt == Format::Raw {
            wire.clear();
            wire.extend_from_slice(&raw);
        }
        if cfg.corrupt_chunk == Some(seq) && !wire.is_empty() {
            let mid = wire.len() / 2;
            wire[mid] ^= 0x20;
        }
        let payload: &[u8] = &wire;
        write_chunk(&mut conn, seq, fmt, &raw, payload)?;
        stats
            .wire_bytes
            .fetch_add((HDR_LEN + payload.len()) as u64, Ordering::Relaxed);
        stats.chunks.fetch_add(1, Ordering::Relaxed);
    }
    if err.failed() {
        return Err(RelayError::Cancelled);
    }
    conn.write_all(&ChunkHeader::end(total.load(Ordering::SeqCst)).encode())?;
    stats
        .wire_bytes
        .fetch_add(HDR_LEN as u64, Ordering::Relaxed);
    conn.flush()?;
    Ok(())
}

/// How the receiver behaves.
#[derive(Clone)]
pub struct ReceiveConfig {
    /// Decode gzip chunks through QATzip (QAT, or its software fallback).
    pub qat: Option<Arc<QatZip>>,
    /// Give up when no sender connects, or a connection is silent, this long.
    pub idle_timeout: Duration,
}

enum Msg {
    Chunk(u64, Vec<u8>),
    End(u64),
    Fail(RelayError),
}

/// Accept the sender's connections on `listener`, then decode, verify and
/// reorder chunks and write them to `sink` until every connection has sent
/// its end marker; confirm to the sender. On the first fault, stop writing,
/// shut the connections down and return the error.
pub fn receive(
    listener: &TcpListener,
    mut sink: impl Write,
    cfg: &ReceiveConfig,
    stats: &RelayStats,
) -> Result<RelaySummary, RelayError> {
    let conns = accept_all(listener, cfg.idle_timeout)?;
    let n = conns.len();
    let mut shut = Vec::with_capacity(n);
    for c in &conns {
        shut.push(c.try_clone()?);
    }
    let shutdown_all = |shut: &[TcpStream]| {
        for c in shut {
            let _ = c.shutdown(Shutdown::Both);
        }
    };
    let stop = AtomicBool::new(false);
    let (tx, rx) = sync_channel::<Msg>(n * 4);
    let res = std::thread::scope(|s| {
        for (i, conn) in conns.into_iter().enumerate() {
            let tx = tx.clone();
            let stop = &stop;
            s.spawn(move || {
                if let Err(e) = receive_worker(conn, i as u16, cfg, stats, &tx, stop) {
                    let _ = tx.send(Msg::Fail(e));
                }
            });
        }
        drop(tx);
        let r = reorder(&rx, n, &mut sink, stats);
        if r.is_err() {
            stop.store(true, Ordering::SeqCst);
            shutdown_all(&shut);
        }
        // Drain so that no worker stays blocked on a full channel.
        while rx.recv().is_ok() {}
        r
    });
    let (chunks, bytes) = match res {
        Ok(v) => v,
        Err(e) => {
            shutdown_all(&shut);
            return Err(e);
        }
    };
    let mut done = [0u8; DONE_LEN];
    done[..8].copy_from_slice(&DONE_MAGIC);
    done[8..16].copy_from_slice(&chunks.to_le_bytes());
    done[16..24].copy_from_slice(&bytes.to_le_bytes());
    shut[0].write_all(&done)?;
    Ok(stats.snapshot())
}

fn accept_all(listener: &TcpListener, timeout: Duration) -> Result<Vec<TcpStream>, RelayError> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let mut slots: Vec<Option<TcpStream>> = Vec::new();
    let mut first: Option<Hello> = None;
    loop {
        if !slots.is_empty() && slots.iter().all(Option::is_some) {
            break;
        }
        let (c, _) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(RelayError::Io(std::io::Error::new(
                        ErrorKind::TimedOut,
                        "relay: timed out waiting for the sender's connections",
                    )));
                }
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        c.set_nonblocking(false)?;
        c.set_read_timeout(Some(timeout))?;
        c.set_nodelay(true)?;
        let mut b = [0u8; HELLO_LEN];
        (&c).read_exact(&mut b)?;
        let h = Hello::decode(&b)?;
        match first {
            None => {
                first = Some(h);
                slots = (0..h.conns).map(|_| None).collect();
            }
            Some(f) if f.session != h.session || f.conns != h.conns => {
                return Err(RelayError::Hello(format!("{h:?} does not belong to {f:?}")));
            }
            _ => {}
        }
        let slot = &mut slots[h.conn as usize];
        if slot.is_some() {
            return Err(RelayError::Hello(format!("connection {} twice", h.conn)));
        }
        *slot = Some(c);
    }
    listener.set_nonblocking(false)?;
    Ok(slots.into_iter().flatten().collect())
}

fn receive_worker(
    mut conn: TcpStream,
    idx: u16,
    cfg: &ReceiveConfig,
    stats: &RelayStats,
    tx: &SyncSender<Msg>,
    stop: &AtomicBool,
) -> Result<(), RelayError> {
    let mut dec = Decoder::new(cfg.qat.as_ref())?;
    let mut wire = Vec::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(RelayError::Cancelled);
        }
        let io_err = |e: std::io::Error| match e.kind() {
            ErrorKind::UnexpectedEof => RelayError::Truncated(idx),
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                RelayError::Stalled(idx, cfg.idle_timeout)
            }
            _ => e.into(),
        };
        let mut hb = [0u8; HDR_LEN];
        conn.read_exact(&mut hb).map_err(io_err)?;
        let h = ChunkHeader::decode(&hb)?;
        stats
            .wire_bytes
            .fetch_add((HDR_LEN + h.wire_len as usize) as u64, Ordering::Relaxed);
        if h.is_end() {
            let _ = tx.send(Msg::End(h.seq));
            return Ok(());
        }
        wire.resize(h.wire_len as usize, 0);
        conn.read_exact(&mut wire).map_err(io_err)?;
        let mut raw = Vec::new();
        dec.decompress(h.format, &wire, h.raw_len as usize, &mut raw)
            .map_err(|cause| RelayError::Codec { seq: h.seq, cause })?;
        if crc32fast::hash(&raw) != h.raw_crc {
            return Err(RelayError::ChunkCrc { seq: h.seq });
        }
        if tx.send(Msg::Chunk(h.seq, raw)).is_err() {
            return Err(RelayError::Cancelled);
        }
    }
}

/// Put verified chunks back in order and write them out. Returns the chunk
/// and byte counts once all `n` connections ended consistently.
fn reorder(
    rx: &Receiver<Msg>,
    n: usize,
    sink: &mut impl Write,
    stats: &RelayStats,
) -> Result<(u64, u64), RelayError> {
    let mut pending: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut pending_bytes = 0usize;
    let mut next = 0u64;
    let mut bytes = 0u64;
    let mut total: Option<u64> = None;
    let mut ends = 0;
    while ends < n {
        let Ok(msg) = rx.recv() else {
            return Err(RelayError::Cancelled);
        };
        match msg {
            Msg::Fail(e) => return Err(e),
            Msg::End(t) => {
                if let Some(prev) = total {
                    if prev != t {
                        return Err(RelayError::EndMismatch(prev, t));
                    }
                }
                if next > t || pending.keys().next_back().is_some_and(|&k| k >= t) {
                    return Err(RelayError::Missing { next, total: t });
                }
                total = Some(t);
                ends += 1;
            }
            Msg::Chunk(seq, data) => {
                if seq < next || total.is_some_and(|t| seq >= t) || pending.contains_key(&seq) {
                    return Err(RelayError::Duplicate(seq));
                }
                pending_bytes += data.len();
                pending.insert(seq, data);
                while let Some(d) = pending.remove(&next) {
                    pending_bytes -= d.len();
                    sink.write_all(&d)?;
                    bytes += d.len() as u64;
                    stats.raw_bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                    stats.chunks.fetch_add(1, Ordering::Relaxed);
                    next += 1;
                }
                if pending_bytes > MAX_PENDING_BYTES {
                    return Err(RelayError::Window(next));
                }
            }
        }
    }
    let total = total.unwrap_or(0);
    if next != total || !pending.is_empty() {
        return Err(RelayError::Missing { next, total });
    }
    sink.flush()?;
    Ok((next, bytes))
}

#[cfg(test)]
mod tests {
    use super::super::codec::tests::sample;
    use super::*;
    use std::net::SocketAddr;

    fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    fn cfg(codec: CodecKind, chunk: usize) -> SendConfig {
        SendConfig {
            codec,
            level: codec.default_level(),
            chunk_size: chunk,
            qat: None,
            confirm_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(10),
            corrupt_chunk: None,
            sndbuf: None,
        }
    }

    fn rcfg() -> ReceiveConfig {
        ReceiveConfig {
            qat: None,
            idle_timeout: Duration::from_secs(10),
        }
    }

    /// Run a whole relay over loopback; returns what the receiver wrote.
    fn relay(
        data: &[u8],
        codec: CodecKind,
        n: usize,
        chunk: usize,
    ) -> (Vec<u8>, RelaySummary, RelaySummary) {
        let (l, addr) = listener();
        let recv = std::thread::spawn(move || {
            let mut out = Vec::new();
            let st = RelayStats::default();
            let r = receive(&l, &mut out, &rcfg(), &st).unwrap();
            (out, r)
        });
        let conns = (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let st = RelayStats::default();
        let sent = send(
            data,
            conns,
            &cfg(codec, chunk),
            &st,
            &AtomicBool::new(false),
        )
        .unwrap();
        let (out, got) = recv.join().unwrap();
        (out, sent, got)
    }

    #[test]
    fn stream_survives_every_codec_connection_count_and_chunk_size() {
        let data = sample(3 << 20, 5);
        for codec in [
            CodecKind::None,
            CodecKind::Gzip,
            CodecKind::Lz4,
            CodecKind::Zstd,
        ] {
            for (n, chunk) in [(1, 64 << 10), (3, 4096), (4, 1 << 20), (2, 1000)] {
                let (out, sent, got) = relay(&data, codec, n, chunk);
                assert!(out == data, "{codec} n={n} chunk={chunk}");
                assert_eq!(sent.raw_bytes, data.len() as u64);
                assert_eq!(got.raw_bytes, data.len() as u64);
                assert_eq!(sent.chunks, data.len().div_ceil(chunk) as u64);
                assert_eq!(got.chunks, sent.chunks);
                assert_eq!(got.wire_bytes, sent.wire_bytes);
                if codec != CodecKind::None {
                    assert!(sent.wire_bytes * 2 < sent.raw_bytes, "{codec}: {sent:?}");
                }
            }
        }
        // An empty stream is fine too.
        let (out, sent, _) = relay(&[], CodecKind::Zstd, 2, 4096);
        assert!(out.is_empty());
        assert_eq!(sent.chunks, 0);
    }

    #[test]
    fn corrupted_chunk_from_a_real_sender_fails_both_ends() {
        let data = sample(2 << 20, 8);
        for codec in [CodecKind::None, CodecKind::Zstd] {
            let (l, addr) = listener();
            let recv = std::thread::spawn(move || {
                let mut out = Vec::new();
                let r = receive(&l, &mut out, &rcfg(), &RelayStats::default());
                (r, out)
            });
            let conns = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
            let mut c = cfg(codec, 64 << 10);
            c.corrupt_chunk = Some(5);
            let s = send(
                &data[..],
                conns,
                &c,
                &RelayStats::default(),
                &AtomicBool::new(false),
            );
            let (r, out) = recv.join().unwrap();
            assert!(s.is_err(), "{codec}: sender must not see a confirmation");
            assert!(r.is_err(), "{codec}: receiver must refuse");
            assert!(
                out.len() <= 5 * (64 << 10),
                "{codec}: wrote past the bad chunk"
            );
            assert!(
                out[..] == data[..out.len()],
                "{codec}: what was written is right"
            );
        }
    }

    #[test]
    fn incompressible_chunks_go_raw() {
        let mut x = 0x1234_5678u64;
        let data: Vec<u8> = (0..200_000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect();
        let (out, sent, _) = relay(&data, CodecKind::Gzip, 2, 16384);
        assert!(out == data);
        // Never more than the headers over the raw size.
        let frames = sent.chunks + 2; // two END markers
        assert_eq!(sent.wire_bytes, data.len() as u64 + frames * HDR_LEN as u64);
    }

    #[test]
    fn headers_roundtrip_and_detect_damage() {
        let h = Hello {
            session: 42,
            conn: 1,
            conns: 3,
            chunk_size: 1 << 20,
        };
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        let mut b = h.encode();
        b[19] ^= 1;
        assert!(matches!(Hello::decode(&b), Err(RelayError::HeaderCrc(_))));
        let bad = Hello { conn: 3, ..h }.encode();
        assert!(matches!(Hello::decode(&bad), Err(RelayError::Hello(_))));

        let c = ChunkHeader {
            flags: 0,
            format: Format::Zstd,
            seq: 7,
            raw_len: 4096,
            wire_len: 100,
            raw_crc: 0xdead_beef,
        };
        assert_eq!(ChunkHeader::decode(&c.encode()).unwrap(), c);
        for byte in 0..28 {
            let mut b = c.encode();
            b[byte] ^= 0x10;
            assert!(
                ChunkHeader::decode(&b).is_err(),
                "flip in byte {byte} unnoticed"
            );
        }
        let huge = ChunkHeader {
            raw_len: (MAX_CHUNK + 1) as u32,
            ..c
        };
        assert!(matches!(
            ChunkHeader::decode(&huge.encode()),
            Err(RelayError::Lengths { .. })
        ));
        let e = ChunkHeader::end(5);
        assert!(ChunkHeader::decode(&e.encode()).unwrap().is_end());
    }

    /// A hand-driven sender: hellos, then frames the test chooses.
    struct Fake {
        conns: Vec<TcpStream>,
    }

    impl Fake {
        fn connect(addr: SocketAddr, n: u16, chunk: u32) -> Fake {
            let conns = (0..n)
                .map(|i| {
                    let mut c = TcpStream::connect(addr).unwrap();
                    let h = Hello {
                        session: 9,
                        conn: i,
                        conns: n,
                        chunk_size: chunk,
                    };
                    c.write_all(&h.encode()).unwrap();
                    c
                })
                .collect();
            Fake { conns }
        }
        fn chunk(&mut self, conn: usize, seq: u64, data: &[u8]) {
            write_chunk(&mut self.conns[conn], seq, Format::Raw, data, data).unwrap();
        }
        fn end(&mut self, conn: usize, total: u64) {
            self.conns[conn]
                .write_all(&ChunkHeader::end(total).encode())
                .unwrap();
        }
    }

    type Outcome = (Result<RelaySummary, RelayError>, Vec<u8>);

    fn receiver() -> (SocketAddr, std::thread::JoinHandle<Outcome>) {
        let (l, addr) = listener();
        let h = std::thread::spawn(move || {
            let mut out = Vec::new();
            let r = receive(&l, &mut out, &rcfg(), &RelayStats::default());
            (r, out)
        });
        (addr, h)
    }

    #[test]
    fn out_of_order_chunks_are_written_in_order() {
        let (addr, h) = receiver();
        let mut f = Fake::connect(addr, 2, 4);
        f.chunk(0, 3, b"dddd");
        f.chunk(1, 1, b"bbbb");
        f.chunk(0, 2, b"cccc");
        f.chunk(1, 0, b"aaaa");
        f.end(0, 4);
        f.end(1, 4);
        let mut done = [0u8; DONE_LEN];
        f.conns[0].read_exact(&mut done).unwrap();
        assert_eq!(&done[..8], &DONE_MAGIC);
        assert_eq!(le64(&done[8..16]), 4);
        assert_eq!(le64(&done[16..24]), 16);
        let (r, out) = h.join().unwrap();
        r.unwrap();
        assert_eq!(out, b"aaaabbbbccccdddd");
    }

    #[test]
    fn corrupt_chunk_stops_the_stream_before_it() {
        let (addr, h) = receiver();
        let mut f = Fake::connect(addr, 1, 4);
        f.chunk(0, 0, b"good");
        // Payload flipped after the checksum was computed.
        let hdr = ChunkHeader {
            flags: 0,
            format: Format::Raw,
            seq: 1,
            raw_len: 4,
            wire_len: 4,
            raw_crc: crc32fast::hash(b"evil"),
        };
        f.conns[0].write_all(&hdr.encode()).unwrap();
        f.conns[0].write_all(b"evi1").unwrap();
        f.chunk(0, 2, b"more");
        let (r, out) = h.join().unwrap();
        assert!(matches!(r, Err(RelayError::ChunkCrc { seq: 1 })), "{r:?}");
        assert_eq!(out, b"good", "nothing at or after the bad chunk is written");
        // And the sender is told: its connection is shut down.
        let mut b = [0u8; 1];
        assert!(matches!(f.conns[0].read(&mut b), Ok(0) | Err(_)));
    }

    #[test]
    fn corrupt_compressed_payload_is_caught() {
        let (addr, h) = receiver();
        let mut f = Fake::connect(addr, 1, 1 << 16);
        let data = sample(60_000, 2);
        let mut z = Vec::new();
        let fmt = Encoder::new(CodecKind::Lz4, 0, None)
            .unwrap()
            .compress(&data, &mut z)
            .unwrap();
        let mid = z.len() / 2;
        z[mid] ^= 0x01;
        write_chunk(&mut f.conns[0], 0, fmt, &data, &z).unwrap();
        f.end(0, 1);
        let (r, out) = h.join().unwrap();
        assert!(
            matches!(
                r,
                Err(RelayError::ChunkCrc { .. } | RelayError::Codec { .. })
            ),
            "{r:?}"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn missing_duplicate_and_truncated_streams_fail() {
        // Chunk 1 never sent.
        let (addr, h) = receiver();
        let mut f = Fake::connect(addr, 1, 4);
        f.chunk(0, 0, b"aaaa");
        f.chunk(0, 2, b"cccc");
        f.end(0, 3);
        let (r, out) = h.join().unwrap();
        assert!(
            matches!(r, Err(RelayError::Missing { next: 1, total: 3 })),
            "{r:?}"
        );
        assert_eq!(out, b"aaaa");

        // Chunk 0 twice.
        let (addr, h) = receiver();
        let mut f = Fake::connect(addr, 2, 4);
        f.chunk(0, 0, b"aaaa");
        f.chunk(1, 0, b"aaaa");
        let (r, _) = h.join().unwrap();
        assert!(matches!(r, Err(RelayError::Duplicate(0))), "{r:?}");

        // Connection closes without an end marker (link cut, sender died).
        let (addr, h) = receiver();
        let mut f = Fake::connect(addr, 2, 4);
        f.chunk(0, 0, b"aaaa");
        f.end(0, 2);
        let hdr = ChunkHeader {
            flags: 0,
            format: Format::Raw,
            seq: 1,
            raw_len: 4,
            wire_len: 4,
            raw_crc: crc32fast::hash(b"bbbb"),
        };
        f.conns[1].write_all(&hdr.encode()).unwrap();
        f.conns[1].write_all(b"bb").unwrap();
        drop(f);
        let (r, out) = h.join().unwrap();
        assert!(matches!(r, Err(RelayError::Truncated(1))), "{r:?}");
        // Chunk 0 (other connection) may or may not have won the race.
        assert!(out.is_empty() || out == b"aaaa", "{out:?}");

        // Disagreeing end markers.
        let (addr, h) = receiver();
        let mut f = Fake::connect(addr, 2, 4);
        f.chunk(0, 0, b"aaaa");
        f.end(0, 1);
        f.end(1, 2);
        let (r, _) = h.join().unwrap();
        assert!(r.is_err(), "{r:?}");
    }

    #[test]
    fn a_silent_connection_is_a_stall() {
        let (l, addr) = listener();
        let h = std::thread::spawn(move || {
            let mut out = Vec::new();
            let cfg = ReceiveConfig {
                qat: None,
                idle_timeout: Duration::from_millis(300),
            };
            receive(&l, &mut out, &cfg, &RelayStats::default())
        });
        let mut f = Fake::connect(addr, 1, 4);
        f.chunk(0, 0, b"aaaa");
        let r = h.join().unwrap();
        assert!(matches!(r, Err(RelayError::Stalled(0, _))), "{r:?}");
    }

    #[test]
    fn sender_fails_when_the_receiver_goes_away() {
        let (l, addr) = listener();
        // A receiver that reads a little, then dies.
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut b = vec![0u8; 100_000];
            let _ = c.read_exact(&mut b);
            drop(c);
            drop(l);
        });
        let data = sample(64 << 20, 1);
        let conns = vec![TcpStream::connect(addr).unwrap()];
        let r = send(
            &data[..],
            conns,
            &cfg(CodecKind::None, 1 << 16),
            &RelayStats::default(),
            &AtomicBool::new(false),
        );
        h.join().unwrap();
        assert!(r.is_err(), "sender must notice the cut");
    }

    #[test]
    fn sender_fails_without_confirmation() {
        let (l, addr) = listener();
        // Reads everything, never confirms.
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut sink = Vec::new();
            let _ = c.read_to_end(&mut sink);
        });
        let c = TcpStream::connect(addr).unwrap();
        let mut cf = cfg(CodecKind::Zstd, 4096);
        cf.confirm_timeout = Duration::from_millis(300);
        let r = send(
            &sample(50_000, 4)[..],
            vec![c],
            &cf,
            &RelayStats::default(),
            &AtomicBool::new(false),
        );
        assert!(matches!(r, Err(RelayError::NoConfirm(_))), "{r:?}");
        h.join().unwrap();
    }
}
