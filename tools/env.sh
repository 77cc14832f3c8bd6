# Shared settings for the project's scripts. Sourced, never executed.
# Everything downloaded or built lives in $KH_CACHE, outside the clone.
export KH_CACHE=${KH_CACHE:-/var/cache/kvmhost}
# No silent exits: a script running under set -e names itself, the line and
# the command that stopped it (on stderr, which callers never capture).
# (Only while errexit is on: a failure the script tolerates says nothing.)
case $- in *e*) trap 'kh_rc=$?; case $- in *e*) echo "${0##*/}: failed at line $LINENO: $BASH_COMMAND (exit $kh_rc)" >&2;; esac' ERR;; esac
KH_KERNEL_PKG=linux-source-7.3
KH_KERNEL_PKG_VERSION=${KH_KERNEL_PKG_VERSION:-7.3.4-1~bpo13+1}
# Pinned Debian packages: the minimum version each must have (the kernel's
# Rust needs 1.96, from bookworm-security; bookworm main has 1.85).
KH_RUST_VERSION=1.96
KH_PINNED_PKGS=("rustc-web>=$KH_RUST_VERSION" "rust-web-src>=$KH_RUST_VERSION" clang-19 libclang1-19 lld-19 llvm-19)
KH_BINDGEN_VERSION=0.72.1
# Bump when tools/build-kernel.sh changes how a kernel is built: part of the
# kernel cache key (comment-only edits of the script then rebuild nothing).
KH_KERNEL_BUILD_REV=1
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}
export PATH="$KH_CACHE/cargo/bin:$PATH"
mkdir -p "$KH_CACHE"

# Make variables every kernel make needs (the M= ones too): Debian's rustc,
# not rustup's, else modules fail with E0514; clang for KASAN with Rust.
# kh_rust_src: the library source of the rustc actually installed
# (rust-web-src of the same version puts it in /usr/src/rustc-X.Y.Z/library).
# Prints nothing when there is none; never fails (this file is sourced under
# set -e before the toolchain is installed).
kh_rust_src() {
    local v
    v=$(/usr/bin/rustc --version 2>/dev/null | awk '{print $2}') || true
    [ -n "$v" ] && [ -d "/usr/src/rustc-$v/library" ] && echo "/usr/src/rustc-$v/library"
    return 0
}
KH_RUST_SRC=${KH_RUST_SRC:-$(kh_rust_src)}
KH_KMAKE_VARS=(LLVM=-19 RUSTC=/usr/bin/rustc HOSTRUSTC=/usr/bin/rustc
               RUSTDOC=/usr/bin/rustdoc BINDGEN="$KH_CACHE/cargo/bin/bindgen"
               RUST_LIB_SRC="$KH_RUST_SRC")
export KH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# kh_wait SECONDS COMMAND...: the one polling helper, shared with the rig.
. "$KH_ROOT/selftests/lib/wait.sh"

# Contracts of ours the kernel's patches include (tools/build-kernel.sh
# installs them as <linux/kvmhost/NAME.h>).
KH_KERNEL_ABI_HEADERS=(iommu-preserve/include/abi/vtd_record.h)
# kvmhost's Rust built into the patched kernel, SOURCE=DEST (DEST in the
# kernel tree): the next kernel's checks of a preserved VT-d record
# (patches/0003 calls them at boot, before any module), the same
# kram-format code the iommu_preserve module includes and the host tests.
KH_KERNEL_RUST=(
    iommu-preserve/builtin/kh_vtd.rs=drivers/iommu/intel/kh_vtd.rs
    userspace/kram-format/src/crc.rs=drivers/iommu/intel/kh_vtd/crc.rs
    userspace/kram-format/src/vtd.rs=drivers/iommu/intel/kh_vtd/vtd.rs
    userspace/kram-format/src/vtd/record.rs=drivers/iommu/intel/kh_vtd/vtd/record.rs
    userspace/kram-format/src/vtd/spans.rs=drivers/iommu/intel/kh_vtd/vtd/spans.rs
    userspace/kram-format/src/vtd/verify.rs=drivers/iommu/intel/kh_vtd/vtd/verify.rs
    userspace/kram-format/src/vtd/walk.rs=drivers/iommu/intel/kh_vtd/vtd/walk.rs
)
# kh_kernel_key VARIANT: hash of everything the built kernel depends on.
kh_kernel_key() {
    local variant=$1
    {
        echo "$KH_KERNEL_PKG_VERSION"
        cat "$KH_ROOT/tools/kconfig/base.config" "$KH_ROOT/tools/kconfig/$variant.config"
        cat "$KH_ROOT/patches/series"
        { grep -v '^\s*#' "$KH_ROOT/patches/series" || true; } | while read -r p; do
            [ -n "$p" ] && cat "$KH_ROOT/patches/$p"
        done
        for h in "${KH_KERNEL_ABI_HEADERS[@]}"; do cat "$KH_ROOT/$h"; done
        for f in "${KH_KERNEL_RUST[@]}"; do echo "${f#*=}"; cat "$KH_ROOT/${f%%=*}"; done
        /usr/bin/rustc --version; clang-19 --version | head -n1
        echo "$KH_BINDGEN_VERSION"
        echo "build-rev $KH_KERNEL_BUILD_REV"
    } | sha256sum | cut -c1-16
}
kh_kernel_dir() { echo "$KH_CACHE/kernels/$1-$(kh_kernel_key "$1")"; }

