#!/bin/bash
# Build (or reuse) the project kernel: tools/build-kernel.sh debug|release
# The result is cached in $KH_CACHE/kernels/<variant>-<hash>, the hash
# covering source version, config fragments, patches and toolchain, so an
# unchanged kernel is never rebuilt. Prints the directory on the last line.
set -euo pipefail
. "$(dirname "$0")/env.sh"
# stdout carries only the path a caller captures; everything else goes to
# stderr (fd 3 is the caller's stdout).
exec 3>&1 1>&2
variant=${1:-debug}
[ -f "$KH_ROOT/tools/kconfig/$variant.config" ] || { echo "unknown variant $variant" >&2; exit 2; }

dir=$(kh_kernel_dir "$variant")
if [ -f "$dir/ready" ]; then
    echo "kernel $variant: cached ($dir)"
    echo "$dir" >&3; exit 0
fi

"$KH_ROOT/tools/setup-toolchain.sh" >/dev/null
"$KH_ROOT/tools/fetch-kernel-source.sh" >/dev/null
exec 9>"$KH_CACHE/kernel-build.lock"
flock 9
[ -f "$dir/ready" ] && { echo "$dir" >&3; exit 0; }

start=$(date +%s)
rm -rf "$dir"; mkdir -p "$dir/build"
echo "kernel $variant: copying source to $dir/src"
cp -a "$(readlink -f "$KH_CACHE/linux-src")" "$dir/src"
{ grep -v '^\s*#' "$KH_ROOT/patches/series" || true; } | while read -r p; do
    [ -z "$p" ] && continue
    echo "kernel $variant: applying patches/$p"
    patch -d "$dir/src" -p1 --forward --batch -s < "$KH_ROOT/patches/$p"
