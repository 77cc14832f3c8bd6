//! The `liveup migrate` command line; `send`'s arguments and run are in
//! cli/send.rs.

mod send;

pub use send::SendArgs;

use super::auth::{self, Key};
use super::session::{self, ListenOptions, MigrateError, ReceiveOptions};
use super::spec::{Names, Policy};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Subcommand)]
pub enum MigrateCmd {
    /// Migrate a running VM to a host where `liveup migrate listen` (which
    /// starts the VM's QEMU itself) or `receive` waits. Measures the link,
    /// the VM's dirty rate and both hosts, prints the plan and why,
    /// migrates with a progress bar, and reports.
    Send(SendArgs),
    /// Wait for one incoming migration into the QEMU behind --qmp (started
    /// with `-incoming defer -S`); resume it only once everything verified.
    Receive {
        #[arg(long)]
        qmp: PathBuf,
        /// Control address to listen on, e.g. 0.0.0.0:4444.
        #[arg(long)]
        listen: String,
        /// The migration key both hosts hold (`liveup migrate keygen`).
        #[arg(long, env = "LIVEUP_MIGRATE_KEY", default_value = auth::DEFAULT_KEY)]
        key: PathBuf,
        /// Seconds to wait for the source, or on a silent stream.
        #[arg(long, default_value_t = 120)]
        idle_timeout: u64,
        #[arg(long)]
        json: bool,
    },
    /// The destination service: wait for authenticated sources and start
    /// each VM's QEMU from the description the source sends (files only in
    /// --pool directories, NICs only on --network bridges), then receive
    /// the migration into it. Several migrations at once (--max-sessions).
    Listen {
        /// Control address to listen on, e.g. 0.0.0.0:4444.
        #[arg(long)]
        listen: String,
        /// The migration key both hosts hold (`liveup migrate keygen`).
        #[arg(long, env = "LIVEUP_MIGRATE_KEY", default_value = auth::DEFAULT_KEY)]
        key: PathBuf,
        /// A storage pool, NAME=DIR (repeatable).
        #[arg(long = "pool")]
        pools: Vec<String>,
        /// A network, NAME=BRIDGE (repeatable).
        #[arg(long = "network")]
        networks: Vec<String>,
        /// The QEMU to start (or a wrapper taking QEMU's arguments).
        #[arg(long, default_value = "qemu-system-x86_64")]
        qemu: String,
        /// QMP sockets and QEMU logs (as QEMU sees it, inside --root).
        #[arg(long, default_value = "/run/liveup/incoming")]
        run_dir: PathBuf,
        /// QEMU runs chrooted here; --pool and --run-dir are paths inside.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Each VM's RAM in a KRAM area of its own (vm-NAME), and the VM
        /// managed by `liveup vm` once it runs here, so that a hot-upgrade
        /// of this host keeps it. Needs the source's RAM to be backend
        /// ram0 (`liveup vm start`).
        #[arg(long)]
        kram: bool,
        #[arg(long, default_value_t = 65536)]
        max_memory_mib: u64,
        #[arg(long, default_value_t = 64)]
        max_vcpus: u32,
        /// The most RAM (MiB) of all VMs that arrived here, the arriving
        /// one included: with --kram every KRAM area vm-* on this host
        /// counts, otherwise the VMs this service started that still run.
        #[arg(long)]
        max_total_memory_mib: Option<u64>,
        /// Accept VMs with `-cpu host` (only where all hosts have the same
        /// CPUs).
        #[arg(long)]
        allow_host_cpu: bool,
        /// Seconds a session may wait on a silent source or stream.
        #[arg(long, default_value_t = 120)]
        idle_timeout: u64,
        /// End after one migration; its result is the exit status.
        #[arg(long)]
        once: bool,
        /// The most migrations received at once; a further source waits
        /// until one ends.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        max_sessions: u16,
    },
    /// Make a new migration key file (32 random bytes, hex, mode 0600);
    /// copy it to every host that may send or receive VMs.
    Keygen {
        /// Where to write it (an existing file is not replaced).
        #[arg(default_value = auth::DEFAULT_KEY)]
        path: PathBuf,
    },
    /// The running `send` of the VM behind --qmp: its last progress event
    /// (one JSON line). Exit 8 when none runs.
    Status {
        /// The source QEMU's QMP socket, as given to `send`.
        #[arg(long)]
        qmp: PathBuf,
    },
    /// Stop the running `send` of the VM behind --qmp: the VM keeps running
    /// here and `send` exits 5. Exit 1 when it is too late (the source
    /// completed: the VM is about to run on the destination); 8 when no
    /// send runs.
    Cancel {
        /// The source QEMU's QMP socket, as given to `send`.
        #[arg(long)]
        qmp: PathBuf,
    },
    /// What this host offers for QAT: devices in sysfs, libqatzip, whether
    /// a session gets hardware.
    Qat {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("too late to cancel: the source completed, the VM is about to run on the destination")]
    TooLate,
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Migrate(m) => m.exit_code(),
            CliError::Json(_) | CliError::TooLate => 1,
        }
    }
}

