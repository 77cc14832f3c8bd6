/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * /dev/prezero: zero memory ahead of time, in the caller's context (its
 * cgroup pays for the CPU time): free hugetlb pages (marked where they are)
 * or, with PREZERO_ZERO_POOL, new pages for the 4 KiB / THP pools that the
 * anonymous fault paths take from.
 *
 * Version 1. The definition is userspace/kh-uapi/src/prezero.rs (the module
 * and liveup compile that file); this header is for C users and is checked
 * against it field by field (userspace/kh-uapi/tests/c_headers.rs).
 */
#ifndef _UAPI_PREZERO_H
#define _UAPI_PREZERO_H

#include <linux/ioctl.h>
#include <linux/types.h>

struct prezero_req {
	__u64 size;	/* in: page size in bytes: 2 MiB or 1 GiB (hugetlb);
			 * 4 KiB, 16 KiB .. 1 MiB (mTHP) or 2 MiB (pool) */
	__s32 node;	/* in: NUMA node */
	__u32 flags;	/* in: 0 or PREZERO_ZERO_POOL */
	__u64 count;	/* in: zero up to this many pages (1..=1<<20) */
	__u64 done;	/* out: pages zeroed and marked / pooled */
	__u64 ns;	/* out: time spent zeroing, in nanoseconds */
};

/* Allocate, zero and pool new pages instead of marking free hugetlb pages. */
#define PREZERO_ZERO_POOL (1U << 0)

#define PREZERO_IOC_MAGIC 0xb7
#define PREZERO_IOC_ZERO _IOWR(PREZERO_IOC_MAGIC, 1, struct prezero_req)

#endif
