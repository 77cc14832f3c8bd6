#!/bin/sh
# A KRAM area mapped through /dev/kram-pages is made of ordinary pages that
# get_user_pages can pin, as VFIO type1 and iommufd pin guest RAM
# (kram/kram_glue.c gives a memmap= region ZONE_DEVICE struct pages on the
# first such mmap). Through /dev/kram it is a PFN range (VM_IO|VM_PFNMAP),
# which GUP refuses with EFAULT: the control that shows the check can fail.
. /host/lib/ktap.sh
L=/host/bin/liveup
T=/host/bin/kram-selftest
kh_dmesg_mark
kh_kram_ready
$L kram delete pin-test > /dev/null 2>&1
kh_check "area pin-test created" $L kram create pin-test --size 2M
$T show pin-test > /tmp/pin.show
$T pin pin-test 7 > /tmp/pin.pfn 2>&1
kh_log "/dev/kram: $(cat /tmp/pin.pfn | tr '\n' ' ')"
kh_check "/dev/kram maps a PFN range (VM_IO, VM_PFNMAP) that GUP refuses (EFAULT)" sh -c \
    "grep '^vmflags=' /tmp/pin.pfn | grep -q -w io && grep '^vmflags=' /tmp/pin.pfn | grep -q -w pf && grep -q '^gup_error=14' /tmp/pin.pfn"
kh_check "  and it wrote nothing" $T zero pin-test
$T --device /dev/kram-pages pin pin-test 7 > /tmp/pin.out 2>&1
kh_log "/dev/kram-pages: $(cat /tmp/pin.out | tr '\n' ' ')"
kh_check "struct pages made for the region on the first /dev/kram-pages mmap" sh -c "! dmesg | grep -q 'kram: no struct pages'"
kh_check "/dev/kram-pages maps ordinary pages: neither VM_IO nor VM_PFNMAP" sh -c \
    "grep -q '^vmflags=.*sh' /tmp/pin.out && ! grep -q -w -e io -e pf /tmp/pin.out"
kh_check "GUP wrote and read the whole area through the mapping" grep -q "^pinned_bytes=$((2 << 20))" /tmp/pin.out
kh_check "the bytes stayed in the area after the process exited" $T verify pin-test 7
kh_check "a wrong seed does not verify (the check can fail)" sh -c "! $T verify pin-test 8 2>/dev/null"
# Bad input to the new node: mmap garbage and fuzzed ioctls are refused and
# change nothing (the same for /dev/kram, as a reference).
for d in /dev/kram /dev/kram-pages; do
    kh_check "$d: bad mmaps refused with EINVAL" $T --device $d bad-maps pin-test
done
kh_check "/dev/kram-pages: 500 fuzzed ioctls: errors only, nothing changed" $T --device /dev/kram-pages fuzz 500 11
kh_check "  and the area's bytes are as written" $T verify pin-test 7
# Both nodes fill a mapping at fault time, a 2 MiB (PMD) entry per fault
# where the mapping and the area are 2 MiB-aligned (areas of 2 MiB or more
# start aligned; the test maps like QEMU, 2 MiB-aligned): /dev/kram as a
# PFN range, /dev/kram-pages with the region's 2 MiB folios (so a guest
# restored after an upgrade refaults its RAM 2 MiB at a time). 8 MiB take
# about 4 faults that way; mapped 4 KiB past a 2 MiB boundary, one per
# page (the control). The bytes written through one node read back
# through the other.
$L kram create huge-test --size 8M > /dev/null
$T show huge-test > /tmp/huge.show
kh_log "huge-test: $(cat /tmp/huge.show)"
kh_check "an 8 MiB area starts 2 MiB-aligned in physical memory" sh -c \
    "test \$(( ($KRAM_BASE + $(cut -d' ' -f3 /tmp/huge.show)) % 2097152 )) = 0"
$T faults huge-test > /tmp/huge.pfn
$T --device /dev/kram-pages faults huge-test > /tmp/huge.pages
$T --device /dev/kram-pages faults --misalign huge-test > /tmp/huge.pages4k
kh_log "faults: /dev/kram $(cat /tmp/huge.pfn), /dev/kram-pages $(cat /tmp/huge.pages), misaligned $(cat /tmp/huge.pages4k)"
kh_check "/dev/kram maps 8 MiB with PMD entries (at most 16 faults)" \
    grep -q '^faults=\([0-9]\|1[0-6]\) pages=2048' /tmp/huge.pfn
kh_check "/dev/kram-pages maps 8 MiB with PMD entries too (at most 16 faults)" \
    grep -q '^faults=\([0-9]\|1[0-6]\) pages=2048' /tmp/huge.pages
kh_check "  mapped off a 2 MiB boundary: one fault per page (the control)" \
    grep -q '^faults=\(20[4-9][0-9]\|2[1-9][0-9][0-9]\) pages=2048' /tmp/huge.pages4k
kh_check "GUP writes and reads back an 8 MiB area through /dev/kram-pages (2 MiB folios)" sh -c \
    "$T --device /dev/kram-pages pin huge-test 23 | grep -q '^pinned_bytes=$((8 << 20))' && $T verify huge-test 23"
kh_check "bytes written through /dev/kram read back through /dev/kram-pages" sh -c \
    "$T fill huge-test 21 && $T --device /dev/kram-pages verify huge-test 21"
kh_check "and the other way" sh -c \
    "$T --device /dev/kram-pages fill huge-test 22 && $T verify huge-test 22 && ! $T verify huge-test 21 2>/dev/null"
$L kram delete huge-test
# A mapped area is never deleted or formatted away under its mapping
# (its pages would go to the next owner): every copy of a mapping counts.
for d in /dev/kram /dev/kram-pages; do
    $L kram create busy-test --size 64K > /dev/null
    kh_check "$d: delete and format of a mapped area refused (EBUSY), through a split and a fork; deleted after" \
        $T --device $d busy busy-test
done
kh_check "  each refusal said so in dmesg" sh -c "test \$(dmesg | grep -c 'kram: area .* is mapped .*not deleted (EBUSY)') = 6 && test \$(dmesg | grep -c 'kram: 1 areas are mapped: region not formatted (EBUSY)') = 2"
kh_check "area deleted" $L kram delete pin-test
# The same pages again (first fit): a new area starts zeroed, whatever the
# deleted one left there.
kh_check "a new area over the deleted one's pages" sh -c \
    "$L kram create pin-test2 --size 2M && $T show pin-test2 | grep -q ' $(cut -d' ' -f3 /tmp/pin.show) '"
kh_check "  reads all zero (nothing of the deleted area's pattern)" $T --device /dev/kram-pages zero pin-test2
$L kram delete pin-test2
# Nobody maps a new area before it is zeroed: a second opener racing the
# create of an area over a deleted one's pages is refused (EBUSY) until the
# zeroing is done, and never reads the old bytes.
kh_check "a new area is zeroed before another opener can map it" sh -c "$T zero-race race-test 64 > /tmp/zr 2>&1" || cat /tmp/zr
kh_log "$(cat /tmp/zr)"
$L kram delete race-test
rmmod kram
kh_check "unload: no page left referenced" sh -c "! dmesg | grep -q 'still referenced at unload'"
kh_dmesg_clean "no warning in dmesg"
