//! Host kernel hot-upgrade: `liveup vm start`, `liveup upgrade`, `liveup restore`.
//!
//! Guest RAM lives in a KRAM area (QEMU maps /dev/kram at the area's offset,
//! share=on), so across kexec only device state has to be saved. `upgrade`
//! checks everything first (preflight), loads the new kernel, and only then
//! stops the VMs: each QEMU saves its device state in cpr-reboot mode with
//! x-ignore-shared (guest RAM is not copied), liveup stores the states and
//! the VMs' command lines in the KRAM area `liveup-state`, and kexecs. In the
//! new kernel `restore` reads them back, relaunches each QEMU with
//! `-incoming defer`, loads the state and lets the guest run.
//!
//! Times are taken with the TSC, which keeps counting through kexec; its
//! rate is calibrated against CLOCK_MONOTONIC on each side.

mod blackout;
mod error;
mod foreign;
mod kexec;
mod report;
mod restore;
mod signals;
mod state;
pub(crate) mod tsc;
pub(crate) mod vm;

pub use error::{failure_json, Outcome, UpgradeError};
pub use report::{Phase, Report};
pub use restore::{restore, RestoreArgs};
pub use state::{Manifest, SavedVm, STATE_AREA};
pub use tsc::{rdtsc, tsc_hz};
pub use vm::{
    managed_vms, passthrough_devices, ram_device, run_dir, vm_start, vm_status, vm_stop, VmConfig,
    KEEP_PROPERTY,
};

use crate::kram::Kram;
use crate::qmp::{Monitor, Qmp, RunState};
use anyhow::{bail, ensure, Context, Result};
use blackout::{Blackout, Host};
use kexec::{check_reservation, kexec_load, kexec_unload, next_cmdline, set_param};
use serde_json::json;
use state::{invalidate_state, state_area, store};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tsc::{pick_tsc_khz, plausible_tsc_khz, vm_tsc_khz};
use vm::{check_passthrough, check_qemu_version, qemu_files};

/// Test hook: LIVEUP_HOLD=<step> stops the blackout at that step until
/// /run/liveup/hold-<step> (written on arrival) is removed or a held
/// signal comes, 120 s at most (a test sends the signal then).
fn hold(step: &str, sig: &signals::Held) -> Result<()> {
    if std::env::var("LIVEUP_HOLD").map_or(true, |s| s != step) {
        return Ok(());
    }
    let f = run_dir().join(format!("hold-{step}"));
    fs::write(&f, b"")?;
    let t = std::time::Instant::now();
    while f.exists() && !sig.pending() && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = fs::remove_file(&f);
    Ok(())
}

/// Fault injection for tests: LIVEUP_FAIL=<step> makes that step fail.
fn fault(step: &str) -> Result<()> {
    log::debug!("step {step}");
    if std::env::var("LIVEUP_FAIL").is_ok_and(|s| s == step) {
        bail!("injected failure at step '{step}' (LIVEUP_FAIL)");
    }
    Ok(())
}

pub struct UpgradeArgs<'a> {
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    pub append: Option<&'a str>,
    pub cmdline: Option<&'a str>,
    /// Do everything but the final kexec (for tests and dry runs).
    pub no_exec: bool,
    /// A passthrough device to keep doing DMA through the kexec, and
    /// iommu_preserve.ko (crate::keep).
    pub keep: Option<(&'a str, &'a Path)>,
    /// The KRAM areas the kept device does DMA into (none: the RAM areas
    /// of the VMs that pass it through).
    pub keep_areas: &'a [String],
    /// Kexec even if processes liveup does not manage use /dev/kvm (their
    /// VMs are lost).
    pub allow_unmanaged_kvm: bool,
    /// Print the plan as JSON on stdout once preflight passed, before
    /// anything is paused.
    pub json: bool,
}

