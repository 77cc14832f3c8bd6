//! `liveup`: host kernel hot-upgrade and accelerated live migration for
//! KVM/QEMU hosts. This is the entry point; each subcommand lives in its
//! own module.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use liveup::units::parse_size;
use liveup::{host, journal, keep, kram, prezero, qmp, upgrade};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "liveup", version, about)]
struct Cli {
    /// More detail on stderr (-v: each step and its time; -vv: all).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Warnings and errors only on stderr (results still on stdout).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Report what this host offers for hot-upgrade and passthrough: KVM,
    /// the IOMMU, kexec_file_load, reserved regions KRAM can own.
    Host {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Read this file instead of /proc/iomem (for testing).
        #[arg(long, default_value = "/proc/iomem")]
        iomem: String,
    },
    /// Zero free hugetlb pages ahead of time (prezero module) and measure it.
    Prezero {
        #[command(subcommand)]
        cmd: prezero::PrezeroCmd,
    },
    /// Start and list VMs whose RAM lives in KRAM (what `upgrade` manages).
    Vm {
        #[arg(long, default_value = kram::DEFAULT_DEVICE)]
        device: String,
        #[command(subcommand)]
        cmd: VmCmd,
    },
    /// Hot-upgrade the host kernel under the managed VMs: preflight, save
    /// device state (cpr-reboot) into KRAM, kexec. `liveup restore` in the
    /// new kernel brings the VMs back.
    Upgrade {
        #[arg(long, default_value = kram::DEFAULT_DEVICE)]
        device: String,
        /// The new kernel image.
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// Appended to the current kernel command line.
        #[arg(long)]
        append: Option<String>,
        /// Replaces the current kernel command line.
        #[arg(long)]
        cmdline: Option<String>,
        /// Do everything except the kexec, then resume the VMs (a rehearsal).
        #[arg(long)]
        no_exec: bool,
        /// Kexec even though processes liveup does not manage use /dev/kvm
        /// (refused otherwise: their VMs would be lost).
        #[arg(long)]
        allow_unmanaged_kvm: bool,
        /// Machine-readable: once preflight passed, the plan as one JSON
        /// line on stdout (before anything is paused); on a failure, one
        /// JSON line with the outcome, exit code and error.
        #[arg(long)]
        json: bool,
        /// A passthrough device (bound to vfio-pci, kept) whose DMA stays
        /// translated through the kexec: its VT-d tables are frozen into
        /// KRAM once the VMs are stopped and the next kernel adopts them
        /// (pci_keep= and intel_iommu_adopt= are added to its command line).
        #[arg(long, requires = "iommu_preserve")]
        keep_device: Option<String>,
        /// iommu_preserve.ko, for --keep-device.
        #[arg(long)]
        iommu_preserve: Option<PathBuf>,
        /// A KRAM area the kept device does DMA into (repeatable); by
        /// default the RAM areas of the VMs that pass it through
        /// (vfio-pci,host=BDF). Its pages are all the device may reach
        /// after the kexec.
        #[arg(long = "keep-area", requires = "keep_device")]
        keep_areas: Vec<String>,
    },
    /// In the new kernel: adopt KRAM and relaunch the VMs `upgrade` saved.
    Restore {
        #[arg(long, default_value = kram::DEFAULT_DEVICE)]
        device: String,
        /// Load this kram.ko first, timing it; `auto`: the running
        /// kernel's, under /lib/modules/$(uname -r) (after an upgrade into
        /// another kernel release, the old one's is refused).
        #[arg(long)]
        kram_module: Option<PathBuf>,
        /// Its parameters (default: the region reserved on /proc/cmdline).
        #[arg(long, env = "LIVEUP_KRAM_PARAMS")]
        kram_params: Option<String>,
        /// Finish a restore that failed (VMs already running are skipped). A
        /// state restored completely once, or left by an upgrade aborted
        /// before kexec, is never loaded again.
        #[arg(long)]
        retry: bool,
        #[arg(long)]
        json: bool,
    },
    /// Send one QMP command to a QEMU and print the reply (JSON).
    Qmp {
        /// The QMP Unix socket.
        socket: PathBuf,
        /// Command name, e.g. query-status.
        command: String,
        /// Arguments as a JSON object.
        #[arg(default_value = "{}")]
        args: String,
        /// After the command, wait until the migration it started completes.
        #[arg(long)]
        wait_migration: bool,
    },
    /// Live-migrate a VM: QEMU multifd or liveup's compressing relay (QAT
    /// or software codecs), chosen from measurements.
    Migrate {
        #[command(subcommand)]
        cmd: liveup::migrate::cli::MigrateCmd,
    },
    /// libvirt-managed domains through an upgrade: libvirt's qemu hook,
    /// what an upgrade would keep, the restore after the kexec.
    Libvirt {
        #[command(subcommand)]
        cmd: liveup::libvirt::cli::LibvirtCmd,
    },
    /// Manage the KRAM region (/dev/kram): status, areas, format.
    Kram {
        /// The KRAM device.
        #[arg(long, default_value = kram::DEFAULT_DEVICE)]
        device: String,
        #[command(subcommand)]
        cmd: kram::cli::KramCmd,
    },
    /// A kept device's preserved VT-d translation (iommu_preserve.ko,
    /// /dev/iommu-preserve): status, and each operation by hand.
    Iommu {
        /// iommu_preserve.ko: loaded for this command if the module is not
        /// loaded, and unloaded after it.
        #[arg(long)]
        module: Option<PathBuf>,
        #[command(subcommand)]
        cmd: keep::cli::IommuCmd,
    },
}

