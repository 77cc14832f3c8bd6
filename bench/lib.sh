# bench/lib.sh, sourced by the bench drivers after tools/env.sh:
# kh_bench_setup does what each does first: the toolchain, the release
# kernel with our modules ($kdir), the trixie rootfs ($rootfs) and the
# rig's userspace binaries (out/bin).
kh_bench_setup() {
    cd "$KH_ROOT"
    export CARGO_INCREMENTAL=0
    "$KH_ROOT/tools/setup-toolchain.sh" > /dev/null
    kdir=$("$KH_ROOT/tools/build-modules.sh" release)
    rootfs=$("$KH_ROOT/tools/mkrootfs.sh")
    "$KH_ROOT/tools/build-userspace-guest.sh" > /dev/null
}
