/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * /dev/kram ioctl ABI. Only CAP_SYS_ADMIN may open the device.
 * Documentation/kram.rst describes each call and its errors.
 *
 * Version 1. The definition is userspace/kh-uapi/src/kram.rs (the module and
 * liveup compile that file); this header is for C users and is checked
 * against it field by field (userspace/kh-uapi/tests/c_headers.rs).
 */
#ifndef _UAPI_KRAM_H
#define _UAPI_KRAM_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define KRAM_NAME_LEN 32
#define KRAM_MAX_AREAS 32
#define KRAM_FORMAT_CONFIRM 0x212154414d524f46ULL /* "FORMAT!!" little-endian */

struct kram_status {
	__u64 base;		/* physical address of the region */
	__u64 size;		/* bytes */
	__u64 pages;
	__u64 meta_pages;
	__u64 used_pages;
	__u64 free_pages;
	__u64 generation;	/* metadata generation */
	__u32 state;		/* 0: ready, 1: metadata refused */
	__u32 error;		/* errno of the refusal */
	__u32 areas;
	__u32 max_areas;
};

struct kram_area {
	char name[KRAM_NAME_LEN];	/* NUL-terminated, [A-Za-z0-9._-] */
	__u64 npages;			/* pages in the fixed run */
	__u64 offset;			/* first fixed page from region start: mmap offset */
	__u32 id;			/* 1..KRAM_MAX_AREAS */
	__u32 flags;			/* 0 */
};

struct kram_page {
	__u32 id;		/* owning area */
	__u32 pad;
	__u64 offset;		/* page offset from region start */
};

struct kram_format {
	__u64 confirm;		/* KRAM_FORMAT_CONFIRM */
};

#define KRAM_IOC_MAGIC 0xBC
#define KRAM_IOC_STATUS  _IOR(KRAM_IOC_MAGIC, 0, struct kram_status)
/* FORMAT and DELETE: EBUSY while an area (the one named) is mapped. */
#define KRAM_IOC_FORMAT  _IOW(KRAM_IOC_MAGIC, 1, struct kram_format)
#define KRAM_IOC_CREATE  _IOWR(KRAM_IOC_MAGIC, 2, struct kram_area)
#define KRAM_IOC_DELETE  _IOW(KRAM_IOC_MAGIC, 3, struct kram_area)
#define KRAM_IOC_LOOKUP  _IOWR(KRAM_IOC_MAGIC, 4, struct kram_area)
#define KRAM_IOC_AREA_AT _IOWR(KRAM_IOC_MAGIC, 5, struct kram_area)
#define KRAM_IOC_ALLOC   _IOWR(KRAM_IOC_MAGIC, 6, struct kram_page)
#define KRAM_IOC_FREE    _IOW(KRAM_IOC_MAGIC, 7, struct kram_page)

#endif /* _UAPI_KRAM_H */
