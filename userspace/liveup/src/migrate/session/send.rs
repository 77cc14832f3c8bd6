//! The source side: measure, plan, prepare the destination, migrate,
//! verify, commit; on any failure, keep the source VM running.

//!
//! In send/: `describe.rs` the VM's description for a destination
//! service, `relay_source.rs` the relay's source half, `recover.rs` the
//! source's recovery on a failure; the session itself is here.

mod describe;
mod recover;
mod relay_source;

use super::commit::{commit, CONFIRM_TIMEOUT};
use super::link::{connect_dest, native_uri, probe_link};
use super::report::{Event, Output, Progress, Report};
use super::watch::Watch;
use super::{apply_plan, check_version, open_qmp, sock_path, MigrateError, QemuTls};
use crate::migrate::auth::{Key, Role, HANDSHAKE_TIMEOUT};
use crate::migrate::codec::CodecKind;
use crate::migrate::control::{unexpected, Control, Ctl, CtlError, PROTOCOL};
use crate::migrate::facts;
use crate::migrate::plan::{self, Mode, Plan, PlanInput, Prefs};
use crate::migrate::relay::{FrameMac, RelayStats, RelaySummary, SendConfig};
use crate::migrate::spec::Names;
use crate::qmp::{MigrationStatus, Monitor, Qmp, RunState};
use describe::describe;
use recover::{cancelled, recover_source};
use relay_source::relay_source;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Source-side options.
#[derive(Debug, Clone)]
pub struct SendOptions {
    pub qmp: PathBuf,
    pub to: String,
    /// The key both hosts hold (auth.rs).
    pub key: Key,
    pub prefs: Prefs,
    /// Milliseconds of calc-dirty-rate sampling.
    pub dirty_ms: u64,
    pub timeout: Duration,
    /// Print the plan and stop.
    pub plan_only: bool,
    /// How progress shows (and, for Output::Json, the plan event).
    pub output: Output,
    /// Relay: a connection stalled this long counts as cut.
    pub stall_timeout: Duration,
    /// Test hook (hidden option): corrupt this relay chunk in flight.
    pub corrupt_chunk: Option<u64>,
    /// This host's storage pools (`NAME=DIR`), by which the VM's files are
    /// named to a destination service that starts the VM (spec.rs).
    pub pools: Names,
    /// The VM's name on such a destination (default: its name here).
    pub rename: Option<String>,
}

/// What the source side ends with. Not serialized itself (that would
/// wrap it in a language-specific enum tag): the JSON output is the
/// `result` event of its report (events.rs).
#[derive(Debug)]
pub enum SendResult {
    /// `plan_only`: what was measured and planned.
    Plan(Box<PlanInput>, Plan),
    Done(Box<Report>),
}

/// Migrate the VM behind `opts.qmp` to the agent at `opts.to`; `say` gets
/// the measurements and the plan. Returns the report, or with `plan_only`
/// the plan and what it was made from.
pub fn send(opts: &SendOptions, mut say: impl FnMut(&str)) -> Result<SendResult, MigrateError> {
    send_inner(opts, &mut say)
}

