#!/bin/sh
# A host kernel upgrade under a libvirt-defined domain, libvirt keeping
# it (issue 21): liveup's qemu hook puts the domain's RAM in a KRAM area
# (memoryBacking file/shared, nothing else in the domain XML), `liveup
# upgrade` saves it through libvirt (managed save, device state only) and
# kexecs, `liveup libvirt restore` has libvirt restore it in the new
# kernel onto its kept RAM; then libvirt manages it as before (a plain
# save and restore, domstats, the guest's clock set and its shutdown
# through its agent). The domain runs a Linux guest.
#   KH_L0_QEMU=trixie KH_TCG_THREAD=multi KH_RIG_SMP=2 \
#     tools/vm-run.sh -k <release> -o out/lvu -t 1800 -v <release>/bzImage -r "$(tools/mkrootfs.sh libvirt)" libvirt/upgrade
# Stages: 0 (busybox): qemu.conf, the hook, tinyvm in the rootfs. 1
# (systemd): the domains, the refusals, a rehearsal, the upgrade. 2
# (busybox, the new kernel): KRAM adopted. 3 (systemd): the restore and
# libvirt's view afterwards.
. /host/lib/ktap.sh
. /host/lib/systemd.sh
D=lv1
V="virsh -c qemu:///system"
K=/var/lib/kh
L=/host/bin/liveup
console() { cat $K/$1.console 2>/dev/null; }
memchecks() { console $1 | grep -c "VM-MEMCHECK $1 .* ok"; }
more_memchecks() { [ "$(memchecks $1)" -gt "$2" ]; }
no_bad() { ! grep -q "VM-MEMCHECK $1 .* BAD" $K/$1.console; }
# mem_go_on NAME N: more than N memory checks within 60 s, none failed
mem_go_on() { kh_wait 60 more_memchecks $1 $2 && no_bad $1; }
uuid() { $V domuuid $1 2>/dev/null | head -n 1; }
area_of() { echo "lv-$(uuid $1 | tr -d - | cut -c1-28)"; }
has_area() { $L kram list | grep -q " $1 "; }
# domain_xml NAME MEMORY-BACKING linux|tiny: a domain of 128 MiB running
# the rig's Linux test VM (tools/guest/vm-init and hb.c: 32 MiB of
# self-verifying pages rewritten all the time, every page checked every
# 100 beats), or tinyvm (32 MiB, all of it checked)
domain_xml() {
    if [ "$3" = linux ]; then
        mem=128
        os="<kernel>$K/vm-bzImage</kernel><initrd>$K/vm-initrd.img</initrd><cmdline>console=ttyS1 quiet panic=-1 no_timer_check vmname=$1</cmdline>"
        # the guest agent's port (hb.c answers libvirt's sync, time and
        # shutdown commands)
        agent="<channel type='unix'><source mode='bind'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
    else
        mem=32 agent=
        os="<kernel>$K/tinyvm.elf</kernel><cmdline>vmname=$1</cmdline>"
    fi
    cat <<EOF
<domain type='kvm'>
  <name>$1</name>
  <memory unit='MiB'>$mem</memory>
  $2
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    $os
  </os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <devices>
    <serial type='file'><source path='$K/$1.hb'/><target port='0'/></serial>
    <serial type='file'><source path='$K/$1.console'/><target port='1'/></serial>
    $agent
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}
KEPT="<memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>"
define_start() { # name memoryBacking linux|tiny
    domain_xml $1 "$2" $3 > $K/$1.xml
    $V define $K/$1.xml > /tmp/lv-out 2>&1 && timeout 120 $V start $1 >> /tmp/lv-out 2>&1 ||
        { cat /tmp/lv-out; tail -n 5 /var/log/libvirt/qemu/$1.log; return 1; }
}
caps_off() { # name: x-ignore-shared is off in its QEMU
    $V qemu-monitor-command $1 '{"execute":"query-migrate-capabilities"}' | tr -d ' \n' |
        grep -q '"state":false,"capability":"x-ignore-shared"'
}

case "$KH_STAGE" in
0)
    kh_check "KRAM ready" kh_kram_ready
    mount /dev/vda /mnt || { kh_fail "rootfs mounted" "mount /dev/vda"; exit 0; }
    kh_check "libvirt's daemon and virsh in the rootfs" test -x /mnt/usr/sbin/libvirtd -a -x /mnt/usr/bin/virsh || { umount /mnt; exit 0; }
    mkdir -p /mnt$K
    cp /host/tinyvm.elf /host/vm-bzImage /host/vm-initrd.img /mnt$K/
    # As Documentation/upgrade.rst asks of a libvirt host: the KRAM area
    # nodes in QEMU's view (no private /dev, the device cgroup lets them
    # through); the rig also runs QEMU as root without a security driver.
    acl=$(for i in $(seq 1 32); do printf '"/dev/kram-area/%s", ' $i; done)
    cat >> /mnt/etc/libvirt/qemu.conf <<EOF