/// What `liveup upgrade --json` prints once preflight passed: what will
/// happen, before any VM is paused.
#[derive(Debug, serde::Serialize)]
pub struct Plan {
    /// The VMs that will be paused, saved and restored.
    pub vms: Vec<String>,
    /// The libvirt domains that will be saved through libvirt (managed
    /// save) and restored by `liveup libvirt restore`.
    pub libvirt_domains: Vec<String>,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// The next kernel's whole command line, as loaded.
    pub cmdline: String,
    /// The TSC frequency the next kernel is told (tsc_known_khz), if any.
    pub tsc_khz: Option<u64>,
    /// The passthrough device kept doing DMA through the kexec.
    pub keep_device: Option<String>,
    /// KVM users liveup does not manage that the kexec will end (only
    /// with --allow-unmanaged-kvm).
    pub unmanaged_kvm_users: Vec<String>,
    /// A rehearsal: the VMs are paused and resumed, no kexec.
    pub no_exec: bool,
}

/// `liveup upgrade`. Returns only if it did not kexec; its error is then
/// an [`UpgradeError`] saying what state the host was left in.
pub fn upgrade(kram: &Kram, a: &UpgradeArgs) -> Result<()> {
    let mut p = prepare(kram, a).map_err(|e| UpgradeError::new(Outcome::Refused, &e))?;
    if a.json {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string(&p.plan)?)?;
        out.flush()?;
    }
    blackout(kram, a, &mut p)
}

/// What preflight found and set up; nothing paused yet.
struct Prepared {
    vms: Vec<VmConfig>,
    /// libvirt's running domains, each checked keepable.
    libvirt: Vec<crate::libvirt::keep::Keepable>,
    qmps: Vec<Qmp>,
    keep: Option<crate::keep::KeptDevice>,
    preload: Vec<PathBuf>,
    hz: f64,
    plan: Plan,
}

