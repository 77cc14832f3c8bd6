// SPDX-License-Identifier: GPL-2.0

//! iommu_preserve: a kept PCI device's DMA stays translated through a host
//! kexec (Intel VT-d, legacy mode).
//!
//! Loaded with `freeze=` (the device as `(segment << 16) | (bus << 8) |
//! devfn`, kept through patches/0002 first), while its VMM still has it
//! mapped, the module copies the device's second-level page tables into
//! KRAM pages (every mapped page must itself be outside System RAM, i.e.
//! guest RAM in KRAM), builds a root and context table there that point at
//! the copy (the other entries copied as they are; area "iommu-tables"),
//! switches the IOMMU to that root with translation on
//! (patches/0003) and asks the kernel to leave translation on at kexec. A
//! record in KRAM (area "iommu-preserve", format in
//! `userspace/kram-format/src/vtd.rs`, shared with host tests) tells the
//! next kernel what was kept. That kernel, booted with
//! `intel_iommu_adopt=RECORD pci_keep=DEV`, checks the record and adopts
//! the root, context and page-table pages in place: the IOMMU goes on
//! reading the same pages until the device is attached to a new domain;
//! `release=1` then has the kernel move the root and context table to pages
//! of its own and frees every KRAM page.
//!
//! Loaded without `freeze=` it checks the record (a corrupt one is refused
//! and left as it is) and says whether the tables are adopted in place or
//! the device was attached anew; with `release=1` it then frees them, but
//! only once nothing translates through them; `discard=1` drops a refused
//! record with its areas (KRAM refuses to delete an area holding a table
//! the IOMMU reads, so a record in use is never discarded). `thaw=1`, in
//! the kernel that froze (an upgrade that gave up before its kexec),
//! switches the IOMMU back to that kernel's own root table, which it kept
//! up to date all along, lets translation go off at a later kexec again,
//! and frees the tables.
//!
//! Locking: everything happens in module init, which the module loader
//! serialises; KRAM's API has its own lock. The device's tables must not
//! change during `freeze` (the VMM is stopped); later changes by the old
//! kernel reach its own tables, which the IOMMU no longer reads.

use core::ptr::NonNull;
use kernel::ffi::{c_char, c_int, c_void};
use kernel::{c_str, prelude::*};

#[path = "../userspace/kram-format/src/format.rs"]
#[allow(dead_code, unreachable_pub)]
mod format;
#[path = "../userspace/kram-format/src/vtd.rs"]
#[allow(dead_code, unreachable_pub)]
mod vtd;

module! {
    type: IommuPreserve,
    name: "iommu_preserve",
    authors: ["kvmhost developers"],
    description: "Keep a kept device's VT-d translation across kexec",
    license: "GPL",
    params: {
        freeze: i64 {
            default: -1,
            description: "Device to keep translated across kexec: (segment << 16) | (bus << 8) | devfn",
        },
        release: bool {
            default: false,
            description: "Free the preserved tables once the device is attached anew",
        },
        discard: bool {
            default: false,
            description: "Drop a refused (corrupt) record and every page it may name",
        },
        thaw: bool {
            default: false,
            description: "Undo a freeze in the kernel that made it (an upgrade aborted before kexec): back to the kernel's own root table, tables freed",
        },
    },
}

include!("../kram/include/kram_api.rs");

extern "C" {
    fn iopr_glue_get_dev(seg: c_int, bus: c_int, devfn: c_int) -> *mut c_void;
    fn iopr_glue_put_dev(dev: *mut c_void);
    fn iopr_glue_is_kept(dev: *mut c_void) -> bool;
    fn iopr_glue_map(phys: u64) -> *mut c_void;
    fn iopr_glue_unmap(virt: *mut c_void);
    fn iopr_glue_flush(virt: *mut c_void);
    fn iopr_glue_outside_ram(phys: u64, size: u64) -> bool;
    fn iopr_glue_switch_root(dev: *mut c_void, new_root: u64, hw_root: *mut u64, own_root: *mut u64) -> c_int;
    fn iopr_glue_keep_translation(keep: bool);
    fn iopr_glue_release_adopted(dev: *mut c_void) -> c_int;
}

