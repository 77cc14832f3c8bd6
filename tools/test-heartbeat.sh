#!/bin/bash
# Host test of tools/heartbeat.pl's `check` (what turns the VMs' heartbeats
# into the upgrade test's downtime and guest-clock verdicts): synthetic
# runs, one per verdict, each checked for the expected ok / not ok lines.
# Prints KTAP-style lines and "N passed, N failed".
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
p=0 f=0 k=0
# run NAME EXPECT... : beats from the perl snippet in $BEATS (a pause of
# 10 s at beat 1000, i.e. 1020-1030 s; liveup reporting 10 s for the VMs in
# $VMS at 1032 s; with MARK=T, the rig's restore starting at T) must give
# these lines; with HOSTCLK=V too, the rig's clock V printed at 1031.95 s
# (HOSTCLK2=V: another reading printed at 1033.95 s);
# "!LINE": must not; with PAUSE="T LABEL", an aborted upgrade (the
# rig's KH-UPGRADE-PAUSE) starting at T; MODE=stops runs `heartbeat.pl stops` instead; a BEATS
# snippet setting $q=$i-1 restarts the beat count (a new VM of that name),
# one setting $hold stamps that beat at $hold instead (a delayed line)
run() {
    local name=$1 out; shift
    echo 1000.000 > "$d/console.t0"
    { [ -n "${MARK:-}" ] && printf "[  %s] KH-UPGRADE-RESTORE 1\r\n" "$MARK"
      printf "%s\r\n" "[  31.900] KH-LOG upgrade: host kernel upgrade: VMs ${VMS:-vm1}"
      [ -n "${HOSTCLK:-}" ] && printf "[  31.950] KH-HOST-CLOCK %s\r\n" "$HOSTCLK"
      [ -n "${HOSTCLK2:-}" ] && printf "[  33.950] KH-HOST-CLOCK %s\r\n" "$HOSTCLK2"
      [ -n "${PAUSE:-}" ] && printf "[  %s] KH-UPGRADE-PAUSE %s\r\n" ${PAUSE}
      [ -n "${CONSOLE:-}" ] && while IFS= read -r c; do printf "%s\r\n" "$c"; done <<< "$CONSOLE"
      printf "%s\r\n" "[  32.000] KH-LOG upgrade:   downtime (first stop to last resume)      10000.0 ms"; } > "$d/console.log"
    perl -e 'my $s=1000; my ($m,$r,$q,$hold)=(5000,1.7e12,0); for my $i (1..2000) { $s+=0.02; $m+=20; $r+=20; undef $hold; '"$BEATS"'; printf "%.3f HB vm1 %d %.1f %.1f\n",(defined $hold ? $hold : $s),$i-$q,$m,$r }' > "$d/heartbeat1.log"
    out=$(perl "$here/heartbeat.pl" "${MODE:-check}" "$d")
    k=$((k + 1))
    for e in "$@"; do
        if [ "${e#!}" != "$e" ]; then
            if grep -q "^${e#!}" <<< "$out"; then
                echo "not ok $k - $name # did not want '${e#!}', got: $(tr '\n' '|' <<< "$out")"; f=$((f + 1)); return
            fi
        elif ! grep -q "^$e" <<< "$out"; then
            echo "not ok $k - $name # wanted '$e', got: $(tr '\n' '|' <<< "$out")"; f=$((f + 1)); return
        fi
    done
    echo "ok $k - $name"; p=$((p + 1))
}
BEATS='if ($i==1000) {$s+=10} if ($i==1100) {$r+=10000}' \
    run "a pause seen as reported, the wall clock set again" \
    "ok|downtime 1: vm1 heartbeat gap 10.02" "ok|clock 1: vm1 monotonic clock moved 0.02" "ok|clock 1: vm1 wall clock +0.00"
BEATS='if ($i==1000) {$s+=10}' \
    run "a wall clock left behind by the pause fails" "not ok|clock 1: vm1 wall clock -10.00"
# a guest that saw 8.7 s of a 10 s report: 13% short, outside 10%, inside
# the 15% the debug host is given (KH_HB_TOLERANCE)
BEATS='if ($i==1000) {$s+=8.7} if ($i==1100) {$r+=8700}' \
    run "a gap 13% shorter than reported fails at 10%" "not ok|downtime 1: vm1 heartbeat gap 8.72 s vs liveup 10.00 s (-12.8%) # more than 10% apart"
