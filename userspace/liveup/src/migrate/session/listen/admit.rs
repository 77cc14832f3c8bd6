//! Admission: the VMs this service started whose QEMU still runs, and the
//! cap on the RAM of all of them (`max_total_memory_mib`).

use super::ListenOptions;
use crate::kram::{Kram, DEFAULT_DEVICE};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The VMs this service started whose QEMU still runs (arriving or
/// arrived), with their RAM (MiB): a session clears its VM's flag when the
/// QEMU goes with a failure, a kept QEMU's reaper thread when it exits.
#[derive(Default)]
pub(super) struct Arrived(pub(super) Vec<(u64, Arc<AtomicBool>)>);

impl Arrived {
    pub(super) fn running_mib(&self) -> u64 {
        self.0
            .iter()
            .filter(|(_, up)| up.load(Ordering::Relaxed))
            .fold(0u64, |t, (m, _)| t.saturating_add(*m))
    }

    /// A new VM of `mib` MiB whose QEMU runs; its flag.
    pub(super) fn add(&mut self, mib: u64) -> Arc<AtomicBool> {
        self.0.retain(|(_, up)| up.load(Ordering::Relaxed));
        let up = Arc::new(AtomicBool::new(true));
        self.0.push((mib, up.clone()));
        up
    }
}

/// `Arrived` under its lock, whatever a panicked session left (the list
/// and the flags stay consistent: each push is one step).
pub(super) fn lock(a: &Mutex<Arrived>) -> std::sync::MutexGuard<'_, Arrived> {
    a.lock().unwrap_or_else(|e| e.into_inner())
}

/// The RAM, MiB, already committed to VMs here: with `kram`, every KRAM
/// area `vm-*` (each VM's RAM, however it came: it survives a restart of
/// this service and a hot-upgrade); otherwise the VMs this service
/// started that still run.
pub(super) fn committed_mib(opts: &ListenOptions, arrived: &Arrived) -> Result<u64, String> {
    if !opts.kram {
        return Ok(arrived.running_mib());
    }
    let k = Kram::open(DEFAULT_DEVICE).map_err(|e| e.to_string())?;
    let areas = k.areas().map_err(|e| e.to_string())?;
    Ok(areas
        .iter()
        .filter(|a| a.name.starts_with("vm-"))
        .fold(0u64, |t, a| t.saturating_add(a.npages / 256)))
}

/// The arriving VM's `vm_mib` on top of `committed` MiB, against the cap.
pub(super) fn check_total(committed: u64, vm_mib: u64, cap: Option<u64>) -> Result<(), String> {
    match cap {
        Some(cap) if committed.saturating_add(vm_mib) > cap => Err(format!(
            "this host takes at most {cap} MiB of migrated VMs' RAM in all (--max-total-memory-mib): {committed} MiB run here already, the VM has {vm_mib} MiB"
        )),
        _ => Ok(()),
    }
}
