#!/bin/bash
# Build the kernel (cached) for VARIANT and our out-of-tree Rust modules
# against it. Prints the kernel directory on the last line.
set -euo pipefail
. "$(dirname "$0")/env.sh"
# stdout carries only the path a caller captures; everything else goes to
# stderr (fd 3 is the caller's stdout).
exec 3>&1 1>&2
variant=${1:-debug}
kdir=$("$KH_ROOT/tools/build-kernel.sh" "$variant")
km() { make -C "$kdir/build" M="$KH_ROOT" "${KH_KMAKE_VARS[@]}" "$@"; }
# Modules built for another kernel must not be mixed in. (Not `make clean`:
# for an external tree that deletes every *.ko below it, including the
# copies in out/ that a running rig guest is using.)
if [ "$(cat "$KH_ROOT/.kdir" 2>/dev/null)" != "$kdir" ]; then
    find "$KH_ROOT"/kram "$KH_ROOT"/iommu-preserve "$KH_ROOT"/prezero "$KH_ROOT"/vfio-keep \
        \( -name '*.o' -o -name '*.ko' -o -name '*.mod' -o -name '*.mod.c' -o -name '.*.cmd' \
        -o -name 'modules.order' -o -name '*.rmeta' -o -name '*.d' \) -delete
    rm -f "$KH_ROOT"/{Module.symvers,modules.order,.module-common.o,..module-common.o.cmd,.Module.symvers.cmd,.modules.order.cmd}
    echo "$kdir" > "$KH_ROOT/.kdir"
fi
km -j"$(nproc)" modules
echo "$kdir" >&3
