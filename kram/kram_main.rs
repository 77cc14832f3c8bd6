// SPDX-License-Identifier: GPL-2.0

//! KRAM: fixed physical pages that survive kexec.
//!
//! The module owns one physical range reserved at boot (`memmap=SIZE$ADDR`,
//! given to the module as `base=` and `size=`). The region carries its own
//! metadata (see `userspace/kram-format/src/format.rs`, included below): a
//! superblock with named areas and an owner word per page. On load the
//! module validates and adopts what the previous kernel left; it never
//! formats a region on its own. Other modules use the exported API
//! (`include/kram.h`); userspace uses `/dev/kram` (`include/uapi/kram.h`).
//!
//! Locking: one spinlock, `STATE`, protects the region mapping and all
//! metadata changes. It is taken by the exported API (callable from atomic
//! context, never from hard-IRQ context), by ioctls, by mmap and by the
//! vm_ops that count an area's mappings (`kram_map_get`/`kram_map_put`, from
//! fork, munmap and exit, in process context); user memory
//! is copied before it is taken and after it is dropped. Zeroing a new
//! area and making the region's struct pages (first `/dev/kram-pages` mmap,
//! serialised by a mutex in kram_glue.c) happen without it: both sleep.

use kernel::ffi::{c_char, c_int, c_ulong, c_void};
use core::ptr::NonNull;
use core::sync::atomic::AtomicU32;
use kernel::{
    bindings, c_str, debugfs,
    error::to_result,
    fs::File,
    ioctl::{_IOR, _IOW, _IOWR},
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    mm::virt::VmaNew,
    prelude::*,
    sync::global_lock,
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
};

// The shared format code is a library API; not all of it is used here.
#[path = "../userspace/kram-format/src/format.rs"]
#[allow(dead_code, unreachable_pub)]
mod format;

use format::{Direct, Geometry, Kram, Media, PAGE_SIZE};

// The ioctl ABI, one definition shared with liveup.
#[path = "../userspace/kh-uapi/src/ioc.rs"]
#[allow(dead_code, unreachable_pub)]
mod ioc;
#[path = "../userspace/kh-uapi/src/kram.rs"]
#[allow(dead_code, unreachable_pub)]
mod uapi;

module! {
    type: KramModule,
    name: "kram",
    authors: ["kvmhost developers"],
    description: "KRAM: fixed physical pages that survive kexec",
    license: "GPL",
    params: {
        base: u64 {
            default: 0,
            description: "Physical address of the reserved region (memmap=SIZE$ADDR)",
        },
        size: u64 {
            default: 0,
            description: "Size of the reserved region in bytes",
        },
    },
}

/// The region while the module is loaded.
struct Region {
    /// Start of the `memremap()`ed region.
    virt: NonNull<u8>,
    geo: Geometry,
    /// `None` while the metadata is refused (corrupt, foreign, unformatted).
    /// Boxed: it is about 2 KiB, too much to move around kernel stacks.
    kram: Option<KBox<Kram<'static, Direct>>>,
    /// Why the metadata was refused.
    refused: Option<Error>,
    /// Claimed in the iomem tree (a `memmap=` range; a `reserve_mem=` range
    /// is memblock-reserved System RAM, which cannot be requested).
    claimed: bool,
    /// User mappings (VMAs) of each area, by area id: an area still mapped
    /// is neither deleted nor formatted away, since its pages would go to
    /// the next owner under the mapping (another VM's RAM).
    maps: [u32; format::MAX_AREAS + 1],
}

// C glue (kram_glue.c, include/kram_glue.h): struct pages for the region,
// user mappings of them, zeroing.
extern "C" {
    fn kram_glue_pages_get(base: u64, size: u64) -> c_int;
    fn kram_glue_pages_exit();
    fn kram_glue_set_vm_ops(vma: *mut c_void, region_pfn: u64, area: u16, pages: bool);
    fn kram_glue_zero(p: *mut c_void, len: usize, may_sleep: bool);
    fn kram_glue_iommu_tables(start: u64, end: u64, out: *mut u64, max: c_int) -> c_int;
}

/// VT-d tables in the region that an IOMMU translates through now (a
/// preserved device's, patches/0003): the areas holding them must stay.
struct IommuTables {
    /// How many; more than `pa.len()` when some could not be read.
    n: usize,
    pa: [u64; 16],
}

