//! The adaptive plan: from measured host CPU idle, link bandwidth, the VM's
//! dirty rate and what each QEMU offers, choose how to move the VM (QEMU's
//! multifd or the relay), the codec, its level and threads, and the
//! convergence aids, with the reasons. A pure function, so it is tested
//! without VMs. Its cost model (codec speeds and ratios, estimates) is in
//! plan/model.rs.

use super::codec::CodecKind;
use serde::{Deserialize, Serialize};
use std::fmt;

mod model;

pub use model::throttle_start;
use model::{estimate, model, native_ok};

/// How the migration stream travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// QEMU's own multifd channels, QEMU compresses.
    Native,
    /// liveup carries the stream over N connections and compresses.
    Relay,
}

/// What each QEMU offers, from its QMP schema.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QemuFacts {
    pub version: String,
    /// The `multifd` migration capability exists.
    pub multifd: bool,
    /// Values of `multifd-compression` (none, zlib, zstd, qatzip, ...).
    pub compressions: Vec<String>,
    /// The `dirty-limit` capability exists.
    pub dirty_limit: bool,
    /// The `xbzrle` capability exists.
    pub xbzrle: bool,
    /// KVM (dirty-limit needs its dirty ring); false under TCG.
    pub kvm: bool,
    /// calc-dirty-rate takes `calc-time-unit` (milliseconds; QEMU >= 8.2).
    #[serde(default)]
    pub dirty_ms: bool,
    /// KVM's dirty ring is on (`-accel kvm,dirty-ring-size=N`): QEMU
    /// refuses the `dirty-limit` capability without it.
    #[serde(default)]
    pub dirty_ring: bool,
    /// The VM's vCPUs (0: not known). `vcpu-dirty-limit` is per vCPU.
    #[serde(default)]
    pub vcpus: u32,
}

/// What one host offers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HostFacts {
    pub cpus: u32,
    /// Idle CPUs, measured (e.g. 1.6 of 2).
    pub idle_cpus: f64,
    pub mem_available: u64,
    /// QAT functions found in sysfs.
    pub qat_devices: u32,
    /// libqatzip could be loaded.
    pub qatzip: bool,
    /// A QATzip session ran on QAT hardware (not its software fallback).
    pub qat_hw: bool,
    pub qemu: QemuFacts,
}

/// The user's overrides; `None` leaves the choice to the plan.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Prefs {
    pub mode: Option<Mode>,
    pub codec: Option<CodecKind>,
    pub level: Option<u32>,
    pub threads: Option<u32>,
    pub chunk_size: Option<usize>,
    pub downtime_ms: Option<u64>,
    pub xbzrle_cache: Option<u64>,
    pub converge: Option<Converge>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanInput {
    pub src: HostFacts,
    pub dst: HostFacts,
    /// Measured link bandwidth, bytes/s.
    pub link_bps: f64,
    /// Measured guest dirty rate, bytes/s.
    pub dirty_bps: f64,
    pub ram_bytes: u64,
    pub prefs: Prefs,
}

/// A convergence aid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Converge {
    Off,
    AutoConverge,
    DirtyLimit,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub mode: Mode,
    pub codec: CodecKind,
    /// The multifd-compression value for native mode.
    pub native_compression: Option<String>,
    pub level: u32,
    /// Compression threads = relay connections = multifd channels.
    pub threads: u32,
    /// Relay chunk size, bytes.
    pub chunk_size: usize,
    /// XBZRLE cache size (relay mode only: QEMU uses XBZRLE only without
    /// multifd).
    pub xbzrle_cache: Option<u64>,
    pub converge: Converge,
    /// dirty-limit: the per-vCPU limit, MB/s.
    pub dirty_limit_mbps: u64,
    /// auto-converge: the throttle QEMU starts at once it sees the guest
    /// outrun the link (`cpu-throttle-initial`, percent; 0: QEMU's 20).
    #[serde(default)]
    pub throttle_initial_pct: u32,
    pub downtime_ms: u64,
    /// Estimated guest-memory throughput, bytes/s.
    pub est_bps: f64,
    pub reasons: Vec<String>,
}

pub const QAT_DEVICE_MBPS: f64 = 1200.0;
pub const DEFAULT_CHUNK: usize = 1 << 20;
pub const MIN_AUTO_CHUNK: usize = 64 << 10;
pub const DEFAULT_DOWNTIME_MS: u64 = 300;

fn mb(bps: f64) -> String {
    format!("{:.1} MB/s", bps / 1e6)
}

