//! Test support: run a test inside the trixie chroot that carries the real
//! libqatzip (made by tools/mkqatroot.sh), since the build host (bookworm)
//! has no QATzip package. The test binary re-executes itself there,
//! filtered to the one test, and the outer test passes only if that run
//! passed. Needs root (chroot, mount namespace), which the rig has.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Set in the environment of the re-executed test.
pub const INSIDE_VAR: &str = "KH_IN_QATROOT";

/// Make (or find) the chroot: runs `mkqatroot`, returns its path.
pub fn qat_root(mkqatroot: &Path) -> Result<PathBuf, String> {
    let out = Command::new(mkqatroot)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", mkqatroot.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            mkqatroot.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(PathBuf::from(root))
}

/// True when the caller is already inside the chroot and should run the
/// test body. Otherwise runs `test` (an exact test name) of the current
/// test binary inside the chroot, panics if that fails, and returns false.
pub fn run_inside(mkqatroot: &Path, test: &str) -> bool {
    if std::env::var_os(INSIDE_VAR).is_some() {
        return true;
    }
    let root = qat_root(mkqatroot).unwrap_or_else(|e| panic!("{e}"));
    let exe = std::env::current_exe().expect("current_exe");
    let exe_dir = exe.parent().expect("exe dir").to_path_buf();
    let script = r#"set -e
root=$1; shift; exedir=$1; shift
for d in /proc /dev /sys /tmp "$exedir"; do
    mkdir -p "$root$d"; mount --rbind "$d" "$root$d"
done
exec chroot "$root" "$@""#;
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&root)
        .arg(&exe_dir)
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE_VAR, "1")
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- inside {}:\n{stdout}{stderr}", root.display());
    assert!(
        out.status.success(),
        "test {test} failed inside the QATzip chroot"
    );
    // A filter that matched nothing would "pass" with zero tests run.
    assert!(
        stdout.contains("1 passed"),
        "test {test} did not run inside the chroot"
    );
    false
}
