//! `liveup prezero`: drive the prezero module (ABI: prezero/include/uapi/prezero.h,
//! knobs in /sys/kernel/debug/prezero/) and measure what it buys.
//!
//! `zero` asks the kernel to zero free hugetlb pages, or (`--pool`) to fill
//! the 4 KiB / THP pools that anonymous faults take from, in this process's
//! context, so the CPU time lands in this process's cgroup (run it from a
//! low-priority unit: userspace/liveup/systemd/liveup-prezero.service). `populate` and
//! `vfio-map` are the measurements of bench/prezero.sh and the checks of
//! selftests/prezero/: they time faulting memory in and pinning it through
//! a VFIO container, and can check that every byte handed out is zero.

use crate::units::parse_size;

mod measure;
use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use measure::{populate_cmd, vfio_map_cmd};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

pub const DEFAULT_DEVICE: &str = "/dev/prezero";
pub const DEBUGFS: &str = "/sys/kernel/debug/prezero";
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

pub use kh_uapi::prezero::{Req, ZERO_POOL};

mod ioc {
    use super::Req;
    nix::ioctl_readwrite_bad!(zero, kh_uapi::prezero::IOC_ZERO, Req);
}

#[derive(Subcommand)]
pub enum PrezeroCmd {
    /// Zero free hugetlb pages now, in this process (its cgroup pays), or
    /// with --pool fill the zeroed-page pool anonymous faults take from.
    Zero {
        /// Page size: 2M, 1G (hugetlb); 4K, 16K .. 1M (mTHP), 2M (pool); or bytes
        /// (passed on unchecked).
        #[arg(long, default_value = "2M")]
        size: String,
        /// Fill the 4K, mTHP or THP (2M) pool with new zeroed pages instead
        /// of zeroing free hugetlb pages; needs --count or --target.
        #[arg(long)]
        pool: bool,
        /// With --pool: top each node's pool up to this many bytes (K/M/G);
        /// 0 or a pool already there does nothing.
        #[arg(long, requires = "pool", conflicts_with = "count")]
        target: Option<String>,
        /// NUMA node, or "all" for every node with free pages of that size.
        #[arg(long, default_value = "all")]
        node: String,
        /// Pages to zero, or "all" (until none is left unzeroed).
        #[arg(long, default_value = "all")]
        count: String,
        /// Extra request flags (for testing the kernel's checks).
        #[arg(long, default_value_t = 0)]
        flags: u32,
        #[arg(long, default_value = DEFAULT_DEVICE)]
        device: String,
    },
    /// Counters per node and size, and the knobs.
    Status,
    /// Time faulting in SIZE bytes (mmap + populate) of one kind of memory.
    Populate {
        #[arg(long, value_enum)]
        kind: Kind,
        /// Bytes, with K/M/G suffixes.
        #[arg(long)]
        size: String,
        /// Fail if any byte handed out is not zero.
        #[arg(long)]
        check: bool,
        /// Write a pattern into the memory before unmapping it.
        #[arg(long)]
        dirty: bool,
    },
    /// Time VFIO_IOMMU_MAP_DMA of SIZE bytes through a VFIO group's container.
    VfioMap {
        /// The group device, e.g. /dev/vfio/3.
        #[arg(long)]
        group: String,
        #[arg(long, value_enum)]
        kind: Kind,
        #[arg(long)]
        size: String,
        /// Fail if any byte pinned is not zero.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Debug)]
pub enum Kind {
    /// Anonymous 4 KiB pages (THP off for the range).
    Anon,
    /// Anonymous transparent huge pages.
    Thp,
    /// hugetlb 2 MiB pages.
    Huge2m,
    /// hugetlb 1 GiB pages.
    Huge1g,
}

fn size_name(size: u64) -> String {
    match size {
        s if s >= GIB && s % GIB == 0 => format!("{}G", s / GIB),
        s if s >= MIB && s % MIB == 0 => format!("{}M", s / MIB),
        s if s >= 1024 && s % 1024 == 0 => format!("{}K", s / 1024),
        s => format!("{s}"),
    }
}

/// One zeroing request; returns (pages, nanoseconds).
pub fn zero(dev: &File, size: u64, node: i32, count: u64, flags: u32) -> Result<(u64, u64)> {
    let mut r = Req {
        size,
        node,
        flags,
        count,
        ..Default::default()
    };
    // SAFETY: `r` is a valid, writable struct of the layout the ioctl expects.
    unsafe { ioc::zero(dev.as_raw_fd(), &mut r) }
        .with_context(|| format!("PREZERO_IOC_ZERO size {size} node {node} count {count}"))?;
    Ok((r.done, r.ns))
}

/// Nodes that have free hugetlb pages of `size` (from sysfs).
fn nodes_with_pages(size: u64) -> Vec<i32> {
    let mut v = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/devices/system/node") else {
        return vec![0];
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(n) = name
            .strip_prefix("node")
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let p = e.path().join(format!(
            "hugepages/hugepages-{}kB/free_hugepages",
            size >> 10
        ));
        if std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .is_some_and(|f| f > 0)
        {
            v.push(n);
        }
    }
    v.sort();
    v
}

/// Online NUMA nodes (from sysfs; node 0 if that is unreadable).
fn online_nodes() -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir("/sys/devices/system/node")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_prefix("node")
                        .and_then(|n| n.parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    if v.is_empty() {
        v.push(0);
    }
    v.sort();
    v
}

/// The stats row name of a pool of pages of `size` bytes.
fn pool_row(size: u64) -> String {
    if size == 2 * MIB {
        "thp".into()
    } else {
        size_name(size)
    }
}

/// Pages now in node `node`'s pool of `size` (the `free` column of stats).
pub fn pooled(stats: &str, node: i32, size: u64) -> Option<u64> {
    let mut lines = stats.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let col = header.iter().position(|&c| c == "free")?;
    let row = pool_row(size);
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > col && f[0] == node.to_string() && f[1] == row)
        .and_then(|f| f[col].parse().ok())
}

