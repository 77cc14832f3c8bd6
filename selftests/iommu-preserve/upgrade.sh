#!/bin/sh
# `liveup upgrade --keep-device`: a host kernel hot-upgrade with a VM whose
# RAM is in KRAM and a passthrough NIC that keeps doing DMA through it. The
# NIC's user (e1000e-dma, standing in for the VMM that owns the device)
# receives the outer host's numbered frames into a KRAM ring, then holds the
# device without cleaning the ring, as a stopped VMM would. liveup checks
# the device in preflight, loads the kexec with pci_keep= and
# intel_iommu_adopt= for the record's KRAM page, freezes the NIC's VT-d
# tables once the VM is stopped, and kexecs. A failure injected after the
# freeze must thaw it (the NIC back on this kernel's tables, the VM running,
# no record left). In the new kernel `liveup restore` brings the VM back and
# a new process takes the NIC over through iommufd: every frame since the
# first process's last is there, with no DMAR fault.
. /host/lib/ktap.sh
. /host/lib/nic.sh
L=/host/bin/liveup
T=/host/bin/kram-selftest
M=/host/modules/iommu_preserve.ko
R=/mnt
area=dma-upg
size=20M
ring=65528
rate=300               # the ring (65528) holds 218 s of frames: the upgrade takes ~110 s in the debug rig
vm_up() { # a memory check after the last one counted in $KH_DIR/checks
    local before
    before=$(cat $KH_DIR/checks 2>/dev/null || echo 0)
    _more_checks() { [ "$(grep -c 'VM-MEMCHECK kv .* ok' /host/kv.console)" -gt "$before" ]; }
    kh_wait 120 _more_checks || return 1
    grep -c 'VM-MEMCHECK kv .* ok' /host/kv.console > $KH_DIR/checks
    ! grep -q 'VM-MEMCHECK kv .* BAD' /host/kv.console
}
running() { $L vm list | grep -q "^kv running"; }
refused() { # name expected-text command...
    local name=$1 want=$2; shift 2
    "$@" > $KH_DIR/out 2>&1; rc=$?
    if [ $rc != 0 ] && grep -q "$want" $KH_DIR/out && running; then
        kh_ok "$name"
    else
        kh_fail "$name" "rc=$rc $(tail -n2 $KH_DIR/out)"
    fi
}
UP="$L upgrade --kernel /host/bzImage --initrd /host/initrd.img"

nic_need_source "upgrade with a kept NIC" || exit 0