#[derive(Subcommand)]
enum VmCmd {
    /// Launch QEMU with its RAM in KRAM area vm-NAME and record how.
    Start {
        #[arg(long)]
        name: String,
        /// Guest RAM, e.g. 256M.
        #[arg(long)]
        mem: String,
        /// Run QEMU chrooted in this directory.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        #[arg(long, default_value = "qemu-system-x86_64")]
        qemu: String,
        /// Give the VM a guest agent port (virtio-serial,
        /// org.qemu.guest_agent.0, socket /run/liveup/NAME.qga): `restore`
        /// sets the guest's wall clock through it after an upgrade.
        #[arg(long)]
        guest_agent: bool,
        /// Further QEMU arguments (after --).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The managed VMs.
    List,
    /// Quit a managed VM's QEMU and stop managing it.
    Stop {
        name: String,
        /// Also delete its KRAM area (its RAM): the VM cannot come back.
        #[arg(long)]
        delete_area: bool,
    },
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Host { json, iomem } => {
            let text =
                std::fs::read_to_string(&iomem).with_context(|| format!("cannot read {iomem}"))?;
            let report = host::probe(&text).with_context(|| format!("cannot parse {iomem}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(())
        }
        Cmd::Kram { device, cmd } => kram::cli::run(&device, cmd),
        Cmd::Iommu { module, cmd } => keep::cli::run(module, cmd),
        Cmd::Libvirt { cmd } => liveup::libvirt::cli::run(cmd),
        Cmd::Qmp {
            socket,
            command,
            args,
            wait_migration,
        } => {
            let args: serde_json::Value = serde_json::from_str(&args)
                .with_context(|| format!("arguments are not JSON: {args}"))?;
            let mut q = qmp::Qmp::connect(&socket, std::time::Duration::from_secs(10))?;
            let r = q.execute(&command, args)?;
            if wait_migration {
                q.wait_migration(&command, std::time::Duration::from_secs(3600))?;
            }
            println!("{r}");
            Ok(())
        }
        Cmd::Migrate { cmd } => Ok(liveup::migrate::cli::run(cmd)?),
        Cmd::Prezero { cmd } => prezero::run(cmd),
        Cmd::Vm { device, cmd } => match cmd {
            VmCmd::Start {
                name,
                mem,
                root,
                qemu,
                guest_agent,
                mut args,
            } => {
                if guest_agent {
                    args.extend(liveup::qga::agent_args(&name));
                }
                let k = kram::Kram::open(&device)?;
                let vm = upgrade::vm_start(&k, &name, parse_size(&mem)?, &root, &qemu, &args)?;
                println!(
                    "started VM {} with its RAM in KRAM area {}",
                    vm.name, vm.area
                );
                Ok(())
            }
            VmCmd::Stop { name, delete_area } => {
                let k = if delete_area {
                    Some(kram::Kram::open(&device)?)
                } else {
                    None
                };
                upgrade::vm_stop(k.as_ref(), &name, delete_area)?;
                println!("stopped VM {name}");
                Ok(())
            }
            VmCmd::List => {
                for vm in upgrade::managed_vms()? {
                    println!("{} {} area={}", vm.name, upgrade::vm_status(&vm), vm.area);
                }
                Ok(())
            }
        },
        Cmd::Upgrade {
            device,
            kernel,
            initrd,
            append,
            cmdline,
            no_exec,
            allow_unmanaged_kvm,
            json,
            keep_device,
            iommu_preserve,
            keep_areas,
        } => {
            let k = kram::Kram::open(&device)?;
            let r = upgrade::upgrade(
                &k,
                &upgrade::UpgradeArgs {
                    kernel: &kernel,
                    initrd: initrd.as_deref(),
                    append: append.as_deref(),
                    cmdline: cmdline.as_deref(),
                    no_exec,
                    allow_unmanaged_kvm,
                    json,
                    keep: keep_device.as_deref().zip(iommu_preserve.as_deref()),
                    keep_areas: &keep_areas,
                },
            );
            // Returned: no kexec (a rehearsal, or a failure, and what it left).
            if let Err(e) = &r {
                journal::log(journal::ERR, &format!("upgrade failed: {e:#}"));
                if json {
                    println!("{}", upgrade::failure_json(e));
                }
            }
            r
        }
        Cmd::Restore {
            device,
            kram_module,
            kram_params,
            retry,
            json,
        } => {
            let kram_module = match kram_module {
                Some(m) if m.as_os_str() == "auto" => Some(liveup::kmod::find_running("kram")?),
                m => m,
            };
            let args = upgrade::RestoreArgs {
                kram_module: kram_module.as_deref(),
                kram_params: kram_params.as_deref(),
                retry,
            };
            // The outcome, one line in the journal (or the kernel log).
            let r = match upgrade::restore(&device, &args) {
                Ok(r) => r,
                Err(e) => {
                    journal::log(journal::ERR, &format!("restore failed: {e:#}"));
                    return Err(e);
                }
            };
            match &r {
                Some(r) => journal::log(
                    journal::NOTICE,
                    &format!(
                        "restore: {} VM(s) running again ({}), downtime {:.1} ms",
                        r.vms.len(),
                        r.vms.join(", "),
                        r.downtime_ms
                    ),
                ),
                None => journal::log(journal::INFO, "restore: nothing to restore"),
            };
            match r {
                Some(r) if json => println!("{}", serde_json::to_string_pretty(&r)?),
                Some(r) => print!("{r}"),
                None => println!("liveup: nothing to restore"),
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`liveup vm list | grep -q`), like other CLIs.
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    liveup::logging::init(cli.verbose, cli.quiet);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("liveup: {e:#}");
            if let Some(m) = e.downcast_ref::<liveup::migrate::cli::CliError>() {
                ExitCode::from(m.exit_code())
            } else if let Some(u) = e.downcast_ref::<upgrade::UpgradeError>() {
                ExitCode::from(u.exit_code())
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_ms_garbage_is_a_usage_error() {
        let send = |v: &str| {
            Cli::try_parse_from([
                "liveup",
                "migrate",
                "send",
                "--qmp",
                "q",
                "--to",
                "d:1",
                "--dirty-ms",
                v,
            ])
        };
        assert!(send("500").is_ok());
        for bad in ["abc", "-5", "", "1.5", "99999999999999999999999"] {
            let e = send(bad)
                .err()
                .unwrap_or_else(|| panic!("--dirty-ms {bad:?} accepted"));
            assert_eq!(e.exit_code(), 2, "--dirty-ms {bad:?}");
        }
    }

    #[test]
    fn verbose_and_quiet_go_anywhere_but_not_together() {
        let p = |a: &[&str]| Cli::try_parse_from(a.iter().copied());
        let c = p(&["liveup", "-vv", "vm", "list"]).unwrap();
        assert_eq!((c.verbose, c.quiet), (2, false));
        let c = p(&["liveup", "vm", "list", "-q"]).unwrap();
        assert_eq!((c.verbose, c.quiet), (0, true));
        let e = p(&["liveup", "-q", "-v", "vm", "list"]).err().unwrap();
        assert_eq!(e.exit_code(), 2);
    }

    /// The shipped units' command lines, with /etc/default/liveup's
    /// values substituted as systemd does (`${VAR}` one word, `$VAR` split
    /// at whitespace), are command lines this liveup accepts: a unit and
    /// the CLI cannot drift apart unnoticed.
    #[test]
    fn shipped_units_run_commands_this_liveup_accepts() {
        let default = include_str!("../systemd/liveup.default");
        let env: std::collections::HashMap<&str, String> = default
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"').to_string()))
            .collect();
        let units = [
            include_str!("../systemd/liveup-restore.service"),
            include_str!("../systemd/liveup-prezero.service"),
            include_str!("../systemd/liveup-migrate-listen.service"),
        ];
        let mut n = 0;
        for line in units.iter().flat_map(|u| u.lines()) {
            let Some(cmd) = line.strip_prefix("ExecStart=") else {
                continue;
            };
            let mut words: Vec<String> = Vec::new();
            for w in cmd.split_whitespace() {
                if let Some(k) = w.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
                    words.push(
                        env.get(k)
                            .unwrap_or_else(|| panic!("{line}: {k} unset"))
                            .clone(),
                    );
                } else if let Some(k) = w.strip_prefix('$') {
                    let v = env.get(k).unwrap_or_else(|| panic!("{line}: {k} unset"));
                    words.extend(v.split_whitespace().map(String::from));
                } else {
                    words.push(w.to_string());
                }
            }
            assert_eq!(words[0], "/usr/bin/liveup", "{line}");
            if let Err(e) = Cli::try_parse_from(&words) {
                panic!("{line}: {e}");
            }
            n += 1;
        }
        assert_eq!(n, 6, "ExecStart lines read");
    }
}