/// Preflight: every check, the kexec image loaded; nothing is touched if
/// any of this fails.
fn prepare(kram: &Kram, a: &UpgradeArgs) -> Result<Prepared> {
    let st = kram.status()?;
    ensure!(
        st.state == 0,
        "KRAM is not ready (errno {}): see `liveup kram status`",
        st.error
    );
    // before anything else: the VMs a restore has not brought back are
    // not running, and would otherwise be refused as such
    state::check_no_pending(kram)?;
    let vms = managed_vms()?;
    let libvirt = libvirt_domains(kram)?;
    ensure!(
        !vms.is_empty() || !libvirt.is_empty(),
        "no managed VMs in {} (start them with `liveup vm start`) and no libvirt domains",
        run_dir().display()
    );
    let mut qmps = Vec::new();
    let mut tsc = Vec::new();
    let mut managed = vec![std::process::id() as i32];
    managed.extend(libvirt.iter().filter_map(|d| d.qemu_pid));
    for vm in &vms {
        let mut q = Qmp::connect(vm.qmp_host(), Duration::from_secs(5))
            .with_context(|| format!("VM {}", vm.name))?;
        managed.extend(q.peer_pid());
        let s = q.run_state()?;
        ensure!(s == RunState::Running, "VM {} is {s}, not running", vm.name);
        let version = q.execute("query-version", json!({}))?;
        let version = check_qemu_version(&vm.name, &version)?;
        log::debug!("VM {}: QEMU {version}", vm.name);
        tsc.push((
            vm.name.clone(),
            vm_tsc_khz(&mut q).with_context(|| format!("VM {}: TSC frequency", vm.name))?,
        ));
        ensure!(
            vm.argv
                .iter()
                .any(|x| x.contains("mem-path=/dev/kram") && x.contains("share=on")),
            "VM {} does not keep its RAM in KRAM (share=on)",
            vm.name
        );
        kram.lookup(&vm.area)
            .with_context(|| format!("VM {}: KRAM area {}", vm.name, vm.area))?;
        check_passthrough(vm, &mut q)?;
        // A VM that came here by `liveup migrate` keeps what that set:
        // multifd (a file URI then fails: "Migration requires
        // multi-channel URIs"), TLS, xbzrle, postcopy, throttling. The
        // save needs none of them.
        q.execute(
            "migrate-set-capabilities",
            json!({"capabilities": [
                {"capability": "x-ignore-shared", "state": true},
                {"capability": "multifd", "state": false},
                {"capability": "xbzrle", "state": false},
                {"capability": "postcopy-ram", "state": false},
                {"capability": "auto-converge", "state": false},
                {"capability": "dirty-limit", "state": false},
            ]}),
        )?;
        q.execute(
            "migrate-set-parameters",
            json!({"mode": "cpr-reboot", "tls-creds": "", "tls-hostname": ""}),
        )
        .with_context(|| format!("VM {}: QEMU without cpr-reboot", vm.name))?;
        qmps.push(q);
    }
    // Every KVM user but our QEMUs would die with this kernel.
    let unmanaged = foreign::users_of(Path::new("/proc"), foreign::KVM_RDEV, &managed);
    foreign::check(&unmanaged, a.allow_unmanaged_kvm)?;
    state_area(kram)?;
    let mut preload: Vec<PathBuf> = Vec::new();
    for vm in &vms {
        for p in qemu_files(vm) {
            if !preload.contains(&p) {
                preload.push(p);
            }
        }
    }
    let keep = match a.keep {
        Some((dev, module)) => Some(crate::keep::KeptDevice::preflight(
            kram,
            dev,
            module,
            a.keep_areas,
            &vms,
        )?),
        None => None,
    };
    fault("preflight")?;
    let mut cmdline = next_cmdline(a.append, a.cmdline)?;
    let st = kram.status()?;
    check_reservation(
        &cmdline,
        fs::read_to_string("/proc/cmdline")?.trim(),
        st.base,
        st.size,
    )?;
    // The next kernel runs the TSC at the VMs' frequency instead of
    // calibrating it anew (a restored VM's QEMU asks KVM for the frequency
    // it started with; without TSC scaling KVM can give it only if equal).
    let (khz, note) = pick_tsc_khz(&tsc);
    let hz = tsc_hz();
    if let Some(n) = note {
        log::warn!("{n}");
    }
    // QEMU's figure is a QEMU process's word: only one close to the rate
    // this kernel runs the TSC at goes on the next kernel's command line.
    let mut tsc_khz = None;
    match khz.map(|k| plausible_tsc_khz(k, hz / 1000.0)) {
        Some(Ok(khz)) => {
            cmdline = set_param(&cmdline, "tsc_known_khz", &khz.to_string());
            tsc_khz = Some(khz);
        }
        Some(Err(why)) => log::warn!("{why}"),
        None => {}
    }
    if let Some(k) = &keep {
        cmdline = format!("{cmdline} {}", k.cmdline());
    }
    cmdline = set_param(&cmdline, kexec::UPGRADE_MARK, "1");
    kexec_load(a.kernel, a.initrd, &cmdline)?;
    let plan = Plan {
        vms: vms.iter().map(|v| v.name.clone()).collect(),
        libvirt_domains: libvirt.iter().map(|d| d.name.clone()).collect(),
        kernel: a.kernel.to_path_buf(),
        initrd: a.initrd.map(Path::to_path_buf),
        cmdline,
        tsc_khz,
        keep_device: keep.as_ref().map(|k| k.bdf.to_string()),
        unmanaged_kvm_users: unmanaged
            .iter()
            .map(|u| format!("{} ({})", u.pid, u.comm))
            .collect(),
        no_exec: a.no_exec,
    };
    Ok(Prepared {
        vms,
        libvirt,
        qmps,
        keep,
        preload,
        hz,
        plan,
    })
}