const AREA: &CStr = c_str!("iommu-preserve");
/// Root and context table: fixed pages 0 and 1. The next kernel adopts them
/// in place and uses them until `release` moves them to its own pages.
const TABLES: &CStr = c_str!("iommu-tables");
const TABLE_PAGES: u64 = 2;
const WORDS: usize = 512;

/// `ssss:bb:dd.f` for the log.
struct Bdf(u16, u8, u8);

impl kernel::fmt::Display for Bdf {
    fn fmt(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{}", self.0, self.1, self.2 >> 3, self.2 & 7)
    }
}

/// A referenced PCI device.
struct Dev(NonNull<c_void>);

/// Root table addresses of a device's IOMMU (see `Dev::roots`).
struct Roots {
    hw: u64,
    own: u64,
}

impl Dev {
    fn get(bdf: &Bdf) -> Option<Dev> {
        // SAFETY: a lookup by numbers; the result is referenced or NULL.
        NonNull::new(unsafe { iopr_glue_get_dev(bdf.0.into(), bdf.1.into(), bdf.2.into()) }).map(Dev)
    }

    fn kept(&self) -> bool {
        // SAFETY: `self.0` is a live, referenced PCI device.
        unsafe { iopr_glue_is_kept(self.0.as_ptr()) }
    }

    /// The device's IOMMU's root tables: the one the hardware uses and the
    /// one the kernel keeps up to date (they differ only between a freeze
    /// and the kexec); with `new` not 0, the hardware is switched to `new`
    /// afterwards (translation stays on).
    fn roots(&self, new: u64) -> Result<Roots> {
        let (mut hw, mut own) = (0u64, 0u64);
        // SAFETY: live device; valid out-pointers.
        let r = unsafe { iopr_glue_switch_root(self.0.as_ptr(), new, &mut hw, &mut own) };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        Ok(Roots { hw, own })
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SAFETY: drops the reference `get` took.
        unsafe { iopr_glue_put_dev(self.0.as_ptr()) };
    }
}

/// One table page mapped by physical address (read only here).
struct Mapped(NonNull<u64>);

impl Mapped {
    fn new(phys: u64) -> Option<Mapped> {
        // SAFETY: maps one page; NULL on failure.
        NonNull::new(unsafe { iopr_glue_map(phys) }.cast::<u64>()).map(Mapped)
    }

    fn word(&self, i: usize) -> u64 {
        if i >= WORDS {
            return 0;
        }
        // SAFETY: a mapped page of `WORDS` words; `i` is in range.
        unsafe { self.0.as_ptr().add(i).read_volatile() }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, used no more.
        unsafe { iopr_glue_unmap(self.0.as_ptr().cast()) };
    }
}

/// The table pages made in KRAM: physical and virtual address.
struct Kt {
    area: c_int,
    pages: KVec<(u64, *mut u64)>,
    /// The last table looked up: the walk reads and writes one table's
    /// 512 entries in a row, so most lookups are this one.
    hint: Option<(u64, *mut u64)>,
}

impl Kt {
    fn alloc(&mut self) -> core::result::Result<(u64, *mut u64), vtd::Error> {
        let (mut phys, mut virt) = (0u64, core::ptr::null_mut());
        // SAFETY: valid out-pointers.
        if unsafe { kram_alloc_page(self.area, &mut phys, &mut virt) } != 0 || virt.is_null() {
            return Err(vtd::Error::NoMemory);
        }
        let virt = virt.cast::<u64>();
        if self.pages.push((phys, virt), GFP_KERNEL).is_err() {
            // SAFETY: the page just allocated to this area.
            unsafe { kram_free_page(self.area, phys) };
            return Err(vtd::Error::NoMemory);
        }
        Ok((phys, virt))
    }

    /// A new KRAM page holding a copy of the page at `src`.
    fn copy_of(&mut self, src: u64) -> core::result::Result<u64, vtd::Error> {
        let m = Mapped::new(src).ok_or(vtd::Error::NoMemory)?;
        let (phys, virt) = self.alloc()?;
        for i in 0..WORDS {
            // SAFETY: `virt` is a whole KRAM page, valid while kram is loaded.
            unsafe { virt.add(i).write_volatile(m.word(i)) };
        }
        Ok(phys)
    }

