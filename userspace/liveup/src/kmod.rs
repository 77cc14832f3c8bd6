//! Loading our kernel modules (kram.ko, iommu_preserve.ko) into the kernel
//! that runs: a module built for another kernel is refused here, by name,
//! before the kernel sees it, and a module given by name is looked up under
//! `/lib/modules/$(uname -r)`, never at a fixed path. After a hot-upgrade
//! into a different kernel (another version string), each kernel has its
//! own modules; loading the old kernel's would fail in the kernel with a
//! line in dmesg only, or, for a kernel built without module versioning,
//! could load code built against other structure layouts.
//!
//! The module is opened once: the image checked is read from that file
//! descriptor (a regular file, at most `MAX_IMAGE` bytes), and the same
//! descriptor goes to finit_module(2), so LoadPin and IMA judge it as they
//! would `insmod`. The check reads the ELF section headers and looks for
//! exactly one `vermagic=` in `.modinfo`, nowhere else.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The largest module image read (ours are under 2 MiB; a debug build with
/// KASAN under 16).
pub const MAX_IMAGE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a kernel module liveup can check ({why}; compressed modules are not supported)")]
    NotAModule { path: String, why: &'static str },
    #[error("{path} is built for kernel {built_for}, this kernel is {running}: give the module built for {running} (under /lib/modules/{running}/)")]
    OtherKernel {
        path: String,
        built_for: String,
        running: String,
    },
    #[error(
        "no {name}.ko under {dir}: install the modules of this kernel, or give the module's path"
    )]
    NotFound { name: String, dir: String },
    #[error("cannot load {path} ({params}): {source} (dmesg says why)")]
    Load {
        path: String,
        params: String,
        source: std::io::Error,
    },
}

impl KmodError {
    /// The module was loaded already (init_module's EEXIST).
    pub fn is_loaded_already(&self) -> bool {
        matches!(self, KmodError::Load { source, .. } if source.raw_os_error() == Some(libc::EEXIST))
    }
}

/// A little-endian integer of `N` bytes at `off`, if the image has it.
fn le(image: &[u8], off: u64, n: usize) -> Option<u64> {
    let off = usize::try_from(off).ok()?;
    let b = image.get(off..off.checked_add(n)?)?;
    Some(b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
}

/// The bytes of the section named `name` of a 64-bit little-endian ELF
/// image; every offset and size is checked against the image.
fn elf_section<'a>(image: &'a [u8], name: &[u8]) -> Result<&'a [u8], &'static str> {
    if image.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err("not a 64-bit little-endian ELF file");
    }
    let shoff = le(image, 0x28, 8).ok_or("truncated ELF header")?;
    let shentsize = le(image, 0x3a, 2).ok_or("truncated ELF header")?;
    let shnum = le(image, 0x3c, 2).ok_or("truncated ELF header")?;
    let shstrndx = le(image, 0x3e, 2).ok_or("truncated ELF header")?;
    if shentsize < 0x40 {
        return Err("bad section header size");
    }
    let sh = |i: u64| -> Option<(u64, u64, u64)> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((
            le(image, h, 4)?,
            le(image, h.checked_add(0x18)?, 8)?,
            le(image, h.checked_add(0x20)?, 8)?,
        ))
    };
    let bytes = |off: u64, size: u64| -> Option<&'a [u8]> {
        let off = usize::try_from(off).ok()?;
        image.get(off..off.checked_add(usize::try_from(size).ok()?)?)
    };
    let (_, stroff, strsize) = sh(shstrndx).ok_or("section names out of the file")?;
    let names = bytes(stroff, strsize).ok_or("section names out of the file")?;
    for i in 0..shnum {
        let (n, off, size) = sh(i).ok_or("section header out of the file")?;
        let nm = usize::try_from(n)
            .ok()
            .and_then(|n| names.get(n..))
            .unwrap_or(&[]);
        let nm = &nm[..nm.iter().position(|&b| b == 0).unwrap_or(nm.len())];
        if nm == name {
            return bytes(off, size).ok_or("section out of the file");
        }
    }
    Err("no .modinfo section")
}

/// The `vermagic=` string of a module image: the one such entry of its
/// `.modinfo` section (NUL-separated `key=value` strings).
pub fn vermagic(image: &[u8]) -> Result<&str, &'static str> {
    let info = elf_section(image, b".modinfo")?;
    let mut found = info
        .split(|&b| b == 0)
        .filter_map(|e| e.strip_prefix(b"vermagic="));
    let v = found.next().ok_or("no vermagic= in .modinfo")?;
    if found.next().is_some() {
        return Err("several vermagic= in .modinfo");
    }
    std::str::from_utf8(v).map_err(|_| "vermagic= is not text")
}

