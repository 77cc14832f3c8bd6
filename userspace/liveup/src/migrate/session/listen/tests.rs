//! Tests of the destination service: admission, start-up clean-up, the
//! files' names in QEMU's messages and the recorded command line.

use super::admit::{check_total, Arrived};
use super::cleanup::{orphan_areas, stale};
use super::files::fd_names;
use super::started::{recorded_argv, Started};
use crate::qmp::RunState;
use crate::upgrade::vm::VmConfig;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
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
        (PathBuf::from("/srv/boot/bzImage"), 12),
        (PathBuf::from("/srv/boot/initrd"), 1),
    ]);
    let mut m = "qemu: could not load kernel '/proc/self/fd/12'; /proc/self/fd/1: no".to_string();
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
