#!/bin/sh
# Host kernel hot-upgrade downtime, three ways, in one rig run (release
# kernel; bench/run-upgrade.sh boots the rig with a 1.5 GiB KRAM region
# and a scratch disk): the floor (a bare kexec to init, nothing to restore),
# the mainline way (stop, write all guest RAM and device state to disk with
# a QEMU migration to a file, kexec, start QEMU, read it all back, resume)
# and ours (liveup upgrade: device state only, RAM stays in KRAM), for VMs
# of 256 MiB and 1 GiB. The VMs are tools/guest/tinyvm.c, which fills its
# RAM with random data and checks it. Downtime is the gap in the VM's 20 ms
# heartbeat, stamped outside the rig; the tool's own breakdown is logged.
. /host/lib/ktap.sh
L=/host/bin/liveup
R=/mnt
S=$R/scratch   # the scratch disk, inside the chroot QEMU runs in (as /scratch)
SIZES="256 1024"
say() { echo "KH-BENCH-LOG $*"; }
vm_log() { echo /host/$1.console; }
wait_for() { kh_wait $3 grep -q "$2" "$1" 2>/dev/null; } # file pattern seconds
checks() { c=$(grep -c "VM-MEMCHECK $1 .* ok" "$(vm_log $1)" 2>/dev/null); echo "${c:-0}"; }
# fresh_check NAME: one more good memory check than before, and no bad one
fresh_check() {
    _b=$(checks $1)
    _more_checks() { [ "$(checks $1)" -gt "$_b" ]; }
    kh_wait 300 _more_checks $1 || return 1
    ! grep -q "VM-MEMCHECK $1 .* BAD" "$(vm_log $1)"
}
# guest NAME: QEMU arguments shared by both ways (heartbeat on ttyS1)
guest() {
    echo "-machine q35,accel=kvm -cpu qemu64 -smp 1 -nodefaults -display none" \
         "-kernel /host/tinyvm.elf -append vmname=$1,memcheck=250" \
         "-chardev serial,id=hb,path=/dev/ttyS1 -serial chardev:hb" \
         "-chardev file,id=con,path=/host/$1.console,append=on -serial chardev:con"
}
kexec_to() { # stage
    echo $1 > "$KH_STAGEFILE"; sync
    umount $S
    kexec -s -l /host/bzImage --initrd=/host/initrd.img --command-line="$(cat /proc/cmdline)" || return 1
    echo "KH-KEXEC-E $KH_TEST stage=$KH_STAGE"
    kexec -e
}
elapsed() { awk -v a=$1 -v b=$(cut -d' ' -f1 /proc/uptime) 'BEGIN { printf "%.2f", b - a }'; }

