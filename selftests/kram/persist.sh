#!/bin/sh
# KRAM across kexec: a region with foreign content is refused and left
# untouched until formatted explicitly; areas, allocated pages and their
# contents keep their physical addresses through three kexecs in a row and
# an unload/reload; concurrent alloc/free never hands out a page twice;
# fuzzed ioctls and unprivileged opens are refused; corruption injected into
# the owner map, both superblocks or one superblock is detected with the
# region left as it was.
. /host/lib/ktap.sh
L=/host/bin/liveup
T=/host/bin/kram-selftest
PG=4096
# Metadata and all test areas lie in the first 8 MiB of the region.
region_hash() { dd if=/dev/mem bs=$PG skip=$((KRAM_BASE / PG)) count=2048 2>/dev/null | sha256sum | cut -d' ' -f1; }
state() { $L kram status --json | sed -n 's/.*"state": \([0-9]*\).*/\1/p'; }
generation() { $L kram status --json | sed -n 's/.*"generation": \([0-9]*\).*/\1/p'; }
load() { insmod /host/modules/kram.ko $KRAM_PARAMS; }
page_dump() { dd if=/dev/mem bs=$PG skip=$(( (KRAM_BASE + $1) / PG )) count=1 2>/dev/null | sha256sum | cut -d' ' -f1; }
poke() { # offset-in-region file: write the file's bytes there
    dd if="$2" of=/dev/mem bs=1 seek=$((KRAM_BASE + $1)) conv=notrunc 2>/dev/null
}
peek() { # offset-in-region count file
    dd if=/dev/mem of="$3" bs=1 skip=$((KRAM_BASE + $1)) count=$2 2>/dev/null
}
verify_all() { # label
    ok=1
    [ "$(state)" = 0 ] || ok=0
    [ "$(generation)" = "$(cat $KH_DIR/gen)" ] || ok=0
    [ "$($T show vm-a)" = "$(cat $KH_DIR/vm-a.show)" ] || ok=0
    [ "$($T show vm-b)" = "$(cat $KH_DIR/vm-b.show)" ] || ok=0
    $T verify vm-a 11 > /dev/null || ok=0
    $T verify vm-b 22 > /dev/null || ok=0
    [ "$(page_dump $(cat $KH_DIR/page))" = "$(cat $KH_DIR/page.sum)" ] || ok=0
    if [ $ok = 1 ]; then kh_ok "$1"; else kh_fail "$1" "areas, addresses or contents changed"; fi
}
# inject NAME OFFSET BYTES-FILE EXPECT: with the module unloaded, overwrite
# metadata, load, and check the outcome; then restore and check recovery.
inject() {
    name=$1 off=$2 bytes=$3 expect=$4
    rmmod kram
    n=$(wc -c < "$bytes")
    peek "$off" "$n" "$KH_DIR/saved"
    poke "$off" "$bytes"
    before=$(region_hash)
    kh_dmesg_mark
    load
    if [ "$expect" = refused ]; then
        if [ "$(state)" = 1 ] && dmesg | grep -q "metadata refused" && $T show vm-a > /dev/null 2>&1; then
            kh_fail "$name: detected and refused" "areas still usable"
        elif [ "$(state)" = 1 ] && dmesg | grep -q "metadata refused"; then
            kh_ok "$name: detected and refused"
        else
            kh_fail "$name: detected and refused" "state $(state)"
        fi
    else
        if [ "$(state)" = 0 ] && dmesg | grep -q "damaged"; then
            kh_ok "$name: detected, the other copy adopted"
        else
            kh_fail "$name: detected, the other copy adopted" "state $(state)"
        fi
    fi
    kh_check "$name: region left untouched" test "$(region_hash)" = "$before"
    kh_dmesg_clean "$name: no warning in dmesg"
    rmmod kram
    poke "$off" "$KH_DIR/saved"
    load
    verify_all "$name: after repair everything is back"
}

