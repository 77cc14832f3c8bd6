//! An area's own nodes (/dev/kram-area/ID, /dev/kram-pages-area/ID): what a
//! file of one reaches, and what it holds while open.

use crate::data::pattern;
use anyhow::{bail, ensure, Context, Result};
use liveup::kram::{self, Kram, PAGE_SIZE};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

/// mmap `len` bytes of `f` at `off`; the errno if refused (a mapping made
/// is unmapped again). Also `bad-maps`'s probe.
pub fn try_map(f: &File, len: usize, off: u64, flags: i32) -> Option<i32> {
    // SAFETY: a fresh mapping request, unmapped again if it succeeds.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            f.as_raw_fd(),
            off as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return std::io::Error::last_os_error().raw_os_error();
    }
    // SAFETY: the mapping just made.
    unsafe { libc::munmap(p, len) };
    None
}

/// Both nodes of `area`, which `fill` wrote with `seed`: offset 0 reads the
/// area's first page and the whole area reads back the pattern; a mapping
/// past its end, a private one and an ioctl are refused; while a file of
/// the node is open (nothing mapped) the area is neither deleted nor
/// formatted (EBUSY); the node of an id with no area opens with ENOENT.
pub fn node(dev: &str, area: &str, seed: u64) -> Result<()> {
    let k = Kram::open(dev)?;
    let a = k.lookup(area)?;
    let len = (a.npages * PAGE_SIZE) as usize;
    let page = PAGE_SIZE as usize;
    for base in [kram::DEFAULT_DEVICE, kram::PAGES_DEVICE] {
        let path = kram::area_node(base, a.id);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("open {path}"))?;
        {
            // SAFETY: a shared mapping of the area through its node, only
            // read here, unmapped at the end of this block.
            let m = unsafe { memmap2::MmapOptions::new().len(len).map(&f) }
                .with_context(|| format!("mmap of {len} bytes of {path}"))?;
            let mut want = vec![0u8; page];
            for (i, p) in m.chunks(page).enumerate() {
                pattern(seed, i as u64, &mut want);
                ensure!(
                    p == want.as_slice(),
                    "{path}: page {i} is not page {i} of {area} (region offset {:#x})",
                    a.offset
                );
            }
        }
        for (what, l, off, flags) in [
            (
                "one page more than the area",
                len + page,
                0,
                libc::MAP_SHARED,
            ),
            (
                "the page after the area",
                page,
                len as u64,
                libc::MAP_SHARED,
            ),
            ("a private mapping", page, 0, libc::MAP_PRIVATE),
        ] {
            match try_map(&f, l, off, flags) {
                Some(libc::EINVAL) => {}
                None => bail!("{path}: mmap of {what} succeeded"),
                Some(e) => bail!("{path}: mmap of {what}: errno {e}, not EINVAL"),
            }
        }
        let mut st = kram::Status::default();
        // SAFETY: STATUS writes one `Status` into `st`; the node answers no
        // ioctl at all, which is what is checked.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), kh_uapi::kram::IOC_STATUS as _, &raw mut st) };
        let e = std::io::Error::last_os_error().raw_os_error();
        ensure!(
            r == -1 && e == Some(libc::ENOTTY),
            "{path}: ioctl: {r} errno {e:?}, not ENOTTY"
        );
        for (what, r) in [("delete", k.delete(area)), ("format", k.format())] {
            match r {
                Err(e) if e.is_busy() => {}
                other => bail!("{what} while {path} is open: {other:?}, not EBUSY"),
            }
        }
        println!("{path}: the area from offset 0, nothing past it, no ioctl; delete and format EBUSY while open");
    }
    let used: Vec<u32> = k.areas()?.iter().map(|a| a.id).collect();
    let free = (1..=kh_uapi::kram::MAX_AREAS)
        .find(|i| !used.contains(i))
        .context("every area id is in use")?;
    let path = kram::area_node(kram::DEFAULT_DEVICE, free);
    ensure!(std::path::Path::new(&path).exists(), "{path}: no such node");
    match OpenOptions::new().read(true).write(true).open(&path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        other => bail!("open {path} (no area {free}): {other:?}, not ENOENT"),
    }
    println!("{path} (no area): ENOENT");
    Ok(())
}
