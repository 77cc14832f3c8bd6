#!/bin/bash
# Build the Debian trixie rootfs image for tests that run nested VMs: minbase
# debootstrap plus QEMU from trixie-backports (cpr-reboot, cpr-transfer) and
# kexec-tools, and systemd (selftests/upgrade/units.sh boots it as PID 1
# to test the shipped units). Cached by a hash of this script. Prints the image path.
# With `libvirt`: the same plus libvirt's QEMU driver and virsh, a separate
# image for the libvirt tests (selftests/libvirt/), so the other rigs keep theirs.
set -euo pipefail
. "$(dirname "$0")/env.sh"
# stdout carries only the path a caller captures; everything else goes to
# stderr (fd 3 is the caller's stdout).
exec 3>&1 1>&2
variant=${1:-}
case $variant in
"") extra= ;;
libvirt) extra="libvirt-daemon-driver-qemu libvirt-daemon libvirt-clients" ;;
*) echo "mkrootfs: unknown variant $variant (none or libvirt)" >&2; exit 2 ;;
esac
key=$(sha256sum "$0" | cut -c1-16)
img="$KH_CACHE/rootfs/trixie${variant:+-$variant}-$key.img"
[ -f "$img" ] && { echo "$img" >&3; exit 0; }
exec 9>"$KH_CACHE/rootfs.lock"; flock 9
[ -f "$img" ] && { echo "$img" >&3; exit 0; }
dir="$KH_CACHE/rootfs/trixie${variant:+-$variant}-$key.d"
rm -rf "$dir"; mkdir -p "$dir"
mirror=http://deb.debian.org/debian
echo "rootfs: debootstrap trixie (minbase)" >&2
debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    trixie "$dir" "$mirror" > "$dir.log" 2>&1 || { tail -n 20 "$dir.log" >&2; exit 1; }
echo "deb $mirror trixie-backports main" > "$dir/etc/apt/sources.list.d/backports.list"
echo "rootfs: installing qemu-system-x86 from trixie-backports" >&2
chroot "$dir" /bin/sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends -t trixie-backports qemu-system-x86 kexec-tools busybox-static systemd $extra \
    && apt-get clean" >> "$dir.log" 2>&1 || { tail -n 20 "$dir.log" >&2; exit 1; }
[ -z "$extra" ] || chroot "$dir" virsh --version | sed 's/^/rootfs: virsh /' >&2
chroot "$dir" qemu-system-x86_64 --version | head -n1 >&2
rm -rf "$dir/var/lib/apt/lists"/* "$dir/usr/share/doc" "$dir/usr/share/man"
size=$(( $(du -sm "$dir" | cut -f1) + 512 ))
mke2fs -q -t ext4 -d "$dir" -L kh-rootfs "$img.tmp" "${size}M"
mv "$img.tmp" "$img"
rm -rf "$dir"
echo "$img" >&3
