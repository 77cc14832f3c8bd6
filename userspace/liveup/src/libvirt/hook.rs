//! libvirt's qemu hook (`/etc/libvirt/hooks/qemu.d/liveup` runs `liveup
//! libvirt hook NAME OP SUBOP EXTRA` with the domain XML on standard
//! input), what puts a domain's RAM in KRAM and keeps the `-global`
//! where it belongs:
//!
//! - `start begin` (libvirt made the domain's RAM directory; QEMU not
//!   started): for a domain with `<memoryBacking><source type='file'/>
//!   <access mode='shared'/>` (and no NUMA cells), KRAM area `lv-UUID` of
//!   the domain's memory, created if missing, and its node linked as the
//!   RAM file (`pc.ram`), so QEMU maps the area; the node is given to the
//!   user and group libvirt runs QEMU as (the XML's DAC label: Debian's
//!   `libvirt-qemu` unless qemu.conf says otherwise). A domain liveup saved
//!   with its RAM left in KRAM whose area this boot does not have (a cold
//!   reboot in between) is refused: restoring it would run the guest on
//!   zeroed memory.
//! - `restore begin` / `migrate begin` (XML in, XML out): liveup's
//!   `-global` taken out, unless this is liveup's own restore (its record
//!   exists). Left in, a later plain restore or an incoming migration
//!   would start QEMU with x-ignore-shared on and refuse the stream.
//! - `release end`: the area freed, unless liveup saved the domain.
//!
//! The hook runs while libvirt holds the domain: it must not call libvirt.

use super::domain::{self, without_keep_global};
use super::keep::Markers;
use crate::kram::{area_node, Kram, DEFAULT_DEVICE, PAGE_SIZE};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// qemu.conf's default memory_backing_dir.
pub const DEFAULT_RAM_DIR: &str = "/var/lib/libvirt/qemu/ram";
/// The name QEMU's RAM block has (and libvirt its file) without NUMA.
pub const RAM_FILE: &str = "pc.ram";

/// What the hook works with (the host's, or a test's).
pub struct Hook<'a> {
    pub kram: Option<&'a Kram>,
    pub markers: &'a Markers,
    /// qemu.conf's memory_backing_dir.
    pub ram_dir: PathBuf,
}

/// memory_backing_dir from qemu.conf's text (the default if unset).
pub fn ram_dir_of(qemu_conf: &str) -> PathBuf {
    qemu_conf
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter_map(|l| l.strip_prefix("memory_backing_dir"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next_back()
        .map_or_else(|| PathBuf::from(DEFAULT_RAM_DIR), PathBuf::from)
}

/// The RAM directory libvirt made for running domain `id`:
/// `<dir>/libvirt/qemu/<id>-<short name>` when qemu.conf sets
/// memory_backing_dir, `<dir>/<id>-<short name>` under the default (libvirt
/// 12.9 in the rig).
fn domain_ram_dir(base: &Path, id: u32) -> Result<PathBuf> {
    let prefix = format!("{id}-");
    let found: Vec<PathBuf> = [base.join("libvirt/qemu"), base.to_path_buf()]
        .iter()
        .flat_map(|parent| fs::read_dir(parent).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix) && e.path().is_dir())
        .map(|e| e.path())
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no RAM directory for domain id {id} under {}",
            base.display()
        ),
        _ => bail!(
            "{} RAM directories for domain id {id} under {}",
            found.len(),
            base.display()
        ),
    }
}

/// The numeric user and group of a DAC label: `+UID:+GID` (libvirt's
/// form in a live XML), or `USER:GROUP` looked up on this host.
pub fn dac_owner(label: &str) -> Result<(u32, u32)> {
    let (u, g) = label
        .split_once(':')
        .with_context(|| format!("DAC label {label:?} is not USER:GROUP"))?;
    let num = |s: &str| s.strip_prefix('+').unwrap_or(s).parse::<u32>().ok();
    let uid = match num(u) {
        Some(n) => n,
        None => nix::unistd::User::from_name(u)?
            .with_context(|| format!("DAC label {label:?}: no user {u:?} on this host"))?
            .uid
            .as_raw(),
    };
    let gid = match num(g) {
        Some(n) => n,
        None => nix::unistd::Group::from_name(g)?
            .with_context(|| format!("DAC label {label:?}: no group {g:?} on this host"))?
            .gid
            .as_raw(),
    };
    Ok((uid, gid))
}

