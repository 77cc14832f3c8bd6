use super::*;

fn qemu(compressions: &[&str]) -> QemuFacts {
    QemuFacts {
        version: "11.1.3".into(),
        multifd: true,
        compressions: compressions.iter().map(|s| s.to_string()).collect(),
        dirty_limit: true,
        xbzrle: true,
        kvm: false,
        dirty_ms: true,
        dirty_ring: false,
        vcpus: 1,
    }
}

fn host(idle: f64, q: QemuFacts) -> HostFacts {
    HostFacts {
        cpus: 8,
        idle_cpus: idle,
        mem_available: 16 << 30,
        qat_devices: 0,
        qatzip: false,
        qat_hw: false,
        qemu: q,
    }
}

fn input(link_mbps: f64, dirty_mbps: f64, idle: f64, comps: &[&str]) -> PlanInput {
    PlanInput {
        src: host(idle, qemu(comps)),
        dst: host(idle, qemu(comps)),
        link_bps: link_mbps * 1e6,
        dirty_bps: dirty_mbps * 1e6,
        ram_bytes: 8 << 30,
        prefs: Prefs::default(),
    }
}

#[test]
fn fast_link_idle_cpu_means_no_compression_native() {
    let p = plan(&input(10_000.0, 0.0, 6.0, &["none", "zlib", "zstd"]));
    assert_eq!(p.mode, Mode::Native);
    assert_eq!(p.codec, CodecKind::None);
    assert_eq!(p.native_compression.as_deref(), Some("none"));
    // a guest that keeps up is never throttled by QEMU: on as a net, at
    // QEMU's own start
    assert_eq!(p.converge, Converge::AutoConverge);
    assert_eq!(p.throttle_initial_pct, 0);
    assert!(p
        .reasons
        .iter()
        .any(|r| r.starts_with("auto-converge as a safety net")));
    assert!(p.reasons.iter().any(|r| r.contains("not the bottleneck")));
}

#[test]
fn slow_link_picks_native_zstd_when_both_qemus_have_it() {
    let p = plan(&input(12.5, 0.0, 4.0, &["none", "zlib", "zstd"]));
    assert_eq!(p.mode, Mode::Native);
    assert_eq!(p.codec, CodecKind::Zstd);
    assert_eq!(p.native_compression.as_deref(), Some("zstd"));
    assert_eq!(p.threads, 3);
    // Lots of CPU over a slow link: a higher level.
    assert_eq!(p.level, 3);
}

#[test]
fn qemu_without_multifd_compression_goes_relay() {
    let p = plan(&input(12.5, 0.0, 4.0, &["none"]));
    assert_eq!(p.mode, Mode::Relay);
    assert_ne!(p.codec, CodecKind::None);
    assert!(p.reasons.iter().any(|r| r.starts_with("relay:")), "{p}");
    // 12.5 MB/s: 125 kB in 10 ms -> 128 KiB chunks.
    assert_eq!(p.chunk_size, 128 << 10);
    assert_eq!(
        plan(&input(10_000.0, 0.0, 4.0, &["none"])).chunk_size,
        1 << 20
    );
    assert_eq!(plan(&input(1.0, 0.0, 4.0, &["none"])).chunk_size, 64 << 10);
    // Only one side lacking it is enough.
    let mut i = input(12.5, 0.0, 4.0, &["none", "zstd"]);
    i.dst.qemu.compressions = vec!["none".into()];
    assert_eq!(plan(&i).mode, Mode::Relay);
}

#[test]
fn qat_hardware_wins_when_cpu_is_busy_and_qemu_lacks_qatzip() {
    let mut i = input(1250.0, 0.0, 1.0, &["none", "zlib", "zstd"]);
    i.src.qat_devices = 2;
    i.src.qatzip = true;
    i.src.qat_hw = true;
    let p = plan(&i);
    assert_eq!(p.codec, CodecKind::Qat, "{p}");
    assert_eq!(p.mode, Mode::Relay);
    // With qatzip in both QEMUs it goes native.
    i.src.qemu.compressions.push("qatzip".into());
    i.dst.qemu.compressions.push("qatzip".into());
    let p = plan(&i);
    assert_eq!((p.mode, p.codec), (Mode::Native, CodecKind::Qat), "{p}");
    assert_eq!(p.native_compression.as_deref(), Some("qatzip"));
}

#[test]
fn qatzip_without_hardware_is_not_chosen() {
    let mut i = input(12.5, 0.0, 4.0, &["none"]);
    i.src.qatzip = true;
    let p = plan(&i);
    assert_ne!(p.codec, CodecKind::Qat);
    assert!(p.reasons.iter().any(|r| r.contains("no QAT hardware")));
}

#[test]
fn busy_cpu_on_a_slow_link_prefers_cheap_codecs() {
    // One idle core, 100 MB/s: lz4 (450 MB/s, 2x) beats gzip (70 MB/s).
    let p = plan(&input(100.0, 0.0, 1.0, &["none"]));
    assert_eq!(p.mode, Mode::Relay);
    assert_eq!(p.threads, 1);
    assert!(matches!(p.codec, CodecKind::Lz4 | CodecKind::Zstd), "{p}");
}

