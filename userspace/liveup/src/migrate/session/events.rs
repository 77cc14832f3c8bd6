//! What `liveup migrate send` shows while it works, in one of three forms:
//! a progress bar on a terminal; a progress line a second when stderr is
//! not a terminal (a log, a CI job); with `--json`, a stream of events on
//! stdout, one JSON object a line, each naming its kind in `"event"`:
//!
//! * `plan`: `measured` (both hosts' facts, link, dirty rate, RAM) and
//!   `plan` (mode, codec, threads, ..., `reasons`), before anything moves;
//! * `phase`: QEMU's migration status changed (`phase`, `t_s`);
//! * `progress`: each second ([`Sample`]'s fields);
//! * `result`: the final report's fields, or `error`: `exit_code` and
//!   `message`; one of the two ends every stream but a `--plan-only` one.
//!
//! The field names are an interface (Documentation/migrate.rst); no Rust
//! enum shapes leak into it.

use super::report::Report;
use crate::migrate::plan::{Plan, PlanInput};
use serde::Serialize;
use std::io::IsTerminal;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Bar,
    Lines,
    Json,
}

impl Output {
    /// `--json`: events; else a bar on a terminal, lines elsewhere.
    pub fn pick(json: bool) -> Output {
        if json {
            Output::Json
        } else if std::io::stderr().is_terminal() {
            Output::Bar
        } else {
            Output::Lines
        }
    }
}

/// One progress sample, from QEMU's query-migrate (and the relay's
/// counters).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    /// Seconds since the migration was set up.
    pub t_s: f64,
    /// QEMU's migration status ("active", "device", ...).
    pub status: String,
    pub total_bytes: u64,
    pub remaining_bytes: u64,
    /// Bytes on the wire so far (relay frames, or QEMU's transferred).
    pub wire_bytes: u64,
    /// Mean wire throughput so far, bytes/s.
    pub wire_bps: f64,
    /// Stream bytes per wire byte.
    pub ratio: f64,
    /// The guest's dirty rate, bytes/s (QEMU's once it has one).
    pub dirty_bps: f64,
    /// Seconds left at the rate `remaining_bytes` has been falling; null
    /// before that rate is known.
    pub eta_s: Option<f64>,
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sent {:.1} MiB, left {:.1} MiB, {:.1} MB/s wire, ratio {:.2}x, dirty {:.1} MB/s, ETA {}",
            self.status,
            self.wire_bytes as f64 / 1048576.0,
            self.remaining_bytes as f64 / 1048576.0,
            self.wire_bps / 1e6,
            self.ratio,
            self.dirty_bps / 1e6,
            self.eta_s.map_or("?".into(), |s| format!("{s:.0}s")),
        )
    }
}

/// One line of the `--json` stream.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event<'a> {
    Plan {
        measured: &'a PlanInput,
        plan: &'a Plan,
    },
    Phase {
        t_s: f64,
        phase: &'a str,
    },
    Progress(&'a Sample),
    Result(&'a Report),
    Error {
        exit_code: u8,
        message: &'a str,
    },
}

impl Event<'_> {
    /// The event as one line of JSON.
    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                "{{\"event\":\"error\",\"exit_code\":1,\"message\":\"event not encoded: {e}\"}}"
            )
        })
    }

    /// Printed on stdout, a line of its own.
    pub fn emit(&self) {
        println!("{}", self.line());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn sample() -> Sample {
        Sample {
            t_s: 2.0,
            status: "active".into(),
            total_bytes: 100 << 20,
            remaining_bytes: 40 << 20,
            wire_bytes: 30 << 20,
            wire_bps: 15e6,
            ratio: 2.0,
            dirty_bps: 1e6,
            eta_s: None,
        }
    }

    #[test]
    fn events_are_flat_objects_named_by_their_event_field() {
        let s = sample();
        let v: Value = serde_json::from_str(&Event::Progress(&s).line()).unwrap();
        assert_eq!(v["event"], "progress");
        assert_eq!(v["remaining_bytes"], 40 << 20);
        assert!(v["eta_s"].is_null());
        let v: Value = serde_json::from_str(
            &Event::Phase {
                t_s: 1.5,
                phase: "device",
            }
            .line(),
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event": "phase", "t_s": 1.5, "phase": "device"})
        );
        let v: Value = serde_json::from_str(
            &Event::Error {
                exit_code: 5,
                message: "migration failed",
            }
            .line(),
        )
        .unwrap();
        assert_eq!(v["event"], "error");
        assert_eq!(v["exit_code"], 5);
    }

    #[test]
    fn each_event_is_one_line() {
        let s = Sample {
            status: "a\nb".into(),
            ..sample()
        };
        assert!(!Event::Progress(&s).line().contains('\n'));
    }

    #[test]
    fn a_progress_line_reads_like_the_bar() {
        let s = Sample {
            eta_s: Some(4.4),
            ..sample()
        };
        assert_eq!(
            s.to_string(),
            "active sent 30.0 MiB, left 40.0 MiB, 15.0 MB/s wire, ratio 2.00x, dirty 1.0 MB/s, ETA 4s"
        );
    }
}
