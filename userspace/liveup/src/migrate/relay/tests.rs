//! The relay's tests: whole relays over loopback, and a hand-driven
//! sender for the receiver's checks.

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
    // Never more than the headers and MACs over the raw size.
    let frames = sent.chunks + 2; // two END markers
    assert_eq!(
        sent.wire_bytes,
        data.len() as u64 + frames * (HDR_LEN + TAG_LEN) as u64
    );
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
        let to = FrameTo {
            mac: &self.mac,
            session: FAKE_SESSION,
            conn: conn as u16,
        };
        to.chunk(&mut self.conns[conn], seq, Format::Raw, data, data)
            .unwrap();
    }
    /// A frame with this header and payload, MAC'd.
    fn frame(&mut self, conn: usize, hdr: &ChunkHeader, payload: &[u8]) {
        let to = FrameTo {
            mac: &self.mac,
            session: FAKE_SESSION,
            conn: conn as u16,
        };
        to.write(&mut self.conns[conn], hdr, payload).unwrap();
    }
    fn end(&mut self, conn: usize, total: u64) {
        self.frame(conn, &ChunkHeader::end(total), &[]);
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
    let mut tag = [0u8; TAG_LEN];
    f.conns[0].read_exact(&mut done).unwrap();
    f.conns[0].read_exact(&mut tag).unwrap();
    assert_eq!(&done[..8], &DONE_MAGIC);
    assert!(f.mac.done_ok(FAKE_SESSION, &done, &tag));
    assert!(!other_mac().done_ok(FAKE_SESSION, &done, &tag));
    assert!(!f.mac.done_ok(FAKE_SESSION + 1, &done, &tag));
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
    f.frame(0, &hdr, b"evi1");
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
    let m = f.mac.clone();
    let to = FrameTo {
        mac: &m,
        session: FAKE_SESSION,
        conn: 0,
    };
    to.chunk(&mut f.conns[0], 0, fmt, &data, &z).unwrap();
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
            mac: mac(),
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

#[test]
fn forged_frames_stop_the_stream_before_them() {
    let hdr = |seq: u64, data: &[u8]| ChunkHeader {
        flags: 0,
        format: Format::Raw,
        seq,
        raw_len: data.len() as u32,
        wire_len: data.len() as u32,
        raw_crc: crc32fast::hash(data),
    };
    // A frame MAC'd under another key (its CRC is right).
    let (addr, h) = receiver();
    let mut f = Fake::connect(addr, 1, 4);
    f.chunk(0, 0, b"good");
    let forged = FrameTo {
        mac: &other_mac(),
        session: FAKE_SESSION,
        conn: 0,
    };
    forged
        .write(&mut f.conns[0], &hdr(1, b"evil"), b"evil")
        .unwrap();
    f.end(0, 2);
    let (r, out) = h.join().unwrap();
    assert!(
        matches!(r, Err(RelayError::Forged { conn: 0, seq: 1 })),
        "{r:?}"
    );
    assert_eq!(out, b"good");

    // A forged END on every connection: the stream is not reported complete.
    let (addr, h) = receiver();
    let mut f = Fake::connect(addr, 2, 4);
    f.chunk(0, 0, b"aaaa");
    f.chunk(1, 1, b"bbbb");
    for c in 0..2 {
        let forged = FrameTo {
            mac: &other_mac(),
            session: FAKE_SESSION,
            conn: c as u16,
        };
        forged
            .write(&mut f.conns[c], &ChunkHeader::end(2), &[])
            .unwrap();
    }
    let (r, _) = h.join().unwrap();
    assert!(matches!(r, Err(RelayError::Forged { seq: 2, .. })), "{r:?}");

    // A good frame of connection 0 replayed on connection 1, and one of
    // another session: neither verifies.
    let (addr, h) = receiver();
    let mut f = Fake::connect(addr, 2, 4);
    let moved = FrameTo {
        mac: &f.mac.clone(),
        session: FAKE_SESSION,
        conn: 0,
    };
    moved
        .write(&mut f.conns[1], &hdr(0, b"aaaa"), b"aaaa")
        .unwrap();
    let (r, out) = h.join().unwrap();
    assert!(
        matches!(r, Err(RelayError::Forged { conn: 1, seq: 0 })),
        "{r:?}"
    );
    assert!(out.is_empty());
    let (addr, h) = receiver();
    let mut f = Fake::connect(addr, 1, 4);
    let other = FrameTo {
        mac: &f.mac.clone(),
        session: FAKE_SESSION + 1,
        conn: 0,
    };
    other
        .write(&mut f.conns[0], &hdr(0, b"aaaa"), b"aaaa")
        .unwrap();
    let (r, _) = h.join().unwrap();
    assert!(
        matches!(r, Err(RelayError::Forged { conn: 0, seq: 0 })),
        "{r:?}"
    );
}

#[test]
fn stray_connections_are_dropped_and_the_relay_goes_on() {
    let (l, addr) = listener();
    // Before the sender: a port scanner (connects, sends nothing, stays),
    // garbage, a hello without its tag, and a hello of the right session
    // shape MAC'd under another key (it claims connection 0).
    let silent = TcpStream::connect(addr).unwrap();
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage.write_all(&[0x55; 64]).unwrap();
    let hello = Hello {
        session: FAKE_SESSION,
        conn: 0,
        conns: 2,
        chunk_size: 4,
    }
    .encode();
    let mut untagged = TcpStream::connect(addr).unwrap();
    untagged.write_all(&hello).unwrap();
    drop(untagged);
    let mut wrong_key = TcpStream::connect(addr).unwrap();
    wrong_key.write_all(&hello).unwrap();
    wrong_key.write_all(&other_mac().hello(&hello)).unwrap();
    // Let the receiver take them all in before the sender shows up.
    let h = std::thread::spawn(move || {
        let mut out = Vec::new();
        let r = receive(&l, &mut out, &rcfg(), &RelayStats::default());
        (r, out)
    });
    std::thread::sleep(Duration::from_millis(200));
    let data = sample(1 << 20, 6);
    let conns = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let sent = send(
        &data[..],
        conns,
        &cfg(CodecKind::Zstd, 64 << 10),
        &RelayStats::default(),
        &AtomicBool::new(false),
    );
    let (r, out) = h.join().unwrap();
    r.unwrap();
    sent.unwrap();
    assert!(out == data);
    drop((silent, garbage, wrong_key));
}

#[test]
fn a_sender_without_the_key_gets_nowhere() {
    let (l, addr) = listener();
    let h = std::thread::spawn(move || {
        let mut out = Vec::new();
        let cfg = ReceiveConfig {
            idle_timeout: Duration::from_millis(800),
            ..rcfg()
        };
        let r = receive(&l, &mut out, &cfg, &RelayStats::default());
        (r, out)
    });
    let mut c = cfg(CodecKind::Zstd, 4096);
    c.mac = other_mac();
    c.confirm_timeout = Duration::from_millis(1500);
    let conns = vec![TcpStream::connect(addr).unwrap()];
    let s = send(
        &sample(50_000, 3)[..],
        conns,
        &c,
        &RelayStats::default(),
        &AtomicBool::new(false),
    );
    let (r, out) = h.join().unwrap();
    assert!(r.is_err(), "{r:?}");
    assert!(out.is_empty());
    assert!(s.is_err(), "{s:?}");
}
