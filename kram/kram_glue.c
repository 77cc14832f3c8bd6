// SPDX-License-Identifier: GPL-2.0
/*
 * Exports the KRAM kernel API, implemented in Rust (kram_main.rs), to other
 * modules: Rust has no way to emit EXPORT_SYMBOL_GPL itself. Also the
 * struct-page glue below: memremap_pages() and vm_insert_pages() take C
 * structures the Rust abstractions do not cover.
 */
#include <linux/export.h>
#include <linux/intel-iommu-keep.h>
#include <linux/memremap.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include "kram.h"
#include "kram_glue.h"

EXPORT_SYMBOL_GPL(kram_area_lookup);
EXPORT_SYMBOL_GPL(kram_area_create);
EXPORT_SYMBOL_GPL(kram_area_delete);
EXPORT_SYMBOL_GPL(kram_get_fixed_page);
EXPORT_SYMBOL_GPL(kram_alloc_page);
EXPORT_SYMBOL_GPL(kram_free_page);

/*
 * Struct pages for the region, so that a user mapping of an area is made of
 * ordinary pages that get_user_pages() can pin (VFIO type1 and iommufd map
 * guest RAM kept in KRAM that way). A memmap= range has no struct pages: it
 * gets ZONE_DEVICE ones (MEMORY_DEVICE_GENERIC, as device-dax does). A
 * reserve_mem= range is RAM and has them already.
 *
 * Made on the first mmap of /dev/kram-pages, not at load: initialising a
 * struct page per region page costs about 1 us each in the TCG rig (300 ms
 * for 1.5 GiB) and tens of ns on hardware (seconds per TiB), which an
 * upgrade's blackout must not pay for VMs that never need pinning
 * (/dev/kram maps PFN ranges and needs none).
 *
 * Returns 0 when the region has struct pages (found or made), or a negative
 * errno, remembered: later calls return it again at once.
 */
static DEFINE_MUTEX(kram_pages_lock);	/* serialises the first call */
static struct dev_pagemap *kram_pgmap;
static int kram_pages_state = 1;	/* 1: not tried yet; else the result */

int kram_glue_pages_get(u64 base, u64 size)
{
	unsigned long pfn, first = PHYS_PFN(base), end = PHYS_PFN(base + size);
	unsigned long valid = 0;
	struct dev_pagemap *pgmap;
	void *addr;
	int ret;

	mutex_lock(&kram_pages_lock);
	ret = kram_pages_state;
	if (ret != 1)
		goto out;
	for (pfn = first; pfn < end; pfn += PAGES_PER_SUBSECTION)
		valid += pfn_valid(pfn);
	if (valid == DIV_ROUND_UP(end - first, PAGES_PER_SUBSECTION)) {
		ret = 0;
		goto done;
	}
	ret = -EEXIST;		/* partly covered: neither path is safe */
	if (valid)
		goto done;
	ret = -EOPNOTSUPP;
	if (!IS_ENABLED(CONFIG_ZONE_DEVICE))
		goto done;
	ret = -ENOMEM;
	pgmap = kzalloc(sizeof(*pgmap), GFP_KERNEL);
	if (!pgmap)
		goto out;	/* may be retried */
	pgmap->type = MEMORY_DEVICE_GENERIC;
	/*
	 * 2 MiB folios (as device-dax with align=2M makes them), so that a
	 * 2 MiB-aligned mapping is filled with one PMD per 2 MiB (see
	 * kram_glue_huge_fault) and KVM maps the guest with 2 MiB pages.
	 * Compound struct pages must tile the range exactly.
	 */
	if (IS_ENABLED(CONFIG_TRANSPARENT_HUGEPAGE) &&
	    IS_ALIGNED(base, PMD_SIZE) && IS_ALIGNED(size, PMD_SIZE))
		pgmap->vmemmap_shift = PMD_ORDER;
	pgmap->range.start = base;
	pgmap->range.end = base + size - 1;
	pgmap->nr_range = 1;
	addr = memremap_pages(pgmap, NUMA_NO_NODE);
	if (IS_ERR(addr)) {
		kfree(pgmap);
		ret = PTR_ERR(addr);
		goto done;
	}
	kram_pgmap = pgmap;
	ret = 0;
done:
	kram_pages_state = ret;
	if (ret)
		pr_warn("kram: no struct pages for the region (errno %d): /dev/kram-pages cannot map it\n", ret);
out:
	mutex_unlock(&kram_pages_lock);
	return ret;
}

/*
 * At unload. A page still referenced by someone (a pin that outlived every
 * mapping and file of ours) keeps the struct pages: they are leaked with
 * one line rather than freed under the pin.
 */
