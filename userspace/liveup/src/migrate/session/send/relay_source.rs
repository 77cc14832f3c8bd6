//! The source half of the relay: QEMU's stream, taken from a UNIX socket,
//! sent to the destination over several connections.

use crate::migrate::relay::{self, RelayError, RelayStats, RelaySummary, SendConfig};
use crate::migrate::session::MigrateError;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Source half of the relay: take QEMU's stream from `l`, send it to `to`
/// over `n` connections. On failure QEMU's socket is shut down, so its
/// migration fails and the VM stays.
pub(super) fn relay_source(
    l: UnixListener,
    to: SocketAddr,
    n: u32,
    cfg: &SendConfig,
    stats: &RelayStats,
    cancel: &AtomicBool,
) -> Result<RelaySummary, MigrateError> {
    l.set_nonblocking(true)?;
    let t = Instant::now();
    let qemu = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if cancel.load(Ordering::SeqCst) || t.elapsed() > Duration::from_secs(30) {
                    return Err(RelayError::Cancelled.into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    };
    qemu.set_nonblocking(false)?;
    qemu.set_read_timeout(Some(Duration::from_millis(5)))?;
    let conns: Result<Vec<TcpStream>, _> = (0..n)
        .map(|_| TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .collect();
    let conns = match conns {
        Ok(c) => c,
        Err(e) => {
            let _ = qemu.shutdown(std::net::Shutdown::Both);
            return Err(MigrateError::Unreachable {
                addr: to.to_string(),
                cause: e,
            });
        }
    };
    let r = relay::send(&qemu, conns, cfg, stats, cancel);
    if r.is_err() {
        let _ = qemu.shutdown(std::net::Shutdown::Both);
    }
    Ok(r?)
}
