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
console() { cat $K/$D.console 2>/dev/null; }
memchecks() { console | grep -c "VM-MEMCHECK $D .* ok"; }
more_memchecks() { [ "$(memchecks)" -gt "$1" ]; }

case "$KH_STAGE" in
0)
    mount /dev/vda /mnt || { kh_fail "rootfs mounted" "mount /dev/vda"; exit 0; }
    kh_check "libvirt's QEMU driver in the rootfs" test -x /mnt/usr/sbin/virtqemud -a -x /mnt/usr/bin/virsh || { umount /mnt; exit 0; }
    mkdir -p /mnt$K
    cp /host/tinyvm.elf /mnt$K/
    # QEMU as root (files on the rig's filesystems), no security driver
    # (the rig kernel has no AppArmor profile for it)
    cat >> /mnt/etc/libvirt/qemu.conf <<EOF
user = "root"
group = "root"
security_driver = "none"
memory_backing_dir = "/var/lib/libvirt/qemu/ram"
EOF
    # the qemu hook: logs each call and whether the RAM directory exists
    mkdir -p /mnt/etc/libvirt/hooks
    cat > /mnt/etc/libvirt/hooks/qemu <<'EOF'
#!/bin/sh
echo "$(date +%s.%N) $* ram:$(ls -d /var/lib/libvirt/qemu/ram/*-$1 2>/dev/null | tr '\n' ' ')" >> /var/lib/kh/hook.log
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
    kh_check "virsh reaches virtqemud (socket-activated)" sh -c "$V version > /tmp/lv-version 2>&1"
    kh_log "virsh version ($(( ($(date +%s%N) - t0) / 1000000 )) ms): $(tr '\n' ' ' < /tmp/lv-version)"
    cat > $K/$D.xml <<EOF
<domain type='kvm'>
  <name>$D</name>
  <memory unit='MiB'>32</memory>
  <memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>$K/tinyvm.elf</kernel>
    <cmdline>vmname=$D</cmdline>
  </os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <devices>
    <serial type='file'><source path='$K/$D.hb'/><target port='0'/></serial>
    <serial type='file'><source path='$K/$D.console'/><target port='1'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
    kh_check "virsh define" sh -c "$V define $K/$D.xml > /tmp/lv-out 2>&1" || cat /tmp/lv-out
    kh_check "virsh start" sh -c "$V start $D > /tmp/lv-out 2>&1" || { cat /tmp/lv-out; tail -n 20 /var/log/libvirt/qemu/$D.log; }
    kh_check "the domain boots and checks its memory" kh_wait 120 more_memchecks 0 || { console | tail -n 3; tail -n 20 /var/log/libvirt/qemu/$D.log; }
    id=$($V domid $D)
    ram=$(ls /var/lib/libvirt/qemu/ram/*/* 2>/dev/null | tr '\n' ' ')
    kh_log "domain $D id $id, RAM file(s): ${ram:-none}"
    kh_check "its RAM is a file under memory_backing_dir" test -n "$ram"
    pid=$(cat /run/libvirt/qemu/$D.pid)
    kh_log "QEMU: $(tr '\0' ' ' < /proc/$pid/cmdline | grep -o -e '-object {[^}]*memory-backend[^}]*}' -e '-object memory-backend[^ ]*' | head -n 2)"
    # x-ignore-shared through the monitor libvirt holds (taints the domain)
    kh_check "x-ignore-shared set through qemu-monitor-command" sh -c \
        "$V qemu-monitor-command $D '{\"execute\":\"migrate-set-capabilities\",\"arguments\":{\"capabilities\":[{\"capability\":\"x-ignore-shared\",\"state\":true}]}}' > /tmp/lv-out 2>&1" || cat /tmp/lv-out
    kh_log "taint: $($V dominfo $D 2>/dev/null | grep -i -e taint -e 'Security' | tr '\n' ' ') log: $(grep -i taint /var/log/libvirt/qemu/$D.log | tail -n 1)"
    t0=$(date +%s%N)
    kh_check "virsh save" sh -c "$V save $D $K/$D.save > /tmp/lv-out 2>&1" || cat /tmp/lv-out
    t1=$(date +%s%N)
    kh_log "virsh save: $(( (t1 - t0) / 1000000 )) ms, image $(stat -c %s $K/$D.save 2>/dev/null) bytes for 32 MiB of RAM; RAM files after: $(ls /var/lib/libvirt/qemu/ram/*/* 2>/dev/null | tr '\n' ' ')"
    kh_log "hook calls so far: $(tr '\n' '|' < $K/hook.log)"
    n=$(memchecks)
    t0=$(date +%s%N)
    kh_check "virsh restore" sh -c "$V restore $K/$D.save > /tmp/lv-out 2>&1" || { cat /tmp/lv-out; tail -n 20 /var/log/libvirt/qemu/$D.log; }
    t1=$(date +%s%N)
    kh_log "virsh restore: $(( (t1 - t0) / 1000000 )) ms, new id $($V domid $D), RAM file(s): $(ls /var/lib/libvirt/qemu/ram/*/* 2>/dev/null | tr '\n' ' ')"
    # The RAM file went with the saved QEMU and the image has no RAM, so
    # the restored guest finds zeroed memory: what kramfs's keep must fix.
    if kh_wait 60 more_memchecks "$n"; then
        kh_log "after restore: $(console | grep "VM-MEMCHECK $D" | tail -n 1)"
    else
        kh_log "after restore: no new memory check; console: $(console | tail -n 2 | tr '\n' '|')"
    fi
    kh_log "hook calls: $(tr '\n' '|' < $K/hook.log)"
    $V destroy $D > /dev/null 2>&1
    systemctl restart virtqemud
    $V start $D > /dev/null 2>&1
    kh_log "after a daemon restart, the next start's id: $($V domid $D)"
    $V destroy $D > /dev/null 2>&1
    $V undefine $D > /dev/null 2>&1
    ;;
esac
