//! One step for many VMs, side by side: a thread an item, so that the
//! slowest item sets the time, not the sum.
//!
//! Nothing is lost when a thread cannot be made or dies: an item whose
//! thread the OS refuses runs on the caller's thread instead (after the
//! others have started), and a step that panics gives the caller's
//! `panicked` result for that item. The items come back with their
//! results, in order: a VM's QMP connection is never dropped by the
//! mechanics of running it in parallel.

use std::sync::{Mutex, PoisonError};
use std::thread::Builder;

/// `f` on every item side by side; each item back with its result, in
/// order. `panicked` is the result of an item whose `f` panicked.
pub fn side_by_side<T: Send, R: Send>(
    items: Vec<T>,
    f: impl Fn(&mut T) -> R + Sync,
    panicked: impl Fn(&T) -> R,
) -> Vec<(T, R)> {
    run(items, f, panicked, |_| false)
}

/// [`side_by_side`]; `refused(i)`: treat item i's thread as one the OS
/// would not make (a test's way to reach that path).
fn run<T: Send, R: Send>(
    items: Vec<T>,
    f: impl Fn(&mut T) -> R + Sync,
    panicked: impl Fn(&T) -> R,
    refused: impl Fn(usize) -> bool,
) -> Vec<(T, R)> {
    // Each item behind its own lock, shared with its thread: if the thread
    // cannot be made, the item is still here to run on this one.
    let cells: Vec<Mutex<T>> = items.into_iter().map(Mutex::new).collect();
    let step = |c: &Mutex<T>| f(&mut c.lock().unwrap_or_else(PoisonError::into_inner));
    let results: Vec<R> = std::thread::scope(|s| {
        let handles: Vec<_> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let step = &step;
                if refused(i) {
                    return None;
                }
                Builder::new().spawn_scoped(s, move || step(c)).ok()
            })
            .collect();
        // Those without a thread now, while the others run.
        let inline: Vec<Option<R>> = cells
            .iter()
            .zip(&handles)
            .map(|(c, h)| h.is_none().then(|| step(c)))
            .collect();
        handles
            .into_iter()
            .zip(inline)
            .zip(&cells)
            .map(|((h, r), c)| match (h, r) {
                (_, Some(r)) => r,
                (Some(h), None) => h.join().unwrap_or_else(|_| {
                    panicked(&c.lock().unwrap_or_else(PoisonError::into_inner))
                }),
                (None, None) => unreachable!("an item with no thread ran inline"),
            })
            .collect()
    });
    cells
        .into_iter()
        .map(|c| c.into_inner().unwrap_or_else(PoisonError::into_inner))
        .zip(results)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn items_run_side_by_side_and_come_back_in_order() {
        // Four steps that each wait for all four: only side by side can
        // they all finish.
        let b = Barrier::new(4);
        let out = side_by_side(
            vec![1, 2, 3, 4],
            |x| {
                b.wait();
                *x *= 10;
                *x + 1
            },
            |_| 0,
        );
        assert_eq!(out, vec![(10, 11), (20, 21), (30, 31), (40, 41)]);
    }

    #[test]
    fn a_panicking_step_gives_its_item_back_with_the_panicked_result() {
        let out = side_by_side(
            vec!["a".to_string(), "boom".into(), "c".into()],
            |s| {
                assert!(s != "boom", "injected");
                s.len()
            },
            |s| 1000 + s.len(),
        );
        assert_eq!(
            out,
            vec![("a".into(), 1), ("boom".into(), 1004), ("c".into(), 1)]
        );
    }

    #[test]
    fn an_item_whose_thread_is_refused_runs_here_and_is_kept() {
        let here = std::thread::current().id();
        // The second thread is refused.
        let out = run(
            vec![1, 2, 3],
            |x| {
                *x += 1;
                std::thread::current().id() == here
            },
            |_| false,
            |i| i == 1,
        );
        assert_eq!(out, vec![(2, false), (3, true), (4, false)]);
    }
}
