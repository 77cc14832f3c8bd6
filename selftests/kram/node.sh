#!/bin/sh
# Each KRAM area has its own nodes, /dev/kram-area/ID and
# /dev/kram-pages-area/ID (kram/area_node.rs), whose files reach that area
# only: liveup gives QEMU its VM's node as mem-path, so no QEMU holds a
# descriptor that maps another VM's RAM, the IOMMU tables or liveup's saved
# state (selftests/kram/vm.sh checks QEMU's descriptors).
. /host/lib/ktap.sh
L=/host/bin/liveup
T=/host/bin/kram-selftest
kh_dmesg_mark
kh_kram_ready
for a in node-a node-b; do $L kram delete $a > /dev/null 2>&1; done
kh_check "areas node-a (64 KiB) and node-b (2 MiB) created and filled through /dev/kram" sh -c \
    "$L kram create node-a --size 64K > /dev/null && $L kram create node-b --size 2M > /dev/null &&
     $T fill node-a 5 > /dev/null && $T fill node-b 6 > /dev/null"
id_a=$($T show node-a | cut -d' ' -f1)
kh_log "nodes: $(ls /dev/kram-area | wc -l) PFN, $(ls /dev/kram-pages-area | wc -l) pages; node-a is area $id_a"
kh_check "a node of each kind per area id (32 each), root-only (0600)" sh -c \
    "[ \$(ls /dev/kram-area | wc -l) = 32 ] && [ \$(ls /dev/kram-pages-area | wc -l) = 32 ] &&
     [ \$(stat -c %a /dev/kram-area/1) = 600 ] && [ \$(stat -c %a /dev/kram-pages-area/32) = 600 ]"
$T node node-a 5 > /tmp/node.out 2>&1; r=$?
sed 's/^/KH-LOG node-a: /' /tmp/node.out
kh_check "node-a's nodes: its pages from offset 0, nothing past it, no ioctl; delete and format EBUSY while open; a node without an area ENOENT" test $r = 0
kh_check "node-b's nodes (2 MiB): the same" sh -c "$T node node-b 6 > /dev/null"
kh_check "node-a deleted once its nodes are closed" sh -c "$L kram delete node-a > /dev/null"
kh_check "node-a's node opens no more (ENOENT)" sh -c "! (exec 3<> /dev/kram-area/$id_a) 2> /dev/null"
$L kram delete node-b > /dev/null 2>&1
kh_dmesg_clean "no warning in dmesg"
