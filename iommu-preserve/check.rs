// SPDX-License-Identifier: GPL-2.0

//! Loaded without `freeze=`: check the record the previous kernel left,
//! and `release`, `discard` or `thaw` it.

use crate::device::{Bdf, Dev};
use crate::glue::*;
use crate::tables::*;
use crate::vtd;
use kernel::prelude::*;

/// In the next kernel: check the record, say where the device stands,
/// free the tables if asked and nothing uses them.
pub(crate) fn check(release: bool, discard: bool, thaw: bool) -> Result {
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
