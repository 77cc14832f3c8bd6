#!/bin/sh
# Guest side of the rig (runs as PID 1's child after /init mounted /host).
# Runs every test listed in /host/plan in order. A test may kexec half-way:
# its stage counter lives in /host/state, on the host, so it survives the
# kexec, and the next kernel's init resumes the same test at the next stage.
. /host/lib/ktap.sh
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
    echo "KH-TEST-END $t rc=$?"
    touch "$state/$id.done"
done
echo "KH-ALL-DONE"
sync
poweroff -f
