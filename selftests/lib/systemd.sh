# kh_runner_under_systemd ROOT: make the trixie rootfs mounted at ROOT go on
# with the rig's tests under systemd (selftests/lib/guest-run.sh,
# boot-systemd): kh-rig.service runs guest-run.sh again there (after
# liveup-restore.service when that is installed), powering off when it
# ends or dies; no login prompts on the rig's console. The test then sets
# its next stage and leaves $KH_DIR/boot-systemd.
kh_runner_under_systemd() {
    cat > "$1/etc/systemd/system/kh-rig.service" <<UNIT
[Unit]
Description=kvmhost rig: the selftests, continued under systemd
After=liveup-restore.service
[Service]
Type=simple
Environment=PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/kh-bin
ExecStartPre=/bin/busybox --install -s /usr/local/kh-bin
ExecStart=/bin/sh /host/lib/guest-run.sh
# the end of the plan powers off; a runner that dies does too
SuccessAction=poweroff-force
FailureAction=poweroff-force
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console
[Install]
WantedBy=multi-user.target
UNIT
    mkdir -p "$1/usr/local/kh-bin"
    ln -sf ../kh-rig.service "$1/etc/systemd/system/multi-user.target.wants/kh-rig.service"
    ln -sf /dev/null "$1/etc/systemd/system/serial-getty@ttyS0.service"
    ln -sf /dev/null "$1/etc/systemd/system/getty.target"
}
