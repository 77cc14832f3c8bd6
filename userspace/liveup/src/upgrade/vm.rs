//! Managed VMs: how each QEMU is launched (its RAM in a KRAM area) and
//! found again, `liveup vm start|stop|list`, and what its QEMU maps (read
//! ahead before a restore starts it again).

use super::Qmp;
use crate::kram::Kram;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How to (re)launch one VM. Paths are as QEMU sees them (inside `root`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    pub name: String,
    /// Directory QEMU runs chrooted in ("/" for none).
    pub root: PathBuf,
    /// The QEMU command line, without -incoming.
    pub argv: Vec<String>,
    pub qmp: PathBuf,
    pub area: String,
}

impl VmConfig {
    pub(super) fn host_path(&self, p: &Path) -> PathBuf {
        under_root(&self.root, p)
    }
    pub(crate) fn qmp_host(&self) -> PathBuf {
        self.host_path(&self.qmp)
    }
    pub(super) fn state_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/liveup/{}.state", self.name))
    }
    pub(super) fn command(&self, incoming: bool) -> Command {
        let argv = self.launch(incoming, under_systemd());
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    }

    /// The command line that launches this VM's QEMU: chrooted when it
    /// has a root, and under systemd in a scope of its own
    /// (`liveup-vm-NAME.scope` in machine.slice, where libvirt puts its
    /// VMs too). Without the scope, QEMU would stay in the cgroup of what
    /// started it: a stop or restart of liveup-restore.service (the
    /// oneshot that relaunches the VMs after a kexec) or the end of an
    /// operator's login session would kill the VMs with it.
    pub(crate) fn launch(&self, incoming: bool, systemd: bool) -> Vec<String> {
        let mut a = Vec::new();
        if systemd {
            a.extend(
                [
                    "systemd-run",
                    "--scope",
                    "--quiet",
                    "--collect",
                    "--slice=machine.slice",
                ]
                .map(String::from),
            );
            a.push(format!("--unit={}", scope_unit(&self.name)));
            a.push("--".into());
        }
        if self.root != Path::new("/") {
            a.push("chroot".into());
            a.push(self.root.display().to_string());
        }
        a.extend(self.argv.iter().cloned());
        if incoming {
            a.extend(["-incoming", "defer"].map(String::from));
        }
        a
    }
}

