//! What the receiver writes of a stream out of order, damaged, with a
//! chunk missing or twice, or cut short: in order, and nothing at or after
//! the first bad chunk.

use super::*;

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
    f.frame(0, &raw_header(1, b"evil"), b"evi1");
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
    fake_to(&m, 0)
        .chunk(&mut f.conns[0], 0, fmt, &data, &z)
        .unwrap();
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
    f.conns[1]
        .write_all(&raw_header(1, b"bbbb").encode())
        .unwrap();
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
