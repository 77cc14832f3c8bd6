//! Helper for the KRAM selftests that run in the rig guest
//! (selftests/kram/*.sh). Each subcommand checks one behaviour of /dev/kram
//! and exits non-zero, with a message, when it does not hold.

use anyhow::Result;
use clap::{Parser, Subcommand};
use liveup::kram::{self, Kram};

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value = kram::DEFAULT_DEVICE)]
    device: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a seeded pattern over an area through a shared mapping.
    Fill { area: String, seed: u64 },
    /// Check the pattern `fill` wrote.
    Verify { area: String, seed: u64 },
    /// Print an area's id, offset and size (to compare across kexec).
    Show { area: String },
    /// The checksum tools/guest/tinyvm.c computes over its RAM (FNV-1a over
    /// 32-bit little-endian words), over bytes START..END (hex) of an area
    /// that is a VM's RAM; printed in hex as the VM prints it.
    Sum {
        area: String,
        start: String,
        end: String,
    },
    /// Threads allocating and freeing pages of one area at once; a page
    /// handed out twice while held fails the test.
    Stress {
        area: String,
        threads: usize,
        iters: usize,
    },
    /// Random and malformed ioctls; afterwards every pre-existing area and
    /// the page counts must be as they were.
    Fuzz { iters: usize, seed: u64 },
    /// Without CAP_SYS_ADMIN, and as an unprivileged user, open must fail.
    Unpriv,
    /// Timings: alloc+free through the ioctl, and populating a mapping of
    /// an area against anonymous memory of the same size.
    Bench {
        area: String,
        pool: String,
        iters: usize,
    },
    /// Allocate one page for an area; print its offset in the region.
    Alloc { area: String },
    /// Free a page of an area by its offset in the region.
    Free { area: String, offset: String },
    /// Reach an area's mapping through get_user_pages, as VFIO and iommufd
    /// pin guest RAM: process_vm_writev/readv on this process's own mapping
    /// of it (GUP refuses VM_IO/VM_PFNMAP mappings with EFAULT). Prints the
    /// mapping's VmFlags.
    Pin { area: String, seed: u64 },
    /// mmap garbage: a private mapping, metadata (offset 0, page 1), a
    /// range running past the area's end; each must fail with EINVAL.
    BadMaps { area: String },
    /// An area still mapped is neither deleted nor formatted (EBUSY), also
    /// after a partial munmap and while only a forked child's copy is
    /// left; it is deleted once the last mapping goes.
    Busy { area: String },
    /// Map an area 2 MiB-aligned (as QEMU maps guest RAM), write a word
    /// into every page, and print the page faults and the time that took
    /// ("faults=N pages=M us=T"). --misalign maps it 4 KiB past a 2 MiB
    /// boundary instead, where no 2 MiB entry can map it.
    Faults {
        area: String,
        #[arg(long)]
        misalign: bool,
    },
    /// Check that every byte of an area is zero (a new area must not show
    /// what a deleted one left in its pages).
    Zero { area: String },
    /// Race a create: fill an area of SIZE MiB, delete it, create it again
    /// (same run) while a second opener looks it up and maps its last page
    /// as fast as it can. Every mapping the other opener gets must read
    /// zero, and it must have been refused (EBUSY) at least once while the
    /// new area was being zeroed (else the race did not happen).
    ZeroRace { area: String, size_mib: u64 },
    /// XOR one byte of an area (offset and mask in hex): corrupts on purpose.
    Poke {
        area: String,
        offset: String,
        xor: String,
    },
    /// Change one field of the iommu-preserve record in page 0 of an area
    /// and write it back with a valid checksum: a record that is sound in
    /// itself but does not match the machine (`root` or `devfn`), or one
    /// whose reserved byte 23 is set (`reserved0`); values hex.
    RecordEdit {
        area: String,
        field: String,
        value: String,
    },
    /// The area's own nodes, after `fill` with SEED: offset 0 is its first
    /// page, nothing past it maps, no ioctl, delete and format EBUSY while
    /// a node is open; a node of an id without an area is ENOENT.
    Node { area: String, seed: u64 },
    /// Print the 64-bit word at a physical address outside System RAM (hex,
    /// 8-byte aligned), read through /dev/mem: a VT-d table entry in KRAM.
    PeekPhys { addr: String },
    /// Write a 64-bit word (hex) there: corrupts a table on purpose.
    PokePhys { addr: String, value: String },
    /// /dev/iommu-preserve's FREEZE with a raw, unchecked argument: the
    /// device, a span count (which may lie) and START+LEN spans (hex);
    /// prints errno=N.
    FreezeRaw {
        device: String,
        nspans: u32,
        spans: Vec<String>,
    },
}

mod data;
mod edits;
mod iopr_raw;
mod maps;
mod node;
mod stress;

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Fill { area, seed } => data::fill(&Kram::open(&cli.device)?, &area, seed, false),
        Cmd::Verify { area, seed } => data::fill(&Kram::open(&cli.device)?, &area, seed, true),
        Cmd::Show { area } => {
            let a = Kram::open(&cli.device)?.lookup(&area)?;
            println!("{} {} {:#x} {}", a.id, a.name, a.offset, a.npages);
            Ok(())
        }
        Cmd::Sum { area, start, end } => edits::sum(&Kram::open(&cli.device)?, &area, &start, &end),
        Cmd::Stress {
            area,
            threads,
            iters,
        } => stress::stress(&cli.device, &area, threads, iters),
        Cmd::Fuzz { iters, seed } => stress::fuzz(&cli.device, iters, seed),
        Cmd::Unpriv => maps::unpriv(&cli.device),
        Cmd::Bench { area, pool, iters } => {
            data::bench(&Kram::open(&cli.device)?, &area, &pool, iters)
        }
        Cmd::Alloc { area } => {
            let k = Kram::open(&cli.device)?;
            println!("{:#x}", k.alloc(k.lookup(&area)?.id)?);
            Ok(())
        }
        Cmd::Pin { area, seed } => maps::pin(&Kram::open(&cli.device)?, &area, seed),
        Cmd::BadMaps { area } => maps::bad_maps(&cli.device, &area),
        Cmd::Busy { area } => maps::busy(&cli.device, &area),
        Cmd::Faults { area, misalign } => maps::faults(&Kram::open(&cli.device)?, &area, misalign),
        Cmd::Zero { area } => edits::zero(&Kram::open(&cli.device)?, &area),
        Cmd::ZeroRace { area, size_mib } => maps::zero_race(&cli.device, &area, size_mib),
        Cmd::RecordEdit { area, field, value } => {
            edits::record_edit(&Kram::open(&cli.device)?, &area, &field, &value)
        }
        Cmd::Node { area, seed } => node::node(&cli.device, &area, seed),
        Cmd::PeekPhys { addr } => edits::peek_phys(&addr),
        Cmd::PokePhys { addr, value } => edits::poke_phys(&addr, &value),
        Cmd::FreezeRaw {
            device,
            nspans,
            spans,
        } => iopr_raw::freeze_raw(&device, nspans, &spans),
        Cmd::Poke { area, offset, xor } => {
            edits::poke(&Kram::open(&cli.device)?, &area, &offset, &xor)
        }
        Cmd::Free { area, offset } => edits::free(&Kram::open(&cli.device)?, &area, &offset),
    }
}
