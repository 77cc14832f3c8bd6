//! A peer that falls silent, goes away or never confirms: each end fails
//! instead of waiting forever.

use super::*;

#[test]
fn a_silent_connection_is_a_stall() {
    let (l, addr) = listener();
    let h = std::thread::spawn(move || {
        let mut out = Vec::new();
        let cfg = ReceiveConfig {
            qat: None,
            idle_timeout: Duration::from_millis(300),
            mac: mac(),
        };
        receive(&l, &mut out, &cfg, &RelayStats::default())
    });
    let mut f = Fake::connect(addr, 1, 4);
    f.chunk(0, 0, b"aaaa");
    let r = h.join().unwrap();
    assert!(matches!(r, Err(RelayError::Stalled(0, _))), "{r:?}");
}

#[test]
fn sender_fails_when_the_receiver_goes_away() {
    let (l, addr) = listener();
    // A receiver that reads a little, then dies.
    let h = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut b = vec![0u8; 100_000];
        let _ = c.read_exact(&mut b);
        drop(c);
        drop(l);
    });
    let data = sample(64 << 20, 1);
    let conns = vec![TcpStream::connect(addr).unwrap()];
    let r = send_over(&data[..], conns, &cfg(CodecKind::None, 1 << 16));
    h.join().unwrap();
    assert!(r.is_err(), "sender must notice the cut");
}

#[test]
fn sender_fails_without_confirmation() {
    let (l, addr) = listener();
    // Reads everything, never confirms.
    let h = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut sink = Vec::new();
        let _ = c.read_to_end(&mut sink);
    });
    let c = TcpStream::connect(addr).unwrap();
    let mut cf = cfg(CodecKind::Zstd, 4096);
    cf.confirm_timeout = Duration::from_millis(300);
    let r = send_over(&sample(50_000, 4)[..], vec![c], &cf);
    assert!(matches!(r, Err(RelayError::NoConfirm(_))), "{r:?}");
    h.join().unwrap();
}
