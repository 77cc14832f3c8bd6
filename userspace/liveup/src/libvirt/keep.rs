//! libvirt domains kept through a host kernel upgrade: which can be
//! ([`preflight`]), saving them through libvirt ([`save_all`]), and
//! having libvirt bring them back, in the new kernel or in this one after
//! an upgrade that did not happen ([`resume_all`]).
//!
//! A domain is kept when its RAM is a KRAM area (the hook puts the
//! area's node where libvirt's RAM file would be: hook.rs). Its QEMU saves
//! device state only (x-ignore-shared, set through libvirt's monitor) into
//! libvirt's managed save image, whose XML liveup amends with the `-global`
//! the restoring QEMU needs (domain.rs); libvirt then shows the domain as
//! saved, and `virsh start` (liveup's, or the operator's) restores it. A
//! record per domain ([`Markers`], on disk: it must outlive the kexec and
//! is tiny) says the managed save has no RAM in it: the hook refuses to
//! restore it onto memory that is not the kept area.

use super::domain::{self, with_keep_global};
use super::virsh::Libvirt;
use crate::kram::{area_node, Area, DEFAULT_DEVICE, PAGES_DEVICE, PAGE_SIZE};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::PathBuf;

/// Where the records live.
pub const MARKER_DIR: &str = "/var/lib/liveup/libvirt";

/// QMP, through `virsh qemu-monitor-command`: the capability on (before
/// the save) and off (once restored: with it on, a later `virsh save` or
/// `virsh migrate` would leave the RAM out).
pub const CAP_ON: &str = r#"{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"x-ignore-shared","state":true}]}}"#;
pub const CAP_OFF: &str = r#"{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"x-ignore-shared","state":false}]}}"#;

/// One domain liveup saved (or is saving) with its RAM left in KRAM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    pub name: String,
    pub uuid: String,
    pub area: String,
    /// The TSC rate and the TSC when liveup began to save it (the TSC
    /// counts on through a kexec: the downtime's start).
    pub tsc_hz: f64,
    pub t_stop: u64,
    /// The managed save completed and its XML carries the `-global`.
    pub saved: bool,
    /// The TSC when it was (0: not yet).
    #[serde(default)]
    pub t_saved: u64,
}

/// The records, one file per domain UUID.
pub struct Markers {
    pub dir: PathBuf,
}

