//! A QEMU this service started: killed (and its KRAM area freed) unless
//! the VM arrives; kept, recorded as managed and reaped once it does.

use crate::kram::{Kram, DEFAULT_DEVICE};
use crate::upgrade::vm::{run_dir, under_root, VmConfig};
use std::fs;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The VM runs here: recorded as managed (with a KRAM area), and its QEMU
/// reaped by a thread when it exits (no zombie under a long-running
/// service), which then clears its flag in
/// [`Arrived`](super::admit::Arrived).
pub(super) fn keep(qemu: &mut Started, name: &str, say: &mut dyn FnMut(&str)) {
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
pub(super) struct Started {
    pub(super) child: Option<Child>,
    pub(super) vm: VmConfig,
    pub(super) area: Option<String>,
    pub(super) kept: bool,
    /// Its flag in [`Arrived`](super::admit::Arrived), once admitted:
    /// cleared when this QEMU goes (on drop unless kept; when kept, by the
    /// reaper thread).
    pub(super) up: Option<Arc<AtomicBool>>,
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
pub(super) fn recorded_argv(argv: &[String], name: &str) -> Vec<String> {
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
