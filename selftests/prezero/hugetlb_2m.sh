#!/bin/sh
# 2 MiB hugetlb pages zeroed through the ioctl are handed to the fault path
# (MAP_POPULATE) and to VFIO_IOMMU_MAP_DMA pinning without being cleared
# again: hits count them, the memory reads back as zero, a page freed after
# use is never reused as pre-zeroed (misses), and marks survive a module
# reload (the pages stayed free and zero).
. /host/lib/ktap.sh
. /host/lib/prezero.sh
kh_dmesg_mark
if ! pz_pool2m 64; then kh_fail "2M pool of 64 pages" "got $(cat $H2/nr_hugepages)"; exit 0; fi
kh_ok "2M pool of 64 pages"
pz_load || { kh_fail "prezero loads" "insmod failed"; exit 0; }
pz_expect "counters start at zero" "$(pz_stat 0 2M marked) $(pz_stat 0 2M zeroed) $(pz_stat 0 2M hits)" "0 0 0"
pz_expect "stats show the free pool" "$(pz_stat 0 2M free)" 64

out=$($L prezero zero --size 2M --node 0 --count 16)
kh_log "$out"
pz_expect "ioctl zeroes 16 pages" "$(echo "$out" | sed -n 's/^node 0: zeroed \([0-9]*\) .*/\1/p')" 16
pz_expect "16 free pages marked" "$(pz_stat 0 2M marked)" 16
pz_expect "zeroed counter 16" "$(pz_stat 0 2M zeroed)" 16
kh_check "zero_us counted" test "$(pz_stat 0 2M zero_us)" -gt 0

# The marked pages sit at the head of the free list: the next 16 faults take them.
kh_check "populate 32M: all bytes zero" $L prezero populate --kind huge2m --size 32M --check --dirty
pz_expect "16 hits" "$(pz_stat 0 2M hits)" 16
pz_expect "0 misses" "$(pz_stat 0 2M misses)" 0
pz_expect "no mark left" "$(pz_stat 0 2M marked)" 0
# Those pages were written (--dirty) and freed: they must not count as zeroed.
kh_check "populate 32M again: all bytes zero" $L prezero populate --kind huge2m --size 32M --check
pz_expect "16 misses after reuse of written pages" "$(pz_stat 0 2M misses)" 16
pz_expect "still 16 hits" "$(pz_stat 0 2M hits)" 16

# zero --count all stops when every free page is marked.
out=$($L prezero zero --size 2M --node 0 --count all)
kh_log "$out"
pz_expect "count=all marks the whole free pool" "$(pz_stat 0 2M marked)" 64
out=$($L prezero zero --size 2M --node 0 --count 5)
pz_expect "nothing left to zero: 0 pages" "$(echo "$out" | sed -n 's/^node 0: zeroed \([0-9]*\) .*/\1/p')" 0

# Marks survive unload/reload: the pages stayed free and untouched.
rmmod prezero && pz_load
pz_expect "marks survive a reload" "$(pz_stat 0 2M marked)" 64
echo 1 > $PZ/verify
kh_check "populate after reload: zero" $L prezero populate --kind huge2m --size 16M --check
pz_expect "8 hits after reload, verified" "$(pz_stat 0 2M hits) $(pz_stat 0 2M violations)" "8 0"

# VFIO_IOMMU_MAP_DMA pins through the same fault path.
if pz_vfio_bind; then
    kh_ok "e1000e bound to vfio-pci ($PZ_GROUP)"
    $L prezero zero --size 2M --node 0 --count all > /dev/null
    h0=$(pz_stat 0 2M hits)
    out=$($L prezero vfio-map --group "$PZ_GROUP" --kind huge2m --size 32M --check 2>&1)
    rc=$?
    kh_log "$out"
    kh_check "VFIO_IOMMU_MAP_DMA 32M of marked pages: pinned memory is zero" test $rc = 0
    pz_expect "VFIO pinning: 16 hits" "$(( $(pz_stat 0 2M hits) - h0 ))" 16
    pz_vfio_unbind
else
    kh_fail "e1000e bound to vfio-pci" "no IOMMU group or no /dev/vfio node"
fi
# fallocate() on hugetlbfs takes the same skip.
mkdir -p /tmp/hfs
if mount -t hugetlbfs -o pagesize=2M none /tmp/hfs; then
    $L prezero zero --size 2M --node 0 --count all > /dev/null
    h0=$(pz_stat 0 2M hits)
    kh_check "fallocate 16M on hugetlbfs" fallocate -l 16M /tmp/hfs/f
    pz_expect "fallocate: 8 hits" "$(( $(pz_stat 0 2M hits) - h0 ))" 8
    kh_check "fallocated file reads as zero" cmp -n 16777216 /tmp/hfs/f /dev/zero
    rm -f /tmp/hfs/f; umount /tmp/hfs
else
    kh_fail "hugetlbfs mounted" "mount -t hugetlbfs failed"
fi
pz_expect "no verify violation" "$(pz_stat 0 2M violations)" 0
rmmod prezero
pz_pool2m 0
kh_check "pool released" test "$(cat $H2/nr_hugepages)" = 0
kh_dmesg_clean "prezero 2M: no warning in dmesg"
