//! Many threads against the allocator, and random ioctls against the device.

use crate::data::Rng;
use anyhow::{ensure, Context, Result};
use liveup::kram::{Kram, RawPage, IOC_MAGIC};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

pub fn stress(dev: &str, area: &str, threads: usize, iters: usize) -> Result<()> {
    let k = Kram::open(dev)?;
    let id = k.lookup(area)?.id;
    let used0 = k.status()?.used_pages;
    let held = Arc::new(Mutex::new(HashSet::new()));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let held = held.clone();
            let dev = dev.to_string();
            std::thread::spawn(move || -> Result<()> {
                let k = Kram::open(&dev)?;
                let mut mine = Vec::new();
                let mut r = Rng::new(t as u64 + 1);
                for _ in 0..iters {
                    if mine.len() < 8 && (mine.is_empty() || r.next().is_multiple_of(2)) {
                        let off = k.alloc(id)?;
                        ensure!(
                            held.lock().unwrap().insert(off),
                            "page {off:#x} handed out twice"
                        );
                        mine.push(off);
                    } else {
                        let off = mine.swap_remove((r.next() % mine.len() as u64) as usize);
                        held.lock().unwrap().remove(&off);
                        k.free(id, off)?;
                    }
                }
                for off in mine {
                    held.lock().unwrap().remove(&off);
                    k.free(id, off)?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
    }
    let used1 = k.status()?.used_pages;
    ensure!(
        used0 == used1,
        "used pages {used0} before, {used1} after: pages leaked"
    );
    println!("{threads} threads x {iters} alloc/free: no page handed out twice, none leaked");
    Ok(())
}

pub fn fuzz(dev: &str, iters: usize, seed: u64) -> Result<()> {
    let k = Kram::open(dev)?;
    let before = k.areas()?;
    let st0 = k.status()?;
    let mut r = Rng::new(seed);
    let mut allocated: Vec<(u32, u64)> = Vec::new();
    let mut buf = [0u8; 256];
    let (mut ok, mut err) = (0u64, 0u64);
    for _ in 0..iters {
        for b in buf.iter_mut() {
            *b = r.next() as u8;
        }
        let nr = (r.next() % 12) as u8;
        if nr == 1 {
            continue; // FORMAT: covered by its own test, with and without confirmation
        }
        // Mostly well-formed requests with garbage contents; sometimes a
        // wrong size, direction or a bad pointer.
        let size = match r.next() % 8 {
            0 => (r.next() % 200) as usize,
            _ => match nr {
                0 => 72,
                2..=5 => 56,
                _ => 16,
            },
        };
        // ioctl direction: mostly read+write, sometimes none, write or read.
        let dir = (r.next() % 8).min(3);
        let ptr: *mut u8 = match r.next() % 10 {
            0 => std::ptr::null_mut(),
            1 => 0xdead_0000usize as *mut u8,
            _ => buf.as_mut_ptr(),
        };
        if nr == 6 && r.next().is_multiple_of(2) {
            // ALLOC for an existing area id: must succeed or say why.
            let id = before
                .get((r.next() % before.len().max(1) as u64) as usize)
                .map_or(1, |a| a.id);
            buf[..4].copy_from_slice(&id.to_le_bytes());
        }
        let req =
            (dir << 30) | ((size as u64 & 0x3fff) << 16) | ((IOC_MAGIC as u64) << 8) | nr as u64;
        // SAFETY: the kernel reads and writes at most `size` (< 256) bytes at
        // `ptr`, which is `buf` or an address it must refuse with EFAULT.
        let rc = unsafe { libc::ioctl(k.fd(), req as _, ptr) };
        if rc == 0 {
            ok += 1;
            if nr == 6 && size == 16 && dir == 3 && ptr == buf.as_mut_ptr() {
                let p = RawPage {
                    id: u32::from_le_bytes(buf[..4].try_into()?),
                    pad: 0,
                    offset: u64::from_le_bytes(buf[8..16].try_into()?),
                };
                allocated.push((p.id, p.offset));
            }
        } else {
            err += 1;
        }
    }
    // Undo what the fuzzer legitimately did: pages it allocated, areas it created.
    for (id, off) in allocated {
        k.free(id, off)
            .with_context(|| format!("freeing fuzz page {off:#x} of area {id}"))?;
    }
    for a in k.areas()? {
        if !before.iter().any(|b| b.name == a.name) {
            k.delete(&a.name)?;
        }
    }
    let after = k.areas()?;
    ensure!(
        after == before,
        "areas changed under fuzzing:\nbefore {before:?}\nafter {after:?}"
    );
    let st1 = k.status()?;
    ensure!(
        st1.used_pages == st0.used_pages,
        "used pages {} -> {}",
        st0.used_pages,
        st1.used_pages
    );
    ensure!(st1.state == 0, "region no longer ready");
    println!(
        "{iters} fuzzed ioctls ({ok} accepted, {err} refused): areas and page counts unchanged"
    );
    Ok(())
}
