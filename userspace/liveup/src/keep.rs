//! A passthrough device kept doing DMA through `liveup upgrade`: the
//! device is bound to vfio-pci and kept (patches/0002: VFIO keep flag or
//! sysfs `kept`); once the VMs are stopped its VT-d tables are frozen into
//! KRAM through `/dev/iommu-preserve` (iommu_preserve.ko, FREEZE), and the
//! next kernel is told with `pci_keep=` and `intel_iommu_adopt=`
//! (Documentation/iommu-preserve.rst). If the upgrade gives up before its
//! kexec, THAW puts the IOMMU back on the running kernel's own tables.
//! `liveup iommu` runs each operation by hand.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Context, Result};
use kram_format::vtd::{Span, Spans};

use crate::kram::{Kram, PAGE_SIZE};
use crate::upgrade::vm::VmConfig;

pub mod cli;
mod iopr;

pub use iopr::{Iopr, State, Status, DEVICE};

/// The KRAM area iommu_preserve keeps its record in (page 0).
const RECORD_AREA: &str = "iommu-preserve";
/// A PCI address: segment, bus, devfn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bdf {
    pub seg: u16,
    pub bus: u8,
    pub devfn: u8,
}

impl Bdf {
    /// `ssss:bb:dd.f` or `bb:dd.f` (hexadecimal, function 0-7).
    pub fn parse(s: &str) -> Result<Bdf> {
        let bad = || anyhow::anyhow!("{s:?} is not a PCI address (ssss:bb:dd.f or bb:dd.f)");
        let parts: Vec<&str> = s.split(':').collect();
        let (seg, bus, df) = match parts.as_slice() {
            [b, df] => ("0", *b, *df),
            [sg, b, df] => (*sg, *b, *df),
            _ => return Err(bad()),
        };
        let (dev, func) = df.split_once('.').ok_or_else(bad)?;
        let hex = |x: &str, max: u32| {
            u32::from_str_radix(x, 16)
                .ok()
                .filter(|&v| v <= max && !x.is_empty() && x.len() <= 4)
        };
        match (
            hex(seg, 0xffff),
            hex(bus, 0xff),
            hex(dev, 0x1f),
            func.parse::<u8>().ok().filter(|&f| f < 8),
        ) {
            (Some(seg), Some(bus), Some(dev), Some(func)) => Ok(Bdf {
                seg: seg as u16,
                bus: bus as u8,
                devfn: ((dev as u8) << 3) | func,
            }),
            _ => Err(bad()),
        }
    }

    /// `(segment << 16) | (bus << 8) | devfn`.
    pub fn code(&self) -> u64 {
        (u64::from(self.seg) << 16) | (u64::from(self.bus) << 8) | u64::from(self.devfn)
    }
}

impl std::fmt::Display for Bdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{}",
            self.seg,
            self.bus,
            self.devfn >> 3,
            self.devfn & 7
        )
    }
}

/// The fixed runs of the KRAM areas `names`: the memory a kept device may
/// reach after the kexec.
pub fn spans_of(kram: &Kram, names: &[String]) -> Result<Spans> {
    let base = kram.status()?.base;
    let mut spans = Spans::default();
    for n in names {
        let a = kram
            .lookup(n)
            .with_context(|| format!("KRAM area {n} (the kept device's)"))?;
        let span = a
            .npages
            .checked_mul(PAGE_SIZE)
            .and_then(|len| Span::new(base.checked_add(a.offset)?, len))
            .with_context(|| format!("KRAM area {n}: no fixed run to keep the device in"))?;
        spans.push(span).map_err(|e| {
            anyhow!(
                "KRAM area {n}: {e:?} (at most {} areas, none twice)",
                kram_format::vtd::MAX_SPANS
            )
        })?;
    }
    ensure!(!names.is_empty(), "no KRAM area given for the kept device");
    Ok(spans)
}

/// Whether QEMU's `argv` passes the PCI device `bdf` through
/// (`-device vfio-pci,host=BDF`).
pub fn passes_through(argv: &[String], bdf: Bdf) -> bool {
    argv.iter().any(|a| {
        let opts: Vec<&str> = a.split(',').collect();
        opts.iter()
            .any(|o| *o == "vfio-pci" || *o == "driver=vfio-pci")
            && opts.iter().any(|o| {
                o.strip_prefix("host=")
                    .is_some_and(|h| Bdf::parse(h).is_ok_and(|b| b == bdf))
            })
    })
}

/// A device checked by preflight, with where its record will be.
#[derive(Debug)]
pub struct KeptDevice {
    pub bdf: Bdf,
    module: PathBuf,
    /// Physical address of the record page: known before the freeze, so
    /// the kexec command line can be loaded in preflight.
    pub record: u64,
    /// The memory the device may reach: `areas`' fixed runs, on the
    /// next kernel's command line and given to the freeze.
    pub spans: Spans,
}

