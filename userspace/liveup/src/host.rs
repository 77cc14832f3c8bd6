//! `liveup host`: what this host offers for our flows.

use crate::iomem;
use serde::Serialize;
use std::fmt;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct Region {
    pub start: u64,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub kernel: String,
    pub kvm: bool,
    pub iommu_units: usize,
    pub kexec_file: bool,
    pub reserved_regions: Vec<Region>,
}

pub fn probe(iomem_text: &str) -> Result<Report, iomem::ParseError> {
    let res = iomem::parse(iomem_text)?;
    let reserved_regions = iomem::reserved_candidates(&res)
        .into_iter()
        .map(|r| Region {
            start: r.start,
            size: r.len(),
        })
        .collect();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let iommu_units = std::fs::read_dir("/sys/class/iommu")
        .map(|d| d.count())
        .unwrap_or(0);
    Ok(Report {
        kernel,
        kvm: Path::new("/dev/kvm").exists(),
        iommu_units,
        kexec_file: Path::new("/sys/kernel/kexec_loaded").exists(),
        reserved_regions,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel           {}", self.kernel)?;
        writeln!(
            f,
            "/dev/kvm         {}",
            if self.kvm { "yes" } else { "no" }
        )?;
        writeln!(f, "IOMMU units      {}", self.iommu_units)?;
        writeln!(
            f,
            "kexec            {}",
            if self.kexec_file { "yes" } else { "no" }
        )?;
        if self.reserved_regions.is_empty() {
            writeln!(
                f,
                "KRAM candidates  none (reserve one with memmap=SIZE$ADDR)"
            )?;
        }
        for r in &self.reserved_regions {
            writeln!(f, "KRAM candidate   {:#x} + {} MiB", r.start, r.size >> 20)?;
        }
        Ok(())
    }
}
