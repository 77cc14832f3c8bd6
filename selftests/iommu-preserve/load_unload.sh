#!/bin/sh
# The iommu_preserve module loads and unloads with no warning in the kernel log.
. /host/lib/ktap.sh
kh_module_load_unload iommu_preserve "" /dev/iommu-preserve
# Its device answers STATUS (loaded by liveup for the call, unloaded after).
kh_check "/dev/iommu-preserve: nothing preserved" sh -c \
    "/host/bin/liveup iommu --module /host/modules/iommu_preserve.ko status | grep -qx state=none && ! grep -q '^iommu_preserve ' /proc/modules"
