//! FREEZE with whatever the caller gives, unchecked: the module's own
//! checks of `struct iopr_freeze` (span count, alignment, overlap, System
//! RAM) are what is tested, which liveup's typed spans never let through.

use anyhow::{Context, Result};
use kh_uapi::iommu_preserve as u;
use std::os::fd::AsRawFd;

nix::ioctl_write_ptr_bad!(freeze, u::IOC_FREEZE, u::Freeze);

/// `nspans` as given (it may claim more than `spans` holds); each span
/// `START+LEN`, numbers hexadecimal, at most `MAX_SPANS` of them. Prints
/// the errno the ioctl ended with (0 if it passed).
pub fn freeze_raw(bdf: &str, nspans: u32, spans: &[String]) -> Result<()> {
    let b = liveup::keep::Bdf::parse(bdf)?;
    let mut f = u::Freeze {
        dev: u::Dev {
            seg: b.seg,
            bus: b.bus,
            devfn: b.devfn,
        },
        nspans,
        ..Default::default()
    };
    for (to, s) in f.spans.iter_mut().zip(spans) {
        let (a, l) = s.split_once('+').context("START+LEN")?;
        let hex = |x: &str| u64::from_str_radix(x.trim_start_matches("0x"), 16);
        *to = u::Span {
            start: hex(a)?,
            len: hex(l)?,
        };
    }
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(liveup::keep::DEVICE)
        .with_context(|| format!("open {}", liveup::keep::DEVICE))?;
    // SAFETY: our open device; `f` is the struct FREEZE reads.
    let r = unsafe { freeze(dev.as_raw_fd(), &f) };
    println!("errno={}", r.err().map_or(0, |e| e as i32));
    Ok(())
}
