#!/bin/bash
# Boot the kernel under test in a QEMU guest that looks like a cloud host and
# run selftests in it. Usage:
#   tools/vm-run.sh -k KERNEL_DIR -o RUN_DIR [-t SECONDS] [-r ROOTFS_IMG] [-v VM_KERNEL] TEST...
# TEST is selftests/<component>/<name>.sh given as <component>/<name>.
# The machine: q35 with split irqchip, an emulated Intel IOMMU (intremap,
# caching-mode), an e1000e for passthrough, 4 GiB RAM with KH_MEMMAP reserved
# on the command line, the host share over 9p, the serial console logged with
# host-side timestamps, and a hard timeout. Results: RUN_DIR/state/*.ktap.
# KH_RIG_EIM=on gives the emulated IOMMU extended interrupt mode, so that the
# rig kernel runs its APIC in x2APIC mode (MSRs instead of xAPIC MMIO,
# which TCG emulates slowly): the default with trixie's QEMU as the outer
# one (KH_L0_QEMU=trixie), which takes eim=on under TCG (bookworm's 7.2
# wants KVM for it). KH_RIG_EIM=off turns it off. Session 23: the VM-count
# rig in 134-187 s instead of 417 s (Documentation/upgrade.rst, Known
# problems; notes/rig-livelock.md).
set -euo pipefail
. "$(dirname "$0")/env.sh"
timeout=900 rootfs="" kdir="" run="" vmkernel=""
while getopts k:o:t:r:v: o; do
    case $o in k) kdir=$OPTARG;; o) run=$OPTARG;; t) timeout=$OPTARG;; r) rootfs=$OPTARG;; v) vmkernel=$OPTARG;;
               *) exit 2;; esac
