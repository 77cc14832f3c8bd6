#!/bin/sh
# Diagnostic (not in make check; Documentation/upgrade.rst, "A guest clock
# that jumped at a resume"): a Linux VM paused and resumed in the same
# kernel, plain (stop/cont) and by an aborted upgrade (cpr-reboot save,
# migrate_cancel, cont), twice each, with L1's kvm clock tracepoints on.
# Prints the guest's VM-GAP lines after each resume and the trace; fails if
# the guest's monotonic clock moved over 5 s between two beats (its clock
# does not count a pause, and each pause here is under 12 s). Run:
#   . tools/env.sh; env "${KH_LINUX_RIG_ENV[@]}" [KH_EXTRA_CMDLINE=tsc_early_khz=N] \
#     tools/vm-run.sh -k KDIR -o out/probe -v KDIR/bzImage -r "$(tools/mkrootfs.sh)" upgrade/clockprobe
. /host/lib/ktap.sh
export KH_UPGRADE_GUEST=linux KH_UPGRADE_VMS=vm1
. ./vms.sh

T=/sys/kernel/tracing
kh_log "clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource); $(dmesg | grep -i -E 'tsc|clocksource' | tr '\n' '|')"
kh_log "cpu flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E 'tsc|constant|nonstop' | tr '\n' ' ')"
kh_kram_ready
kh_check "trixie rootfs" kh_mount_rootfs $R
start_peers
kh_check "start vm1" start_vm vm1 1
kh_check "vm1 booted" boot_vm vm1 1 || diag
mountpoint -q $T || mount -t tracefs nodev $T
for e in kvm_update_master_clock kvm_pvclock_update kvm_write_tsc_offset kvm_track_tsc; do
    echo 1 > $T/events/kvm/$e/enable
done
echo 1 > $T/tracing_on
q=$R/run/liveup/vm1.qmp
gaps() { grep -a -E 'VM-GAP|VM-CLOCK' "$(vm_log vm1)" | tail -n 4 | tr '\n' '|'; }
mark() { echo "KH-PROBE $1 $(cat /proc/uptime)"; echo "PROBE $1" > $T/trace_marker; }
sleep 30
for round in 1 2; do
    mark "stop$round"
    $L qmp $q stop '{}' > /dev/null
    sleep 3
    $L qmp $q cont '{}' > /dev/null
    mark "cont$round"
    sleep 10
    kh_log "after stop/cont $round: $(gaps)"
    sleep 20
    mark "abort$round"
    LIVEUP_FAIL=after-save $L upgrade --kernel /host/bzImage --initrd /host/initrd.img > $KH_DIR/out 2>&1
    mark "aborted$round"
    sleep 10
    kh_log "after aborted upgrade $round: $(gaps)"
    grep -a "guest clock" $KH_DIR/out | sed 's/^/KH-LOG liveup: /'
    sleep 20
done
grep -a -E 'VM-GAP|VM-CLOCK' "$(vm_log vm1)" | sed 's/^/KH-LOG guest: /'
grep -v '^#' $T/trace | grep -v 'kvm_track_tsc' | tail -n 200 | sed 's/^/KH-TRACE /'
grep -c kvm_track_tsc $T/trace | sed 's/^/KH-LOG track_tsc lines: /'
no_jump() { ! grep -a 'VM-GAP' "$(vm_log vm1)" | awk '$4 > 5000 {print; bad = 1} END {exit !bad}'; }
kh_check "the guest's monotonic clock never moved over 5 s between two beats" no_jump
