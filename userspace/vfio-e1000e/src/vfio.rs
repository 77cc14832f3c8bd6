//! VFIO (uapi linux/vfio.h) with either IOMMU backend: the legacy
//! container (type1v2 IOMMU, the device's group in it) or iommufd
//! (`/dev/iommu`, the device's VFIO cdev bound to it, see `iommufd.rs`);
//! then the device fd, its regions, its features.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::iommufd::Iommufd;

use liveup::vfio_abi::{
    DmaMap, DmaUnmap, CHECK_EXTENSION, DEVICE_FEATURE, DEVICE_GET_REGION_INFO, GET_API_VERSION,
    GROUP_GET_DEVICE_FD, GROUP_GET_STATUS, GROUP_SET_CONTAINER, IOMMU_MAP_DMA, IOMMU_UNMAP_DMA,
    SET_IOMMU, TYPE1V2_IOMMU,
};
pub(crate) use liveup::vfio_abi::{DEVICE_ATTACH_IOMMUFD_PT, DEVICE_BIND_IOMMUFD};
const FEATURE_GET: u32 = 1 << 16;
const FEATURE_SET: u32 = 1 << 17;
/// kvmhost's patches/0002: keep the device across close and kexec.
const FEATURE_PCI_KEEP: u32 = 14;

const API_VERSION: i32 = 0;
const GROUP_FLAGS_VIABLE: u32 = 1 << 0;
pub const REGION_FLAG_MMAP: u32 = 1 << 2;
pub const BAR0_REGION: u32 = 0;
pub const CONFIG_REGION: u32 = 7;

#[repr(C)]
#[derive(Default)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct RegionInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}

/// `struct vfio_device_feature` followed by a `__u32` payload.
#[repr(C)]
struct FeatureU32 {
    argsz: u32,
    flags: u32,
    value: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{dev} has no IOMMU group (is the IOMMU on, and is the device bound to vfio-pci?)")]
    NoGroup { dev: String },
    #[error("{op}: {source}")]
    Ioctl {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("VFIO API version {0}, expected {API_VERSION}")]
    Api(i32),
    #[error("the container does not offer the type1v2 IOMMU")]
    NoType1v2,
    #[error("group {0} is not viable: bind every device in it to vfio-pci")]
    NotViable(String),
    #[error("device name {0:?} contains a NUL byte")]
    Name(String),
    #[error("BAR0 of {0} cannot be mmapped")]
    NoMmap(String),
    #[error("config space access at {offset:#x}: {source}")]
    Config { offset: u64, source: std::io::Error },
    #[error(
        "{dev} has no VFIO device cdev under {dir} (CONFIG_VFIO_DEVICE_CDEV, bound to vfio-pci?)"
    )]
    NoCdev { dev: String, dir: String },
    #[error(
        "iommufd cannot map {vaddr:#x}+{size:#x}: a VM_IO/VM_PFNMAP mapping (a KRAM area?) cannot be pinned; use the legacy container"
    )]
    NotPinnable { vaddr: u64, size: u64 },
}

/// Which VFIO IOMMU interface a [`Device`] goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Container + group, type1v2 IOMMU.
    #[default]
    Legacy,
    /// `/dev/iommu`: an IOAS, the device's cdev bound to it and attached
    /// to a HWPT that was filled from the IOAS before the attach.
    Iommufd,
}

/// Memory the device is to reach: `size` bytes at `vaddr` in this
/// process, at `iova` for the device, read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaRange {
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
}

/// How the device's DMA is translated.
enum Iommu {
    Legacy { container: File, _group: File },
    Iommufd(Iommufd),
}

pub(crate) fn ioctl<T>(
    fd: &File,
    op: &'static str,
    req: u64,
    arg: *mut T,
) -> Result<i32, VfioError> {
    // SAFETY: callers pass a request whose argument is the `T` pointed to,
    // valid for the call (or a plain integer cast to a pointer, which the
    // kernel does not dereference).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::c_ulong, arg) };
    if r < 0 {
        Err(VfioError::Ioctl {
            op,
            source: std::io::Error::last_os_error(),
        })
    } else {
        Ok(r)
    }
}