/// Whether systemd runs this host (and can give each QEMU a scope);
/// LIVEUP_NO_SCOPE=1 says no.
/// `p`, a path as a process chrooted in `root` sees it, from outside.
pub(crate) fn under_root(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

pub(crate) fn under_systemd() -> bool {
    Path::new("/run/systemd/system").is_dir()
        && std::env::var_os("LIVEUP_NO_SCOPE").is_none()
        && ["/usr/bin/systemd-run", "/bin/systemd-run"]
            .iter()
            .any(|p| Path::new(p).exists())
}

/// The scope unit of VM `name`: characters a unit name cannot hold
/// become `_`.
fn scope_unit(name: &str) -> String {
    let n: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("liveup-vm-{n}.scope")
}

/// Directory (outside any chroot) where VM configs live while they run.
pub fn run_dir() -> PathBuf {
    PathBuf::from(std::env::var("LIVEUP_RUN_DIR").unwrap_or_else(|_| "/run/liveup".into()))
}

pub(super) fn spawn_qemu(vm: &VmConfig, incoming: bool) -> Result<()> {
    let _ = fs::remove_file(vm.qmp_host());
    let out = vm
        .command(incoming)
        .output()
        .with_context(|| format!("cannot run QEMU for {}", vm.name))?;
    ensure!(
        out.status.success(),
        "QEMU for {} failed ({}): {}",
        vm.name,
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The property a QEMU's vfio-pci must have for liveup to upgrade under a
/// VM with a passed-through device: it takes a kept device back after a
/// kexec without resetting or re-programming it (issue 16; stock QEMU
/// resets the device when it opens it, and its cpr-reboot refuses VFIO
/// unless the guest is suspended).
pub const KEEP_PROPERTY: &str = "x-kh-keep";

/// The host devices a VM's command line passes through (`-device
/// vfio-pci,host=BDF` or `sysfsdev=PATH`), as written.
pub fn passthrough_devices(args: &[String]) -> Vec<String> {
    args.windows(2)
        .filter(|w| matches!(w[0].as_str(), "-device" | "--device"))
        .map(|w| &w[1])
        .filter(|a| {
            let first = a.split(',').next();
            first == Some("vfio-pci") || first == Some("driver=vfio-pci")
        })
        .map(|a| {
            a.split(',')
                .find_map(|o| o.strip_prefix("host=").or(o.strip_prefix("sysfsdev=")))
                .unwrap_or("(no host=)")
                .to_string()
        })
        .collect()
}

/// The oldest QEMU a hot-upgrade can use: migration mode `cpr-reboot`
/// came with 8.2 (the rig and the docs' figures use 11.1).
pub(super) const MIN_QEMU: (u64, u64) = (8, 2);

/// VM `name`'s QEMU version from its `query-version` answer `v`, refused
/// when it is older than [`MIN_QEMU`] or not reported.
pub(super) fn check_qemu_version(name: &str, v: &serde_json::Value) -> Result<String> {
    let Some((major, minor, micro)) = crate::qmp::qemu_version(v) else {
        anyhow::bail!("VM {name}: its QEMU did not report a version (query-version: {v})");
    };
    let have = format!("{major}.{minor}.{micro}");
    ensure!(
        (major, minor) >= MIN_QEMU,
        "VM {name} runs QEMU {have}: a hot-upgrade needs QEMU {}.{} or later (migration mode cpr-reboot); restart it with a newer QEMU first",
        MIN_QEMU.0,
        MIN_QEMU.1
    );
    Ok(have)
}

/// Preflight for a VM with passed-through devices: its QEMU must take them
/// back after the kexec without a reset ([`KEEP_PROPERTY`]).
pub(super) fn check_passthrough(vm: &VmConfig, q: &mut Qmp) -> Result<()> {
    let devs = passthrough_devices(&vm.argv);
    if devs.is_empty() {
        return Ok(());
    }
    let props = q
        .execute("device-list-properties", json!({"typename": "vfio-pci"}))
        .with_context(|| format!("VM {}: its QEMU's vfio-pci properties", vm.name))?;
    let keeps = props
        .as_array()
        .is_some_and(|v| v.iter().any(|p| p["name"] == KEEP_PROPERTY));
    ensure!(
        keeps,
        "VM {} passes through {}: its QEMU cannot take a device back after a kexec \
         without resetting it (vfio-pci has no {KEEP_PROPERTY} property; see \
         Documentation/upgrade.rst, \"Passthrough devices\"); nothing was touched",
        vm.name,
        devs.join(", ")
    );
    Ok(())
}

/// `liveup vm start`: put the VM's RAM in a KRAM area and launch QEMU.
/// The KRAM node a VM's RAM is mapped from. /dev/kram maps a PFN range
/// (no struct pages, nothing to set up), which get_user_pages() cannot pin:
/// a disk QEMU opens with O_DIRECT (`cache=none`, `cache=directsync`,
/// `aio=native`), vhost and VFIO DMA straight from guest RAM and fail on it
/// (the guest sees I/O errors). Such a VM gets /dev/kram-pages: ordinary
/// pages, the same area and offset (Documentation/kram.rst).
pub fn ram_device(args: &[String]) -> &'static str {
    let pins = |a: &String| {
        a.split(',').any(|o| {
            matches!(
                o,
                "cache=none" | "cache=directsync" | "aio=native" | "vhost=on" | "vfio-pci"
            ) || o.starts_with("cache.direct=on")
        })
    };
    if args.iter().any(pins) {
        crate::kram::PAGES_DEVICE
    } else {
        crate::kram::DEFAULT_DEVICE
    }
}

pub fn vm_start(
    kram: &Kram,
    name: &str,
    mem: u64,
    root: &Path,
    qemu: &str,
    extra: &[String],
) -> Result<VmConfig> {
    let area_name = format!("vm-{name}");
    let pages = mem.div_ceil(crate::kram::PAGE_SIZE);
    let area = kram.ensure(&area_name, pages)?;
    let qmp = PathBuf::from(format!("/run/liveup/{name}.qmp"));
    let mut argv: Vec<String> = vec![qemu.into(), "-name".into(), name.into()];
    // align=2M: QEMU maps a file 4K-aligned unless told, and /dev/kram maps
    // 2 MiB pages (and KVM 2 MiB guest pages) only where the address and
    // the area (2 MiB-aligned when 2 MiB or more) agree. mem-path is the
    // area's own node, so the descriptor QEMU keeps reaches this VM's RAM
    // and nothing else in KRAM (offset 0: the area's first page).
    argv.extend([
        "-object".into(),
        format!(
            "memory-backend-file,id=ram0,size={},mem-path={},offset=0,share=on,align=2M",
            pages * crate::kram::PAGE_SIZE,
            crate::kram::area_node(ram_device(extra), area.id),
        ),
        "-machine".into(),
        "memory-backend=ram0".into(),
        "-m".into(),
        format!("{}M", (pages * crate::kram::PAGE_SIZE) >> 20),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qmp.display()),
        "-daemonize".into(),
        "-pidfile".into(),
        format!("/run/liveup/{name}.pid"),
    ]);
    argv.extend(extra.iter().cloned());
    let vm = VmConfig {
        name: name.into(),
        root: root.into(),
        argv,
        qmp,
        area: area_name,
    };
    fs::create_dir_all(vm.host_path(Path::new("/run/liveup")))?;
    fs::create_dir_all(run_dir())?;
    spawn_qemu(&vm, false)?;
    let mut q = Qmp::connect(vm.qmp_host(), Duration::from_secs(30))?;
    ensure!(
        q.status()? == "running",
        "VM {name} is not running after start"
    );
    fs::write(
        run_dir().join(format!("{name}.json")),
        serde_json::to_vec_pretty(&vm)?,
    )?;
    Ok(vm)
}

/// The VM's QEMU run state, or "unreachable".
pub fn vm_status(vm: &VmConfig) -> String {
    // A QEMU that accepts the connection but does not answer (its main
    // loop stuck) is "unresponsive" within 5 s, not a hang of `vm list`.
    match Qmp::connect_bounded(vm.qmp_host(), Duration::ZERO, Duration::from_secs(5))
        .and_then(|mut q| q.status())
    {
        Ok(s) => s,
        Err(e) if e.is_timeout() => "unresponsive".into(),
        Err(_) => "unreachable".into(),
    }
}

pub fn managed_vms() -> Result<Vec<VmConfig>> {
    let mut vms = Vec::new();
    let Ok(dir) = fs::read_dir(run_dir()) else {
        return Ok(vms);
    };
    for e in dir {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "json")
            && p.file_stem().is_some_and(|s| s != "last-upgrade")
        {
            vms.push(
                serde_json::from_slice(&fs::read(&p)?)
                    .with_context(|| format!("bad VM record {}", p.display()))?,
            );
        }
    }
    vms.sort_by(|a: &VmConfig, b| a.name.cmp(&b.name));
    Ok(vms)
}

