//! The source side: the description of a VM from the QEMU command line
//! `liveup vm start` recorded.

use super::*;

impl VmSpec {
    /// The description of a VM from the QEMU command line `argv` (argv[0]
    /// the binary), its files named by the pools `pools` (this host's
    /// directories). Options only this host needs (QMP, pid file, the
    /// KRAM RAM backend, display) are left out; any other option this does
    /// not know is refused by name.
    pub fn from_argv(argv: &[String], pools: &Names) -> Result<VmSpec, SpecError> {
        let mut s = VmSpec {
            version: SPEC_VERSION,
            name: String::new(),
            memory_mib: 0,
            vcpus: 1,
            machine: String::new(),
            accel: "tcg".into(),
            cpu: String::new(),
            boot: None,
            disks: Vec::new(),
            nics: Vec::new(),
            serials: 0,
            ram_backend: false,
            guest_agent: None,
            tsc_khz: None,
        };
        let (mut nodefaults, mut backend) = (false, false);
        // the guest agent: its controller's place among the NICs, its
        // chardev, its port
        let (mut vser, mut chardev, mut port): (Option<u8>, Option<String>, Option<String>) =
            (None, None, None);
        let (mut kernel, mut initrd, mut append) = (None, None, String::new());
        let mut netdevs: Vec<(String, String)> = Vec::new();
        let mut it = argv.iter().skip(1);
        while let Some(opt) = it.next() {
            let o = opt
                .strip_prefix('-')
                .map(|o| o.strip_prefix('-').unwrap_or(o));
            let Some(o) = o else {
                return Err(SpecError::Unsupported(opt.clone()));
            };
            if o == "nodefaults" {
                nodefaults = true;
                continue;
            }
            if o == "enable-kvm" {
                s.accel = "kvm".into();
                continue;
            }
            if matches!(o, "daemonize" | "S") {
                continue;
            }
            let v = it
                .next()
                .ok_or_else(|| SpecError::Unsupported(opt.clone()))?;
            let whole = || SpecError::Unsupported(format!("{opt} {v}"));
            match o {
                "name" => s.name = v.split(',').next().unwrap_or("").to_string(),
                "machine" | "M" => {
                    for (k, val) in props(v) {
                        match k {
                            "" | "type" => s.machine = val.into(),
                            "accel" => s.accel = val.into(),
                            "memory-backend" if val == "ram0" => s.ram_backend = true,
                            _ => return Err(whole()),
                        }
                    }
                }
                "accel" => s.accel = v.clone(),
                "cpu" => s.cpu = v.clone(),
                "m" => {
                    let p = props(v);
                    match p.as_slice() {
                        [("", m)] | [("size", m)] => s.memory_mib = mib(m)?,
                        _ => return Err(whole()),
                    }
                }
                "smp" => {
                    // a topology (sockets=, maxcpus=, ...) is not described
                    let n = match props(v).as_slice() {
                        [("", n)] | [("cpus", n)] => n.parse().ok(),
                        _ => None,
                    };
                    s.vcpus = n.ok_or_else(whole)?;
                }
                "object" if v.starts_with("memory-backend-file,id=ram0,") => backend = true,
                "chardev" => {
                    let p = props(v);
                    let get = |k: &str| p.iter().find(|(x, _)| *x == k).map(|x| x.1);
                    let known = p
                        .iter()
                        .all(|(k, _)| matches!(*k, "" | "id" | "path" | "server" | "wait"));
                    match (p.first(), get("id")) {
                        (Some(("", "socket")), Some(id)) if known && chardev.is_none() => {
                            chardev = Some(id.to_string())
                        }
                        _ => return Err(whole()),
                    }
                }
                "qmp" | "pidfile" | "monitor" | "incoming" | "sandbox" => {}
                "display" if v == "none" => {}
                "serial" if v.starts_with("file:") || v == "null" => s.serials += 1,
                "kernel" => kernel = Some(in_pool(pools, v)?),
                "initrd" => initrd = Some(in_pool(pools, v)?),
                "append" => append = v.clone(),
                "drive" => s.disks.push(drive(pools, v, s.disks.len())?),
                "netdev" => {
                    let p = props(v);
                    let id = p.iter().find(|(k, _)| *k == "id").map(|x| x.1.to_string());
                    let br = p.iter().find(|(k, _)| *k == "br").map(|x| x.1.to_string());
                    match (p.first(), id, br) {
                        (Some(("", "bridge")), Some(id), Some(br)) if p.len() == 3 => {
                            netdevs.push((id, br))
                        }
                        _ => return Err(whole()),
                    }
                }
                "device" => {
                    let p = props(v);
                    let get = |k: &str| p.iter().find(|(x, _)| *x == k).map(|x| x.1.to_string());
                    let only = |keys: &[&str]| p.iter().skip(1).all(|(k, _)| keys.contains(k));
                    if p.first() == Some(&("", "virtio-serial-pci"))
                        && only(&["id"])
                        && vser.is_none()
                    {
                        vser = Some(s.nics.len() as u8);
                        continue;
                    }
                    if p.first() == Some(&("", "virtserialport"))
                        && only(&["bus", "nr", "id", "chardev", "name"])
                        && get("name").as_deref() == Some(crate::qga::AGENT_PORT)
                        && port.is_none()
                    {
                        port = get("chardev");
                        continue;
                    }
                    match (p.first(), get("netdev"), get("mac")) {
                        (Some(("", "virtio-net-pci")), Some(nd), Some(mac)) if p.len() == 3 => {
                            let (_, br) =
                                netdevs.iter().find(|(id, _)| *id == nd).ok_or_else(whole)?;
                            s.nics.push(Nic {
                                id: nd,
                                mac,
                                network: br.clone(),
                            });
                        }
                        _ => return Err(whole()),
                    }
                }
                _ => return Err(whole()),
            }
        }
        if s.name.is_empty() {
            return Err(SpecError::Missing("-name"));
        }
        if !nodefaults {
            return Err(SpecError::Missing(
                "-nodefaults (QEMU's default devices are not described)",
            ));
        }
        if s.ram_backend != backend {
            return Err(SpecError::Missing(
                "-object memory-backend-file,id=ram0 with -machine memory-backend=ram0",
            ));
        }
        match (vser, chardev, port) {
            (Some(at), Some(c), Some(p)) if c == p => s.guest_agent = Some(at),
            (None, None, None) => {}
            _ => {
                return Err(SpecError::Unsupported(
                    "virtio-serial other than one guest agent port on a socket".into(),
                ))
            }
        }
        if s.memory_mib == 0 {
            return Err(SpecError::Missing("-m"));
        }
        if s.machine.is_empty() {
            return Err(SpecError::Missing("-machine TYPE"));
        }
        // QEMU's default CPU depends on the machine and its version
        if s.cpu.is_empty() {
            return Err(SpecError::Missing("-cpu"));
        }
        match kernel {
            Some(kernel) => {
                s.boot = Some(Boot {
                    kernel,
                    initrd,
                    append,
                })
            }
            None if initrd.is_some() || !append.is_empty() => {
                return Err(SpecError::Missing("-kernel"))
            }
            None => {}
        }
        Ok(s)
    }
}

