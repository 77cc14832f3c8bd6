//! `liveup`: host kernel hot-upgrade and accelerated live migration for
//! KVM/QEMU hosts. This is the entry point; each subcommand lives in its
//! own module.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod host;
mod iomem;

#[derive(Parser)]
#[command(name = "liveup", version, about)]
struct Cli {
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
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("liveup: {e:#}");
            ExitCode::FAILURE
        }
    }
}
