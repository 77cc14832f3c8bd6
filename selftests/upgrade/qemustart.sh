#!/bin/sh
# What a QEMU start costs in the rig, the step of a restore that grows
# with the number of VMs (Documentation/upgrade.rst, "Downtime and the
# number of VMs"): 1, 2 and 4 QEMUs started at once as restore starts
# them (tinyvm, 32 MiB each in a KRAM area, -incoming defer,
# -daemonize), with the page cache dropped first (as after a kexec) and
# warm, twice each. Not in `make check` (a measurement; its figures vary
# with the machine's load):
#   KH_L0_QEMU=trixie KH_TCG_THREAD=multi KH_RIG_SMP=2 \
#     tools/vm-run.sh -k <release> -o out/qs -t 900 -r "$(tools/mkrootfs.sh)" upgrade/qemustart
# Checked: every QEMU started and answered on its monitor socket.
. /host/lib/ktap.sh
R=/mnt
L=/host/bin/liveup
kh_kram_ready
kh_check "trixie rootfs with QEMU 11" kh_mount_rootfs $R || exit 0
Q="chroot $R /usr/bin/qemu-system-x86_64"
up() { cut -d' ' -f1 /proc/uptime; }
ms() { awk -v a=$1 -v b=$2 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }
for i in 1 2 3 4; do
    $L kram create qs$i --size 32M > /dev/null
    $L kram list | awk -v n=qs$i '$2 == n { print $1 }' > /tmp/area$i
done
kh_check "four KRAM areas of 32 MiB" sh -c "test \"\$(cat /tmp/area1 /tmp/area2 /tmp/area3 /tmp/area4 | wc -w)\" = 4" || exit 0
# liveup's launch line (upgrade/vm.rs vm_start) for tinyvm
vmargs() { # n
    echo -name q$1 -machine q35,accel=kvm -cpu qemu64 -smp 1 -nodefaults -display none \
        -object memory-backend-file,id=ram0,size=32M,mem-path=/dev/kram-area/$(cat /tmp/area$1),offset=0,share=on,align=2M \
        -machine memory-backend=ram0 -m 32M -kernel /host/tinyvm.elf -append vmname=q$1 \
        -qmp unix:/tmp/q$1.sock,server=on,wait=off -daemonize -pidfile /tmp/q$1.pid -incoming defer
}
started() { # n: each of the first N has its pid file and its socket
    local i
    for i in $(seq 1 $1); do test -s $R/tmp/q$i.pid -a -S $R/tmp/q$i.sock || return 1; done
}
stopq() { kill $(cat $R/tmp/q$1.pid) 2>/dev/null; sleep 0.5; rm -f $R/tmp/q$1.*; }
figures=
run() { # n cold|warm
    local i a b
    [ $2 = cold ] && { sync; echo 3 > /proc/sys/vm/drop_caches; }
    a=$(up)
    for i in $(seq 1 $1); do $Q $(vmargs $i) > /tmp/qerr$i 2>&1 & done
    wait; b=$(up)
    kh_check "$1 QEMU(s) started at once, $2 cache: each answers" started $1 || cat /tmp/qerr1
    figures="$figures $1/$2 $(ms $a $b)"
    for i in $(seq 1 $1); do stopq $i; done
}
for rep in 1 2; do
    for n in 1 2 4; do run $n cold; run $n warm; done
done
sync; echo 3 > /proc/sys/vm/drop_caches
a=$(up); $Q -version > /dev/null; b=$(up); $Q -version > /dev/null; c=$(up)
echo "KH-FIGURE QEMU start (ms; count/cache time):$figures; qemu -version cold $(ms $a $b), warm $(ms $b $c)"
for i in 1 2 3 4; do $L kram delete qs$i > /dev/null 2>&1; done
