#!/bin/bash
# The hot-upgrade selftests (selftests/upgrade/upgrade.sh: three upgrades,
# failure injection, restore --retry, a kexec back; vmcount.sh: downtime
# with 1, 2 and 4 VMs) in two rig boots side by side:
#  - out/check-upgrade: two tinyvm VMs, then the VM-count series, the rig on
#    one TCG thread of bookworm's QEMU 7.2 (the configuration every other
#    rig test uses);
#  - out/check-upgrade-linux: one Linux VM (the release kernel running
#    tools/guest/hb.c: self-verifying pages, heartbeats with its own
#    clocks, a virtio-blk disk, a virtio-net NIC, a guest agent), the rig
#    on trixie's QEMU 11.1 with one vCPU (KH_LINUX_RIG_ENV). A Linux L2
#    did not boot on the single-threaded rig with two vCPUs, and
#    multi-threaded TCG before QEMU 8.1 ran stale translated code after
#    text_poke_bp (the "Oops: int3" of Documentation/upgrade.rst); 11.1
#    has the fix. One vCPU: the two rigs then take one host core each (with
#    two vCPUs this rig took both, and in CI the tinyvm rig beside it ran
#    4x slower and hit its time limit).
# VARIANT=release (default; what `make check` runs) or debug (KASAN +
# lockdep host kernel). The VMs always boot the release kernel. Writes
# out/check-upgrade/counts with the sum of both; ends with
# "N passed, N failed, N skipped".
# KH_MODULES: modules stashed by tools/stash-modules.sh for VARIANT (then
# nothing is built here: tools/check.sh runs this while a debug rig boots).
# KH_UPGRADE_LINUX=0 leaves the Linux VM's rig out, KH_UPGRADE_TINY=0 the
# tinyvm one (tools/check.sh runs them in different chains);
# KH_UPGRADE_COUNTS: where the sum goes (default out/check-upgrade/counts).
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$KH_ROOT"
export CARGO_INCREMENTAL=0
variant=${VARIANT:-release}
if [ -n "${KH_MODULES:-}" ]; then
    kdir=$(cat "$KH_MODULES/kdir")
    [ "$kdir" = "$("$KH_ROOT/tools/build-kernel.sh" "$variant")" ] \
        || { echo "check-upgrade: $KH_MODULES holds modules for $kdir, not the $variant kernel" >&2; exit 2; }
    export KH_MODULES
else
    kdir=$("$KH_ROOT/tools/build-modules.sh" "$variant")
fi
vmk=$("$KH_ROOT/tools/build-kernel.sh" release)
rootfs=$("$KH_ROOT/tools/mkrootfs.sh")
"$KH_ROOT/tools/build-userspace-guest.sh" > /dev/null
run="$KH_ROOT/out/check-upgrade"
lrun="$KH_ROOT/out/check-upgrade-linux"
mkdir -p "$KH_ROOT/out"
# (selftests/upgrade/passthrough.sh is not run here: after upgrade.sh's
# kexecs in the same boot its VM twice printed nothing; see
# Documentation/upgrade.rst, Passthrough devices)
linux_rig() {
    env "${KH_LINUX_RIG_ENV[@]}" "$KH_ROOT/tools/vm-run.sh" -k "$kdir" -o "$lrun" -t 2400 -v "$vmk/bzImage" -r "$rootfs" upgrade/upgrade \
        > "$KH_ROOT/out/check-upgrade-linux.log" 2>&1
}
if [ "${KH_UPGRADE_LINUX:-1}" = 1 ]; then
    linux_rig &
    lpid=$!
fi
p=0 f=0 s=0
if [ "${KH_UPGRADE_TINY:-1}" = 1 ]; then
    "$KH_ROOT/tools/vm-run.sh" -k "$kdir" -o "$run" -t 2400 -v "$vmk/bzImage" -r "$rootfs" upgrade/upgrade upgrade/vmcount
    echo "== tinyvm x2, then 1, 2 and 4 tinyvms, one TCG thread (out/check-upgrade)"
    "$KH_ROOT/tools/ktap-report.sh" "$run"
    read -r p f s < "$run/counts"
fi
if [ -n "${lpid:-}" ]; then
    wait "$lpid" || true
    echo "== Linux VM, QEMU 11.1 multi-threaded TCG (out/check-upgrade-linux)"
    "$KH_ROOT/tools/ktap-report.sh" "$lrun" | sed 's/^\(not ok\|ok\) \([0-9]*\) /\1 \2 linux: /'
    read -r lp lf ls < "$lrun/counts"
    p=$((p + lp)); f=$((f + lf)); s=$((s + ls))
fi
counts=${KH_UPGRADE_COUNTS:-$run/counts}
mkdir -p "$(dirname "$counts")"
echo "$p $f $s" > "$counts"
echo "$p passed, $f failed, $s skipped"
[ "$f" = 0 ]
