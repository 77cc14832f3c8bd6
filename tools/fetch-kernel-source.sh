#!/bin/bash
# Fetch Debian's linux-source-7.3 (trixie-backports, arch: all) through a
# private apt configuration and unpack it with dpkg -x into the cache.
# Nothing from trixie is ever installed into the host system.
set -euo pipefail
. "$(dirname "$0")/env.sh"

APTDIR="$KH_CACHE/apt-trixie"
mkdir -p "$APTDIR/lists/partial" "$APTDIR/archives/partial" "$APTDIR/etc"
cat > "$APTDIR/etc/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
SRC
APTOPTS=(-o "Dir::Etc::SourceList=$APTDIR/etc/sources.list"
         -o "Dir::Etc::SourceParts=/dev/null"
         -o "Dir::State::Lists=$APTDIR/lists"
         -o "Dir::Cache=$APTDIR/cache"
         -o "Dir::Cache::Archives=$APTDIR/archives"
         -o "APT::Architecture=amd64"
         -o "Debug::NoLocking=1")
mkdir -p "$APTDIR/cache"

want="$KH_KERNEL_PKG"
deb=$(ls "$APTDIR"/archives/${want}_*.deb 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$deb" ]; then
    apt-get "${APTOPTS[@]}" update >/dev/null
    ver=$(apt-cache "${APTOPTS[@]}" policy "$want" | awk '/Candidate:/ {print $2}')
    if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
        echo "fetch-kernel-source: $want not found in trixie-backports" >&2
        exit 1
    fi
    if [ "$ver" != "$KH_KERNEL_PKG_VERSION" ]; then
        echo "fetch-kernel-source: pinned $want $KH_KERNEL_PKG_VERSION not available; taking newest: $ver"
    fi
    (cd "$APTDIR/archives" && apt-get "${APTOPTS[@]}" download "$want=$ver")
    deb=$(ls "$APTDIR"/archives/${want}_*.deb | sort -V | tail -n1)
fi
echo "kernel source package: $(basename "$deb")"

srcver=$(basename "$deb" .deb)
dest="$KH_CACHE/src/$srcver"
if [ ! -f "$dest/.unpacked" ]; then
    rm -rf "$dest"; mkdir -p "$dest"
    dpkg -x "$deb" "$dest/pkg"
    tarball=$(ls "$dest"/pkg/usr/src/linux-source-*.tar.* | head -n1)
    tar -C "$dest" -xf "$tarball"
    rm -rf "$dest/pkg"
    touch "$dest/.unpacked"
fi
tree=$(ls -d "$dest"/linux-source-* | head -n1)
ln -sfn "$tree" "$KH_CACHE/linux-src"
echo "kernel source tree: $tree"
