//! The iommufd backend (uapi linux/iommufd.h, and the VFIO cdev ioctls of
//! linux/vfio.h): an IOAS holding the DMA mapping, the device's VFIO cdev
//! (`/dev/vfio/devices/vfioN`) bound to the iommufd, and a paging HWPT
//! allocated explicitly for the device and attached after it is filled.
//!
//! Why the explicit HWPT: taking over a device whose DMA is running (an
//! adopted VT-d context entry after kexec), the device must never see an
//! empty domain. With the legacy container VFIO_SET_IOMMU attaches one
//! before VFIO_IOMMU_MAP_DMA can fill it. Here, in Linux 7.3:
//!
//! - IOMMU_HWPT_ALLOC on an IOAS calls iommufd_hwpt_paging_alloc() with
//!   `immediate_attach = false` (drivers/iommu/iommufd/hw_pagetable.c:385-387);
//!   that attaches nothing (hw_pagetable.c:205-209) and fills the new domain
//!   from the IOAS with iopt_table_add_domain() (hw_pagetable.c:211), which
//!   maps every area already in the IOAS through iopt_fill_domain()
//!   (drivers/iommu/iommufd/io_pagetable.c:1222, 1280, 1131-1160). So the
//!   domain holds our mapping before any device is attached to it.
//! - VFIO_DEVICE_ATTACH_IOMMUFD_PT with that HWPT's id
//!   (drivers/vfio/device_cdev.c:203, drivers/vfio/iommufd.c:168) reaches
//!   iommufd_device_change_pt(), which for an IOMMUFD_OBJ_HWPT_PAGING
//!   attaches that very HWPT (drivers/iommu/iommufd/device.c:1028-1033,
//!   797-803), no new domain: iommufd_hw_pagetable_attach() (device.c:677)
//!   -> iommu_attach_group_handle() (device.c:586). (Attaching the IOAS id
//!   instead would go through iommufd_device_auto_get_domain(), device.c:
//!   1035-1041, which finds or allocates a domain itself.)
//! - Binding (VFIO_DEVICE_BIND_IOMMUFD) claims DMA ownership
//!   (device.c:263 -> drivers/iommu/iommu.c:3475, 3402-3405), i.e. attaches
//!   the group's blocking domain. For a device whose first attach was
//!   deferred (an adopted entry) __iommu_device_set_domain() does attach it
//!   (iommu.c:2419-2425), but the VT-d blocking domain returns early for a
//!   device that never had a domain attached
//!   (drivers/iommu/intel/iommu.c:2767-2769), so the adopted context entry
//!   keeps translating until our attach replaces it
//!   (intel/iommu.c:1192-1206: the copied entry is torn down and the new
//!   domain's written in one go under iommu->lock).
//!
//! The IOAS pins the user pages with GUP (drivers/iommu/iommufd/pages.c),
//! which refuses VM_IO/VM_PFNMAP mappings (mm/gup.c: EFAULT).
//! `/dev/kram` maps areas as ordinary pages (ZONE_DEVICE struct pages made
//! for a memmap= region, kram/kram_glue.c), which pin; it falls back to a
//! remap_pfn_range() mapping, which does not, only when it cannot make
//! them. An IOAS with no domain yet does not pin at IOMMU_IOAS_MAP
//! (iopt_area_fill_domains() returns early): the EFAULT would come from
//! IOMMU_HWPT_ALLOC (iopt_fill_domain), after the bind; the process then
//! exits, the unbind gives the group its default domain back, and an
//! adopted entry is gone. So `open` checks the range's VMA flags in
//! /proc/self/smaps before it binds anything.

use std::cell::Cell;
use std::fs::File;
use std::os::fd::AsRawFd;

use crate::vfio::{
    ioctl, open_rw, DmaRange, VfioError, DEVICE_ATTACH_IOMMUFD_PT, DEVICE_BIND_IOMMUFD,
};