/// The IOMMU group of PCI device `bdf`, from sysfs.
pub fn group_of(bdf: &str) -> Result<String, VfioError> {
    let link = PathBuf::from(format!("/sys/bus/pci/devices/{bdf}/iommu_group"));
    let target = std::fs::read_link(&link).map_err(|_| VfioError::NoGroup { dev: bdf.into() })?;
    target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| VfioError::NoGroup { dev: bdf.into() })
}

pub(crate) fn open_rw(p: &str) -> Result<File, VfioError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .map_err(|source| VfioError::Open {
            path: p.into(),
            source,
        })
}

/// The device's fd and what translates its DMA: a container with the
/// device's group attached and the type1v2 IOMMU set, or an iommufd with
/// the device bound (see [`Backend`]). Dropping it closes the fds:
/// vfio-pci then disables the device (bus mastering off, unless kept) and
/// the DMA mappings go away.
pub struct Device {
    pub bdf: String,
    pub group: String,
    pub backend: Backend,
    // Drop order: the device fd before the IOMMU fds.
    device: File,
    iommu: Iommu,
}

impl Device {
    /// Open `bdf` through `backend` and make `dma` (when given) reachable
    /// for the device, as early as the backend allows:
    ///
    /// - legacy: right after VFIO_SET_IOMMU, which has already attached the
    ///   group to a new, empty domain (type1 takes no mapping before it);
    /// - iommufd: before the device is bound at all; the device is then
    ///   attached to a HWPT the kernel filled from the IOAS first, so it
    ///   never sees an empty domain. Without `dma` the device is bound and
    ///   left unattached (blocked; enough for the keep feature).
    ///
    /// # Safety
    /// `dma`'s `vaddr..vaddr+size` must stay mapped in this process for as
    /// long as the returned `Device` lives (or until `unmap_dma`).
    pub unsafe fn open(
        bdf: &str,
        backend: Backend,
        dma: Option<DmaRange>,
    ) -> Result<Self, VfioError> {
        match backend {
            Backend::Legacy => {
                let dev = Self::open_legacy(bdf)?;
                if let Some(d) = dma {
                    // SAFETY: the caller's promise, passed on.
                    unsafe { dev.map_dma(d.vaddr, d.iova, d.size)? };
                }
                Ok(dev)
            }
            Backend::Iommufd => {
                let group = group_of(bdf)?;
                // SAFETY: the caller's promise, passed on.
                let (iommufd, device) = unsafe { Iommufd::open(bdf, dma)? };
                Ok(Device {
                    bdf: bdf.into(),
                    group,
                    backend,
                    device,
                    iommu: Iommu::Iommufd(iommufd),
                })
            }
        }
    }

