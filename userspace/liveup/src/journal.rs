//! One line per outcome for the operator's log: the systemd journal when
//! it runs (its native protocol on /run/systemd/journal/socket, with a
//! priority and SYSLOG_IDENTIFIER=liveup), else the kernel log
//! (/dev/kmsg, "<priority>liveup: ..."), which is what a host without
//! systemd (the rig) has. Best effort: a log that cannot be written is not
//! an error of the operation it reports.

use std::io::Write;
use std::os::unix::net::UnixDatagram;

/// syslog priorities used here.
pub const ERR: u8 = 3;
pub const NOTICE: u8 = 5;
pub const INFO: u8 = 6;

const JOURNAL: &str = "/run/systemd/journal/socket";

/// The journal's native datagram for `msg` (no newline in a field value:
/// a multi-line message is folded to one line).
pub fn native(priority: u8, msg: &str) -> Vec<u8> {
    let one_line = msg.replace('\n', " ");
    format!(
        "PRIORITY={}\nSYSLOG_IDENTIFIER=liveup\nMESSAGE={one_line}\n",
        priority.min(7)
    )
    .into_bytes()
}

/// The kernel log's line for `msg`.
pub fn kmsg(priority: u8, msg: &str) -> Vec<u8> {
    format!("<{}>liveup: {}\n", priority.min(7), msg.replace('\n', " ")).into_bytes()
}

/// Log `msg` at `priority`; returns where it went.
pub fn log(priority: u8, msg: &str) -> Option<&'static str> {
    if let Ok(s) = UnixDatagram::unbound() {
        if s.send_to(&native(priority, msg), JOURNAL).is_ok() {
            return Some("journal");
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .ok()?;
    f.write_all(&kmsg(priority, msg)).ok()?;
    Some("kmsg")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_priority_and_identifier() {
        assert_eq!(
            native(ERR, "restore failed:\nno state"),
            b"PRIORITY=3\nSYSLOG_IDENTIFIER=liveup\nMESSAGE=restore failed: no state\n"
        );
        assert_eq!(kmsg(INFO, "restored 2 VMs"), b"<6>liveup: restored 2 VMs\n");
        assert_eq!(kmsg(42, "x"), b"<7>liveup: x\n");
    }
}
