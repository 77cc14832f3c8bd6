//! The blackout of `liveup upgrade`: from the first VM stopping to the
//! kexec. Its steps (save every VM, freeze a kept device's IOMMU, store
//! the saved state in KRAM) record in one guard, [`Blackout`], what they
//! did; a failure in any of them, or of the kexec itself, is undone by
//! [`Blackout::rollback`], which reverses exactly that: the VMs run on
//! where they were, nothing of them lost (guest RAM never moved).
//!
//! What the steps do outside the QEMUs goes through [`Host`], so the
//! sequence and its rollback are unit-tested with fakes (no QEMU, no KRAM).

use super::fault;
use super::state::{Manifest, SavedVm, BLOB_BASE};
use super::tsc::rdtsc;
use super::vm::VmConfig;
use crate::qmp::Monitor;
use anyhow::{Context, Result};
use serde_json::json;
use std::time::Duration;

/// The host side of the blackout.
pub(super) trait Host {
    /// Remove a VM's old saved-state file (before its save writes it).
    fn clear_state(&mut self, vm: &VmConfig);
    /// The device state a VM's QEMU saved.
    fn read_state(&mut self, vm: &VmConfig) -> Result<Vec<u8>>;
    /// Whether a device is kept through the kexec.
    fn keeps(&self) -> bool;
    /// Freeze the kept device's IOMMU tables.
    fn freeze(&mut self) -> Result<()>;
    fn thaw(&mut self) -> Result<()>;
    /// Write the manifest and the states into the KRAM state area.
    fn store(&mut self, m: &Manifest, blobs: &[Vec<u8>]) -> Result<()>;
    /// Leave no manifest in the state area.
    fn invalidate(&mut self) -> Result<()>;
    /// Set the wall clocks of VMs that ran again (their guest agents),
    /// side by side: an agent that does not answer is waited for, and the
    /// others must not wait behind it.
    fn set_clocks(&mut self, vms: &[&VmConfig]);
}

/// What the blackout's steps have done so far, for [`Blackout::rollback`].
pub(super) struct Blackout<'a, M: Monitor, H: Host> {
    vms: &'a [VmConfig],
    qmps: &'a mut [M],
    host: &'a mut H,
    /// The VMs whose save was started (each stops its guest).
    stopped: Vec<usize>,
    frozen: bool,
    /// TSC when the first VM was stopped.
    pub t0: u64,
}

impl<'a, M: Monitor, H: Host> Blackout<'a, M, H> {
    pub(super) fn new(vms: &'a [VmConfig], qmps: &'a mut [M], host: &'a mut H) -> Self {
        Blackout {
            vms,
            qmps,
            host,
            stopped: Vec::new(),
            frozen: false,
            t0: rdtsc(),
        }
    }

    /// Step 1: stop and save every VM. All saves start at once (a
    /// cpr-reboot save stops its guest as it starts) and run side by side,
    /// so the blackout does not grow by one save per VM; then each is
    /// waited for and read back in turn.
    pub(super) fn save(&mut self) -> Result<(Vec<SavedVm>, Vec<Vec<u8>>)> {
        for (i, (vm, q)) in self.vms.iter().zip(self.qmps.iter_mut()).enumerate() {
            self.host.clear_state(vm);
            self.stopped.push(i);
            q.execute(
                "migrate",
                json!({"uri": format!("file:{}", vm.state_path().display())}),
            )
            .with_context(|| format!("VM {}: cpr-reboot save", vm.name))?;
        }
        let (mut saved, mut blobs) = (Vec::new(), Vec::new());
        for (vm, q) in self.vms.iter().zip(self.qmps.iter_mut()) {
            q.wait_migration("migrate (cpr-reboot save)", Duration::from_secs(60))
                .with_context(|| format!("VM {}", vm.name))?;
            fault("after-save")?;
            let blob = self.host.read_state(vm)?;
            saved.push(SavedVm {
                config: vm.clone(),
                state_offset: 0,
                state_len: blob.len() as u64,
                state_crc: kram_format::crc32c(&blob),
                // from the first stop to this VM's state being read back
                save_ticks: rdtsc().wrapping_sub(self.t0),
                restored: false,
            });
            blobs.push(blob);
        }
        Ok((saved, blobs))
    }

    /// Step 2: the VMMs are stopped, so the kept device's tables no longer
    /// change: freeze them. The TSC ticks it took (0: nothing kept).
    pub(super) fn freeze(&mut self) -> Result<u64> {
        if !self.host.keeps() {
            return Ok(0);
        }
        let t = rdtsc();
        fault("freeze")?;
        self.host.freeze()?;
        self.frozen = true;
        Ok(rdtsc().wrapping_sub(t))
    }

