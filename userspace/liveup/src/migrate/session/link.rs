//! The network between the two sides: the source connects to the agent
//! and measures the link; the agent accepts it and gives its address to
//! QEMU.

use super::MigrateError;
use crate::migrate::control::{unexpected, Control, Ctl};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

pub(super) fn connect_dest(to: &str) -> Result<TcpStream, MigrateError> {
    let unreachable = |cause| MigrateError::Unreachable {
        addr: to.to_string(),
        cause,
    };
    let addrs: Vec<SocketAddr> = to.to_socket_addrs().map_err(unreachable)?.collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(unreachable(last))
}

/// Measure the link: send growing probes (x4 from 256 KiB) until one takes
/// 100 ms or is 64 MiB (at 1 Gbit/s 21 MiB in all, about 170 ms; a 250 ms
/// threshold cost 85 MiB there, 0.7 s; at most 85 MiB on a fast link).
pub(super) fn probe_link(c: &mut Control) -> Result<f64, MigrateError> {
    let mut n: u64 = 256 << 10;
    let buf = vec![0x5au8; 1 << 20];
    loop {
        let t = Instant::now();
        c.send(&Ctl::Probe { bytes: n })?;
        let mut left = n;
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            c.send_raw(&buf[..k])?;
            left -= k as u64;
        }
        match c.recv()? {
            Ctl::Probed => {}
            got => return Err(unexpected("probed", got).into()),
        }
        let secs = t.elapsed().as_secs_f64();
        if secs >= 0.1 || n >= 64 << 20 {
            return Ok(n as f64 / secs.max(1e-6));
        }
        n *= 4;
    }
}

pub(super) fn accept_timeout(
    l: &TcpListener,
    t: Duration,
) -> std::io::Result<(TcpStream, SocketAddr)> {
    l.set_nonblocking(true)?;
    let start = Instant::now();
    loop {
        match l.accept() {
            Ok((s, a)) => {
                s.set_nonblocking(false)?;
                return Ok((s, a));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && start.elapsed() < t => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no source connected",
                ))
            }
            Err(e) => return Err(e),
        }
    }
}

pub(super) fn fmt_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}
