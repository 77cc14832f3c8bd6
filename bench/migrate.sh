#!/bin/bash
# Live-migration benchmark: QEMU's own multifd modes against liveup's relay
# codecs, on the same shaped link (tbf, $KH_MIGRATE_RATE, default 100mbit)
# between two network namespaces, moving one dirtying TCG guest
# ($KH_MIGRATE_MEM, default 512M) back and forth. Every case uses the same
# thread count ($KH_BENCH_THREADS, default 2) and runs $KH_BENCH_REPS times
# (default 3); the table gives medians, and time and wire bytes as ratios to
# native multifd without compression measured in the same run. Each move is
# checked by the guest's own checksums. Prints a reStructuredText table.
set -uo pipefail
. "$(dirname "$0")/../tools/migrate-lib.sh"
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
trap khm_cleanup EXIT
REPS=${KH_BENCH_REPS:-3}
THREADS=${KH_BENCH_THREADS:-2}
CASES=${KH_BENCH_CASES:-"native:none native:gzip native:zstd relay:none relay:lz4 relay:zstd relay:gzip relay:qat"}
khm_build || exit 1
khm_net || exit 1
echo "# work dir $KHM_WORK" >&2

khm_vm "$KHM_NS_A" v0 || exit 1
khm_wait_log "$KHM_WORK/v0.1.log" "^VM-CHECK" 2 120 || { echo "guest did not come up" >&2; exit 1; }
cur=v0 here=$KHM_NS_A there=$KHM_NS_B k=0 bad=0
results=$KHM_WORK/results.tsv
: > "$results"
for rep in $(seq "$REPS"); do
    for c in $CASES; do
        mode=${c%%:*} codec=${c#*:}
        k=$((k + 1)); next=v$k port=$((4500 + k))
        khm_vm "$there" "$next" incoming || exit 1
        khm_receive "$there" "$next" $port
        qat=0; [ "$codec" = qat ] && qat=1
        KHM_IN_QATROOT=$qat khm_send "$here" "$cur" "$there" $port "$KHM_WORK/$next.json" \
            --mode "$mode" --codec "$codec" --threads "$THREADS"
        rc=$?
        wait "$KHM_RECV_PID"
        if [ $rc != 0 ]; then
            echo "$c rep $rep: send failed: $(tail -n2 "$KHM_WORK/$next.json.err")" >&2
            bad=$((bad + 1)); kill "$(eval echo "\$KHM_PID_$next")" 2>/dev/null; continue
        fi
        kill "$(eval echo "\$KHM_PID_$cur")" 2>/dev/null
        if ! khm_memcheck "$next"; then echo "$c rep $rep: guest memory check FAILED" >&2; bad=$((bad + 1)); fi
        jq -r --arg c "$c" '.Done | [$c, .total_secs, .downtime_ms, .wire_bytes, .ratio,
            .src_qemu_cpu_secs, .src_liveup_cpu_secs, .dst_qemu_cpu_secs + .dst_liveup_cpu_secs,
            .plan.level, (.plan.chunk_size / 1024), (.plan.converge), .plan.native_compression] | @tsv' \
            "$KHM_WORK/$next.json" >> "$results"
        echo "$c rep $rep: $(tail -n1 "$results")" >&2
        cur=$next; t=$here; here=$there; there=$t
    done
done

# Medians per case, ratios to native:none.
/usr/bin/python3 - "$results" "$KHM_RATE" "$KHM_MEM" "$THREADS" "$REPS" <<'PY'
import sys, statistics as st
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r[0], []).append([float(x) if x.replace(".", "", 1).isdigit() else x for x in r[1:]] + [""])
def med(c, i):
    return st.median(v[i] for v in by[c])
base = by.get("native:none")
bt = med("native:none", 0) if base else None
bw = med("native:none", 2) if base else None
print(f"Link {sys.argv[2]} (tbf), guest {sys.argv[3]} TCG dirtying continuously, "
      f"{sys.argv[4]} threads/channels, median of {sys.argv[5]} run(s).\n")
hdr = ["case", "time s", "time / native none", "downtime ms", "wire MiB", "wire / native none",
       "ratio", "src QEMU CPU s", "src liveup CPU s", "dst CPU s", "level", "QEMU compression"]
out = []
for c in by:
    t, d, w, ratio, sq, sl, dc = (med(c, i) for i in range(7))
    lvl = by[c][0][7]
    comp = by[c][0][10] if len(by[c][0]) > 10 and by[c][0][10] else "-"
    out.append([c, f"{t:.2f}", f"{t / bt:.2f}" if bt else "-", f"{d:.0f}", f"{w / 1048576:.1f}",
                f"{w / bw:.2f}" if bw else "-", f"{ratio:.2f}", f"{sq:.1f}", f"{sl:.2f}", f"{dc:.1f}",
                str(int(lvl)) if isinstance(lvl, float) else str(lvl), str(comp)])
wid = [max(len(h), *(len(r[i]) for r in out)) for i, h in enumerate(hdr)]
sep = "  ".join("=" * x for x in wid)
print(sep); print("  ".join(h.ljust(x) for h, x in zip(hdr, wid))); print(sep)
for r in out: print("  ".join(v.ljust(x) for v, x in zip(r, wid)))
print(sep)
PY
echo "# $bad failed run(s)" >&2
[ $bad != 0 ] || [ -n "${KH_KEEP_WORK:-}" ] || { khm_cleanup; rm -rf "$KHM_WORK"; }
[ $bad = 0 ]
