#!/bin/sh
# libvirt in the rig (issue 21, first step): a domain defined and run by
# libvirt's QEMU driver from the trixie rootfs (tools/mkrootfs.sh libvirt)
# under systemd, RAM in a file under qemu.conf's memory_backing_dir
# (<memoryBacking><source type='file'/><access mode='shared'/>), and what
# a hot-upgrade through libvirt would meet, measured rather than read:
# where the RAM file is and when it goes, what `virsh save` writes with
# x-ignore-shared set, the hook's arguments, domain ids after a daemon
# restart. Not in `make check` yet (tools/check.sh leaves libvirt/ out):
#   tools/vm-run.sh -k <release> -o out/lv -t 900 -r "$(tools/mkrootfs.sh libvirt)" libvirt/domain
# with KH_L0_QEMU=trixie KH_TCG_THREAD=multi KH_RIG_SMP=2.
# Stages: 0 (busybox): qemu.conf, the hook, tinyvm in the rootfs; go on
# under systemd. 1 (systemd): the domain, its memory, save and restore.
. /host/lib/ktap.sh
. /host/lib/systemd.sh
D=lv1
V="virsh -c qemu:///system"
K=/var/lib/kh
L=/host/bin/liveup
console() { cat $K/$D.console 2>/dev/null; }
memchecks() { console | grep -c "VM-MEMCHECK $D .* ok"; }
more_memchecks() { [ "$(memchecks)" -gt "$1" ]; }
# domain_xml NAME: a tinyvm domain, RAM in a file under memory_backing_dir
domain_xml() {
    cat <<EOF
<domain type='kvm'>
  <name>$1</name>
  <memory unit='MiB'>32</memory>
  <memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>$K/tinyvm.elf</kernel>
    <cmdline>vmname=$1</cmdline>
  </os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <devices>
    <serial type='file'><source path='$K/$1.hb'/><target port='0'/></serial>
    <serial type='file'><source path='$K/$1.console'/><target port='1'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}
# x_ignore_shared NAME: the capability set through libvirt's monitor
# (libvirt marks the domain tainted: custom-monitor)
x_ignore_shared() {
    $V qemu-monitor-command $1 '{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"x-ignore-shared","state":true}]}}' > /tmp/lv-out 2>&1
}
# restore_xml NAME: the saved image's XML with -global
# migration.x-ignore-shared=on (the restoring QEMU must have it at start;
# libvirt marks the domain tainted: custom-argv)
restore_xml() {
    $V save-image-dumpxml $K/$1.save |
        sed -e "s|<domain type='kvm'>|<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>|" \
            -e "s|</devices>|</devices><qemu:commandline><qemu:arg value='-global'/><qemu:arg value='migration.x-ignore-shared=on'/></qemu:commandline>|" \
            > $K/$1.restore.xml
}


case "$KH_STAGE" in
0)
    kh_check "KRAM ready" kh_kram_ready
    mount /dev/vda /mnt || { kh_fail "rootfs mounted" "mount /dev/vda"; exit 0; }
    # (Debian's libvirt-daemon: the monolithic libvirtd, socket-activated)
    kh_check "libvirt's daemon and virsh in the rootfs" test -x /mnt/usr/sbin/libvirtd -a -x /mnt/usr/bin/virsh || { umount /mnt; exit 0; }
    mkdir -p /mnt$K
    cp /host/tinyvm.elf /mnt$K/
    # QEMU as root (files on the rig's filesystems), no security driver
    # (the rig kernel has no AppArmor profile for it)
    # A QEMU libvirt starts sees its own /dev (mount namespace) and may open
    # only the devices of cgroup_device_acl: the KRAM area nodes must be in
    # both, or QEMU spins in its open() loop on a dangling RAM path (seen
    # in out/s26-lv7: no kram in its maps, main thread running).
    acl=$(for i in $(seq 1 32); do printf '"/dev/kram-area/%s", ' $i; done)
    cat >> /mnt/etc/libvirt/qemu.conf <<EOF
user = "root"
group = "root"
security_driver = "none"
memory_backing_dir = "/var/lib/libvirt/qemu/ram"
namespaces = [ ]
cgroup_device_acl = [ "/dev/null", "/dev/full", "/dev/zero", "/dev/random", "/dev/urandom", "/dev/ptmx", "/dev/kvm", "/dev/userfaultfd", ${acl%, } ]
EOF
    # the qemu hook: logs each call and whether the RAM directory exists
    mkdir -p /mnt/etc/libvirt/hooks
    # At "start begin" (the domain's new RAM directory exists, QEMU not
    # started yet) it puts a kept RAM file back under the new path: what
    # a restore onto kept memory needs (the id in the path is new).
    cat > /mnt/etc/libvirt/hooks/qemu <<'EOF'