fn send_inner(opts: &SendOptions, say: &mut dyn FnMut(&str)) -> Result<SendResult, MigrateError> {
    let mut q = open_qmp(&opts.qmp)?;
    // `liveup migrate status|cancel` reach this send from here on.
    let watch = Watch::start(&opts.qmp)?;
    let qemu_pid = q.peer_pid();
    let (qat_lib, qat_hw) = facts::qat_probe();
    let qemu = facts::qemu_facts(&mut q)?;
    check_version("source", &qemu)?;
    // The dirty-rate sample runs in QEMU and the idle-CPU sample in a
    // thread while the destination's facts and the link probe are taken.
    let dirty = facts::start_dirty_rate(&mut q, opts.dirty_ms, qemu.dirty_ms);
    let idle = std::thread::spawn(|| facts::idle_cpus(facts::IDLE_SAMPLE));
    let runstate = q.run_state()?;
    let was_running = runstate == RunState::Running;
    if !matches!(runstate, RunState::Running | RunState::Paused) {
        return Err(MigrateError::UnsupportedQemu {
            side: "source",
            why: format!("VM is {runstate}, not running or paused"),
        });
    }
    let mut c = Control::new(connect_dest(&opts.to)?)?;
    let dest_ip = c.stream().peer_addr()?.ip();
    c.stream().set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    c.authenticate(&opts.key, Role::Source)
        .map_err(|e| MigrateError::Auth(format!("destination {}: {e}", opts.to)))?;
    c.stream().set_read_timeout(None)?;
    c.send(&Ctl::Hello { protocol: PROTOCOL })?;
    let dst = match c.recv()? {
        Ctl::Info { facts } => facts,
        // `liveup migrate listen`: it starts the VM's QEMU itself
        Ctl::NeedConfig => {
            describe(&mut c, &mut q, qemu_pid, &runstate, opts, say)?;
            match c.recv()? {
                Ctl::Info { facts } => facts,
                got => return Err(unexpected("info", got).into()),
            }
        }
        got => return Err(unexpected("info", got).into()),
    };
    check_version("destination", &dst.qemu)?;
    let link_bps = probe_link(&mut c)?;
    let idle = idle.join().unwrap_or(0.0);
    let src = facts::host_facts_with(qemu, qat_lib.is_some(), qat_hw, idle);
    let dirty_bps = dirty.and_then(|d| d.collect(&mut q)).unwrap_or(0.0);
    let ram_bytes = facts::ram_bytes(&mut q)?;
    let input = PlanInput {
        src,
        dst,
        link_bps,
        dirty_bps,
        ram_bytes,
        prefs: opts.prefs.clone(),
    };
    let p = plan::plan(&input);
    if p.mode == Mode::Native && !(input.src.qemu.multifd && input.dst.qemu.multifd) {
        return Err(MigrateError::UnsupportedQemu {
            side: "source",
            why: "native mode needs multifd on both QEMUs".into(),
        });
    }
    say(&format!(
        "measured: link {:.1} MB/s, dirty rate {:.1} MB/s, RAM {} MiB, idle CPUs {:.1} here / {:.1} there",
        link_bps / 1e6,
        dirty_bps / 1e6,
        ram_bytes >> 20,
        input.src.idle_cpus,
        input.dst.idle_cpus
    ));
    say(&p.to_string());
    if opts.output == Output::Json {
        Event::Plan {
            measured: &input,
            plan: &p,
        }
        .emit();
    }
    if opts.plan_only {
        let _ = c.send(&Ctl::Abort {
            reason: "plan only".into(),
        });
        return Ok(SendResult::Plan(Box::new(input), p));
    }
    if p.codec == CodecKind::Qat && p.mode == Mode::Relay && qat_lib.is_none() {
        return Err(MigrateError::UnsupportedQemu {
            side: "source",
            why: "codec qat needs libqatzip (libqatzip.so.3) on the source".into(),
        });
    }

    // From here on, a failure must leave the source running.
    let cancel = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(RelayStats::default());
    let t0 = Instant::now();
    let cpu0 = (
        qemu_pid.and_then(facts::proc_cpu_secs).unwrap_or(0.0),
        facts::self_cpu_secs(),
    );
    let mut relay_thread = None;
    let mut relay_path = None;
    // Native: QEMU's stream under TLS with this session's key, until the
    // end of the migration.
    let mut _tls = None;
    let result = (|| -> Result<(u64, f64, Value), MigrateError> {
        c.send(&Ctl::Prepare { plan: p.clone() })?;
        let (uri, relay_port) = match c.recv()? {
            Ctl::Ready { uri, relay_port } => (uri, relay_port),
            got => return Err(unexpected("ready", got).into()),
        };
        apply_plan(&mut q, &p, &input.src.qemu, true)?;
        let qemu_uri = match p.mode {
            Mode::Native => {
                let uri = native_uri(dest_ip, uri.as_deref())?;
                let key = c
                    .data_key("qemu-tls")
                    .ok_or_else(|| MigrateError::Auth("no session key for QEMU's TLS".into()))?;
                _tls = Some(QemuTls::setup(&mut q, qemu_pid, &key, Role::Source)?);
                uri
            }
            Mode::Relay => {
                let port = relay_port.ok_or_else(|| CtlError::Peer("no relay port".into()))?;
                let path = sock_path("out");
                let _ = std::fs::remove_file(&path);
                let l = UnixListener::bind(&path)?;
                relay_path = Some(path.clone());
                let key = c
                    .data_key("relay")
                    .ok_or_else(|| MigrateError::Auth("no session key for the relay".into()))?;
                let cfg = SendConfig {
                    codec: p.codec,
                    level: p.level,
                    chunk_size: p.chunk_size,
                    qat: qat_lib.clone(),
                    confirm_timeout: Duration::from_secs(120),
                    stall_timeout: opts.stall_timeout,
                    corrupt_chunk: opts.corrupt_chunk,
                    sndbuf: Some(p.chunk_size.max(64 << 10)),
                    mac: FrameMac::new(key),
                };
                let (stats, cancel) = (stats.clone(), cancel.clone());
                let n = p.threads;
                relay_thread = Some(std::thread::spawn(move || {
                    relay_source(l, SocketAddr::new(dest_ip, port), n, &cfg, &stats, &cancel)
                }));
                format!("unix:{}", path.display())
            }
        };
        let started_at = t0.elapsed().as_secs_f64();
        q.execute("migrate", json!({ "uri": qemu_uri }))?;
        let progress = Progress::new(opts.output, dirty_bps);
        let last = loop {
            q.wait_migration_end(Duration::from_millis(100))?;
            let r = q.execute("query-migrate", json!({}))?;
            let relay_snap = (p.mode == Mode::Relay).then(|| stats.snapshot());
            let sample = progress.update(&r, relay_snap, t0.elapsed().as_secs_f64());
            watch.publish(&sample);
            if watch.cancelled() {
                progress.finish();
                return Err(cancelled());
            }
            match MigrationStatus::of(&r) {
                Some(MigrationStatus::Completed) => break r,
                Some(st) if st.is_failure() => {
                    progress.finish();
                    return Err(MigrateError::Failed {
                        reason: format!(
                            "source QEMU: {}",
                            r["error-desc"].as_str().unwrap_or("migration failed")
                        ),
                        source_state: String::new(),
                    });
                }
                _ => {}
            }
            if t0.elapsed() > opts.timeout {
                progress.finish();
                return Err(MigrateError::Failed {
                    reason: format!("timed out after {:?}", opts.timeout),
                    source_state: String::new(),
                });
            }
        };
        progress.finish();
        // QEMU completed: the destination is next to run the VM, unless
        // a cancel came first (the source then runs on, as on any failure
        // before Commit).
        if !watch.commit() {
            return Err(cancelled());
        }
        let qemu_downtime = last["downtime"].as_u64().unwrap_or(0);
        // QEMU's clock: the VM stopped total-time - downtime after start.
        let total_ms = last["total-time"].as_u64().unwrap_or(0);
        let stopped_at = started_at + total_ms.saturating_sub(qemu_downtime) as f64 / 1000.0;
        if let Some(t) = relay_thread.take() {
            match t.join() {
                Ok(r) => {
                    r?;
                }
                Err(_) => {
                    return Err(MigrateError::Failed {
                        reason: "relay thread panicked".into(),
                        source_state: String::new(),
                    })
                }
            }
        }
        Ok((qemu_downtime, stopped_at, last))
    })();
    if let Some(p) = &relay_path {
        let _ = std::fs::remove_file(p);
    }
    let fail = |e: MigrateError, q: &mut Qmp, c: &mut Control, cancel: &AtomicBool| {
        cancel.store(true, Ordering::SeqCst);
        let reason = match &e {
            MigrateError::Failed { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        let _ = c.send(&Ctl::Abort { reason });
        let state = recover_source(q, was_running);
        match e {
            MigrateError::Failed { reason, .. } => MigrateError::Failed {
                reason,
                source_state: state,
            },
            other => MigrateError::Failed {
                reason: other.to_string(),
                source_state: state,
            },
        }
    };
    let (qemu_downtime, stopped_at, last) = match result {
        Ok(v) => v,
        Err(e) => {
            if let Some(t) = relay_thread.take() {
                cancel.store(true, Ordering::SeqCst);
                let _ = t.join();
            }
            return Err(fail(e, &mut q, &mut c, &cancel));
        }
    };
    let cpu1 = (
        qemu_pid.and_then(facts::proc_cpu_secs).unwrap_or(0.0),
        facts::self_cpu_secs(),
    );

    // Verify on the destination, then let it run.
    let verified = (|| -> Result<(String, f64, f64, Option<RelaySummary>), MigrateError> {
        // A silent destination must not leave the source paused for ever.
        c.stream().set_read_timeout(Some(CONFIRM_TIMEOUT))?;
        c.send(&Ctl::Verify)?;
        match c.recv()? {
            Ctl::Verified {
                runstate,
                qemu_cpu_secs,
                liveup_cpu_secs,
                relay,
            } => Ok((runstate, qemu_cpu_secs, liveup_cpu_secs, relay)),
            got => Err(unexpected("verified", got).into()),
        }
    })();
    let (_, dq, dl, _) = match verified {
        Ok(v) => v,
        Err(e) => return Err(fail(e, &mut q, &mut c, &cancel)),
    };
    // From Commit on, a failure leaves the source paused (MigrateError::InDoubt).
    let dst_runstate = commit(&mut c, CONFIRM_TIMEOUT)?;
    let resumed_at = t0.elapsed().as_secs_f64();
    let downtime_ms = ((resumed_at - stopped_at).max(0.0) * 1000.0) as u64;
    let ram = &last["ram"];
    let transferred = ram["transferred"].as_u64().unwrap_or(0);
    let relay_sum = (p.mode == Mode::Relay).then(|| stats.snapshot());
    let (wire_bytes, stream_bytes) = match relay_sum {
        Some(s) => (s.wire_bytes, s.raw_bytes),
        None => {
            let normal = ram["normal-bytes"].as_u64().unwrap_or(0);
            let mf = ram["multifd-bytes"].as_u64().unwrap_or(0);
            // Uncompressed RAM sent, plus the non-multifd rest of the stream.
            (transferred, normal + transferred.saturating_sub(mf))
        }
    };
    Ok(SendResult::Done(Box::new(Report {
        plan: p,
        src: input.src,
        dst: input.dst,
        link_bps,
        dirty_bps,
        ram_bytes,
        total_secs: resumed_at,
        qemu_downtime_ms: qemu_downtime,
        downtime_ms,
        wire_bytes,
        stream_bytes,
        ratio: if wire_bytes > 0 {
            stream_bytes as f64 / wire_bytes as f64
        } else {
            1.0
        },
        src_qemu_cpu_secs: cpu1.0 - cpu0.0,
        src_liveup_cpu_secs: cpu1.1 - cpu0.1,
        dst_qemu_cpu_secs: dq,
        dst_liveup_cpu_secs: dl,
        relay: relay_sum,
        dst_runstate,
    })))
}