done
shift $((OPTIND - 1))
[ -n "$kdir" ] && [ -n "$run" ] && [ $# -gt 0 ] || { echo "usage: $0 -k KDIR -o RUN [-t S] [-r IMG] TEST..." >&2; exit 2; }

# The modules must be built for this kernel: the tree's own
# (tools/build-modules.sh) or, with KH_MODULES, a copy made by
# tools/stash-modules.sh (rigs of both kernels side by side).
if [ -n "${KH_MODULES:-}" ]; then
    if [ "$(cat "$KH_MODULES/kdir" 2>/dev/null)" != "$kdir" ]; then
        echo "rig: modules in $KH_MODULES are built for $(cat "$KH_MODULES/kdir" 2>/dev/null || echo nothing), not $kdir: run tools/stash-modules.sh" >&2
        exit 2
    fi
    modsrc=("$KH_MODULES")
elif [ "$(cat "$KH_ROOT/.kdir" 2>/dev/null)" != "$kdir" ]; then
    echo "rig: modules in the tree are built for $(cat "$KH_ROOT/.kdir" 2>/dev/null || echo nothing), not $kdir: run tools/build-modules.sh" >&2
    exit 2
else
    modsrc=("$KH_ROOT"/kram "$KH_ROOT"/iommu-preserve "$KH_ROOT"/prezero "$KH_ROOT"/vfio-keep)
fi
rm -rf "$run"; mkdir -p "$run/tests" "$run/modules" "$run/state"
cp -r "$KH_ROOT"/selftests/. "$run/tests/"
cp -r "$KH_ROOT/selftests/lib" "$run/lib"
cp -r "$KH_ROOT/bench" "$run/tests/bench"
find "${modsrc[@]}" -name '*.ko' -exec cp {} "$run/modules/" \;
[ -d "$KH_ROOT/out/bin" ] && cp -r "$KH_ROOT/out/bin" "$run/bin"
cp "$kdir/bzImage" "$run/bzImage"
# KH_INSTALL=1: `make install` into RUN/destdir (liveup and its systemd
# units as an operator installs them), which selftests/upgrade/units.sh
# puts into the rootfs it boots with systemd
if [ "${KH_INSTALL:-0}" = 1 ]; then
    make -s -C "$KH_ROOT" install DESTDIR="$run/destdir" > "$run/install.log" 2>&1 \
        || { echo "rig: make install failed: $run/install.log" >&2; exit 2; }
fi
cat "$kdir/build/include/config/kernel.release" > "$run/release"
# KH_OTHER_MODULES: a second kernel and its modules (a stash of
# tools/stash-modules.sh, e.g. for the `next` variant) as /host/other/
# {bzImage,modules,release}, for a hot-upgrade into another kernel
# (selftests/upgrade/otherkernel.sh)
if [ -n "${KH_OTHER_MODULES:-}" ]; then
    okdir=$(cat "$KH_OTHER_MODULES/kdir")
    mkdir -p "$run/other/modules"
    cp "$okdir/bzImage" "$run/other/bzImage"
    cat "$okdir/build/include/config/kernel.release" > "$run/other/release"
    cp "$KH_OTHER_MODULES"/*.ko "$run/other/modules/"
fi
cp "$("$KH_ROOT/tools/mkinitramfs.sh" rig)" "$run/initrd.img"
cp "$("$KH_ROOT/tools/mkinitramfs.sh" l2)" "$run/l2-initrd.img"
cp "$("$KH_ROOT/tools/mkinitramfs.sh" vm)" "$run/vm-initrd.img"
# Nested VMs boot this kernel (the release one when given: no KASAN, fast).
cp "${vmkernel:-$kdir/bzImage}" "$run/vm-bzImage"
# The minimal test VM (tools/guest/tinyvm.c), a Multiboot kernel.
gcc -m32 -ffreestanding -fno-pic -fno-pie -no-pie -nostdlib -static -O2 -fno-toplevel-reorder \
    -fno-stack-protector -Wall -Werror -Wl,-Ttext=0x100000 -Wl,--build-id=none \
    -o "$run/tinyvm.elf" "$KH_ROOT/tools/guest/tinyvm.c"
printf '%s\n' "$@" > "$run/plan"
# KH_GUEST_ENV="A=1 B=2": variables for the guest-side tests.
echo "${KH_GUEST_ENV:-}" | tr ' ' '\n' | sed -n 's/^\([A-Z_]*=.*\)/export \1/p' > "$run/guest.env"
echo "$KH_MEMMAP_ADDR $KH_MEMMAP_SIZE" > "$run/memmap"

accel=$("$KH_ROOT/tools/accel-probe.sh" "$run/bzImage")
# TCG runs both vCPUs on one host thread by default (KH_TCG_THREAD=single):
# with multi-threaded TCG (QEMU 7.2) the rig kernel died with "Oops: int3"
# at static-key patch sites KVM toggles while another vCPU runs the same
# code (text_poke_bp vs. stale translated code): 1 run in 3 locally, twice
# in a row in CI. Single-threaded: no crash, and the upgrade test ran in
# 152 s instead of ~200 s (Documentation/upgrade.rst, known problems).
if [ "$accel" = kvm ]; then acc=(-accel kvm -cpu host); else acc=(-accel tcg,thread=${KH_TCG_THREAD:-single} -cpu max); fi
echo "rig: accel=$accel, kernel $(basename "$kdir"), timeout ${timeout}s, tests: $*"

# no_timer_check: a TCG guest on a loaded machine can fail the IO-APIC timer
# check ("timer doesn't work through Interrupt-remapped IO-APIC", seen after
# a kexec while a kernel build ran beside it); the check is for real
# hardware quirks, so skip it, as VM images commonly do.
# no5lvl: with TCG's -cpu max the guest gets 5-level paging, and a KASAN
# kernel kexec'd from it takes an early interrupt into an address KASAN has
# no shadow for ("BUG: KASAN: wild-memory-access in do_raw_spin_lock", 7.3.4,
# before any module of ours loads); with 4-level paging it does not happen.
drive=()
[ -n "$rootfs" ] && drive=(-drive "file=$rootfs,if=virtio,format=raw,snapshot=on")
# KH_SCRATCH_DISK=SIZE: an empty ext4 disk (the guest's /dev/vdb), which
# keeps what is written to it across the guest's kexecs (bench/upgrade.sh).
if [ -n "${KH_SCRATCH_DISK:-}" ]; then
    [ -n "$rootfs" ] || { echo "rig: KH_SCRATCH_DISK needs a rootfs (-r)" >&2; exit 2; }
    rm -f "$run/scratch.img"; truncate -s "$KH_SCRATCH_DISK" "$run/scratch.img"
    mkfs.ext4 -q -F "$run/scratch.img"
    drive+=(-drive "file=$run/scratch.img,if=virtio,format=raw,cache=unsafe")
fi
# KH_RIG_TSC=reliable boots the rig with tsc=reliable: TCG's TSC is the
# outer host's own, constant and in step across vCPUs, and the option keeps
# every kernel on it (without it each kexec'd kernel runs its first seconds
# on the HPET, when liveup restore starts the VMs, and KVM keeps their
# kvmclock without its master clock). Not the default: it did not remove
# the restored VM's "KVM internal error" (2 in 20 restores of make
# bench-linux, session 13, against 1 in 20 without it) and two guest-seen
# pauses were 12-17% longer than liveup's (none without it).
tsc_opt=""
[ "${KH_RIG_TSC:-watchdog}" = reliable ] && tsc_opt="tsc=reliable"
# tsc_known_khz= (patches/0005) with the outer host's TSC frequency, which
# TCG's TSC runs at: the rig's CPU has no constant_tsc (TCG cannot offer
# invtsc), so KVM gives every vCPU the tsc_khz it saw when it initialised
# (max_tsc_khz: the early calibration, before tsc_refine_calibration_work
# replaces it). When the two calibrations of a boot differed by over 250
# ppm (0.1-0.3% under TCG, from boot to boot), KVM ran the VMs in its TSC
# catch-up mode, and in that mode every stop and cont of a VM (an aborted
# upgrade, a plain QMP stop) moved the guest's monotonic clock forward by
# about the time since its previous cont, 38-60 s each (the restore after
# the kexec then set kvmclock back to the true value and the guest stood
# still for the sum: 200 s in session 16's make check). Shown with
# tsc_early_khz= 300 ppm off (selftests/upgrade/clockprobe.sh,
# Documentation/upgrade.rst). A known frequency is not calibrated at all,
# so KVM's and the kernel's are the same. KH_RIG_TSC_KHZ overrides it; an
# empty one (no frequency found) leaves the calibration as it was.
rig_tsc_khz() {
    local mhz
    if [ -n "${KH_RIG_TSC_KHZ+set}" ]; then echo "$KH_RIG_TSC_KHZ"; return; fi
    # the host kernel's own value (the refined one when there is one), from
    # its ring buffer, else (wrapped on a long-running host) from the
    # journal's copy of this boot's kernel log
    local pat='s/.*tsc: \(Refined TSC clocksource calibration: \|Detected \)\([0-9]*\.[0-9]\{3\}\) MHz.*/\2/p'
    mhz=$(dmesg 2>/dev/null | sed -n "$pat" | tail -n1)
    [ -n "$mhz" ] || mhz=$(journalctl -k -b -q --no-pager 2>/dev/null | grep 'tsc: ' | sed -n "$pat" | tail -n1)
    # else cpuinfo's "cpu MHz", which is tsc_khz on a virtual machine whose
    # TSC is constant and whose CPU frequency no cpufreq driver changes (on
    # hardware it can be a measured effective frequency: not used there)
    if [ -z "$mhz" ] && grep -q -w constant_tsc /proc/cpuinfo && grep -q -w hypervisor /proc/cpuinfo \
       && [ ! -d /sys/devices/system/cpu/cpufreq/policy0 ]; then
        mhz=$(sed -n 's/^cpu MHz[[:space:]]*: \([0-9]*\.[0-9]\{3\}\).*/\1/p' /proc/cpuinfo | head -n1)
    fi
    [ -n "$mhz" ] && echo "${mhz%.*}${mhz#*.}" | sed 's/^0*//'
    return 0
}
if [ "$accel" != kvm ]; then
    khz=$(rig_tsc_khz)
    if [ -n "$khz" ]; then tsc_opt="$tsc_opt tsc_known_khz=$khz"
    else echo "rig: the host's TSC frequency is unknown (no dmesg line, no constant cpu MHz): the rig calibrates its own" >&2; fi
