#!/bin/bash
# Turn a rig run (tools/vm-run.sh) into KTAP on stdout: one test case per
# result a guest test reported; a planned test that never finished (guest
# crashed, hung or timed out) is one failed case. Figures measured from the
# host-side timestamps of the console log come out as KTAP diagnostics.
# Writes "PASSED FAILED SKIPPED" to RUN/counts.
set -euo pipefail
run=$1
KH_REPORT_DIR=$(dirname "$0")
lines=()
while read -r t; do
    [ -z "$t" ] && continue
    id=$(echo "$t" | tr / _)
    if [ -f "$run/state/$id.ktap" ]; then
        while IFS= read -r l; do
            case "$l" in
                "not ok "*) lines+=("not ok|$t: ${l#not ok }");;
                "ok "*) lines+=("ok|$t: ${l#ok }");;
            esac
        done < "$run/state/$id.ktap"
    fi
    if [ ! -f "$run/state/$id.done" ]; then
        lines+=("not ok|$t: did not finish (stage $(cat "$run/state/$id.stage" 2>/dev/null || echo 0)), see $run/console.log")
    elif [ ! -s "$run/state/$id.ktap" ]; then
        lines+=("not ok|$t: reported no result")
    fi
done < "$run/plan"
# Downtime as the guest lived it: each liveup report's downtime next to the
# heartbeat gap of every VM around it (stamped on this host, whose clock no
# kexec touches). They must agree within 10% (+0.1 s for the 20 ms beat and
# the serial path): a VM that stays frozen after restore reported success,
# or a tool figure shorter than the pause, fails here. (KH_HB_TOLERANCE:
# another bound, tools/heartbeat.pl.) A check that could not run fails.
hb=$(perl "$KH_REPORT_DIR/heartbeat.pl" check "$run" 2>&1) || hb="not ok|heartbeat checks could not run: $(echo "$hb" | tail -n1)"
while IFS= read -r l; do [ -n "$l" ] && lines+=("$l"); done <<< "$hb"
echo "KTAP version 1"
echo "1..${#lines[@]}"
p=0 f=0 s=0 n=0
for e in "${lines[@]}"; do
    n=$((n + 1)); st=${e%%|*}; desc=${e#*|}
    echo "$st $n $desc"
    if [ "$st" = ok ]; then
        case "$desc" in *"# SKIP"*) s=$((s + 1));; *) p=$((p + 1));; esac
    else f=$((f + 1)); fi
done
# kexec timing: from the "kexec -e" marker to the next kernel's init.
perl -ne 'if (/^\[ *([0-9.]+)\] KH-KEXEC-E (\S+)/) { $t=$1; $n=$2 }
          elsif (defined $t && /^\[ *([0-9.]+)\] KH-TEST-START (\S+) stage=(\d+)/) {
              printf "# figure: %s stage %d: kexec -e to init in the new kernel: %.2f s\n", $2, $3, $1-$t; undef $t }' \
    "$run/console.log" | tee "$run/figures"
# Guest-visible downtime: gaps in each VM's heartbeat (every 20 ms in the VM),
# stamped on this host. Gaps over 1 s are the upgrades.
for h in "$run"/heartbeat*.log; do
    [ -s "$h" ] || continue
    # A Linux VM (tools/guest/hb.c) also stamps each beat with its own
    # monotonic and wall clock (ms): its view of the same gaps beside ours.
    perl -ane 'next unless $F[1] eq "HB" && defined $F[3]; $n=$F[2];  # a beat cut off by poweroff has no number
        if (defined $last{$n}) { $g=$F[0]-$last{$n};
            if ($g > 1.0) { push @{$gaps{$n}}, sprintf("%.2f", $g);
                push @{$gv{$n}}, sprintf("%.2f/%.2f", ($F[4]-$lm{$n})/1e3, ($F[5]-$lr{$n})/1e3) if defined $F[5] && defined $lr{$n} } }
        $last{$n}=$F[0]; ($lm{$n}, $lr{$n}) = defined $F[5] ? ($F[4], $F[5]) : (undef, undef); $beats{$n}++;
        END { for $n (sort keys %beats) {
            printf "# figure: %s: %d heartbeats; gaps over 1 s (s): %s\n", $n, $beats{$n}, join(", ", @{$gaps{$n} || []}) || "none";
            printf "# figure: %s: the same gaps by the guest'"'"'s clocks, monotonic/wall (s): %s\n", $n, join(", ", @{$gv{$n}}) if $gv{$n} } }' "$h"
done | tee -a "$run/figures"
# A VM that stopped with no upgrade under way (no upgrade start or kexec in
# the rig's console during the gap): the guest-visible freeze after a
# restore of Documentation/upgrade.rst, known problems. A figure, not a
# failure, until its cause is fixed.
# (a heartbeat.pl that cannot run failed the checks above already)
perl "$KH_REPORT_DIR/heartbeat.pl" stops "$run" 2>/dev/null | tee -a "$run/figures" || true
# A VM the nested rig stopped before it booted and a test started again
# (selftests/upgrade/upgrade.sh, boot_vm): shown, never silent.
perl -ne '$n++ if /started again after a rig fault/; END { printf "# figure: VMs started again after a rig fault: %d\n", $n if $n }' \
    "$run/console.log" | tee -a "$run/figures"
# Figures a test printed itself ("KH-FIGURE text").
perl -ne 'print "# figure: $1\n" if /^\[ *[0-9.]+\] KH-FIGURE (.*)/' "$run/console.log" | tee -a "$run/figures"
echo "$p $f $s" > "$run/counts"
# What led to each failure, for a reader who has only this output (CI
# keeps no console log): the last 25 console lines before a failed
# result, and the console's last 25 lines when a test did not finish; 300
# lines at most.
if [ "$f" -gt 0 ]; then
    case "${lines[*]}" in *"did not finish"*) export KH_UNFINISHED=1;; esac
    perl -ne 'BEGIN { $left = 300 }
        sub show { my ($what, @b) = @_; return if $left <= 0;
            my @l = @b > 25 ? @b[-25..-1] : @b;
            print "# context of $what:\n"; for (@l) { last if $left-- <= 0; print "#   $_" } }
        chomp; s/\r//g; s/[^\x20-\x7e]//g;
        push @all, "$_\n"; shift @all if @all > 25;
        if (/KH-RESULT (\S+) not ok (.*)/) { show("$1: $2", @buf); @buf = () }
        elsif (/KH-RESULT /) { @buf = () }
        else { push @buf, "$_\n"; shift @buf if @buf > 25 }
        END { show("the console end (a test that did not finish)", @all) if $ENV{KH_UNFINISHED} }' \
        "$run/console.log" 2>/dev/null || true
fi
echo "# rig: $p passed, $f failed, $s skipped"
