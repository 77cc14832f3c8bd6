//! Mappings and privileges: pinning, refused maps, busy areas, faults, and
//! what an unprivileged caller gets.

use crate::data::pattern;
use anyhow::{bail, ensure, Context, Result};
use liveup::kram::{self, Kram, PAGE_SIZE};
use std::sync::atomic::{AtomicBool, Ordering};

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

pub fn unpriv(dev: &str) -> Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    let hdr = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills two CapData for version 3.
    ensure!(
        unsafe { libc::syscall(libc::SYS_capget, &hdr, data.as_mut_ptr()) } == 0,
        "capget failed"
    );
    data[0].effective &= !(1 << CAP_SYS_ADMIN);
    // SAFETY: capset reads two CapData for version 3.
    ensure!(
        unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) } == 0,
        "capset failed"
    );
    match Kram::open(dev) {
        Ok(_) => bail!("root without CAP_SYS_ADMIN opened {dev}"),
        Err(kram::KramError::Open { source, .. }) if source.raw_os_error() == Some(libc::EPERM) => {
            println!("without CAP_SYS_ADMIN: EPERM")
        }
        Err(e) => bail!("without CAP_SYS_ADMIN: expected EPERM, got {e}"),
    }
    // SAFETY: plain syscall.
    ensure!(unsafe { libc::setuid(65534) } == 0, "setuid failed");
    match Kram::open(dev) {
        Ok(_) => bail!("user nobody opened {dev}"),
        Err(e) => println!("as user nobody: refused ({e})"),
    }
    Ok(())
}

/// Write a pattern into the area through GUP (process_vm_writev with this
/// process as the remote), check it through the plain mapping, then read it
/// back through GUP (process_vm_readv).
pub fn pin(k: &Kram, area: &str, seed: u64) -> Result<()> {
    let a = k.lookup(area)?;
    let mut m = k.map(&a)?;
    let addr = m.as_ptr() as u64;
    let flags = std::fs::read_to_string("/proc/self/smaps")
        .unwrap_or_default()
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{addr:x}-")))
        .find_map(|l| l.strip_prefix("VmFlags:").map(|f| f.trim().to_string()))
        .unwrap_or_default();
    println!("vmflags={flags}");
    let mut want = vec![0u8; m.len()];
    for (i, page) in want.chunks_mut(PAGE_SIZE as usize).enumerate() {
        pattern(seed, i as u64, page);
    }
    // SAFETY: plain syscall.
    let pid = unsafe { libc::getpid() };
    let local = libc::iovec {
        iov_base: want.as_mut_ptr().cast(),
        iov_len: want.len(),
    };
    let remote = libc::iovec {
        iov_base: m.as_mut_ptr().cast(),
        iov_len: m.len(),
    };
    // SAFETY: both iovecs describe memory this process owns for their whole length.
    let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        println!("gup_error={}", e.raw_os_error().unwrap_or(0));
        bail!("process_vm_writev into area {area} (GUP on its mapping): {e}");
    }
    ensure!(
        n == m.len() as isize,
        "process_vm_writev into area {area}: {n} of {} bytes",
        m.len()
    );
    ensure!(
        m[..] == want[..],
        "what GUP wrote is not what the mapping shows"
    );
    let mut back = vec![0u8; m.len()];
    let local = libc::iovec {
        iov_base: back.as_mut_ptr().cast(),
        iov_len: back.len(),
    };
    // SAFETY: as above.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    ensure!(
        n == m.len() as isize,
        "process_vm_readv from area {area}: {}",
        std::io::Error::last_os_error()
    );
    ensure!(back == want, "what GUP read is not what was written");
    println!("pinned_bytes={}", m.len());
    Ok(())
}

