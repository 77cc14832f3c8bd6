#!/bin/bash
# Live-migration benchmark: plain QEMU and QEMU multifd+zstd (driven straight
# through QMP by bench/migrate-qemu.py) against `liveup migrate`'s modes, on
# links shaped with tbf between two network namespaces, moving one dirtying
# TCG guest back and forth.
#
# Defaults (each an environment knob):
#   KH_MIGRATE_RATES   "1gbit 10gbit", one table each (KH_MIGRATE_RATE,
#                      if set alone, gives the one link of older runs)
#   KH_MIGRATE_MEM     2G guest
#   KH_MIGRATE_FILL_MB 1024: filled at boot, half random bytes, half
#                      text-like (tools/guest/vm-dirty-init)
#   KH_MIGRATE_DIRTY_MB 8 MiB region of random bytes rewritten at
#   KH_MIGRATE_DIRTY_RATE 8 MiB/s at most
#   KH_BENCH_CASES     "qemu:plain qemu:zstd native:zstd relay:none relay:lz4
#                      relay:zstd relay:gzip" (qemu:* bypass liveup; the
#                      others are `liveup migrate --mode M --codec C`;
#                      C@SIZE adds --chunk-size SIZE)
#   KH_BENCH_SWEEP     "256K 1M 4M 16M": relay:zstd@SIZE cases added on
#   KH_BENCH_SWEEP_RATE 1gbit
#   KH_BENCH_THREADS   2 threads/channels everywhere
#   KH_BENCH_REPS      1 (medians over reps; each move of a 2 GiB TCG guest
#                      takes half a minute or more here)
#   KH_BENCH_CHECKS    2 guest VM-CHECK lines after each move
# Each move must pass the guest's own memory checks, else the bench fails.
# Prints a reStructuredText table per link and the targets met or missed.
set -uo pipefail
export KH_MIGRATE_MEM=${KH_MIGRATE_MEM:-2G}
export KH_MIGRATE_FILL_MB=${KH_MIGRATE_FILL_MB:-1024}
export KH_MIGRATE_DIRTY_MB=${KH_MIGRATE_DIRTY_MB:-8}
export KH_MIGRATE_DIRTY_RATE=${KH_MIGRATE_DIRTY_RATE:-8}
RATES=${KH_MIGRATE_RATES:-${KH_MIGRATE_RATE:-1gbit 10gbit}}
KH_MIGRATE_RATE=${RATES%% *}
. "$(dirname "$0")/../tools/migrate-lib.sh"
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
trap khm_cleanup EXIT
REPS=${KH_BENCH_REPS:-1}
THREADS=${KH_BENCH_THREADS:-2}
CASES=${KH_BENCH_CASES:-"qemu:plain qemu:zstd native:zstd relay:none relay:lz4 relay:zstd relay:gzip"}
SWEEP=${KH_BENCH_SWEEP-"256K 1M 4M 16M"}
SWEEP_RATE=${KH_BENCH_SWEEP_RATE:-1gbit}
export KHM_CHECKS=${KH_BENCH_CHECKS:-2}
DOWNTIME_MS=300
khm_build || exit 1
khm_net || exit 1
echo "# work dir $KHM_WORK" >&2

