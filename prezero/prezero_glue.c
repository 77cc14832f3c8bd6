// SPDX-License-Identifier: GPL-2.0
/*
 * C glue for prezero_main.rs: what Rust cannot express or reach through
 * bindings -- the hugetlb hook API (include/linux/hugetlb.h, added by
 * patches/0001), the zeroed-page pools behind the anonymous fault hooks
 * (include/linux/prezero_pool.h, patches/0004) with their shrinker, inline
 * helpers (kmap_local, clear_highpage, need_resched, signal_pending), and a
 * kthread running at SCHED_IDLE.
 *
 * The policy (when to zero, how much, counters, knobs) is in Rust; every
 * function here does one mechanical thing.
 */
#include <linux/gfp.h>
#include <linux/highmem.h>
#include <linux/hugetlb.h>
#include <linux/kthread.h>
#include <linux/list.h>
#include <linux/memcontrol.h>
#include <linux/mm.h>
#include <linux/prezero_pool.h>
#include <linux/shrinker.h>
#include <linux/spinlock.h>
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

/*
 * Zeroed-page pools (patches/0004): folios this module allocated from the
 * buddy allocator and zeroed, per node and order (0 ..= PMD order: 4 KiB
 * pages, mTHP sizes, THP). A pooled folio has reference count 1 and is
 * mapped nowhere; the anonymous fault paths take one instead of
 * allocating and clearing.
 *
 * Who pays for the memory: a pool folio is allocated with __GFP_ACCOUNT
 * by the task that fills (an ioctl's caller, or the idle worker in the
 * cgroup it was moved into), so it is charged to that task's memory
 * cgroup as kernel memory ("kernel" in memory.stat) and counts against
 * its memory.max: a fill stops there. A fault that takes one uncharges it
 * (patches/0004's take helper) before the fault path charges it to the
 * faulting task's cgroup as usual; a folio given back is uncharged when
 * freed.
 *
 * Each pool keeps its folios in one list per owner (the memcg charged,
 * held by a css reference while the list is not empty; NULL: charged to
 * none, as with the root cgroup or kmem accounting off), at most
 * PZ_OWNERS owners a pool: a fill from another cgroup into a pool whose
 * owner lists are all taken is refused (-ENOSPC). The shrinker is
 * memcg-aware: reclaim in a cgroup (at its memory.max) asks it for that
 * cgroup's folios only (set_shrinker_bit on every put: patches/0004
 * exports it), global reclaim for any.
 *
 * Locking: each pool's spinlock guards its lists and counters. It is taken
 * from the fault path, the filler (after allocating and zeroing, never
 * around an allocation), the shrinker and drain; never nested, never from
 * interrupt context. css references are dropped after it is released.
 * pz_pool_pages (all pools, in base pages) and each owner's count are
 * hints for the shrinker's count, read without the lock.
 */
#define PZ_OWNERS 4

struct pz_owner {
	struct mem_cgroup *memcg; /* valid while nr > 0 */
	struct list_head list;
	unsigned long nr;	/* folios in the list */
};

struct pz_pool {
	spinlock_t lock;
	struct pz_owner owner[PZ_OWNERS];
	unsigned long nr;	/* folios in all lists */
	unsigned long taken;	/* folios taken by faults */
	unsigned long reclaimed; /* folios given back by the shrinker */
};

#define PZ_ORDERS (PMD_ORDER + 1)
static struct pz_pool pz_pools[PREZERO_POOL_NODES][PZ_ORDERS];
static atomic_long_t pz_pool_pages = ATOMIC_LONG_INIT(0);
static struct shrinker *pz_shrinker;
/* A filter for pz_pool_pop(): folios of any owner. */
#define PZ_ANY ((struct mem_cgroup *)-1L)

static struct pz_pool *pz_pool_of(unsigned int order, int nid)
{
	if (nid < 0 || nid >= PREZERO_POOL_NODES || order >= PZ_ORDERS)
		return NULL;
	return &pz_pools[nid][order];
}

/*
 * Pop a folio of owner @memcg (PZ_ANY: of any); count it in *@why (taken
 * or reclaimed) under the lock. An owner list left empty drops its css
 * reference (after the lock).
 */
