//! One migration, end to end: the source side (`send`) and the destination
//! agent (`receive`), talking over the control connection, each driving
//! its QEMU over QMP.
//!
//! Safety rules ("nothing lost"):
//! * the source VM keeps running on any failure: liveup cancels an active
//!   migration and `cont`s a source that was running before and is left
//!   paused (postmigrate) by a migration whose destination failed;
//! * the destination resumes only on an explicit `commit`, sent after the
//!   source QEMU completed, the relay (if any) verified and confirmed every
//!   chunk, and the destination QEMU reported its incoming migration
//!   completed. Before that, any failure makes the agent `quit` the
//!   destination QEMU. (Start it with `-S`, so that QEMU does not resume
//!   on its own.)

use super::codec::CodecKind;
use super::control::{unexpected, Control, Ctl, CtlError, PROTOCOL};
use super::facts;
use super::plan::{self, Converge, HostFacts, Mode, Plan, PlanInput, Prefs};
use super::relay::{self, ReceiveConfig, RelayError, RelayStats, RelaySummary, SendConfig};
use crate::qmp::{MigrationStatus, Monitor, Qmp, QmpError, RunState};
use qatzip_sys::QatZip;
use serde::Serialize;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("QMP socket {0} does not exist (is QEMU running with -qmp unix:{0},server=on?)")]
    NoQmpSocket(String),
    #[error("unsupported QEMU on the {side}: {why}")]
    UnsupportedQemu { side: &'static str, why: String },
    #[error("destination {addr} unreachable: {cause}")]
    Unreachable { addr: String, cause: std::io::Error },
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error(transparent)]
    Control(#[from] CtlError),
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("migration failed: {reason}; source VM {source_state}")]
    Failed {
        reason: String,
        source_state: String,
    },
}

impl MigrateError {
    /// Exit codes: 2 usage/QMP socket, 3 unsupported QEMU, 4 unreachable
    /// destination, 5 migration failed (source kept), 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            MigrateError::NoQmpSocket(_) => 2,
            MigrateError::UnsupportedQemu { .. } => 3,
            MigrateError::Unreachable { .. } => 4,
            MigrateError::Failed { .. } => 5,
            _ => 1,
        }
    }
}

/// The oldest QEMU liveup migrates: multifd compression (5.0) and
/// calc-dirty-rate page sampling (5.2).
pub const MIN_QEMU: (u64, u64) = (5, 2);

pub fn open_qmp(path: &Path) -> Result<Qmp, MigrateError> {
    if !path.exists() {
        return Err(MigrateError::NoQmpSocket(path.display().to_string()));
    }
    Ok(Qmp::connect(path, Duration::from_secs(2))?)
}

fn check_version(side: &'static str, f: &plan::QemuFacts) -> Result<(), MigrateError> {
    let mut it = f.version.split('.').map(|x| x.parse::<u64>().unwrap_or(0));
    let v = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    if v < MIN_QEMU {
        return Err(MigrateError::UnsupportedQemu {
            side,
            why: format!(
                "QEMU {} is older than {}.{}",
                f.version, MIN_QEMU.0, MIN_QEMU.1
            ),
        });
    }
    Ok(())
}

