use super::*;

/// Shaped as libvirt 12.9's `virsh dumpxml` of the rig's tinyvm domain.
const LIVE: &str = "<domain type='kvm' id='3'>
  <name>lv1</name>
  <uuid>5b0e1f9c-3c1d-4e8a-9a51-2f0d3c4b5a69</uuid>
  <memory unit='KiB'>32768</memory>
  <currentMemory unit='KiB'>32768</currentMemory>
  <memoryBacking>
    <source type='file'/>
    <access mode='shared'/>
  </memoryBacking>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-11.1'>hvm</type>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <memballoon model='none'/>
  </devices>
</domain>
";

#[test]
fn reads_what_liveup_needs() {
    let d = parse(LIVE).unwrap();
    assert_eq!(d.name, "lv1");
    assert_eq!(d.id, Some(3));
    assert_eq!(d.memory_bytes, 32 << 20);
    assert!(d.ram_in_shared_file);
    assert!(!d.numa);
    assert_eq!(d.hostdevs, 0);
    assert!(!d.keep_global);
    assert_eq!(d.area_name(), "lv-5b0e1f9c3c1d4e8a9a512f0d3c4b");
    assert!(d.area_name().len() < crate::kram::NAME_LEN);
}

#[test]
fn ram_not_in_a_shared_file() {
    let private = LIVE.replace("<access mode='shared'/>", "<access mode='private'/>");
    assert!(!parse(&private).unwrap().ram_in_shared_file);
    let memfd = LIVE.replace("<source type='file'/>", "<source type='memfd'/>");
    assert!(!parse(&memfd).unwrap().ram_in_shared_file);
    let none = LIVE.replace(
        "<memoryBacking>\n    <source type='file'/>\n    <access mode='shared'/>\n  </memoryBacking>\n",
        "",
    );
    assert!(!parse(&none).unwrap().ram_in_shared_file);
}

#[test]
fn numa_hostdev_units_and_refusals() {
    let numa = LIVE.replace(
        "<vcpu",
        "<cpu><numa><cell id='0' cpus='0' memory='32768' unit='KiB'/></numa></cpu>\n  <vcpu",
    );
    assert!(parse(&numa).unwrap().numa);
    let hd = LIVE.replace(
        "<memballoon",
        "<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0' bus='1' slot='0' function='0'/></source></hostdev>\n    <memballoon",
    );
    assert_eq!(parse(&hd).unwrap().hostdevs, 1);
    let gib = LIVE.replace("<memory unit='KiB'>32768", "<memory unit='GiB'>2");
    assert_eq!(parse(&gib).unwrap().memory_bytes, 2 << 30);
    let no_unit = LIVE.replace("<memory unit='KiB'>", "<memory>");
    assert_eq!(parse(&no_unit).unwrap().memory_bytes, 32 << 20);
    for (bad, what) in [
        ("<memory unit='KiB'>lots", "memory"),
        ("<memory unit='parsec'>32768", "memory"),
        ("<memory unit='TiB'>99999999999", "memory"),
    ] {
        let x = LIVE.replace("<memory unit='KiB'>32768", bad);
        assert!(
            matches!(parse(&x), Err(XmlError::Value { what: w, .. }) if w == what),
            "{bad}"
        );
    }
    assert!(matches!(parse("<domain>"), Err(XmlError::Parse(_))));
    assert_eq!(
        parse("<network/>"),
        Err(XmlError::Missing("<domain> root element"))
    );
    let no_uuid = LIVE.replace("<uuid>5b0e1f9c-3c1d-4e8a-9a51-2f0d3c4b5a69</uuid>", "");
    assert_eq!(parse(&no_uuid), Err(XmlError::Missing("uuid")));
    let bad_id = LIVE.replace("id='3'", "id='three'");
    assert!(matches!(
        parse(&bad_id),
        Err(XmlError::Value { what: "id", .. })
    ));
}

#[test]
fn keep_global_added_and_taken_out_again() {
    let with = with_keep_global(LIVE).unwrap();
    let d = parse(&with).unwrap();
    assert!(d.keep_global);
    assert_eq!(d.name, "lv1");
    assert!(with.contains(&format!("xmlns:qemu='{QEMU_NS}'")), "{with}");
    // idempotent
    assert_eq!(with_keep_global(&with).unwrap(), with);
    let without = without_keep_global(&with).unwrap().unwrap();
    let d = parse(&without).unwrap();
    assert!(!d.keep_global);
    assert!(!without.contains("qemu:commandline"), "{without}");
    assert_eq!(without_keep_global(LIVE).unwrap(), None);
}

#[test]
fn keep_global_beside_arguments_of_the_operator() {
    // as libvirt formats a domain that has its own QEMU arguments
    let own = LIVE
        .replace(
            "<domain type='kvm' id='3'>",
            "<domain type='kvm' id='3' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>",
        )
        .replace(
            "</domain>",
            "  <qemu:commandline>\n    <qemu:arg value='-msg'/>\n    <qemu:arg value='timestamp=on'/>\n  </qemu:commandline>\n</domain>",
        );
    let with = with_keep_global(&own).unwrap();
    assert!(parse(&with).unwrap().keep_global);
    assert_eq!(with.matches("xmlns:qemu=").count(), 1, "{with}");
    assert_eq!(with.matches("<qemu:commandline>").count(), 1, "{with}");
    let without = without_keep_global(&with).unwrap().unwrap();
    // the operator's arguments stay, in order
    assert!(
        without.contains("<qemu:arg value='-msg'/>\n    <qemu:arg value='timestamp=on'/>"),
        "{without}"
    );
    assert!(!parse(&without).unwrap().keep_global);
    // libvirt's own formatting of the pair (one per line) is found too
    let formatted = own.replace(
        "<qemu:arg value='-msg'/>",
        "<qemu:arg value='-global'/>\n    <qemu:arg value='migration.x-ignore-shared=on'/>\n    <qemu:arg value='-msg'/>",
    );
    assert!(parse(&formatted).unwrap().keep_global);
    let out = without_keep_global(&formatted).unwrap().unwrap();
    assert_eq!(out, own);
    // a -global of another property is not liveup's
    let other = own.replace("value='-msg'", "value='-global'");
    assert!(!parse(&other).unwrap().keep_global);
}

#[test]
fn namespace_bound_to_another_prefix_refused() {
    let odd = LIVE.replace(
        "<domain type='kvm' id='3'>",
        "<domain type='kvm' id='3' xmlns:q='http://libvirt.org/schemas/domain/qemu/1.0'>",
    );
    assert_eq!(with_keep_global(&odd), Err(XmlError::Prefix("q".into())));
}

#[test]
fn dac_label_of_a_starting_domain() {
    assert_eq!(parse(LIVE).unwrap().dac_label, None);
    // as libvirt 12.9 hands a hook at `start begin` (the SELinux or
    // AppArmor label beside it is not QEMU's user)
    let labelled = LIVE.replace(
        "</devices>",
        "</devices>\n  <seclabel type='dynamic' model='apparmor' relabel='yes'><label>libvirt-x</label></seclabel>\n  <seclabel type='dynamic' model='dac' relabel='yes'>\n    <label>+64055:+64055</label>\n    <imagelabel>+64055:+64055</imagelabel>\n  </seclabel>",
    );
    assert_eq!(
        parse(&labelled).unwrap().dac_label.as_deref(),
        Some("+64055:+64055")
    );
}