static struct folio *pz_pool_pop(struct pz_pool *p, struct mem_cgroup *memcg,
				 unsigned long *why)
{
	struct mem_cgroup *put = NULL;
	struct folio *folio = NULL;
	int i;

	spin_lock(&p->lock);
	for (i = 0; i < PZ_OWNERS; i++) {
		struct pz_owner *o = &p->owner[i];

		if (!o->nr || (memcg != PZ_ANY && o->memcg != memcg))
			continue;
		folio = list_first_entry(&o->list, struct folio, lru);
		list_del_init(&folio->lru);
		if (!--o->nr) {
			put = o->memcg;
			o->memcg = NULL;
		}
		p->nr--;
		if (why)
			(*why)++;
		atomic_long_sub(folio_nr_pages(folio), &pz_pool_pages);
		break;
	}
	spin_unlock(&p->lock);
	if (put)
		css_put(&put->css);
	return folio;
}

/* The fault path's call (through patches/0004's SRCU-protected ops). */
static struct folio *pz_pool_take(unsigned int order, int nid)
{
	struct pz_pool *p = pz_pool_of(order, nid);
	struct folio *folio = NULL;
	unsigned long i;

	/*
	 * Every anonymous fault comes here while the module is enabled: an
	 * empty pool (the common case) is seen without taking its lock. A
	 * racing fill is only missed for this one fault.
	 */
	if (p && READ_ONCE(p->nr))
		folio = pz_pool_pop(p, PZ_ANY, &p->taken);

	/* Rust counts the hit or miss and, in verify mode, checks the page. */
	if (!prezero_rs_pool_consume(nid, order, folio) && folio)
		for (i = 0; i < folio_nr_pages(folio); i++)
			clear_highpage(folio_page(folio, i));
	return folio;
}

static const struct prezero_pool_ops pz_pool_ops = {
	.take = pz_pool_take,
};

/*
 * A new folio of @order on @nid to zero for a pool, or NULL. Only memory
 * that is free now: no direct reclaim, no kswapd wake-up, no compaction
 * (which would also run our own shrinker against the pool being filled).
 * Charged to the caller's memory cgroup (__GFP_ACCOUNT): NULL as well when
 * that would pass its memory.max.
 */
struct folio *prezero_glue_pool_alloc(unsigned int order, int nid)
{
	if (!pz_pool_of(order, nid))
		return NULL;
	return __folio_alloc_node((GFP_HIGHUSER_MOVABLE & ~__GFP_RECLAIM) |
				  __GFP_THISNODE | __GFP_NOWARN | __GFP_ACCOUNT, order, nid);
}

/* The memcg @folio is charged to, with a css reference; NULL: none. */
static struct mem_cgroup *pz_owner_of(struct folio *folio)
{
	struct mem_cgroup *memcg;

	rcu_read_lock();
	memcg = folio_memcg(folio);
	if (memcg && (mem_cgroup_is_root(memcg) || !css_tryget(&memcg->css)))
		memcg = NULL;
	rcu_read_unlock();
	return memcg;
}

/*
 * Put a folio from prezero_glue_pool_alloc(), now zero, in its pool: 0, or
 * -ENOSPC when the pool has PZ_OWNERS other owners (the folio is then
 * freed, and so uncharged).
 */
int prezero_glue_pool_put(struct folio *folio)
{
	struct pz_pool *p = pz_pool_of(folio_order(folio), folio_nid(folio));
	struct mem_cgroup *memcg;
	struct pz_owner *o = NULL;
	bool had = false;
	int i;

	if (WARN_ON_ONCE(!p)) {
		folio_put(folio);
		return -EINVAL;
	}
	memcg = pz_owner_of(folio);
	spin_lock(&p->lock);
	for (i = 0; i < PZ_OWNERS && !o; i++)
		if (p->owner[i].nr && p->owner[i].memcg == memcg)
			o = &p->owner[i], had = true;
	for (i = 0; i < PZ_OWNERS && !o; i++)
		if (!p->owner[i].nr)
			o = &p->owner[i];
	if (o) {
		if (!had)
			o->memcg = memcg; /* the reference moves to the list */
		list_add_tail(&folio->lru, &o->list);
		o->nr++;
		p->nr++;
		atomic_long_add(folio_nr_pages(folio), &pz_pool_pages);
		/*
		 * memcg reclaim in that cgroup now asks our shrinker (unless
		 * it fell back to global only, as with cgroup.memory=nokmem:
		 * its id is then not assigned). Under the lock: the list's
		 * reference keeps the memcg alive until a pop empties it.
		 */
		if (memcg && (pz_shrinker->flags & SHRINKER_MEMCG_AWARE))
			set_shrinker_bit(memcg, folio_nid(folio), pz_shrinker->id);
	}
	spin_unlock(&p->lock);
	if (!o) {
		if (memcg)
			css_put(&memcg->css);
		folio_put(folio);
		return -ENOSPC;
	}
	if (memcg && had)
		css_put(&memcg->css);
	return 0;
}

