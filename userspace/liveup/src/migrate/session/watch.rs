//! `liveup migrate status` and `liveup migrate cancel`: a running `send`
//! answers on a Unix socket beside the VM's QMP socket (`QMP.migrate`,
//! mode 0600, removed when `send` ends). A client writes one line and
//! reads one:
//!
//! * `status`: the last progress event (events.rs; `{"event":"setup"}`
//!   before the first);
//! * `cancel`: the migration is stopped at the next progress poll (at most
//!   100 ms later), the VM kept running here and `send` exits 5; answered
//!   `{"event":"cancel","accepted":true}`, or `false` once the source has
//!   completed (then the destination is about to run the VM: too late).
//!
//! Anything else, or nothing within 2 s, gets the connection closed.

use super::events::{Event, Sample};
use super::MigrateError;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the server thread and `send` share.
#[derive(Default)]
struct Shared {
    /// The latest progress sample (none before the first), turned into
    /// its event line only when a client asks.
    last: Mutex<Option<Sample>>,
    /// RUNNING, CANCEL (asked for) or COMMITTING (past the point of no
    /// cancel): one atomic, so a cancel answered "accepted" is never
    /// overtaken by the commit.
    phase: AtomicU8,
    stop: AtomicBool,
}

const RUNNING: u8 = 0;
const CANCEL: u8 = 1;
const COMMITTING: u8 = 2;

/// The socket of one running `send`; removed on drop.
pub(super) struct Watch {
    path: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The socket for the VM behind QMP socket `qmp`.
pub fn socket_for(qmp: &Path) -> PathBuf {
    let mut p = qmp.as_os_str().to_owned();
    p.push(".migrate");
    PathBuf::from(p)
}

impl Watch {
    /// Listen beside `qmp`. Refused when a live `send` of the same VM
    /// answers there; a stale socket (a `send` that was killed) is
    /// replaced.
    pub(super) fn start(qmp: &Path) -> Result<Watch, MigrateError> {
        let path = socket_for(qmp);
        if UnixStream::connect(&path).is_ok() {
            return Err(MigrateError::Failed {
                reason: format!(
                    "another `liveup migrate send` of this VM is running ({} answers)",
                    path.display()
                ),
                source_state: "untouched".into(),
            });
        }
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        l.set_nonblocking(true)?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::spawn(move || serve(l, &s));
        Ok(Watch {
            path,
            shared,
            thread: Some(thread),
        })
    }

    /// The latest progress sample, for `status` (kept as is; serialized
    /// only when asked, not at every 100 ms poll).
    pub(super) fn publish(&self, sample: &Sample) {
        *self.shared.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(sample.clone());
    }

    /// Whether an operator asked to cancel.
    pub(super) fn cancelled(&self) -> bool {
        self.shared.phase.load(Ordering::SeqCst) == CANCEL
    }

