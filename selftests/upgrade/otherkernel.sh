#!/bin/sh
# A hot-upgrade into a different kernel and back (issue 19 item 1): from
# the rig's kernel A to B, a build with another version string
# (tools/kconfig/next.config, /host/other), then back to A, with one
# tinyvm (32 MiB) whose memory is checked after each. Each kernel's
# modules sit under /lib/modules/$(its release)/extra, as a host's
# packages put them; `liveup kram load` and `liveup restore --kram-module
# auto` take the running kernel's, and a module built for the other
# kernel is refused by name before the kernel sees it, nothing changed.
. /host/lib/ktap.sh
VM_MEM=32M
. ./vms.sh
# (after vms.sh, which sets the default pair)
VMS=vm1
A=$(cat /host/release)
[ -d /host/other ] || { kh_fail "a second kernel in the rig" "no /host/other: run with KH_OTHER_MODULES"; exit 0; }
B=$(cat /host/other/release)
for k in "$A /host/modules" "$B /host/other/modules"; do
    set -- $k
    mkdir -p /lib/modules/$1/extra && cp $2/*.ko /lib/modules/$1/extra/
done
case $KH_STAGE in 1) want=$B;; *) want=$A;; esac
kh_check "stage $KH_STAGE: the kernel is $want" test "$(uname -r)" = "$want"
# refused RC OUT: the command that exited RC with output OUT refused B's
# module on A (stages 0 and 2), naming both kernels, and nothing is loaded
refused() {
    test "$1" != 0 && grep -q "is built for kernel $B, this kernel is $A:" "$2" && ! grep -q '^kram ' /proc/modules
}
restore_with() { # module-argument report-file
    $L restore --kram-module "$1" --kram-params "$KRAM_PARAMS" > "$2" 2>&1
}
case $KH_STAGE in
0)
    kh_check "two kernels, two releases ($A, $B)" test "$A" != "$B"
    # after vmcount.sh in the same rig: its VMs go, RAM and all, and kram
    # is unloaded so that it is loaded here as a host would
    if grep -q '^kram ' /proc/modules; then
        for v in $($L vm list | cut -d' ' -f1); do $L vm stop $v --delete-area > /dev/null; done
        rmmod kram
    fi
    $L kram load /lib/modules/$B/extra/kram.ko > $KH_DIR/out 2>&1
    rc=$?
    kh_check "kram load of $B's module on $A: refused (exit $rc), naming both, nothing loaded" \
        refused $rc $KH_DIR/out || cat $KH_DIR/out
    $L kram load > $KH_DIR/out 2>&1
    kh_check "kram load takes the running kernel's module (/lib/modules/$A)" \
        grep -q "kram module of the running kernel: /lib/modules/$A/extra/kram.ko" $KH_DIR/out || cat $KH_DIR/out
    $L kram status | grep -q ready || $L kram format --yes > /dev/null
    kh_check "KRAM ready" sh -c "$L kram status | grep -q ready" || exit 0
    grep -q " $R/run " /proc/mounts || { kh_check "trixie rootfs with QEMU 11" kh_mount_rootfs $R || exit 0; }
    kh_check "start vm1 with its RAM in KRAM" start_vm vm1 1 || exit 0
    kh_check "vm1 booted" boot_vm vm1 1 || { diag; exit 0; }
    kh_check "memory checks pass before upgrading" all_memory_ok
    tsc_check
    UPGRADE_KERNEL=/host/other/bzImage upgrade_now
    exit 0
    ;;
esac
# stage 1 (on B) and 2 (back on A): restore
echo "KH-UPGRADE-RESTORE $KH_STAGE"
kh_mount_rootfs $R
if [ "$KH_STAGE" = 2 ]; then
    # first with the other kernel's module, as a wrong fixed path would
    restore_with /lib/modules/$B/extra/kram.ko $KH_DIR/out
    rc=$?
    kh_check "restore with $B's module on $A: refused (exit $rc), naming both, nothing loaded" \
        refused $rc $KH_DIR/out || cat $KH_DIR/out
fi
restore_with auto $KH_DIR/report.$KH_STAGE
rc=$?
echo "KH-UPGRADE-DONE $KH_STAGE"
sed 's/^/KH-LOG restore: /' $KH_DIR/report.$KH_STAGE
kh_check "upgrade $KH_STAGE into $want: restore --kram-module auto took /lib/modules/$want (exit $rc)" \
    sh -c "test $rc = 0 && grep -q 'kram module of the running kernel: /lib/modules/$want/extra/kram.ko' $KH_DIR/report.$KH_STAGE"
kh_check "upgrade $KH_STAGE into $want: vm1 running" both_running || diag
kh_check "upgrade $KH_STAGE into $want: vm1 memory intact" all_memory_ok || diag
kh_dmesg_clean "upgrade $KH_STAGE into $want: no warning in dmesg"
if [ "$KH_STAGE" = 1 ]; then
    upgrade_now
fi
