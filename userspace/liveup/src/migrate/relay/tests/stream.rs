//! Whole relays over loopback: every codec, connection count and chunk
//! size, a real sender's corrupted chunk, incompressible data.

use super::*;

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
        let recv = receive_on(l, rcfg());
        let conns = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut c = cfg(codec, 64 << 10);
        c.corrupt_chunk = Some(5);
        let s = send_over(&data[..], conns, &c);
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
