//! The VM description a source sends to a destination service (`liveup
//! migrate listen`, issue 20 item 1; design in notes/migrate-listen.md):
//! what the destination needs to start an equal QEMU with `-incoming`,
//! never a command line.
//!
//! The source is authenticated, but a key can leak, and one compromised
//! host must not become root on every host that takes its VMs: so nothing
//! in a [`VmSpec`] reaches QEMU unchecked. Names, ids and models are
//! restricted to a small alphabet; files are relative paths inside a
//! storage pool that the *destination* maps to a directory; NICs name a
//! network that the destination maps to a backend it owns; the size of
//! every list is bounded. The destination builds the argv itself
//! ([`VmSpec::to_argv`]).
//!
//! On the source, [`VmSpec::from_argv`] reads the command line `liveup vm
//! start` recorded and refuses, by name, every option it does not know, so
//! an operator learns what cannot move instead of getting a destination
//! that differs from the source.

use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// The version of the description; a destination refuses another one.
pub const SPEC_VERSION: u32 = 1;
const MAX_NAME: usize = 32;
const MAX_ID: usize = 16;
const MAX_DISKS: usize = 8;
const MAX_NICS: usize = 8;
const MAX_SERIALS: u8 = 4;
const MAX_APPEND: usize = 4096;
const MAX_PATH: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    pub version: u32,
    pub name: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// A machine type (`q35`, `pc-q35-11.1`).
    pub machine: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// A named CPU model; `host` only where the destination allows it.
    pub cpu: String,
    pub boot: Option<Boot>,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    /// Serial ports (the destination logs each to a file of its own).
    pub serials: u8,
    /// The guest RAM is memory backend `ram0` (`-machine
    /// memory-backend=ram0`, as `liveup vm start` gives it): the RAM
    /// block's name in the migration stream, which both sides must share.
    pub ram_backend: bool,
    /// A guest agent port (virtio-serial, `org.qemu.guest_agent.0`): its
    /// controller sits after this many NICs among the `-device`s (PCI
    /// slots are given in that order).
    pub guest_agent: Option<u8>,
    /// The vCPUs' TSC frequency, kHz: QEMU's `tsc-frequency`, which it
    /// took from KVM when the VM started and which the guest's clocks are
    /// calibrated to. Under KVM the destination runs the vCPUs at it
    /// (`-cpu MODEL,tsc-frequency=`, KVM's TSC scaling), so the guest's
    /// time keeps its rate; a destination that can neither match nor scale
    /// to it fails to start the VM, which stays on the source. None: not
    /// known (TCG), the destination's own; a description without it is one
    /// of an earlier version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsc_khz: Option<u64>,
}

/// TSC frequencies a description may name, kHz (1 MHz to 20 GHz).
const TSC_KHZ: std::ops::RangeInclusive<u64> = 1_000..=20_000_000;

/// A file inside a storage pool: `pool` is a name both hosts map to a
/// directory (shared storage), `path` relative to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    pub pool: String,
    pub path: String,
}

/// Direct kernel boot (the option ROM QEMU builds from it must be the
/// same size on both sides: the same files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    pub kernel: PoolFile,
    pub initrd: Option<PoolFile>,
    pub append: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub id: String,
    pub file: PoolFile,
    /// `raw` or `qcow2`.
    pub format: String,
    /// `writeback`, `writethrough`, `none`, `directsync` or `unsafe`.
    pub cache: String,
}

/// A virtio-net NIC; `network` is a name the destination maps to a
/// backend it owns (a bridge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    pub id: String,
    pub mac: String,
    pub network: String,
}