    fn open_legacy(bdf: &str) -> Result<Self, VfioError> {
        let group = group_of(bdf)?;
        let open = open_rw;
        let container = open("/dev/vfio/vfio")?;
        let v = ioctl::<u8>(
            &container,
            "VFIO_GET_API_VERSION",
            GET_API_VERSION,
            std::ptr::null_mut(),
        )?;
        if v != API_VERSION {
            return Err(VfioError::Api(v));
        }
        let ext = ioctl::<u8>(
            &container,
            "VFIO_CHECK_EXTENSION",
            CHECK_EXTENSION,
            TYPE1V2_IOMMU as *mut u8,
        )?;
        if ext == 0 {
            return Err(VfioError::NoType1v2);
        }
        let gfile = open(&format!("/dev/vfio/{group}"))?;
        let mut st = GroupStatus {
            argsz: std::mem::size_of::<GroupStatus>() as u32,
            flags: 0,
        };
        ioctl(&gfile, "VFIO_GROUP_GET_STATUS", GROUP_GET_STATUS, &mut st)?;
        if st.flags & GROUP_FLAGS_VIABLE == 0 {
            return Err(VfioError::NotViable(group));
        }
        let mut cfd: i32 = container.as_raw_fd();
        ioctl(
            &gfile,
            "VFIO_GROUP_SET_CONTAINER",
            GROUP_SET_CONTAINER,
            &mut cfd,
        )?;
        ioctl::<u8>(
            &container,
            "VFIO_SET_IOMMU",
            SET_IOMMU,
            TYPE1V2_IOMMU as *mut u8,
        )?;
        let name = std::ffi::CString::new(bdf).map_err(|_| VfioError::Name(bdf.into()))?;
        let dfd = ioctl(
            &gfile,
            "VFIO_GROUP_GET_DEVICE_FD",
            GROUP_GET_DEVICE_FD,
            name.as_ptr() as *mut libc::c_char,
        )?;
        // SAFETY: the ioctl returned a new fd that nothing else owns.
        let device = unsafe { File::from_raw_fd(dfd) };
        Ok(Device {
            bdf: bdf.into(),
            group,
            backend: Backend::Legacy,
            device,
            iommu: Iommu::Legacy {
                container,
                _group: gfile,
            },
        })
    }

    /// The iommufd HWPT the device is attached to (iommufd backend, once
    /// attached).
    pub fn hwpt(&self) -> Option<u32> {
        match &self.iommu {
            Iommu::Legacy { .. } => None,
            Iommu::Iommufd(i) => i.hwpt(),
        }
    }

    /// Whether the device is kept (VFIO_DEVICE_FEATURE_PCI_KEEP, GET).
    /// ENOTTY: a kernel without the keep patch.
    pub fn keep(&self) -> Result<bool, VfioError> {
        let mut f = FeatureU32 {
            argsz: std::mem::size_of::<FeatureU32>() as u32,
            flags: FEATURE_GET | FEATURE_PCI_KEEP,
            value: 0,
        };
        ioctl(
            &self.device,
            "VFIO_DEVICE_FEATURE(PCI_KEEP, GET)",
            DEVICE_FEATURE,
            &mut f,
        )?;
        Ok(f.value != 0)
    }

    /// Keep the device (no reset or disable on close, bus mastering kept
    /// through kexec) or stop keeping it.
    pub fn set_keep(&self, keep: bool) -> Result<(), VfioError> {
        self.set_keep_value(u32::from(keep))
    }

    /// VFIO_DEVICE_FEATURE_PCI_KEEP SET with any value: 0 and 1 are the
    /// flag, anything else is EINVAL (for testing the kernel's check).
    pub fn set_keep_value(&self, value: u32) -> Result<(), VfioError> {
        let mut f = FeatureU32 {
            argsz: std::mem::size_of::<FeatureU32>() as u32,
            flags: FEATURE_SET | FEATURE_PCI_KEEP,
            value,
        };
        ioctl(
            &self.device,
            "VFIO_DEVICE_FEATURE(PCI_KEEP, SET)",
            DEVICE_FEATURE,
            &mut f,
        )
        .map(|_| ())
    }

    pub fn region(&self, index: u32) -> Result<RegionInfo, VfioError> {
        let mut r = RegionInfo {
            argsz: std::mem::size_of::<RegionInfo>() as u32,
            index,
            ..Default::default()
        };
        ioctl(
            &self.device,
            "VFIO_DEVICE_GET_REGION_INFO",
            DEVICE_GET_REGION_INFO,
            &mut r,
        )?;
        Ok(r)
    }