# CPU seconds of process PID (all threads, living and gone) and of its
# vCPU threads ("CPU n/TCG" or "CPU n/KVM"): the migration's cost is the
# first less the second, the guest's own running being no part of it.
tck=$(getconf CLK_TCK)
cpu_proc() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk -v t="$tck" '{ printf "%.2f", ($12 + $13) / t }'; }
cpu_vcpu() {
    local d s=0
    for d in /proc/"$1"/task/*; do
        case "$(cat "$d/comm" 2>/dev/null)" in "CPU "*) s="$s + $(sed 's/.*) //' "$d/stat" | awk '{ print $12 + $13 }')";; esac
    done
    awk -v t="$tck" "BEGIN { printf \"%.2f\", ($s) / t }"
}
tx_bytes() { ip netns exec "$1" cat "/sys/class/net/$(khm_dev "$1")/statistics/tx_bytes"; }

khm_vm "$KHM_NS_A" v0 || exit 1
khm_wait_log "$KHM_WORK/v0.1.log" "^VM-CHECK" 2 900 || { echo "guest did not come up" >&2; exit 1; }
head -n1 "$KHM_WORK/v0.1.log" >&2
cur=v0 here=$KHM_NS_A there=$KHM_NS_B k=0 bad=0
results=$KHM_WORK/results.tsv
: > "$results"
for rate in $RATES; do
    khm_shape "$rate" || exit 1
    cases=$CASES
    if [ "$rate" = "$SWEEP_RATE" ]; then for s in $SWEEP; do cases="$cases relay:zstd@$s"; done; fi
    for rep in $(seq "$REPS"); do
        for c in $cases; do
            mode=${c%%:*} codec=${c#*:} chunk=()
            case $codec in *@*) chunk=(--chunk-size "${codec#*@}"); codec=${codec%@*};; esac
            k=$((k + 1)); next=v$k port=$((4500 + k))
            khm_vm "$there" "$next" incoming || exit 1
            sp=$(eval echo "\$KHM_PID_$cur") dp=$(eval echo "\$KHM_PID_$next")
            s0=$(cpu_proc "$sp") sv0=$(cpu_vcpu "$sp") d0=$(cpu_proc "$dp") dv0=$(cpu_vcpu "$dp") tx0=$(tx_bytes "$here")
            if [ "$mode" = qemu ]; then
                /usr/bin/python3 "$KH_ROOT/bench/migrate-qemu.py" "$KHM_WORK/$cur.qmp" "$KHM_WORK/$next.qmp" \
                    "$(khm_ip "$there")" $port "$codec" "$THREADS" $DOWNTIME_MS \
                    > "$KHM_WORK/$next.json" 2> "$KHM_WORK/$next.json.err"
                rc=$?
            else
                khm_receive "$there" "$next" $port
                qat=0; [ "$codec" = qat ] && qat=1
                KHM_IN_QATROOT=$qat khm_send "$here" "$cur" "$there" $port "$KHM_WORK/$next.json" \
                    --mode "$mode" --codec "$codec" --threads "$THREADS" --downtime-ms $DOWNTIME_MS "${chunk[@]}"
                rc=$?
                wait "$KHM_RECV_PID"
            fi
            s1=$(cpu_proc "$sp") sv1=$(cpu_vcpu "$sp") d1=$(cpu_proc "$dp") dv1=$(cpu_vcpu "$dp") tx1=$(tx_bytes "$here")
            if [ $rc != 0 ]; then
                echo "$rate $c rep $rep: move failed: $(tail -n2 "$KHM_WORK/$next.json.err")" >&2
                bad=$((bad + 1)); kill "$dp" 2>/dev/null; continue
            fi
            kill "$sp" 2>/dev/null
            if ! khm_memcheck "$next"; then echo "$rate $c rep $rep: guest memory check FAILED" >&2; bad=$((bad + 1)); fi
            src_q=$(awk "BEGIN { print ($s1 - $s0) - ($sv1 - $sv0) }")
            dst_q=$(awk "BEGIN { print ($d1 - $d0) - ($dv1 - $dv0) }")
            jq -r --arg c "$c" --arg r "$rate" --argjson sq "$src_q" --argjson dq "$dst_q" --argjson tx $((tx1 - tx0)) \
                'select(.event == "result") | [$r, $c, .total_secs, .qemu_downtime_ms, .downtime_ms, .wire_bytes, $tx, .ratio,
                $sq + .src_liveup_cpu_secs, .src_liveup_cpu_secs, $dq + .dst_liveup_cpu_secs,
                .plan.level, (.plan.chunk_size / 1024), (.dirty_bps // 0)] | @tsv' \
                "$KHM_WORK/$next.json" >> "$results"
            echo "$rate $c rep $rep: $(tail -n1 "$results")" >&2
            cur=$next; t=$here; here=$there; there=$t
        done
    done
done

[ -z "${KH_BENCH_RESULTS:-}" ] || cp "$results" "$KH_BENCH_RESULTS"
/usr/bin/python3 "$KH_ROOT/bench/migrate-report.py" "$results" "$KHM_MEM" "$THREADS" "$REPS" "$KH_MIGRATE_FILL_MB" \
    "$KH_MIGRATE_DIRTY_MB" "$KH_MIGRATE_DIRTY_RATE" "$RATES" "$SWEEP_RATE"
echo "# $bad failed move(s)" >&2
[ $bad != 0 ] || [ -n "${KH_KEEP_WORK:-}" ] || { khm_cleanup; rm -rf "$KHM_WORK"; }
[ $bad = 0 ]
