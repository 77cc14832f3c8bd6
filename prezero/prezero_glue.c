// SPDX-License-Identifier: GPL-2.0
/*
 * C glue for prezero_main.rs: what Rust cannot express or reach through
 * bindings -- the hugetlb hook API (include/linux/hugetlb.h, added by
 * patches/0001), inline helpers (kmap_local, clear_highpage, need_resched,
 * signal_pending), and a kthread running at SCHED_IDLE.
 *
 * The policy (when to zero, how much, counters, knobs) is in Rust; every
 * function here does one mechanical thing.
 */
#include <linux/highmem.h>
#include <linux/hugetlb.h>
#include <linux/kthread.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/string.h>
#include <linux/timekeeping.h>
#include <uapi/linux/sched/types.h>
#include "prezero_glue.h"

static bool prezero_consume(struct folio *folio, bool marked)
{
	return prezero_rs_consume(folio_nid(folio), folio_order(folio), marked, folio);
}

static const struct hugetlb_prezero_ops prezero_ops = {
	.consume = prezero_consume,
};

int prezero_glue_register(void)
{
	return hugetlb_prezero_register(&prezero_ops);
}

void prezero_glue_unregister(void)
{
	hugetlb_prezero_unregister(&prezero_ops);
}

/* A free page of @order on @nid, or NULL if none, or an ERR_PTR. */
struct folio *prezero_glue_take(unsigned int order, int nid)
{
	return hugetlb_prezero_take(order, nid);
}

long prezero_glue_ptr_err(const void *p)
{
	return IS_ERR(p) ? PTR_ERR(p) : 0;
}

void prezero_glue_return(struct folio *folio, bool zeroed)
{
	hugetlb_prezero_return(folio, zeroed);
}

int prezero_glue_count(unsigned int order, int nid, unsigned long *nr_free,
		       unsigned long *nr_marked)
{
	return hugetlb_prezero_count(order, nid, nr_free, nr_marked);
}

/* Zero subpages [first, first + nr) of a folio we own. */
void prezero_glue_zero(struct folio *folio, unsigned long first, unsigned long nr)
{
	unsigned long i;

	for (i = first; i < first + nr; i++)
		clear_highpage(folio_page(folio, i));
}

/* Write one non-zero byte into a subpage: fault injection for verify mode. */
void prezero_glue_dirty(struct folio *folio, unsigned long index)
{
	u8 *p = kmap_local_page(folio_page(folio, index));

	p[PAGE_SIZE / 2] = 0x5a;
	kunmap_local(p);
}

/* True if every byte of the folio is zero. May sleep between subpages. */
bool prezero_glue_is_zero(struct folio *folio)
{
	unsigned long i, n = folio_nr_pages(folio);

	for (i = 0; i < n; i++) {
		void *p = kmap_local_page(folio_page(folio, i));
		bool zero = !memchr_inv(p, 0, PAGE_SIZE);

		kunmap_local(p);
		if (!zero)
			return false;
		if (!(i & 511))
			cond_resched();
	}
	return true;
}

bool prezero_glue_need_resched(void)
{
	return need_resched();
}

bool prezero_glue_signal_pending(void)
{
	return signal_pending(current);
}

void prezero_glue_cond_resched(void)
{
	cond_resched();
}

u64 prezero_glue_now_ns(void)
{
	return ktime_get_ns();
}

/* MemAvailable as a percentage of total RAM. */
unsigned int prezero_glue_available_pct(void)
{
	unsigned long total = totalram_pages();

	return total ? (unsigned int)(si_mem_available() * 100 / total) : 0;
}

bool prezero_glue_node_online(int nid)
{
	return nid >= 0 && nid < MAX_NUMNODES && node_online(nid);
}

/*
 * The idle worker: SCHED_IDLE, so it only runs on a CPU nothing else
 * wants; Rust's step function zeroes a little and says how long to sleep.
 */
static struct task_struct *prezero_idle_task;

static int prezero_idle_fn(void *unused)
{
	struct sched_attr attr = { .sched_policy = SCHED_IDLE };

	if (sched_setattr_nocheck(current, &attr))
		pr_warn("prezero: idle worker could not switch to SCHED_IDLE\n");
	while (!kthread_should_stop()) {
		long ms = prezero_rs_idle_step();

		if (ms > 0)
			schedule_timeout_interruptible(msecs_to_jiffies(ms));
	}
	return 0;
}

int prezero_glue_idle_start(void)
{
	struct task_struct *t = kthread_run(prezero_idle_fn, NULL, "prezero_idle");

	if (IS_ERR(t))
		return PTR_ERR(t);
	prezero_idle_task = t;
	return 0;
}

void prezero_glue_idle_stop(void)
{
	if (prezero_idle_task)
		kthread_stop(prezero_idle_task);
	prezero_idle_task = NULL;
}

bool prezero_glue_should_stop(void)
{
	return kthread_should_stop();
}
