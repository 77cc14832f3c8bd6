//! The bindings against the real libqatzip (Debian trixie's libqatzip3)
//! in its software-fallback mode, inside the chroot tools/mkqatroot.sh
//! makes. There is no QAT here, so qzInit must report a no-hardware status
//! and the session must still compress and decompress (in software).

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use qatzip_sys::chroot_test::run_inside;
use qatzip_sys::*;
use std::io::{Read, Write};
use std::path::Path;

fn mkqatroot() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tools/mkqatroot.sh"
    ))
}

/// Guest-memory-like data: text, zero runs, a little noise.
fn sample(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    let mut x: u32 = 12345;
    while v.len() < n {
        x = x.wrapping_mul(1103515245).wrapping_add(12345);
        match (x >> 16) % 4 {
            0 => v.extend_from_slice(b"page table entry 0x0000ffff8000 present rw "),
            1 => v.extend(std::iter::repeat_n(0u8, 300)),
            2 => v.extend_from_slice(&x.to_le_bytes()),
            _ => v.extend_from_slice(format!("{x:08x} ").as_bytes()),
        }
    }
    v.truncate(n);
    v
}

#[test]
fn real_libqatzip_software_fallback_roundtrip_and_gzip_interop() {
    if !run_inside(
        mkqatroot(),
        "real_libqatzip_software_fallback_roundtrip_and_gzip_interop",
    ) {
        return;
    }
    let lib = QatZip::load().expect("libqatzip.so.3 in the chroot");
    let d = lib.defaults().expect("qzGetDefaults");
    assert_eq!(d.comp_algorithm, QZ_DEFLATE);
    assert_eq!(d.data_fmt, QZ_DEFLATE_GZIP_EXT);
    assert_eq!(d.direction, QZ_DIR_BOTH);
    assert_eq!(d.sw_backup, 1);

    // Without sw_backup and without QAT, qzInit must refuse.
    let e = Session::new(
        &lib,
        SessionConfig {
            sw_backup: false,
            ..Default::default()
        },
    );
    match e {
        Err(QzError::Status { call, code }) => {
            eprintln!("no sw_backup: {call} -> {}", status_name(code));
            assert!(code < 0, "{}", status_name(code));
        }
        Ok(_) => panic!("a session without QAT and without sw_backup was set up"),
        Err(e) => panic!("unexpected {e}"),
    }

    let mut s = Session::new(&lib, SessionConfig::default()).expect("software session");
    eprintln!(
        "qzInit -> {}, qzSetupSession -> {}, hw_session_stat {}",
        status_name(s.init_status),
        status_name(s.setup_status),
        status_name(s.hw_status())
    );
    assert!(!s.hardware(), "there is no QAT on this host");
    assert_eq!(s.hw_status(), QZ_NO_HW, "software fallback expected");
    assert!(devices().is_empty() || !s.hardware());

    for n in [1usize, 4096, 65536, 1 << 20] {
        let data = sample(n);
        let mut z = Vec::new();
        s.compress(&data, &mut z).expect("qzCompress");
        if n >= 4096 {
            assert!(z.len() < n / 2, "{n} -> {}: not compressed", z.len());
        }
        assert_eq!(&z[..2], &[0x1f, 0x8b], "gzip magic");
        // QATzip decodes its own output...
        let mut back = Vec::new();
        s.decompress(&z, n, &mut back).expect("qzDecompress");
        assert_eq!(back, data);
        // ...and so does a software gzip decoder.
        let mut sw = Vec::new();
        MultiGzDecoder::new(&z[..]).read_to_end(&mut sw).unwrap();
        assert_eq!(sw, data, "flate2 decoding QATzip output, n={n}");
        // Software gzip output decodes in QATzip.
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        enc.write_all(&data).unwrap();
        let gz = enc.finish().unwrap();
        let mut q = Vec::new();
        s.decompress(&gz, n, &mut q)
            .expect("qzDecompress of flate2 gzip");
        assert_eq!(q, data, "QATzip decoding flate2 output, n={n}");
    }

    // A wrong expected length and corrupt input are errors, not garbage.
    let data = sample(100_000);
    let mut z = Vec::new();
    s.compress(&data, &mut z).unwrap();
    let mut out = Vec::new();
    assert!(s.decompress(&z, data.len() - 1, &mut out).is_err());
    let mid = z.len() / 2;
    z[mid] ^= 0x55;
    z[mid + 1] ^= 0xaa;
    let r = s.decompress(&z, data.len(), &mut out);
    assert!(r.is_err() || out != data, "corruption went unnoticed");
}