/// The QMP socket of a VM `liveup vm start` started.
fn managed_qmp(name: &str) -> Result<PathBuf, CliError> {
    let vms = crate::upgrade::vm::managed_vms().map_err(|e| CliError::Usage(format!("{e:#}")))?;
    vms.iter()
        .find(|v| v.name == name)
        .map(|v| v.qmp_host())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "no VM named {name} was started by `liveup vm start` (give --qmp)"
            ))
        })
}

fn load_key(path: &std::path::Path) -> Result<Key, CliError> {
    Key::load(path).map_err(|e| MigrateError::Auth(e.to_string()).into())
}

pub fn run(cmd: MigrateCmd) -> Result<(), CliError> {
    match cmd {
        MigrateCmd::Send(args) => send::send(args),
        MigrateCmd::Receive {
            qmp,
            listen,
            key,
            idle_timeout,
            json,
        } => {
            let opts = ReceiveOptions {
                key: load_key(&key)?,
                qmp,
                listen,
                idle_timeout: Duration::from_secs(idle_timeout),
            };
            let state = session::receive(&opts, |line| log::info!("receive: {line}"))?;
            if json {
                println!("{}", serde_json::json!({ "runstate": state }));
            }
            Ok(())
        }
        MigrateCmd::Listen {
            listen,
            key,
            pools,
            networks,
            qemu,
            run_dir,
            root,
            kram,
            max_memory_mib,
            max_vcpus,
            max_total_memory_mib,
            allow_host_cpu,
            idle_timeout,
            once,
            max_sessions,
        } => {
            let usage = |e: super::spec::SpecError| CliError::Usage(e.to_string());
            let opts = ListenOptions {
                listen,
                key: load_key(&key)?,
                policy: Policy {
                    pools: Names::parse(&pools).map_err(usage)?,
                    networks: Names::parse(&networks).map_err(usage)?,
                    max_memory_mib,
                    max_vcpus,
                    allow_host_cpu,
                },
                qemu,
                run_dir,
                root,
                kram,
                idle_timeout: Duration::from_secs(idle_timeout),
                once,
                max_total_memory_mib,
                max_sessions: usize::from(max_sessions),
            };
            session::listen(&opts, |line| log::info!("listen: {line}"))?;
            Ok(())
        }
        MigrateCmd::Status { qmp } => {
            println!("{}", session::request(&qmp, "status")?);
            Ok(())
        }
        MigrateCmd::Cancel { qmp } => {
            let a = session::request(&qmp, "cancel")?;
            println!("{a}");
            if a.contains("\"accepted\":true") {
                Ok(())
            } else {
                Err(CliError::TooLate)
            }
        }
        MigrateCmd::Keygen { path } => {
            Key::generate(&path).map_err(|e| MigrateError::Auth(e.to_string()))?;
            println!(
                "new migration key in {} (mode 0600): copy it to the other hosts",
                path.display()
            );
            Ok(())
        }
        MigrateCmd::Qat { json } => {
            let devs = qatzip_sys::devices();
            let (lib, hw) = super::facts::qat_probe();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "devices": devs,
                        "libqatzip": lib.as_ref().map(|l| l.name().to_string()),
                        "hardware_session": hw,
                    }))?
                );
            } else {
                println!("QAT devices: {}", devs.len());
                for d in &devs {
                    println!(
                        "  {} {} {} driver={} numa={}",
                        d.address,
                        d.family,
                        if d.virtual_function { "VF" } else { "PF" },
                        d.driver.as_deref().unwrap_or("-"),
                        d.numa_node.map_or("-".into(), |n| n.to_string())
                    );
                }
                match &lib {
                    Some(l) => println!(
                        "libqatzip: {} ({})",
                        l.name(),
                        if hw { "QAT hardware session" } else { "software fallback only" }
                    ),
                    None => println!("libqatzip: not found (codec qat unavailable; gzip is the software equivalent)"),
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_qmp_socket_is_a_clear_error_with_its_exit_code() {
        let key = std::env::temp_dir().join(format!("liveup-cli-key-{}", std::process::id()));
        let _ = std::fs::remove_file(&key);
        Key::generate(&key).unwrap();
        let cmd = MigrateCmd::Send(SendArgs {
            vm: None,
            qmp: Some("/nonexistent/qmp.sock".into()),
            pools: Vec::new(),
            rename: None,
            to: "127.0.0.1:1".into(),
            key: key.clone(),
            mode: None,
            codec: None,
            level: None,
            threads: None,
            chunk_size: None,
            downtime_ms: None,
            xbzrle_cache: None,
            converge: None,
            dirty_ms: 500,
            timeout: 10,
            plan_only: true,
            json: true,
            stall_timeout: 15,
            x_corrupt_chunk: None,
        });
        let e = run(cmd).unwrap_err();
        std::fs::remove_file(&key).unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("/nonexistent/qmp.sock"), "{e}");
    }
}
