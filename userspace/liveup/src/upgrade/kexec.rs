//! The next kernel: its command line and the kexec_file_load(2) calls.

use anyhow::{bail, ensure, Context, Result};
use kram_format::cmdline::{find_region, Found};
use std::ffi::CString;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;

/// `cmdline` with `key=value` as its only `key=` word.
pub(super) fn set_param(cmdline: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key}=");
    let mut w: Vec<&str> = cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with(&prefix))
        .collect();
    let kv = format!("{prefix}{value}");
    w.push(&kv);
    w.join(" ")
}

/// The word `liveup upgrade` puts on the next kernel's command line: that
/// boot came from an upgrade, so KRAM must hold the saved VMs. A module
/// parameter in form (it has a dot), which the kernel ignores silently.
pub(crate) const UPGRADE_MARK: &str = "liveup.upgrade";

/// Whether the kernel command line `cmdline` is one `liveup upgrade` wrote
/// (`liveup.upgrade=1`; any other value is not the mark).
pub(crate) fn booted_by_upgrade(cmdline: &str) -> bool {
    let mark = format!("{UPGRADE_MARK}=1");
    cmdline.split_whitespace().any(|w| w == mark)
}

/// Parse kernel command line for kexec: the current one plus `append`.
pub(super) fn next_cmdline(append: Option<&str>, replace: Option<&str>) -> Result<String> {
    let base = match replace {
        Some(r) => r.to_string(),
        None => crate::keep::strip_one_shot(fs::read_to_string("/proc/cmdline")?.trim()),
    };
    Ok(match append {
        Some(a) => format!("{base} {a}"),
        None => base,
    })
}

/// The next kernel must reserve the KRAM region (`base`, `size`) that holds
/// the VMs' RAM the way this one does (`current`, this kernel's command
/// line): else it hands those pages out as ordinary memory and every VM's
/// memory is lost. A `memmap=` region must be the same range; a
/// `reserve_mem=` one is placed by the kernel, so only a `reserve_mem=`
/// (or the same `memmap=` range) may follow it.
pub(super) fn check_reservation(next: &str, current: &str, base: u64, size: u64) -> Result<()> {
    let region = format!("{size:#x} bytes at {base:#x}");
    let refuse = |what: &str| -> Result<()> {
        bail!(
            "the next kernel's command line {what}, not the KRAM region ({region}) that holds the VMs' RAM: refused before anything was stopped (the next kernel would hand that memory out)"
        )
    };
    match (find_region(next), find_region(current)) {
        (Ok(Found::Memmap(b, s)), _) if (b, s) == (base, size) => Ok(()),
        (Ok(Found::Memmap(b, s)), _) => {
            refuse(&format!("reserves {s:#x} bytes at {b:#x} (memmap=)"))
        }
        (Ok(Found::ReserveMem), Ok(Found::ReserveMem)) => Ok(()),
        (Ok(Found::ReserveMem), _) => {
            refuse("reserves reserve_mem=...:kram, which the kernel places anew")
        }
        (Err(e), _) => refuse(&format!("reserves no single region ({e:?})")),
    }
}

pub(super) fn kexec_load(kernel: &Path, initrd: Option<&Path>, cmdline: &str) -> Result<()> {
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

pub(super) fn kexec_unload() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_kernel_must_reserve_the_same_region() {
        let cur = "console=ttyS0 memmap=256M$0x100000000";
        let (b, s) = (0x1_0000_0000, 256 << 20);
        assert!(check_reservation(cur, cur, b, s).is_ok());
        assert!(check_reservation("quiet memmap=0x10000000$4G", cur, b, s).is_ok());
        for bad in [
            "console=ttyS0",
            "memmap=128M$0x100000000",
            "memmap=256M$0x200000000",
            "memmap=256M$0x100000000 memmap=64M$0x300000000",
            "reserve_mem=256M:2M:kram",
        ] {
            let e = check_reservation(bad, cur, b, s).unwrap_err().to_string();
            assert!(
                e.contains("refused before anything was stopped"),
                "{bad}: {e}"
            );
        }
        // A reserve_mem region may be followed by reserve_mem.
        let rm = "reserve_mem=256M:2M:kram";
        assert!(check_reservation(rm, rm, 0x1234_0000_0000, 256 << 20).is_ok());
        assert!(check_reservation("console=ttyS0", rm, 0x1234_0000_0000, 256 << 20).is_err());
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
    fn the_upgrade_mark() {
        let c = set_param("console=ttyS0 liveup.upgrade=1", UPGRADE_MARK, "1");
        assert_eq!(c, "console=ttyS0 liveup.upgrade=1");
        assert!(booted_by_upgrade(&c));
        assert!(!booted_by_upgrade("console=ttyS0 quiet"));
        assert!(!booted_by_upgrade("liveup.upgrades=1 xliveup.upgrade=1"));
        assert!(!booted_by_upgrade(
            "liveup.upgrade=0 liveup.upgrade= liveup.upgrade=10"
        ));
    }
}
