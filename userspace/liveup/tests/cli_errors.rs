//! Bad input to the CLI subcommands added for the hot-upgrade flow gives a
//! clear message and a non-zero exit code, and touches nothing.

use std::process::Command;

fn liveup(args: &[&str], run_dir: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_liveup"))
        .args(args)
        .env("LIVEUP_RUN_DIR", run_dir)
        .output()
        .expect("run liveup");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

/// A directory of one test, removed when the test ends (pass or fail).
struct Scratch(std::path::PathBuf);

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("liveup-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

#[test]
fn qmp_rejects_arguments_that_are_not_json() {
    let d = scratch("qmp");
    let (rc, text) = liveup(
        &["qmp", "/nonexistent.qmp", "query-status", "{not json"],
        &d,
    );
    assert_eq!(rc, 1, "{text}");
    assert!(text.contains("arguments are not JSON"), "{text}");
}

#[test]
fn qmp_names_a_missing_socket() {
    let d = scratch("qmp2");
    let (rc, text) = liveup(&["qmp", "/nonexistent.qmp", "query-status"], &d);
    assert_eq!(rc, 1, "{text}");
    assert!(
        text.contains("cannot connect to QMP socket /nonexistent.qmp"),
        "{text}"
    );
}

#[test]
fn vm_stop_of_an_unknown_vm_changes_nothing() {
    let d = scratch("stop");
    std::fs::write(d.join("other.json"), b"{}").unwrap();
    let (rc, text) = liveup(&["vm", "stop", "nosuch"], &d);
    assert_eq!(rc, 1, "{text}");
    assert!(text.contains("no managed VM named nosuch"), "{text}");
    assert!(d.join("other.json").exists());
}

#[test]
fn vm_stop_refuses_a_corrupt_record_and_keeps_it() {
    let d = scratch("corrupt");
    std::fs::write(d.join("bad.json"), b"{ not a record").unwrap();
    let (rc, text) = liveup(&["vm", "stop", "bad"], &d);
    assert_eq!(rc, 1, "{text}");
    assert!(text.contains("bad VM record"), "{text}");
    assert!(d.join("bad.json").exists());
}

#[test]
fn kram_load_of_a_missing_module_says_which() {
    let d = scratch("load");
    let (rc, text) = liveup(
        &[
            "kram",
            "load",
            "/nonexistent/kram.ko",
            "--params",
            "base=0x1 size=4096",
        ],
        &d,
    );
    assert_eq!(rc, 1, "{text}");
    assert!(text.contains("/nonexistent/kram.ko"), "{text}");
}
