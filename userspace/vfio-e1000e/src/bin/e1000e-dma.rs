//! `e1000e-dma`: drive an e1000e's receive path from userspace through
//! VFIO, with the ring in memory of the caller's choosing. See the crate
//! documentation (src/lib.rs) and `e1000e-dma --help`.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use liveup::units::parse_size;
use serde_json::json;
use std::process::ExitCode;
use vfio_e1000e::desc::DescKind;
use vfio_e1000e::mem::{parse_source, DmaMem};
use vfio_e1000e::nic::{InitOptions, Nic, RingState, WatchReport};
use vfio_e1000e::vfio::{Backend, Device};

#[derive(Parser)]
#[command(name = "e1000e-dma", version, about)]
struct Cli {
    /// PCI device (bound to vfio-pci).
    #[arg(long, env = "E1000E_DMA_BDF")]
    bdf: String,
    /// DMA memory: `anon`, `kram:AREA` (a /dev/kram area, created if
    /// missing), or the path of a file or device to map shared.
    #[arg(long, default_value = "anon")]
    mem: String,
    /// Byte offset into the file or device given by --mem.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    mem_offset: u64,
    /// Size of the DMA memory (4096, 2M, 0x200000).
    #[arg(long, default_value = "2M", value_parser = parse_size)]
    mem_size: u64,
    /// The KRAM device for kram:AREA memory (/dev/kram-pages: pages that
    /// VFIO and iommufd can pin; /dev/kram: a PFN mapping, type1 only).
    #[arg(long, default_value = liveup::kram::PAGES_DEVICE)]
    kram_device: String,
    /// Print JSON instead of key=value lines.
    #[arg(long, global = true)]
    json: bool,
    /// Go through iommufd (/dev/iommu and the device's VFIO cdev) instead
    /// of the legacy container: the DMA memory is mapped into an IOAS
    /// first and the device attached to a HWPT already filled from it, so
    /// a running device never sees an empty domain. The memory must be
    /// pinnable: anon, a tmpfs or memfd file, or a KRAM area of a region
    /// with struct pages (not a VM_IO/VM_PFNMAP mapping).
    #[arg(long, global = true)]
    iommufd: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone, Copy)]
struct WatchArgs {
    /// After setting up, clean the ring for this many seconds.
    #[arg(long, default_value = "0")]
    watch: f64,
    /// Frames in the first seconds of the watch are not in the steady
    /// account (a backlog queued while the receiver was off comes first).
    #[arg(long, default_value = "1")]
    settle: f64,
    /// Turn the receiver off before exiting.
    #[arg(long)]
    stop: bool,
    /// Before exiting, mark the device kept (VFIO_DEVICE_FEATURE_PCI_KEEP):
    /// closing it then neither resets nor disables it.
    #[arg(long)]
    keep: bool,
    /// After the report, hold the device and its DMA mapping this many
    /// seconds without cleaning the ring (a stopped VMM: the NIC goes on
    /// filling the ring), then exit.
    #[arg(long, default_value = "0")]
    hold: f64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Reset the NIC, build the ring in the DMA memory, start receiving.
    Init {
        /// IOVA of the DMA memory.
        #[arg(long, default_value = "0x40000000", value_parser = parse_size)]
        iova: u64,
        /// Descriptors in the ring (a multiple of 8).
        #[arg(long, default_value = "512")]
        ring: u32,
        /// Receive buffer size: 256, 512, 1024 or 2048.
        #[arg(long, default_value = "2048")]
        buf_size: u32,
        #[arg(long, value_enum, default_value = "legacy")]
        desc: DescKind,
        /// Build the ring but leave the receiver off.
        #[arg(long)]
        no_rx: bool,
        #[command(flatten)]
        w: WatchArgs,
    },
    /// Take over a running NIC: no reset, no ring register written; the DMA
    /// memory is mapped again at the IOVA its header records.
    Attach {
        /// Must match the IOVA in the header.
        #[arg(long, value_parser = parse_size)]
        iova: Option<u64>,
        #[command(flatten)]
        w: WatchArgs,
    },
    /// `attach`, then clean the ring for N seconds and account the frames.
    Watch {
        #[arg(long)]
        seconds: f64,
        #[arg(long, default_value = "1")]
        settle: f64,
        #[arg(long, value_parser = parse_size)]
        iova: Option<u64>,
        #[arg(long)]
        stop: bool,
    },
    /// Show (no argument) or set the device's keep flag through VFIO.
    Keep {
        #[arg(value_parser = ["on", "off"])]
        state: Option<String>,
        /// Set this raw value instead (the kernel takes 0 or 1 only:
        /// for testing that it refuses the rest).
        #[arg(long, conflicts_with = "state")]
        raw: Option<u32>,
    },
    /// The ring layout, the NIC's registers and the descriptors' DD bits
    /// (changes nothing, not even bus mastering).
    Status {
        #[arg(long, value_parser = parse_size)]
        iova: Option<u64>,
    },
}

