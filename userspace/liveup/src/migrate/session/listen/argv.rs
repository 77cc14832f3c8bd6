//! The arriving VM's QEMU command lines, built from its checked
//! description (spec.rs builds the argv and its sandbox): by path, what a
//! restore relaunches, and with the checked files' descriptors, what starts
//! now; with `kram`, the RAM in a KRAM area of its own.

use super::started::Started;
use super::ListenOptions;
use crate::kram::{area_node, Kram, DEFAULT_DEVICE, PAGE_SIZE};
use crate::migrate::spec::{Launch, VmSpec};
use crate::upgrade::vm::{managed_vms, ram_device};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The command line with the descriptors `fds` (what starts now); the one
/// by path goes into `s` (what a restore relaunches, recorded). With
/// `kram` the RAM is a new KRAM area, which `s` then owns.
pub(super) fn command_lines(
    spec: &VmSpec,
    opts: &ListenOptions,
    qmp: &Path,
    fds: &BTreeMap<PathBuf, i32>,
    s: &mut Started,
) -> Result<Vec<String>, String> {
    let l = Launch {
        qemu: opts.qemu.clone(),
        qmp: qmp.to_path_buf(),
        log_dir: opts.run_dir.clone(),
        ram_object: None,
        fds: Default::default(),
    };
    // by path: what a restore relaunches (record); with the descriptors:
    // what starts now
    let by_path = |l: &Launch| spec.to_argv(&opts.policy, l).map_err(|e| e.to_string());
    let with_fds = |l: &Launch| {
        by_path(&Launch {
            fds: fds.clone(),
            ..l.clone()
        })
    };
    let mut argv = by_path(&l)?;
    let mut argv_now = with_fds(&l)?;
    if opts.kram {
        let l = Launch {
            ram_object: Some(kram_ram(spec, &argv, s)?),
            ..l
        };
        argv = by_path(&l)?;
        argv_now = with_fds(&l)?;
    }
    s.vm.argv = argv;
    Ok(argv_now)
}

/// The VM's RAM as a KRAM area of its own, `vm-NAME` (refused where such a
/// VM or area is here already), which `s` then owns: the `-object` that
/// maps it, on the node `argv`'s RAM device names.
fn kram_ram(spec: &VmSpec, argv: &[String], s: &mut Started) -> Result<String, String> {
    if !spec.ram_backend {
        return Err("this host keeps VMs' RAM in KRAM, and the VM's RAM is not memory backend ram0 on the source (start it with `liveup vm start`)".into());
    }
    if managed_vms()
        .map_err(|e| format!("{e:#}"))?
        .iter()
        .any(|v| v.name == spec.name)
    {
        return Err(format!("a VM named {} is managed here already", spec.name));
    }
    let k = Kram::open(DEFAULT_DEVICE).map_err(|e| e.to_string())?;
    let name = format!("vm-{}", spec.name);
    if k.lookup(&name).is_ok() {
        return Err(format!("KRAM area {name} exists here already"));
    }
    let pages = spec
        .memory_mib
        .checked_mul(256)
        .ok_or("memory_mib too large")?;
    let a = k.create(&name, pages).map_err(|e| e.to_string())?;
    s.area = Some(name.clone());
    s.vm.area = name;
    Ok(format!(
        "memory-backend-file,id=ram0,size={},mem-path={},offset=0,share=on,align=2M",
        pages * PAGE_SIZE,
        area_node(ram_device(argv), a.id)
    ))
}
