//! Measuring a host and its QEMU for the plan: CPU idle, memory, QAT,
//! QEMU's migration features (from its QMP schema), the guest's dirty rate
//! and CPU time spent.

use super::plan::{HostFacts, QemuFacts};
use crate::qmp::{Monitor, Qmp, QmpError};
use qatzip_sys::{QatZip, Session, SessionConfig};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// (busy, total) jiffies of all CPUs from /proc/stat.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Idle CPUs (fractional) measured over `over`.
pub fn idle_cpus(over: Duration) -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let Some((b0, t0)) = cpu_jiffies() else {
        return cpus;
    };
    std::thread::sleep(over);
    let Some((b1, t1)) = cpu_jiffies() else {
        return cpus;
    };
    if t1 <= t0 {
        return cpus;
    }
    let busy = (b1 - b0) as f64 / (t1 - t0) as f64;
    ((1.0 - busy) * cpus).clamp(0.0, cpus)
}

pub fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0, |k| k * 1024)
}

/// libqatzip, if it loads, and whether a session gets QAT hardware.
pub fn qat_probe() -> (Option<Arc<QatZip>>, bool) {
    match QatZip::load() {
        Ok(lib) => {
            let hw = Session::new(&lib, SessionConfig::default()).is_ok_and(|s| s.hardware());
            (Some(lib), hw)
        }
        Err(_) => (None, false),
    }
}

/// What a QEMU offers for migration, from query-version, the capabilities
/// and the QMP schema (`multifd-compression`'s enum values).
pub fn qemu_facts(q: &mut Qmp) -> Result<QemuFacts, QmpError> {
    let v = q.execute("query-version", json!({}))?;
    let (a, b, c) = crate::qmp::qemu_version(&v).unwrap_or_default();
    let version = format!("{a}.{b}.{c}");
    let cap_states = q.execute("query-migrate-capabilities", json!({}))?;
    let cap_list = cap_states.as_array().cloned().unwrap_or_default();
    let caps: Vec<String> = cap_list
        .iter()
        .filter_map(|c| c["capability"].as_str().map(str::to_string))
        .collect();
    let cap_on = |name: &str| {
        cap_list
            .iter()
            .any(|c| c["capability"] == name && c["state"] == true)
    };
    let schema = q.execute("query-qmp-schema", json!({}))?;
    let compressions = schema_enum(&schema, "migrate-set-parameters", "multifd-compression");
    let dirty_ms = schema_has_arg(&schema, "calc-dirty-rate", "calc-time-unit");
    let kvm = q
        .execute("query-kvm", json!({}))
        .map(|r| r["enabled"].as_bool().unwrap_or(false))
        .unwrap_or(false);
    let dirty_limit = caps.iter().any(|c| c == "dirty-limit");
    let dirty_ring = kvm && dirty_limit && {
        let before = (cap_on("auto-converge"), cap_on("dirty-limit"));
        probe_dirty_ring(q, before)?
    };
    let vcpus = q
        .execute("query-cpus-fast", json!({}))
        .map(|r| r.as_array().map_or(0, |a| a.len() as u32))
        .unwrap_or(0);
    Ok(QemuFacts {
        version,
        multifd: caps.iter().any(|c| c == "multifd"),
        compressions,
        dirty_limit,
        xbzrle: caps.iter().any(|c| c == "xbzrle"),
        kvm,
        dirty_ms,
        dirty_ring,
        vcpus,
    })
}

/// Whether KVM's dirty ring is on, which QEMU says only by refusing the
/// `dirty-limit` capability without it: set it (with auto-converge off,
/// which it conflicts with) and put both back as they were (`before`:
/// auto-converge, dirty-limit). No migration runs yet. An error when they
/// cannot be put back: the VM's migration settings are not left changed
/// behind the operator's back.
fn probe_dirty_ring<M: Monitor>(q: &mut M, before: (bool, bool)) -> Result<bool, QmpError> {
    let set = |q: &mut M, ac: bool, dl: bool| {
        q.execute(
            "migrate-set-capabilities",
            json!({"capabilities": [
                {"capability": "auto-converge", "state": ac},
                {"capability": "dirty-limit", "state": dl}]}),
        )
    };
    let ring = set(q, false, true).is_ok();
    set(q, before.0, before.1)?;
    Ok(ring)
}

