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
