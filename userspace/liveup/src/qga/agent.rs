//! A connection to one guest agent: its line protocol (bounded lines,
//! deadlines, stale answers skipped) and the commands liveup sends.

use super::{QgaError, MAX_LINE};
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A connection to one guest agent.
pub struct Agent<S> {
    pub(super) stream: S,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Agent<UnixStream> {
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, QgaError> {
        let s = UnixStream::connect(path)
            .map_err(|e| QgaError::Connect(path.display().to_string(), e))?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        s.set_write_timeout(Some(timeout))?;
        Ok(Agent::new(s, timeout))
    }
}

impl<S: Read + Write> Agent<S> {
    pub fn new(stream: S, timeout: Duration) -> Self {
        Agent {
            stream,
            buf: Vec::new(),
            timeout,
        }
    }

    /// One line, within the deadline and MAX_LINE.
    fn line(&mut self, deadline: Instant) -> Result<Vec<u8>, QgaError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let rest = self.buf.split_off(i + 1);
                return Ok(std::mem::replace(&mut self.buf, rest));
            }
            if self.buf.len() > MAX_LINE {
                return Err(QgaError::TooLong);
            }
            if Instant::now() >= deadline {
                return Err(QgaError::Timeout(self.timeout));
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(QgaError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Send a command and take the first answer that is a JSON object with
    /// "return" or "error" (anything else on the line, say a stale answer
    /// skipped by `sync`, is passed over by the caller's check).
    fn exchange(&mut self, cmd: &str, args: Value, deadline: Instant) -> Result<Value, QgaError> {
        let mut req =
            serde_json::to_vec(&json!({"execute": cmd, "arguments": args})).unwrap_or_default();
        req.push(b'\n');
        self.stream.write_all(&req)?;
        loop {
            let l = self.line(deadline)?;
            let Ok(v) = serde_json::from_slice::<Value>(&l) else {
                continue;
            };
            if let Some(e) = v.get("error") {
                let desc = e
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("error")
                    .chars()
                    .take(200)
                    .collect();
                return Err(QgaError::Command {
                    cmd: cmd.into(),
                    desc,
                });
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
        }
    }

    /// guest-sync: answers that arrive before the one to this id (left from
    /// an earlier connection) are skipped.
    pub fn sync(&mut self) -> Result<(), QgaError> {
        let deadline = Instant::now() + self.timeout;
        let id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 & 0x7fff_ffff)
            .unwrap_or(1);
        let mut r = self.exchange("guest-sync", json!({"id": id}), deadline)?;
        while r.as_u64() != Some(id) {
            let l = self.line(deadline)?;
            r = serde_json::from_slice::<Value>(&l)
                .ok()
                .and_then(|v| v.get("return").cloned())
                .unwrap_or(Value::Null);
        }
        Ok(())
    }

    /// The guest's wall clock, ns since the epoch.
    pub fn get_time(&mut self) -> Result<i64, QgaError> {
        let r = self.exchange("guest-get-time", json!({}), Instant::now() + self.timeout)?;
        r.as_i64()
            .ok_or_else(|| QgaError::Answer("guest-get-time".into()))
    }

    pub fn set_time(&mut self, ns: i64) -> Result<(), QgaError> {
        self.exchange(
            "guest-set-time",
            json!({"time": ns}),
            Instant::now() + self.timeout,
        )?;
        Ok(())
    }
}
