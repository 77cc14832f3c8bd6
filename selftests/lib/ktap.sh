# Helpers for tests that run inside the rig guest (sourced, busybox sh).
# Each result becomes one KTAP test case on the host; see tools/ktap-report.sh.

kh_result() { # status name [directive]
    echo "$*" >> "$KH_RESULT"
    echo "KH-RESULT $KH_TEST: $*"
}
kh_ok()   { kh_result ok "$1"; }
kh_fail() { kh_result "not ok" "$1" "# $2"; }
kh_skip() { kh_result ok "$1" "# SKIP $2"; }
kh_check() { # name command... : ok when the command succeeds
    local _name="$1"; shift
    if "$@"; then kh_ok "$_name"; else kh_fail "$_name" "failed: $*"; return 1; fi
}
# kh_wait: selftests/lib/wait.sh
. /host/lib/wait.sh
kh_log() { echo "KH-LOG $KH_TEST: $*"; }
# kh_host_clock: this kernel's wall clock on the console, to the
# microsecond (busybox date has no %N). The outer host stamps the line as
# it arrives, so tools/heartbeat.pl learns how far the rig's clock (which
# liveup sets its guests' clocks to) is off its own.
kh_host_clock() {
    # five readings 0.2 s apart: tools/heartbeat.pl takes the least delayed
    # on the serial path (one line queued a second behind the others made a
    # guest clock set right look 1.07 s ahead, session 16)
    for _i in 1 2 3 4 5; do
        adjtimex | awk '/tv_sec/ {s = $2} /tv_usec/ {u = $2} END {printf "KH-HOST-CLOCK %d.%06d\n", s, u}'
        sleep 0.2
    done
}

# Lines of the kernel log that mean something went wrong.
KH_BAD_DMESG='WARNING:|BUG:|KASAN|UBSAN|Oops|possible circular locking|possible recursive locking|inconsistent lock state|suspicious RCU usage|lock held when returning|Call Trace|general protection|Kernel panic'
kh_dmesg_mark() { dmesg -c > /dev/null; }
kh_dmesg_clean() { # name: no warning since the last mark
    if dmesg | grep -E "$KH_BAD_DMESG" > /tmp/kh-bad; then
        dmesg | tail -n 40
        kh_fail "$1" "dmesg: $(head -n1 /tmp/kh-bad)"
    else
        kh_ok "$1"
    fi
}

# kh_kexec_next [extra command line]: continue this test at the next stage in
# a freshly kexec'd copy of the same kernel (kexec_file_load, same command line).
# kh_kram_load: kram.ko loaded on the rig's region (already loaded is fine;
# what the previous kernel left is adopted or refused, never formatted).
kh_kram_load() { /host/bin/liveup kram load /host/modules/kram.ko > /dev/null; }
# kh_kram_ready: kram.ko loaded on the rig's region, formatted if new.
kh_kram_ready() {
    kh_kram_load
    /host/bin/liveup kram status | grep -q ready || /host/bin/liveup kram format --yes > /dev/null
}

kh_kexec_next() {
    echo $((KH_STAGE + 1)) > "$KH_STAGEFILE"
    # pci_keep=, intel_iommu_adopt= and the 1 GiB boot page are for the one
    # kexec that asks for them, not for the ones after
    cmdline="$(sed -e "s/ pci_keep=[^ ]*//g" -e "s/ intel_iommu_adopt=[^ ]*//g" -e "s/ hugepagesz=1G hugepages=1//g" /proc/cmdline) $1"
    if ! kexec -s -l /host/bzImage --initrd=/host/initrd.img --command-line="$cmdline"; then
        echo "$KH_STAGE" > "$KH_STAGEFILE"
        kh_fail "kexec load (stage $KH_STAGE)" "kexec -s -l failed"
        return 1
    fi
    sync
    echo "KH-KEXEC-E $KH_TEST stage=$KH_STAGE"
    kexec -e
    echo "$KH_STAGE" > "$KH_STAGEFILE"
    kh_fail "kexec -e (stage $KH_STAGE)" "kexec -e returned"
    return 1
}

# kh_module_load_unload MODULE [PARAMS [DEVICE]]: the module from our tree
# loads, shows up in /proc/modules, unloads, and the kernel logged no
# warning. With DEVICE: while a process holds it open, rmmod is refused
# (the file operations' owner is the module; a mapping or a running ioctl
# holds the same file reference).
kh_module_load_unload() {
    m=$1
    kh_dmesg_mark
    if ! insmod /host/modules/"$m".ko $2; then
        kh_fail "$m loads" "insmod failed"; return
    fi
    if grep -q "^$m " /proc/modules; then kh_ok "$m loads"; else kh_fail "$m loads" "not in /proc/modules"; fi
    if [ -n "${3:-}" ]; then
        kh_check "$m: rmmod refused while $3 is open" \
            sh -c "exec 3< $3 && ! rmmod $m 2>/dev/null && grep -q '^$m ' /proc/modules"
    fi
    if rmmod "$m" && ! grep -q "^$m " /proc/modules; then kh_ok "$m unloads"; else kh_fail "$m unloads" "rmmod failed"; fi
    kh_dmesg_clean "$m: no warning in dmesg"
}

# The KRAM region the rig reserved (memmap=), as module parameters.
kh_kram_region() {
    read KRAM_BASE KRAM_SIZE_STR < /host/memmap
    case $KRAM_SIZE_STR in
        *M) KRAM_SIZE=$((${KRAM_SIZE_STR%M} * 1024 * 1024));;
        *G) KRAM_SIZE=$((${KRAM_SIZE_STR%G} * 1024 * 1024 * 1024));;
        *) KRAM_SIZE=$KRAM_SIZE_STR;;
    esac
    KRAM_PARAMS="base=$KRAM_BASE size=$KRAM_SIZE"
}
kh_kram_region

# kh_mount_rootfs DIR: the trixie rootfs (/dev/vda, QEMU 11) at DIR with
# /dev, /proc, /sys and /host bound in and an empty tmpfs at DIR/run.
kh_mount_rootfs() {
    mount /dev/vda "$1" || return 1
    mkdir -p "$1/host"
    for d in dev proc sys host; do mount --bind /$d "$1/$d"; done
    mount -t tmpfs tmpfs "$1/run" && mkdir -p "$1/run/liveup"
}
