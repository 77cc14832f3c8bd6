#!/bin/bash
# Build the userspace binaries the rig guest runs (liveup, the test helpers
# kram-selftest, kh-netpeer and e1000e-dma) and put them in out/bin, which
# tools/vm-run.sh shares with the guest as /host/bin.
# The guest's initramfs carries the host's glibc (for kexec), so dynamically
# linked binaries from this machine run there.
set -euo pipefail
. "$(dirname "$0")/env.sh"
# stdout carries only the path a caller captures; everything else goes to
# stderr (fd 3 is the caller's stdout).
exec 3>&1 1>&2
cd "$KH_ROOT/userspace"
cargo build --release -q --workspace --bins
mkdir -p "$KH_ROOT/out/bin"
for b in liveup kram-selftest kh-netpeer e1000e-dma; do cp "target/release/$b" "$KH_ROOT/out/bin/"; done
echo "$KH_ROOT/out/bin" >&3
