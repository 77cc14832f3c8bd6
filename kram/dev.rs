// SPDX-License-Identifier: GPL-2.0

//! `/dev/kram` and `/dev/kram-pages`: open (CAP_SYS_ADMIN), the ioctls (one
//! function per command), mmap (mmap.rs).

use crate::format::{self, Direct, Kram, PAGE_SIZE};
use crate::mmap::map_area;
use crate::region::{create_zeroed, errno, with_region, IommuTables, Region};
use crate::uapi;
use kernel::ffi::c_int;
use kernel::{
    bindings,
    fs::File,
    ioctl::{_IOR, _IOW, _IOWR},
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    mm::virt::VmaNew,
    prelude::*,
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
};

// /dev/kram. The ABI is defined once, in userspace/kh-uapi/src/kram.rs
// (liveup uses the same file; kram/include/uapi/kram.h is checked against it
// by kh-uapi's tests). The request numbers are checked here against the
// kernel's own encoding.

use uapi::{
    Area as KramArea, Format as KramFormat, Page as KramPage, Status as KramStatus,
    FORMAT_CONFIRM as KRAM_FORMAT_CONFIRM, IOC_ALLOC as KRAM_IOC_ALLOC,
    IOC_AREA_AT as KRAM_IOC_AREA_AT, IOC_CREATE as KRAM_IOC_CREATE,
    IOC_DELETE as KRAM_IOC_DELETE, IOC_FORMAT as KRAM_IOC_FORMAT, IOC_FREE as KRAM_IOC_FREE,
    IOC_LOOKUP as KRAM_IOC_LOOKUP, IOC_STATUS as KRAM_IOC_STATUS,
};

const _: () = {
    let m = uapi::IOC_MAGIC;
    assert!(KRAM_IOC_STATUS == _IOR::<KramStatus>(m, 0));
    assert!(KRAM_IOC_FORMAT == _IOW::<KramFormat>(m, 1));
    assert!(KRAM_IOC_CREATE == _IOWR::<KramArea>(m, 2));
    assert!(KRAM_IOC_DELETE == _IOW::<KramArea>(m, 3));
    assert!(KRAM_IOC_LOOKUP == _IOWR::<KramArea>(m, 4));
    assert!(KRAM_IOC_AREA_AT == _IOWR::<KramArea>(m, 5));
    assert!(KRAM_IOC_ALLOC == _IOWR::<KramPage>(m, 6));
    assert!(KRAM_IOC_FREE == _IOW::<KramPage>(m, 7));
    assert!(uapi::NAME_LEN == format::NAME_LEN);
    assert!(uapi::MAX_AREAS as usize == format::MAX_AREAS);
};

// SAFETY: plain integers and byte arrays, no padding (kh-uapi asserts each
// size is the sum of its fields), every bit pattern valid.
unsafe impl FromBytes for KramStatus {}
// SAFETY: as above.
unsafe impl AsBytes for KramStatus {}
// SAFETY: as above.
unsafe impl FromBytes for KramArea {}
// SAFETY: as above.
unsafe impl AsBytes for KramArea {}
// SAFETY: as above.
unsafe impl FromBytes for KramPage {}
// SAFETY: as above.
unsafe impl AsBytes for KramPage {}
// SAFETY: as above.
unsafe impl FromBytes for KramFormat {}

fn area_name(a: &KramArea) -> Result<&[u8]> {
    let n = a.name.iter().position(|&b| b == 0).ok_or(EINVAL)?;
    Ok(&a.name[..n])
}

fn status_now() -> Result<KramStatus> {
    with_region(|r| {
        let mut s = KramStatus {
            base: r.geo.base,
            size: r.geo.pages * PAGE_SIZE as u64,
            pages: r.geo.pages,
            max_areas: uapi::MAX_AREAS,
            ..Default::default()
        };
        match (&r.kram, r.refused) {
            (Some(k), _) => {
                let st = k.stats();
                s.meta_pages = st.meta;
                s.used_pages = st.used;
                s.free_pages = st.free;
                s.generation = k.superblock().generation;
                s.areas = k.superblock().areas.iter().filter(|a| a.in_use()).count() as u32;
            }
            (None, e) => {
                s.state = uapi::STATE_REFUSED;
                s.error = e.unwrap_or(ENODEV).to_errno().unsigned_abs();
            }
        }
        Ok(s)
    })
}

