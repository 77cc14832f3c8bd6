#!/bin/bash
# Install the pinned toolchain and test-rig packages from Debian bookworm
# and crates.io. Idempotent: does nothing when everything is present.
set -euo pipefail
. "$(dirname "$0")/env.sh"
pkgs=(jq iproute2 rustc-web rust-web-src libclang1-19 clang-19 lld-19 llvm-19
      qemu-system-x86 kexec-tools busybox-static debootstrap
      bc flex bison libelf-dev libssl-dev cpio xz-utils zstd rsync kmod e2fsprogs)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    [ -n "$(ls /var/lib/apt/lists/*bookworm*Packages* 2>/dev/null)" ] || apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi
rv=$(/usr/bin/rustc --version)
case "$rv" in "rustc $KH_RUST_VERSION"*) ;; *) echo "setup: warning: Debian rustc is '$rv', pinned $KH_RUST_VERSION";; esac
if ! "$KH_CACHE/cargo/bin/bindgen" --version 2>/dev/null | grep -q "$KH_BINDGEN_VERSION"; then
    echo "setup: cargo install bindgen-cli $KH_BINDGEN_VERSION"
    CARGO_INSTALL_ROOT="$KH_CACHE/cargo" cargo install -q --locked bindgen-cli --version "$KH_BINDGEN_VERSION"
fi
echo "toolchain: $rv; $("$KH_CACHE/cargo/bin/bindgen" --version); $(clang-19 --version | head -n1); libclang in $LIBCLANG_PATH"
echo "rig: $(qemu-system-x86_64 --version | head -n1); kexec-tools $(dpkg-query -W -f='${Version}' kexec-tools); busybox $(dpkg-query -W -f='${Version}' busybox-static)"
