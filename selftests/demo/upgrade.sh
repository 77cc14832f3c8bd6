#!/bin/sh
# `make demo` (not part of make check): one VM with a heartbeat, its RAM in
# KRAM, survives a hot-upgrade of the host kernel; the breakdown is printed.
. /host/lib/ktap.sh
L=/host/bin/liveup
R=/mnt
say() { echo "KH-DEMO $*"; }
case $KH_STAGE in
0)
    insmod /host/modules/kram.ko $KRAM_PARAMS
    $L kram status | grep -q ready || $L kram format --yes > /dev/null
    kh_mount_rootfs $R
    say "host kernel $(uname -r), KRAM: $($L kram status | sed -n 's/^pages *//p')"
    # The VM: tools/guest/tinyvm.c (fills its RAM, checks it every 2 s,
    # beats every 20 ms). KH_DEMO_GUEST=linux boots the release kernel
    # instead, which under nested SVM on the rig's single TCG thread takes
    # minutes to come up.
    if [ "${KH_DEMO_GUEST:-tiny}" = linux ]; then
        set -- -kernel /host/vm-bzImage -initrd /host/vm-initrd.img \
            -append "console=ttyS1 quiet panic=-1 no_timer_check vmname=demo-vm"
    else
        set -- -kernel /host/tinyvm.elf -append "vmname=demo-vm"
    fi
    $L vm start --name demo-vm --mem 128M --root $R -- \
        -machine q35,accel=kvm -cpu qemu64 -smp 1 -nodefaults -display none "$@" \
        -chardev serial,id=hb,path=/dev/ttyS1 -serial chardev:hb \
        -chardev file,id=con,path=/run/liveup/demo-vm.console,append=on -serial chardev:con
    n=0; while ! grep -q VM-MEMCHECK $R/run/liveup/demo-vm.console 2>/dev/null && [ $n -lt 480 ]; do sleep 0.5; n=$((n+1)); done
    say "VM demo-vm running: $(grep VM-READY $R/run/liveup/demo-vm.console), heartbeat every 20 ms"
    say "liveup upgrade --kernel /host/bzImage (kexec into the new kernel under the running VM)"
    echo 1 > "$KH_STAGEFILE"; sync
    $L upgrade --kernel /host/bzImage --initrd /host/initrd.img
    echo 0 > "$KH_STAGEFILE"
    kh_fail "upgrade" "liveup upgrade returned"
    ;;
1)
    kh_mount_rootfs $R
    say "new kernel booted; liveup restore"
    $L restore --kram-module /host/modules/kram.ko --kram-params "$KRAM_PARAMS" > $KH_DIR/report
    sed 's/^/KH-DEMO /' $KH_DIR/report
    before=$(grep -c "VM-MEMCHECK demo-vm .* ok" $R/run/liveup/demo-vm.console)
    n=0; while [ "$(grep -c 'VM-MEMCHECK demo-vm .* ok' $R/run/liveup/demo-vm.console)" -le "$before" ] && [ $n -lt 480 ]; do sleep 0.5; n=$((n+1)); done
    if grep -q "VM-MEMCHECK demo-vm .* BAD" $R/run/liveup/demo-vm.console; then
        kh_fail "VM memory intact" "checksum changed"
    else
        kh_ok "VM running in the new kernel, its memory checksum intact"
        say "VM demo-vm is running in the new kernel; its in-guest memory checksum is intact"
    fi
    ;;
esac
