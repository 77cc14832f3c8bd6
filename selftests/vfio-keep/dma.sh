#!/bin/sh
# A NIC doing DMA into memory userspace chose, through VFIO and the IOMMU
# (issue 6, single stage: no kexec yet). The rig started with KH_NIC_UDP=1
# feeds the e1000e broadcast frames numbered 0, 1, 2, ... from the outer
# host (tools/nic-sender.pl). e1000e-dma (userspace/vfio-e1000e) resets the
# NIC, builds an RX ring and buffers in a tmpfs file mapped shared, and
# counts what arrives: frames with increasing numbers, none lost once the
# stream is steady, no DMAR fault. A second process then takes the running
# NIC over without resetting it or writing a ring register (what the next
# kernel will do after a kexec) and the numbers go on. A control run with
# the receiver off must count nothing.
. /host/lib/ktap.sh
. /host/lib/nic.sh
mem=/tmp/e1000e-dma.mem
secs=${KH_DMA_SECONDS:-6}
settle=2

nic_need_source "e1000e receives the outer host's frames by DMA" || exit 0
rate=$(num "$(sed -n 's/^rate=\([0-9]*\).*/\1/p' /host/nic-source)")
kh_log "packet source: $(cat /host/nic-source)"
# At least 3/4 of what the source sends in a steady window must arrive
# (and one frame at the least: a silent source, KH_NIC_RATE=0, fails).
want() { w=$(( rate * $1 * 3 / 4 )); [ "$w" -ge 1 ] && echo "$w" || echo 1; }
give_back() {
    echo default > $sys/reset_method 2>/dev/null
    nic_give_back
}

kh_dmesg_mark
nic_bind vfio-pci
if ! kh_check "e1000e bound to vfio-pci" test "$(nic_driver)" = vfio-pci; then
    give_back; exit 0
fi
kh_log "reset methods: $(cat $sys/reset_method 2>/dev/null || echo none)"
# vfio-pci resets a device when it is opened if it can; the takeover below
# needs the NIC as the first process left it, as after a kexec with the
# device kept. (Empty: every reset method off; "default" restores them.)
echo > $sys/reset_method 2>/dev/null

# Control: ring built, receiver off: nothing may be counted.
out=/tmp/dma-norx.out
$D --bdf $dev --mem anon init --no-rx --watch 1 > $out 2>&1
kh_check "control: receiver off, no frame counted" test "$(num "$(v frames $out)")" = 0 || cat $out

# The real run: reset, ring in a shared tmpfs mapping, RX on, watch.
out=/tmp/dma-init.out
rm -f $mem
if $D --bdf $dev --mem $mem --mem-size 2M init --ring 512 --watch "$secs" --settle $settle > $out 2>&1; then
    kh_ok "init: NIC reset, ring in DMA memory, receiver on"
else
    kh_fail "init: NIC reset, ring in DMA memory, receiver on" "$(tail -n1 $out)"
fi
frames=$(num "$(v frames $out)") first=$(num "$(v first_seq $out)") last=$(num "$(v last_seq $out)")
sframes=$(num "$(v steady_frames $out)") slost=$(num "$(v steady_lost $out)")
kh_log "init: frames=$frames seq $first..$last lost=$(v lost $out) [$(v lost_ranges $out)]" \
    "steady: frames=$sframes lost=$slost [$(v steady_lost_ranges $out)] out_of_order=$(v out_of_order $out)" \
    "hw_missed=$(v hw_missed $out) hw_good=$(v hw_good $out) other=$(v other_frames $out)"
kh_check "link up, receiver on, ring registers as the header records" \
    test "$(v link_up $out)$(v rx_enabled $out)$(v ring_registers_match $out)" = 111
kh_check "frames arrived: $frames in ${secs}s (source: $rate/s)" test "$frames" -ge "$(want $((secs - settle)))"
kh_check "sequence numbers increase ($first..$last)" test "$first" -ge 0 -a "$last" -gt "$first"
kh_check "steady stream: $sframes frames in the last $((secs - settle))s, none lost" \
    test "$sframes" -ge "$(want $((secs - settle)))" -a "$slost" = 0 -a "$(v steady_out_of_order $out)" = 0

# Takeover: a new process, the same memory at the same IOVA, no reset.
out2=/tmp/dma-attach.out
if $D --bdf $dev --mem $mem --mem-size 2M attach --watch 4 --settle $settle > $out2 2>&1; then
    kh_ok "attach: running NIC taken over by a second process"
else
    kh_fail "attach: running NIC taken over by a second process" "$(tail -n1 $out2)"
fi
afirst=$(num "$(v first_seq $out2)") alast=$(num "$(v last_seq $out2)")
asframes=$(num "$(v steady_frames $out2)") aslost=$(num "$(v steady_lost $out2)")
kh_log "attach found: rdh=$(v rdh $out2) rdt=$(v rdt $out2) dd_set=$(v dd_set $out2) bus_master=$(v bus_master $out2)" \
    "then frames=$(v frames $out2) seq $afirst..$alast lost=$(v lost $out2) [$(v lost_ranges $out2)]" \
    "steady: frames=$asframes lost=$aslost [$(v steady_lost_ranges $out2)]"
kh_check "attach: ring registers and receiver as init left them" \
    test "$(v ring_registers_match $out2)$(v rx_enabled $out2)" = 11
kh_check "attach: numbers go on after init's last ($last < $afirst)" test "$afirst" -gt "$last" -a "$last" -ge 0
kh_check "attach: steady stream: $asframes frames in the last $((4 - settle))s, none lost" \
    test "$asframes" -ge "$(want $((4 - settle)))" -a "$aslost" = 0

# Takeover through iommufd (e1000e-dma --iommufd): the tmpfs memory goes
# into an IOAS first, the device is bound and attached to a HWPT already
# filled from it. (The second process closed the device, so vfio-pci turned
# bus mastering off in between: only the steady stream counts.)
out3=/tmp/dma-iommufd.out
if $D --iommufd --bdf $dev --mem $mem --mem-size 2M attach --watch 4 --settle $settle --stop > $out3 2>&1; then
    kh_ok "attach through iommufd: a third process takes the NIC over"
else
    kh_fail "attach through iommufd: a third process takes the NIC over" "$(tail -n1 $out3)"
fi
ifirst=$(num "$(v first_seq $out3)") isframes=$(num "$(v steady_frames $out3)") islost=$(num "$(v steady_lost $out3)")
kh_log "iommufd attach: iommu=$(v iommu $out3) hwpt=$(v hwpt $out3) frames=$(v frames $out3) seq $ifirst..$(v last_seq $out3)" \
    "steady: frames=$isframes lost=$islost [$(v steady_lost_ranges $out3)]"
kh_check "iommufd attach: through a HWPT, ring registers and receiver as before" \
    test "$(v iommu $out3)$(v ring_registers_match $out3)$(v rx_enabled $out3)" = iommufd11 -a -n "$(v hwpt $out3)"
kh_check "iommufd attach: numbers go on ($alast < $ifirst)" test "$ifirst" -gt "$alast" -a "$alast" -ge 0
kh_check "iommufd attach: steady stream: $isframes frames in the last $((4 - settle))s, none lost" \
    test "$isframes" -ge "$(want $((4 - settle)))" -a "$islost" = 0

if dmesg | grep -E 'DMAR:.*([Ff]ault|DMA (Read|Write))' > /tmp/dmar; then
    kh_fail "no DMAR fault" "$(head -n1 /tmp/dmar)"
else
    kh_ok "no DMAR fault"
fi
kh_dmesg_clean "no warning in dmesg"
rm -f $mem
give_back
