#!/bin/sh
# `make demo` (not part of make check): one VM, its RAM in KRAM, survives a
# hot-upgrade of the host kernel; the breakdown is printed. The VM is a
# Linux guest (the release kernel running tools/guest/hb.c: self-verifying
# memory, a virtio-blk disk it writes and flushes, a virtio-net NIC with
# frames echoed by the host, a guest agent) unless KH_DEMO_GUEST=tiny
# (tools/guest/tinyvm.c). Every claim printed was checked.
. /host/lib/ktap.sh
[ "${KH_DEMO_GUEST:-linux}" = linux ] && KH_UPGRADE_GUEST=linux || KH_UPGRADE_GUEST=tiny
VMS=demo-vm VM_MEM=128M
. ../upgrade/vms.sh
VMS=demo-vm
say() { echo "KH-DEMO $*"; }
# demo_check NAME COMMAND...: a check that also tells the audience
demo_check() {
    if kh_check "$@"; then say "ok: $1"; else say "FAILED: $1"; return 1; fi
}
guest_checks() { # when
    demo_check "$1: memory checksum intact" after_resume demo-vm || return 1
    linux || return 0
    demo_check "$1: every record flushed to the disk reads back" disk_ok demo-vm
    demo_check "$1: frames echoed, at most 2 lost" net_ok demo-vm
}
case $KH_STAGE in
0)
    kh_kram_ready
    kh_mount_rootfs $R
    start_peers
    say "host kernel $(uname -r), KRAM: $($L kram status | sed -n 's/^pages *//p')"
    if ! start_vm demo-vm 1 || ! boot_vm demo-vm 1; then
        kh_fail "VM up before the upgrade" "$(tail -n 3 "$(vm_log demo-vm)" 2>/dev/null)"
        say "FAILED: demo-vm did not come up; no upgrade attempted"
        diag demo-vm
        exit 0
    fi
    kh_ok "VM up before the upgrade"
    say "VM demo-vm running ($KH_UPGRADE_GUEST guest): $(grep -m1 VM-READY "$(vm_log demo-vm)"), heartbeat every 20 ms"
    linux && net_mark demo-vm
    guest_checks "before the upgrade" || exit 0
    say "liveup upgrade --kernel /host/bzImage (kexec into the new kernel under the running VM)"
    upgrade_now
    ;;
1)
    kh_mount_rootfs $R
    start_peers
    say "new kernel booted; liveup restore"
    $L restore --kram-module /host/modules/kram.ko --kram-params "$KRAM_PARAMS" > $KH_DIR/report
    rc=$?
    kh_host_clock
    sed 's/^/KH-DEMO /' $KH_DIR/report
    if [ $rc != 0 ]; then
        kh_fail "liveup restore" "exited $rc"
        say "FAILED: liveup restore exited $rc"
        exit 0
    fi
    kh_ok "liveup restore"
    # The VM must come back: fresh checks after the resume, none ever BAD.
    if guest_checks "after the upgrade"; then
        kh_ok "VM running in the new kernel, its memory checksum intact"
        say "VM demo-vm is running in the new kernel; its memory, disk and network checked since the resume"
    fi
    if linux; then
        demo_check "the kernel runs the TSC at the VM's frequency" tsc_kept
        demo_check "the guest's wall clock set by its guest agent" grep -q "guest clock demo-vm: set by its guest agent" $KH_DIR/report
    fi
    ;;
esac