    fn virt(&mut self, phys: u64) -> Option<*mut u64> {
        if let Some((p, v)) = self.hint {
            if p == phys {
                return Some(v);
            }
        }
        let v = self.pages.iter().find(|p| p.0 == phys).map(|p| p.1)?;
        self.hint = Some((phys, v));
        Some(v)
    }

    fn flush(&self) {
        for &(_, v) in self.pages.iter() {
            // SAFETY: a KRAM page of ours.
            unsafe { iopr_glue_flush(v.cast()) };
        }
    }

    fn free_all(&mut self) {
        for &(p, _) in self.pages.iter() {
            // SAFETY: a page allocated to this area.
            unsafe { kram_free_page(self.area, p) };
        }
        self.pages.clear();
        self.hint = None;
    }
}

impl vtd::Tables for Kt {
    fn copy_table(&mut self, src: u64) -> core::result::Result<u64, vtd::Error> {
        self.copy_of(src)
    }

    fn get(&mut self, table: u64, idx: usize) -> u64 {
        match self.virt(table) {
            // SAFETY: a KRAM page of ours; `idx` < 512 by the walk.
            Some(v) if idx < WORDS => unsafe { v.add(idx).read_volatile() },
            _ => 0,
        }
    }

    fn set(&mut self, table: u64, idx: usize, val: u64) {
        if let Some(v) = self.virt(table) {
            if idx < WORDS {
                // SAFETY: as in `get`.
                unsafe { v.add(idx).write_volatile(val) };
            }
        }
    }

    fn leaf_ok(&mut self, addr: u64, size: u64) -> bool {
        // SAFETY: a query by range.
        unsafe { iopr_glue_outside_ram(addr, size) }
    }
}

/// The record page (fixed page 0 of the area) as bytes.
///
/// # Safety
///
/// `virt` must be the area's fixed page 0 from the KRAM API, valid while
/// kram is loaded, and not otherwise referenced during the borrow.
unsafe fn record_page<'a>(virt: *mut c_void) -> &'a mut [u8] {
    // SAFETY: guaranteed by the caller: one whole page.
    unsafe { core::slice::from_raw_parts_mut(virt.cast::<u8>(), 4096) }
}

/// The KRAM area `name`, created with `fixed` fixed pages if given and
/// missing; `None` if it does not exist.
fn area_id(name: &CStr, fixed: Option<u64>) -> Result<Option<c_int>> {
    // SAFETY: NUL-terminated name.
    let mut a = unsafe { kram_area_lookup(name.as_char_ptr()) };
    if let (true, Some(n)) = (a == ENOENT.to_errno(), fixed) {
        // SAFETY: NUL-terminated name.
        a = unsafe { kram_area_create(name.as_char_ptr(), n) };
    }
    if a == ENOENT.to_errno() {
        return Ok(None);
    }
    if a < 0 {
        return Err(Error::from_errno(a));
    }
    Ok(Some(a))
}

/// Fixed page `index` of `area`: physical and virtual address.
fn fixed_page(area: c_int, index: u64) -> Result<(u64, *mut c_void)> {
    let (mut phys, mut virt) = (0u64, core::ptr::null_mut());
    // SAFETY: valid out-pointers.
    let r = unsafe { kram_get_fixed_page(area, index, &mut phys, &mut virt) };
    if r < 0 || virt.is_null() {
        return Err(if r < 0 { Error::from_errno(r) } else { ENOMEM });
    }
    Ok((phys, virt))
}

/// The record's area, its record page's physical and virtual address.
fn area(create: bool) -> Result<Option<(c_int, u64, *mut c_void)>> {
    let Some(a) = area_id(AREA, create.then_some(1))? else {
        return Ok(None);
    };
    let (phys, virt) = fixed_page(a, 0)?;
    Ok(Some((a, phys, virt)))
}

/// The root and context table pages of the tables area; EBUSY if the
/// IOMMU reads that root table now (`hw`: an adoption not yet released).
fn table_pair(hw: u64) -> Result<[(u64, *mut u64); 2]> {
    let a = area_id(TABLES, Some(TABLE_PAGES))?.ok_or(ENOENT)?;
    let (rp, rv) = fixed_page(a, 0)?;
    if rp == hw {
        return Err(EBUSY);
    }
    let (cp, cv) = fixed_page(a, 1)?;
    Ok([(rp, rv.cast()), (cp, cv.cast())])
}

