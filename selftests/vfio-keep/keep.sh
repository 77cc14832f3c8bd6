#!/bin/sh
# The keep flag (patches/0002): a kept VFIO-PCI device is neither reset nor
# disabled when its last fd closes, so its DMA goes on while no process
# has it open; kexec leaves its bus mastering on, and the next kernel,
# told by pci_keep=, binds only vfio-pci to it and does not reset it.
# The ring and buffers are in a KRAM area, so the DMA memory and the
# layout header in it survive the kexec too. Needs the rig's packet source
# (KH_NIC_UDP=1).
#
# Stage 0: the sysfs attribute and its bad input; without the flag a
# close/open cycle resets the NIC (control); with it the NIC keeps
# receiving into the ring between two processes, nothing lost. The
# receiver is turned off before the kexec: without iommu-preserve the old
# kernel switches VT-d translation off at kexec, and DMA then would be
# untranslated (and the old kernel, not keeping translation, stops the
# kept device's bus mastering then). Stage 1, after kexec with pci_keep=:
# bound to vfio-pci, flag set, ring registers as left, i.e. never reset.
# The vfio_keep module lists kept devices and computes that pci_keep=.
# Stage 2, after kexec with an over-long pci_keep= naming the device
# first: ignored with one line, nothing kept.
. /host/lib/ktap.sh
. /host/lib/nic.sh
L=/host/bin/liveup
area=dma-keep
ring=16384
size=40M
give_back() {
    echo 0 > $sys/kept 2>/dev/null
    nic_give_back
}

nic_need_source "kept NIC goes on receiving" || exit 0

case $KH_STAGE in
0)
    kh_dmesg_mark
    kh_check "sysfs: kept attribute, 0 by default" test "$(cat $sys/kept 2>/dev/null)" = 0 || exit 0
    kh_check "sysfs: a value that is not a boolean is refused" sh -c "! echo maybe > $sys/kept 2>/dev/null"
    kh_check "sysfs: refused while a host driver (e1000e) has the device" \
        sh -c "! echo 1 > $sys/kept 2>/dev/null && test \$(cat $sys/kept) = 0"
    insmod /host/modules/vfio_keep.ko
    VK=/sys/kernel/debug/vfio_keep
    kh_check "vfio_keep: nothing kept, empty pci_keep=" test -z "$(cat $VK/cmdline)"
    kh_kram_ready
    nic_bind vfio-pci
    if ! kh_check "bound to vfio-pci" test "$(nic_driver)" = vfio-pci; then
        give_back; exit 0
    fi
    kh_log "reset methods: $(cat $sys/reset_method 2>/dev/null || echo none)"
    echo 1 > $sys/kept
    kh_check "sysfs: set (bound to vfio-pci) and read back" test "$(cat $sys/kept)" = 1
    echo 0 > $sys/kept
    kh_check "sysfs: cleared" test "$(cat $sys/kept)" = 0
    M="$D --bdf $dev --mem kram:$area --mem-size $size"

    # Control: not kept. Closing the device turns its bus mastering off,
    # so its DMA stops. (vfio-pci also "resets" it, by the pm method, but
    # QEMU's e1000e model keeps its MAC registers through a D3hot cycle, so
    # that is not visible here.)
    $M init --ring 512 --watch 1 > /tmp/k-c1 2>&1
    $M status > /tmp/k-c2 2>&1
    kh_log "not kept, after close: bus_master=$(v bus_master /tmp/k-c2) ring_registers_match=$(v ring_registers_match /tmp/k-c2) $(tail -n1 /tmp/k-c2)"
    kh_check "control: without the flag, close turns bus mastering off" \
        test "$(v bus_master /tmp/k-c2)" = 0
    # Before the kept run: its RX is still on from the control, so stop it
    # while bus mastering is off (nothing is mapped until init maps again).
    $M attach --stop > /dev/null 2>&1

    # Kept: init marks the device kept before it exits; the NIC receives
    # into the KRAM ring while no process has it; a second process finds
    # it as it was, with the frames that came in between.
    kh_check "VFIO keep feature: off before" test "$($D --bdf $dev keep)" = keep=0
    kh_check "VFIO keep feature: a value other than 0 or 1 is refused (EINVAL)" sh -c \
        "! $D --bdf $dev keep --raw 2 > /tmp/k-raw 2>&1 && grep -q 'Invalid argument' /tmp/k-raw" || cat /tmp/k-raw
    kh_check "  and changes nothing" test "$($D --bdf $dev keep)$(cat $sys/kept)" = keep=00
    if $M init --ring $ring --watch 2 --settle 1 --keep > /tmp/k-1 2>&1; then
        kh_ok "init, receive, mark kept (VFIO_DEVICE_FEATURE_PCI_KEEP), close"
    else
        kh_fail "init, receive, mark kept (VFIO_DEVICE_FEATURE_PCI_KEEP), close" "$(tail -n1 /tmp/k-1)"
    fi
    last=$(num "$(v last_seq /tmp/k-1)")
    kh_check "sysfs shows the flag VFIO set" test "$(cat $sys/kept)" = 1
    kh_log "vfio_keep devices: $(cat $VK/devices)"
    kh_check "vfio_keep lists it: bound to vfio-pci, bus mastering on" \
        sh -c "grep -q '^$dev 8086:10d3 driver=vfio-pci bus_master=1 memory=1' $VK/devices"
    kh_check "vfio_keep: the next kernel's pci_keep=" test "$(cat $VK/cmdline)" = "pci_keep=$dev"
    sleep 1
    $M attach --watch 2 --settle 1 > /tmp/k-2 2>&1
    afirst=$(num "$(v first_seq /tmp/k-2)")
    kh_log "kept, after close: bus_master=$(v bus_master /tmp/k-2) rdh=$(v rdh /tmp/k-2) rdt=$(v rdt /tmp/k-2) dd_set=$(v dd_set /tmp/k-2);" \
        "seq $last -> $afirst, lost $(v lost /tmp/k-2) [$(v lost_ranges /tmp/k-2)], hw_missed=$(v hw_missed /tmp/k-2)"
    kh_check "kept: close left bus mastering on and the ring registers as they were" \
        test "$(v bus_master /tmp/k-2)$(v ring_registers_match /tmp/k-2)$(v rx_enabled /tmp/k-2)" = 111
    kh_check "kept: frames kept arriving while no process had the device" test "$(num "$(v dd_set /tmp/k-2)")" -gt 0
    # Only the backlog the second process found counts; a later gap (the
    # outer host's UDP socket overflowing on a loaded machine) is logged.
    kh_check "kept: no frame lost between the two processes ($last -> $afirst)" \
        test "$last" -ge 0 -a "$afirst" = $((last + 1)) -a "$(first_gap /tmp/k-2)" -gt $((last + $(num "$(v dd_set /tmp/k-2)")))
    # Receiver off for the kexec (see the top), the flag stays.
    $M attach --stop > /tmp/k-3 2>&1
    kh_check "VFIO keep feature: on" test "$($D --bdf $dev keep)" = keep=1
    # Closing the container takes the device's IOMMU mapping with it (the
    # group leaves the container's domain) until the next process maps the
    # memory again: in between, the kept NIC's DMA is blocked by VT-d
    # ("context entry not present"), never untranslated and never into
    # other memory. QEMU's e1000e holds frames back while it cannot DMA,
    # so none was lost above; a real NIC would drop them. Keeping the
    # mapping itself is iommu-preserve's part (Documentation/vfio-keep.rst).
    dmar_faults > /tmp/dmar
    other=$(grep -v "device \[$dev\] .*Present bit in context entry is clear" /tmp/dmar | head -n1)
    kh_log "DMAR faults in stage 0: $(wc -l < /tmp/dmar)"
    kh_check "kept: any DMAR fault is the device blocked by VT-d (no context entry), nothing else" test -z "$other"
    keep=$(cat $VK/cmdline)
    rmmod vfio_keep
    kh_dmesg_clean "no warning in dmesg before kexec"
    # the next kernel's command line gets what vfio_keep computed
    kh_kexec_next "$keep"
    ;;
