//! The control connection between `liveup migrate send` (source) and
//! `liveup migrate receive` or `listen` (destination): JSON lines over TCP, plus raw
//! bytes after a `probe` message for measuring the link (read and
//! discarded). It opens with the key handshake of `auth.rs`; from then on
//! every line ends with a tab and the hex HMAC of its direction, sequence
//! number and JSON, and a line whose MAC does not verify is refused.

use super::auth::{self, check_proof, hex, proof, random, unhex, AuthError, Key, Role};
use super::plan::{HostFacts, Plan};
use super::relay::RelaySummary;
use super::spec::VmSpec;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// The longest control line read (the largest real one, `info`, is a few
/// KiB): a peer cannot make this side buffer without bound.
const MAX_LINE: u64 = 1 << 20;

pub const PROTOCOL: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "kebab-case")]
pub enum Ctl {
    /// Source, first: its nonce (hex).
    AuthHello {
        nonce: String,
    },
    /// Destination: its nonce and its proof of the key.
    AuthChallenge {
        nonce: String,
        proof: String,
    },
    /// Source: its proof of the key.
    AuthProof {
        proof: String,
    },
    Hello {
        protocol: u32,
    },
    /// Destination (`liveup migrate listen`), after `hello`: it starts the
    /// QEMU itself and needs the VM's description first.
    NeedConfig,
    /// Source: the VM's description (spec.rs), never a command line.
    Config {
        spec: VmSpec,
    },
    /// Destination: QEMU for VM `name` started and waits for the migration.
    Launched {
        name: String,
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
    #[error("{0}")]
    Auth(#[from] AuthError),
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
    /// Set by `authenticate`: the session key and message counters.
    auth: Option<Channel>,
}

struct Channel {
    key: Key,
    me: Role,
    sent: u64,
    received: u64,
}

impl Control {
    pub fn new(stream: TcpStream) -> std::io::Result<Self> {
        stream.set_nodelay(true)?;
        let writer = stream.try_clone()?;
        Ok(Control {
            reader: BufReader::new(stream),
            writer,
            auth: None,
        })
    }

    /// The key handshake, as `me`: both sides prove they hold `key` (the
    /// destination first), then every message is authenticated with a
    /// session key derived from both nonces.
    pub fn authenticate(&mut self, key: &Key, me: Role) -> Result<(), CtlError> {
        let nonce = |s: &str| unhex(s).filter(|v| v.len() == 32);
        let bad = |what: &str| CtlError::Refused(format!("malformed {what} in the key handshake"));
        let (sn, dn) = match me {
            Role::Source => {
                let sn = random::<32>()?;
                self.send(&Ctl::AuthHello { nonce: hex(&sn) })?;
                let (dn, p) = match self.recv()? {
                    Ctl::AuthChallenge { nonce: n, proof: p } => (
                        nonce(&n).ok_or_else(|| bad("nonce"))?,
                        unhex(&p).ok_or_else(|| bad("proof"))?,
                    ),
                    got => return Err(unexpected("auth-challenge", got)),
                };
                if !check_proof(key, Role::Destination, &sn, &dn, &p) {
                    return Err(CtlError::Refused(
                        "the destination did not prove it holds the migration key".into(),
                    ));
                }
                self.send(&Ctl::AuthProof {
                    proof: hex(&proof(key, Role::Source, &sn, &dn)),
                })?;
                (sn.to_vec(), dn)
            }
            Role::Destination => {
                let sn = match self.recv()? {
                    Ctl::AuthHello { nonce: n } => nonce(&n).ok_or_else(|| bad("nonce"))?,
                    got => return Err(unexpected("auth-hello", got)),
                };
                let dn = random::<32>()?;
                self.send(&Ctl::AuthChallenge {
                    nonce: hex(&dn),
                    proof: hex(&proof(key, Role::Destination, &sn, &dn)),
                })?;
                let p = match self.recv()? {
                    Ctl::AuthProof { proof: p } => unhex(&p).ok_or_else(|| bad("proof"))?,
                    got => return Err(unexpected("auth-proof", got)),
                };
                if !check_proof(key, Role::Source, &sn, &dn, &p) {
                    return Err(CtlError::Refused(
                        "the source did not prove it holds the migration key".into(),
                    ));
                }
                (sn, dn.to_vec())
            }
        };
        self.auth = Some(Channel {
            key: key.derive("session", &[&sn, &dn]),
            me,
            sent: 0,
            received: 0,
        });
        Ok(())
    }

    /// A key for one data path of this session (`None` before
    /// `authenticate`): both sides derive the same one.
    pub fn data_key(&self, label: &str) -> Option<Key> {
        self.auth.as_ref().map(|a| a.key.derive(label, &[]))
    }

    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }

    pub fn send(&mut self, m: &Ctl) -> Result<(), CtlError> {
        let mut line = serde_json::to_vec(m)?;
        if let Some(a) = &mut self.auth {
            let tag = a
                .key
                .sign(&[b"msg", a.me.label(), &a.sent.to_le_bytes(), &line]);
            a.sent += 1;
            line.push(b'\t');
            line.extend_from_slice(auth::hex(&tag).as_bytes());
        }
        line.push(b'\n');
        self.writer.write_all(&line)?;
        Ok(())
    }

    /// The next message; an `error` or `abort` from the peer is an error.
    pub fn recv(&mut self) -> Result<Ctl, CtlError> {
        let mut line = String::new();
        if (&mut self.reader).take(MAX_LINE).read_line(&mut line)? == 0 {
            return Err(CtlError::Closed);
        }
        if !line.ends_with('\n') {
            return Err(CtlError::Refused(format!(
                "a control line longer than {MAX_LINE} bytes, or cut off"
            )));
        }
        let line = line.trim_end_matches('\n');
        let json = match &mut self.auth {
            None => line,
            Some(a) => {
                let (json, tag) = line
                    .rsplit_once('\t')
                    .ok_or_else(|| CtlError::Refused("a message without its MAC".into()))?;
                let tag = unhex(tag).unwrap_or_default();
                let parts: [&[u8]; 4] = [
                    b"msg",
                    a.me.peer().label(),
                    &a.received.to_le_bytes(),
                    json.as_bytes(),
                ];
                if !a.key.verify(&parts, &tag) {
                    return Err(CtlError::Refused(
                        "a message failed authentication (forged, replayed or out of order)".into(),
                    ));
                }
                a.received += 1;
                json
            }
        };
        match serde_json::from_str(json)? {
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

    /// A connected pair (source, destination) over loopback.
    fn pair() -> (Control, Control) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let c = Control::new(TcpStream::connect(a).unwrap()).unwrap();
        let d = Control::new(l.accept().unwrap().0).unwrap();
        (c, d)
    }

    fn handshake(ks: Key, kd: Key) -> (Result<Control, CtlError>, Result<Control, CtlError>) {
        let (mut s, mut d) = pair();
        let t = std::thread::spawn(move || d.authenticate(&kd, Role::Destination).map(|_| d));
        let r = s.authenticate(&ks, Role::Source).map(|_| s);
        (r, t.join().unwrap())
    }

    #[test]
    fn peers_with_the_key_talk_and_derive_the_same_data_keys() {
        let k = Key::from_bytes([3; 32]);
        let (s, d) = handshake(k.clone(), k);
        let (mut s, mut d) = (s.unwrap(), d.unwrap());
        s.send(&Ctl::Hello { protocol: PROTOCOL }).unwrap();
        assert!(matches!(
            d.recv().unwrap(),
            Ctl::Hello { protocol: PROTOCOL }
        ));
        d.send(&Ctl::Probed).unwrap();
        assert!(matches!(s.recv().unwrap(), Ctl::Probed));
        assert_eq!(
            s.data_key("qemu-tls").unwrap().hex(),
            d.data_key("qemu-tls").unwrap().hex()
        );
        assert_ne!(
            s.data_key("qemu-tls").unwrap().hex(),
            s.data_key("relay").unwrap().hex()
        );
    }

    #[test]
    fn a_peer_without_the_key_is_refused_on_either_side() {
        // a destination without the key: the source stops before its proof
        let (s, d) = handshake(Key::from_bytes([1; 32]), Key::from_bytes([2; 32]));
        let e = s.err().unwrap().to_string();
        assert!(e.contains("destination did not prove"), "{e}");
        assert!(d.is_err());
        // a source without the key, talking to a real destination
        let (mut s, mut d) = pair();
        let t = std::thread::spawn(move || {
            d.authenticate(&Key::from_bytes([2; 32]), Role::Destination)
        });
        s.send(&Ctl::AuthHello {
            nonce: auth::hex(&[9; 32]),
        })
        .unwrap();
        let _challenge = s.recv().unwrap();
        s.send(&Ctl::AuthProof {
            proof: auth::hex(&[0; 32]),
        })
        .unwrap();
        let e = t.join().unwrap().unwrap_err().to_string();
        assert!(e.contains("source did not prove"), "{e}");
        // a peer that skips the handshake
        let (mut s, mut d) = pair();
        let t = std::thread::spawn(move || {
            d.authenticate(&Key::from_bytes([2; 32]), Role::Destination)
        });
        s.send(&Ctl::Hello { protocol: PROTOCOL }).unwrap();
        let e = t.join().unwrap().unwrap_err().to_string();
        assert!(e.contains("expected auth-hello"), "{e}");
    }

    #[test]
    fn forged_replayed_and_unsigned_messages_are_refused() {
        let k = Key::from_bytes([5; 32]);
        let (s, d) = handshake(k.clone(), k);
        let (mut s, mut d) = (s.unwrap(), d.unwrap());
        // what an attacker on the path would inject: a line signed with
        // another key, a replay of a signed line, a line with no MAC
        s.send(&Ctl::Verify).unwrap();
        assert!(matches!(d.recv().unwrap(), Ctl::Verify));
        // the same line again (its sequence number is 0, the next is 1)
        let json = serde_json::to_vec(&Ctl::Verify).unwrap();
        let tag =
            s.auth
                .as_ref()
                .unwrap()
                .key
                .sign(&[b"msg", b"source", &0u64.to_le_bytes(), &json]);
        let mut replay = json.clone();
        replay.push(b'\t');
        replay.extend_from_slice(auth::hex(&tag).as_bytes());
        replay.push(b'\n');
        s.send_raw(&replay).unwrap();
        let e = d.recv().unwrap_err().to_string();
        assert!(e.contains("failed authentication"), "{e}");
        let (s2, d2) = handshake(Key::from_bytes([5; 32]), Key::from_bytes([5; 32]));
        let (mut s2, mut d2) = (s2.unwrap(), d2.unwrap());
        s2.send_raw(b"{\"msg\":\"commit\"}\n").unwrap();
        let e = d2.recv().unwrap_err().to_string();
        assert!(e.contains("without its MAC"), "{e}");
        s.send_raw(b"{\"msg\":\"commit\"}\t00\n").unwrap();
        assert!(d.recv().is_err());
    }

    #[test]
    fn an_endless_line_is_refused() {
        let (mut s, mut d) = pair();
        let t = std::thread::spawn(move || {
            let _ = s.send_raw(&vec![b'x'; (MAX_LINE + 10) as usize]);
        });
        let e = d.recv().unwrap_err().to_string();
        assert!(e.contains("longer than"), "{e}");
        t.join().unwrap();
    }
}
