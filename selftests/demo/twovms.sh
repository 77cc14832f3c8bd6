#!/bin/sh
# Debugging aid (not in make check): two nested VMs at once, with ordinary
# anonymous RAM (no KRAM), watched for 120 s. Tells whether running two L2
# guests side by side is sound in the nested TCG rig at all.
# KH_TWOVMS_GUEST=tiny: the minimal VM (tools/guest/tinyvm.c), not Linux.
. /host/lib/ktap.sh
R=/mnt
kh_mount_rootfs $R
vm() { # n
    if [ "${KH_TWOVMS_GUEST:-}" = tiny ]; then
        set -- $1 -kernel /host/tinyvm.elf -append "vmname=t$1"
    else
        set -- $1 -kernel /host/vm-bzImage -initrd /host/vm-initrd.img \
            -append "console=ttyS1 quiet panic=-1 no_timer_check vmname=t$1"
    fi
    v=$1; shift
    chroot $R ${KH_L2_TASKSET:+taskset -c $KH_L2_TASKSET} qemu-system-x86_64 -name t$v \
        -machine q35,accel=kvm -cpu qemu64 -smp 1 -m 96M -nodefaults -display none "$@" \
        -chardev serial,id=hb,path=/dev/ttyS$v -serial chardev:hb \
        -chardev file,id=con,path=/host/t$v.console,append=on -serial chardev:con -daemonize
}
vm 1; vm 2
sleep 120
for v in 1 2; do
    n=$(grep -c VM-READY /host/t$v.console)
    kh_check "t$v booted exactly once (boots: $n)" test "$n" = 1
    kh_check "t$v memory checks all ok" sh -c "grep -q 'VM-MEMCHECK t$v .* ok' /host/t$v.console && ! grep -q BAD /host/t$v.console"
done
