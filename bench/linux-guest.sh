#!/bin/bash
# Reliability of Linux L2 guests in the rig: KH_BENCH_RUNS (default 4) rig
# boots in a row, each running selftests/upgrade/upgrade.sh with one Linux
# VM (boot, 3 counted upgrades, a failed restore + --retry, a failed
# restore + kexec back: 5 restores a boot) on the rig configuration
# tools/check-upgrade.sh uses for it (trixie's QEMU 11.1, multi-threaded
# TCG). Counts VM boots, restores with the memory verified afterwards, rig
# faults (an Oops, panic or a test that did not finish) and failed checks,
# and prints each run's heartbeat gaps next to liveup's downtime.
#   KH_BENCH_RUNS=4 bench/linux-guest.sh
set -euo pipefail
. "$(dirname "$0")/../tools/env.sh"
cd "$KH_ROOT"
runs=${KH_BENCH_RUNS:-4}
kdir=$(tools/build-modules.sh release)
rootfs=$(tools/mkrootfs.sh)
tools/build-userspace-guest.sh > /dev/null
boots=0 restores=0 faults=0 failed=0
for i in $(seq 1 "$runs"); do
    run="$KH_ROOT/out/bench-linux-$i"
    env "${KH_LINUX_RIG_ENV[@]}" tools/vm-run.sh -k "$kdir" -o "$run" -t 2400 -v "$kdir/bzImage" -r "$rootfs" upgrade/upgrade > "$run.log" 2>&1 || true
    tools/ktap-report.sh "$run" > "$run.ktap" 2>&1 || true
    read -r p f s < "$run/counts"
    b=$(grep -c 'ok vm1 booted' "$run/state/upgrade_upgrade.ktap" || true)
    r=$(grep -cE '^ok (upgrade [0-9]+: vm1 memory checksum intact|memory of every VM intact)' "$run/state/upgrade_upgrade.ktap" || true)
    z=$( { grep -cE 'Oops|Kernel panic|BUG:|did not finish' "$run/console.log" "$run.ktap" || true; } | awk -F: '{s+=$2} END {print s+0}')
    boots=$((boots + b)); restores=$((restores + r)); faults=$((faults + z)); failed=$((failed + f))
    echo "run $i: $p passed, $f failed; VM boots $b, restores verified $r, rig faults $z"
    grep -E '^# figure: vm1|downtime [0-9]+:' "$run.ktap" | sed 's/^/  /'
done
echo "Linux guest: $runs rig boots, $boots VM boots, $restores restores with memory verified, $faults rig faults, $failed failed checks"
