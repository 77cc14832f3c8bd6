#!/bin/sh
# The guest's e1000e sits behind the emulated Intel IOMMU, binds to vfio-pci
# and gets its /dev/vfio nodes (group and cdev).
. /host/lib/ktap.sh
dev=0000:00:03.0
sys=/sys/bus/pci/devices/$dev
if [ "$(cat $sys/vendor):$(cat $sys/device)" != "0x8086:0x10d3" ]; then
    kh_fail "e1000e present at $dev" "found $(cat $sys/vendor 2>/dev/null):$(cat $sys/device 2>/dev/null)"
    exit 0
fi
kh_ok "e1000e present at $dev"
kh_check "DMAR (Intel IOMMU) active" test -d /sys/class/iommu/dmar0
if [ -L $sys/iommu_group ]; then
    group=$(basename "$(readlink $sys/iommu_group)")
    kh_ok "device is in IOMMU group $group"
else
    kh_fail "device is in an IOMMU group" "no iommu_group link"; exit 0
fi
echo vfio-pci > $sys/driver_override
[ -e $sys/driver ] && echo $dev > $sys/driver/unbind
echo $dev > /sys/bus/pci/drivers_probe
kh_check "bound to vfio-pci" test "$(basename "$(readlink $sys/driver)")" = vfio-pci
kh_check "/dev/vfio/$group appears" test -c /dev/vfio/$group
kh_check "vfio cdev appears" sh -c "ls $sys/vfio-dev/ | grep -q vfio"
# give the NIC back so later tests find the machine as it was
echo > $sys/driver_override
echo $dev > $sys/driver/unbind
echo $dev > /sys/bus/pci/drivers_probe
kh_check "rebound to e1000e" test "$(basename "$(readlink $sys/driver)")" = e1000e
