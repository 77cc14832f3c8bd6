#!/bin/sh
# The shipped systemd units under a booted systemd: liveup and its units as
# `make install` lays them out (RUN/destdir: tools/vm-run.sh with
# KH_INSTALL=1) put into the trixie rootfs, which this test boots with
# systemd as PID 1 (selftests/lib/guest-run.sh, boot-systemd). Stages:
#  0 (the rig's busybox init): install, enable the units with
#    `systemctl enable` (their [Install] sections), kram.ko where
#    KRAM_MODULE=auto finds it; go on under systemd.
#  1 (systemd, an ordinary boot): liveup-restore.service ran and had
#    nothing to restore (journal, priority info); the prezero service and
#    timer and the migration destination service run; a VM started with
#    `liveup vm start` runs in liveup-vm-NAME.scope in machine.slice; then
#    a hot-upgrade from inside systemd.
#  2 (busybox init of the kexec'd kernel): nothing but going on under
#    systemd, so that the unit restores the VM at boot.
#  3 (systemd): liveup-restore.service restored the VM (journal, priority
#    notice), memory intact; its QEMU in its own scope, not in the
#    service's cgroup, so that a restart or a stop of the oneshot service
#    leaves it running (checked: same QEMU, still running, memory checks
#    going on).
. /host/lib/ktap.sh
. /host/lib/systemd.sh
VM=u1
unit_state() { systemctl show -P "$2" "$1"; }
# journal_line PRIORITY TEXT: liveup logged TEXT at PRIORITY in this boot
journal_line() { journalctl -b -q -t liveup PRIORITY="$1" -o cat | grep -q -F "$2"; }
# in_scope PID: that process's cgroup is VM's scope in machine.slice
in_scope() { grep -q "^0::/machine.slice/liveup-vm-$VM.scope$" /proc/$1/cgroup || { cat /proc/$1/cgroup; return 1; }; }

case "$KH_STAGE" in
0)
    kh_check "make install's tree is in the rig (KH_INSTALL=1)" test -x /host/destdir/usr/bin/liveup || exit 0
    mount /dev/vda /mnt || { kh_fail "rootfs mounted" "mount /dev/vda"; exit 0; }
    # (each top directory on its own: /lib is a symlink to usr/lib there)
    for d in $(ls /host/destdir); do mkdir -p /mnt/$d && cp -a /host/destdir/$d/. /mnt/$d/; done
    # what a distribution's module package does: kram.ko of this kernel
    # under /lib/modules/RELEASE, where KRAM_MODULE=auto looks
    mkdir -p /mnt/lib/modules/$(uname -r)/extra /mnt/etc/liveup
    cp /host/modules/kram.ko /host/modules/prezero.ko /mnt/lib/modules/$(uname -r)/extra/
    cat > /mnt/etc/default/liveup <<EOF
KRAM_MODULE=auto
LIVEUP_PREZERO_4K_POOL=4M
LIVEUP_MIGRATE_LISTEN=127.0.0.1:47001
EOF
    # the rig's test runner, continued under systemd, after the restore
    kh_runner_under_systemd /mnt
    mount --bind /proc /mnt/proc
    kh_check "systemctl enable: liveup-restore.service, liveup-prezero.timer, liveup-migrate-listen.service" \
        chroot /mnt systemctl enable liveup-restore.service liveup-prezero.timer liveup-migrate-listen.service
    chroot /mnt /usr/bin/liveup migrate keygen /etc/liveup/migrate.key > /dev/null
    umount /mnt/proc
    kh_check "a migration key for the destination service" test -s /mnt/etc/liveup/migrate.key
    umount /mnt
    echo 1 > "$KH_STAGEFILE"
    touch "$KH_DIR/boot-systemd"
    ;;