impl IommuTables {
    /// Looked up without `STATE` (the lookup maps tables and may sleep); a
    /// table switched to between this and the delete is not seen.
    fn get() -> Result<IommuTables> {
        let (base, len) = with_region(|r| Ok((r.geo.base, r.geo.pages * PAGE_SIZE as u64)))?;
        let mut t = IommuTables { n: 0, pa: [0; 16] };
        // SAFETY: `t.pa` holds 16 entries, the most the glue writes.
        let n = unsafe { kram_glue_iommu_tables(base, base + len, t.pa.as_mut_ptr(), 16) };
        t.n = usize::try_from(n).unwrap_or(0);
        Ok(t)
    }

    /// The first table owned by area `id` (all of them if unknown).
    fn owned_by(&self, k: &Kram<'static, Direct>, base: u64, id: u16) -> Option<u64> {
        if self.n > self.pa.len() {
            return Some(0);
        }
        self.pa[..self.n]
            .iter()
            .copied()
            .find(|&pa| k.page_owner((pa - base) / PAGE_SIZE as u64).map(|o| o.0) == Ok(id))
    }
}

/// Create an area and zero its fixed run: the pages of a deleted area keep
/// their contents, which must not reach the next owner (another VM's RAM,
/// another module's record). The zeroing runs after the create is
/// committed and without `STATE` (a 1 GiB run takes a while); a caller
/// that deletes and recreates the same area from another thread meanwhile
/// races with itself.
fn create_zeroed(name: &[u8], npages: u64, may_sleep: bool) -> Result<u16> {
    let (id, p, len) = with_region(|r| {
        let k = r.ready()?;
        let id = k.create_area(name, npages).map_err(errno)?;
        let first = k.area(id).map_err(errno)?.first;
        Ok((id, r.page_virt(first), npages as usize * PAGE_SIZE))
    })?;
    // SAFETY: the run is inside the region's mapping, which lives until the
    // module is unloaded (not before this call returns), and belongs to the
    // area just created.
    unsafe { kram_glue_zero(p, len, may_sleep) };
    Ok(id)
}

// SAFETY: `virt` points to a mapping owned by this value; it is only used
// with `STATE` held, from whichever thread holds it.
unsafe impl Send for Region {}

global_lock! {
    // SAFETY: initialised in `KramModule::init` before anything else uses it.
    unsafe(uninit) static STATE: SpinLock<Option<Region>> = None;
}

fn errno(e: format::Error) -> Error {
    use format::Error as F;
    match e {
        F::Geometry | F::Invalid => EINVAL,
        F::NoSuperblock | F::Foreign | F::Corrupt(_) => EUCLEAN,
        F::Version => EPROTO,
        F::NoArea => ENOENT,
        F::Exists => EEXIST,
        F::NoSpace => ENOSPC,
        F::NotOwner => EPERM,
        F::Crashed => EIO,
    }
}