    /// Map `size` bytes at `vaddr` for the device at `iova`, read and write.
    ///
    /// # Safety
    /// `vaddr..vaddr+size` must be a mapping that stays valid until the
    /// DMA mapping is removed (`unmap_dma`, or the container is closed).
    pub unsafe fn map_dma(&self, vaddr: u64, iova: u64, size: u64) -> Result<(), VfioError> {
        let container = match &self.iommu {
            Iommu::Legacy { container, .. } => container,
            // SAFETY: the caller's promise, passed on.
            Iommu::Iommufd(i) => return unsafe { i.map(&self.device, vaddr, iova, size) },
        };
        let mut m = DmaMap::read_write(vaddr, iova, size);
        ioctl(container, "VFIO_IOMMU_MAP_DMA", IOMMU_MAP_DMA, &mut m).map(|_| ())
    }

    pub fn unmap_dma(&self, iova: u64, size: u64) -> Result<(), VfioError> {
        let container = match &self.iommu {
            Iommu::Legacy { container, .. } => container,
            Iommu::Iommufd(i) => return i.unmap(iova, size),
        };
        let mut u = DmaUnmap::new(iova, size);
        ioctl(container, "VFIO_IOMMU_UNMAP_DMA", IOMMU_UNMAP_DMA, &mut u).map(|_| ())
    }

    fn config_offset(&self, off: u64) -> Result<u64, VfioError> {
        Ok(self.region(CONFIG_REGION)?.offset + off)
    }

    pub fn config_read16(&self, off: u64) -> Result<u16, VfioError> {
        let at = self.config_offset(off)?;
        let mut b = [0u8; 2];
        self.device
            .read_exact_at(&mut b, at)
            .map_err(|source| VfioError::Config {
                offset: off,
                source,
            })?;
        Ok(u16::from_le_bytes(b))
    }

    pub fn config_write16(&self, off: u64, v: u16) -> Result<(), VfioError> {
        let at = self.config_offset(off)?;
        self.device
            .write_all_at(&v.to_le_bytes(), at)
            .map_err(|source| VfioError::Config {
                offset: off,
                source,
            })
    }

    /// BAR0, mmapped.
    pub fn map_bar0(&self) -> Result<Mmio, VfioError> {
        let r = self.region(BAR0_REGION)?;
        if r.flags & REGION_FLAG_MMAP == 0 || r.size == 0 {
            return Err(VfioError::NoMmap(self.bdf.clone()));
        }
        // SAFETY: a fresh shared mapping of the device fd at the region's
        // offset; nothing else aliases it in this process.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                r.size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.device.as_raw_fd(),
                r.offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(VfioError::Ioctl {
                op: "mmap BAR0",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Mmio {
            base: p.cast(),
            size: r.size as usize,
        })
    }
}

/// A mapped MMIO BAR: 32-bit volatile register access.
pub struct Mmio {
    base: *mut u8,
    size: usize,
}

impl Mmio {
    pub fn read32(&self, reg: u32) -> u32 {
        let off = reg as usize;
        assert!(
            off + 4 <= self.size && off.is_multiple_of(4),
            "register {reg:#x} outside BAR0"
        );
        // SAFETY: in bounds and aligned (checked), inside the live mapping.
        unsafe { std::ptr::read_volatile(self.base.add(off).cast::<u32>()) }
    }

    pub fn write32(&self, reg: u32, v: u32) {
        let off = reg as usize;
        assert!(
            off + 4 <= self.size && off.is_multiple_of(4),
            "register {reg:#x} outside BAR0"
        );
        // SAFETY: as in read32.
        unsafe { std::ptr::write_volatile(self.base.add(off).cast::<u32>(), v) }
    }
}

impl Drop for Mmio {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in map_bar0, used no more.
        unsafe { libc::munmap(self.base.cast(), self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_argument_layouts() {
        // The request numbers and DMA-map layouts are liveup::vfio_abi's
        // (tested there).
        assert_eq!(std::mem::size_of::<FeatureU32>(), 12);
        assert_eq!(std::mem::size_of::<RegionInfo>(), 32);
    }
}
