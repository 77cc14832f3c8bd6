//! The receiving end: decode and verify chunks on one thread per
//! connection, write them to QEMU in order, confirm to the sender.

use super::wire::{
    ChunkHeader, FrameMac, Hello, DONE_LEN, DONE_MAGIC, HDR_LEN, HELLO_LEN, TAG_LEN,
};
use super::{RelayError, RelayStats, RelaySummary};
use crate::migrate::codec::Decoder;
use qatzip_sys::QatZip;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bytes the receiver holds while waiting for an earlier chunk.
pub const MAX_PENDING_BYTES: usize = 512 << 20;
/// How long a new connection has to send its hello and tag before it is
/// dropped (it does not hold up the others: each is read on its own thread).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections in their hello at once; more are closed unread.
pub const MAX_HANDSHAKES: usize = 64;

/// How the receiver behaves.
#[derive(Clone)]
pub struct ReceiveConfig {
    /// Decode gzip chunks through QATzip (QAT, or its software fallback).
    pub qat: Option<Arc<QatZip>>,
    /// Give up when no sender connects, or a connection is silent, this long.
    pub idle_timeout: Duration,
    /// The MAC key both ends derived from the control session.
    pub mac: FrameMac,
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
    let (session, conns) = accept_all(listener, cfg)?;
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
                if let Err(e) = receive_worker(conn, session, i as u16, cfg, stats, &tx, stop) {
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
    let mut msg = done.to_vec();
    msg.extend_from_slice(&cfg.mac.done(session, &done));
    shut[0].write_all(&msg)?;
    Ok(stats.snapshot())
}

/// Accept connections until one authenticated hello (its tag checked under
/// `cfg.mac`) has come for every connection of one relay session. A
/// connection that sends anything else, or nothing within HELLO_TIMEOUT,
/// is dropped with a line on stderr and the wait goes on: only the
/// overall `idle_timeout` ends it. Returns the session and its connections
/// in order.
fn accept_all(
    listener: &TcpListener,
    cfg: &ReceiveConfig,
) -> Result<(u64, Vec<TcpStream>), RelayError> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + cfg.idle_timeout;
    let mut slots: Vec<Option<TcpStream>> = Vec::new();
    let mut first: Option<Hello> = None;
    let (tx, rx) = channel::<(TcpStream, SocketAddr, Result<Hello, RelayError>)>();
    let busy = Arc::new(AtomicUsize::new(0));
    loop {
        if !slots.is_empty() && slots.iter().all(Option::is_some) {
            break;
        }
        while let Ok((c, peer, hello)) = rx.try_recv() {
            let placed = hello.and_then(|h| {
                match first {
                    Some(f) if f.session != h.session || f.conns != h.conns => {
                        return Err(RelayError::Hello(format!("{h:?} does not belong to {f:?}")));
                    }
                    Some(_) => {}
                    None => {
                        first = Some(h);
                        slots = (0..h.conns).map(|_| None).collect();
                    }
                }
                let slot = &mut slots[h.conn as usize];
                if slot.is_some() {
                    return Err(RelayError::Hello(format!("connection {} twice", h.conn)));
                }
                *slot = Some(c);
                Ok(())
            });
            if let Err(e) = placed {
                log::warn!("relay: dropped a connection from {peer}: {e}");
            }
        }
        if !slots.is_empty() && slots.iter().all(Option::is_some) {
            break;
        }
        match listener.accept() {
            Ok((c, peer)) => {
                if busy.load(Ordering::SeqCst) >= MAX_HANDSHAKES {
                    log::warn!("relay: dropped a connection from {peer}: {MAX_HANDSHAKES} already in their hello");
                    continue;
                }
                busy.fetch_add(1, Ordering::SeqCst);
                let (tx, mac, busy) = (tx.clone(), cfg.mac.clone(), busy.clone());
                let idle = cfg.idle_timeout;
                std::thread::spawn(move || {
                    let r = read_hello(&c, &mac, idle);
                    busy.fetch_sub(1, Ordering::SeqCst);
                    let _ = tx.send((c, peer, r));
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(RelayError::Io(std::io::Error::new(
                        ErrorKind::TimedOut,
                        "relay: timed out waiting for the sender's connections",
                    )));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
    listener.set_nonblocking(false)?;
    let session = first.map_or(0, |f| f.session);
    Ok((session, slots.into_iter().flatten().collect()))
}

/// One connection's hello and tag, checked; the connection left ready for
/// frames (blocking, `idle` read timeout).
fn read_hello(c: &TcpStream, mac: &FrameMac, idle: Duration) -> Result<Hello, RelayError> {
    c.set_nonblocking(false)?;
    c.set_read_timeout(Some(HELLO_TIMEOUT.min(idle)))?;
    c.set_nodelay(true)?;
    let mut b = [0u8; HELLO_LEN];
    let mut tag = [0u8; TAG_LEN];
    let mut r = c;
    r.read_exact(&mut b)?;
    let h = Hello::decode(&b)?;
    r.read_exact(&mut tag)?;
    if !mac.hello_ok(&b, &tag) {
        return Err(RelayError::Hello(
            "its MAC does not match (no key, or another key)".into(),
        ));
    }
    c.set_read_timeout(Some(idle))?;
    Ok(h)
}

fn receive_worker(
    mut conn: TcpStream,
    session: u64,
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
        stats.wire_bytes.fetch_add(
            (HDR_LEN + h.wire_len as usize + TAG_LEN) as u64,
            Ordering::Relaxed,
        );
        // (an END frame has no payload: decode checked wire_len == 0)
        wire.resize(h.wire_len as usize, 0);
        conn.read_exact(&mut wire).map_err(io_err)?;
        let mut tag = [0u8; TAG_LEN];
        conn.read_exact(&mut tag).map_err(io_err)?;
        // Nothing unauthenticated goes further, not even to the decoder.
        if !cfg.mac.frame_ok(session, idx, &hb, &wire, &tag) {
            return Err(RelayError::Forged {
                conn: idx,
                seq: h.seq,
            });
        }
        if h.is_end() {
            let _ = tx.send(Msg::End(h.seq));
            return Ok(());
        }
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
