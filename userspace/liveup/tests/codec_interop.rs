//! Codec interop against the real libqatzip (Debian trixie's, software
//! fallback, inside the chroot tools/mkqatroot.sh makes): what QAT
//! compressed decodes in software and the reverse, and every codec's output
//! is read by the standard command-line tools (gzip, lz4, zstd), and the
//! qzip tool's output by our decoders.

use liveup::migrate::codec::{CodecKind, Decoder, Encoder, Format};
use qatzip_sys::chroot_test::run_inside;
use qatzip_sys::QatZip;
use std::path::Path;
use std::process::Command;

fn mkqatroot() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tools/mkqatroot.sh"
    ))
}

#[path = "support/guest_like.rs"]
mod guest_like;
use guest_like::sample;

fn tool(cmd: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut c = Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let mut stdin = c.stdin.take().unwrap();
    let input = input.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&input));
    let out = c.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    assert!(out.status.success(), "{cmd} {args:?} failed");
    out.stdout
}

#[test]
fn qat_and_software_codecs_interoperate_with_real_libqatzip() {
    if !run_inside(
        mkqatroot(),
        "qat_and_software_codecs_interoperate_with_real_libqatzip",
    ) {
        return;
    }
    let lib = QatZip::load().expect("libqatzip.so.3");
    let mut qat_dec = Decoder::new(Some(&lib)).unwrap();
    let mut sw_dec = Decoder::new(None).unwrap();
    assert!(qat_dec.uses_qatzip() && !sw_dec.uses_qatzip());

    for (i, n) in [4096usize, 100_000, 1 << 20, 4 << 20]
        .into_iter()
        .enumerate()
    {
        let data = sample(n, i as u32 + 1);
        for level in [1, 6, 9] {
            // QAT (software fallback here) -> software decoder and gzip(1).
            let mut enc = Encoder::new(CodecKind::Qat, level, Some(&lib)).unwrap();
            assert!(!enc.on_hardware());
            let mut z = Vec::new();
            assert_eq!(enc.compress(&data, &mut z).unwrap(), Format::Gzip);
            assert!(z.len() < n / 2, "qat level {level}: {} of {n}", z.len());
            let mut out = Vec::new();
            sw_dec.decompress(Format::Gzip, &z, n, &mut out).unwrap();
            assert!(out == data, "qat -> flate2, n={n} level={level}");
            assert!(tool("gzip", &["-dc"], &z) == data, "qat -> gzip(1)");
            qat_dec.decompress(Format::Gzip, &z, n, &mut out).unwrap();
            assert!(out == data, "qat -> qat");

            // Software gzip -> QATzip decoder.
            let mut enc = Encoder::new(CodecKind::Gzip, level, None).unwrap();
            enc.compress(&data, &mut z).unwrap();
            qat_dec.decompress(Format::Gzip, &z, n, &mut out).unwrap();
            assert!(out == data, "flate2 -> qat, n={n} level={level}");
        }
        // gzip(1) output -> QATzip decoder and software decoder.
        let gz = tool("gzip", &["-c", "-6"], &data);
        let mut out = Vec::new();
        qat_dec.decompress(Format::Gzip, &gz, n, &mut out).unwrap();
        assert!(out == data, "gzip(1) -> qat");
        sw_dec.decompress(Format::Gzip, &gz, n, &mut out).unwrap();
        assert!(out == data, "gzip(1) -> flate2");
        // lz4 and zstd frames are what lz4(1) and zstd(1) read and write.
        for (kind, cmd) in [(CodecKind::Lz4, "lz4"), (CodecKind::Zstd, "zstd")] {
            let mut enc = Encoder::new(kind, kind.default_level(), None).unwrap();
            let mut z = Vec::new();
            enc.compress(&data, &mut z).unwrap();
            assert!(tool(cmd, &["-dc"], &z) == data, "{kind} -> {cmd}(1)");
            let theirs = tool(cmd, &["-c"], &data);
            sw_dec
                .decompress(kind.format(), &theirs, n, &mut out)
                .unwrap();
            assert!(out == data, "{cmd}(1) -> {kind}");
        }
    }

    // QATzip's own tool (qzip, software fallback) -> both our decoders.
    let data = sample(3 << 20, 99);
    let dir = std::env::temp_dir().join(format!("qzip-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("blob");
    std::fs::write(&f, &data).unwrap();
    let st = Command::new("qzip").arg("-k").arg(&f).status().unwrap();
    assert!(st.success(), "qzip");
    let z = std::fs::read(dir.join("blob.gz")).unwrap();
    let mut out = Vec::new();
    sw_dec
        .decompress(Format::Gzip, &z, data.len(), &mut out)
        .unwrap();
    assert!(out == data, "qzip -> flate2");
    qat_dec
        .decompress(Format::Gzip, &z, data.len(), &mut out)
        .unwrap();
    assert!(out == data, "qzip -> qat");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A whole relay stream across the real library: QAT-compressing sender
/// to a software-decoding receiver, and a software gzip sender to a
/// receiver that decodes through QATzip.
#[test]
fn relay_streams_cross_between_qatzip_and_software() {
    use liveup::migrate::auth::Key;
    use liveup::migrate::relay::{receive, send, FrameMac, ReceiveConfig, RelayStats, SendConfig};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;
    if !run_inside(
        mkqatroot(),
        "relay_streams_cross_between_qatzip_and_software",
    ) {
        return;
    }
    let lib = QatZip::load().expect("libqatzip.so.3");
    let data = sample(6 << 20, 42);
    for (codec, send_qat, recv_qat) in [
        (CodecKind::Qat, true, false),
        (CodecKind::Gzip, false, true),
    ] {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let rlib = recv_qat.then(|| lib.clone());
        let recv = std::thread::spawn(move || {
            let mut out = Vec::new();
            let cfg = ReceiveConfig {
                qat: rlib,
                idle_timeout: Duration::from_secs(20),
                mac: FrameMac::new(Key::from_bytes([3; 32])),
            };
            let s = receive(&l, &mut out, &cfg, &RelayStats::default()).unwrap();
            (out, s)
        });
        let conns = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let cfg = SendConfig {
            codec,
            level: 1,
            chunk_size: 256 << 10,
            qat: send_qat.then(|| lib.clone()),
            confirm_timeout: Duration::from_secs(20),
            stall_timeout: Duration::from_secs(20),
            corrupt_chunk: None,
            sndbuf: None,
            mac: FrameMac::new(Key::from_bytes([3; 32])),
        };
        let sent = send(
            &data[..],
            conns,
            &cfg,
            &RelayStats::default(),
            &AtomicBool::new(false),
        )
        .unwrap();
        let (out, got) = recv.join().unwrap();
        assert!(out == data, "{codec}: stream differs");
        assert_eq!(got.chunks, sent.chunks);
        assert!(
            sent.wire_bytes * 3 < sent.raw_bytes * 2,
            "{codec}: {sent:?}"
        );
    }
}
