//! The parts of VFIO's uapi (linux/vfio.h) more than one of our programs
//! use: the request numbers and the DMA map/unmap arguments of the type1
//! container. One definition, used by `liveup prezero vfio-map` and by
//! vfio-e1000e.

use std::mem::size_of;

/// `VFIO_TYPE` (';').
pub const TYPE: u64 = b';' as u64;
/// `VFIO_BASE`.
pub const BASE: u64 = 100;

/// `_IO(VFIO_TYPE, VFIO_BASE + n)`: VFIO encodes no size or direction.
pub const fn io(n: u64) -> u64 {
    (TYPE << 8) | (BASE + n)
}

pub const GET_API_VERSION: u64 = io(0);
pub const CHECK_EXTENSION: u64 = io(1);
pub const SET_IOMMU: u64 = io(2);
pub const GROUP_GET_STATUS: u64 = io(3);
pub const GROUP_SET_CONTAINER: u64 = io(4);
pub const GROUP_GET_DEVICE_FD: u64 = io(6);
pub const DEVICE_GET_REGION_INFO: u64 = io(8);
pub const IOMMU_MAP_DMA: u64 = io(13);
pub const IOMMU_UNMAP_DMA: u64 = io(14);
pub const DEVICE_FEATURE: u64 = io(17);
pub const DEVICE_BIND_IOMMUFD: u64 = io(18);
pub const DEVICE_ATTACH_IOMMUFD_PT: u64 = io(19);

/// `VFIO_TYPE1v2_IOMMU`.
pub const TYPE1V2_IOMMU: u64 = 3;
/// `VFIO_DMA_MAP_FLAG_READ`.
pub const DMA_MAP_FLAG_READ: u32 = 1 << 0;
/// `VFIO_DMA_MAP_FLAG_WRITE`.
pub const DMA_MAP_FLAG_WRITE: u32 = 1 << 1;

/// `struct vfio_iommu_type1_dma_map`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaMap {
    pub argsz: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
}

impl DmaMap {
    /// A readable and writable mapping of `size` bytes at `vaddr` to `iova`.
    pub fn read_write(vaddr: u64, iova: u64, size: u64) -> DmaMap {
        DmaMap {
            argsz: size_of::<DmaMap>() as u32,
            flags: DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE,
            vaddr,
            iova,
            size,
        }
    }
}

/// `struct vfio_iommu_type1_dma_unmap` (without its flexible data).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaUnmap {
    pub argsz: u32,
    pub flags: u32,
    pub iova: u64,
    pub size: u64,
}

impl DmaUnmap {
    pub fn new(iova: u64, size: u64) -> DmaUnmap {
        DmaUnmap {
            argsz: size_of::<DmaUnmap>() as u32,
            flags: 0,
            iova,
            size,
        }
    }
}

const _: () = assert!(size_of::<DmaMap>() == 32);
const _: () = assert!(size_of::<DmaUnmap>() == 24);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_are_linux_vfio_h() {
        // vfio.h: _IO(VFIO_TYPE ';', VFIO_BASE 100 + n), written out.
        let want = [
            (GET_API_VERSION, 0x3B64),
            (SET_IOMMU, 0x3B66),
            (GROUP_SET_CONTAINER, 0x3B68),
            (GROUP_GET_DEVICE_FD, 0x3B6A),
            (DEVICE_GET_REGION_INFO, 0x3B6C),
            (IOMMU_MAP_DMA, 0x3B71),
            (IOMMU_UNMAP_DMA, 0x3B72),
            (DEVICE_FEATURE, 0x3B75),
            (DEVICE_BIND_IOMMUFD, 0x3B76),
            (DEVICE_ATTACH_IOMMUFD_PT, 0x3B77),
        ];
        for (got, want) in want {
            assert_eq!(got, want, "{got:#x}");
        }
    }

    #[test]
    fn arguments_carry_their_size() {
        let m = DmaMap::read_write(0x1000, 1 << 34, 2 << 20);
        assert_eq!((m.argsz, m.flags), (32, 3));
        assert_eq!(DmaUnmap::new(1 << 34, 4096).argsz, 24);
    }
}
