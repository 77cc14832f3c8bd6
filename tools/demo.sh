#!/bin/bash
# `make demo`: the main job end to end in a QEMU guest. The rig guest (a
# "host" with an emulated IOMMU) boots the release kernel, runs a VM whose
# RAM is in KRAM, and hot-upgrades its kernel under it with liveup; then the
# downtime breakdown, the guest-visible heartbeat gap and the floor (a bare
# kexec to init, measured in the same run) are printed.
# The VM is a Linux guest with a disk, a NIC and a guest agent
# (selftests/demo/upgrade.sh), on the rig configuration that boots Linux L2
# guests (trixie's QEMU 11.1, multi-threaded TCG: KH_LINUX_RIG_ENV);
# KH_DEMO_GUEST=tiny runs tools/guest/tinyvm.c on the default rig instead.
set -euo pipefail
# The demo's rig runs alone: two vCPUs (the Linux VM boots in about 15 s
# there; `make check` gives its Linux rig one, beside another rig).
export KH_LINUX_RIG_SMP=${KH_LINUX_RIG_SMP:-2}
. "$(dirname "$0")/env.sh"
cd "$KH_ROOT"
export CARGO_INCREMENTAL=0
"$KH_ROOT/tools/setup-toolchain.sh"
kdir=$("$KH_ROOT/tools/build-modules.sh" release)
rootfs=$("$KH_ROOT/tools/mkrootfs.sh")
"$KH_ROOT/tools/build-userspace-guest.sh" > /dev/null
run="$KH_ROOT/out/demo"
echo "== demo: booting the rig guest (release kernel) under QEMU; this takes a few minutes under TCG"
if [ "${KH_DEMO_GUEST:-linux}" = linux ]; then
    rig_env=("${KH_LINUX_RIG_ENV[@]}" KH_GUEST_ENV=KH_DEMO_GUEST=linux)
else
    rig_env=(KH_GUEST_ENV=KH_DEMO_GUEST=tiny)
fi
env "${rig_env[@]}" "$KH_ROOT/tools/vm-run.sh" -k "$kdir" -o "$run" -t 1200 -r "$rootfs" rig/kexec_persist demo/upgrade \
    | grep --line-buffered -E 'KH-DEMO|KH-RESULT|rig:' | sed -E 's/KH-(DEMO|RESULT) ?//'
echo
echo "== figures"
"$KH_ROOT/tools/ktap-report.sh" "$run" | grep -E '^# (figure|rig)|^(not )?ok [0-9]+ (downtime|clock) [0-9]+:' | sed -E 's/^(# |(not )?ok [0-9]+ )//'
read -r p f s < "$run/counts" || { echo "demo: failed: the rig wrote no results (see $run/console.log)"; exit 1; }
# Success only when it was checked: the VM's memory verified after the resume.
"$KH_ROOT/tools/ktap-report.sh" "$run" | { grep -E '^not ok' || true; } | sed 's/^/demo: failed: /'
[ "$f" = 0 ] || { echo "demo: $f step(s) failed; see $run/console.log"; exit 1; }
grep -q '^ok .*VM running in the new kernel' "$run/state/demo_upgrade.ktap" 2>/dev/null \
    || { echo "demo: failed: no memory check after the resume was reported; see $run/console.log"; exit 1; }
echo "demo: passed ($p checks)"
