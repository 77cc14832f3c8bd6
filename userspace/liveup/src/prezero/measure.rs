//! `liveup prezero populate` and `vfio-map`: the measurements of
//! bench/prezero.sh and the checks of selftests/prezero/. They time
//! faulting memory in and pinning it through a VFIO container, and can
//! check that every byte handed out is zero.

use super::{size_name, Kind, MIB};
use crate::units::parse_size;
use crate::vfio_abi::{DmaMap, DmaUnmap};
use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::time::Instant;

/// An anonymous mapping populated for writing; unmapped on drop.
struct Region {
    addr: *mut libc::c_void,
    len: usize,
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value owns.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

impl Region {
    /// Map `len` bytes of `kind`; `populate` faults them in (timed by the caller).
    fn map(kind: Kind, len: usize, populate: bool) -> Result<Region> {
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        let align = match kind {
            Kind::Anon => 0,
            Kind::Thp => 2 * MIB as usize,
            Kind::Huge2m => {
                flags |= libc::MAP_HUGETLB | libc::MAP_HUGE_2MB;
                0
            }
            Kind::Huge1g => {
                flags |= libc::MAP_HUGETLB | libc::MAP_HUGE_1GB;
                0
            }
        };
        let maplen = len + align;
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                maplen,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            bail!(
                "mmap {} of {kind:?}: {}",
                size_name(len as u64),
                std::io::Error::last_os_error()
            );
        }
        let mut r = Region {
            addr: p,
            len: maplen,
        };
        if align != 0 {
            // Trim to an aligned range so THP can use PMD mappings.
            let start = (p as usize).next_multiple_of(align);
            let head = start - p as usize;
            // SAFETY: unmapping the parts of our own mapping outside
            // [start, start + len); `r` then owns exactly that range.
            unsafe {
                if head > 0 {
                    libc::munmap(p, head);
                }
                if align > head {
                    libc::munmap((start + len) as *mut libc::c_void, align - head);
                }
            }
            r.addr = start as *mut libc::c_void;
            r.len = len;
        }
        let advice = match kind {
            Kind::Anon => libc::MADV_NOHUGEPAGE,
            Kind::Thp => libc::MADV_HUGEPAGE,
            _ => -1,
        };
        // SAFETY: advice on our own mapping.
        if advice >= 0 && unsafe { libc::madvise(r.addr, r.len, advice) } != 0 {
            bail!("madvise: {}", std::io::Error::last_os_error());
        }
        if populate {
            // SAFETY: populating our own mapping (the MAP_POPULATE path for writes).
            if unsafe { libc::madvise(r.addr, r.len, libc::MADV_POPULATE_WRITE) } != 0 {
                bail!(
                    "populate {} of {kind:?}: {}",
                    size_name(len as u64),
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(r)
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is ours, readable, `len` bytes.
        unsafe { std::slice::from_raw_parts(self.addr.cast(), self.len) }
    }

    fn fill(&mut self, v: u8) {
        // SAFETY: the mapping is ours, writable, `len` bytes.
        unsafe { std::ptr::write_bytes(self.addr.cast::<u8>(), v, self.len) }
    }

    /// Number of 4 KiB pages with a non-zero byte.
    fn nonzero_pages(&self) -> usize {
        self.bytes()
            .chunks(4096)
            .filter(|c| c.iter().any(|&b| b != 0))
            .count()
    }
}

fn check_and_dirty(r: &mut Region, check: bool, dirty: bool) -> Result<()> {
    if check {
        let bad = r.nonzero_pages();
        println!("nonzero pages: {bad}");
        if bad > 0 {
            bail!("{bad} pages handed out with non-zero content");
        }
    }
    if dirty {
        r.fill(0xa5);
    }
    Ok(())
}

pub(super) fn populate_cmd(kind: Kind, size: &str, check: bool, dirty: bool) -> Result<()> {
    let len = parse_size(size)? as usize;
    let t = Instant::now();
    let mut r = Region::map(kind, len, true)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    println!("populate {kind:?} {}: {ms:.1} ms", size_name(len as u64));
    check_and_dirty(&mut r, check, dirty)
}

mod vfio {
    use crate::vfio_abi as v;
    nix::ioctl_write_int_bad!(set_iommu, v::SET_IOMMU);
    nix::ioctl_write_ptr_bad!(set_container, v::GROUP_SET_CONTAINER, i32);
    nix::ioctl_write_ptr_bad!(map_dma, v::IOMMU_MAP_DMA, super::DmaMap);
    nix::ioctl_readwrite_bad!(unmap_dma, v::IOMMU_UNMAP_DMA, super::DmaUnmap);
}

/// IOVA for the mapping: above the 32-bit MSI window, below 39-bit.
const IOVA: u64 = 1 << 34;

pub(super) fn vfio_map_cmd(group: &str, kind: Kind, size: &str, check: bool) -> Result<()> {
    let len = parse_size(size)? as usize;
    let rw = |p: &str| -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .with_context(|| format!("cannot open {p}"))
    };
    let container = rw("/dev/vfio/vfio")?;
    let g = rw(group)?;
    let cfd = container.as_raw_fd();
    // SAFETY: VFIO ioctls on our own fds with arguments of the expected layout.
    unsafe {
        vfio::set_container(g.as_raw_fd(), &cfd).context("VFIO_GROUP_SET_CONTAINER")?;
        vfio::set_iommu(cfd, crate::vfio_abi::TYPE1V2_IOMMU as i32).context("VFIO_SET_IOMMU")?;
    }
    let mut r = Region::map(kind, len, false)?;
    let m = DmaMap::read_write(r.addr as u64, IOVA, len as u64);
    let t = Instant::now();
    // SAFETY: maps (and pins) our own mapping `r`, which outlives the DMA mapping.
    unsafe { vfio::map_dma(cfd, &m) }.context("VFIO_IOMMU_MAP_DMA")?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    println!("vfio map {kind:?} {}: {ms:.1} ms", size_name(len as u64));
    let res = check_and_dirty(&mut r, check, false);
    let mut u = DmaUnmap::new(IOVA, len as u64);
    // SAFETY: unmaps the range mapped above.
    unsafe { vfio::unmap_dma(cfd, &mut u) }.context("VFIO_IOMMU_UNMAP_DMA")?;
    res
}