void kram_glue_pages_exit(void)
{
	/* Module exit: no mmap can run any more (each holds the module). */
	struct dev_pagemap *pgmap = kram_pgmap;
	unsigned long pfn, busy = 0;

	kram_pgmap = NULL;
	kram_pages_state = 1;
	if (!pgmap)
		return;
	/* Unused folios hold one reference each (MEMORY_DEVICE_GENERIC). */
	for (pfn = PHYS_PFN(pgmap->range.start); pfn <= PHYS_PFN(pgmap->range.end);
	     pfn += folio_nr_pages(pfn_folio(pfn)))
		busy += folio_ref_count(pfn_folio(pfn)) != 1;
	if (busy) {
		pr_err("kram: %lu pages still referenced at unload: struct pages kept (leaked)\n", busy);
		return;
	}
	memunmap_pages(pgmap);
	kfree(pgmap);
}

/*
 * Every user mapping of an area is counted (kram_map_get/put in
 * kram_main.rs), so that an area still mapped is never deleted: its pages
 * would go to the next owner under the mapping. mmap counts the first VMA;
 * open counts each copy (fork, split, mremap), close each VMA that goes.
 * vm_private_data is the area's id.
 */
static void kram_glue_open(struct vm_area_struct *vma)
{
	kram_map_get((unsigned long)vma->vm_private_data);
}

static void kram_glue_close(struct vm_area_struct *vma)
{
	kram_map_put((unsigned long)vma->vm_private_data);
}

/*
 * /dev/kram-pages: ordinary refcounted PTEs, inserted at fault time like
 * device-dax does (mapping a large area eagerly would put the cost of
 * every PTE into QEMU's start, i.e. into an upgrade's downtime). The mmap
 * handler checked the VMA's range against the area; the VMA cannot grow
 * (VM_DONTEXPAND) and keeps its pgoff, so vmf->pgoff stays in the area.
 * kram_region_pfn is the region's first pfn: set before the first VMA of
 * either node exists (mmap lock), the same value every time, read by
 * faults.
 */
static unsigned long kram_region_pfn;

/*
 * /dev/kram: a PFN range (VM_IO | VM_PFNMAP, no struct pages needed),
 * filled at fault time, with one PMD (or PUD) entry per 2 MiB (1 GiB)
 * where the mapping and the area's physical run are both aligned to it:
 * areas of 2 MiB and more start 2 MiB-aligned (kram-format's find_run) and
 * QEMU maps file-backed guest RAM 2 MiB-aligned, so KVM can map the guest
 * with 2 MiB pages too. mmap used to write every PTE at once
 * (remap_pfn_range): 16M of them for a 64 GiB VM, inside an upgrade's
 * blackout (QEMU start). Cache mode: the module memremap()s the region
 * WB, which records it WB in x86's memtype tree, and pfn inserts look it
 * up there, as remap_pfn_range's own reservation did.
 */
static vm_fault_t kram_glue_pfn_huge_fault(struct vm_fault *vmf, unsigned int order)
{
	struct vm_area_struct *vma = vmf->vma;
	unsigned long size = PAGE_SIZE << order;
	unsigned long addr = ALIGN_DOWN(vmf->address, size);
	unsigned long pfn;

	if (addr < vma->vm_start || addr + size > vma->vm_end)
		return VM_FAULT_FALLBACK;
	pfn = READ_ONCE(kram_region_pfn) + vma->vm_pgoff +
	      ((addr - vma->vm_start) >> PAGE_SHIFT);
	if (!IS_ALIGNED(pfn, 1UL << order))
		return VM_FAULT_FALLBACK;
	if (!order)
		return vmf_insert_pfn(vma, addr, pfn);
#ifdef CONFIG_ARCH_SUPPORTS_PMD_PFNMAP
	if (order == PMD_ORDER)
		return vmf_insert_pfn_pmd(vmf, pfn, vmf->flags & FAULT_FLAG_WRITE);
#endif
#ifdef CONFIG_ARCH_SUPPORTS_PUD_PFNMAP
	if (order == PUD_ORDER)
		return vmf_insert_pfn_pud(vmf, pfn, vmf->flags & FAULT_FLAG_WRITE);
#endif
	return VM_FAULT_FALLBACK;
}

static vm_fault_t kram_glue_pfn_fault(struct vm_fault *vmf)
{
	return kram_glue_pfn_huge_fault(vmf, 0);
}

static const struct vm_operations_struct kram_glue_pfn_ops = {
	.fault = kram_glue_pfn_fault,
#ifdef CONFIG_ARCH_SUPPORTS_HUGE_PFNMAP
	.huge_fault = kram_glue_pfn_huge_fault,
#endif
	.open = kram_glue_open,
	.close = kram_glue_close,
};