/// The kernel release a vermagic string names (its first word).
pub fn release_of(vermagic: &str) -> &str {
    vermagic.split_whitespace().next().unwrap_or("")
}

/// The running kernel's release (`uname -r`).
pub fn running_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Refuse `image` (read from `path`) unless it was built for `running`.
pub fn check(path: &Path, image: &[u8], running: &str) -> Result<(), KmodError> {
    let v = vermagic(image).map_err(|why| KmodError::NotAModule {
        path: path.display().to_string(),
        why,
    })?;
    let built_for = release_of(v);
    if built_for != running {
        return Err(KmodError::OtherKernel {
            path: path.display().to_string(),
            built_for: built_for.to_string(),
            running: running.to_string(),
        });
    }
    Ok(())
}

/// `NAME.ko` under `root/lib/modules/RELEASE` (any depth: extra/, updates/,
/// kernel/...), the first in path order.
pub fn find(root: &Path, release: &str, name: &str) -> Result<PathBuf, KmodError> {
    let dir = root.join("lib/modules").join(release);
    let file = format!("{name}.ko");
    let mut stack = vec![dir.clone()];
    let mut found = Vec::new();
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            // (no symlinked directories: `build` and `source` point into
            // kernel trees)
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() && e.file_name() == file.as_str() => found.push(p),
                _ => {}
            }
        }
    }
    found.sort();
    found.into_iter().next().ok_or_else(|| KmodError::NotFound {
        name: name.to_string(),
        dir: dir.display().to_string(),
    })
}

/// `NAME.ko` of the running kernel, under `/lib/modules/$(uname -r)`
/// (logged: the operator sees which file was taken).
pub fn find_running(name: &str) -> Result<PathBuf, KmodError> {
    let m = find(Path::new("/"), &running_release(), name)?;
    log::info!("{name} module of the running kernel: {}", m.display());
    Ok(m)
}