case $KH_STAGE in
0)
    # Start from foreign content whatever ran before: random bytes over
    # both superblock slots and the start of the owner map.
    rmmod kram 2>/dev/null
    dd if=/dev/urandom of=/dev/mem bs=$PG seek=$((KRAM_BASE / PG)) count=4 conv=notrunc 2>/dev/null
    before=$(region_hash)
    kh_dmesg_mark
    kh_check "kram loads on a region with foreign content" load
    kh_check "foreign metadata is refused" test "$(state)" = 1
    kh_check "refusal is one clear dmesg line" sh -c 'test "$(dmesg | grep -c "metadata refused")" = 1'
    kh_check "refused region left untouched" test "$(region_hash)" = "$before"
    $L kram create x --size 1M > $KH_DIR/out 2>&1; rc=$?
    if [ $rc = 1 ] && grep -q "refused" $KH_DIR/out; then
        kh_ok "areas cannot be created while refused (EUCLEAN, clear error)"
    else
        kh_fail "areas cannot be created while refused (EUCLEAN, clear error)" "rc=$rc: $(cat $KH_DIR/out)"
    fi
    if $L kram format > $KH_DIR/out 2>&1; then
        kh_fail "format without --yes is refused" "it formatted"
    else
        kh_check "format without --yes is refused, region untouched" sh -c "grep -q -- --yes $KH_DIR/out && test $(region_hash) = $before"
    fi
    kh_check "format --yes" $L kram format --yes
    kh_check "ready after format" test "$(state)" = 0
    kh_check "create areas" sh -c "$L kram create vm-a --size 4M && $L kram create vm-b --size 1M && $L kram create pool --size 0"
    # refused: NAME EXPECTED-MESSAGE COMMAND...: fails, exit code 1, says why
    refused() {
        n=$1 msg=$2; shift 2
        "$@" > $KH_DIR/out 2>&1; rc=$?
        if [ $rc = 1 ] && grep -q "$msg" $KH_DIR/out; then kh_ok "$n"; else kh_fail "$n" "rc=$rc: $(cat $KH_DIR/out)"; fi
    }
    refused "duplicate area refused (EEXIST)" "File exists" $L kram create vm-a --size 4K
    refused "bad name refused" "area name must be" $L kram create 'bad/name' --size 4K
    refused "oversized area refused (ENOSPC)" "No space left" $L kram create huge --size 1G
    refused "garbage size refused" "bad size" $L kram create x --size 12Q
    refused "unknown area delete refused (ENOENT)" "No such file" $L kram delete nosuch
    kh_check "fill areas through shared mappings" sh -c "$T fill vm-a 11 && $T fill vm-b 22"
    $T show vm-a > $KH_DIR/vm-a.show; $T show vm-b > $KH_DIR/vm-b.show
    off=$($T alloc pool); echo "$off" > $KH_DIR/page
    dd if=/dev/urandom of=$KH_DIR/pagedata bs=$PG count=1 2>/dev/null
    poke "$off" $KH_DIR/pagedata
    page_dump "$off" > $KH_DIR/page.sum
    kh_check "4 threads x 3000 alloc/free: no page twice, none leaked" $T stress pool 4 3000
    kh_check "5000 fuzzed ioctls: errors only, nothing changed" $T fuzz 5000 7
    kh_check "unprivileged open denied" $T unpriv
    kh_check "debugfs shows the region" sh -c 'grep -q "state: ready" /sys/kernel/debug/kram/status && grep -q "area .* vm-a" /sys/kernel/debug/kram/status'
    generation > $KH_DIR/gen
    kh_check "verify before kexec" $T verify vm-a 11
    kh_dmesg_clean "no warning in dmesg before kexec"
    kh_kexec_next
    ;;
1|2|3)
    kh_dmesg_mark
    kh_check "kexec $KH_STAGE: kram adopts the region" load
    verify_all "kexec $KH_STAGE: areas, addresses, allocated page and contents intact"
    kh_dmesg_clean "kexec $KH_STAGE: no warning in dmesg"
    if [ "$KH_STAGE" -lt 3 ]; then kh_kexec_next; exit 0; fi

    rmmod kram && load
    verify_all "unload and reload keep the state"

    printf '\377\377\377\377' > $KH_DIR/junk4
    # owner-map word of page 200: map starts at page 2
    inject "corrupt owner map" $((2 * PG + 4 * 200)) $KH_DIR/junk4 refused
    printf '\125' > $KH_DIR/junk1
    dd if=/dev/zero of=$KH_DIR/zero64 bs=64 count=1 2>/dev/null
    rmmod kram
    peek 40 64 $KH_DIR/slot0; peek $((PG + 40)) 64 $KH_DIR/slot1
    poke 40 $KH_DIR/zero64; poke $((PG + 40)) $KH_DIR/zero64
    before=$(region_hash)
    kh_dmesg_mark
    load
    kh_check "corrupt both superblocks: detected and refused" sh -c "test $(state) = 1 && dmesg | grep -q 'metadata refused'"
    kh_check "corrupt both superblocks: region left untouched" test "$(region_hash)" = "$before"
    rmmod kram; poke 40 $KH_DIR/slot0; poke $((PG + 40)) $KH_DIR/slot1; load
    verify_all "corrupt both superblocks: after repair everything is back"
    cur=$(( $(generation) % 2 ))
    inject "corrupt area table in the current superblock" $((cur * PG + 128 + 3)) $KH_DIR/junk1 adopted

    off=$(cat $KH_DIR/page)
    kh_check "allocated page still owned by its area after 3 kexecs (free works)" $T free pool "$off"
    if $T free pool "$off" 2>/dev/null; then kh_fail "double free refused" "freed twice"; else kh_ok "double free refused"; fi
    kh_dmesg_clean "no warning in dmesg"
    rmmod kram
    ;;
esac
