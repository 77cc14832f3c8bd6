//! The shipped systemd units as systemd itself reads them: `systemd-analyze
//! verify` over a root that holds them where a package puts them, this
//! build's liveup as /usr/bin/liveup, the shipped /etc/default/liveup and
//! this host's own system units (the targets they order against). Any
//! complaint fails, warnings included: systemd only warns about a bad
//! value (`Type=oneshots`) and ignores the line. (`units.rs`' test parses
//! each ExecStart line with the CLI; this one checks the rest.)

use std::fs;
use std::path::Path;
use std::process::Command;

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        let dst = to.join(e.file_name());
        if t.is_symlink() {
            let _ = std::os::unix::fs::symlink(fs::read_link(e.path()).unwrap(), &dst);
        } else if t.is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            fs::copy(e.path(), &dst).unwrap();
        }
    }
}

#[test]
fn systemd_accepts_every_shipped_unit_without_a_warning() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let root = std::env::temp_dir().join(format!("liveup-units-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let units = root.join("etc/systemd/system");
    fs::create_dir_all(&units).unwrap();
    fs::create_dir_all(root.join("etc/default")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_liveup"), root.join("usr/bin/liveup")).unwrap();
    fs::copy(src.join("liveup.default"), root.join("etc/default/liveup")).unwrap();
    copy_dir(
        Path::new("/lib/systemd/system"),
        &root.join("usr/lib/systemd/system"),
    );
    let mut names = Vec::new();
    for e in fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.extension()
            .is_some_and(|x| x == "service" || x == "timer")
        {
            fs::copy(&p, units.join(p.file_name().unwrap())).unwrap();
            names.push(format!(
                "/etc/systemd/system/{}",
                p.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    names.sort();
    assert!(names.len() >= 4, "units found: {names:?}");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(&names)
        .output()
        .expect("systemd-analyze (Debian 12's systemd) is needed for this test");
    let _ = fs::remove_dir_all(&root);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {names:?}: {}\n{said}",
        out.status
    );
}
