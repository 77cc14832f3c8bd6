//! Tests of crash consistency: a crash injected after every write of an
//! operation leaves the state before or after it, never a third.

use crate::*;
use core::cell::Cell;
use core::sync::atomic::{AtomicU32, Ordering};

use super::{owners, Region};

/// Performs `left` writes, then tears the next superblock write in half and
/// refuses everything after: a kexec or panic at that instant.
struct CrashAfter {
    left: Cell<usize>,
}

impl Persist for CrashAfter {
    fn store(&self, word: &AtomicU32, value: u32) -> Result<(), Error> {
        if self.left.get() == 0 {
            return Err(Error::Crashed);
        }
        self.left.set(self.left.get() - 1);
        word.store(value, Ordering::Release);
        Ok(())
    }
    fn write_sb(&self, slot: &mut [u8], sb: &Superblock) -> Result<(), Error> {
        let mut buf = [0u8; SB_LEN];
        sb.encode(&mut buf)?;
        if self.left.get() == 0 {
            slot[..SB_LEN / 2].copy_from_slice(&buf[..SB_LEN / 2]);
            return Err(Error::Crashed);
        }
        self.left.set(self.left.get() - 1);
        slot[..SB_LEN].copy_from_slice(&buf);
        Ok(())
    }
    fn erase_sb(&self, slot: &mut [u8]) -> Result<(), Error> {
        if self.left.get() == 0 {
            return Err(Error::Crashed);
        }
        self.left.set(self.left.get() - 1);
        slot[..SB_LEN].fill(0);
        Ok(())
    }
}

/// Run `op` against a crash after each possible number of writes; every
/// outcome must open cleanly and equal either the state before or after.
fn crash_everywhere(
    setup: impl Fn(&mut Kram<'_, Direct>) -> u16,
    op: impl Fn(&mut Kram<'_, CrashAfter>, u16),
) {
    let mut r = Region::formatted(96);
    let id = {
        let (mut k, _) = r.open().unwrap();
        setup(&mut k)
    };
    let before_snap = r.snapshot();
    let before = owners(&mut r);
    let after = {
        let geo = r.geo;
        let (mut k, _) = Kram::open(
            geo,
            r.media(),
            CrashAfter {
                left: Cell::new(usize::MAX),
            },
        )
        .unwrap();
        op(&mut k, id);
        drop(k);
        owners(&mut r)
    };
    assert_ne!(before, after, "the operation changes something");
    let mut n = 0;
    loop {
        r.restore(&before_snap);
        let geo = r.geo;
        let done = {
            let persist = CrashAfter { left: Cell::new(n) };
            let (mut k, _) = Kram::open(geo, r.media(), persist).unwrap();
            op(&mut k, id);
            k.persist.left.get() > 0
        };
        let now = owners(&mut r);
        assert!(
            now == before || now == after,
            "crash after {n} writes left a third state"
        );
        // The recovery is itself complete: opening again changes nothing.
        let again = owners(&mut r);
        assert_eq!(now, again);
        let (k, _) = r.open().unwrap();
        let counted = now
            .iter()
            .filter(|(o, _)| *o != OWNER_FREE && *o != OWNER_META)
            .count() as u64;
        assert_eq!(k.stats().used, counted, "no page lost or counted twice");
        if done {
            break;
        }
        n += 1;
    }
    assert!(n > 1);
}

#[test]
fn crash_during_create_area() {
    crash_everywhere(
        |k| k.create_area(b"keep", 3).unwrap(),
        |k, _| {
            let _ = k.create_area(b"new", 7);
        },
    );
}

#[test]
fn crash_during_delete_area() {
    crash_everywhere(
        |k| {
            let a = k.create_area(b"doomed", 6).unwrap();
            for _ in 0..4 {
                k.alloc_page(a).unwrap();
            }
            a
        },
        |k, id| {
            let _ = k.delete_area(id);
        },
    );
}

#[test]
fn crash_during_alloc_and_free() {
    crash_everywhere(
        |k| k.create_area(b"pool", 0).unwrap(),
        |k, id| {
            let _ = k.alloc_page(id);
        },
    );
    crash_everywhere(
        |k| {
            let a = k.create_area(b"pool", 0).unwrap();
            k.alloc_page(a).unwrap();
            a
        },
        |k, id| {
            let first = k.geometry().data_first();
            let _ = k.free_page(id, first);
        },
    );
}
