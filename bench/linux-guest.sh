#!/bin/bash
# Reliability of Linux L2 guests in the rig: KH_BENCH_LANES (2) rigs side by
# side, each on one host core with the rig configuration of make check's
# Linux rig (trixie's QEMU 11.1, one vCPU, multi-threaded TCG), each running
# selftests/upgrade/series.sh: KH_SERIES_UPGRADES (10) times in a row a
# fresh Linux VM boots, its memory is checked, the host kernel is upgraded
# under it, restored and checked again. Counts VM boots, restores with the
# memory verified afterwards, rig faults (an Oops, a panic, a test that did
# not finish) and failed checks; prints the boot times and each restore's
# heartbeat gap next to liveup's downtime. Exit 1 unless every boot and
# restore of every lane passed.
#   KH_BENCH_LANES=2 KH_SERIES_UPGRADES=10 bench/linux-guest.sh
# KH_BENCH_GUEST_ENV: more VAR=value words for the rig guest (for example
# KH_UPGRADE_VIRTIO=modern, selftests/upgrade/vms.sh).
set -euo pipefail
. "$(dirname "$0")/../tools/env.sh"
cd "$KH_ROOT"
lanes=${KH_BENCH_LANES:-2}
n=${KH_SERIES_UPGRADES:-10}
kdir=$(tools/build-modules.sh release)
rootfs=$(tools/mkrootfs.sh)
tools/build-userspace-guest.sh > /dev/null
t0=$(date +%s)
for i in $(seq 1 "$lanes"); do
    run="$KH_ROOT/out/bench-linux-$i"
    env "${KH_LINUX_RIG_ENV[@]}" "KH_GUEST_ENV=KH_UPGRADE_GUEST=linux KH_UPGRADE_VMS=vm1 KH_SERIES_UPGRADES=$n ${KH_BENCH_GUEST_ENV:-}" \
        tools/vm-run.sh -k "$kdir" -o "$run" -t $((n * 420 + 300)) -v "$kdir/bzImage" -r "$rootfs" upgrade/series \
        > "$run.log" 2>&1 &
done
wait || true
boots=0 restores=0 faults=0 kerr=0 failed=0 times=()
for i in $(seq 1 "$lanes"); do
    run="$KH_ROOT/out/bench-linux-$i"
    tools/ktap-report.sh "$run" > "$run.ktap" 2>&1 || true
    read -r p f s < "$run/counts" || { p=0 f=1 s=0; }
    k="$run/state/upgrade_series.ktap"
    b=$(grep -cE '^ok boot [0-9]+: vm1 booted' "$k" 2>/dev/null || true)
    r=$(grep -cE '^ok upgrade [0-9]+: vm1 memory checksum intact' "$k" 2>/dev/null || true)
    z=$( { grep -cE 'Oops|Kernel panic|BUG:|did not finish|timed out' "$run/console.log" "$run.ktap" || true; } | awk -F: '{s+=$2} END {print s+0}')
    # a VM stopped on "KVM internal error" (counted once per VM stop: the
    # error's first line, which diag may print again)
    e=$( { grep -a 'qemu: KVM internal error' "$run/console.log" || true; } | sed 's/^\[ *[0-9.]*\] //' | uniq | wc -l)
    boots=$((boots + b)); restores=$((restores + r)); faults=$((faults + z)); kerr=$((kerr + e)); failed=$((failed + f))
    while read -r s; do times+=("$s"); done < <(sed -n 's/.*KH-LOG upgrade\/series: boot [0-9]*: vm1 booted in \([0-9]*\) s.*/\1/p' "$run/console.log")
    echo "lane $i: $p passed, $f failed; VM boots $b of $n, restores verified $r of $n, rig faults $z, VM stops on a KVM internal error $e"
    grep -E 'downtime [0-9]+:' "$run.ktap" | sed 's/^/  /'
    grep -E '^# figure: vm1: stopped' "$run.ktap" | sed 's/^/  /' || true
done
bt=$(printf "%s\n" "${times[@]}" | sort -n | awk '{a[NR]=$1} END {if (NR) printf "min %d s, median %d s, max %d s", a[1], a[int((NR+1)/2)], a[NR]}')
echo "Linux guest: $lanes rigs side by side, $boots VM boots ($bt), $restores restores with memory verified, $faults rig faults, $kerr VM stops on a KVM internal error, $failed failed checks, in $(($(date +%s) - t0)) s"
[ "$boots" = $((lanes * n)) ] && [ "$restores" = $((lanes * n)) ] && [ "$faults" = 0 ] && [ "$failed" = 0 ]