impl Region {
    /// The region's memory as the format code sees it.
    ///
    /// # Safety
    ///
    /// The caller must hold `STATE` for as long as the result (or a `Kram`
    /// built from it) is used, and must drop it before the region is unmapped.
    unsafe fn media(virt: NonNull<u8>, geo: &Geometry) -> Media<'static> {
        let p = virt.as_ptr();
        // SAFETY: the mapping covers `geo.pages` pages and stays mapped until
        // `Region::drop`; pages 0 and 1 are the superblock slots and pages
        // 2.. the owner map (`geo.pages` words, 4-byte aligned as the mapping
        // is page aligned). Only this module accesses them, under `STATE`.
        unsafe {
            Media {
                slots: [
                    core::slice::from_raw_parts_mut(p, PAGE_SIZE),
                    core::slice::from_raw_parts_mut(p.add(PAGE_SIZE), PAGE_SIZE),
                ],
                map: core::slice::from_raw_parts(
                    p.add(2 * PAGE_SIZE).cast::<AtomicU32>(),
                    geo.pages as usize,
                ),
            }
        }
    }

    fn ready(&mut self) -> Result<&mut Kram<'static, Direct>> {
        match (&mut self.kram, self.refused) {
            (Some(k), _) => Ok(k),
            (None, Some(e)) => Err(e),
            (None, None) => Err(ENODEV),
        }
    }

    /// Delete area `id`, unless a user mapping of it is left or an IOMMU
    /// translates through tables in it.
    fn delete_area(&mut self, id: u16, tables: &IommuTables) -> Result {
        let n = self.maps.get(usize::from(id)).copied().unwrap_or(0);
        if n != 0 {
            pr_warn!("area {} is mapped ({} mappings): not deleted (EBUSY)\n", id, n);
            return Err(EBUSY);
        }
        let base = self.geo.base;
        let k = self.ready()?;
        if let Some(pa) = tables.owned_by(k, base, id) {
            pr_warn!("area {} holds a table the IOMMU translates through ({:#x}): not deleted (EBUSY)\n", id, pa);
            return Err(EBUSY);
        }
        k.delete_area(id).map_err(errno)
    }

    /// Kernel virtual address of page `index`.
    fn page_virt(&self, index: u64) -> *mut c_void {
        // `index` comes from the format code and is below `geo.pages`.
        self.virt.as_ptr().wrapping_add(index as usize * PAGE_SIZE).cast()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // The format state borrows the mapping: drop it first.
        self.kram = None;
        // SAFETY: `virt` came from `memremap()` in `map_region` and nothing
        // uses it any more.
        unsafe { bindings::memunmap(self.virt.as_ptr().cast()) };
        // SAFETY: no mapping of ours is left (each holds the file, and so
        // the module); the glue frees the struct pages if it made them.
        unsafe { kram_glue_pages_exit() };
        if self.claimed {
            // SAFETY: the range was requested in `map_region`.
            unsafe {
                bindings::__release_region(
                    &raw mut bindings::iomem_resource,
                    self.geo.base,
                    self.geo.pages * PAGE_SIZE as u64,
                )
            };
        }
    }
}

/// Where the region comes from.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    /// `base=`/`size=` or a `memmap=` range: reserved in the E820 map.
    Reserved,
    /// `reserve_mem=...:kram`: memblock-reserved System RAM.
    ReserveMem,
}

/// The region when no `base=`/`size=` is given: `reserve_mem=SIZE:ALIGN:kram`
/// on the command line. (A `memmap=` range is found by `liveup kram load`
/// from /proc/cmdline: the kernel does not export its command line.)
fn discover() -> Result<(u64, u64, Source)> {
    let (mut b, mut s) = (0, 0);
    // SAFETY: the name is NUL-terminated; `b` and `s` are valid for writes.
    let found = unsafe { bindings::reserve_mem_find_by_name(c_str!("kram").as_char_ptr(), &mut b, &mut s) };
    if found == 0 {
        pr_err!("no region: load with base= size= of a memmap=SIZE$ADDR range (liveup kram load finds it), or boot with reserve_mem=SIZE:ALIGN:kram (EINVAL)\n");
        return Err(EINVAL);
    }
    pr_info!("region {:#x}+{:#x} from reserve_mem=...:kram\n", b, s);
    Ok((b, s, Source::ReserveMem))
}

/// Check the range, claim it in the iomem tree and map it.
fn map_region(base: u64, size: u64, source: Source) -> Result<Region> {
    let geo = Geometry::new(base, size).map_err(|_| {
        pr_err!("region {:#x}+{:#x} is not page aligned or too small/large (EINVAL)\n", base, size);
        EINVAL
    })?;
    let claimed = source == Source::Reserved;
    if claimed {
        // SAFETY: pure query of the resource tree.
        let ram = unsafe {
            bindings::region_intersects(
                base,
                size as usize,
                bindings::IORESOURCE_SYSTEM_RAM as c_ulong,
                bindings::IORES_DESC_NONE as c_ulong,
            )
        };
        if ram != bindings::REGION_DISJOINT as c_int {
            pr_err!("region {:#x}+{:#x} overlaps System RAM: reserve it with memmap=SIZE$ADDR (EINVAL)\n", base, size);
            return Err(EINVAL);
        }
        // SAFETY: the name is a static string; the resource tree is locked inside.
        let res = unsafe {
            bindings::__request_region(
                &raw mut bindings::iomem_resource,
                base,
                size,
                c_str!("kram").as_char_ptr(),
                0,
            )
        };
        if res.is_null() {
            pr_err!("region {:#x}+{:#x} is already owned by another driver (EBUSY)\n", base, size);
            return Err(EBUSY);
        }
    }
    // SAFETY: the range is reserved memory we now own (a claimed E820
    // range, or memblock-reserved RAM the kernel never allocates from);
    // write-back mapping (for RAM, memremap returns the direct map).
    let virt = unsafe { bindings::memremap(base, size as usize, bindings::MEMREMAP_WB as c_ulong) };
    let Some(virt) = NonNull::new(virt.cast::<u8>()) else {
        if claimed {
            // SAFETY: requested just above.
            unsafe { bindings::__release_region(&raw mut bindings::iomem_resource, base, size) };
        }
        pr_err!("cannot map region {:#x}+{:#x} (ENOMEM)\n", base, size);
        return Err(ENOMEM);
    };
    Ok(Region { virt, geo, kram: None, refused: None, claimed, maps: [0; format::MAX_AREAS + 1] })
}