case $KH_STAGE in
0)
    kh_dmesg_mark
    echo $rate > /host/nic-rate
    kh_kram_ready
    kh_check "trixie rootfs with QEMU 11" kh_mount_rootfs $R
    $L vm stop kv --delete-area > /dev/null 2>&1
    rm -f /host/kv.console
    kh_check "VM kv started with its RAM in KRAM" $L vm start --name kv --mem 64M --root $R -- \
        -machine q35,accel=kvm -cpu qemu64 -smp 1 -nodefaults -display none \
        -kernel /host/tinyvm.elf -append vmname=kv -serial null \
        -chardev file,id=con,path=/host/kv.console -serial chardev:con
    kh_check "VM kv checks its memory" vm_up

    nic_bind vfio-pci
    kh_check "NIC bound to vfio-pci" test "$(nic_driver)" = vfio-pci
    # Preflight refusals before the device is kept: nothing changes.
    refused "--keep-device of a device that is not kept: refused, VM running" "not kept" \
        $UP --keep-device $dev --iommu-preserve $M
    echo 1 > $sys/kept
    refused "--keep-device of a missing device: refused" "no such PCI device" \
        $UP --keep-device 07:00.0 --iommu-preserve $M
    refused "--keep-device garbage: refused" "is not a PCI address" \
        $UP --keep-device 00:03 --iommu-preserve $M
    refused "--keep-device without --iommu-preserve: usage error" "iommu-preserve" \
        $UP --keep-device $dev
    refused "--iommu-preserve of a missing file: refused" "no such file" \
        $UP --keep-device $dev --iommu-preserve /nonexistent.ko
    # The NIC's user is no VM: the area it does DMA into must be named.
    refused "--keep-device no VM passes through, without --keep-area: refused" "no VM of this upgrade passes it through" \
        $UP --keep-device $dev --iommu-preserve $M
    refused "--keep-area of a missing area: refused" "KRAM area no-such-area" \
        $UP --keep-device $dev --iommu-preserve $M --keep-area no-such-area

    # The NIC's user: 6 s of cleaning, then it holds the device.
    $D --bdf $dev --mem kram:$area --mem-size $size init --ring $ring --buf-size 256 \
        --watch 6 --settle 2 --hold 900 > /tmp/u-1 2>&1 &
    kh_wait 30 grep -q '^holding=' /tmp/u-1
    last=$(num "$(v last_seq /tmp/u-1)")
    kh_log "NIC user: frames=$(v frames /tmp/u-1) seq ..$last steady_lost=$(v steady_lost /tmp/u-1), now holding the device"
    kh_check "the NIC received a steady stream, then its user stopped cleaning" \
        test "$(num "$(v steady_frames /tmp/u-1)")" -gt $((rate * 2)) -a "$(v steady_lost /tmp/u-1)" = 0
    echo "$last" > $KH_DIR/last

    # A failure after the freeze: thawed, nothing left behind.
    kh_dmesg_mark
    refused "failure after the freeze: upgrade aborted, VM running" "injected failure at step 'before-kexec'" \
        env LIVEUP_FAIL=before-kexec $UP --keep-device $dev --iommu-preserve $M --keep-area $area
    kh_check "  the freeze happened" sh -c "dmesg | grep -q 'iommu_preserve: $dev: DID .* translation stays on at kexec'"
    kh_check "  and was undone: back on the kernel's own root table" \
        sh -c "dmesg | grep -q 'iommu_preserve: thaw $dev: back on the kernel.s own root table'"
    kh_check "  its tables freed" sh -c "dmesg | grep -q 'iommu_preserve: $dev: released'"
    kh_check "  VM memory intact" vm_up
    refused "failure before the freeze: upgrade aborted" "injected failure at step 'freeze'" \
        env LIVEUP_FAIL=freeze $UP --keep-device $dev --iommu-preserve $M --keep-area $area
    kh_check "  nothing frozen (one freeze in dmesg: the earlier run's)" \
        test "$(dmesg | grep -c "iommu_preserve: $dev: DID .* translation stays on at kexec")" = 1
    kh_check "no DMAR fault while frozen and thawed" test -z "$(dmar_faults)" || dmar_faults | head -n3
    kh_dmesg_clean "no warning in dmesg before the upgrade"

    echo 1 > "$KH_STAGEFILE"
    sync
    echo "KH-UPGRADE-START 0"
    $UP --keep-device $dev --iommu-preserve $M --keep-area $area > $KH_DIR/out 2>&1
    echo 0 > "$KH_STAGEFILE"
    kh_fail "upgrade with a kept NIC kexecs" "$(tail -n3 $KH_DIR/out)"
    ;;
1)
    last=$(cat $KH_DIR/last)
    kh_check "next kernel adopted the NIC's translation" \
        sh -c "dmesg | grep -q 'adopting the translation of $dev preserved at'"
    kh_check "no DMAR fault during the handover" test -z "$(dmar_faults)" || dmar_faults | head -n3
    kh_check "trixie rootfs with QEMU 11" kh_mount_rootfs $R
    $L restore --kram-module /host/modules/kram.ko > $KH_DIR/out 2>&1
    sed 's/^/KH-LOG restore: /' $KH_DIR/out | head -n 12
    kh_check "liveup restore brought the VM back" running
    kh_check "  and its memory is intact" vm_up
    $D --iommufd --bdf $dev --mem kram:$area --mem-size $size attach --watch 3 --settle 1 --stop > /tmp/u-2 2>&1
    nic_check_takeover /tmp/u-2 "$last" "$rate"
    # Bad input while the record is in use: a thaw in a kernel that did not
    # freeze, and another upgrade with the record still pending.
    kh_check "thaw in a kernel that did not freeze: refused" sh -c \
        "! $L iommu --module $M thaw 2>/dev/null && dmesg | grep -q 'thaw $dev: .*nothing frozen in this kernel'"
    refused "upgrade with a preserved record pending: refused in preflight" "holds a preserved record already" \
        $UP --keep-device $dev --iommu-preserve $M --keep-area $area
    $L iommu --module $M release
    kh_check "preserved tables released" sh -c "dmesg | grep -q 'iommu_preserve: $dev: released'"
    kh_check "VM stopped, its area deleted" $L vm stop kv --delete-area
    $L kram delete $area > /dev/null 2>&1
    rm -f /host/nic-rate
    echo 0 > $sys/kept
    nic_give_back
    kh_dmesg_clean "no warning in dmesg after the upgrade"
    ;;
esac
