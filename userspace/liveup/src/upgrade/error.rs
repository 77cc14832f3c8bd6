//! How a `liveup upgrade` that did not kexec, or a `liveup restore` that
//! did not bring every VM back, left the host, as its exit code tells an
//! operator or the automation driving it (Documentation/upgrade.rst,
//! "Exit codes").

/// What a failed `liveup upgrade` left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Refused before any VM was paused (preflight, loading the kernel):
    /// nothing changed. Exit code 3.
    Refused,
    /// Aborted after the VMs were paused, and every step undone: each VM
    /// runs on where it was, in this kernel. Exit code 4.
    RolledBack,
    /// Aborted, and part of the undo failed: the message says which part;
    /// a VM may still be paused or a kept device frozen. Exit code 5.
    Incomplete,
    /// `liveup restore`: some VMs run again, the others (named) do not;
    /// their RAM and saved state stay in KRAM for `restore --retry`.
    /// Exit code 6.
    PartlyRestored,
}

/// A failed `liveup upgrade`: its outcome and why.
#[derive(Debug, thiserror::Error)]
#[error("{why}")]
pub struct UpgradeError {
    pub outcome: Outcome,
    why: String,
}

impl UpgradeError {
    pub fn new(outcome: Outcome, why: &anyhow::Error) -> Self {
        UpgradeError {
            outcome,
            why: format!("{why:#}"),
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self.outcome {
            Outcome::Refused => 3,
            Outcome::RolledBack => 4,
            Outcome::Incomplete => 5,
            Outcome::PartlyRestored => 6,
        }
    }
}

/// `liveup upgrade --json`'s line for a failure: the outcome, the exit
/// code and the error.
pub fn failure_json(e: &anyhow::Error) -> serde_json::Value {
    let (outcome, code) = match e.downcast_ref::<UpgradeError>() {
        Some(u) => (
            match u.outcome {
                Outcome::Refused => "refused",
                Outcome::RolledBack => "rolled-back",
                Outcome::Incomplete => "rollback-incomplete",
                Outcome::PartlyRestored => "partly-restored",
            },
            u.exit_code(),
        ),
        None => ("error", 1),
    };
    serde_json::json!({"outcome": outcome, "exit_code": code, "error": format!("{e:#}")})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_has_its_own_exit_code() {
        let e = anyhow::anyhow!("root cause").context("what failed");
        let codes: Vec<u8> = [
            Outcome::Refused,
            Outcome::RolledBack,
            Outcome::Incomplete,
            Outcome::PartlyRestored,
        ]
        .into_iter()
        .map(|o| UpgradeError::new(o, &e).exit_code())
        .collect();
        assert_eq!(codes, [3, 4, 5, 6]);
        let j = failure_json(&UpgradeError::new(Outcome::RolledBack, &e).into());
        assert_eq!(j["outcome"], "rolled-back");
        assert_eq!(j["exit_code"], 4);
        assert_eq!(failure_json(&e)["exit_code"], 1);
        // the whole chain is kept in the message
        let m = UpgradeError::new(Outcome::Refused, &e).to_string();
        assert!(m.contains("what failed") && m.contains("root cause"), "{m}");
    }
}