user = "root"
group = "root"
security_driver = "none"
namespaces = [ ]
cgroup_device_acl = [ "/dev/null", "/dev/full", "/dev/zero", "/dev/random", "/dev/urandom", "/dev/ptmx", "/dev/kvm", "/dev/userfaultfd", ${acl%, } ]
EOF
    mkdir -p /mnt/etc/libvirt/hooks/qemu.d
    printf '#!/bin/sh\nexec /host/bin/liveup libvirt hook "$@"\n' > /mnt/etc/libvirt/hooks/qemu.d/liveup
    chmod +x /mnt/etc/libvirt/hooks/qemu.d/liveup
    kh_runner_under_systemd /mnt
    umount /mnt
    echo 1 > "$KH_STAGEFILE"
    touch "$KH_DIR/boot-systemd"
    ;;
1)
    kh_check "PID 1 is systemd" test "$(cat /proc/1/comm)" = systemd
    kh_check "$D (a Linux guest) defined and started (memoryBacking file, shared)" define_start $D "$KEPT" linux || exit 0
    kh_check "$D boots and checks its memory" kh_wait 300 more_memchecks $D 0 || { console $D | tail -n 3; exit 0; }
    a=$(area_of $D)
    kh_check "  the hook gave its RAM KRAM area $a" has_area $a
    pid=$(cat /run/libvirt/qemu/$D.pid)
    kh_check "  its QEMU maps that area's node" sh -c "grep -q ' /dev/kram-area/' /proc/$pid/maps"
    kh_check "liveup libvirt check: $D keepable" sh -c "$L libvirt check | grep -qx '$D keepable area=$a'"
    # beside it, a VM liveup launched (tinyvm): one upgrade for both
    kh_check "u1 (tinyvm) started by liveup vm start beside it" $L vm start --name u1 --mem 32M --root / -- \
        -machine q35,accel=kvm -cpu qemu64 -smp 1 -nodefaults -display none -kernel $K/tinyvm.elf -append vmname=u1 \
        -chardev file,id=hb,path=$K/u1.hb -serial chardev:hb -chardev file,id=con,path=$K/u1.console,append=on -serial chardev:con
    kh_check "u1 boots and checks its memory" kh_wait 120 more_memchecks u1 0
    # a domain whose RAM is libvirt's own (anonymous) memory: refused, by
    # name and reason, before anything is paused
    kh_check "lv2 (tinyvm) started without memoryBacking" define_start lv2 "" tiny
    kh_check "  liveup libvirt check refuses it" sh -c "! $L libvirt check > /tmp/lv-out 2>&1 && grep -q 'libvirt domain lv2: its RAM is not in a shared file' /tmp/lv-out" || cat /tmp/lv-out
    kh_check "  liveup upgrade refuses it (exit 3), nothing paused" sh -c "$L upgrade --kernel /host/bzImage --initrd /host/initrd.img > /tmp/lv-out 2>&1; test \$? = 3 && grep -q 'lv2: its RAM is not in a shared file' /tmp/lv-out" || cat /tmp/lv-out
    kh_check "  $D still running" sh -c "$V domstate $D | grep -qx running"
    $V destroy lv2 > /dev/null 2>&1; $V undefine lv2 > /dev/null 2>&1
    # the rehearsal: saved through libvirt, restored in this kernel
    n=$(memchecks $D)
    kh_check "liveup upgrade --no-exec (a rehearsal)" sh -c "$L upgrade --no-exec --kernel /host/bzImage --initrd /host/initrd.img > /tmp/lv-out 2>&1" || cat /tmp/lv-out
    kh_check "  $D running again, no managed save left" sh -c "$V domstate $D | grep -qx running && ! $V dominfo $D | grep -q '^Managed save: *yes'" ||
        { $V dominfo $D; cat /tmp/lv-out; }
    kh_check "  its memory checks go on, none failed" mem_go_on $D $n || console $D | tail -n 2
    kh_check "  x-ignore-shared off again" caps_off $D
    kh_check "  no record left" sh -c "! ls /var/lib/liveup/libvirt/*.json 2>/dev/null | grep -q ."
    kh_check "  u1 running, its memory checks go on" sh -c "$L vm list | grep -q '^u1 running'" && mem_go_on u1 "$(memchecks u1)"
    memchecks $D > $K/$D.before
    memchecks u1 > $K/u1.before
    echo 2 > "$KH_STAGEFILE"
    sync
    echo "KH-UPGRADE-START 1"
    $L upgrade --kernel /host/bzImage --initrd /host/initrd.img
    echo 1 > "$KH_STAGEFILE"
    kh_fail "liveup upgrade kexecs" "liveup upgrade returned"
    ;;
