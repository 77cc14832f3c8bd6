//! The VMs of one restore racing to run again: their QEMUs started all at
//! once, then each step (load, resume) for those still in the race; a VM
//! a step fails for drops out and its QEMU is quit.

use super::super::fault;
use super::super::state::Manifest;
use super::super::vm::{self, read_ahead, run_dir, spawn_qemu, VmConfig};
use crate::qmp::{Monitor, Qmp, RunState};
use anyhow::{Context, Result};
use serde_json::json;
use std::fs;
use std::time::Duration;

/// The VMs of one restore: those still going, with their QMP sockets, and
/// those a step failed for.
pub(super) struct Race<'v> {
    live: Vec<(&'v VmConfig, Qmp)>,
    failed: Vec<(&'v VmConfig, anyhow::Error)>,
}

/// Every QEMU started at once, each waiting for its state (`-incoming
/// defer`), after queueing the reads of what they map.
pub(super) fn start_qemus<'v>(todo: &[&'v VmConfig], man: &Manifest) -> Result<Race<'v>> {
    // Queued just before starting QEMU. Measured in the rig (make
    // check-upgrade, 3 runs each): queued right after the manifest, the
    // queueing alone took 180-240 ms before any QEMU started and downtime
    // did not improve (6.99-7.88 s vs 6.70-7.09 s).
    let ahead = read_ahead(&man.preload);
    if ahead > 0 {
        log::debug!(
            "reading ahead {} files QEMU maps ({} MiB)",
            man.preload.len(),
            ahead >> 20
        );
    }
    let started = crate::parallel::side_by_side(
        todo.to_vec(),
        |vm| spawn_qemu(vm, true),
        |vm| {
            Err(anyhow::anyhow!(
                "VM {}: the QEMU start thread panicked",
                vm.name
            ))
        },
    );
    // Managed again from here on, whatever happens next (a failed restore
    // leaves every VM visible to `vm list` and `restore --retry`).
    fs::create_dir_all(run_dir())?;
    for vm in todo {
        fs::write(
            run_dir().join(format!("{}.json", vm.name)),
            serde_json::to_vec_pretty(vm)?,
        )?;
    }
    let mut race = Race {
        live: Vec::new(),
        failed: Vec::new(),
    };
    for (vm, r) in started {
        let q = r.and_then(|()| {
            Qmp::connect(vm.qmp_host(), Duration::from_secs(30))
                .with_context(|| format!("VM {}", vm.name))
        });
        match q {
            Ok(q) => race.live.push((vm, q)),
            Err(e) => race.failed.push((vm, e)),
        }
    }
    Ok(race)
}

impl<'v> Race<'v> {
    /// One step for every VM still in the race, one VM after another;
    /// those it fails for drop out. (Session 20 ran each VM's step in a
    /// thread of its own: it saved about 0.5 s of a 4-VM restore in the
    /// rig, and the rig then failed in 4 of 12 VM-count runs right after
    /// the 4-VM restore, against none before; the threads stay out until
    /// that is understood: Documentation/upgrade.rst.)
    fn each(&mut self, f: impl Fn(&VmConfig, &mut Qmp) -> Result<()>) {
        for (vm, mut q) in std::mem::take(&mut self.live) {
            match f(vm, &mut q) {
                Ok(()) => self.live.push((vm, q)),
                // (its QMP connection closes here; finish() quits QEMU)
                Err(e) => self.failed.push((vm, e)),
            }
        }
    }

    /// Each QEMU loads its saved device state (guest RAM is in KRAM
    /// already: x-ignore-shared).
    pub(super) fn load(&mut self) {
        self.each(|vm, q| {
            fault(&format!("restore-load:{}", vm.name))?;
            q.execute(
                "migrate-set-capabilities",
                json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
            )?;
            q.execute("migrate-set-parameters", json!({"mode": "cpr-reboot"}))?;
            q.execute(
                "migrate-incoming",
                json!({"uri": format!("file:{}", vm.state_path().display())}),
            )?;
            Ok(())
        });
        self.each(|vm, q| {
            q.wait_migration("migrate-incoming", Duration::from_secs(60))
                .with_context(|| format!("VM {}: loading its state", vm.name))
        });
    }

    /// Each loaded VM runs.
    pub(super) fn resume(&mut self) {
        self.each(|vm, q| {
            let st = q.run_state()?;
            if st != RunState::Running {
                q.execute("cont", json!({}))
                    .with_context(|| format!("VM {} is {st} after loading its state", vm.name))?;
            }
            Ok(())
        });
    }

    /// The VMs that run, and those that failed, whose QEMUs (waiting for a
    /// state that will not come, with the VM's RAM mapped) are quit.
    #[allow(clippy::type_complexity)]
    pub(super) fn finish(self) -> (Vec<&'v VmConfig>, Vec<(&'v VmConfig, anyhow::Error)>) {
        let restored = self.live.iter().map(|(vm, _)| *vm).collect();
        drop(self.live);
        for (vm, _) in &self.failed {
            if let Err(e) = vm::quit_qemu(vm) {
                log::warn!("VM {}: {e:#}", vm.name);
            }
        }
        (restored, self.failed)
    }
}
