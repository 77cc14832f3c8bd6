#!/bin/sh
# The iommu_preserve module loads and unloads with no warning in the kernel log.
. /host/lib/ktap.sh
kh_kram_ready  # iommu_preserve needs kram's symbols
kh_module_load_unload iommu_preserve "" /dev/iommu-preserve
# Its device answers STATUS (loaded by liveup for the call, unloaded after).
kh_check "/dev/iommu-preserve: nothing preserved" sh -c \
    "/host/bin/liveup iommu --module /host/modules/iommu_preserve.ko status | grep -qx state=none && ! grep -q '^iommu_preserve ' /proc/modules"
# FREEZE's argument is the caller's: a span count that lies, spans that are
# empty, unaligned, past the end, in System RAM or overlapping are each
# refused with EINVAL and one line, before any device or KRAM area is
# looked at (the device here does not even exist); nothing is left behind.
K=/host/bin/kram-selftest
M=/host/modules/iommu_preserve.ko
insmod $M
raw_refused() { # WHAT LINE ARGS...
    local what=$1 line=$2; shift 2
    kh_check "FREEZE with $what: EINVAL" sh -c "$K freeze-raw 07:00.0 $* | grep -qx errno=22"
    kh_check "  and one line says why" sh -c "dmesg | tail -n 2 | grep -q 'iommu_preserve: freeze 0000:07:00.0: $line'"
}
raw_refused "no span" "0 spans: give 1 to 8 (EINVAL)" 0 100000000+1000
raw_refused "9 spans claimed" "9 spans: give 1 to 8 (EINVAL)" 9 100000000+1000
raw_refused "2 spans claimed, 1 given" "span 0x0+0x0 empty" 2 100000000+1000
raw_refused "an unaligned span" "span 0x100000001+0x1000 empty, not page-aligned or past the end (EINVAL)" 1 100000001+1000
raw_refused "a span past the end of memory" "span 0xfffffffffffff000+0x2000 empty, not page-aligned or past the end (EINVAL)" 1 fffffffffffff000+2000
raw_refused "a span in System RAM" "span 0x100000+0x1000 touches System RAM (EINVAL)" 1 100000+1000
raw_refused "overlapping spans" "span 0x100001000+0x1000 overlaps another (EINVAL)" 2 100000000+2000 100001000+1000
rmmod iommu_preserve
kh_check "after the refused FREEZEs: nothing preserved, no record area" sh -c \
    "/host/bin/liveup iommu --module $M status | grep -qx state=none && ! /host/bin/liveup kram list 2>/dev/null | grep -q ' iommu-'"
kh_dmesg_clean "no warning in dmesg after the refused FREEZEs"
