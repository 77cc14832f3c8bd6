#!/bin/bash
# Fetch Debian's QEMU source package (trixie-backports, the QEMU the rig's
# VMs run) through the private apt configuration of
# tools/fetch-kernel-source.sh, as deb-src only, and unpack it with
# dpkg-source (Debian's own patches applied) into the cache. Prints the
# source tree's path (one line). Nothing is installed into the host.
set -euo pipefail
. "$(dirname "$0")/env.sh"

APTDIR="$KH_CACHE/apt-trixie-src"
mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache" "$APTDIR/etc" "$APTDIR/dl"
cat > "$APTDIR/etc/sources.list" <<SRC
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
SRC
APTOPTS=(-o "Dir::Etc::SourceList=$APTDIR/etc/sources.list"
         -o "Dir::Etc::SourceParts=/dev/null"
         -o "Dir::State::Lists=$APTDIR/lists"
         -o "Dir::Cache=$APTDIR/cache"
         -o "Debug::NoLocking=1")
ver=$KH_QEMU_SRC_VERSION
dest="$KH_CACHE/src/qemu-${ver#*:}"
if [ ! -f "$dest/.unpacked" ]; then
    dsc=$(ls "$APTDIR"/dl/qemu_"${ver#*:}".dsc 2>/dev/null || true)
    if [ -z "$dsc" ]; then
        apt-get "${APTOPTS[@]}" update > /dev/null
        (cd "$APTDIR/dl" && apt-get "${APTOPTS[@]}" source --download-only "qemu=$ver" > /dev/null) || {
            echo "fetch-qemu-source: qemu $ver not found in trixie/trixie-backports (deb-src)" >&2; exit 1; }
        dsc="$APTDIR/dl/qemu_${ver#*:}.dsc"
    fi
    rm -rf "$dest"
    dpkg-source --no-check -x "$dsc" "$dest" > /dev/null
    touch "$dest/.unpacked"
fi
echo "$dest"