fn adopt(r: &mut Region) {
    // SAFETY: called with `STATE` held or before it is published; the
    // result is stored in `r` and dropped before the unmap.
    let media = unsafe { Region::media(r.virt, &r.geo) };
    match Kram::open(r.geo, media, Direct)
        .map_err(errno)
        .and_then(|(k, rep)| Ok((KBox::new(k, GFP_KERNEL)?, rep)))
    {
        Ok((k, rep)) => {
            let s = k.stats();
            let areas = k.superblock().areas.iter().filter(|a| a.in_use()).count();
            pr_info!(
                "adopted region {:#x}+{} MiB: generation {}, {} areas, {} pages used, {} free{}\n",
                r.geo.base,
                (r.geo.pages * PAGE_SIZE as u64) >> 20,
                rep.generation,
                areas,
                s.used,
                s.free,
                if rep.other_slot_bad { " (one superblock copy was damaged)" } else { "" }
            );
            if rep.recovered != format::Intent::None {
                pr_info!("finished an interrupted update: {:?}\n", rep.recovered);
            }
            r.kram = Some(k);
            r.refused = None;
        }
        Err(e) => {
            pr_err!(
                "region {:#x}: metadata refused (errno {}), contents left untouched; format explicitly to reuse it\n",
                r.geo.base,
                e.to_errno()
            );
            r.kram = None;
            r.refused = Some(e);
        }
    }
}

fn with_region<T>(f: impl FnOnce(&mut Region) -> Result<T>) -> Result<T> {
    let mut guard = STATE.lock();
    match guard.as_mut() {
        Some(r) => f(r),
        None => Err(ENODEV),
    }
}

// ---------------------------------------------------------------------------
// Kernel API, exported by kram_glue.c. Prototypes in include/kram.h.

fn ret(r: Result<c_int>) -> c_int {
    match r {
        Ok(v) => v,
        Err(e) => e.to_errno(),
    }
}

/// Copy a NUL-terminated name of at most `NAME_LEN - 1` bytes.
///
/// # Safety
///
/// `name` must be null or point to a NUL-terminated string.
unsafe fn name_from_c(name: *const c_char, buf: &mut [u8; format::NAME_LEN]) -> Result<usize> {
    if name.is_null() {
        return Err(EINVAL);
    }
    for (i, b) in buf.iter_mut().enumerate() {
        // SAFETY: the caller passes a NUL-terminated string; we stop at NUL.
        let c = unsafe { *name.add(i) } as u8;
        if c == 0 {
            return Ok(i);
        }
        *b = c;
    }
    Err(EINVAL)
}

/// Look up an area by name. Returns its id (> 0) or a negative errno.
#[no_mangle]
pub extern "C" fn kram_area_lookup(name: *const c_char) -> c_int {
    let mut buf = [0u8; format::NAME_LEN];
    // SAFETY: API contract: `name` is a NUL-terminated string.
    let r = unsafe { name_from_c(name, &mut buf) }.and_then(|n| {
        with_region(|r| Ok(r.ready()?.lookup(&buf[..n]).map_err(errno)? as c_int))
    });
    ret(r)
}

/// Create an area with a fixed run of `npages` pages. Returns its id.
#[no_mangle]
pub extern "C" fn kram_area_create(name: *const c_char, npages: u64) -> c_int {
    let mut buf = [0u8; format::NAME_LEN];
    // SAFETY: API contract: `name` is a NUL-terminated string.
    let r = unsafe { name_from_c(name, &mut buf) }
        .and_then(|n| Ok(create_zeroed(&buf[..n], npages, false)? as c_int));
    ret(r)
}

