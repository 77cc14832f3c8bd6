#!/bin/bash
# `make bench`: benchmark tables, measured in the rig guest with the release
# kernel (and, for pure logic, on this host), printed as markdown.
set -euo pipefail
. "$(dirname "$0")/../tools/env.sh"
. "$(dirname "$0")/lib.sh"
# (bench/prezero.sh starts QEMU from the trixie rootfs for its VM start figure)
kh_bench_setup
run="$KH_ROOT/out/bench"
# One 1 GiB page reserved at boot, in a 6 GiB guest (the later -m wins):
# a 4 GiB rig guest has no free GiB-aligned range; bench/prezero.sh frees
# and reallocates the page.
KH_QEMU_EXTRA="${KH_QEMU_EXTRA:-} -m 6G" KH_EXTRA_CMDLINE="${KH_EXTRA_CMDLINE:-} hugepagesz=1G hugepages=1" \
    "$KH_ROOT/tools/vm-run.sh" -k "$kdir" -o "$run" -t 2400 -r "$rootfs" bench/kram bench/prezero > /dev/null
echo "| KRAM (rig guest, release kernel, TCG: $(nproc) host cores) | result |"
echo "|---|---|"
sed -n 's/.*KH-BENCH //p' "$run/console.log"
(cd userspace && cargo run -q --release -p kram-format --example validate_bench)
echo
echo "| prezero (rig guest, release kernel, TCG: $(nproc) host cores) | off | on | change | zeroing moved to \`liveup prezero zero\` |"
echo "|---|---|---|---|---|"
sed -n 's/.*KH-BENCH-PZ //p' "$run/console.log"
