#!/bin/bash
# `make bench`: benchmark tables, measured in the rig guest with the release
# kernel (and, for pure logic, on this host), printed as markdown.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$KH_ROOT"
export CARGO_INCREMENTAL=0
"$KH_ROOT/tools/setup-toolchain.sh" > /dev/null
kdir=$("$KH_ROOT/tools/build-modules.sh" release | tail -n1)
"$KH_ROOT/tools/build-userspace-guest.sh" > /dev/null
run="$KH_ROOT/out/bench"
"$KH_ROOT/tools/vm-run.sh" -k "$kdir" -o "$run" -t 900 bench/kram > /dev/null
echo "| KRAM (rig guest, release kernel, TCG: $(nproc) host cores) | result |"
echo "|---|---|"
sed -n 's/.*KH-BENCH //p' "$run/console.log"
(cd userspace && cargo run -q --release -p kram-format --example validate_bench)