fi
cmdline="console=ttyS0 loglevel=4 panic=-1 oops=panic intel_iommu=on no5lvl no_timer_check $tsc_opt memmap=$KH_MEMMAP_SIZE\$$KH_MEMMAP_ADDR reserve_mem=$KH_RESERVE_MEM $KH_EXTRA_CMDLINE"
# The guest's ttyS1 and ttyS2 carry its VMs' heartbeats out; each line is
# stamped here, on the outermost host, whose clock no kexec disturbs.
hb=()
# QEMU's pipe chardev writes PATH.out and reads PATH.in; with one FIFO for
# both it would read its own output back and lose characters.
for p in 1 2; do
    mkfifo "$run/hb$p.in" "$run/hb$p.out"
    perl -MTime::HiRes=time -ne 'BEGIN{$|=1} printf "%.3f %s", time, $_' < "$run/hb$p.out" > "$run/heartbeat$p.log" &
    hb+=(-chardev "pipe,id=hb$p,path=$run/hb$p" -device "isa-serial,chardev=hb$p")
done
# KH_NIC_UDP=1: the e1000e's netdev is a UDP datagram socket on the host's
# loopback instead of user-mode networking (which gives the guest nothing
# to receive), fed by tools/nic-sender.pl: broadcast frames with a 64-bit
# sequence number, KH_NIC_RATE (2000) per second, for the whole run. The
# guest finds the rate in /host/nic-source (selftests/vfio-keep/dma.sh).
netdev=(-netdev user,id=n0,restrict=on)
sender=""
if [ "${KH_NIC_UDP:-0}" != 0 ]; then
    read -r qport sport < <("$KH_ROOT/tools/nic-sender.pl" --ports)
    netdev=(-netdev "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=$qport,remote.type=inet,remote.host=127.0.0.1,remote.port=$sport")
    rm -f "$run/nic-rate"
    "$KH_ROOT/tools/nic-sender.pl" --to "$qport" --bind "$sport" --rate "${KH_NIC_RATE:-2000}" \
        --rate-file "$run/nic-rate" --duration "$((timeout + 60))" --log "$run/nic-sender.log" &
    sender=$!
    echo "rate=${KH_NIC_RATE:-2000} qemu_port=$qport sender_port=$sport" > "$run/nic-source"