fn kv_state(s: &RingState) {
    let b = |x: bool| u8::from(x);
    println!("link_up={}", b(s.link_up));
    println!("rx_enabled={}", b(s.rx_enabled));
    println!("bus_master={}", b(s.bus_master));
    println!("ring_registers_match={}", b(s.ring_registers_match));
    println!("rdba={:#x}", s.rdba);
    println!("rdlen={}", s.rdlen);
    println!("rdh={}", s.rdh);
    println!("rdt={}", s.rdt);
    println!("dd_set={}", s.dd_set);
    println!("owned_by_device={}", s.owned_by_device);
    println!("next_to_clean={}", s.next_to_clean);
    if let Some(p) = s.progress {
        println!("progress_frames={}", p.frames);
        println!("progress_last_seq={}", opt(p.last_seq));
    }
}

fn opt(v: Option<u64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "none".into())
}

fn kv_watch(w: &WatchReport) {
    println!("seconds={:.3}", w.seconds);
    println!("frames={}", w.frames);
    println!("other_frames={}", w.other_frames);
    println!("fragments={}", w.fragments);
    println!("rx_errors={}", w.rx_errors);
    println!("first_seq={}", opt(w.all.first_seq));
    println!("last_seq={}", opt(w.all.last_seq));
    println!("lost={}", w.all.lost_total);
    println!("lost_ranges={}", w.all.lost_text());
    println!("out_of_order={}", w.all.out_of_order);
    println!("steady_frames={}", w.steady.frames);
    println!("steady_first_seq={}", opt(w.steady.first_seq));
    println!("steady_last_seq={}", opt(w.steady.last_seq));
    println!("steady_lost={}", w.steady.lost_total);
    println!("steady_lost_ranges={}", w.steady.lost_text());
    println!("steady_out_of_order={}", w.steady.out_of_order);
    println!("hw_missed={}", w.hw_missed);
    println!("hw_good={}", w.hw_good);
    println!("watch_rdh={}", w.rdh);
    println!("watch_rdt={}", w.rdt);
}

