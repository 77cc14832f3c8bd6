/* SPDX-License-Identifier: GPL-2.0 */
/* C glue called by iommu_preserve_main.rs (declared there as extern "C"). */
#ifndef _IOPR_GLUE_H
#define _IOPR_GLUE_H

#include <linux/types.h>

struct device;

struct device *iopr_glue_get_dev(int seg, int bus, int devfn);
void iopr_glue_put_dev(struct device *dev);
bool iopr_glue_is_kept(struct device *dev);
void *iopr_glue_map(u64 phys);
void iopr_glue_unmap(void *virt);
void iopr_glue_flush(void *virt);
bool iopr_glue_outside_ram(u64 phys, u64 size);
int iopr_glue_switch_root(struct device *dev, u64 new_root, u64 *hw_root,
			  u64 *own_root);
void iopr_glue_keep_translation(bool keep);
int iopr_glue_release_adopted(struct device *dev);

#endif
