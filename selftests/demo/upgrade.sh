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
    if ! grep -q "VM-MEMCHECK demo-vm .* ok" $R/run/liveup/demo-vm.console 2>/dev/null; then
        kh_fail "VM up before the upgrade" "no memory check from demo-vm in 240 s: $(tail -n 3 $R/run/liveup/demo-vm.console 2>/dev/null)"
        say "FAILED: demo-vm did not come up; no upgrade attempted"
        exit 0
    fi
    kh_ok "VM up before the upgrade"
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
    C=$R/run/liveup/demo-vm.console
    # ok memory checks in the VM's console so far (0 while there is no file:
    # the restored QEMU may start a new one)
    checks() { c=$(grep -c "VM-MEMCHECK demo-vm .* ok" $C 2>/dev/null); echo "${c:-0}"; }
    size() { c=$(wc -c < $C 2>/dev/null); echo "${c:-0}"; }
    before=$(checks)
    beats=$(size)
    $L restore --kram-module /host/modules/kram.ko --kram-params "$KRAM_PARAMS" > $KH_DIR/report
    rc=$?
    sed 's/^/KH-DEMO /' $KH_DIR/report
    if [ $rc != 0 ]; then
        kh_fail "liveup restore" "exited $rc"
        say "FAILED: liveup restore exited $rc"
        exit 0
    fi
    kh_ok "liveup restore"
    # The VM must come back: a memory check completed after the resume
    # (tinyvm checks every 2 s), and no check ever reported BAD.
    n=0; while [ "$(checks)" -le "$before" ] && [ $n -lt 240 ]; do sleep 0.5; n=$((n+1)); done
    after=$(checks)
    if grep -q "VM-MEMCHECK demo-vm .* BAD" $C; then
        kh_fail "VM memory intact after the upgrade" "$(grep -m1 'VM-MEMCHECK demo-vm .* BAD' $C)"
        say "FAILED: demo-vm's memory checksum changed: $(grep -m1 'VM-MEMCHECK demo-vm .* BAD' $C)"
    elif [ "$after" -le "$before" ]; then
        kh_fail "VM memory intact after the upgrade" "no memory check completed in 120 s after restore ($before before; console grew $(( $(size) - beats )) bytes)"
        say "FAILED: demo-vm did not come back: no memory check in 120 s after liveup restore"
    else
        kh_ok "VM running in the new kernel, its memory checksum intact ($((after - before)) checks since the resume)"
        say "VM demo-vm is running in the new kernel; its in-guest memory checksum is intact ($((after - before)) checks since the resume)"
    fi
    ;;
esac