void prezero_glue_folio_put(struct folio *folio)
{
	folio_put(folio);
}

/* One consistent snapshot of a pool's counters. */
int prezero_glue_pool_count(unsigned int order, int nid, unsigned long *nr,
			    unsigned long *taken, unsigned long *reclaimed)
{
	struct pz_pool *p = pz_pool_of(order, nid);

	if (!p)
		return -EINVAL;
	spin_lock(&p->lock);
	*nr = p->nr;
	*taken = p->taken;
	*reclaimed = p->reclaimed;
	spin_unlock(&p->lock);
	return 0;
}

/*
 * Give back up to @pages base pages (all if ULONG_MAX) of owner @memcg
 * (PZ_ANY: any); returns how many.
 */
static unsigned long pz_pool_release(unsigned long pages, struct mem_cgroup *memcg,
				     bool reclaim)
{
	unsigned long freed = 0;
	int nid, slot;

	for (nid = 0; nid < PREZERO_POOL_NODES; nid++)
		for (slot = 0; slot < PZ_ORDERS; slot++) {
			struct pz_pool *p = &pz_pools[nid][slot];
			struct folio *folio;

			while (freed < pages &&
			       (folio = pz_pool_pop(p, memcg, reclaim ? &p->reclaimed : NULL))) {
				freed += folio_nr_pages(folio);
				folio_put(folio);
				cond_resched();
			}
		}
	return freed;
}

void prezero_glue_pool_drain(void)
{
	pz_pool_release(ULONG_MAX, PZ_ANY, false);
}

/* Whose folios a reclaim asks for: one cgroup's, or (global) any. */
static struct mem_cgroup *pz_reclaim_owner(struct shrink_control *sc)
{
	return sc->memcg && !mem_cgroup_is_root(sc->memcg) ? sc->memcg : PZ_ANY;
}

static unsigned long pz_shrink_count(struct shrinker *s, struct shrink_control *sc)
{
	struct mem_cgroup *memcg = pz_reclaim_owner(sc);
	unsigned long n = 0;
	int nid, slot, i;

	if (memcg == PZ_ANY) {
		long all = atomic_long_read(&pz_pool_pages);

		return all > 0 ? all : SHRINK_EMPTY;
	}
	for (nid = 0; nid < PREZERO_POOL_NODES; nid++)
		for (slot = 0; slot < PZ_ORDERS; slot++)
			for (i = 0; i < PZ_OWNERS; i++) {
				struct pz_owner *o = &pz_pools[nid][slot].owner[i];

				if (READ_ONCE(o->memcg) == memcg)
					n += READ_ONCE(o->nr) << slot;
			}
	return n ? n : SHRINK_EMPTY;
}

static unsigned long pz_shrink_scan(struct shrinker *s, struct shrink_control *sc)
{
	unsigned long freed = pz_pool_release(sc->nr_to_scan, pz_reclaim_owner(sc), true);

	return freed ? freed : SHRINK_STOP;
}

int prezero_glue_pool_init(void)
{
	int nid, slot, i;

	for (nid = 0; nid < PREZERO_POOL_NODES; nid++)
		for (slot = 0; slot < PZ_ORDERS; slot++) {
			spin_lock_init(&pz_pools[nid][slot].lock);
			for (i = 0; i < PZ_OWNERS; i++)
				INIT_LIST_HEAD(&pz_pools[nid][slot].owner[i].list);
		}
	pz_shrinker = shrinker_alloc(SHRINKER_MEMCG_AWARE, "prezero-pool");
	if (!pz_shrinker)
		return -ENOMEM;
	pz_shrinker->count_objects = pz_shrink_count;
	pz_shrinker->scan_objects = pz_shrink_scan;
	/* Pages, not objects that are costly to rebuild: reclaim them eagerly. */
	pz_shrinker->seeks = 0;
	shrinker_register(pz_shrinker);
	return 0;
}

/* After prezero_glue_pool_unregister(): nothing takes from the pools. */
void prezero_glue_pool_exit(void)
{
	shrinker_free(pz_shrinker);
	pz_shrinker = NULL;
	prezero_glue_pool_drain();
}

int prezero_glue_pool_register(void)
{
	return prezero_pool_register(&pz_pool_ops);
}

void prezero_glue_pool_unregister(void)
{
	prezero_pool_unregister(&pz_pool_ops);
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
