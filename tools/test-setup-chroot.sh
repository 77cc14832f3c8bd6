#!/bin/bash
# The set-up's package logic on a machine unlike this one: a fresh Debian 12
# (debootstrap minbase bookworm) whose apt lists are those debootstrap left,
# bookworm main only, so they predate the pinned packages (rustc-web and
# rust-web-src 1.96 are in bookworm-security; main has 1.85). Runs
# tools/setup-packages.sh there with the pins of tools/env.sh and checks:
#  1. with only bookworm in the sources, the pin cannot be had: exit 1 and
#     one line naming the package, the wanted and the available version;
#  2. with the sources of a Debian 12 image (bookworm, -updates, -security)
#     and the old lists: the lists are refreshed and the pinned rustc-web,
#     rust-web-src, clang-19/libclang end up installed and usable: rustc
#     1.96 compiles, the library source derived by env.sh's kh_rust_src is
#     that rustc's, clang-19 compiles, bindgen (this host's build) translates
#     a header with the chroot's libclang;
#  3. kh_rust_src follows the rustc that is installed (a stand-in rustc of
#     another version gets that version's library source, or none).
# Without the refresh, check 2 ends with rustc 1.85; with a hard-coded
# library path, check 3 fails. KTAP on stdout, "N passed, N failed" last.
# The base chroot is cached (keyed by this script); every run unpacks a
# fresh copy, downloaded .debs are cached.
set -euo pipefail
. "$(dirname "$0")/env.sh"
exec 3>&1 1>&2
n=0 p=0 f=0
ok() { n=$((n + 1)); p=$((p + 1)); echo "ok $n $*" >&3; }
nok() { n=$((n + 1)); f=$((f + 1)); echo "not ok $n $*" >&3; }
finish() { echo "1..$n" >&3; echo "$p passed, $f failed" >&3; [ "$f" = 0 ]; exit; }
echo "KTAP version 1" >&3

mirror=http://deb.debian.org/debian
key=$(sha256sum "$0" | cut -c1-16)
base="$KH_CACHE/setup-test/bookworm-$key.tar"
mkdir -p "$KH_CACHE/setup-test/archives/partial"
if [ ! -f "$base" ]; then
    d=$(mktemp -d "$KH_CACHE/setup-test/boot.XXXX")
    echo "setup-test: debootstrap bookworm (minbase), once"
    if ! debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
            bookworm "$d" "$mirror" > "$d.log" 2>&1; then
        tail -n 20 "$d.log"; nok "debootstrap bookworm"; rm -rf "$d"; finish
    fi
    rm -f "$d.log"
    tar -C "$d" -cf "$base.tmp" . && mv "$base.tmp" "$base"
    rm -rf "$d"
    # older keys of this script: not needed again
    find "$KH_CACHE/setup-test" -maxdepth 1 -name 'bookworm-*.tar' ! -path "$base" -delete
fi
root=$(mktemp -d /tmp/kh-setup-test.XXXX)
trap 'rm -rf "$root"' EXIT
tar -C "$root" -xf "$base"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
mkdir -p "$root/kh/tools" "$root/kh/bin" "$root/kh/selftests/lib"
cp "$KH_ROOT/tools/setup-packages.sh" "$KH_ROOT/tools/env.sh" "$root/kh/tools/"
# env.sh sources the polling helper from there
cp "$KH_ROOT/selftests/lib/wait.sh" "$root/kh/selftests/lib/"
cp "$KH_CACHE/cargo/bin/bindgen" "$root/kh/bin/"
# in the chroot: mounts private to this run, the .deb cache shared
inchroot() {
    unshare --mount --propagation private /bin/sh -c '
        mount -t proc proc "$1/proc" && mount --bind /dev "$1/dev" &&
        mount --bind "$2" "$1/var/cache/apt/archives" && shift 2 && exec chroot "$@"' \
        sh "$root" "$KH_CACHE/setup-test/archives" "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"
}
pins=$(printf '"%s" ' "${KH_PINNED_PKGS[@]}")
lists=$(ls "$root/var/lib/apt/lists" | grep -c Packages || true)
cand=$(inchroot apt-cache policy rustc-web | awk '/Candidate:/ {print $2}')
echo "setup-test: fresh bookworm, $lists package list(s), rustc-web candidate ${cand:-none}"
if [ "$lists" -eq 0 ] || [ -z "$cand" ] || [ "$cand" = "(none)" ]; then
    nok "the chroot's lists are old, not missing (found $lists lists, candidate '${cand:-none}')"; finish
fi
if dpkg --compare-versions "$cand" ge "$KH_RUST_VERSION"; then
    nok "the chroot's lists predate the pin (bookworm main now has rustc-web $cand: this test needs a list older than $KH_RUST_VERSION)"; finish
fi
ok "fresh bookworm chroot: old lists, rustc-web candidate $cand < $KH_RUST_VERSION"

