//! The destination service, `liveup migrate listen`: it waits for
//! authenticated sources, starts each VM's QEMU itself from the
//! description the source sends (spec.rs: checked against this host's
//! pools, networks and limits; the command line is built here), and then
//! receives the migration into it exactly as `migrate receive` does. The
//! QEMU's own error (its last lines of output) goes back to the source.
//!
//! With `kram`, the VM's RAM is a KRAM area of its own (`vm-NAME`, through
//! its area node, as `liveup vm start` gives it) and, once the VM runs
//! here, it is recorded as managed (`liveup vm list`, kept by a
//! hot-upgrade).
//!
//! Several migrations at once (`max_sessions`, each in a thread of its
//! own; with `once`, one, on the caller's thread): authentication happens
//! in the accept loop, and each VM's admission (the total cap, then its
//! QEMU's launch) is one step under the [`Arrived`] lock, so two sources
//! cannot both fit under the cap by racing. A failure after the launch
//! makes the QEMU quit (or kills it), so the VM runs on exactly one side:
//! the source keeps it until the commit.
//!
//! Locking: `Arrived`'s mutex, held for the cap check and the launch (at
//! most [`QEMU_START`](launch::QEMU_START)); no other lock is taken under
//! it. The reaper threads and the session count use atomics only.
//!
//! In listen/: `admit.rs` the session cap's bookkeeping, `cleanup.rs` what
//! an earlier run left, `files.rs` opening and checking the files handed to
//! QEMU, `argv.rs` its command lines, `launch.rs` starting it,
//! `started.rs` a started QEMU, killed or kept. The accept loop and each
//! session are here.

mod admit;
mod argv;
mod cleanup;
mod files;
mod launch;
mod started;
#[cfg(test)]
mod tests;

use super::link::fmt_ip;
use super::receive::{accept_source, expect_hello, receive_inner, refuse_on_error};
use super::{open_qmp, MigrateError};
use crate::migrate::auth::Key;
use crate::migrate::control::{unexpected, Control, Ctl};
use crate::migrate::facts;
use crate::migrate::spec::Policy;
use crate::qmp::{Monitor, RunState};
use crate::upgrade::vm::under_root;
use admit::{check_total, committed_mib, lock, Arrived};
use cleanup::clean_up_after_earlier_run;
use launch::launch;
use started::keep;
use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Destination-service options.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    pub listen: String,
    pub key: Key,
    pub policy: Policy,
    /// The QEMU binary (or a wrapper that takes QEMU's arguments).
    pub qemu: String,
    /// QMP sockets and QEMU logs go here (a path inside `root`).
    pub run_dir: PathBuf,
    /// QEMU runs chrooted here ("/" for none); pools and `run_dir` are
    /// paths as QEMU sees them.
    pub root: PathBuf,
    /// Each VM's RAM in a KRAM area of its own, the VM managed by `liveup
    /// vm` once it runs here (so a hot-upgrade keeps it).
    pub kram: bool,
    /// Per session: how long to wait on a silent source or stream.
    pub idle_timeout: Duration,
    /// End after one migration (its result is the exit status).
    pub once: bool,
    /// The most sessions at once; a further source waits in the listen
    /// queue until one ends.
    pub max_sessions: usize,
    /// The most RAM, MiB, of all VMs this host runs that came through
    /// this service ([`committed_mib`]), the arriving one included.
    pub max_total_memory_mib: Option<u64>,
}

/// What each session logs through.
type Say = Arc<dyn Fn(&str) + Send + Sync>;

