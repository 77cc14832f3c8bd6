//! The sending end: cut QEMU's stream into chunks, compress them on one
//! thread per connection, and wait for the receiver's confirmation.

use super::wire::{le64, ChunkHeader, FrameMac, FrameTo, Hello};
use super::wire::{DONE_LEN, DONE_MAGIC, HDR_LEN, MAX_CHUNK, TAG_LEN};
use super::{RelayError, RelayStats, RelaySummary};
use crate::migrate::codec::{CodecKind, Encoder, Format};
use qatzip_sys::QatZip;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// The MAC key both ends derived from the control session.
    pub mac: FrameMac,
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

/// A fresh relay session: the MACs bind every frame to it.
fn session_id() -> Result<u64, RelayError> {
    let b = crate::migrate::auth::random::<8>()
        .map_err(|e| RelayError::Io(std::io::Error::other(e.to_string())))?;
    Ok(u64::from_le_bytes(b))
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
    let session = session_id()?;
    let mut shut = Vec::with_capacity(n);
    for (i, c) in conns.iter().enumerate() {
        let mut c2 = c.try_clone()?;
        c.set_nodelay(true)?;
        c.set_write_timeout(Some(cfg.stall_timeout))?;
        if let Some(b) = cfg.sndbuf {
            set_sndbuf(c, b)?;
        }
        let hello = Hello {
            session,
            conn: i as u16,
            conns: n as u16,
            chunk_size: cfg.chunk_size as u32,
        }
        .encode();
        c2.write_all(&hello)?;
        c2.write_all(&cfg.mac.hello(&hello))?;
        shut.push(c2);
    }
    let err = FirstError::default();
    let total = AtomicU64::new(0);
    // Little queueing: what waits here at switchover is downtime.
    let (tx, rx) = sync_channel::<(u64, Vec<u8>)>(n);
    let rx = Mutex::new(rx);
    let mut confirm = shut[0].try_clone()?;

    let res = std::thread::scope(|s| {
        for (i, conn) in conns.into_iter().enumerate() {
            let (rx, err, total) = (&rx, &err, &total);
            let to = FrameTo {
                mac: &cfg.mac,
                session,
                conn: i as u16,
            };
            s.spawn(move || {
                if let Err(e) = send_worker(conn, to, rx, cfg, stats, total, err) {
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
    let mut tag = [0u8; TAG_LEN];
    if let Err(e) = confirm
        .read_exact(&mut done)
        .and_then(|()| confirm.read_exact(&mut tag))
    {
        for c in &shut {
            let _ = c.shutdown(Shutdown::Both);
        }
        return Err(RelayError::NoConfirm(e.to_string()));
    }
    if done[..8] != DONE_MAGIC {
        return Err(RelayError::BadMagic("done"));
    }
    if !cfg.mac.done_ok(session, &done, &tag) {
        return Err(RelayError::ForgedConfirm);
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
    to: FrameTo<'_>,
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
        to.chunk(&mut conn, seq, fmt, &raw, payload)?;
        stats.wire_bytes.fetch_add(
            (HDR_LEN + payload.len() + TAG_LEN) as u64,
            Ordering::Relaxed,
        );
        stats.chunks.fetch_add(1, Ordering::Relaxed);
    }
    if err.failed() {
        return Err(RelayError::Cancelled);
    }
    to.write(
        &mut conn,
        &ChunkHeader::end(total.load(Ordering::SeqCst)),
        &[],
    )?;
    stats
        .wire_bytes
        .fetch_add((HDR_LEN + TAG_LEN) as u64, Ordering::Relaxed);
    conn.flush()?;
    Ok(())
}