fn report(json: bool, nic: &Nic, state: &RingState, watch: Option<&WatchReport>) -> Result<()> {
    let iommu = match nic.device().backend {
        Backend::Legacy => "legacy",
        Backend::Iommufd => "iommufd",
    };
    if json {
        let v = json!({
            "bdf": nic.bdf(),
            "group": nic.group(),
            "iommu": iommu,
            "hwpt": nic.device().hwpt(),
            "mem": nic.mem().source.to_string(),
            "header": nic.header,
            "state": state,
            "watch": watch,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let h = &nic.header;
        println!("bdf={}", nic.bdf());
        println!("group={}", nic.group());
        println!("iommu={iommu}");
        if let Some(h) = nic.device().hwpt() {
            println!("hwpt={h}");
        }
        println!("mem={}", nic.mem().source);
        println!("iova={:#x}", h.iova);
        println!("ring_len={}", h.ring_len);
        println!("desc={:?}", h.desc_kind);
        println!("buf_size={}", h.buf_size);
        println!("generation={}", h.generation);
        kv_state(state);
        if let Some(w) = watch {
            kv_watch(w);
        }
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let backend = if cli.iommufd {
        Backend::Iommufd
    } else {
        Backend::Legacy
    };
    if let Cmd::Keep { state, raw } = &cli.cmd {
        // No DMA memory and no NIC programming: only the flag.
        // SAFETY: no DMA range, nothing to keep mapped.
        let dev = unsafe { Device::open(&cli.bdf, backend, None) }
            .with_context(|| format!("open {}", cli.bdf))?;
        if let Some(s) = state {
            dev.set_keep(s == "on")
                .with_context(|| format!("set keep on {}", cli.bdf))?;
        }
        if let Some(v) = raw {
            dev.set_keep_value(*v)
                .with_context(|| format!("set keep value {v} on {}", cli.bdf))?;
        }
        let k = dev
            .keep()
            .with_context(|| format!("keep flag of {}", cli.bdf))?;
        println!("keep={}", u8::from(k));
        return Ok(());
    }
    let source = parse_source(&cli.mem, cli.mem_offset, &cli.kram_device);
    let mem =
        DmaMem::open(&source, cli.mem_size).with_context(|| format!("DMA memory {source}"))?;
    match cli.cmd {
        Cmd::Init {
            iova,
            ring,
            buf_size,
            desc,
            no_rx,
            w,
        } => {
            let opts = InitOptions {
                iova,
                ring_len: ring,
                buf_size,
                desc_kind: desc,
                rx: !no_rx,
                backend,
            };
            let mut nic =
                Nic::init(&cli.bdf, mem, &opts).with_context(|| format!("init {}", cli.bdf))?;
            finish(cli.json, &mut nic, None, w)
        }
        Cmd::Attach { iova, w } => {
            let (mut nic, found) = Nic::attach(&cli.bdf, mem, iova, true, backend)
                .with_context(|| format!("attach {}", cli.bdf))?;
            finish(cli.json, &mut nic, Some(found), w)
        }
        Cmd::Watch {
            seconds,
            settle,
            iova,
            stop,
        } => {
            let (mut nic, found) = Nic::attach(&cli.bdf, mem, iova, true, backend)
                .with_context(|| format!("attach {}", cli.bdf))?;
            let w = WatchArgs {
                watch: seconds,
                settle,
                stop,
                keep: false,
                hold: 0.0,
            };
            finish(cli.json, &mut nic, Some(found), w)
        }
        Cmd::Status { iova } => {
            let (nic, found) = Nic::attach(&cli.bdf, mem, iova, false, backend)
                .with_context(|| format!("attach {}", cli.bdf))?;
            report(cli.json, &nic, &found, None)
        }
        Cmd::Keep { .. } => unreachable!("handled above"),
    }
}

/// Watch if asked, stop if asked, report. The state reported is the one
/// found on attach (before anything was changed), or after init.
fn finish(json: bool, nic: &mut Nic, found: Option<RingState>, w: WatchArgs) -> Result<()> {
    let state = match found {
        Some(s) => s,
        None => nic.state()?,
    };
    let watch = (w.watch > 0.0).then(|| nic.watch(w.watch, w.settle));
    if w.stop {
        nic.stop();
    }
    if w.keep {
        nic.device()
            .set_keep(true)
            .with_context(|| format!("keep {}", nic.bdf()))?;
    }
    report(json, nic, &state, watch.as_ref())?;
    if w.hold > 0.0 {
        use std::io::Write;
        println!("holding={}", w.hold);
        std::io::stdout().flush()?;
        std::thread::sleep(std::time::Duration::from_secs_f64(w.hold));
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e1000e-dma: {e:#}");
            ExitCode::FAILURE
        }
    }
}
