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
# Replaced only when changed, and by rename: a rig starting beside this
# (tools/check.sh) copies out/bin and must never see half a binary.
for b in liveup kram-selftest kh-netpeer e1000e-dma; do
    cmp -s "target/release/$b" "$KH_ROOT/out/bin/$b" && continue
    cp "target/release/$b" "$KH_ROOT/out/bin/.$b.new"
    mv -f "$KH_ROOT/out/bin/.$b.new" "$KH_ROOT/out/bin/$b"
done
echo "$KH_ROOT/out/bin" >&3
