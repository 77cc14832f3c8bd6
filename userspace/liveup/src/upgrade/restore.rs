//! `liveup restore`: in the new kernel, the VMs `upgrade` saved run again.
//!
//! Named steps, each taking the VMs still in the race and dropping those
//! it fails for (a failed VM's QEMU, if it started, is quit so that
//! `restore --retry` can start it again; the others go on):
//! [`open_state`] (KRAM and the manifest), [`stage_states`] (each saved
//! state checked and written where its QEMU reads it), [`start_qemus`]
//! (all at once: QEMU start-up dominates restore), [`Race::load`],
//! [`Race::resume`]; then the record of who runs ([`mark`]), the downtime
//! breakdown ([`breakdown`]) and the guests' wall clocks. The race (the
//! QEMUs and their steps) is in restore/race.rs.
//!
//! SIGINT, SIGTERM, SIGHUP and SIGQUIT are held from the start to the
//! end: killed half-way, liveup would leave QEMUs waiting for a state
//! that never comes. One that came is reported once every VM has run
//! again or failed.
//!
//! [`start_qemus`]: race::start_qemus
//! [`Race::load`]: race::Race::load
//! [`Race::resume`]: race::Race::resume

mod race;

use super::report::{init_to_mark_ms, kexec_rows, mark_kmsg, Phase, Report};
use super::state::{self, Manifest};
use super::tsc::rdtsc;
use super::vm::{run_dir, vm_status, VmConfig};
use super::{fault, hold, signals, Outcome, UpgradeError};
use crate::kram::Kram;
use anyhow::{ensure, Result};
use memmap2::MmapMut;
use race::start_qemus;
use std::fs;
use std::path::Path;

/// What `liveup restore` is told: the kram module to load first (and its
/// parameters), and whether this finishes a restore that failed.
pub struct RestoreArgs<'a> {
    pub kram_module: Option<&'a Path>,
    /// Parameters for kram.ko; `None`: the region on /proc/cmdline.
    pub kram_params: Option<&'a str>,
    pub retry: bool,
}

/// `liveup restore`: relaunch the VMs `upgrade` saved.
pub fn restore(device: &str, a: &RestoreArgs) -> Result<Option<Report>> {
    let sig = signals::Held::new()?;
    let t = &mut Ticks {
        start: rdtsc(),
        ..Ticks::default()
    };
    let marked = mark_kmsg();
    if let Some(m) = a.kram_module {
        crate::kram::load_module(m, a.kram_params)?;
    }
    t.kram = rdtsc();
    let kram = Kram::open(device)?;
    let Some((mut area, man)) = open_state(&kram)? else {
        return Ok(None);
    };
    let todo = stage_states(&area, &man, a.retry)?;
    fault("restore-qemu")?;
    t.checked = rdtsc();
    let mut race = start_qemus(&todo, &man)?;
    t.started = rdtsc();
    hold("restore-load", &sig)?;
    race.load();
    t.loaded = rdtsc();
    race.resume();
    t.resumed = rdtsc();
    log::debug!(
        "restore steps (ms): module load + adoption {:.1}, state checks {:.1}, QEMU start {:.1}, state load {:.1}, resume {:.1}",
        man.ms(t.kram - t.start),
        man.ms(t.checked - t.kram),
        man.ms(t.started - t.checked),
        man.ms(t.loaded - t.started),
        man.ms(t.resumed - t.loaded)
    );
    let (restored, failed) = race.finish();
    mark(&mut area, &restored, failed.is_empty())?;
    let report = Report {
        vms: restored.iter().map(|v| v.name.clone()).collect(),
        phases: breakdown(&man, t, marked.then(init_to_mark_ms).flatten()),
        downtime_ms: man.ms(t.resumed.saturating_sub(man.t_blackout)),
        guest_clocks: guest_clocks(&restored),
    };
    fs::write(
        run_dir().join("last-upgrade.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    if let Some(s) = sig.taken() {
        log::warn!(
            "{s} came during the restore; it was held until every VM had run again or failed"
        );
    }
    outcome(report, &failed, todo.len())
}

/// The TSC at the end of each step: the clock of the downtime breakdown.
#[derive(Default)]
struct Ticks {
    start: u64,
    kram: u64,
    checked: u64,
    started: u64,
    loaded: u64,
    resumed: u64,
}

/// The state area mapped and its manifest; None when there is nothing to
/// restore: no state, or one restored once, completely (every VM has run
/// since, so that state is older than its RAM and must never be loaded
/// again, not even by --retry, which only finishes a restore that failed).
fn open_state(kram: &Kram) -> Result<Option<(MmapMut, Manifest)>> {
    let st = kram.status()?;
    // KRAM without metadata it accepts, in a boot no `liveup upgrade`
    // asked for (the restore unit on an ordinary boot, say the host's
    // first): there is nothing it could hold for us.
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if refused_is_nothing(st.state, &cmdline) {
        log::info!(
            "KRAM holds no metadata it accepts (errno {}) and this boot did not come from `liveup upgrade` ({}= not on the command line): nothing to restore; `liveup kram format` makes KRAM ready for VMs",
            st.error,
            super::kexec::UPGRADE_MARK
        );
        return Ok(None);
    }
    ensure!(
        st.state == 0,
        "KRAM metadata refused (errno {}): the saved VMs are still in the region; fix it and run `liveup restore --retry`",
        st.error
    );
    let Some(m) = state::map_state_area(kram)? else {
        return Ok(None);
    };
    Ok(state::load(&m)?.map(|man| (m, man)))
}

/// Whether KRAM metadata in `state` (0: accepted) means "nothing to
/// restore" rather than a failure: refused, in a boot whose command line
/// `cmdline` no `liveup upgrade` wrote.
fn refused_is_nothing(state: u32, cmdline: &str) -> bool {
    state != 0 && !super::kexec::booted_by_upgrade(cmdline)
}

/// Every saved state checked and written where its QEMU reads it; the
/// VMs to restore (not those an earlier, partial restore ran again: they
/// have run since, and their state is older than their RAM).
fn stage_states<'m>(area: &[u8], man: &'m Manifest, retry: bool) -> Result<Vec<&'m VmConfig>> {
    let mut todo = Vec::new();
    for v in &man.vms {
        let vm = &v.config;
        let blob = state::blob(area, v)?;
        if v.restored || (retry && vm_status(vm) == "running") {
            continue;
        }
        fs::create_dir_all(vm.host_path(Path::new("/run/liveup")))?;
        fs::write(vm.host_path(&vm.state_path()), blob)?;
        todo.push(vm);
    }
    Ok(todo)
}