impl Hook<'_> {
    /// One call; the XML to hand back to libvirt (`restore`/`migrate`
    /// `begin` only; None: unchanged).
    pub fn run(&self, op: &str, subop: &str, xml: &str) -> Result<Option<String>> {
        match (op, subop) {
            ("start", "begin") => self.start(xml).map(|()| None),
            ("restore", "begin") => {
                let d = domain::parse(xml)?;
                if self.markers.get(&d.uuid).is_some() {
                    return Ok(None);
                }
                Ok(without_keep_global(xml)?)
            }
            ("migrate", "begin") => Ok(without_keep_global(xml)?),
            ("release", "end") => {
                self.release(xml);
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn start(&self, xml: &str) -> Result<()> {
        let d = domain::parse(xml)?;
        if !d.ram_in_shared_file || d.numa {
            return Ok(());
        }
        let marker = self.markers.get(&d.uuid);
        let Some(kram) = self.kram else {
            if marker.is_some() {
                bail!("domain {}: liveup saved it with its RAM in KRAM, and KRAM is not loaded: load it (liveup kram load) and start the domain again", d.name);
            }
            log::warn!("domain {}: KRAM not loaded: its RAM stays in libvirt's file (not kept by an upgrade)", d.name);
            return Ok(());
        };
        let name = d.area_name();
        let npages = d.memory_bytes.div_ceil(PAGE_SIZE);
        let area = match (kram.lookup(&name), &marker) {
            (Ok(a), _) if a.npages == npages => a,
            (Ok(a), Some(_)) => bail!(
                "domain {}: liveup saved it with its RAM in KRAM area {name} of {} pages, the domain now has {npages}: not restored",
                d.name, a.npages
            ),
            (Ok(_), None) => {
                // a stale area of an earlier life of this domain (another size)
                kram.delete(&name).with_context(|| format!("domain {}: stale KRAM area {name}", d.name))?;
                kram.create(&name, npages)?
            }
            (Err(e), Some(_)) if e.is_not_found() => bail!(
                "domain {}: liveup saved it with its RAM in KRAM area {name}, which this boot does not have (a cold reboot since?): its managed save holds no RAM; `virsh managedsave-remove {}` boots it afresh",
                d.name, d.name
            ),
            (Err(e), None) if e.is_not_found() => kram.create(&name, npages)?,
            (Err(e), _) => return Err(e.into()),
        };
        let id =
            d.id.with_context(|| format!("domain {}: no id in the XML at start", d.name))?;
        let link = domain_ram_dir(&self.ram_dir, id)?.join(RAM_FILE);
        let node = area_node(DEFAULT_DEVICE, area.id);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&node, &link).with_context(|| {
            format!("domain {}: linking {} as {}", d.name, node, link.display())
        })?;
        if let Some(label) = &d.dac_label {
            let (uid, gid) = dac_owner(label)
                .with_context(|| format!("domain {}: QEMU's user and group", d.name))?;
            nix::unistd::chown(
                node.as_str(),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .with_context(|| format!("domain {}: giving {node} to {label}, QEMU's user", d.name))?;
        }
        log::info!(
            "domain {}: RAM in KRAM area {name} ({node} as {})",
            d.name,
            link.display()
        );
        Ok(())
    }

    /// Frees the area of a domain that stopped, unless liveup saved it.
    /// Never fails: libvirt has released the domain already.
    fn release(&self, xml: &str) {
        let Ok(d) = domain::parse(xml) else { return };
        if !d.ram_in_shared_file || self.markers.get(&d.uuid).is_some() {
            return;
        }
        let Some(kram) = self.kram else { return };
        let name = d.area_name();
        match kram.delete_once_unmapped(&name, Duration::from_secs(5)) {
            Ok(()) => log::info!("domain {}: KRAM area {name} freed", d.name),
            Err(e) if e.is_not_found() => {}
            Err(e) => log::warn!("domain {}: KRAM area {name} not freed: {e}", d.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libvirt::domain::{parse, with_keep_global};
    use crate::libvirt::keep::Marker;

    const XML: &str = "<domain type='kvm' id='2'><name>a</name><uuid>11111111-2222-3333-4444-555555555555</uuid><memory unit='KiB'>32768</memory><memoryBacking><source type='file'/><access mode='shared'/></memoryBacking><devices/></domain>";

    #[test]
    fn dac_labels() {
        assert_eq!(dac_owner("+64055:+64055").unwrap(), (64055, 64055));
        assert_eq!(dac_owner("107:108").unwrap(), (107, 108));
        assert_eq!(dac_owner("root:root").unwrap(), (0, 0));
        assert_eq!(dac_owner("+0:+0").unwrap(), (0, 0));
        for bad in [
            "",
            "64055",
            "+:+1",
            "no-such-user-kh:root",
            "root:no-such-group-kh",
            "+4294967296:+0",
        ] {
            assert!(dac_owner(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn memory_backing_dir_from_qemu_conf() {
        assert_eq!(ram_dir_of(""), PathBuf::from(DEFAULT_RAM_DIR));
        assert_eq!(
            ram_dir_of("#memory_backing_dir = \"/x\"\nmemory_backing_dir = \"/srv/ram\" # kept\n"),
            PathBuf::from("/srv/ram")
        );
        assert_eq!(
            ram_dir_of("memory_backing_dir=\"/a\"\nmemory_backing_dir = \"/b\""),
            PathBuf::from("/b")
        );
    }

    #[test]
    fn restore_and_migrate_lose_the_global_unless_liveup_restores() {
        let dir = std::env::temp_dir().join(format!("liveup-hook-test-{}", std::process::id()));
        let markers = Markers { dir: dir.clone() };
        let hook = Hook {
            kram: None,
            markers: &markers,
            ram_dir: dir.clone(),
        };
        let with = with_keep_global(XML).unwrap();
        // an operator's restore or an incoming migration: taken out
        for op in ["restore", "migrate"] {
            let out = hook.run(op, "begin", &with).unwrap().unwrap();
            assert!(!parse(&out).unwrap().keep_global, "{op}");
        }
        assert_eq!(hook.run("restore", "begin", XML).unwrap(), None);
        // liveup's restore: left in
        markers
            .put(&Marker {
                name: "a".into(),
                uuid: "11111111-2222-3333-4444-555555555555".into(),
                area: "lv-1".into(),
                tsc_hz: 1.0,
                t_stop: 0,
                saved: true,
                t_saved: 0,
            })
            .unwrap();
        assert_eq!(hook.run("restore", "begin", &with).unwrap(), None);
        // and without KRAM, its start is refused rather than run on other memory
        let e = hook.run("start", "begin", XML).unwrap_err().to_string();
        assert!(e.contains("KRAM is not loaded"), "{e}");
        // other calls: nothing
        assert_eq!(hook.run("started", "begin", XML).unwrap(), None);
        assert_eq!(hook.run("release", "end", XML).unwrap(), None);
        let _ = fs::remove_dir_all(&dir);
        // a domain liveup did not save starts without KRAM, unkept
        assert_eq!(hook.run("start", "begin", XML).unwrap(), None);
    }
}
