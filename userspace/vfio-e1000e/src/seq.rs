//! The test frames and the accounting of their sequence numbers.
//!
//! A test frame (tools/nic-sender.pl sends them): broadcast destination,
//! EtherType 0x88B5 (IEEE local experimental), the 4 bytes "KHSQ", then a
//! 64-bit big-endian sequence number at byte `SEQ_OFFSET`, padded to 60.

use serde::Serialize;

pub const ETHERTYPE: u16 = 0x88b5;
pub const MAGIC: &[u8; 4] = b"KHSQ";
pub const MAGIC_OFFSET: usize = 14;
pub const SEQ_OFFSET: usize = 18;
pub const MIN_FRAME: usize = 60;
/// Lost ranges kept in a report; the total counts them all.
pub const MAX_RANGES: usize = 64;

/// The sequence number of a test frame; `None` for any other frame.
pub fn parse(frame: &[u8]) -> Option<u64> {
    if frame.len() < SEQ_OFFSET + 8 {
        return None;
    }
    if u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE {
        return None;
    }
    if &frame[MAGIC_OFFSET..MAGIC_OFFSET + 4] != MAGIC {
        return None;
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&frame[SEQ_OFFSET..SEQ_OFFSET + 8]);
    Some(u64::from_be_bytes(s))
}

/// A test frame carrying `seq` (for tests and for a sender in Rust).
pub fn build(seq: u64) -> [u8; MIN_FRAME] {
    let mut f = [0u8; MIN_FRAME];
    f[..6].fill(0xff);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    f[MAGIC_OFFSET..MAGIC_OFFSET + 4].copy_from_slice(MAGIC);
    f[SEQ_OFFSET..SEQ_OFFSET + 8].copy_from_slice(&seq.to_be_bytes());
    f
}

/// Frames seen in order of arrival: how many, the first and last sequence
/// numbers, and the gaps between consecutive ones (lost frames). A number
/// not above the last one is counted as out of order and otherwise ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SeqTracker {
    pub frames: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub lost_total: u64,
    /// Inclusive ranges of lost numbers, the first `MAX_RANGES`.
    pub lost: Vec<(u64, u64)>,
    pub out_of_order: u64,
}

impl SeqTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A tracker that continues after `last` (e.g. across a re-attach), so
    /// a gap right at the start is counted.
    pub fn after(last: u64) -> Self {
        SeqTracker {
            last_seq: Some(last),
            ..Self::default()
        }
    }

    pub fn record(&mut self, seq: u64) {
        self.frames += 1;
        if self.first_seq.is_none() {
            self.first_seq = Some(seq);
        }
        match self.last_seq {
            None => self.last_seq = Some(seq),
            Some(last) if seq == last.wrapping_add(1) => self.last_seq = Some(seq),
            Some(last) if seq > last => {
                self.lost_total += seq - last - 1;
                if self.lost.len() < MAX_RANGES {
                    self.lost.push((last + 1, seq - 1));
                }
                self.last_seq = Some(seq);
            }
            Some(_) => self.out_of_order += 1,
        }
    }

    /// Lost ranges as text: "5-9,12" (empty when none).
    pub fn lost_text(&self) -> String {
        let mut v: Vec<String> = self
            .lost
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        if self.lost.len() == MAX_RANGES {
            v.push("...".into());
        }
        v.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_others_are_refused() {
        let f = build(0x0102_0304_0506_0708);
        assert_eq!(parse(&f), Some(0x0102_0304_0506_0708));
        assert_eq!(&f[SEQ_OFFSET..SEQ_OFFSET + 2], &[1, 2], "big-endian");
        let mut other = f;
        other[12] = 0x08; // IPv4
        other[13] = 0x00;
        assert_eq!(parse(&other), None);
        let mut bad_magic = f;
        bad_magic[MAGIC_OFFSET] = b'X';
        assert_eq!(parse(&bad_magic), None);
        assert_eq!(parse(&f[..SEQ_OFFSET + 7]), None, "too short");
        // The CRC may or may not be stripped: longer frames parse the same.
        let mut long = f.to_vec();
        long.extend_from_slice(&[0; 4]);
        assert_eq!(parse(&long), parse(&f));
    }

    #[test]
    fn in_order_frames_lose_nothing() {
        let mut t = SeqTracker::new();
        for s in 100..200 {
            t.record(s);
        }
        assert_eq!(t.frames, 100);
        assert_eq!((t.first_seq, t.last_seq), (Some(100), Some(199)));
        assert_eq!(t.lost_total, 0);
        assert!(t.lost.is_empty());
        assert_eq!(t.lost_text(), "");
    }

    #[test]
    fn gaps_are_counted_as_ranges() {
        let mut t = SeqTracker::new();
        for s in [1, 2, 5, 6, 8, 20] {
            t.record(s);
        }
        assert_eq!(t.lost, vec![(3, 4), (7, 7), (9, 19)]);
        assert_eq!(t.lost_total, 2 + 1 + 11);
        assert_eq!(t.lost_text(), "3-4,7,9-19");
        assert_eq!(t.last_seq, Some(20));
    }

    #[test]
    fn duplicates_and_old_frames_are_out_of_order() {
        let mut t = SeqTracker::new();
        for s in [10, 11, 11, 3, 12] {
            t.record(s);
        }
        assert_eq!(t.out_of_order, 2);
        assert_eq!(t.lost_total, 0);
        assert_eq!(t.last_seq, Some(12));
        assert_eq!(t.frames, 5);
    }

    #[test]
    fn continuing_after_a_known_number_counts_the_gap() {
        let mut t = SeqTracker::after(50);
        t.record(55);
        assert_eq!(t.lost, vec![(51, 54)]);
        assert_eq!(t.first_seq, Some(55));
    }

    #[test]
    fn the_range_list_is_bounded_but_the_total_is_not() {
        let mut t = SeqTracker::new();
        for i in 0..(MAX_RANGES as u64 + 10) {
            t.record(i * 3);
        }
        assert_eq!(t.lost.len(), MAX_RANGES);
        assert_eq!(t.lost_total, 2 * (MAX_RANGES as u64 + 9));
        assert!(t.lost_text().ends_with(",..."));
    }
}
