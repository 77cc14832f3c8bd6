#!/bin/sh
# A nested VM (L2) boots inside the rig guest under nested KVM (AMD SVM, shown
# by TCG's -cpu max) with the trixie rootfs's QEMU and prints a marker.
. /host/lib/ktap.sh
kh_check "/dev/kvm present" test -c /dev/kvm
if ! mount /dev/vda /mnt 2>/dev/null; then
    kh_fail "trixie rootfs mounted" "no /dev/vda (run with -r)"; exit 0
fi
kh_ok "trixie rootfs mounted"
mkdir -p /mnt/host
for d in dev proc sys host; do mount --bind /$d /mnt/$d; done
mount -t tmpfs tmpfs /mnt/tmp
kh_log "$(chroot /mnt qemu-system-x86_64 --version | head -n1)"
start=$(date +%s)
# L2 boots the release kernel (/host/vm-bzImage, what the upgrade test's
# VMs boot): the debug (KASAN) kernel took 48 s on a quiet machine and over
# 400 s while the outer host was busy, with the rig on one TCG thread.
l2k=/host/vm-bzImage; [ -f $l2k ] || l2k=/host/bzImage
kh_log "L2 kernel: $l2k"
timeout 400 chroot /mnt qemu-system-x86_64 -accel kvm -cpu qemu64 -m 256M -smp 1 \
    -kernel $l2k -initrd /host/l2-initrd.img \
    -append "console=ttyS0 panic=-1 quiet" -display none -serial stdio -monitor none \
    -no-reboot -nodefaults < /dev/null > /tmp/l2.log 2>&1
end=$(date +%s)
if grep -q KH-L2-ALIVE /tmp/l2.log; then
    kh_ok "nested VM booted and printed its marker ($((end - start)) s)"
else
    tail -n 20 /tmp/l2.log
    kh_fail "nested VM booted and printed its marker" "no marker from L2"
fi
for d in tmp host sys proc dev; do umount /mnt/$d; done
umount /mnt
