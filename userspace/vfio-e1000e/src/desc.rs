//! RX descriptors, 16 bytes each in both formats the 82574 offers.
//!
//! Legacy: buffer address (8), length (2), checksum (2), status (1),
//! errors (1), special (2). The device writes back the last 8 bytes.
//! Extended (RFCTL.EXSTEN): the driver writes the buffer address and 8
//! zero bytes; the device overwrites all 16 with MRQ (4), RSS/checksum (4),
//! status+errors (4), length (2), VLAN (2).
//! In both, status bit 0 is DD (descriptor done) and bit 1 EOP.

use serde::Serialize;

pub const DESC_LEN: usize = 16;
pub const STATUS_DD: u32 = 1 << 0;
pub const STATUS_EOP: u32 = 1 << 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DescKind {
    Legacy,
    Extended,
}

impl DescKind {
    pub fn code(self) -> u32 {
        match self {
            DescKind::Legacy => 0,
            DescKind::Extended => 1,
        }
    }

    pub fn from_code(c: u32) -> Option<Self> {
        match c {
            0 => Some(DescKind::Legacy),
            1 => Some(DescKind::Extended),
            _ => None,
        }
    }
}

/// What the device wrote back into a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writeback {
    pub done: bool,
    pub eop: bool,
    pub length: u16,
    pub errors: u8,
}

/// A descriptor handed to the device: receive into `buf_iova`.
pub fn encode(_kind: DescKind, buf_iova: u64) -> [u8; DESC_LEN] {
    // Both formats: address in the first 8 bytes, the rest zero (for
    // legacy that clears the status, for extended the reserved word).
    let mut d = [0u8; DESC_LEN];
    d[..8].copy_from_slice(&buf_iova.to_le_bytes());
    d
}

pub fn decode(kind: DescKind, d: &[u8; DESC_LEN]) -> Writeback {
    match kind {
        DescKind::Legacy => {
            let status = u32::from(d[12]);
            Writeback {
                done: status & STATUS_DD != 0,
                eop: status & STATUS_EOP != 0,
                length: u16::from_le_bytes([d[8], d[9]]),
                errors: d[13],
            }
        }
        DescKind::Extended => {
            let se = u32::from_le_bytes([d[8], d[9], d[10], d[11]]);
            Writeback {
                done: se & STATUS_DD != 0,
                eop: se & STATUS_EOP != 0,
                length: u16::from_le_bytes([d[12], d[13]]),
                errors: (se >> 24) as u8,
            }
        }
    }
}

/// The byte offset, within a descriptor, of the word holding DD: what a
/// poller reads first (legacy: the status byte at 12, in the word at 12;
/// extended: the status/error word at 8).
pub fn status_word_offset(kind: DescKind) -> usize {
    match kind {
        DescKind::Legacy => 12,
        DescKind::Extended => 8,
    }
}

/// DD, from the status word at `status_word_offset`.
pub fn word_done(word: u32) -> bool {
    word & STATUS_DD != 0
}

/// Ring index arithmetic for a ring of `len` descriptors.
pub fn next(i: u32, len: u32) -> u32 {
    if i + 1 >= len {
        0
    } else {
        i + 1
    }
}

/// The descriptor software looks at next, given the tail register: the
/// driver keeps the tail on the last descriptor it cleaned (that one is
/// armed but not the device's), so the next to clean follows it.
pub fn next_to_clean(rdt: u32, len: u32) -> u32 {
    next(rdt % len.max(1), len)
}

/// Descriptors the device owns (armed, not yet written): head up to, not
/// including, tail.
pub fn owned_by_device(rdh: u32, rdt: u32, len: u32) -> u32 {
    if rdh <= rdt {
        rdt - rdh
    } else {
        len - rdh + rdt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_puts_the_address_first_and_clears_status() {
        for k in [DescKind::Legacy, DescKind::Extended] {
            let d = encode(k, 0x1_2345_6780);
            assert_eq!(&d[..8], &0x1_2345_6780u64.to_le_bytes());
            assert!(d[8..].iter().all(|&b| b == 0));
            let wb = decode(k, &d);
            assert!(!wb.done && !wb.eop);
            assert_eq!(wb.length, 0);
        }
    }

    #[test]
    fn legacy_writeback() {
        let mut d = encode(DescKind::Legacy, 0x4000_0000);
        d[8..10].copy_from_slice(&60u16.to_le_bytes());
        d[12] = 0x03; // DD | EOP
        let wb = decode(DescKind::Legacy, &d);
        assert_eq!(
            wb,
            Writeback {
                done: true,
                eop: true,
                length: 60,
                errors: 0
            }
        );
        let w = u32::from_le_bytes(d[12..16].try_into().unwrap());
        assert!(word_done(w));
        assert_eq!(status_word_offset(DescKind::Legacy), 12);
    }

    #[test]
    fn extended_writeback() {
        let mut d = [0u8; DESC_LEN];
        d[..8].copy_from_slice(&0xdead_beefu64.to_le_bytes()); // MRQ/RSS: not ours
        d[8..12].copy_from_slice(&(0x01u32 | (0x40 << 24)).to_le_bytes());
        d[12..14].copy_from_slice(&1514u16.to_le_bytes());
        let wb = decode(DescKind::Extended, &d);
        assert!(wb.done && !wb.eop);
        assert_eq!(wb.length, 1514);
        assert_eq!(wb.errors, 0x40);
        assert_eq!(
            DescKind::from_code(DescKind::Extended.code()),
            Some(DescKind::Extended)
        );
        assert_eq!(DescKind::from_code(7), None);
    }

    #[test]
    fn ring_arithmetic() {
        assert_eq!(next(0, 8), 1);
        assert_eq!(next(7, 8), 0);
        // Right after init: head 0, tail len-1; the next to clean is 0.
        assert_eq!(next_to_clean(7, 8), 0);
        assert_eq!(next_to_clean(3, 8), 4);
        assert_eq!(owned_by_device(0, 7, 8), 7);
        assert_eq!(owned_by_device(5, 2, 8), 5);
        assert_eq!(owned_by_device(4, 4, 8), 0);
    }
}