/// Delete the tables area, unless the IOMMU reads a table in it (KRAM
/// refuses then, EBUSY).
fn drop_tables() {
    if let Ok(Some(t)) = area_id(TABLES, None) {
        // SAFETY: the area id from the lookup.
        unsafe { kram_area_delete(t) };
    }
}

/// Fill the KRAM page `dst` with a copy of `src`, entry `idx` set to `val`.
fn fill(dst: *mut u64, src: &Mapped, idx: usize, val: u64) {
    for i in 0..WORDS {
        let w = if i == idx { val } else { src.word(i) };
        // SAFETY: `dst` is a whole fixed page of the tables area, valid
        // while kram is loaded, that the IOMMU does not read (`table_pair`).
        unsafe { dst.add(i).write_volatile(w) };
    }
    // SAFETY: as above.
    unsafe { iopr_glue_flush(dst.cast()) };
}

/// The page-table top of the context entry the IOMMU uses now for `bus`,
/// `devfn` under the root table `root`, if present.
fn live_table(root: u64, bus: u8, devfn: u8) -> Option<u64> {
    let r = Mapped::new(root)?;
    let c = Mapped::new(vtd::root_context_table(r.word(usize::from(bus) * 2))?)?;
    let e = vtd::context(c.word(usize::from(devfn) * 2), c.word(usize::from(devfn) * 2 + 1));
    e.present.then_some(e.table)
}

fn vtd_errno(e: vtd::Error) -> Error {
    match e {
        vtd::Error::NoMemory => ENOSPC,
        vtd::Error::TooManyPages => E2BIG,
        vtd::Error::BadMagic | vtd::Error::BadVersion(_) | vtd::Error::BadChecksum | vtd::Error::BadLength => EUCLEAN,
        _ => EINVAL,
    }
}

