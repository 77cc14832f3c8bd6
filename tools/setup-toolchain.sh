#!/bin/bash
# Install the pinned toolchain and test-rig packages from Debian bookworm
# and crates.io. Idempotent: does nothing when everything is present.
# Every failure prints "setup: <what>: <why>" on stderr and exits 1.
set -euo pipefail
. "$(dirname "$0")/env.sh"
die() { echo "setup: $*" >&2; exit 1; }

"$KH_ROOT/tools/setup-packages.sh" "${KH_PINNED_PKGS[@]}" \
    jq python3 iproute2 qemu-system-x86 kexec-tools busybox-static debootstrap \
    bc flex bison libelf-dev libssl-dev cpio xz-utils zstd rsync kmod e2fsprogs patch make gcc libc6-dev \
    || die "Debian packages (tools/setup-packages.sh) failed"

rv=$(/usr/bin/rustc --version 2>&1) || die "/usr/bin/rustc does not run: $rv"
# The library source of the rustc that is installed (env.sh derives it, but
# it was sourced before the packages were there).
KH_RUST_SRC=$(kh_rust_src)
[ -n "$KH_RUST_SRC" ] || die "no library source for '$rv' in /usr/src/rustc-*/library (rust-web-src of the same version provides it)"
[ -f "$KH_RUST_SRC/core/src/lib.rs" ] || die "$KH_RUST_SRC has no core/src/lib.rs"
command -v cargo >/dev/null || die "cargo not found (rustup's or Debian's cargo builds bindgen-cli and the userspace workspace)"
if ! "$KH_CACHE/cargo/bin/bindgen" --version 2>/dev/null | grep -q "$KH_BINDGEN_VERSION"; then
    echo "setup: cargo install bindgen-cli $KH_BINDGEN_VERSION" >&2
    CARGO_INSTALL_ROOT="$KH_CACHE/cargo" cargo install -q --locked bindgen-cli --version "$KH_BINDGEN_VERSION" \
        || die "cargo install bindgen-cli $KH_BINDGEN_VERSION failed"
fi
echo "toolchain: $rv (library $KH_RUST_SRC); $("$KH_CACHE/cargo/bin/bindgen" --version); $(clang-19 --version | head -n1); libclang in $LIBCLANG_PATH"
echo "rig: $(qemu-system-x86_64 --version | head -n1); kexec-tools $(dpkg-query -W -f='${Version}' kexec-tools); busybox $(dpkg-query -W -f='${Version}' busybox-static)"