/// Load the module at `path` with `params` into the running kernel,
/// refusing one built for another kernel.
pub fn load(path: &Path, params: &str) -> Result<(), KmodError> {
    let read_err = |source| KmodError::Read {
        path: path.display().to_string(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read_err)?;
    let md = f.metadata().map_err(read_err)?;
    if !md.is_file() || md.len() > MAX_IMAGE {
        return Err(read_err(std::io::Error::other(format!(
            "not a regular file of at most {MAX_IMAGE} bytes"
        ))));
    }
    let mut image = Vec::new();
    (&f).take(MAX_IMAGE)
        .read_to_end(&mut image)
        .map_err(read_err)?;
    check(path, &image, &running_release())?;
    let err = |source| KmodError::Load {
        path: path.display().to_string(),
        params: params.to_string(),
        source,
    };
    let p = std::ffi::CString::new(params)
        .map_err(|_| err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    // SAFETY: `f` is an open file descriptor and `p` a NUL-terminated
    // string, both alive across the call; no flags.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), p.as_ptr(), 0) };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit little-endian ELF image with these sections (after the
    /// null one; the section names' table last).
    fn elf(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut img = vec![0u8; 64];
        img[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        let mut names = vec![0u8];
        let mut hdrs = vec![(0u32, 0u64, 0u64)];
        for (n, data) in sections {
            hdrs.push((names.len() as u32, img.len() as u64, data.len() as u64));
            names.extend_from_slice(n.as_bytes());
            names.push(0);
            img.extend_from_slice(data);
        }
        let shstr = (names.len() as u32, img.len() as u64);
        names.extend_from_slice(b".shstrtab\0");
        hdrs.push((shstr.0, shstr.1, names.len() as u64));
        img.extend_from_slice(&names);
        let shoff = img.len() as u64;
        for (n, off, size) in &hdrs {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&n.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&off.to_le_bytes());
            h[0x20..0x28].copy_from_slice(&size.to_le_bytes());
            img.extend_from_slice(&h);
        }
        img[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        img[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        img[0x3c..0x3e].copy_from_slice(&(hdrs.len() as u16).to_le_bytes());
        img[0x3e..0x40].copy_from_slice(&((hdrs.len() - 1) as u16).to_le_bytes());
        img
    }

    fn image(modinfo: &[&str]) -> Vec<u8> {
        let mut info = Vec::new();
        for s in modinfo {
            info.extend_from_slice(s.as_bytes());
            info.push(0);
        }
        elf(&[
            (".text", b"\x90\x90vermagic=9.9.9-decoy\0"),
            (".modinfo", &info),
        ])
    }

    #[test]
    fn vermagic_is_read_from_modinfo_only() {
        let i = image(&[
            "name=kram",
            "vermagic=7.3.4-kvmhost SMP preempt mod_unload ",
            "license=GPL",
        ]);
        assert_eq!(vermagic(&i), Ok("7.3.4-kvmhost SMP preempt mod_unload "));
        assert_eq!(release_of(vermagic(&i).unwrap()), "7.3.4-kvmhost");
        // a vermagic= elsewhere (the .text decoy) does not count
        assert_eq!(
            vermagic(&image(&["name=kram"])),
            Err("no vermagic= in .modinfo")
        );
        assert_eq!(
            vermagic(&image(&["xvermagic=1.0"])),
            Err("no vermagic= in .modinfo")
        );
        assert_eq!(
            vermagic(&image(&["vermagic=1.0", "vermagic=2.0"])),
            Err("several vermagic= in .modinfo")
        );
        assert_eq!(
            vermagic(&elf(&[(".text", b"vermagic=1.0\0")])),
            Err("no .modinfo section")
        );
        assert!(vermagic(b"\x7fELF nothing here").is_err());
        assert!(vermagic(b"").is_err());
        // every truncation of a good image is refused or read, never a panic
        for n in 0..i.len() {
            let _ = vermagic(&i[..n]);
        }
        // section headers pointing anywhere: refused, no panic
        let mut bad = i.clone();
        bad[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(vermagic(&bad).is_err());
        let mut bad = i.clone();
        bad[0x3e..0x40].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(vermagic(&bad).is_err());
    }

    #[test]
    fn a_module_of_another_kernel_is_refused_by_name() {
        let p = Path::new("/m/kram.ko");
        let i = image(&["vermagic=7.3.4-kvmhost SMP preempt mod_unload "]);
        assert!(check(p, &i, "7.3.4-kvmhost").is_ok());
        let e = check(p, &i, "7.3.5-kvmhost-b").unwrap_err();
        assert!(matches!(e, KmodError::OtherKernel { .. }));
        let m = e.to_string();
        assert!(
            m.contains("built for kernel 7.3.4-kvmhost")
                && m.contains("this kernel is 7.3.5-kvmhost-b"),
            "{m}"
        );
        let e = check(p, b"\x7fELF no section headers", "7.3.4-kvmhost").unwrap_err();
        assert!(matches!(e, KmodError::NotAModule { .. }), "{e}");
    }

    #[test]
    fn modules_are_found_under_the_running_release() {
        let root = std::env::temp_dir().join(format!("liveup-kmod-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let a = root.join("lib/modules/7.3.4-a/extra");
        let b = root.join("lib/modules/7.3.4-b/updates/kvmhost");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("kram.ko"), b"a").unwrap();
        std::fs::write(b.join("kram.ko"), b"b").unwrap();
        assert_eq!(find(&root, "7.3.4-a", "kram").unwrap(), a.join("kram.ko"));
        assert_eq!(find(&root, "7.3.4-b", "kram").unwrap(), b.join("kram.ko"));
        let e = find(&root, "7.3.4-b", "iommu_preserve")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no iommu_preserve.ko under") && e.contains("7.3.4-b"),
            "{e}"
        );
        assert!(find(&root, "7.3.9", "kram").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn loading_a_missing_or_foreign_file_fails_before_the_kernel() {
        let e = load(Path::new("/nonexistent/kram.ko"), "").unwrap_err();
        assert!(matches!(e, KmodError::Read { .. }), "{e}");
        // not a regular file: refused before anything is read from it
        let e = load(Path::new("/dev/zero"), "").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let f = std::env::temp_dir().join(format!("liveup-kmod-foreign-{}.ko", std::process::id()));
        std::fs::write(&f, image(&["vermagic=0.0.0-not-this-one SMP "])).unwrap();
        let e = load(&f, "").unwrap_err();
        assert!(matches!(e, KmodError::OtherKernel { .. }), "{e}");
        std::fs::remove_file(&f).unwrap();
    }
}
