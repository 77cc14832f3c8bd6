//! Host kernel hot-upgrade: `liveup vm start`, `liveup upgrade`, `liveup restore`.
//!
//! Guest RAM lives in a KRAM area (QEMU maps /dev/kram at the area's offset,
//! share=on), so across kexec only device state has to be saved. `upgrade`
//! checks everything first (preflight), loads the new kernel, and only then
//! stops the VMs: each QEMU saves its device state in cpr-reboot mode with
//! x-ignore-shared (guest RAM is not copied), liveup stores the states and
//! the VMs' command lines in the KRAM area `liveup-state`, and kexecs. In the
//! new kernel `restore` reads them back, relaunches each QEMU with
//! `-incoming defer`, loads the state and lets the guest run.
//!
//! Times are taken with the TSC, which keeps counting through kexec; its
//! rate is calibrated against CLOCK_MONOTONIC on each side.

use crate::kram::Kram;
use crate::qmp::Qmp;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::ffi::CString;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// KRAM area holding the manifest and saved device states.
pub const STATE_AREA: &str = "liveup-state";
const STATE_AREA_BYTES: u64 = 16 << 20;
const MAGIC: &[u8; 8] = b"LIVEUPv1";
const HEADER: usize = 64;
/// Saved device states start here; the manifest JSON sits between the header and this.
const BLOB_BASE: usize = 1 << 20;

/// How to (re)launch one VM. Paths are as QEMU sees them (inside `root`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    fn host_path(&self, p: &Path) -> PathBuf {
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }
    fn qmp_host(&self) -> PathBuf {
        self.host_path(&self.qmp)
    }
    fn state_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/liveup/{}.state", self.name))
    }
    fn command(&self, incoming: bool) -> Command {
        let mut c = if self.root == Path::new("/") {
            Command::new(&self.argv[0])
        } else {
            let mut c = Command::new("chroot");
            c.arg(&self.root).arg(&self.argv[0]);
            c
        };
        c.args(&self.argv[1..]);
        if incoming {
            c.args(["-incoming", "defer"]);
        }
        c
    }
}

/// Directory (outside any chroot) where VM configs live while they run.
pub fn run_dir() -> PathBuf {
    PathBuf::from(std::env::var("LIVEUP_RUN_DIR").unwrap_or_else(|_| "/run/liveup".into()))
}

/// Fault injection for tests: LIVEUP_FAIL=<step> makes that step fail.
fn fault(step: &str) -> Result<()> {
    if std::env::var("LIVEUP_FAIL").is_ok_and(|s| s == step) {
        bail!("injected failure at step '{step}' (LIVEUP_FAIL)");
    }
    Ok(())
}

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// TSC ticks per second, measured against CLOCK_MONOTONIC over 50 ms.
pub fn tsc_hz() -> f64 {
    let (t0, c0) = (Instant::now(), rdtsc());
    std::thread::sleep(Duration::from_millis(50));
    let (t1, c1) = (Instant::now(), rdtsc());
    (c1 - c0) as f64 / (t1 - t0).as_secs_f64()
}

