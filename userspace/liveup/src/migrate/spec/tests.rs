use super::parse::in_pool;
use super::*;

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn names(v: &[&str]) -> Names {
    Names::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

fn policy() -> Policy {
    Policy {
        pools: names(&["images=/srv/images", "boot=/srv/boot"]),
        networks: names(&["br0=br-vm"]),
        max_memory_mib: 4096,
        max_vcpus: 4,
        allow_host_cpu: false,
    }
}

/// What `liveup vm start` records for a VM with a disk and a NIC, and the
/// rig's own options (check-migrate's VMs); the sandbox of a VM that came
/// by `migrate listen` (each host picks its own).
const SOURCE: &str = "qemu-system-x86_64 -name vm1 \
    -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny \
    -object memory-backend-file,id=ram0,size=268435456,mem-path=/dev/kram-area/3,offset=0,share=on,align=2M \
    -machine memory-backend=ram0 -m 256M -qmp unix:/run/liveup/vm1.qmp,server=on,wait=off \
    -daemonize -pidfile /run/liveup/vm1.pid -incoming defer -S \
    -machine q35 -accel kvm -cpu qemu64 -smp 2 -display none -nodefaults \
    -kernel /srv/boot/bzImage -initrd /srv/boot/vm.cpio -append console=ttyS0 \
    -serial file:/tmp/vm1.0.log -serial file:/tmp/vm1.1.log \
    -drive file=/srv/images/vm1/disk.img,if=virtio,id=d0,format=raw,cache=none \
    -device virtio-serial-pci -chardev socket,id=c1,path=/run/vm1.qga,server=on,wait=off \
    -device virtserialport,chardev=c1,name=org.qemu.guest_agent.0 \
    -netdev bridge,id=n0,br=br0 -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56";

#[test]
fn a_recorded_command_line_becomes_a_description() {
    let s = good();
    assert_eq!(s.name, "vm1");
    assert_eq!((s.memory_mib, s.vcpus), (256, 2));
    assert_eq!(
        (s.machine.as_str(), s.accel.as_str(), s.cpu.as_str()),
        ("q35", "kvm", "qemu64")
    );
    let b = s.boot.as_ref().unwrap();
    assert_eq!(
        b.kernel,
        PoolFile {
            pool: "boot".into(),
            path: "bzImage".into()
        }
    );
    assert_eq!(b.initrd.as_ref().unwrap().path, "vm.cpio");
    assert_eq!(b.append, "console=ttyS0");
    assert_eq!(s.serials, 2);
    assert!(s.ram_backend);
    assert_eq!(s.guest_agent, Some(0));
    assert_eq!(
        s.disks,
        vec![Disk {
            id: "d0".into(),
            file: PoolFile {
                pool: "images".into(),
                path: "vm1/disk.img".into()
            },
            format: "raw".into(),
            cache: "none".into(),
        }]
    );
    assert_eq!(
        s.nics,
        vec![Nic {
            id: "n0".into(),
            mac: "52:54:00:12:34:56".into(),
            network: "br0".into()
        }]
    );
    s.validate(&policy()).unwrap();
}

#[test]
fn the_destination_builds_its_own_command_line() {
    let s = good();
    let l = Launch {
        qemu: "/usr/bin/qemu-system-x86_64".into(),
        qmp: "/run/liveup/vm1.qmp".into(),
        log_dir: "/var/log/liveup".into(),
        ram_object: None,
        fds: Default::default(),
    };
    // the destination's pools are other directories with the same names
    let mut p = policy();
    p.pools = names(&["images=/mnt/shared/img", "boot=/mnt/shared/boot"]);
    assert_eq!(
        s.to_argv(&p, &l).unwrap(),
        args(
            "/usr/bin/qemu-system-x86_64 -name vm1 -object memory-backend-ram,id=ram0,size=256M \
             -machine q35,memory-backend=ram0 -accel kvm -cpu qemu64 -m 256M -smp 2 \
             -display none -nodefaults \
             -sandbox on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny \
             -kernel /mnt/shared/boot/bzImage -initrd /mnt/shared/boot/vm.cpio \
             -append console=ttyS0 -serial file:/var/log/liveup/vm1.serial0.log \
             -serial file:/var/log/liveup/vm1.serial1.log \
             -drive file=/mnt/shared/img/vm1/disk.img,if=virtio,id=d0,format=raw,cache=none \
             -device virtio-serial-pci,id=vser0 \
             -chardev socket,id=qga0,path=/var/log/liveup/vm1.qga,server=on,wait=off \
             -device virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0 \
             -netdev bridge,id=n0,br=br-vm -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56 \
             -qmp unix:/run/liveup/vm1.qmp,server=on,wait=off -incoming defer -S"
        )
    );
    // a RAM backend of the destination's own, and a `,` in its own paths
    let l = Launch {
        ram_object: Some("memory-backend-file,id=ram0,size=268435456,mem-path=/dev/kram-area/7,offset=0,share=on".into()),
        log_dir: "/var/log/a,b".into(),
        ..l
    };
    let a = s.to_argv(&p, &l).unwrap();
    assert!(a
        .windows(2)
        .any(|w| w[0] == "-machine" && w[1] == "q35,memory-backend=ram0"));
    assert!(a.contains(&"file:/var/log/a,,b/vm1.serial0.log".to_string()));
    // without a NIC, no bridge helper to run: no new programs at all
    let mut s = s;
    s.nics.clear();
    let a = s.to_argv(&p, &l).unwrap();
    assert!(a.windows(2).any(|w| w[0] == "-sandbox"
        && w[1] == "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"));
}

#[test]
fn a_description_survives_the_wire() {
    let s = good();
    let j = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<VmSpec>(&j).unwrap(), s);
    // a field this version does not know is refused, not ignored
    let extra = j.replacen("{", "{\"argv\":[\"-S\"],", 1);
    assert!(serde_json::from_str::<VmSpec>(&extra).is_err());
}

