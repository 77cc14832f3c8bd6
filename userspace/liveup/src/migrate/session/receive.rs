//! The destination agent: accept one source, receive, verify, and resume
//! the VM only on the source's commit.

use super::link::{accept_timeout, fmt_ip};
use super::{apply_plan, open_qmp, sock_path, MigrateError, QemuTls};
use crate::migrate::auth::{Key, Role, HANDSHAKE_TIMEOUT};
use crate::migrate::control::{unexpected, Control, Ctl, PROTOCOL};
use crate::migrate::facts;
use crate::migrate::plan::{HostFacts, Mode};
use crate::migrate::relay::{self, FrameMac, ReceiveConfig, RelayStats, RelaySummary};
use crate::qmp::{Monitor, Qmp, QmpError, RunState};
use qatzip_sys::QatZip;
use serde_json::json;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Destination-agent options.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    pub qmp: PathBuf,
    pub listen: String,
    /// The key both hosts hold (auth.rs).
    pub key: Key,
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
    let (mut c, local_ip) = accept_source(&l, &opts.key, opts.idle_timeout, &mut say)?;
    let r = expect_hello(&mut c).and_then(|()| {
        receive_inner(
            &mut c,
            &mut q,
            me,
            qemu_pid,
            qat_lib,
            local_ip,
            opts.idle_timeout,
            &mut say,
        )
    });
    refuse_on_error(&mut c, &mut q, r, &mut say)
}

/// The source's `hello`, of this protocol.
pub(super) fn expect_hello(c: &mut Control) -> Result<(), MigrateError> {
    match c.recv()? {
        Ctl::Hello { protocol } if protocol == PROTOCOL => Ok(()),
        got => Err(unexpected("hello", got).into()),
    }
}

/// The end of a receive: on an error the source is told and the
/// destination QEMU quits (never let the destination run on what could
/// not be verified).
pub(super) fn refuse_on_error(
    c: &mut Control,
    q: &mut Qmp,
    r: Result<String, MigrateError>,
    say: &mut dyn FnMut(&str),
) -> Result<String, MigrateError> {
    let Err(e) = r else { return r };
    let _ = c.send(&Ctl::Error {
        message: e.to_string(),
    });
    match q.run_state() {
        // `cont` went out before the failure: the VM runs here, the source
        // (commit in doubt) stays paused; quitting would leave it nowhere
        Ok(RunState::Running) => {
            say(&format!(
                "failed after the VM resumed here ({e}); it is left running, the source stays paused"
            ));
        }
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

/// Accept connections until one proves it holds the key (within the idle
/// timeout in all): a stray or hostile connection is told no, logged and
/// dropped, and neither becomes the source nor ends the wait.
pub(super) fn accept_source(
    l: &TcpListener,
    key: &Key,
    idle_timeout: Duration,
    say: &mut dyn FnMut(&str),
) -> Result<(Control, IpAddr), MigrateError> {
    let deadline = Instant::now() + idle_timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (stream, peer) = accept_timeout(l, left)?;
        let local_ip: IpAddr = stream.local_addr()?.ip();
        stream.set_read_timeout(Some(
            HANDSHAKE_TIMEOUT.min(left.max(Duration::from_secs(1))),
        ))?;
        let mut c = Control::new(stream)?;
        match c.authenticate(key, Role::Destination) {
            Ok(()) => {
                c.stream().set_read_timeout(None)?;
                say(&format!("source {peer} connected and authenticated"));
                return Ok((c, local_ip));
            }
            Err(e) => {
                say(&format!("refused connection from {peer}: {e}"));
                let _ = c.send(&Ctl::Error {
                    message: "not authenticated".into(),
                });
            }
        }
    }
}

/// The session after `hello`: facts, probe, plan, the stream, verify and
/// commit, into the QEMU behind `q`.
#[allow(clippy::too_many_arguments)]
pub(super) fn receive_inner(
    c: &mut Control,
    q: &mut Qmp,
    me: HostFacts,
    qemu_pid: Option<i32>,
    qat_lib: Option<Arc<QatZip>>,
    local_ip: IpAddr,
    idle_timeout: Duration,
    say: &mut dyn FnMut(&str),
) -> Result<String, MigrateError> {
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
    // Native: QEMU's stream under TLS with this session's key, until the
    // agent is done.
    let mut _tls = None;
    match plan.mode {
        Mode::Native => {
            let port = TcpListener::bind(SocketAddr::new(local_ip, 0))?
                .local_addr()?
                .port();
            let uri = format!("tcp:{}:{port}", fmt_ip(local_ip));
            let key = c
                .data_key("qemu-tls")
                .ok_or_else(|| MigrateError::Auth("no session key for QEMU's TLS".into()))?;
            _tls = Some(QemuTls::setup(q, qemu_pid, &key, Role::Destination)?);
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
            let key = c
                .data_key("relay")
                .ok_or_else(|| MigrateError::Auth("no session key for the relay".into()))?;
            let cfg = ReceiveConfig {
                qat: qat_lib.filter(|_| me.qat_hw),
                idle_timeout,
                mac: FrameMac::new(key),
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
