//! The relay's tests: whole relays over loopback, and a hand-driven
//! sender for the receiver's checks. The helpers both kinds share are
//! here; the tests, by what they check, in tests/: `stream.rs` whole
//! relays, `framing.rs` the headers, `integrity.rs` what the receiver
//! writes of a damaged or incomplete stream, `liveness.rs` a peer that
//! stalls or goes, `auth.rs` forged frames and strangers.

mod auth;
mod framing;
mod integrity;
mod liveness;
mod stream;

use super::super::codec::tests::sample;
use super::wire::le64;
use super::*;
use crate::migrate::auth::Key;
use crate::migrate::codec::{CodecKind, Encoder, Format};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// The test key both ends share (`other_mac`: a peer without it).
fn mac() -> FrameMac {
    FrameMac::new(Key::from_bytes([7; 32]))
}

fn other_mac() -> FrameMac {
    FrameMac::new(Key::from_bytes([8; 32]))
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
        mac: mac(),
    }
}

fn rcfg() -> ReceiveConfig {
    ReceiveConfig {
        qat: None,
        idle_timeout: Duration::from_secs(10),
        mac: mac(),
    }
}

/// A receiver on `l` in a thread of its own; its result and what it
/// wrote.
fn receive_on(l: TcpListener, cfg: ReceiveConfig) -> std::thread::JoinHandle<Outcome> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let r = receive(&l, &mut out, &cfg, &RelayStats::default());
        (r, out)
    })
}

/// Send `data` over `conns`, never cancelled.
fn send_over(
    data: &[u8],
    conns: Vec<TcpStream>,
    cfg: &SendConfig,
) -> Result<RelaySummary, RelayError> {
    send(
        data,
        conns,
        cfg,
        &RelayStats::default(),
        &AtomicBool::new(false),
    )
}

/// An uncompressed chunk's header for `data`, its CRC right.
fn raw_header(seq: u64, data: &[u8]) -> ChunkHeader {
    ChunkHeader {
        flags: 0,
        format: Format::Raw,
        seq,
        raw_len: data.len() as u32,
        wire_len: data.len() as u32,
        raw_crc: crc32fast::hash(data),
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

/// A hand-driven sender: hellos, then frames the test chooses, all with
/// good MACs unless it says otherwise.
struct Fake {
    conns: Vec<TcpStream>,
    mac: FrameMac,
}

const FAKE_SESSION: u64 = 9;

impl Fake {
    fn connect(addr: SocketAddr, n: u16, chunk: u32) -> Fake {
        let mac = mac();
        let conns = (0..n)
            .map(|i| {
                let mut c = TcpStream::connect(addr).unwrap();
                let h = Hello {
                    session: FAKE_SESSION,
                    conn: i,
                    conns: n,
                    chunk_size: chunk,
                }
                .encode();
                c.write_all(&h).unwrap();
                c.write_all(&mac.hello(&h)).unwrap();
                c
            })
            .collect();
        Fake { conns, mac }
    }
    fn chunk(&mut self, conn: usize, seq: u64, data: &[u8]) {
        fake_to(&self.mac, conn)
            .chunk(&mut self.conns[conn], seq, Format::Raw, data, data)
            .unwrap();
    }
    /// A frame with this header and payload, MAC'd.
    fn frame(&mut self, conn: usize, hdr: &ChunkHeader, payload: &[u8]) {
        fake_to(&self.mac, conn)
            .write(&mut self.conns[conn], hdr, payload)
            .unwrap();
    }
    fn end(&mut self, conn: usize, total: u64) {
        self.frame(conn, &ChunkHeader::end(total), &[]);
    }
}

/// Connection `conn`'s frames of the fake sender's session, under `mac`.
fn fake_to(mac: &FrameMac, conn: usize) -> FrameTo<'_> {
    FrameTo {
        mac,
        session: FAKE_SESSION,
        conn: conn as u16,
    }
}

type Outcome = (Result<RelaySummary, RelayError>, Vec<u8>);

fn receiver() -> (SocketAddr, std::thread::JoinHandle<Outcome>) {
    let (l, addr) = listener();
    (addr, receive_on(l, rcfg()))
}
