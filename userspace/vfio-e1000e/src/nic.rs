//! The e1000e receive path driven from userspace: `init` resets the NIC
//! and builds a ring in the DMA memory; `attach` takes over a NIC that is
//! already receiving into that memory (no reset, no ring register write);
//! `watch` cleans the ring, re-arms descriptors and accounts the frames.

use crate::desc::{self, DescKind, DESC_LEN};
use crate::layout::{Header, LayoutError, Progress, HEADER_LEN, PROGRESS_LEN, PROGRESS_OFFSET};
use crate::mem::DmaMem;
use crate::regs;
use crate::seq::{self, SeqTracker};
use crate::vfio::{Backend, Device, DmaRange, Mmio, VfioError};
use serde::Serialize;
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum NicError {
    #[error(transparent)]
    Vfio(#[from] VfioError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("{bdf} is {vendor:04x}:{device:04x}, not an Intel 82574L (8086:10d3)")]
    NotE1000e {
        bdf: String,
        vendor: u16,
        device: u16,
    },
    #[error("the ring in the DMA memory is for {header}, not {given}")]
    Mismatch { header: String, given: String },
    #[error("reset did not complete (CTRL.RST still set after 1 s)")]
    Reset,
}

/// What `init` builds.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub iova: u64,
    pub ring_len: u32,
    pub buf_size: u32,
    pub desc_kind: DescKind,
    /// Enable the receiver (off: the ring is built but nothing arrives).
    pub rx: bool,
    pub backend: Backend,
}