/// Recorded in the state area: all restored (the state is never loaded
/// again), or which VMs run now (never restored again; the others are
/// left for --retry).
fn mark(area: &mut [u8], restored: &[&VmConfig], all: bool) -> Result<()> {
    if all {
        state::set_restored(area);
        return Ok(());
    }
    let names: Vec<String> = restored.iter().map(|v| v.name.clone()).collect();
    state::mark_vms_restored(area, &names)
}

/// The downtime breakdown: the upgrade's phases from the manifest, the
/// kexec (split where the kernel started init, when the kernel log told),
/// then this restore's steps.
fn breakdown(man: &Manifest, t: &Ticks, init_ms: Option<f64>) -> Vec<Phase> {
    // The saves overlap (all VMs stop at once): the phase ends with the last.
    let save: u64 = man.vms.iter().map(|v| v.save_ticks).max().unwrap_or(0);
    let row = Phase::new;
    let mut phases = vec![row("stop + save device state", man.ms(save))];
    if man.freeze_ticks != 0 {
        phases.push(row("freeze kept device's IOMMU", man.ms(man.freeze_ticks)));
    }
    phases.push(row(
        "store state in KRAM",
        man.ms(man
            .t_saved
            .saturating_sub(man.t_blackout)
            .saturating_sub(save)
            .saturating_sub(man.freeze_ticks)),
    ));
    phases.extend(kexec_rows(
        man.ms(t.start.saturating_sub(man.t_kexec)),
        init_ms,
    ));
    phases.extend([
        row("module load + KRAM adoption", man.ms(t.kram - t.start)),
        row("state checks", man.ms(t.checked - t.kram)),
        row("QEMU start", man.ms(t.started - t.checked)),
        row("state load", man.ms(t.loaded - t.started)),
        row("resume", man.ms(t.resumed - t.loaded)),
    ]);
    phases
}

/// The guests run again: their wall clocks, behind by the pause (kvmclock
/// went on from where it stopped), set through their agents, side by
/// side; outside the downtime, each bounded by qga::PATIENCE (an agent
/// that does not answer is tried again until then). Also for the VMs an
/// aborted upgrade resumed.
pub(super) fn guest_clocks(restored: &[&VmConfig]) -> Vec<(String, crate::qga::GuestClock)> {
    crate::parallel::side_by_side(
        restored.to_vec(),
        |vm| crate::qga::fix_clock(&vm.root, &vm.argv),
        |_| crate::qga::GuestClock::Failed {
            why: "the thread setting it panicked".into(),
        },
    )
    .into_iter()
    .map(|(vm, c)| (vm.name.clone(), c))
    .collect()
}

