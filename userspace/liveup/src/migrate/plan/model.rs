//! The plan's cost model: what each codec costs and gains on guest memory,
//! which of them QEMU's multifd offers on both sides, the throughput a
//! choice is estimated at, and where auto-converge's throttle starts.

use super::{Mode, PlanInput, QAT_DEVICE_MBPS};
use crate::migrate::codec::CodecKind;

/// Nominal per-core software speeds (compress, MB/s of input) and ratios on
/// guest memory, and QAT's per-device speed. Deliberately rough: they rank
/// choices, the measurements in Documentation/migrate.rst refine them.
pub(super) struct Model {
    pub(super) mbps_per_core: f64,
    pub(super) ratio: f64,
}

pub(super) fn model(codec: CodecKind, level: u32) -> Model {
    let l = level.max(1) as f64;
    match codec {
        CodecKind::None => Model {
            mbps_per_core: f64::INFINITY,
            ratio: 1.0,
        },
        CodecKind::Lz4 => Model {
            mbps_per_core: 450.0,
            ratio: 2.0,
        },
        CodecKind::Zstd => Model {
            mbps_per_core: 300.0 / (1.0 + 0.35 * (l - 1.0)),
            ratio: (2.8 + 0.08 * (l - 1.0)).min(3.6),
        },
        CodecKind::Gzip | CodecKind::Qat => Model {
            mbps_per_core: 70.0 / (1.0 + 0.3 * (l - 1.0)),
            ratio: (2.5 + 0.05 * (l - 1.0)).min(2.9),
        },
    }
}

/// The multifd-compression name QEMU uses for a codec, if any.
fn native_name(codec: CodecKind) -> Option<&'static str> {
    match codec {
        CodecKind::None => Some("none"),
        CodecKind::Zstd => Some("zstd"),
        CodecKind::Gzip => Some("zlib"),
        CodecKind::Qat => Some("qatzip"),
        CodecKind::Lz4 => None,
    }
}

pub(super) fn native_ok(input: &PlanInput, codec: CodecKind) -> Result<&'static str, String> {
    let name = native_name(codec).ok_or_else(|| format!("QEMU has no multifd {codec}"))?;
    for (side, h) in [("source", &input.src), ("destination", &input.dst)] {
        if !h.qemu.multifd {
            return Err(format!("{side} QEMU {} has no multifd", h.qemu.version));
        }
        if !h.qemu.compressions.iter().any(|c| c == name) {
            return Err(format!(
                "{side} QEMU {} lacks multifd-compression {name} (has {})",
                h.qemu.version,
                h.qemu.compressions.join(", ")
            ));
        }
    }
    Ok(name)
}

/// Estimated guest-memory throughput (bytes/s) of `codec` at `level` with
/// `threads` compressing, given the link and whether QAT hardware works.
pub(super) fn estimate(
    input: &PlanInput,
    codec: CodecKind,
    level: u32,
    threads: u32,
    mode: Mode,
) -> f64 {
    let m = model(codec, level);
    let cpu = if codec == CodecKind::Qat && input.src.qat_hw {
        QAT_DEVICE_MBPS * 1e6 * input.src.qat_devices.max(1) as f64
    } else {
        m.mbps_per_core * 1e6 * threads as f64
    };
    let link = input.link_bps * m.ratio;
    // The relay copies the stream once more through a socket; QEMU's
    // multifd does not.
    let overhead = if mode == Mode::Relay { 0.92 } else { 1.0 };
    cpu.min(link) * overhead
}

/// auto-converge's first throttle (percent of the vCPUs' time taken away)
/// for a guest dirtying `dirty` bytes/s against `est` bytes/s sent: the
/// throttle at which it dirties half of what is sent, so that the pass
/// after QEMU first throttles already gains on the guest, instead of
/// QEMU's 20% and +10% a pass (a guest 4.8x faster than the link, tools/
/// check-migrate.sh: 106 s from 20%). Between QEMU's 20 and 99.
pub fn throttle_start(dirty: f64, est: f64) -> u32 {
    if !(dirty > 0.0 && est > 0.0) {
        return 20;
    }
    let pct = (100.0 * (1.0 - est / (2.0 * dirty))).ceil();
    pct.clamp(20.0, 99.0) as u32
}
