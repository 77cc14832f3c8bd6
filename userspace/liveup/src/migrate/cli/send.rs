//! `liveup migrate send`: its arguments, and the send they make (the
//! options checked, the migration run, a VM `liveup vm start` started
//! forgotten here once it runs there, the report or error printed).

use super::{load_key, managed_qmp, CliError};
use crate::migrate::auth;
use crate::migrate::codec::CodecKind;
use crate::migrate::plan::{Converge, Mode, Prefs};
use crate::migrate::session::{self, Event, Output, SendOptions, SendResult};
use crate::migrate::spec::Names;
use crate::units::parse_size;
use std::path::PathBuf;
use std::time::Duration;

// The arguments of `migrate send` (a plain comment: its help text is
// `MigrateCmd::Send`'s).
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// A VM `liveup vm start` started (its QMP socket is found).
    #[arg(required_unless_present = "qmp", conflicts_with = "qmp")]
    pub(super) vm: Option<String>,
    /// The source QEMU's QMP socket.
    #[arg(long)]
    pub(super) qmp: Option<PathBuf>,
    /// A storage pool, NAME=DIR (repeatable): a destination service
    /// gets the VM's files as paths in pools of the same names.
    #[arg(long = "pool")]
    pub(super) pools: Vec<String>,
    /// The VM's name on a destination service (default: its name here).
    #[arg(long = "as")]
    pub(super) rename: Option<String>,
    /// The destination agent, HOST:PORT.
    #[arg(long)]
    pub(super) to: String,
    /// The migration key both hosts hold (`liveup migrate keygen`).
    #[arg(long, env = "LIVEUP_MIGRATE_KEY", default_value = auth::DEFAULT_KEY)]
    pub(super) key: PathBuf,
    /// Force native multifd or the relay.
    #[arg(long)]
    pub(super) mode: Option<Mode>,
    /// Force a codec (native: none, gzip=zlib, zstd, qat=qatzip).
    #[arg(long)]
    pub(super) codec: Option<CodecKind>,
    #[arg(long)]
    pub(super) level: Option<u32>,
    /// Compression threads = relay connections = multifd channels.
    #[arg(long)]
    pub(super) threads: Option<u32>,
    /// Relay chunk size, e.g. 256K, 1M.
    #[arg(long)]
    pub(super) chunk_size: Option<String>,
    /// QEMU downtime-limit, milliseconds.
    #[arg(long)]
    pub(super) downtime_ms: Option<u64>,
    /// XBZRLE cache size (relay mode), e.g. 64M; 0 disables.
    #[arg(long)]
    pub(super) xbzrle_cache: Option<String>,
    #[arg(long)]
    pub(super) converge: Option<Converge>,
    /// Milliseconds of dirty-rate sampling (whole seconds on QEMU < 8.2;
    /// at least 100).
    #[arg(long, default_value_t = 500)]
    pub(super) dirty_ms: u64,
    /// Give up (and keep the VM here) after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub(super) timeout: u64,
    /// Measure and print the plan, do not migrate.
    #[arg(long)]
    pub(super) plan_only: bool,
    /// Print events instead of text, one JSON object a line: plan,
    /// phase, progress (each second), then result or error.
    #[arg(long)]
    pub(super) json: bool,
    /// Relay: seconds a stalled connection may block before the
    /// migration is abandoned (the VM stays here).
    #[arg(long, default_value_t = 15)]
    pub(super) stall_timeout: u64,
    /// Test hook: corrupt relay chunk N in flight.
    #[arg(long, hide = true)]
    pub(super) x_corrupt_chunk: Option<u64>,
}

/// Run `liveup migrate send` with `args`.
pub(super) fn send(args: SendArgs) -> Result<(), CliError> {
    let SendArgs {
        vm,
        qmp,
        pools,
        rename,
        to,
        key,
        mode,
        codec,
        level,
        threads,
        chunk_size,
        downtime_ms,
        xbzrle_cache,
        converge,
        dirty_ms,
        timeout,
        plan_only,
        json,
        stall_timeout,
        x_corrupt_chunk,
    } = args;
    let chunk_size = chunk_size
        .map(|s| {
            parse_size(&s)
                .map(|v| v as usize)
                .map_err(|e| e.to_string())
        })
        .transpose()
        .map_err(CliError::Usage)?;
    if chunk_size.is_some_and(|c| c == 0 || c > crate::migrate::relay::MAX_CHUNK) {
        return Err(CliError::Usage(format!(
            "--chunk-size must be 1..={} bytes",
            crate::migrate::relay::MAX_CHUNK
        )));
    }
    let xbzrle_cache = xbzrle_cache
        .map(|s| parse_size(&s))
        .transpose()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let managed = vm.clone();
    let qmp = match (qmp, vm) {
        (Some(q), _) => q,
        (None, Some(name)) => managed_qmp(&name)?,
        (None, None) => return Err(CliError::Usage("a VM name or --qmp".into())),
    };
    let opts = SendOptions {
        key: load_key(&key)?,
        qmp,
        pools: Names::parse(&pools).map_err(|e| CliError::Usage(e.to_string()))?,
        rename,
        to,
        prefs: Prefs {
            mode,
            codec,
            level,
            threads,
            chunk_size,
            downtime_ms,
            xbzrle_cache,
            converge,
        },
        dirty_ms,
        timeout: Duration::from_secs(timeout),
        plan_only,
        output: Output::pick(json),
        stall_timeout: Duration::from_secs(stall_timeout),
        corrupt_chunk: x_corrupt_chunk,
    };
    let r = session::send(&opts, |line| {
        if !json {
            println!("{line}");
        }
    });
    // --json: the stream ends with the result or the error (a
    // --plan-only stream with its plan event).
    // A VM `liveup vm start` started now runs on the destination:
    // its source QEMU (paused, migrated) quits and the VM is
    // forgotten here, its KRAM area freed. A failure of that is a
    // warning: the VM runs there.
    if let (Ok(SendResult::Done(_)), Some(name)) = (&r, &managed) {
        let forgot = crate::kram::Kram::open(crate::kram::DEFAULT_DEVICE)
            .map_err(anyhow::Error::from)
            .and_then(|k| crate::upgrade::vm_stop(Some(&k), name, true));
        match forgot {
            Ok(()) => log::info!("VM {name} now runs on {}: its source QEMU quit, its KRAM area freed", opts.to),
            Err(e) => log::warn!("VM {name} now runs on {}, but here it is not cleaned up: {e:#} (liveup vm stop {name} --delete-area)", opts.to),
        }
    }
    match (r, json) {
        (Ok(SendResult::Done(rep)), true) => Event::Result(&rep).emit(),
        (Ok(SendResult::Done(rep)), false) => println!("{rep}"),
        (Ok(SendResult::Plan(..)), _) => {}
        (Err(e), json) => {
            let e = CliError::from(e);
            if json {
                Event::Error {
                    exit_code: e.exit_code(),
                    message: &e.to_string(),
                }
                .emit();
            }
            return Err(e);
        }
    }
    Ok(())
}
