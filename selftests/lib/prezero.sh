# Helpers for selftests/prezero/ and bench/prezero.sh (sourced, busybox sh).
PZ=/sys/kernel/debug/prezero
L=/host/bin/liveup
H2=/sys/kernel/mm/hugepages/hugepages-2048kB
H1=/sys/kernel/mm/hugepages/hugepages-1048576kB

pz_load() { grep -q '^prezero ' /proc/modules || insmod /host/modules/prezero.ko; }
pz_unload() { ! grep -q '^prezero ' /proc/modules || rmmod prezero; }
# pz_pool2m N / pz_pool1g N: size the hugetlb pool; fails if it did not get there.
pz_pool2m() { echo "$1" > $H2/nr_hugepages; [ "$(cat $H2/nr_hugepages)" = "$1" ]; }
pz_pool1g() { echo "$1" > $H1/nr_hugepages 2>/dev/null; [ "$(cat $H1/nr_hugepages)" = "$1" ]; }
# pz_stat NODE SIZE COLUMN: one counter of debugfs prezero/stats, or the
# sum of several ("free taken"), from one read of the file.
pz_stat() {
    awk -v n="$1" -v s="$2" -v f="$3" \
        'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
         $1 == n && $2 == s { k = split(f, c, " "); v = 0
                              for (i = 1; i <= k; i++) v += $(col[c[i]]); print v }' ${PZ_STATS:-$PZ/stats}
}
# pz_snap: later pz_stat calls read one snapshot (counters from one read)
# until pz_live.
# pz_at_least NODE SIZE FIELD N: the counter is N or more (for kh_wait)
pz_at_least() { [ "$(pz_stat "$1" "$2" "$3")" -ge "$4" ]; }
pz_snap() { cat $PZ/stats > /tmp/pz-stats.snap; PZ_STATS=/tmp/pz-stats.snap; }
pz_live() { PZ_STATS=; }
# pz_expect NAME ACTUAL EXPECTED
pz_expect() {
    if [ "$2" = "$3" ]; then kh_ok "$1"; else kh_fail "$1" "got '$2', want '$3'"; fi
}
# pz_vfio_bind / pz_vfio_unbind: the rig's e1000e on vfio-pci and back;
# pz_vfio_bind sets PZ_GROUP to the group's device node.
PZ_DEV=0000:00:03.0
pz_vfio_bind() {
    s=/sys/bus/pci/devices/$PZ_DEV
    [ -L $s/iommu_group ] || return 1
    PZ_GROUP=/dev/vfio/$(basename "$(readlink $s/iommu_group)")
    echo vfio-pci > $s/driver_override
    [ -e $s/driver ] && echo $PZ_DEV > $s/driver/unbind
    echo $PZ_DEV > /sys/bus/pci/drivers_probe
    [ -c "$PZ_GROUP" ]
}
pz_vfio_unbind() {
    s=/sys/bus/pci/devices/$PZ_DEV
    echo > $s/driver_override
    [ -e $s/driver ] && echo $PZ_DEV > $s/driver/unbind
    echo $PZ_DEV > /sys/bus/pci/drivers_probe
}
