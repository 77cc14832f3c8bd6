//! Pattern fills and checks of an area, the allocator benchmark, and the
//! checksum tinyvm computes over its RAM.

use anyhow::{ensure, Result};
use liveup::kram::{Kram, PAGE_SIZE};

/// xorshift64*: a small deterministic generator for patterns and fuzzing.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

pub fn pattern(seed: u64, page: u64, buf: &mut [u8]) {
    let mut r = Rng::new(seed ^ page.wrapping_mul(0x1000_0000_01b3));
    for c in buf.chunks_mut(8) {
        c.copy_from_slice(&r.next().to_le_bytes()[..c.len()]);
    }
}

pub fn bench(k: &Kram, area: &str, pool: &str, iters: usize) -> Result<()> {
    use std::time::Instant;
    let id = k.lookup(pool)?.id;
    let t = Instant::now();
    for _ in 0..iters {
        let off = k.alloc(id)?;
        k.free(id, off)?;
    }
    let pair = t.elapsed().as_nanos() as f64 / iters as f64;
    let a = k.lookup(area)?;
    let len = (a.npages * PAGE_SIZE) as usize;
    let touch = |m: &mut [u8]| {
        for p in m.chunks_mut(PAGE_SIZE as usize) {
            p[0] = 1;
        }
    };
    let t = Instant::now();
    let mut m = k.map(&a)?;
    touch(&mut m);
    let kram_s = t.elapsed().as_secs_f64();
    drop(m);
    let t = Instant::now();
    let mut anon = memmap2::MmapMut::map_anon(len)?;
    touch(&mut anon);
    let anon_s = t.elapsed().as_secs_f64();
    let mib = len as f64 / (1 << 20) as f64;
    println!("| KRAM_IOC_ALLOC + KRAM_IOC_FREE (ioctl pair) | {pair:.0} ns |");
    println!(
        "| map + touch {mib:.0} MiB KRAM area | {:.1} ms ({:.0} MiB/s) |",
        kram_s * 1e3,
        mib / kram_s
    );
    println!(
        "| map + touch {mib:.0} MiB anonymous memory | {:.1} ms ({:.0} MiB/s) |",
        anon_s * 1e3,
        mib / anon_s
    );
    Ok(())
}

pub fn fill(k: &Kram, area: &str, seed: u64, verify: bool) -> Result<()> {
    let a = k.lookup(area)?;
    ensure!(a.npages > 0, "area {area} has no fixed pages");
    let mut m = k.map(&a)?;
    let mut want = vec![0u8; PAGE_SIZE as usize];
    let mut bad = 0u64;
    for (i, page) in m.chunks_mut(PAGE_SIZE as usize).enumerate() {
        pattern(seed, i as u64, &mut want);
        if verify {
            if page != want.as_slice() {
                if bad == 0 {
                    eprintln!("first differing page: {i}");
                }
                bad += 1;
            }
        } else {
            page.copy_from_slice(&want);
        }
    }
    // No msync: the mapping is device memory, coherent as it is written,
    // and character devices have no fsync (msync would say EINVAL).
    drop(m);
    ensure!(
        bad == 0,
        "{bad} of {} pages of {area} differ from the pattern",
        a.npages
    );
    println!(
        "{} {} pages of {area} (offset {:#x})",
        if verify { "verified" } else { "filled" },
        a.npages,
        a.offset
    );
    Ok(())
}

/// FNV-1a over little-endian u32 words, as tools/guest/tinyvm.c hashes its RAM.
pub fn tinyvm_sum(bytes: &[u8]) -> u32 {
    bytes.chunks_exact(4).fold(2_166_136_261u32, |h, w| {
        (h ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]])).wrapping_mul(16_777_619)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn tinyvm_sum_matches_the_guest() {
        // FNV-1a offset basis for no words; one zero word multiplies once.
        assert_eq!(super::tinyvm_sum(&[]), 2_166_136_261);
        assert_eq!(
            super::tinyvm_sum(&[0, 0, 0, 0]),
            2_166_136_261u32.wrapping_mul(16_777_619)
        );
        assert_ne!(
            super::tinyvm_sum(&[1, 0, 0, 0]),
            super::tinyvm_sum(&[0, 1, 0, 0])
        );
    }
}
