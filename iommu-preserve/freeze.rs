// SPDX-License-Identifier: GPL-2.0

//! FREEZE: snapshot a kept device's tables into KRAM, record them, and
//! switch its IOMMU to KRAM copies of the root and context table. Every
//! table page copied is freed again (`Kt`'s drop) unless the freeze
//! completes. Before the switch the record goes through the next kernel's
//! own check (`vtd::verify`) with the spans the caller gave, the device's
//! KRAM areas: a freeze never writes a record the next kernel would
//! refuse, and a device whose tables map anything else is not frozen.

use crate::device::{Bdf, Dev};
use crate::glue::*;
use crate::tables::*;
use crate::uapi;
use crate::vtd;
use kernel::prelude::*;

/// The spans as the command line writes them (kram-format's `Display`),
/// for the log: the kernel's `{}` takes its own trait.
impl kernel::fmt::Display for vtd::Spans {
    fn fmt(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
        core::fmt::Display::fmt(self, f)
    }
}

// The ABI's span count is the check's (kh-uapi and kram-format's vtd).
const _: () = assert!(uapi::MAX_SPANS == vtd::MAX_SPANS);

/// FREEZE's spans, checked: 1 to `MAX_SPANS`, each page-aligned, not
/// empty, outside System RAM, none overlapping another.
pub(crate) fn spans(bdf: &Bdf, f: &uapi::Freeze) -> Result<vtd::Spans> {
    let n = f.nspans as usize;
    if n == 0 || n > uapi::MAX_SPANS {
        pr_err!("freeze {}: {} spans: give 1 to {} (EINVAL)\n", bdf, n, vtd::MAX_SPANS);
        return Err(EINVAL);
    }
    let mut out = vtd::Spans::default();
    for s in &f.spans[..n] {
        let Some(span) = vtd::Span::new(s.start, s.len) else {
            pr_err!("freeze {}: span {:#x}+{:#x} empty, not page-aligned or past the end (EINVAL)\n", bdf, s.start, s.len);
            return Err(EINVAL);
        };
        if !outside_ram(span.start, span.len) {
            pr_err!("freeze {}: span {:#x}+{:#x} touches System RAM (EINVAL)\n", bdf, s.start, s.len);
            return Err(EINVAL);
        }
        if out.push(span).is_err() {
            pr_err!("freeze {}: span {:#x}+{:#x} overlaps another (EINVAL)\n", bdf, s.start, s.len);
            return Err(EINVAL);
        }
    }
    Ok(out)
}

pub(crate) fn freeze(bdf: Bdf, spans: &vtd::Spans) -> Result {
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

    let mut kt = Kt::new(area);
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
            pr_err!("freeze {}: page tables not copied ({:?}) (errno {})\n", bdf, e, vtd_errno(e).to_errno());
            return Err(vtd_errno(e));
        }
    };
    let mut rec = vtd::Record {
        head: vtd::Header {
            seg: bdf.0,
            bus: bdf.1,
            devfn: bdf.2,
            did: c.did,
            levels: c.levels,
            old_root,
            root: 0,
            ctx: 0,
            top,
            npages: kt.pages.len(),
        },
        pages: [0; vtd::MAX_PAGES],
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
        pr_err!("freeze {}: record not written ({:?})\n", bdf, e);
        return Err(vtd_errno(e));
    }
    // SAFETY: the record page.
    unsafe { iopr_glue_flush(rec_virt) };
    // What the next kernel will check, checked now: a leaf outside the
    // spans (or anything else it would refuse) and nothing is switched.
    if let Err(r) = vtd::verify(&mut Live, rec_page, top, c.levels, rec.npages, spans) {
        rec_page.fill(0);
        // SAFETY: the record page.
        unsafe { iopr_glue_flush(rec_virt) };
        pr_err!(
            "freeze {}: not frozen, the next kernel would refuse it: {} (areas {}) (EINVAL)\n",
            bdf,
            r.why().to_str().unwrap_or("?"),
            spans
        );
        return Err(EINVAL);
    }
    if let Err(e) = dev.roots(root_new) {
        rec_page.fill(0);
        pr_err!("freeze {}: the IOMMU did not take the KRAM root table (errno {})\n", bdf, e.to_errno());
        return Err(e);
    }
    // The IOMMU reads the copies now: they stay until RELEASE or THAW.
    kt.keep();
    keep_translation(true);
    pr_info!(
        "{}: DID {}, {}-level: translates through {} table pages in KRAM (root {:#x}); translation stays on at kexec; next kernel: intel_iommu_adopt={:#x},{} pci_keep={}\n",
        bdf,
        c.did,
        c.levels,
        rec.npages,
        root_new,
        rec_phys,
        spans,
        bdf
    );
    Ok(())
}