pub fn bad_maps(dev: &str, area: &str) -> Result<()> {
    let k = Kram::open(dev)?;
    let a = k.lookup(area)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)?;
    let len = (a.npages * PAGE_SIZE) as usize;
    let page = PAGE_SIZE as usize;
    let cases: [(&str, i32, usize, u64); 4] = [
        ("private mapping", libc::MAP_PRIVATE, page, a.offset),
        ("metadata at offset 0", libc::MAP_SHARED, page, 0),
        (
            "past the area's end",
            libc::MAP_SHARED,
            len + page,
            a.offset,
        ),
        (
            "a superblock copy (page 1)",
            libc::MAP_SHARED,
            page,
            page as u64,
        ),
    ];
    for (what, flags, l, off) in cases {
        match crate::node::try_map(&f, l, off, flags) {
            Some(libc::EINVAL) => {}
            None => bail!("mmap of {what} succeeded on {dev}"),
            Some(e) => bail!(
                "mmap of {what} on {dev}: {}, not EINVAL",
                std::io::Error::from_raw_os_error(e)
            ),
        }
        println!("{what}: EINVAL");
    }
    Ok(())
}

pub fn busy(dev: &str, area: &str) -> Result<()> {
    let k = Kram::open(dev)?;
    let a = k.lookup(area)?;
    ensure!(a.npages >= 4, "area {area} has under 4 pages");
    let refused = |r: Result<(), kram::KramError>, what: &str| -> Result<()> {
        match r {
            Err(e) if e.is_busy() => Ok(()),
            other => bail!("{what}: {other:?}, not EBUSY"),
        }
    };
    let m = k.map(&a)?;
    refused(k.delete(area), "delete of a mapped area")?;
    refused(k.format(), "format with an area mapped")?;
    // Cut a hole: the mapping becomes two VMAs (a split).
    // SAFETY: page 1 of this process's own mapping, never touched again;
    // the MmapMut's drop unmaps the whole range, hole included (harmless).
    let r = unsafe {
        libc::munmap(
            m.as_ptr().add(PAGE_SIZE as usize) as *mut _,
            PAGE_SIZE as usize,
        )
    };
    ensure!(
        r == 0,
        "munmap of one page: {}",
        std::io::Error::last_os_error()
    );
    refused(k.delete(area), "delete after a partial munmap")?;
    // A child inherits both pieces and keeps them until the pipe closes.
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    ensure!(unsafe { libc::pipe(fds.as_mut_ptr()) } == 0, "pipe");
    // SAFETY: this process has one thread; the child only reads and exits.
    let pid = unsafe { libc::fork() };
    ensure!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let mut b = 0u8;
        // SAFETY: plain syscalls on the inherited pipe, then exit without
        // running the parent's destructors.
        unsafe {
            libc::close(fds[1]);
            libc::read(fds[0], (&raw mut b).cast(), 1);
            libc::_exit(0)
        }
    }
    // SAFETY: the child holds its own copy of the read end.
    unsafe { libc::close(fds[0]) };
    drop(m);
    let held = refused(k.delete(area), "delete while a forked child maps the area");
    // SAFETY: closing the write end lets the child exit; wait for it.
    unsafe {
        libc::close(fds[1]);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    held?;
    k.delete(area)
        .context("delete after the last mapping went")?;
    println!(
        "{area}: delete and format refused (EBUSY) while mapped, split and forked; deleted after"
    );
    Ok(())
}

