#!/bin/sh
# prezero in the rig guest: time to populate N GiB (mmap + populate) of
# anonymous 4K, THP, hugetlb 2M and 1G memory, to VFIO_IOMMU_MAP_DMA N GiB
# through the passed-through e1000e's container, and from QEMU start to the
# guest's first instruction with N GiB of RAM (hugetlb, anonymous) and the
# e1000e as a vfio-pci device: prezero off (module not loaded: the kernel
# clears every page on the way out, as Linux 7.3 does) against on (hugetlb
# pages zeroed, or 4K/THP pools filled, before, by `liveup prezero zero`,
# whose time is reported as "moved" CPU time).
# Each figure is the median of PZ_REPS runs measured in this same boot.
# Prints markdown table rows as KH-BENCH-PZ lines.
. /host/lib/ktap.sh
. /host/lib/prezero.sh
N=${PZ_GIB:-1}
REPS=${PZ_REPS:-3}
SZ=${N}G
row() { echo "KH-BENCH-PZ | $* |"; }
med() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ms_of() { sed -n 's/.*: \([0-9.]*\) ms$/\1/p' | tail -n1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.1f%%", (b - a) * 100 / a; else print "n/a" }'; }
pz_unload

# bench_one NAME POOLFN POOLARG ZEROSIZE CMD...: off/on medians of CMD's "...: X ms".
bench_one() {
    name=$1 poolfn=$2 poolarg=$3 zsize=$4; shift 4
    off="" on="" zt=""
    for r in $(seq $REPS); do
        pz_unload
        $poolfn 0; $poolfn "$poolarg" || { row "$name | pool of $poolarg failed | | | |"; return; }
        off="$off $("$@" | ms_of)"
        $poolfn 0; $poolfn "$poolarg"
        pz_load
        z=$($L prezero zero --size $zsize --node 0 --count all | tail -n1)
        zt="$zt $(echo "$z" | sed -n 's/.* in \([0-9.]*\) ms$/\1/p')"
        on="$on $("$@" | ms_of)"
        pz_unload
    done
    o=$(echo $off | med); n=$(echo $on | med); z=$(echo $zt | med)
    row "$name | $o ms | $n ms | $(ratio $o $n) | $z ms"
    $poolfn 0
}
none() { :; }

# bench_pool NAME SIZE COUNT CMD...: off (no module) against on (the SIZE
# pool filled with COUNT zeroed pages first, its time "moved").
bench_pool() {
    name=$1 psize=$2 pcount=$3; shift 3
    off="" on="" zt=""
    for r in $(seq $REPS); do
        pz_unload
        off="$off $("$@" | ms_of)"
        pz_load
        z=$($L prezero zero --pool --size $psize --node 0 --count $pcount | tail -n1)
        zt="$zt $(echo "$z" | sed -n 's/.* in \([0-9.]*\) ms$/\1/p')"
        on="$on $("$@" | ms_of)"
        kh_log "$name: pool $(grep " $(case $psize in 2M) echo thp;; *) echo $psize;; esac) " $PZ/stats)"
        pz_unload
    done
    o=$(echo $off | med); n=$(echo $on | med); z=$(echo $zt | med)
    row "$name | $o ms | $n ms | $(ratio $o $n) | $z ms"
}

kh_log "bench: N=$N GiB, $REPS reps"
bench_pool "populate $N GiB anonymous 4K" 4K $((N * 262144)) $L prezero populate --kind anon --size $SZ
bench_pool "populate $N GiB anonymous THP" 2M $((N * 512)) $L prezero populate --kind thp --size $SZ
# mTHP: PMD THP off, 64K on, for this row only.
M=/sys/kernel/mm/transparent_hugepage
if [ -w $M/hugepages-64kB/enabled ]; then
    pmd=$(sed 's/.*\[\(.*\)\].*/\1/' $M/hugepages-2048kB/enabled)
    echo never > $M/hugepages-2048kB/enabled; echo always > $M/hugepages-64kB/enabled
    bench_pool "populate $N GiB anonymous mTHP 64K" 64K $((N * 16384)) $L prezero populate --kind thp --size $SZ
    echo never > $M/hugepages-64kB/enabled; echo "$pmd" > $M/hugepages-2048kB/enabled
fi
bench_one "populate $N GiB hugetlb 2M" pz_pool2m $((N * 512)) 2M \
    $L prezero populate --kind huge2m --size $SZ