fn spawn_qemu(vm: &VmConfig, incoming: bool) -> Result<()> {
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

/// Preflight for a VM with passed-through devices: its QEMU must take them
/// back after the kexec without a reset ([`KEEP_PROPERTY`]).
fn check_passthrough(vm: &VmConfig, q: &mut Qmp) -> Result<()> {
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
    // the area (2 MiB-aligned when 2 MiB or more) agree.
    argv.extend([
        "-object".into(),
        format!(
            "memory-backend-file,id=ram0,size={},mem-path={},offset={},share=on,align=2M",
            pages * crate::kram::PAGE_SIZE,
            ram_device(extra),
            area.offset
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
    Qmp::connect(vm.qmp_host(), Duration::ZERO)
        .and_then(|mut q| q.status())
        .unwrap_or_else(|_| "unreachable".into())
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
    fs::remove_file(&rec)?;
    if let (true, Some(k)) = (delete_area, kram) {
        // The module refuses (EBUSY) while QEMU's mapping of the area is
        // left: with the pid unknown, the socket may close before that.
        loop {
            match k.delete(&vm.area) {
                Err(e) if e.is_busy() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                r => break r?,
            }
        }
    }
    Ok(())
}

/// What `upgrade` leaves in KRAM for `restore`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub tsc_hz: f64,
    /// TSC when the first VM was stopped.
    pub t_blackout: u64,
    /// TSC when all states were saved and stored.
    pub t_saved: u64,
    /// TSC right before kexec.
    pub t_kexec: u64,
    pub vms: Vec<SavedVm>,
    /// Files the QEMUs had mapped (binary, libraries, modules), as paths
    /// outside any chroot: restore asks for them to be read ahead before it
    /// starts QEMU, so start-up does not fault them in one by one from a
    /// cold page cache.
    #[serde(default)]
    pub preload: Vec<PathBuf>,
    /// TSC ticks spent freezing a kept device's IOMMU tables (0: none).
    #[serde(default)]
    pub freeze_ticks: u64,
}

/// The files of a /proc/PID/maps text: absolute paths of file mappings,
/// each once, in order; no devices, no deleted files, no memfds.
fn mapped_files(maps: &str) -> Vec<PathBuf> {
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
const QEMU_FIRMWARE: [&str; 4] = [
    "/usr/share/qemu/bios-256k.bin",
    "/usr/share/qemu/kvmvapic.bin",
    "/usr/share/qemu/linuxboot_dma.bin",
    "/usr/share/qemu/multiboot_dma.bin",
];

/// What a VM's QEMU has mapped, from its pidfile (nothing if unknown), and
/// the firmware it reads at start-up.
fn qemu_files(vm: &VmConfig) -> Vec<PathBuf> {
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
fn read_ahead(files: &[PathBuf]) -> u64 {
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

#[derive(Debug, Serialize, Deserialize)]
pub struct SavedVm {
    pub config: VmConfig,
    pub state_offset: u64,
    pub state_len: u64,
    pub state_crc: u32,
    /// TSC ticks from the first VM stopping to this VM's state read back
    /// (saves run side by side: the save phase is the largest of these).
    pub save_ticks: u64,
}

fn state_area(kram: &Kram) -> Result<crate::kram::Area> {
    Ok(kram.ensure(STATE_AREA, STATE_AREA_BYTES / crate::kram::PAGE_SIZE)?)
}

/// Write header + manifest JSON + blobs into the state area.
fn store(kram: &Kram, manifest: &Manifest, blobs: &[Vec<u8>]) -> Result<()> {
    let area = state_area(kram)?;
    let mut m = kram.map(&area)?;
    let json = serde_json::to_vec(manifest)?;
    ensure!(
        HEADER + json.len() <= BLOB_BASE,
        "manifest too large ({} bytes)",
        json.len()
    );
    let total = BLOB_BASE + blobs.iter().map(Vec::len).sum::<usize>();
    ensure!(
        total <= m.len(),
        "saved state ({total} bytes) does not fit the {} byte KRAM area",
        m.len()
    );
    m[HEADER..HEADER + json.len()].copy_from_slice(&json);
    for (b, v) in blobs.iter().zip(&manifest.vms) {
        let off = v.state_offset as usize;
        m[off..off + b.len()].copy_from_slice(b);
    }
    // Header last: until it is written the area holds no valid manifest.
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&(json.len() as u64).to_le_bytes());
    h[16..20].copy_from_slice(&kram_format::crc32c(&json).to_le_bytes());
    h[20..24].copy_from_slice(&0u32.to_le_bytes()); // restored flag
    m[..HEADER].copy_from_slice(&h);
    Ok(())
}

/// Make the state area hold no manifest (its header zeroed): after an
/// upgrade aborted before kexec the VMs run on, and their saved device state
/// is older than their RAM from then on; a later `restore` must not load it.
fn invalidate_state(kram: &Kram) -> Result<()> {
    let area = match kram.lookup(STATE_AREA) {
        Ok(a) => a,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut m = kram.map(&area)?;
    m[..HEADER].fill(0);
    Ok(())
}

/// The TSC frequency (kHz) a VM's vCPUs run at: QEMU's `tsc-frequency` of
/// its first CPU, which QEMU took from KVM (the host's tsc_khz) when the VM
/// started and carries in its saved state ever since.
fn vm_tsc_khz(q: &mut Qmp) -> Result<u64> {
    let cpus = q.execute("query-cpus-fast", json!({}))?;
    let path = cpus
        .get(0)
        .and_then(|c| c["qom-path"].as_str())
        .context("query-cpus-fast lists no CPU")?
        .to_string();
    let hz = q.execute(
        "qom-get",
        json!({"path": path, "property": "tsc-frequency"}),
    )?;
    Ok(hz.as_u64().context("tsc-frequency is not a number")? / 1000)
}

/// The TSC frequency the next kernel must keep (`tsc_known_khz=`,
/// patches/0005): the one the VMs run at. VMs that disagree (started under
/// kernels that calibrated differently) get the first one's, with a note;
/// 0 (QEMU did not know it) counts for nothing.
fn pick_tsc_khz(vms: &[(String, u64)]) -> (Option<u64>, Option<String>) {
    let known: Vec<&(String, u64)> = vms.iter().filter(|(_, k)| *k != 0).collect();
    let Some((first, khz)) = known.first() else {
        return (None, None);
    };
    let others: Vec<String> = known
        .iter()
        .filter(|(_, k)| k != khz)
        .map(|(n, k)| format!("{n} {k} kHz"))
        .collect();
    let note = (!others.is_empty()).then(|| {
        format!(
            "VMs run at different TSC frequencies; the next kernel keeps {first}'s {khz} kHz ({})",
            others.join(", ")
        )
    });
    (Some(*khz), note)
}

/// The VMs' TSC frequency as the next kernel's `tsc_known_khz=`, if it is
/// within 1% of the rate measured here (kernels' calibrations of one TSC
/// differ by 0.1-0.3%). Anything further off is not the frequency the VMs
/// started under (a QEMU that misreports, a kernel given a wrong value):
/// the next kernel calibrates for itself instead, and the message says why.
fn plausible_tsc_khz(khz: u64, measured_khz: f64) -> Result<u64, String> {
    let off = (khz as f64 - measured_khz) / measured_khz;
    if measured_khz > 0.0 && off.abs() <= 0.01 {
        Ok(khz)
    } else {
        Err(format!(
            "the VMs' TSC frequency {khz} kHz is {:+.2}% off the {measured_khz:.0} kHz measured here: \
             not passed to the next kernel (it calibrates its own; a VM may warn of a TSC frequency mismatch)",
            100.0 * off
        ))
    }
}

/// `cmdline` with `key=value` as its only `key=` word.
fn set_param(cmdline: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key}=");
    let mut w: Vec<&str> = cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with(&prefix))
        .collect();
    let kv = format!("{prefix}{value}");
    w.push(&kv);
    w.join(" ")
}

/// Parse kernel command line for kexec: the current one plus `append`.
fn next_cmdline(append: Option<&str>, replace: Option<&str>) -> Result<String> {
    let base = match replace {
        Some(r) => r.to_string(),
        None => crate::keep::strip_one_shot(fs::read_to_string("/proc/cmdline")?.trim()),
    };
    Ok(match append {
        Some(a) => format!("{base} {a}"),
        None => base,
    })
}

fn kexec_load(kernel: &Path, initrd: Option<&Path>, cmdline: &str) -> Result<()> {
    let k = fs::File::open(kernel)
        .with_context(|| format!("cannot open kernel {}", kernel.display()))?;
    let i = initrd
        .map(|p| fs::File::open(p).with_context(|| format!("cannot open initrd {}", p.display())))
        .transpose()?;
    let c = CString::new(cmdline)?;
    let flags: libc::c_ulong = if i.is_none() { 4 } else { 0 }; // KEXEC_FILE_NO_INITRAMFS
                                                                // SAFETY: valid fds and a NUL-terminated command line of the given length.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            k.as_raw_fd(),
            i.as_ref().map_or(-1, |f| f.as_raw_fd()),
            c.as_bytes_with_nul().len(),
            c.as_ptr(),
            flags,
        )
    };
    ensure!(
        rc == 0,
        "kexec_file_load of {} failed: {}",
        kernel.display(),
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn kexec_unload() {
    // SAFETY: KEXEC_FILE_UNLOAD (1) takes no file arguments.
    unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            -1,
            -1,
            0usize,
            std::ptr::null::<u8>(),
            1 as libc::c_ulong,
        )
    };
}

pub struct UpgradeArgs<'a> {
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    pub append: Option<&'a str>,
    pub cmdline: Option<&'a str>,
    /// Do everything but the final kexec (for tests and dry runs).
    pub no_exec: bool,
    /// A passthrough device to keep doing DMA through the kexec, and
    /// iommu_preserve.ko (crate::keep).
    pub keep: Option<(&'a str, &'a Path)>,
}

/// `liveup upgrade`. Returns only if it did not kexec.
pub fn upgrade(kram: &Kram, a: &UpgradeArgs) -> Result<()> {
    // ---- preflight: nothing is touched if any of this fails ----
    let st = kram.status()?;
    ensure!(
        st.state == 0,
        "KRAM is not ready (errno {}): see `liveup kram status`",
        st.error
    );
    let vms = managed_vms()?;
    ensure!(
        !vms.is_empty(),
        "no managed VMs in {} (start them with `liveup vm start`)",
        run_dir().display()
    );
    let mut qmps = Vec::new();
    let mut tsc = Vec::new();
    for vm in &vms {
        let mut q = Qmp::connect(vm.qmp_host(), Duration::from_secs(5))
            .with_context(|| format!("VM {}", vm.name))?;
        let s = q.status()?;
        ensure!(s == "running", "VM {} is {s}, not running", vm.name);
        tsc.push((
            vm.name.clone(),
            vm_tsc_khz(&mut q).with_context(|| format!("VM {}: TSC frequency", vm.name))?,
        ));
        ensure!(
            vm.argv
                .iter()
                .any(|x| x.contains("mem-path=/dev/kram") && x.contains("share=on")),
            "VM {} does not keep its RAM in KRAM (share=on)",
            vm.name
        );
        kram.lookup(&vm.area)
            .with_context(|| format!("VM {}: KRAM area {}", vm.name, vm.area))?;
        check_passthrough(vm, &mut q)?;
        q.execute(
            "migrate-set-capabilities",
            json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
        )?;
        q.execute("migrate-set-parameters", json!({"mode": "cpr-reboot"}))
            .with_context(|| format!("VM {}: QEMU without cpr-reboot", vm.name))?;
        qmps.push(q);
    }
    state_area(kram)?;
    let mut preload: Vec<PathBuf> = Vec::new();
    for vm in &vms {
        for p in qemu_files(vm) {
            if !preload.contains(&p) {
                preload.push(p);
            }
        }
    }
    let keep = match a.keep {
        Some((dev, module)) => Some(crate::keep::KeptDevice::preflight(kram, dev, module)?),
        None => None,
    };
    fault("preflight")?;
    let mut cmdline = next_cmdline(a.append, a.cmdline)?;
    // The next kernel runs the TSC at the VMs' frequency instead of
    // calibrating it anew (a restored VM's QEMU asks KVM for the frequency
    // it started with; without TSC scaling KVM can give it only if equal).
    let (khz, note) = pick_tsc_khz(&tsc);
    if let Some(n) = note {
        eprintln!("liveup: {n}");
    }
    // QEMU's figure is a QEMU process's word: only one close to the rate
    // this kernel runs the TSC at goes on the next kernel's command line.
    match khz.map(|k| plausible_tsc_khz(k, tsc_hz() / 1000.0)) {
        Some(Ok(khz)) => cmdline = set_param(&cmdline, "tsc_known_khz", &khz.to_string()),
        Some(Err(why)) => eprintln!("liveup: {why}"),
        None => {}
    }
    if let Some(k) = &keep {
        cmdline = format!("{cmdline} {}", k.cmdline());
    }
    kexec_load(a.kernel, a.initrd, &cmdline)?;
    let hz = tsc_hz();

    // ---- blackout ----
    let t_blackout = rdtsc();
    let mut stopped: Vec<usize> = Vec::new();
    let mut frozen = false;
    let result = (|| -> Result<Manifest> {
        let mut saved = Vec::new();
        let mut blobs = Vec::new();
        // Every VM stops at once (a cpr-reboot save stops its guest as it
        // starts) and the saves run side by side, so the blackout does not
        // grow by one save per VM; then each is waited for in turn.
        for (i, (vm, q)) in vms.iter().zip(qmps.iter_mut()).enumerate() {
            let _ = fs::remove_file(vm.host_path(&vm.state_path()));
            stopped.push(i);
            q.execute(
                "migrate",
                json!({"uri": format!("file:{}", vm.state_path().display())}),
            )
            .with_context(|| format!("VM {}: cpr-reboot save", vm.name))?;
        }
        for (vm, q) in vms.iter().zip(qmps.iter_mut()) {
            q.wait_migration("migrate (cpr-reboot save)", Duration::from_secs(60))
                .with_context(|| format!("VM {}", vm.name))?;
            fault("after-save")?;
            let blob = fs::read(vm.host_path(&vm.state_path()))?;
            saved.push(SavedVm {
                config: vm.clone(),
                state_offset: 0,
                state_len: blob.len() as u64,
                state_crc: kram_format::crc32c(&blob),
                // from the first stop to this VM's state being read back
                save_ticks: rdtsc() - t_blackout,
            });
            blobs.push(blob);
        }
        // The VMMs are stopped: the kept device's tables no longer change.
        let t_freeze = rdtsc();
        if let Some(k) = &keep {
            fault("freeze")?;
            k.freeze()?;
            frozen = true;
        }
        let freeze_ticks = if frozen { rdtsc() - t_freeze } else { 0 };
        let mut m = Manifest {
            tsc_hz: hz,
            t_blackout,
            t_saved: 0,
            t_kexec: 0,
            vms: saved,
            preload: preload.clone(),
            freeze_ticks,
        };
        let mut off = BLOB_BASE as u64;
        for v in m.vms.iter_mut() {
            v.state_offset = off;
            off += v.state_len;
        }
        m.t_saved = rdtsc();
        m.t_kexec = m.t_saved;
        store(kram, &m, &blobs)?;
        fault("before-kexec")?;
        Ok(m)
    })();
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            // Nothing is lost: guest RAM never moved; the kept device goes
            // back to this kernel's tables; resume every VM we stopped.
            if let (true, Some(k)) = (frozen, &keep) {
                if let Err(t) = k.thaw() {
                    eprintln!("liveup: {t:#}");
                }
            }
            // The saved state, if stored, is stale once a VM runs again.
            if let Err(t) = invalidate_state(kram) {
                eprintln!("liveup: cannot invalidate the saved state: {t:#}");
            }
            // A save may still run (they run side by side): cancel it and
            // let it end before `cont`, which QEMU refuses mid-migration.
            for &i in &stopped {
                let q = &mut qmps[i];
                let _ = q.execute("migrate_cancel", json!({}));
                let _ = q.wait_migration("migrate_cancel", Duration::from_secs(10));
                let _ = q.execute("cont", json!({}));
            }
            // They were stopped, their kvmclock with them: their wall clocks
            // are behind by the pause, as after a restore.
            set_clocks(stopped.iter().map(|&i| &vms[i]));
            kexec_unload();
            return Err(
                e.context("upgrade aborted before kexec; the VMs were resumed where they were")
            );
        }
    };
    eprintln!(
        "liveup: {} VM(s) saved in {:.1} ms; kexec",
        manifest.vms.len(),
        (manifest.t_saved - manifest.t_blackout) as f64 * 1e3 / hz
    );
    if a.no_exec {
        invalidate_state(kram)?;
        if let Some(k) = &keep {
            k.thaw()?;
        }
        for q in qmps.iter_mut() {
            let _ = q.execute("cont", json!({}));
        }
        set_clocks(vms.iter());
        kexec_unload();
        return Ok(());
    }
    // SAFETY: sync and reboot(2) with LINUX_REBOOT_CMD_KEXEC; a loaded image exists.
    unsafe {
        libc::sync();
        libc::reboot(libc::LINUX_REBOOT_CMD_KEXEC);
    }
    bail!("kexec failed: {}", std::io::Error::last_os_error())
}