/// The device registers and the ring as found.
#[derive(Debug, Clone, Serialize)]
pub struct RingState {
    pub ctrl: u32,
    pub status: u32,
    pub link_up: bool,
    pub rctl: u32,
    pub rx_enabled: bool,
    pub rdba: u64,
    pub rdlen: u32,
    pub rdh: u32,
    pub rdt: u32,
    pub bus_master: bool,
    /// RDBA/RDLEN are those of the ring the header describes.
    pub ring_registers_match: bool,
    /// Descriptors with DD set (written by the device, not yet cleaned).
    pub dd_set: u32,
    /// Descriptors the device owns (RDH up to RDT).
    pub owned_by_device: u32,
    pub next_to_clean: u32,
    pub progress: Option<Progress>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WatchReport {
    pub seconds: f64,
    pub frames: u64,
    pub other_frames: u64,
    /// Frames spread over several descriptors (not expected here).
    pub fragments: u64,
    pub rx_errors: u64,
    pub all: SeqTracker,
    /// The frames after the settle time: what a steady stream looks like.
    pub steady: SeqTracker,
    pub settle_seconds: f64,
    /// MPC: frames the NIC dropped for want of a descriptor.
    pub hw_missed: u32,
    /// GPRC: good frames the NIC received.
    pub hw_good: u32,
    pub rdh: u32,
    pub rdt: u32,
}

pub struct Nic {
    // Drop order: BAR mapping, then the VFIO fds (vfio-pci turns bus
    // mastering off on the last close), then the memory.
    bar: Mmio,
    dev: Device,
    mem: DmaMem,
    pub header: Header,
    next_to_clean: u32,
}

fn check_ids(dev: &Device) -> Result<(), NicError> {
    let vendor = dev.config_read16(0)?;
    let device = dev.config_read16(2)?;
    if vendor != regs::VENDOR_INTEL || device != regs::DEVICE_82574L {
        return Err(NicError::NotE1000e {
            bdf: dev.bdf.clone(),
            vendor,
            device,
        });
    }
    Ok(())
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// All of `mem`, at `iova`.
fn dma_range(mem: &DmaMem, iova: u64) -> DmaRange {
    DmaRange {
        vaddr: mem.addr(),
        iova,
        size: mem.len() as u64,
    }
}

impl Nic {
    /// Reset the NIC, build the ring in `mem` and (with `opts.rx`) start
    /// receiving.
    pub fn init(bdf: &str, mut mem: DmaMem, opts: &InitOptions) -> Result<Self, NicError> {
        let header = Header::plan(
            opts.iova,
            mem.len() as u64,
            opts.ring_len,
            opts.desc_kind,
            opts.buf_size,
            bdf,
            now_ns(),
        )?;
        // SAFETY: `mem` lives as long as the Nic, which holds the device
        // and so the mapping.
        let dev = unsafe { Device::open(bdf, opts.backend, Some(dma_range(&mem, header.iova)))? };
        check_ids(&dev)?;
        let bar = dev.map_bar0()?;

        // Quiesce and reset: receiver off, then CTRL.RST (self-clearing).
        bar.write32(regs::RCTL, 0);
        bar.write32(regs::IMC, u32::MAX);
        bar.write32(regs::CTRL, bar.read32(regs::CTRL) | regs::CTRL_RST);
        std::thread::sleep(Duration::from_millis(2));
        let t = Instant::now();
        while bar.read32(regs::CTRL) & regs::CTRL_RST != 0 {
            if t.elapsed() > Duration::from_secs(1) {
                return Err(NicError::Reset);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        bar.write32(regs::IMC, u32::MAX);
        bar.write32(
            regs::CTRL,
            bar.read32(regs::CTRL) | regs::CTRL_SLU | regs::CTRL_ASDE,
        );
        // Clear the clear-on-read statistics.
        bar.read32(regs::MPC);
        bar.read32(regs::GPRC);

        // The memory: header, progress, ring, buffers.
        mem.prefault();
        // Header page and ring zeroed; buffers are the device's to fill.
        mem.fill(0, header.buf_offset as usize, 0);
        mem.write(0, &header.encode());
        let progress = Progress {
            next_to_clean: 0,
            frames: 0,
            last_seq: None,
        };
        mem.write(PROGRESS_OFFSET, &progress.encode());
        for i in 0..header.ring_len {
            mem.write(
                header.desc_pos(i),
                &desc::encode(header.desc_kind, header.buf_iova(i)),
            );
        }
        // Ring and header written before the device may fetch them.
        fence(Ordering::SeqCst);

        let cmd = dev.config_read16(regs::PCI_COMMAND)?;
        dev.config_write16(
            regs::PCI_COMMAND,
            cmd | regs::PCI_COMMAND_MEMORY | regs::PCI_COMMAND_MASTER,
        )?;

        let ring = header.ring_iova();
        bar.write32(
            regs::RFCTL,
            if header.desc_kind == DescKind::Extended {
                regs::RFCTL_EXSTEN
            } else {
                0
            },
        );
        bar.write32(regs::RDBAL, ring as u32);
        bar.write32(regs::RDBAH, (ring >> 32) as u32);
        bar.write32(regs::RDLEN, header.ring_bytes());
        bar.write32(regs::RDH, 0);
        // Every descriptor but the last is the device's; the tail stays on
        // the last one software cleaned (see desc::next_to_clean).
        bar.write32(regs::RDT, header.ring_len - 1);
        if opts.rx {
            let rctl = regs::rctl_rx_all(header.buf_size)
                .ok_or_else(|| LayoutError::Layout(format!("buffer size {}", header.buf_size)))?;
            bar.write32(regs::RCTL, rctl);
        }
        Ok(Nic {
            bar,
            dev,
            mem,
            header,
            next_to_clean: 0,
        })
    }

    /// Take over a NIC that is already set up with its ring in `mem`: map
    /// the memory at the IOVA its header records (`iova`, when given, must
    /// agree), turn bus mastering back on if it is off (`bus_master`), and
    /// touch no NIC register. Returns the state found (before bus mastering
    /// was set). With `Backend::Iommufd` the device is attached to a domain
    /// that already maps the memory (see `iommufd.rs`); the legacy backend
    /// attaches an empty one first and maps right after.
    pub fn attach(
        bdf: &str,
        mem: DmaMem,
        iova: Option<u64>,
        bus_master: bool,
        backend: Backend,
    ) -> Result<(Self, RingState), NicError> {
        let mut hb = vec![0u8; HEADER_LEN.min(mem.len())];
        mem.read(0, &mut hb);
        let header = Header::decode(&hb, mem.len() as u64)?;
        if let Some(i) = iova {
            if i != header.iova {
                return Err(NicError::Mismatch {
                    header: format!("IOVA {:#x}", header.iova),
                    given: format!("IOVA {i:#x}"),
                });
            }
        }
        if header.bdf != bdf {
            return Err(NicError::Mismatch {
                header: header.bdf.clone(),
                given: bdf.into(),
            });
        }
        // SAFETY: `mem` lives as long as the Nic, which holds the device
        // and so the mapping.
        let dev = unsafe { Device::open(bdf, backend, Some(dma_range(&mem, header.iova)))? };
        check_ids(&dev)?;
        let bar = dev.map_bar0()?;
        let mut nic = Nic {
            bar,
            dev,
            mem,
            header,
            next_to_clean: 0,
        };
        let state = nic.state()?;
        nic.next_to_clean = state.next_to_clean;
        if bus_master && !state.bus_master {
            let cmd = nic.dev.config_read16(regs::PCI_COMMAND)?;
            nic.dev.config_write16(
                regs::PCI_COMMAND,
                cmd | regs::PCI_COMMAND_MEMORY | regs::PCI_COMMAND_MASTER,
            )?;
        }
        Ok((nic, state))
    }

    fn desc_at(&self, i: u32) -> [u8; DESC_LEN] {
        let mut d = [0u8; DESC_LEN];
        self.mem.read(self.header.desc_pos(i), &mut d);
        d
    }

    fn done_at(&self, i: u32) -> bool {
        let off = self.header.desc_pos(i) + desc::status_word_offset(self.header.desc_kind);
        desc::word_done(self.mem.read32(off))
    }

    pub fn progress(&self) -> Option<Progress> {
        let mut b = [0u8; PROGRESS_LEN];
        self.mem.read(PROGRESS_OFFSET, &mut b);
        Progress::decode(&b)
    }

    pub fn state(&self) -> Result<RingState, NicError> {
        let b = &self.bar;
        let len = self.header.ring_len;
        let (rdh, rdt) = (b.read32(regs::RDH), b.read32(regs::RDT));
        let rdba = (u64::from(b.read32(regs::RDBAH)) << 32) | u64::from(b.read32(regs::RDBAL));
        let rdlen = b.read32(regs::RDLEN);
        let cmd = self.dev.config_read16(regs::PCI_COMMAND)?;
        let (status, rctl) = (b.read32(regs::STATUS), b.read32(regs::RCTL));
        Ok(RingState {
            ctrl: b.read32(regs::CTRL),
            status,
            link_up: status & regs::STATUS_LU != 0,
            rctl,
            rx_enabled: rctl & regs::RCTL_EN != 0,
            rdba,
            rdlen,
            rdh,
            rdt,
            bus_master: cmd & regs::PCI_COMMAND_MASTER != 0,
            ring_registers_match: rdba == self.header.ring_iova()
                && rdlen == self.header.ring_bytes(),
            dd_set: (0..len).filter(|&i| self.done_at(i)).count() as u32,
            owned_by_device: if rdh < len && rdt < len {
                desc::owned_by_device(rdh, rdt, len)
            } else {
                0
            },
            next_to_clean: desc::next_to_clean(rdt, len),
            progress: self.progress(),
        })
    }

    /// Clean the ring for `seconds`: count frames, account their sequence
    /// numbers (all of them, and those after `settle` seconds), re-arm the
    /// descriptors and hand them back through RDT.
    pub fn watch(&mut self, seconds: f64, settle: f64) -> WatchReport {
        let len = self.header.ring_len;
        let kind = self.header.desc_kind;
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(seconds.max(0.0));
        let settle_at = start + Duration::from_secs_f64(settle.max(0.0));
        let prev = self.progress();
        let mut all = match prev.and_then(|p| p.last_seq) {
            Some(s) => SeqTracker::after(s),
            None => SeqTracker::new(),
        };
        let mut steady = SeqTracker::new();
        let (mut frames, mut other, mut fragments, mut errors) = (0u64, 0u64, 0u64, 0u64);
        let total_before = prev.map(|p| p.frames).unwrap_or(0);
        let mut buf = vec![0u8; self.header.buf_size as usize];
        // Clear-on-read counters: count from here.
        let _ = self.bar.read32(regs::MPC);
        let _ = self.bar.read32(regs::GPRC);
        let mut missed = 0u32;
        let mut good = 0u32;
        let mut stats_at = start;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let mut cleaned = 0u32;
            let mut last = None;
            while cleaned < len && self.done_at(self.next_to_clean) {
                // Read the descriptor and its buffer only after DD.
                fence(Ordering::Acquire);
                let i = self.next_to_clean;
                let wb = desc::decode(kind, &self.desc_at(i));
                if wb.errors != 0 {
                    errors += 1;
                } else if !wb.eop {
                    fragments += 1;
                } else {
                    let n = usize::from(wb.length).min(buf.len());
                    self.mem.read(self.header.buf_pos(i), &mut buf[..n]);
                    match seq::parse(&buf[..n]) {
                        Some(s) => {
                            frames += 1;
                            all.record(s);
                            if now >= settle_at {
                                steady.record(s);
                            }
                        }
                        None => other += 1,
                    }
                }
                self.mem.write(
                    self.header.desc_pos(i),
                    &desc::encode(kind, self.header.buf_iova(i)),
                );
                last = Some(i);
                self.next_to_clean = desc::next(i, len);
                cleaned += 1;
            }
            if let Some(i) = last {
                // Descriptors rewritten before the device may use them.
                fence(Ordering::SeqCst);
                self.bar.write32(regs::RDT, i);
                let p = Progress {
                    next_to_clean: self.next_to_clean,
                    frames: total_before + frames,
                    last_seq: all.last_seq,
                };
                self.mem.write(PROGRESS_OFFSET, &p.encode());
            } else {
                std::thread::sleep(Duration::from_micros(500));
            }
            if now.duration_since(stats_at) >= Duration::from_millis(200) {
                missed = missed.saturating_add(self.bar.read32(regs::MPC));
                good = good.saturating_add(self.bar.read32(regs::GPRC));
                stats_at = now;
            }
        }
        missed = missed.saturating_add(self.bar.read32(regs::MPC));
        good = good.saturating_add(self.bar.read32(regs::GPRC));
        WatchReport {
            seconds: start.elapsed().as_secs_f64(),
            frames,
            other_frames: other,
            fragments,
            rx_errors: errors,
            all,
            steady,
            settle_seconds: settle,
            hw_missed: missed,
            hw_good: good,
            rdh: self.bar.read32(regs::RDH),
            rdt: self.bar.read32(regs::RDT),
        }
    }

    /// Receiver off (the ring stays as it is).
    pub fn stop(&self) {
        let r = self.bar.read32(regs::RCTL);
        self.bar.write32(regs::RCTL, r & !regs::RCTL_EN);
    }

    /// The VFIO device (for the keep flag).
    pub fn device(&self) -> &Device {
        &self.dev
    }

    pub fn bdf(&self) -> &str {
        &self.dev.bdf
    }

    pub fn group(&self) -> &str {
        &self.dev.group
    }

    pub fn mem(&self) -> &DmaMem {
        &self.mem
    }
}
