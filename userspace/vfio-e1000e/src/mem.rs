//! The memory the device receives into: anonymous, a shared mapping of a
//! file or device at an offset, or a /dev/kram area (mapped shared at the
//! offset the kram ioctls give, through liveup's client).
//!
//! Every access is volatile: the device writes this memory behind the
//! compiler's back.

use liveup::kram::{Kram, KramError, PAGE_SIZE};
use memmap2::{MmapMut, MmapOptions};
use std::fs::OpenOptions;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemSource {
    /// Fresh anonymous memory: gone when the process exits.
    Anon,
    /// A shared mapping of `path` at byte `offset` (a tmpfs file, a device).
    File { path: PathBuf, offset: u64 },
    /// KRAM area `name` (created with the size when missing).
    Kram { device: PathBuf, area: String },
}

impl std::fmt::Display for MemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemSource::Anon => write!(f, "anon"),
            MemSource::File { path, offset } => write!(f, "{}@{offset:#x}", path.display()),
            MemSource::Kram { device, area } => write!(f, "{}:{area}", device.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MemError {
    #[error("DMA memory size {0} is not a positive multiple of 4096")]
    Size(u64),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("anonymous mapping: {0}")]
    Anon(std::io::Error),
    #[error(transparent)]
    Kram(#[from] KramError),
}

pub struct DmaMem {
    map: MmapMut,
    pub source: MemSource,
}

impl DmaMem {
    /// `size` bytes of `source`. A regular file shorter than its mapping is
    /// extended; an existing KRAM area must have exactly `size` bytes.
    pub fn open(source: &MemSource, size: u64) -> Result<Self, MemError> {
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) {
            return Err(MemError::Size(size));
        }
        let map = match source {
            MemSource::Anon => MmapMut::map_anon(size as usize).map_err(MemError::Anon)?,
            MemSource::File { path, offset } => {
                let err = |source| MemError::File {
                    path: path.display().to_string(),
                    source,
                };
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .map_err(err)?;
                let meta = f.metadata().map_err(err)?;
                if meta.is_file() && meta.len() < offset + size {
                    f.set_len(offset + size).map_err(err)?;
                }
                // SAFETY: a shared mapping; the file is ours to use as DMA
                // memory for the duration (the caller chose it).
                unsafe {
                    MmapOptions::new()
                        .offset(*offset)
                        .len(size as usize)
                        .map_mut(&f)
                }
                .map_err(err)?
            }
            MemSource::Kram { device, area } => {
                let k = Kram::open(device)?;
                let a = k.ensure(area, size / PAGE_SIZE)?;
                k.map(&a)?
            }
        };
        Ok(DmaMem {
            map,
            source: source.clone(),
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn addr(&self) -> u64 {
        self.map.as_ptr() as u64
    }

    /// Touch every page so it is present before the IOMMU mapping.
    pub fn prefault(&mut self) {
        for off in (0..self.map.len()).step_by(PAGE_SIZE as usize) {
            let v = self.read8(off);
            self.write8(off, v);
        }
    }

    fn check(&self, off: usize, n: usize) {
        assert!(
            off.checked_add(n).is_some_and(|e| e <= self.map.len()),
            "DMA memory access {off:#x}+{n} beyond {:#x}",
            self.map.len()
        );
    }

    pub fn read8(&self, off: usize) -> u8 {
        self.check(off, 1);
        // SAFETY: in bounds (checked) of the live mapping.
        unsafe { std::ptr::read_volatile(self.map.as_ptr().add(off)) }
    }

    pub fn write8(&mut self, off: usize, v: u8) {
        self.check(off, 1);
        // SAFETY: as in read8.
        unsafe { std::ptr::write_volatile(self.map.as_mut_ptr().add(off), v) }
    }

    /// A 32-bit word at a 4-aligned offset, read in one access (descriptor
    /// status words, which the device writes).
    pub fn read32(&self, off: usize) -> u32 {
        self.check(off, 4);
        assert!(off.is_multiple_of(4), "unaligned 32-bit read at {off:#x}");
        // SAFETY: in bounds and aligned (the mapping is page aligned).
        unsafe { std::ptr::read_volatile(self.map.as_ptr().add(off).cast::<u32>()) }
    }

    pub fn read(&self, off: usize, out: &mut [u8]) {
        self.check(off, out.len());
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: in bounds (checked above for the whole range).
            *b = unsafe { std::ptr::read_volatile(self.map.as_ptr().add(off + i)) };
        }
    }

    pub fn write(&mut self, off: usize, data: &[u8]) {
        self.check(off, data.len());
        for (i, b) in data.iter().enumerate() {
            // SAFETY: as in read.
            unsafe { std::ptr::write_volatile(self.map.as_mut_ptr().add(off + i), *b) };
        }
    }

    pub fn fill(&mut self, off: usize, n: usize, v: u8) {
        self.check(off, n);
        for i in 0..n {
            // SAFETY: as in read.
            unsafe { std::ptr::write_volatile(self.map.as_mut_ptr().add(off + i), v) };
        }
    }

    pub fn flush(&self) -> std::io::Result<()> {
        match self.source {
            MemSource::File { .. } => self.map.flush(),
            _ => Ok(()),
        }
    }
}

/// Parse `anon`, `kram:AREA` or a path (with `offset` applied later).
pub fn parse_source(s: &str, offset: u64, kram_device: &str) -> MemSource {
    if s == "anon" {
        MemSource::Anon
    } else if let Some(area) = s.strip_prefix("kram:") {
        MemSource::Kram {
            device: kram_device.into(),
            area: area.into(),
        }
    } else {
        MemSource::File {
            path: s.into(),
            offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(parse_source("anon", 0, "/dev/kram"), MemSource::Anon);
        assert_eq!(
            parse_source("kram:nic-ring", 0, "/dev/kram"),
            MemSource::Kram {
                device: "/dev/kram".into(),
                area: "nic-ring".into()
            }
        );
        assert_eq!(
            parse_source("/tmp/ring", 8192, "/dev/kram"),
            MemSource::File {
                path: "/tmp/ring".into(),
                offset: 8192
            }
        );
    }

    #[test]
    fn file_memory_is_shared_and_persists() {
        let dir = std::env::temp_dir().join(format!("vfio-e1000e-test-{}", std::process::id()));
        let src = MemSource::File {
            path: dir.clone(),
            offset: 4096,
        };
        {
            let mut m = DmaMem::open(&src, 8192).unwrap();
            m.write(100, b"ring");
            m.flush().unwrap();
        }
        let m = DmaMem::open(&src, 8192).unwrap();
        let mut b = [0u8; 4];
        m.read(100, &mut b);
        assert_eq!(&b, b"ring");
        assert_eq!(std::fs::metadata(&dir).unwrap().len(), 4096 + 8192);
        std::fs::remove_file(&dir).unwrap();
        assert!(matches!(
            DmaMem::open(&MemSource::Anon, 100),
            Err(MemError::Size(100))
        ));
    }
}