/// Capabilities and parameters for one side.
fn apply_plan(
    q: &mut Qmp,
    plan: &Plan,
    facts: &plan::QemuFacts,
    source: bool,
) -> Result<(), QmpError> {
    let native = plan.mode == Mode::Native;
    // MIGRATION events (QEMU >= 2.4) end either side's wait for the end of
    // the migration at once (Qmp::wait_migration_end).
    let mut caps = vec![
        json!({"capability": "multifd", "state": native}),
        json!({"capability": "events", "state": true}),
    ];
    if source {
        if facts.xbzrle {
            caps.push(json!({"capability": "xbzrle", "state": plan.xbzrle_cache.is_some()}));
        }
        caps.push(json!({"capability": "auto-converge",
                         "state": plan.converge == Converge::AutoConverge}));
        if facts.dirty_limit {
            caps.push(json!({"capability": "dirty-limit",
                             "state": plan.converge == Converge::DirtyLimit}));
        }
    }
    if !facts.multifd {
        caps.retain(|c| c["capability"] != "multifd");
    }
    q.execute("migrate-set-capabilities", json!({ "capabilities": caps }))?;
    let mut p = serde_json::Map::new();
    if native {
        p.insert("multifd-channels".into(), json!(plan.threads));
        let comp = plan.native_compression.as_deref().unwrap_or("none");
        p.insert("multifd-compression".into(), json!(comp));
        let lvl_key = match comp {
            "zstd" => Some(("multifd-zstd-level", 20)),
            "zlib" => Some(("multifd-zlib-level", 9)),
            "qatzip" => Some(("multifd-qatzip-level", 9)),
            _ => None,
        };
        if let Some((k, max)) = lvl_key {
            p.insert(k.into(), json!(plan.level.clamp(1, max)));
        }
    }
    if source {
        p.insert("downtime-limit".into(), json!(plan.downtime_ms));
        // The link (or the relay) is the limit, not QEMU's default 128 MiB/s.
        p.insert("max-bandwidth".into(), json!(10u64 << 30));
        if let Some(c) = plan.xbzrle_cache {
            p.insert("xbzrle-cache-size".into(), json!(c));
        }
        if plan.converge == Converge::DirtyLimit {
            p.insert("vcpu-dirty-limit".into(), json!(plan.dirty_limit_mbps));
        }
    }
    q.execute("migrate-set-parameters", Value::Object(p))?;
    Ok(())
}

/// Source-side options.
#[derive(Debug, Clone)]
pub struct SendOptions {
    pub qmp: PathBuf,
    pub to: String,
    pub prefs: Prefs,
    /// Milliseconds of calc-dirty-rate sampling.
    pub dirty_ms: u64,
    pub timeout: Duration,
    /// Print the plan and stop.
    pub plan_only: bool,
    pub progress: bool,
    /// Relay: a connection stalled this long counts as cut.
    pub stall_timeout: Duration,
    /// Test hook (hidden option): corrupt this relay chunk in flight.
    pub corrupt_chunk: Option<u64>,
}

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

