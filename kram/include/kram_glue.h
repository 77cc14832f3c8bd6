/* SPDX-License-Identifier: GPL-2.0 */
/* C glue of kram.ko and its callbacks into kram_main.rs (not exported). */
#ifndef KRAM_GLUE_H
#define KRAM_GLUE_H

#include <linux/types.h>

struct vm_area_struct;

int kram_glue_pages_get(u64 base, u64 size);
void kram_glue_pages_exit(void);
void kram_glue_set_vm_ops(struct vm_area_struct *vma, u64 region_pfn, u16 area,
			  bool pages);

/* In kram_main.rs: count an area's user mappings (vm_ops open/close). */
void kram_map_get(u16 area);
void kram_map_put(u16 area);
void kram_glue_zero(void *p, size_t len);
#define KRAM_IOMMU_TABLES_MAX 16
int kram_glue_iommu_tables(u64 start, u64 end, u64 *out, int max);

#endif
