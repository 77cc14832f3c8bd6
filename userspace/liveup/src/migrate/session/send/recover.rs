//! Keeping the source VM: the failure a cancel makes, and the source's
//! recovery after any failure (its migration cancelled, a VM that was
//! running running again).

use crate::migrate::session::MigrateError;
use crate::qmp::{MigrationStatus, Monitor, Qmp, QmpError, RunState};
use serde_json::json;
use std::time::{Duration, Instant};

/// The failure a `liveup migrate cancel` makes.
pub(super) fn cancelled() -> MigrateError {
    MigrateError::Failed {
        reason: "cancelled by the operator (liveup migrate cancel)".into(),
        source_state: String::new(),
    }
}

/// Cancel an active migration and make sure a VM that was running runs.
/// Returns its state afterwards.
pub(super) fn recover_source(q: &mut Qmp, was_running: bool) -> String {
    if let Ok(r) = q.execute("query-migrate", json!({})) {
        // No status (or an empty one): nothing to cancel.
        let st = MigrationStatus::of(&r).filter(|s| !s.as_str().is_empty());
        if st.is_some_and(|s| s.is_in_progress()) {
            let _ = q.execute("migrate_cancel", json!({}));
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(20) {
                match q.execute("query-migrate", json!({})) {
                    Ok(r)
                        if matches!(
                            MigrationStatus::of(&r),
                            Some(
                                MigrationStatus::Cancelling
                                    | MigrationStatus::Active
                                    | MigrationStatus::Device
                                    | MigrationStatus::Setup
                                    | MigrationStatus::PreSwitchover
                            )
                        ) =>
                    {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ => break,
                }
            }
        }
    }
    let show = |s: Result<RunState, QmpError>| match s {
        Ok(s) => s.to_string(),
        Err(e) => format!("unknown ({e})"),
    };
    let state = q.run_state();
    if was_running && !matches!(state, Ok(RunState::Running)) {
        match q.execute("cont", json!({})) {
            Ok(_) => {}
            Err(e) => return format!("{}, cont failed: {e}", show(state)),
        }
    }
    show(q.run_state())
}
