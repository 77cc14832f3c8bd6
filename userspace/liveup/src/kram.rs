//! Client of `/dev/kram` (ABI: kram/include/uapi/kram.h). The `liveup
//! kram` subcommands built on it are in kram/cli.rs.

pub mod cli;

use memmap2::{MmapMut, MmapOptions};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

pub use kh_uapi::kram::{
    Area as RawArea, Format as RawFormat, Page as RawPage, Status, FORMAT_CONFIRM, NAME_LEN,
};
pub const PAGE_SIZE: u64 = 4096;
pub const DEFAULT_DEVICE: &str = "/dev/kram";
/// The same region and ioctls; mappings are ordinary pages GUP can pin
/// (for memory a device DMAs to through VFIO or iommufd).
pub const PAGES_DEVICE: &str = "/dev/kram-pages";

/// The node of area `id` beside `device` (/dev/kram or /dev/kram-pages,
/// mapped the same way): its files reach that area only, at offsets from
/// the area's first page (kram/area_node.rs).
pub fn area_node(device: &str, id: u32) -> String {
    format!("{device}-area/{id}")
}

/// An area as userspace sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Area {
    pub id: u32,
    pub name: String,
    pub npages: u64,
    /// Offset of the fixed run from the region start: the mmap offset.
    pub offset: u64,
}

pub use kh_uapi::kram::IOC_MAGIC;
/// One function per ioctl, numbered by kh-uapi (the one definition).
pub mod ioc {
    use super::*;
    use kh_uapi::kram as k;
    nix::ioctl_read_bad!(status, k::IOC_STATUS, Status);
    nix::ioctl_write_ptr_bad!(format, k::IOC_FORMAT, RawFormat);
    nix::ioctl_readwrite_bad!(create, k::IOC_CREATE, RawArea);
    nix::ioctl_write_ptr_bad!(delete, k::IOC_DELETE, RawArea);
    nix::ioctl_readwrite_bad!(lookup, k::IOC_LOOKUP, RawArea);
    nix::ioctl_readwrite_bad!(area_at, k::IOC_AREA_AT, RawArea);
    nix::ioctl_readwrite_bad!(alloc, k::IOC_ALLOC, RawPage);
    nix::ioctl_write_ptr_bad!(free, k::IOC_FREE, RawPage);
}

#[derive(Debug, thiserror::Error)]
pub enum KramError {
    #[error("cannot open {path}: {source} (is the kram module loaded, and are you root?)")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("area name must be 1-31 characters of [A-Za-z0-9._-]: {0:?}")]
    Name(String),
    #[error("{op}: {errno}{hint}")]
    Ioctl {
        op: &'static str,
        errno: nix::Error,
        hint: &'static str,
    },
    #[error("area {name} exists with {have} pages, not {want}")]
    Size { name: String, have: u64, want: u64 },
    #[error("no KRAM region: {0}")]
    NoRegion(&'static str),
    #[error(transparent)]
    Module(#[from] crate::kmod::KmodError),
    #[error("mmap of area {name}: {source}")]
    Map {
        name: String,
        source: std::io::Error,
    },
}

impl KramError {
    /// The area (or, for a format, some area) is still mapped.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            KramError::Ioctl {
                errno: nix::Error::EBUSY,
                ..
            }
        )
    }

    /// The area (or page) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            KramError::Ioctl {
                errno: nix::Error::ENOENT,
                ..
            }
        )
    }
}

fn hint(e: nix::Error) -> &'static str {
    match e {
        nix::Error::EUCLEAN => {
            " (KRAM metadata refused: see dmesg; `liveup kram format --yes` erases the region)"
        }
        nix::Error::ENOENT => " (no such area)",
        nix::Error::EEXIST => " (an area of that name exists)",
        nix::Error::ENOSPC => " (not enough free pages or area slots)",
        nix::Error::EBUSY => {
            " (in use: mapped by a VM or process, or holding tables an IOMMU translates through; see dmesg)"
        }
        _ => "",
    }
}

fn check(op: &'static str, r: nix::Result<i32>) -> Result<(), KramError> {
    r.map(|_| ()).map_err(|errno| KramError::Ioctl {
        op,
        errno,
        hint: hint(errno),
    })
}