/// `liveup vm stop`: quit a managed VM's QEMU, forget it and, with
/// `delete_area`, free its KRAM area (only once QEMU has exited, so no
/// mapping of the area is left).
pub fn vm_stop(kram: Option<&Kram>, name: &str, delete_area: bool) -> Result<()> {
    let rec = run_dir().join(format!("{name}.json"));
    let vm: VmConfig = serde_json::from_slice(
        &fs::read(&rec).with_context(|| format!("no managed VM named {name}"))?,
    )
    .with_context(|| format!("bad VM record {}", rec.display()))?;
    quit_qemu(&vm)?;
    fs::remove_file(&rec)?;
    if let (true, Some(k)) = (delete_area, kram) {
        // The module refuses (EBUSY) while QEMU's mapping of the area is
        // left: with the pid unknown, the socket may close before that.
        k.delete_once_unmapped(&vm.area, Duration::from_secs(30))?;
    }
    Ok(())
}

/// Quit a VM's QEMU, if one answers, and wait until it has exited (so no
/// mapping of its RAM is left), 30 s at most.
pub(super) fn quit_qemu(vm: &VmConfig) -> Result<()> {
    let name = &vm.name;
    let mut pid = None;
    if let Ok(mut q) = Qmp::connect(vm.qmp_host(), Duration::ZERO) {
        pid = q.peer_pid();
        // QEMU may close the socket before or after answering.
        let _ = q.execute("quit", json!({}));
    }
    // Gone means: the process has exited (so no mapping of its RAM is
    // left), or, when its pid is unknown, nothing listens on the socket.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alive = match pid {
            // a zombie has released its memory already
            Some(p) => fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|st| {
                st.rsplit(')')
                    .next()
                    .is_some_and(|r| !r.trim_start().starts_with('Z'))
            }),
            None => Qmp::connect(vm.qmp_host(), Duration::ZERO).is_ok(),
        };
        if !alive {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "VM {name}: QEMU did not exit within 30 s of quit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = fs::remove_file(vm.qmp_host());
    Ok(())
}

