#!/bin/bash
# The hot-upgrade selftest (selftests/upgrade/: two VMs, three upgrades,
# failure injection, restore --retry) in its own rig boot. VARIANT=release
# (default; what `make check` runs) or debug (KASAN + lockdep host kernel:
# about three times slower; see Documentation/upgrade.rst, known problems).
# The VMs always boot the release kernel. Writes out/check-upgrade/counts.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$KH_ROOT"
export CARGO_INCREMENTAL=0
variant=${VARIANT:-release}
kdir=$("$KH_ROOT/tools/build-modules.sh" "$variant")
vmk=$("$KH_ROOT/tools/build-kernel.sh" release)
rootfs=$("$KH_ROOT/tools/mkrootfs.sh")
"$KH_ROOT/tools/build-userspace-guest.sh" > /dev/null
run="$KH_ROOT/out/check-upgrade"
"$KH_ROOT/tools/vm-run.sh" -k "$kdir" -o "$run" -t 2400 -v "$vmk/bzImage" -r "$rootfs" upgrade/upgrade
"$KH_ROOT/tools/ktap-report.sh" "$run"
read -r p f s < "$run/counts"
echo "$p passed, $f failed, $s skipped"
[ "$f" = 0 ]
