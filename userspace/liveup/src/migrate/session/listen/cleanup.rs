//! Start-up clean-up: what an earlier run of this service, killed
//! mid-session, left behind (a QEMU still waiting for its state, a KRAM
//! area no managed VM owns).

use super::ListenOptions;
use crate::kram::{Kram, DEFAULT_DEVICE};
use crate::qmp::{Monitor, Qmp, RunState};
use crate::upgrade::vm::{managed_vms, under_root};
use std::fs;
use std::time::Duration;

/// What an earlier run of this service, killed mid-session, left: a QEMU
/// still waiting for a migration (its state never came, so the VM is
/// whole on its source) is quit; with `kram`, a `vm-*` KRAM area of a VM
/// this service started that no managed VM owns and nothing maps is
/// freed. A QEMU that received its state (paused: the commit may be in
/// doubt, it may be the VM's only copy) or runs is left alone, and so is
/// a mapped area. Each act is one
/// line; none stops the service from starting.
pub(super) fn clean_up_after_earlier_run(opts: &ListenOptions, say: &mut dyn FnMut(&str)) {
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
pub(super) fn stale(st: &RunState, managed: bool) -> bool {
    !managed && (*st == RunState::InMigrate || *st == RunState::Other("prelaunch".into()))
}

/// The `vm-*` areas no managed VM owns, of VMs this service started.
pub(super) fn orphan_areas(
    areas: &[String],
    managed: &[String],
    ours: impl Fn(&str) -> bool,
) -> Vec<String> {
    areas
        .iter()
        .filter(|a| {
            a.strip_prefix("vm-")
                .is_some_and(|n| !managed.iter().any(|m| m == n) && ours(n))
        })
        .cloned()
        .collect()
}