/// Make the plan.
pub fn plan(input: &PlanInput) -> Plan {
    let p = &input.prefs;
    let mut why = Vec::new();
    // Threads: what the source can spare besides QEMU's own migration
    // thread (half a core), at least one, at most 8.
    let spare = (input.src.idle_cpus - 0.5).floor().max(1.0) as u32;
    let threads = p.threads.unwrap_or(spare.clamp(1, 8)).max(1);
    if p.threads.is_none() {
        why.push(format!(
            "threads {threads}: source has {:.1} of {} CPUs idle, half a core kept for QEMU",
            input.src.idle_cpus, input.src.cpus
        ));
    }

    let mut codecs: Vec<CodecKind> = match p.codec {
        Some(c) => vec![c],
        None => {
            let mut v = vec![
                CodecKind::None,
                CodecKind::Lz4,
                CodecKind::Zstd,
                CodecKind::Gzip,
            ];
            if input.src.qat_hw && input.src.qatzip {
                v.push(CodecKind::Qat);
            } else if input.src.qatzip {
                why.push(
                    "qat not considered: libqatzip loads but no QAT hardware session \
                     (its software fallback is plain deflate)"
                        .into(),
                );
            }
            v
        }
    };
    codecs.dedup();

    // Every (codec, mode) pair that can run, with its estimate.
    let mut best: Option<(f64, CodecKind, Mode, Option<&'static str>)> = None;
    for &codec in &codecs {
        let level = p.level.unwrap_or(codec.default_level());
        for mode in [Mode::Native, Mode::Relay] {
            if p.mode.is_some_and(|m| m != mode) {
                continue;
            }
            let native = if mode == Mode::Native {
                match native_ok(input, codec) {
                    Ok(n) => Some(n),
                    Err(e) => {
                        if p.codec.is_some() || p.mode == Some(Mode::Native) {
                            why.push(format!("native {codec} impossible: {e}"));
                        }
                        continue;
                    }
                }
            } else {
                None
            };
            let est = estimate(input, codec, level, threads, mode);
            // Within 5 %, prefer what was found first: native over relay,
            // cheaper codecs over dearer ones.
            if best.is_none_or(|(b, ..)| est > b * 1.05) {
                best = Some((est, codec, mode, native));
            }
        }
    }
    let (est, codec, mode, native) = best.unwrap_or((
        estimate(input, CodecKind::None, 0, threads, Mode::Relay),
        CodecKind::None,
        Mode::Relay,
        None,
    ));
    why.push(format!(
        "link {}, ratio model {:.1}x for {codec}: estimated {} of guest memory via {}",
        mb(input.link_bps),
        model(codec, codec.default_level()).ratio,
        mb(est),
        match mode {
            Mode::Native => "QEMU multifd",
            Mode::Relay => "the relay",
        }
    ));
    if mode == Mode::Relay && p.mode.is_none() {
        let reason = native_ok(input, codec)
            .err()
            .unwrap_or_else(|| "relay estimated faster".into());
        why.push(format!("relay: {reason}"));
    }
    if codec == CodecKind::None && p.codec.is_none() {
        why.push(format!(
            "no compression: the link ({}) is not the bottleneck for {threads} thread(s)",
            mb(input.link_bps)
        ));
    }

    // Level: with CPU to spare over the link, trade some speed for ratio.
    let mut level = p.level.unwrap_or(codec.default_level());
    if p.level.is_none() && codec == CodecKind::Zstd {
        let cpu = model(codec, 3).mbps_per_core * 1e6 * threads as f64;
        if cpu > 2.0 * input.link_bps * model(codec, 3).ratio {
            level = 3;
            why.push(format!(
                "zstd level 3: {threads} thread(s) at level 3 still outrun the link twice"
            ));
        }
    }

    // Convergence: can we send faster than the guest dirties?
    let mut converge = p.converge.unwrap_or(Converge::Off);
    let mut dirty_limit_mbps = 0;
    let mut throttle_initial_pct = 0;
    if p.converge.is_none() && input.dirty_bps > 0.5 * est {
        let q = &input.src.qemu;
        let kvm_ring = q.kvm && q.dirty_limit && q.dirty_ring;
        converge = if kvm_ring {
            Converge::DirtyLimit
        } else {
            Converge::AutoConverge
        };
        // a quarter of what the link carries, shared by the vCPUs (QEMU
        // applies vcpu-dirty-limit to each)
        dirty_limit_mbps = ((est * 0.25) / 1e6 / f64::from(q.vcpus.max(1))).max(1.0) as u64;
        if converge == Converge::AutoConverge {
            throttle_initial_pct = throttle_start(input.dirty_bps, est);
        }
        why.push(format!(
            "{}: dirty rate {} is over half the estimated {}{}",
            match converge {
                Converge::DirtyLimit => "dirty-limit",
                _ => "auto-converge",
            },
            mb(input.dirty_bps),
            mb(est),
            if kvm_ring {
                ""
            } else {
                if q.kvm && q.dirty_limit {
                    " (dirty-limit needs KVM's dirty ring, -accel kvm,dirty-ring-size=N: off, so CPU throttling)"
                } else {
                    " (dirty-limit needs KVM's dirty ring: not available, so CPU throttling)"
                }
            }
        ));
    }
    // Otherwise auto-converge as a safety net: QEMU throttles only a guest
    // that dirtied over half of what a pass sent, twice, so one that keeps
    // up is never slowed, and a dirty-rate sample that saw nothing (one
    // 500 ms sample read 0 for a guest rewriting 4 MiB without pause,
    // session 21's make check, which then never converged) cannot leave a
    // fast dirtier without an aid. QEMU's own start (20 %) then.
    if p.converge.is_none() && converge == Converge::Off {
        converge = Converge::AutoConverge;
        why.push(format!(
            "auto-converge as a safety net: QEMU throttles only if the guest outruns the link (dirty rate measured {}, estimate {})",
            mb(input.dirty_bps),
            mb(est)
        ));
    }

    // XBZRLE: only without multifd, and only if memory allows.
    let mut xbzrle_cache = p.xbzrle_cache.filter(|&c| c > 0);
    if mode == Mode::Relay
        && p.xbzrle_cache.is_none()
        && input.src.qemu.xbzrle
        && input.dirty_bps > 0.1 * est
    {
        let want = ((input.dirty_bps * 2.0) as u64)
            .next_power_of_two()
            .max(16 << 20);
        let cap = (input.ram_bytes / 4).min(input.src.mem_available / 8);
        let spare_cpu = input.src.idle_cpus >= threads as f64 + 0.5;
        if want > cap {
            why.push(format!(
                "no xbzrle: a {} MiB cache exceeds {} MiB (a quarter of the guest, an eighth of free memory)",
                want >> 20,
                cap >> 20
            ));
        } else if !spare_cpu {
            why.push(format!(
                "no xbzrle: no CPU to spare for it ({:.1} idle, {threads} compressing)",
                input.src.idle_cpus
            ));
        } else {
            xbzrle_cache = Some(want);
            why.push(format!(
                "xbzrle cache {} MiB: the guest rewrites pages ({}) and memory allows",
                want >> 20,
                mb(input.dirty_bps)
            ));
        }
    }
    if xbzrle_cache.is_some() && mode == Mode::Native {
        why.push("xbzrle dropped: QEMU does not combine it with multifd".into());
        xbzrle_cache = None;
    }

    let downtime_ms = p.downtime_ms.unwrap_or(DEFAULT_DOWNTIME_MS);
    // Relay chunks: big enough to compress well and keep per-chunk costs
    // low, small enough that what is queued at switchover (a chunk per
    // thread) crosses the link in ~10 ms.
    let chunk_size = p.chunk_size.unwrap_or_else(|| {
        ((input.link_bps * 0.01) as usize)
            .next_power_of_two()
            .clamp(MIN_AUTO_CHUNK, DEFAULT_CHUNK)
    });
    if mode == Mode::Relay && p.chunk_size.is_none() {
        why.push(format!(
            "chunk {} KiB: about 10 ms of the link, 64 KiB..1 MiB",
            chunk_size >> 10
        ));
    }
    Plan {
        mode,
        codec,
        native_compression: native.map(str::to_string),
        level,
        threads,
        chunk_size,
        xbzrle_cache,
        converge,
        dirty_limit_mbps,
        throttle_initial_pct,
        downtime_ms,
        est_bps: est,
        reasons: why,
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            Mode::Native => format!(
                "native multifd, compression {}",
                self.native_compression.as_deref().unwrap_or("none")
            ),
            Mode::Relay => format!("relay, codec {}", self.codec),
        };
        writeln!(
            f,
            "plan: {mode}, level {}, {} thread(s)",
            self.level, self.threads
        )?;
        if self.mode == Mode::Relay {
            writeln!(f, "      chunk {} KiB", self.chunk_size >> 10)?;
        }
        writeln!(
            f,
            "      downtime-limit {} ms, xbzrle {}, convergence {}",
            self.downtime_ms,
            self.xbzrle_cache
                .map(|c| format!("{} MiB", c >> 20))
                .unwrap_or_else(|| "off".into()),
            match self.converge {
                Converge::Off => "off".to_string(),
                Converge::AutoConverge if self.throttle_initial_pct > 0 =>
                    format!("auto-converge from {}%", self.throttle_initial_pct),
                Converge::AutoConverge => "auto-converge".to_string(),
                Converge::DirtyLimit => format!("dirty-limit {} MB/s", self.dirty_limit_mbps),
            }
        )?;
        writeln!(f, "      estimated {:.1} MB/s", self.est_bps / 1e6)?;
        for r in &self.reasons {
            writeln!(f, "  why: {r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
