//! The guest's wall clock after a hot-upgrade, set through the QEMU guest
//! agent.
//!
//! A restored VM's kvmclock carries on from the value saved at the stop, so
//! the guest's monotonic clock does not jump, and its wall clock is behind
//! by the whole pause until something sets it. When the VM has a guest agent
//! (a `virtserialport` named `org.qemu.guest_agent.0` on a `-chardev socket`,
//! as libvirt and `liveup vm start --guest-agent` configure it), `liveup
//! restore` asks it for the guest's time and sets it to the host's
//! (`guest-get-time`, `guest-set-time`, the agent's own commands). Without
//! one, the report says how far behind the guest's clock is.
//!
//! The agent runs inside the guest: every answer is untrusted. Lines are
//! bounded, each wait has a deadline, and nothing the guest says is used
//! except a number that is checked. The connection to an agent is in
//! qga/agent.rs.

mod agent;

pub use agent::Agent;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The name QEMU and libvirt give the agent's port.
pub const AGENT_PORT: &str = "org.qemu.guest_agent.0";
/// The longest answer line taken from a guest.
const MAX_LINE: usize = 64 << 10;
/// How long one exchange may take: a guest without a running agent never
/// answers, and a guest just resumed can stand still for seconds (a nested
/// test VM did for over 3 s once, and its agent missed a 3 s limit).
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum QgaError {
    #[error("cannot connect to the guest agent socket {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("guest agent I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer from the guest agent within {0:?}")]
    Timeout(Duration),
    #[error("the guest agent sent a line over {MAX_LINE} bytes")]
    TooLong,
    #[error("the guest agent closed the connection")]
    Closed,
    #[error("guest agent {cmd}: {desc}")]
    Command { cmd: String, desc: String },
    #[error("guest agent {0}: the answer is not what was asked for")]
    Answer(String),
}

/// The host-side socket of the VM's guest agent, from its QEMU command line:
/// `-device virtserialport,chardev=ID,name=org.qemu.guest_agent.0` and
/// `-chardev socket,id=ID,path=PATH`. None when the VM has no agent port.
pub fn agent_socket(argv: &[String]) -> Option<PathBuf> {
    let opts = |s: &str| -> Vec<(String, String)> {
        s.split(',')
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (String::new(), kv.to_string()),
            })
            .collect()
    };
    let get =
        |o: &[(String, String)], k: &str| o.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    let pairs: Vec<(&str, Vec<(String, String)>)> = argv
        .windows(2)
        .filter(|w| w[0] == "-device" || w[0] == "-chardev")
        .map(|w| (w[0].as_str(), opts(&w[1])))
        .collect();
    let id = pairs.iter().find_map(|(flag, o)| {
        (*flag == "-device"
            && o.first()
                .is_some_and(|(k, v)| k.is_empty() && v == "virtserialport")
            && get(o, "name").as_deref() == Some(AGENT_PORT))
        .then(|| get(o, "chardev"))
        .flatten()
    })?;
    pairs.iter().find_map(|(flag, o)| {
        (*flag == "-chardev"
            && o.first()
                .is_some_and(|(k, v)| k.is_empty() && v == "socket")
            && get(o, "id").as_deref() == Some(id.as_str()))
        .then(|| get(o, "path").map(PathBuf::from))
        .flatten()
    })
}

