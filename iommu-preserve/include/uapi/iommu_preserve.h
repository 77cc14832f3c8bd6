/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * /dev/iommu-preserve: keep a kept PCI device's VT-d translation across
 * kexec (Documentation/iommu-preserve.rst). CAP_SYS_ADMIN; the operations
 * are serialised by the module.
 *
 * Version 1. The definition is userspace/kh-uapi/src/iommu_preserve.rs (the
 * module and liveup compile that file); this header is for C users and is
 * checked against it field by field (userspace/kh-uapi/tests/c_headers.rs).
 */
#ifndef _UAPI_IOMMU_PRESERVE_H
#define _UAPI_IOMMU_PRESERVE_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* A PCI device. */
struct iopr_dev {
	__u16 seg;
	__u8 bus;
	__u8 devfn;
};

#define IOPR_MAX_SPANS 8

/* Physical memory the device may reach, page-aligned. */
struct iopr_span {
	__u64 start;
	__u64 len;
};

/*
 * The argument of IOPR_IOC_FREEZE: the kept device and the memory it may
 * reach (its KRAM areas' fixed runs); a page its tables map outside them
 * refuses the freeze. The next kernel gets the same spans on its command
 * line (intel_iommu_adopt=RECORD,START+LEN,...).
 */
struct iopr_freeze {
	struct iopr_dev dev;
	__u32 nspans;	/* 1 to IOPR_MAX_SPANS */
	struct iopr_span spans[IOPR_MAX_SPANS];
};

/* struct iopr_status.state */
#define IOPR_STATE_NONE		0	/* no record */
#define IOPR_STATE_FROZEN	1	/* frozen in this kernel, until kexec */
#define IOPR_STATE_ADOPTED	2	/* adopted in place by this kernel */
#define IOPR_STATE_BLOCKED	3	/* not adopted: the device is blocked */
#define IOPR_STATE_ATTACHED	4	/* attached anew: the tables are unused */
#define IOPR_STATE_REFUSED	5	/* the record failed its checks */

struct iopr_status {
	__u32 state;	/* IOPR_STATE_* */
	__u16 seg;	/* the recorded device */
	__u8 bus;
	__u8 devfn;
	__u16 did;	/* its domain id */
	__u8 levels;	/* page-table levels */
	__u8 pad;
	__u32 npages;	/* page-table pages copied into KRAM */
	__u64 record;	/* physical address of the record page */
	__u64 root;	/* the root table the IOMMU uses now */
};

#define IOPR_IOC_MAGIC 0xBD
#define IOPR_IOC_STATUS _IOR(IOPR_IOC_MAGIC, 0, struct iopr_status)
#define IOPR_IOC_FREEZE _IOW(IOPR_IOC_MAGIC, 1, struct iopr_freeze)
#define IOPR_IOC_THAW _IO(IOPR_IOC_MAGIC, 2)
#define IOPR_IOC_RELEASE _IO(IOPR_IOC_MAGIC, 3)
#define IOPR_IOC_DISCARD _IO(IOPR_IOC_MAGIC, 4)

#endif
