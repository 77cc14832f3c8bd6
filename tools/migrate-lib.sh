# Shared by tools/check-migrate.sh and bench/migrate.sh: two network
# namespaces joined by a shaped veth link, test VMs (QEMU 11 from the trixie
# rootfs, TCG, the vmdirty guest) on either side, a QMP helper and the
# liveup binary. Sourced, never executed. Needs root.
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export KH_CACHE KH_ROOT

KHM_RATE=${KH_MIGRATE_RATE:-100mbit}
KHM_MEM=${KH_MIGRATE_MEM:-512M}
KHM_DIRTY_MB=${KH_MIGRATE_DIRTY_MB:-4}
# The guest's dirtying pace in MiB/s (0: without pause) and how much more
# memory it fills at boot (half random, half text-like; see vm-dirty-init).
KHM_DIRTY_RATE=${KH_MIGRATE_DIRTY_RATE:-0}
KHM_FILL_MB=${KH_MIGRATE_FILL_MB:-0}
KHM_NS_A=khm-a-$$
KHM_NS_B=khm-b-$$
KHM_IP_A=10.231.0.1
KHM_IP_B=10.231.0.2
KHM_PIDS=()
KHM_WORK=${KHM_WORK:-$(mktemp -d /tmp/kh-migrate.XXXXXX)}
LIVEUP=$KH_ROOT/userspace/target/release/liveup

khm_build() {
    command -v jq > /dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends jq > /dev/null; } >&2
    (cd "$KH_ROOT/userspace" && CARGO_INCREMENTAL=0 nice -n 10 cargo build --release -q -p liveup) >&2
    # Both sides' key (Documentation/migrate.rst, Authentication).
    KHM_KEY=$KHM_WORK/migrate.key
    [ -f "$KHM_KEY" ] || "$LIVEUP" migrate keygen "$KHM_KEY" > /dev/null || return 1
    export LIVEUP_MIGRATE_KEY=$KHM_KEY
    KHM_KERNEL=$(kh_kernel_dir release)/bzImage
    [ -f "$KHM_KERNEL" ] || KHM_KERNEL=$(ls "$KH_CACHE"/kernels/release-*/bzImage 2>/dev/null | head -n1)
    [ -f "$KHM_KERNEL" ] || { echo "no release kernel under $KH_CACHE/kernels (make kernel VARIANT=release)" >&2; return 1; }
    KHM_INITRD=$("$KH_ROOT/tools/mkinitramfs.sh" vmdirty)
    KHM_QATROOT=$("$KH_ROOT/tools/mkqatroot.sh")
    "$KH_ROOT/tools/mkrootfs.sh" > /dev/null
}

# khm_net: namespaces A and B, veth between them, tbf shaping both ways.
khm_net() {
    ip netns add "$KHM_NS_A" && ip netns add "$KHM_NS_B" || return 1
    ip link add khma$$ type veth peer name khmb$$ || return 1
    ip link set khma$$ netns "$KHM_NS_A"; ip link set khmb$$ netns "$KHM_NS_B"
    ip -n "$KHM_NS_A" addr add $KHM_IP_A/24 dev khma$$
    ip -n "$KHM_NS_B" addr add $KHM_IP_B/24 dev khmb$$
    for ns in "$KHM_NS_A" "$KHM_NS_B"; do ip -n "$ns" link set lo up; done
    ip -n "$KHM_NS_A" link set khma$$ up; ip -n "$KHM_NS_B" link set khmb$$ up
    khm_shape "$KHM_RATE"
}

# khm_shape RATE: (re)shape both directions with tbf. The bucket holds
# about 1 ms of the link (at least 64 KiB): a 64 KiB bucket cannot keep a
# 10 Gbit/s link busy between timer ticks.
khm_shape() {
    KHM_RATE=$1
    local bps burst ns
    bps=$(awk -v r="$1" 'BEGIN { n = r + 0; u = tolower(r); sub(/^[0-9.]+/, "", u);
        m = (u == "gbit") ? 1e9 : (u == "mbit") ? 1e6 : (u == "kbit") ? 1e3 : 1; printf "%d", n * m }')
    burst=$((bps / 8 / 1000)); [ "$burst" -ge 65536 ] || burst=65536
    for ns in "$KHM_NS_A" "$KHM_NS_B"; do
        tc -n "$ns" qdisc replace dev "$(khm_dev "$ns")" root tbf rate "$1" burst "$burst" latency 50ms || return 1
    done
}

khm_dev() { [ "$1" = "$KHM_NS_A" ] && echo khma$$ || echo khmb$$; }
khm_ip() { [ "$1" = "$KHM_NS_A" ] && echo $KHM_IP_A || echo $KHM_IP_B; }

khm_cleanup() {
    local p
    for p in "${KHM_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.5
    for p in "${KHM_PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    ip netns del "$KHM_NS_A" 2>/dev/null; ip netns del "$KHM_NS_B" 2>/dev/null
}

