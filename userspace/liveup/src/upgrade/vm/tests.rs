use super::*;

fn vm() -> VmConfig {
    VmConfig {
        name: "vm1".into(),
        root: "/mnt".into(),
        argv: vec!["qemu-system-x86_64".into(), "-m".into(), "256M".into()],
        qmp: "/run/liveup/vm1.qmp".into(),
        area: "vm-vm1".into(),
    }
}

#[test]
fn paths_inside_the_chroot_map_to_the_host() {
    let v = vm();
    assert_eq!(v.qmp_host(), PathBuf::from("/mnt/run/liveup/vm1.qmp"));
    assert_eq!(
        v.host_path(&v.state_path()),
        PathBuf::from("/mnt/run/liveup/vm1.state")
    );
    let c = v.command(true);
    let args: Vec<_> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(c.get_program(), "chroot");
    assert_eq!(
        args,
        [
            "/mnt",
            "qemu-system-x86_64",
            "-m",
            "256M",
            "-incoming",
            "defer"
        ]
    );
}

#[test]
fn mapped_files_lists_each_file_once() {
    let maps = "\
55d0c0000000-55d0c0100000 r--p 00000000 fe:00 1234   /usr/bin/qemu-system-x86_64
55d0c0100000-55d0c0900000 r-xp 00100000 fe:00 1234   /usr/bin/qemu-system-x86_64
7f0000000000-7f0010000000 rw-s 00000000 00:05 77     /dev/kram
7f0010000000-7f0010001000 rw-s 00000000 00:01 88     /memfd:ram (deleted)
7f0010001000-7f0010002000 r--p 00000000 fe:00 99     /usr/lib/x86_64-linux-gnu/lib with space.so
7f0010002000-7f0010003000 r--p 00000000 fe:00 98     /tmp/gone (deleted)
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0      [stack]
7ffd00021000-7ffd00022000 rw-p 00000000 00:00 0
";
    assert_eq!(
        super::mapped_files(maps),
        vec![
            std::path::PathBuf::from("/usr/bin/qemu-system-x86_64"),
            std::path::PathBuf::from("/usr/lib/x86_64-linux-gnu/lib with space.so"),
        ]
    );
}

#[test]
fn passed_through_devices_are_found_on_the_command_line() {
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        passthrough_devices(&a(&[
            "-device",
            "vfio-pci,host=0000:01:00.0,id=nic0",
            "-device",
            "virtio-net-pci,netdev=n0",
            "-device",
            "driver=vfio-pci,sysfsdev=/sys/bus/pci/devices/0000:02:00.0",
            "-device",
            "vfio-pci,id=x",
        ])),
        [
            "0000:01:00.0",
            "/sys/bus/pci/devices/0000:02:00.0",
            "(no host=)"
        ]
    );
    // other devices, and names that only contain it, are not
    assert!(passthrough_devices(&a(&[
        "-device",
        "vfio-pci-nohotplug2,host=1",
        "-name",
        "vfio-pci"
    ]))
    .is_empty());
    assert!(passthrough_devices(&a(&["-device", "e1000e,id=vfio-pci"])).is_empty());
}

#[test]
fn ram_that_devices_pin_is_mapped_from_kram_pages() {
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        ram_device(&a(&["-kernel", "k", "-serial", "stdio"])),
        "/dev/kram"
    );
    assert_eq!(
        ram_device(&a(&["-drive", "file=d.img,if=virtio,format=raw"])),
        "/dev/kram"
    );
    for pinned in [
        "file=d.img,if=virtio,format=raw,cache=none",
        "file=d.img,cache=directsync",
        "file=d.img,aio=native,cache.direct=on",
        "vfio-pci,host=0000:00:03.0",
        "tap,id=n0,vhost=on",
    ] {
        assert_eq!(
            ram_device(&a(&["-x", pinned])),
            "/dev/kram-pages",
            "{pinned}"
        );
    }
    // a word that only contains one of them is not one
    assert_eq!(ram_device(&a(&["-name", "cache=nonesuch"])), "/dev/kram");
}

#[test]
fn qemu_is_launched_chrooted_and_under_systemd_in_a_scope_of_its_own() {
    let v = vm();
    assert_eq!(
        v.launch(true, false).join(" "),
        "chroot /mnt qemu-system-x86_64 -m 256M -incoming defer"
    );
    assert_eq!(
        v.launch(false, true).join(" "),
        "systemd-run --scope --quiet --collect --slice=machine.slice --unit=liveup-vm-vm1.scope -- \
         chroot /mnt qemu-system-x86_64 -m 256M"
    );
    let host = VmConfig {
        root: "/".into(),
        name: "a b/c".into(),
        ..vm()
    };
    assert_eq!(
        host.launch(false, true)[5..7].join(" "),
        "--unit=liveup-vm-a_b_c.scope --"
    );
    assert_eq!(host.launch(false, false)[0], "qemu-system-x86_64");
}

#[test]
fn a_qemu_older_than_cpr_reboot_is_refused_by_its_version() {
    let v = |a, b, c| json!({"qemu": {"major": a, "minor": b, "micro": c}, "package": ""});
    assert_eq!(check_qemu_version("a", &v(11, 1, 3)).unwrap(), "11.1.3");
    assert_eq!(check_qemu_version("a", &v(8, 2, 0)).unwrap(), "8.2.0");
    let e = check_qemu_version("a", &v(7, 2, 19))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("VM a runs QEMU 7.2.19") && e.contains("8.2 or later"),
        "{e}"
    );
    assert!(check_qemu_version("a", &v(8, 1, 9)).is_err());
    let e = check_qemu_version("a", &json!({"qemu": {"major": "x"}}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("did not report a version"), "{e}");
}

#[test]
fn a_vm_maps_its_area_through_the_area_node() {
    use crate::kram::{area_node, DEFAULT_DEVICE, PAGES_DEVICE};
    assert_eq!(area_node(DEFAULT_DEVICE, 3), "/dev/kram-area/3");
    assert_eq!(area_node(PAGES_DEVICE, 32), "/dev/kram-pages-area/32");
    let pinned: Vec<String> = ["-device", "vfio-pci,host=0000:00:02.0"]
        .map(String::from)
        .into();
    assert_eq!(area_node(ram_device(&pinned), 7), "/dev/kram-pages-area/7");
}
