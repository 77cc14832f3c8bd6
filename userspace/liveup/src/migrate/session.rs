//! One migration, end to end: the source side (`send`) and the destination
//! agent (`receive`), talking over the control connection, each driving
//! its QEMU over QMP.
//!
//! Safety rules ("nothing lost"):
//! * the source VM keeps running on any failure: liveup cancels an active
//!   migration and `cont`s a source that was running before and is left
//!   paused (postmigrate) by a migration whose destination failed;
//! * the destination resumes only on an explicit `commit`, sent after the
//!   source QEMU completed, the relay (if any) verified and confirmed every
//!   chunk, and the destination QEMU reported its incoming migration
//!   completed. Before that, any failure makes the agent `quit` the
//!   destination QEMU. (Start it with `-S`, so that QEMU does not resume
//!   on its own.)
//!
//! In session/: `send.rs` the source, `receive.rs` the destination agent,
//! `listen.rs` the destination service that starts the VM's QEMU itself,
//! `link.rs` connecting, probing the link and accepting, `report.rs` the
//! progress and the final report, `events.rs` the forms progress takes
//! (`--json`: a stream of events). What both sides share is here.

mod commit;
mod events;
mod link;
mod listen;
mod receive;
mod report;
mod send;
mod watch;

pub use listen::{listen, ListenOptions};
pub use receive::{receive, ReceiveOptions};
pub use report::{Event, Output, Report, Sample};
pub use send::{send, SendOptions, SendResult};
pub use watch::{request, socket_for};

use super::control::CtlError;
use super::plan::{self, Converge, Mode, Plan};
use super::relay::RelayError;
use crate::qmp::{Qmp, QmpError};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("no `liveup migrate send` of the VM behind {0} is running")]
    NotRunning(String),
    #[error("QMP socket {0} does not exist (is QEMU running with -qmp unix:{0},server=on?)")]
    NoQmpSocket(String),
    #[error("unsupported QEMU on the {side}: {why}")]
    UnsupportedQemu { side: &'static str, why: String },
    #[error("destination {addr} unreachable: {cause}")]
    Unreachable { addr: String, cause: std::io::Error },
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error(transparent)]
    Control(#[from] CtlError),
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("migration failed: {reason}; source VM {source_state}")]
    Failed {
        reason: String,
        source_state: String,
    },
    /// Commit was sent and then something failed: the destination may be
    /// running the VM, so the source's copy is left paused (never resumed
    /// automatically: two running copies of one VM are worse than none).
    /// No key, or the peer did not prove it holds it (auth.rs).
    #[error("not authenticated: {0}")]
    Auth(String),
    #[error(
        "commit in doubt: {reason}; the destination may be running the VM, so the source VM is left paused: check the destination, and resume the source (liveup qmp SOCKET cont) only if the VM runs nowhere"
    )]
    InDoubt { reason: String },
}

impl MigrateError {
    /// Exit codes: 2 usage/QMP socket, 3 unsupported QEMU, 4 unreachable
    /// destination, 5 migration failed (source kept), 6 commit in doubt
    /// (source left paused), 7 not authenticated (no key, or the peer did
    /// not prove it holds it; nothing was migrated), 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            MigrateError::NoQmpSocket(_) => 2,
            MigrateError::UnsupportedQemu { .. } => 3,
            MigrateError::Unreachable { .. } => 4,
            MigrateError::Failed { .. } => 5,
            MigrateError::InDoubt { .. } => 6,
            MigrateError::Auth(_) => 7,
            MigrateError::NotRunning(_) => 8,
            _ => 1,
        }
    }
}

/// The oldest QEMU liveup migrates: multifd compression (5.0) and
/// calc-dirty-rate page sampling (5.2).
pub const MIN_QEMU: (u64, u64) = (5, 2);

pub fn open_qmp(path: &Path) -> Result<Qmp, MigrateError> {
    if !path.exists() {
        return Err(MigrateError::NoQmpSocket(path.display().to_string()));
    }
    Ok(Qmp::connect(path, Duration::from_secs(2))?)
}

fn check_version(side: &'static str, f: &plan::QemuFacts) -> Result<(), MigrateError> {
    let mut it = f.version.split('.').map(|x| x.parse::<u64>().unwrap_or(0));
    let v = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    if v < MIN_QEMU {
        return Err(MigrateError::UnsupportedQemu {
            side,
            why: format!(
                "QEMU {} is older than {}.{}",
                f.version, MIN_QEMU.0, MIN_QEMU.1
            ),
        });
    }
    Ok(())
}

/// QEMU's migration stream over TLS with a pre-shared key of this
/// session (QEMU's `tls-creds-psk`, gnutls): QEMU refuses a peer without
/// it, and every byte of guest memory is encrypted and authenticated. The
/// key file lives, for the migration only, in a 0700 directory under the
/// QEMU process's own /tmp (reached through /proc/PID/root, so a QEMU in a
/// chroot or mount namespace finds it); dropped, it is removed.
pub(super) struct QemuTls {
    dir: PathBuf,
}

const TLS_ID: &str = "liveup-tls";

