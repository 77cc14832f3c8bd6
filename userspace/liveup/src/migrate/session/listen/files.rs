//! The files handed to an arriving VM's QEMU (kernel, initrd, disks):
//! opened and checked here, then given to QEMU as descriptors, and QEMU's
//! messages about those descriptors put back into the files' names.

use crate::upgrade::vm::under_root;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Open each file the description names (kernel, initrd, disks: a disk
/// read-write) and check the opened file itself: a regular file whose real
/// path (the descriptor's, from /proc/self/fd) lies inside its pool's real
/// directory. A pool is storage the source's host can write; a link to
/// `/dev/sda` or `/etc/shadow` is refused. QEMU then gets these
/// descriptors, never the paths, so a link swapped in after the check
/// changes nothing. `files` is [`VmSpec::files`]; returns each file by its
/// path as QEMU would see it, and whether it is a disk.
///
/// [`VmSpec::files`]: crate::migrate::spec::VmSpec::files
pub(super) fn open_files(
    files: Vec<(PathBuf, PathBuf, bool)>,
    root: &Path,
) -> Result<Vec<(PathBuf, bool, File)>, String> {
    let mut out = Vec::new();
    for (dir, file, disk) in files {
        let outside = || {
            format!(
                "{} is not a regular file inside its pool {} (a link out of it, or a device)",
                file.display(),
                dir.display()
            )
        };
        let d = fs::canonicalize(under_root(root, &dir))
            .map_err(|e| format!("pool directory {}: {e}", dir.display()))?;
        let host = under_root(root, &file);
        // by path first, so that nothing but a regular file in the pool
        // is ever opened (opening a FIFO blocks, a device may act)
        let f = fs::canonicalize(&host).map_err(|e| format!("{}: {e}", file.display()))?;
        if !f.starts_with(&d) || !fs::metadata(&f).is_ok_and(|m| m.is_file()) {
            return Err(outside());
        }
        // then the opened file itself: what QEMU gets (O_NONBLOCK: a
        // FIFO swapped in meanwhile does not block the open)
        let f = fs::OpenOptions::new()
            .read(true)
            .write(disk)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&host)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let real = fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
            .map_err(|e| format!("{}: {e}", file.display()))?;
        if !real.starts_with(&d) || !f.metadata().is_ok_and(|m| m.is_file()) {
            return Err(outside());
        }
        nix::fcntl::fcntl(
            &f,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        )
        .map_err(|e| format!("{}: {e}", file.display()))?;
        out.push((file, disk, f));
    }
    Ok(out)
}

/// The descriptors QEMU inherits, by the file's path as QEMU sees it (the
/// first where a path is named twice). A kernel or initrd is read through
/// /proc/self/fd/N, where QEMU's root has /proc (`proc_fds`). A disk is
/// checked the same way but still named by its path: given as descriptors
/// in an fd set, the set's members keep their open file descriptions, and
/// with them QEMU's image locks, alive across its read-only to read-write
/// reopen (check-migrate's migrated VM then failed `cont`: "Failed to get
/// shared "write" lock").
pub(super) fn descriptors(
    files: &[(PathBuf, bool, File)],
    proc_fds: bool,
) -> BTreeMap<PathBuf, i32> {
    let mut fds = BTreeMap::new();
    for (p, _, f) in files.iter().filter(|(_, disk, _)| proc_fds && !*disk) {
        fds.entry(p.clone()).or_insert(f.as_raw_fd());
    }
    fds
}

/// Each descriptor path QEMU is given (`/proc/self/fd/N`) and the file's
/// own path, longest first, to put QEMU's messages back into the files'
/// names.
pub(super) fn fd_names(fds: &BTreeMap<PathBuf, i32>) -> Vec<(String, String)> {
    let mut subst: Vec<(String, String)> = fds
        .iter()
        .map(|(p, fd)| (format!("/proc/self/fd/{fd}"), p.display().to_string()))
        .collect();
    // /proc/self/fd/12 before /proc/self/fd/1
    subst.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
    subst
}
