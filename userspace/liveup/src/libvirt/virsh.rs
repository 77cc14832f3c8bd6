//! What liveup asks of libvirt, as a trait ([`Libvirt`]) so that the
//! logic above it runs against a fake in unit tests; [`Virsh`] does it with
//! `virsh -c qemu:///system` (libvirt's own client: no C binding to link,
//! and what an operator would type to see the same).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum VirshError {
    #[error("cannot run virsh: {0}")]
    Run(#[source] std::io::Error),
    #[error("virsh {args} failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
}

/// libvirt, as far as liveup uses it. Domains are named by their names.
pub trait Libvirt: Sync {
    /// Names of the running domains.
    fn running(&self) -> Result<Vec<String>, VirshError>;
    /// A domain's live XML.
    fn dumpxml(&self, name: &str) -> Result<String, VirshError>;
    /// Whether the domain is persistent (defined, not only running).
    fn persistent(&self, name: &str) -> Result<bool, VirshError>;
    /// A QMP command through libvirt's monitor connection (libvirt marks
    /// the domain tainted, custom-monitor); its answer.
    fn monitor(&self, name: &str, command: &str) -> Result<String, VirshError>;
    /// Saves the running domain to libvirt's managed save image and stops
    /// it; `start` restores it from there.
    fn managedsave(&self, name: &str) -> Result<(), VirshError>;
    fn managedsave_dumpxml(&self, name: &str) -> Result<String, VirshError>;
    /// Replaces the XML in the managed save image (the domain stays
    /// running after restore).
    fn managedsave_define(&self, name: &str, xml: &str) -> Result<(), VirshError>;
    fn start(&self, name: &str) -> Result<(), VirshError>;
    /// The guest's wall clock set to the host's through its agent
    /// (`virsh domtime --now`).
    fn set_time(&self, name: &str) -> Result<(), VirshError> {
        let _ = name;
        Ok(())
    }
    /// The domain's QEMU process.
    fn qemu_pid(&self, name: &str) -> Option<i32>;
}

/// [`Libvirt`] through `virsh`.
pub struct Virsh {
    pub uri: String,
}

impl Default for Virsh {
    fn default() -> Self {
        Virsh {
            uri: "qemu:///system".into(),
        }
    }
}

impl Virsh {
    /// Whether virsh is installed at all (a host without libvirt).
    pub fn installed() -> bool {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("virsh").is_file()))
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, VirshError> {
        let mut c = Command::new("virsh");
        c.arg("-q").arg("-c").arg(&self.uri).args(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = c.spawn().map_err(VirshError::Run)?;
        if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
            w.write_all(text.as_bytes()).map_err(VirshError::Run)?;
        }
        let out = child.wait_with_output().map_err(VirshError::Run)?;
        if !out.status.success() {
            return Err(VirshError::Failed {
                args: args.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Libvirt for Virsh {
    fn running(&self) -> Result<Vec<String>, VirshError> {
        Ok(self
            .run(&["list", "--name", "--state-running"], None)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }
    fn dumpxml(&self, name: &str) -> Result<String, VirshError> {
        self.run(&["dumpxml", name], None)
    }
    fn persistent(&self, name: &str) -> Result<bool, VirshError> {
        Ok(self.run(&["dominfo", name], None)?.lines().any(|l| {
            let mut kv = l.splitn(2, ':');
            kv.next().map(str::trim) == Some("Persistent")
                && kv.next().map(str::trim) == Some("yes")
        }))
    }
    fn monitor(&self, name: &str, command: &str) -> Result<String, VirshError> {
        self.run(&["qemu-monitor-command", name, command], None)
    }
    fn managedsave(&self, name: &str) -> Result<(), VirshError> {
        self.run(&["managedsave", name], None).map(drop)
    }
    fn managedsave_dumpxml(&self, name: &str) -> Result<String, VirshError> {
        self.run(&["managedsave-dumpxml", name], None)
    }
    fn managedsave_define(&self, name: &str, xml: &str) -> Result<(), VirshError> {
        // virsh reads the XML from a file only
        let f = std::env::temp_dir().join(format!("liveup-{}-{name}.xml", std::process::id()));
        std::fs::write(&f, xml).map_err(VirshError::Run)?;
        let path = f.display().to_string();
        let r = self.run(&["managedsave-define", name, &path, "--running"], None);
        let _ = std::fs::remove_file(&f);
        r.map(drop)
    }
    fn start(&self, name: &str) -> Result<(), VirshError> {
        self.run(&["start", name], None).map(drop)
    }
    fn set_time(&self, name: &str) -> Result<(), VirshError> {
        self.run(&["domtime", name, "--now"], None).map(drop)
    }
    fn qemu_pid(&self, name: &str) -> Option<i32> {
        let p = PathBuf::from(format!("/run/libvirt/qemu/{name}.pid"));
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    }
}
