#!/bin/sh
# The iommu_preserve module loads and unloads with no warning in the kernel log.
. /host/lib/ktap.sh
kh_module_load_unload iommu_preserve
