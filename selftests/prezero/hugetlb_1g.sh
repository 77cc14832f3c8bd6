#!/bin/sh
# The same for 1 GiB pages, when the rig can allocate one at run time.
. /host/lib/ktap.sh
. /host/lib/prezero.sh
kh_dmesg_mark
if ! pz_pool1g 1; then
    kh_skip "1G page" "cannot allocate a 1 GiB page at run time in this guest"
    pz_pool1g 0; exit 0
fi
kh_ok "1G pool of 1 page"
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
kh_dmesg_clean "prezero 1G: no warning in dmesg"
