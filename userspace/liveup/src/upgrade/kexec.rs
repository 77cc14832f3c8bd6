//! The next kernel: its command line and the kexec_file_load(2) calls.

use anyhow::{ensure, Context, Result};
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
    fn command_lines_append() {
        assert_eq!(
            next_cmdline(Some("x=1"), Some("console=ttyS0")).unwrap(),
            "console=ttyS0 x=1"
        );
        assert_eq!(next_cmdline(None, Some("a")).unwrap(), "a");
    }
}
