#!/bin/sh
# Where the KRAM region comes from. `liveup kram load` finds the one
# memmap=SIZE$ADDR range on /proc/cmdline and passes it to the module; the
# module alone (no parameters) adopts reserve_mem=SIZE:ALIGN:kram, which the
# rig also reserves; half-given parameters, a range in System RAM, a range
# another driver owns and a misaligned one are refused: a CLI error with the
# errno and exactly one line in dmesg.
. /host/lib/ktap.sh
L=/host/bin/liveup
M=/host/modules/kram.ko
field() { $L kram status --json | sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p"; }
# refused NAME DMESG-PATTERN ERRNO-TEXT PARAMS: the load fails with a CLI
# error naming the errno and exactly one kram line in dmesg.
refused() {
    name=$1 msg=$2 err=$3 params=$4
    dmesg -c > /dev/null
    if $L kram load $M --params "$params" > $KH_DIR/out 2>&1; then
        rmmod kram; kh_fail "$name" "loaded with $params"
    elif [ "$(dmesg | grep -c "kram: $msg")" = 1 ] && [ "$(dmesg | grep -c "kram:")" = 1 ] \
        && grep -q "cannot load.*$err" $KH_DIR/out && ! grep -q "^kram " /proc/modules; then
        kh_ok "$name"
    else
        kh_fail "$name" "cli: $(cat $KH_DIR/out) dmesg: $(dmesg | grep kram: | tr '\n' '|')"
    fi
}
kh_dmesg_mark
rmmod kram 2>/dev/null

out=$($L kram load $M 2>&1)
kh_log "$out"
kh_check "liveup kram load: memmap= range found on /proc/cmdline" \
    sh -c "echo '$out' | grep -q 'size=$KRAM_SIZE' && test \"\$(printf %d $KRAM_BASE)\" = $(field base)"
kh_check "liveup kram load twice: already loaded is fine" $L kram load $M
rmmod kram

dmesg -c > /dev/null
insmod $M
kh_check "no parameters: the module adopts reserve_mem=...:kram" \
    sh -c "dmesg | grep -q 'kram: region .* from reserve_mem=...:kram' && test $(field size) = $((32 << 20))"
rbase=$(field base)
kh_check "reserve_mem region is not the memmap one" test "$rbase" != "$(printf %d $KRAM_BASE)"
# Fresh RAM is not KRAM metadata: refused until formatted; then it works.
kh_check "reserve_mem region: unformatted content refused" test "$(field state)" != 0
$L kram format --yes > /dev/null
$L kram create disc --size 1M > /dev/null
kh_check "reserve_mem region: formatted, area created" test "$(field areas)" = 1
rmmod kram; insmod $M
kh_check "reserve_mem region: reload adopts the area" test "$(field areas)" = 1
rmmod kram

refused "base= without size= is refused" "give both base= and size=" "Invalid argument" "base=$KRAM_BASE"
# 0x1000000 (16 MiB) is System RAM in every rig guest.
refused "a range in System RAM is refused" "region .* overlaps System RAM" "Invalid argument" \
    "base=0x1000000 size=0x1000000"
# the NIC's BAR: requested by its driver (e1000e or vfio-pci)
r=$(grep -m1 -E ' : (e1000e|vfio-pci)$' /proc/iomem | sed 's/^ *//; s/ .*//')
kh_log "NIC BAR: $r"
refused "a range another driver owns is refused" "region .* already owned by another driver" \
    "Device or resource busy" "base=0x${r%-*} size=$((0x${r#*-} - 0x${r%-*} + 1))"
refused "a misaligned range is refused" "region .* not page aligned" "Invalid argument" \
    "base=$((KRAM_BASE + 100)) size=$KRAM_SIZE"
kh_dmesg_clean "no warning in dmesg"
