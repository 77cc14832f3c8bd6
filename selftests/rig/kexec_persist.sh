#!/bin/sh
# A pattern written into the memmap= reserved region survives a kexec into
# the same kernel (kexec_file_load, memmap= passed again). The host measures
# the time from "kexec -e" to init in the new kernel from its timestamps.
. /host/lib/ktap.sh
read addr size < /host/memmap
page=4096
first=$((addr / page))
case $size in *M) bytes=$((${size%M} * 1024 * 1024));; *G) bytes=$((${size%G} * 1024 * 1024 * 1024));; esac
last=$((first + bytes / page - 256))   # the last MiB of the region

# A top-level Reserved range of /proc/iomem contains the whole region (e820
# merges it with adjacent firmware ranges), and no System RAM touches it.
region_reserved() {
    a=$((addr)); end=$((addr + bytes - 1))
    found=1; grep -v '^ ' /proc/iomem > /tmp/iomem.top
    while read -r range colon name; do
        s=$((0x${range%-*})); e=$((0x${range#*-}))
        [ "$name" = Reserved ] && [ $s -le $a ] && [ $e -ge $end ] && found=0
        [ "$name" = "System RAM" ] && [ $s -le $end ] && [ $e -ge $a ] && { found=1; break; }
    done < /tmp/iomem.top
    [ $found = 0 ] && return 0
    kh_log "region not reserved in /proc/iomem:"; grep -v "^ " /proc/iomem
    return 1
}
dump() { dd if=/dev/mem bs=$page skip=$1 count=256 2>/dev/null; }

case $KH_STAGE in
0)
    kh_check "region is reserved, not System RAM" region_reserved
    dd if=/dev/urandom of="$KH_DIR/first" bs=$page count=256 2>/dev/null
    dd if=/dev/urandom of="$KH_DIR/last" bs=$page count=256 2>/dev/null
    dd if="$KH_DIR/first" of=/dev/mem bs=$page seek=$first count=256 conv=notrunc 2>/dev/null
    dd if="$KH_DIR/last" of=/dev/mem bs=$page seek=$last count=256 conv=notrunc 2>/dev/null
    if dump $first | cmp -s - "$KH_DIR/first" && dump $last | cmp -s - "$KH_DIR/last"; then
        kh_ok "pattern written and read back"
    else
        kh_fail "pattern written and read back" "read-back differs"
    fi
    kh_kexec_next
    ;;
1)
    kh_ok "kexec into the same kernel"
    kh_dmesg_clean "new kernel's boot log has no warning"
    kh_check "region still reserved after kexec" region_reserved
    if dump $first | cmp -s - "$KH_DIR/first" && dump $last | cmp -s - "$KH_DIR/last"; then
        kh_ok "pattern survived kexec"
    else
        kh_fail "pattern survived kexec" "region content changed"
    fi
    ;;
esac