fn connect_dest(to: &str) -> Result<TcpStream, MigrateError> {
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
fn probe_link(c: &mut Control) -> Result<f64, MigrateError> {
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

/// Cancel an active migration and make sure a VM that was running runs.
/// Returns its state afterwards.
fn recover_source(q: &mut Qmp, was_running: bool) -> String {
    if let Ok(r) = q.execute("query-migrate", json!({})) {
        // No status (or an empty one): nothing to cancel.
        let st = MigrationStatus::of(&r).filter(|s| !s.as_str().is_empty());
        if st.is_some_and(|s| s.is_in_progress()) {
            let _ = q.execute("migrate_cancel", json!({}));
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(20) {
                match q.execute("query-migrate", json!({})) {
                    Ok(r)
                        if matches!(
                            MigrationStatus::of(&r),
                            Some(
                                MigrationStatus::Cancelling
                                    | MigrationStatus::Active
                                    | MigrationStatus::Device
                                    | MigrationStatus::Setup
                                    | MigrationStatus::PreSwitchover
                            )
                        ) =>
                    {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ => break,
                }
            }
        }
    }
    let show = |s: Result<RunState, QmpError>| match s {
        Ok(s) => s.to_string(),
        Err(e) => format!("unknown ({e})"),
    };
    let state = q.run_state();
    if was_running && !matches!(state, Ok(RunState::Running)) {
        match q.execute("cont", json!({})) {
            Ok(_) => {}
            Err(e) => return format!("{}, cont failed: {e}", show(state)),
        }
    }
    show(q.run_state())
}

struct Progress {
    bar: Option<indicatif::ProgressBar>,
    /// The dirty rate measured before starting, shown until QEMU has its own.
    dirty_bps: f64,
    /// (seconds, remaining bytes) of the last update, and the smoothed rate
    /// at which `remaining` falls, for the ETA.
    last: std::cell::Cell<(f64, u64, f64)>,
}

impl Progress {
    fn new(show: bool, dirty_bps: f64) -> Self {
        let bar = show.then(|| {
            let b = indicatif::ProgressBar::new(1);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:24.cyan/blue} {percent:>3}% {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        Progress {
            bar,
            dirty_bps,
            last: std::cell::Cell::new((0.0, 0, 0.0)),
        }
    }

    fn update(&self, r: &Value, relay: Option<RelaySummary>, elapsed: f64) {
        let Some(b) = &self.bar else { return };
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
        let thr = wire as f64 / elapsed.max(0.001);
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
        let eta = if rate > 0.0 {
            format!("{:.0}s", remaining as f64 / rate)
        } else {
            "?".into()
        };
        b.set_length(total.max(1));
        b.set_position(total.saturating_sub(remaining));
        b.set_message(format!(
            "{} sent {:.1} MiB, left {:.1} MiB, {:.1} MB/s wire, ratio {:.2}x, dirty {:.1} MB/s, ETA {eta}",
            MigrationStatus::of(r).as_ref().map_or("?", MigrationStatus::as_str),
            wire as f64 / 1048576.0,
            remaining as f64 / 1048576.0,
            thr / 1e6,
            ratio,
            dirty / 1e6,
        ));
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn sock_path(what: &str) -> PathBuf {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!("liveup-{what}-{}-{n}.sock", std::process::id()))
}

/// What the source side ends with.
#[derive(Debug, Serialize)]
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
    c.send(&Ctl::Hello { protocol: PROTOCOL })?;
    let dst = match c.recv()? {
        Ctl::Info { facts } => facts,
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
    let result = (|| -> Result<(u64, f64, Value), MigrateError> {
        c.send(&Ctl::Prepare { plan: p.clone() })?;
        let (uri, relay_port) = match c.recv()? {
            Ctl::Ready { uri, relay_port } => (uri, relay_port),
            got => return Err(unexpected("ready", got).into()),
        };
        apply_plan(&mut q, &p, &input.src.qemu, true)?;
        let qemu_uri = match p.mode {
            Mode::Native => uri.ok_or_else(|| CtlError::Peer("no native URI".into()))?,
            Mode::Relay => {
                let port = relay_port.ok_or_else(|| CtlError::Peer("no relay port".into()))?;
                let path = sock_path("out");
                let _ = std::fs::remove_file(&path);
                let l = UnixListener::bind(&path)?;
                relay_path = Some(path.clone());
                let cfg = SendConfig {
                    codec: p.codec,
                    level: p.level,
                    chunk_size: p.chunk_size,
                    qat: qat_lib.clone(),
                    confirm_timeout: Duration::from_secs(120),
                    stall_timeout: opts.stall_timeout,
                    corrupt_chunk: opts.corrupt_chunk,
                    sndbuf: Some(p.chunk_size.max(64 << 10)),
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
        let progress = Progress::new(opts.progress, dirty_bps);
        let last = loop {
            q.wait_migration_end(Duration::from_millis(100))?;
            let r = q.execute("query-migrate", json!({}))?;
            let relay_snap = (p.mode == Mode::Relay).then(|| stats.snapshot());
            progress.update(&r, relay_snap, t0.elapsed().as_secs_f64());
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
    let committed = (|| -> Result<String, MigrateError> {
        c.send(&Ctl::Commit)?;
        match c.recv()? {
            Ctl::Committed { runstate } => Ok(runstate),
            got => Err(unexpected("committed", got).into()),
        }
    })();
    let dst_runstate = match committed {
        Ok(s) if RunState::parse(&s) == RunState::Running => s,
        Ok(s) => {
            return Err(fail(
                MigrateError::Failed {
                    reason: format!("destination VM is {s} after commit"),
                    source_state: String::new(),
                },
                &mut q,
                &mut c,
                &cancel,
            ))
        }
        Err(e) => return Err(fail(e, &mut q, &mut c, &cancel)),
    };
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

/// Source half of the relay: take QEMU's stream from `l`, send it to `to`
/// over `n` connections. On failure QEMU's socket is shut down, so its
/// migration fails and the VM stays.
fn relay_source(
    l: UnixListener,
    to: SocketAddr,
    n: u32,
    cfg: &SendConfig,
    stats: &RelayStats,
    cancel: &AtomicBool,
) -> Result<RelaySummary, MigrateError> {
    l.set_nonblocking(true)?;
    let t = Instant::now();
    let qemu = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if cancel.load(Ordering::SeqCst) || t.elapsed() > Duration::from_secs(30) {
                    return Err(RelayError::Cancelled.into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    };
    qemu.set_nonblocking(false)?;
    qemu.set_read_timeout(Some(Duration::from_millis(5)))?;
    let conns: Result<Vec<TcpStream>, _> = (0..n)
        .map(|_| TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .collect();
    let conns = match conns {
        Ok(c) => c,
        Err(e) => {
            let _ = qemu.shutdown(std::net::Shutdown::Both);
            return Err(MigrateError::Unreachable {
                addr: to.to_string(),
                cause: e,
            });
        }
    };
    let r = relay::send(&qemu, conns, cfg, stats, cancel);
    if r.is_err() {
        let _ = qemu.shutdown(std::net::Shutdown::Both);
    }
    Ok(r?)
}

/// Destination-agent options.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    pub qmp: PathBuf,
    pub listen: String,
    /// How long to wait for the source, and for a silent stream.
    pub idle_timeout: Duration,
}

fn wait_incoming(q: &mut Qmp, timeout: Duration) -> Result<(), MigrateError> {
    match q.wait_migration("incoming migration", timeout) {
        Err(QmpError::Command { desc, .. }) => Err(MigrateError::Failed {
            reason: format!("destination QEMU: {desc}"),
            source_state: String::new(),
        }),
        r => Ok(r?),
    }
}

/// The destination agent: accept one source, set up the destination QEMU
/// (started with `-incoming defer`, and `-S`), receive, verify, and resume
/// the VM only on the source's commit. `say` gets progress lines.
pub fn receive(opts: &ReceiveOptions, mut say: impl FnMut(&str)) -> Result<String, MigrateError> {
    let mut q = open_qmp(&opts.qmp)?;
    let qemu_pid = q.peer_pid();
    let st = q.run_state()?;
    if st != RunState::InMigrate {
        return Err(MigrateError::UnsupportedQemu {
            side: "destination",
            why: format!("VM is {st}: start the destination QEMU with -incoming defer"),
        });
    }
    let l = TcpListener::bind(&opts.listen)?;
    say(&format!("listening on {}", l.local_addr()?));
    let (qat_lib, qat_hw) = facts::qat_probe();
    let me = facts::host_facts(&mut q, qat_lib.is_some(), qat_hw)?;
    let (stream, peer) = accept_timeout(&l, opts.idle_timeout)?;
    say(&format!("source {peer} connected"));
    let local_ip: IpAddr = stream.local_addr()?.ip();
    let mut c = Control::new(stream)?;
    let r = receive_inner(
        &mut c, &mut q, me, qemu_pid, qat_lib, local_ip, opts, &mut say,
    );
    match r {
        Ok(s) => Ok(s),
        Err(e) => {
            // Never let the destination run on what we could not verify.
            let _ = c.send(&Ctl::Error {
                message: e.to_string(),
            });
            match q.run_state() {
                Ok(state) => {
                    let _ = q.execute("quit", json!({}));
                    say(&format!(
                        "failed ({e}); destination QEMU ({state}) told to quit"
                    ));
                }
                Err(_) => say(&format!("failed ({e}); destination QEMU already gone")),
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn receive_inner(
    c: &mut Control,
    q: &mut Qmp,
    me: HostFacts,
    qemu_pid: Option<i32>,
    qat_lib: Option<Arc<QatZip>>,
    local_ip: IpAddr,
    opts: &ReceiveOptions,
    say: &mut dyn FnMut(&str),
) -> Result<String, MigrateError> {
    match c.recv()? {
        Ctl::Hello { protocol } if protocol == PROTOCOL => {}
        got => return Err(unexpected("hello", got).into()),
    }
    c.send(&Ctl::Info { facts: me.clone() })?;
    let plan = loop {
        match c.recv()? {
            Ctl::Probe { bytes } => {
                c.skip_raw(bytes)?;
                c.send(&Ctl::Probed)?;
            }
            Ctl::Prepare { plan } => break plan,
            got => return Err(unexpected("prepare", got).into()),
        }
    };
    say(&format!(
        "plan: {:?} {} x{}",
        plan.mode, plan.codec, plan.threads
    ));
    let cpu0 = (
        qemu_pid.and_then(facts::proc_cpu_secs).unwrap_or(0.0),
        facts::self_cpu_secs(),
    );
    apply_plan(q, &plan, &me.qemu, false)?;
    let stats = Arc::new(RelayStats::default());
    let mut relay_thread = None;
    let mut in_path = None;
    match plan.mode {
        Mode::Native => {
            let port = TcpListener::bind(SocketAddr::new(local_ip, 0))?
                .local_addr()?
                .port();
            let uri = format!("tcp:{}:{port}", fmt_ip(local_ip));
            q.execute("migrate-incoming", json!({ "uri": uri }))?;
            c.send(&Ctl::Ready {
                uri: Some(uri),
                relay_port: None,
            })?;
        }
        Mode::Relay => {
            let path = sock_path("in");
            let _ = std::fs::remove_file(&path);
            q.execute(
                "migrate-incoming",
                json!({ "uri": format!("unix:{}", path.display()) }),
            )?;
            let l = TcpListener::bind(SocketAddr::new(local_ip, 0))?;
            let port = l.local_addr()?.port();
            let cfg = ReceiveConfig {
                qat: qat_lib.filter(|_| me.qat_hw),
                idle_timeout: opts.idle_timeout,
            };
            let (stats2, p2) = (stats.clone(), path.clone());
            let ctl = c.stream().try_clone()?;
            in_path = Some(path);
            relay_thread = Some(std::thread::spawn(
                move || -> Result<RelaySummary, MigrateError> {
                    let t = Instant::now();
                    let sink = loop {
                        match UnixStream::connect(&p2) {
                            Ok(s) => break s,
                            Err(e) if t.elapsed() > Duration::from_secs(10) => return Err(e.into()),
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    };
                    let r = relay::receive(&l, &sink, &cfg, &stats2);
                    // Whatever happened, QEMU sees the end of the stream now: a
                    // complete one, or a truncated one it refuses.
                    let _ = sink.shutdown(std::net::Shutdown::Both);
                    if r.is_err() {
                        // Wake the agent, which may be waiting for a source
                        // that cannot reach it any more.
                        let _ = ctl.shutdown(std::net::Shutdown::Read);
                    }
                    Ok(r?)
                },
            ));
            c.send(&Ctl::Ready {
                uri: None,
                relay_port: Some(port),
            })?;
        }
    }
    let cleanup = |p: &Option<PathBuf>| {
        if let Some(p) = p {
            let _ = std::fs::remove_file(p);
        }
    };
    match c.recv() {
        Ok(Ctl::Verify) => {}
        Ok(got) => {
            cleanup(&in_path);
            return Err(unexpected("verify", got).into());
        }
        Err(e) => {
            cleanup(&in_path);
            // A failed relay closes the control connection's read side to
            // wake us: its error is the one that matters.
            if let Some(t) = relay_thread.take() {
                let since = Instant::now();
                while !t.is_finished() && since.elapsed() < Duration::from_secs(2) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if t.is_finished() {
                    if let Ok(Err(re)) = t.join() {
                        return Err(re);
                    }
                }
            }
            return Err(e.into());
        }
    }
    let relay_sum = match relay_thread.take() {
        Some(t) => {
            let r = t.join().map_err(|_| MigrateError::Failed {
                reason: "relay thread panicked".into(),
                source_state: String::new(),
            });
            cleanup(&in_path);
            Some(r??)
        }
        None => None,
    };
    wait_incoming(q, Duration::from_secs(120))?;
    let runstate = q.run_state()?;
    let cpu1 = (
        qemu_pid.and_then(facts::proc_cpu_secs).unwrap_or(0.0),
        facts::self_cpu_secs(),
    );
    c.send(&Ctl::Verified {
        runstate: runstate.to_string(),
        qemu_cpu_secs: cpu1.0 - cpu0.0,
        liveup_cpu_secs: cpu1.1 - cpu0.1,
        relay: relay_sum,
    })?;
    match c.recv()? {
        Ctl::Commit => {}
        got => return Err(unexpected("commit", got).into()),
    }
    if runstate != RunState::Running {
        q.execute("cont", json!({}))?;
    }
    let now = q.run_state()?.to_string();
    c.send(&Ctl::Committed {
        runstate: now.clone(),
    })?;
    say(&format!("destination VM {now}"));
    Ok(now)
}

fn accept_timeout(l: &TcpListener, t: Duration) -> std::io::Result<(TcpStream, SocketAddr)> {
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

fn fmt_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}
