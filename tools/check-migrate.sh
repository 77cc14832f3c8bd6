#!/bin/bash
# End-to-end checks of `liveup migrate` between two network namespaces
# joined by a shaped link (tbf, $KH_MIGRATE_RATE, default 100mbit). One
# guest that never stops dirtying memory (tools/guest/vm-dirty-init)
# travels A -> B -> A -> B: QEMU multifd, the relay with zstd, the relay
# with the qat codec (real libqatzip, software fallback, in the trixie
# chroot) decoded in software; after each move its own checksums must hold.
# Then failures that must leave it running where it is: link cut mid-relay,
# a corrupted chunk, the destination QEMU killed; and the CLI's errors.
# Prints "ok N - ..." / "not ok N - ..." and "N passed, N failed".
set -uo pipefail
. "$(dirname "$0")/migrate-lib.sh"
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
trap khm_cleanup EXIT
pass=0 failn=0 n=0
ok() { n=$((n + 1)); pass=$((pass + 1)); echo "ok $n - $*"; }
notok() { n=$((n + 1)); failn=$((failn + 1)); echo "not ok $n - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else notok "$what"; fi; }
fig() { jq -r 'select(.event == "result") | "\(.total_secs|.*100|round/100) s, downtime \(.downtime_ms) ms, wire \(.wire_bytes/1048576|.*10|round/10) MiB, ratio \(.ratio|.*100|round/100)x, \(.plan.mode) \(.plan.codec) x\(.plan.threads)"' "$1" 2>/dev/null; }

khm_build || { echo "not ok 1 - build"; echo "0 passed, 1 failed"; exit 1; }
khm_net || { echo "not ok 1 - network namespaces"; echo "0 passed, 1 failed"; exit 1; }
echo "# work dir $KHM_WORK, link $KHM_RATE, VM $KHM_MEM, dirtying ${KHM_DIRTY_MB} MiB"

# migrate FROM-NS FROM-VM TO-NS TO-VM PORT ARGS...: a successful move.
migrate_ok() {
    local from=$1 src=$2 to=$3 dst=$4 port=$5; shift 5
    khm_vm "$to" "$dst" incoming || return 1
    khm_receive "$to" "$dst" "$port"
    khm_send "$from" "$src" "$to" "$port" "$KHM_WORK/$dst.json" "$@"
    local rc=$?
    wait "$KHM_RECV_PID"; local rrc=$?
    [ $rc = 0 ] && [ $rrc = 0 ] || { echo "# send rc $rc, receive rc $rrc: $(tail -n3 "$KHM_WORK/$dst.json.err" "$KHM_WORK/$dst.recv.log")"; return 1; }
    echo "# $(fig "$KHM_WORK/$dst.json")"
    [ "$(khm_state "$dst")" = running ] || { echo "# destination not running"; return 1; }
    [ "$(khm_state "$src")" = postmigrate ] || { echo "# source not in postmigrate"; return 1; }
    kill "$(eval echo "\$KHM_PID_$src")" 2>/dev/null
    khm_memcheck "$dst"
}

khm_vm "$KHM_NS_A" v0 || exit 1
khm_wait_log "$KHM_WORK/v0.1.log" "^VM-CHECK" 2 120
check "guest v0 boots in A and checks its memory" khm_memcheck v0

check "native multifd A->B keeps guest memory intact" \
    migrate_ok "$KHM_NS_A" v0 "$KHM_NS_B" v1 4441 --mode native
# --json is a stream: one JSON object a line, the plan first, QEMU's
# phases and a progress event a second, the result last.
json_stream() {
    local f=$KHM_WORK/v1.json
    echo "# $(jq -r .event "$f" | sort | uniq -c | tr -s ' \n' ' ')"
    jq -se 'length >= 3 and first.event == "plan" and (first.plan.mode | type) == "string"
        and last.event == "result" and last.downtime_ms >= 0
        and (map(select(.event == "phase")) | length) >= 1
        and (map(select(.event == "progress")) | length) >= 1' "$f" > /dev/null
}
check "--json: one event a line, the plan first, phase and progress events, the result last" json_stream
check "relay (zstd) B->A keeps guest memory intact" \
    migrate_ok "$KHM_NS_B" v1 "$KHM_NS_A" v2 4442 --mode relay --codec zstd --threads 2
KHM_IN_QATROOT=1 check "relay (qat codec via libqatzip) A->B, decoded in software, keeps guest memory intact" \
    migrate_ok "$KHM_NS_A" v2 "$KHM_NS_B" v3 4443 --mode relay --codec qat --threads 2
jq -se 'map(select(.event == "result"))[0].plan.codec == "qat"' "$KHM_WORK/v3.json" > /dev/null ||
    notok "qat relay report names the codec"

# Failures: the VM (now v3 in B) must keep running in B; the destination
# must never run.
# fail_case NAME PORT ACTION ARGS...: ACTION runs while liveup migrates.
fail_case() {
    local dst=$1 port=$2 action=$3; shift 3
    khm_vm "$KHM_NS_A" "$dst" incoming || return 1
    khm_receive "$KHM_NS_A" "$dst" "$port"
    khm_send "$KHM_NS_B" v3 "$KHM_NS_A" "$port" "$KHM_WORK/$dst.json" "$@" &
    local sp=$!
    $action "$dst"
    wait $sp; local rc=$?
    wait "$KHM_RECV_PID"; local rrc=$?
    ip -n "$KHM_NS_B" link set "$(khm_dev "$KHM_NS_B")" up
    ip -n "$KHM_NS_A" link set "$(khm_dev "$KHM_NS_A")" up
    echo "# send rc $rc ($(tail -n1 "$KHM_WORK/$dst.json.err")), receive rc $rrc"
    [ $rc = 5 ] || { echo "# expected exit code 5"; return 1; }
    [ "$(tail -n1 "$KHM_WORK/$dst.json" | jq -r '"\(.event) \(.exit_code)"')" = "error 5" ] ||
        { echo "# the --json stream does not end with an error event, exit code 5"; return 1; }
    [ $rrc != 0 ] || { echo "# the destination agent claimed success"; return 1; }
    local st; st=$(khm_state v3)
    [ "$st" = running ] || { echo "# source is $st"; return 1; }
    # The destination never ran: QEMU gone or not running, no guest output.
    khm_gone() { [ "$(khm_state "$1")" = gone ]; }
    kh_wait 10 khm_gone "$dst" || true
    st=$(khm_state "$dst")
    [ "$st" = gone ] || [ "$st" = inmigrate ] || { echo "# destination is $st"; return 1; }
    [ ! -s "$KHM_WORK/$dst.1.log" ] || { echo "# destination guest printed output"; return 1; }
    # And the source's memory is still right, with new checks after this.
    local before; before=$(grep -c "^VM-CHECK" "$KHM_WORK/v3.1.log")
    khm_wait_log "$KHM_WORK/v3.1.log" "^VM-CHECK" $((before + 2)) 60 && ! grep -q BAD "$KHM_WORK/v3.1.log"
}
cut_link() { sleep 3; ip -n "$KHM_NS_A" link set "$(khm_dev "$KHM_NS_A")" down; }
kill_dest() { sleep 3; kill -9 "$(eval echo "\$KHM_PID_$1")"; }
nothing() { :; }

check "link cut during a relay migration: source keeps running, destination never runs" \
    fail_case f1 4451 cut_link --mode relay --codec none --stall-timeout 5
corrupt_case() {
    fail_case "$@" || return 1
    # The receiver names the chunk it refused.
    grep -qE "chunk 20: (checksum mismatch|.*decode)" "$KHM_WORK/f2.recv.log"
}
check "corrupted relay chunk: refused, source keeps running, destination never runs" \
    corrupt_case f2 4452 nothing --mode relay --codec lz4 --x-corrupt-chunk 20
check "destination QEMU killed during a native migration: source keeps running" \
    fail_case f3 4453 kill_dest --mode native
# The operator's view of a running migration: `liveup migrate status`
# gives its last progress event, `cancel` stops it (the VM stays, send
# exits 5), and afterwards both say no send runs (exit 8).
status_then_cancel() {
    local q=$KHM_WORK/v3.qmp out
    _progress() { out=$("$LIVEUP" migrate status --qmp "$q" 2>/dev/null) && [ "$(jq -r .event <<< "$out")" = progress ]; }
    kh_wait 60 _progress || { echo "# status gave no progress event: $out"; return 1; }
    echo "# status: $out"
    out=$("$LIVEUP" migrate cancel --qmp "$q") || { echo "# cancel: $out"; return 1; }
    [ "$out" = '{"event":"cancel","accepted":true}' ] || { echo "# cancel answered $out"; return 1; }
}
cancel_case() {
    # a 10 Mbit/s link: the migration is still under way when cancelled
    local rate=$KHM_RATE r
    khm_shape 10mbit
    fail_case "$@"; r=$?
    khm_shape "$rate"
    [ $r = 0 ] || return 1
    grep -q "cancelled by the operator" "$KHM_WORK/f4.json.err" || { echo "# send did not say it was cancelled"; return 1; }
    "$LIVEUP" migrate status --qmp "$KHM_WORK/v3.qmp" > /dev/null 2>&1
    local rc=$?
    [ $rc = 8 ] || { echo "# status after the send ended: exit $rc, not 8"; return 1; }
}
check "migrate status shows the progress, migrate cancel stops it: source keeps running, destination never runs" \
    cancel_case f4 4454 status_then_cancel --mode native

# --plan-only: measures, prints the plan and its reasons, migrates nothing;
# the agent then refuses to let its QEMU run.
plan_only() {
    khm_vm "$KHM_NS_A" p1 incoming || return 1
    khm_receive "$KHM_NS_A" p1 4460
    ip netns exec "$KHM_NS_B" "$LIVEUP" migrate send --qmp "$KHM_WORK/v3.qmp" \
        --to "$KHM_IP_A:4460" --plan-only > "$KHM_WORK/plan.txt" 2>&1 || return 1
    wait "$KHM_RECV_PID" && return 1
    grep -q "^plan: " "$KHM_WORK/plan.txt" && grep -q "why: " "$KHM_WORK/plan.txt" &&
        grep -q "^measured: link" "$KHM_WORK/plan.txt" || return 1
    sed 's/^/# /' "$KHM_WORK/plan.txt"
    [ "$(khm_state v3)" = running ] && [ "$(khm_state p1)" = gone ]
}
check "--plan-only prints the plan and why, the VM stays, the destination quits" plan_only

# CLI errors: message and exit code.
expect_rc() {
    local want=$1 pattern=$2; shift 2
    local err; err=$("$@" 2>&1 >/dev/null); local rc=$?
    echo "# rc $rc: $err"
    [ $rc = "$want" ] && grep -q "$pattern" <<< "$err"
}
check "missing QMP socket: exit 2 and says so" \
    expect_rc 2 "does not exist" "$LIVEUP" migrate send --qmp "$KHM_WORK/nope.qmp" --to 127.0.0.1:1
check "unreachable destination: exit 4 and says so" \
    expect_rc 4 "unreachable" ip netns exec "$KHM_NS_B" "$LIVEUP" migrate send --qmp "$KHM_WORK/v3.qmp" --to "$KHM_IP_A:4999"
check "destination QEMU not waiting for a migration: exit 3 and says so" \
    expect_rc 3 "incoming defer" "$LIVEUP" migrate receive --qmp "$KHM_WORK/v3.qmp" --listen 127.0.0.1:0
check "the VM survived it all in B" khm_memcheck v3

# Authentication: a destination with another key is refused before
# anything moves (exit 7, the VM stays); stray connections (a port scan, a
# peer that skips the key handshake) are refused and logged, and the agent
# goes on waiting for the real source; the native stream runs under
# QEMU's TLS-PSK.
wrong_key() {
    khm_vm "$KHM_NS_A" k1 incoming || return 1
    "$LIVEUP" migrate keygen "$KHM_WORK/other.key" > /dev/null || return 1
    LIVEUP_MIGRATE_KEY=$KHM_WORK/other.key khm_receive "$KHM_NS_A" k1 4470
    local err rc
    err=$(ip netns exec "$KHM_NS_B" "$LIVEUP" migrate send --qmp "$KHM_WORK/v3.qmp" \
        --to "$KHM_IP_A:4470" --mode native 2>&1 >/dev/null); rc=$?
    echo "# rc $rc: $err"
    sleep 1; kill "$KHM_RECV_PID" 2>/dev/null; wait "$KHM_RECV_PID" 2>/dev/null
    sed 's/^/# receive: /' "$KHM_WORK/k1.recv.log"
    [ $rc = 7 ] && grep -q "did not prove it holds the migration key" <<< "$err" &&
        grep -q "refused connection from" "$KHM_WORK/k1.recv.log" &&
        [ "$(khm_state v3)" = running ] && [ ! -s "$KHM_WORK/k1.1.log" ]
}
check "destination with another key: refused before anything moves (exit 7), the VM stays" wrong_key
stray_then_migrate() {
    khm_vm "$KHM_NS_A" s1 incoming || return 1
    khm_receive "$KHM_NS_A" s1 4471 || return 1
    ip netns exec "$KHM_NS_B" bash -c "exec 3<>/dev/tcp/$KHM_IP_A/4471; exec 3>&-"
    ip netns exec "$KHM_NS_B" bash -c "exec 3<>/dev/tcp/$KHM_IP_A/4471; echo '{\"msg\":\"hello\",\"protocol\":1}' >&3; sleep 1; exec 3>&-"
    khm_send "$KHM_NS_B" v3 "$KHM_NS_A" 4471 "$KHM_WORK/s1.json" --mode native
    local rc=$?
    wait "$KHM_RECV_PID"; local rrc=$?
    sed 's/^/# receive: /' "$KHM_WORK/s1.recv.log"
    local tls; tls=$(khm_qmp s1 query-migrate-parameters | jq -r '."tls-creds"')
    echo "# send rc $rc, receive rc $rrc, destination tls-creds: $tls"
    [ $rc = 0 ] && [ $rrc = 0 ] && [ "$tls" = liveup-tls ] &&
        [ "$(grep -c 'refused connection from' "$KHM_WORK/s1.recv.log")" = 2 ] &&
        [ "$(khm_state s1)" = running ] && khm_memcheck s1
}
check "two stray connections refused and logged; then B->A native under TLS keeps guest memory intact" \
    stray_then_migrate

# `liveup migrate listen`: the destination starts the VM's QEMU itself
# from the description the source sends (its files named by pools); the
# VM (s1, now in A) goes to B with nothing started there by hand. First a
# destination whose boot pool holds an empty file for the kernel (it
# passes the service's checks, QEMU cannot load it): QEMU's own error must
# reach the source (exit 5), and the VM stays.
# khm_listen PORT POOLS...: a one-migration destination service in B.
khm_listen() {
    local port=$1; shift
    local args=() p
    for p in "$@"; do args+=(--pool "$p"); done
    rm -rf "$KHM_WORK/incoming"
    ip netns exec "$KHM_NS_B" "$LIVEUP" migrate listen --listen "$KHM_IP_B:$port" --once \
        --qemu "$KH_ROOT/tools/qemu-trixie.sh" --run-dir "$KHM_WORK/incoming" --idle-timeout 60 \
        "${args[@]}" > "$KHM_WORK/listen-$port.log" 2>&1 &
    KHM_LISTEN_PID=$!
    KHM_PIDS+=($!)
    khm_wait_log "$KHM_WORK/listen-$port.log" "listening on" 1 30
}
# (a send that failed before the key handshake leaves `listen --once`
# waiting: it is stopped after 30 s)
khm_wait_listen() { ( sleep 30; kill "$KHM_LISTEN_PID" 2>/dev/null ) & wait "$KHM_LISTEN_PID"; }
KHM_POOLS=(--pool "boot=$(dirname "$KHM_KERNEL")" --pool "initrd=$(dirname "$KHM_INITRD")")
listen_refused() {
    mkdir -p "$KHM_WORK/empty"
    : > "$KHM_WORK/empty/$(basename "$KHM_KERNEL")"
    khm_listen 4480 "boot=$KHM_WORK/empty" "initrd=$(dirname "$KHM_INITRD")" || return 1
    local err rc
    err=$(ip netns exec "$KHM_NS_A" "$LIVEUP" migrate send --qmp "$KHM_WORK/s1.qmp" \
        --to "$KHM_IP_B:4480" "${KHM_POOLS[@]}" --mode native 2>&1 >/dev/null); rc=$?
    echo "# rc $rc: $err"
    khm_wait_listen; local lrc=$?
    sed 's/^/# listen: /' "$KHM_WORK/listen-4480.log"
    [ $rc = 5 ] && [ $lrc != 0 ] && grep -q "did not start the VM: QEMU exited.*could not load kernel" <<< "$err" &&
        grep -q "$(basename "$KHM_KERNEL")" <<< "$err" && [ "$(khm_state s1)" = running ]
}
check "migrate listen, an empty kernel file there: QEMU's own error reaches the source (exit 5), the VM stays" listen_refused
# A pool is shared storage the source's host may write: a link in it to a
# file outside (here the real kernel) is refused before QEMU starts.
listen_link_refused() {
    mkdir -p "$KHM_WORK/linkpool"
    ln -sf "$KHM_KERNEL" "$KHM_WORK/linkpool/$(basename "$KHM_KERNEL")"
    khm_listen 4482 "boot=$KHM_WORK/linkpool" "initrd=$(dirname "$KHM_INITRD")" || return 1
    local err rc
    err=$(ip netns exec "$KHM_NS_A" "$LIVEUP" migrate send --qmp "$KHM_WORK/s1.qmp" \
        --to "$KHM_IP_B:4482" "${KHM_POOLS[@]}" --mode native 2>&1 >/dev/null); rc=$?
    echo "# rc $rc: $err"
    khm_wait_listen
    [ $rc = 5 ] && grep -q "not a regular file inside its pool" <<< "$err" &&
        [ "$(khm_state s1)" = running ] && [ ! -e "$KHM_WORK/incoming/s1.qemu.log" ]
}
check "migrate listen: a pool file that links out of its pool is refused before QEMU starts (exit 5), the VM stays" listen_link_refused
listen_ok() {
    khm_listen 4481 "boot=$(dirname "$KHM_KERNEL")" "initrd=$(dirname "$KHM_INITRD")" || return 1
    ip netns exec "$KHM_NS_A" "$LIVEUP" migrate send --qmp "$KHM_WORK/s1.qmp" \
        --to "$KHM_IP_B:4481" "${KHM_POOLS[@]}" --mode native --json > "$KHM_WORK/l1.json" 2> "$KHM_WORK/l1.json.err"
    local rc=$?
    khm_wait_listen; local lrc=$?
    sed 's/^/# listen: /' "$KHM_WORK/listen-4481.log"
    echo "# send rc $rc, listen rc $lrc: $(fig "$KHM_WORK/l1.json")"
    ln -sf "$KHM_WORK/incoming/s1.qmp" "$KHM_WORK/l1.qmp"
    ln -sf "$KHM_WORK/incoming/s1.serial1.log" "$KHM_WORK/l1.1.log"
    # the QEMU that parsed the peer's stream runs under seccomp (mode 2)
    local qpid seccomp
    qpid=$(pgrep -f -- "$KHM_WORK/incoming/s1.qmp" | head -n1)
    seccomp=$(awk '/^Seccomp:/ { print $2 }' "/proc/${qpid:-0}/status" 2>/dev/null)
    echo "# destination QEMU pid ${qpid:-none}: Seccomp ${seccomp:-?}"
    # and it got the kernel the service opened and checked, as a
    # descriptor (no path opened again after the check)
    local kfd
    kfd=$(tr '\0' '\n' < "/proc/${qpid:-0}/cmdline" 2>/dev/null | grep -A1 -x -- -kernel | tail -n1)
    echo "# destination QEMU's -kernel: ${kfd:-none}"
    [ "$seccomp" = 2 ] && [[ "$kfd" == /proc/self/fd/* ]] &&
    [ $rc = 0 ] && [ $lrc = 0 ] && [ "$(khm_state l1)" = running ] &&
        [ "$(khm_state s1)" = postmigrate ] && khm_memcheck l1 &&
        grep -q "VM s1 from .*: migrated, running here" "$KHM_WORK/listen-4481.log"
}
check "migrate listen: send --to A->B, the destination starts the VM itself (seccomp sandbox, the checked kernel passed as a descriptor), guest memory intact" listen_ok
# (the service's QEMU is no child of this script: khm_cleanup does not
# see it)
khm_qmp l1 quit > /dev/null 2>&1 || true

# A VM with a disk on shared storage (pool images, the same directory on
# both ends): the service checks the image (by path, then the opened
# file) and QEMU opens it by path (as descriptors in an fd set, QEMU's
# image locks outlived its read-only to read-write reopen and the migrated
# VM's `cont` failed), read-only first and read-write when the migrated
# VM takes over, with O_DIRECT (cache=none).
listen_disk_case() {
    mkdir -p "$KHM_WORK/images/d1" && truncate -s 64M "$KHM_WORK/images/d1/disk.img" || return 1
    KHM_VM_EXTRA="-drive file=$KHM_WORK/images/d1/disk.img,if=virtio,id=d0,format=raw,cache=none" \
        khm_vm "$KHM_NS_A" d1 && khm_memcheck d1 || return 1
    khm_listen 4485 "boot=$(dirname "$KHM_KERNEL")" "initrd=$(dirname "$KHM_INITRD")" "images=$KHM_WORK/images" || return 1
    ip netns exec "$KHM_NS_A" "$LIVEUP" migrate send --qmp "$KHM_WORK/d1.qmp" --to "$KHM_IP_B:4485" \
        "${KHM_POOLS[@]}" --pool "images=$KHM_WORK/images" --mode native > /dev/null 2> "$KHM_WORK/d1.send.err"
    local rc=$? qpid drive
    khm_wait_listen
    sed 's/^/# listen: /' "$KHM_WORK/listen-4485.log"
    qpid=$(pgrep -f -- "$KHM_WORK/incoming/d1.qmp" | head -n1)
    drive=$(tr '\0' '\n' < "/proc/${qpid:-0}/cmdline" 2>/dev/null | grep -A1 -x -- -drive | tail -n1)
    echo "# send rc $rc: $(tail -n1 "$KHM_WORK/d1.send.err"); destination QEMU's -drive: ${drive:-none}"
    ln -sf "$KHM_WORK/incoming/d1.qmp" "$KHM_WORK/e1.qmp"
    ln -sf "$KHM_WORK/incoming/d1.serial1.log" "$KHM_WORK/e1.1.log"
    [ $rc = 0 ] && [[ "$drive" == "file=$KHM_WORK/images/d1/disk.img,"* ]] && [ "$(khm_state e1)" = running ] && khm_memcheck e1
}
check "migrate listen: a VM with a disk on shared storage (cache=none) arrives and runs there, memory intact" listen_disk_case
khm_qmp e1 quit > /dev/null 2>&1 || true
kill "$KHM_PID_d1" 2>/dev/null

# A guest that dirties faster than the link (issue 20 item 4): the
# unpaced vmdirty guest rewrites 4 MiB of random bytes without pause
# (3-21 MB/s measured under TCG) over 8 Mbit/s. Without an aid it never
# ends (--converge off at 10 Mbit/s: still going after 300 s, session 21); the default
# plan must pick auto-converge (TCG has no dirty ring for dirty-limit),
# say why (the throttle starts where the guest dirties half of what is
# sent; when the one dirty-rate sample saw nothing, as it once did in
# session 21's make check, auto-converge is on anyway as a safety net),
# and finish within 300 s (91 and 106 s measured at 10 Mbit/s) with the guest's
# memory intact. liveup never starts postcopy (Documentation/migrate.rst,
# Convergence).
converge_case() {
    local rate=$KHM_RATE rc plan
    khm_vm "$KHM_NS_A" g0 && khm_memcheck g0 || return 1
    khm_shape 8mbit
    khm_vm "$KHM_NS_B" g1 incoming && khm_receive "$KHM_NS_B" g1 4471 || { khm_shape "$rate"; return 1; }
    KHM_SEND_TIMEOUT=300 khm_send "$KHM_NS_A" g0 "$KHM_NS_B" 4471 "$KHM_WORK/g1.json"
    rc=$?
    khm_shape "$rate"
    wait "$KHM_RECV_PID"
    plan=$(jq -c 'select(.event == "plan") | .plan | {converge, throttle_initial_pct, dirty: .reasons[] | select(startswith("auto-converge"))}' "$KHM_WORK/g1.json" 2>/dev/null)
    echo "# plan: $plan"
    echo "# $(fig "$KHM_WORK/g1.json"), guest dirtying $(jq -r 'select(.event == "plan") | .measured.dirty_bps / 1e6 | .*10 | round / 10' "$KHM_WORK/g1.json") MB/s"
    [ $rc = 0 ] || { echo "# send rc $rc (124: not done in 300 s): $(tail -n2 "$KHM_WORK/g1.json.err")"; return 1; }
    # (throttle_initial_pct 0: QEMU's own 20 %, when the sample saw no
    # dirtying)
    [ "$(jq -r .converge <<< "$plan")" = auto-converge ] || return 1
    [ "$(khm_state g1)" = running ] && khm_memcheck g1
}
check "a guest dirtying faster than the link: the plan turns on auto-converge and says why, done within 300 s, memory intact" converge_case
kill "$KHM_PID_g0" 2>/dev/null; khm_qmp g1 quit > /dev/null 2>&1 || true

# A cap on all the RAM a destination service takes (--max-total-memory-mib,
# here 768 MiB, each VM 512 MiB): one service, two sources sending at the
# same time. The service admits one VM at a time under a lock, counting
# the VMs still arriving: exactly one arrives, the other is refused before
# any QEMU starts for it (exit 5, the message names the cap and what runs
# already) and stays where it is.
# khm_listen_svc PORT ARGS...: a long-running destination service in B
khm_listen_svc() {
    local port=$1; shift
    rm -rf "$KHM_WORK/incoming"
    ip netns exec "$KHM_NS_B" "$LIVEUP" migrate listen --listen "$KHM_IP_B:$port" \
        --qemu "$KH_ROOT/tools/qemu-trixie.sh" --run-dir "$KHM_WORK/incoming" --idle-timeout 60 \
        "$@" "${KHM_POOLS[@]}" > "$KHM_WORK/listen-$port.log" 2>&1 &
    KHM_LISTEN_PID=$!
    KHM_PIDS+=($!)
    khm_wait_log "$KHM_WORK/listen-$port.log" "listening on" 1 30
}
# khm_send_to VM PORT: send VM from A to the service on B's PORT in the
# background; its exit status goes to VM.send.rc, its stderr to VM.send.err
khm_send_to() {
    ( ip netns exec "$KHM_NS_A" "$LIVEUP" migrate send --qmp "$KHM_WORK/$1.qmp" \
        --to "$KHM_IP_B:$2" "${KHM_POOLS[@]}" --mode native > /dev/null 2> "$KHM_WORK/$1.send.err"
      echo $? > "$KHM_WORK/$1.send.rc" ) &
}
total_case() {
    khm_vm "$KHM_NS_A" t1 && khm_vm "$KHM_NS_A" t2 && khm_memcheck t1 && khm_memcheck t2 || return 1
    khm_listen_svc 4483 --max-total-memory-mib 768 || return 1
    rm -f "$KHM_WORK"/t[12].send.rc
    khm_send_to t1 4483; khm_send_to t2 4483
    wait_rc() { [ -s "$KHM_WORK/t1.send.rc" ] && [ -s "$KHM_WORK/t2.send.rc" ]; }
    kh_wait 300 wait_rc
    kill "$KHM_LISTEN_PID" 2>/dev/null
    sed 's/^/# listen: /' "$KHM_WORK/listen-4483.log"
    local rc1 rc2 in out
    rc1=$(cat "$KHM_WORK/t1.send.rc" 2>/dev/null) rc2=$(cat "$KHM_WORK/t2.send.rc" 2>/dev/null)
    echo "# t1 send rc $rc1: $(tail -n1 "$KHM_WORK/t1.send.err"); t2 send rc $rc2: $(tail -n1 "$KHM_WORK/t2.send.err")"
    case "$rc1 $rc2" in
        "0 5") in=t1 out=t2;;
        "5 0") in=t2 out=t1;;
        *) return 1;;
    esac
    KHM_IN=$in KHM_OUT=$out
    ln -sf "$KHM_WORK/incoming/$in.qmp" "$KHM_WORK/u1.qmp"
    [ "$(khm_state u1)" = running ] &&
        grep -q "at most 768 MiB of migrated VMs' RAM in all.*512 MiB run here already" "$KHM_WORK/$out.send.err" &&
        [ "$(khm_state $out)" = running ] && [ ! -e "$KHM_WORK/incoming/$out.qemu.log" ]
}
check "migrate listen --max-total-memory-mib, two sources at once: one VM arrives, the one over the cap is refused before its QEMU starts (exit 5) and stays" total_case
khm_qmp u1 quit > /dev/null 2>&1
# Two migrations received at once (issue 20: a host evacuated to one
# destination): the VM left on A and a new one, sent together to one
# service; both arrive with their memory intact, and the service ran the
# two sessions side by side (both QEMUs started before either arrived).
together_case() {
    local a=${KHM_OUT:-} b=t3
    [ -n "$a" ] && [ "$(khm_state "$a")" = running ] || { echo "# no VM left on A by the previous case"; return 1; }
    khm_vm "$KHM_NS_A" $b && khm_memcheck $b || return 1
    khm_listen_svc 4484 || return 1
    rm -f "$KHM_WORK/$a.send.rc" "$KHM_WORK/$b.send.rc"
    khm_send_to "$a" 4484; khm_send_to $b 4484
    wait_rc() { [ -s "$KHM_WORK/$a.send.rc" ] && [ -s "$KHM_WORK/$b.send.rc" ]; }
    kh_wait 300 wait_rc
    kill "$KHM_LISTEN_PID" 2>/dev/null
    sed 's/^/# listen: /' "$KHM_WORK/listen-4484.log"
    local log=$KHM_WORK/listen-4484.log started arrived
    echo "# $a send rc $(cat "$KHM_WORK/$a.send.rc"), $b send rc $(cat "$KHM_WORK/$b.send.rc")"
    # line numbers: the second QEMU start, the first arrival
    started=$(grep -n "QEMU started" "$log" | sed -n 2p | cut -d: -f1)
    arrived=$(grep -n "migrated, running here" "$log" | sed -n 1p | cut -d: -f1)
    echo "# second QEMU started on log line ${started:-none}, first VM arrived on line ${arrived:-none}"
    ln -sf "$KHM_WORK/incoming/$a.qmp" "$KHM_WORK/w1.qmp"; ln -sf "$KHM_WORK/incoming/$a.serial1.log" "$KHM_WORK/w1.1.log"
    ln -sf "$KHM_WORK/incoming/$b.qmp" "$KHM_WORK/w2.qmp"; ln -sf "$KHM_WORK/incoming/$b.serial1.log" "$KHM_WORK/w2.1.log"
    [ "$(cat "$KHM_WORK/$a.send.rc")" = 0 ] && [ "$(cat "$KHM_WORK/$b.send.rc")" = 0 ] &&
        [ -n "$started" ] && [ -n "$arrived" ] && [ "$started" -lt "$arrived" ] &&
        [ "$(khm_state w1)" = running ] && [ "$(khm_state w2)" = running ] &&
        khm_memcheck w1 && khm_memcheck w2
}
check "migrate listen: two sources at once, both VMs arrive (the sessions side by side), memory intact" together_case
khm_qmp w1 quit > /dev/null 2>&1; khm_qmp w2 quit > /dev/null 2>&1
kill "$KHM_PID_t1" "$KHM_PID_t2" "$KHM_PID_t3" 2>/dev/null

echo "$pass passed, $failn failed"
# Logs stay for a failed run (or with KH_KEEP_WORK=1).
[ $failn != 0 ] || [ -n "${KH_KEEP_WORK:-}" ] || { khm_cleanup; rm -rf "$KHM_WORK"; }
[ $failn = 0 ]
