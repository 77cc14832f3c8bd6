#!/bin/bash
# Build an initramfs into the cache, keyed by a hash of its inputs, and print
# its path. "rig" (default): busybox, kexec and its libraries, tools/guest/init.
# "l2": busybox and tools/guest/l2-init, for nested test VMs.
# "vm": busybox and tools/guest/vm-init, the heartbeat VM that upgrades keep.
# "vmdirty": busybox and tools/guest/vm-dirty-init, a VM that keeps dirtying
# memory and checking it (for migration tests).
set -euo pipefail
. "$(dirname "$0")/env.sh"
# stdout carries only the path a caller captures; everything else goes to
# stderr (fd 3 is the caller's stdout).
exec 3>&1 1>&2
kind=${1:-rig}
case $kind in rig) init=init;; l2) init=l2-init;; vm) init=vm-init;; vmdirty) init=vm-dirty-init;; *) echo "usage: $0 [rig|l2|vm|vmdirty]" >&2; exit 2;; esac
key=$( { echo "$kind"; cat "$KH_ROOT/tools/guest/$init" "$KH_ROOT/tools/guest/hb.c" "$0"; dpkg-query -W busybox-static kexec-tools; } | sha256sum | cut -c1-16)
out="$KH_CACHE/initramfs/$kind-$key.cpio.gz"
if [ ! -f "$out" ]; then
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp"/{bin,sbin,proc,sys,dev,tmp,host,lib,lib64,etc,mnt,root}
    cp /bin/busybox "$tmp/bin/busybox"
    if [ "$kind" = rig ]; then
        cp "$(command -v kexec)" "$tmp/sbin/kexec"
        # kexec is dynamically linked: take its libraries and the loader
        # along, and what our Rust binaries (out/bin, over 9p) need besides.
        { ldd "$(command -v kexec)" | grep -o '/[^ ]*'
          for l in libgcc_s.so.1 libm.so.6; do ls /lib/x86_64-linux-gnu/$l; done; } | while read -r lib; do
            mkdir -p "$tmp$(dirname "$lib")"; cp -L "$lib" "$tmp$lib"
        done
    fi
    # the Linux test VM's workload (tools/guest/hb.c), static: no libc there
    [ "$kind" = vm ] && gcc -static -O2 -Wall -Werror -o "$tmp/bin/kh-hb" "$KH_ROOT/tools/guest/hb.c"
    install -m 755 "$KH_ROOT/tools/guest/$init" "$tmp/init"
    mkdir -p "$(dirname "$out")"
    (cd "$tmp" && find . | cpio -o -H newc --quiet | gzip -1) > "$out.tmp.$$"
    mv "$out.tmp.$$" "$out"
fi
echo "$out" >&3
