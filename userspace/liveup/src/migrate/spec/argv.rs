//! The destination's QEMU command line for a checked description, with
//! the seccomp sandbox it runs under.

use super::*;

impl VmSpec {
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
    match l.fds.get(p) {
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