# khm_vm NS NAME [incoming]: start a VM (QMP $KHM_WORK/NAME.qmp, serial
# logs NAME.0.log and NAME.1.log); "incoming" waits for a migration (-S).
# (KHM_VM_EXTRA: more QEMU options, split on spaces)
khm_vm() {
    local ns=$1 name=$2 extra=()
    [ "${3:-}" = incoming ] && extra=(-incoming defer -S)
    rm -f "$KHM_WORK/$name".*
    ip netns exec "$ns" "$KH_ROOT/tools/qemu-trixie.sh" -name "$name" -machine q35 -accel tcg -cpu max \
        -m "$KHM_MEM" -smp 1 -display none -nodefaults \
        -kernel "$KHM_KERNEL" -initrd "$KHM_INITRD" \
        -append "console=ttyS0 quiet vmname=vm vmdirty=$KHM_DIRTY_MB vmrate=$KHM_DIRTY_RATE vmfill=$KHM_FILL_MB" \
        -serial "file:$KHM_WORK/$name.0.log" -serial "file:$KHM_WORK/$name.1.log" \
        -qmp "unix:$KHM_WORK/$name.qmp,server=on,wait=off" "${extra[@]}" ${KHM_VM_EXTRA:-} \
        > "$KHM_WORK/$name.qemu.log" 2>&1 &
    KHM_PIDS+=($!)
    eval "KHM_PID_$name=$!"
    disown $!
    kh_wait 10 test -S "$KHM_WORK/$name.qmp" && return 0
    echo "VM $name did not start: $(cat "$KHM_WORK/$name.qemu.log")" >&2
    return 1
}

# khm_qmp NAME CMD [ARGS-JSON]: run a QMP command, print its return value.
khm_qmp() {
    /usr/bin/python3 - "$KHM_WORK/$1.qmp" "$2" "${3:-{\}}" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
f = s.makefile("rw")
def cmd(c, a):
    f.write(json.dumps({"execute": c, "arguments": a}) + "\n"); f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r: return r["return"]
        if "error" in r: sys.exit("QMP %s: %s" % (c, r["error"]["desc"]))
f.readline()
cmd("qmp_capabilities", {})
print(json.dumps(cmd(sys.argv[2], json.loads(sys.argv[3]))))
PY
}

khm_state() { khm_qmp "$1" query-status 2>/dev/null | jq -r .status 2>/dev/null || echo gone; }

# khm_wait_log FILE PATTERN COUNT SECS: wait until PATTERN matches COUNT lines.
khm_wait_log() { kh_wait "$4" khm_log_count "$1" "$2" "$3"; }
khm_log_count() { local c; c=$(grep -c "$2" "$1" 2>/dev/null); [ "${c:-0}" -ge "$3" ]; }

# khm_memcheck NAME: the VM's own checks after it resumed: $KHM_CHECKS
# (default three) more VM-CHECK lines, all ok, and no BAD anywhere in its log.
khm_memcheck() {
    local log=$KHM_WORK/$1.1.log
    khm_wait_log "$log" "^VM-CHECK" "${KHM_CHECKS:-3}" 180 || { echo "no VM-CHECK lines in $log" >&2; return 1; }
    ! grep -q BAD "$log"
}

# khm_receive NS NAME PORT [ARGS]: the destination agent in NS for VM NAME.
khm_receive() {
    local ns=$1 name=$2 port=$3; shift 3
    ip netns exec "$ns" "$LIVEUP" migrate receive --qmp "$KHM_WORK/$name.qmp" \
        --listen "$(khm_ip "$ns"):$port" --idle-timeout 30 "$@" > "$KHM_WORK/$name.recv.log" 2>&1 &
    KHM_RECV_PID=$!
    KHM_PIDS+=($!)
    khm_wait_log "$KHM_WORK/$name.recv.log" "listening on" 1 30
}

# khm_send NS NAME TO-NS PORT OUT [ARGS]: migrate VM NAME from NS; JSON to OUT;
# ended (exit 124) after KHM_SEND_TIMEOUT seconds if set.
# With KHM_IN_QATROOT=1, liveup runs inside the QATzip chroot (real
# libqatzip, software fallback).
khm_send() {
    local ns=$1 name=$2 to=$3 port=$4 out=$5; shift 5
    local cmd=("$LIVEUP" migrate send --qmp "$KHM_WORK/$name.qmp" --to "$(khm_ip "$to"):$port" --json "$@")
    if [ "${KHM_IN_QATROOT:-0}" = 1 ]; then
        ip netns exec "$ns" unshare -m --propagation private sh -c '
            r=$1; shift
            for d in /proc /dev /sys /tmp "$KH_ROOT"; do mkdir -p "$r$d"; mount --rbind "$d" "$r$d"; done
            exec chroot "$r" "$@"' _ "$KHM_QATROOT" "${cmd[@]}" > "$out" 2> "$out.err"
    else
        ip netns exec "$ns" timeout "${KHM_SEND_TIMEOUT:-0}" "${cmd[@]}" > "$out" 2> "$out.err"
    fi
}
