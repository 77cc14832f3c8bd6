//! What a destination checks of a description before it starts anything:
//! words, models, relative paths and MACs, and the limits of its
//! [`Policy`].

use super::*;

/// `[a-z0-9_-]`, `[A-Za-z0-9._-]` for models: a word QEMU's option parser
/// cannot read as anything but itself (no `,`, `=`, `/` or space).
pub(super) fn check_word(what: &'static str, s: &str, max: usize) -> Result<(), SpecError> {
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

pub(super) fn check_rel(what: &'static str, p: &str) -> Result<(), SpecError> {
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
}
