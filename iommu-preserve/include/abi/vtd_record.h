/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Contract: the VT-d preservation record, version 1.
 *
 * iommu_preserve writes one at freeze, in page 0 of the KRAM area
 * "iommu-preserve", through kram-format's encoder
 * (userspace/kram-format/src/vtd.rs, compiled into the module). The next
 * kernel's intel-iommu, booted with intel_iommu_adopt=PHYS
 * (patches/0003), reads it before it trusts any table it names.
 *
 * This header is the one C definition of that layout: tools/build-kernel.sh
 * installs it as <linux/kvmhost/vtd_record.h> in the kernel source, and
 * userspace/kh-uapi/tests/c_headers.rs checks every field's offset and size
 * against the Rust side's (kram_format::vtd::off).
 *
 * Little endian. The CRC32C covers seg .. pages[npages - 1]. Reserved
 * fields are 0; a reader refuses a record whose reserved fields, magic or
 * version it does not know: a new layout is a new version. The record and
 * every table it names lie outside System RAM.
 */
#ifndef _KVMHOST_VTD_RECORD_H
#define _KVMHOST_VTD_RECORD_H

#include <linux/types.h>

#define KH_VTD_RECORD_MAGIC "KHIOPRV1"	/* 8 bytes, no NUL */
#define KH_VTD_RECORD_VERSION 1

struct kh_vtd_record {
	__u8 magic[8];
	__le32 version;
	__le32 crc;
	__le16 seg;		/* PCI segment */
	__u8 bus;
	__u8 devfn;
	__le16 did;		/* domain id */
	__u8 levels;		/* page-table levels: 3, 4 or 5 */
	__u8 reserved0;
	__le64 old_root;	/* the writer's own root table (for the log) */
	__le64 root;		/* root table in KRAM */
	__le64 ctx;		/* context table in KRAM (the device's bus) */
	__le64 top;		/* top of the second-level snapshot in KRAM */
	__le32 npages;
	__le32 reserved1;
	__le64 pages[];		/* the snapshot's table pages, top first */
};

#endif /* _KVMHOST_VTD_RECORD_H */