/// Why a command line cannot be described or a description is refused;
/// the message names the option or field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("option {0} is not migratable by `send --to` (start the destination QEMU by hand and use `migrate receive`)")]
    Unsupported(String),
    #[error("bad value for {0}: {1:?}")]
    Bad(&'static str, String),
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{0} is not under any storage pool (--pool NAME=DIR)")]
    NoPool(String),
    #[error("unknown {0} {1:?} (this host maps: {2})")]
    Unknown(&'static str, String, String),
    #[error("description version {0}, this liveup reads {SPEC_VERSION}")]
    Version(u32),
    #[error("{0}: {1} is over this host's limit of {2}")]
    Limit(&'static str, u64, u64),
}

/// Names mapped to host things (`NAME=VALUE`, as `--pool` and `--network`
/// are typed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names(pub Vec<(String, String)>);

impl Names {
    pub fn parse(items: &[String]) -> Result<Names, SpecError> {
        let mut v = Vec::new();
        for it in items {
            let (n, val) = it
                .split_once('=')
                .ok_or_else(|| SpecError::Bad("NAME=VALUE", it.clone()))?;
            check_word("name", n, MAX_ID)?;
            if val.is_empty() || v.iter().any(|(m, _): &(String, String)| m == n) {
                return Err(SpecError::Bad("NAME=VALUE", it.clone()));
            }
            v.push((n.to_string(), val.to_string()));
        }
        Ok(Names(v))
    }
    fn get(&self, what: &'static str, n: &str) -> Result<&str, SpecError> {
        self.0
            .iter()
            .find(|(m, _)| m == n)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| {
                let known: Vec<&str> = self.0.iter().map(|(m, _)| m.as_str()).collect();
                SpecError::Unknown(
                    what,
                    n.into(),
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    },
                )
            })
    }
}

/// What a destination accepts and where it puts things.
#[derive(Debug, Clone)]
pub struct Policy {
    pub pools: Names,
    pub networks: Names,
    pub max_memory_mib: u64,
    pub max_vcpus: u32,
    pub allow_host_cpu: bool,
}

/// Where the destination's QEMU for one VM keeps its sockets and logs.
#[derive(Debug, Clone)]
pub struct Launch {
    pub qemu: String,
    pub qmp: PathBuf,
    pub log_dir: PathBuf,
    /// The RAM backend object (`-object` value, id `ram0`) for a source
    /// whose RAM is one (else anonymous memory, `memory-backend-ram`).
    pub ram_object: Option<String>,
    /// Descriptors QEMU inherits for the kernel and initrd, by the file's
    /// path as QEMU would see it, read through `/proc/self/fd/N`; a file
    /// not in the map (and every disk) is named by its path.
    pub fds: std::collections::BTreeMap<PathBuf, Vec<i32>>,
}

/// `[a-z0-9_-]`, `[A-Za-z0-9._-]` for models: a word QEMU's option parser
/// cannot read as anything but itself (no `,`, `=`, `/` or space).
fn check_word(what: &'static str, s: &str, max: usize) -> Result<(), SpecError> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SpecError::Bad(what, s.into()))
    }
}

fn check_model(what: &'static str, s: &str) -> Result<(), SpecError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SpecError::Bad(what, s.into()))
    }
}

fn check_rel(what: &'static str, p: &str) -> Result<(), SpecError> {
    let path = Path::new(p);
    let ok = !p.is_empty()
        && p.len() <= MAX_PATH
        && !p.contains(',')
        && !p.bytes().any(|b| b.is_ascii_control())
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(SpecError::Bad(what, p.into()))
    }
}

fn check_mac(m: &str) -> Result<(), SpecError> {
    let parts: Vec<&str> = m.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(SpecError::Bad("nic mac", m.into()))
    }
}

