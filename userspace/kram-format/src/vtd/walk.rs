// SPDX-License-Identifier: GPL-2.0
//! The second-level page-table walk: the snapshot copied into pages that
//! survive kexec, and translation through a table tree.

use super::{leaf_size, pte_leaf, pte_present, with_table, Error, ADDR_MASK, TABLE_ENTRIES};

/// What the snapshot needs from the kernel.
pub trait Tables {
    /// A new page that survives kexec holding a copy of the table at
    /// `src`; returns its physical address.
    fn copy_table(&mut self, src: u64) -> Result<u64, Error>;
    /// Entry `idx` of a table made by `copy_table`.
    fn get(&mut self, table: u64, idx: usize) -> u64;
    fn set(&mut self, table: u64, idx: usize, v: u64);
    /// Whether `[addr, addr + size)` may be mapped across kexec: memory the
    /// next kernel does not own.
    fn leaf_ok(&mut self, addr: u64, size: u64) -> bool;
}

/// Copy the second-level table tree at `top` (`levels` deep) into pages
/// from `t`, every next-level pointer rewritten to the copies, leaves
/// unchanged. `page` is told each page made (also on error, so the caller
/// can give them back). Returns the new top.
pub fn snapshot<T: Tables>(
    t: &mut T,
    top: u64,
    levels: u8,
    page: &mut dyn FnMut(u64) -> Result<(), Error>,
) -> Result<u64, Error> {
    if !(3..=5).contains(&levels) {
        return Err(Error::Levels(levels));
    }
    copy_level(t, top, u32::from(levels), page)
}

fn copy_level<T: Tables>(
    t: &mut T,
    src: u64,
    level: u32,
    page: &mut dyn FnMut(u64) -> Result<(), Error>,
) -> Result<u64, Error> {
    let dst = t.copy_table(src & ADDR_MASK)?;
    page(dst)?;
    for i in 0..TABLE_ENTRIES {
        let e = t.get(dst, i);
        if !pte_present(e) {
            continue;
        }
        if pte_leaf(e, level) {
            let a = e & ADDR_MASK;
            if !t.leaf_ok(a, leaf_size(level)) {
                return Err(Error::LeafInRam(a));
            }
            continue;
        }
        let child = copy_level(t, e & ADDR_MASK, level - 1, page)?;
        t.set(dst, i, with_table(e, child));
    }
    Ok(dst)
}

/// Translate `iova` through a table tree (for checks): the physical
/// address, or `None` if unmapped.
/// `levels` outside 3..=5 (what VT-d defines) is `None`: the levels come
/// from a record, which is untrusted.
pub fn translate<T: Tables>(t: &mut T, top: u64, levels: u8, iova: u64) -> Option<u64> {
    if !(3..=5).contains(&levels) {
        return None;
    }
    let mut table = top;
    let mut level = u32::from(levels);
    while level >= 1 {
        let shift = 12 + 9 * (level - 1);
        let idx = ((iova >> shift) & 511) as usize;
        let e = t.get(table, idx);
        if !pte_present(e) {
            return None;
        }
        if pte_leaf(e, level) {
            let size = leaf_size(level);
            return Some((e & ADDR_MASK & !(size - 1)) | (iova & (size - 1)));
        }
        table = e & ADDR_MASK;
        level -= 1;
    }
    None
}
