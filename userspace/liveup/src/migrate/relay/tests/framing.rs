//! The hello and chunk headers: their round trip and damage to them.

use super::*;

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