/// Member `member` of command `cmd`'s argument type, and the schema by
/// name. (query-qmp-schema names types by number: follow the references.)
fn schema_arg<'a>(
    schema: &'a Value,
    cmd: &str,
    member: &str,
) -> Option<(&'a Value, HashMap<&'a str, &'a Value>)> {
    let by: HashMap<&str, &Value> = schema
        .as_array()?
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e)))
        .collect();
    let m = by
        .get(cmd)
        .and_then(|c| c["arg-type"].as_str())
        .and_then(|t| by.get(t))
        .and_then(|o| o["members"].as_array())
        .and_then(|ms| ms.iter().find(|m| m["name"] == member))?;
    Some((m, by))
}

/// Whether command `cmd` takes an argument named `member`.
pub fn schema_has_arg(schema: &Value, cmd: &str, member: &str) -> bool {
    schema_arg(schema, cmd, member).is_some()
}

/// The values of enum member `member` of command `cmd`'s argument type.
pub fn schema_enum(schema: &Value, cmd: &str, member: &str) -> Vec<String> {
    schema_arg(schema, cmd, member)
        .and_then(|(m, by)| by.get(m["type"].as_str()?).copied())
        .and_then(|e| e["values"].as_array())
        .map(|vs| {
            vs.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// This host's facts with `q`'s QEMU.
pub fn host_facts(q: &mut Qmp, qat_lib: bool, qat_hw: bool) -> Result<HostFacts, QmpError> {
    let qemu = qemu_facts(q)?;
    Ok(host_facts_with(
        qemu,
        qat_lib,
        qat_hw,
        idle_cpus(IDLE_SAMPLE),
    ))
}

/// How long the idle-CPU sample runs.
pub const IDLE_SAMPLE: Duration = Duration::from_millis(300);

/// This host's facts, its QEMU's and idle CPUs already measured.
pub fn host_facts_with(qemu: QemuFacts, qat_lib: bool, qat_hw: bool, idle_cpus: f64) -> HostFacts {
    HostFacts {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()) as u32,
        idle_cpus,
        mem_available: mem_available(),
        qat_devices: qatzip_sys::devices().len() as u32,
        qatzip: qat_lib,
        qat_hw,
        qemu,
    }
}

/// Guest RAM size (query-memory-size-summary).
pub fn ram_bytes(q: &mut Qmp) -> Result<u64, QmpError> {
    let r = q.execute("query-memory-size-summary", json!({}))?;
    Ok(r["base-memory"].as_u64().unwrap_or(0) + r["plugged-memory"].as_u64().unwrap_or(0))
}

/// A dirty-rate measurement QEMU is making (calc-dirty-rate, page
/// sampling): started first, collected after the other measurements, so
/// the plan does not wait for it on top of them.
pub struct DirtyRate {
    deadline: Instant,
}

/// Start measuring the guest's dirty rate over `ms` milliseconds (rounded
/// up to whole seconds where QEMU lacks `calc-time-unit`, before 8.2).
pub fn start_dirty_rate(q: &mut Qmp, ms: u64, ms_unit: bool) -> Result<DirtyRate, QmpError> {
    let ms = ms.max(100);
    q.execute("calc-dirty-rate", dirty_rate_args(ms, ms_unit))?;
    Ok(DirtyRate {
        deadline: Instant::now() + Duration::from_millis(ms) + Duration::from_secs(10),
    })
}

/// calc-dirty-rate's arguments for a sample of `ms` milliseconds.
fn dirty_rate_args(ms: u64, ms_unit: bool) -> Value {
    if ms_unit {
        json!({"calc-time": ms, "calc-time-unit": "millisecond", "mode": "page-sampling"})
    } else {
        json!({"calc-time": ms.div_ceil(1000), "mode": "page-sampling"})
    }
}

impl DirtyRate {
    /// The measured rate in bytes/s, waiting for QEMU to finish.
    pub fn collect(self, q: &mut Qmp) -> Result<f64, QmpError> {
        loop {
            let r = q.execute("query-dirty-rate", json!({}))?;
            if r["status"] == "measured" {
                return Ok(r["dirty-rate"].as_f64().unwrap_or(0.0) * 1024.0 * 1024.0);
            }
            if Instant::now() > self.deadline {
                return Err(QmpError::Timeout("calc-dirty-rate".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
pub fn proc_cpu_secs(pid: i32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((ut + st) as f64 / hz)
}

/// CPU seconds this process has used.
pub fn self_cpu_secs() -> f64 {
    proc_cpu_secs(std::process::id() as i32).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A QEMU whose dirty ring is on or off; it refuses dirty-limit with
    /// auto-converge on, as QEMU does, and can refuse every set.
    struct Caps {
        ring: bool,
        broken: bool,
        ac: bool,
        dl: bool,
    }

    impl Monitor for Caps {
        fn execute(&mut self, cmd: &str, args: Value) -> Result<Value, QmpError> {
            assert_eq!(cmd, "migrate-set-capabilities");
            let (mut ac, mut dl) = (self.ac, self.dl);
            for c in args["capabilities"].as_array().unwrap() {
                let on = c["state"] == true;
                match c["capability"].as_str().unwrap() {
                    "auto-converge" => ac = on,
                    "dirty-limit" => dl = on,
                    other => panic!("{other}"),
                }
            }
            let refuse = |desc: &str| QmpError::Command {
                cmd: cmd.into(),
                class: "GenericError".into(),
                desc: desc.into(),
            };
            if self.broken {
                return Err(refuse("no"));
            }
            if dl && !self.ring {
                return Err(refuse(
                    "dirty-limit requires KVM with accelerator property 'dirty-ring-size' set",
                ));
            }
            if dl && ac {
                return Err(refuse("dirty-limit conflicts with auto-converge"));
            }
            (self.ac, self.dl) = (ac, dl);
            Ok(json!({}))
        }
        fn wait_migration(&mut self, _: &str, _: Duration) -> Result<(), QmpError> {
            unreachable!()
        }
    }

    #[test]
    fn the_dirty_ring_probe_answers_and_leaves_the_capabilities_as_they_were() {
        for ring in [false, true] {
            for before in [(false, false), (true, false), (false, true)] {
                if before.1 && !ring {
                    continue; // QEMU would not have let dirty-limit be on
                }
                let mut q = Caps {
                    ring,
                    broken: false,
                    ac: before.0,
                    dl: before.1,
                };
                assert_eq!(
                    probe_dirty_ring(&mut q, before).unwrap(),
                    ring,
                    "ring {ring}, {before:?}"
                );
                assert_eq!((q.ac, q.dl), before, "put back");
            }
        }
        // capabilities that cannot be put back are an error, not a guess
        let mut q = Caps {
            ring: true,
            broken: true,
            ac: true,
            dl: false,
        };
        assert!(probe_dirty_ring(&mut q, (true, false)).is_err());
    }

    #[test]
    fn schema_enum_follows_numbered_types() {
        let schema = json!([
            {"name": "migrate-set-parameters", "meta-type": "command", "arg-type": "153", "ret-type": "0"},
            {"name": "153", "meta-type": "object", "members": [
                {"name": "downtime-limit", "type": "int"},
                {"name": "multifd-compression", "type": "446"}]},
            {"name": "446", "meta-type": "enum", "values": ["none", "zlib", "zstd", "qatzip"]}
        ]);
        assert_eq!(
            schema_enum(&schema, "migrate-set-parameters", "multifd-compression"),
            ["none", "zlib", "zstd", "qatzip"]
        );
        assert!(schema_enum(&schema, "migrate-set-parameters", "nope").is_empty());
        assert!(schema_enum(&json!({}), "x", "y").is_empty());
        assert!(schema_has_arg(
            &schema,
            "migrate-set-parameters",
            "downtime-limit"
        ));
        assert!(!schema_has_arg(
            &schema,
            "migrate-set-parameters",
            "calc-time-unit"
        ));
        assert!(!schema_has_arg(
            &schema,
            "calc-dirty-rate",
            "calc-time-unit"
        ));
    }

    #[test]
    fn dirty_rate_sample_in_ms_or_whole_seconds() {
        assert_eq!(dirty_rate_args(500, true)["calc-time"], 500);
        assert_eq!(dirty_rate_args(500, true)["calc-time-unit"], "millisecond");
        assert_eq!(dirty_rate_args(500, false)["calc-time"], 1);
        assert_eq!(dirty_rate_args(2001, false)["calc-time"], 3);
        assert!(dirty_rate_args(500, false).get("calc-time-unit").is_none());
    }

    #[test]
    fn host_measurements_are_plausible() {
        let cpus = std::thread::available_parallelism().unwrap().get() as f64;
        let idle = idle_cpus(Duration::from_millis(50));
        assert!((0.0..=cpus).contains(&idle), "{idle}");
        assert!(mem_available() > 1 << 20);
        // Burn some CPU, and see it counted: 0.1 s of it, within 20 s of
        // wall time (a loaded machine may give this thread little CPU).
        let before = self_cpu_secs();
        let t = Instant::now();
        let mut x = 0u64;
        while self_cpu_secs() - before < 0.1 && t.elapsed() < Duration::from_secs(20) {
            for _ in 0..100_000 {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
        }
        std::hint::black_box(x);
        let used = self_cpu_secs() - before;
        assert!(used >= 0.1, "{used} s of CPU counted in {:?}", t.elapsed());
    }
}
