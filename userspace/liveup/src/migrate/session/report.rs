//! What the source shows: progress while QEMU migrates (in the form
//! events.rs describes), and the final report.

use crate::migrate::plan::{HostFacts, Plan};
use crate::migrate::relay::RelaySummary;
use crate::qmp::MigrationStatus;
use serde::Serialize;
use serde_json::Value;
use std::cell::{Cell, RefCell};

pub use super::events::{Event, Output, Sample};

/// The final report of a migration.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub plan: Plan,
    pub src: HostFacts,
    pub dst: HostFacts,
    pub link_bps: f64,
    pub dirty_bps: f64,
    pub ram_bytes: u64,
    pub total_secs: f64,
    /// QEMU's own downtime figure (source stopped to source completed).
    pub qemu_downtime_ms: u64,
    /// Source stopped (by QEMU's total-time and downtime) to destination
    /// resumed (its `cont` confirmed), on the source's clock.
    pub downtime_ms: u64,
    /// Bytes on the wire: relay frames, or QEMU's transferred bytes.
    pub wire_bytes: u64,
    /// Uncompressed migration stream bytes (relay) or RAM bytes sent.
    pub stream_bytes: u64,
    pub ratio: f64,
    pub src_qemu_cpu_secs: f64,
    pub src_liveup_cpu_secs: f64,
    pub dst_qemu_cpu_secs: f64,
    pub dst_liveup_cpu_secs: f64,
    pub relay: Option<RelaySummary>,
    pub dst_runstate: String,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "migrated in {:.2} s, downtime {} ms (QEMU: {} ms)",
            self.total_secs, self.downtime_ms, self.qemu_downtime_ms
        )?;
        writeln!(
            f,
            "  wire {:.1} MiB for {:.1} MiB of stream, ratio {:.2}x",
            self.wire_bytes as f64 / 1048576.0,
            self.stream_bytes as f64 / 1048576.0,
            self.ratio
        )?;
        writeln!(
            f,
            "  CPU seconds: source QEMU {:.2} + liveup {:.2}; destination QEMU {:.2} + liveup {:.2}",
            self.src_qemu_cpu_secs, self.src_liveup_cpu_secs, self.dst_qemu_cpu_secs, self.dst_liveup_cpu_secs
        )?;
        write!(f, "  destination VM {}", self.dst_runstate)
    }
}

/// Progress while QEMU migrates, shown as [`Output`] says: the bar, a
/// line a second, or `progress` events a second and a `phase` event at
/// each change of QEMU's status.
pub(super) struct Progress {
    out: Output,
    bar: Option<indicatif::ProgressBar>,
    /// The dirty rate measured before starting, shown until QEMU has its own.
    dirty_bps: f64,
    /// (seconds, remaining bytes) of the last update, and the smoothed rate
    /// at which `remaining` falls, for the ETA.
    last: Cell<(f64, u64, f64)>,
    /// When the last line or event went out, and QEMU's status then.
    shown: Cell<f64>,
    status: RefCell<String>,
}

impl Progress {
    pub(super) fn new(out: Output, dirty_bps: f64) -> Self {
        let bar = (out == Output::Bar).then(|| {
            let b = indicatif::ProgressBar::new(1);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:24.cyan/blue} {percent:>3}% {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        Progress {
            out,
            bar,
            dirty_bps,
            last: Cell::new((0.0, 0, 0.0)),
            shown: Cell::new(f64::NEG_INFINITY),
            status: RefCell::new(String::new()),
        }
    }

    /// Show a sample from QEMU's query-migrate answer `r`; it is
    /// returned for `liveup migrate status`.
    pub(super) fn update(&self, r: &Value, relay: Option<RelaySummary>, elapsed: f64) -> Sample {
        let s = self.sample(r, relay, elapsed);
        if let Some(b) = &self.bar {
            b.set_length(s.total_bytes.max(1));
            b.set_position(s.total_bytes.saturating_sub(s.remaining_bytes));
            b.set_message(s.to_string());
            return s;
        }
        if *self.status.borrow() != s.status {
            match self.out {
                Output::Json => Event::Phase {
                    t_s: s.t_s,
                    phase: &s.status,
                }
                .emit(),
                _ => println!("liveup: migration {} at {:.1} s", s.status, s.t_s),
            }
            self.status.replace(s.status.clone());
        }
        if s.t_s - self.shown.get() >= 1.0 {
            self.shown.set(s.t_s);
            match self.out {
                Output::Json => Event::Progress(&s).emit(),
                _ => println!("liveup: {s}"),
            }
        }
        s
    }

    /// A sample from QEMU's query-migrate answer `r` (and the relay's
    /// counters), `elapsed` seconds in.
    fn sample(&self, r: &Value, relay: Option<RelaySummary>, elapsed: f64) -> Sample {
        let ram = &r["ram"];
        let g = |k: &str| ram[k].as_u64().unwrap_or(0);
        let (total, remaining, transferred) = (g("total"), g("remaining"), g("transferred"));
        let page = g("page-size").max(4096);
        let qemu_dirty = ram["dirty-pages-rate"].as_f64().unwrap_or(0.0) * page as f64;
        // QEMU's rate means something from its second dirty-bitmap sync on.
        let dirty = if g("dirty-sync-count") >= 2 {
            qemu_dirty
        } else {
            self.dirty_bps
        };
        let (wire, ratio) = match relay {
            Some(s) if s.wire_bytes > 0 => (s.wire_bytes, s.raw_bytes as f64 / s.wire_bytes as f64),
            _ => {
                let mf = g("multifd-bytes");
                let normal = g("normal-bytes");
                (
                    transferred,
                    if mf > 0 {
                        normal as f64 / mf as f64
                    } else {
                        1.0
                    },
                )
            }
        };
        // ETA from how fast `remaining` actually falls (zero pages are
        // cheap, dirtied pages come back), smoothed.
        let (t0, rem0, rate0) = self.last.get();
        let rate = if t0 > 0.0 && elapsed > t0 && rem0 >= remaining {
            let now = (rem0 - remaining) as f64 / (elapsed - t0);
            if rate0 > 0.0 {
                0.7 * rate0 + 0.3 * now
            } else {
                now
            }
        } else {
            rate0
        };
        self.last.set((elapsed, remaining, rate));
        Sample {
            t_s: elapsed,
            status: MigrationStatus::of(r)
                .as_ref()
                .map_or("?", MigrationStatus::as_str)
                .to_string(),
            total_bytes: total,
            remaining_bytes: remaining,
            wire_bytes: wire,
            wire_bps: wire as f64 / elapsed.max(0.001),
            ratio,
            dirty_bps: dirty,
            eta_s: (rate > 0.0).then(|| remaining as f64 / rate),
        }
    }

    pub(super) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