const IOMMUFD_TYPE: u64 = b';' as u64;
/// `_IO(IOMMUFD_TYPE, cmd)`.
const fn iommufd_io(cmd: u64) -> u64 {
    (IOMMUFD_TYPE << 8) | cmd
}
const IOMMU_IOAS_ALLOC: u64 = iommufd_io(0x81);
const IOMMU_IOAS_MAP: u64 = iommufd_io(0x85);
const IOMMU_IOAS_UNMAP: u64 = iommufd_io(0x86);
const IOMMU_HWPT_ALLOC: u64 = iommufd_io(0x89);

const IOAS_MAP_FIXED_IOVA: u32 = 1 << 0;
const IOAS_MAP_WRITEABLE: u32 = 1 << 1;
const IOAS_MAP_READABLE: u32 = 1 << 2;
/// `IOMMU_HWPT_DATA_NONE`: a plain paging domain.
const HWPT_DATA_NONE: u32 = 0;

#[repr(C)]
#[derive(Default)]
struct IoasAlloc {
    size: u32,
    flags: u32,
    out_ioas_id: u32,
}

#[repr(C)]
#[derive(Default)]
struct IoasMap {
    size: u32,
    flags: u32,
    ioas_id: u32,
    reserved: u32,
    user_va: u64,
    length: u64,
    iova: u64,
}

#[repr(C)]
#[derive(Default)]
struct IoasUnmap {
    size: u32,
    ioas_id: u32,
    iova: u64,
    length: u64,
}

#[repr(C)]
#[derive(Default)]
struct HwptAlloc {
    size: u32,
    flags: u32,
    dev_id: u32,
    pt_id: u32,
    out_hwpt_id: u32,
    reserved: u32,
    data_type: u32,
    data_len: u32,
    data_uptr: u64,
    fault_id: u32,
    reserved2: u32,
}

/// `struct vfio_device_bind_iommufd`.
#[repr(C)]
#[derive(Default)]
struct BindIommufd {
    argsz: u32,
    flags: u32,
    iommufd: i32,
    out_devid: u32,
    token_uuid_ptr: u64,
}

/// `struct vfio_device_attach_iommufd_pt`.
#[repr(C)]
#[derive(Default)]
struct AttachPt {
    argsz: u32,
    flags: u32,
    pt_id: u32,
    pasid: u32,
}

fn argsz<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

fn smaps_self() -> String {
    std::fs::read_to_string("/proc/self/smaps").unwrap_or_default()
}

/// Whether every VMA of `smaps` overlapping `vaddr..vaddr+size` can be
/// pinned by GUP: none has VM_IO (`io`) or VM_PFNMAP (`pf`) among its
/// VmFlags (mm/gup.c:1207-1208). Unreadable smaps: assume it can (the
/// kernel still says no, later).
fn pinnable(smaps: &str, vaddr: u64, size: u64) -> bool {
    let end = vaddr.saturating_add(size);
    let mut overlaps = false;
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if overlaps && flags.split_whitespace().any(|f| f == "io" || f == "pf") {
                return false;
            }
            continue;
        }
        // A VMA header: "start-end perms offset dev inode [path]".
        let Some(range) = line.split_whitespace().next() else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
            overlaps = a < end && vaddr < b;
        }
    }
    true
}

/// The VFIO cdev of `bdf`: the one `vfioN` under its sysfs `vfio-dev`.
pub fn cdev_of(bdf: &str) -> Result<String, VfioError> {
    let dir = format!("/sys/bus/pci/devices/{bdf}/vfio-dev");
    let none = || VfioError::NoCdev {
        dev: bdf.into(),
        dir: dir.clone(),
    };
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|_| none())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vfio"))
        .collect();
    names.sort();
    match names.as_slice() {
        [one] => Ok(format!("/dev/vfio/devices/{one}")),
        _ => Err(none()),
    }
}

