#!/bin/sh
# temporary experiment: QEMU start cold vs warm in the rig (not committed)
. /host/lib/ktap.sh
L=/host/bin/liveup
R=/mnt
up() { cut -d' ' -f1 /proc/uptime; }
kh_mount_rootfs $R
insmod /host/modules/kram.ko
$L kram status | grep -q ready || $L kram format --yes > /dev/null
ls -la /dev/kram
for i in 1 2; do
  a=$(up); chroot $R qemu-system-x86_64 -version >/dev/null; b=$(up)
  kh_log "qemu -version run $i: $a -> $b"
done
a=$(up); chroot $R sh -c 'ldd /usr/bin/qemu-system-x86_64 | wc -l'; b=$(up); kh_log "ldd $a -> $b"
chroot $R sh -c 'du -shL $(ldd /usr/bin/qemu-system-x86_64 | awk "/=>/{print \$3}") /usr/bin/qemu-system-x86_64 | tail -3'
for i in 1 2 3; do
  a=$(up)
  $L vm start --name v$i --mem 96M --root $R -- -machine q35,accel=kvm -cpu qemu64 -smp 1 -nodefaults -display none -kernel /host/tinyvm.elf -append vmname=v$i >/dev/null 2>&1 || kh_log "vm start failed"
  b=$(up)
  kh_log "vm start $i: $a -> $b"
  a=$(up); chroot $R qemu-system-x86_64 -machine q35,accel=kvm -nodefaults -display none -S -daemonize -pidfile /run/q$i.pid -m 64M ; b=$(up)
  kh_log "bare qemu -S daemonize $i: $a -> $b"
  kill $(cat $R/run/q$i.pid)
  a=$(up); chroot $R qemu-system-x86_64 -machine q35,accel=tcg -nodefaults -display none -S -daemonize -pidfile /run/t$i.pid -m 64M ; b=$(up)
  kh_log "bare qemu tcg -S daemonize $i: $a -> $b"
  kill $(cat $R/run/t$i.pid)
  $L vm stop v$i --delete-area >/dev/null 2>&1
done
kh_ok done