/// After VMs ran again in this kernel (an aborted upgrade, --no-exec): set
/// their wall clocks through their guest agents, saying so on stderr.
fn set_clocks<'a>(vms: impl Iterator<Item = &'a VmConfig>) {
    for vm in vms {
        let c = crate::qga::fix_clock(&vm.root, &vm.argv);
        eprintln!("liveup: guest clock {}: {c}", vm.name);
    }
}

/// The marker `restore` writes to the kernel log as it starts.
const KMSG_MARK: &str = "liveup: restore starts";

/// Write the start marker into the kernel log (one write; read back after
/// the blackout by `init_to_mark_ms`).
fn mark_kmsg() -> bool {
    use std::io::Write;
    fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .and_then(|mut w| w.write_all(format!("{KMSG_MARK}\n").as_bytes()))
        .is_ok()
}

/// One /dev/kmsg record: its timestamp (microseconds, printk clock) and
/// message ("PRIO,SEQ,USEC,FLAGS[,...];MESSAGE\n[continuation lines]").
fn kmsg_record(rec: &str) -> Option<(u64, &str)> {
    let (head, rest) = rec.split_once(';')?;
    let usec = head.split(',').nth(2)?.parse().ok()?;
    Some((usec, rest.lines().next().unwrap_or("")))
}