fi
# The e1000e sits on the root bus at 00:03.0 (what most tests expect), or
# with KH_NIC_ROOT_PORT=1 behind a PCIe root port at 01:00.0, as a real
# NIC does (selftests/lib/nic.sh finds it either way).
nic=(-device e1000e,netdev=n0,addr=03.0)
[ "${KH_NIC_ROOT_PORT:-0}" = 1 ] && nic=(-device pcie-root-port,id=rp1,chassis=1,addr=04.0 -device e1000e,netdev=n0,bus=rp1)
set +e
# KH_L0_QEMU=trixie: run the outer QEMU from the trixie rootfs (11.x)
# instead of bookworm's 7.2.
qemu=(qemu-system-x86_64)
[ "${KH_L0_QEMU:-}" = trixie ] && qemu=("$KH_ROOT/tools/qemu-trixie.sh")
[ "${KH_L0_QEMU:-}" = trixie ] && KH_RIG_EIM=${KH_RIG_EIM:-on}
# The rig's own monitor, for post-mortems: a rig that wedges (its kernel's
# RCU reports a CPU whose timers stopped, "timer wakeup didn't happen",
# three times: a vCPU that no longer takes the rig kernel's interrupts,
# seen once in the VM-count rig, session 21) or nears its timeout has
# every vCPU's registers written to RUN/rig-cpus.txt (the first lines also
# to the console log); a wedged rig is then ended at once, not after the
# whole timeout.
# A rig whose console says nothing for KH_RIG_SILENCE seconds (600 by
# default; the longest quiet stretch of a passing run is a Linux VM's boot,
# 66-131 s) is wedged too: out/s21-vmcf's two vCPUs spun with interrupts
# off, each at one address, from 10 s after its 4-VM restore, and printed
# nothing more.
rig_watch() {
    local t=0 why="" size=0 quiet=0 now
    while sleep 5; do
        t=$((t + 5))
        now=$(stat -c %s "$run/console.log" 2>/dev/null || echo 0)
        if [ "$now" != "$size" ]; then size=$now quiet=0; else quiet=$((quiet + 5)); fi
        if [ "$(grep -a -c "timer wakeup didn't happen" "$run/console.log" 2>/dev/null)" -ge 3 ]; then why=wedged
        elif [ "$quiet" -ge "${KH_RIG_SILENCE:-600}" ]; then why=wedged
        elif [ "$t" -ge $((timeout - 20)) ]; then why=timeout; fi
        [ -n "$why" ] || continue
        # marked before the monitor is asked anything: at quit QEMU exits
        # and this watcher is killed, maybe before it gets further
        [ "$why" = wedged ] && : > "$run/rig-fault"
        /usr/bin/python3 - "$run/rig.qmp" "$why" > "$run/rig-cpus.txt" 2>&1 <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(20); s.connect(sys.argv[1])
f = s.makefile("rw"); f.readline()
def cmd(c, a={}):
    f.write(json.dumps({"execute": c, "arguments": a}) + "\n"); f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r or "error" in r: return r.get("return", r.get("error"))
cmd("qmp_capabilities")
try:
    regs = cmd("human-monitor-command", {"command-line": "info registers -a"})
    print(regs, flush=True)
    # the memory each vCPU's RDI and R12 point at (a lock and the structure
    # around it: notes/rig-livelock.md), read through that vCPU's page
    # tables (each QMP call is a monitor of its own: the CPU goes with it)
    import re
    for block in str(regs).split("CPU#")[1:]:
        n = int(re.match(r"\d+", block).group(0))
        for reg in ("RDI", "R12"):
            m = re.search(reg + r" *=([0-9a-f]{16})", block)
            if m and int(m.group(1), 16) >= 0xffff800000000000:
                a = int(m.group(1), 16) & ~0x3f
                print("CPU#%d %s memory:" % (n, reg))
                print(cmd("human-monitor-command", {"command-line": "x/8gx 0x%x" % a, "cpu-index": n}), flush=True)
finally:
    if sys.argv[2] == "wedged": cmd("quit")
PY
        { [ "$quiet" -ge "${KH_RIG_SILENCE:-600}" ] && echo "rig: wedged: no console output for $quiet s"
          grep -E "^CPU#|RIP|EFL" "$run/rig-cpus.txt" | head -n 12 | sed "s/^/rig: $why: /"; } >> "$run/rig-cpus.summary"
        return 0
    done
}
rm -f "$run/rig.qmp" "$run/rig-cpus.summary" "$run/rig-fault"
rig_watch &
watcher=$!
timeout --kill-after=10 "$timeout" "${qemu[@]}" \
    -qmp "unix:$run/rig.qmp,server=on,wait=off" \
    -machine q35,kernel-irqchip=split "${acc[@]}" -smp "${KH_RIG_SMP:-2}" -m "${KH_RIG_MEM:-4G}" \
    -device intel-iommu,intremap=on,caching-mode=on${KH_RIG_EIM:+,eim=$KH_RIG_EIM} \
    "${netdev[@]}" "${nic[@]}" \
    -virtfs local,path="$run",mount_tag=host,security_model=none,id=host \
    "${drive[@]}" "${hb[@]}" ${KH_QEMU_EXTRA:-} \
    -kernel "$run/bzImage" -initrd "$run/initrd.img" -append "$cmdline" \
    -d cpu_reset -D "$run/qemu-reset.log" \
    -display none -serial stdio -monitor none -no-reboot < /dev/null 2>&1 \
  | T0="$run/console.t0" perl -MTime::HiRes=time -ne 'BEGIN{$|=1; $t0=time; open(my $f, ">", $ENV{T0}); printf $f "%.3f\n", $t0; close $f}
        printf "[%9.3f] %s", time-$t0, $_' \
  | tee "$run/console.log" | grep --line-buffered -E '^\[ *[0-9.]+\] (KH-|Kernel panic|BUG:|WARNING:)'
rc=${PIPESTATUS[0]}
kill "$watcher" 2>/dev/null
[ -s "$run/rig-cpus.summary" ] && tee -a "$run/console.log" < "$run/rig-cpus.summary"
[ -n "$sender" ] && kill "$sender" 2>/dev/null
# Readers still waiting for a writer (the guest never opened a port): release them.
for p in 1 2; do timeout 2 sh -c ": > '$run/hb$p.out'" 2>/dev/null; done
wait
set -e
[ "$rc" = 124 ] && echo "rig: guest timed out after ${timeout}s" | tee -a "$run/console.log"
# Faults of the rig itself, not of the code under test (tools/rig-fault.py
# names each kind and the evidence it needs; Documentation/upgrade.rst,
# Known problems), marked like a wedge, so kh_rig_once_more runs the rig
# again (up to KH_RIG_RUNS runs) and the report names each faulted run.
fault=$(/usr/bin/python3 "$KH_ROOT/tools/rig-fault.py" "$run/console.log" "$run/qemu-reset.log" "$rc" "$kdir/build/System.map")
if [ -n "$fault" ]; then
    : > "$run/rig-fault"
    echo "rig: fault: $fault" | tee -a "$run/console.log"
fi
echo "rig: qemu exit $rc; console log: $run/console.log"
exit 0
