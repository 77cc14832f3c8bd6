//! The network between the two sides: the source connects to the agent
//! and measures the link; the agent accepts it and gives its address to
//! QEMU.

use super::MigrateError;
use crate::migrate::control::{unexpected, Control, Ctl, CtlError};
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

/// The URI the source hands its QEMU for a native migration, from the
/// destination's `ready`. The destination is a network peer: only
/// `tcp:<the address its control connection came from>:<port>` is taken,
/// never another host (the guest's memory would go there) nor another
/// transport (`exec:` would run a command on this host as QEMU's user).
pub(super) fn native_uri(dest_ip: IpAddr, offered: Option<&str>) -> Result<String, CtlError> {
    let offered = offered.ok_or_else(|| CtlError::Peer("no native URI".into()))?;
    let want = fmt_ip(dest_ip);
    let refuse = || {
        CtlError::Refused(format!(
            "destination offered migration URI {offered:?}; only tcp:{want}:<port> is accepted"
        ))
    };
    let (host, port) = offered
        .strip_prefix("tcp:")
        .and_then(|r| r.rsplit_once(':'))
        .ok_or_else(refuse)?;
    if host != want || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refuse());
    }
    let port: u16 = port.parse().ok().filter(|&p| p != 0).ok_or_else(refuse)?;
    Ok(format!("tcp:{want}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn the_destinations_own_tcp_address_is_taken() {
        assert_eq!(
            native_uri(V4, Some("tcp:192.0.2.7:4444")).unwrap(),
            "tcp:192.0.2.7:4444"
        );
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(native_uri(v6, Some("tcp:[::1]:5")).unwrap(), "tcp:[::1]:5");
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "exec:touch /tmp/pwned",
            "exec:tcp:192.0.2.7:4444",
            "tcp:198.51.100.1:4444",
            "tcp:192.0.2.7:0",
            "tcp:192.0.2.7:65536",
            "tcp:192.0.2.7:+4444",
            "tcp:192.0.2.7:",
            "tcp:192.0.2.7",
            "unix:/tmp/sock",
            "file:/tmp/x",
            "rdma:192.0.2.7:4444",
            "tcp:192.0.2.7:4444,ipv4=on",
            " tcp:192.0.2.7:4444",
        ] {
            match native_uri(V4, Some(bad)) {
                Err(CtlError::Refused(m)) => {
                    assert!(m.contains("only tcp:192.0.2.7:<port>"), "{m}")
                }
                r => panic!("{bad:?}: {r:?}"),
            }
        }
        assert!(matches!(native_uri(V4, None), Err(CtlError::Peer(_))));
    }
}