/// Milliseconds from the kernel starting init ("Run /init as init
/// process") to the last start marker, both read back from /dev/kmsg.
fn init_to_mark_ms() -> Option<f64> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut r = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    let mut buf = vec![0u8; 8192];
    let mut recs = Vec::new();
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => recs.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            // A record overwritten while reading: go on with the next.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(_) => break,
        }
    }
    init_to_mark(recs.iter().map(String::as_str))
}

/// The milliseconds from init's start to the last start marker among
/// kernel log records; None when either is missing or the marker is
/// older than init (not of this boot).
fn init_to_mark<'a>(recs: impl Iterator<Item = &'a str>) -> Option<f64> {
    let (mut init, mut mark) = (None, None);
    for (t, msg) in recs.filter_map(kmsg_record) {
        if msg.starts_with("Run ") && msg.ends_with(" as init process") {
            init = Some(t);
        } else if msg == KMSG_MARK {
            mark = Some(t);
        }
    }
    let (i, m) = (init?, mark?);
    (m >= i).then(|| (m - i) as f64 / 1e3)
}

/// The breakdown rows from `kexec -e` to the restore's start (`to_restore`
/// ms), split where init started when `init_ms` (init to restore start)
/// is known.
fn kexec_rows(to_restore: f64, init_ms: Option<f64>) -> Vec<Phase> {
    let row = Phase::new;
    match init_ms.map(|v| v.clamp(0.0, to_restore)) {
        Some(i) => vec![
            row("kexec to init", to_restore - i),
            row("init to restore start", i),
        ],
        None => vec![row("kexec to restore start", to_restore)],
    }
}