# ours_begin MIB: a VM with its RAM in KRAM, then liveup upgrade (kexecs)
ours_begin() {
    n=ours-$1
    kh_kram_load
    # shellcheck disable=SC2046
    if $L vm start --name $n --mem ${1}M --root $R -- $(guest $n) > /dev/null \
        && wait_for "$(vm_log $n)" VM-READY 600 && fresh_check $n; then
        kh_ok "ours, $1 MiB: VM running with its RAM in KRAM, memory checked"
    else
        kh_fail "ours, $1 MiB: VM running with its RAM in KRAM, memory checked" "see $n.console"
        exit 0
    fi
    say "$n: liveup upgrade"
    echo $((KH_STAGE + 1)) > "$KH_STAGEFILE"; sync
    umount $S
    $L upgrade --kernel /host/bzImage --initrd /host/initrd.img
    kh_fail "ours, $1 MiB: upgrade" "liveup upgrade returned"
    exit 0
}
# ours_end MIB: restore, check, stop the VM and free its area
ours_end() {
    n=ours-$1
    $L restore --kram-module /host/modules/kram.ko > $KH_DIR/report
    sed "s/^/KH-BENCH-LOG $n: /" $KH_DIR/report
    kh_check "ours, $1 MiB: VM memory intact after the upgrade" fresh_check $n
    $L vm stop $n --delete-area > /dev/null
}
# main_begin MIB: the same VM with anonymous RAM; stop, migrate to a file
# (all RAM and device state), kexec
main_begin() {
    n=main-$1 q=$R/run/main-$1.qmp
    # shellcheck disable=SC2046
    chroot $R qemu-system-x86_64 -name $n -m ${1}M -qmp unix:/run/$n.qmp,server=on,wait=off \
        -daemonize $(guest $n)
    if wait_for "$(vm_log $n)" VM-READY 600 && fresh_check $n; then
        kh_ok "mainline, $1 MiB: VM running with anonymous RAM, memory checked"
    else
        kh_fail "mainline, $1 MiB: VM running with anonymous RAM, memory checked" "see $n.console"
        exit 0
    fi
    say "$n: stop, migrate everything to a file, sync, kexec"
    t0=$(cut -d' ' -f1 /proc/uptime)
    $L qmp $q stop > /dev/null
    $L qmp $q migrate "{\"uri\": \"file:/scratch/$n.state\"}" --wait-migration > /dev/null
    sync
    say "$n: saved $(du -m $S/$n.state | cut -f1) MiB in $(elapsed $t0) s"
    kexec_to $((KH_STAGE + 1))
    kh_fail "mainline, $1 MiB: kexec" "kexec returned"
    exit 0
}
# main_end MIB: start QEMU, read everything back, resume, check
main_end() {
    n=main-$1 q=$R/run/main-$1.qmp
    t0=$(cut -d' ' -f1 /proc/uptime)
    # shellcheck disable=SC2046
    chroot $R qemu-system-x86_64 -name $n -m ${1}M -qmp unix:/run/$n.qmp,server=on,wait=off \
        -daemonize -incoming defer $(guest $n)
    $L qmp $q migrate-incoming "{\"uri\": \"file:/scratch/$n.state\"}" --wait-migration > /dev/null
    $L qmp $q cont > /dev/null
    say "$n: QEMU started, state read back, resumed in $(elapsed $t0) s"
    kh_check "mainline, $1 MiB: VM memory intact after the upgrade" fresh_check $n
    $L qmp $q quit > /dev/null 2>&1
    rm -f $S/$n.state
}

# stage 0: floor; then for size k (1-based): stage 2k-1 starts ours,
# 2k ends ours and starts mainline, 2k+1 ends mainline (and starts ours for k+1)
nsizes=$(echo $SIZES | wc -w)
size() { echo $SIZES | cut -d' ' -f$1; }
kh_mount_rootfs $R
mkdir -p $S && mount /dev/vdb $S
if [ $KH_STAGE = 0 ]; then
    kh_kram_load
    $L kram format --yes > /dev/null
    say "floor: a bare kexec into the same kernel, nothing to restore"
    kexec_to 1
    kh_fail "floor kexec" "kexec returned"
    exit 0
fi
if [ $((KH_STAGE % 2)) = 0 ]; then
    k=$((KH_STAGE / 2))
    ours_end $(size $k)
    main_begin $(size $k)
fi
if [ $KH_STAGE = 1 ]; then
    # How much of "QEMU start" is loading QEMU from disk after a kexec:
    # the same trivial run with a cold and a warm page cache.
    t0=$(cut -d' ' -f1 /proc/uptime); chroot $R qemu-system-x86_64 -version > /dev/null; cold=$(elapsed $t0)
    t0=$(cut -d' ' -f1 /proc/uptime); chroot $R qemu-system-x86_64 -version > /dev/null; warm=$(elapsed $t0)
    say "qemu-system-x86_64 -version after kexec: ${cold} s cold, ${warm} s warm"
fi
k=$(( (KH_STAGE + 1) / 2 ))
[ $KH_STAGE -gt 1 ] && main_end $(size $((k - 1)))
[ $k -le $nsizes ] && ours_begin $(size $k)
kh_ok "bench finished"