impl KeptDevice {
    /// Checks that change nothing but creating the (empty) record area.
    /// `areas`: the KRAM areas the device does DMA into; none given, the
    /// RAM areas of those of `vms` that pass it through.
    pub fn preflight(
        kram: &Kram,
        dev: &str,
        module: &Path,
        areas: &[String],
        vms: &[VmConfig],
    ) -> Result<KeptDevice> {
        let bdf = Bdf::parse(dev)?;
        let sys = PathBuf::from(format!("/sys/bus/pci/devices/{bdf}"));
        ensure!(sys.exists(), "--keep-device {bdf}: no such PCI device");
        let driver = fs::read_link(sys.join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        ensure!(
            driver == "vfio-pci",
            "--keep-device {bdf}: bound to {}, not vfio-pci",
            if driver.is_empty() {
                "no driver"
            } else {
                &driver
            }
        );
        let kept = fs::read_to_string(sys.join("kept")).with_context(|| {
            format!("--keep-device {bdf}: no sysfs 'kept' (kernel without patches/0002?)")
        })?;
        ensure!(
            kept.trim() == "1",
            "--keep-device {bdf}: not kept: set the VFIO keep flag or write 1 to {}",
            sys.join("kept").display()
        );
        ensure!(
            module.is_file(),
            "--iommu-preserve {}: no such file",
            module.display()
        );
        let names: Vec<String> = if areas.is_empty() {
            vms.iter()
                .filter(|v| passes_through(&v.argv, bdf))
                .map(|v| v.area.clone())
                .collect()
        } else {
            areas.to_vec()
        };
        ensure!(
            !names.is_empty(),
            "--keep-device {bdf}: no VM of this upgrade passes it through (vfio-pci,host={bdf}): name the KRAM areas it does DMA into with --keep-area"
        );
        let spans = spans_of(kram, &names).with_context(|| format!("--keep-device {bdf}"))?;
        let base = kram.status()?.base;
        let area = kram.ensure(RECORD_AREA, 1)?;
        let m = kram.map(&area)?;
        ensure!(
            m[..64].iter().all(|&b| b == 0),
            "KRAM area {RECORD_AREA} holds a preserved record already: release it (liveup iommu release) or discard it (liveup iommu discard)"
        );
        Ok(KeptDevice {
            bdf,
            module: module.into(),
            record: base + area.offset,
            spans,
        })
    }

    /// What the next kernel's command line needs: the device, the record
    /// and the memory the device may reach.
    pub fn cmdline(&self) -> String {
        format!(
            "pci_keep={} intel_iommu_adopt={:#x},{}",
            self.bdf, self.record, self.spans
        )
    }

    /// Snapshot the device's tables into KRAM and switch the IOMMU to them
    /// (refused if they map a page outside the spans).
    pub fn freeze(&self) -> Result<()> {
        Iopr::open(Some(&self.module))?.freeze(self.bdf, &self.spans)
    }

    /// Undo `freeze` (the upgrade stopped before its kexec).
    pub fn thaw(&self) -> Result<()> {
        Iopr::open(Some(&self.module))?.thaw()
    }
}

/// The running kernel's command line without the one-shot parameters of an
/// earlier adopting boot: a stale `intel_iommu_adopt=` names a record that
/// no longer matches (the next kernel would refuse it and block the kept
/// devices), and `pci_keep=` belongs to that record.
pub fn strip_one_shot(cmdline: &str) -> String {
    cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("pci_keep=") && !w.starts_with("intel_iommu_adopt="))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_passing_the_device_through_is_found() {
        let argv = |a: &str| a.split(' ').map(String::from).collect::<Vec<_>>();
        let bdf = Bdf::parse("01:00.0").unwrap();
        assert!(passes_through(
            &argv("qemu -device vfio-pci,host=01:00.0,id=n"),
            bdf
        ));
        assert!(passes_through(
            &argv("qemu -device driver=vfio-pci,host=0000:01:00.0"),
            bdf
        ));
        assert!(!passes_through(
            &argv("qemu -device vfio-pci,host=01:00.1"),
            bdf
        ));
        assert!(!passes_through(
            &argv("qemu -device e1000e,host=01:00.0"),
            bdf
        ));
        assert!(!passes_through(
            &argv("qemu -device vfio-pci,sysfsdev=/x host=01:00.0"),
            bdf
        ));
    }

    #[test]
    fn pci_addresses_parse_or_are_refused() {
        let b = Bdf::parse("0000:00:03.0").unwrap();
        assert_eq!((b.seg, b.bus, b.devfn), (0, 0, 0x18));
        assert_eq!(b.code(), 0x18);
        assert_eq!(b.to_string(), "0000:00:03.0");
        let b = Bdf::parse("3a:1f.7").unwrap();
        assert_eq!((b.seg, b.bus, b.devfn, b.code()), (0, 0x3a, 0xff, 0x3aff));
        assert_eq!(Bdf::parse("0001:02:00.1").unwrap().code(), 0x1_0201);
        for bad in [
            "",
            "00:03",
            "00:20.0",
            "00:03.8",
            "100:03.0",
            "0:0:0:0.0",
            "zz:03.0",
            "00:03.x",
            "12345:00:00.0",
        ] {
            assert!(Bdf::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn one_shot_parameters_are_dropped() {
        assert_eq!(
            strip_one_shot("console=ttyS0 pci_keep=0000:00:03.0 memmap=256M$0x100000000 intel_iommu_adopt=0x1000 quiet"),
            "console=ttyS0 memmap=256M$0x100000000 quiet"
        );
        assert_eq!(strip_one_shot("a  b"), "a b");
    }
}