/// One row of the downtime breakdown.
#[derive(Debug, Serialize)]
pub struct Phase {
    pub phase: String,
    pub ms: f64,
}

impl Phase {
    fn new(phase: &str, ms: f64) -> Self {
        Phase {
            phase: phase.into(),
            ms,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub vms: Vec<String>,
    pub phases: Vec<Phase>,
    /// From the first VM stopping to the last VM running again.
    pub downtime_ms: f64,
    /// Each VM's wall clock after it ran again (crate::qga).
    pub guest_clocks: Vec<(String, crate::qga::GuestClock)>,
}

/// Load a kernel module from a file with parameters (finit_module).
pub struct RestoreArgs<'a> {
    pub kram_module: Option<&'a Path>,
    /// Parameters for kram.ko; `None`: the region on /proc/cmdline.
    pub kram_params: Option<&'a str>,
    pub retry: bool,
}

/// `liveup restore`: relaunch the VMs `upgrade` saved.
pub fn restore(device: &str, a: &RestoreArgs) -> Result<Option<Report>> {
    let t_start = rdtsc();
    let marked = mark_kmsg();
    if let Some(m) = a.kram_module {
        crate::kram::load_module(m, a.kram_params)?;
    }
    let t_kram = rdtsc();
    let kram = Kram::open(device)?;
    let st = kram.status()?;
    ensure!(
        st.state == 0,
        "KRAM metadata refused (errno {}): the saved VMs are still in the region; fix it and run `liveup restore --retry`",
        st.error
    );
    let area = match kram.lookup(STATE_AREA) {
        Ok(a) => a,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut m = kram.map(&area)?;
    if &m[..8] != MAGIC {
        return Ok(None);
    }
    let len = u64::from_le_bytes(m[8..16].try_into()?) as usize;
    let crc = u32::from_le_bytes(m[16..20].try_into()?);
    let restored = u32::from_le_bytes(m[20..24].try_into()?);
    // Restored once, completely: every VM has run since, so this state is
    // older than its RAM and must never be loaded again (not even by
    // --retry, which only finishes a restore that failed).
    if restored != 0 {
        return Ok(None);
    }
    ensure!(
        HEADER + len <= m.len(),
        "liveup state: manifest length {len} is corrupt"
    );
    let json = &m[HEADER..HEADER + len];
    ensure!(
        kram_format::crc32c(json) == crc,
        "liveup state: manifest checksum mismatch; nothing restored"
    );
    let man: Manifest = serde_json::from_slice(json).context("liveup state: bad manifest")?;
    let hz = man.tsc_hz;
    let ms = |ticks: u64| ticks as f64 * 1e3 / hz;
    // Check every saved state, then start all QEMUs at once (QEMU start-up
    // dominates restore), then load and resume each VM.
    let mut todo = Vec::new();
    for v in &man.vms {
        let vm = &v.config;
        let (o, l) = (v.state_offset as usize, v.state_len as usize);
        ensure!(
            o + l <= m.len(),
            "liveup state: VM {} state out of range",
            vm.name
        );
        let blob = &m[o..o + l];
        ensure!(
            kram_format::crc32c(blob) == v.state_crc,
            "liveup state: VM {} state checksum mismatch",
            vm.name
        );
        if a.retry && vm_status(vm) == "running" {
            continue;
        }
        fs::create_dir_all(vm.host_path(Path::new("/run/liveup")))?;
        fs::write(vm.host_path(&vm.state_path()), blob)?;
        todo.push(vm);
    }
    fault("restore-qemu")?;
    let t0 = rdtsc();
    // Queue the reads of what QEMU maps just before starting it. Measured
    // in the rig (make check-upgrade, 3 runs each): queued right after the
    // manifest, the queueing alone took 180-240 ms before any QEMU started
    // and downtime did not improve (6.99-7.88 s vs 6.70-7.09 s).
    let ahead = read_ahead(&man.preload);
    if ahead > 0 {
        eprintln!(
            "liveup: reading ahead {} files QEMU maps ({} MiB)",
            man.preload.len(),
            ahead >> 20
        );
    }
    std::thread::scope(|s| -> Result<()> {
        let spawned: Vec<_> = todo
            .iter()
            .map(|vm| s.spawn(move || spawn_qemu(vm, true)))
            .collect();
        for h in spawned {
            h.join()
                .map_err(|_| anyhow::anyhow!("QEMU start thread panicked"))??;
        }
        Ok(())
    })?;
    // Managed again from here on, whatever happens next (a failed restore
    // leaves every VM visible to `vm list` and `restore --retry`).
    fs::create_dir_all(run_dir())?;
    for vm in &todo {
        fs::write(
            run_dir().join(format!("{}.json", vm.name)),
            serde_json::to_vec_pretty(vm)?,
        )?;
    }
    let mut qmps = Vec::new();
    for vm in &todo {
        qmps.push(
            Qmp::connect(vm.qmp_host(), Duration::from_secs(30))
                .with_context(|| format!("VM {}", vm.name))?,
        );
    }
    let t1 = rdtsc();
    for (vm, q) in todo.iter().zip(qmps.iter_mut()) {
        q.execute(
            "migrate-set-capabilities",
            json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
        )?;
        q.execute("migrate-set-parameters", json!({"mode": "cpr-reboot"}))?;
        q.execute(
            "migrate-incoming",
            json!({"uri": format!("file:{}", vm.state_path().display())}),
        )?;
    }
    for q in qmps.iter_mut() {
        q.wait_migration("migrate-incoming", Duration::from_secs(60))?;
    }
    let t2 = rdtsc();
    for (vm, q) in todo.iter().zip(qmps.iter_mut()) {
        let st = q.status()?;
        if st != "running" {
            q.execute("cont", json!({}))
                .with_context(|| format!("VM {} is {st} after loading its state", vm.name))?;
        }
    }
    let t_end = rdtsc();
    let (qemu_start, load, resume) = (t1 - t0, t2 - t1, t_end - t2);
    // Split kexec-to-restore where the kernel started init (read back from
    // the kernel log now that the VMs run; without it the split is left
    // out and the row says so).
    let to_restore = ms(t_start.saturating_sub(man.t_kexec));
    let init_ms = marked.then(init_to_mark_ms).flatten();
    m[20..24].copy_from_slice(&1u32.to_le_bytes());
    // The saves overlap (all VMs stop at once): the phase ends with the last.
    let save: u64 = man.vms.iter().map(|v| v.save_ticks).max().unwrap_or(0);
    let row = Phase::new;
    let mut phases = vec![row("stop + save device state", ms(save))];
    if man.freeze_ticks != 0 {
        phases.push(row("freeze kept device's IOMMU", ms(man.freeze_ticks)));
    }
    phases.push(row(
        "store state in KRAM",
        ms(man.t_saved - man.t_blackout - save - man.freeze_ticks),
    ));
    phases.extend(kexec_rows(to_restore, init_ms));
    phases.extend([
        row("module load + KRAM adoption", ms(t_kram - t_start)),
        row("state checks", ms(t0 - t_kram)),
        row("QEMU start", ms(qemu_start)),
        row("state load", ms(load)),
        row("resume", ms(resume)),
    ]);
    // The guests run again: set their wall clocks, which are behind by the
    // pause (kvmclock went on from where it stopped), through their agents;
    // outside the downtime, and each bounded by qga::TIMEOUT.
    let guest_clocks = todo
        .iter()
        .map(|vm| (vm.name.clone(), crate::qga::fix_clock(&vm.root, &vm.argv)))
        .collect();
    let report = Report {
        vms: man.vms.iter().map(|v| v.config.name.clone()).collect(),
        phases,
        downtime_ms: ms(t_end.saturating_sub(man.t_blackout)),
        guest_clocks,
    };
    fs::write(
        run_dir().join("last-upgrade.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    Ok(Some(report))
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "host kernel upgrade: VMs {}", self.vms.join(", "))?;
        for p in &self.phases {
            writeln!(f, "  {:<30} {:>10.1} ms", p.phase, p.ms)?;
        }
        writeln!(
            f,
            "  {:<30} {:>10.1} ms",
            "downtime (first stop to last resume)", self.downtime_ms
        )?;
        for (vm, c) in &self.guest_clocks {
            writeln!(f, "  guest clock {vm}: {c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> VmConfig {
        VmConfig {
            name: "vm1".into(),
            root: "/mnt".into(),
            argv: vec!["qemu-system-x86_64".into(), "-m".into(), "256M".into()],
            qmp: "/run/liveup/vm1.qmp".into(),
            area: "vm-vm1".into(),
        }
    }

    #[test]
    fn kmsg_records() {
        assert_eq!(
            kmsg_record("6,339,5140900,-;Run /init as init process\n"),
            Some((5140900, "Run /init as init process"))
        );
        assert_eq!(
            kmsg_record("12,1020,9002311,-,caller=T1;liveup: restore starts\n SUBSYSTEM=x\n"),
            Some((9002311, KMSG_MARK))
        );
        assert_eq!(kmsg_record("6,339;no timestamp"), None);
        assert_eq!(kmsg_record("garbage"), None);
    }

    #[test]
    fn init_to_marker_from_kernel_log_records() {
        let init = "6,339,5140900,-;Run /init as init process\n";
        let mark = "12,1020,5791400,-,caller=T1;liveup: restore starts\n";
        let later = "12,1090,6000000,-;liveup: restore starts\n";
        assert_eq!(init_to_mark([init, mark].into_iter()), Some(650.5));
        // the last marker counts (restore --retry writes another)
        assert_eq!(init_to_mark([init, mark, later].into_iter()), Some(859.1));
        // either record missing, or a marker before init: no split
        assert_eq!(init_to_mark([mark].into_iter()), None);
        assert_eq!(init_to_mark([init, "garbage"].into_iter()), None);
        let early = "12,1,100,-;liveup: restore starts\n";
        assert_eq!(init_to_mark([early, init].into_iter()), None);
    }

    #[test]
    fn kexec_rows_split_at_init_only_when_known() {
        let names = |r: Vec<Phase>| -> Vec<(String, f64)> {
            r.into_iter().map(|p| (p.phase, p.ms)).collect()
        };
        assert_eq!(
            names(kexec_rows(4000.0, Some(650.0))),
            [
                ("kexec to init".into(), 3350.0),
                ("init to restore start".into(), 650.0)
            ]
        );
        assert_eq!(
            names(kexec_rows(4000.0, None)),
            [("kexec to restore start".into(), 4000.0)]
        );
        // an init time beyond the whole span is clamped, never negative
        assert_eq!(
            names(kexec_rows(400.0, Some(650.0))),
            [
                ("kexec to init".into(), 0.0),
                ("init to restore start".into(), 400.0)
            ]
        );
    }

    #[test]
    fn paths_inside_the_chroot_map_to_the_host() {
        let v = vm();
        assert_eq!(v.qmp_host(), PathBuf::from("/mnt/run/liveup/vm1.qmp"));
        assert_eq!(
            v.host_path(&v.state_path()),
            PathBuf::from("/mnt/run/liveup/vm1.state")
        );
        let c = v.command(true);
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(c.get_program(), "chroot");
        assert_eq!(
            args,
            [
                "/mnt",
                "qemu-system-x86_64",
                "-m",
                "256M",
                "-incoming",
                "defer"
            ]
        );
    }

    #[test]
    fn mapped_files_lists_each_file_once() {
        let maps = "\
55d0c0000000-55d0c0100000 r--p 00000000 fe:00 1234   /usr/bin/qemu-system-x86_64
55d0c0100000-55d0c0900000 r-xp 00100000 fe:00 1234   /usr/bin/qemu-system-x86_64
7f0000000000-7f0010000000 rw-s 00000000 00:05 77     /dev/kram
7f0010000000-7f0010001000 rw-s 00000000 00:01 88     /memfd:ram (deleted)
7f0010001000-7f0010002000 r--p 00000000 fe:00 99     /usr/lib/x86_64-linux-gnu/lib with space.so
7f0010002000-7f0010003000 r--p 00000000 fe:00 98     /tmp/gone (deleted)
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0      [stack]
7ffd00021000-7ffd00022000 rw-p 00000000 00:00 0
";
        assert_eq!(
            super::mapped_files(maps),
            vec![
                std::path::PathBuf::from("/usr/bin/qemu-system-x86_64"),
                std::path::PathBuf::from("/usr/lib/x86_64-linux-gnu/lib with space.so"),
            ]
        );
    }

    #[test]
    fn fault_injection_names_the_step() {
        std::env::set_var("LIVEUP_FAIL", "after-save");
        assert!(fault("preflight").is_ok());
        let e = fault("after-save").unwrap_err().to_string();
        assert!(e.contains("after-save"), "{e}");
        std::env::remove_var("LIVEUP_FAIL");
    }

    #[test]
    fn the_tsc_advances_at_a_plausible_rate() {
        let hz = tsc_hz();
        assert!(hz > 1e7 && hz < 1e11, "{hz}");
    }

    #[test]
    fn the_next_kernel_keeps_the_vms_tsc_frequency() {
        let v = |n: &str, k| (n.to_string(), k);
        assert_eq!(pick_tsc_khz(&[]), (None, None));
        assert_eq!(pick_tsc_khz(&[v("a", 0)]), (None, None));
        assert_eq!(
            pick_tsc_khz(&[v("a", 2293273), v("b", 2293273)]),
            (Some(2293273), None)
        );
        let (k, note) = pick_tsc_khz(&[v("a", 0), v("b", 2300026), v("c", 2293273)]);
        assert_eq!(k, Some(2300026));
        assert!(note.unwrap().contains("b's 2300026 kHz (c 2293273 kHz)"));
        assert_eq!(
            set_param("ro tsc_known_khz=1 quiet", "tsc_known_khz", "2293273"),
            "ro quiet tsc_known_khz=2293273"
        );
        assert_eq!(set_param("", "tsc_known_khz", "5"), "tsc_known_khz=5");
    }

    #[test]
    fn command_lines_append() {
        assert_eq!(
            next_cmdline(Some("x=1"), Some("console=ttyS0")).unwrap(),
            "console=ttyS0 x=1"
        );
        assert_eq!(next_cmdline(None, Some("a")).unwrap(), "a");
    }

    #[test]
    fn passed_through_devices_are_found_on_the_command_line() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            passthrough_devices(&a(&[
                "-device",
                "vfio-pci,host=0000:01:00.0,id=nic0",
                "-device",
                "virtio-net-pci,netdev=n0",
                "-device",
                "driver=vfio-pci,sysfsdev=/sys/bus/pci/devices/0000:02:00.0",
                "-device",
                "vfio-pci,id=x",
            ])),
            [
                "0000:01:00.0",
                "/sys/bus/pci/devices/0000:02:00.0",
                "(no host=)"
            ]
        );
        // other devices, and names that only contain it, are not
        assert!(passthrough_devices(&a(&[
            "-device",
            "vfio-pci-nohotplug2,host=1",
            "-name",
            "vfio-pci"
        ]))
        .is_empty());
        assert!(passthrough_devices(&a(&["-device", "e1000e,id=vfio-pci"])).is_empty());
    }

    #[test]
    fn ram_that_devices_pin_is_mapped_from_kram_pages() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ram_device(&a(&["-kernel", "k", "-serial", "stdio"])),
            "/dev/kram"
        );
        assert_eq!(
            ram_device(&a(&["-drive", "file=d.img,if=virtio,format=raw"])),
            "/dev/kram"
        );
        for pinned in [
            "file=d.img,if=virtio,format=raw,cache=none",
            "file=d.img,cache=directsync",
            "file=d.img,aio=native,cache.direct=on",
            "vfio-pci,host=0000:00:03.0",
            "tap,id=n0,vhost=on",
        ] {
            assert_eq!(
                ram_device(&a(&["-x", pinned])),
                "/dev/kram-pages",
                "{pinned}"
            );
        }
        // a word that only contains one of them is not one
        assert_eq!(ram_device(&a(&["-name", "cache=nonesuch"])), "/dev/kram");
    }

