#!/bin/sh
# Where "QEMU start" goes after a kexec (Documentation/upgrade.rst): in the
# rig guest (release kernel, trixie rootfs), time QEMU 11 from exec to
# daemonized for a VM like the upgrade tests' (q35, nested KVM, tinyvm,
# -S -incoming defer), with a cold page cache (drop_caches, as after a
# kexec), warm, after reading every file QEMU maps, and with that read running
# alongside; and `qemu-system-x86_64 -version` cold and warm. Run:
#   kdir=$(tools/build-modules.sh release); tools/build-userspace-guest.sh
#   tools/vm-run.sh -k "$kdir" -o out/qs -t 400 -r "$(tools/mkrootfs.sh)" bench/qemu-start
#   grep KH-LOG out/qs/console.log
. /host/lib/ktap.sh
R=/mnt
kh_mount_rootfs $R
now() { cut -d' ' -f1 /proc/uptime; }
ms() { awk -v a=$1 -v b=$2 'BEGIN{printf "%.0f ms", (b-a)*1000}'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
VM="-machine q35,accel=kvm -cpu qemu64 -smp 1 -nodefaults -display none -kernel /host/tinyvm.elf -m 128M -S -daemonize -pidfile /run/q.pid -incoming defer -qmp unix:/run/q.sock,server=on,wait=off"
killq() { kill $(cat $R/run/q.pid) 2>/dev/null; sleep 0.5; }
start() { a=$(now); chroot $R qemu-system-x86_64 $VM > /tmp/q.out 2>&1; b=$(now); kh_log "$1: $(ms $a $b)"; }
start_v() { a=$(now); chroot $R qemu-system-x86_64 -version > /dev/null 2>&1; b=$(now); kh_log "$1: $(ms $a $b)"; }
drop; start_v "qemu -version, cold"
start_v "qemu -version, warm"
chroot $R env LD_DEBUG=statistics qemu-system-x86_64 -version 2>&1 \
    | grep -e "total startup time" -e "number of relocations:" | sed 's/^ *[0-9]*: *//' | while read -r l; do kh_log "ld.so: $l"; done
drop; start "vm start, cold"; killq
start "vm start, warm"; killq
start "vm start (warm-up)"
awk '$6 ~ /^\// { print $6 }' /proc/$(cat $R/run/q.pid)/maps | sed "s#^$R##" | sort -u > /tmp/files
killq
echo /usr/share/qemu/bios-256k.bin >> /tmp/files
n=$(wc -l < /tmp/files)
sz=$(cd $R && cat $(sed 's|^/||' /tmp/files) | wc -c)
kh_log "mapped files: $n, $sz bytes"
for rep in 1 2; do
    drop; start "cold, no readahead"; killq
    drop; a=$(now); (cd $R && cat $(sed 's|^/||' /tmp/files) > /dev/null); b=$(now); kh_log "read all files cold: $(ms $a $b)"
    start "after full read"; killq
    drop; (cd $R && cat $(sed 's|^/||' /tmp/files) > /dev/null) & rp=$!; start "full read in parallel with start"; wait $rp; killq
done
kh_ok "qemu start measured"
