//! The frame MACs and the hello tags: forged or replayed frames, stray
//! connections and a sender without the key.

use super::*;

#[test]
fn forged_frames_stop_the_stream_before_them() {
    // A frame MAC'd under another key (its CRC is right).
    let (addr, h) = receiver();
    let mut f = Fake::connect(addr, 1, 4);
    f.chunk(0, 0, b"good");
    fake_to(&other_mac(), 0)
        .write(&mut f.conns[0], &raw_header(1, b"evil"), b"evil")
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
        fake_to(&other_mac(), c)
            .write(&mut f.conns[c], &ChunkHeader::end(2), &[])
            .unwrap();
    }
    let (r, _) = h.join().unwrap();
    assert!(matches!(r, Err(RelayError::Forged { seq: 2, .. })), "{r:?}");

    // A good frame of connection 0 replayed on connection 1, and one of
    // another session: neither verifies.
    let (addr, h) = receiver();
    let mut f = Fake::connect(addr, 2, 4);
    fake_to(&f.mac.clone(), 0)
        .write(&mut f.conns[1], &raw_header(0, b"aaaa"), b"aaaa")
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
        .write(&mut f.conns[0], &raw_header(0, b"aaaa"), b"aaaa")
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
    let h = receive_on(l, rcfg());
    std::thread::sleep(Duration::from_millis(200));
    let data = sample(1 << 20, 6);
    let conns = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let sent = send_over(&data[..], conns, &cfg(CodecKind::Zstd, 64 << 10));
    let (r, out) = h.join().unwrap();
    r.unwrap();
    sent.unwrap();
    assert!(out == data);
    drop((silent, garbage, wrong_key));
}

#[test]
fn a_sender_without_the_key_gets_nowhere() {
    let (l, addr) = listener();
    let h = receive_on(
        l,
        ReceiveConfig {
            idle_timeout: Duration::from_millis(800),
            ..rcfg()
        },
    );
    let mut c = cfg(CodecKind::Zstd, 4096);
    c.mac = other_mac();
    c.confirm_timeout = Duration::from_millis(1500);
    let conns = vec![TcpStream::connect(addr).unwrap()];
    let s = send_over(&sample(50_000, 3)[..], conns, &c);
    let (r, out) = h.join().unwrap();
    assert!(r.is_err(), "{r:?}");
    assert!(out.is_empty());
    assert!(s.is_err(), "{s:?}");
}
