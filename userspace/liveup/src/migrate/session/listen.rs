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
//! most [`QEMU_START`]); no other lock is taken under it. The reaper
//! threads and the session count use atomics only.

use super::link::fmt_ip;
use super::receive::{accept_source, expect_hello, receive_inner, refuse_on_error};
use super::{open_qmp, MigrateError};
use crate::kram::{area_node, Kram, DEFAULT_DEVICE, PAGE_SIZE};
use crate::migrate::auth::Key;
use crate::migrate::control::{unexpected, Control, Ctl};
use crate::migrate::facts;
use crate::migrate::spec::{Launch, Policy, VmSpec};
use crate::qmp::{Monitor, Qmp, RunState};
use crate::upgrade::vm::{managed_vms, ram_device, run_dir, under_root, under_systemd, VmConfig};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a started QEMU has to open its QMP socket.
const QEMU_START: Duration = Duration::from_secs(30);
/// The most of a QEMU's output sent back to the source.
const ERR_TAIL: u64 = 2048;

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

/// The VMs this service started whose QEMU still runs (arriving or
/// arrived), with their RAM (MiB): a session clears its VM's flag when the
/// QEMU goes with a failure, a kept QEMU's reaper thread when it exits.
#[derive(Default)]
struct Arrived(Vec<(u64, Arc<AtomicBool>)>);

impl Arrived {
    fn running_mib(&self) -> u64 {
        self.0
            .iter()
            .filter(|(_, up)| up.load(Ordering::Relaxed))
            .fold(0u64, |t, (m, _)| t.saturating_add(*m))
    }

    /// A new VM of `mib` MiB whose QEMU runs; its flag.
    fn add(&mut self, mib: u64) -> Arc<AtomicBool> {
        self.0.retain(|(_, up)| up.load(Ordering::Relaxed));
        let up = Arc::new(AtomicBool::new(true));
        self.0.push((mib, up.clone()));
        up
    }
}

/// `Arrived` under its lock, whatever a panicked session left (the list
/// and the flags stay consistent: each push is one step).
fn lock(a: &Mutex<Arrived>) -> std::sync::MutexGuard<'_, Arrived> {
    a.lock().unwrap_or_else(|e| e.into_inner())
}

/// The RAM, MiB, already committed to VMs here: with `kram`, every KRAM
/// area `vm-*` (each VM's RAM, however it came: it survives a restart of
/// this service and a hot-upgrade); otherwise the VMs this service
/// started that still run.
fn committed_mib(opts: &ListenOptions, arrived: &Arrived) -> Result<u64, String> {
    if !opts.kram {
        return Ok(arrived.running_mib());
    }
    let k = Kram::open(DEFAULT_DEVICE).map_err(|e| e.to_string())?;
    let areas = k.areas().map_err(|e| e.to_string())?;
    Ok(areas
        .iter()
        .filter(|a| a.name.starts_with("vm-"))
        .fold(0u64, |t, a| t.saturating_add(a.npages / 256)))
}

