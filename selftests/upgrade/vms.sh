# The VMs of the hot-upgrade selftests (upgrade.sh, vmcount.sh), sourced:
# starting and booting them (tinyvm or a Linux guest with a disk, a NIC and
# a guest agent), their checks (memory, disk, network, TSC), diagnostics,
# and the upgrade step. VMS lists them; VM_MEM sizes them (96M); VM_EXTRA
# adds QEMU arguments (a passed-through device).
L=/host/bin/liveup
R=/mnt
# KH_HALT_POLL_NS (from KH_GUEST_ENV): KVM's halt polling for the VMs (the
# most a vCPU that halts spins in the kernel before it sleeps).
[ -n "${KH_HALT_POLL_NS:-}" ] && echo "$KH_HALT_POLL_NS" > /sys/module/kvm/parameters/halt_poll_ns
# KH_UPGRADE_VMS (from KH_GUEST_ENV): which VMs; two by default.
VMS=$(echo "${KH_UPGRADE_VMS:-vm1,vm2}" | tr , ' ')

vm_log() { echo /host/$1.console; }  # on the outer host too, for post-mortems
# KH_UPGRADE_GUEST: "tiny" (default; tools/guest/tinyvm.c checks all of its
# RAM) or "linux" (the release kernel + tools/guest/vm-init). Two Linux VMs
# at once are not sound in the nested TCG rig (Documentation/upgrade.rst).
# A Linux VM also has a virtio-blk disk (an image file in the rootfs, which
# keeps it across kexec; cache=none as cloud hosts run disks) and a
# virtio-net NIC whose frames QEMU carries as UDP datagrams to kh-netpeer on
# this host (tools/guest/hb.c writes, flushes and re-reads the disk and
# sends numbered frames the peer echoes).
linux() { [ "${KH_UPGRADE_GUEST:-tiny}" = linux ]; }
# The Linux VM's virtio devices (disk, NIC and the guest agent's serial
# port) run in legacy mode (the default, KH_UPGRADE_VIRTIO=legacy), whose
# queue notifies are port I/O; KH_UPGRADE_VIRTIO=modern notifies by MMIO
# write, the access (iowrite16 in the guest) during which a restored VM
# stopped on "KVM internal error. Suberror: 3" in this nested-under-TCG rig
# 1-2 times in 20 restores; 0 in 30 with all three legacy
# (Documentation/upgrade.rst, Known problems).
virtio_transport() {
    [ "${KH_UPGRADE_VIRTIO:-legacy}" = legacy ] && echo "-global virtio-net-pci.disable-modern=on -global virtio-blk-pci.disable-modern=on -global virtio-serial-pci.disable-modern=on"
    return 0
}
img() { echo /var/lib/kh-test/$1.img; }           # as QEMU sees it, in $R
qport() { echo $((40000 + $1)); }                 # QEMU's end of the NIC
pport() { echo $((40100 + $1)); }                 # kh-netpeer's end
vm_port() { local i=1 v; for v in $VMS; do [ $v = $1 ] && { echo $i; return; }; i=$((i + 1)); done; }
# start_peers: a kh-netpeer for each Linux VM (each kernel needs its own)
start_peers() {
    local v p
    linux || return 0
    # QEMU's datagrams to the peer go over the loopback, which the rig's
    # init leaves down
    ip link set lo up 2>/dev/null || ifconfig lo up
    for v in $VMS; do
        p=$(vm_port $v)
        /host/bin/kh-netpeer --listen $(pport $p) --reply $(qport $p) --log /host/$v.netpeer &
    done
}
# The rig has two heartbeat ports (ttyS1, ttyS2), stamped on the outer host;
# a third or fourth VM beats into a file.
hb_chardev() { # name port
    if [ $2 -le 2 ]; then echo "-chardev serial,id=hb,path=/dev/ttyS$2"
    else echo "-chardev file,id=hb,path=/host/$1.hb"; fi
}
start_vm() { # name serial-port
    if linux; then
        mkdir -p $R/var/lib/kh-test
        [ -f $R$(img $1) ] || truncate -s 8M $R$(img $1) || return 1
        set -- "$1" "$2" -kernel /host/vm-bzImage -initrd /host/vm-initrd.img \
            -append "console=ttyS1 quiet panic=-1 no_timer_check vmname=$1" \
            -drive file=$(img $1),if=virtio,format=raw,cache=${KH_UPGRADE_DISK_CACHE:-none} \
            -netdev dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=$(qport $2),remote.type=inet,remote.host=127.0.0.1,remote.port=$(pport $2) \
            -device virtio-net-pci,netdev=n0 $(virtio_transport)
    else
        # KH_UPGRADE_RIGFAULT=NAME: that VM's first boot ends on a KVM
        # internal error (tinyvm's rigfault), to test boot_vm's retry.
        f=; [ "${KH_UPGRADE_RIGFAULT:-}" = "$1" ] && [ ! -e /tmp/rigfault.$1 ] && f=,rigfault && touch /tmp/rigfault.$1
        # VM_BEAT=N: a heartbeat every N ticks of 20 ms (tinyvm's beat=)
        set -- "$1" "$2" -kernel /host/tinyvm.elf -append "vmname=$1$f${VM_BEAT:+,beat=$VM_BEAT}"
    fi
    n=$1 p=$2; shift 2
    # a Linux VM's init answers the guest agent (tools/guest/hb.c), through
    # which restore sets its wall clock
    ga=; linux && ga=--guest-agent
    $L vm start --name $n --mem ${VM_MEM:-96M} --root $R $ga -- \
        -machine q35,accel=kvm -cpu qemu64 -smp 1 -nodefaults -display none "$@" ${VM_EXTRA:-} \
        $(hb_chardev $n $p) -serial chardev:hb \
        -chardev file,id=con,path=/host/$n.console,append=on -serial chardev:con \
        -D /host/$n.qemu.log -d guest_errors
}
# fresh_kram: KRAM loaded, ready and holding no VM (an earlier test's in
# this rig go, RAM and all), the trixie rootfs mounted; each a check
fresh_kram() {
    if grep -q kram /proc/modules; then
        for v in $($L vm list | cut -d' ' -f1); do $L vm stop $v --delete-area > /dev/null; done
    fi
    kh_kram_ready
    kh_check "KRAM ready" sh -c "$L kram status | grep -q ready" || return 1
    grep -q " $R/run " /proc/mounts || kh_check "trixie rootfs with QEMU 11" kh_mount_rootfs $R
}
vm_state() { $L vm list | sed -n "s/^$1 \([^ ]*\) .*/\1/p"; }
# boot_vm NAME: wait for its VM-READY; a VM that stopped on a KVM internal
# error before that, or printed nothing for 300 s (tinyvm is ready within
# seconds even on a loaded machine, a Linux VM within 66-131 s), is shown
# (diag) and started once more.
# The nested rig (KVM in the L1 host on the SVM that TCG emulates, serial
# ports over pipes of the outer QEMU) did both, once each: in CI a tinyvm
# stopped with EFER=0 and its code unreadable before printing anything; in
# session 4 SeaBIOS waited on a heartbeat port that carried no byte.
# Neither happened in 190 boots here, 160 of them with both host cores
# busy: rig faults, not ones of the upgrade. A retry is counted in a
# figure (tools/ktap-report.sh); a second failure fails the check. After
# the first boot nothing is retried: every later check is strict.
boot_vm() { # name serial-port
    # a Linux VM on the one-vCPU rig boots in 66-78 s, once in over 131 s
    # (after several kexecs, beside the tinyvm rig)
    local try t0 limit=300
    for try in 1 2; do
        t0=$(date +%s)
        # by the clock: `vm list` itself may take seconds (a QEMU that does
        # not answer is "unresponsive" after 5 s; it once hung CI's rig)
        while ! grep -q VM-READY "$(vm_log $1)" 2>/dev/null; do
            case $(vm_state $1) in internal-error|shutdown|guest-panicked) break;; esac
            [ $(($(date +%s) - t0)) -gt $limit ] && break; sleep 0.5
        done
        grep -q VM-READY "$(vm_log $1)" 2>/dev/null && return 0
        [ $try = 2 ] && return 1
        kh_log "$1 did not boot ($(vm_state $1), $(($(date +%s) - t0)) s): started again after a rig fault"
        diag $1
        # a QEMU that does not answer is killed
        timeout 30 $L vm stop $1 --delete-area > /dev/null ||
            { kill -9 "$(cat $R/run/liveup/$1.pid)"; sleep 1; $L vm stop $1 --delete-area > /dev/null; } || return 1
        rm -f "$(vm_log $1)" /host/$1.qemu.log
        start_vm $1 $2 || return 1
        limit=480
    done
}
memchecks() { local c; c=$(grep -c "VM-MEMCHECK $1 .* ok" "$(vm_log $1)" 2>/dev/null); echo "${c:-0}"; }
# On failure, show what the VMs (all, or the one named) and their QEMUs said.
diag() {
    $L vm list | sed 's/^/KH-LOG vm: /'
    for v in ${1:-$VMS}; do
        # where its vCPU is (for a stalled VM): registers and serial ports
        for c in "info registers" "info chardev" "info irq" "info pic"; do
            timeout 10 $L qmp $R/run/liveup/$v.qmp human-monitor-command "{\"command-line\": \"$c\"}" 2>&1 \
                | sed 's/\\r\\n/\n/g' | grep -E 'RIP|EFL|serial|hb|con|IRQ|irr|isr|imr|^"' | head -n 12 \
                | sed "s/^/KH-LOG $v $c: /"
        done
        tail -n 5 "$(vm_log $v)" 2>/dev/null | sed "s/^/KH-LOG $v console: /"
        # a KVM internal error: the error and the register dump
        tail -n 30 /host/$v.qemu.log 2>/dev/null | sed "s/^/KH-LOG $v qemu: /"
    done
}
# after_resume NAME: a fresh memory check passes after the VM came back
after_resume() {
    local before
    before=$(memchecks $1)
    _more_memchecks() { [ "$(memchecks $1)" -gt "$before" ]; }
    kh_wait 120 _more_memchecks $1 || return 1
    ! grep -q "VM-MEMCHECK $1 .* BAD" "$(vm_log $1)"
}
running() { $L vm list | grep -q "^$1 running"; }
# vm_tsc NAME: the TSC frequency (kHz) QEMU runs the VM's vCPUs at
vm_tsc() {
    local q=$R/run/liveup/$1.qmp p
    p=$($L qmp $q query-cpus-fast '{}' | sed -n 's/.*"qom-path":"\([^"]*\)".*/\1/p' | head -n1)
    echo $(( $($L qmp $q qom-get "{\"path\":\"$p\",\"property\":\"tsc-frequency\"}") / 1000 ))
}
# tsc_kept: this kernel took the VMs' TSC frequency from liveup
# (tsc_known_khz=, patches/0005) instead of calibrating one of its own
tsc_kept() {
    local k v
    k=$(dmesg | sed -n 's/.*TSC frequency \([0-9]*\) kHz from tsc_known_khz=.*/\1/p' | head -n1)
    [ -n "$k" ] || { echo "no tsc_known_khz= line in dmesg: $(dmesg | grep -i -m3 'tsc:' | tr '\n' '|')"; return 1; }
    for v in $VMS; do
        [ "$(vm_tsc $v)" = "$k" ] || { echo "$v runs at $(vm_tsc $v) kHz, the kernel at $k kHz"; return 1; }
    done
}
# kernel_tsc_khz: this kernel's tsc_khz as it printed it (a known frequency,
# else the refined calibration, else the first one)
kernel_tsc_khz() {
    dmesg | sed -n -e 's/.*TSC frequency \([0-9]*\) kHz from tsc_known_khz=.*/a \1/p' \
        -e 's/.*tsc: Refined TSC clocksource calibration: \([0-9]*\)\.\([0-9]\{3\}\) MHz.*/b \1\2/p' \
        -e 's/.*tsc: Detected \([0-9]*\)\.\([0-9]\{3\}\) MHz.*/c \1\2/p' | sort | head -n1 | cut -d' ' -f2
}
# The check each script makes once its VMs booted (the precondition of
# every guest-time figure here):
tsc_check() { kh_check "${1:+$1: }the VMs' TSC runs at this kernel's frequency (no KVM TSC catch-up)" tsc_no_catchup $2; }
# tsc_no_catchup: every VM's TSC runs within 250 ppm of this kernel's
# tsc_khz, KVM's tolerance: outside it, on a CPU without TSC scaling, KVM
# runs the vCPU in its catch-up mode, in which each stop and cont moved a
# Linux guest's monotonic clock forward by about the time since its previous
# cont (Documentation/upgrade.rst, "A guest clock that jumped at a resume")
tsc_no_catchup() { # [NAME...] (default: VMS)
    local k v t vs="$*"
    [ -n "$vs" ] || vs=$VMS
    k=$(kernel_tsc_khz)
    [ -n "$k" ] || { echo "no TSC frequency in dmesg"; return 1; }
    for v in $vs; do
        t=$(vm_tsc $v)
        [ -n "$t" ] && [ $(( (t - k) * 1000000 / k )) -le 250 ] && [ $(( (k - t) * 1000000 / k )) -le 250 ] ||
            { echo "$v runs its TSC at ${t:-?} kHz, this kernel at $k kHz (over 250 ppm apart)"; return 1; }
    done
}
# disk_ok NAME: a fresh read-back of every record the VM flushed to its disk
# passes after the VM came back, and none ever failed
diskchecks() { local c; c=$(grep -c "VM-DISKCHECK $1 .* ok" "$(vm_log $1)" 2>/dev/null); echo "${c:-0}"; }
disk_ok() {
    local before
    before=$(diskchecks $1)
    _more_diskchecks() { [ "$(diskchecks $1)" -gt "$before" ]; }
    kh_wait 120 _more_diskchecks $1 || { echo "no fresh disk check in 120 s"; return 1; }
    ! grep -E "VM-DISK(CHECK $1 .* BAD|ERR $1)" "$(vm_log $1)"
}
# net_ok NAME: 200 more frames went out and came back since the last call
# (or since `net_mark`), with at most 2 lost in between: the frame in flight
# when the VM stopped can be (its echo reaches a QEMU that is going away).
net_last() { grep "VM-NET $1 sent" "$(vm_log $1)" 2>/dev/null | tail -n1 | sed 's/.* sent \([0-9]*\) echoed \([0-9]*\) lost \([0-9]*\).*/\1 \2 \3/'; }
# (no count line yet, as right after a quick boot: nothing sent so far)
net_mark() { local c; c=$(net_last $1); echo "${c:-0 0 0}" > $KH_DIR/net.$1; }
net_ok() {
    local s0 e0 l0 s e l
    read -r s0 e0 l0 < $KH_DIR/net.$1 || { echo "no earlier count"; return 1; }
    # (sets the caller's s, e, l)
    _sent_200() {
        read -r s e l <<EOF2
$(net_last $1)
EOF2
        [ "${s:-0}" -ge $((s0 + 200)) ]
    }
    kh_wait 120 _sent_200 $1 || { echo "$1: $s0 -> ${s:-none} frames sent in 120 s"; return 1; }
    net_mark $1
    echo "KH-LOG $1 network: sent $((s - s0)), echoed $((e - e0)), lost $((l - l0)); peer: $(tail -n1 /host/$1.netpeer)"
    [ $((l - l0)) -le 2 ] && [ $((e - e0)) -ge $((s - s0 - 2)) ] && ! grep -q "VM-NETERR $1" "$(vm_log $1)"
}
all_memory_ok() { for v in $VMS; do after_resume $v || return 1; done; }
both_running() { for v in $VMS; do running $v || return 1; done; }
upgrade_now() { # inject-step (or empty); UPGRADE_KERNEL: the next kernel
    echo $((KH_STAGE + 1)) > "$KH_STAGEFILE"
    sync
    echo "KH-UPGRADE-START $KH_STAGE"
    $L upgrade --kernel ${UPGRADE_KERNEL:-/host/bzImage} --initrd /host/initrd.img
    echo "$KH_STAGE" > "$KH_STAGEFILE"
    kh_fail "upgrade $((KH_STAGE + 1)) kexecs" "liveup upgrade returned"
}

# The rig boots with tsc=reliable (tools/vm-run.sh): then every kernel,
# kexec'd ones included, must run on the TSC from its first seconds on.
tsc_throughout() {
    [ "$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)" = tsc ] &&
        ! dmesg | grep -q -E 'Switched to clocksource (hpet|acpi_pm)|tsc.*unstable'
}
if grep -q -w tsc=reliable /proc/cmdline; then
    kh_check "stage $KH_STAGE: the TSC is this kernel's clocksource from boot on (KVM's master clock)" tsc_throughout
fi