/// Serve until killed (or, with `once`, for one migration).
pub fn listen(
    opts: &ListenOptions,
    say: impl Fn(&str) + Send + Sync + 'static,
) -> Result<(), MigrateError> {
    let say: Say = Arc::new(say);
    let mut say_here = |l: &str| say(l);
    fs::create_dir_all(under_root(&opts.root, &opts.run_dir))?;
    clean_up_after_earlier_run(opts, &mut say_here);
    let l = TcpListener::bind(&opts.listen)?;
    say_here(&format!("listening on {}", l.local_addr()?));
    let shared = Arc::new((opts.clone(), Mutex::new(Arrived::default())));
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        // At the limit, the next source waits in the listen queue.
        while active.load(Ordering::Acquire) >= opts.max_sessions.max(1) {
            std::thread::sleep(Duration::from_millis(100));
        }
        // A stray connection is refused inside and the wait goes on; only
        // the long wait itself ends an accept here.
        let (c, local_ip) =
            match accept_source(&l, &opts.key, Duration::from_secs(3600), &mut say_here) {
                Ok(x) => x,
                Err(MigrateError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(e) => return Err(e),
            };
        if opts.once {
            return serve(c, local_ip, &shared.0, &shared.1, &*say).map(|_| ());
        }
        active.fetch_add(1, Ordering::AcqRel);
        let (shared2, say2, active2) = (shared.clone(), say.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("liveup-session".into())
            .spawn(move || {
                let _ = serve(c, local_ip, &shared2.0, &shared2.1, &*say2);
                active2.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            // The connection went with the closure: the source sees it
            // closed and keeps its VM.
            active.fetch_sub(1, Ordering::AcqRel);
            say_here(&format!(
                "cannot start a session thread ({e}): connection closed, the VM stays on its source"
            ));
        }
    }
}

/// One authenticated source, start to end, and the line that says how it
/// ended.
fn serve(
    mut c: Control,
    local_ip: std::net::IpAddr,
    opts: &ListenOptions,
    arrived: &Mutex<Arrived>,
    say: &(dyn Fn(&str) + Send + Sync),
) -> Result<String, MigrateError> {
    let peer = c
        .stream()
        .peer_addr()
        .map(|a| fmt_ip(a.ip()))
        .unwrap_or_default();
    let mut say_mut = |l: &str| say(l);
    let r = session(&mut c, local_ip, opts, arrived, &mut say_mut);
    match &r {
        Ok(name) => say(&format!("VM {name} from {peer}: migrated, running here")),
        Err(e) => say(&format!("migration from {peer} failed: {e}")),
    }
    r
}

/// One source: its description, the QEMU, the migration.
fn session(
    c: &mut Control,
    local_ip: std::net::IpAddr,
    opts: &ListenOptions,
    arrived: &Mutex<Arrived>,
    say: &mut dyn FnMut(&str),
) -> Result<String, MigrateError> {
    c.stream().set_read_timeout(Some(opts.idle_timeout))?;
    expect_hello(c)?;
    c.send(&Ctl::NeedConfig)?;
    let spec = match c.recv()? {
        Ctl::Config { spec } => spec,
        got => return Err(unexpected("config", got).into()),
    };
    c.stream().set_read_timeout(None)?;
    // Admission, one step under the lock: the cap counts every QEMU this
    // service runs, the ones still arriving included.
    let admitted = {
        let mut a = lock(arrived);
        committed_mib(opts, &a)
            .and_then(|m| check_total(m, spec.memory_mib, opts.max_total_memory_mib))
            .and_then(|()| launch(&spec, opts))
            .map(|mut q| {
                q.up = Some(a.add(spec.memory_mib));
                q
            })
    };
    let mut qemu = match admitted {
        Ok(q) => q,
        Err(message) => {
            say(&format!("VM {:?} refused: {message}", spec.name));
            let _ = c.send(&Ctl::Error {
                message: message.clone(),
            });
            return Err(MigrateError::Failed {
                reason: format!("VM {:?} not started here: {message}", spec.name),
                source_state: "still on the source".into(),
            });
        }
    };
    say(&format!(
        "VM {}: QEMU started (pid {}{}), waiting for its state",
        spec.name,
        qemu.child.as_ref().map_or(0, |c| c.id()),
        if qemu.area.is_some() {
            ", RAM in KRAM"
        } else {
            ""
        }
    ));
    c.send(&Ctl::Launched {
        name: spec.name.clone(),
    })?;
    let mut q = open_qmp(&qemu.vm.qmp_host())?;
    let (qat_lib, qat_hw) = facts::qat_probe();
    let r = facts::host_facts(&mut q, qat_lib.is_some(), qat_hw)
        .map_err(MigrateError::from)
        .and_then(|me| {
            let pid = q.peer_pid();
            receive_inner(
                c,
                &mut q,
                me,
                pid,
                qat_lib,
                local_ip,
                opts.idle_timeout,
                say,
            )
        });
    if let Err(e) = refuse_on_error(c, &mut q, r, say) {
        // Resumed here before the failure (`cont` went out): the VM runs
        // here and the source stays paused (commit in doubt), so this
        // QEMU is kept, never killed.
        if q.run_state().is_ok_and(|s| s == RunState::Running) {
            keep(&mut qemu, &spec.name, say);
        }
        return Err(e);
    }
    keep(&mut qemu, &spec.name, say);
    Ok(spec.name)
}