/// Delete an area and free all its pages.
#[no_mangle]
pub extern "C" fn kram_area_delete(area: c_int) -> c_int {
    let id = u16::try_from(area).map_err(|_| EINVAL);
    ret(id.and_then(|id| {
        let t = IommuTables::get()?;
        with_region(|r| r.delete_area(id, &t).map(|_| 0))
    }))
}

fn out_page(r: &Region, index: u64, phys: *mut u64, virt: *mut *mut c_void) {
    if !phys.is_null() {
        // SAFETY: API contract: `phys` is null or valid for a write.
        unsafe { *phys = r.geo.phys(index) };
    }
    if !virt.is_null() {
        // SAFETY: API contract: `virt` is null or valid for a write.
        unsafe { *virt = r.page_virt(index) };
    }
}

/// Page `index` of an area's fixed run: the same physical page in every
/// kernel. Fills `*phys` and `*virt` (either may be null).
#[no_mangle]
pub extern "C" fn kram_get_fixed_page(area: c_int, index: u64, phys: *mut u64, virt: *mut *mut c_void) -> c_int {
    let id = u16::try_from(area).map_err(|_| EINVAL);
    ret(id.and_then(|id| {
        with_region(|r| {
            let page = r.ready()?.fixed_page(id, index).map_err(errno)?;
            out_page(r, page, phys, virt);
            Ok(0)
        })
    }))
}

/// Allocate a page owned by `area`; it stays allocated across kexec.
#[no_mangle]
pub extern "C" fn kram_alloc_page(area: c_int, phys: *mut u64, virt: *mut *mut c_void) -> c_int {
    let id = u16::try_from(area).map_err(|_| EINVAL);
    ret(id.and_then(|id| {
        with_region(|r| {
            let page = r.ready()?.alloc_page(id).map_err(errno)?;
            out_page(r, page, phys, virt);
            Ok(0)
        })
    }))
}

/// Free a page `kram_alloc_page(area, ...)` returned.
#[no_mangle]
pub extern "C" fn kram_free_page(area: c_int, phys: u64) -> c_int {
    let id = u16::try_from(area).map_err(|_| EINVAL);
    ret(id.and_then(|id| {
        with_region(|r| {
            let page = r.geo.index_of(phys).ok_or(EINVAL)?;
            r.ready()?.free_page(id, page).map_err(errno)?;
            Ok(0)
        })
    }))
}

// ---------------------------------------------------------------------------
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

