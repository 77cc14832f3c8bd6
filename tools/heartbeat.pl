#!/usr/bin/perl
# The VMs' heartbeats (RUN/heartbeat*.log, stamped on the outermost host)
# next to the rig's console (RUN/console.log, times relative to
# RUN/console.t0). Used by tools/ktap-report.sh:
#   heartbeat.pl check RUN   "ok|..." / "not ok|..." per liveup report and
#                            VM: the downtime liveup reported against the
#                            VM's heartbeat gap around it (within 10% + 0.1 s;
#                            a longer gap the guest partly ran by its own
#                            monotonic clock, up to 1.5 s, is held to the time
#                            it was stopped;
#                            KH_HB_TOLERANCE for another fraction)
#                            and, for VMs whose beats carry the guest's
#                            clocks (tools/guest/hb.c), that its monotonic
#                            clock moved no more than the outer host's over
#                            the gap and that its wall clock was right again
#                            (within 2.5 s) 5 s after it (liveup restore sets
#                            it through the guest agent)
#   heartbeat.pl stops RUN   "# figure:" lines for gaps with no upgrade start,
#                            test stage or kexec in the console during them
#                            (those of an upgrade the rig aborts on purpose,
#                            KH-UPGRADE-PAUSE, named as such)
use strict;
use warnings;