BEATS='if ($i==1000) {$s+=8.7} if ($i==1100) {$r+=8700}' KH_HB_TOLERANCE=0.15 \
    run "  and passes at KH_HB_TOLERANCE=0.15" "ok|downtime 1: vm1 heartbeat gap 8.72"
# a gap 14% longer than reported, the guest's monotonic clock moving
# 1.2 s of it (it ran, slow to beat): held to the 10.2 s it was stopped
BEATS='if ($i==1000) {$s+=11.4; $m+=1200} if ($i==1100) {$r+=11400}' \
    run "a gap longer than reported that the guest partly ran passes, saying so" \
    "ok|downtime 1: vm1 heartbeat gap 11.42 s vs liveup 10.00 s (+14.2%), of which the guest ran 1.22 s by its monotonic clock: stopped 10.20 s (+2.0%)"
BEATS='if ($i==1000) {$s+=11.4} if ($i==1100) {$r+=11400}' \
    run "(control: the same gap with the guest's clock stopped fails)" "not ok|downtime 1: vm1 heartbeat gap 11.42 s vs liveup 10.00 s (+14.2%) # more than 10% apart"
BEATS='if ($i==1000) {$s+=15; $m+=5000} if ($i==1100) {$r+=15000}' \
    run "(control: a guest that ran 5 s of its gap without beating fails)" "not ok|downtime 1: vm1 heartbeat gap 15.02 s vs liveup 10.00 s (+50.2%) # more than 10% apart"
BEATS='if ($i==1000) {$s+=13; $m+=1200} if ($i==1100) {$r+=13000}' \
    run "(control: stopped 11.8 s by its own clock against 10 s reported fails)" "not ok|downtime 1: vm1 heartbeat gap 13.02 s vs liveup 10.00 s (+30.2%) # more than 10% apart"
BEATS='if ($i==1000) {$s+=10; $m+=60000} if ($i==1100) {$r+=10000}' \
    run "a monotonic clock that jumps past the pause fails" "not ok|clock 1: vm1 monotonic clock moved 60.02"
BEATS='if ($i==1000) {$s+=25} if ($i==1100) {$r+=25000}' \
    run "a guest stopped far longer than reported fails" "not ok|downtime 1: vm1 heartbeat gap 25.02"
BEATS='if ($i==1000) {$s+=10} if ($i==1100) {$r+=10000}' VMS=c1 \
    run "a VM the report does not name is not held to it" "!ok|downtime 1: vm1" "!not ok|downtime 1: vm1"
BEATS='if ($i==500) {$s+=12} if ($i==600) {$r+=12000}' \
    run "a gap that began before this upgrade's blackout is not its" "!ok|downtime 1: vm1" "!not ok|downtime 1: vm1"
BEATS='if ($i==1000) {$s+=10} if ($i==1100) {$r+=10000} if ($i==1500) {$m+=36000; $r+=36000}' \
    run "a monotonic jump of 36 s, 10 s after a 10 s pause, fails by 26 s" "not ok|clock: vm1 monotonic clock never ahead of real time (at most 26.00"
BEATS='if ($i==1000) {$s+=10} if ($i==1100) {$r+=10000}' \
    run "a monotonic clock in step passes" "ok|clock: vm1 monotonic clock never ahead of real time (at most 0.00"
BEATS='if ($i==1000) {$s+=10} if ($i==1040) {$s+=1} if ($i==1100) {$r+=11000}' MARK=25.000 \
    run "a stall right after the resume is not taken for the blackout" "ok|downtime 1: vm1 heartbeat gap 10.02"
BEATS='if ($i==1000) {$s+=10} if ($i==1040) {$s+=1} if ($i==1100) {$r+=11000}' \
    run "(control: without the restore's mark, that stall is taken)" "not ok|downtime 1: vm1 heartbeat gap 1.02"
BEATS='if ($i==250) {$s+=10} if ($i==1100) {$r+=10000}' MARK=25.000 \
    run "a VM that kept beating through the restore fails" "not ok|downtime 1: vm1 heartbeat gap vs liveup 10.00 s # no gap"
