#!/bin/bash
# Print "kvm" if a guest really boots under KVM here, else "tcg". The answer
# is cached per host boot. /dev/kvm exists on our build machines but is not
# VMX-based and QEMU guests fail under it, so "tcg" is the normal answer.
set -euo pipefail
. "$(dirname "$0")/env.sh"
kernel=$1
cache="$KH_CACHE/accel-$(cat /proc/sys/kernel/random/boot_id)"
[ -f "$cache" ] && { cat "$cache"; exit 0; }
ans=tcg
if [ -w /dev/kvm ] && [ "${KH_ACCEL:-}" != tcg ]; then
    # Boot to the point where the kernel looks for init (there is none):
    # that only happens if the CPU really ran the kernel.
    if timeout 30 qemu-system-x86_64 -machine q35 -accel kvm -cpu host -m 512M \
         -kernel "$kernel" -append "console=ttyS0 panic=-1 root=/dev/nonexistent" \
         -display none -serial stdio -monitor none -no-reboot < /dev/null 2>&1 \
         | grep -q -m1 -E 'VFS: Unable to mount root|No working init|Kernel panic'; then
        ans=kvm
    fi
fi
echo "$ans" | tee "$cache"
