//! KVM users a kexec would kill: every process holding /dev/kvm open that
//! liveup does not manage. Their VMs are not saved, so `liveup upgrade`
//! refuses unless the operator says they may go (`--allow-unmanaged-kvm`).
//!
//! A process is found by its open files, not its name: /proc/PID/fd/N
//! stat()ed through the link is the opened file itself, so a QEMU in a
//! chroot or a container (whose /dev/kvm has another path) is found too.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// A process with /dev/kvm open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmUser {
    pub pid: i32,
    /// Its command name (/proc/PID/comm), for the message.
    pub comm: String,
}

/// The character device number of /dev/kvm (10:232 on Linux).
pub const KVM_RDEV: u64 = (10 << 8) | 232;

/// Processes under `proc_root` (normally /proc) with a character device of
/// number `rdev` open, except those in `skip`. Processes that vanish or
/// cannot be read while scanning are left out.
pub fn users_of(proc_root: &Path, rdev: u64, skip: &[i32]) -> Vec<KvmUser> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir(proc_root) else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if skip.contains(&pid) {
            continue;
        }
        let Ok(fds) = fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::metadata(fd.path())
                .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == rdev)
        });
        if holds {
            let comm = fs::read_to_string(e.path().join("comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            out.push(KvmUser { pid, comm });
        }
    }
    out.sort_by_key(|u| u.pid);
    out
}

/// The preflight verdict: an error naming every unmanaged user, unless
/// allowed (then a warning on stderr).
pub fn check(users: &[KvmUser], allow: bool) -> anyhow::Result<()> {
    if users.is_empty() {
        return Ok(());
    }
    let list = users
        .iter()
        .map(|u| format!("{} ({})", u.pid, u.comm))
        .collect::<Vec<_>>()
        .join(", ");
    if allow {
        log::warn!(
            "--allow-unmanaged-kvm: the kexec will end KVM users liveup does not manage: {list}"
        );
        return Ok(());
    }
    anyhow::bail!(
        "processes not managed by liveup use /dev/kvm: {list}; a kexec would end them and their VMs would be lost (stop them, start VMs with `liveup vm start`, or pass --allow-unmanaged-kvm)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake /proc: process 10 holds /dev/null (1:3) open, process 11 a
    /// regular file, "self" and "sys" are not processes.
    #[test]
    fn finds_holders_of_the_device_by_number_not_name() {
        let root = std::env::temp_dir().join(format!("liveup-foreign-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for p in ["10/fd", "11/fd", "12/fd", "sys"] {
            fs::create_dir_all(root.join(p)).unwrap();
        }
        fs::write(root.join("10/comm"), "qemu-system-x86\n").unwrap();
        symlink("/dev/null", root.join("10/fd/3")).unwrap();
        let f = root.join("plain");
        fs::write(&f, "x").unwrap();
        symlink(&f, root.join("11/fd/0")).unwrap();
        symlink("/dev/null", root.join("12/fd/7")).unwrap();
        let null = fs::metadata("/dev/null").unwrap().rdev();
        let got = users_of(&root, null, &[12]);
        assert_eq!(
            got,
            [KvmUser {
                pid: 10,
                comm: "qemu-system-x86".into()
            }]
        );
        assert!(users_of(&root, KVM_RDEV + 1, &[]).is_empty());
        let e = check(&got, false).unwrap_err().to_string();
        assert!(
            e.contains("10 (qemu-system-x86)") && e.contains("--allow-unmanaged-kvm"),
            "{e}"
        );
        assert!(check(&got, true).is_ok());
        assert!(check(&[], false).is_ok());
        fs::remove_dir_all(&root).unwrap();
    }
}
