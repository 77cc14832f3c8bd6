/* SPDX-License-Identifier: GPL-2.0 */
/* C glue called by vfio_keep_main.rs (declared there as extern "C"). */
#ifndef _VK_GLUE_H
#define _VK_GLUE_H

#include <linux/types.h>

struct pci_dev;

struct pci_dev *vk_glue_next(struct pci_dev *from);
void vk_glue_put(struct pci_dev *pdev);
bool vk_glue_kept(struct pci_dev *pdev);
u32 vk_glue_bdf(struct pci_dev *pdev);
u32 vk_glue_ids(struct pci_dev *pdev);
u16 vk_glue_command(struct pci_dev *pdev);
void vk_glue_driver(struct pci_dev *pdev, char *buf, size_t len);

#endif
