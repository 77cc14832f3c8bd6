#!/bin/sh
# Zeroing runs in the caller's context (its system time pays for it) and
# stops promptly on a signal (SIGTERM; a
# background job of a non-interactive shell ignores SIGINT): the request
# returns, the page being zeroed goes back unmarked (aborted), and the
# free pool is whole again.
. /host/lib/ktap.sh
. /host/lib/prezero.sh
kh_dmesg_mark
pz_pool2m 384 || { kh_fail "2M pool of 384 pages" "got $(cat $H2/nr_hugepages)"; pz_pool2m 0; exit 0; }
pz_load || { kh_fail "prezero loads" "insmod failed"; exit 0; }
t0=$(cut -d' ' -f1 /proc/uptime)
time -p $L prezero zero --size 2M --node 0 --count all > /tmp/pz-all.log 2> /tmp/pz-time.log
t1=$(cut -d' ' -f1 /proc/uptime)
full=$(awk -v a=$t0 -v b=$t1 'BEGIN { printf "%d", (b - a) * 1000 }')
kh_log "zeroing 768 MiB took $full ms: $(tail -n1 /tmp/pz-all.log); caller's $(grep sys /tmp/pz-time.log)"
# The zeroing ran in the caller: its system time (what its cgroup is
# charged) covers at least 80% of the time the kernel spent zeroing.
zms=$(sed -n 's/.* in \([0-9.]*\) ms$/\1/p' /tmp/pz-all.log | tail -n1)
sys=$(awk '/^sys/ { print $2 }' /tmp/pz-time.log)
kh_check "zeroing CPU time charged to the caller (sys ${sys} s, zeroing ${zms} ms)" \
    awk -v s="$sys" -v z="$zms" 'BEGIN { exit !(z > 0 && s * 1000 >= 0.8 * z) }'

# Unmark everything by cycling the pool, then zero again and interrupt.
pz_pool2m 0; pz_pool2m 384
z0=$(pz_stat 0 2M zeroed)
$L prezero zero --size 2M --node 0 --count all > /tmp/pz-int.log 2>&1 &
p=$!
# Signal it once the request is in the kernel (pages are being zeroed).
_zeroing() { [ "$(pz_stat 0 2M zeroed)" -gt "$z0" ]; }
kh_wait -m 20 4 _zeroing || true
z=$(( $(pz_stat 0 2M zeroed) - z0 ))
kill -TERM $p
t2=$(cut -d' ' -f1 /proc/uptime)
wait $p
t3=$(cut -d' ' -f1 /proc/uptime)
stop=$(awk -v a=$t2 -v b=$t3 'BEGIN { printf "%d", (b - a) * 1000 }')
kh_log "stopped $stop ms after SIGTERM; $(cat /tmp/pz-int.log | tail -n1)"
m=$(pz_stat 0 2M marked)
kh_log "request was in the kernel: $z pages zeroed when signalled, $m marked at the end, aborted $(pz_stat 0 2M aborted)"
if [ "$full" -lt 600 ]; then
    kh_skip "SIGTERM stops zeroing" "a full run took only $full ms, too short to interrupt"
else
    kh_check "SIGTERM stops zeroing within 500 ms ($stop ms)" test "$stop" -lt 500
    kh_check "interrupted: not all pages marked ($m of 384)" test "$m" -lt 384
fi
pz_expect "free pool whole after the interrupt" "$(pz_stat 0 2M free)" 384
rmmod prezero
pz_pool2m 0
kh_dmesg_clean "prezero stop: no warning in dmesg"
