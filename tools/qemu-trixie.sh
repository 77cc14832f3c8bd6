#!/bin/bash
# Run the trixie rootfs's QEMU (11.x) on this host: unpack the rig's rootfs
# image once (debugfs rdump, no mount needed) and chroot into it in a
# private mount namespace with the paths QEMU needs bound in.
# Usage: tools/qemu-trixie.sh QEMU-ARGS...   (as qemu-system-x86_64)
set -euo pipefail
. "$(dirname "$0")/env.sh"
img=$("$KH_ROOT/tools/mkrootfs.sh")
root="$KH_CACHE/l0-$(basename "$img" .img)"
if [ ! -x "$root/usr/bin/qemu-system-x86_64" ]; then
    rm -rf "$root"; mkdir -p "$root"
    debugfs -R "rdump / $root" "$img" > /dev/null 2>&1
fi
exec unshare -m --propagation private bash -c '
    root=$1; shift
    for d in /dev /proc /sys /tmp "$KH_CACHE" "$KH_ROOT" "$PWD"; do
        mkdir -p "$root$d"; mount --rbind "$d" "$root$d"
    done
    exec chroot "$root" /bin/sh -c "cd \"\$1\" && shift && exec qemu-system-x86_64 \"\$@\"" sh "$PWD" "$@"
' _ "$root" "$@"