# 1. bookworm only: the pin cannot be had; one clear line, exit 1
echo "deb $mirror bookworm main" > "$root/etc/apt/sources.list"
rm -f "$root/etc/apt/sources.list.d/"*
set +e
out=$(inchroot /bin/bash -c ". /kh/tools/env.sh; /kh/tools/setup-packages.sh $pins" 2>&1); rc=$?
set -e
line=$(printf '%s\n' "$out" | grep '^setup: rustc-web: wanted' || true)
if [ $rc = 1 ] && [ -n "$line" ] && printf '%s' "$line" | grep -q ">= $KH_RUST_VERSION, available 1\."; then
    ok "pin not to be had: exit 1, '$line'"
else
    nok "pin not to be had: exit $rc, output: $(printf '%s' "$out" | tail -n 3 | tr '\n' '|')"
fi
inchroot dpkg-query -W rustc-web >/dev/null 2>&1 && nok "nothing installed when the pin cannot be had" || ok "nothing installed when the pin cannot be had"

# 2. a Debian 12 image's sources, the old lists: refresh, pinned versions
cat > "$root/etc/apt/sources.list" <<SRC
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SRC
# back to the lists debootstrap left (check 1 refreshed bookworm main only)
rm -rf "$root/var/lib/apt/lists"
tar -C "$root" -xf "$base" ./var/lib/apt/lists
if inchroot /bin/bash -c ". /kh/tools/env.sh; /kh/tools/setup-packages.sh $pins"; then
    ok "setup-packages.sh with old lists"
else
    nok "setup-packages.sh with old lists exited non-zero"
fi
rv=$(inchroot /usr/bin/rustc --version 2>&1 || true)
case "$rv" in "rustc $KH_RUST_VERSION"*) ok "pinned rustc installed: $rv";; *) nok "pinned rustc: got '$rv', want $KH_RUST_VERSION";; esac
for pkg in rust-web-src clang-19 libclang1-19; do
    v=$(inchroot dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || true)
    [ -n "$v" ] && ok "$pkg installed ($v)" || nok "$pkg installed"
done
src=$(inchroot /bin/bash -c '. /kh/tools/env.sh; kh_rust_src' 2>/dev/null || true)
rvn=$(echo "$rv" | awk '{print $2}')
if [ "$src" = "/usr/src/rustc-$rvn/library" ] && [ -f "$root$src/core/src/lib.rs" ]; then
    ok "library source derived from the installed rustc: $src"
else
    nok "library source: kh_rust_src gave '$src' for '$rv'"
fi
cat > "$root/tmp/t.rs" <<'RS'
#![no_std]
pub fn add(a: u32, b: u32) -> Option<u32> { a.checked_add(b) }
RS
inchroot /usr/bin/rustc --edition 2021 --crate-type lib -o /tmp/t.rlib /tmp/t.rs \
    && ok "rustc compiles a no_std crate" || nok "rustc compiles a no_std crate"
printf 'struct kh_pair { unsigned int a; unsigned long b; };\nint kh_f(struct kh_pair *p);\n' > "$root/tmp/t.h"
printf '#include "t.h"\nint kh_f(struct kh_pair *p) { return (int)p->a; }\n' > "$root/tmp/t.c"
inchroot clang-19 -c -o /tmp/t.o /tmp/t.c && ok "clang-19 compiles" || nok "clang-19 compiles"
b=$(inchroot /usr/bin/env LIBCLANG_PATH=/usr/lib/llvm-19/lib /kh/bin/bindgen /tmp/t.h 2>&1 || true)
if printf '%s' "$b" | grep -q 'pub struct kh_pair' && printf '%s' "$b" | grep -q 'pub fn kh_f'; then
    ok "bindgen $KH_BINDGEN_VERSION translates a header with the chroot's libclang"
else
    nok "bindgen with the chroot's libclang: $(printf '%s' "$b" | head -n 3 | tr '\n' '|')"
fi
if inchroot /bin/bash -c ". /kh/tools/env.sh; /kh/tools/setup-packages.sh $pins" > /dev/null 2>&1 \
        && ! inchroot /bin/bash -c ". /kh/tools/env.sh; /kh/tools/setup-packages.sh $pins" 2>&1 | grep -q .; then
    ok "a second run does nothing and prints nothing"
else
    nok "a second run does nothing and prints nothing"
fi

# 3. kh_rust_src follows the installed rustc, whatever its version
mv "$root/usr/bin/rustc" "$root/usr/bin/rustc.real" 2>/dev/null || true
printf '#!/bin/sh\necho "rustc 1.97.3 (stand-in)"\n' > "$root/usr/bin/rustc"; chmod +x "$root/usr/bin/rustc"
mkdir -p "$root/usr/src/rustc-1.97.3/library/core/src"
src=$(inchroot /bin/bash -c '. /kh/tools/env.sh; kh_rust_src' 2>/dev/null || true)
[ "$src" = /usr/src/rustc-1.97.3/library ] && ok "kh_rust_src follows another rustc version ($src)" \
    || nok "kh_rust_src for rustc 1.97.3: got '$src'"
printf '#!/bin/sh\necho "rustc 1.98.0 (stand-in)"\n' > "$root/usr/bin/rustc"
src=$(inchroot /bin/bash -c '. /kh/tools/env.sh; kh_rust_src' 2>/dev/null || true)
[ -z "$src" ] && ok "kh_rust_src prints nothing when that rustc has no library source" \
    || nok "kh_rust_src for rustc 1.98.0 without source: got '$src'"
finish
