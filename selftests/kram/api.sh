#!/bin/sh
# The KRAM kernel API from another module (kram/tests/kram_api_test.rs, which
# calls the exported symbols as iommu-preserve will): area create/lookup,
# fixed pages (same address every time, contiguous), alloc/free (no page
# twice, double free and foreign frees refused), then a kexec: the fixed
# pages keep their contents and physical address, the allocated page is
# still owned. Each check the module makes is one result here.
. /host/lib/ktap.sh
L=/host/bin/liveup
M=/host/modules/kram_api_test.ko
# run_client PARAMS: load the client, turn its lines into results, unload
run_client() {
    dmesg -c > /dev/null
    if ! insmod $M "$@"; then kh_fail "kram_api_test loads ($*)" "insmod failed"; return 1; fi
    dmesg | grep -E 'kram_api_test: (not ok|ok) - ' | sed 's/.*kram_api_test: //' > $KH_DIR/lines
    [ -s $KH_DIR/lines ] || kh_fail "kram_api_test reported" "no result lines"
    while read -r line; do
        case "$line" in
            "ok - "*) kh_ok "api: ${line#ok - }";;
            *) kh_fail "api: ${line#not ok - }" "see dmesg";;
        esac
    done < $KH_DIR/lines
    rmmod kram_api_test
}
case $KH_STAGE in
0)
    kh_dmesg_mark
    kh_kram_load
    $L kram status | grep -q ready || $L kram format --yes > /dev/null
    run_client phase=0
    dmesg | sed -n 's/.*kram_api_test: kept \(.*\)/\1/p' > $KH_DIR/kept
    kh_check "the client reported the pages it kept" grep -q fixed_phys= $KH_DIR/kept
    kh_check "a bad phase is refused" sh -c "! insmod $M phase=7 2>/dev/null"
    kh_dmesg_clean "no warning in dmesg before kexec"
    kh_kexec_next
    ;;
1)
    kh_dmesg_mark
    kh_kram_load
    run_client phase=1 $(cat $KH_DIR/kept)
    kh_check "kram unloads after its client is gone" rmmod kram
    kh_dmesg_clean "no warning in dmesg after kexec"
    ;;
esac
