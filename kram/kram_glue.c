// SPDX-License-Identifier: GPL-2.0
/*
 * Exports the KRAM kernel API, implemented in Rust (kram_main.rs), to other
 * modules: Rust has no way to emit EXPORT_SYMBOL_GPL itself. Also the
 * struct-page glue below: memremap_pages() and vm_insert_pages() take C
 * structures the Rust abstractions do not cover.
 */
#include <linux/export.h>
#include <linux/memremap.h>
#include <linux/mm.h>
#include <linux/module.h>
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
 * Returns 1 if the range had struct pages, 0 with *pgmap set if they were
 * created, or a negative errno (the caller falls back to a PFN mapping,
 * which GUP cannot pin). Called from module init and exit only.
 */
int kram_glue_pages_init(u64 base, u64 size, void **pgmap_out)
{
	unsigned long pfn, first = PHYS_PFN(base), end = PHYS_PFN(base + size);
	unsigned long valid = 0;
	struct dev_pagemap *pgmap;
	void *addr;

	*pgmap_out = NULL;
	for (pfn = first; pfn < end; pfn += PAGES_PER_SUBSECTION)
		valid += pfn_valid(pfn);
	if (valid == DIV_ROUND_UP(end - first, PAGES_PER_SUBSECTION))
		return 1;
	if (valid)
		return -EEXIST;	/* partly covered: neither path is safe */
	if (!IS_ENABLED(CONFIG_ZONE_DEVICE))
		return -EOPNOTSUPP;
	pgmap = kzalloc(sizeof(*pgmap), GFP_KERNEL);
	if (!pgmap)
		return -ENOMEM;
	pgmap->type = MEMORY_DEVICE_GENERIC;
	pgmap->range.start = base;
	pgmap->range.end = base + size - 1;
	pgmap->nr_range = 1;
	addr = memremap_pages(pgmap, NUMA_NO_NODE);
	if (IS_ERR(addr)) {
		kfree(pgmap);
		return PTR_ERR(addr);
	}
	*pgmap_out = pgmap;
	return 0;
}

/*
 * Undo kram_glue_pages_init(). A page still referenced by someone (a pin
 * that outlived every mapping and file of ours) keeps the struct pages:
 * they are leaked with one line rather than freed under the pin.
 */
void kram_glue_pages_exit(void *p)
{
	struct dev_pagemap *pgmap = p;
	unsigned long pfn, busy = 0;

	if (!pgmap)
		return;
	for (pfn = PHYS_PFN(pgmap->range.start); pfn <= PHYS_PFN(pgmap->range.end); pfn++)
		busy += page_ref_count(pfn_to_page(pfn)) != 1;
	if (busy) {
		pr_err("kram: %lu pages still referenced at unload: struct pages kept (leaked)\n", busy);
		return;
	}
	memunmap_pages(pgmap);
	kfree(pgmap);
}

/*
 * User mappings of an area: ordinary refcounted PTEs, inserted at fault
 * time like device-dax does (mapping a large area eagerly would put the
 * cost of every PTE into QEMU's start, i.e. into an upgrade's downtime).
 * The mmap handler checked the VMA's range against the area; the VMA
 * cannot grow (VM_DONTEXPAND) and keeps its pgoff, so vmf->pgoff stays in
 * the area. vm_private_data is the region's first pfn.
 */
static vm_fault_t kram_glue_fault(struct vm_fault *vmf)
{
	unsigned long base = (unsigned long)vmf->vma->vm_private_data;

	return vmf_insert_page_mkwrite(vmf, pfn_to_page(base + vmf->pgoff),
				       vmf->flags & FAULT_FLAG_WRITE);
}

static const struct vm_operations_struct kram_glue_vm_ops = {
	.fault = kram_glue_fault,
};

/* Called by the mmap handler, mmap lock held for writing. */
void kram_glue_set_fault(struct vm_area_struct *vma, u64 region_pfn)
{
	vma->vm_private_data = (void *)(unsigned long)region_pfn;
	vma->vm_ops = &kram_glue_vm_ops;
}

/*
 * Zero a new area's fixed run, 1 MiB at a time, yielding the CPU between
 * chunks when the caller may sleep (the ioctl; the kernel API may be
 * called from atomic context).
 */
void kram_glue_zero(void *p, size_t len, bool may_sleep)
{
	size_t off;

	for (off = 0; off < len; off += SZ_1M) {
		memset(p + off, 0, min_t(size_t, SZ_1M, len - off));
		if (may_sleep)
			cond_resched();
	}
}
