//! Ctrl-C and friends during the blackout. Killed there, liveup would
//! leave every VM paused (and a kept device frozen). So from the first
//! pause to the kexec SIGINT, SIGTERM, SIGHUP and SIGQUIT are held
//! (blocked for this thread and the threads it starts), and the blackout
//! looks for one between its steps: one that came ends the upgrade like a
//! failed step, rolled back, exit 4, saying which signal. `restore` holds
//! them from its start to its end and says afterwards which came.

use anyhow::{bail, Result};

const HELD: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

fn held_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset adds valid signals.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        for sig in HELD {
            libc::sigaddset(&mut s, sig);
        }
        s
    }
}

/// The signals held until dropped (then the previous mask is back; one
/// that came and was not taken by [`Held::check`] is taken and reported
/// first, so it cannot kill liveup before it said what it did).
pub(super) struct Held {
    old: libc::sigset_t,
}

impl Held {
    pub(super) fn new() -> Result<Held> {
        let set = held_set();
        // SAFETY: `old` is written by pthread_sigmask before it is read.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid set pointers.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
        if rc != 0 {
            bail!(
                "cannot hold signals: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        Ok(Held { old })
    }

    /// Whether a held signal came (not taken).
    pub(super) fn pending(&self) -> bool {
        Held::first_pending().is_some()
    }

    /// The first held signal that came, if any (not taken).
    fn first_pending() -> Option<libc::c_int> {
        // SAFETY: `pending` is written by sigpending before it is read.
        let mut pending: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid set pointer; sigismember reads the filled set.
        unsafe {
            if libc::sigpending(&mut pending) != 0 {
                return None;
            }
            HELD.into_iter()
                .find(|&sig| libc::sigismember(&pending, sig) == 1)
        }
    }

    /// A held signal that came since, taken; None if none.
    fn take() -> Option<libc::c_int> {
        let sig = Held::first_pending()?;
        // SAFETY: a valid set holding only `sig`, which is pending, so
        // sigwait returns at once with it.
        unsafe {
            let mut one: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut one);
            libc::sigaddset(&mut one, sig);
            let mut got = 0;
            libc::sigwait(&one, &mut got);
        }
        Some(sig)
    }

    /// The name of a held signal that came, taken; None if none.
    pub(super) fn taken(&self) -> Option<&'static str> {
        Held::take().map(name)
    }

    /// Err if a held signal came: the caller rolls back.
    pub(super) fn check(&self) -> Result<()> {
        match Held::take() {
            Some(sig) => bail!("interrupted by {}", name(sig)),
            None => Ok(()),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(sig) = Held::take() {
            log::warn!(
                "{} came; it was held until what liveup had begun was finished or undone",
                name(sig)
            );
        }
        // SAFETY: restores the mask saved in `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        _ => "a signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_signal_is_reported_once_not_fatal() {
        // Run in a thread of its own: the mask is per thread, and the
        // signal is sent to that thread only.
        std::thread::spawn(|| {
            let h = Held::new().unwrap();
            assert!(h.check().is_ok());
            // SAFETY: SIGTERM to this thread, which holds it.
            unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGTERM) };
            assert!(h.pending());
            let e = h.check().unwrap_err().to_string();
            assert_eq!(e, "interrupted by SIGTERM");
            assert!(h.check().is_ok(), "taken once");
            // restore's way: the name, once, after the work is done
            // SAFETY: as above.
            unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGINT) };
            assert_eq!(h.taken(), Some("SIGINT"));
            assert_eq!(h.taken(), None);
            drop(h);
        })
        .join()
        .unwrap();
    }
}
