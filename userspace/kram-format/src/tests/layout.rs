//! Tests of the layout's building blocks: the geometry, CRC32C and the
//! owner-map word.

use crate::*;

use super::BASE;

#[test]
fn geometry_is_checked() {
    assert_eq!(Geometry::new(BASE + 1, 1 << 20), Err(Error::Geometry));
    assert_eq!(Geometry::new(BASE, (1 << 20) + 1), Err(Error::Geometry));
    assert_eq!(Geometry::new(BASE, 4096 * 4), Err(Error::Geometry));
    assert_eq!(
        Geometry::new(u64::MAX - 0xfff, 1 << 20),
        Err(Error::Geometry)
    );
    let g = Geometry::new(BASE, 256 << 20).unwrap();
    assert_eq!(g.pages, 65536);
    assert_eq!(g.map_pages, 64);
    assert_eq!(g.data_first(), 66);
    assert_eq!(g.phys(2), BASE + 8192);
    assert_eq!(g.index_of(BASE + 8192), Some(2));
    assert_eq!(g.index_of(BASE + 8193), None);
    assert_eq!(g.index_of(BASE + (256 << 20)), None);
    assert_eq!(g.index_of(BASE - 4096), None);
}

#[test]
fn crc32c_known_answer() {
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
}

#[test]
fn entries_detect_damage_and_misplacement() {
    let w = encode_entry(100, 7, true);
    assert_eq!(decode_entry(100, w), Ok((7, true)));
    assert_eq!(decode_entry(101, w), Err(Error::Corrupt(101)));
    for bit in 0..32 {
        assert!(decode_entry(100, w ^ (1 << bit)).is_err(), "bit {bit}");
    }
    assert_eq!(decode_entry(5, 0), Err(Error::Corrupt(5)));
}