/// The arguments `liveup vm start --guest-agent` adds for a VM named `name`.
pub fn agent_args(name: &str) -> Vec<String> {
    [
        "-chardev",
        &format!("socket,id=kh-qga,path=/run/liveup/{name}.qga,server=on,wait=off"),
        "-device",
        "virtio-serial-pci,id=kh-qga-bus",
        "-device",
        &format!("virtserialport,chardev=kh-qga,name={AGENT_PORT}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// What happened to one VM's wall clock after the restore.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum GuestClock {
    /// Set by its agent; it had been behind by this many seconds.
    Set { behind_s: f64 },
    /// No agent port on the command line.
    NoAgent,
    /// An agent port whose agent did not do it.
    Failed { why: String },
}

pub fn host_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Bring the guest's wall clock to the host's through its agent; how far
/// behind it was.
pub fn set_guest_clock<S: Read + Write>(a: &mut Agent<S>) -> Result<f64, QgaError> {
    a.sync()?;
    let guest = a.get_time()?;
    let behind = host_ns().saturating_sub(guest);
    set_and_check(a, host_ns)?;
    Ok(behind as f64 / 1e9)
}

/// A clock set is off by SET_TOLERANCE_NS at most, or set again.
pub const SET_TOLERANCE_NS: i64 = 250_000_000;
/// Sets at most, when the guest keeps applying them late.
pub const SET_ROUNDS: usize = 3;

/// Set the guest's clock to `now()` and read it back; set it again while
/// it is off by more than `SET_TOLERANCE_NS`, up to `SET_ROUNDS` times.
/// The guest applies the time when it reads the command: a guest that is
/// slow just after a resume applied it seconds late, and was left behind
/// by that much (measured in the rig: 2-5 s, 5 s after most resumes of
/// `make bench-linux`). Returns the last offset (guest minus host, ns).
pub fn set_and_check<S: Read + Write>(
    a: &mut Agent<S>,
    now: impl Fn() -> i64,
) -> Result<i64, QgaError> {
    let mut off = 0;
    for _ in 0..SET_ROUNDS {
        a.set_time(now())?;
        let t0 = now();
        let g = a.get_time()?;
        let t1 = now();
        // the guest read its clock somewhere between t0 and t1
        off = g.saturating_sub(t0 / 2 + t1 / 2);
        if off.saturating_abs() <= SET_TOLERANCE_NS {
            break;
        }
    }
    Ok(off)
}

/// For the VM whose QEMU runs with `argv` (paths inside `root`).
pub fn fix_clock(root: &Path, argv: &[String]) -> GuestClock {
    let Some(p) = agent_socket(argv) else {
        return GuestClock::NoAgent;
    };
    let p = crate::upgrade::vm::under_root(root, &p);
    // A guest that stands still for a while after its resume (issue 15's
    // freeze, Documentation/upgrade.rst) cannot answer: try again until
    // PATIENCE is spent (once, a Linux guest in the rig did not answer
    // within 10 s and was left 232 s behind by the next upgrade).
    let t = std::time::Instant::now();
    loop {
        match Agent::connect(&p, TIMEOUT).and_then(|mut a| set_guest_clock(&mut a)) {
            Ok(behind_s) => return GuestClock::Set { behind_s },
            Err(e) if t.elapsed() + TIMEOUT > PATIENCE => {
                return GuestClock::Failed { why: e.to_string() }
            }
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// How long `fix_clock` keeps trying a guest agent that does not answer.
pub const PATIENCE: Duration = Duration::from_secs(60);

impl std::fmt::Display for GuestClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuestClock::Set { behind_s } => {
                write!(f, "set by its guest agent (was {behind_s:.2} s behind)")
            }
            GuestClock::NoAgent => write!(
                f,
                "no guest agent: behind by the pause until the guest syncs (NTP)"
            ),
            GuestClock::Failed { why } => write!(
                f,
                "not set: {why}; behind by the pause until the guest syncs"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A fake agent: answers are canned; what liveup sent is kept.
    struct Fake {
        answers: Cursor<Vec<u8>>,
        sent: Vec<u8>,
    }
    impl Read for Fake {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            self.answers.read(b)
        }
    }
    impl Write for Fake {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.sent.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    fn agent(answers: &str) -> Agent<Fake> {
        Agent::new(
            Fake {
                answers: Cursor::new(answers.as_bytes().to_vec()),
                sent: vec![],
            },
            Duration::from_millis(200),
        )
    }
    /// What liveup wrote to the fake agent.
    fn sent(a: &Agent<Fake>) -> String {
        String::from_utf8_lossy(&a.stream.sent).into_owned()
    }
    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_agent_socket_is_found_as_libvirt_and_liveup_write_it() {
        let mut argv = s(&["qemu", "-m", "96M"]);
        argv.extend(agent_args("vm1"));
        assert_eq!(
            agent_socket(&argv),
            Some(PathBuf::from("/run/liveup/vm1.qga"))
        );
        let libvirt = s(&[
            "qemu", "-chardev", "socket,id=charchannel0,fd=33,server=on,wait=off",
            "-chardev", "socket,id=charchannel1,path=/var/lib/libvirt/qemu/channel/target/domain-1-vm/org.qemu.guest_agent.0,server=on,wait=off",
            "-device", "virtserialport,bus=virtio-serial0.0,nr=1,chardev=charchannel1,id=channel0,name=org.qemu.guest_agent.0",
        ]);
        assert_eq!(
            agent_socket(&libvirt),
            Some(PathBuf::from(
                "/var/lib/libvirt/qemu/channel/target/domain-1-vm/org.qemu.guest_agent.0"
            ))
        );
        assert_eq!(
            agent_socket(&s(&[
                "qemu",
                "-device",
                "virtserialport,chardev=c,name=other"
            ])),
            None
        );
        // a port whose chardev is not a socket: no agent we can reach
        assert_eq!(
            agent_socket(&s(&[
                "-chardev",
                "pty,id=c",
                "-device",
                "virtserialport,chardev=c,name=org.qemu.guest_agent.0"
            ])),
            None
        );
    }

    #[test]
    fn a_stale_answer_before_the_sync_is_skipped() {
        let mut a = agent("{\"return\": 5}\n");
        assert!(a.sync().is_err(), "the id never came back");
        let sent = sent(&a);
        assert!(
            sent.starts_with("{\"arguments\":{\"id\":") && sent.contains("guest-sync"),
            "{sent}"
        );
    }

    #[test]
    fn time_is_read_and_set() {
        let mut a = agent("garbage\n{\"return\": 1700000000000000000}\n{\"return\": {}}\n");
        assert_eq!(a.get_time().unwrap(), 1_700_000_000_000_000_000);
        a.set_time(42).unwrap();
        let sent = sent(&a);
        assert!(
            sent.contains("\"execute\":\"guest-set-time\"") && sent.contains("\"time\":42"),
            "{sent}"
        );
    }

    #[test]
    fn a_set_applied_late_is_set_again() {
        const NOW: i64 = 1_800_000_000_000_000_000;
        // The first set landed 3 s late (read back 3 s behind), the second
        // on time.
        let mut a = agent(&format!(
            "{{\"return\": {{}}}}\n{{\"return\": {}}}\n{{\"return\": {{}}}}\n{{\"return\": {}}}\n",
            NOW - 3_000_000_000,
            NOW + 1_000_000
        ));
        let off = set_and_check(&mut a, || NOW).unwrap();
        assert_eq!(off, 1_000_000);
        assert_eq!(sent(&a).matches("guest-set-time").count(), 2);
        // A guest that never catches up: three sets, the last offset.
        let late = format!(
            "{{\"return\": {{}}}}\n{{\"return\": {}}}\n",
            NOW - 2_000_000_000
        );
        let mut a = agent(&late.repeat(3));
        assert_eq!(set_and_check(&mut a, || NOW).unwrap(), -2_000_000_000);
        assert_eq!(sent(&a).matches("guest-set-time").count(), 3);
        // One on time: one set.
        let mut a = agent(&format!("{{\"return\": {{}}}}\n{{\"return\": {NOW}}}\n"));
        assert_eq!(set_and_check(&mut a, || NOW).unwrap(), 0);
        assert_eq!(sent(&a).matches("guest-set-time").count(), 1);
    }

    #[test]
    fn hostile_answers_are_errors_not_hangs() {
        assert!(matches!(
            agent("{\"return\": \"soon\"}\n").get_time(),
            Err(QgaError::Answer(_))
        ));
        assert!(matches!(agent("").get_time(), Err(QgaError::Closed)));
        let long = "x".repeat(MAX_LINE + 10);
        assert!(matches!(agent(&long).get_time(), Err(QgaError::TooLong)));
        let e = agent("{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}\n")
            .set_time(1)
            .unwrap_err();
        assert_eq!(e.to_string(), "guest agent guest-set-time: no");
    }
}
