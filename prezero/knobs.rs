// SPDX-License-Identifier: GPL-2.0

//! The knobs and counters in `/sys/kernel/debug/prezero/`
//! (Documentation/prezero.rst): one table of knobs, read and written by one
//! pair of functions, and the `stats` file.

use crate::account::{set_enabled, Kind, NODES, SIZES, STATS};
use crate::glue::{prezero_glue_count, prezero_glue_node_online, prezero_glue_pool_count};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use kernel::debugfs::ScopedDir;
use kernel::ffi::{c_int, c_ulong};
use kernel::{prelude::*, uaccess::UserSliceReader};

// Knobs (debugfs). `ENABLED` mirrors the registration and changes under `REG`.
pub(crate) static ENABLED: AtomicBool = AtomicBool::new(false);
pub(crate) static VERIFY: AtomicBool = AtomicBool::new(false);
pub(crate) static IDLE: AtomicBool = AtomicBool::new(false);
pub(crate) static IDLE_RATE_MB: AtomicU32 = AtomicU32::new(64);
pub(crate) static MIN_AVAIL_PCT: AtomicU32 = AtomicU32::new(5);
/// The idle worker keeps each node's THP pool at this many MiB (0: off).
pub(crate) static IDLE_POOL_MB: AtomicU32 = AtomicU32::new(0);
/// Pending fault injections: zeroing leaves one byte set (verify mode only).
pub(crate) static INJECT: AtomicU32 = AtomicU32::new(0);

/// Where a knob's value lives.
enum Value {
    /// 0 or 1.
    Flag(&'static AtomicBool),
    Number(&'static AtomicU32),
}

/// One file in the debugfs directory.
pub(crate) struct Knob {
    name: &'static CStr,
    value: Value,
    /// Accepted values, `lo..=hi`.
    lo: u32,
    hi: u32,
    /// Called with the new value instead of storing it, for knobs whose
    /// change does more than store (it then stores the value itself).
    set: Option<fn(u32) -> Result>,
}

/// Every knob, in the order of Documentation/prezero.rst.
static KNOBS: [Knob; 7] = [
    Knob { name: c"enabled", value: Value::Flag(&ENABLED), lo: 0, hi: 1, set: Some(set_enabled_knob) },
    Knob { name: c"verify", value: Value::Flag(&VERIFY), lo: 0, hi: 1, set: Some(set_verify) },
    Knob { name: c"idle", value: Value::Flag(&IDLE), lo: 0, hi: 1, set: None },
    Knob { name: c"idle_rate_mb", value: Value::Number(&IDLE_RATE_MB), lo: 1, hi: 1 << 20, set: None },
    Knob { name: c"idle_pool_mb", value: Value::Number(&IDLE_POOL_MB), lo: 0, hi: 1 << 20, set: None },
    Knob { name: c"min_available_pct", value: Value::Number(&MIN_AVAIL_PCT), lo: 0, hi: 100, set: None },
    Knob { name: c"inject_dirty", value: Value::Number(&INJECT), lo: 0, hi: 1000, set: Some(set_inject) },
];

/// `enabled`: registers with the hooks or unregisters (under `REG`).
fn set_enabled_knob(v: u32) -> Result {
    set_enabled(v == 1)
}

/// `verify`: turning it off drops pending dirty-page injections, which
/// only verify catches (else a dirty page would be handed out as zero).
/// An injection a zeroing pass took just before this write still lands
/// (a test knob: documented in prezero.rst).
fn set_verify(v: u32) -> Result {
    if v == 0 {
        INJECT.store(0, Relaxed);
    }
    VERIFY.store(v == 1, Relaxed);
    Ok(())
}

/// `inject_dirty`: only with verify on, which catches the dirty pages.
fn set_inject(v: u32) -> Result {
    if v > 0 && !VERIFY.load(Relaxed) {
        pr_err!("inject_dirty: only with verify=1, which catches it (EPERM)\n");
        return Err(EPERM);
    }
    INJECT.store(v, Relaxed);
    Ok(())
}

/// Creates every knob's file and `stats` in `dir`.
pub(crate) fn create_files(dir: &ScopedDir<'_, '_>) {
    for k in &KNOBS {
        dir.read_write_callback_file(k.name, k, &knob_read, &knob_write);
    }
    dir.read_callback_file(c"stats", &(), &stats_read);
}

fn knob_read(k: &Knob, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    match k.value {
        Value::Flag(b) => writeln!(f, "{}", b.load(Relaxed) as u32),
        Value::Number(n) => writeln!(f, "{}", n.load(Relaxed)),
    }
}

fn knob_write(k: &Knob, r: &mut UserSliceReader) -> Result {
    let name = k.name.to_str().unwrap_or("knob");
    let v = parse_knob(name, r, k.lo, k.hi)?;
    if let Some(set) = k.set {
        return set(v);
    }
    match k.value {
        Value::Flag(b) => b.store(v == 1, Relaxed),
        Value::Number(n) => n.store(v, Relaxed),
    }
    Ok(())
}

/// Read a decimal number written to a knob, in `lo..=hi`.
fn parse_knob(name: &str, r: &mut UserSliceReader, lo: u32, hi: u32) -> Result<u32> {
    let mut buf = [0u8; 24];
    let n = r.len();
    let bad = |what: &str| {
        pr_err!("{}: {} (EINVAL)\n", name, what);
        EINVAL
    };
    if n == 0 || n > buf.len() {
        return Err(bad("write one decimal number"));
    }
    r.read_slice(&mut buf[..n])?;
    let s = core::str::from_utf8(&buf[..n]).map_err(|_| bad("not text"))?;
    let v: u64 = s.trim().parse().map_err(|_| bad("not a decimal number"))?;
    match u32::try_from(v) {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => {
            pr_err!("{}: {} not in {}..={} (EINVAL)\n", name, v, lo, hi);
            Err(EINVAL)
        }
    }
}

fn stats_read(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    writeln!(
        f,
        "node size free marked zeroed hits misses violations aborted zero_us taken reclaimed"
    )?;
    for nid in 0..NODES {
        // SAFETY: checks a node number.
        if !unsafe { prezero_glue_node_online(nid as c_int) } {
            continue;
        }
        for (i, &(order, name, kind)) in SIZES.iter().enumerate() {
            // hugetlb: free pages and marked ones; pool: pooled pages (all
            // zero), how many faults took and the shrinker gave back (one
            // snapshot under the pool's lock).
            let (mut free, mut marked): (c_ulong, c_ulong) = (0, 0);
            let (mut taken, mut reclaimed): (c_ulong, c_ulong) = (0, 0);
            // SAFETY: valid out-pointers; the glue checks order and node.
            let r = unsafe {
                match kind {
                    Kind::Hugetlb => prezero_glue_count(order, nid as c_int, &mut free, &mut marked),
                    Kind::Pool => {
                        prezero_glue_pool_count(
                            order,
                            nid as c_int,
                            &mut free,
                            &mut taken,
                            &mut reclaimed,
                        )
                    }
                }
            };
            if r != 0 {
                continue;
            }
            if kind == Kind::Pool {
                marked = free;
            }
            let c = &STATS[nid][i];
            writeln!(
                f,
                "{} {} {} {} {} {} {} {} {} {} {} {}",
                nid,
                name,
                free,
                marked,
                c.zeroed.load(Relaxed),
                c.hits.load(Relaxed),
                c.misses.load(Relaxed),
                c.violations.load(Relaxed),
                c.aborted.load(Relaxed),
                c.zero_ns.load(Relaxed) / 1000,
                taken,
                reclaimed
            )?;
        }
    }
    Ok(())
}