fn fill_area(r: &Region, id: u16, out: &mut KramArea) -> Result {
    let k = r.kram.as_ref().ok_or(ENODEV)?;
    let a = k.area(id).map_err(errno)?;
    out.name = a.name;
    out.npages = a.npages;
    out.offset = a.first * PAGE_SIZE as u64;
    out.id = id as u32;
    Ok(())
}

/// Both device nodes: only CAP_SYS_ADMIN may open them.
fn admin_only() -> Result {
    // SAFETY: `capable` only reads the current task's credentials.
    if unsafe { bindings::capable(bindings::CAP_SYS_ADMIN as c_int) } {
        Ok(())
    } else {
        Err(EPERM)
    }
}

pub(crate) struct KramDev;

#[vtable]
impl MiscDevice for KramDev {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        admin_only()?;
        Ok(KBox::new(KramDev, GFP_KERNEL)?)
    }

    fn ioctl(_me: &KramDev, file: &File, cmd: u32, arg: usize) -> Result<isize> {
        ioctl(file, cmd, arg)
    }

    /// Map pages of one area's fixed run as a PFN range.
    fn mmap(_me: &KramDev, _file: &File, vma: &VmaNew) -> Result {
        map_area(vma, false, None)
    }
}

/// `/dev/kram-pages`: the same ioctls; its mappings are ordinary pages that
/// GUP can pin (VFIO, iommufd, O_DIRECT). The region's struct pages are made
/// on its first mmap.
pub(crate) struct KramPagesDev;

#[vtable]
impl MiscDevice for KramPagesDev {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        admin_only()?;
        Ok(KBox::new(KramPagesDev, GFP_KERNEL)?)
    }

    fn ioctl(_me: &KramPagesDev, file: &File, cmd: u32, arg: usize) -> Result<isize> {
        ioctl(file, cmd, arg)
    }

    fn mmap(_me: &KramPagesDev, _file: &File, vma: &VmaNew) -> Result {
        map_area(vma, true, None)
    }
}

/// The ioctls of both device nodes: one function per command. User memory
/// is copied before `STATE` is taken and after it is dropped.
fn ioctl(_file: &File, cmd: u32, arg: usize) -> Result<isize> {
    let user = |len| UserSlice::new(UserPtr::from_addr(arg), len);
    let area = || user(size_of::<KramArea>());
    let page = || user(size_of::<KramPage>());
    match cmd {
        KRAM_IOC_STATUS => status(user(size_of::<KramStatus>())),
        KRAM_IOC_FORMAT => format_region(user(size_of::<KramFormat>())),
        KRAM_IOC_CREATE => create(area()),
        KRAM_IOC_DELETE => delete(area()),
        KRAM_IOC_LOOKUP => lookup(area()),
        KRAM_IOC_AREA_AT => area_at(area()),
        KRAM_IOC_ALLOC => alloc(page()),
        KRAM_IOC_FREE => free(page()),
        _ => Err(ENOTTY),
    }?;
    Ok(0)
}

/// STATUS: the region and its metadata state.
fn status(user: UserSlice) -> Result {
    let s = status_now()?;
    user.writer().write(&s)
}

/// FORMAT: new, empty metadata; refused while an area is mapped or open
/// through its node, or an IOMMU translates through tables in the region.
fn format_region(user: UserSlice) -> Result {
    let f: KramFormat = user.reader().read()?;
    if f.confirm != KRAM_FORMAT_CONFIRM {
        return Err(EINVAL);
    }
    // Allocate before taking the spinlock: GFP_KERNEL may sleep.
    let slot = KBox::<Kram<'static, Direct>>::new_uninit(GFP_KERNEL)?;
    let tables = IommuTables::get()?;
    with_region(|r| {
        let mapped = r.maps.iter().filter(|&&n| n != 0).count();
        if mapped != 0 {
            pr_warn!("{} areas are mapped: region not formatted (EBUSY)\n", mapped);
            return Err(EBUSY);
        }
        let open = r.opens.iter().filter(|&&n| n != 0).count();
        if open != 0 {
            pr_warn!("{} areas are open through their nodes: region not formatted (EBUSY)\n", open);
            return Err(EBUSY);
        }
        if r.zeroing.iter().any(|&z| z) {
            pr_warn!("an area is being zeroed: region not formatted (EBUSY)\n");
            return Err(EBUSY);
        }
        if tables.n != 0 {
            pr_warn!("the IOMMU translates through {} tables in the region: not formatted (EBUSY)\n", tables.n);
            return Err(EBUSY);
        }
        r.kram = None;
        // SAFETY: `STATE` is held; the result lives in `r`.
        let media = unsafe { Region::media(r.virt, &r.geo) };
        let k = KBox::write(slot, Kram::format(r.geo, media, Direct).map_err(errno)?);
        pr_info!("region {:#x} formatted on request\n", r.geo.base);
        r.kram = Some(k);
        r.refused = None;
        Ok(())
    })
}

