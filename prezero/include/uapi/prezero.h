/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * /dev/prezero: zero free hugetlb pages ahead of time, in the caller's
 * context (its cgroup pays for the CPU time).
 */
#ifndef _UAPI_PREZERO_H
#define _UAPI_PREZERO_H

#include <linux/ioctl.h>
#include <linux/types.h>

struct prezero_req {
	__u64 size;	/* in: page size in bytes: 2 MiB or 1 GiB */
	__s32 node;	/* in: NUMA node */
	__u32 flags;	/* in: must be 0 */
	__u64 count;	/* in: zero up to this many free pages (1..=1<<20) */
	__u64 done;	/* out: pages zeroed and marked */
	__u64 ns;	/* out: time spent zeroing, in nanoseconds */
};

#define PREZERO_IOC_MAGIC 0xb7
#define PREZERO_IOC_ZERO _IOWR(PREZERO_IOC_MAGIC, 1, struct prezero_req)

#endif
