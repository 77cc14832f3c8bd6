//! Time to validate (open) KRAM metadata per GiB of region, on this CPU.
//! `cargo run --release -p kram-format --example validate_bench`
use kram_format::{Direct, Geometry, Kram, Media, PAGE_SIZE};
use std::sync::atomic::AtomicU32;
use std::time::Instant;

fn main() {
    let size: u64 = 1 << 30;
    let geo = Geometry::new(0x1_0000_0000, size).expect("geometry");
    let map: Vec<AtomicU32> = (0..geo.pages).map(|_| AtomicU32::new(0)).collect();
    let (mut s0, mut s1) = (vec![0u8; PAGE_SIZE], vec![0u8; PAGE_SIZE]);
    {
        let media = Media {
            slots: [&mut s0, &mut s1],
            map: &map,
        };
        let mut k = Kram::format(geo, media, Direct).expect("format");
        let a = k.create_area(b"guest-ram", 128 * 1024).expect("area");
        for _ in 0..10_000 {
            k.alloc_page(a).expect("alloc");
        }
    }
    let runs = 5;
    let t = Instant::now();
    for _ in 0..runs {
        let media = Media {
            slots: [&mut s0, &mut s1],
            map: &map,
        };
        Kram::open(geo, media, Direct).expect("open");
    }
    let ms = t.elapsed().as_secs_f64() * 1e3 / runs as f64;
    println!("| validate + adopt metadata of a 1 GiB region (host CPU) | {ms:.2} ms per GiB |");
}