#[test]
fn options_that_cannot_move_are_refused_by_name() {
    let pools = names(&["images=/srv/images"]);
    let base = "qemu -name v -machine q35 -m 64 -nodefaults -cpu max";
    for (extra, named) in [
        ("-device vfio-pci,host=0000:01:00.0", "vfio-pci"),
        ("-chardev socket,id=c,path=/tmp/x", "virtio-serial"),
        ("-chardev socket,id=c,path=/tmp/x,server=on,wait=off,logfile=/etc/x", "logfile"),
        ("-device virtio-serial-pci -device virtserialport,chardev=c,name=org.qemu.guest_agent.0", "virtio-serial"),
        ("-device virtserialport,chardev=c,name=com.evil.0", "com.evil"),
        ("-machine memory-backend=ram0", "memory-backend-file"),
        ("-smp 4,maxcpus=8", "maxcpus"),
        ("-m 1G,maxmem=4G", "maxmem"),
        ("-drive file=/srv/images/a.img", "if=virtio"),
        (
            "-drive file=/srv/images/a.img,if=virtio,snapshot=on",
            "snapshot=on",
        ),
        ("-drive file=/etc/shadow,if=virtio", "/etc/shadow"),
        (
            "-drive file=/srv/images/../../etc/shadow,if=virtio",
            "shadow",
        ),
        ("-netdev tap,id=n0,script=/tmp/evil", "script"),
        (
            "-device virtio-net-pci,netdev=n9,mac=52:54:00:00:00:01",
            "n9",
        ),
        (
            "-object memory-backend-ram,id=m1,size=64M",
            "memory-backend-ram",
        ),
        ("-machine q35,kernel-irqchip=split", "kernel-irqchip"),
        ("-serial tcp:1.2.3.4:5", "tcp:"),
        ("-append quiet", "-kernel"),
        ("stray", "stray"),
    ] {
        let e = VmSpec::from_argv(&args(&format!("{base} {extra}")), &pools).unwrap_err();
        assert!(e.to_string().contains(named), "{extra}: {e}");
    }
    for (cmd, missing) in [
        ("qemu -machine q35 -m 64 -nodefaults -cpu max", "-name"),
        ("qemu -name v -machine q35 -nodefaults -cpu max", "-m"),
        ("qemu -name v -m 64 -nodefaults -cpu max", "-machine TYPE"),
        (
            "qemu -name v -m 64 -machine q35 -cpu max",
            "-nodefaults (QEMU's default devices are not described)",
        ),
        ("qemu -name v -m 64 -machine q35 -nodefaults", "-cpu"),
    ] {
        let e = VmSpec::from_argv(&args(cmd), &pools).unwrap_err();
        assert_eq!(e, SpecError::Missing(missing), "{cmd}");
    }
    // -enable-kvm takes no value: the next option is not lost
    let s = VmSpec::from_argv(
        &args("qemu -name v -machine q35 -m 64 -enable-kvm -nodefaults -cpu max"),
        &pools,
    )
    .unwrap();
    assert_eq!(s.accel, "kvm");
    assert!(VmSpec::from_argv(
        &args("qemu -name v -machine q35 -m 1.5G -nodefaults -cpu max"),
        &pools
    )
    .is_err());
}