fn freeze(code: i64) -> Result {
    let bdf = Bdf(((code >> 16) & 0xffff) as u16, ((code >> 8) & 0xff) as u8, (code & 0xff) as u8);
    let Some(dev) = Dev::get(&bdf) else {
        pr_err!("freeze {}: no such PCI device (ENODEV)\n", bdf);
        return Err(ENODEV);
    };
    if !dev.kept() {
        pr_err!("freeze {}: device not kept: set its sysfs 'kept' or VFIO keep flag first (EINVAL)\n", bdf);
        return Err(EINVAL);
    }
    let old_root = dev
        .roots(0)
        .inspect_err(|e| {
            pr_err!("freeze {}: its IOMMU's root table cannot be read (errno {})\n", bdf, e.to_errno());
        })?
        .hw;
    let Some((area, rec_phys, rec_virt)) = area(true).inspect_err(|e| {
        pr_err!("freeze {}: KRAM area unavailable (errno {})\n", bdf, e.to_errno());
    })?
    else {
        return Err(ENODEV);
    };
    // SAFETY: the area's fixed page 0, only used here.
    let rec_page = unsafe { record_page(rec_virt) };
    if !matches!(vtd::Record::decode(rec_page), Ok(None)) {
        pr_err!("freeze {}: a preserved record exists already: release it first (EBUSY)\n", bdf);
        return Err(EBUSY);
    }
    let root = Mapped::new(old_root).ok_or(ENOMEM)?;
    let rlo = root.word(usize::from(bdf.1) * 2);
    let Some(ctx_phys) = vtd::root_context_table(rlo) else {
        pr_err!("freeze {}: no context table for its bus (ENOENT)\n", bdf);
        return Err(ENOENT);
    };
    let ctx = Mapped::new(ctx_phys).ok_or(ENOMEM)?;
    let (clo, chi) = (ctx.word(usize::from(bdf.2) * 2), ctx.word(usize::from(bdf.2) * 2 + 1));
    let c = vtd::context(clo, chi);
    if !c.present || c.tt != 0 {
        pr_err!(
            "freeze {}: context entry {} (translation type {}): not a mapped domain (EINVAL)\n",
            bdf,
            if c.present { "present" } else { "absent" },
            c.tt
        );
        return Err(EINVAL);
    }

    let mut kt = Kt { area, pages: KVec::new(), hint: None };
    let mut n = 0usize;
    let snap = vtd::snapshot(&mut kt, c.table, c.levels, &mut |_| {
        n += 1;
        if n > vtd::MAX_PAGES {
            Err(vtd::Error::TooManyPages)
        } else {
            Ok(())
        }
    });
    let top = match snap {
        Ok(t) => t,
        Err(e) => {
            kt.free_all();
            pr_err!("freeze {}: page tables not copied ({:?}) (errno {})\n", bdf, e, vtd_errno(e).to_errno());
            return Err(vtd_errno(e));
        }
    };
    let mut rec = vtd::Record {
        seg: bdf.0,
        bus: bdf.1,
        devfn: bdf.2,
        did: c.did,
        levels: c.levels,
        old_root,
        root: 0,
        ctx: 0,
        top,
        pages: [0; vtd::MAX_PAGES],
        npages: kt.pages.len(),
    };
    for (i, p) in kt.pages.iter().enumerate().take(vtd::MAX_PAGES) {
        rec.pages[i] = p.0;
    }
    // The device's bus gets a context table in KRAM (its entry pointing at
    // the copy, the others as they are); the root table points at it. Both
    // are the pair of the tables area the IOMMU does not use now.
    let [(root_new, root_v), (ctx_new, ctx_v)] = match table_pair(old_root) {
        Ok(p) => p,
        Err(e) => {
            kt.free_all();
            if e == EBUSY {
                pr_err!("freeze {}: the IOMMU still reads the adopted tables: release them first (EBUSY)\n", bdf);
            } else {
                pr_err!("freeze {}: KRAM area iommu-tables unavailable (errno {})\n", bdf, e.to_errno());
            }
            return Err(e);
        }
    };
    fill(ctx_v, &ctx, usize::from(bdf.2) * 2, vtd::with_table(clo, top));
    fill(root_v, &root, usize::from(bdf.1) * 2, vtd::with_table(rlo, ctx_new));
    rec.ctx = ctx_new;
    rec.root = root_new;
    kt.flush();
    if let Err(e) = rec.encode(rec_page) {
        kt.free_all();
        pr_err!("freeze {}: record not written ({:?})\n", bdf, e);
        return Err(vtd_errno(e));
    }
    // SAFETY: the record page.
    unsafe { iopr_glue_flush(rec_virt) };
    if let Err(e) = dev.roots(root_new) {
        rec_page.fill(0);
        kt.free_all();
        pr_err!("freeze {}: the IOMMU did not take the KRAM root table (errno {})\n", bdf, e.to_errno());
        return Err(e);
    }
    // SAFETY: a flag for intel_iommu_shutdown().
    unsafe { iopr_glue_keep_translation(true) };
    pr_info!(
        "{}: DID {}, {}-level: translates through {} table pages in KRAM (root {:#x}); translation stays on at kexec; next kernel: intel_iommu_adopt={:#x} pci_keep={}\n",
        bdf,
        c.did,
        c.levels,
        rec.npages,
        root_new,
        rec_phys,
        bdf
    );
    Ok(())
}

