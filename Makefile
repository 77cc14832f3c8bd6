# kvmhost: kernel components in Rust and the liveup tool for KVM cloud hosts.
#   make demo     the main job, end to end in a QEMU guest, with figures
#   make check    every test (userspace on the host, kernel in the rig)
# Downloads and built kernels are cached in $(KH_CACHE), outside the clone.
export KH_CACHE ?= /var/cache/kvmhost
VARIANT ?= debug

.PHONY: all setup kernel modules userspace install check check-upgrade check-userspace check-migrate demo bench bench-upgrade bench-migrate bench-linux clean
all: modules userspace

setup:
	tools/setup-toolchain.sh
	tools/fetch-kernel-source.sh

kernel: setup
	tools/build-kernel.sh $(VARIANT)

modules: setup
	tools/build-modules.sh $(VARIANT)

userspace:
	cd userspace && cargo build --release

# liveup and its systemd units (liveup-restore.service relaunches saved VMs
# after a kexec; liveup-prezero.timer/.service zero memory ahead of time).
# Each VM's QEMU then runs in a scope of its own (liveup-vm-NAME.scope).
DESTDIR ?=
install: userspace
	install -D -m 0755 userspace/target/release/liveup $(DESTDIR)/usr/bin/liveup
	install -d $(DESTDIR)/lib/systemd/system
	install -m 0644 userspace/liveup/systemd/*.service userspace/liveup/systemd/*.timer $(DESTDIR)/lib/systemd/system/

check:
	tools/check.sh

# The hot-upgrade selftest alone (part of `make check`); VARIANT=debug runs
# it on the KASAN + lockdep host kernel.
check-upgrade:
	VARIANT=$(if $(filter command line,$(origin VARIANT)),$(VARIANT),release) tools/check-upgrade.sh

# liveup migrate end to end: two network namespaces, a shaped link, TCG
# guests (needs root); see Documentation/migrate.rst.
check-migrate:
	tools/check-migrate.sh

check-userspace:
	cd userspace && cargo fmt --all -- --check && cargo clippy --workspace --all-targets -- -D warnings && cargo test --workspace

demo:
	tools/demo.sh

bench:
	bench/run-kram-prezero.sh
	bench/run-upgrade.sh

bench-upgrade:
	bench/run-upgrade.sh

bench-migrate:
	bench/migrate.sh

# Linux L2 guests booted and upgraded in a row: KH_BENCH_LANES rigs side by
# side, KH_SERIES_UPGRADES boots and upgrades each (2 x 10).
bench-linux:
	bench/linux-guest.sh

clean:
	rm -rf out .kdir
	cd userspace && cargo clean
	find kram iommu-preserve prezero vfio-keep \( -name '*.o' -o -name '*.ko' -o -name '*.mod*' -o -name '.*.cmd' -o -name 'modules.order' \) -delete
	rm -f Module.symvers modules.order