/// A launch with placeholder paths and nothing passed as a descriptor.
fn plain_launch() -> Launch {
    Launch {
        qemu: "q".into(),
        qmp: "/q".into(),
        log_dir: "/l".into(),
        ram_object: None,
        fds: Default::default(),
    }
}

fn good() -> VmSpec {
    VmSpec::from_argv(
        &args(SOURCE),
        &names(&["images=/srv/images", "boot=/srv/boot"]),
    )
    .unwrap()
}

#[test]
fn a_hostile_description_is_refused_before_anything_starts() {
    let p = policy();
    type Spoil = fn(&mut VmSpec);
    let cases: Vec<(&str, Spoil)> = vec![
        ("version", |s| s.version = 2),
        ("name", |s| s.name = "vm1,readonly=on".into()),
        ("name", |s| s.name = "a".repeat(33)),
        ("memory_mib", |s| s.memory_mib = 1 << 40),
        ("memory_mib", |s| s.memory_mib = 0),
        ("vcpus", |s| s.vcpus = 4096),
        ("machine", |s| s.machine = "q35,firmware=/x".into()),
        ("accel", |s| s.accel = "xen".into()),
        ("cpu", |s| s.cpu = "host".into()),
        ("cpu", |s| s.cpu = "max".into()),
        ("name (reserved)", |s| s.name = "last-upgrade".into()),
        ("disk format", |s| s.disks[0].format = "qcow2".into()),
        ("cpu", |s| s.cpu = "max,+vmx".into()),
        ("pool", |s| s.disks[0].file.pool = "etc".into()),
        ("disk file", |s| {
            s.disks[0].file.path = "../../etc/shadow".into()
        }),
        ("disk file", |s| s.disks[0].file.path = "/etc/shadow".into()),
        ("disk file", |s| {
            s.disks[0].file.path = "a.img,file.locking=off".into()
        }),
        ("disk file", |s| s.disks[0].file.path = String::new()),
        ("disk format", |s| s.disks[0].format = "vmdk".into()),
        ("disk cache", |s| {
            s.disks[0].cache = "none,aio=native".into()
        }),
        ("disk id", |s| s.disks[0].id = "d0,if=none".into()),
        ("network", |s| s.nics[0].network = "host".into()),
        ("nic mac", |s| {
            s.nics[0].mac = "52:54:00:12:34:56,vhost=on".into()
        }),
        ("id (used twice)", |s| s.nics[0].id = "d0".into()),
        ("disks", |s| s.disks = vec![s.disks[0].clone(); 9]),
        ("serials", |s| s.serials = 200),
        ("guest_agent", |s| s.guest_agent = Some(5)),
        ("tsc_khz", |s| s.tsc_khz = Some(0)),
        ("tsc_khz", |s| s.tsc_khz = Some(u64::MAX)),
        ("append", |s| {
            s.boot.as_mut().unwrap().append = "a\nb".into()
        }),
        ("kernel", |s| {
            s.boot.as_mut().unwrap().kernel.path = "../vmlinuz".into()
        }),
    ];
    for (field, spoil) in cases {
        let mut s = good();
        spoil(&mut s);
        let e = s.validate(&p).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(field), "{field}: {msg}");
        let l = plain_launch();
        assert!(
            s.to_argv(&p, &l).is_err(),
            "{field}: to_argv built a command line"
        );
    }
    let mut p = p;
    p.allow_host_cpu = true;
    let mut s = good();
    s.cpu = "host".into();
    s.validate(&p).unwrap();
}

