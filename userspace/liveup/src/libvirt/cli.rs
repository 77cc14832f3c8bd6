//! `liveup libvirt`: the hook libvirt runs, what an upgrade would keep,
//! and the restore after the kexec.

use super::hook::{ram_dir_of, Hook};
use super::keep::{preflight, proc_maps, resume_all, Markers};
use super::virsh::{Libvirt, Virsh};
use crate::kram::{Kram, DEFAULT_DEVICE};
use anyhow::{bail, Result};
use clap::Subcommand;
use std::io::Read;

#[derive(Subcommand)]
pub enum LibvirtCmd {
    /// libvirt's qemu hook: install as /etc/libvirt/hooks/qemu.d/liveup,
    /// a script running `exec liveup libvirt hook "$@"` (the domain XML
    /// on standard input; for restore and migrate the XML to use on
    /// standard output).
    Hook {
        name: String,
        op: String,
        subop: String,
        extra: Option<String>,
    },
    /// Which running domains `liveup upgrade` would keep, and why not the
    /// others (exit 1 if any cannot be kept).
    Check,
    /// After a kexec (or an upgrade that did not happen): libvirt restores
    /// the domains `liveup upgrade` saved, from their managed saves, onto
    /// their RAM kept in KRAM.
    Restore,
}

pub fn run(cmd: LibvirtCmd) -> Result<()> {
    match cmd {
        LibvirtCmd::Hook { op, subop, .. } => {
            let mut xml = String::new();
            std::io::stdin().read_to_string(&mut xml)?;
            let kram = Kram::open(DEFAULT_DEVICE).ok();
            let conf = std::fs::read_to_string("/etc/libvirt/qemu.conf").unwrap_or_default();
            let hook = Hook {
                kram: kram.as_ref(),
                markers: &Markers::system(),
                ram_dir: ram_dir_of(&conf),
            };
            if let Some(out) = hook.run(&op, &subop, &xml)? {
                print!("{out}");
            }
            Ok(())
        }
        LibvirtCmd::Check => {
            let kram = Kram::open(DEFAULT_DEVICE)?;
            let doms = preflight(&Virsh::default(), &kram.areas()?, &proc_maps)?;
            for d in &doms {
                println!("{} keepable area={}", d.name, d.area);
            }
            Ok(())
        }
        LibvirtCmd::Restore => {
            let t_start = crate::upgrade::rdtsc();
            let lv = Virsh::default();
            let done = resume_all(&lv, &Markers::system())?;
            let now = crate::upgrade::rdtsc();
            let mut failed = 0;
            for (m, r) in &done {
                let ms_of = |a: u64, b: u64| b.wrapping_sub(a) as f64 * 1e3 / m.tsc_hz.max(1.0);
                let ms = ms_of(m.t_stop, now);
                // where it went: the save, the kexec and the boot to this
                // restore, the restore (every domain's, side by side)
                let phases = if m.t_saved > m.t_stop && t_start > m.t_saved {
                    format!(
                        " (save {:.1} ms, kexec and boot to the restore {:.1} ms, restore {:.1} ms)",
                        ms_of(m.t_stop, m.t_saved),
                        ms_of(m.t_saved, t_start),
                        ms_of(t_start, now)
                    )
                } else {
                    String::new()
                };
                match r {
                    Ok(()) => {
                        println!(
                            "libvirt domain {}: running again, downtime {ms:.1} ms{phases}",
                            m.name
                        );
                        // its wall clock is behind by the pause
                        match lv.set_time(&m.name) {
                            Ok(()) => println!("  guest clock {}: set through its agent", m.name),
                            Err(e) => println!(
                                "  guest clock {}: not set ({e}): behind by the pause until the guest syncs (NTP)",
                                m.name
                            ),
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("liveup: {e:#}");
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} of {} libvirt domain(s) not restored", done.len());
            }
            Ok(())
        }
    }
}
