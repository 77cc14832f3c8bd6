//! A small synchronous QMP client: connect, negotiate capabilities, execute
//! commands, skip asynchronous events.
//!
//! We speak the wire protocol directly (JSON lines over a Unix socket): the
//! commands we need (`migrate-set-parameters` with `mode: cpr-reboot`,
//! `migrate-incoming` with `file:` URIs) are newer than the schema that the
//! typed `qapi-qmp` crate was generated from, and untyped JSON needs nothing
//! more than serde_json.

use serde_json::{json, Value};

/// QEMU's version (major, minor, micro) from its `query-version` answer;
/// `None` when a part is missing or not a number.
pub fn qemu_version(v: &Value) -> Option<(u64, u64, u64)> {
    let part = |k: &str| v["qemu"][k].as_u64();
    Some((part("major")?, part("minor")?, part("micro")?))
}
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to QMP socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("QMP I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP: bad JSON from QEMU: {0}")]
    Json(#[from] serde_json::Error),
    #[error("QMP: QEMU closed the connection")]
    Closed,
    #[error("QMP {cmd}: {class}: {desc}")]
    Command {
        cmd: String,
        class: String,
        desc: String,
    },
    #[error("QMP: unexpected greeting {0}")]
    Greeting(String),
    #[error("QMP: timed out waiting for {0}")]
    Timeout(String),
}

/// A QEMU's run state (QMP `query-status`), as far as liveup tells them
/// apart; any other is kept by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    Suspended,
    InMigrate,
    FinishMigrate,
    PostMigrate,
    InternalError,
    GuestPanicked,
    Shutdown,
    Other(String),
}

impl RunState {
    pub fn parse(s: &str) -> Self {
        match s {
            "running" => Self::Running,
            "paused" => Self::Paused,
            "suspended" => Self::Suspended,
            "inmigrate" => Self::InMigrate,
            "finish-migrate" => Self::FinishMigrate,
            "postmigrate" => Self::PostMigrate,
            "internal-error" => Self::InternalError,
            "guest-panicked" => Self::GuestPanicked,
            "shutdown" => Self::Shutdown,
            o => Self::Other(o.into()),
        }
    }

    /// QEMU's name for it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Suspended => "suspended",
            Self::InMigrate => "inmigrate",
            Self::FinishMigrate => "finish-migrate",
            Self::PostMigrate => "postmigrate",
            Self::InternalError => "internal-error",
            Self::GuestPanicked => "guest-panicked",
            Self::Shutdown => "shutdown",
            Self::Other(o) => o,
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A migration's status (QMP `query-migrate`, MIGRATION events): QEMU's
/// MigrationStatus values; any other is kept by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationStatus {
    /// No migration yet.
    None,
    Setup,
    Cancelling,
    Cancelled,
    Active,
    PostcopyActive,
    PostcopyPaused,
    PostcopyRecoverSetup,
    PostcopyRecover,
    Completed,
    Failed,
    Colo,
    PreSwitchover,
    Device,
    WaitUnplug,
    Other(String),
}

impl MigrationStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "none" => Self::None,
            "setup" => Self::Setup,
            "cancelling" => Self::Cancelling,
            "cancelled" => Self::Cancelled,
            "active" => Self::Active,
            "postcopy-active" => Self::PostcopyActive,
            "postcopy-paused" => Self::PostcopyPaused,
            "postcopy-recover-setup" => Self::PostcopyRecoverSetup,
            "postcopy-recover" => Self::PostcopyRecover,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "colo" => Self::Colo,
            "pre-switchover" => Self::PreSwitchover,
            "device" => Self::Device,
            "wait-unplug" => Self::WaitUnplug,
            o => Self::Other(o.into()),
        }
    }

    /// The `status` of a `query-migrate` answer or a MIGRATION event's
    /// data; None if it has none.
    pub fn of(v: &Value) -> Option<Self> {
        v.get("status").and_then(Value::as_str).map(Self::parse)
    }

    /// QEMU's name for it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::None => "none",
            Self::Setup => "setup",
            Self::Cancelling => "cancelling",
            Self::Cancelled => "cancelled",
            Self::Active => "active",
            Self::PostcopyActive => "postcopy-active",
            Self::PostcopyPaused => "postcopy-paused",
            Self::PostcopyRecoverSetup => "postcopy-recover-setup",
            Self::PostcopyRecover => "postcopy-recover",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Colo => "colo",
            Self::PreSwitchover => "pre-switchover",
            Self::Device => "device",
            Self::WaitUnplug => "wait-unplug",
            Self::Other(o) => o,
        }
    }

    /// The migration ended: completed, failed or cancelled.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// It ended without completing: failed or cancelled.
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failed | Self::Cancelled)
    }

    /// A migration is under way (or in a state liveup does not know):
    /// neither ended nor never started.
    pub fn is_in_progress(&self) -> bool {
        !self.is_terminal() && *self != Self::None
    }
}

impl std::fmt::Display for MigrationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the upgrade logic asks of a QEMU: [`Qmp`], or a fake in tests.
pub trait Monitor {
    /// Execute `cmd` with `args`; its "return" value.
    fn execute(&mut self, cmd: &str, args: Value) -> Result<Value, QmpError>;
    /// Wait until the migration (a save or a load) completed; fail if it
    /// failed or was cancelled.
    fn wait_migration(&mut self, what: &str, timeout: Duration) -> Result<(), QmpError>;
    /// The run state.
    fn run_state(&mut self) -> Result<RunState, QmpError> {
        let r = self.execute("query-status", json!({}))?;
        Ok(RunState::parse(
            r.get("status").and_then(Value::as_str).unwrap_or("unknown"),
        ))
    }
}