    #[test]
    fn only_a_plausible_tsc_frequency_is_handed_on() {
        assert_eq!(plausible_tsc_khz(2_300_026, 2_293_273.0), Ok(2_300_026));
        let e = plausible_tsc_khz(4_000_000, 2_293_273.0).unwrap_err();
        assert!(e.contains("+74.42% off") && e.contains("not passed"), "{e}");
        assert!(plausible_tsc_khz(1, 2_293_273.0).is_err());
        assert!(plausible_tsc_khz(u64::MAX, 2_293_273.0).is_err());
        assert!(
            plausible_tsc_khz(2_293_273, 0.0).is_err(),
            "nothing measured"
        );
    }

    #[test]
    fn report_prints_every_phase_and_the_total() {
        let r = Report {
            vms: vec!["vm1".into()],
            phases: vec![Phase {
                phase: "state load".into(),
                ms: 1.5,
            }],
            downtime_ms: 42.0,
            guest_clocks: vec![
                ("vm1".into(), crate::qga::GuestClock::Set { behind_s: 12.5 }),
                ("vm2".into(), crate::qga::GuestClock::NoAgent),
            ],
        };
        let s = r.to_string();
        assert!(
            s.contains("state load") && s.contains("1.5") && s.contains("42.0"),
            "{s}"
        );
        assert!(
            s.contains("guest clock vm1: set by its guest agent (was 12.50 s behind)"),
            "{s}"
        );
        assert!(s.contains("guest clock vm2: no guest agent"), "{s}");
    }
}
