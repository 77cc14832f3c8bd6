//! `liveup kram`: the subcommands that load the KRAM module and manage
//! its region and areas.

use super::{load_module, Kram, PAGE_SIZE};
use crate::units::parse_size;
use anyhow::{bail, Result};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum KramCmd {
    /// Load kram.ko for the region reserved on the kernel command line
    /// (memmap=SIZE$ADDR or reserve_mem=SIZE:ALIGN:kram).
    Load {
        /// Path of kram.ko; by default the running kernel's, found under
        /// /lib/modules/$(uname -r). A module built for another kernel is
        /// refused.
        module: Option<PathBuf>,
        /// Module parameters instead of the ones found on /proc/cmdline.
        #[arg(long)]
        params: Option<String>,
    },
    /// Region, page counts and metadata generation.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List areas.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create an area with a fixed run of pages.
    Create {
        name: String,
        /// Size of the fixed run, e.g. 64M, 1G, 4096 (bytes, rounded up to pages).
        #[arg(long)]
        size: String,
    },
    /// Delete an area and free its pages.
    Delete { name: String },
    /// Erase the region and write empty metadata. Everything in it is lost.
    Format {
        /// Required: confirms that the region's contents may be destroyed.
        #[arg(long)]
        yes: bool,
    },
}

/// Run one `liveup kram` subcommand on the region behind `device`.
pub fn run(device: &str, cmd: KramCmd) -> Result<()> {
    let k = || Kram::open(device);
    match cmd {
        KramCmd::Status { json } => {
            let s = k()?.status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("region      {:#x} + {} MiB", s.base, s.size >> 20);
                if s.state != 0 {
                    println!("state       REFUSED (errno {}): see dmesg; `liveup kram format --yes` erases it", s.error);
                } else {
                    println!("state       ready, generation {}", s.generation);
                    println!(
                        "pages       {} total, {} metadata, {} used, {} free",
                        s.pages, s.meta_pages, s.used_pages, s.free_pages
                    );
                    println!("areas       {} of {}", s.areas, s.max_areas);
                }
            }
        }
        KramCmd::List { json } => {
            let areas = k()?.areas()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&areas)?);
            } else {
                println!("{:>3}  {:<31} {:>10} {:>14}", "id", "name", "MiB", "offset");
                for a in areas {
                    println!(
                        "{:>3}  {:<31} {:>10} {:>#14x}",
                        a.id,
                        a.name,
                        (a.npages * PAGE_SIZE) >> 20,
                        a.offset
                    );
                }
            }
        }
        KramCmd::Create { name, size } => {
            let bytes = parse_size(&size)?;
            let a = k()?.create(&name, bytes.div_ceil(PAGE_SIZE))?;
            println!(
                "created area {} (id {}): {} pages at offset {:#x}",
                a.name, a.id, a.npages, a.offset
            );
        }
        KramCmd::Delete { name } => {
            k()?.delete(&name)?;
            println!("deleted area {name}");
        }
        KramCmd::Load { module, params } => {
            let module = match module {
                Some(m) => m,
                None => crate::kmod::find_running("kram")?,
            };
            let p = load_module(&module, params.as_deref())?;
            let how = if p.is_empty() {
                "reserve_mem=...:kram"
            } else {
                &p
            };
            println!("kram loaded ({how})");
        }
        KramCmd::Format { yes } => {
            if !yes {
                bail!("format erases every area in the region: add --yes to confirm");
            }
            k()?.format()?;
            println!("region formatted");
        }
    }
    Ok(())
}
