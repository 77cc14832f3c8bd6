//! The downtime breakdown `restore` prints and writes to
//! /run/liveup/last-upgrade.json, and the kernel-log marker that splits
//! the kexec phase where init started.

use serde::Serialize;
use std::fs;

/// The marker `restore` writes to the kernel log as it starts.
pub(super) const KMSG_MARK: &str = "liveup: restore starts";

/// Write the start marker into the kernel log (one write; read back after
/// the blackout by `init_to_mark_ms`).
pub(super) fn mark_kmsg() -> bool {
    use std::io::Write;
    fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .and_then(|mut w| w.write_all(format!("{KMSG_MARK}\n").as_bytes()))
        .is_ok()
}

/// One /dev/kmsg record: its timestamp (microseconds, printk clock) and
/// message ("PRIO,SEQ,USEC,FLAGS[,...];MESSAGE\n[continuation lines]").
pub(super) fn kmsg_record(rec: &str) -> Option<(u64, &str)> {
    let (head, rest) = rec.split_once(';')?;
    let usec = head.split(',').nth(2)?.parse().ok()?;
    Some((usec, rest.lines().next().unwrap_or("")))
}

/// Milliseconds from the kernel starting init ("Run /init as init
/// process") to the last start marker, both read back from /dev/kmsg.
pub(super) fn init_to_mark_ms() -> Option<f64> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut r = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    let mut buf = vec![0u8; 8192];
    let mut recs = Vec::new();
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => recs.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            // A record overwritten while reading: go on with the next.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(_) => break,
        }
    }
    init_to_mark(recs.iter().map(String::as_str))
}

/// The milliseconds from init's start to the last start marker among
/// kernel log records; None when either is missing or the marker is
/// older than init (not of this boot).
pub(super) fn init_to_mark<'a>(recs: impl Iterator<Item = &'a str>) -> Option<f64> {
    let (mut init, mut mark) = (None, None);
    for (t, msg) in recs.filter_map(kmsg_record) {
        if msg.starts_with("Run ") && msg.ends_with(" as init process") {
            init = Some(t);
        } else if msg == KMSG_MARK {
            mark = Some(t);
        }
    }
    let (i, m) = (init?, mark?);
    (m >= i).then(|| (m - i) as f64 / 1e3)
}

/// The breakdown rows from `kexec -e` to the restore's start (`to_restore`
/// ms), split where init started when `init_ms` (init to restore start)
/// is known.
pub(super) fn kexec_rows(to_restore: f64, init_ms: Option<f64>) -> Vec<Phase> {
    let row = Phase::new;
    match init_ms.map(|v| v.clamp(0.0, to_restore)) {
        Some(i) => vec![
            row("kexec to init", to_restore - i),
            row("init to restore start", i),
        ],
        None => vec![row("kexec to restore start", to_restore)],
    }
}

/// One row of the downtime breakdown.
#[derive(Debug, Serialize)]
pub struct Phase {
    pub phase: String,
    pub ms: f64,
}

impl Phase {
    pub(super) fn new(phase: &str, ms: f64) -> Self {
        Phase {
            phase: phase.into(),
            ms,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub vms: Vec<String>,
    pub phases: Vec<Phase>,
    /// From the first VM stopping to the last VM running again.
    pub downtime_ms: f64,
    /// Each VM's wall clock after it ran again (crate::qga).
    pub guest_clocks: Vec<(String, crate::qga::GuestClock)>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "host kernel upgrade: VMs {}", self.vms.join(", "))?;
        for p in &self.phases {
            writeln!(f, "  {:<30} {:>10.1} ms", p.phase, p.ms)?;
        }
        writeln!(
            f,
            "  {:<30} {:>10.1} ms",
            "downtime (first stop to last resume)", self.downtime_ms
        )?;
        for (vm, c) in &self.guest_clocks {
            writeln!(f, "  guest clock {vm}: {c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_records() {
        assert_eq!(
            kmsg_record("6,339,5140900,-;Run /init as init process\n"),
            Some((5140900, "Run /init as init process"))
        );
        assert_eq!(
            kmsg_record("12,1020,9002311,-,caller=T1;liveup: restore starts\n SUBSYSTEM=x\n"),
            Some((9002311, KMSG_MARK))
        );
        assert_eq!(kmsg_record("6,339;no timestamp"), None);
        assert_eq!(kmsg_record("garbage"), None);
    }

    #[test]
    fn init_to_marker_from_kernel_log_records() {
        let init = "6,339,5140900,-;Run /init as init process\n";
        let mark = "12,1020,5791400,-,caller=T1;liveup: restore starts\n";
        let later = "12,1090,6000000,-;liveup: restore starts\n";
        assert_eq!(init_to_mark([init, mark].into_iter()), Some(650.5));
        // the last marker counts (restore --retry writes another)
        assert_eq!(init_to_mark([init, mark, later].into_iter()), Some(859.1));
        // either record missing, or a marker before init: no split
        assert_eq!(init_to_mark([mark].into_iter()), None);
        assert_eq!(init_to_mark([init, "garbage"].into_iter()), None);
        let early = "12,1,100,-;liveup: restore starts\n";
        assert_eq!(init_to_mark([early, init].into_iter()), None);
    }

    #[test]
    fn kexec_rows_split_at_init_only_when_known() {
        let names = |r: Vec<Phase>| -> Vec<(String, f64)> {
            r.into_iter().map(|p| (p.phase, p.ms)).collect()
        };
        assert_eq!(
            names(kexec_rows(4000.0, Some(650.0))),
            [
                ("kexec to init".into(), 3350.0),
                ("init to restore start".into(), 650.0)
            ]
        );
        assert_eq!(
            names(kexec_rows(4000.0, None)),
            [("kexec to restore start".into(), 4000.0)]
        );
        // an init time beyond the whole span is clamped, never negative
        assert_eq!(
            names(kexec_rows(400.0, Some(650.0))),
            [
                ("kexec to init".into(), 0.0),
                ("init to restore start".into(), 400.0)
            ]
        );
    }

    #[test]
    fn report_prints_every_phase_and_the_total() {
        let r = Report {
            vms: vec!["vm1".into()],
            phases: vec![Phase {
                phase: "state load".into(),
                ms: 1.5,
            }],
            downtime_ms: 42.0,
            guest_clocks: vec![
                ("vm1".into(), crate::qga::GuestClock::Set { behind_s: 12.5 }),
                ("vm2".into(), crate::qga::GuestClock::NoAgent),
            ],
        };
        let s = r.to_string();
        assert!(
            s.contains("state load") && s.contains("1.5") && s.contains("42.0"),
            "{s}"
        );
        assert!(
            s.contains("guest clock vm1: set by its guest agent (was 12.50 s behind)"),
            "{s}"
        );
        assert!(s.contains("guest clock vm2: no guest agent"), "{s}");
    }
}