my ($mode, $run) = @ARGV;
# How far liveup's downtime and a VM's heartbeat gap may be apart, as a
# fraction of the downtime: 10%, the issue's bound, on every host (the
# debug host had 15% until the rig's TSC catch-up was cured: a gap there
# came out 12% shorter than liveup's figure once in session 15, the other
# 11 within 1-4%, and -1.9/-2.3% after the cure). KH_HB_TOLERANCE
# overrides it.
my $tol = $ENV{KH_HB_TOLERANCE} // 0.10;
die "heartbeat.pl: KH_HB_TOLERANCE=$tol is not a fraction\n" unless $tol =~ /^0?\.[0-9]+$/;
die "usage: heartbeat.pl check|stops RUN\n" unless $run && $mode =~ /^(check|stops)$/;
open(my $f, "<", "$run/console.t0") or exit 0;
my $t0 = <$f> + 0;
close $f;
open($f, "<", "$run/console.log") or exit 0;
my (@rep, @ev);    # [time, downtime s, {VMs}, mark] of each liveup report; upgrade/kexec events
my @pause;         # [time, what] of each upgrade the rig aborts on purpose (KH-UPGRADE-PAUSE)
my @hclk;          # [time, offset s] of each KH-HOST-CLOCK: how far the rig's clock is ahead of this host's
my $mark;          # the last moment every VM was certainly stopped: a new kernel's test start or a restore start
my %in;            # the VMs of the report being read ("host kernel upgrade: VMs a, b")
my @cpu;           # [time, user+nice, system+irq+softirq, idle+iowait, guest, runnable] of each KH-CPU sample (/proc/stat, ticks)
while (<$f>) {
    next unless /^\[ *([0-9.]+)\] (.*)/;
    my ($t, $l) = ($t0 + $1, $2);
    $l =~ s/\s+$//;    # the serial console ends lines with \r\n
    push @ev, $t if $l =~ /^KH-(UPGRADE-START|TEST-START|KEXEC-E)/;
    push @pause, [$t, $1] if $l =~ /^KH-UPGRADE-PAUSE (\S+)/;
    push @hclk, [$t, $1 - $t] if $l =~ /^KH-HOST-CLOCK ([0-9.]+)$/;
    if ($l =~ /^KH-CPU cpu +((?:\d+ +){9}\d+) r=(\d+)/) {
        my @c = split / +/, $1;    # user nice system idle iowait irq softirq steal guest guest_nice
        push @cpu, [$t, $c[0] + $c[1], $c[2] + $c[5] + $c[6], $c[3] + $c[4], $c[8] + $c[9], $2];
    }
    $mark = $t if $l =~ /^KH-(?:UPGRADE-RESTORE|TEST-START \S+ stage=[1-9])/;
    %in = map { $_ => 1 } split /, /, $1
        if $l =~ /^KH-(?:LOG (?:\S+ )?(?:upgrade|restore):|DEMO) +host kernel upgrade: VMs (.*)/;
    push @rep, [$t, $1 / 1000, {%in}, $mark]
        if $l =~ /^KH-(?:LOG (?:\S+ )?(?:upgrade|restore):|DEMO) +downtime \(first stop to last resume\) +([0-9.]+) ms/;
}
my %gaps;          # VM -> [start, end] of each gap over 1 s
my %beats;         # VM -> [stamp, guest monotonic ms, guest wall clock ms] (hb.c's beats)
for my $h (glob("$run/heartbeat*.log")) {
    open(my $g, "<", $h) or next;
    my %last;
    while (<$g>) {
        my @F = split;
        next unless @F > 3 && $F[1] eq "HB";
        my $n = $F[2];
        # a gap that ends in beat 1 is a new VM of that name starting (the
        # series test boots one after each upgrade), not a stop
        my $fresh = /HB \Q$n\E 1 [0-9.]+ [0-9.]+\s*$/ ? 1 : 0;
        push @{$gaps{$n}}, [$last{$n}, $F[0], $fresh] if defined $last{$n} && $F[0] - $last{$n} > 1.0;
        $last{$n} = $F[0];
        # hb.c's "HB NAME SEQ MONO_MS REAL_MS" (not two cut-off beats run together)
        push @{$beats{$n}}, [@F[0, 4, 5]] if @F == 6 && "@F[3..5]" =~ /^\d+ [0-9.]+ [0-9.]+$/;
    }
}
# the first beat of VM n stamped at or after t (binary search)
sub beat_at {
    my ($n, $t) = @_;
    my $b = $beats{$n} or return;
    my ($lo, $hi) = (0, scalar @$b);
    while ($lo < $hi) {
        my $mid = int(($lo + $hi) / 2);
        if ($b->[$mid][0] < $t) { $lo = $mid + 1 } else { $hi = $mid }
    }
    return $lo < @$b ? $b->[$lo] : undef;
}
# What the rig's CPUs did over [s, e] (KH-CPU samples, taken when a test
# asks for them: KH_UPGRADE_CPU_SAMPLE=1): the share of their time in user
# space, the kernel, idle and the L2 guests, and the most runnable tasks
# seen; "" without samples on both sides.
sub cpu_during {
    my ($s, $e) = @_;
    my ($from) = grep { $_->[0] <= $s } reverse @cpu;
    my ($to) = grep { $_->[0] >= $e } @cpu;
    return "" unless $from && $to;
    # (guest time is counted in user time too: taken out of it here)
    my @d = map { $to->[$_] - $from->[$_] } 1 .. 4;
    my $all = $d[0] + $d[1] + $d[2] or return "";
    my ($r) = sort { $b <=> $a } map { $_->[5] } grep { $_->[0] >= $from->[0] && $_->[0] <= $to->[0] } @cpu;
    return sprintf("; the rig's CPU over %.1f s: L2 guests %d%%, other user %d%%, kernel %d%%, idle %d%%, up to %d runnable",
        $to->[0] - $from->[0], 100 * $d[3] / $all, 100 * ($d[0] - $d[3]) / $all, 100 * $d[1] / $all, 100 * $d[2] / $all, $r);
}
if ($mode eq "check") {
    # The guest's monotonic clock never runs ahead of real time. Each beat's
    # offset (this host's stamp minus the guest's monotonic time) grows
    # with every pause and with every delay on the serial path, and falls
    # only when the guest's clock gains on real time: so the guest is ahead
    # by how far an offset falls below the smallest one before it (the
    # least delayed beat), which serial delays cannot fake. At most 0.5 s.
    for my $n (sort keys %beats) {
        my ($b, $worst, $at, $min) = ($beats{$n}, 0, 0, undef);
        for my $i (0 .. $#$b) {
            my $off = $b->[$i][0] - $b->[$i][1] / 1000;
            ($worst, $at) = ($min - $off, $i) if defined $min && $min - $off > $worst;
            $min = $off if !defined $min || $off < $min;
        }
        my $ok = $worst <= 0.5;
        printf "%s|clock: %s monotonic clock never ahead of real time (at most %.2f s, %d beats)%s\n",
            $ok ? "ok" : "not ok", $n, $worst, scalar @$b,
            $ok ? "" : sprintf(" # jumped forward %.2f s at the beat stamped %.3f", $worst, $b->[$at][0]);
    }
    my $k = 0;
    for my $r (@rep) {
        my ($t, $d, $vms, $m) = @$r;
        $k++;
        # only the VMs this upgrade stopped (all, if the report named none)
        for my $n (grep { !%$vms || $vms->{$_} } sort keys %gaps) {
            # the gap around the moment the new kernel started (or its
            # restore did): every VM was stopped then, so this gap is the
            # upgrade's blackout, whatever stalls come just before or after
            # it. Without such a mark (an older console), the gap that
            # ended last before the report was printed.
            my ($best) = defined $m
                ? grep { $_->[0] < $m && $_->[1] > $m } @{$gaps{$n}}
                : sort { abs($a->[1] - $t) <=> abs($b->[1] - $t) }
                  grep { $_->[0] > $t - $d - 10 && $_->[0] < $t && $_->[1] < $t + 600 } @{$gaps{$n}};
            next unless $best || defined $m;
            unless ($best) {
                printf "not ok|downtime %d: %s heartbeat gap vs liveup %.2f s # no gap in its beats spans the restore\n", $k, $n, $d;
                next;
            }
            my $g = $best->[1] - $best->[0];
            my ($b0, $b1) = (beat_at($n, $best->[0]), beat_at($n, $best->[1]));
            my $ok = abs($g - $d) <= $tol * $d + 0.1;
            # A gap longer than reported, in which the guest's own
            # monotonic clock moved: the guest ran for that long without
            # beating (its vCPU slow to get the rig's CPU; session 31's
            # make check: a 7.84 s gap against 6.85 s reported, 1.22 s of
            # it run by the guest's clock, as in its stalls of 1.1-1.2 s
            # with no upgrade under way). Held to the time it was stopped
            # by its own clock, gap minus that, within the same bound; the
            # line says so. Only up to 1.5 s of such running: a guest that
            # runs but makes no progress for longer after its resume is
            # what this check is for (it fails, as one stopped longer than
            # reported does); a shorter gap is judged as it is. The blind
            # spot, accepted: a guest frozen up to 1.5 s after its resume
            # with its clock running passes, as the rig's own stalls do.
            my $ran = "";
            if (!$ok && $g > $d && $b0 && $b1) {
                my $mono = ($b1->[1] - $b0->[1]) / 1000;
                my $stopped = $g - $mono;
                if ($mono > 0.1 && $mono <= 1.5 && abs($stopped - $d) <= $tol * $d + 0.1) {
                    $ok = 1;
                    $ran = sprintf(", of which the guest ran %.2f s by its monotonic clock: stopped %.2f s (%+.1f%%)",
                        $mono, $stopped, 100 * ($stopped - $d) / $d);
                }
            }
            printf "%s|downtime %d: %s heartbeat gap %.2f s vs liveup %.2f s (%+.1f%%)%s%s\n",
                $ok ? "ok" : "not ok", $k, $n, $g, $d, 100 * ($g - $d) / $d, $ran, $ok ? "" : sprintf(" # more than %g%% apart", 100 * $tol);
            # For the wall clock: of the beats stamped 5 to 35 s after the
            # resume, the least delayed one. A delay on the serial path
            # (lines queued while the rig is busy, then delivered in a
            # burst) only makes a stamp later, so the largest wall clock
            # minus stamp is the closest to the truth; a clock that is
            # really off is off in every beat.
            # (No beat in that window: the first one after it.)
            my ($b5) = sort { $b->[2] / 1000 - $b->[0] <=> $a->[2] / 1000 - $a->[0] }
                grep { $_->[0] >= $best->[1] + 5 && $_->[0] <= $best->[1] + 35 } @{$beats{$n}};
            $b5 //= beat_at($n, $best->[1] + 5);
            next unless $b0 && $b1 && $b5;
            my $mono = ($b1->[1] - $b0->[1]) / 1000;
            $ok = $mono <= $g + 0.1;
            printf "%s|clock %d: %s monotonic clock moved %.2f s over the %.2f s pause%s\n",
                $ok ? "ok" : "not ok", $k, $n, $mono, $g, $ok ? "" : " # jumped forward";
            # The guest's wall clock 5 s after the resume (the least delayed
            # beat from then to 35 s after). liveup sets it to
            # the rig's clock: when the rig printed that clock after this
            # restore (KH-HOST-CLOCK), against it, within 1 s; otherwise
            # (an older console) against the guest's own offset before the
            # pause, within 2.5 s, as each kexec'd rig kernel takes its clock
            # from the RTC again (whole seconds) and a guest booted from the
            # RTC can be off by as much before the upgrade.
            # (of the rig's readings after this restore, the least delayed
            # on the serial path: a delay only makes an offset smaller)
            my ($h) = sort { $b->[1] <=> $a->[1] } grep { defined $m && $_->[0] > $m && $_->[0] < $t + 60 } @hclk;
            my $ref = $h ? $h->[1] : $b0->[2] / 1000 - $b0->[0];
            my ($lim, $whose) = $h ? (1.0, "its host's (the rig's)") : (2.5, "the host's");
            my $off = $b5->[2] / 1000 - $b5->[0] - $ref;
            $ok = abs($off) <= $lim;
            printf "%s|clock %d: %s wall clock %+.2f s off %s 5 s after resume (%+.2f s right after)%s\n",
                $ok ? "ok" : "not ok", $k, $n, $off, $whose, $b1->[2] / 1000 - $b1->[0] - $ref,
                $ok ? "" : " # not set again";
        }
    }
} else {
    for my $n (sort keys %gaps) {
        for my $gap (@{$gaps{$n}}) {
            my ($s, $e, $fresh) = @$gap;
            next if $fresh || grep { $_ > $s - 5 && $_ < $e } @ev;
            my ($p) = grep { $_->[0] > $s - 5 && $_->[0] < $e } @pause;
            if ($p) {
                printf "# figure: %s: paused %.2f s by an aborted upgrade (%s)\n", $n, $e - $s, $p->[1];
                next;
            }
            my ($r) = sort { $b <=> $a } grep { $_ < $s } map { $_->[0] } @rep;
            printf "# figure: %s: stopped %.2f s with no upgrade under way%s%s\n", $n, $e - $s,
                defined $r ? sprintf(", %.1f s after a resume was reported", $s - $r) : "", cpu_during($s, $e);
        }
    }
}
