// SPDX-License-Identifier: GPL-2.0
/*
 * C glue for vfio_keep (vfio_keep_main.rs): walking PCI devices and
 * reading what the listing shows. The keep flag itself is patches/0002.
 */
#include <linux/pci.h>
#include <linux/pci-keep.h>
#include "vk_glue.h"

/* The next PCI device after @from (whose reference is dropped), referenced. */
struct pci_dev *vk_glue_next(struct pci_dev *from)
{
	return pci_get_device(PCI_ANY_ID, PCI_ANY_ID, from);
}

void vk_glue_put(struct pci_dev *pdev)
{
	pci_dev_put(pdev);
}

bool vk_glue_kept(struct pci_dev *pdev)
{
	return pci_dev_is_kept(pdev);
}

u32 vk_glue_bdf(struct pci_dev *pdev)
{
	return ((u32)pci_domain_nr(pdev->bus) << 16) | (pdev->bus->number << 8) | pdev->devfn;
}

u32 vk_glue_ids(struct pci_dev *pdev)
{
	return ((u32)pdev->vendor << 16) | pdev->device;
}

u16 vk_glue_command(struct pci_dev *pdev)
{
	u16 cmd = 0;

	pci_read_config_word(pdev, PCI_COMMAND, &cmd);
	return cmd;
}

/* Copy the bound driver's name ("" if none) into @buf, under the device
 * lock so the driver cannot go away meanwhile. */
void vk_glue_driver(struct pci_dev *pdev, char *buf, size_t len)
{
	device_lock(&pdev->dev);
	strscpy(buf, pdev->driver ? pdev->driver->name : "", len);
	device_unlock(&pdev->dev);
}
