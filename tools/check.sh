#!/bin/bash
# Everything `make check` runs: userspace (fmt, clippy, cargo test) and the
# host-side script tests, the set-up in a fresh chroot, the kernel selftests
# in two rig guests booted with the debug (KASAN + lockdep) kernel, the
# hot-upgrade flow on the debug host and the hot-upgrade rigs on the release
# host (tools/check-upgrade.sh), and liveup migrate. Ends with
# "N passed, N failed, N skipped".
set -uo pipefail
. "$(dirname "$0")/env.sh"
cd "$KH_ROOT"
export CARGO_INCREMENTAL=0
P=0 F=0 S=0
pass() { P=$((P + 1)); echo "ok - $*"; }
failed=()
failed_rigs=()
fail() { F=$((F + 1)); failed+=("$*"); echo "not ok - $*"; }
# add_results NAME LOG RC: fold a sub-test's last "N passed, N failed" line
# into the totals; none (or nothing run), or a non-zero exit with no failure
# counted, is a failure of its own.
add_results() {
    local name=$1 log=$2 rc=$3 p f
    read -r p f < <(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed.*/\1 \2/p' "$log" | tail -n1)
    if [ -z "${p:-}" ] || [ $((p + f)) = 0 ]; then fail "$name: no results (${log#"$KH_ROOT"/})"; return; fi
    P=$((P + p)); F=$((F + f))
    [ "$f" = 0 ] || failed+=("$name: $f failed (${log#"$KH_ROOT"/})")
    [ "$rc" = 0 ] || [ "$f" -gt 0 ] || fail "$name exited $rc"
}
# add_counts NAME RUN [REPORT]: the same for a rig run's RUN/counts
# (tools/ktap-report.sh); REPORT, the KTAP report of a sum of rigs that
# has no console of its own (tools/check-upgrade.sh), for first_failure
add_counts() {
    local p f s
    if read -r p f s < "$2/counts" 2>/dev/null; then
        P=$((P + p)); F=$((F + f)); S=$((S + s))
        [ "$f" = 0 ] || { failed+=("$1: $f failed (${2#"$KH_ROOT"/}/console.log)"); failed_rigs+=("$2|${3:-}"); }
    else
        fail "$1: no counts (${2#"$KH_ROOT"/}/console.log)"; failed_rigs+=("$2|${3:-}")
    fi
}
# first_failure RUN [REPORT]: a failed rig's first failed check with what
# the test printed around it, and the rig's own lines (its exit, a fault, a
# panic), cut short: CI shows only the tail of make check's output. For a
# sum of rigs, the first failed checks of its REPORT.
first_failure() {
    local con=$1/console.log
    if [ -n "${2:-}" ]; then
        echo "failures in ${2#"$KH_ROOT"/}:"
        grep -a '^not ok' "$2" 2>/dev/null | awk '!s[$0]++' | head -n 6 | cut -c1-220 | sed 's/^/    /'
        return 0
    fi
    echo "first failure in ${1#"$KH_ROOT"/}:"
    # what the failed check's own command printed before it (up to 12
    # lines), the check, and what the test printed after it (up to 14)
    awk 'n && (/KH-RESULT/ || n > 15) { exit }
         /KH-RESULT .*: not ok/ { for (i = (b > 12 ? b - 12 : 0); i < b; i++) print buf[i % 12]; n = 1 }
         n { print; n++; next }
         /KH-RESULT/ { b = 0; next }
         { buf[b++ % 12] = $0 }' "$con" | sed 's/^\[ *[0-9.]*\] //' | cut -c1-220 | sed 's/^/    /'
    grep -a -m4 -E '^rig: |Kernel panic|Oops:|BUG: ' "$con" | cut -c1-220 | sed 's/^/    /'
}
# The closing lines: the failed steps by name, then the counts.
summary() {
    local r
    for r in "${failed_rigs[@]}"; do first_failure "${r%|*}" "${r##*|}"; done
    [ ${#failed[@]} -eq 0 ] || { echo "failed steps:"; printf '  - %s\n' "${failed[@]}"; }
    echo "$P passed, $F failed, $S skipped"
}
t0=$(date +%s)

echo "== setup: tools/setup-toolchain.sh"
if ! "$KH_ROOT/tools/setup-toolchain.sh"; then
    fail "setup (tools/setup-toolchain.sh; its last line above says why)"
    summary; exit 1
fi
# A cold run needs about 10 GiB (two kernel builds, guest images, out/);
# say so up front instead of failing on ENOSPC half an hour in.
free_kib=$(df -Pk "$KH_CACHE" | awk 'NR == 2 { print $4 }')
echo "== disk: $((free_kib / 1048576)) GiB free under $KH_CACHE (kernel cache: $(du -sh "$KH_CACHE/kernels" 2>/dev/null | cut -f1))"
[ "$free_kib" -ge $((10 * 1048576)) ] || echo "warning: less than 10 GiB free; a cold run may fail with ENOSPC (old kernel builds: $KH_CACHE/kernels)"

# --- userspace -------------------------------------------------------------
echo "== userspace: cargo fmt --check, clippy -D warnings, cargo test"
if (cd userspace && cargo fmt --all -- --check); then pass "cargo fmt --check"; else fail "cargo fmt --check"; fi
if (cd userspace && cargo clippy --workspace --all-targets -q -- -D warnings); then pass "cargo clippy"; else fail "cargo clippy"; fi
(cd userspace && cargo test --workspace 2>&1) | tee out-cargo-test.log
crc=${PIPESTATUS[0]}
read -r cp cf ci < <(awk '/^test result:/ { for (i=1;i<=NF;i++) { if ($(i)~/^passed/) p+=$(i-1); if ($(i)~/^failed/) f+=$(i-1); if ($(i)~/^ignored/) s+=$(i-1) } } END { print p+0, f+0, s+0 }' out-cargo-test.log)
rm -f out-cargo-test.log
P=$((P + cp)); F=$((F + cf)); S=$((S + ci))
[ "$crc" = 0 ] || [ "$cf" -gt 0 ] || fail "cargo test exited $crc"
[ "$cp" -gt 0 ] || fail "cargo test ran no test"
[ "$cf" = 0 ] || failed+=("cargo test: $cf failed")

# host_test SCRIPT LOG LABEL NAME: a host test script printing KTAP-style
# lines and "N passed, N failed", its lines shown under LABEL
host_test() {
    local rc
    "$KH_ROOT/tools/$1" > "$KH_ROOT/out/$2" 2>&1
    rc=$?
    grep -E '^(ok|not ok) ' "$KH_ROOT/out/$2" | sed "s/^\(not ok\|ok\) [0-9]* - /\1 - $3: /"
    add_results "$4" "$KH_ROOT/out/$2" $rc
}
mkdir -p "$KH_ROOT/out"
# --- the heartbeat verdicts (downtime and guest clocks) --------------------
echo "== heartbeat checks on synthetic runs: tools/test-heartbeat.sh"
host_test test-heartbeat.sh heartbeat.log heartbeat "heartbeat checks"

# --- what counts as a fault of the rig (a rerun, not a failure) -------------
echo "== rig-fault naming on synthetic consoles: tools/test-rig-fault.sh"
host_test test-rig-fault.sh rig-fault.log "rig fault" "rig-fault checks"

# --- the set-up on a machine unlike this one ---------------------------------
echo "== setup on a fresh bookworm chroot with old apt lists: tools/test-setup-chroot.sh"
"$KH_ROOT/tools/test-setup-chroot.sh" > "$KH_ROOT/out/setup-chroot.log" 2> "$KH_ROOT/out/setup-chroot.err"
src=$?
grep -E '^(ok|not ok) ' "$KH_ROOT/out/setup-chroot.log" | sed 's/^\(not ok\|ok\) [0-9]* /\1 - setup chroot: /'
add_results "setup chroot test" "$KH_ROOT/out/setup-chroot.log" $src

# --- kernel, modules, guest images -----------------------------------------
echo "== kernel (debug variant) and modules"
if ! kdir=$("$KH_ROOT/tools/build-modules.sh" debug); then
    fail "kernel and modules build (tools/build-modules.sh debug)"
    summary; exit 1
fi
pass "kernel and modules build"
# Every option a selftest's config fragment asks for is in the kernel it boots.
# (A check that reads nothing must not pass: count the fragments and options.)
frags=$(ls selftests/*/config 2>/dev/null | wc -l)
opts=$(cat selftests/*/config 2>/dev/null | grep -c '^CONFIG_')
missing=$(cat selftests/*/config 2>/dev/null | sort -u | while read -r opt; do
    grep -qx "$opt" "$kdir/build/.config" || echo "$opt"; done)
if [ "$frags" -eq 0 ] || [ "$opts" -eq 0 ]; then fail "selftest config fragments: none read ($frags files, $opts options under $PWD/selftests)"
elif [ -z "$missing" ]; then pass "selftest config fragments satisfied ($opts options in $frags files)"
else fail "selftest config fragments: missing $missing"; fi
# Nested VMs boot the release kernel (no KASAN: seconds, not minutes).
if ! vmk=$("$KH_ROOT/tools/build-kernel.sh" release); then
    fail "release kernel build (tools/build-kernel.sh release)"; vmk=$kdir
fi
echo "== guest images"
if ! rootfs=$("$KH_ROOT/tools/mkrootfs.sh"); then fail "trixie rootfs (tools/mkrootfs.sh)"; rootfs=""; fi
# the same with libvirt's daemon and virsh (selftests/libvirt/)
if ! rootfs_lv=$("$KH_ROOT/tools/mkrootfs.sh" libvirt); then fail "trixie rootfs with libvirt (tools/mkrootfs.sh libvirt)"; rootfs_lv=""; fi
"$KH_ROOT/tools/build-userspace-guest.sh" >/dev/null || fail "guest binaries (tools/build-userspace-guest.sh)"
# Scripts whose stdout a caller captures print one line, an existing path.
for s in "build-kernel.sh release" "build-modules.sh debug" mkrootfs.sh "mkrootfs.sh libvirt" mkqatroot.sh "mkinitramfs.sh vm" build-userspace-guest.sh; do
    out=$("$KH_ROOT/tools/"$s 2>/dev/null)
    if [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] && [ -e "$out" ]; then pass "tools/$s prints only a path"
    else fail "tools/$s prints only a path (got: $(printf '%s' "$out" | head -c 200))"; fi
done

# --- the rigs: kernel selftests and hot-upgrades -----------------------------
# Six rig jobs (five rig boots, each a TCG guest on one host core, and
# liveup migrate), run by two workers from one queue (below).
# Debug and release rigs start while the tree's modules are built for one
# kernel only: each boot takes its modules from a stash
# (tools/stash-modules.sh).
plan=$(cd selftests && ls */*.sh | grep -v -e '^lib/' -e '^demo/' -e '^upgrade/' -e '^libvirt/' -e '^diag/' | sed 's/\.sh$//' | sort)
run="$KH_ROOT/out/check"
drun="$KH_ROOT/out/check-upgrade-debug"
drun2="$KH_ROOT/out/check-upgrade-debug2"
echo "== rig: $(echo $plan | wc -w) tests, the hot-upgrade flow on the debug and the release host"
if ! mods_debug=$("$KH_ROOT/tools/stash-modules.sh" debug); then
    fail "modules stash (tools/stash-modules.sh debug)"; summary; exit 1
fi
if ! mods_release=$("$KH_ROOT/tools/stash-modules.sh" release); then
    fail "modules stash (tools/stash-modules.sh release)"; summary; exit 1
fi
# A second release kernel with another version string and its modules
# (tools/kconfig/next.config: seeded from the release build, minutes), for
# the hot-upgrade into another kernel and back (upgrade/otherkernel, in the
# VM-count rig).
if mods_next=$("$KH_ROOT/tools/stash-modules.sh" next); then pass "second kernel (next) and its modules"
else fail "second kernel (tools/stash-modules.sh next)"; mods_next=""; fi
# The e1000e gets the numbered-frame source (the vfio-keep and
# iommu-preserve tests count them).
# 6 GiB: a free GiB-aligned range for selftests/prezero/hugetlb_1g.sh
# beside the KASAN shadow.
# vfio-keep/dma hands a NIC that is not kept from one process to the next
# with its reset methods off: on the root bus nothing resets it in between,
# behind a root port vfio-pci resets the bus at close (which reset_method
# does not switch off), and only the keep flag (vfio-keep/keep) avoids
# that. So it runs on the root bus, in lane B.
plan_a=$(echo "$plan" | grep -E '^(iommu-preserve|vfio-keep)/' | grep -v '^vfio-keep/dma$')
plan_b=$(echo "$plan" | grep -vE '^(iommu-preserve|vfio-keep)/'; echo "$plan" | grep '^vfio-keep/dma$')
rm -f "$drun/counts" "$drun2/counts" "$KH_ROOT/out/check-upgrade-tiny-sum/counts" "$KH_ROOT/out/check-upgrade-linux-sum/counts"
# Each rig is a job; two workers (one a core) take the next job from one
# queue when they are free, longest first, so neither core idles while
# the other has two jobs to go (fixed chains left one core idle for ~17
# min in session 17's run: 4307 s). Each job's output goes to its own log.
rig_debug() {
    # tinyvm x2 through an upgrade, a failure injected before the kexec,
    # a partial restore (and an upgrade refused while one VM waits for
    # it) and --retry (then an upgrade out of a kexec'd kernel), a failed
    # restore and a kexec back: the flow under KASAN and lockdep (issue 15
    # item 5). The release rig runs all of selftests/upgrade/upgrade.sh in
    # one boot; on this host that took 2520-2596 s (sessions 15 and 23),
    # so the flow is cut in two rig jobs that run side by side: this one,
    # and rig_debug2 with the other injected failures and the signal and
    # unmanaged-KVM checks. Together they run every check of the flow;
    # what neither repeats is the third plain upgrade in a row. The VMs
    # have 32 MiB: each memory check of a 96 MiB tinyvm took 60-120 s on
    # this host. The rig's CPU is sampled so that each VM stall shows what
    # the CPU did meanwhile.
    [ -n "$rootfs" ] || return 0
    KH_GUEST_ENV="KH_UPGRADES=1 KH_UPGRADE_FAULTS=before-kexec KH_UPGRADE_SIGNALS=0 VM_MEM=32M KH_UPGRADE_CPU_SAMPLE=1" \
    KH_MODULES=$mods_debug "$KH_ROOT/tools/vm-run.sh" -k "$kdir" -o "$drun" -t 3000 -v "$vmk/bzImage" -r "$rootfs" upgrade/upgrade \
        > "$KH_ROOT/out/check-upgrade-debug.log" 2>&1
}
rig_debug2() {
    [ -n "$rootfs" ] || return 0
    KH_GUEST_ENV="KH_UPGRADES=1 KH_UPGRADE_FAULTS=preflight,after-save,kexec KH_UPGRADE_SIGNALS=1 VM_MEM=32M KH_UPGRADE_CPU_SAMPLE=1" \
    KH_MODULES=$mods_debug "$KH_ROOT/tools/vm-run.sh" -k "$kdir" -o "$drun2" -t 3000 -v "$vmk/bzImage" -r "$rootfs" upgrade/upgrade \
        > "$KH_ROOT/out/check-upgrade-debug2.log" 2>&1
}
rig_b() {
    KH_MODULES=$mods_debug KH_RIG_MEM=6G KH_NIC_UDP=1 "$KH_ROOT/tools/vm-run.sh" -k "$kdir" -o "$run-b" -t 3000 -v "$vmk/bzImage" ${rootfs:+-r "$rootfs"} $plan_b \
        > "$KH_ROOT/out/check-b.log" 2>&1
}
rig_a() {
    # The passthrough-NIC tests run with the NIC behind a PCIe root port,
    # where real NICs sit (the bridge's bus mastering across kexec is
    # checked).
    KH_MODULES=$mods_debug KH_RIG_MEM=6G KH_NIC_UDP=1 KH_NIC_ROOT_PORT=1 "$KH_ROOT/tools/vm-run.sh" -k "$kdir" -o "$run" -t 3000 -v "$vmk/bzImage" ${rootfs:+-r "$rootfs"} $plan_a \
        > "$KH_ROOT/out/check-a.log" 2>&1
}
rig_tiny() {
    # tinyvm x2 on the release host; then the VM count in a rig of two
    # vCPUs on two TCG threads (which borrows the other core for a few
    # minutes)
    # (the sum goes beside the rig's run directory, not into its counts
    # file, which tools/ktap-report.sh rewrites whenever it is run on it)
    KH_MODULES=$mods_release KH_OTHER_MODULES=$mods_next KH_UPGRADE_LINUX=0 KH_UPGRADE_COUNTS="$KH_ROOT/out/check-upgrade-tiny-sum/counts" \
        "$KH_ROOT/tools/check-upgrade.sh" > "$KH_ROOT/out/check-upgrade.log" 2>&1
}
rig_linux() {
    KH_MODULES=$mods_release KH_UPGRADE_TINY=0 KH_UPGRADE_COUNTS="$KH_ROOT/out/check-upgrade-linux-sum/counts" \
        "$KH_ROOT/tools/check-upgrade.sh" > "$KH_ROOT/out/check-upgrade-linux-part.log" 2>&1
}
rig_libvirt() {
    # a libvirt-defined domain (a Linux guest) through a host upgrade, in a
    # rig of two vCPUs on two TCG threads under systemd (about 3 min)
    [ -n "$rootfs_lv" ] || return 0
    KH_MODULES=$mods_release KH_L0_QEMU=trixie KH_TCG_THREAD=multi KH_RIG_SMP=2 "$KH_ROOT/tools/vm-run.sh" -k "$vmk" -o "$KH_ROOT/out/check-libvirt" -t 1800 -v "$vmk/bzImage" -r "$rootfs_lv" libvirt/upgrade \
        > "$KH_ROOT/out/check-libvirt.log" 2>&1
}
rig_migrate() {
    # liveup migrate: host QEMUs in network namespaces, about 3-5 min
    "$KH_ROOT/tools/check-migrate.sh" > "$KH_ROOT/out/check-migrate.log" 2>&1
    echo $? > "$KH_ROOT/out/check-migrate.rc"
}
# (a rig whose own kernel wedged runs once more: kh_rig_once_more, env.sh)
job_debug() { kh_rig_once_more "$drun" "$KH_ROOT/out/check-upgrade-debug.log" rig_debug; }
job_debug2() { kh_rig_once_more "$drun2" "$KH_ROOT/out/check-upgrade-debug2.log" rig_debug2; }
job_b() { kh_rig_once_more "$run-b" "$KH_ROOT/out/check-b.log" rig_b; }
job_a() { kh_rig_once_more "$run" "$KH_ROOT/out/check-a.log" rig_a; }
job_libvirt() { kh_rig_once_more "$KH_ROOT/out/check-libvirt" "$KH_ROOT/out/check-libvirt.log" rig_libvirt; }
# Longest first (session 22's minutes on one core each: lane B 14, lane
# A 14.5, debug flow 8, tinyvm and the VM count 7, migrate 5, Linux VM 4;
# the second debug flow's part about 15; libvirt 3 on two threads).
queue="$KH_ROOT/out/rig-queue"
printf '%s\n' job_debug2 job_b job_a job_debug rig_tiny rig_migrate job_libvirt rig_linux > "$queue"
rm -f "$KH_ROOT/out/check-migrate.rc"
worker() {
    local job
    while :; do
        job=$(flock "$queue.lock" sh -c 'head -n1 "$1"; sed -i 1d "$1"' sh "$queue")
        [ -n "$job" ] || return 0
        echo "[$(date +%T)] worker $1: $job" >> "$KH_ROOT/out/rig-jobs.log"
        "$job"
        echo "[$(date +%T)] worker $1: $job ended" >> "$KH_ROOT/out/rig-jobs.log"
    done
}
: > "$KH_ROOT/out/rig-jobs.log"
worker 1 & w1=$!
worker 2 & w2=$!
wait "$w1" "$w2"
echo "== rig jobs (out/rig-jobs.log)"
cat "$KH_ROOT/out/rig-jobs.log"
echo "== rig lane A (out/check): $(echo $plan_a)"
kh_rig_rerun_note "$run"
grep -E '^\[ *[0-9.]+\] (KH-RESULT|Kernel panic|BUG:|WARNING:)' "$KH_ROOT/out/check-a.log"
echo "== rig lane B (out/check-b): $(echo $plan_b)"
kh_rig_rerun_note "$run-b"
grep -E '^\[ *[0-9.]+\] (KH-RESULT|Kernel panic|BUG:|WARNING:)' "$KH_ROOT/out/check-b.log"
for r in "$run" "$run-b"; do
    "$KH_ROOT/tools/ktap-report.sh" "$r"
    add_counts "rig selftests" "$r"
done
echo "== rig: hot-upgrade on the debug host (out/check-upgrade-debug)"
if [ -n "$rootfs" ]; then
    # (heartbeat gap vs liveup's downtime within 10%, as elsewhere:
    # tools/heartbeat.pl; 15% before the rig's TSC catch-up was cured)
    kh_rig_rerun_note "$drun"
    "$KH_ROOT/tools/ktap-report.sh" "$drun" | sed 's/^\(not ok\|ok\) \([0-9]*\) /\1 \2 debug host: /'
    add_counts "hot-upgrade, debug host" "$drun"
    echo "== rig: hot-upgrade on the debug host, the other injected failures and the signal checks (out/check-upgrade-debug2)"
    kh_rig_rerun_note "$drun2"
    "$KH_ROOT/tools/ktap-report.sh" "$drun2" | sed 's/^\(not ok\|ok\) \([0-9]*\) /\1 \2 debug host 2: /'
    add_counts "hot-upgrade, debug host (part 2)" "$drun2"
else
    fail "hot-upgrade, debug host: no rootfs"
fi
echo "== rig: hot-upgrade on the release host (tools/check-upgrade.sh)"
cat "$KH_ROOT/out/check-upgrade.log" "$KH_ROOT/out/check-upgrade-linux-part.log" | grep -v '^make'
add_counts "hot-upgrade rig, tinyvm and VM count" "$KH_ROOT/out/check-upgrade-tiny-sum" "$KH_ROOT/out/check-upgrade.log"
add_counts "hot-upgrade rig, Linux VM" "$KH_ROOT/out/check-upgrade-linux-sum" "$KH_ROOT/out/check-upgrade-linux-part.log"

echo "== rig: a libvirt domain through a host upgrade (out/check-libvirt)"
if [ -n "$rootfs_lv" ]; then
    kh_rig_rerun_note "$KH_ROOT/out/check-libvirt"
    "$KH_ROOT/tools/ktap-report.sh" "$KH_ROOT/out/check-libvirt" | sed 's/^\(not ok\|ok\) \([0-9]*\) /\1 \2 libvirt: /'
    add_counts "libvirt domain through an upgrade" "$KH_ROOT/out/check-libvirt"
else
    fail "libvirt domain through an upgrade: no libvirt rootfs"
fi

# --- liveup migrate end to end: network namespaces, shaped link, QEMU 11 ---
# (run as the rig queue's last job, above)
echo "== liveup migrate: tools/check-migrate.sh"
mrc=$(cat "$KH_ROOT/out/check-migrate.rc" 2>/dev/null || echo 1)
# each result; before a failed one, the diagnostics that led to it (its
# "# ..." lines, 20 at most: CI keeps no log)
awk '/^(ok|not ok) /{ if ($1 == "not") for (i = (n > 20 ? n - 19 : 1); i <= n; i++) print "#   " b[i]; n = 0; print; next }
     /^# /{ b[++n] = $0 }' "$KH_ROOT/out/check-migrate.log"
add_results "liveup migrate" "$KH_ROOT/out/check-migrate.log" $mrc

echo "== make check took $(( $(date +%s) - t0 )) s"
summary
[ "$F" = 0 ]
