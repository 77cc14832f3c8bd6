#!/bin/sh
# Zeroed-page pools for anonymous memory (patches/0004): 4 KiB, mTHP (64K)
# and THP pages zeroed by `liveup prezero zero --pool` are taken by the
# anonymous fault paths (MAP_POPULATE, VFIO pinning) without being cleared
# again. Every pooled page that leaves the pool is a hit or was reclaimed;
# the memory reads back as zero; verify mode catches an injected dirty
# page; the shrinker gives pooled pages back (drop_caches runs it);
# disabling and unloading give every page back; bad requests are refused.
. /host/lib/ktap.sh
. /host/lib/prezero.sh
kh_dmesg_mark
pz_load || { kh_fail "prezero loads" "insmod failed"; exit 0; }
zeroed_of() { echo "$1" | sed -n 's/^node 0: zeroed \([0-9]*\) .*/\1/p'; }
# left_of SIZE: pages in the node-0 pool of that size (thp or 4K)
left_of() { pz_stat 0 "$1" free; }
# out_of SIZE: pooled + taken + reclaimed, from one snapshot of stats: what
# went into the pool (other tasks' faults take pages at any time)
out_of() { pz_stat 0 "$1" "free taken reclaimed"; }
pgfree() { awk '/^pgfree / { print $2 }' /proc/vmstat; }
pgalloc() { awk '/^pgalloc_/ { n += $2 } END { print n }' /proc/vmstat; }
pz_expect "pools start empty" "$(left_of thp) $(left_of 4K)" "0 0"

# --- THP: populate ----------------------------------------------------------
a0=$(pgalloc)
out=$($L prezero zero --pool --size 2M --node 0 --count 64)
a1=$(pgalloc)
kh_log "$out"
pz_expect "THP pool: 64 pages zeroed" "$(zeroed_of "$out")" 64
pz_expect "THP pool holds 64 (stats free = marked)" "$(left_of thp) $(pz_stat 0 thp marked)" "64 64"
kh_check "the pool was allocated from the buddy allocator ($((a1 - a0)) pages, >= 32768)" test $((a1 - a0)) -ge 32768
kh_check "populate THP 64M: all bytes zero" $L prezero populate --kind thp --size 64M --check --dirty
left=$(left_of thp)
kh_check "THP faults took pooled pages (left $left of 64, want <= 32)" test "$left" -le 32
pz_expect "THP: pooled + taken + reclaimed = 64" "$(out_of thp)" 64
pz_snap
pz_expect "THP: every page taken was a hit" "$(pz_stat 0 thp hits)" "$(pz_stat 0 thp taken)"
pz_live
m0=$(pz_stat 0 thp misses)
kh_check "populate THP 128M past the pool: all bytes zero" $L prezero populate --kind thp --size 128M --check
kh_check "empty pool: misses counted ($(pz_stat 0 thp misses))" test "$(pz_stat 0 thp misses)" -gt "$m0"
pz_expect "THP pool drained by faults" "$(left_of thp)" 0

# --- 4 KiB and mTHP: fill, populate half, every pooled page accounted for ----
# pool_round SIZE UNIT COUNT POPULATE-ARGS...: COUNT pages pooled; populating
# takes at least half of them; pooled + taken + reclaimed = COUNT.
pool_round() {
    sz=$1 unit=$2 cnt=$3; shift 3
    out=$($L prezero zero --pool --size $sz --node 0 --count $cnt)
    pz_expect "$sz pool: $cnt $unit zeroed" "$(zeroed_of "$out")" $cnt
    kh_check "populate $* ($sz): all bytes zero" $L prezero populate "$@" --check --dirty
    left=$(left_of $sz)
    kh_check "$sz faults took pooled $unit (left $left of $cnt, want <= $((cnt / 2)))" test "$left" -le $((cnt / 2))
    pz_expect "$sz: pooled + taken + reclaimed = $cnt" "$(out_of $sz)" $cnt
}
pool_round 4K pages 4096 --kind anon --size 8M
pz_expect "no verify violation so far" "$(pz_stat 0 thp violations) $(pz_stat 0 4K violations)" "0 0"