impl Markers {
    pub fn system() -> Self {
        Markers {
            dir: PathBuf::from(MARKER_DIR),
        }
    }
    fn path(&self, uuid: &str) -> Option<PathBuf> {
        // a UUID is hex and dashes; anything else never names a file here
        (!uuid.is_empty() && uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
            .then(|| self.dir.join(format!("{uuid}.json")))
    }
    pub fn get(&self, uuid: &str) -> Option<Marker> {
        let p = self.path(uuid)?;
        serde_json::from_slice(&fs::read(p).ok()?).ok()
    }
    pub fn put(&self, m: &Marker) -> Result<()> {
        let p = self
            .path(&m.uuid)
            .with_context(|| format!("domain {}: UUID {:?} not understood", m.name, m.uuid))?;
        fs::create_dir_all(&self.dir)?;
        let tmp = p.with_extension("tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(m)?)?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, &p)?;
        Ok(())
    }
    pub fn remove(&self, uuid: &str) {
        if let Some(p) = self.path(uuid) {
            let _ = fs::remove_file(p);
        }
    }
    /// Every record, by domain name.
    pub fn all(&self) -> Vec<Marker> {
        let mut v: Vec<Marker> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| serde_json::from_slice(&fs::read(e.path()).ok()?).ok())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

/// A running domain preflight found keepable.
#[derive(Debug, Clone, PartialEq)]
pub struct Keepable {
    pub name: String,
    pub uuid: String,
    pub area: String,
    pub qemu_pid: Option<i32>,
}

/// Whether domain `name` can be kept, or why not (one line).
pub fn check_domain(
    lv: &dyn Libvirt,
    areas: &[Area],
    maps: &dyn Fn(i32) -> Option<String>,
    name: &str,
) -> Result<Keepable, String> {
    let xml = lv.dumpxml(name).map_err(|e| e.to_string())?;
    let d = domain::parse(&xml).map_err(|e| e.to_string())?;
    if !lv.persistent(name).map_err(|e| e.to_string())? {
        return Err("transient (liveup keeps a domain through libvirt's managed save, which needs it defined: virsh define)".into());
    }
    if !d.ram_in_shared_file {
        return Err("its RAM is not in a shared file (<memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>)".into());
    }
    if d.numa {
        return Err("guest NUMA cells (<cpu><numa>): one RAM file per cell, which the hook does not place yet".into());
    }
    if d.hostdevs > 0 {
        return Err(format!(
            "{} <hostdev> device(s): passthrough under libvirt is not kept yet",
            d.hostdevs
        ));
    }
    let want = d.area_name();
    let Some(area) = areas.iter().find(|a| a.name == want) else {
        return Err(format!(
            "no KRAM area {want} holds its RAM (is liveup's hook installed, and was the domain started after it?)"
        ));
    };
    let have = area.npages.saturating_mul(PAGE_SIZE);
    if have < d.memory_bytes {
        return Err(format!(
            "KRAM area {want} has {have} bytes, the domain {}",
            d.memory_bytes
        ));
    }
    let pid = lv.qemu_pid(name);
    let mapped = pid.and_then(maps).is_some_and(|m| {
        [DEFAULT_DEVICE, PAGES_DEVICE].iter().any(|dev| {
            let node = area_node(dev, area.id);
            m.lines().any(|l| l.ends_with(&format!(" {node}")))
        })
    });
    if !mapped {
        return Err(format!(
            "its QEMU ({}) does not map KRAM area {want} (/dev/kram-area/{}): its RAM is elsewhere",
            pid.map_or("pid unknown".into(), |p| format!("pid {p}")),
            area.id
        ));
    }
    Ok(Keepable {
        name: d.name,
        uuid: d.uuid,
        area: want,
        qemu_pid: pid,
    })
}

/// Every running domain checked; refused (every reason, one line each)
/// if any cannot be kept: the kexec would end it.
pub fn preflight(
    lv: &dyn Libvirt,
    areas: &[Area],
    maps: &dyn Fn(i32) -> Option<String>,
) -> Result<Vec<Keepable>> {
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for name in lv.running()? {
        match check_domain(lv, areas, maps, &name) {
            Ok(k) => ok.push(k),
            Err(why) => refused.push(format!("libvirt domain {name}: {why}")),
        }
    }
    if !refused.is_empty() {
        bail!(
            "{} libvirt domain(s) cannot be kept through the kexec (shut them down or migrate them first):\n  {}",
            refused.len(),
            refused.join("\n  ")
        );
    }
    Ok(ok)
}

/// /proc/PID/maps.
pub fn proc_maps(pid: i32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/maps")).ok()
}

/// One domain saved: the record first (the hook must not free its area
/// when libvirt releases it), x-ignore-shared, the managed save, its XML
/// amended. A failure before the save leaves it running as it was.
fn save_one(lv: &dyn Libvirt, markers: &Markers, k: &Keepable, tsc_hz: f64, t0: u64) -> Result<()> {
    let mut m = Marker {
        name: k.name.clone(),
        uuid: k.uuid.clone(),
        area: k.area.clone(),
        tsc_hz,
        t_stop: t0,
        saved: false,
        t_saved: 0,
    };
    markers.put(&m)?;
    let saved = (|| -> Result<()> {
        lv.monitor(&k.name, CAP_ON)?;
        lv.managedsave(&k.name)?;
        Ok(())
    })();
    if let Err(e) = saved {
        let _ = lv.monitor(&k.name, CAP_OFF);
        markers.remove(&k.uuid);
        return Err(e.context(format!(
            "libvirt domain {}: not saved (still running)",
            k.name
        )));
    }
    amend(lv, &k.name)
        .with_context(|| format!("libvirt domain {}: saved, its XML not amended", k.name))?;
    m.saved = true;
    m.t_saved = crate::upgrade::rdtsc();
    markers.put(&m)
}

/// The managed save image's XML with the `-global` (if not there yet).
fn amend(lv: &dyn Libvirt, name: &str) -> Result<()> {
    let xml = lv.managedsave_dumpxml(name)?;
    if !domain::parse(&xml)?.keep_global {
        lv.managedsave_define(name, &with_keep_global(&xml)?)?;
    }
    Ok(())
}

/// Every domain saved side by side; each back with its result.
pub fn save_all<'k>(
    lv: &dyn Libvirt,
    markers: &Markers,
    doms: &'k [Keepable],
    tsc_hz: f64,
    t0: u64,
) -> Vec<(&'k Keepable, Result<()>)> {
    crate::parallel::side_by_side(
        doms.iter().collect(),
        |k| save_one(lv, markers, k, tsc_hz, t0),
        |k| {
            Err(anyhow::anyhow!(
                "libvirt domain {}: the save thread panicked",
                k.name
            ))
        },
    )
}

/// One domain run again by libvirt from its managed save (amended first
/// if that did not happen), the capability off, its record gone. A domain
/// already running (its save never happened) only gets the latter two.
fn resume_one(lv: &dyn Libvirt, markers: &Markers, m: &Marker, running: &[String]) -> Result<()> {
    if !running.contains(&m.name) {
        amend(lv, &m.name)?;
        lv.start(&m.name)?;
    }
    let off = lv.monitor(&m.name, CAP_OFF);
    markers.remove(&m.uuid);
    off.map(drop).with_context(|| {
        format!(
            "libvirt domain {}: running, but x-ignore-shared is still on (a `virsh save` or `virsh migrate` of it would leave its RAM out: restart it)",
            m.name
        )
    })
}

/// Every recorded domain run again side by side; each back with its
/// result. `now`: the TSC, for each one's downtime.
pub fn resume_all(lv: &dyn Libvirt, markers: &Markers) -> Result<Vec<(Marker, Result<()>)>> {
    let running = lv.running()?;
    Ok(crate::parallel::side_by_side(
        markers.all(),
        |m| resume_one(lv, markers, m, &running),
        |m| {
            Err(anyhow::anyhow!(
                "libvirt domain {}: the restore thread panicked",
                m.name
            ))
        },
    ))
}

#[cfg(test)]
mod tests;