impl VmSpec {
    /// Everything a destination checks before it starts anything.
    pub fn validate(&self, p: &Policy) -> Result<(), SpecError> {
        if self.version != SPEC_VERSION {
            return Err(SpecError::Version(self.version));
        }
        check_word("name", &self.name, MAX_NAME)?;
        // liveup's own record beside the VMs' (upgrade/restore.rs)
        if self.name == "last-upgrade" {
            return Err(SpecError::Bad("name (reserved)", self.name.clone()));
        }
        if self.memory_mib == 0 || self.memory_mib > p.max_memory_mib {
            return Err(SpecError::Limit(
                "memory_mib",
                self.memory_mib,
                p.max_memory_mib,
            ));
        }
        if self.vcpus == 0 || self.vcpus > p.max_vcpus {
            return Err(SpecError::Limit(
                "vcpus",
                self.vcpus.into(),
                p.max_vcpus.into(),
            ));
        }
        check_model("machine", &self.machine)?;
        if !matches!(self.accel.as_str(), "kvm" | "tcg") {
            return Err(SpecError::Bad("accel", self.accel.clone()));
        }
        check_model("cpu", &self.cpu)?;
        if let Some(k) = self.tsc_khz.filter(|k| !TSC_KHZ.contains(k)) {
            return Err(SpecError::Bad("tsc_khz", k.to_string()));
        }
        // under KVM `max` is `host` and whatever KVM adds
        if (self.cpu == "host" || (self.cpu == "max" && self.accel == "kvm")) && !p.allow_host_cpu {
            return Err(SpecError::Bad(
                "cpu (host is not allowed here)",
                self.cpu.clone(),
            ));
        }
        if let Some(b) = &self.boot {
            self.pool_file(p, "kernel", &b.kernel)?;
            if let Some(i) = &b.initrd {
                self.pool_file(p, "initrd", i)?;
            }
            if b.append.len() > MAX_APPEND || b.append.bytes().any(|c| c.is_ascii_control()) {
                return Err(SpecError::Bad(
                    "append",
                    b.append.chars().take(80).collect(),
                ));
            }
        }
        if self.disks.len() > MAX_DISKS {
            return Err(SpecError::Limit(
                "disks",
                self.disks.len() as u64,
                MAX_DISKS as u64,
            ));
        }
        if self.nics.len() > MAX_NICS {
            return Err(SpecError::Limit(
                "nics",
                self.nics.len() as u64,
                MAX_NICS as u64,
            ));
        }
        if self
            .guest_agent
            .is_some_and(|n| usize::from(n) > self.nics.len())
        {
            return Err(SpecError::Bad(
                "guest_agent (after more NICs than there are)",
                format!("{:?}", self.guest_agent),
            ));
        }
        if self.serials > MAX_SERIALS {
            return Err(SpecError::Limit(
                "serials",
                self.serials.into(),
                MAX_SERIALS.into(),
            ));
        }
        let mut ids: Vec<&str> = Vec::new();
        for d in &self.disks {
            check_word("disk id", &d.id, MAX_ID)?;
            ids.push(&d.id);
            self.pool_file(p, "disk file", &d.file)?;
            // raw only: a qcow2 header names its own backing and data
            // files, anywhere on this host
            if d.format != "raw" {
                return Err(SpecError::Bad("disk format", d.format.clone()));
            }
            if !matches!(
                d.cache.as_str(),
                "writeback" | "writethrough" | "none" | "directsync" | "unsafe"
            ) {
                return Err(SpecError::Bad("disk cache", d.cache.clone()));
            }
        }
        for n in &self.nics {
            check_word("nic id", &n.id, MAX_ID)?;
            ids.push(&n.id);
            check_mac(&n.mac)?;
            p.networks.get("network", &n.network)?;
        }
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(SpecError::Bad("id (used twice)", w[0].into()));
        }
        Ok(())
    }

    /// Every file QEMU will open, with its pool's directory (as QEMU sees
    /// them) and whether it is a disk (opened for writing): a destination
    /// opens and checks each before it starts QEMU.
    pub fn files(&self, p: &Policy) -> Result<Vec<(PathBuf, PathBuf, bool)>, SpecError> {
        let mut out = Vec::new();
        let mut add = |what, f: &PoolFile| -> Result<(), SpecError> {
            let dir = PathBuf::from(p.pools.get("pool", &f.pool)?);
            out.push((dir, self.pool_file(p, what, f)?, what == "disk file"));
            Ok(())
        };
        if let Some(b) = &self.boot {
            add("kernel", &b.kernel)?;
            if let Some(i) = &b.initrd {
                add("initrd", i)?;
            }
        }
        for d in &self.disks {
            add("disk file", &d.file)?;
        }
        Ok(out)
    }

    fn pool_file(
        &self,
        p: &Policy,
        what: &'static str,
        f: &PoolFile,
    ) -> Result<PathBuf, SpecError> {
        check_rel(what, &f.path)?;
        Ok(Path::new(p.pools.get("pool", &f.pool)?).join(&f.path))
    }

    /// The destination's QEMU command line for this (validated)
    /// description, waiting for the migration (`-incoming defer -S`).
    /// Every value in it either passed [`VmSpec::validate`] or is the
    /// destination's own.
    pub fn to_argv(&self, p: &Policy, l: &Launch) -> Result<Vec<String>, SpecError> {
        self.validate(p)?;
        let mut a: Vec<String> = vec![l.qemu.clone(), "-name".into(), self.name.clone()];
        let mut machine = self.machine.clone();
        if self.ram_backend {
            let o = l
                .ram_object
                .clone()
                .unwrap_or_else(|| format!("memory-backend-ram,id=ram0,size={}M", self.memory_mib));
            a.extend(["-object".into(), o]);
            machine.push_str(",memory-backend=ram0");
        }
        a.extend([
            "-machine".into(),
            machine,
            "-accel".into(),
            self.accel.clone(),
        ]);
        let cpu = match self.tsc_khz {
            // the value checked against TSC_KHZ: no overflow
            Some(k) if self.accel == "kvm" => format!("{},tsc-frequency={}", self.cpu, k * 1000),
            _ => self.cpu.clone(),
        };
        a.extend([
            "-cpu".into(),
            cpu,
            "-m".into(),
            format!("{}M", self.memory_mib),
        ]);
        a.extend([
            "-smp".into(),
            self.vcpus.to_string(),
            "-display".into(),
            "none".into(),
        ]);
        a.push("-nodefaults".into());
        a.extend(["-sandbox".into(), sandbox(!self.nics.is_empty()).into()]);
        if let Some(b) = &self.boot {
            a.extend([
                "-kernel".into(),
                file_arg(&self.pool_file(p, "kernel", &b.kernel)?, l),
            ]);
            if let Some(i) = &b.initrd {
                a.extend([
                    "-initrd".into(),
                    file_arg(&self.pool_file(p, "initrd", i)?, l),
                ]);
            }
            a.extend(["-append".into(), b.append.clone()]);
        }
        for i in 0..self.serials {
            let log = l.log_dir.join(format!("{}.serial{i}.log", self.name));
            a.extend(["-serial".into(), format!("file:{}", path_arg(&log))]);
        }
        for d in &self.disks {
            let f = path_arg(&self.pool_file(p, "disk file", &d.file)?);
            a.extend([
                "-drive".into(),
                format!(
                    "file={f},if=virtio,id={},format={},cache={}",
                    d.id, d.format, d.cache
                ),
            ]);
        }
        let agent = |a: &mut Vec<String>| {
            let sock = l.log_dir.join(format!("{}.qga", self.name));
            a.extend(["-device".into(), "virtio-serial-pci,id=vser0".into()]);
            a.extend([
                "-chardev".into(),
                format!("socket,id=qga0,path={},server=on,wait=off", path_arg(&sock)),
            ]);
            a.extend([
                "-device".into(),
                format!(
                    "virtserialport,bus=vser0.0,chardev=qga0,name={}",
                    crate::qga::AGENT_PORT
                ),
            ]);
        };
        for (i, n) in self.nics.iter().enumerate() {
            if self.guest_agent == Some(i as u8) {
                agent(&mut a);
            }
            let br = p.networks.get("network", &n.network)?;
            a.extend(["-netdev".into(), format!("bridge,id={},br={br}", n.id)]);
            a.extend([
                "-device".into(),
                format!("virtio-net-pci,netdev={},mac={}", n.id, n.mac),
            ]);
        }
        if self.guest_agent == Some(self.nics.len() as u8) {
            agent(&mut a);
        }
        a.extend([
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", path_arg(&l.qmp)),
        ]);
        a.extend(["-incoming".into(), "defer".into(), "-S".into()]);
        Ok(a)
    }
}

