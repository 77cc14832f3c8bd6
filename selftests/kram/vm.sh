#!/bin/sh
# A small VM whose RAM is a KRAM area keeps its memory across a host kexec:
# tinyvm (tools/guest/tinyvm.c) fills its RAM with random data and prints
# the checksum and the range; the VM is stopped and its QEMU quits (the
# area stays), the host kexecs, and in the new kernel the area's bytes
# hash to the VM's checksum. The same hash is taken before the kexec, so
# the comparison is known to work. (The full stop/save/restore/resume flow
# is selftests/upgrade/upgrade.sh.)
. /host/lib/ktap.sh
L=/host/bin/liveup
T=/host/bin/kram-selftest
R=/mnt
start_kvm() { # [extra tinyvm command-line word]
    rm -f /host/kvm.console
    $L vm start --name kvm --mem 64M --root $R -- \
        -machine q35,accel=kvm -cpu qemu64 -smp 1 -nodefaults -display none \
        -kernel /host/tinyvm.elf -append "vmname=kvm $1" -serial null \
        -chardev file,id=con,path=/host/kvm.console -serial chardev:con
}
# wait_for WORD SECONDS: until the VM prints WORD
wait_for() { kh_wait $2 grep -q "$1 kvm" /host/kvm.console 2>/dev/null; }
case $KH_STAGE in
0)
    kh_dmesg_mark
    kh_kram_ready
    kh_mount_rootfs $R || kh_fail "trixie rootfs" "mount failed"
    $L vm stop kvm --delete-area > /dev/null 2>&1
    # KH_KRAMVM_RIGFAULT=1 (through KH_GUEST_ENV) makes the first start
    # fail as the rig fault does (tinyvm's rigfault word), to test the retry.
    kh_check "VM started with its RAM in KRAM area vm-kvm" start_kvm ${KH_KRAMVM_RIGFAULT:+rigfault}
    # The nested VM under TCG's SVM sometimes never gets going (no output
    # at all; see Documentation/upgrade.rst, Known problems): shown and
    # started once more, before anything is checked.
    if ! wait_for VM-READY 120; then
        kh_log "kvm did not boot (120 s): started again after a rig fault"
        $L qmp $R/run/liveup/kvm.qmp human-monitor-command '{"command-line": "info registers"}' 2>&1 \
            | sed 's/\\r\\n/\n/g' | grep -E 'RIP|EFL' | sed 's/^/KH-LOG kvm: /'
        $L vm stop kvm --delete-area > /dev/null
        kh_check "VM started again" start_kvm
    fi
    wait_for VM-MEMCHECK 300
    line=$(grep VM-READY /host/kvm.console)
    kh_log "$line"
    sum=$(echo "$line" | cut -d' ' -f3) range=$(echo "$line" | sed -n 's/.*range=//p')
    kh_check "VM filled its RAM and checked it" sh -c "grep -q 'VM-MEMCHECK kvm .* ok' /host/kvm.console"
    # The descriptor QEMU keeps for its RAM is its area's node
    # (/dev/kram-area/ID, kram/area_node.rs), which reaches nothing else in
    # KRAM; never /dev/kram or /dev/kram-pages, which reach every area.
    qpid=$(cat $R/run/liveup/kvm.pid) id=$($T show vm-kvm | cut -d' ' -f1)
    kh_log "QEMU's KRAM descriptors: $(ls -l /proc/$qpid/fd | grep -o '/dev/kram.*' | tr '\n' ' ')"
    kh_check "QEMU holds its area's node (area $id) and no descriptor of /dev/kram or /dev/kram-pages" sh -c \
        "ls -l /proc/$qpid/fd | grep -q 'dev/kram-area/$id\$' && ! ls -l /proc/$qpid/fd | grep -qE 'dev/kram(-pages)?\$'"
    # /dev/kram maps the area with 2 MiB entries (QEMU maps guest RAM
    # 2 MiB-aligned, the area starts so), and KVM follows the host's
    # mapping size: the RAM the VM filled is in 2 MiB pages of the guest.
    d=/sys/kernel/debug/kvm
    kh_log "KVM pages: 4k $(cat $d/pages_4k) 2m $(cat $d/pages_2m) 1g $(cat $d/pages_1g)"
    kh_check "KVM maps the VM's RAM in KRAM with 2 MiB pages (at least 8: 16 of its 64 MiB)" \
        test "$(cat $d/pages_2m)" -ge 8
    kh_check "VM stopped, QEMU gone, area kept" sh -c \
        "$L qmp $R/run/liveup/kvm.qmp stop > /dev/null && $L vm stop kvm > /dev/null && $T show vm-kvm > /dev/null"
    echo "$sum ${range%-*} ${range#*-}" > $KH_DIR/vm
    kh_check "area hashes to the VM's checksum before kexec" \
        test -n "$sum" -a "$($T sum vm-kvm ${range%-*} ${range#*-})" = "$sum"
    kh_check "a different range does not (the check can fail)" \
        test "$($T sum vm-kvm 0 ${range#*-})" != "$sum"
    kh_dmesg_clean "no warning in dmesg before kexec"
    kh_kexec_next
    ;;
1)
    kh_dmesg_mark
    kh_kram_load
    read -r sum a b < $KH_DIR/vm
    got=$($T sum vm-kvm $a $b)
    kh_check "after kexec the VM's RAM in KRAM hashes to its checksum ($sum)" test -n "$sum" -a "$got" = "$sum"
    kh_check "area deleted" $L kram delete vm-kvm
    kh_dmesg_clean "no warning in dmesg after kexec"
    ;;
esac
