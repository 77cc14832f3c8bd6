#!/bin/sh
# `liveup migrate send --to HOST VM --as NAME` of a VM `liveup vm start`
# started (its RAM a KRAM area, memory backend ram0), into `liveup migrate
# listen --kram` on this host (loopback; its QEMUs chrooted in the trixie
# rootfs with --root, as the VM's QEMU is): the service starts the
# destination QEMU itself from the VM's description (the kernel from a
# pool), its RAM in a new KRAM area of its own; the guest's memory checks
# go on there; the service records the VM as managed, and the source quits
# its QEMU, forgets the VM and frees its KRAM area. (The new name keeps
# the two ends apart on one host: records and areas are named after it.)
# Then the VM that arrived goes through a hot-upgrade of this host (stage
# 1): restored from the service's record, memory intact.
. /host/lib/ktap.sh
VMS=m1
. ./vms.sh
memchecks_in() { local n; n=$(grep -c "VM-MEMCHECK m1 .* ok" "$1" 2>/dev/null); echo "${n:-0}"; }
more_than() { [ "$(memchecks_in "$1")" -gt "$2" ]; }
# the guest's own count at its last memory check (it goes on across a
# migration or an upgrade; a log file may start anew)
last_n() { sed -n 's/^VM-MEMCHECK m1 \([0-9]*\) ok.*/\1/p' "$1" 2>/dev/null | tail -n1; }
newer_than() { n=$(last_n "$1"); [ -n "$n" ] && [ "$n" -gt "$2" ]; }
if [ "$KH_STAGE" = 1 ]; then
    kh_mount_rootfs $R
    $L restore --kram-module /host/modules/kram.ko --kram-params "$KRAM_PARAMS" > $KH_DIR/report 2>&1
    sed 's/^/KH-LOG restore: /' $KH_DIR/report
    kh_check "hot-upgrade: restore brings back m2, the VM that arrived" sh -c "$L vm list | grep -q '^m2 running'"
    kh_check "m2's memory checks pass after the upgrade" kh_wait 120 newer_than $R/tmp/incoming/m2.serial1.log "$(cat $KH_DIR/last_n)"
    kh_log "m2's last memory check after the upgrade: $(last_n $R/tmp/incoming/m2.serial1.log) (before: $(cat $KH_DIR/last_n))"
    kh_check "no memory check failed" sh -c "[ -s $R/tmp/incoming/m2.serial1.log ] && ! grep -q 'VM-MEMCHECK m1 .* BAD' $R/tmp/incoming/m2.serial1.log"
    kh_check "m2 stops as a managed VM, its area freed" sh -c "$L vm stop m2 --delete-area > /dev/null && ! $L kram list | grep -q ' vm-m2 '"
    exit 0
fi
fresh_kram || exit 0
ip link set lo up 2>/dev/null || ifconfig lo up
rm -rf $R/tmp/incoming $R/tmp/m1.* $R/tmp/migrate.key
$L migrate keygen $R/tmp/migrate.key > /dev/null

kh_check "start m1 (tinyvm, RAM in KRAM)" $L vm start --name m1 --mem 32M --root $R -- \
    -machine q35,accel=kvm -cpu qemu64 -smp 1 -nodefaults -display none \
    -kernel /host/tinyvm.elf -append vmname=m1 \
    -serial file:/tmp/m1.hb -serial file:/tmp/m1.console || exit 0
kh_check "m1 checks its memory" kh_wait 120 more_than $R/tmp/m1.console 1 || exit 0

# What a service killed mid-session leaves, cleaned when it starts again:
# the QEMU it started for VM zz still waiting for its state (-incoming
# defer) is quit, and zz's KRAM area (its QEMU log in the run directory
# says the service made it) is freed; area vm-yy, whose VM the service
# never started (a restore's or `vm start`'s about to be mapped), is left.
mkdir -p $R/tmp/incoming
$L kram create vm-zz --size 2M > /dev/null && $L kram create vm-yy --size 2M > /dev/null
: > $R/tmp/incoming/zz.qemu.log
chroot $R /usr/bin/qemu-system-x86_64 -machine q35 -accel tcg -nodefaults -display none -m 16 \
    -qmp unix:/tmp/incoming/zz.qmp,server=on,wait=off -incoming defer -S > /dev/null 2>&1 &