/// `a=b,c=d` as pairs, the first item (a bare word) under `""`.
fn props(v: &str) -> Vec<(&str, &str)> {
    v.split(',')
        .map(|o| o.split_once('=').unwrap_or(("", o)))
        .collect()
}

/// QEMU's `-m`: MiB when bare, else a size that must be whole MiB.
fn mib(v: &str) -> Result<u64, SpecError> {
    let bytes = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse::<u64>().ok().and_then(|m| m.checked_mul(1 << 20))
    } else {
        crate::units::parse_size(v).ok()
    };
    match bytes {
        Some(b) if b > 0 && b % (1 << 20) == 0 => Ok(b >> 20),
        _ => Err(SpecError::Bad("-m", v.into())),
    }
}

/// `file` as a file of one of `pools` (the longest directory that holds
/// it lexically; a `..` or a relative path is refused).
pub(super) fn in_pool(pools: &Names, file: &str) -> Result<PoolFile, SpecError> {
    let f = Path::new(file);
    if !f.is_absolute() || f.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(SpecError::NoPool(file.into()));
    }
    pools
        .0
        .iter()
        .filter_map(|(n, dir)| f.strip_prefix(dir).ok().map(|rel| (n, dir.len(), rel)))
        .filter(|(_, _, rel)| !rel.as_os_str().is_empty())
        .max_by_key(|(_, len, _)| *len)
        .map(|(n, _, rel)| PoolFile {
            pool: n.clone(),
            path: rel.display().to_string(),
        })
        .ok_or_else(|| SpecError::NoPool(file.into()))
}

/// `-drive file=F,if=virtio[,id=X][,format=F][,cache=C]` (QEMU's default
/// interface depends on the machine: it must be written).
fn drive(pools: &Names, v: &str, n: usize) -> Result<Disk, SpecError> {
    let mut d = Disk {
        id: format!("disk{n}"),
        file: PoolFile {
            pool: String::new(),
            path: String::new(),
        },
        format: "raw".into(),
        cache: "writeback".into(),
    };
    let (mut file, mut virtio) = (None, false);
    for (k, val) in props(v) {
        match k {
            "file" => file = Some(in_pool(pools, val)?),
            "if" if val == "virtio" => virtio = true,
            "id" => d.id = val.into(),
            "format" => d.format = val.into(),
            "cache" => d.cache = val.into(),
            _ => return Err(SpecError::Unsupported(format!("-drive {k}={val}"))),
        }
    }
    if !virtio {
        return Err(SpecError::Missing("-drive if=virtio"));
    }
    d.file = file.ok_or(SpecError::Missing("-drive file="))?;
    Ok(d)
}
