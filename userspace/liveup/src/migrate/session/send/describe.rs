//! For a destination service (`migrate listen`): the VM's description,
//! sent in place of a destination QEMU started by hand.

use super::SendOptions;
use crate::migrate::control::{unexpected, Control, Ctl, CtlError};
use crate::migrate::session::MigrateError;
use crate::migrate::spec::VmSpec;
use crate::qmp::{Qmp, RunState};

/// For a destination service (`migrate listen`): describe the VM from its
/// QEMU's command line (/proc/PID/cmdline of the QMP socket's peer) and
/// wait until the destination has started its QEMU. A VM that cannot be
/// described, or that the destination refuses, stays here untouched.
pub(super) fn describe(
    c: &mut Control,
    q: &mut Qmp,
    qemu_pid: Option<i32>,
    runstate: &RunState,
    opts: &SendOptions,
    say: &mut dyn FnMut(&str),
) -> Result<(), MigrateError> {
    let unsupported = |why: String| MigrateError::UnsupportedQemu {
        side: "source",
        why: format!("the destination starts the VM from its description: {why}"),
    };
    let pid = qemu_pid.ok_or_else(|| unsupported("the source QEMU's process is unknown".into()))?;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    // NUL-terminated arguments: only the last NUL ends the list (an
    // empty argument, `-append ""`, stays one)
    let argv: Vec<String> = raw
        .strip_suffix(&[0])
        .unwrap_or(&raw)
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut spec = VmSpec::from_argv(&argv, &opts.pools).map_err(|e| unsupported(e.to_string()))?;
    if let Some(n) = &opts.rename {
        spec.name = n.clone();
    }
    // 0 (TCG, or a QEMU that does not say): the destination's own
    spec.tsc_khz = crate::upgrade::tsc::vm_tsc_khz(q).ok().filter(|k| *k != 0);
    say(&format!(
        "the destination starts VM {}: {} MiB, {} vCPUs, {} disks, {} NICs, TSC {}",
        spec.name,
        spec.memory_mib,
        spec.vcpus,
        spec.disks.len(),
        spec.nics.len(),
        spec.tsc_khz
            .map_or("the destination's".to_string(), |k| format!("{k} kHz"))
    ));
    c.send(&Ctl::Config { spec })?;
    match c.recv() {
        Ok(Ctl::Launched { name }) => {
            say(&format!("destination QEMU for {name} started"));
            Ok(())
        }
        Ok(got) => Err(unexpected("launched", got).into()),
        Err(CtlError::Peer(m)) => Err(MigrateError::Failed {
            reason: format!("the destination did not start the VM: {m}"),
            source_state: format!("{runstate}, untouched"),
        }),
        Err(e) => Err(e.into()),
    }
}
