#!/bin/sh
# KRAM costs inside the rig guest (release kernel): module load with full
# metadata validation, ioctl alloc/free, populating an area mapping against
# anonymous memory. Prints markdown table rows as KH-BENCH lines.
. /host/lib/ktap.sh
T=/host/bin/kram-selftest
L=/host/bin/liveup
insmod /host/modules/kram.ko $KRAM_PARAMS
$L kram status | grep -q ready || $L kram format --yes > /dev/null
$L kram create bench-a --size 64M > /dev/null 2>&1
$L kram create bench-pool --size 0 > /dev/null 2>&1
# module load = map + validate the whole region (256 MiB here), 5 times
t0=$(cut -d' ' -f1 /proc/uptime)
for i in 1 2 3 4 5; do rmmod kram; insmod /host/modules/kram.ko $KRAM_PARAMS; done
t1=$(cut -d' ' -f1 /proc/uptime)
ms=$(awk -v a=$t0 -v b=$t1 -v s=$KRAM_SIZE 'BEGIN { printf "%.0f", (b - a) * 1000 / 5 }')
echo "KH-BENCH | insmod kram.ko: map + validate a $((KRAM_SIZE >> 20)) MiB region | $ms ms |"
$T bench bench-a bench-pool 20000 | sed 's/^/KH-BENCH /'
kh_ok "kram bench ran"
# The kernel API itself, from another module (kram/tests/kram_api_test.rs)
dmesg -c > /dev/null
if insmod /host/modules/kram_api_test.ko phase=2; then
    dmesg | sed -n 's/.*kram_api_test: bench get_fixed_page \([0-9]*\) ns\/call/KH-BENCH | kram_get_fixed_page() from a module | \1 ns |/p'
    dmesg | sed -n 's/.*kram_api_test: bench alloc+free \([0-9]*\) ns\/pair/KH-BENCH | kram_alloc_page() + kram_free_page() from a module | \1 ns |/p'
    rmmod kram_api_test
    kh_check "kernel API bench ran" sh -c "dmesg | grep -q 'kram_api_test: bench get_fixed_page'"
else
    kh_fail "kernel API bench ran" "insmod kram_api_test phase=2 failed"
fi
