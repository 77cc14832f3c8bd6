#!/bin/sh
# Guest side of the rig (runs as PID 1's child after /init mounted /host).
# Runs every test listed in /host/plan in order. A test may kexec half-way:
# its stage counter lives in /host/state, on the host, so it survives the
# kexec, and the next kernel's init resumes the same test at the next stage.
# A test may also go on under systemd: a stage that leaves $KH_DIR/boot-systemd
# ends this init, which boots the trixie rootfs (/dev/vda) with systemd as
# PID 1; the rootfs's kh-rig.service (the test wrote it) runs this file again
# there, and the test goes on at the stage it set (selftests/upgrade/units.sh).
. /host/lib/ktap.sh
# boot_systemd: PID 1 (this shell, exec'd by /init) becomes systemd on the
# rootfs; what /init mounted moves along (9p /host, /dev, /proc, /sys)
boot_systemd() {
    [ $$ = 1 ] || { echo "KH-FATAL: boot-systemd asked for where this is not PID 1"; return 1; }
    mkdir -p /newroot
    if ! mount /dev/vda /newroot; then echo "KH-FATAL: cannot mount /dev/vda for systemd"; poweroff -f; fi
    umount /sys/kernel/debug /tmp 2>/dev/null
    for d in dev proc sys host; do mkdir -p /newroot/$d; mount --move /$d /newroot/$d; done
    exec switch_root /newroot /lib/systemd/systemd --unit=multi-user.target --show-status=0
}
[ -f /host/guest.env ] && . /host/guest.env
state=/host/state
mkdir -p "$state"
for t in $(cat /host/plan); do
    id=$(echo "$t" | tr / _)
    [ -e "$state/$id.done" ] && continue
    stage=$(cat "$state/$id.stage" 2>/dev/null || echo 0)
    export KH_TEST="$t" KH_STAGE="$stage" KH_DIR="$state/$id.d" KH_RESULT="$state/$id.ktap"
    export KH_STAGEFILE="$state/$id.stage"
    mkdir -p "$KH_DIR"
    echo "KH-TEST-START $t stage=$stage"
    # how this kernel sends IPIs (xAPIC MMIO or x2APIC MSR: the rig's
    # livelock, Documentation/upgrade.rst, Known problems)
    # (no "Switched" line: the default, xAPIC flat)
    apic=$( { dmesg | grep -m1 -o 'Switched APIC routing to: .*'
              dmesg | grep -m1 -o 'IRQ remapping in [a-z0-9]* mode'
              grep -q -w x2apic /proc/cpuinfo && echo 'cpu has x2apic'; } | tr '\n' ';')
    echo "KH-APIC ${apic:-nothing logged}"
    ( cd /host/tests/"$(dirname "$t")" && sh ./"$(basename "$t")".sh )
    rc=$?
    if [ -e "$KH_DIR/boot-systemd" ]; then
        rm -f "$KH_DIR/boot-systemd"
        echo "KH-TEST-END $t rc=$rc (goes on under systemd)"
        sync
        boot_systemd
    fi
    echo "KH-TEST-END $t rc=$rc"
    touch "$state/$id.done"
done
echo "KH-ALL-DONE"
sync
# (under systemd the rootfs has no poweroff of its own: busybox's)
poweroff -f 2>/dev/null || busybox poweroff -f