fn status() -> Result<KramStatus> {
    with_region(|r| {
        let mut s = KramStatus {
            base: r.geo.base,
            size: r.geo.pages * PAGE_SIZE as u64,
            pages: r.geo.pages,
            max_areas: format::MAX_AREAS as u32,
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
                s.state = 1;
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

struct KramDev;

#[vtable]
impl MiscDevice for KramDev {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        admin_only()?;
        Ok(KBox::new(KramDev, GFP_KERNEL)?)
    }

    fn ioctl(_me: &KramDev, file: &File, cmd: u32, arg: usize) -> Result<isize> {
        kram_ioctl(file, cmd, arg)
    }

    /// Map pages of one area's fixed run as a PFN range.
    fn mmap(_me: &KramDev, _file: &File, vma: &VmaNew) -> Result {
        map_area(vma, false)
    }
}

/// `/dev/kram-pages`: the same ioctls; its mappings are ordinary pages that
/// GUP can pin (VFIO, iommufd, O_DIRECT). The region's struct pages are made
/// on its first mmap.
struct KramPagesDev;

#[vtable]
impl MiscDevice for KramPagesDev {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        admin_only()?;
        Ok(KBox::new(KramPagesDev, GFP_KERNEL)?)
    }

    fn ioctl(_me: &KramPagesDev, file: &File, cmd: u32, arg: usize) -> Result<isize> {
        kram_ioctl(file, cmd, arg)
    }

    fn mmap(_me: &KramPagesDev, _file: &File, vma: &VmaNew) -> Result {
        map_area(vma, true)
    }
}

/// The ioctls of both device nodes.
fn kram_ioctl(_file: &File, cmd: u32, arg: usize) -> Result<isize> {
    let user = |len| UserSlice::new(UserPtr::from_addr(arg), len);
    match cmd {
        KRAM_IOC_STATUS => {
            let s = status()?;
            user(size_of::<KramStatus>()).writer().write(&s)?;
        }
        KRAM_IOC_FORMAT => {
            let f: KramFormat = user(size_of::<KramFormat>()).reader().read()?;
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
            })?;
        }
        KRAM_IOC_CREATE | KRAM_IOC_LOOKUP | KRAM_IOC_DELETE | KRAM_IOC_AREA_AT => {
            let (mut rd, mut wr) = user(size_of::<KramArea>()).reader_writer();
            let mut a: KramArea = rd.read()?;
            let created = if cmd == KRAM_IOC_CREATE {
                Some(create_zeroed(area_name(&a)?, a.npages, true)?)
            } else {
                None
            };
            let tables = if cmd == KRAM_IOC_DELETE { Some(IommuTables::get()?) } else { None };
            with_region(|r| {
                let k = r.ready()?;
                let id = match cmd {
                    KRAM_IOC_CREATE => created.ok_or(EINVAL)?,
                    KRAM_IOC_AREA_AT => u16::try_from(a.id).map_err(|_| EINVAL)?,
                    _ => k.lookup(area_name(&a)?).map_err(errno)?,
                };
                if let Some(t) = &tables {
                    return r.delete_area(id, t);
                }
                fill_area(r, id, &mut a)
            })?;
            if cmd != KRAM_IOC_DELETE {
                wr.write(&a)?;
            }
        }
        KRAM_IOC_ALLOC | KRAM_IOC_FREE => {
            let (mut rd, mut wr) = user(size_of::<KramPage>()).reader_writer();
            let mut p: KramPage = rd.read()?;
            let id = u16::try_from(p.id).map_err(|_| EINVAL)?;
            with_region(|r| {
                let pagesz = PAGE_SIZE as u64;
                if cmd == KRAM_IOC_ALLOC {
                    p.offset = r.ready()?.alloc_page(id).map_err(errno)? * pagesz;
                    Ok(())
                } else {
                    let page = r.geo.index_of(r.geo.base.wrapping_add(p.offset)).ok_or(EINVAL)?;
                    r.ready()?.free_page(id, page).map_err(errno)
                }
            })?;
            if cmd == KRAM_IOC_ALLOC {
                wr.write(&p)?;
            }
        }
        _ => return Err(ENOTTY),
    }
    Ok(0)
}

/// Map pages of one area's fixed run: the mmap offset is the offset from
/// the region's start (`KramArea::offset` plus a page multiple). `pages`:
/// ordinary pages inserted at fault time (`/dev/kram-pages`), else a PFN
/// range filled at fault time, 2 MiB at a time where aligned (`/dev/kram`).
/// The mapping is counted in
/// `Region::maps` from here until the VMA's close (the glue's vm_ops count
/// the copies made by fork, split and mremap).
fn map_area(vma: &VmaNew, pages: bool) -> Result {
    if vma.flags() & kernel::mm::virt::flags::SHARED == 0 {
        return Err(EINVAL);
    }
    let len = (vma.end() - vma.start()) as u64;
    // SAFETY: reading a field of the VMA being set up, which we may access.
    let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff } as u64;
    let (base, size, id) = with_region(|r| {
        let k = r.ready()?;
        let first = pgoff;
        let last = first.checked_add(len / PAGE_SIZE as u64).ok_or(EINVAL)?;
        let (owner, fixed) = k.page_owner(first).map_err(|_| EINVAL)?;
        let a = k.area(owner).map_err(|_| EINVAL)?;
        if !fixed || last > a.first + a.npages {
            return Err(EINVAL);
        }
        let n = r.maps.get_mut(usize::from(owner)).ok_or(EINVAL)?;
        *n = n.checked_add(1).ok_or(EBUSY)?;
        Ok((r.geo.base, r.geo.pages * PAGE_SIZE as u64, owner))
    })?;
    let res = map_counted(vma, pages, base, size, id);
    if res.is_err() {
        // The VMA got no vm_ops of ours: nothing else will uncount it.
        kram_map_put(id);
    }
    res
}

