// SPDX-License-Identifier: GPL-2.0

//! The region: its reservation, mapping and adoption of what the previous
//! kernel left, the `STATE` lock around it (locking: see the crate root),
//! and the VT-d tables in it an IOMMU still translates through.

use crate::format::{self, Direct, Geometry, Kram, Media, PAGE_SIZE};
use crate::glue::{kram_glue_iommu_tables, kram_glue_pages_exit, kram_glue_zero};
use core::ptr::NonNull;
use core::sync::atomic::AtomicU32;
use kernel::ffi::{c_int, c_ulong, c_void};
use kernel::{bindings, c_str, prelude::*, sync::global_lock};

/// The region while the module is loaded.
pub(crate) struct Region {
    /// Start of the `memremap()`ed region.
    pub(crate) virt: NonNull<u8>,
    pub(crate) geo: Geometry,
    /// `None` while the metadata is refused (corrupt, foreign, unformatted).
    /// Boxed: it is about 2 KiB, too much to move around kernel stacks.
    pub(crate) kram: Option<KBox<Kram<'static, Direct>>>,
    /// Why the metadata was refused.
    pub(crate) refused: Option<Error>,
    /// Claimed in the iomem tree (a `memmap=` range; a `reserve_mem=` range
    /// is memblock-reserved System RAM, which cannot be requested).
    pub(crate) claimed: bool,
    /// User mappings (VMAs) of each area, by area id: an area still mapped
    /// is neither deleted nor formatted away, since its pages would go to
    /// the next owner under the mapping (another VM's RAM).
    pub(crate) maps: [u32; format::MAX_AREAS + 1],
    /// Open files of each area's own node (`/dev/kram-area/ID`), by area
    /// id: such a file reaches that area only, so the area is neither
    /// deleted nor formatted while one is open (a new area under the same
    /// id would be another owner's memory).
    pub(crate) opens: [u32; format::MAX_AREAS + 1],
    /// Areas whose fixed run is being zeroed after their create: until it
    /// is done nobody maps them or gets their pages (they still hold the
    /// previous owner's data), and they are neither deleted nor formatted.
    pub(crate) zeroing: [bool; format::MAX_AREAS + 1],
}

/// VT-d tables in the region that an IOMMU translates through now (a
/// preserved device's, patches/0003): the areas holding them must stay.
pub(crate) struct IommuTables {
    /// How many; more than `pa.len()` when some could not be read.
    pub(crate) n: usize,
    pub(crate) pa: [u64; 16],
}

impl IommuTables {
    /// Looked up without `STATE` (the lookup maps tables and may sleep); a
    /// table switched to between this and the delete is not seen.
    pub(crate) fn get() -> Result<IommuTables> {
        let (base, len) = with_region(|r| Ok((r.geo.base, r.geo.pages * PAGE_SIZE as u64)))?;
        let mut t = IommuTables { n: 0, pa: [0; 16] };
        // SAFETY: `t.pa` holds 16 entries, the most the glue writes.
        let n = unsafe { kram_glue_iommu_tables(base, base + len, t.pa.as_mut_ptr(), 16) };
        t.n = usize::try_from(n).unwrap_or(0);
        Ok(t)
    }