1)
    kh_check "PID 1 is systemd" test "$(cat /proc/1/comm)" = systemd
    kh_check "liveup-restore.service ran at boot and succeeded" \
        test "$(unit_state liveup-restore.service ActiveState)/$(unit_state liveup-restore.service Result)" = active/success
    kh_check "its journal line: nothing to restore (priority info)" journal_line 6 "restore: nothing to restore"
    journalctl -b -q -u liveup-restore.service -o cat | sed 's/^/KH-LOG restore unit: /'
    # by liveup's identifier, as journal_line: journald can miss the unit
    # of a process that has already exited (session 31's make check showed
    # only systemd's own lines under -u liveup-restore.service)
    kh_check "kram.ko loaded from /lib/modules/$(uname -r) (KRAM_MODULE=auto)" kh_wait 10 sh -c \
        "grep -q '^kram ' /proc/modules && journalctl -b -q -t liveup -o cat | grep -qx 'liveup: kram module of the running kernel: /lib/modules/$(uname -r)/extra/kram.ko'"
    kh_check "liveup-prezero.timer is waiting" test "$(unit_state liveup-prezero.timer ActiveState)" = active
    insmod /lib/modules/$(uname -r)/extra/prezero.ko
    systemctl start liveup-prezero.service
    kh_check "liveup-prezero.service ran (its condition, /dev/prezero, held) and succeeded" \
        test "$(unit_state liveup-prezero.service ConditionResult)/$(unit_state liveup-prezero.service Result)" = yes/success
    . /host/lib/prezero.sh
    # (faults take from the pool as soon as it fills: what the fill put
    # in is what is there, taken or reclaimed since; selftests/prezero/pool.sh)
    filled() { [ "$(pz_stat 0 4K "free taken reclaimed")" -ge 1024 ]; }
    kh_check "it filled the 4K pool to LIVEUP_PREZERO_4K_POOL=4M (1024 pages; $(pz_stat 0 4K "free taken reclaimed") in or out of it)" filled
    kh_check "liveup-migrate-listen.service listens on 127.0.0.1:47001" \
        kh_wait 30 grep -q ":$(printf %04X 47001) 00000000:0000 0A" /proc/net/tcp
    . ./vms.sh
    R=/ L=/usr/bin/liveup VMS=$VM VM_MEM=32M
    kh_kram_ready
    kh_check "start $VM under systemd" start_vm $VM 1 || exit 0
    kh_check "$VM booted" boot_vm $VM 1 || { diag; exit 0; }
    kh_check "$VM's QEMU in liveup-vm-$VM.scope in machine.slice" in_scope "$(cat /run/liveup/$VM.pid)"
    kh_check "memory checks pass before upgrading" all_memory_ok
    systemctl stop liveup-migrate-listen.service
    # the kexec'd kernel's busybox init goes on at stage 2
    upgrade_now
    ;;
2)
    echo 3 > "$KH_STAGEFILE"
    touch "$KH_DIR/boot-systemd"
    ;;
3)
    . ./vms.sh
    R=/ L=/usr/bin/liveup VMS=$VM VM_MEM=32M
    kh_check "liveup-restore.service restored at boot and succeeded" \
        test "$(unit_state liveup-restore.service ActiveState)/$(unit_state liveup-restore.service Result)" = active/success
    kh_check "its journal line: 1 VM running again (priority notice)" journal_line 5 "restore: 1 VM(s) running again ($VM)"
    journalctl -b -q -u liveup-restore.service -o cat | sed 's/^/KH-LOG restore unit: /'
    # what systemd did before the restore (all of it is downtime)
    systemd-analyze critical-chain liveup-restore.service 2>&1 | sed 's/^/KH-LOG critical chain: /'
    systemd-analyze blame 2>&1 | head -n 8 | sed 's/^/KH-LOG blame: /'
    kh_check "$VM running" running $VM || { diag; exit 0; }
    kh_check "$VM's memory intact" all_memory_ok
    pid=$(cat /run/liveup/$VM.pid)
    kh_check "$VM's QEMU in liveup-vm-$VM.scope, not in the service's cgroup" in_scope "$pid"
    kh_check "systemctl restart liveup-restore.service" systemctl restart liveup-restore.service
    kh_check "after the restart: nothing restored twice" journal_line 6 "restore: nothing to restore"
    kh_check "$VM still runs in the same QEMU after the restart" sh -c "kill -0 $pid && [ \"\$(cat /run/liveup/$VM.pid)\" = $pid ]"
    kh_check "systemctl stop liveup-restore.service" systemctl stop liveup-restore.service
    sleep 2
    kh_check "$VM still runs in the same QEMU after the stop" kill -0 "$pid"
    kh_check "$VM running, memory checks going on" all_memory_ok
    $L vm stop $VM --delete-area > /dev/null
    kh_check "its scope went with it" sh -c \
        "s=\$(systemctl show -P ActiveState liveup-vm-$VM.scope) && [ \"\$s\" = inactive ]"
    ;;
esac
