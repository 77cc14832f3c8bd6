#!/bin/bash
# Build our modules for VARIANT (tools/build-modules.sh) and copy them to
# out/modules-VARIANT beside the kernel directory they were built for, so
# that rigs booting the debug and the release kernel can start side by side
# (tools/check.sh) while the tree's own modules are rebuilt for the other
# kernel. tools/vm-run.sh takes such a directory as KH_MODULES. Prints it.
set -euo pipefail
. "$(dirname "$0")/env.sh"
# stdout carries only the path a caller captures (fd 3)
exec 3>&1 1>&2
variant=${1:-debug}
kdir=$("$KH_ROOT/tools/build-modules.sh" "$variant")
dir="$KH_ROOT/out/modules-$variant"
rm -rf "$dir.new"
mkdir -p "$dir.new"
n=$(find "$KH_ROOT"/kram "$KH_ROOT"/iommu-preserve "$KH_ROOT"/prezero "$KH_ROOT"/vfio-keep \
    -name '*.ko' -exec cp {} "$dir.new/" \; -print | wc -l)
[ "$n" -gt 0 ] || { echo "stash-modules: no module built for $kdir" >&2; exit 1; }
echo "$kdir" > "$dir.new/kdir"
rm -rf "$dir"
mv "$dir.new" "$dir"
echo "$dir" >&3