/// The iommufd, its IOAS and the device's ids in it. The device's cdev
/// fd is the caller's (`vfio::Device` keeps it next to this).
pub(crate) struct Iommufd {
    fd: File,
    ioas: u32,
    dev_id: u32,
    /// The HWPT the device is attached to, once it is.
    hwpt: Cell<Option<u32>>,
}

impl Iommufd {
    /// `/dev/iommu`, an IOAS with `dma` mapped in it, then the device's
    /// cdev bound; with `dma`, a HWPT allocated (and so filled) on the IOAS
    /// and the device attached to it. Returns the iommufd and the cdev fd.
    ///
    /// # Safety
    /// As `vfio::Device::open`: `dma` stays mapped while these live.
    pub(crate) unsafe fn open(bdf: &str, dma: Option<DmaRange>) -> Result<(Self, File), VfioError> {
        let cdev = cdev_of(bdf)?;
        let fd = open_rw("/dev/iommu")?;
        let mut a = IoasAlloc {
            size: argsz::<IoasAlloc>(),
            ..Default::default()
        };
        ioctl(&fd, "IOMMU_IOAS_ALLOC", IOMMU_IOAS_ALLOC, &mut a)?;
        let mut me = Iommufd {
            fd,
            ioas: a.out_ioas_id,
            dev_id: 0,
            hwpt: Cell::new(None),
        };
        // Mapped before the device is bound; memory the HWPT could not pin
        // is refused here, before the device is touched.
        if let Some(d) = dma {
            if !pinnable(&smaps_self(), d.vaddr, d.size) {
                return Err(VfioError::NotPinnable {
                    vaddr: d.vaddr,
                    size: d.size,
                });
            }
            // SAFETY: the caller's promise, passed on.
            unsafe { me.ioas_map(d.vaddr, d.iova, d.size)? };
        }
        let device = open_rw(&cdev)?;
        let mut b = BindIommufd {
            argsz: argsz::<BindIommufd>(),
            iommufd: me.fd.as_raw_fd(),
            ..Default::default()
        };
        ioctl(
            &device,
            "VFIO_DEVICE_BIND_IOMMUFD",
            DEVICE_BIND_IOMMUFD,
            &mut b,
        )?;
        me.dev_id = b.out_devid;
        if dma.is_some() {
            me.attach(&device)?;
        }
        Ok((me, device))
    }

    /// # Safety
    /// `vaddr..vaddr+size` stays mapped while the mapping exists.
    unsafe fn ioas_map(&self, vaddr: u64, iova: u64, size: u64) -> Result<(), VfioError> {
        let mut m = IoasMap {
            size: argsz::<IoasMap>(),
            flags: IOAS_MAP_FIXED_IOVA | IOAS_MAP_READABLE | IOAS_MAP_WRITEABLE,
            ioas_id: self.ioas,
            user_va: vaddr,
            length: size,
            iova,
            ..Default::default()
        };
        ioctl(&self.fd, "IOMMU_IOAS_MAP", IOMMU_IOAS_MAP, &mut m).map(|_| ())
    }

    /// Allocate a paging HWPT for the device on the IOAS (filled from it
    /// on allocation, see the module documentation), then attach the
    /// device to it.
    fn attach(&self, device: &File) -> Result<u32, VfioError> {
        if let Some(h) = self.hwpt.get() {
            return Ok(h);
        }
        let mut h = HwptAlloc {
            size: argsz::<HwptAlloc>(),
            dev_id: self.dev_id,
            pt_id: self.ioas,
            data_type: HWPT_DATA_NONE,
            ..Default::default()
        };
        ioctl(&self.fd, "IOMMU_HWPT_ALLOC", IOMMU_HWPT_ALLOC, &mut h)?;
        let mut at = AttachPt {
            argsz: argsz::<AttachPt>(),
            pt_id: h.out_hwpt_id,
            ..Default::default()
        };
        ioctl(
            device,
            "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
            DEVICE_ATTACH_IOMMUFD_PT,
            &mut at,
        )?;
        self.hwpt.set(Some(h.out_hwpt_id));
        Ok(h.out_hwpt_id)
    }

