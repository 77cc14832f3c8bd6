//! A small synchronous QMP client: connect, negotiate capabilities, execute
//! commands, skip asynchronous events.
//!
//! We speak the wire protocol directly (JSON lines over a Unix socket): the
//! commands we need (`migrate-set-parameters` with `mode: cpr-reboot`,
//! `migrate-incoming` with `file:` URIs) are newer than the schema that the
//! typed `qapi-qmp` crate was generated from, and untyped JSON needs nothing
//! more than serde_json.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
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

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connect and leave capabilities negotiation mode.
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Self, QmpError> {
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
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        let writer = stream.try_clone()?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
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
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(QmpError::Closed);
        }
        Ok(serde_json::from_str(&line)?)
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
            match r.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some("failed") | Some("cancelled") => {
                    let desc = r
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("failed")
                        .to_string();
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
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
