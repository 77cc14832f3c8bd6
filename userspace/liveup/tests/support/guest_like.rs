//! Test data that compresses like guest memory, for the codec tests in
//! src/migrate/codec.rs (and the relay's) and tests/codec_interop.rs: one
//! generator, included by path in both.

/// Guest-memory-like data: text, zero runs, counters, some noise.
pub fn sample(n: usize, seed: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 64);
    let mut x = seed | 1;
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        match x % 5 {
            0 => v.extend_from_slice(b"struct page flags=0x17ffffc0010000 "),
            1 => v.extend(std::iter::repeat_n(0u8, (x % 512) as usize)),
            2 => v.extend_from_slice(&x.to_le_bytes()),
            3 => v.extend_from_slice(format!("{:06} ", x % 1000).as_bytes()),
            _ => v.extend_from_slice(&(x as u64).wrapping_mul(0x9e37).to_be_bytes()),
        }
    }
    v.truncate(n);
    v
}
