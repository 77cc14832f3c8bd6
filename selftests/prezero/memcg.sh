#!/bin/sh
# Who pays for the memory the zeroed-page pools hold (patches/0004,
# Documentation/prezero.rst, "Memory"):
# 1. pool pages are charged to the cgroup of the task that filled them
#    (kernel memory in its memory.stat), and freed with the pool;
# 2. a fill stops at that cgroup's memory.max;
# 3. a fault that takes a pool page moves the charge to the faulting
#    task's cgroup;
# 4. a task in the filling cgroup that needs memory up to memory.max gets
#    it: reclaim there shrinks that cgroup's pool pages (no OOM kill);
# 5. a pool holds pages of at most four cgroups: a fifth's fill is
#    refused, nothing pooled or lost.
. /host/lib/ktap.sh
. /host/lib/prezero.sh
CG=/sys/fs/cgroup
T=/sys/kernel/mm/transparent_hugepage
kh_dmesg_mark
if ! grep -q " $CG cgroup2 " /proc/mounts; then
    mkdir -p $CG && mount -t cgroup2 cgroup2 $CG || { kh_fail "cgroup2 mounts" "mount failed"; exit 0; }
fi
grep -qw memory $CG/cgroup.controllers || { kh_fail "the memory controller is there" "cgroup.controllers: $(cat $CG/cgroup.controllers)"; exit 0; }
echo +memory > $CG/cgroup.subtree_control
# kernel CG: bytes of kernel memory charged to cgroup CG
kernel() { awk '$1 == "kernel" { print $2 }' $CG/$1/memory.stat; }
current() { cat $CG/$1/memory.current; }
# in_cg CG CMD...: CMD run by a process in cgroup CG
in_cg() { local c=$1; shift; sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$CG/$c" "$@"; }
zeroed_of() { sed -n 's/^node 0: zeroed \([0-9]*\) .*/\1/p' "$1"; }
MiB=1048576
for c in pz-a pz-b pz-use pz-1 pz-2 pz-3 pz-4 pz-5; do mkdir -p $CG/$c; done
pz_unload; pz_load || { kh_fail "prezero loads" "insmod failed"; exit 0; }

# --- 1. the filler's cgroup pays --------------------------------------------
k0=$(kernel pz-a)
kh_check "4K pool: 8192 pages (32 MiB) zeroed from cgroup pz-a" in_cg pz-a $L prezero zero --pool --size 4K --node 0 --count 8192
k1=$(kernel pz-a)
kh_log "pz-a kernel memory: $k0 before, $k1 with the pool (+$(( (k1 - k0) / MiB )) MiB)"
# (memory.stat's counters are flushed in per-CPU batches: a few pages may
# not show yet; session 28's run read 32 MiB less one page)
kh_check "  charged to pz-a as kernel memory (+$((k1 - k0)) bytes, want 30-36 MiB)" \
    sh -c "[ $((k1 - k0)) -ge $((30 * MiB)) ] && [ $((k1 - k0)) -le $((36 * MiB)) ]"

# --- 3. a fault takes a page: the charge moves ------------------------------
thp0=$(sed 's/.*\[\(.*\)\].*/\1/' $T/enabled)
echo never > $T/enabled
t0=$(pz_stat 0 4K taken)
kh_check "populate 16 MiB (4K faults) in cgroup pz-use: all bytes zero" in_cg pz-use $L prezero populate --kind anon --size 16M --check
t1=$(pz_stat 0 4K taken)
k2=$(kernel pz-a)
kh_log "pool pages taken: $((t1 - t0)); pz-a kernel memory $k2 (-$(( (k1 - k2) / MiB )) MiB); pz-use peak $(cat $CG/pz-use/memory.peak)"
kh_check "  the faults took pool pages ($((t1 - t0)), want >= 2048)" test $((t1 - t0)) -ge 2048
kh_check "  pz-a no longer pays for them (kernel memory down by >= 4096 * taken pages)" \
    test $((k1 - k2)) -ge $(( (t1 - t0) * 4096 ))
kh_check "  pz-use did (its peak >= 16 MiB)" test "$(cat $CG/pz-use/memory.peak)" -ge $((16 * MiB))
pz_unload
k3=$(kernel pz-a)
kh_check "unload frees the pool, and pz-a's charge with it (kernel $k3, was $k0)" test $((k3 - k0)) -le $((2 * MiB))

# --- 2. a fill stops at memory.max ------------------------------------------
pz_load
echo $((96 * MiB)) > $CG/pz-b/memory.max
in_cg pz-b $L prezero zero --pool --size 2M --node 0 --count 64 > /tmp/pz-b.log 2>&1
z=$(zeroed_of /tmp/pz-b.log)
kh_log "THP pool from pz-b (memory.max 96 MiB): $(cat /tmp/pz-b.log | tr '\n' ' '); current $(current pz-b), kernel $(kernel pz-b)"
kh_check "fill from pz-b stopped short of 64 THPs (128 MiB) at its memory.max (zeroed ${z:-none})" sh -c "[ -n '$z' ] && [ '$z' -ge 24 ] && [ '$z' -lt 64 ]"
kh_check "  pz-b's memory.current within memory.max" test "$(current pz-b)" -le $((96 * MiB))
pz_expect "  the pool holds what was zeroed" "$(pz_stat 0 thp free)" "$z"

# --- 4. reclaim in pz-b shrinks its pool pages -------------------------------
r0=$(pz_stat 0 thp reclaimed)
oom0=$(awk '$1 == "oom_kill" { print $2 }' $CG/pz-b/memory.events)
kh_check "a task in pz-b gets 64 MiB (4K faults) beside the pool: all bytes zero" in_cg pz-b $L prezero populate --kind anon --size 64M --check
r1=$(pz_stat 0 thp reclaimed)
oom1=$(awk '$1 == "oom_kill" { print $2 }' $CG/pz-b/memory.events)
kh_log "pz-b: THP pool $(pz_stat 0 thp free) left of $z, $((r1 - r0)) reclaimed; oom_kill $oom0 -> $oom1; peak $(cat $CG/pz-b/memory.peak)"
kh_check "  reclaim in pz-b gave pool pages back ($((r1 - r0)) THPs, want >= 8)" test $((r1 - r0)) -ge 8
pz_expect "  nothing OOM-killed in pz-b" "$oom1" "$oom0"
kh_check "  pz-b stayed within memory.max (peak $(cat $CG/pz-b/memory.peak))" test "$(cat $CG/pz-b/memory.peak)" -le $((96 * MiB))
pz_unload

# --- 5. four owners a pool ----------------------------------------------------
# (THP pool, THP faults off: no other task's fault takes these pages)
pz_load
for c in pz-1 pz-2 pz-3 pz-4; do
    kh_check "THP pool: 2 pages from $c" in_cg $c $L prezero zero --pool --size 2M --node 0 --count 2
done
free4=$(pz_stat 0 thp free)
in_cg pz-5 $L prezero zero --pool --size 2M --node 0 --count 2 > /tmp/pz-5.log 2>&1
rc=$?
kh_log "a fifth cgroup's fill: exit $rc: $(tr '\n' ' ' < /tmp/pz-5.log)"
kh_check "  a fifth cgroup's fill is refused (exit $rc, ENOSPC)" sh -c "[ $rc != 0 ] && grep -q ENOSPC /tmp/pz-5.log"
pz_expect "  nothing pooled for it" "$(pz_stat 0 thp free)" "$free4"
k5=$(kernel pz-5)
kh_check "  and nothing left charged to it (kernel $k5)" test "$k5" -le $((1 * MiB))
kh_check "  one kernel log line says why" sh -c "dmesg | grep -q 'holds pages of four other cgroups'"
pz_unload
echo "$thp0" > $T/enabled
kh_dmesg_clean "no warnings"
for c in pz-a pz-b pz-use pz-1 pz-2 pz-3 pz-4 pz-5; do rmdir $CG/$c 2>/dev/null; done
