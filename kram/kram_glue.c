// SPDX-License-Identifier: GPL-2.0
/*
 * Exports the KRAM kernel API, implemented in Rust (kram_main.rs), to other
 * modules: Rust has no way to emit EXPORT_SYMBOL_GPL itself.
 */
#include <linux/export.h>
#include <linux/module.h>
#include "kram.h"

EXPORT_SYMBOL_GPL(kram_area_lookup);
EXPORT_SYMBOL_GPL(kram_area_create);
EXPORT_SYMBOL_GPL(kram_area_delete);
EXPORT_SYMBOL_GPL(kram_get_fixed_page);
EXPORT_SYMBOL_GPL(kram_alloc_page);
EXPORT_SYMBOL_GPL(kram_free_page);
