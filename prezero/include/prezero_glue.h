/* SPDX-License-Identifier: GPL-2.0 */
/* Functions shared by prezero_glue.c (C) and prezero_main.rs (Rust). */
#ifndef _PREZERO_GLUE_H
#define _PREZERO_GLUE_H

#include <linux/types.h>

struct folio;

/* Implemented in Rust (prezero_main.rs). */
bool prezero_rs_consume(int nid, unsigned int order, bool marked, struct folio *folio);
bool prezero_rs_pool_consume(int nid, unsigned int order, struct folio *folio);
long prezero_rs_idle_step(void);

/* Nodes with zeroed-page pools (and counters in Rust). */
#define PREZERO_POOL_NODES 8

/* Implemented in C (prezero_glue.c). */
int prezero_glue_register(void);
void prezero_glue_unregister(void);
struct folio *prezero_glue_take(unsigned int order, int nid);
long prezero_glue_ptr_err(const void *p);
void prezero_glue_return(struct folio *folio, bool zeroed);
int prezero_glue_count(unsigned int order, int nid, unsigned long *nr_free,
		       unsigned long *nr_marked);
void prezero_glue_zero(struct folio *folio, unsigned long first, unsigned long nr);
void prezero_glue_dirty(struct folio *folio, unsigned long index);
bool prezero_glue_is_zero(struct folio *folio);
struct folio *prezero_glue_pool_alloc(unsigned int order, int nid);
int prezero_glue_pool_put(struct folio *folio);
void prezero_glue_folio_put(struct folio *folio);
int prezero_glue_pool_count(unsigned int order, int nid, unsigned long *nr,
			    unsigned long *taken, unsigned long *reclaimed);
void prezero_glue_pool_drain(void);
int prezero_glue_pool_init(void);
void prezero_glue_pool_exit(void);
int prezero_glue_pool_register(void);
void prezero_glue_pool_unregister(void);
bool prezero_glue_need_resched(void);
bool prezero_glue_signal_pending(void);
void prezero_glue_cond_resched(void);
u64 prezero_glue_now_ns(void);
unsigned int prezero_glue_available_pct(void);
bool prezero_glue_node_online(int nid);
int prezero_glue_idle_start(void);
void prezero_glue_idle_stop(void);
bool prezero_glue_should_stop(void);

#endif
