//! Loading our kernel modules (kram.ko, iommu_preserve.ko) into the kernel
//! that runs: a module built for another kernel is refused here, by name,
//! before the kernel sees it, and a module given by name is looked up under
//! `/lib/modules/$(uname -r)`, never at a fixed path. After a hot-upgrade
//! into a different kernel (another version string), each kernel has its
//! own modules; loading the old kernel's would fail in the kernel with a
//! line in dmesg only, or, for a kernel built without module versioning,
//! could load code built against other structure layouts.
//!
//! The module's image is read once, checked, and handed to init_module(2)
//! as those same bytes (no window in which the file could be swapped).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a kernel module liveup can check (no vermagic= in it; compressed modules are not supported)")]
    NotAModule { path: String },
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

/// The `vermagic=` string of a module image (its `.modinfo` section holds
/// NUL-separated `key=value` strings), if it has one.
pub fn vermagic(image: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"vermagic=";
    let mut from = 0;
    while let Some(i) = image
        .get(from..)?
        .windows(KEY.len())
        .position(|w| w == KEY)
        .map(|i| i + from)
    {
        // a key starts the image or follows the NUL ending the previous one
        if i == 0 || image[i - 1] == 0 {
            let v = &image[i + KEY.len()..];
            let end = v.iter().position(|&b| b == 0)?;
            return std::str::from_utf8(&v[..end]).ok();
        }
        from = i + 1;
    }
    None
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
    let v = vermagic(image).ok_or_else(|| KmodError::NotAModule {
        path: path.display().to_string(),
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

/// Load the module at `path` with `params` into the running kernel,
/// refusing one built for another kernel.
pub fn load(path: &Path, params: &str) -> Result<(), KmodError> {
    let image = std::fs::read(path).map_err(|source| KmodError::Read {
        path: path.display().to_string(),
        source,
    })?;
    check(path, &image, &running_release())?;
    let err = |source| KmodError::Load {
        path: path.display().to_string(),
        params: params.to_string(),
        source,
    };
    let p = std::ffi::CString::new(params)
        .map_err(|_| err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    // SAFETY: `image` is a live buffer of `image.len()` bytes and `p` a
    // NUL-terminated string; the kernel copies both before returning.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            image.as_ptr(),
            image.len() as libc::c_ulong,
            p.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(modinfo: &[&str]) -> Vec<u8> {
        let mut v = b"\x7fELF\0\0junk __UNIQUE_ID_vermagic123\0".to_vec();
        for s in modinfo {
            v.extend_from_slice(s.as_bytes());
            v.push(0);
        }
        v.extend_from_slice(b"\0\0trailer");
        v
    }

    #[test]
    fn vermagic_is_read_from_modinfo() {
        let i = image(&[
            "name=kram",
            "vermagic=7.3.4-kvmhost SMP preempt mod_unload ",
            "license=GPL",
        ]);
        assert_eq!(vermagic(&i), Some("7.3.4-kvmhost SMP preempt mod_unload "));
        assert_eq!(release_of(vermagic(&i).unwrap()), "7.3.4-kvmhost");
        // a key must start a string: "xvermagic=" is not it
        assert_eq!(vermagic(b"\0xvermagic=1.0\0"), None);
        assert_eq!(vermagic(b"vermagic=2.0 SMP\0"), Some("2.0 SMP"));
        // unterminated, or no key at all
        assert_eq!(vermagic(b"\0vermagic=3.0"), None);
        assert_eq!(vermagic(b"\x7fELF nothing here"), None);
        assert_eq!(vermagic(b""), None);
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
        let e = check(p, b"\x7fELF no modinfo", "7.3.4-kvmhost").unwrap_err();
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
        let f = std::env::temp_dir().join(format!("liveup-kmod-foreign-{}.ko", std::process::id()));
        std::fs::write(&f, image(&["vermagic=0.0.0-not-this-one SMP "])).unwrap();
        let e = load(&f, "").unwrap_err();
        assert!(matches!(e, KmodError::OtherKernel { .. }), "{e}");
        std::fs::remove_file(&f).unwrap();
    }
}