/*
 * /dev/kram-pages (see kram_region_pfn above). A 2 MiB fault inside the
 * VMA whose pages are one whole 2 MiB folio (a memmap= region with 2 MiB
 * folios, the mapping and the area's run aligned alike) gets one PMD, as
 * device-dax does: after an upgrade a restored guest refaults its memory
 * 2 MiB at a time instead of 4 KiB (a 96 MiB VM stood still for 2.6 to
 * 9.1 s in the rig refaulting 4 KiB pages). Anything else (a reserve_mem=
 * region's order-0 pages, an unaligned mapping, a THP-less kernel, a
 * host with THP "never" where the fault path asks for no PMD) gets 4 KiB
 * PTEs; a tail page of a 2 MiB folio may be mapped alone.
 */
static vm_fault_t kram_glue_huge_fault(struct vm_fault *vmf, unsigned int order)
{
	unsigned long pfn = READ_ONCE(kram_region_pfn);
	bool write = vmf->flags & FAULT_FLAG_WRITE;
#ifdef CONFIG_TRANSPARENT_HUGEPAGE
	struct vm_area_struct *vma = vmf->vma;
	unsigned long addr = vmf->address & PMD_MASK;
	struct folio *folio;
#endif

	if (!order)
		return vmf_insert_page_mkwrite(vmf, pfn_to_page(pfn + vmf->pgoff), write);
#ifdef CONFIG_TRANSPARENT_HUGEPAGE
	if (order != PMD_ORDER || addr < vma->vm_start || addr + PMD_SIZE > vma->vm_end)
		return VM_FAULT_FALLBACK;
	pfn += vma->vm_pgoff + ((addr - vma->vm_start) >> PAGE_SHIFT);
	folio = page_folio(pfn_to_page(pfn));
	if (folio_order(folio) != PMD_ORDER || folio_pfn(folio) != pfn)
		return VM_FAULT_FALLBACK;
	return vmf_insert_folio_pmd(vmf, folio, write);
#else
	return VM_FAULT_FALLBACK;
#endif
}

static vm_fault_t kram_glue_fault(struct vm_fault *vmf)
{
	return kram_glue_huge_fault(vmf, 0);
}

static const struct vm_operations_struct kram_glue_vm_ops = {
	.fault = kram_glue_fault,
	.huge_fault = kram_glue_huge_fault,
	.open = kram_glue_open,
	.close = kram_glue_close,
};

/*
 * Called by the mmap handler, mmap lock held for writing, once the VMA's
 * range is checked against area `area` and counted: faults fill it from
 * then on, with struct pages (`pages`: /dev/kram-pages) or as a PFN map.
 */
void kram_glue_set_vm_ops(struct vm_area_struct *vma, u64 region_pfn, u16 area,
			  bool pages)
{
	WRITE_ONCE(kram_region_pfn, region_pfn);
	/*
	 * A file VMA gets PMD faults only under THP "always", or "madvise"
	 * with VM_HUGEPAGE (mm/huge_memory.c): ask for them as QEMU's
	 * MADV_HUGEPAGE on guest RAM would.
	 */
	vm_flags_set(vma, pages ? VM_HUGEPAGE : VM_IO | VM_PFNMAP);
	vma->vm_private_data = (void *)(unsigned long)area;
	vma->vm_ops = pages ? &kram_glue_vm_ops : &kram_glue_pfn_ops;
}

/*
 * Zero a new area's fixed run, 1 MiB at a time, yielding the CPU between
 * chunks. May sleep (the ioctl and kram_area_create(), process context).
 */
void kram_glue_zero(void *p, size_t len)
{
	size_t off;

	might_sleep();
	for (off = 0; off < len; off += SZ_1M) {
		memset(p + off, 0, min_t(size_t, SZ_1M, len - off));
		cond_resched();
	}
}

/*
 * VT-d tables in [start, end) that an IOMMU reads now (patches/0003): an
 * area holding one must not be deleted, nor the region formatted. Returns
 * how many there are (more than @max when some could not be read), up to
 * @max of them in @out. May sleep.
 */
int kram_glue_iommu_tables(u64 start, u64 end, u64 *out, int max)
{
#if IS_ENABLED(CONFIG_INTEL_IOMMU)
	phys_addr_t pa[KRAM_IOMMU_TABLES_MAX];
	int i, n;

	max = min(max, KRAM_IOMMU_TABLES_MAX);
	n = intel_iommu_tables_in(start, end, pa, max);
	for (i = 0; i < min(n, max); i++)
		out[i] = pa[i];
	return n;
#else
	return 0;
#endif
}
