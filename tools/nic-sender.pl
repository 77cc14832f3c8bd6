#!/usr/bin/perl
# The rig's packet source (tools/vm-run.sh with KH_NIC_UDP=1): sends
# broadcast ethernet frames, one per UDP datagram, to the outer QEMU's
# dgram netdev, which hands them to the guest's e1000e. Each frame carries
# a 64-bit big-endian sequence number counting up from 0 at byte 18 (the
# format userspace/vfio-e1000e/src/seq.rs parses):
#   ff:ff:ff:ff:ff:ff  02:00:00:00:00:01  88b5  "KHSQ"  seq  padding to 60
# Usage:
#   nic-sender.pl --ports                 print two free UDP ports on 127.0.0.1
#   nic-sender.pl --to PORT --bind PORT [--rate N] [--rate-file F] [--duration S] [--log FILE]
# Frames go out at --rate per second (paced every millisecond; after a
# stall of the sender the missed ones go out at once, so the numbers have
# no gap of the sender's making); --rate 0 sends nothing (a silent source,
# to see a receiving test fail). --rate-file F: while F holds a number,
# that is the rate (read every 0.2 s; the guest writes /host/nic-rate to
# slow the source down for a long test, and removes it to go back).
# Stops after --duration seconds or on
# SIGTERM, logging how many it sent.
use strict;
use warnings;
use Socket qw(inet_aton pack_sockaddr_in);
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use Getopt::Long;

my ($to, $bind, $rate, $duration, $log, $ports, $rate_file) = (0, 0, 2000, 3600, "", 0, "");
GetOptions("ports" => \$ports, "to=i" => \$to, "bind=i" => \$bind, "rate=i" => \$rate, "rate-file=s" => \$rate_file,
           "duration=f" => \$duration, "log=s" => \$log) or die "usage: see $0\n";

if ($ports) {
    my @s = map { IO::Socket::INET->new(Proto => "udp", LocalAddr => "127.0.0.1", LocalPort => 0)
                  or die "nic-sender: bind: $!\n" } 1 .. 2;
    print join(" ", map { $_->sockport } @s), "\n";
    exit 0;
}
$to && $bind && $rate >= 0 or die "nic-sender: need --to PORT --bind PORT and a --rate >= 0\n";
my $out = \*STDERR;
if ($log) { open($out, ">>", $log) or die "nic-sender: $log: $!\n"; }
select((select($out), $| = 1)[0]);

# Bound to the port QEMU sends the guest's frames to (they are not read).
my $sock = IO::Socket::INET->new(Proto => "udp", LocalAddr => "127.0.0.1", LocalPort => $bind)
    or die "nic-sender: bind 127.0.0.1:$bind: $!\n";
my $dest = pack_sockaddr_in($to, inet_aton("127.0.0.1"));
my $head = pack("H12 H12 n a4", "ffffffffffff", "020000000001", 0x88b5, "KHSQ");
my $stop = 0;
$SIG{TERM} = $SIG{INT} = sub { $stop = 1 };

my $t0 = time;
my ($seq, $errors) = (0, 0);
# The current rate counts from ($tb, $sb): a change re-bases, so no burst.
my ($default_rate, $tb, $sb, $checked) = ($rate, $t0, 0, 0);
printf $out "%.3f nic-sender: to 127.0.0.1:%d from :%d, %d frames/s\n", $t0, $to, $bind, $rate;
while (!$stop) {
    my $elapsed = time - $t0;
    last if $elapsed >= $duration;
    if ($rate_file && time - $checked >= 0.2) {
        $checked = time;
        my $want = $default_rate;
        if (open(my $rf, "<", $rate_file)) {
            my $l = <$rf> // "";
            $want = $1 if $l =~ /^\s*(\d+)/;
            close $rf;
        }
        if ($want != $rate) {
            printf $out "%.3f nic-sender: rate %d -> %d frames/s at %d\n", time, $rate, $want, $seq;
            ($rate, $tb, $sb) = ($want, time, $seq);
        }
    }
    my $due = $sb + int((time - $tb) * $rate);
    while ($seq < $due) {
        my $frame = $head . pack("Q>", $seq);
        $frame .= "\0" x (60 - length $frame);
        defined(send($sock, $frame, 0, $dest)) or $errors++;
        $seq++;
    }
    sleep(0.001);
}
printf $out "%.3f nic-sender: sent %d frames%s in %.1f s, %d send errors\n",
    time, $seq, ($seq ? sprintf(" (0..%d)", $seq - 1) : ""), time - $t0, $errors;