# --- mTHP (64K): with PMD THP off and 64K on, anonymous faults take 64K folios --
M=/sys/kernel/mm/transparent_hugepage
if [ -w $M/hugepages-64kB/enabled ] && [ -w $M/hugepages-2048kB/enabled ]; then
    pmd=$(sed 's/.*\[\(.*\)\].*/\1/' $M/hugepages-2048kB/enabled)
    echo never > $M/hugepages-2048kB/enabled; echo always > $M/hugepages-64kB/enabled
    pool_round 64K folios 256 --kind thp --size 8M
    pz_snap
    pz_expect "64K: every folio taken was a hit" "$(pz_stat 0 64K hits)" "$(pz_stat 0 64K taken)"
    pz_live
    echo never > $M/hugepages-64kB/enabled; echo "$pmd" > $M/hugepages-2048kB/enabled
else
    kh_fail "mTHP 64K and PMD size knobs in $M" "not writable"
fi

# --- VFIO_IOMMU_MAP_DMA pins through the same fault paths ---------------------
if pz_vfio_bind; then
    kh_ok "e1000e bound to vfio-pci ($PZ_GROUP)"
    echo 0 > $PZ/enabled; echo 1 > $PZ/enabled      # empty pools
    $L prezero zero --pool --size 2M --node 0 --count 32 > /dev/null
    h0=$(pz_stat 0 thp hits)
    out=$($L prezero vfio-map --group "$PZ_GROUP" --kind thp --size 64M --check 2>&1)
    rc=$?
    kh_log "$out"
    kh_check "VFIO_IOMMU_MAP_DMA 64M THP from the pool: pinned memory is zero" test $rc = 0
    pz_expect "VFIO pinning: 32 THP hits" "$(( $(pz_stat 0 thp hits) - h0 ))" 32
    $L prezero zero --pool --size 4K --node 0 --count 2048 > /dev/null
    h0=$(pz_stat 0 4K hits)
    out=$($L prezero vfio-map --group "$PZ_GROUP" --kind anon --size 8M --check 2>&1)
    rc=$?
    kh_log "$out"
    kh_check "VFIO_IOMMU_MAP_DMA 8M 4K pages from the pool: pinned memory is zero" test $rc = 0
    kh_check "VFIO pinning: 4K hits ($(( $(pz_stat 0 4K hits) - h0 )), want >= 2000)" \
        test $(( $(pz_stat 0 4K hits) - h0 )) -ge 2000
    pz_vfio_unbind
else
    kh_fail "e1000e bound to vfio-pci" "no IOMMU group or no /dev/vfio node"
fi

# --- top up to a target (what liveup-prezero.service runs) -------------------
echo 0 > $PZ/enabled; echo 1 > $PZ/enabled
out=$($L prezero zero --pool --size 2M --node 0 --target 32M)
pz_expect "--target 32M from empty: 16 THP pooled" "$(zeroed_of "$out") $(left_of thp)" "16 16"
$L prezero zero --pool --size 2M --node 0 --count 4 > /dev/null
out=$($L prezero zero --pool --size 2M --node 0 --target 48M)
pz_expect "--target 48M over 20: 4 more" "$(zeroed_of "$out") $(left_of thp)" "4 24"
out=$($L prezero zero --pool --size 2M --node 0 --target 48M)
kh_check "--target reached: nothing zeroed ($out)" sh -c "echo '$out' | grep -q 'target reached'"
out=$($L prezero zero --pool --size 2M --target 0 2>&1); rc=$?
kh_check "--target 0: nothing to do, exit 0" test "$rc" = 0 -a "$(left_of thp)" = 24
out=$($L prezero zero --size 2M --target 4M 2>&1); rc=$?
kh_check "CLI refuses --target without --pool (exit $rc)" test "$rc" != 0
out=$($L prezero zero --pool --size 2M --node 0 --target 12Q 2>&1); rc=$?
kh_check "CLI refuses --target 12Q, pool unchanged (exit $rc: $out)" test "$rc" != 0 -a "$(left_of thp)" = 24

