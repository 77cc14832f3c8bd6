#!/bin/bash
# Build (once) a Debian trixie chroot with QATzip (libqatzip3, its qatlib
# dependencies, the qzip tool and the header) so that tests can exercise the
# real library in its software-fallback mode on a host without QAT. Cached
# by a hash of this script under $KH_CACHE; prints the chroot's path.
set -euo pipefail
. "$(dirname "$0")/env.sh"
# stdout carries only the path a caller captures; everything else goes to
# stderr (fd 3 is the caller's stdout).
exec 3>&1 1>&2
key=$(sha256sum "$0" | cut -c1-16)
root="$KH_CACHE/qat-trixie-$key"
ready() { [ -f "$root/.kh-ready" ]; }
ready && { echo "$root" >&3; exit 0; }
exec 9>"$KH_CACHE/qatroot.lock"; flock 9
ready && { echo "$root" >&3; exit 0; }
rm -rf "$root"; mkdir -p "$root"
mirror=http://deb.debian.org/debian
echo "qatroot: debootstrap trixie (minbase) into $root" >&2
debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    trixie "$root" "$mirror" > "$root.log" 2>&1 || { tail -n 20 "$root.log" >&2; exit 1; }
echo "qatroot: installing libqatzip3, qatlib, qatzip" >&2
chroot "$root" /bin/sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends libqatzip3 libqatzip-dev qatzip gzip zstd lz4 \
    && apt-get clean' >> "$root.log" 2>&1 || { tail -n 20 "$root.log" >&2; exit 1; }
chroot "$root" dpkg-query -W libqatzip3 >&2
rm -rf "$root/var/lib/apt/lists"/* "$root/usr/share/doc" "$root/usr/share/man"
touch "$root/.kh-ready"
echo "$root" >&3