/// The sandbox of a daemonized QEMU (a VM that arrived, as a hot-upgrade's
/// restore relaunches it): QEMU 11.1 with `-daemonize` exits 1 under
/// `spawn=deny` or `elevateprivileges=deny` (or `=children`), tried by
/// hand; it then loads only this host's own saved state.
pub const SANDBOX_DAEMONIZED: &str = "on,obsolete=deny,resourcecontrol=deny";

/// QEMU's seccomp sandbox for a QEMU that parses what a remote peer sends
/// (the migration stream): no obsolete system calls, no privilege or
/// scheduler changes, and no new programs, except where a NIC's
/// `-netdev bridge` must run QEMU's bridge helper (QEMU installs the
/// filter before it creates the netdevs).
fn sandbox(bridge_helper: bool) -> &'static str {
    if bridge_helper {
        "on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny"
    } else {
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
    }
}

/// A kernel or initrd QEMU reads: its inherited descriptor, else its path.
fn file_arg(p: &Path, l: &Launch) -> String {
    match l.fds.get(p).and_then(|v| v.first()) {
        Some(fd) => format!("/proc/self/fd/{fd}"),
        None => path_arg(p),
    }
}

/// A path QEMU reads inside an option value: a `,` would start another
/// option (refused by [`check_rel`] for what comes from the peer; a
/// destination's own directory is doubled as QEMU escapes it).
fn path_arg(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

mod parse;
#[cfg(test)]
mod tests;
