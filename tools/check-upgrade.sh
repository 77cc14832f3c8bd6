#!/bin/bash
# The hot-upgrade selftests (selftests/upgrade/upgrade.sh: three upgrades,
# failure injection, restore --retry, a kexec back; vmcount.sh: downtime
# with 1, 2 and 4 VMs) in two rig boots side by side:
#  - out/check-upgrade: two tinyvm VMs, the rig on one TCG thread of
#    bookworm's QEMU 7.2 (the configuration every other rig test uses);
#    then out/check-upgrade-vmcount: the VM-count series (1, 2, 4 tinyvms)
#    in a rig of two vCPUs on two TCG threads (trixie's QEMU 11.1);
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
# out/check-upgrade-sum/counts with the sum of both; ends with
# "N passed, N failed, N skipped".
# KH_MODULES: modules stashed by tools/stash-modules.sh for VARIANT (then
# nothing is built here: tools/check.sh runs this while a debug rig boots).
# KH_UPGRADE_LINUX=0 leaves the Linux VM's rig out, KH_UPGRADE_TINY=0 the
# tinyvm one (tools/check.sh runs them in different chains);
# KH_UPGRADE_COUNTS: where the sum goes (default out/check-upgrade-sum/counts,
# not the rig's own counts, which tools/ktap-report.sh rewrites).
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$KH_ROOT"
export CARGO_INCREMENTAL=0
variant=${VARIANT:-release}
# The second kernel (another version string) for upgrade/otherkernel in the
# VM-count rig: KH_OTHER_MODULES, a stash of tools/stash-modules.sh next
# (made here when unset, before the tree's modules are built for $variant;
# KH_OTHER_MODULES= leaves the test out).
if [ -z "${KH_OTHER_MODULES+set}" ] && [ "${KH_UPGRADE_TINY:-1}" = 1 ]; then
    KH_OTHER_MODULES=$("$KH_ROOT/tools/stash-modules.sh" next)
fi
export KH_OTHER_MODULES=${KH_OTHER_MODULES:-}
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
# (each rig whose own kernel wedges runs once more: kh_rig_once_more)
linux_rig() {
    env "${KH_LINUX_RIG_ENV[@]}" "$KH_ROOT/tools/vm-run.sh" -k "$kdir" -o "$lrun" -t 2400 -v "$vmk/bzImage" -r "$rootfs" upgrade/upgrade \
        > "$KH_ROOT/out/check-upgrade-linux.log" 2>&1
}
if [ "${KH_UPGRADE_LINUX:-1}" = 1 ]; then
    kh_rig_once_more "$lrun" "$KH_ROOT/out/check-upgrade-linux.log" linux_rig &
    lpid=$!
fi
p=0 f=0 s=0
# report_rig RUN TAG TITLE: a rig's results, each case prefixed with TAG,
# added to the sums (a rig that left no counts is one failure)
report_rig() {
    local rp rf rs
    echo "== $3 (out/$(basename "$1"))"
    kh_rig_rerun_note "$1"
    "$KH_ROOT/tools/ktap-report.sh" "$1" | sed "s/^\\(not ok\\|ok\\) \\([0-9]*\\) /\\1 \\2 $2: /" || true
    if read -r rp rf rs < "$1/counts"; then p=$((p + rp)); f=$((f + rf)); s=$((s + rs))
    else echo "not ok - $2 rig: no counts (out/$(basename "$1")/console.log)"; f=$((f + 1)); fi
}
tiny_rig() {
    "$KH_ROOT/tools/vm-run.sh" -k "$kdir" -o "$run" -t 2400 -v "$vmk/bzImage" -r "$rootfs" upgrade/upgrade \
        > "$KH_ROOT/out/check-upgrade-tiny.log" 2>&1
}
if [ "${KH_UPGRADE_TINY:-1}" = 1 ]; then
    kh_rig_once_more "$run" "$KH_ROOT/out/check-upgrade-tiny.log" tiny_rig
    cat "$KH_ROOT/out/check-upgrade-tiny.log"
    echo "== tinyvm x2, one TCG thread (out/check-upgrade)"
    kh_rig_rerun_note "$run"
    "$KH_ROOT/tools/ktap-report.sh" "$run"
    read -r p f s < "$run/counts"
    # The downtime by VM count (1, 2 and 4 tinyvms) in a rig boot of its
    # own with two vCPUs on two TCG threads (trixie's QEMU 11.1, as the
    # Linux rig): the QEMUs a restore starts side by side need CPUs to run
    # side by side. On the one TCG thread above, 4 VMs took 1.32x one
    # (session 16); on two, 0.88x (session 17, out/vmc2).
    crun="$KH_ROOT/out/check-upgrade-vmcount"
    # then upgrade/otherkernel: one tinyvm into the second kernel and back;
    # then upgrade/migrate: a managed VM sent to `liveup migrate listen`
    # over the loopback (no kexec)
    vmcount_rig() {
        env KH_L0_QEMU=trixie KH_TCG_THREAD=multi KH_RIG_SMP=2 "$KH_ROOT/tools/vm-run.sh" -k "$kdir" -o "$crun" -t 1800 -v "$vmk/bzImage" -r "$rootfs" \
            upgrade/vmcount ${KH_OTHER_MODULES:+upgrade/otherkernel} upgrade/migrate \
            > "$KH_ROOT/out/check-upgrade-vmcount.log" 2>&1 || true
    }
    kh_rig_once_more "$crun" "$KH_ROOT/out/check-upgrade-vmcount.log" vmcount_rig
    report_rig "$crun" vmcount "1, 2 and 4 tinyvms, then one into another kernel and back, then one migrated to a destination service; two vCPUs on two TCG threads"
    # the shipped systemd units under a booted systemd (make install into
    # the trixie rootfs, booted with systemd as PID 1; about 40 s)
    urun="$KH_ROOT/out/check-upgrade-units"
    units_rig() {
        env KH_INSTALL=1 KH_L0_QEMU=trixie KH_TCG_THREAD=multi KH_RIG_SMP=2 KH_RIG_SILENCE=300 "$KH_ROOT/tools/vm-run.sh" -k "$kdir" -o "$urun" -t 900 -v "$vmk/bzImage" -r "$rootfs" \
            upgrade/units > "$KH_ROOT/out/check-upgrade-units.log" 2>&1 || true
    }
    kh_rig_once_more "$urun" "$KH_ROOT/out/check-upgrade-units.log" units_rig
    report_rig "$urun" units "liveup's systemd units under systemd as PID 1: an ordinary boot, a VM in its scope, a hot-upgrade restored by liveup-restore.service"
fi
if [ -n "${lpid:-}" ]; then
    wait "$lpid" || true
    echo "== Linux VM, QEMU 11.1 multi-threaded TCG (out/check-upgrade-linux)"
    kh_rig_rerun_note "$lrun"
    "$KH_ROOT/tools/ktap-report.sh" "$lrun" | sed 's/^\(not ok\|ok\) \([0-9]*\) /\1 \2 linux: /'
    read -r lp lf ls < "$lrun/counts"
    p=$((p + lp)); f=$((f + lf)); s=$((s + ls))
fi
counts=${KH_UPGRADE_COUNTS:-$KH_ROOT/out/check-upgrade-sum/counts}
mkdir -p "$(dirname "$counts")"
echo "$p $f $s" > "$counts"
echo "$p passed, $f failed, $s skipped"
[ "$f" = 0 ]