done
# kvmhost's contracts the patched kernel reads (one definition each, in the
# tree beside the code that writes them): <linux/kvmhost/NAME.h>
mkdir -p "$dir/src/include/linux/kvmhost"
for h in "${KH_KERNEL_ABI_HEADERS[@]}"; do cp "$KH_ROOT/$h" "$dir/src/include/linux/kvmhost/"; done
# and its Rust built into the kernel (KH_KERNEL_RUST, env.sh)
for f in "${KH_KERNEL_RUST[@]}"; do
    mkdir -p "$(dirname "$dir/src/${f#*=}")"
    cp "$KH_ROOT/${f%%=*}" "$dir/src/${f#*=}"
done

km() { make -C "$dir/src" O="$dir/build" "${KH_KMAKE_VARS[@]}" "$@"; }
km -s x86_64_defconfig
"$dir/src/scripts/kconfig/merge_config.sh" -m -O "$dir/build" "$dir/build/.config" \
    "$KH_ROOT/tools/kconfig/base.config" "$KH_ROOT/tools/kconfig/$variant.config" >/dev/null
km -s olddefconfig
# Every option we asked for must have stuck (Kconfig drops unmet ones silently).
bad=0
for f in base "$variant"; do
    while IFS= read -r line; do
        case "$line" in ''|'#'*) continue;; esac
        opt=${line%%=*}; val=${line#*=}
        # (a base option the variant sets otherwise: the variant's counts)
        [ "$f" = base ] && grep -q "^$opt=" "$KH_ROOT/tools/kconfig/$variant.config" && continue
        if [ "$val" = n ]; then
            grep -q "^$opt=" "$dir/build/.config" && { echo "config: $opt should be off"; bad=1; }
        else
            grep -qx "$line" "$dir/build/.config" || { echo "config: $line did not stick: $(grep "^$opt=\|# $opt " "$dir/build/.config")"; bad=1; }
        fi
    done < "$KH_ROOT/tools/kconfig/$f.config"
done
[ $bad = 0 ] || { echo "kernel $variant: configuration incomplete" >&2; exit 1; }
km rustavailable
# Seed from a finished build with the same .config (only the patches
# differ): copy its objects, point its recorded paths here, and mark every
# file either patch series touched as changed, so kbuild recompiles only
# those and what depends on them. KH_KERNEL_SEED=0 builds from scratch. A
# cold cache (CI) has no seed and builds everything.
# A variant whose config says "# kh-seed: OTHER" (next: release with
# another version string) seeds from OTHER's builds, whose .config may
# differ from its own in CONFIG_LOCALVERSION only; kbuild then rebuilds
# what depends on the version string.
seed="" seedvar=$(sed -n 's/^# kh-seed: *//p' "$KH_ROOT/tools/kconfig/$variant.config")
same_config() { cmp -s <(grep -v '^CONFIG_LOCALVERSION=' "$1") <(grep -v '^CONFIG_LOCALVERSION=' "$2"); }
if [ "${KH_KERNEL_SEED:-1}" = 1 ]; then
    for d in $(ls -dt "$KH_CACHE/kernels/${seedvar:-$variant}"-* 2>/dev/null); do
        [ "$d" != "$dir" ] && [ -f "$d/ready" ] && same_config "$d/build/.config" "$dir/build/.config" && { seed=$d; break; }
    done
fi
if [ -n "$seed" ]; then
    echo "kernel $variant: seeding the build from $seed"
    cp -p "$dir/build/.config" "$dir/.config.own"
    # files a patch series changed: newer than the pristine copy they came from
    patched() { (cd "$1/src" && find . -type f -newermt "@$(( $(stat -c %Y "$1/build/.config") - 7200 ))" ! -newer "$1/build/.config"); }
    changed=$( { patched "$seed"; patched "$dir"; } | sort -u)
    cp -a "$seed/build/." "$dir/build/"
    # this variant's own configuration (newer than the seed's auto.conf:
    # kbuild syncs it, and what uses a changed option is rebuilt)
    cmp -s "$dir/.config.own" "$dir/build/.config" || cp "$dir/.config.own" "$dir/build/.config"
    rm -f "$dir/.config.own"
    ln -sfn "$dir/src" "$dir/build/source"
    { find "$dir/build" \( -name '*.cmd' -o -name '*.d' \) -type f -print0; printf '%s\0' "$dir/build/Makefile"; } \
        | xargs -0 -r sed -i "s|$seed/|$dir/|g"
    # same content as in the seed: the seed's time stamp (nothing to redo);
    # different: now (recompiled with everything that includes it)
    for f in $changed; do
        if [ -f "$dir/src/$f" ] && [ -f "$seed/src/$f" ] && cmp -s "$seed/src/$f" "$dir/src/$f"; then
            touch -r "$seed/src/$f" "$dir/src/$f"
        elif [ -f "$dir/src/$f" ]; then
            touch "$dir/src/$f"
        fi
    done
    echo "kernel $variant: files changed by either patch series: $(echo $changed | wc -w)"
fi
echo "kernel $variant: building (make -j$(nproc)), log in $dir/build.log"
if ! km -j"$(nproc)" bzImage modules > "$dir/build.log" 2>&1; then
    tail -n 40 "$dir/build.log" >&2; exit 1
fi
cp "$dir/build/arch/x86/boot/bzImage" "$dir/bzImage"
echo "$(( $(date +%s) - start ))" > "$dir/build-seconds"
touch "$dir/ready"
# Keep the cache bounded: each build is ~3 GiB and a disk filled by old
# keys made CI fail (ENOSPC copying a bzImage). Keep this build and the
# newest KH_KERNEL_KEEP-1 other finished builds of this variant (seeds).
keep=${KH_KERNEL_KEEP:-2}
n=1
for d in $(ls -dt "$KH_CACHE/kernels/$variant"-* 2>/dev/null); do
    [ "$d" = "$dir" ] && continue
    n=$((n + 1))
    [ "$n" -gt "$keep" ] && { echo "kernel $variant: pruning old cache entry $d"; rm -rf "$d"; }
done
echo "kernel $variant: built in $(cat "$dir/build-seconds") s"
echo "$dir" >&3
