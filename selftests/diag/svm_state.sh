#!/bin/sh
# A reproducer, not part of make check (it fails when it catches the rig
# fault it looks for): does an exit of a nested Linux VM ever carry the
# rig kernel's own state, RIP being the instruction after VMRUN in
# __svm_vcpu_run (tools/rig-fault.py; Documentation/upgrade.rst, Known
# problems)? A trace instance records every KVM event and stops at the
# first such exit, keeping what led to it. The VM (QEMU 11.1 from the
# rootfs, no libvirt, no liveup) is paused and resumed (stop/cont) and
# migrated to a sink (dirty logging, then the pause) in turn, for
# KH_SVM_SECONDS (900).
#   KH_L0_QEMU=trixie KH_TCG_THREAD=multi KH_RIG_SMP=2 tools/vm-run.sh -k <release> \
#     -o out/svm -t 1500 -v <release>/bzImage -r "$(tools/mkrootfs.sh libvirt)" diag/svm_state
. /host/lib/ktap.sh
mount /dev/vda /mnt 2>/dev/null || { kh_fail "rootfs" "no /dev/vda"; exit 0; }
mkdir -p /mnt/host
for d in dev proc sys host; do mount --bind /$d /mnt/$d; done
mount -t tmpfs tmpfs /mnt/tmp
# __svm_vcpu_run's bounds: the function and the next one in the text
vmrun=$(awk '$3 == "__svm_vcpu_run" {print $1}' /proc/kallsyms)
next=$(awk '{print $1}' /proc/kallsyms | sort -u | awk -v s=$vmrun '$1 > s {print; exit}')
lo=$((0x$vmrun)) hi=$((0x$next))
kh_log "__svm_vcpu_run at $vmrun, up to $next"
T=/sys/kernel/tracing
mount -t tracefs tracefs $T 2>/dev/null
mkdir $T/instances/kh
I=$T/instances/kh
echo 8192 > $I/buffer_size_kb
echo 1 > $I/events/kvm/enable
echo "traceoff if guest_rip >= 0x$vmrun && guest_rip < 0x$next" > $I/events/kvm/kvm_exit/trigger
echo 1 > $I/tracing_on
cat > /mnt/tmp/hmp.pl <<'PL'
use Socket;
socket(S, PF_UNIX, SOCK_STREAM, 0) or die $!;
connect(S, pack_sockaddr_un($ARGV[0])) or die $!;
sub readp { my $b = ''; while ($b !~ /\(qemu\) $/) { my $c; sysread(S, $c, 4096) or last; $b .= $c; } return $b; }
readp();
for my $cmd (@ARGV[1..$#ARGV]) { syswrite(S, "$cmd\n"); my $o = readp(); $o =~ s/\r//g; print $o; }
PL
hmp() { chroot /mnt perl /tmp/hmp.pl /tmp/l2.mon "$@"; }
chroot /mnt qemu-system-x86_64 -machine q35,accel=kvm -cpu qemu64 -m 128M -smp 1 -nodefaults -display none \
    -kernel /host/vm-bzImage -initrd /host/vm-initrd.img \
    -append "console=ttyS1 quiet panic=-1 no_timer_check vmname=l2" \
    -serial file:/tmp/l2.hb -serial file:/tmp/l2.con -monitor unix:/tmp/l2.mon,server=on,wait=off \
    -pidfile /tmp/l2.pid -daemonize < /dev/null > /tmp/l2.log 2>&1
checks() { grep -c 'VM-MEMCHECK l2 .* ok' /mnt/tmp/l2.con 2>/dev/null; }
booted() { [ "$(checks)" -ge 1 ]; }
kh_wait 300 booted || { kh_fail "L2 booted" "$(tail -c 300 /mnt/tmp/l2.con)"; exit 0; }
kh_ok "L2 booted"
n=0 caught=
end=$(( $(date +%s) + ${KH_SVM_SECONDS:-900} ))
while [ $(date +%s) -lt $end ]; do
    n=$((n + 1))
    if [ $((n % 2)) = 0 ]; then
        hmp stop > /dev/null; sleep 0.$((n % 7))
    else
        hmp 'migrate "exec:cat > /dev/null"' > /dev/null
        while hmp 'info migrate' | grep -q 'status: active\|status: setup'; do sleep 0.2; done
    fi
    st=$(hmp 'info status' | grep -o 'VM status: .*')
    rip=$(hmp 'info registers' | grep -o 'RIP=[0-9a-f]*')
    r=0; [ -n "${rip#RIP=}" ] && r=$((0x${rip#RIP=}))
    if [ "$(cat $I/tracing_on)" = 0 ] || { [ $r -ge $lo ] && [ $r -lt $hi ]; }; then caught=$n; break; fi
    hmp cont > /dev/null
    [ $((n % 10)) = 0 ] && kh_log "$n pauses, $st, memory checks $(checks)"
    sleep 0.$((n % 5 + 1))
done
kh_log "$n pauses, status $st, $rip, memory checks $(checks)"
if [ -n "$caught" ]; then
    kh_log "caught at pause $caught"
    hmp 'info registers' | grep -E 'RAX|RIP|CR0|CR3' | sed 's/^/# /'
    tail -n 60 $I/trace | sed 's/^/# trace: /'
fi
kh_check "no exit carried the rig's own RIP in $n pauses" test -z "$caught"
kill "$(cat /mnt/tmp/l2.pid)" 2>/dev/null; sleep 1
