// SPDX-License-Identifier: GPL-2.0
/*
 * C glue for iommu_preserve (iommu_preserve_main.rs): PCI device lookup,
 * the kept flag (patches/0002), mapping tables by physical address and
 * the two VT-d calls of patches/0003. Nothing else lives here.
 */
#include <linux/io.h>
#include <linux/ioport.h>
#include <linux/pci.h>
#include <linux/pci-keep.h>
#include <linux/intel-iommu-keep.h>
#include <asm/cacheflush.h>
#include "iopr_glue.h"

/* The PCI device's struct device, referenced; NULL if there is none. */
struct device *iopr_glue_get_dev(int seg, int bus, int devfn)
{
	struct pci_dev *pdev = pci_get_domain_bus_and_slot(seg, bus, devfn);

	return pdev ? &pdev->dev : NULL;
}

void iopr_glue_put_dev(struct device *dev)
{
	pci_dev_put(to_pci_dev(dev));
}

bool iopr_glue_is_kept(struct device *dev)
{
	return pci_dev_is_kept(to_pci_dev(dev));
}

/* One page at a physical address, RAM or not; NULL on failure. */
void *iopr_glue_map(u64 phys)
{
	return memremap(phys, PAGE_SIZE, MEMREMAP_WB);
}

void iopr_glue_unmap(void *virt)
{
	memunmap(virt);
}

/* The IOMMU may not snoop CPU caches: write table pages back. */
void iopr_glue_flush(void *virt)
{
	clflush_cache_range(virt, PAGE_SIZE);
}

/* Memory the next kernel will not own (not System RAM). */
bool iopr_glue_outside_ram(u64 phys, u64 size)
{
	return region_intersects(phys, size, IORESOURCE_SYSTEM_RAM,
				 IORES_DESC_NONE) == REGION_DISJOINT;
}

int iopr_glue_switch_root(struct device *dev, u64 new_root, u64 *hw_root,
			  u64 *own_root)
{
	phys_addr_t hw = 0, own = 0;
	int ret = intel_iommu_switch_root(dev, new_root, &hw, &own);

	*hw_root = hw;
	*own_root = own;
	return ret;
}

void iopr_glue_keep_translation(bool keep)
{
	intel_iommu_keep_translation(keep);
}

int iopr_glue_release_adopted(struct device *dev)
{
	return intel_iommu_release_adopted(dev);
}