# The region every rig guest reserves for KRAM (memmap=SIZE$ADDR): 256 MiB at
# 4 GiB, which is RAM in a 4 GiB q35 guest (2 GiB low, 2 GiB from 4 GiB up).
KH_MEMMAP_SIZE=${KH_MEMMAP_SIZE:-256M}
KH_MEMMAP_ADDR=${KH_MEMMAP_ADDR:-0x100000000}
# A second, reserve_mem= region (selftests/kram/discover.sh).
KH_RESERVE_MEM=32M:2M:kram
KH_EXTRA_CMDLINE=${KH_EXTRA_CMDLINE:-}
# The rig that upgrades a Linux VM (tools/check-upgrade.sh, bench/linux-guest.sh):
# trixie's QEMU 11.1 on multi-threaded TCG (Documentation/upgrade.rst) with
# one vCPU (KH_LINUX_RIG_SMP; one host thread, so it can run beside another
# rig on this 2-core machine), for
# `env "${KH_LINUX_RIG_ENV[@]}" tools/vm-run.sh ...`.
KH_LINUX_RIG_ENV=(KH_L0_QEMU=trixie KH_TCG_THREAD=multi KH_RIG_SMP=${KH_LINUX_RIG_SMP:-1} "KH_GUEST_ENV=KH_UPGRADE_GUEST=linux KH_UPGRADE_VMS=vm1")
# QEMU's Debian source package (trixie-backports), patched by patches/qemu/
# (tools/fetch-qemu-source.sh, tools/build-qemu.sh).
KH_QEMU_SRC_VERSION=${KH_QEMU_SRC_VERSION:-1:11.1.3+ds-2~bpo13+1}

# A rig fault (the rig's own kernel wedged, a stale int3, a triple fault,
# a nested VM reset under its guest or run on the rig's state, an
# interrupt taken with IF clear: tools/vm-run.sh writes DIR/rig-fault;
# Documentation/upgrade.rst, Known problems) runs that rig again, up to
# KH_RIG_RUNS runs in all (3: session 31 saw faults in two of three
# libvirt rigs run side by side, so one rerun was not enough for CI): JOB
# is a shell function that runs the rig into DIR with its output in LOG.
# The last run must pass on its own; each faulted run stays in DIR.first,
# DIR.second, ... and DIR.rerun names them for the report
# (kh_rig_rerun_note), never hidden. A failed check is no rig fault and is
# not rerun.
kh_rig_once_more() { # DIR LOG JOB
    local dir=$1 log=$2 job=$3 n=1 kept k
    local names=(first second third fourth fifth)
    rm -rf "$dir.rerun" "$dir/rig-fault"
    for k in "${names[@]}"; do rm -rf "$dir.$k" "${log%.log}.$k.log"; done
    "$job"
    while [ -e "$dir/rig-fault" ] && [ "$n" -lt "${KH_RIG_RUNS:-3}" ] && [ "$n" -le ${#names[@]} ]; do
        kept=$dir.${names[n - 1]}
        rm -rf "$kept"; mv "$dir" "$kept"; [ ! -e "$log" ] || mv "$log" "${log%.log}.${names[n - 1]}.log"
        echo "# $(basename "$dir"): rerun after a rig fault; the ${names[n - 1]} run: $(grep -a -m1 '^rig: \(wedged\|fault\)' "$kept/console.log" || echo wedged), its last result: $(grep -a 'KH-RESULT' "$kept/console.log" | tail -n1 | sed 's/^\[ *[0-9.]*\] //') (out/$(basename "$kept"))" >> "$dir.rerun"
        n=$((n + 1))
        "$job"
    done
}
kh_rig_rerun_note() { [ ! -e "$1.rerun" ] || cat "$1.rerun"; }