#!/bin/sh
kept=/var/lib/kh/$1.ram.kept area=/var/lib/kh/$1.area
if [ "$2 $3" = "start begin" ] && [ -f $area ]; then
    # the domain's RAM is KRAM area ID: its node in place of the file
    d=$(ls -d /var/lib/libvirt/qemu/ram/libvirt/qemu/*-$1 | head -n 1)
    ln -sf /dev/kram-area/$(cat $area) $d/pc.ram && echo "$(date +%s.%N) KRAM area $(cat $area) linked as $d/pc.ram" >> /var/lib/kh/hook.log
elif [ "$2 $3" = "start begin" ] && [ -f $kept ]; then
    d=$(ls -d /var/lib/libvirt/qemu/ram/libvirt/qemu/*-$1 | head -n 1)
    ln -f $kept $d/pc.ram && echo "$(date +%s.%N) kept RAM linked as $d/pc.ram" >> /var/lib/kh/hook.log
fi
echo "$(date +%s.%N) $* ram:$(ls -d /var/lib/libvirt/qemu/ram/libvirt/qemu/*-$1 /var/lib/libvirt/qemu/ram/*-$1 2>/dev/null | tr '\n' ' ')" >> /var/lib/kh/hook.log
EOF
    chmod +x /mnt/etc/libvirt/hooks/qemu
    kh_runner_under_systemd /mnt
    umount /mnt
    echo 1 > "$KH_STAGEFILE"
    touch "$KH_DIR/boot-systemd"
    ;;
1)
    kh_check "PID 1 is systemd" test "$(cat /proc/1/comm)" = systemd
    t0=$(date +%s%N)
    kh_check "virsh reaches libvirtd (socket-activated)" sh -c "$V version > /tmp/lv-version 2>&1"
    kh_log "virsh version ($(( ($(date +%s%N) - t0) / 1000000 )) ms): $(tr '\n' ' ' < /tmp/lv-version)"
    domain_xml $D > $K/$D.xml
    kh_check "virsh define" sh -c "$V define $K/$D.xml > /tmp/lv-out 2>&1" || cat /tmp/lv-out
    kh_check "virsh start" sh -c "$V start $D > /tmp/lv-out 2>&1" || { cat /tmp/lv-out; tail -n 20 /var/log/libvirt/qemu/$D.log; }
    kh_check "the domain boots and checks its memory" kh_wait 120 more_memchecks 0 || { console | tail -n 3; tail -n 20 /var/log/libvirt/qemu/$D.log; }
    id=$($V domid $D)
    ram=$(find /var/lib/libvirt/qemu/ram -type f | tr '\n' ' ')
    kh_log "domain $D id $id, RAM file(s): ${ram:-none}"
    kh_check "its RAM is a file under memory_backing_dir" test -n "$ram"
    ram_file=$(echo $ram | cut -d' ' -f1)
    pid=$(cat /run/libvirt/qemu/$D.pid)
    kh_log "QEMU: $(tr '\0' ' ' < /proc/$pid/cmdline | grep -o -e '-object {[^}]*memory-backend[^}]*}' -e '-object memory-backend[^ ]*' | head -n 2)"
    # x-ignore-shared through the monitor libvirt holds (taints the domain)
    kh_check "x-ignore-shared set through qemu-monitor-command" x_ignore_shared $D || cat /tmp/lv-out
    kh_log "taint: $($V dominfo $D 2>/dev/null | grep -i -e taint -e 'Security' | tr '\n' ' ') log: $(grep -i taint /var/log/libvirt/qemu/$D.log | tail -n 1)"
    # Kept: a second name for the RAM file's inode, so libvirt's removal
    # of the domain's RAM directory at save leaves the memory (on a KRAM
    # filesystem this would also outlive a kexec).
    kh_check "the RAM file kept under a second name" ln $ram_file $K/$D.ram.kept
    t0=$(date +%s%N)
    kh_check "virsh save" sh -c "$V save $D $K/$D.save > /tmp/lv-out 2>&1" || cat /tmp/lv-out
    t1=$(date +%s%N)
    kh_log "virsh save: $(( (t1 - t0) / 1000000 )) ms, image $(stat -c %s $K/$D.save 2>/dev/null) bytes for 32 MiB of RAM; RAM files after: $(find /var/lib/libvirt/qemu/ram -type f | tr '\n' ' ')"
    kh_log "hook calls so far: $(tr '\n' '|' < $K/hook.log)"
    n=$(memchecks)
    # A plain restore refuses the image ("Capability x-ignore-shared is
    # off, but received capability is on"): the new QEMU needs it at start,
    # which only the XML can say (<qemu:commandline>, another taint).
    kh_check "a plain restore of that image is refused" sh -c "! $V restore $K/$D.save > /tmp/lv-out 2>&1" ||
        kh_log "restore took it"
    kh_log "plain restore: $(grep -o 'Capability x-ignore-shared[^.]*' /var/log/libvirt/qemu/$D.log | tail -n 1)"
    restore_xml $D
    t0=$(date +%s%N)
    kh_check "virsh restore --xml with -global migration.x-ignore-shared=on" sh -c "$V restore $K/$D.save --xml $K/$D.restore.xml > /tmp/lv-out 2>&1" || { cat /tmp/lv-out; tail -n 5 /var/log/libvirt/qemu/$D.log; }
    t1=$(date +%s%N)
    kh_log "virsh restore: $(( (t1 - t0) / 1000000 )) ms, new id $($V domid $D), state $($V domstate $D), RAM file(s): $(find /var/lib/libvirt/qemu/ram -type f | tr '\n' ' ')"
    # The image has no RAM: the guest goes on only on the kept file.
    kh_check "the restored domain runs on its kept RAM, memory checks go on" kh_wait 60 more_memchecks "$n" ||
        kh_log "after restore: console: $(console | tail -n 2 | tr '\n' '|')"
    kh_check "  no memory check failed" sh -c "! grep -q 'VM-MEMCHECK $D .* BAD' $K/$D.console"
    kh_log "after restore: $(console | grep "VM-MEMCHECK $D" | tail -n 1); libvirt: $($V domstate $D) id $($V domid $D)"
    kh_log "hook calls: $(tr '\n' '|' < $K/hook.log)"
    $V destroy $D > /dev/null 2>&1
    systemctl restart libvirtd
    $V start $D > /dev/null 2>&1
    kh_log "after a daemon restart, the next start's id: $($V domid $D)"
    $V destroy $D > /dev/null 2>&1
    $V undefine $D > /dev/null 2>&1

    # The same through a kexec: lv2's RAM is KRAM area vm-lv2 (the hook
    # puts its node where libvirt's RAM file would be), saved with
    # x-ignore-shared, then this kernel kexecs into the next one.
    D=lv2
    $L kram create vm-$D --size 32M > /dev/null
    id=$($L kram list | awk -v n=vm-$D '$2 == n { print $1 }')
    kh_check "KRAM area vm-$D for $D's RAM (id $id)" test -n "$id"
    echo "$id" > $K/$D.area
    domain_xml $D > $K/$D.xml
    $V define $K/$D.xml > /dev/null
    if ! kh_check "$D started with its RAM in KRAM" sh -c "timeout 90 $V start $D > /tmp/lv-out 2>&1"; then
        cat /tmp/lv-out; tail -n 8 /var/log/libvirt/qemu/$D.log
        ls -la /var/lib/libvirt/qemu/ram/libvirt/qemu/*-$D/
        for q in $(pidof qemu-system-x86_64); do echo "QEMU $q: $(tr '\0' ' ' < /proc/$q/cmdline | cut -c1-300)"; cat /proc/$q/stack; grep kram /proc/$q/maps; for t in /proc/$q/task/*; do echo "task $t: $(cat $t/wchan)"; done; done
        dmesg | tail -n 20
        exit 0
    fi
    kh_check "$D boots and checks its memory" kh_wait 120 more_memchecks 0 || console | tail -n 3
    pid=$(cat /run/libvirt/qemu/$D.pid)
    kh_check "  its QEMU maps /dev/kram-area/$id" grep -q " /dev/kram-area/$id\$" /proc/$pid/maps
    kh_check "  x-ignore-shared set" x_ignore_shared $D || cat /tmp/lv-out
    memchecks > $K/$D.before
    kh_check "$D saved by libvirt" sh -c "$V save $D $K/$D.save > /tmp/lv-out 2>&1" || cat /tmp/lv-out
    kh_log "$D: image $(stat -c %s $K/$D.save) bytes, $(cat $K/$D.before) memory checks before"
    restore_xml $D
    sync
    kh_kexec_next ""
    ;;
2)
    # the next kernel (busybox init): KRAM adopted with vm-lv2 in it
    D=lv2
    kh_kram_load
    kh_check "KRAM adopted, area vm-$D kept" sh -c "$L kram list | grep -q ' vm-$D '"
    echo 3 > "$KH_STAGEFILE"
    touch "$KH_DIR/boot-systemd"
    ;;
3)
    D=lv2
    kh_check "PID 1 is systemd (the kexec'd kernel)" test "$(cat /proc/1/comm)" = systemd
    kh_check "$D: libvirt knows it, shut off (saved)" sh -c "$V domstate $D | grep -q 'shut off'"
    t0=$(date +%s%N)
    kh_check "virsh restore --xml of $D onto its KRAM area" sh -c "$V restore $K/$D.save --xml $K/$D.restore.xml > /tmp/lv-out 2>&1" || { cat /tmp/lv-out; tail -n 5 /var/log/libvirt/qemu/$D.log; }
    kh_log "virsh restore after the kexec: $(( ($(date +%s%N) - t0) / 1000000 )) ms (libvirtd's first start included), id $($V domid $D)"
    kh_check "$D runs on its RAM kept in KRAM through the kexec, memory checks go on" kh_wait 60 more_memchecks "$(cat $K/$D.before)" ||
        kh_log "console: $(console | tail -n 2 | tr '\n' '|')"
    kh_check "  no memory check failed" sh -c "! grep -q 'VM-MEMCHECK $D .* BAD' $K/$D.console"
    kh_check "  libvirt manages it: running" sh -c "$V domstate $D | grep -q running"
    kh_log "hook calls: $(tail -n 4 $K/hook.log | tr '\n' '|')"
    kh_check "virsh destroy ends it" $V destroy $D
    $V undefine $D > /dev/null 2>&1
    ;;
esac