/// The files of a /proc/PID/maps text: absolute paths of file mappings,
/// each once, in order; no devices, no deleted files, no memfds.
pub(super) fn mapped_files(maps: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        // "start-end perms offset dev inode   path": the path is the 6th field
        // and may contain spaces.
        let mut rest = line;
        for _ in 0..5 {
            rest = rest.trim_start();
            rest = rest.find(char::is_whitespace).map_or("", |i| &rest[i..]);
        }
        let path = rest.trim();
        if !path.starts_with('/') || path.starts_with("/dev/") || path.ends_with(" (deleted)") {
            continue;
        }
        let p = PathBuf::from(path);
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Firmware an x86 QEMU reads (not maps) at start-up, under its root.
pub(super) const QEMU_FIRMWARE: [&str; 4] = [
    "/usr/share/qemu/bios-256k.bin",
    "/usr/share/qemu/kvmvapic.bin",
    "/usr/share/qemu/linuxboot_dma.bin",
    "/usr/share/qemu/multiboot_dma.bin",
];

/// What a VM's QEMU has mapped, from its pidfile (nothing if unknown), and
/// the firmware it reads at start-up.
pub(super) fn qemu_files(vm: &VmConfig) -> Vec<PathBuf> {
    let pidfile = vm.host_path(Path::new(&format!("/run/liveup/{}.pid", vm.name)));
    let Some(pid) = fs::read_to_string(pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return Vec::new();
    };
    let mut files =
        mapped_files(&fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default());
    files.extend(
        QEMU_FIRMWARE
            .iter()
            .map(|f| vm.host_path(Path::new(f)))
            .filter(|p| p.exists()),
    );
    files
}

/// Start reading `files` into the page cache (POSIX_FADV_WILLNEED queues
/// the reads and returns). Returns the bytes asked for.
pub(super) fn read_ahead(files: &[PathBuf]) -> u64 {
    use std::os::fd::AsRawFd;
    let mut bytes = 0;
    for p in files {
        let Ok(f) = fs::File::open(p) else { continue };
        // SAFETY: plain syscall on an open fd.
        if unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) } == 0 {
            bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    bytes
}

#[cfg(test)]
mod tests;
