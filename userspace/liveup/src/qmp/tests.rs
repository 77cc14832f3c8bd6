//! Tests of the QMP client against a scripted QMP peer.

use super::*;
use std::io::Read;
use std::os::unix::net::UnixListener;

/// A QMP peer on a fresh socket: greets, answers qmp_capabilities,
/// then runs `script` on the connection.
fn fake_qemu(
    name: &str,
    script: impl FnOnce(&mut UnixStream) + Send + 'static,
) -> (Qmp, std::thread::JoinHandle<()>) {
    let path = std::env::temp_dir().join(format!("liveup-qmp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"{\"QMP\": {\"version\": {}}}\n").unwrap();
        read_cmd(&mut s);
        s.write_all(b"{\"return\": {}}\n").unwrap();
        script(&mut s);
    });
    let q = Qmp::connect(&path, Duration::from_secs(5)).unwrap();
    let _ = std::fs::remove_file(&path);
    (q, t)
}

fn read_cmd(s: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

#[test]
fn event_during_a_command_is_kept_for_next_event() {
    let (mut q, t) = fake_qemu("kept", |s| {
        assert!(read_cmd(s).contains("query-migrate"));
        s.write_all(b"{\"event\": \"MIGRATION\", \"data\": {\"status\": \"completed\"}}\n{\"return\": {\"status\": \"completed\"}}\n")
            .unwrap();
        // Stay connected while the client looks for more.
        std::thread::sleep(Duration::from_millis(300));
    });
    let r = q.execute("query-migrate", json!({})).unwrap();
    assert_eq!(r["status"], "completed");
    let e = q.next_event(Duration::from_millis(10)).unwrap().unwrap();
    assert_eq!(e["data"]["status"], "completed");
    assert!(q.next_event(Duration::from_millis(10)).unwrap().is_none());
    t.join().unwrap();
}

#[test]
fn next_event_times_out_and_keeps_a_half_read_line() {
    let (mut q, t) = fake_qemu("partial", |s| {
        s.write_all(b"{\"event\": \"MIGR").unwrap();
        // long enough that a 100 ms wait cannot have seen the rest, even
        // on a loaded machine (with 300 ms and a 280 ms bound it failed
        // once at a load average of 7)
        std::thread::sleep(Duration::from_millis(2000));
        s.write_all(b"ATION\", \"data\": {\"status\": \"failed\"}}\n")
            .unwrap();
        assert!(read_cmd(s).contains("query-status"));
        s.write_all(b"{\"return\": {\"status\": \"running\"}}\n")
            .unwrap();
    });
    let t0 = Instant::now();
    assert!(q.next_event(Duration::from_millis(100)).unwrap().is_none());
    assert!(t0.elapsed() < Duration::from_millis(1500));
    let e = q.next_event(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(e["event"], "MIGRATION");
    assert_eq!(e["data"]["status"], "failed");
    // The ordinary read timeout is back: a command still works.
    assert_eq!(q.status().unwrap(), "running");
    t.join().unwrap();
}

#[test]
fn migration_end_events() {
    let ev = |st: &str| json!({"event": "MIGRATION", "data": {"status": st}});
    assert!(is_migration_end(&ev("completed")));
    assert!(is_migration_end(&ev("failed")));
    assert!(is_migration_end(&ev("cancelled")));
    assert!(!is_migration_end(&ev("device")));
    assert!(!is_migration_end(&ev("active")));
    assert!(!is_migration_end(&json!({"event": "STOP"})));
}

#[test]
fn run_states_keep_qemus_names() {
    for n in [
        "running",
        "paused",
        "suspended",
        "inmigrate",
        "finish-migrate",
        "postmigrate",
        "internal-error",
        "guest-panicked",
        "shutdown",
        "colo",
    ] {
        assert_eq!(RunState::parse(n).as_str(), n);
    }
    assert_eq!(RunState::parse("running"), RunState::Running);
    assert_eq!(RunState::parse("colo"), RunState::Other("colo".into()));
}

const MIGRATION_STATUSES: [&str; 15] = [
    "none",
    "setup",
    "cancelling",
    "cancelled",
    "active",
    "postcopy-active",
    "postcopy-paused",
    "postcopy-recover-setup",
    "postcopy-recover",
    "completed",
    "failed",
    "colo",
    "pre-switchover",
    "device",
    "wait-unplug",
];

#[test]
fn migration_statuses_keep_qemus_names() {
    for n in MIGRATION_STATUSES {
        let st = MigrationStatus::parse(n);
        assert!(!matches!(st, MigrationStatus::Other(_)), "{n} unknown");
        assert_eq!(st.as_str(), n);
        assert_eq!(st.to_string(), n);
    }
    assert_eq!(MigrationStatus::parse("active"), MigrationStatus::Active);
    assert_eq!(
        MigrationStatus::parse("postcopy-recover-setup"),
        MigrationStatus::PostcopyRecoverSetup
    );
    assert_eq!(
        MigrationStatus::parse("pre-switchover"),
        MigrationStatus::PreSwitchover
    );
    assert_eq!(
        MigrationStatus::parse("some-future-state"),
        MigrationStatus::Other("some-future-state".into())
    );
    assert_eq!(
        MigrationStatus::parse("some-future-state").as_str(),
        "some-future-state"
    );
    // Names are QEMU's exact spelling.
    assert_eq!(
        MigrationStatus::parse("Completed"),
        MigrationStatus::Other("Completed".into())
    );
}

#[test]
fn migration_status_of_a_reply() {
    assert_eq!(
        MigrationStatus::of(&json!({"status": "completed", "total-time": 5})),
        Some(MigrationStatus::Completed)
    );
    assert_eq!(MigrationStatus::of(&json!({})), None);
    assert_eq!(MigrationStatus::of(&json!({"status": 3})), None);
    assert_eq!(MigrationStatus::of(&Value::Null), None);
}

#[test]
fn migration_status_helpers() {
    let terminal = ["completed", "failed", "cancelled"];
    let failure = ["failed", "cancelled"];
    for n in MIGRATION_STATUSES {
        let st = MigrationStatus::parse(n);
        assert_eq!(st.is_terminal(), terminal.contains(&n), "{n}");
        assert_eq!(st.is_failure(), failure.contains(&n), "{n}");
        assert_eq!(
            st.is_in_progress(),
            !terminal.contains(&n) && n != "none",
            "{n}"
        );
    }
    let other = MigrationStatus::parse("some-future-state");
    assert!(!other.is_terminal() && !other.is_failure() && other.is_in_progress());
}
