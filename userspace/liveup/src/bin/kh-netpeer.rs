//! The far end of a test VM's virtio-net NIC in the rig (selftests/upgrade):
//! QEMU's `-netdev dgram` carries the guest's Ethernet frames as UDP
//! datagrams on the host's loopback; this program receives them on
//! `--listen`, sends each numbered frame of tools/guest/hb.c's network worker
//! (EtherType 0x88b5) back to the guest on `--reply` with the addresses
//! swapped, and counts what it saw, so the traffic is counted at both ends.
//!
//! Every 100 frames, and when a frame's number is not the one after the
//! last, it appends a line to `--log`:
//!     NETPEER received N echoed N other N last S
//! The frames come from a guest: any length and content is accepted and
//! anything not ours is only counted (`other`).

use anyhow::{Context, Result};
use clap::Parser;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::UdpSocket;
use std::path::PathBuf;

const ETH_P_KH: u16 = 0x88b5;
/// "KH-NET-1" as hb.c stores it (a little-endian u64).
const MAGIC: u64 = 0x4b48_2d4e_4554_2d31;
/// Ethernet header, magic, sequence number.
const MIN_LEN: usize = 14 + 8 + 8;
/// The source address of echoed frames (locally administered).
const PEER_MAC: [u8; 6] = [0x02, 0x4b, 0x48, 0, 0, 1];

#[derive(Parser)]
struct Cli {
    /// UDP port on 127.0.0.1 QEMU sends the guest's frames to.
    #[arg(long)]
    listen: u16,
    /// UDP port on 127.0.0.1 QEMU receives the guest's frames on.
    #[arg(long)]
    reply: u16,
    /// Where the counts go (appended).
    #[arg(long)]
    log: PathBuf,
}

/// The echo of one of our frames, with its sequence number; None for
/// anything else.
fn reflect(frame: &[u8]) -> Option<(Vec<u8>, u64)> {
    if frame.len() < MIN_LEN || u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_KH {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(frame[at..at + 8].try_into().unwrap_or([0; 8]));
    if word(14) != MAGIC {
        return None;
    }
    let mut out = frame.to_vec();
    out[..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&PEER_MAC);
    Some((out, word(22)))
}

#[derive(Default, Debug, PartialEq)]
struct Counts {
    received: u64,
    echoed: u64,
    other: u64,
    last: u64,
}

impl Counts {
    /// Count one datagram; true when a line is due (every 100th frame, or
    /// one whose number does not follow the last).
    fn frame(&mut self, seq: Option<u64>, echoed: bool) -> bool {
        let Some(seq) = seq else {
            self.other += 1;
            return false;
        };
        self.received += 1;
        self.echoed += u64::from(echoed);
        let jump = self.last != 0 && seq != self.last.wrapping_add(1);
        self.last = seq;
        jump || self.received.is_multiple_of(100)
    }
    fn line(&self) -> String {
        format!(
            "NETPEER received {} echoed {} other {} last {}\n",
            self.received, self.echoed, self.other, self.last
        )
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let sock = UdpSocket::bind(("127.0.0.1", cli.listen))
        .with_context(|| format!("kh-netpeer: bind 127.0.0.1:{}", cli.listen))?;
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cli.log)
        .with_context(|| format!("kh-netpeer: {}", cli.log.display()))?;
    log.write_all(format!("NETPEER start listen {} reply {}\n", cli.listen, cli.reply).as_bytes())?;
    let mut counts = Counts::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = sock.recv(&mut buf).context("kh-netpeer: recv")?;
        let echo = reflect(&buf[..n]);
        // A reply QEMU is not there to take (it is being restarted) is a
        // lost frame, counted by the guest, not an error here.
        let sent = echo
            .as_ref()
            .is_some_and(|(f, _)| sock.send_to(f, ("127.0.0.1", cli.reply)).is_ok());
        if counts.frame(echo.map(|(_, s)| s), sent) {
            log.write_all(counts.line().as_bytes())?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        f.extend_from_slice(&ETH_P_KH.to_be_bytes());
        f.extend_from_slice(&MAGIC.to_le_bytes());
        f.extend_from_slice(&seq.to_le_bytes());
        f.extend_from_slice(b"vm1\0\0\0\0\0\0\0\0\0\0\0\0\0");
        f
    }

    #[test]
    fn echoes_go_back_to_the_sender() {
        let (out, seq) = reflect(&frame(7)).expect("ours");
        assert_eq!(seq, 7);
        assert_eq!(&out[..6], &[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(&out[6..12], &PEER_MAC);
        assert_eq!(&out[12..], &frame(7)[12..]);
    }

    #[test]
    fn anything_else_is_not_echoed() {
        assert!(reflect(&[]).is_none());
        assert!(reflect(&frame(1)[..MIN_LEN - 1]).is_none());
        let mut ipv6 = frame(1);
        ipv6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert!(reflect(&ipv6).is_none());
        let mut bad = frame(1);
        bad[14] ^= 1;
        assert!(reflect(&bad).is_none());
    }

    #[test]
    fn counts_note_every_hundredth_frame_and_each_jump() {
        let mut c = Counts::default();
        assert!(!c.frame(None, false));
        assert!(!c.frame(Some(1), true));
        assert!(c.frame(Some(3), true), "2 never came");
        for s in 4..=100 {
            c.frame(Some(s), true);
        }
        assert_eq!(c.received, 99);
        assert!(c.frame(Some(101), false), "the 100th");
        assert_eq!(
            c,
            Counts {
                received: 100,
                echoed: 99,
                other: 1,
                last: 101
            }
        );
        assert_eq!(
            c.line(),
            "NETPEER received 100 echoed 99 other 1 last 101\n"
        );
    }
}