/// The blackout: every step recorded in one guard and undone on failure,
/// then the kexec.
fn blackout(kram: &Kram, a: &UpgradeArgs, p: &mut Prepared) -> Result<()> {
    let (vms, hz) = (&p.vms, p.hz);
    let preload = &p.preload;
    if a.no_exec {
        log::warn!(
            "--no-exec: the rehearsal pauses and saves the VMs for real, then resumes them without a kexec"
        );
    }
    // Held from here until the kexec or the rollback's end (declared
    // before the guard, so dropped after it).
    let sig = signals::Held::new().map_err(|e| UpgradeError::new(Outcome::Refused, &e))?;
    let mut host = LiveHost {
        kram,
        keep: p.keep.as_ref(),
    };
    let mut b = Blackout::new(vms, &mut p.qmps, &mut host);
    let t_blackout = b.t0;
    let libvirt = &p.libvirt;
    let own = |b: &mut Blackout<'_, Qmp, LiveHost<'_>>| -> Result<Manifest> {
        let (saved, blobs) = b.save()?;
        sig.check()?;
        hold("after-save", &sig)?;
        sig.check()?;
        let freeze_ticks = b.freeze()?;
        sig.check()?;
        let mut m = Manifest {
            tsc_hz: hz,
            t_blackout,
            t_saved: 0,
            t_kexec: 0,
            vms: saved,
            preload: preload.clone(),
            freeze_ticks,
        };
        b.store(&mut m, &blobs)?;
        hold("before-kexec", &sig)?;
        sig.check()?;
        Ok(m)
    };
    // libvirt's domains are saved (through libvirt) side by side with the
    // VMs liveup launched
    let (result, lv_failed) = std::thread::scope(|s| {
        let lv = s.spawn(|| libvirt_save(libvirt, hz, t_blackout));
        let r = own(&mut b);
        let lv = lv
            .join()
            .unwrap_or_else(|_| Some(anyhow::anyhow!("the libvirt save thread panicked")));
        (r, lv)
    });
    let result = match (result, lv_failed) {
        (Ok(m), None) => Ok(m),
        (Ok(_), Some(e)) => Err(e),
        (Err(e), _) => Err(e),
    };
    let manifest = match result {
        Ok(m) => m,
        Err(e) => return Err(undone(&mut b, e, !libvirt.is_empty())),
    };
    if !a.no_exec {
        crate::journal::log(
            crate::journal::NOTICE,
            &format!(
                "upgrade: {} VM(s) and {} libvirt domain(s) saved; kexec into {}",
                manifest.vms.len(),
                libvirt.len(),
                a.kernel.display()
            ),
        );
    }
    log::info!(
        "{} VM(s) saved in {:.1} ms, {} libvirt domain(s) in {:.1} ms; kexec",
        manifest.vms.len(),
        manifest.t_saved.wrapping_sub(manifest.t_blackout) as f64 * 1e3 / hz,
        libvirt.len(),
        tsc::rdtsc().wrapping_sub(manifest.t_blackout) as f64 * 1e3 / hz
    );
    if a.no_exec {
        // the rehearsal ends here: everything undone, as after a failure
        let mut left = b.rollback();
        if !libvirt.is_empty() {
            left.extend(libvirt_resume());
        }
        kexec_unload();
        if !left.is_empty() {
            let e = anyhow::anyhow!(
                "rehearsal (--no-exec) not fully undone: {}",
                left.join("; ")
            );
            return Err(UpgradeError::new(Outcome::Incomplete, &e).into());
        }
        return Ok(());
    }
    let e = if let Err(e) = sig.check().and_then(|()| fault("kexec")) {
        // as if reboot(2) had returned
        e
    } else {
        // SAFETY: sync and reboot(2) with LINUX_REBOOT_CMD_KEXEC; a loaded image exists.
        unsafe {
            libc::sync();
            libc::reboot(libc::LINUX_REBOOT_CMD_KEXEC);
        }
        anyhow::Error::from(std::io::Error::last_os_error())
    };
    // reboot(2) returned: no kexec happened, and the VMs must not stay
    // stopped
    Err(undone(
        &mut b,
        e.context("kexec failed"),
        !libvirt.is_empty(),
    ))
}

/// libvirt's running domains, each checked keepable (none where virsh is
/// not installed or libvirt does not answer: a QEMU of libvirt's then
/// counts as a KVM user liveup does not manage, and is refused as such).
/// LIVEUP_NO_LIBVIRT=1: never ask libvirt.
fn libvirt_domains(kram: &Kram) -> Result<Vec<crate::libvirt::keep::Keepable>> {
    use crate::libvirt::{
        keep,
        virsh::{Libvirt, Virsh},
    };
    if std::env::var_os("LIVEUP_NO_LIBVIRT").is_some() || !Virsh::installed() {
        return Ok(Vec::new());
    }
    let v = Virsh::default();
    if let Err(e) = v.running() {
        log::info!("libvirt does not answer ({e}): no libvirt domains");
        return Ok(Vec::new());
    }
    keep::preflight(&v, &kram.areas()?, &keep::proc_maps)
}

