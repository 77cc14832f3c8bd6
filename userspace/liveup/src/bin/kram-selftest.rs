//! Helper for the KRAM selftests that run in the rig guest
//! (selftests/kram/*.sh). Each subcommand checks one behaviour of /dev/kram
//! and exits non-zero, with a message, when it does not hold.

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};
use liveup::kram::{self, Kram, RawPage, IOC_MAGIC, PAGE_SIZE};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value = kram::DEFAULT_DEVICE)]
    device: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a seeded pattern over an area through a shared mapping.
    Fill { area: String, seed: u64 },
    /// Check the pattern `fill` wrote.
    Verify { area: String, seed: u64 },
    /// Print an area's id, offset and size (to compare across kexec).
    Show { area: String },
    /// The checksum tools/guest/tinyvm.c computes over its RAM (FNV-1a over
    /// 32-bit little-endian words), over bytes START..END (hex) of an area
    /// that is a VM's RAM; printed in hex as the VM prints it.
    Sum {
        area: String,
        start: String,
        end: String,
    },
    /// Threads allocating and freeing pages of one area at once; a page
    /// handed out twice while held fails the test.
    Stress {
        area: String,
        threads: usize,
        iters: usize,
    },
    /// Random and malformed ioctls; afterwards every pre-existing area and
    /// the page counts must be as they were.
    Fuzz { iters: usize, seed: u64 },
    /// Without CAP_SYS_ADMIN, and as an unprivileged user, open must fail.
    Unpriv,
    /// Timings: alloc+free through the ioctl, and populating a mapping of
    /// an area against anonymous memory of the same size.
    Bench {
        area: String,
        pool: String,
        iters: usize,
    },
    /// Allocate one page for an area; print its offset in the region.
    Alloc { area: String },
    /// Free a page of an area by its offset in the region.
    Free { area: String, offset: String },
    /// Reach an area's mapping through get_user_pages, as VFIO and iommufd
    /// pin guest RAM: process_vm_writev/readv on this process's own mapping
    /// of it (GUP refuses VM_IO/VM_PFNMAP mappings with EFAULT). Prints the
    /// mapping's VmFlags.
    Pin { area: String, seed: u64 },
    /// mmap garbage: a private mapping, metadata (offset 0, page 1), a
    /// range running past the area's end; each must fail with EINVAL.
    BadMaps { area: String },
    /// An area still mapped is neither deleted nor formatted (EBUSY), also
    /// after a partial munmap and while only a forked child's copy is
    /// left; it is deleted once the last mapping goes.
    Busy { area: String },
    /// Map an area 2 MiB-aligned (as QEMU maps guest RAM), write a word
    /// into every page, and print the page faults and the time that took
    /// ("faults=N pages=M us=T"). --misalign maps it 4 KiB past a 2 MiB
    /// boundary instead, where no 2 MiB entry can map it.
    Faults {
        area: String,
        #[arg(long)]
        misalign: bool,
    },
    /// Check that every byte of an area is zero (a new area must not show
    /// what a deleted one left in its pages).
    Zero { area: String },
    /// XOR one byte of an area (offset and mask in hex): corrupts on purpose.
    Poke {
        area: String,
        offset: String,
        xor: String,
    },
    /// Change one field of the iommu-preserve record in page 0 of an area
    /// and write it back with a valid checksum: a record that is sound in
    /// itself but does not match the machine (`root` or `devfn`, hex).
    RecordEdit {
        area: String,
        field: String,
        value: String,
    },
    /// Print the 64-bit word at a physical address outside System RAM (hex,
    /// 8-byte aligned), read through /dev/mem: a VT-d table entry in KRAM.
    PeekPhys { addr: String },
    /// Write a 64-bit word (hex) there: corrupts a table on purpose.
    PokePhys { addr: String, value: String },
}

/// Offset and open file of 8-byte word `addr` (hex) of /dev/mem.
fn phys_word(addr: &str, write: bool) -> Result<(std::fs::File, u64)> {
    let a = u64::from_str_radix(addr.trim_start_matches("0x"), 16)
        .with_context(|| format!("address {addr} is not hexadecimal"))?;
    ensure!(a % 8 == 0, "address {addr} is not 8-byte aligned");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open("/dev/mem")
        .context("/dev/mem")?;
    Ok((f, a))
}

/// xorshift64*: a small deterministic generator for patterns and fuzzing.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn pattern(seed: u64, page: u64, buf: &mut [u8]) {
    let mut r = Rng::new(seed ^ page.wrapping_mul(0x1000_0000_01b3));
    for c in buf.chunks_mut(8) {
        c.copy_from_slice(&r.next().to_le_bytes()[..c.len()]);
    }
}

