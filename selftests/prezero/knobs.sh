#!/bin/sh
# Every knob and the ioctl refuse bad input with an errno and exactly one
# kernel log line; enable/disable, verify, the idle worker and the memory
# pressure stop work at run time.
. /host/lib/ktap.sh
. /host/lib/prezero.sh
kh_dmesg_mark
pz_pool2m 32 || { kh_fail "2M pool of 32 pages" "got $(cat $H2/nr_hugepages)"; exit 0; }
pz_load || { kh_fail "prezero loads" "insmod failed"; exit 0; }
pz_expect "defaults: enabled verify idle idle_rate_mb min_available_pct inject_dirty" \
    "$(cat $PZ/enabled $PZ/verify $PZ/idle $PZ/idle_rate_mb $PZ/min_available_pct $PZ/inject_dirty | tr '\n' ' ')" \
    "1 0 0 64 5 0 "

# bad_knob KNOB VALUE: the write fails, the value stays, one log line.
bad_knob() {
    before=$(cat $PZ/$1)
    dmesg -c > /dev/null
    if printf '%s\n' "$2" > $PZ/$1 2>/dev/null; then
        kh_fail "$1 refuses '$2'" "write succeeded"; return
    fi
    n=$(dmesg | grep -c "prezero: $1:")
    if [ "$(cat $PZ/$1)" = "$before" ] && [ "$n" = 1 ]; then
        kh_ok "$1 refuses '$2'"
    else
        kh_fail "$1 refuses '$2'" "value $(cat $PZ/$1) (was $before), $n log lines"
    fi
}
for k in enabled verify idle; do
    for v in 2 -1 abc "" 1x 12345678901234567890123456789; do bad_knob $k "$v"; done
done
for v in 0 1048577 -5 abc ""; do bad_knob idle_rate_mb "$v"; done
for v in 101 -1 abc ""; do bad_knob min_available_pct "$v"; done
for v in 1048577 -1 abc ""; do bad_knob idle_pool_mb "$v"; done
for v in 1001 abc 1; do bad_knob inject_dirty "$v"; done   # 1: only with verify=1
# Injections pending when verify goes off are dropped: nothing else would
# catch the dirty page they make.
echo 1 > $PZ/verify; echo 3 > $PZ/inject_dirty; echo 0 > $PZ/verify
pz_expect "verify off drops pending dirty-page injections" "$(cat $PZ/inject_dirty)" 0
kh_check "good values are taken" sh -c "echo 128 > $PZ/idle_rate_mb && echo 10 > $PZ/min_available_pct && [ \$(cat $PZ/idle_rate_mb) = 128 ] && echo 64 > $PZ/idle_rate_mb && echo 5 > $PZ/min_available_pct"

# bad_ioctl NAME ARGS...: liveup prezero zero fails, one log line.
bad_ioctl() {
    name=$1; shift
    dmesg -c > /dev/null
    if $L prezero zero "$@" > /dev/null 2>&1; then kh_fail "ioctl refuses $name" "succeeded"; return; fi
    n=$(dmesg | grep -c "prezero: zero:")
    pz_expect "ioctl refuses $name (one log line)" "$n" 1
}
bad_ioctl "size 3M" --size 3M --node 0 --count 1
bad_ioctl "size 4096" --size 4096 --node 0 --count 1
bad_ioctl "size 0" --size 0 --node 0 --count 1
bad_ioctl "node -1" --size 2M --node=-1 --count 1
bad_ioctl "node 7 (offline)" --size 2M --node 7 --count 1
bad_ioctl "node 100000" --size 2M --node 100000 --count 1
bad_ioctl "count 0" --size 2M --node 0 --count 0
bad_ioctl "count 2^20+1" --size 2M --node 0 --count 1048577
bad_ioctl "flags 2" --size 2M --node 0 --count 1 --flags 2
bad_ioctl "pool size 1G" --size 1G --node 0 --count 1 --flags 1
pz_expect "nothing was zeroed by bad requests" "$(pz_stat 0 2M zeroed)" 0

# Disabled: the hooks are off (static key), requests refused, no counting.
$L prezero zero --size 2M --node 0 --count 4 > /dev/null
echo 0 > $PZ/enabled
pz_expect "disable" "$(cat $PZ/enabled)" 0
bad_ioctl "while disabled" --size 2M --node 0 --count 1
h=$(pz_stat 0 2M hits); m=$(pz_stat 0 2M misses)
kh_check "populate while disabled: zero" $L prezero populate --kind huge2m --size 16M --check
pz_expect "disabled: hooks not consulted" "$(pz_stat 0 2M hits) $(pz_stat 0 2M misses)" "$h $m"
echo 1 > $PZ/enabled
pz_expect "re-enable" "$(cat $PZ/enabled)" 1
out=$($L prezero zero --size 2M --node 0 --count 2)
pz_expect "zeroing works again" "$(echo "$out" | sed -n 's/^node 0: zeroed \([0-9]*\) .*/\1/p')" 2

# Memory pressure: with min_available_pct=100 nothing is zeroed.
echo 100 > $PZ/min_available_pct
out=$($L prezero zero --size 2M --node 0 --count 4)
pz_expect "memory short: zeroing stops at once" "$(echo "$out" | sed -n 's/^node 0: zeroed \([0-9]*\) .*/\1/p')" 0
echo 5 > $PZ/min_available_pct

# Idle worker, rate-capped: marks pages on its own, stops when switched off.
z0=$(pz_stat 0 2M zeroed)
echo 1024 > $PZ/idle_rate_mb
echo 1 > $PZ/idle
kh_wait 60 pz_at_least 0 2M marked 32
kh_check "idle worker marked the whole pool (${KH_WAITED}s)" test "$(pz_stat 0 2M marked)" = 32
echo 0 > $PZ/idle
sleep 1
kh_check "populate 64M: zero" $L prezero populate --kind huge2m --size 64M --check
z1=$(pz_stat 0 2M zeroed); sleep 3
pz_expect "idle worker off: no more zeroing" "$(pz_stat 0 2M zeroed)" "$z1"
kh_check "idle worker zeroed pages" test "$z1" -gt "$z0"
# The worker keeps the THP pool at idle_pool_mb, and refills it after faults take it.
echo 1 > $PZ/idle
echo 16 > $PZ/idle_pool_mb
kh_wait 60 pz_at_least 0 thp free 8
pz_expect "idle worker filled the THP pool to idle_pool_mb=16 (${KH_WAITED}s)" "$(pz_stat 0 thp free)" 8
sleep 2
pz_expect "and no further" "$(pz_stat 0 thp free)" 8
kh_check "populate THP 16M: zero" $L prezero populate --kind thp --size 16M --check
kh_wait 60 pz_at_least 0 thp free 8
pz_expect "refilled after faults took pages (${KH_WAITED}s)" "$(pz_stat 0 thp free)" 8
kh_check "the 4K pool is not filled by the worker" test "$(pz_stat 0 4K free)" = 0
echo 0 > $PZ/idle_pool_mb; echo 0 > $PZ/idle
rmmod prezero
pz_pool2m 0
kh_dmesg_clean "prezero knobs: no warning in dmesg"
