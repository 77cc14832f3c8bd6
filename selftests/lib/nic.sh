# Helpers for the tests that drive the rig's e1000e through VFIO
# (sourced after ktap.sh, busybox sh): the NIC's address, moving it
# between drivers, and reading e1000e-dma's key=value reports.
# The rig's e1000e (8086:10d3): 0000:00:03.0 on the root bus, or behind a
# PCIe root port (tools/vm-run.sh, KH_NIC_ROOT_PORT=1).
dev=$(for d in /sys/bus/pci/devices/*; do
          [ "$(cat $d/vendor):$(cat $d/device)" = 0x8086:0x10d3 ] && echo ${d##*/}
      done | head -n1)
dev=${dev:-0000:00:03.0}
sys=/sys/bus/pci/devices/$dev
D=/host/bin/e1000e-dma

v() { sed -n "s/^$1=//p" "$2"; }                              # v KEY REPORT
num() { case $1 in ''|*[!0-9]*) echo -1;; *) echo "$1";; esac; }
nic_driver() { basename "$(readlink $sys/driver)"; }
# nic_bind DRIVER: hand the NIC to DRIVER ("" = whichever matches).
nic_bind() {
    echo "$1" > $sys/driver_override
    [ -e $sys/driver ] && echo $dev > $sys/driver/unbind
    echo $dev > /sys/bus/pci/drivers_probe
}
# Give the NIC back to e1000e so later tests find the machine as it was.
nic_give_back() {
    nic_bind ""
    kh_check "NIC given back to e1000e" test "$(nic_driver)" = e1000e
}
# nic_need_source NAME: the rig feeds the NIC numbered frames
# (KH_NIC_UDP=1); otherwise NAME is skipped and this returns 1.
nic_need_source() {
    [ -f /host/nic-source ] && return 0
    kh_skip "$1" "no packet source: run the rig with KH_NIC_UDP=1"
    return 1
}
dmar_faults() { dmesg | grep -E 'DMAR: \[DMA (Read|Write)'; }
# The first sequence number missing in a watch report (a big one if none).
first_gap() {
    g=$(v lost_ranges "$1" | tr ',' '\n' | sed -n '1s/-.*//p')
    echo "${g:-999999999999}"
}
# nic_check_takeover REPORT LAST RATE: what a process taking the kept NIC
# over after a kexec (e1000e-dma attach --watch) must find: the ring as the
# old kernel left it with the receiver and bus mastering on (never reset),
# more than ten seconds' frames waiting (DMA went on through the handover),
# no sequence number lost after LAST (the first process's last; a gap past
# the handover backlog is the outer host's UDP socket, only logged), the
# adopted entry replaced in place, and no DMAR fault since the kexec.
nic_check_takeover() {
    first=$(num "$(v first_seq "$1")") waiting=$(num "$(v dd_set "$1")")
    kh_log "taken over: rdh=$(v rdh "$1") rdt=$(v rdt "$1") waiting=$waiting" \
        "then seq $first..$(v last_seq "$1") lost=$(v lost "$1") [$(v lost_ranges "$1")] hw_missed=$(v hw_missed "$1")"
    kh_check "ring registers as the old kernel left them, receiver and bus mastering on (never reset)" \
        test "$(v ring_registers_match "$1")$(v rx_enabled "$1")$(v bus_master "$1")" = 111
    kh_check "DMA went on through the kexec: $waiting frames waiting (> $(($3 * 10)))" test "$waiting" -gt $(($3 * 10))
    kh_check "no sequence number lost across the kexec ($2 -> $first, $waiting frames)" \
        test "$2" -ge 0 -a "$first" = $(($2 + 1)) -a "$(first_gap "$1")" -gt $(($2 + waiting))
    kh_check "the attach replaced the adopted context entry in place (never non-present)" sh -c \
        "dmesg | grep -q 'adopted entry of ${dev#0000:} replaced in place'"
    kh_check "no DMAR fault from the kexec to the new process's last frame" test -z "$(dmar_faults)" ||
        dmar_faults | head -n3
    # Behind a root port (KH_NIC_ROOT_PORT=1) the bridge forwards the DMA:
    # the next kernel found its bus mastering as the old one left it at
    # kexec (patches/0002 logs it before the port driver sets it again).
    # The rig's QEMU ignores a bridge's bus mastering for DMA, so only
    # this line can show a bridge the kexec switched off.
    for br in $(nic_bridges); do
        kh_check "bridge $br above the NIC: bus mastering left on at kexec" \
            sh -c "dmesg | grep -q '$dev: kept: bus mastering of upstream bridge $br is on'" ||
            dmesg | grep "kept: bus mastering" | head -n3
    done
}
# The PCI bridges between the root bus and the NIC (none on the root bus).
nic_bridges() { readlink -f $sys | tr / '\n' | grep -E '^[0-9a-f]{4}:[0-9a-f]{2}:' | grep -v "^$dev\$"; }
