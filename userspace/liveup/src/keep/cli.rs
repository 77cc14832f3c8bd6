//! `liveup iommu`: each iommu_preserve operation by hand.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use super::{Bdf, Iopr};

#[derive(Subcommand)]
pub enum IommuCmd {
    /// Whether a record exists and where its device stands: none, frozen
    /// (in this kernel), adopted, blocked, attached (anew) or refused.
    Status,
    /// Copy a kept device's tables into KRAM and switch its IOMMU to them
    /// (its VMM stopped); the next kernel adopts them.
    Freeze {
        /// The device: ssss:bb:dd.f or bb:dd.f.
        device: String,
        /// A KRAM area the device does DMA into (repeatable, at least
        /// one): a page its tables map outside these refuses the freeze.
        #[arg(long = "area", required = true)]
        areas: Vec<String>,
    },
    /// In the kernel that froze: back to its own root table, tables freed.
    Thaw,
    /// Free the tables once the device is attached anew.
    Release,
    /// Drop a record (refused or not) with its tables; refused while an
    /// IOMMU reads them.
    Discard,
}

/// Open the device (loading `module` for this command if iommu_preserve
/// is not loaded) and run `cmd`.
pub fn run(module: Option<PathBuf>, cmd: IommuCmd) -> Result<()> {
    let d = Iopr::open(module.as_deref())?;
    match cmd {
        IommuCmd::Status => println!("{}", d.status()?),
        IommuCmd::Freeze { device, areas } => {
            let kram = crate::kram::Kram::open(crate::kram::DEFAULT_DEVICE)?;
            d.freeze(Bdf::parse(&device)?, &super::spans_of(&kram, &areas)?)?
        }
        IommuCmd::Thaw => d.thaw()?,
        IommuCmd::Release => d.release()?,
        IommuCmd::Discard => d.discard()?,
    }
    Ok(())
}