# --- security: verify mode catches a page written after zeroing ---------------
echo 0 > $PZ/enabled; echo 1 > $PZ/enabled
echo 1 > $PZ/verify
echo 1 > $PZ/inject_dirty
$L prezero zero --pool --size 2M --node 0 --count 1 > /dev/null
v0=$(pz_stat 0 thp violations)
kh_check "populate THP 2M over the dirty pooled page: reads as zero" $L prezero populate --kind thp --size 2M --check
pz_expect "verify counted 1 violation" "$(( $(pz_stat 0 thp violations) - v0 ))" 1
echo 0 > $PZ/verify

# --- the shrinker gives pooled pages back -------------------------------------
$L prezero zero --pool --size 2M --node 0 --count 128 > /dev/null
pz_expect "THP pool holds 128" "$(left_of thp)" 128
r0=$(pz_stat 0 thp reclaimed)
echo 2 > /proc/sys/vm/drop_caches
left=$(left_of thp); rec=$(( $(pz_stat 0 thp reclaimed) - r0 ))
kh_log "after drop_caches: $left pooled, $rec reclaimed"
kh_check "shrinker reclaimed pooled pages ($rec)" test "$rec" -gt 0
kh_check "pool shrank ($left of 128)" test "$left" -lt 128

# --- memory pressure: nothing is pooled ----------------------------------------
echo 100 > $PZ/min_available_pct
out=$($L prezero zero --pool --size 4K --node 0 --count 16)
pz_expect "memory short: pooling stops at once" "$(zeroed_of "$out")" 0
echo 5 > $PZ/min_available_pct

# --- bad input ----------------------------------------------------------------
bad() {
    name=$1; shift
    dmesg -c > /dev/null
    if $L prezero zero "$@" > /dev/null 2>&1; then kh_fail "refuses $name" "succeeded"; return; fi
    pz_expect "refuses $name (one log line)" "$(dmesg | grep -c 'prezero: zero:')" 1
}
bad "pool size 1G" --pool --size 1G --node 0 --count 1
bad "pool size 8K" --pool --size 8K --node 0 --count 1
bad "pool size 3M" --pool --size 3M --node 0 --count 1
bad "pool node 7" --pool --size 4K --node 7 --count 1
bad "pool count 0" --pool --size 4K --node 0 --count 0
bad "flags 2" --size 2M --node 0 --count 1 --flags 2
out=$($L prezero zero --pool --size 4K --count all 2>&1); rc=$?
kh_check "CLI refuses --pool --count all (exit $rc: $out)" sh -c "[ $rc != 0 ] && echo '$out' | grep -q 'needs --count'"
echo 0 > $PZ/enabled
pz_expect "disabled: pools drained" "$(left_of thp) $(left_of 4K)" "0 0"
bad "pool while disabled" --pool --size 4K --node 0 --count 1
echo 1 > $PZ/enabled

# --- unload with full pools: nothing leaked ----------------------------------
$L prezero zero --pool --size 2M --node 0 --count 64 > /dev/null
$L prezero zero --pool --size 4K --node 0 --count 8192 > /dev/null
t=$(left_of thp); k=$(left_of 4K)
kh_check "pools full before unload ($t THP, $k 4K)" test "$t" = 64 -a "$k" -ge 8000
pooled=$(( t * 2048 + k * 4 ))
# Freed pages may sit on per-CPU lists (not in MemFree): count frees instead.
g1=$(pgfree)
rmmod prezero
g2=$(pgfree)
kh_check "unload freed the pools ($(( g2 - g1 )) pages freed, $(( pooled / 4 )) pooled)" \
    test $((g2 - g1)) -ge $((pooled / 4))
kh_dmesg_clean "prezero pools: no warning in dmesg"
