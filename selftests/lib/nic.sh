# Helpers for the tests that drive the rig's e1000e through VFIO
# (sourced after ktap.sh, busybox sh): the NIC's address, moving it
# between drivers, and reading e1000e-dma's key=value reports.
dev=0000:00:03.0
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