fn zero_cmd(
    device: &str,
    size: &str,
    node: &str,
    count: &str,
    pool: bool,
    target: Option<&str>,
    flags: u32,
) -> Result<()> {
    let size = parse_size(size)?;
    if pool && count == "all" && target.is_none() {
        bail!("--pool needs --count N or --target SIZE: a pool grows by what is asked, not to all free memory");
    }
    let target = target.map(parse_size).transpose()?;
    let flags = flags | if pool { ZERO_POOL } else { 0 };
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .with_context(|| format!("cannot open {device} (is the prezero module loaded?)"))?;
    let nodes = if node == "all" && pool {
        online_nodes()
    } else if node == "all" {
        nodes_with_pages(size)
    } else {
        vec![node.parse().with_context(|| format!("bad node {node:?}"))?]
    };
    let all = count == "all";
    let count: u64 = if all {
        kh_uapi::prezero::MAX_COUNT
    } else {
        count
            .parse()
            .with_context(|| format!("bad count {count:?}"))?
    };
    // Each node's pool grows only by what this loop zeroes for that node,
    // so one read of the stats serves them all.
    let stats = match target {
        Some(_) => std::fs::read_to_string(format!("{DEBUGFS}/stats"))
            .with_context(|| format!("cannot read {DEBUGFS}/stats"))?,
        None => String::new(),
    };
    let (mut total, mut ns) = (0, 0);
    for n in nodes {
        let count = match target {
            None => count,
            Some(t) => {
                let Some(have) = pooled(&stats, n, size) else {
                    // the module serves nodes 0..8 and these sizes only
                    println!("node {n}: no pool of {} (skipped)", size_name(size));
                    continue;
                };
                let want = (t / size).saturating_sub(have);
                if want == 0 {
                    println!(
                        "node {n}: pool of {} holds {have} pages, target reached",
                        size_name(size)
                    );
                    continue;
                }
                want
            }
        };
        let (d, t) = zero(&dev, size, n, count, flags)?;
        println!(
            "node {n}: zeroed {d} pages of {} in {:.1} ms",
            size_name(size),
            t as f64 / 1e6
        );
        total += d;
        ns += t;
    }
    println!(
        "zeroed {total} pages ({} MiB) in {:.1} ms",
        (total * size) >> 20,
        ns as f64 / 1e6
    );
    Ok(())
}

pub fn run(cmd: PrezeroCmd) -> Result<()> {
    match cmd {
        PrezeroCmd::Zero {
            size,
            node,
            count,
            pool,
            target,
            flags,
            device,
        } => zero_cmd(
            &device,
            &size,
            &node,
            &count,
            pool,
            target.as_deref(),
            flags,
        ),
        PrezeroCmd::Status => {
            for knob in [
                "enabled",
                "verify",
                "idle",
                "idle_rate_mb",
                "min_available_pct",
            ] {
                let v = std::fs::read_to_string(format!("{DEBUGFS}/{knob}"))
                    .with_context(|| format!("cannot read {DEBUGFS}/{knob}"))?;
                println!("{knob}: {}", v.trim());
            }
            print!("{}", std::fs::read_to_string(format!("{DEBUGFS}/stats"))?);
            Ok(())
        }
        PrezeroCmd::Populate {
            kind,
            size,
            check,
            dirty,
        } => populate_cmd(kind, &size, check, dirty),
        PrezeroCmd::VfioMap {
            group,
            kind,
            size,
            check,
        } => vfio_map_cmd(&group, kind, &size, check),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size_name(2 * MIB), "2M");
        assert_eq!(size_name(3 * GIB), "3G");
        assert_eq!(size_name(64 << 10), "64K");
    }

    const STATS: &str =
        "node size free marked zeroed hits misses violations aborted zero_us taken reclaimed
0 2M 4 0 0 0 0 0 0 0 0 0
0 thp 7 7 9 2 0 0 0 10 2 0
0 4K 300 300 300 0 0 0 0 10 0 0
0 64K 5 5 5 0 0 0 0 1 0 0
1 thp 1 1 1 0 0 0 0 1 0 0
";

    #[test]
    fn pooled_reads_the_free_column_of_the_pool_row() {
        assert_eq!(pooled(STATS, 0, 2 * MIB), Some(7));
        assert_eq!(pooled(STATS, 1, 2 * MIB), Some(1));
        assert_eq!(pooled(STATS, 0, 4096), Some(300));
        assert_eq!(pooled(STATS, 0, 64 << 10), Some(5));
        assert_eq!(pooled(STATS, 2, 2 * MIB), None);
        assert_eq!(pooled(STATS, 0, 128 << 10), None);
        assert_eq!(pooled("", 0, 4096), None);
    }
}
