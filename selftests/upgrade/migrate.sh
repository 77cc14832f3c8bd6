#!/bin/sh
# `liveup migrate send --to HOST VM` of a VM `liveup vm start` started (its
# RAM a KRAM area, memory backend ram0), into `liveup migrate listen` on
# this host (loopback; the service chrooted in the trixie rootfs, as the
# VM's QEMU is): the service starts the destination QEMU itself from the
# VM's description (the kernel from a pool, the RAM block ram0 as
# anonymous memory), the guest's memory checks go on there, and the source
# quits its QEMU, forgets the VM and frees its KRAM area. No kexec.
. /host/lib/ktap.sh
VMS=m1
. ./vms.sh
if grep -q kram /proc/modules; then
    for v in $($L vm list | cut -d' ' -f1); do $L vm stop $v --delete-area > /dev/null; done
else
    insmod /host/modules/kram.ko $KRAM_PARAMS
fi
$L kram status | grep -q ready || $L kram format --yes > /dev/null
kh_check "KRAM ready" sh -c "$L kram status | grep -q ready" || exit 0
grep -q " $R/run " /proc/mounts || { kh_check "trixie rootfs with QEMU 11" kh_mount_rootfs $R || exit 0; }
ip link set lo up 2>/dev/null || ifconfig lo up
rm -rf $R/tmp/incoming $R/tmp/m1.* $R/tmp/migrate.key
$L migrate keygen $R/tmp/migrate.key > /dev/null
memchecks_in() { grep -c "VM-MEMCHECK m1 .* ok" "$1" 2>/dev/null || echo 0; }
more_than() { [ "$(memchecks_in "$1")" -gt "$2" ]; }

kh_check "start m1 (tinyvm, RAM in KRAM)" $L vm start --name m1 --mem 32M --root $R -- \
    -machine q35,accel=kvm -cpu qemu64 -smp 1 -nodefaults -display none \
    -kernel /host/tinyvm.elf -append vmname=m1 \
    -serial file:/tmp/m1.hb -serial file:/tmp/m1.console || exit 0
kh_check "m1 checks its memory" kh_wait 120 more_than $R/tmp/m1.console 1 || exit 0

chroot $R /host/bin/liveup migrate listen --listen 127.0.0.1:4480 --once --key /tmp/migrate.key \
    --pool host=/host --run-dir /tmp/incoming --qemu /usr/bin/qemu-system-x86_64 \
    > /host/m1.listen.log 2>&1 &
lp=$!
listening() { grep -q "listening on" /host/m1.listen.log; }
kh_check "migrate listen is up" kh_wait 30 listening || exit 0
$L migrate send --to 127.0.0.1:4480 --key $R/tmp/migrate.key --pool host=/host --mode native m1 \
    > /host/m1.send.log 2>&1
rc=$?
wait $lp
lrc=$?
sed 's/^/KH-LOG send: /' /host/m1.send.log | tail -n 12
sed 's/^/KH-LOG listen: /' /host/m1.listen.log
kh_check "send m1 --to: exit 0, and the service's (--once) exit 0" test "$rc/$lrc" = 0/0
q=$R/tmp/incoming/m1.qmp
dest_running() { $L qmp $q query-status '{}' | grep -q '"running"'; }
kh_check "the destination QEMU the service started runs m1" dest_running
kh_check "m1's memory checks pass on the destination" kh_wait 120 more_than $R/tmp/incoming/m1.serial1.log 1
kh_check "no memory check failed there" sh -c "! grep -q 'VM-MEMCHECK m1 .* BAD' $R/tmp/incoming/m1.serial1.log"
kh_check "the source forgot m1 (vm list)" sh -c "! $L vm list | grep -q '^m1 '"
kh_check "the source freed m1's KRAM area" sh -c "! $L kram list | grep -q ' vm-m1 '"
$L qmp $q quit '{}' > /dev/null 2>&1
