//! Bounded fuzzing of what a relay receiver reads from the network (a
//! peer is hostile), run by `cargo test` in seconds: headers with a valid
//! seal and random fields, and compressed payloads of random bytes.
//! Decoding refuses or gives back exactly what encodes to the same bytes;
//! nothing panics or allocates beyond the header's bound.

use super::wire::{
    ChunkHeader, Hello, CHUNK_MAGIC, HDR_LEN, HELLO_LEN, HELLO_MAGIC, MAX_CHUNK, VERSION,
};
use crate::migrate::codec::{Decoder, Format};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(500),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// `magic`, then `body`, then a valid seal (CRC-32 of bytes 0..28).
fn sealed(magic: &[u8], body: &[u8]) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..magic.len()].copy_from_slice(magic);
    b[magic.len()..28].copy_from_slice(&body[..28 - magic.len()]);
    let c = crc32fast::hash(&b[..28]);
    b[28..].copy_from_slice(&c.to_le_bytes());
    b
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hello_headers(body in proptest::collection::vec(any::<u8>(), 20), known in any::<bool>()) {
        let mut body = body;
        if known {
            body[8..10].copy_from_slice(&VERSION.to_le_bytes());
        }
        let b: [u8; HELLO_LEN] = sealed(&HELLO_MAGIC, &body);
        if let Ok(h) = Hello::decode(&b) {
            prop_assert!(h.conn < h.conns && h.chunk_size as usize <= MAX_CHUNK);
            prop_assert_eq!(h.encode(), b);
        }
    }

    #[test]
    fn chunk_headers(body in proptest::collection::vec(any::<u8>(), 24), small in any::<bool>()) {
        let mut body = body;
        if small {
            body[1] &= 3; // a known format
            body[12] &= 0x3f; body[13] = 0; body[14] = 0; body[15] = 0; // raw_len < 64
        }
        let b: [u8; HDR_LEN] = sealed(&CHUNK_MAGIC, &body);
        if let Ok(h) = ChunkHeader::decode(&b) {
            prop_assert!(h.raw_len as usize <= MAX_CHUNK);
            prop_assert_eq!(h.encode(), b);
        }
    }

    #[test]
    fn hostile_payloads(
        format in 0u8..4,
        wire in proptest::collection::vec(any::<u8>(), 0..2048),
        raw_len in 0usize..65536,
    ) {
        let format = Format::try_from(format).unwrap();
        let mut dec = Decoder::new(None).unwrap();
        let mut out = Vec::new();
        if dec.decompress(format, &wire, raw_len, &mut out).is_ok() {
            prop_assert_eq!(out.len(), raw_len);
        }
        prop_assert!(out.capacity() <= raw_len + 64 * 1024 || format == Format::Raw);
    }
}