    /// From here on, `cancel` is refused; false if one came first (the
    /// caller then cancels).
    pub(super) fn commit(&self) -> bool {
        self.shared
            .phase
            .compare_exchange(RUNNING, COMMITTING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(l: UnixListener, s: &Shared) {
    while !s.stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((c, _)) => {
                let _ = answer(c, s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// One request line of at most 64 bytes within 2 s in all (not per read:
/// a client dripping a byte a second must not hold the one server thread
/// for a minute), or nothing.
fn request_line(c: &UnixStream) -> std::io::Result<Option<String>> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut line = Vec::new();
    let mut b = [0u8; 64];
    while !line.contains(&b'\n') && line.len() < 64 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        c.set_read_timeout(Some(left))?;
        match (&*c).read(&mut b[..64 - line.len()]) {
            Ok(0) => break,
            Ok(n) => line.extend_from_slice(&b[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
    }
    let end = line.iter().position(|&x| x == b'\n').unwrap_or(line.len());
    Ok(String::from_utf8(line[..end].to_vec()).ok())
}

fn answer(c: UnixStream, s: &Shared) -> std::io::Result<()> {
    c.set_nonblocking(false)?;
    c.set_write_timeout(Some(Duration::from_secs(2)))?;
    let Some(line) = request_line(&c)? else {
        return Ok(());
    };
    let reply = match line.trim() {
        "status" => match &*s.last.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(sample) => Event::Progress(sample).line(),
            None => r#"{"event":"setup"}"#.to_string(),
        },
        "cancel" => {
            let ok =
                match s
                    .phase
                    .compare_exchange(RUNNING, CANCEL, Ordering::SeqCst, Ordering::SeqCst)
                {
                    Ok(_) => true,
                    Err(p) => p == CANCEL,
                };
            format!(r#"{{"event":"cancel","accepted":{ok}}}"#)
        }
        _ => return Ok(()),
    };
    (&c).write_all(format!("{reply}\n").as_bytes())
}

/// Ask the `send` of the VM behind `qmp` (`status` or `cancel`); its
/// one-line answer.
pub fn request(qmp: &Path, what: &str) -> Result<String, MigrateError> {
    let path = socket_for(qmp);
    let mut c = UnixStream::connect(&path)
        .map_err(|_| MigrateError::NotRunning(qmp.display().to_string()))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(format!("{what}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(&c).read_line(&mut line)?;
    if line.trim().is_empty() {
        return Err(MigrateError::NotRunning(qmp.display().to_string()));
    }
    Ok(line.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_cancel_reach_the_running_send() {
        let dir = std::env::temp_dir().join(format!("liveup-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let qmp = dir.join("vm.qmp");
        assert!(matches!(
            request(&qmp, "status"),
            Err(MigrateError::NotRunning(_))
        ));
        let w = Watch::start(&qmp).unwrap();
        assert_eq!(request(&qmp, "status").unwrap(), r#"{"event":"setup"}"#);
        // a second send of the same VM is refused
        assert!(Watch::start(&qmp).is_err());
        let sample = Sample {
            t_s: 1.0,
            status: "active".into(),
            total_bytes: 100,
            remaining_bytes: 40,
            wire_bytes: 60,
            wire_bps: 60.0,
            ratio: 1.0,
            dirty_bps: 0.0,
            eta_s: None,
        };
        w.publish(&sample);
        let st = request(&qmp, "status").unwrap();
        assert_eq!(st, Event::Progress(&sample).line());
        assert!(
            st.contains(r#""event":"progress""#) && st.contains(r#""remaining_bytes":40"#),
            "{st}"
        );
        assert!(!w.cancelled());
        assert_eq!(
            request(&qmp, "cancel").unwrap(),
            r#"{"event":"cancel","accepted":true}"#
        );
        assert!(w.cancelled());
        assert!(!w.commit(), "the cancel came first");
        drop(w);
        // past the commit, a cancel is refused
        let w = Watch::start(&qmp).unwrap();
        assert!(w.commit());
        assert_eq!(
            request(&qmp, "cancel").unwrap(),
            r#"{"event":"cancel","accepted":false}"#
        );
        assert!(!w.cancelled());
        drop(w);
        assert!(!socket_for(&qmp).exists(), "removed when send ends");
        assert!(matches!(
            request(&qmp, "status"),
            Err(MigrateError::NotRunning(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stale_socket_is_replaced() {
        let dir = std::env::temp_dir().join(format!("liveup-watch-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let qmp = dir.join("vm.qmp");
        drop(UnixListener::bind(socket_for(&qmp)).unwrap());
        let w = Watch::start(&qmp).unwrap();
        assert!(request(&qmp, "status").is_ok());
        drop(w);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A client that connects and says nothing, or says something else, or
    /// too much, gets no answer and does not keep `status` from others for
    /// longer than its 2 s.
    #[test]
    fn silent_and_garbage_clients_get_nothing_and_block_no_one() {
        let dir = std::env::temp_dir().join(format!("liveup-watch-hostile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let qmp = dir.join("vm.qmp");
        let w = Watch::start(&qmp).unwrap();
        let sock = socket_for(&qmp);
        let reply = |line: &[u8]| {
            let mut c = UnixStream::connect(&sock).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = c.write_all(line);
            let mut got = String::new();
            let _ = c.read_to_string(&mut got);
            got
        };
        assert_eq!(reply(b"shutdown\n"), "");
        assert_eq!(reply(&[0xff; 4096]), "");
        assert_eq!(
            reply(b"status status status status status status status status status\n"),
            ""
        );
        // a silent client holds the server for at most its 2 s
        let silent = UnixStream::connect(&sock).unwrap();
        let t = std::time::Instant::now();
        assert_eq!(request(&qmp, "status").unwrap(), r#"{"event":"setup"}"#);
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
        drop(silent);
        // nor does one dripping a byte every 0.5 s (2 s in all, not per read)
        let drip = std::thread::spawn({
            let sock = sock.clone();
            move || {
                let mut c = UnixStream::connect(&sock).unwrap();
                for b in b"status\n" {
                    if c.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                let mut got = String::new();
                let _ = c.read_to_string(&mut got);
                got
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        let t = std::time::Instant::now();
        assert_eq!(request(&qmp, "status").unwrap(), r#"{"event":"setup"}"#);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert_eq!(drip.join().unwrap(), "", "the dripping client got nothing");
        assert!(!w.cancelled(), "no garbage line counts as a cancel");
        drop(w);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