fn bench(k: &Kram, area: &str, pool: &str, iters: usize) -> Result<()> {
    use std::time::Instant;
    let id = k.lookup(pool)?.id;
    let t = Instant::now();
    for _ in 0..iters {
        let off = k.alloc(id)?;
        k.free(id, off)?;
    }
    let pair = t.elapsed().as_nanos() as f64 / iters as f64;
    let a = k.lookup(area)?;
    let len = (a.npages * PAGE_SIZE) as usize;
    let touch = |m: &mut [u8]| {
        for p in m.chunks_mut(PAGE_SIZE as usize) {
            p[0] = 1;
        }
    };
    let t = Instant::now();
    let mut m = k.map(&a)?;
    touch(&mut m);
    let kram_s = t.elapsed().as_secs_f64();
    drop(m);
    let t = Instant::now();
    let mut anon = memmap2::MmapMut::map_anon(len)?;
    touch(&mut anon);
    let anon_s = t.elapsed().as_secs_f64();
    let mib = len as f64 / (1 << 20) as f64;
    println!("| KRAM_IOC_ALLOC + KRAM_IOC_FREE (ioctl pair) | {pair:.0} ns |");
    println!(
        "| map + touch {mib:.0} MiB KRAM area | {:.1} ms ({:.0} MiB/s) |",
        kram_s * 1e3,
        mib / kram_s
    );
    println!(
        "| map + touch {mib:.0} MiB anonymous memory | {:.1} ms ({:.0} MiB/s) |",
        anon_s * 1e3,
        mib / anon_s
    );
    Ok(())
}

fn fill(k: &Kram, area: &str, seed: u64, verify: bool) -> Result<()> {
    let a = k.lookup(area)?;
    ensure!(a.npages > 0, "area {area} has no fixed pages");
    let mut m = k.map(&a)?;
    let mut want = vec![0u8; PAGE_SIZE as usize];
    let mut bad = 0u64;
    for (i, page) in m.chunks_mut(PAGE_SIZE as usize).enumerate() {
        pattern(seed, i as u64, &mut want);
        if verify {
            if page != want.as_slice() {
                if bad == 0 {
                    eprintln!("first differing page: {i}");
                }
                bad += 1;
            }
        } else {
            page.copy_from_slice(&want);
        }
    }
    // No msync: the mapping is device memory, coherent as it is written,
    // and character devices have no fsync (msync would say EINVAL).
    drop(m);
    ensure!(
        bad == 0,
        "{bad} of {} pages of {area} differ from the pattern",
        a.npages
    );
    println!(
        "{} {} pages of {area} (offset {:#x})",
        if verify { "verified" } else { "filled" },
        a.npages,
        a.offset
    );
    Ok(())
}

