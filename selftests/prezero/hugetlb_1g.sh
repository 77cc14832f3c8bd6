#!/bin/sh
# The same for 1 GiB pages. The rig guest usually cannot allocate one at
# run time (no free, aligned, movable GiB after boot), so stage 0 tries
# after compaction and, failing that, kexecs into the same kernel with one
# 1 GiB page reserved at boot (hugepagesz=1G hugepages=1); the page goes
# back to the buddy allocator at the end.
. /host/lib/ktap.sh
. /host/lib/prezero.sh
kh_dmesg_mark
if ! pz_pool1g 1; then
    echo 3 > /proc/sys/vm/drop_caches; echo 1 > /proc/sys/vm/compact_memory
    if ! pz_pool1g 1; then
        pz_pool1g 0
        kh_log "hstates: $(ls /sys/kernel/mm/hugepages | tr '\n' ' ') cmdline: $(cat /proc/cmdline)"
        if [ "$KH_STAGE" = 0 ]; then
            kh_log "no 1G page at run time; kexec with one reserved at boot"
            kh_kexec_next "hugepagesz=1G hugepages=1"
            exit 0
        fi
        if grep -q ' kasan_report$' /proc/kallsyms && [ "$(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo)" -lt 5000000 ]; then
            # KASAN's shadow is carved from the top of RAM at boot, where
            # the only GiB-aligned free range of a 4 GiB rig guest is
            # (make check runs the rig with KH_RIG_MEM=6G).
            kh_skip "1G page" "KASAN kernel: no free GiB-aligned range in a 4 GiB guest; run the rig with KH_RIG_MEM=6G"
            exit 0
        fi
        kh_fail "1G pool of 1 page" "none at run time, none from hugepages=1 at boot"; exit 0
    fi
fi
kh_ok "1G pool of 1 page (stage $KH_STAGE)"
pz_load || { kh_fail "prezero loads" "insmod failed"; exit 0; }
out=$($L prezero zero --size 1G --node 0 --count 1)
kh_log "$out"
pz_expect "1G page zeroed and marked" "$(pz_stat 0 1G zeroed) $(pz_stat 0 1G marked)" "1 1"
kh_check "populate 1G: all bytes zero" $L prezero populate --kind huge1g --size 1G --check --dirty
pz_expect "1 hit, 0 misses" "$(pz_stat 0 1G hits) $(pz_stat 0 1G misses)" "1 0"
kh_check "populate 1G again (written page): all bytes zero" $L prezero populate --kind huge1g --size 1G --check
pz_expect "then 1 miss" "$(pz_stat 0 1G misses)" 1
rmmod prezero
pz_pool1g 0
kh_check "1G page released" test "$(cat $H1/nr_hugepages)" = 0
kh_dmesg_clean "prezero 1G: no warning in dmesg"