/// The arriving VM's `vm_mib` on top of `committed` MiB, against the cap.
fn check_total(committed: u64, vm_mib: u64, cap: Option<u64>) -> Result<(), String> {
    match cap {
        Some(cap) if committed.saturating_add(vm_mib) > cap => Err(format!(
            "this host takes at most {cap} MiB of migrated VMs' RAM in all (--max-total-memory-mib): {committed} MiB run here already, the VM has {vm_mib} MiB"
        )),
        _ => Ok(()),
    }
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

/// What an earlier run of this service, killed mid-session, left: a QEMU
/// still waiting for a migration (its state never came, so the VM is
/// whole on its source) is quit; with `kram`, a `vm-*` KRAM area of a VM
/// this service started that no managed VM owns and nothing maps is
/// freed. A QEMU that received its state (paused: the commit may be in
/// doubt, it may be the VM's only copy) or runs is left alone, and so is
/// a mapped area. Each act is one
/// line; none stops the service from starting.
fn clean_up_after_earlier_run(opts: &ListenOptions, say: &mut dyn FnMut(&str)) {
    let managed: Vec<String> = managed_vms()
        .map(|v| v.into_iter().map(|v| v.name).collect())
        .unwrap_or_default();
    let dir = under_root(&opts.root, &opts.run_dir);
    let socks = fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "qmp"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for sock in socks {
        let name = sock
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(mut q) = Qmp::connect(&sock, Duration::ZERO) else {
            // nothing listens: a QEMU that is gone
            let _ = fs::remove_file(&sock);
            continue;
        };
        let Ok(st) = q.run_state() else { continue };
        if stale(&st, managed.contains(&name)) {
            let _ = q.execute("quit", serde_json::json!({}));
            say(&format!(
                "VM {name}: a QEMU an earlier run of this service left waiting for a migration ({st}): quit"
            ));
        }
    }
    if !opts.kram {
        return;
    }
    let Ok(k) = Kram::open(DEFAULT_DEVICE) else {
        return;
    };
    let areas: Vec<String> = k
        .areas()
        .map(|a| a.into_iter().map(|a| a.name).collect())
        .unwrap_or_default();
    // Only areas of VMs this service started (its QEMU log is in the run
    // directory, on /run: gone after a reboot or kexec): never one a
    // restore or `liveup vm start` is about to map.
    let ours = |n: &str| dir.join(format!("{n}.qemu.log")).exists();
    for a in orphan_areas(&areas, &managed, ours) {
        // its QEMU (quit above) may take a moment to unmap it
        let r = k.delete_once_unmapped(&a, Duration::from_secs(5));
        match r {
            Ok(()) => say(&format!(
                "KRAM area {a}: no managed VM owns it and nothing maps it (an earlier run of this service left it): freed"
            )),
            Err(e) => say(&format!("KRAM area {a}: no managed VM owns it, left: {e}")),
        }
    }
}

/// A QEMU to quit at start-up: no managed VM's, and still waiting for its
/// state (`-incoming defer`: inmigrate; or never started: prelaunch).
fn stale(st: &RunState, managed: bool) -> bool {
    !managed && (*st == RunState::InMigrate || *st == RunState::Other("prelaunch".into()))
}

/// The `vm-*` areas no managed VM owns, of VMs this service started.
fn orphan_areas(areas: &[String], managed: &[String], ours: impl Fn(&str) -> bool) -> Vec<String> {
    areas
        .iter()
        .filter(|a| {
            a.strip_prefix("vm-")
                .is_some_and(|n| !managed.iter().any(|m| m == n) && ours(n))
        })
        .cloned()
        .collect()
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

/// The VM runs here: recorded as managed (with a KRAM area), and its QEMU
/// reaped by a thread when it exits (no zombie under a long-running
/// service), which then clears its flag in [`Arrived`].
fn keep(qemu: &mut Started, name: &str, say: &mut dyn FnMut(&str)) {
    if qemu.area.is_some() {
        if let Err(e) = qemu.record() {
            say(&format!(
                "VM {name}: runs here, but is not recorded as managed: {e}"
            ));
        }
    }
    qemu.kept = true;
    let up = qemu.up.take().unwrap_or_default();
    if let Some(mut child) = qemu.child.take() {
        let r = std::thread::Builder::new()
            .name("liveup-reaper".into())
            .spawn(move || {
                let _ = child.wait();
                up.store(false, Ordering::Relaxed);
            });
        if let Err(e) = r {
            // the VM still counts against the cap until this service restarts
            say(&format!(
                "VM {name}: runs here, but no thread waits for its QEMU: {e}"
            ));
        }
    }
}

/// A QEMU this service started, and the KRAM area it maps: the QEMU is
/// killed and the area freed on drop unless kept (the VM then runs here).
struct Started {
    child: Option<Child>,
    vm: VmConfig,
    area: Option<String>,
    kept: bool,
    /// Its flag in [`Arrived`], once admitted: cleared when this QEMU goes
    /// (on drop unless kept; when kept, by the reaper thread).
    up: Option<Arc<AtomicBool>>,
}

impl Started {
    /// Record the VM as `liveup vm start` does (so `liveup vm`, `upgrade`
    /// and `restore` manage it): its command line as a restore relaunches
    /// it, daemonized, without `-incoming`.
    fn record(&self) -> std::io::Result<()> {
        let mut vm = self.vm.clone();
        vm.argv = recorded_argv(&vm.argv, &vm.name);
        fs::create_dir_all(under_root(&vm.root, Path::new("/run/liveup")))?;
        fs::create_dir_all(run_dir())?;
        let json = serde_json::to_vec_pretty(&vm).map_err(std::io::Error::other)?;
        fs::write(run_dir().join(format!("{}.json", vm.name)), json)
    }
}

/// The command line a restore relaunches a VM that arrived with: without
/// `-incoming`, daemonized, under the sandbox a daemonized QEMU can run.
fn recorded_argv(argv: &[String], name: &str) -> Vec<String> {
    let mut a = argv.to_vec();
    let n = a.len();
    if a[n.saturating_sub(3)..] == ["-incoming", "defer", "-S"] {
        a.truncate(n - 3);
    }
    if let Some(i) = a.iter().position(|x| x == "-sandbox") {
        if let Some(v) = a.get_mut(i + 1) {
            *v = crate::migrate::spec::SANDBOX_DAEMONIZED.into();
        }
    }
    a.extend([
        "-daemonize".into(),
        "-pidfile".into(),
        format!("/run/liveup/{name}.pid"),
    ]);
    a
}

impl Drop for Started {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if let Some(child) = &mut self.child {
            // `quit` was asked for already on a failed receive; a QEMU
            // that has not gone within 5 s is killed.
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(up) = &self.up {
            up.store(false, Ordering::Relaxed);
        }
        if let Some(a) = &self.area {
            // nothing maps it any more: its QEMU has exited
            if let Err(e) = Kram::open(DEFAULT_DEVICE).and_then(|k| k.delete(a)) {
                log::warn!("KRAM area {a} of a VM that did not arrive is left: {e}");
            }
        }
    }
}

/// Check the description, build the command line (the RAM in a KRAM area
/// of its own with `kram`), start QEMU and wait for its QMP socket. The
/// error is the message for the source.
fn launch(spec: &VmSpec, opts: &ListenOptions) -> Result<Started, String> {
    // before the name makes any path
    spec.validate(&opts.policy).map_err(|e| e.to_string())?;
    let files = open_files(spec, opts)?;
    // A kernel or initrd is read through /proc/self/fd/N, where QEMU's
    // root has /proc. A disk is checked the same way but still named by
    // its path: given as descriptors in an fd set, the set's members keep
    // their open file descriptions, and with them QEMU's image locks,
    // alive across its read-only to read-write reopen (check-migrate's
    // migrated VM then failed `cont`: "Failed to get shared "write" lock").
    let proc_fds = under_root(&opts.root, Path::new("/proc/self/fd")).is_dir();
    let mut fds: std::collections::BTreeMap<PathBuf, Vec<i32>> = Default::default();
    for (p, _, f) in files.iter().filter(|(_, disk, _)| proc_fds && !*disk) {
        fds.entry(p.clone()).or_default().push(f.as_raw_fd());
    }
    let inherit: Vec<i32> = fds.values().flatten().copied().collect();
    // QEMU's messages name the descriptors; the source is told the files
    let names = fd_names(&fds);
    let named = |mut msg: String| {
        for (from, to) in &names {
            msg = msg.replace(from.as_str(), to);
        }
        msg
    };
    let qmp = opts.run_dir.join(format!("{}.qmp", spec.name));
    let qmp_host = under_root(&opts.root, &qmp);
    if qmp_host.exists() && open_qmp(&qmp_host).is_ok() {
        return Err(format!("a VM named {} already runs here", spec.name));
    }
    let l = Launch {
        qemu: opts.qemu.clone(),
        qmp: qmp.clone(),
        log_dir: opts.run_dir.clone(),
        ram_object: None,
        fds: Default::default(),
    };
    // by path: what a restore relaunches (record); with the descriptors:
    // what starts now
    let mut argv = spec.to_argv(&opts.policy, &l).map_err(|e| e.to_string())?;
    let with_fds = |l: &Launch| {
        spec.to_argv(
            &opts.policy,
            &Launch {
                fds: fds.clone(),
                ..l.clone()
            },
        )
        .map_err(|e| e.to_string())
    };
    let mut argv_now = with_fds(&l)?;
    let mut s = Started {
        child: None,
        vm: VmConfig {
            name: spec.name.clone(),
            root: opts.root.clone(),
            argv: Vec::new(),
            qmp,
            area: String::new(),
        },
        area: None,
        kept: false,
        up: None,
    };
    if opts.kram {
        if !spec.ram_backend {
            return Err("this host keeps VMs' RAM in KRAM, and the VM's RAM is not memory backend ram0 on the source (start it with `liveup vm start`)".into());
        }
        if managed_vms()
            .map_err(|e| format!("{e:#}"))?
            .iter()
            .any(|v| v.name == spec.name)
        {
            return Err(format!("a VM named {} is managed here already", spec.name));
        }
        let k = Kram::open(DEFAULT_DEVICE).map_err(|e| e.to_string())?;
        let name = format!("vm-{}", spec.name);
        if k.lookup(&name).is_ok() {
            return Err(format!("KRAM area {name} exists here already"));
        }
        let pages = spec
            .memory_mib
            .checked_mul(256)
            .ok_or("memory_mib too large")?;
        let a = k.create(&name, pages).map_err(|e| e.to_string())?;
        s.area = Some(name.clone());
        s.vm.area = name;
        let obj = format!(
            "memory-backend-file,id=ram0,size={},mem-path={},offset=0,share=on,align=2M",
            pages * PAGE_SIZE,
            area_node(ram_device(&argv), a.id)
        );
        let l = Launch {
            ram_object: Some(obj),
            ..l
        };
        argv = spec.to_argv(&opts.policy, &l).map_err(|e| e.to_string())?;
        argv_now = with_fds(&l)?;
    }
    s.vm.argv = argv;
    let dir = under_root(&opts.root, &opts.run_dir);
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cmd = VmConfig {
        argv: argv_now,
        ..s.vm.clone()
    }
    .launch(false, under_systemd());
    let log_path = dir.join(format!("{}.qemu.log", spec.name));
    let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let _ = fs::remove_file(&qmp_host);
    let mut command = Command::new(&cmd[0]);
    command
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    // SAFETY: runs in the child between fork and exec: fcntl is
    // async-signal-safe, nothing is allocated (the list is moved in), and
    // only the child's own descriptors change: QEMU inherits the checked
    // files (they are close-on-exec in this process, so no other child,
    // of another session, gets them).
    unsafe {
        command.pre_exec(move || {
            for fd in &inherit {
                if libc::fcntl(*fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", cmd[0]))?;
    // QEMU holds its own copies now
    drop(files);
    let child = s.child.insert(child);
    let t = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("QEMU exited ({st}): {}", named(tail(&log_path))));
        }
        // The socket appears before QEMU loads the kernel or ROMs, and the
        // QMP greeting only once its main loop runs: up when it answers.
        if qmp_host.exists()
            && open_qmp(&qmp_host)
                .and_then(|mut q| Ok(q.run_state()?))
                .is_ok()
        {
            return Ok(s);
        }
        if t.elapsed() > QEMU_START {
            return Err(format!(
                "QEMU opened no QMP socket in {} s: {}",
                QEMU_START.as_secs(),
                named(tail(&log_path))
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Each descriptor path QEMU is given (`/proc/self/fd/N`) and the file's
/// own path, longest first, to put QEMU's messages back into the files'
/// names.
fn fd_names(fds: &std::collections::BTreeMap<PathBuf, Vec<i32>>) -> Vec<(String, String)> {
    let mut subst: Vec<(String, String)> = Vec::new();
    for (p, v) in fds {
        for fd in v {
            subst.push((format!("/proc/self/fd/{fd}"), p.display().to_string()));
        }
    }
    // /proc/self/fd/12 before /proc/self/fd/1
    subst.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
    subst
}

/// Open each file the description names (kernel, initrd, disks: a disk
/// read-write) and check the opened file itself: a regular file whose real
/// path (the descriptor's, from /proc/self/fd) lies inside its pool's real
/// directory. A pool is storage the source's host can write; a link to
/// `/dev/sda` or `/etc/shadow` is refused. QEMU then gets these
/// descriptors, never the paths, so a link swapped in after the check
/// changes nothing. Returns each file by its path as QEMU would see it,
/// and whether it is a disk.
fn open_files(spec: &VmSpec, opts: &ListenOptions) -> Result<Vec<(PathBuf, bool, File)>, String> {
    let mut out = Vec::new();
    for (dir, file, disk) in spec.files(&opts.policy).map_err(|e| e.to_string())? {
        let outside = || {
            format!(
                "{} is not a regular file inside its pool {} (a link out of it, or a device)",
                file.display(),
                dir.display()
            )
        };
        let d = fs::canonicalize(under_root(&opts.root, &dir))
            .map_err(|e| format!("pool directory {}: {e}", dir.display()))?;
        let host = under_root(&opts.root, &file);
        // by path first, so that nothing but a regular file in the pool
        // is ever opened (opening a FIFO blocks, a device may act)
        let f = fs::canonicalize(&host).map_err(|e| format!("{}: {e}", file.display()))?;
        if !f.starts_with(&d) || !fs::metadata(&f).is_ok_and(|m| m.is_file()) {
            return Err(outside());
        }
        // then the opened file itself: what QEMU gets (O_NONBLOCK: a
        // FIFO swapped in meanwhile does not block the open)
        let f = fs::OpenOptions::new()
            .read(true)
            .write(disk)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&host)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let real = fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
            .map_err(|e| format!("{}: {e}", file.display()))?;
        if !real.starts_with(&d) || !f.metadata().is_ok_and(|m| m.is_file()) {
            return Err(outside());
        }
        nix::fcntl::fcntl(
            &f,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        )
        .map_err(|e| format!("{}: {e}", file.display()))?;
        out.push((file, disk, f));
    }
    Ok(out)
}

/// The last [`ERR_TAIL`] bytes of a log, as text on one line.
fn tail(p: &Path) -> String {
    let mut f = match File::open(p) {
        Ok(f) => f,
        Err(e) => return format!("(no log: {e})"),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(ERR_TAIL)));
    let mut b = Vec::new();
    let _ = f.take(ERR_TAIL).read_to_end(&mut b);
    String::from_utf8_lossy(&b).trim().replace('\n', " | ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn the_total_cap_counts_what_runs_and_the_arriving_vm() {
        assert!(check_total(0, 4096, None).is_ok());
        assert!(check_total(u64::MAX, u64::MAX, None).is_ok());
        assert!(check_total(3072, 1024, Some(4096)).is_ok());
        let e = check_total(3072, 1025, Some(4096)).unwrap_err();
        assert!(
            e.contains("at most 4096 MiB") && e.contains("3072 MiB run here"),
            "{e}"
        );
        // no overflow from a hostile size
        assert!(check_total(1, u64::MAX, Some(4096)).is_err());
    }

    #[test]
    fn at_start_up_only_a_qemu_still_waiting_for_its_state_is_quit() {
        assert!(stale(&RunState::InMigrate, false));
        assert!(stale(&RunState::Other("prelaunch".into()), false));
        // received (maybe its only copy), running, or managed: left
        for st in [RunState::Paused, RunState::Running, RunState::PostMigrate] {
            assert!(!stale(&st, false), "{st}");
        }
        assert!(!stale(&RunState::InMigrate, true));
    }

    #[test]
    fn orphan_areas_are_the_vm_areas_no_managed_vm_owns() {
        let areas = ["vm-a", "vm-b", "liveup-state", "iommu", "vm-"].map(String::from);
        let managed = ["a".to_string()];
        assert_eq!(orphan_areas(&areas, &managed, |_| true), ["vm-b", "vm-"]);
        assert!(orphan_areas(&areas[..1], &managed, |_| true).is_empty());
        // not started by this service (a restore's, `vm start`'s): never
        assert!(orphan_areas(&areas, &managed, |_| false).is_empty());
        assert_eq!(orphan_areas(&areas, &managed, |n| n == "b"), ["vm-b"]);
    }

    #[test]
    fn a_vm_that_exited_no_longer_counts() {
        let up = Arc::new(AtomicBool::new(true));
        let gone = Arc::new(AtomicBool::new(false));
        let a = Arrived(vec![
            (512, up.clone()),
            (1024, gone),
            (u64::MAX, up.clone()),
        ]);
        assert_eq!(a.running_mib(), u64::MAX, "saturates");
        let a = Arrived(vec![(512, up.clone()), (2048, up.clone())]);
        assert_eq!(a.running_mib(), 2560);
        up.store(false, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(a.running_mib(), 0);
    }

    /// Admission counts a VM from its launch; a session that fails
    /// (its QEMU dropped, not kept) gives the room back, and gone entries
    /// are not kept forever.
    #[test]
    fn an_arriving_vm_counts_until_its_session_fails() {
        let mut a = Arrived::default();
        let first = a.add(512);
        let started = Started {
            child: None,
            vm: VmConfig {
                name: "t2".into(),
                root: "/".into(),
                argv: Vec::new(),
                qmp: "/nonexistent.qmp".into(),
                area: String::new(),
            },
            area: None,
            kept: false,
            up: Some(a.add(512)),
        };
        assert_eq!(a.running_mib(), 1024, "both arriving VMs count");
        assert!(check_total(a.running_mib(), 512, Some(1500)).is_err());
        drop(started);
        assert_eq!(a.running_mib(), 512, "the failed one's room is back");
        first.store(false, Ordering::Relaxed);
        a.add(256);
        assert_eq!(a.0.len(), 1, "gone entries dropped on the next add");
        assert_eq!(a.running_mib(), 256);
    }

    /// QEMU's error names the descriptors it was given; the source gets the
    /// files' names back (fd 12 is not read as fd 1 and a "2").
    #[test]
    fn qemu_messages_name_the_files_not_the_descriptors() {
        let fds = std::collections::BTreeMap::from([
            (PathBuf::from("/srv/boot/bzImage"), vec![12]),
            (PathBuf::from("/srv/boot/initrd"), vec![1]),
        ]);
        let mut m =
            "qemu: could not load kernel '/proc/self/fd/12'; /proc/self/fd/1: no".to_string();
        for (from, to) in &fd_names(&fds) {
            m = m.replace(from.as_str(), to);
        }
        assert_eq!(
            m,
            "qemu: could not load kernel '/srv/boot/bzImage'; /srv/boot/initrd: no"
        );
    }

    /// A VM that arrived is recorded as a restore relaunches it:
    /// daemonized, without `-incoming`, and under a sandbox `-daemonize`
    /// survives (the fresh-clone make check's restore of such a VM failed
    /// with the listen-time sandbox: QEMU exited 1).
    #[test]
    fn a_recorded_vm_is_daemonized_under_a_sandbox_that_allows_it() {
        let a: Vec<String> = [
            "qemu",
            "-name",
            "m2",
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
            "-incoming",
            "defer",
            "-S",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            recorded_argv(&a, "m2").join(" "),
            "qemu -name m2 -sandbox on,obsolete=deny,resourcecontrol=deny \
             -daemonize -pidfile /run/liveup/m2.pid"
        );
    }
}
