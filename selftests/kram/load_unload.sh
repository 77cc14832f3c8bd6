#!/bin/sh
# kram loads on the reserved region and unloads with no warning; without a
# region, or on System RAM, it refuses to load with a clear message.
. /host/lib/ktap.sh
kh_module_load_unload kram "$KRAM_PARAMS"

kh_dmesg_mark
if insmod /host/modules/kram.ko 2>/dev/null; then
    rmmod kram; kh_fail "load without a region is refused" "it loaded"
else
    kh_check "load without a region is refused with a message" sh -c 'dmesg | grep -q "kram: no region"'
fi
# 0x1000000 (16 MiB) is System RAM in every rig guest.
if insmod /host/modules/kram.ko base=0x1000000 size=0x1000000 2>/dev/null; then
    rmmod kram; kh_fail "a range in System RAM is refused" "it loaded"
else
    kh_check "a range in System RAM is refused with a message" sh -c 'dmesg | grep -q "overlaps System RAM"'
fi
if insmod /host/modules/kram.ko base=$((KRAM_BASE + 1)) size=$KRAM_SIZE 2>/dev/null; then
    rmmod kram; kh_fail "an unaligned range is refused" "it loaded"
else
    kh_ok "an unaligned range is refused"
fi
