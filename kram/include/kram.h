/* SPDX-License-Identifier: GPL-2.0 */
/*
 * KRAM kernel API: fixed physical pages that survive kexec.
 *
 * Areas are named; an area has a fixed run of pages (page i is the same
 * physical page in every kernel) and may own further pages from
 * kram_alloc_page(). Functions return 0 or an area id (> 0) on success and
 * a negative errno on failure: -ENODEV (no region), -EUCLEAN (metadata
 * refused), -ENOENT (no such area), -EEXIST, -ENOSPC, -EINVAL, -EPERM (page
 * not owned by that area), -EBUSY (kram_area_delete() of an area a process
 * maps through /dev/kram or /dev/kram-pages, or that holds a table an IOMMU
 * translates through, or of an area still being zeroed). All but
 * kram_area_create() and kram_area_delete() may be called from process or
 * atomic context (not hard-IRQ); they serialise on one spinlock.
 * kram_area_create() sleeps (it zeroes the new run, yielding the CPU) and
 * kram_area_delete() may sleep (it asks the IOMMU driver which tables are
 * in use): process context only. kram_get_fixed_page() of an area still
 * being zeroed (a create in progress elsewhere) fails with -EBUSY.
 *
 * Pages are not in the kernel's direct map: use the returned virtual
 * address, valid while the kram module is loaded.
 */
#ifndef _KRAM_H
#define _KRAM_H

#include <linux/types.h>

int kram_area_lookup(const char *name);
int kram_area_create(const char *name, u64 npages);
int kram_area_delete(int area);
int kram_get_fixed_page(int area, u64 index, u64 *phys, void **virt);
int kram_alloc_page(int area, u64 *phys, void **virt);
int kram_free_page(int area, u64 phys);

#endif /* _KRAM_H */