1)
    kh_check "next kernel: pci_keep= marked the device" sh -c "dmesg | grep -q '$dev: kept (pci_keep=)'"
    kh_dmesg_mark
    kh_check "next kernel: bound to vfio-pci, not e1000e" test "$(nic_driver)" = vfio-pci
    kh_check "next kernel: kept flag set" test "$(cat $sys/kept)" = 1
    kh_kram_load
    $D --bdf $dev --mem kram:$area --mem-size $size status > /tmp/k-4 2>&1
    kh_log "after kexec: $(tr '\n' ' ' < /tmp/k-4 | cut -c1-400)"
    # Without iommu-preserve the old kernel switched translation off at
    # kexec, so it stopped the kept device's DMA first (bus mastering off):
    # untranslated DMA would land anywhere. With iommu-preserve it stays on
    # (iommu-preserve/dma_kexec).
    kh_check "next kernel: ring registers as the old kernel left them (no reset)" \
        test "$(v ring_registers_match /tmp/k-4)" = 1
    kh_check "  bus mastering stopped at kexec: its translation was not kept" \
        test "$(v bus_master /tmp/k-4)" = 0
    # The same feature through the device cdev (bound to iommufd, no group)
    kh_check "VFIO keep feature through the cdev: on" sh -c "$D --iommufd --bdf $dev keep | grep -q keep=1"
    kh_check "VFIO keep feature through the cdev: off" sh -c "$D --iommufd --bdf $dev keep off | grep -q keep=0"
    kh_check "sysfs agrees" test "$(cat $sys/kept)" = 0
    insmod /host/modules/vfio_keep.ko
    kh_check "vfio_keep: no longer listed" test -z "$(cat /sys/kernel/debug/vfio_keep/devices)"
    rmmod vfio_keep
    kh_dmesg_clean "no warning in dmesg after kexec"
    give_back
    # An over-long pci_keep= (over 255 characters) whose first entry is
    # this device: ignored as a whole, as its log line says, never cut to
    # what fits and used.
    long="pci_keep=$dev"
    while [ ${#long} -le 300 ]; do long="$long;0000:00:1f.7"; done
    kh_kexec_next "$long"
    ;;
2)
    kh_check "over-long pci_keep=: refused with one line" sh -c "dmesg | grep -q 'PCI: pci_keep= too long, ignored'"
    kh_check "over-long pci_keep=: nothing kept, not even its first entry" \
        sh -c "! dmesg | grep -q 'kept (pci_keep=)' && test \$(cat $sys/kept) = 0"
    kh_check "over-long pci_keep=: e1000e took the NIC at boot" test "$(nic_driver)" = e1000e
    ;;
esac
