#!/bin/sh
# A host kernel upgrade under a libvirt-defined domain, libvirt keeping
# it (issue 21): liveup's qemu hook puts the domain's RAM in a KRAM area
# (memoryBacking file/shared, nothing else in the domain XML), `liveup
# upgrade` saves it through libvirt (managed save, device state only) and
# kexecs, `liveup libvirt restore` has libvirt restore it in the new
# kernel onto its kept RAM; then libvirt manages it as before (domstats,
# virsh console, a live migration to another libvirt daemon and back, a
# plain save and restore, the guest's clock set and its shutdown through
# its agent). The domain runs a Linux guest; QEMU runs as Debian's
# libvirt-qemu.
#   KH_L0_QEMU=trixie KH_TCG_THREAD=multi KH_RIG_SMP=2 \
#     tools/vm-run.sh -k <release> -o out/lvu -t 1800 -v <release>/bzImage -r "$(tools/mkrootfs.sh libvirt)" libvirt/upgrade
# Stages: 0 (busybox): qemu.conf, the hook, tinyvm in the rootfs. 1
# (systemd): the domains, the refusals, a rehearsal, a failed kexec rolled
# back, the upgrade. 2
# (busybox, the new kernel): KRAM adopted. 3 (systemd): the restore and
# libvirt's view afterwards.
. /host/lib/ktap.sh
. /host/lib/systemd.sh
D=lv1
V="virsh -c qemu:///system"
K=/var/lib/kh
L=/host/bin/liveup
U1_HMP=4444 # u1's QEMU monitor (u1_hmp)
console() { cat $K/$1.console 2>/dev/null; }
memchecks() { console $1 | grep -c "VM-MEMCHECK $1 .* ok"; }
more_memchecks() { [ "$(memchecks $1)" -gt "$2" ]; }
no_bad() { ! grep -q "VM-MEMCHECK $1 .* BAD" $K/$1.console; }
# no_restart NAME: the guest never started over: its memory checks carry its
# beat count (hb.c, tinyvm.c), which a reboot restarts, so their counts
# only grow (session 31: a restored lv1 booted afresh, and its new boot's
# checks alone had satisfied mem_go_on)
no_restart() { console $1 | sed -n "s/.*VM-MEMCHECK $1 \([0-9]*\) .*/\1/p" | awk 'p != "" && $1 + 0 < p + 0 { print "# " n ": check " $1 " after " p " (the guest started over)"; exit 1 } { p = $1 }' n=$1; }
# mem_go_on NAME N [URI]: more than N memory checks within 60 s, none
# failed, and the guest never started over.
# The console files are appended to across restarts and migrations, so N
# is counted once the event is over: a check past N ran after it.
mem_go_on() { kh_wait 60 more_memchecks $1 $2 && no_bad $1 && no_restart $1 || { stalled $1 "${3:-qemu:///system}"; return 1; }; }
# u1_hmp COMMAND: u1's QEMU's human monitor (-monitor tcp:...:$U1_HMP):
# busybox nc has no unix sockets, and -daemonize sent QEMU's own report of
# an internal error to /dev/null
u1_hmp() { { echo "$1"; sleep 2; } | timeout 5 nc 127.0.0.1 $U1_HMP 2>&1 | tr -d '\r'; }
u1_running() { $L vm list | grep -q '^u1 running'; }
u1_hmp_answers() { u1_hmp 'info status' | grep -q 'VM status: running'; }
# liveup's VM u1 running, more memory checks from now within 60 s, none failed
u1_goes_on() { u1_running || { stalled u1; return 1; }; mem_go_on u1 "$(memchecks u1)"; }
# What a domain that made no progress looks like (issue 21's stalls):
# libvirt's state and reason, QEMU's, the lifecycle and QMP events since
# the stage began, the vCPU, QEMU's log, the rig's load
stalled() { # NAME URI
    if [ "$1" = u1 ]; then # liveup's VM, not libvirt's: its QMP status through liveup
        echo "# stalled u1: $(date +%T) $($L vm list 2>&1 | grep '^u1 ')"
        u1_hmp 'info registers' | grep -E 'RAX|RIP|CR0|EFER|^CS|^SS' | sed 's/^/#   /'
        console u1 | tail -n 3 | sed 's/^/#   /'
        return 0
    fi
    echo "# stalled $1: $(date +%T) domstate: $(virsh -c "$2" domstate $1 --reason 2>&1)"
    virsh -c "$2" qemu-monitor-command $1 --hmp 'info status' 2>&1 | sed 's/^/#   /'
    virsh -c "$2" qemu-monitor-command $1 --hmp 'info registers' 2>&1 | grep -E 'RAX|RIP|CR0|EFER|^CS|^SS' | sed 's/^/#   /'
    virsh -c "$2" qemu-monitor-command $1 '{"execute":"query-stats","arguments":{"target":"vcpu","providers":[{"provider":"kvm","names":["exits","halt_exits","irq_injections"]}]}}' 2>&1 | tr -d ' \n' | head -c 600 | sed 's/^/#   /'; echo
    sed 's/^/#   event: /' /tmp/lv-ev /tmp/lv-qmpev 2>/dev/null | tail -n 30
    # the second daemon's logs are in its own mount namespace
    log=/var/log/libvirt/qemu/$1.log
    [ "$2" = "$LV2" ] && log=/proc/$(cat /run/lv2/libvirtd.pid)/root$log
    grep -iE 'internal error|suberror|extra data|emulation failure|kvm run failed|entry failed|hardware error' $log | tail -n 8 | sed 's/^/#   log: /'
    tail -n 3 $log | sed 's/^/#   log: /'
    echo "#   load: $(cat /proc/loadavg); $(top -bn1 | sed -n 3p)"
}
# lifecycle and QMP events of every domain, from here to the stage's end
watch_events() {
    $V event --all --loop --timestamp > /tmp/lv-ev 2>&1 &
    $V qemu-monitor-event --loop --timestamp > /tmp/lv-qmpev 2>&1 &
}
unsaved() { ! $V dominfo $1 | grep -q '^Managed save: *yes'; }
no_record() { ! ls /var/lib/liveup/libvirt/*.json 2>/dev/null | grep -q .; }
running_unsaved() { $V domstate $1 | grep -qx running && unsaved $1; }
back_here() { running_unsaved $1 && no_record; }
unsaved_no_record() { unsaved $1 && no_record; }
uuid() { $V domuuid $1 2>/dev/null | head -n 1; }
area_of() { echo "lv-$(uuid $1 | tr -d - | cut -c1-28)"; }
has_area() { $L kram list | grep -q " $1 "; }
# domain_xml NAME MEMORY-BACKING linux|tiny: a domain of 128 MiB running
# the rig's Linux test VM (tools/guest/vm-init and hb.c: 32 MiB of
# self-verifying pages rewritten all the time, every page checked every
# 100 beats), or tinyvm (32 MiB, all of it checked). ACPI on, as tools
# that write domains set it (without it libvirt gives QEMU acpi=off and the
# guest cannot power itself off: "Power off not available")
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
  <features><acpi/><apic/></features>
  <clock offset='utc'><timer name='rtc' tickpolicy='catchup'/><timer name='pit' tickpolicy='delay'/><timer name='hpet' present='no'/></clock>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    $os
  </os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <devices>
    <serial type='pty'><target port='0'/></serial>
    <serial type='file'><source path='$K/$1.console' append='on'/><target port='1'/></serial>
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
# virsh console NAME shows its heartbeats (serial port 0, a pty): NAME's
# console for 20 s through script(1), which gives virsh the terminal it wants
console_shows_beats() {
    rm -f /tmp/lv-con
    timeout 20 script -qfec "$V console $1 --force" /tmp/lv-con < /dev/null > /dev/null 2>&1
    grep -q "^HB $1 " /tmp/lv-con
}
# A second libvirt daemon on this host stands in for another host: its own
# run, state, log and config directories (a mount namespace), its own
# socket (/run/lv2) and host UUID, liveup's hook, and no KRAM in its view
# (a socket where /dev/kram is: the hook then leaves RAM in libvirt's
# file). With KRAM the hook there would give the incoming domain the area
# of its UUID, which on one host is the source's own area.
LV2="qemu+unix:///system?socket=/run/lv2/libvirt-sock"
LV1="qemu+unix:///system?socket=/run/libvirt/libvirt-sock"
lv2_up() {
    mkdir -p /run/lv2 /tmp/lv2-etc /tmp/lv2-cache
    cp -a /etc/libvirt/. /tmp/lv2-etc/
    cp -a /var/cache/libvirt/. /tmp/lv2-cache/
    rm -rf /tmp/lv2-etc/qemu/*.xml /tmp/lv2-etc/qemu/autostart /tmp/lv2-etc/qemu/networks/autostart
    printf 'unix_sock_dir = "/run/lv2"\nhost_uuid = "0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5"\n' >> /tmp/lv2-etc/libvirtd.conf
    echo 'stdio_handler = "file"' >> /tmp/lv2-etc/qemu.conf
    perl -MSocket -e 'socket(S, PF_UNIX, SOCK_STREAM, 0) or die $!; bind(S, pack_sockaddr_un("/run/lv2/no-kram")) or die $!' || return 1
    unshare -m --propagation private sh -c '
        for d in /run/libvirt /var/lib/libvirt /var/log/libvirt; do mount -t tmpfs lv2 $d || exit 1; done
        mkdir -p /var/lib/libvirt/qemu/ram /var/lib/libvirt/qemu/channel/target &&
        mount --bind /tmp/lv2-cache /var/cache/libvirt && mount --bind /tmp/lv2-etc /etc/libvirt &&
        mount --bind /run/lv2/no-kram /dev/kram || exit 1
        exec /usr/sbin/libvirtd --pid-file /run/lv2/libvirtd.pid' > /tmp/lv2.log 2>&1 &
    kh_wait 60 sh -c "virsh -c '$LV2' list > /dev/null 2>&1" || return 1
    # systemd-machined names a domain's machine qemu-ID-NAME, and both
    # daemons count ids from 1: two throwaway domains there keep the ids
    # apart (there lv1 becomes 3; back here it becomes 2)
    domain_xml lvx "" tiny > /tmp/lvx.xml
    for i in 1 2; do
        virsh -c "$LV2" create /tmp/lvx.xml > /dev/null && virsh -c "$LV2" destroy lvx > /dev/null || return 1
    done
}
lv2_down() {
    kill "$(cat /run/lv2/libvirtd.pid 2>/dev/null)" 2>/dev/null
}
# /dev/kvm as udev leaves it on a Debian host (root:kvm 0660): the rig's
# nodes are made before systemd runs, and its udev does not redo them
kvm_node() { chgrp kvm /dev/kvm && chmod 0660 /dev/kvm; }
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
    # through). QEMU runs as Debian's libvirt-qemu (the hook gives it the
    # area's node); the rig's kernel has no AppArmor.
    acl=$(for i in $(seq 1 32); do printf '"/dev/kram-area/%s", ' $i; done)
    cat >> /mnt/etc/libvirt/qemu.conf <<EOF
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
    kh_check "/dev/kvm for the kvm group, as udev makes it" kvm_node
    watch_events
    kh_check "$D (a Linux guest) defined and started (memoryBacking file, shared)" define_start $D "$KEPT" linux ||
        { ls -l /dev/kvm; id libvirt-qemu; grep -vE '^(#|$)' /etc/libvirt/qemu.conf; ls -l /proc/$(pidof libvirtd)/ns/mnt /proc/1/ns/mnt
          runuser -u libvirt-qemu -- qemu-system-x86_64 -accel kvm -machine none -display none -S -qmp stdio < /dev/null 2>&1 | head -n 3; exit 0; }
    kh_check "$D boots and checks its memory" kh_wait 300 more_memchecks $D 0 || { console $D | tail -n 3; exit 0; }
    a=$(area_of $D)
    kh_check "  the hook gave its RAM KRAM area $a" has_area $a
    pid=$(cat /run/libvirt/qemu/$D.pid)
    kh_check "  its QEMU maps that area's node" sh -c "grep -q ' /dev/kram-area/' /proc/$pid/maps"
    kh_check "liveup libvirt check: $D keepable" sh -c "$L libvirt check | grep -qx '$D keepable area=$a'"
    # beside it, a VM liveup launched (tinyvm): one upgrade for both
    kh_check "u1 (tinyvm) started by liveup vm start beside it" $L vm start --name u1 --mem 32M --root / -- \
        -machine q35,accel=kvm -cpu qemu64 -smp 1 -nodefaults -display none -kernel $K/tinyvm.elf -append vmname=u1 \
        -chardev file,id=hb,path=$K/u1.hb -serial chardev:hb -chardev file,id=con,path=$K/u1.console,append=on -serial chardev:con \
        -monitor tcp:127.0.0.1:$U1_HMP,server=on,wait=off
    kh_check "u1 boots and checks its memory" kh_wait 120 more_memchecks u1 0
    kh_check "  its QEMU's monitor answers (what stalled() reads)" u1_hmp_answers
    # a domain whose RAM is libvirt's own (anonymous) memory: refused, by
    # name and reason, before anything is paused
    kh_check "lv2 (tinyvm) started without memoryBacking" define_start lv2 "" tiny
    kh_check "  liveup libvirt check refuses it" sh -c "! $L libvirt check > /tmp/lv-out 2>&1 && grep -q 'libvirt domain lv2: its RAM is not in a shared file' /tmp/lv-out" || cat /tmp/lv-out
    kh_check "  liveup upgrade refuses it (exit 3), nothing paused" sh -c "$L upgrade --kernel /host/bzImage --initrd /host/initrd.img > /tmp/lv-out 2>&1; test \$? = 3 && grep -q 'lv2: its RAM is not in a shared file' /tmp/lv-out" || cat /tmp/lv-out
    kh_check "  $D still running" sh -c "$V domstate $D | grep -qx running"
    $V destroy lv2 > /dev/null 2>&1; $V undefine lv2 > /dev/null 2>&1
    # the rehearsal: saved through libvirt, restored in this kernel
    kh_check "liveup upgrade --no-exec (a rehearsal)" sh -c "$L upgrade --no-exec --kernel /host/bzImage --initrd /host/initrd.img > /tmp/lv-out 2>&1" || cat /tmp/lv-out
    n=$(memchecks $D)
    kh_check "  $D running again, no managed save left" running_unsaved $D ||
        { $V dominfo $D; cat /tmp/lv-out; stalled $D qemu:///system; }
    kh_check "  its memory checks go on, none failed" mem_go_on $D $n || console $D | tail -n 2
    kh_check "  x-ignore-shared off again" caps_off $D
    kh_check "  no record left" no_record
    kh_check "  u1 running, its memory checks go on" u1_goes_on
    # a failure after the save (the kexec itself, injected): exit 4, the
    # domain run again through libvirt in this kernel, as after the rehearsal
    kh_check "an upgrade whose kexec fails rolls back (exit 4)" sh -c "LIVEUP_FAIL=kexec $L upgrade --kernel /host/bzImage --initrd /host/initrd.img > /tmp/lv-out 2>&1; test \$? = 4 && grep -q 'resumed where they were' /tmp/lv-out" || cat /tmp/lv-out
    n=$(memchecks $D)
    kh_check "  $D running again through libvirt, no managed save, no record" back_here $D ||
        { $V dominfo $D; stalled $D qemu:///system; }
    kh_check "  its memory checks go on, none failed" mem_go_on $D $n || console $D | tail -n 2
    kh_check "  x-ignore-shared off again" caps_off $D
    kh_check "  u1 running again" u1_running || stalled u1
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
    kh_check "/dev/kvm for the kvm group, as udev makes it" kvm_node
    watch_events
    kh_check "$D: libvirt knows it as saved (shut off, managed save)" sh -c "$V domstate $D | grep -qx 'shut off' && $V dominfo $D | grep -q '^Managed save: *yes'"
    kh_check "liveup restore brings u1 back" sh -c "$L restore > /tmp/lv-out 2>&1" || { cat /tmp/lv-out; stalled u1; }
    nu=$(memchecks u1)
    sed 's/^/KH-LOG restore: /' /tmp/lv-out
    du=$(sed -n 's/.*downtime (first stop to last resume) *\([0-9.]*\) ms.*/\1/p' /tmp/lv-out)
    kh_check "  u1's memory checks go on after the upgrade, none failed" mem_go_on u1 $nu
    kh_check "liveup libvirt restore" sh -c "$L libvirt restore > /tmp/lv-restore 2>&1" || cat /tmp/lv-restore
    n=$(memchecks $D)
    sed 's/^/KH-LOG restore: /' /tmp/lv-restore
    d=$(sed -n "s/.*domain $D: running again, downtime \([0-9.]*\) ms.*/\1/p" /tmp/lv-restore)
    kh_check "  it reports $D's downtime" test -n "$d"
    kh_check "  it set the guest's clock through its agent" sh -c "grep -q 'guest clock $D: set through its agent' /tmp/lv-restore && grep -q 'VM-CLOCK-SET $D' $K/$D.console"
    echo "KH-FIGURE upgrade downtime under systemd, one upgrade: liveup's VM u1 ${du:-none} ms, libvirt domain $D ${d:-none} ms ($(sed -n "s/.*domain $D: running again, downtime [0-9.]* ms (\(.*\))/\1/p" /tmp/lv-restore); both include the rig's busybox stage and systemd's boot)"
    kh_check "  $D running" sh -c "$V domstate $D | grep -qx running" || stalled $D qemu:///system
    kh_check "  its memory checks go on after the upgrade, none failed" mem_go_on $D $n || console $D | tail -n 2
    kh_check "  no managed save left, no record left" unsaved_no_record $D
    kh_check "  x-ignore-shared off again" caps_off $D
    kh_check "  virsh domstats answers" sh -c "$V domstats $D | grep -q 'state.state=1'"
    kh_check "  virsh console shows its heartbeats" console_shows_beats $D || tail -c 300 /tmp/lv-con
    # a live migration to another libvirt daemon and back: the restored
    # QEMU's RAM goes with it (x-ignore-shared off, the -global taken out
    # by the hook there), the area is freed here, and coming back the hook
    # gives the domain a new area the stream fills
    # (In session 28 the guest once made no progress on the destination
    # beside make check's other rigs; session 29's runs, two side by side,
    # passed: a domain that stalls is now described, see stalled().)
    if kh_check "a second libvirt daemon (another host's stand-in) answers" lv2_up; then
        t=$(date +%s%N)
        kh_check "virsh migrate --live $D there" sh -c "timeout 600 $V migrate --live --timeout 120 $D '$LV2' --migrateuri tcp://127.0.0.1:49152 > /tmp/lv-out 2>&1" ||
            { cat /tmp/lv-out; tail -n 5 /tmp/lv2.log; }
        kh_log "migration there: $(( ($(date +%s%N) - t) / 1000000 )) ms (virsh migrate, start to end)"
        n=$(memchecks $D)
        kh_check "  running there, shut off here" sh -c "virsh -c '$LV2' domstate $D | grep -qx running && $V domstate $D | grep -qx 'shut off'"
        kh_check "  its memory checks go on there, none failed" mem_go_on $D $n "$LV2" || console $D | tail -n 2
        kh_check "  the hook here freed its area" kh_wait 10 sh -c "! $L kram list | grep -q ' lv-'"
        t=$(date +%s%N)
        kh_check "virsh migrate --live $D back" sh -c "timeout 600 virsh -c '$LV2' migrate --live --timeout 120 $D '$LV1' --migrateuri tcp://127.0.0.1:49153 > /tmp/lv-out 2>&1" ||
            { cat /tmp/lv-out; tail -n 5 /var/log/libvirt/qemu/$D.log; }
        kh_log "migration back: $(( ($(date +%s%N) - t) / 1000000 )) ms"
        n=$(memchecks $D)
        kh_check "  running here, the hook gave it a new area its QEMU maps" sh -c "$V domstate $D | grep -qx running && $L kram list | grep -q ' $(area_of $D) ' && grep -q ' /dev/kram-area/' /proc/\$(cat /run/libvirt/qemu/$D.pid)/maps"
        kh_check "  its memory checks go on here, none failed" mem_go_on $D $n || console $D | tail -n 2
        lv2_down
    else
        tail -n 20 /tmp/lv2.log
    fi
    # libvirt manages it as any domain: a plain save (RAM in the image) and
    # restore; the hook takes liveup's -global out of that restore
    kh_check "a plain virsh save of $D" sh -c "$V save $D $K/plain.save > /tmp/lv-out 2>&1" || cat /tmp/lv-out
    kh_log "plain save image: $(stat -c %s $K/plain.save) bytes"
    kh_check "  the hook freed its area" sh -c "! $L kram list | grep -q ' lv-'"
    kh_check "  and a plain virsh restore of it" sh -c "$V restore $K/plain.save > /tmp/lv-out 2>&1" || { cat /tmp/lv-out; tail -n 5 /var/log/libvirt/qemu/$D.log; }
    n=$(memchecks $D)
    kh_check "  $D's memory checks go on, none failed" mem_go_on $D $n || console $D | tail -n 2
    kh_check "virsh shutdown --mode agent: the guest powers off" sh -c "$V shutdown $D --mode agent > /tmp/lv-out 2>&1" || cat /tmp/lv-out
    kh_check "  libvirt sees it shut off" kh_wait 60 sh -c "$V domstate $D | grep -qx 'shut off'" ||
        { $V domstate $D --reason; console $D | tail -n 8; tail -n 8 /var/log/libvirt/qemu/$D.log; $V destroy $D; }
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