/// In the next kernel: check the record, say where the device stands,
/// free the tables if asked and nothing uses them.
fn check(release: bool, discard: bool, thaw: bool) -> Result {
    let Some((area, _, rec_virt)) = area(false)? else {
        pr_info!("nothing preserved\n");
        return Ok(());
    };
    // SAFETY: the area's fixed page 0, only used here.
    let rec_page = unsafe { record_page(rec_virt) };
    let decoded = vtd::Record::decode(rec_page);
    if let Ok(None) = decoded {
        pr_info!("nothing preserved\n");
        return Ok(());
    }
    if discard {
        // Whatever the record says: KRAM refuses (EBUSY) to delete an area
        // holding a table an IOMMU reads, so no table in use is freed.
        // SAFETY: the area id from the lookup.
        let r = unsafe { kram_area_delete(area) };
        if r < 0 {
            pr_err!("record not discarded: its tables are in use or KRAM refused (errno {})\n", r);
            return Err(Error::from_errno(r));
        }
        drop_tables();
        match &decoded {
            Ok(Some(rec)) => pr_info!(
                "{}: record discarded with its tables (errno {})\n",
                Bdf(rec.seg, rec.bus, rec.devfn),
                r
            ),
            Err(e) => pr_info!("refused record ({:?}) discarded with its area (errno {})\n", e, r),
            Ok(None) => {}
        }
        return Ok(());
    }
    let rec = match decoded {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(()),
        Err(e) => {
            pr_err!("preserved record refused ({:?}), tables left as they are (EUCLEAN)\n", e);
            return Err(EUCLEAN);
        }
    };
    let bdf = Bdf(rec.seg, rec.bus, rec.devfn);
    let Some(dev) = Dev::get(&bdf) else {
        pr_err!("{}: preserved device not present (ENODEV)\n", bdf);
        return Err(ENODEV);
    };
    let roots = dev.roots(0)?;
    // Frozen here: the hardware reads the KRAM root while the kernel keeps
    // its own. Adopted: the kernel's root is the KRAM one and the device's
    // entry still points at the copied page tables.
    let frozen = roots.hw == rec.root && roots.own != roots.hw;
    let live = live_table(roots.hw, rec.bus, rec.devfn);
    let adopted = !frozen && live == Some(rec.top);
    let state = if frozen {
        "frozen in this kernel, the IOMMU translates through KRAM until the kexec"
    } else if adopted {
        "adopted in place"
    } else if live.is_none() {
        "not adopted, the device is blocked"
    } else {
        "attached anew"
    };
    let in_place = if roots.hw == rec.root && !frozen { " (the preserved one, in place)" } else { "" };
    pr_info!(
        "{}: DID {}, {}-level, {} table pages in KRAM: {}; root table {:#x}{}\n",
        bdf,
        rec.did,
        rec.levels,
        rec.npages,
        state,
        roots.hw,
        in_place
    );
    if thaw {
        // Only the kernel that froze has a root of its own beside the KRAM
        // one, kept up to date all along: the IOMMU goes back to it.
        if !frozen {
            pr_err!("thaw {}: the IOMMU uses the kernel's own root table: nothing frozen in this kernel (EINVAL)\n", bdf);
            return Err(EINVAL);
        }
        dev.roots(roots.own).inspect_err(|e| {
            pr_err!("thaw {}: the IOMMU did not take its own root table back (errno {})\n", bdf, e.to_errno());
        })?;
        // SAFETY: a flag for intel_iommu_shutdown().
        unsafe { iopr_glue_keep_translation(false) };
        pr_info!("thaw {}: back on the kernel's own root table {:#x}\n", bdf, roots.own);
    } else if !release {
        return Ok(());
    } else if frozen || adopted {
        pr_err!("{}: tables still in use, not released (EBUSY)\n", bdf);
        return Err(EBUSY);
    }
    // Adopted in place, the root and context table are this kernel's own:
    // the kernel moves them to its pages, then the tables area is unused.
    if roots.hw == rec.root && !frozen {
        // SAFETY: live device.
        let r = unsafe { iopr_glue_release_adopted(dev.0.as_ptr()) };
        if r < 0 {
            pr_err!("{}: adopted root and context table not moved (errno {}), nothing released\n", bdf, r);
            return Err(Error::from_errno(r));
        }
    }
    // The page-table copy is unused now.
    let mut freed = 0;
    for &p in rec.pages().iter() {
        // SAFETY: pages this area owns per the validated record.
        if unsafe { kram_free_page(area, p) } == 0 {
            freed += 1;
        }
    }
    rec_page.fill(0);
    // SAFETY: the area id from the lookup; its fixed page is cleared.
    unsafe { kram_area_delete(area) };
    drop_tables();
    pr_info!("{}: released {} table pages\n", bdf, freed);
    Ok(())
}

struct IommuPreserve;

impl kernel::Module for IommuPreserve {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let f = module_parameters::freeze.value();
        if f >= 0 {
            freeze(f)?;
        } else {
            check(
                module_parameters::release.value(),
                module_parameters::discard.value(),
                module_parameters::thaw.value(),
            )?;
        }
        Ok(IommuPreserve)
    }
}
