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
//!
//! In spec/: `check.rs` what a destination checks ([`VmSpec::validate`]),
//! `argv.rs` the command line it builds, `parse.rs` the source's side,
//! `tests.rs` their tests; the description itself is here.

pub use argv::SANDBOX_DAEMONIZED;
use check::{check_rel, check_word};
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
    /// The descriptor QEMU inherits for the kernel and for the initrd, by
    /// the file's path as QEMU would see it, read through
    /// `/proc/self/fd/N`; a file not in the map (and every disk) is named by
    /// its path.
    pub fds: std::collections::BTreeMap<PathBuf, i32>,
}

impl VmSpec {
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
}

mod argv;
mod check;
mod parse;
#[cfg(test)]
mod tests;