    /// The first table owned by area `id` (all of them if unknown).
    /// One of the tables area `id` holds (0 when the set could not be read
    /// whole: then every area counts as holding one).
    pub(crate) fn owned_by(&self, k: &Kram<'static, Direct>, base: u64, id: u16) -> Option<u64> {
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
/// another module's record). The create is committed first (so no other
/// create or page allocation can take the run), then the run is zeroed
/// without `STATE`, sleeping between 1 MiB pieces (a 1 GiB run takes a
/// while), with the area marked `zeroing`: mmap, the fixed-page API,
/// delete and format refuse it with EBUSY until the zeroing is done. May
/// sleep: process context only.
///
/// Not covered: a crash or kexec during the zeroing leaves the area
/// committed with the rest of its run unzeroed (its creator never got an
/// answer; the next kernel does not know which pages were done).
pub(crate) fn create_zeroed(name: &[u8], npages: u64) -> Result<u16> {
    let (id, p, len) = with_region(|r| {
        let k = r.ready()?;
        let id = k.create_area(name, npages).map_err(errno)?;
        let first = k.area(id).map_err(errno)?.first;
        *r.zeroing.get_mut(usize::from(id)).ok_or(EINVAL)? = true;
        Ok((id, r.page_virt(first), npages as usize * PAGE_SIZE))
    })?;
    // SAFETY: the run is inside the region's mapping, which lives until the
    // module is unloaded (not before this call returns), and belongs to the
    // area just created, which nobody else can map, delete or get pages of
    // while it is marked `zeroing`.
    unsafe { kram_glue_zero(p, len) };
    with_region(|r| {
        if let Some(z) = r.zeroing.get_mut(usize::from(id)) {
            *z = false;
        }
        Ok(())
    })?;
    Ok(id)
}

/// Whether area `id` is being zeroed (`create_zeroed`).
pub(crate) fn is_zeroing(r: &Region, id: u16) -> bool {
    r.zeroing.get(usize::from(id)).copied().unwrap_or(false)
}

/// EBUSY (and one line) while area `id` is being zeroed.
pub(crate) fn not_zeroing(r: &Region, id: u16, what: &str) -> Result {
    if is_zeroing(r, id) {
        pr_warn!("area {} is being zeroed: {} refused (EBUSY)\n", id, what);
        return Err(EBUSY);
    }
    Ok(())
}

// SAFETY: `virt` points to a mapping owned by this value; it is only used
// with `STATE` held, from whichever thread holds it.
unsafe impl Send for Region {}

global_lock! {
    // SAFETY: initialised in `KramModule::init` before anything else uses it.
    pub(crate) unsafe(uninit) static STATE: SpinLock<Option<Region>> = None;
}

pub(crate) fn errno(e: format::Error) -> Error {
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
    pub(crate) unsafe fn media(virt: NonNull<u8>, geo: &Geometry) -> Media<'static> {
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

    pub(crate) fn ready(&mut self) -> Result<&mut Kram<'static, Direct>> {
        match (&mut self.kram, self.refused) {
            (Some(k), _) => Ok(k),
            (None, Some(e)) => Err(e),
            (None, None) => Err(ENODEV),
        }
    }

    /// Delete area `id`, unless a user mapping of it or an open file of its
    /// node is left, or an IOMMU translates through tables in it.
    pub(crate) fn delete_area(&mut self, id: u16, tables: &IommuTables) -> Result {
        not_zeroing(self, id, "delete")?;
        let n = self.maps.get(usize::from(id)).copied().unwrap_or(0);
        if n != 0 {
            pr_warn!("area {} is mapped ({} mappings): not deleted (EBUSY)\n", id, n);
            return Err(EBUSY);
        }
        let n = self.opens.get(usize::from(id)).copied().unwrap_or(0);
        if n != 0 {
            pr_warn!("area {} is open through its node ({} files): not deleted (EBUSY)\n", id, n);
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
    pub(crate) fn page_virt(&self, index: u64) -> *mut c_void {
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
pub(crate) enum Source {
    /// `base=`/`size=` or a `memmap=` range: reserved in the E820 map.
    Reserved,
    /// `reserve_mem=...:kram`: memblock-reserved System RAM.
    ReserveMem,
}

/// The region when no `base=`/`size=` is given: `reserve_mem=SIZE:ALIGN:kram`
/// on the command line. (A `memmap=` range is found by `liveup kram load`
/// from /proc/cmdline: the kernel does not export its command line.)
pub(crate) fn discover() -> Result<(u64, u64, Source)> {
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
pub(crate) fn map_region(base: u64, size: u64, source: Source) -> Result<Region> {
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
    Ok(Region {
        virt,
        geo,
        kram: None,
        refused: None,
        claimed,
        maps: [0; format::MAX_AREAS + 1],
        opens: [0; format::MAX_AREAS + 1],
        zeroing: [false; format::MAX_AREAS + 1],
    })
}

pub(crate) fn adopt(r: &mut Region) {
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

pub(crate) fn with_region<T>(f: impl FnOnce(&mut Region) -> Result<T>) -> Result<T> {
    let mut guard = STATE.lock();
    match guard.as_mut() {
        Some(r) => f(r),
        None => Err(ENODEV),
    }
}

/// Owns the region published in `STATE`: dropping it unpublishes the
/// region, then unmaps and releases it outside the lock (unmapping sleeps).
pub(crate) struct RegionGuard;

impl Drop for RegionGuard {
    fn drop(&mut self) {
        let r = STATE.lock().take();
        drop(r);
    }
}

pub(crate) fn debugfs_status(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
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