impl Monitor for Qmp {
    fn execute(&mut self, cmd: &str, args: Value) -> Result<Value, QmpError> {
        Qmp::execute(self, cmd, args)
    }
    fn wait_migration(&mut self, what: &str, timeout: Duration) -> Result<(), QmpError> {
        Qmp::wait_migration(self, what, timeout)
    }
}

impl QmpError {
    /// A read that timed out (the QEMU did not answer in time).
    pub fn is_timeout(&self) -> bool {
        matches!(self, QmpError::Io(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
    }
}

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// A line read in part when a read timed out (kept for the next read).
    partial: String,
    /// Events that arrived while a command waited for its answer.
    events: VecDeque<Value>,
}

/// Events kept for `next_event` (older ones are dropped).
const EVENTS_KEPT: usize = 64;
/// The read timeout outside `next_event`.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

impl Qmp {
    /// Connect and leave capabilities negotiation mode.
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Self, QmpError> {
        Self::connect_bounded(path, timeout, READ_TIMEOUT)
    }

    /// As `connect`, with every read (the greeting's, and each answer's
    /// after) waiting at most `read_timeout`: for a look at a QEMU that may
    /// hang (`vm list`), which must not hang with it.
    pub fn connect_bounded(
        path: impl AsRef<Path>,
        timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Self, QmpError> {
        let path = path.as_ref();
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(source) => {
                    return Err(QmpError::Connect {
                        path: path.display().to_string(),
                        source,
                    })
                }
            }
        };
        stream.set_read_timeout(Some(read_timeout))?;
        let writer = stream.try_clone()?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
            partial: String::new(),
            events: VecDeque::new(),
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Greeting(greeting.to_string()));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    /// The QEMU process at the other end of the socket (SO_PEERCRED).
    pub fn peer_pid(&self) -> Option<i32> {
        use std::os::fd::AsRawFd;
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: cred and len are valid for getsockopt to fill.
        let rc = unsafe {
            libc::getsockopt(
                self.writer.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        (rc == 0 && cred.pid > 0).then_some(cred.pid)
    }

    fn read(&mut self) -> Result<Value, QmpError> {
        // A timed-out read_line keeps what it got in `partial`.
        if self.reader.read_line(&mut self.partial)? == 0 {
            return Err(QmpError::Closed);
        }
        let line = std::mem::take(&mut self.partial);
        Ok(serde_json::from_str(&line)?)
    }

    /// The next asynchronous event (one kept from an earlier command's
    /// wait first), or None when `timeout` passes without one.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Value>, QmpError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(Some(e));
        }
        let deadline = Instant::now() + timeout;
        let r = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Ok(None);
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            match self.read() {
                Ok(v) if v.get("event").is_some() => break Ok(Some(v)),
                // No command is waiting: a stray answer is dropped.
                Ok(_) => {}
                Err(e) if e.is_timeout() => break Ok(None),
                Err(e) => break Err(e),
            }
        };
        self.reader.get_ref().set_read_timeout(Some(READ_TIMEOUT))?;
        r
    }

    /// Execute `cmd` with `args`; return its "return" value.
    pub fn execute(&mut self, cmd: &str, args: Value) -> Result<Value, QmpError> {
        let req = json!({ "execute": cmd, "arguments": args });
        writeln!(self.writer, "{req}")?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if v.get("event").is_some() {
                if self.events.len() == EVENTS_KEPT {
                    self.events.pop_front();
                }
                self.events.push_back(v);
                continue;
            }
            if let Some(e) = v.get("error") {
                let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
                return Err(QmpError::Command {
                    cmd: cmd.into(),
                    class: s("class"),
                    desc: s("desc"),
                });
            }
            // an event: skip
        }
    }

    /// The run state ("running", "paused", "postmigrate", "inmigrate", ...).
    pub fn status(&mut self) -> Result<String, QmpError> {
        let r = self.execute("query-status", json!({}))?;
        Ok(r.get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    /// Poll `query-migrate` until it reports `completed`; fail on `failed`.
    pub fn wait_migration(&mut self, what: &str, timeout: Duration) -> Result<(), QmpError> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.execute("query-migrate", json!({}))?;
            match MigrationStatus::of(&r) {
                Some(MigrationStatus::Completed) => return Ok(()),
                Some(st) if st.is_failure() => {
                    let desc = r
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("{what} failed"), str::to_string);
                    return Err(QmpError::Command {
                        cmd: what.into(),
                        class: "MigrationFailed".into(),
                        desc,
                    });
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(QmpError::Timeout(what.into()));
            }
            self.wait_migration_end(Duration::from_millis(2))?;
        }
    }

    /// Wait up to `most` before the next look at a migration, less if a
    /// MIGRATION event says it completed, failed or was cancelled (QEMU
    /// sends them with the `events` capability on): the delay between a
    /// migration's end and what follows it may be a guest's downtime.
    pub fn wait_migration_end(&mut self, most: Duration) -> Result<(), QmpError> {
        let deadline = Instant::now() + most;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left)? {
                None => return Ok(()),
                Some(e) if is_migration_end(&e) => return Ok(()),
                Some(_) => {}
            }
        }
    }
}

fn is_migration_end(e: &Value) -> bool {
    e["event"] == "MIGRATION" && MigrationStatus::of(&e["data"]).is_some_and(|s| s.is_terminal())
}

#[cfg(test)]
mod tests;