zz=$!
zz_waits() { $L qmp $R/tmp/incoming/zz.qmp query-status '{}' 2>/dev/null | grep -q inmigrate; }
kh_wait 30 zz_waits
$L migrate listen --listen 127.0.0.1:4479 --key $R/tmp/migrate.key --root $R --kram \
    --pool host=/host --run-dir /tmp/incoming --qemu /usr/bin/qemu-system-x86_64 \
    > /host/m0.listen.log 2>&1 &
lp=$!
listening0() { grep -q "listening on" /host/m0.listen.log; }
kh_wait 30 listening0
kill $lp; wait $lp
sed 's/^/KH-LOG listen (start-up): /' /host/m0.listen.log
# (the QEMU, a child of this shell, stays a zombie until waited for)
zz_gone() { ! $L qmp $R/tmp/incoming/zz.qmp query-status '{}' > /dev/null 2>&1; }
kh_check "listen at start-up: quits a QEMU an earlier run left waiting for a migration" \
    grep -q 'VM zz: a QEMU an earlier run of this service left waiting for a migration (inmigrate): quit' /host/m0.listen.log
kh_check "  ... and that QEMU is gone" kh_wait 10 zz_gone
wait $zz
kh_check "  ... frees that VM's KRAM area, leaves an area of a VM it never started" \
    sh -c "grep -q 'KRAM area vm-zz: .*freed' /host/m0.listen.log && ! $L kram list | grep -q ' vm-zz ' && $L kram list | grep -q ' vm-yy '"
$L kram delete vm-yy > /dev/null
rm -f $R/tmp/incoming/zz.qemu.log

$L migrate listen --listen 127.0.0.1:4480 --once --key $R/tmp/migrate.key --root $R --kram \
    --pool host=/host --run-dir /tmp/incoming --qemu /usr/bin/qemu-system-x86_64 \
    > /host/m1.listen.log 2>&1 &
lp=$!
listening() { grep -q "listening on" /host/m1.listen.log; }
kh_check "migrate listen is up" kh_wait 30 listening || exit 0
$L migrate send --to 127.0.0.1:4480 --key $R/tmp/migrate.key --pool host=/host --mode native m1 --as m2 \
    > /host/m1.send.log 2>&1
rc=$?
# a send that failed before the key handshake leaves `listen --once` waiting
( sleep 30; kill $lp 2>/dev/null ) &
wait $lp
lrc=$?
sed 's/^/KH-LOG send: /' /host/m1.send.log | tail -n 12
sed 's/^/KH-LOG listen: /' /host/m1.listen.log
kh_check "send m1 --to --as m2: exit 0, and the service's (--once) exit 0" test "$rc/$lrc" = 0/0
q=$R/tmp/incoming/m2.qmp
dest_running() { $L qmp $q query-status '{}' | grep -q '"running"'; }
kh_check "the destination QEMU the service started runs the VM" dest_running
kh_check "its memory checks pass on the destination" kh_wait 120 more_than $R/tmp/incoming/m2.serial1.log 1
kh_check "no memory check failed there" sh -c "[ -s $R/tmp/incoming/m2.serial1.log ] && ! grep -q 'VM-MEMCHECK m1 .* BAD' $R/tmp/incoming/m2.serial1.log"
# the destination QEMU's command line names the area's node
dest_in_kram() {
    local p c
    $L kram list | grep -q ' vm-m2 ' || return 1
    for p in /proc/[0-9]*; do
        c=$(tr '\0' ' ' < $p/cmdline 2>/dev/null)
        case "$c" in *"-name m2 "*"mem-path=/dev/kram-area/"*) return 0 ;; esac
    done
    return 1
}
kh_check "the destination's RAM is KRAM area vm-m2, mapped through its node" dest_in_kram
kh_check "the service recorded m2 as managed: vm list shows it running" sh -c "$L vm list | grep -q '^m2 running'"
kh_check "the source forgot m1 (vm list)" sh -c "! $L vm list | grep -q '^m1 '"
kh_check "the source freed m1's KRAM area" sh -c "! $L kram list | grep -q ' vm-m1 '"
last_n $R/tmp/incoming/m2.serial1.log > $KH_DIR/last_n
kh_log "m2's last memory check before the upgrade: $(cat $KH_DIR/last_n)"
VMS=m2
upgrade_now