# The beats' wall clock starts 1.7e9 - 1000 s ahead of the stamps; a rig
# 5 s ahead of that (1700000036.95 at 1031.95) is 5 s ahead of the guest.
BEATS='if ($i==1000) {$s+=10} if ($i==1100) {$r+=15000}' MARK=25.000 HOSTCLK=1700000036.950 \
    run "a guest set to its host's clock passes, however far off it was before" \
    "ok|clock 1: vm1 wall clock +0.00 s off its host's"
BEATS='if ($i==1000) {$s+=10} if ($i==1100) {$r+=15000}' MARK=25.000 \
    run "(control: without the rig's clock, that guest is held to its offset before)" \
    "not ok|clock 1: vm1 wall clock +5.00 s off the host's"
BEATS='if ($i==1000) {$s+=10} if ($i==1100) {$r+=10000}' MARK=25.000 HOSTCLK=1700000036.950 \
    run "a guest left 5 s behind its host's clock fails" "not ok|clock 1: vm1 wall clock -5.00 s off its host's"
# Beats queued on the serial path and delivered in a burst (stamped up to
# 3.2 s late) right when the wall clock is read: the least delayed beat
# after them shows the clock right; a clock really behind still fails.
BEATS='if ($i==1000) {$s+=10} if ($i==1100) {$r+=10000} if ($i>=1240 && $i<1400) {$hold=$s+(1400-$i)*0.02}' \
    run "beats delivered late after the resume do not make a right clock look wrong" "ok|clock 1: vm1 wall clock +0.00"
BEATS='if ($i==1000) {$s+=10} if ($i>=1240 && $i<1400) {$hold=$s+(1400-$i)*0.02}' \
    run "(control: the same delays with the clock left behind fail)" "not ok|clock 1: vm1 wall clock -10.00"
# stops: a VM stopped with no upgrade under way is a figure; a new VM of
# the same name starting after a gap (series.sh boots one per upgrade) is not
BEATS='if ($i==1500) {$s+=20}' MODE=stops \
    run "a VM that stops for 20 s with nothing under way is shown" "# figure: vm1: stopped 20.02 s with no upgrade under way"
BEATS='if ($i==1500) {$s+=20; $q=1499}' MODE=stops \
    run "a new VM starting 20 s after the last one is not a stop" "!# figure: vm1: stopped 20.02"
BEATS='if ($i==1500) {$s+=20}' MODE=stops PAUSE="28.000 after-save" \
    run "a pause by an aborted upgrade is named as such" "# figure: vm1: paused 20.02 s by an aborted upgrade (after-save)" "!# figure: vm1: stopped"
# with the rig's CPU sampled (KH-CPU, /proc/stat) on both sides of a stop:
# what it did meanwhile, in shares of its time (guest time out of user)
CONSOLE=$'[  29.000] KH-CPU cpu  100 0 50 1000 0 0 0 0 80 0 r=1\n[  40.000] KH-CPU cpu  200 0 900 1000 0 0 0 0 90 0 r=5\n[  51.000] KH-CPU cpu  300 0 1850 1000 0 0 0 0 100 0 r=3' \
BEATS='if ($i==1500) {$s+=20}' MODE=stops \
    run "a stop shows what the rig's CPU did during it" \
    "# figure: vm1: stopped 20.02 s with no upgrade under way; the rig's CPU over 22.0 s: L2 guests 1%, other user 9%, kernel 90%, idle 0%, up to 5 runnable"
BEATS='if ($i==1500) {$s+=20}' MODE=stops \
    run "(control: no samples, no CPU figure)" "# figure: vm1: stopped 20.02 s with no upgrade under way\$"
# the rig's clock read twice, the second line 1.5 s late on the serial
# path: the least delayed reading is the reference
BEATS='if ($i==1000) {$s+=10} if ($i==1100) {$r+=15000}' MARK=25.000 HOSTCLK=1700000036.950 HOSTCLK2=1700000037.450 \
    run "of the rig's clock readings, the least delayed is the reference" "ok|clock 1: vm1 wall clock +0.00 s off its host's"
echo "$p passed, $f failed"
[ "$f" = 0 ]