/// The report, or the error naming the VMs not restored: partly restored
/// (exit 6) when some run, an ordinary failure when none came back (as
/// before QEMU started).
fn outcome(
    report: Report,
    failed: &[(&VmConfig, anyhow::Error)],
    tried: usize,
) -> Result<Option<Report>> {
    if failed.is_empty() {
        return Ok(Some(report));
    }
    let why = failed
        .iter()
        .map(|(vm, e)| format!("VM {}: {e:#}", vm.name))
        .collect::<Vec<_>>()
        .join("; ");
    let e = anyhow::anyhow!(
        "restored {} of {tried} VM(s) ({}); not restored: {why}. Their RAM and saved state stay in KRAM: fix the cause and run `liveup restore --retry`",
        report.vms.len(),
        report.vms.join(", ")
    );
    if report.vms.is_empty() {
        return Err(e);
    }
    Err(UpgradeError::new(Outcome::PartlyRestored, &e).into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn refused_kram_after_an_upgrade_is_a_failure() {
        use super::refused_is_nothing;
        // an ordinary boot (the host's first, KRAM never formatted)
        assert!(refused_is_nothing(
            1,
            "console=ttyS0 memmap=256M$0x100000000"
        ));
        // after an upgrade the same refusal must fail the restore
        assert!(!refused_is_nothing(1, "console=ttyS0 liveup.upgrade=1"));
        // accepted metadata is read either way
        assert!(!refused_is_nothing(0, "console=ttyS0"));
        assert!(!refused_is_nothing(0, "liveup.upgrade=1"));
    }

    use super::super::state::SavedVm;
    use super::*;

    fn vm(name: &str) -> VmConfig {
        VmConfig {
            name: name.into(),
            root: "/".into(),
            argv: vec![],
            qmp: format!("/run/liveup/{name}.qmp").into(),
            area: format!("vm-{name}"),
        }
    }

    fn manifest(vms: &[&str]) -> Manifest {
        Manifest {
            tsc_hz: 1e9,
            t_blackout: 1_000_000_000,
            t_saved: 1_400_000_000,
            t_kexec: 1_400_000_000, // blackout.rs: the same moment as t_saved
            vms: vms
                .iter()
                .map(|n| SavedVm {
                    config: vm(n),
                    state_offset: 0,
                    state_len: 0,
                    state_crc: 0,
                    save_ticks: 300_000_000,
                    restored: false,
                })
                .collect(),
            preload: vec![],
            freeze_ticks: 0,
        }
    }

    #[test]
    fn the_breakdown_adds_up_to_the_downtime() {
        let man = manifest(&["a", "b"]);
        let t = Ticks {
            start: 5_500_000_000,
            kram: 5_600_000_000,
            checked: 5_610_000_000,
            started: 6_610_000_000,
            loaded: 6_710_000_000,
            resumed: 6_720_000_000,
        };
        let p = breakdown(&man, &t, None);
        let names: Vec<&str> = p.iter().map(|p| p.phase.as_str()).collect();
        assert_eq!(names.first(), Some(&"stop + save device state"));
        assert_eq!(names.last(), Some(&"resume"));
        assert!(names.contains(&"QEMU start"), "{names:?}");
        let sum: f64 = p.iter().map(|p| p.ms).sum();
        let downtime = man.ms(t.resumed - man.t_blackout);
        assert!((sum - downtime).abs() < 1e-6, "{sum} vs {downtime}");
    }

    #[test]
    fn a_hostile_manifest_gives_zero_rows_not_a_panic() {
        // stored before the blackout began, saves longer than the store
        let mut man = manifest(&["a"]);
        man.t_saved = 1;
        man.t_kexec = u64::MAX;
        man.freeze_ticks = u64::MAX;
        let t = Ticks::default();
        let p = breakdown(&man, &t, None);
        let store = p.iter().find(|p| p.phase == "store state in KRAM").unwrap();
        assert_eq!(store.ms, 0.0);
    }

    fn report(vms: &[&str]) -> Report {
        Report {
            vms: vms.iter().map(|v| v.to_string()).collect(),
            phases: vec![],
            downtime_ms: 1.0,
            guest_clocks: vec![],
        }
    }

    #[test]
    fn the_outcome_names_the_vms_not_restored() {
        let (a, b) = (vm("a"), vm("b"));
        assert!(outcome(report(&["a", "b"]), &[], 2).unwrap().is_some());
        // some back: partly restored, exit 6, both named
        let e = outcome(report(&["a"]), &[(&b, anyhow::anyhow!("boom"))], 2).unwrap_err();
        let u = e.downcast_ref::<UpgradeError>().expect("an UpgradeError");
        assert_eq!(u.exit_code(), 6);
        let s = format!("{e:#}");
        assert!(
            s.contains("restored 1 of 2 VM(s) (a)") && s.contains("VM b: boom"),
            "{s}"
        );
        assert!(s.contains("restore --retry"), "{s}");
        // none back: an ordinary failure
        let failed = [(&a, anyhow::anyhow!("x")), (&b, anyhow::anyhow!("y"))];
        let e = outcome(report(&[]), &failed, 2).unwrap_err();
        assert!(e.downcast_ref::<UpgradeError>().is_none(), "{e:#}");
    }
}