impl QemuTls {
    pub(super) fn setup(
        q: &mut Qmp,
        qemu_pid: Option<i32>,
        key: &super::auth::Key,
        role: super::auth::Role,
    ) -> Result<QemuTls, MigrateError> {
        use super::auth::Role;
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let (endpoint, side) = match role {
            Role::Source => ("client", "source"),
            Role::Destination => ("server", "destination"),
        };
        let pid = qemu_pid.ok_or_else(|| MigrateError::UnsupportedQemu {
            side,
            why: "its process is unknown (QMP peer credentials), so it cannot be given the TLS key"
                .into(),
        })?;
        // per QEMU: a destination service runs several sessions at once
        let inside = PathBuf::from(format!(
            "/tmp/liveup-tls-{}-{pid}-{endpoint}",
            std::process::id()
        ));
        let dir = PathBuf::from(format!("/proc/{pid}/root"))
            .join(inside.strip_prefix("/").unwrap_or(&inside));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let tls = QemuTls { dir };
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tls.dir.join("keys.psk"))?
            .write_all(format!("liveup:{}\n", key.hex()).as_bytes())?;
        let _ = q.execute("object-del", json!({ "id": TLS_ID }));
        // The client names its key's user; the server looks it up in
        // keys.psk (QEMU refuses a username on the server side).
        let mut creds = json!({"qom-type": "tls-creds-psk", "id": TLS_ID,
                               "endpoint": endpoint, "dir": inside});
        if role == Role::Source {
            creds["username"] = json!("liveup");
        }
        q.execute("object-add", creds)?;
        q.execute("migrate-set-parameters", json!({ "tls-creds": TLS_ID }))?;
        Ok(tls)
    }
}

impl Drop for QemuTls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Capabilities and parameters for one side.
fn apply_plan(
    q: &mut Qmp,
    plan: &Plan,
    facts: &plan::QemuFacts,
    source: bool,
) -> Result<(), QmpError> {
    let native = plan.mode == Mode::Native;
    // MIGRATION events (QEMU >= 2.4) end either side's wait for the end of
    // the migration at once (Qmp::wait_migration_end).
    let mut caps = vec![
        json!({"capability": "multifd", "state": native}),
        // left on by a hot-upgrade's restore (cpr-reboot): shared RAM
        // would not be sent
        json!({"capability": "x-ignore-shared", "state": false}),
        json!({"capability": "events", "state": true}),
    ];
    if source {
        if facts.xbzrle {
            caps.push(json!({"capability": "xbzrle", "state": plan.xbzrle_cache.is_some()}));
        }
        caps.push(json!({"capability": "auto-converge",
                         "state": plan.converge == Converge::AutoConverge}));
        if facts.dirty_limit {
            caps.push(json!({"capability": "dirty-limit",
                             "state": plan.converge == Converge::DirtyLimit}));
        }
    }
    if !facts.multifd {
        caps.retain(|c| c["capability"] != "multifd");
    }
    q.execute("migrate-set-capabilities", json!({ "capabilities": caps }))?;
    // No TLS unless QemuTls sets it for this migration: a QEMU that was
    // the TLS server of an earlier one keeps its credentials set, and as
    // a relay source (a local socket) it would expect client ones.
    q.execute("migrate-set-parameters", json!({ "tls-creds": "" }))?;
    // A hot-upgrade's restore left `mode=cpr-reboot` (QEMU >= 8.2), which
    // stops the guest for the whole transfer; older QEMUs have no mode
    // (`dirty_ms`: the calc-time-unit that came with 8.2 too).
    if facts.dirty_ms {
        q.execute("migrate-set-parameters", json!({ "mode": "normal" }))?;
    }
    let mut p = serde_json::Map::new();
    if native {
        p.insert("multifd-channels".into(), json!(plan.threads));
        let comp = plan.native_compression.as_deref().unwrap_or("none");
        p.insert("multifd-compression".into(), json!(comp));
        let lvl_key = match comp {
            "zstd" => Some(("multifd-zstd-level", 20)),
            "zlib" => Some(("multifd-zlib-level", 9)),
            "qatzip" => Some(("multifd-qatzip-level", 9)),
            _ => None,
        };
        if let Some((k, max)) = lvl_key {
            p.insert(k.into(), json!(plan.level.clamp(1, max)));
        }
    }
    if source {
        p.insert("downtime-limit".into(), json!(plan.downtime_ms));
        // The link (or the relay) is the limit, not QEMU's default 128 MiB/s.
        p.insert("max-bandwidth".into(), json!(10u64 << 30));
        if let Some(c) = plan.xbzrle_cache {
            p.insert("xbzrle-cache-size".into(), json!(c));
        }
        if plan.converge == Converge::DirtyLimit {
            p.insert("vcpu-dirty-limit".into(), json!(plan.dirty_limit_mbps));
        }
        if plan.converge == Converge::AutoConverge && plan.throttle_initial_pct > 0 {
            p.insert(
                "cpu-throttle-initial".into(),
                json!(plan.throttle_initial_pct),
            );
        }
    }
    q.execute("migrate-set-parameters", Value::Object(p))?;
    Ok(())
}

fn sock_path(what: &str) -> PathBuf {
    // unique within this process too (concurrent sessions of `listen`)
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!(
        "liveup-{what}-{}-{seq}-{n}.sock",
        std::process::id()
    ))
}
