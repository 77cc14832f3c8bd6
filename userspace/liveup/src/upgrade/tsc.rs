//! The TSC: the clock of the downtime breakdown (it counts on through
//! kexec) and the frequency the next kernel must keep for the VMs.

use super::Qmp;
use anyhow::{Context, Result};
use serde_json::json;
use std::time::{Duration, Instant};

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A TSC reading and the CLOCK_MONOTONIC moment it was taken at: of 16
/// tries, the one whose two clock reads around it lie closest together,
/// so that a preemption between the reads (two QEMUs share the rig's one
/// vCPU with liveup) cannot skew it.
fn stamp() -> (Instant, u64) {
    let mut best: Option<(Duration, Instant, u64)> = None;
    for _ in 0..16 {
        let a = Instant::now();
        let c = rdtsc();
        let b = Instant::now();
        let w = b - a;
        if best.is_none_or(|(bw, _, _)| w < bw) {
            best = Some((w, a + w / 2, c));
        }
    }
    let (_, t, c) = best.expect("16 tries");
    (t, c)
}

/// TSC ticks per second, measured against CLOCK_MONOTONIC: the median of
/// three 50 ms windows, each bounded by a [`stamp`]. (One 50 ms window
/// between two unbracketed reads came out more than 1% off once under a
/// loaded rig, and the next kernel then calibrated its own TSC.)
pub fn tsc_hz() -> f64 {
    let mut r: Vec<f64> = (0..3)
        .map(|_| {
            let (t0, c0) = stamp();
            std::thread::sleep(Duration::from_millis(50));
            let (t1, c1) = stamp();
            c1.wrapping_sub(c0) as f64 / (t1 - t0).as_secs_f64()
        })
        .collect();
    r.sort_by(f64::total_cmp);
    r[1]
}

/// The TSC frequency (kHz) a VM's vCPUs run at: QEMU's `tsc-frequency` of
/// its first CPU, which QEMU took from KVM (the host's tsc_khz) when the VM
/// started and carries in its saved state ever since.
pub(crate) fn vm_tsc_khz(q: &mut Qmp) -> Result<u64> {
    let cpus = q.execute("query-cpus-fast", json!({}))?;
    let path = cpus
        .get(0)
        .and_then(|c| c["qom-path"].as_str())
        .context("query-cpus-fast lists no CPU")?
        .to_string();
    let hz = q.execute(
        "qom-get",
        json!({"path": path, "property": "tsc-frequency"}),
    )?;
    Ok(hz.as_u64().context("tsc-frequency is not a number")? / 1000)
}

/// The TSC frequency the next kernel must keep (`tsc_known_khz=`,
/// patches/0005): the one the VMs run at. VMs that disagree (started under
/// kernels that calibrated differently) get the first one's, with a note;
/// 0 (QEMU did not know it) counts for nothing.
pub(super) fn pick_tsc_khz(vms: &[(String, u64)]) -> (Option<u64>, Option<String>) {
    let known: Vec<&(String, u64)> = vms.iter().filter(|(_, k)| *k != 0).collect();
    let Some((first, khz)) = known.first() else {
        return (None, None);
    };
    let others: Vec<String> = known
        .iter()
        .filter(|(_, k)| k != khz)
        .map(|(n, k)| format!("{n} {k} kHz"))
        .collect();
    let note = (!others.is_empty()).then(|| {
        format!(
            "VMs run at different TSC frequencies; the next kernel keeps {first}'s {khz} kHz ({})",
            others.join(", ")
        )
    });
    (Some(*khz), note)
}

/// The VMs' TSC frequency as the next kernel's `tsc_known_khz=`, if it is
/// within 1% of the rate measured here (kernels' calibrations of one TSC
/// differ by 0.1-0.3%). Anything further off is not the frequency the VMs
/// started under (a QEMU that misreports, a kernel given a wrong value):
/// the next kernel calibrates for itself instead, and the message says why.
pub(super) fn plausible_tsc_khz(khz: u64, measured_khz: f64) -> Result<u64, String> {
    let off = (khz as f64 - measured_khz) / measured_khz;
    if measured_khz > 0.0 && off.abs() <= 0.01 {
        Ok(khz)
    } else {
        Err(format!(
            "the VMs' TSC frequency {khz} kHz is {:+.2}% off the {measured_khz:.0} kHz measured here: \
             not passed to the next kernel (it calibrates its own; a VM may warn of a TSC frequency mismatch)",
            100.0 * off
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::kexec::set_param;
    use super::*;

    #[test]
    fn the_tsc_advances_at_a_plausible_rate() {
        let hz = tsc_hz();
        assert!(hz > 1e7 && hz < 1e11, "{hz}");
    }

    #[test]
    fn the_next_kernel_keeps_the_vms_tsc_frequency() {
        let v = |n: &str, k| (n.to_string(), k);
        assert_eq!(pick_tsc_khz(&[]), (None, None));
        assert_eq!(pick_tsc_khz(&[v("a", 0)]), (None, None));
        assert_eq!(
            pick_tsc_khz(&[v("a", 2293273), v("b", 2293273)]),
            (Some(2293273), None)
        );
        let (k, note) = pick_tsc_khz(&[v("a", 0), v("b", 2300026), v("c", 2293273)]);
        assert_eq!(k, Some(2300026));
        assert!(note.unwrap().contains("b's 2300026 kHz (c 2293273 kHz)"));
        assert_eq!(
            set_param("ro tsc_known_khz=1 quiet", "tsc_known_khz", "2293273"),
            "ro quiet tsc_known_khz=2293273"
        );
        assert_eq!(set_param("", "tsc_known_khz", "5"), "tsc_known_khz=5");
    }

    #[test]
    fn only_a_plausible_tsc_frequency_is_handed_on() {
        assert_eq!(plausible_tsc_khz(2_300_026, 2_293_273.0), Ok(2_300_026));
        let e = plausible_tsc_khz(4_000_000, 2_293_273.0).unwrap_err();
        assert!(e.contains("+74.42% off") && e.contains("not passed"), "{e}");
        assert!(plausible_tsc_khz(1, 2_293_273.0).is_err());
        assert!(plausible_tsc_khz(u64::MAX, 2_293_273.0).is_err());
        assert!(
            plausible_tsc_khz(2_293_273, 0.0).is_err(),
            "nothing measured"
        );
    }
}