2)
    # the next kernel (busybox init): KRAM adopted with the domain's area
    kh_kram_load
    kh_check "KRAM adopted, an lv- area kept" sh -c "$L kram list | grep -q ' lv-'"
    echo 3 > "$KH_STAGEFILE"
    touch "$KH_DIR/boot-systemd"
    ;;
3)
    kh_check "PID 1 is systemd (the kexec'd kernel)" test "$(cat /proc/1/comm)" = systemd
    kh_check "$D: libvirt knows it as saved (shut off, managed save)" sh -c "$V domstate $D | grep -qx 'shut off' && $V dominfo $D | grep -q '^Managed save: *yes'"
    kh_check "liveup restore brings u1 back" sh -c "$L restore > /tmp/lv-out 2>&1" || cat /tmp/lv-out
    sed 's/^/KH-LOG restore: /' /tmp/lv-out
    du=$(sed -n 's/.*downtime (first stop to last resume) *\([0-9.]*\) ms.*/\1/p' /tmp/lv-out)
    kh_check "  u1's memory checks go on from before the upgrade, none failed" mem_go_on u1 "$(cat $K/u1.before)"
    kh_check "liveup libvirt restore" sh -c "$L libvirt restore > /tmp/lv-restore 2>&1" || cat /tmp/lv-restore
    sed 's/^/KH-LOG restore: /' /tmp/lv-restore
    d=$(sed -n "s/.*domain $D: running again, downtime \([0-9.]*\) ms.*/\1/p" /tmp/lv-restore)
    kh_check "  it reports $D's downtime" test -n "$d"
    kh_check "  it set the guest's clock through its agent" sh -c "grep -q 'guest clock $D: set through its agent' /tmp/lv-restore && grep -q 'VM-CLOCK-SET $D' $K/$D.console"
    echo "KH-FIGURE upgrade downtime under systemd, one upgrade: liveup's VM u1 ${du:-none} ms, libvirt domain $D ${d:-none} ms ($(sed -n "s/.*domain $D: running again, downtime [0-9.]* ms (\(.*\))/\1/p" /tmp/lv-restore); both include the rig's busybox stage and systemd's boot)"
    kh_check "  $D running" sh -c "$V domstate $D | grep -qx running"
    kh_check "  its memory checks go on from before the upgrade, none failed" mem_go_on $D "$(cat $K/$D.before)" || console $D | tail -n 2
    kh_check "  no managed save left, no record left" sh -c "! $V dominfo $D | grep -q '^Managed save: *yes' && ! ls /var/lib/liveup/libvirt/*.json 2>/dev/null | grep -q ."
    kh_check "  x-ignore-shared off again" caps_off $D
    kh_check "  virsh domstats answers" sh -c "$V domstats $D | grep -q 'state.state=1'"
    # libvirt manages it as any domain: a plain save (RAM in the image) and
    # restore; the hook takes liveup's -global out of that restore
    n=$(memchecks $D)
    kh_check "a plain virsh save of $D" sh -c "$V save $D $K/plain.save > /tmp/lv-out 2>&1" || cat /tmp/lv-out
    kh_log "plain save image: $(stat -c %s $K/plain.save) bytes"
    kh_check "  the hook freed its area" sh -c "! $L kram list | grep -q ' lv-'"
    kh_check "  and a plain virsh restore of it" sh -c "$V restore $K/plain.save > /tmp/lv-out 2>&1" || { cat /tmp/lv-out; tail -n 5 /var/log/libvirt/qemu/$D.log; }
    kh_check "  $D's memory checks go on, none failed" mem_go_on $D $n || console $D | tail -n 2
    kh_check "virsh shutdown --mode agent: the guest powers off" sh -c "$V shutdown $D --mode agent > /tmp/lv-out 2>&1" || cat /tmp/lv-out
    kh_check "  libvirt sees it shut off" kh_wait 60 sh -c "$V domstate $D | grep -qx 'shut off'" || $V destroy $D
    kh_check "  the guest shut itself down, the hook freed its area" sh -c "grep -q 'VM-SHUTDOWN $D' $K/$D.console && ! $L kram list | grep -q ' lv-'"
    # A record with no area behind it (a cold reboot after liveup saved):
    # the hook refuses the start instead of running the guest on new memory.
    u=$(uuid $D)
    mkdir -p /var/lib/liveup/libvirt
    printf '{"name":"%s","uuid":"%s","area":"%s","tsc_hz":1.0,"t_stop":0,"saved":true}' $D $u "$(area_of $D)" > /var/lib/liveup/libvirt/$u.json
    kh_check "a start whose kept RAM is gone is refused by the hook" sh -c "! $V start $D > /tmp/lv-out 2>&1 && grep -q 'which this boot does not have' /tmp/lv-out" || cat /tmp/lv-out
    rm -f /var/lib/liveup/libvirt/$u.json
    $V undefine $D > /dev/null 2>&1
    $L vm stop u1 --delete-area > /dev/null 2>&1
    ;;
esac
