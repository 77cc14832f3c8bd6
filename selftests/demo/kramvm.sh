#!/bin/sh
# debugging aid (not in make check): one VM with RAM in KRAM, watched for 90 s
. /host/lib/ktap.sh
L=/host/bin/liveup; R=/mnt
kh_kram_ready
kh_mount_rootfs $R
$L vm start --name vm1 --mem 96M --root $R -- -machine q35,accel=kvm -cpu qemu64 -smp 1 -nodefaults -display none \
  -kernel /host/vm-bzImage -initrd /host/vm-initrd.img -append "console=ttyS1 panic=-1 vmname=vm1" \
  -chardev serial,id=hb,path=/dev/ttyS1 -serial chardev:hb \
  -chardev file,id=con,path=/run/liveup/vm1.console,append=on -serial chardev:con \
  -D /run/liveup/vm1.qemulog -d guest_errors
for i in 1 2 3 4 5 6 7 8 9; do sleep 10; echo "KH-LOG t=$i $($L vm list) $(tail -c 300 $R/run/liveup/vm1.console | tr '\n' '|')"; done
kh_ok done
