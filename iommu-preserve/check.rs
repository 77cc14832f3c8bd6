// SPDX-License-Identifier: GPL-2.0

//! STATUS, RELEASE, DISCARD and THAW: what the record the previous kernel
//! (or this one) left says and where its device stands, and the three ways
//! to end it.

use crate::device::{Bdf, Dev};
use crate::glue::*;
use crate::tables::*;
use crate::uapi;
use crate::vtd;
use kernel::prelude::*;

/// What to do with the record after looking at it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Nothing: only say where it stands.
    Status,
    /// Free the tables once nothing translates through them.
    Release,
    /// Drop the record with its areas, whatever it says.
    Discard,
    /// In the kernel that froze: back to its own root table, tables freed.
    Thaw,
}

/// Look at the record, say where its device stands (in dmesg when `log`),
/// then do `op`. Answers the state found (before `op`).
pub(crate) fn run(op: Op, log: bool) -> Result<uapi::Status> {
    let mut st = uapi::Status::default();
    let Some((area, rec_phys, rec_virt)) = area(false)? else {
        if log {
            pr_info!("nothing preserved\n");
        }
        return Ok(st);
    };
    st.record = rec_phys;
    // SAFETY: the area's fixed page 0; the module's operations are
    // serialised (dev.rs), so nothing else references it meanwhile.
    let rec_page = unsafe { record_page(rec_virt) };
    let decoded = vtd::Record::decode(rec_page);
    if let Ok(None) = decoded {
        if log {
            pr_info!("nothing preserved\n");
        }
        return Ok(st);
    }
    if op == Op::Discard {
        return discard(area, &decoded).map(|()| st);
    }
    let rec = match decoded {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(st),
        Err(e) => {
            pr_err!("preserved record refused ({:?}), tables left as they are (EUCLEAN)\n", e);
            st.state = uapi::STATE_REFUSED;
            return if op == Op::Status { Ok(st) } else { Err(EUCLEAN) };
        }
    };
    let bdf = Bdf(rec.seg, rec.bus, rec.devfn);
    (st.seg, st.bus, st.devfn, st.did, st.levels) = (rec.seg, rec.bus, rec.devfn, rec.did, rec.levels);
    st.npages = u32::try_from(rec.npages).unwrap_or(u32::MAX);
    let Some(dev) = Dev::get(&bdf) else {
        pr_err!("{}: preserved device not present (ENODEV)\n", bdf);
        return Err(ENODEV);
    };
    let roots = dev.roots(0)?;
    st.root = roots.hw;
    // Frozen here: the hardware reads the KRAM root while the kernel keeps
    // its own. Adopted: the kernel's root is the KRAM one and the device's
    // entry still points at the copied page tables.
    let frozen = roots.hw == rec.root && roots.own != roots.hw;
    let live = live_table(roots.hw, rec.bus, rec.devfn);
    let adopted = !frozen && live == Some(rec.top);
    let (state, what) = if frozen {
        (uapi::STATE_FROZEN, "frozen in this kernel, the IOMMU translates through KRAM until the kexec")
    } else if adopted {
        (uapi::STATE_ADOPTED, "adopted in place")
    } else if live.is_none() {
        (uapi::STATE_BLOCKED, "not adopted, the device is blocked")
    } else {
        (uapi::STATE_ATTACHED, "attached anew")
    };
    st.state = state;
    let in_place = if roots.hw == rec.root && !frozen { " (the preserved one, in place)" } else { "" };
    if log {
        pr_info!(
            "{}: DID {}, {}-level, {} table pages in KRAM: {}; root table {:#x}{}\n",
            bdf,
            rec.did,
            rec.levels,
            rec.npages,
            what,
            roots.hw,
            in_place
        );
    }
    match op {
        Op::Status | Op::Discard => return Ok(st),
        Op::Thaw => thaw(&dev, &bdf, frozen, roots.own)?,
        Op::Release if frozen || adopted => {
            pr_err!("{}: tables still in use, not released (EBUSY)\n", bdf);
            return Err(EBUSY);
        }
        Op::Release => {}
    }
    // Adopted in place, the root and context table are this kernel's own:
    // the kernel moves them to its pages, then the tables area is unused.
    if roots.hw == rec.root && !frozen {
        dev.release_adopted().inspect_err(|e| {
            pr_err!("{}: adopted root and context table not moved (errno {}), nothing released\n", bdf, e.to_errno());
        })?;
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
    // (its fixed page cleared first)
    area_delete(area);
    drop_tables();
    pr_info!("{}: released {} table pages\n", bdf, freed);
    Ok(st)
}

/// Only the kernel that froze has a root of its own beside the KRAM one,
/// kept up to date all along: the IOMMU goes back to it.
fn thaw(dev: &Dev, bdf: &Bdf, frozen: bool, own: u64) -> Result {
    if !frozen {
        pr_err!("thaw {}: the IOMMU uses the kernel's own root table: nothing frozen in this kernel (EINVAL)\n", bdf);
        return Err(EINVAL);
    }
    dev.roots(own).inspect_err(|e| {
        pr_err!("thaw {}: the IOMMU did not take its own root table back (errno {})\n", bdf, e.to_errno());
    })?;
    keep_translation(false);
    pr_info!("thaw {}: back on the kernel's own root table {:#x}\n", bdf, own);
    Ok(())
}

/// Whatever the record says: KRAM refuses (EBUSY) to delete an area holding
/// a table an IOMMU reads, so no table in use is freed.
fn discard(area: kernel::ffi::c_int, decoded: &core::result::Result<Option<vtd::Record>, vtd::Error>) -> Result {
    let r = area_delete(area);
    if r < 0 {
        pr_err!("record not discarded: its tables are in use or KRAM refused (errno {})\n", r);
        return Err(Error::from_errno(r));
    }
    drop_tables();
    match decoded {
        Ok(Some(rec)) => pr_info!(
            "{}: record discarded with its tables (errno {})\n",
            Bdf(rec.seg, rec.bus, rec.devfn),
            r
        ),
        Err(e) => pr_info!("refused record ({:?}) discarded with its area (errno {})\n", e, r),
        Ok(None) => {}
    }
    Ok(())
}