pub fn raw_area(name: &str) -> Result<RawArea, KramError> {
    let ok = !name.is_empty()
        && name.len() < NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(KramError::Name(name.into()));
    }
    let mut a = RawArea {
        name: [0; NAME_LEN],
        npages: 0,
        offset: 0,
        id: 0,
        flags: 0,
    };
    a.name[..name.len()].copy_from_slice(name.as_bytes());
    Ok(a)
}

impl From<RawArea> for Area {
    fn from(a: RawArea) -> Self {
        let n = a.name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        Area {
            id: a.id,
            name: String::from_utf8_lossy(&a.name[..n]).into_owned(),
            npages: a.npages,
            offset: a.offset,
        }
    }
}

/// An open `/dev/kram`.
pub struct Kram {
    file: File,
}

impl Kram {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, KramError> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| KramError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Kram { file })
    }

    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    pub fn status(&self) -> Result<Status, KramError> {
        let mut s = Status::default();
        // SAFETY: `s` is a valid `struct kram_status` for the kernel to fill.
        check("status", unsafe { ioc::status(self.fd(), &mut s) })?;
        Ok(s)
    }

    pub fn format(&self) -> Result<(), KramError> {
        let f = RawFormat {
            confirm: FORMAT_CONFIRM,
        };
        // SAFETY: `f` is a valid `struct kram_format`.
        check("format", unsafe { ioc::format(self.fd(), &f) })
    }

    pub fn create(&self, name: &str, npages: u64) -> Result<Area, KramError> {
        let mut a = raw_area(name)?;
        a.npages = npages;
        // SAFETY: `a` is a valid `struct kram_area`.
        check("create", unsafe { ioc::create(self.fd(), &mut a) })?;
        Ok(a.into())
    }

    /// Area `name`, created with `npages` pages if it does not exist; one of
    /// another size is an error.
    pub fn ensure(&self, name: &str, npages: u64) -> Result<Area, KramError> {
        match self.lookup(name) {
            Ok(a) if a.npages == npages => Ok(a),
            Ok(a) => Err(KramError::Size {
                name: name.into(),
                have: a.npages,
                want: npages,
            }),
            Err(e) if e.is_not_found() => self.create(name, npages),
            Err(e) => Err(e),
        }
    }

    pub fn delete(&self, name: &str) -> Result<(), KramError> {
        let a = raw_area(name)?;
        // SAFETY: `a` is a valid `struct kram_area`.
        check("delete", unsafe { ioc::delete(self.fd(), &a) })
    }

    /// [`Kram::delete`], tried again while the module refuses it as busy
    /// (a QEMU that quit may not have unmapped the area yet), for at most
    /// `within`.
    pub fn delete_once_unmapped(
        &self,
        name: &str,
        within: std::time::Duration,
    ) -> Result<(), KramError> {
        let t = std::time::Instant::now();
        loop {
            match self.delete(name) {
                Err(e) if e.is_busy() && t.elapsed() < within => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                r => return r,
            }
        }
    }

    pub fn lookup(&self, name: &str) -> Result<Area, KramError> {
        let mut a = raw_area(name)?;
        // SAFETY: `a` is a valid `struct kram_area`.
        check("lookup", unsafe { ioc::lookup(self.fd(), &mut a) })?;
        Ok(a.into())
    }

    pub fn areas(&self) -> Result<Vec<Area>, KramError> {
        let max = self.status()?.max_areas;
        let mut out = Vec::new();
        for id in 1..=max {
            let mut a = RawArea {
                name: [0; NAME_LEN],
                npages: 0,
                offset: 0,
                id,
                flags: 0,
            };
            // SAFETY: `a` is a valid `struct kram_area`.
            match unsafe { ioc::area_at(self.fd(), &mut a) } {
                Ok(_) => out.push(a.into()),
                Err(nix::Error::ENOENT) => {}
                Err(errno) => {
                    return Err(KramError::Ioctl {
                        op: "area_at",
                        errno,
                        hint: hint(errno),
                    })
                }
            }
        }
        Ok(out)
    }

    /// Allocate a page for area `id`; returns its offset in the region.
    pub fn alloc(&self, id: u32) -> Result<u64, KramError> {
        let mut p = RawPage {
            id,
            ..Default::default()
        };
        // SAFETY: `p` is a valid `struct kram_page`.
        check("alloc", unsafe { ioc::alloc(self.fd(), &mut p) })?;
        Ok(p.offset)
    }

    pub fn free(&self, id: u32, offset: u64) -> Result<(), KramError> {
        let p = RawPage { id, pad: 0, offset };
        // SAFETY: `p` is a valid `struct kram_page`.
        check("free", unsafe { ioc::free(self.fd(), &p) })
    }

    /// Map an area's whole fixed run, shared.
    pub fn map(&self, area: &Area) -> Result<MmapMut, KramError> {
        // SAFETY: the mapping is of device memory owned by the area; other
        // mappers of the same area see the same bytes, as for any shared file.
        unsafe {
            MmapOptions::new()
                .offset(area.offset)
                .len((area.npages * PAGE_SIZE) as usize)
                .map_mut(&self.file)
        }
        .map_err(|source| KramError::Map {
            name: area.name.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_ioctl() {
        assert!(raw_area("guest-ram.0").is_ok());
        for bad in ["", "a/b", "space here", &"x".repeat(32)] {
            assert!(matches!(raw_area(bad), Err(KramError::Name(_))), "{bad:?}");
        }
        let a = raw_area("vm1").unwrap();
        assert_eq!(&a.name[..4], b"vm1\0");
        assert_eq!(Area::from(a).name, "vm1");
    }

    #[test]
    fn format_confirmation_matches_the_header() {
        assert_eq!(FORMAT_CONFIRM, 0x2121_5441_4d52_4f46);
    }
}

/// Module parameters for the KRAM region the kernel command line reserves:
/// `base=.. size=..` for the one `memmap=SIZE$ADDR` (or `!`) range, nothing
/// for `reserve_mem=SIZE:ALIGN:kram` (the module looks that up itself).
pub fn region_params(cmdline: &str) -> Result<String, KramError> {
    use kram_format::cmdline::{find_region, FindError, Found};
    match find_region(cmdline) {
        Ok(Found::Memmap(base, size)) => Ok(format!("base={base:#x} size={size}")),
        Ok(Found::ReserveMem) => Ok(String::new()),
        Err(FindError::None) => Err(KramError::NoRegion(
            "the kernel command line reserves no region: boot with memmap=SIZE$ADDR or reserve_mem=SIZE:ALIGN:kram",
        )),
        Err(FindError::Ambiguous) => Err(KramError::NoRegion(
            "the kernel command line has several memmap= ranges: give the module parameters (base=ADDR size=BYTES)",
        )),
    }
}

/// Load kram.ko with `params`, or with the region found on /proc/cmdline
/// when `params` is `None`. Already loaded is not an error; a module built
/// for another kernel is refused (kmod.rs). Returns the parameters used.
pub fn load_module(path: &Path, params: Option<&str>) -> Result<String, KramError> {
    let params = match params {
        Some(p) => p.to_string(),
        None => {
            let c = std::fs::read_to_string("/proc/cmdline").map_err(|source| KramError::Open {
                path: "/proc/cmdline".into(),
                source,
            })?;
            region_params(&c)?
        }
    };
    if params.contains('\0') {
        return Err(KramError::NoRegion("module parameters contain a NUL byte"));
    }
    match crate::kmod::load(path, &params) {
        Err(e) if !e.is_loaded_already() => Err(e.into()),
        _ => Ok(params),
    }
}

#[cfg(test)]
mod region_tests {
    use super::*;

    #[test]
    fn params_from_the_command_line() {
        let c = "console=ttyS0 memmap=256M$0x100000000 no5lvl\n";
        assert_eq!(region_params(c).unwrap(), "base=0x100000000 size=268435456");
        assert_eq!(region_params("reserve_mem=64M:2M:kram").unwrap(), "");
        let e = region_params("quiet").unwrap_err().to_string();
        assert!(e.contains("reserves no region"), "{e}");
        let e = region_params("memmap=1M$1G memmap=1M$2G")
            .unwrap_err()
            .to_string();
        assert!(e.contains("several"), "{e}");
    }
}
