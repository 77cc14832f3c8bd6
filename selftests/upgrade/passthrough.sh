#!/bin/sh
# A Linux VM with a passed-through NIC, as issue 16 wants it upgraded: the
# rig's e1000e behind a PCIe root port (tools/vm-run.sh KH_NIC_ROOT_PORT=1),
# bound to vfio-pci in this (L1) host and given to an L2 Linux guest under
# nested KVM, whose own e1000e driver receives the numbered frames of the
# rig's sender (tools/nic-sender.pl) and counts them (tools/guest/hb.c,
# VM-RX lines). Then `liveup upgrade` under it: the stock QEMU 11.1 cannot
# take a device back after a kexec without resetting it, so preflight
# refuses, names the device, and the VM goes on receiving with nothing
# lost. (The upgrade itself waits for the patched QEMU, issue 16.)
. /host/lib/ktap.sh
. /host/lib/nic.sh
KH_UPGRADE_GUEST=linux KH_UPGRADE_VMS=pt1
. ./vms.sh
# frames/s: a nested L2 guest stands still for a second or more at times
# (VM-GAP), and the sender catches up after its own stalls in a burst:
# the guest's 4096-entry ring (hb.c) holds over a minute of this
RATE=50
# rx NAME FIELD: FIELD of the VM's last complete VM-RX count line (-1 if none)
rx() { num "$(grep "^VM-RX $1 got .* old [0-9]" "$(vm_log $1)" | tail -n1 | sed -n "s/.* $2 \([0-9]*\).*/\1/p")"; }

case $KH_STAGE in
0)
    nic_need_source "passthrough VM" || exit 0
    echo $RATE > /host/nic-rate
    kh_kram_ready
    kh_check "KRAM ready" sh -c "$L kram status | grep -q ready"
    # (mounted already when upgrade.sh ran before in this boot)
    grep -q " $R " /proc/mounts || kh_mount_rootfs $R
    kh_check "trixie rootfs with QEMU 11" test -x $R/usr/bin/qemu-system-x86_64
    up=$(nic_bridges | tail -n1)
    kh_log "NIC $dev, upstream ${up:-none}"
    kh_check "the NIC sits behind a PCIe root port (not on the root bus)" \
        sh -c "test -n '$up' && test -e /sys/bus/pci/devices/$up/secondary_bus_number"
    nic_bind vfio-pci
    kh_check "NIC bound to vfio-pci" test "$(nic_driver)" = vfio-pci
    start_peers
    VM_EXTRA="-device vfio-pci,host=$dev"
    kh_check "start pt1 with the NIC passed through, RAM in KRAM" start_vm pt1 1
    kh_check "pt1 booted" boot_vm pt1 1 || diag pt1
    tsc_check "" pt1
    got_5s() { [ "$(rx pt1 got)" -ge $((RATE * 5)) ]; }
    kh_wait 120 got_5s
    g0=$(rx pt1 got) m0=$(rx pt1 missing)
    kh_log "pt1: $(grep '^VM-RX' "$(vm_log pt1)" | tail -n1)"
    kh_check "pt1's own e1000e driver receives the rig's frames through the passed-through NIC" \
        test "$g0" -ge $((RATE * 5))
    sleep 10
    g1=$(rx pt1 got) m1=$(rx pt1 missing)
    kh_log "pt1 10 s later: $(grep '^VM-RX' "$(vm_log pt1)" | tail -n1)"
    kh_check "  10 s more: at least $((RATE * 5)) more frames, none missing in between ($m0 -> $m1)" \
        test "$((g1 - g0))" -ge $((RATE * 5)) -a "$m1" = "$m0"
    kh_check "  no DMAR fault" test -z "$(dmar_faults)" || dmar_faults | head -n3

    $L upgrade --kernel /host/bzImage --initrd /host/initrd.img > $KH_DIR/out 2>&1; rc=$?
    kh_log "upgrade: rc=$rc $(head -c 400 $KH_DIR/out)"
    kh_check "upgrade refused in preflight: this QEMU cannot take $dev back without a reset" \
        sh -c "test $rc = 3 && grep -q 'passes through $dev: its QEMU cannot take a device back' $KH_DIR/out"
    kh_check "  pt1 still running" running pt1
    g2=$(rx pt1 got) m2=$(rx pt1 missing); sleep 5
    kh_check "  and still receiving, nothing missing" \
        test "$(rx pt1 got)" -gt "$g2" -a "$(rx pt1 missing)" = "$m2" -a "$m2" = "$m0"
    $L vm stop pt1 --delete-area > /dev/null
    kh_check "pt1 stopped, its area deleted" sh -c "! $L kram list | grep -q -w vm-pt1"
    rm -f /host/nic-rate
    nic_give_back
    kh_dmesg_clean "no warning in dmesg"
    ;;
esac
