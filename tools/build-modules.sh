#!/bin/bash
# Build the kernel (cached) for VARIANT and our out-of-tree Rust modules
# against it. Prints the kernel directory on the last line.
set -euo pipefail
. "$(dirname "$0")/env.sh"
variant=${1:-debug}
kdir=$("$KH_ROOT/tools/build-kernel.sh" "$variant" | tail -n1)
km() { make -C "$kdir/build" M="$KH_ROOT" "${KH_KMAKE_VARS[@]}" "$@"; }
# Modules built for another kernel must not be mixed in.
if [ "$(cat "$KH_ROOT/.kdir" 2>/dev/null)" != "$kdir" ]; then
    km clean >/dev/null 2>&1 || true
    echo "$kdir" > "$KH_ROOT/.kdir"
fi
km -j"$(nproc)" modules >&2
echo "$kdir"