fn map_counted(vma: &VmaNew, pages: bool, base: u64, size: u64, id: u16) -> Result {
    vma.set_dontexpand();
    vma.set_dontdump();
    if pages {
        // SAFETY: the region is ours while the module is loaded; the glue
        // serialises the first call, which may sleep (no lock held here).
        to_result(unsafe { kram_glue_pages_get(base, size) })?;
    }
    // SAFETY: the VMA is being set up by this mmap call (mmap lock held
    // for writing); its range was checked against area `id`, whose mapping
    // count `map_area` raised. Faults insert the area's fixed run inside
    // our region (vm_pgoff plus the offset in the VMA, which cannot grow),
    // and the struct pages (`pages`) or the reservation live while the
    // module does: the VMA holds the file and so the module.
    unsafe { kram_glue_set_vm_ops(vma.as_ptr().cast(), base / PAGE_SIZE as u64, id, pages) };
    Ok(())
}

/// A copy of a counted mapping was made (fork, split, mremap): called by
/// the glue's vm_ops `open`, mmap lock held.
#[no_mangle]
pub extern "C" fn kram_map_get(area: u16) {
    let _ = with_region(|r| {
        if let Some(n) = r.maps.get_mut(usize::from(area)) {
            *n = n.saturating_add(1);
        }
        Ok(())
    });
}

/// A counted mapping went away: vm_ops `close`, or a failed mmap.
#[no_mangle]
pub extern "C" fn kram_map_put(area: u16) {
    let _ = with_region(|r| {
        if let Some(n) = r.maps.get_mut(usize::from(area)) {
            *n = n.saturating_sub(1);
        }
        Ok(())
    });
}

/// Owns the region published in `STATE`: dropping it unpublishes the
/// region, then unmaps and releases it outside the lock (unmapping sleeps).
struct RegionGuard;

impl Drop for RegionGuard {
    fn drop(&mut self) {
        let r = STATE.lock().take();
        drop(r);
    }
}

/// Fields drop in declaration order: debugfs and the device go before the
/// region they show.
#[pin_data]
struct KramModule {
    #[pin]
    _status: debugfs::File<()>,
    _debugfs: debugfs::Dir,
    #[pin]
    _dev: MiscDeviceRegistration<KramDev>,
    #[pin]
    _pages_dev: MiscDeviceRegistration<KramPagesDev>,
    _region: RegionGuard,
}

fn debugfs_status(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    let guard = STATE.lock();
    let Some(r) = guard.as_ref() else {
        return writeln!(f, "state: no region");
    };
    writeln!(f, "region: {:#x} {} MiB", r.geo.base, (r.geo.pages * PAGE_SIZE as u64) >> 20)?;
    match (&r.kram, r.refused) {
        (Some(k), _) => {
            let s = k.stats();
            writeln!(f, "state: ready")?;
            writeln!(f, "generation: {}", k.superblock().generation)?;
            writeln!(f, "pages: {} meta: {} used: {} free: {}", s.pages, s.meta, s.used, s.free)?;
            for (i, a) in k.superblock().areas.iter().enumerate().filter(|(_, a)| a.in_use()) {
                let name = core::str::from_utf8(a.name()).unwrap_or("?");
                let maps = r.maps.get(i + 1).copied().unwrap_or(0);
                let first = r.geo.phys(a.first);
                writeln!(f, "area {} {}: first {:#x} pages {} mapped {}", i + 1, name, first, a.npages, maps)?;
            }
            Ok(())
        }
        (None, e) => writeln!(f, "state: refused (errno {})", e.unwrap_or(ENODEV).to_errno()),
    }
}

impl kernel::InPlaceModule for KramModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        // SAFETY: called once, before anything uses `STATE`.
        unsafe { STATE.init() };
        let (b, s) = (module_parameters::base.value(), module_parameters::size.value());
        let setup = move || -> Result<RegionGuard> {
            let (b, s, source) = match (b, s) {
                (0, 0) => discover()?,
                (0, _) | (_, 0) => {
                    pr_err!("give both base= and size=, or neither to use the command line's reservation (EINVAL)\n");
                    return Err(EINVAL);
                }
                _ => (b, s, Source::Reserved),
            };
            let mut r = map_region(b, s, source)?;
            adopt(&mut r);
            *STATE.lock() = Some(r);
            Ok(RegionGuard)
        };
        let dir = debugfs::Dir::new(c_str!("kram"));
        try_pin_init!(Self {
            _region: setup()?,
            _dev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c_str!("kram") }),
            _pages_dev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c_str!("kram-pages") }),
            _status <- dir.read_callback_file(c_str!("status"), (), &debugfs_status),
            _debugfs: dir,
        })
    }
}