fn stress(dev: &str, area: &str, threads: usize, iters: usize) -> Result<()> {
    let k = Kram::open(dev)?;
    let id = k.lookup(area)?.id;
    let used0 = k.status()?.used_pages;
    let held = Arc::new(Mutex::new(HashSet::new()));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let held = held.clone();
            let dev = dev.to_string();
            std::thread::spawn(move || -> Result<()> {
                let k = Kram::open(&dev)?;
                let mut mine = Vec::new();
                let mut r = Rng::new(t as u64 + 1);
                for _ in 0..iters {
                    if mine.len() < 8 && (mine.is_empty() || r.next().is_multiple_of(2)) {
                        let off = k.alloc(id)?;
                        ensure!(
                            held.lock().unwrap().insert(off),
                            "page {off:#x} handed out twice"
                        );
                        mine.push(off);
                    } else {
                        let off = mine.swap_remove((r.next() % mine.len() as u64) as usize);
                        held.lock().unwrap().remove(&off);
                        k.free(id, off)?;
                    }
                }
                for off in mine {
                    held.lock().unwrap().remove(&off);
                    k.free(id, off)?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
    }
    let used1 = k.status()?.used_pages;
    ensure!(
        used0 == used1,
        "used pages {used0} before, {used1} after: pages leaked"
    );
    println!("{threads} threads x {iters} alloc/free: no page handed out twice, none leaked");
    Ok(())
}

fn fuzz(dev: &str, iters: usize, seed: u64) -> Result<()> {
    let k = Kram::open(dev)?;
    let before = k.areas()?;
    let st0 = k.status()?;
    let mut r = Rng::new(seed);
    let mut allocated: Vec<(u32, u64)> = Vec::new();
    let mut buf = [0u8; 256];
    let (mut ok, mut err) = (0u64, 0u64);
    for _ in 0..iters {
        for b in buf.iter_mut() {
            *b = r.next() as u8;
        }
        let nr = (r.next() % 12) as u8;
        if nr == 1 {
            continue; // FORMAT: covered by its own test, with and without confirmation
        }
        // Mostly well-formed requests with garbage contents; sometimes a
        // wrong size, direction or a bad pointer.
        let size = match r.next() % 8 {
            0 => (r.next() % 200) as usize,
            _ => match nr {
                0 => 72,
                2..=5 => 56,
                _ => 16,
            },
        };
        // ioctl direction: mostly read+write, sometimes none, write or read.
        let dir = (r.next() % 8).min(3);
        let ptr: *mut u8 = match r.next() % 10 {
            0 => std::ptr::null_mut(),
            1 => 0xdead_0000usize as *mut u8,
            _ => buf.as_mut_ptr(),
        };
        if nr == 6 && r.next().is_multiple_of(2) {
            // ALLOC for an existing area id: must succeed or say why.
            let id = before
                .get((r.next() % before.len().max(1) as u64) as usize)
                .map_or(1, |a| a.id);
            buf[..4].copy_from_slice(&id.to_le_bytes());
        }
        let req =
            (dir << 30) | ((size as u64 & 0x3fff) << 16) | ((IOC_MAGIC as u64) << 8) | nr as u64;
        // SAFETY: the kernel reads and writes at most `size` (< 256) bytes at
        // `ptr`, which is `buf` or an address it must refuse with EFAULT.
        let rc = unsafe { libc::ioctl(k.fd(), req as _, ptr) };
        if rc == 0 {
            ok += 1;
            if nr == 6 && size == 16 && dir == 3 && ptr == buf.as_mut_ptr() {
                let p = RawPage {
                    id: u32::from_le_bytes(buf[..4].try_into()?),
                    pad: 0,
                    offset: u64::from_le_bytes(buf[8..16].try_into()?),
                };
                allocated.push((p.id, p.offset));
            }
        } else {
            err += 1;
        }
    }
    // Undo what the fuzzer legitimately did: pages it allocated, areas it created.
    for (id, off) in allocated {
        k.free(id, off)
            .with_context(|| format!("freeing fuzz page {off:#x} of area {id}"))?;
    }
    for a in k.areas()? {
        if !before.iter().any(|b| b.name == a.name) {
            k.delete(&a.name)?;
        }
    }
    let after = k.areas()?;
    ensure!(
        after == before,
        "areas changed under fuzzing:\nbefore {before:?}\nafter {after:?}"
    );
    let st1 = k.status()?;
    ensure!(
        st1.used_pages == st0.used_pages,
        "used pages {} -> {}",
        st0.used_pages,
        st1.used_pages
    );
    ensure!(st1.state == 0, "region no longer ready");
    println!(
        "{iters} fuzzed ioctls ({ok} accepted, {err} refused): areas and page counts unchanged"
    );
    Ok(())
}

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

fn unpriv(dev: &str) -> Result<()> {
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
fn pin(k: &Kram, area: &str, seed: u64) -> Result<()> {
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

fn bad_maps(dev: &str, area: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
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
        // SAFETY: a fresh mapping request; unmapped again if it succeeds.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                l,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                f.as_raw_fd(),
                off as libc::off_t,
            )
        };
        if p != libc::MAP_FAILED {
            // SAFETY: the mapping just made.
            unsafe { libc::munmap(p, l) };
            bail!("mmap of {what} succeeded on {dev}");
        }
        let e = std::io::Error::last_os_error();
        ensure!(
            e.raw_os_error() == Some(libc::EINVAL),
            "mmap of {what} on {dev}: {e}, not EINVAL"
        );
        println!("{what}: EINVAL");
    }
    Ok(())
}

fn busy(dev: &str, area: &str) -> Result<()> {
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

fn faults(k: &Kram, area: &str, misalign: bool) -> Result<()> {
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

/// FNV-1a over little-endian u32 words, as tools/guest/tinyvm.c hashes its RAM.
fn tinyvm_sum(bytes: &[u8]) -> u32 {
    bytes.chunks_exact(4).fold(2_166_136_261u32, |h, w| {
        (h ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]])).wrapping_mul(16_777_619)
    })
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Fill { area, seed } => fill(&Kram::open(&cli.device)?, &area, seed, false),
        Cmd::Verify { area, seed } => fill(&Kram::open(&cli.device)?, &area, seed, true),
        Cmd::Show { area } => {
            let a = Kram::open(&cli.device)?.lookup(&area)?;
            println!("{} {} {:#x} {}", a.id, a.name, a.offset, a.npages);
            Ok(())
        }
        Cmd::Sum { area, start, end } => {
            let k = Kram::open(&cli.device)?;
            let m = k.map(&k.lookup(&area)?)?;
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16);
            let (a, b) = (hex(&start)? as usize, hex(&end)? as usize);
            ensure!(
                a <= b && b <= m.len() && a % 4 == 0 && b % 4 == 0,
                "range {start}..{end} is not inside area {area} ({} bytes) or not word aligned",
                m.len()
            );
            println!("{:x}", tinyvm_sum(&m[a..b]));
            Ok(())
        }
        Cmd::Stress {
            area,
            threads,
            iters,
        } => stress(&cli.device, &area, threads, iters),
        Cmd::Fuzz { iters, seed } => fuzz(&cli.device, iters, seed),
        Cmd::Unpriv => unpriv(&cli.device),
        Cmd::Bench { area, pool, iters } => bench(&Kram::open(&cli.device)?, &area, &pool, iters),
        Cmd::Alloc { area } => {
            let k = Kram::open(&cli.device)?;
            println!("{:#x}", k.alloc(k.lookup(&area)?.id)?);
            Ok(())
        }
        Cmd::Pin { area, seed } => pin(&Kram::open(&cli.device)?, &area, seed),
        Cmd::BadMaps { area } => bad_maps(&cli.device, &area),
        Cmd::Busy { area } => busy(&cli.device, &area),
        Cmd::Faults { area, misalign } => faults(&Kram::open(&cli.device)?, &area, misalign),
        Cmd::Zero { area } => {
            let k = Kram::open(&cli.device)?;
            let m = k.map(&k.lookup(&area)?)?;
            let bad = m.iter().filter(|&&b| b != 0).count();
            ensure!(
                bad == 0,
                "{bad} of {} bytes of area {area} are not zero",
                m.len()
            );
            println!("{} bytes of {area} zero", m.len());
            Ok(())
        }
        Cmd::RecordEdit { area, field, value } => {
            use kram_format::vtd::Record;
            let k = Kram::open(&cli.device)?;
            let mut m = k.map(&k.lookup(&area)?)?;
            let page = &mut m[..PAGE_SIZE as usize];
            let mut r = Record::decode(page)
                .map_err(|e| anyhow::anyhow!("record in {area} refused: {e:?}"))?
                .with_context(|| format!("no record in {area}"))?;
            let v = u64::from_str_radix(value.trim_start_matches("0x"), 16)
                .with_context(|| format!("value {value} is not hexadecimal"))?;
            match field.as_str() {
                "root" => r.root = v,
                "devfn" => r.devfn = u8::try_from(v).context("devfn is one byte")?,
                _ => bail!("field {field}: root or devfn"),
            }
            r.encode(page)
                .map_err(|e| anyhow::anyhow!("record not encoded: {e:?}"))?;
            Ok(())
        }
        Cmd::PeekPhys { addr } => {
            use std::os::unix::fs::FileExt;
            let (f, a) = phys_word(&addr, false)?;
            let mut b = [0u8; 8];
            f.read_exact_at(&mut b, a)
                .with_context(|| format!("read at {addr}"))?;
            println!("{:#x}", u64::from_le_bytes(b));
            Ok(())
        }
        Cmd::PokePhys { addr, value } => {
            use std::os::unix::fs::FileExt;
            let (f, a) = phys_word(&addr, true)?;
            let v = u64::from_str_radix(value.trim_start_matches("0x"), 16)
                .with_context(|| format!("value {value} is not hexadecimal"))?;
            f.write_all_at(&v.to_le_bytes(), a)
                .with_context(|| format!("write at {addr}"))?;
            Ok(())
        }
        Cmd::Poke { area, offset, xor } => {
            let k = Kram::open(&cli.device)?;
            let mut m = k.map(&k.lookup(&area)?)?;
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16);
            let (o, x) = (hex(&offset)? as usize, hex(&xor)?);
            ensure!(
                o < m.len() && x <= 0xff,
                "offset {offset} outside area {area} or mask {xor} over 0xff"
            );
            m[o] ^= x as u8;
            Ok(())
        }
        Cmd::Free { area, offset } => {
            let k = Kram::open(&cli.device)?;
            let off = u64::from_str_radix(offset.trim_start_matches("0x"), 16)
                .context("offset is hexadecimal")?;
            k.free(k.lookup(&area)?.id, off)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tinyvm_sum_matches_the_guest() {
        // FNV-1a offset basis for no words; one zero word multiplies once.
        assert_eq!(super::tinyvm_sum(&[]), 2_166_136_261);
        assert_eq!(
            super::tinyvm_sum(&[0, 0, 0, 0]),
            2_166_136_261u32.wrapping_mul(16_777_619)
        );
        assert_ne!(
            super::tinyvm_sum(&[1, 0, 0, 0]),
            super::tinyvm_sum(&[0, 1, 0, 0])
        );
    }
}