    /// Step 3: lay the states out after the manifest and store both.
    pub(super) fn store(&mut self, m: &mut Manifest, blobs: &[Vec<u8>]) -> Result<()> {
        let mut off = BLOB_BASE as u64;
        for v in m.vms.iter_mut() {
            v.state_offset = off;
            off = off.saturating_add(v.state_len);
        }
        m.t_saved = rdtsc();
        m.t_kexec = m.t_saved;
        self.host.store(m, blobs)?;
        fault("before-kexec")
    }

    /// Undo what the steps did, newest first: the kept device back on this
    /// kernel's tables, the stored state made unloadable (it is older than
    /// the VMs' RAM once they run), and every VM whose save started
    /// running again. Failures of the undo are reported, not fatal: each
    /// part is tried. Returns what could not be undone (empty: all was).
    pub(super) fn rollback(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        if std::mem::take(&mut self.frozen) {
            if let Err(t) = self.host.thaw() {
                log::warn!("{t:#}");
                left.push(format!("the kept device's IOMMU is still frozen ({t:#})"));
            }
        }
        if let Err(t) = self.host.invalidate() {
            log::warn!("cannot invalidate the saved state: {t:#}");
            left.push(format!(
                "the saved state is still valid ({t:#}): do not run `liveup restore`"
            ));
        }
        // A save may still run (they run side by side): cancel it and let
        // it end before `cont`, which QEMU refuses mid-migration.
        let stopped = std::mem::take(&mut self.stopped);
        let mut resumed: Vec<&VmConfig> = Vec::new();
        for &i in &stopped {
            let q = &mut self.qmps[i];
            let _ = q.execute("migrate_cancel", json!({}));
            let _ = q.wait_migration("migrate_cancel", Duration::from_secs(10));
            match q.execute("cont", json!({})) {
                Ok(_) => resumed.push(&self.vms[i]),
                Err(e) => {
                    log::warn!("VM {}: cont: {e}", self.vms[i].name);
                    left.push(format!(
                        "VM {} may still be paused (cont: {e})",
                        self.vms[i].name
                    ));
                }
            }
        }
        // They were stopped, their kvmclock with them: their wall clocks
        // are behind by the pause, as after a restore. (Not those still
        // paused: their agents cannot answer, and a set-time queued for one
        // would apply whenever it runs again.)
        if !resumed.is_empty() {
            self.host.set_clocks(&resumed);
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmp::QmpError;
    use serde_json::Value;

    /// A QEMU that records the commands it gets; its save fails if told.
    #[derive(Default)]
    struct FakeQemu {
        log: Vec<String>,
        fail_save: bool,
        fail_cont: bool,
    }

    impl Monitor for FakeQemu {
        fn execute(&mut self, cmd: &str, _args: Value) -> Result<Value, QmpError> {
            self.log.push(cmd.into());
            if self.fail_cont && cmd == "cont" {
                return Err(QmpError::Timeout("cont".into()));
            }
            Ok(json!({}))
        }
        fn wait_migration(&mut self, what: &str, _t: Duration) -> Result<(), QmpError> {
            self.log.push(format!("wait {what}"));
            if self.fail_save && what.starts_with("migrate (") {
                return Err(QmpError::Timeout(what.into()));
            }
            Ok(())
        }
    }

    #[derive(Default)]
    struct FakeHost {
        log: Vec<String>,
        kept: bool,
        fail_store: bool,
        fail_thaw: bool,
    }

    impl Host for FakeHost {
        fn clear_state(&mut self, vm: &VmConfig) {
            self.log.push(format!("clear {}", vm.name));
        }
        fn read_state(&mut self, vm: &VmConfig) -> Result<Vec<u8>> {
            Ok(vm.name.as_bytes().to_vec())
        }
        fn keeps(&self) -> bool {
            self.kept
        }
        fn freeze(&mut self) -> Result<()> {
            self.log.push("freeze".into());
            Ok(())
        }
        fn thaw(&mut self) -> Result<()> {
            self.log.push("thaw".into());
            anyhow::ensure!(!self.fail_thaw, "thaw refused");
            Ok(())
        }
        fn store(&mut self, _m: &Manifest, blobs: &[Vec<u8>]) -> Result<()> {
            self.log.push(format!("store {}", blobs.len()));
            anyhow::ensure!(!self.fail_store, "no room");
            Ok(())
        }
        fn invalidate(&mut self) -> Result<()> {
            self.log.push("invalidate".into());
            Ok(())
        }
        fn set_clocks(&mut self, vms: &[&VmConfig]) {
            for vm in vms {
                self.log.push(format!("clock {}", vm.name));
            }
        }
    }

    fn vms(n: usize) -> Vec<VmConfig> {
        (1..=n)
            .map(|i| VmConfig {
                name: format!("vm{i}"),
                root: "/".into(),
                argv: vec!["qemu".into()],
                qmp: format!("/run/liveup/vm{i}.qmp").into(),
                area: format!("vm-vm{i}"),
            })
            .collect()
    }

    fn manifest(vms: Vec<SavedVm>) -> Manifest {
        Manifest {
            tsc_hz: 1e9,
            t_blackout: 0,
            t_saved: 0,
            t_kexec: 0,
            vms,
            preload: vec![],
            freeze_ticks: 0,
        }
    }

    #[test]
    fn every_step_done_lays_the_states_out_after_the_manifest() {
        let v = vms(2);
        let mut q: Vec<FakeQemu> = (0..2).map(|_| FakeQemu::default()).collect();
        let mut h = FakeHost {
            kept: true,
            ..Default::default()
        };
        let mut b = Blackout::new(&v, &mut q, &mut h);
        let (saved, blobs) = b.save().unwrap();
        b.freeze().unwrap();
        let mut m = manifest(saved);
        b.store(&mut m, &blobs).unwrap();
        assert_eq!(m.vms[0].state_offset, BLOB_BASE as u64);
        assert_eq!(m.vms[1].state_offset, BLOB_BASE as u64 + 3);
        assert_eq!(m.vms[1].state_crc, kram_format::crc32c(b"vm2"));
        assert_eq!(h.log, ["clear vm1", "clear vm2", "freeze", "store 2"]);
        for qe in &q {
            assert_eq!(qe.log, ["migrate", "wait migrate (cpr-reboot save)"]);
        }
    }

    #[test]
    fn a_failed_save_resumes_every_vm_stopped_and_stores_nothing() {
        let v = vms(2);
        let mut q: Vec<FakeQemu> = (0..2).map(|_| FakeQemu::default()).collect();
        q[1].fail_save = true;
        let mut h = FakeHost::default();
        let mut b = Blackout::new(&v, &mut q, &mut h);
        assert!(b.save().is_err());
        assert!(b.rollback().is_empty());
        assert_eq!(
            h.log,
            [
                "clear vm1",
                "clear vm2",
                "invalidate",
                "clock vm1",
                "clock vm2"
            ]
        );
        for qe in &q {
            assert_eq!(
                &qe.log[qe.log.len() - 3..],
                ["migrate_cancel", "wait migrate_cancel", "cont"]
            );
        }
    }

    #[test]
    fn a_failed_store_thaws_the_kept_device_and_resumes_the_vms() {
        let v = vms(1);
        let mut q = vec![FakeQemu::default()];
        let mut h = FakeHost {
            kept: true,
            fail_store: true,
            ..Default::default()
        };
        let mut b = Blackout::new(&v, &mut q, &mut h);
        let (saved, blobs) = b.save().unwrap();
        b.freeze().unwrap();
        assert!(b.store(&mut manifest(saved), &blobs).is_err());
        assert!(b.rollback().is_empty());
        // a second rollback (a kexec that failed after one) undoes nothing twice
        assert!(b.rollback().is_empty());
        assert_eq!(
            h.log,
            [
                "clear vm1",
                "freeze",
                "store 1",
                "thaw",
                "invalidate",
                "clock vm1",
                "invalidate"
            ]
        );
        assert_eq!(q[0].log.iter().filter(|c| *c == "cont").count(), 1);
    }

    #[test]
    fn nothing_kept_nothing_thawed() {
        let v = vms(1);
        let mut q = vec![FakeQemu::default()];
        let mut h = FakeHost::default();
        let mut b = Blackout::new(&v, &mut q, &mut h);
        b.save().unwrap();
        assert_eq!(b.freeze().unwrap(), 0);
        assert!(b.rollback().is_empty());
        assert!(!h.log.iter().any(|l| l == "thaw" || l == "freeze"));
    }

    #[test]
    fn an_incomplete_rollback_says_what_is_left() {
        let v = vms(2);
        let mut q: Vec<FakeQemu> = (0..2).map(|_| FakeQemu::default()).collect();
        q[1].fail_cont = true;
        let mut h = FakeHost {
            kept: true,
            fail_thaw: true,
            ..Default::default()
        };
        let mut b = Blackout::new(&v, &mut q, &mut h);
        b.save().unwrap();
        b.freeze().unwrap();
        let left = b.rollback();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left[0].contains("still frozen"), "{left:?}");
        assert!(left[1].contains("VM vm2 may still be paused"), "{left:?}");
        // vm1 was resumed all the same, and only its clock set (vm2's
        // agent cannot answer while it is paused)
        assert_eq!(q[0].log.last().map(String::as_str), Some("cont"));
        assert!(h.log.iter().any(|l| l == "clock vm1"), "{:?}", h.log);
        assert!(!h.log.iter().any(|l| l == "clock vm2"), "{:?}", h.log);
    }
}