/// CREATE: a new area with its fixed run zeroed; answers its id and offset.
fn create(user: UserSlice) -> Result {
    let (mut rd, mut wr) = user.reader_writer();
    let mut a: KramArea = rd.read()?;
    let id = create_zeroed(area_name(&a)?, a.npages)?;
    with_region(|r| {
        r.ready()?;
        fill_area(r, id, &mut a)
    })?;
    wr.write(&a)
}

/// DELETE: the named area and all its pages; refused while it is mapped or
/// holds a table an IOMMU translates through.
fn delete(user: UserSlice) -> Result {
    let a: KramArea = user.reader().read()?;
    let tables = IommuTables::get()?;
    with_region(|r| {
        let id = r.ready()?.lookup(area_name(&a)?).map_err(errno)?;
        r.delete_area(id, &tables)
    })
}

/// LOOKUP: the named area's id, size and offset.
fn lookup(user: UserSlice) -> Result {
    let (mut rd, mut wr) = user.reader_writer();
    let mut a: KramArea = rd.read()?;
    with_region(|r| {
        let id = r.ready()?.lookup(area_name(&a)?).map_err(errno)?;
        fill_area(r, id, &mut a)
    })?;
    wr.write(&a)
}

/// AREA_AT: the area with id `a.id` (listing: ids 1..=MAX_AREAS).
fn area_at(user: UserSlice) -> Result {
    let (mut rd, mut wr) = user.reader_writer();
    let mut a: KramArea = rd.read()?;
    with_region(|r| {
        r.ready()?;
        let id = u16::try_from(a.id).map_err(|_| EINVAL)?;
        fill_area(r, id, &mut a)
    })?;
    wr.write(&a)
}

/// ALLOC: a page owned by area `p.id`; answers its offset in the region.
fn alloc(user: UserSlice) -> Result {
    let (mut rd, mut wr) = user.reader_writer();
    let mut p: KramPage = rd.read()?;
    let id = u16::try_from(p.id).map_err(|_| EINVAL)?;
    with_region(|r| {
        p.offset = r.ready()?.alloc_page(id).map_err(errno)? * PAGE_SIZE as u64;
        Ok(())
    })?;
    wr.write(&p)
}

/// FREE: the page at `p.offset`, which area `p.id` must own; refused while
/// the area holds a table an IOMMU translates through. (All of a kept
/// device's table levels are pages of one area, iommu-preserve's
/// `iommu-tables`: the set names its root, context and top-level tables,
/// and their area's pages stay as long as any of them is in use. The
/// kernel API's `kram_free_page` is not checked: its callers are modules,
/// and it may be called where the IOMMU lookup, which sleeps, may not.)
fn free(user: UserSlice) -> Result {
    let p: KramPage = user.reader().read()?;
    let id = u16::try_from(p.id).map_err(|_| EINVAL)?;
    let tables = IommuTables::get()?;
    with_region(|r| {
        let page = r.geo.index_of(r.geo.base.wrapping_add(p.offset)).ok_or(EINVAL)?;
        let base = r.geo.base;
        let k = r.ready()?;
        if let Some(pa) = tables.owned_by(k, base, id) {
            pr_warn!("area {} holds a table the IOMMU translates through ({:#x}): page not freed (EBUSY)\n", id, pa);
            return Err(EBUSY);
        }
        k.free_page(id, page).map_err(errno)
    })
}
