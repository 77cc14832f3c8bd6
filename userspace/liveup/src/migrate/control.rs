//! The control connection between `liveup migrate send` (source) and
//! `liveup migrate receive` (destination): JSON lines over TCP, plus raw
//! bytes after a `probe` message for measuring the link.

use super::plan::{HostFacts, Plan};
use super::relay::RelaySummary;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

pub const PROTOCOL: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "kebab-case")]
pub enum Ctl {
    Hello {
        protocol: u32,
    },
    Info {
        facts: HostFacts,
    },
    /// `bytes` raw bytes follow.
    Probe {
        bytes: u64,
    },
    Probed,
    Prepare {
        plan: Plan,
    },
    Ready {
        /// Native: where the source QEMU connects.
        uri: Option<String>,
        /// Relay: the port the sender connects its N streams to.
        relay_port: Option<u16>,
    },
    Verify,
    Verified {
        runstate: String,
        qemu_cpu_secs: f64,
        liveup_cpu_secs: f64,
        relay: Option<RelaySummary>,
    },
    Commit,
    Committed {
        runstate: String,
    },
    Abort {
        reason: String,
    },
    Error {
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("control connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("control connection: bad message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("control connection closed by the peer")]
    Closed,
    #[error("peer reported: {0}")]
    Peer(String),
    /// A message from the peer this side will not act on (a hostile or
    /// broken peer); nothing was done with it.
    #[error("refused the peer's message: {0}")]
    Refused(String),
    #[error("control: expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: String },
}

/// A message other than the one the protocol expects next.
pub fn unexpected(expected: &'static str, got: Ctl) -> CtlError {
    let mut got = format!("{got:?}");
    got.truncate(200);
    CtlError::Unexpected { expected, got }
}

pub struct Control {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Control {
    pub fn new(stream: TcpStream) -> std::io::Result<Self> {
        stream.set_nodelay(true)?;
        let writer = stream.try_clone()?;
        Ok(Control {
            reader: BufReader::new(stream),
            writer,
        })
    }

    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }

    pub fn send(&mut self, m: &Ctl) -> Result<(), CtlError> {
        let mut line = serde_json::to_vec(m)?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        Ok(())
    }

    /// The next message; an `error` or `abort` from the peer is an error.
    pub fn recv(&mut self) -> Result<Ctl, CtlError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(CtlError::Closed);
        }
        match serde_json::from_str(&line)? {
            Ctl::Error { message } => Err(CtlError::Peer(message)),
            Ctl::Abort { reason } => Err(CtlError::Peer(reason)),
            m => Ok(m),
        }
    }

    pub fn send_raw(&mut self, b: &[u8]) -> Result<(), CtlError> {
        self.writer.write_all(b)?;
        Ok(())
    }

    /// Read and discard `n` raw bytes.
    pub fn skip_raw(&mut self, mut n: u64) -> Result<(), CtlError> {
        let mut buf = vec![0u8; 1 << 16];
        while n > 0 {
            let k = (n as usize).min(buf.len());
            self.reader.read_exact(&mut buf[..k])?;
            n -= k as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn messages_and_raw_bytes_interleave() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut c = Control::new(l.accept().unwrap().0).unwrap();
            match c.recv().unwrap() {
                Ctl::Probe { bytes } => c.skip_raw(bytes).unwrap(),
                m => panic!("{m:?}"),
            }
            c.send(&Ctl::Probed).unwrap();
            assert!(matches!(c.recv(), Err(CtlError::Peer(r)) if r == "stop"));
            assert!(matches!(c.recv(), Err(CtlError::Closed)));
        });
        let mut c = Control::new(TcpStream::connect(a).unwrap()).unwrap();
        c.send(&Ctl::Probe { bytes: 300_000 }).unwrap();
        c.send_raw(&vec![7u8; 300_000]).unwrap();
        assert!(matches!(c.recv().unwrap(), Ctl::Probed));
        c.send(&Ctl::Abort {
            reason: "stop".into(),
        })
        .unwrap();
        drop(c);
        t.join().unwrap();
    }
}
