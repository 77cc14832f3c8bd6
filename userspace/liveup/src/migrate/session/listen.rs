//! The destination service, `liveup migrate listen`: it waits for
//! authenticated sources, starts each VM's QEMU itself from the
//! description the source sends (spec.rs: checked against this host's
//! pools, networks and limits; the command line is built here), and then
//! receives the migration into it exactly as `migrate receive` does. The
//! QEMU's own error (its last lines of output) goes back to the source.
//!
//! One migration at a time: a second source waits in the listen queue.
//! A failure after the launch makes the QEMU quit (or kills it), so the VM
//! runs on exactly one side: the source keeps it until the commit.

use super::link::fmt_ip;
use super::receive::{accept_source, expect_hello, receive_inner, refuse_on_error};
use super::{open_qmp, MigrateError};
use crate::migrate::auth::Key;
use crate::migrate::control::{unexpected, Control, Ctl};
use crate::migrate::facts;
use crate::migrate::spec::{Launch, Policy, VmSpec};
use crate::upgrade::vm::{under_systemd, VmConfig};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
    /// QMP sockets and QEMU logs go here.
    pub run_dir: PathBuf,
    /// Per session: how long to wait on a silent source or stream.
    pub idle_timeout: Duration,
    /// End after one migration (its result is the exit status).
    pub once: bool,
}

/// Serve until killed (or, with `once`, for one migration).
pub fn listen(opts: &ListenOptions, mut say: impl FnMut(&str)) -> Result<(), MigrateError> {
    fs::create_dir_all(&opts.run_dir)?;
    let l = TcpListener::bind(&opts.listen)?;
    say(&format!("listening on {}", l.local_addr()?));
    loop {
        // A stray connection is refused inside and the wait goes on; only
        // the long wait itself ends an accept here.
        let (mut c, local_ip) =
            match accept_source(&l, &opts.key, Duration::from_secs(3600), &mut say) {
                Ok(x) => x,
                Err(MigrateError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(e) => return Err(e),
            };
        let peer = c
            .stream()
            .peer_addr()
            .map(|a| fmt_ip(a.ip()))
            .unwrap_or_default();
        let r = session(&mut c, local_ip, opts, &mut say);
        match &r {
            Ok(name) => say(&format!("VM {name} from {peer}: migrated, running here")),
            Err(e) => say(&format!("migration from {peer} failed: {e}")),
        }
        if opts.once {
            return r.map(|_| ());
        }
    }
}

/// One source: its description, the QEMU, the migration.
fn session(
    c: &mut Control,
    local_ip: std::net::IpAddr,
    opts: &ListenOptions,
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
    let mut qemu = match launch(&spec, opts) {
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
        "VM {}: QEMU started (pid {}), waiting for its state",
        spec.name,
        qemu.child.id()
    ));
    c.send(&Ctl::Launched {
        name: spec.name.clone(),
    })?;
    let r = (|| {
        let mut q = open_qmp(&qemu.qmp)?;
        let (qat_lib, qat_hw) = facts::qat_probe();
        let me = facts::host_facts(&mut q, qat_lib.is_some(), qat_hw)?;
        let pid = q.peer_pid();
        let r = receive_inner(
            c,
            &mut q,
            me,
            pid,
            qat_lib,
            local_ip,
            opts.idle_timeout,
            say,
        );
        refuse_on_error(c, &mut q, r, say)
    })();
    match r {
        Ok(_) => {
            qemu.keep();
            Ok(spec.name)
        }
        Err(e) => Err(e),
    }
}

/// A QEMU this service started: killed on drop unless kept (the VM then
/// runs here).
struct Started {
    child: Child,
    qmp: PathBuf,
    kept: bool,
}

impl Started {
    fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if !self.kept {
            // `quit` was asked for already on a failed receive; a QEMU
            // that has not gone within 5 s is killed.
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Check the description, build the command line, start QEMU and wait for
/// its QMP socket. The error is the message for the source.
fn launch(spec: &VmSpec, opts: &ListenOptions) -> Result<Started, String> {
    let qmp = opts.run_dir.join(format!("{}.qmp", spec.name));
    if Path::new(&qmp).exists() && open_qmp(&qmp).is_ok() {
        return Err(format!("a VM named {} already runs here", spec.name));
    }
    let l = Launch {
        qemu: opts.qemu.clone(),
        qmp: qmp.clone(),
        log_dir: opts.run_dir.clone(),
        ram_object: None,
    };
    let argv = spec.to_argv(&opts.policy, &l).map_err(|e| e.to_string())?;
    let vm = VmConfig {
        name: spec.name.clone(),
        root: "/".into(),
        argv,
        qmp: qmp.clone(),
        area: String::new(),
    };
    let cmd = vm.launch(false, under_systemd());
    let log_path = opts.run_dir.join(format!("{}.qemu.log", spec.name));
    let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let _ = fs::remove_file(&qmp);
    let child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", cmd[0]))?;
    let mut s = Started {
        child,
        qmp,
        kept: false,
    };
    let t = Instant::now();
    loop {
        if let Ok(Some(st)) = s.child.try_wait() {
            return Err(format!("QEMU exited ({st}): {}", tail(&log_path)));
        }
        if s.qmp.exists() {
            return Ok(s);
        }
        if t.elapsed() > QEMU_START {
            return Err(format!(
                "QEMU opened no QMP socket in {} s: {}",
                QEMU_START.as_secs(),
                tail(&log_path)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