pub fn faults(k: &Kram, area: &str, misalign: bool) -> Result<()> {
    const ALIGN: usize = 2 << 20;
    let a = k.lookup(area)?;
    let len = (a.npages * PAGE_SIZE) as usize;
    ensure!(len > 0, "area {area} has no fixed pages");
    // Reserve len + 2 MiB, then map the area over its 2 MiB-aligned part.
    // SAFETY: a fresh PROT_NONE reservation nothing else uses.
    let res = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len + ALIGN,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    ensure!(
        res != libc::MAP_FAILED,
        "reserve: {}",
        std::io::Error::last_os_error()
    );
    // `res` is page-aligned, so `at + len` ends inside the reservation
    // even when moved one page past the boundary.
    let at = (res as usize).next_multiple_of(ALIGN) + if misalign { PAGE_SIZE as usize } else { 0 };
    // SAFETY: `at..at + len` lies inside the reservation made above.
    let p = unsafe {
        libc::mmap(
            at as *mut _,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED,
            k.fd(),
            a.offset as libc::off_t,
        )
    };
    ensure!(
        p != libc::MAP_FAILED,
        "mmap of {area}: {}",
        std::io::Error::last_os_error()
    );
    let minflt = || {
        // SAFETY: an all-zero rusage is valid, and the kernel fills it.
        unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut ru);
            ru.ru_minflt
        }
    };
    let before = minflt();
    let t = std::time::Instant::now();
    for i in 0..a.npages as usize {
        // SAFETY: inside the shared mapping made above; a volatile read
        // and write back of one word (the contents stay as they were).
        unsafe {
            let w = (p as *mut u64).add(i * PAGE_SIZE as usize / 8);
            w.write_volatile(w.read_volatile());
        }
    }
    let us = t.elapsed().as_micros();
    let n = minflt() - before;
    // SAFETY: unmapping the reservation (the area's mapping is inside it).
    unsafe { libc::munmap(res, len + ALIGN) };
    println!("faults={n} pages={} us={us}", a.npages);
    Ok(())
}

/// `kram-selftest zero-race`: see its help in main.rs.
pub fn zero_race(dev: &str, area: &str, size_mib: u64) -> Result<()> {
    let npages = size_mib * (1 << 20) / PAGE_SIZE;
    ensure!(npages > 0, "size 0");
    let k = Kram::open(dev)?;
    match k.delete(area) {
        Err(e) if !e.is_not_found() => return Err(e.into()),
        _ => {}
    }
    // The previous owner's data, left in the run by its delete.
    let old = k.create(area, npages)?;
    k.map(&old)?.fill(0xa5);
    k.delete(area)?;
    let stop = AtomicBool::new(false);
    let (took, (busy, mapped, dirty)) = std::thread::scope(|s| -> Result<_> {
        let racer = s.spawn(|| -> Result<(u64, u64, u64)> {
            let k2 = Kram::open(dev)?;
            let (mut busy, mut mapped, mut dirty) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                let a = match k2.lookup(area) {
                    Ok(a) => a,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                let last = kram::Area {
                    offset: a.offset + (a.npages - 1) * PAGE_SIZE,
                    npages: 1,
                    ..a
                };
                match k2.map(&last) {
                    Ok(m) => {
                        mapped += 1;
                        if m.iter().any(|&b| b != 0) {
                            dirty += 1;
                        }
                    }
                    Err(kram::KramError::Map { source, .. })
                        if source.raw_os_error() == Some(libc::EBUSY) =>
                    {
                        busy += 1
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok((busy, mapped, dirty))
        });
        // Let the racer reach its loop first.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let t = std::time::Instant::now();
        let created = k.create(area, npages);
        let took = t.elapsed();
        stop.store(true, Ordering::SeqCst);
        let counts = racer
            .join()
            .map_err(|_| anyhow::anyhow!("racer panicked"))??;
        let new = created?;
        ensure!(
            new.offset == old.offset,
            "the new area went elsewhere ({:#x}, not {:#x}): no old data to race for",
            new.offset,
            old.offset
        );
        ensure!(
            k.map(&new)?.iter().all(|&b| b == 0),
            "area {area} is not all zero after its create"
        );
        Ok((took, counts))
    })?;
    println!(
        "create of {size_mib} MiB took {:.1} ms; the other opener was refused {busy} times (EBUSY), mapped the last page {mapped} times, read old data {dirty} times",
        took.as_secs_f64() * 1e3
    );
    ensure!(
        dirty == 0,
        "another opener read the previous owner's data {dirty} times"
    );
    ensure!(
        busy > 0,
        "the other opener was never refused while the area was zeroed: the race did not happen (or mmap is not refused during the zeroing)"
    );
    Ok(())
}