#[test]
fn high_dirty_rate_turns_on_convergence_and_xbzrle_in_relay() {
    let p = plan(&input(12.5, 200.0, 4.0, &["none"]));
    assert_eq!(p.mode, Mode::Relay);
    assert_eq!(p.converge, Converge::AutoConverge, "TCG: no dirty ring");
    // the throttle starts where the guest dirties half of what is sent
    assert_eq!(
        p.throttle_initial_pct,
        throttle_start(200.0e6, p.est_bps),
        "{p}"
    );
    assert!(p.throttle_initial_pct > 20, "{p}");
    assert!(p.xbzrle_cache.is_some_and(|c| c >= 16 << 20), "{p}");
    let mut i = input(12.5, 200.0, 4.0, &["none", "zstd"]);
    i.src.qemu.kvm = true;
    i.src.qemu.dirty_ring = true;
    let p = plan(&i);
    assert_eq!(p.mode, Mode::Native);
    assert_eq!(p.converge, Converge::DirtyLimit);
    assert!(p.dirty_limit_mbps >= 1);
    assert_eq!(p.xbzrle_cache, None, "no xbzrle with multifd");
}

#[test]
fn dirty_limit_needs_the_ring_and_is_shared_by_the_vcpus() {
    // KVM without the dirty ring: QEMU would refuse dirty-limit
    let mut i = input(12.5, 200.0, 4.0, &["none", "zstd"]);
    i.src.qemu.kvm = true;
    let p = plan(&i);
    assert_eq!(p.converge, Converge::AutoConverge, "{p}");
    assert!(
        p.reasons.iter().any(|w| w.contains("dirty-ring-size")),
        "{:?}",
        p.reasons
    );
    // with it: the limit QEMU applies to each vCPU is the whole budget
    // divided among them
    i.src.qemu.dirty_ring = true;
    let one = plan(&i).dirty_limit_mbps;
    i.src.qemu.vcpus = 4;
    let four = plan(&i).dirty_limit_mbps;
    assert!(one >= 4, "{one}");
    assert!(
        four * 4 <= one && four * 4 + 4 > one,
        "{one} for 1 vCPU, {four} each for 4"
    );
}

#[test]
fn low_memory_or_busy_cpu_refuses_xbzrle() {
    let mut i = input(12.5, 200.0, 4.0, &["none"]);
    i.src.mem_available = 256 << 20;
    let p = plan(&i);
    assert_eq!(p.xbzrle_cache, None);
    assert!(p.reasons.iter().any(|r| r.contains("exceeds")), "{p}");
    let mut i = input(12.5, 200.0, 1.0, &["none"]);
    i.prefs.threads = Some(2);
    let p = plan(&i);
    assert_eq!(p.xbzrle_cache, None);
    assert!(
        p.reasons.iter().any(|r| r.contains("no CPU to spare")),
        "{p}"
    );
}

#[test]
fn preferences_override_and_impossible_native_is_explained() {
    let mut i = input(10_000.0, 0.0, 6.0, &["none", "zstd"]);
    i.prefs = Prefs {
        mode: Some(Mode::Relay),
        codec: Some(CodecKind::Lz4),
        threads: Some(3),
        chunk_size: Some(256 << 10),
        downtime_ms: Some(50),
        ..Default::default()
    };
    let p = plan(&i);
    assert_eq!(
        (p.mode, p.codec, p.threads, p.chunk_size, p.downtime_ms),
        (Mode::Relay, CodecKind::Lz4, 3, 256 << 10, 50)
    );
    i.prefs = Prefs {
        mode: Some(Mode::Native),
        codec: Some(CodecKind::Lz4),
        ..Default::default()
    };
    let p = plan(&i);
    assert!(
        p.reasons
            .iter()
            .any(|r| r.contains("native lz4 impossible")),
        "{p}"
    );
    // Nothing native fits: the relay carries it anyway.
    assert_eq!(p.mode, Mode::Relay);
}

#[test]
fn the_throttle_starts_where_the_guest_dirties_half_of_what_is_sent() {
    // 21 MB/s against 4.4 MB/s (tools/check-migrate.sh's fast dirtier)
    assert_eq!(throttle_start(21.0e6, 4.4e6), 90);
    // at or under twice the link: QEMU's own start
    assert_eq!(throttle_start(1.0e6, 4.0e6), 20);
    assert_eq!(throttle_start(8.0e6, 4.0e6), 75);
    // never a full stop, and nothing odd from odd input
    assert_eq!(throttle_start(1.0e12, 1.0), 99);
    assert_eq!(throttle_start(0.0, 0.0), 20);
    assert_eq!(throttle_start(f64::NAN, 1.0), 20);
    // a dirty rate of 0 (a sample that saw nothing): auto-converge all the
    // same, from QEMU's own start; and none when the operator says off
    let p = plan(&input(12.5, 0.0, 4.0, &["none", "zstd"]));
    assert_eq!(p.converge, Converge::AutoConverge);
    assert_eq!(p.throttle_initial_pct, 0);
    let mut i = input(12.5, 200.0, 4.0, &["none", "zstd"]);
    i.prefs.converge = Some(Converge::Off);
    let p = plan(&i);
    assert_eq!(p.converge, Converge::Off);
    assert_eq!(p.throttle_initial_pct, 0);
}