/// libvirt's domains saved side by side; the first failure (every domain
/// is then brought back by the rollback).
fn libvirt_save(
    doms: &[crate::libvirt::keep::Keepable],
    hz: f64,
    t0: u64,
) -> Option<anyhow::Error> {
    use crate::libvirt::{keep, virsh::Virsh};
    if doms.is_empty() {
        return None;
    }
    let r = keep::save_all(&Virsh::default(), &keep::Markers::system(), doms, hz, t0);
    for (d, r) in &r {
        if r.is_ok() {
            log::debug!("libvirt domain {} saved", d.name);
        }
    }
    r.into_iter().find_map(|(_, r)| r.err())
}

/// After a failed or rehearsed upgrade: libvirt restores the domains
/// liveup saved, in this kernel; what could not be.
fn libvirt_resume() -> Vec<String> {
    use crate::libvirt::{keep, virsh::Virsh};
    match keep::resume_all(&Virsh::default(), &keep::Markers::system()) {
        Ok(done) => done
            .into_iter()
            .filter_map(|(_, r)| r.err().map(|e| format!("{e:#}")))
            .collect(),
        Err(e) => vec![format!("libvirt domains not restored: {e:#}")],
    }
}

/// After a failed step of the blackout (or the kexec): undo everything,
/// unload the kexec image, and say what state that left.
fn undone<M: Monitor, H: Host>(
    b: &mut Blackout<'_, M, H>,
    e: anyhow::Error,
    libvirt: bool,
) -> anyhow::Error {
    let mut left = b.rollback();
    if libvirt {
        left.extend(libvirt_resume());
    }
    kexec_unload();
    let (outcome, e) = if left.is_empty() {
        (
            Outcome::RolledBack,
            e.context("upgrade aborted before kexec; the VMs were resumed where they were"),
        )
    } else {
        (
            Outcome::Incomplete,
            e.context(format!(
                "upgrade aborted before kexec, and not all was undone: {}",
                left.join("; ")
            )),
        )
    };
    UpgradeError::new(outcome, &e).into()
}

/// The blackout's host side in a real upgrade: KRAM, the kept device,
/// the VMs' state files and guest agents.
struct LiveHost<'a> {
    kram: &'a Kram,
    keep: Option<&'a crate::keep::KeptDevice>,
}

impl Host for LiveHost<'_> {
    fn clear_state(&mut self, vm: &VmConfig) {
        let _ = fs::remove_file(vm.host_path(&vm.state_path()));
    }
    fn read_state(&mut self, vm: &VmConfig) -> Result<Vec<u8>> {
        let p = vm.host_path(&vm.state_path());
        fs::read(&p).with_context(|| format!("VM {}: saved state {}", vm.name, p.display()))
    }
    fn keeps(&self) -> bool {
        self.keep.is_some()
    }
    fn freeze(&mut self) -> Result<()> {
        self.keep.map_or(Ok(()), |k| k.freeze())
    }
    fn thaw(&mut self) -> Result<()> {
        self.keep.map_or(Ok(()), |k| k.thaw())
    }
    fn store(&mut self, m: &Manifest, blobs: &[Vec<u8>]) -> Result<()> {
        store(self.kram, m, blobs)
    }
    fn invalidate(&mut self) -> Result<()> {
        invalidate_state(self.kram)
    }
    fn set_clocks(&mut self, vms: &[&VmConfig]) {
        set_clocks(vms);
    }
}

/// After VMs ran again in this kernel (an aborted upgrade, --no-exec): set
/// their wall clocks through their guest agents, all side by side (an agent
/// that does not answer is tried for up to `qga::PATIENCE`), saying so on
/// stderr in the VMs' order.
fn set_clocks(vms: &[&VmConfig]) {
    for (name, c) in restore::guest_clocks(vms) {
        log::info!("guest clock {name}: {c}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_injection_names_the_step() {
        std::env::set_var("LIVEUP_FAIL", "after-save");
        assert!(fault("preflight").is_ok());
        let e = fault("after-save").unwrap_err().to_string();
        assert!(e.contains("after-save"), "{e}");
        std::env::remove_var("LIVEUP_FAIL");
    }
}