    /// Map into the IOAS (and so into the attached HWPT); a device bound
    /// without memory is attached now, its HWPT filled first.
    ///
    /// # Safety
    /// `vaddr..vaddr+size` stays mapped while the mapping exists.
    pub(crate) unsafe fn map(
        &self,
        device: &File,
        vaddr: u64,
        iova: u64,
        size: u64,
    ) -> Result<(), VfioError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.ioas_map(vaddr, iova, size)? };
        self.attach(device).map(|_| ())
    }

    pub(crate) fn unmap(&self, iova: u64, size: u64) -> Result<(), VfioError> {
        let mut u = IoasUnmap {
            size: argsz::<IoasUnmap>(),
            ioas_id: self.ioas,
            iova,
            length: size,
        };
        ioctl(&self.fd, "IOMMU_IOAS_UNMAP", IOMMU_IOAS_UNMAP, &mut u).map(|_| ())
    }

    pub(crate) fn hwpt(&self) -> Option<u32> {
        self.hwpt.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn ioctl_numbers_match_the_uapi_header() {
        // iommufd.h: IOMMUFD_TYPE ';', IOMMUFD_CMD_IOAS_ALLOC 0x81,
        // IOAS_MAP 0x85, IOAS_UNMAP 0x86, HWPT_ALLOC 0x89, all _IO.
        assert_eq!(IOMMU_IOAS_ALLOC, 0x3b81);
        assert_eq!(IOMMU_IOAS_MAP, 0x3b85);
        assert_eq!(IOMMU_IOAS_UNMAP, 0x3b86);
        assert_eq!(IOMMU_HWPT_ALLOC, 0x3b89);
        assert_eq!(
            IOAS_MAP_FIXED_IOVA | IOAS_MAP_WRITEABLE | IOAS_MAP_READABLE,
            7
        );
    }

    #[test]
    fn struct_layouts_match_the_uapi_header() {
        assert_eq!(size_of::<IoasAlloc>(), 12);
        assert_eq!(size_of::<IoasMap>(), 40);
        assert_eq!(std::mem::offset_of!(IoasMap, user_va), 16);
        assert_eq!(size_of::<IoasUnmap>(), 24);
        assert_eq!(size_of::<HwptAlloc>(), 48);
        assert_eq!(std::mem::offset_of!(HwptAlloc, data_uptr), 32);
        assert_eq!(std::mem::offset_of!(HwptAlloc, fault_id), 40);
        // vfio.h
        assert_eq!(size_of::<BindIommufd>(), 24);
        assert_eq!(std::mem::offset_of!(BindIommufd, out_devid), 12);
        assert_eq!(size_of::<AttachPt>(), 16);
    }

    #[test]
    fn pfnmap_ranges_are_not_pinnable() {
        let smaps = "\
7f0000000000-7f0000200000 rw-s 00000000 00:05 12 /dev/kram
Size:               2048 kB
VmFlags: rd wr sh mr mw me ms pf io dc de dd sd
7f0000200000-7f0000400000 rw-p 00000000 00:00 0
Size:               2048 kB
VmFlags: rd wr mr mw me ac sd
";
        assert!(!pinnable(smaps, 0x7f00_0000_0000, 0x20_0000));
        assert!(!pinnable(smaps, 0x7f00_001f_f000, 0x2000));
        assert!(pinnable(smaps, 0x7f00_0020_0000, 0x20_0000));
        assert!(pinnable("", 0x1000, 0x1000));
        // This process's own anonymous memory.
        let v = vec![0u8; 1 << 20];
        assert!(pinnable(&smaps_self(), v.as_ptr() as u64, v.len() as u64));
    }

    #[test]
    fn cdev_of_a_missing_device_says_where_it_looked() {
        let e = cdev_of("ffff:ff:1f.7").unwrap_err().to_string();
        assert!(
            e.contains("/sys/bus/pci/devices/ffff:ff:1f.7/vfio-dev"),
            "{e}"
        );
    }
}
