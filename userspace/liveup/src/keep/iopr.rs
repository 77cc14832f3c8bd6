//! `/dev/iommu-preserve` (iommu_preserve.ko): one function per ioctl, the
//! record's state as an enum, and the module loaded for one use when it is
//! not loaded.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use kh_uapi::iommu_preserve as uapi;
use kram_format::vtd::Spans;

use super::Bdf;

const MODULE_NAME: &str = "iommu_preserve";
pub const DEVICE: &str = "/dev/iommu-preserve";

/// One function per ioctl, numbered by kh-uapi (the one definition).
mod ioc {
    use kh_uapi::iommu_preserve as u;
    nix::ioctl_read_bad!(status, u::IOC_STATUS, u::Status);
    nix::ioctl_write_ptr_bad!(freeze, u::IOC_FREEZE, u::Freeze);
    nix::ioctl_none_bad!(thaw, u::IOC_THAW);
    nix::ioctl_none_bad!(release, u::IOC_RELEASE);
    nix::ioctl_none_bad!(discard, u::IOC_DISCARD);
}

/// Where a preserved record stands (STATUS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    None,
    Frozen,
    Adopted,
    Blocked,
    Attached,
    Refused,
}

impl State {
    fn from_raw(v: u32) -> Result<State> {
        Ok(match v {
            uapi::STATE_NONE => State::None,
            uapi::STATE_FROZEN => State::Frozen,
            uapi::STATE_ADOPTED => State::Adopted,
            uapi::STATE_BLOCKED => State::Blocked,
            uapi::STATE_ATTACHED => State::Attached,
            uapi::STATE_REFUSED => State::Refused,
            v => anyhow::bail!("{DEVICE} answered an unknown state {v}"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            State::None => "none",
            State::Frozen => "frozen",
            State::Adopted => "adopted",
            State::Blocked => "blocked",
            State::Attached => "attached",
            State::Refused => "refused",
        }
    }
}

/// STATUS's answer.
#[derive(Debug, Clone, Copy)]
pub struct Status {
    pub state: State,
    pub bdf: Bdf,
    pub did: u16,
    pub levels: u8,
    pub npages: u32,
    pub record: u64,
    pub root: u64,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "state={}", self.state.name())?;
        if !matches!(self.state, State::None | State::Refused) {
            write!(
                f,
                " device={} did={} levels={} pages={} root={:#x}",
                self.bdf, self.did, self.levels, self.npages, self.root
            )?;
        }
        if self.record != 0 {
            write!(f, " record={:#x}", self.record)?;
        }
        Ok(())
    }
}

/// `/dev/iommu-preserve`, opened; with the module loaded for this use
/// only if it was not loaded (and unloaded again on drop).
pub struct Iopr {
    // Fields drop in declaration order: the device is closed before the
    // module goes.
    file: fs::File,
    _module: Option<LoadedHere>,
}

/// iommu_preserve loaded by us: rmmod on drop (best effort: a module left
/// loaded harms nothing).
struct LoadedHere;

impl Drop for LoadedHere {
    fn drop(&mut self) {
        if let Ok(name) = std::ffi::CString::new(MODULE_NAME) {
            // SAFETY: NUL-terminated module name.
            unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) };
        }
    }
}

impl Iopr {
    /// Open the device, loading `module` first if iommu_preserve is not
    /// loaded (`None`: it must be).
    pub fn open(module: Option<&Path>) -> Result<Iopr> {
        let mut module_guard = None;
        if !Path::new("/sys/module").join(MODULE_NAME).exists() {
            let m = module.with_context(|| {
                format!(
                    "{MODULE_NAME} is not loaded (give its .ko with --iommu-preserve / --module)"
                )
            })?;
            crate::kmod::load(m, "")
                .with_context(|| format!("insmod {} (dmesg says why)", m.display()))?;
            module_guard = Some(LoadedHere);
        }
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEVICE)
            .with_context(|| format!("open {DEVICE} (root needed)"))?;
        Ok(Iopr {
            file,
            _module: module_guard,
        })
    }

    fn check(op: &str, r: nix::Result<i32>) -> Result<()> {
        r.map(|_| ())
            .with_context(|| format!("{MODULE_NAME} {op} (dmesg says why)"))
    }

    pub fn status(&self) -> Result<Status> {
        let mut s = uapi::Status::default();
        // SAFETY: our open device; `s` is the struct STATUS writes.
        Self::check("status", unsafe {
            ioc::status(self.file.as_raw_fd(), &mut s)
        })?;
        Ok(Status {
            state: State::from_raw(s.state)?,
            bdf: Bdf {
                seg: s.seg,
                bus: s.bus,
                devfn: s.devfn,
            },
            did: s.did,
            levels: s.levels,
            npages: s.npages,
            record: s.record,
            root: s.root,
        })
    }

    /// FREEZE, every page the device's tables map inside `spans`.
    pub fn freeze(&self, bdf: Bdf, spans: &Spans) -> Result<()> {
        let mut f = uapi::Freeze {
            dev: uapi::Dev {
                seg: bdf.seg,
                bus: bdf.bus,
                devfn: bdf.devfn,
            },
            ..Default::default()
        };
        let given = spans.as_slice();
        ensure!(
            !given.is_empty() && given.len() <= uapi::MAX_SPANS,
            "freeze {bdf}: 1 to {} areas, not {}",
            uapi::MAX_SPANS,
            given.len()
        );
        for (to, s) in f.spans.iter_mut().zip(given) {
            *to = uapi::Span {
                start: s.start,
                len: s.len,
            };
        }
        f.nspans = given.len() as u32;
        // SAFETY: our open device; `f` is the struct FREEZE reads.
        Self::check(&format!("freeze {bdf}"), unsafe {
            ioc::freeze(self.file.as_raw_fd(), &f)
        })
    }

    pub fn thaw(&self) -> Result<()> {
        // SAFETY: our open device; no argument.
        Self::check("thaw", unsafe { ioc::thaw(self.file.as_raw_fd()) })
    }

    pub fn release(&self) -> Result<()> {
        // SAFETY: our open device; no argument.
        Self::check("release", unsafe { ioc::release(self.file.as_raw_fd()) })
    }

    pub fn discard(&self) -> Result<()> {
        // SAFETY: our open device; no argument.
        Self::check("discard", unsafe { ioc::discard(self.file.as_raw_fd()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_states_and_line() {
        for (v, name) in [
            (uapi::STATE_NONE, "none"),
            (uapi::STATE_FROZEN, "frozen"),
            (uapi::STATE_ADOPTED, "adopted"),
            (uapi::STATE_BLOCKED, "blocked"),
            (uapi::STATE_ATTACHED, "attached"),
            (uapi::STATE_REFUSED, "refused"),
        ] {
            assert_eq!(State::from_raw(v).unwrap().name(), name);
        }
        let e = State::from_raw(6).unwrap_err().to_string();
        assert!(e.contains("unknown state 6"), "{e}");
        let mut s = Status {
            state: State::None,
            bdf: Bdf::parse("01:00.0").unwrap(),
            did: 1,
            levels: 4,
            npages: 7,
            record: 0,
            root: 0x1000,
        };
        assert_eq!(s.to_string(), "state=none");
        s.state = State::Adopted;
        s.record = 0x2000;
        assert_eq!(
            s.to_string(),
            "state=adopted device=0000:01:00.0 did=1 levels=4 pages=7 root=0x1000 record=0x2000"
        );
        s.state = State::Refused;
        assert_eq!(s.to_string(), "state=refused record=0x2000");
    }
}
