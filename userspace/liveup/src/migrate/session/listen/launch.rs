//! Starting an arriving VM's QEMU: the checks before it, the process (its
//! output to a log, the checked files inherited) and the wait for its QMP
//! socket; QEMU's last lines of output are the error for the source.

use super::argv::command_lines;
use super::files::{descriptors, fd_names, open_files};
use super::started::Started;
use super::ListenOptions;
use crate::migrate::session::open_qmp;
use crate::migrate::spec::VmSpec;
use crate::qmp::Monitor;
use crate::upgrade::vm::{under_root, under_systemd, VmConfig};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started QEMU has to open its QMP socket.
pub(super) const QEMU_START: Duration = Duration::from_secs(30);
/// The most of a QEMU's output sent back to the source.
const ERR_TAIL: u64 = 2048;

/// Check the description, build the command line (the RAM in a KRAM area
/// of its own with `kram`), start QEMU and wait for its QMP socket. The
/// error is the message for the source.
pub(super) fn launch(spec: &VmSpec, opts: &ListenOptions) -> Result<Started, String> {
    // before the name makes any path
    spec.validate(&opts.policy).map_err(|e| e.to_string())?;
    let files = spec.files(&opts.policy).map_err(|e| e.to_string())?;
    let files = open_files(files, &opts.root)?;
    let proc_fds = under_root(&opts.root, Path::new("/proc/self/fd")).is_dir();
    let fds = descriptors(&files, proc_fds);
    let inherit: Vec<i32> = fds.values().copied().collect();
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
    let mut s = Started {
        child: None,
        vm: VmConfig {
            name: spec.name.clone(),
            root: opts.root.clone(),
            argv: Vec::new(),
            qmp: qmp.clone(),
            area: String::new(),
        },
        area: None,
        kept: false,
        up: None,
    };
    let argv_now = command_lines(spec, opts, &qmp, &fds, &mut s)?;
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