#[test]
fn pool_and_network_maps_are_checked_as_typed() {
    assert!(Names::parse(&["a".into()]).is_err());
    assert!(Names::parse(&["a=".into()]).is_err());
    assert!(Names::parse(&["A=/x".into()]).is_err());
    assert!(Names::parse(&["a=/x".into(), "a=/y".into()]).is_err());
    let e = policy().networks.get("network", "nope").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown network \"nope\" (this host maps: br0)"
    );
    // the longest pool wins; a pool's directory itself is not a file
    let pools = names(&["all=/srv", "img=/srv/images"]);
    assert_eq!(in_pool(&pools, "/srv/images/a").unwrap().pool, "img");
    assert_eq!(in_pool(&pools, "/srv/b").unwrap().pool, "all");
    assert!(in_pool(&pools, "/srv").is_err());
    assert!(in_pool(&pools, "/srvx/a").is_err());
    assert!(in_pool(&pools, "images/a").is_err());
}

/// The source's TSC frequency: under KVM the destination runs the vCPUs
/// at it; under TCG it means nothing and is left out; a description of an
/// earlier version (no field) still parses.
#[test]
fn the_tsc_frequency_goes_to_kvm_only() {
    let p = policy();
    let l = plain_launch();
    let mut s = good();
    s.tsc_khz = Some(2_300_026);
    let a = s.to_argv(&p, &l).unwrap();
    assert!(a
        .windows(2)
        .any(|w| w[0] == "-cpu" && w[1] == "qemu64,tsc-frequency=2300026000"));
    s.accel = "tcg".into();
    let a = s.to_argv(&p, &l).unwrap();
    assert!(a.windows(2).any(|w| w[0] == "-cpu" && w[1] == "qemu64"));
    let j = serde_json::to_string(&good()).unwrap();
    assert!(!j.contains("tsc_khz"), "absent when unknown: {j}");
    assert_eq!(serde_json::from_str::<VmSpec>(&j).unwrap().tsc_khz, None);
    let mut k = good();
    k.tsc_khz = Some(1_000_000);
    let j = serde_json::to_string(&k).unwrap();
    assert_eq!(serde_json::from_str::<VmSpec>(&j).unwrap(), k);
}

/// The kernel and initrd the destination opened and checked itself reach
/// QEMU as its descriptors; a disk stays a path.
#[test]
fn checked_files_go_to_qemu_as_descriptors() {
    let p = policy();
    let s = good();
    let mut fds = std::collections::BTreeMap::new();
    for (n, (_, f, disk)) in s.files(&p).unwrap().iter().enumerate() {
        if !*disk {
            fds.insert(f.clone(), 10 + n as i32);
        }
    }
    let l = Launch {
        qemu: "q".into(),
        qmp: "/q".into(),
        log_dir: "/l".into(),
        ram_object: None,
        fds,
    };
    let a = s.to_argv(&p, &l).unwrap().join(" ");
    assert!(
        a.contains("-kernel /proc/self/fd/10 -initrd /proc/self/fd/11"),
        "{a}"
    );
    assert!(
        a.contains("-drive file=/srv/images/vm1/disk.img,if=virtio,id=d0"),
        "{a}"
    );
}
