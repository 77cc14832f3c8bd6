//! The commit step of `liveup migrate send`: the one step after which the
//! source must never resume its copy on its own.

use super::MigrateError;
use crate::migrate::control::{unexpected, Control, Ctl};
use crate::qmp::RunState;
use std::time::Duration;

/// How long the source waits for the destination's answer to Verify and
/// Commit (the source VM is paused meanwhile).
pub(super) const CONFIRM_TIMEOUT: Duration = Duration::from_secs(120);

/// Commit: the destination resumes the VM and answers with its run state.
/// Once Commit may have reached the destination, nothing that fails here
/// lets the source resume its copy: a lost answer, a closed or silent
/// connection (after `timeout`) or a destination VM not running is
/// `InDoubt`, and the source stays paused.
pub(super) fn commit(c: &mut Control, timeout: Duration) -> Result<String, MigrateError> {
    let in_doubt = |reason: String| MigrateError::InDoubt { reason };
    c.stream()
        .set_read_timeout(Some(timeout))
        .map_err(|e| in_doubt(format!("control connection: {e}")))?;
    c.send(&Ctl::Commit)
        .map_err(|e| in_doubt(format!("sending commit: {e}")))?;
    match c.recv() {
        Ok(Ctl::Committed { runstate }) if RunState::parse(&runstate) == RunState::Running => {
            Ok(runstate)
        }
        Ok(Ctl::Committed { runstate }) => Err(in_doubt(format!(
            "destination VM is {runstate} after commit"
        ))),
        Ok(got) => Err(in_doubt(unexpected("committed", got).to_string())),
        Err(e) => Err(in_doubt(format!(
            "waiting for the destination's commit: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};

    /// A destination that reads the commit and then does `then` with the
    /// connection; the source's result.
    fn against(then: impl FnOnce(&mut TcpStream) + Send + 'static) -> Result<String, MigrateError> {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let dst = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut line = String::new();
            BufReader::new(s.try_clone().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert!(line.contains("\"commit\""), "{line}");
            then(&mut s);
            // keep the connection open a while (the silent case)
            std::thread::sleep(Duration::from_millis(600));
        });
        let mut c = Control::new(TcpStream::connect(addr).unwrap()).unwrap();
        let r = commit(&mut c, Duration::from_millis(300));
        dst.join().unwrap();
        r
    }

    #[test]
    fn a_running_destination_commits() {
        let r = against(|s| {
            s.write_all(b"{\"msg\":\"committed\",\"runstate\":\"running\"}\n")
                .unwrap()
        });
        assert_eq!(r.unwrap(), "running");
    }

    /// What the fake destination does after reading the commit.
    type Then = Box<dyn FnOnce(&mut TcpStream) + Send>;

    #[test]
    fn every_failure_after_commit_is_in_doubt() {
        let cases: Vec<(&str, Then)> = vec![
            (
                "closed",
                Box::new(|s: &mut TcpStream| s.shutdown(std::net::Shutdown::Both).unwrap()),
            ),
            ("silent", Box::new(|_: &mut TcpStream| {})),
            (
                "paused",
                Box::new(|s: &mut TcpStream| {
                    s.write_all(b"{\"msg\":\"committed\",\"runstate\":\"paused\"}\n")
                        .unwrap()
                }),
            ),
            (
                "error",
                Box::new(|s: &mut TcpStream| {
                    s.write_all(b"{\"msg\":\"error\",\"message\":\"cont failed\"}\n")
                        .unwrap()
                }),
            ),
            (
                "garbage",
                Box::new(|s: &mut TcpStream| s.write_all(b"{not json\n").unwrap()),
            ),
        ];
        for (name, then) in cases {
            match against(then) {
                Err(e @ MigrateError::InDoubt { .. }) => {
                    assert_eq!(e.exit_code(), 6, "{name}");
                    assert!(
                        e.to_string().contains("source VM is left paused"),
                        "{name}: {e}"
                    );
                }
                r => panic!("{name}: {r:?}"),
            }
        }
    }
}