if pz_pool1g $N; then
    pz_pool1g 0
    bench_one "populate $N GiB hugetlb 1G" pz_pool1g $N 1G $L prezero populate --kind huge1g --size $SZ
else
    pz_pool1g 0
    row "populate $N GiB hugetlb 1G | no 1G page at run time | | |"
fi
if pz_vfio_bind; then
    bench_pool "VFIO_IOMMU_MAP_DMA $N GiB anonymous 4K" 4K $((N * 262144)) \
        $L prezero vfio-map --group "$PZ_GROUP" --kind anon --size $SZ
    bench_pool "VFIO_IOMMU_MAP_DMA $N GiB anonymous THP" 2M $((N * 512)) \
        $L prezero vfio-map --group "$PZ_GROUP" --kind thp --size $SZ
    bench_one "VFIO_IOMMU_MAP_DMA $N GiB hugetlb 2M" pz_pool2m $((N * 512)) 2M \
        $L prezero vfio-map --group "$PZ_GROUP" --kind huge2m --size $SZ
    if pz_pool1g $N; then
        pz_pool1g 0
        bench_one "VFIO_IOMMU_MAP_DMA $N GiB hugetlb 1G" pz_pool1g $N 1G \
            $L prezero vfio-map --group "$PZ_GROUP" --kind huge1g --size $SZ
    fi
    # QEMU start to the guest's first instruction: a 64 KiB BIOS whose reset
    # vector writes 'X' to the debug console port 0xe9.
    if [ "${PZ_QEMU:-1}" = 1 ] && mount /dev/vda /mnt 2>/dev/null; then
        mkdir -p /mnt/host
        for d in dev proc sys host; do mount --bind /$d /mnt/$d; done
        mount -t tmpfs tmpfs /mnt/tmp
        head -c 65520 /dev/zero > /mnt/tmp/bios.bin
        printf '\260\130\346\351\364\353\375\000\000\000\000\000\000\000\000\000' >> /mnt/tmp/bios.bin
        acc=tcg; [ -c /dev/kvm ] && acc=kvm
        # qemu_first [BACKEND]: hugetlb memfd (default) or anonymous RAM.
        qemu_first() {
            be="memory-backend-memfd,id=m,size=${N}G,hugetlb=on,hugetlbsize=2M"
            [ "${1:-}" = anon ] && be="memory-backend-ram,id=m,size=${N}G"
            rm -f /mnt/tmp/dc; : > /mnt/tmp/dc
            t0=$(cut -d' ' -f1 /proc/uptime)
            chroot /mnt qemu-system-x86_64 -accel $acc -cpu qemu64 -m ${N}G -nodefaults -display none \
                -object "$be" \
                -machine q35,memory-backend=m -bios /tmp/bios.bin \
                -debugcon file:/tmp/dc -device vfio-pci,host=$PZ_DEV -monitor none -serial none \
                < /dev/null > /tmp/qemu.log 2>&1 &
            qp=$!
            # its first instruction, or QEMU gone
            _first() { grep -q X /mnt/tmp/dc 2>/dev/null || ! kill -0 $qp 2>/dev/null; }
            kh_wait -m 10 60 _first || true
            t1=$(cut -d' ' -f1 /proc/uptime)
            kill $qp 2>/dev/null; wait $qp 2>/dev/null
            if grep -q X /mnt/tmp/dc; then
                echo "qemu first instruction: $(awk -v a=$t0 -v b=$t1 'BEGIN { printf "%.0f", (b - a) * 1000 }') ms"
            else
                kh_log "qemu: $(tail -n 3 /tmp/qemu.log)"
            fi
        }
        bench_one "QEMU start to first guest instruction, $N GiB hugetlb 2M + vfio-pci ($acc)" \
            pz_pool2m $((N * 512)) 2M qemu_first
        bench_pool "QEMU start to first guest instruction, $N GiB anonymous (THP) + vfio-pci ($acc)" \
            2M $((N * 512)) qemu_first anon
        for d in tmp host sys proc dev; do umount /mnt/$d; done
        umount /mnt
    fi
    pz_vfio_unbind
else
    row "VFIO_IOMMU_MAP_DMA | e1000e not bound to vfio-pci | | |"
fi
kh_ok "prezero bench ran"
