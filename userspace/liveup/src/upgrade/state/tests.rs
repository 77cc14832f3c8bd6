//! Tests of the state area: its header, the manifest's loading and marking,
//! what a new upgrade may overwrite, and hostile lengths and offsets.

use super::*;

fn manifest() -> Manifest {
    Manifest {
        tsc_hz: 2.3e9,
        t_blackout: 1,
        t_saved: 2,
        t_kexec: 3,
        vms: vec![SavedVm {
            config: VmConfig {
                name: "vm1".into(),
                root: "/".into(),
                argv: vec!["qemu".into()],
                qmp: "/run/liveup/vm1.qmp".into(),
                area: "vm-vm1".into(),
            },
            state_offset: BLOB_BASE as u64,
            state_len: 5,
            state_crc: kram_format::crc32c(b"state"),
            save_ticks: 1,
            restored: false,
        }],
        preload: vec![],
        freeze_ticks: 0,
    }
}

/// An area as `store` writes it.
fn area(m: &Manifest) -> Vec<u8> {
    area_json(&serde_json::to_vec(m).unwrap())
}

/// An area holding manifest text `json` (sealed as `store` seals it).
fn area_json(json: &[u8]) -> Vec<u8> {
    let mut a = vec![0u8; 2 << 20];
    a[HEADER..HEADER + json.len()].copy_from_slice(json);
    a[BLOB_BASE..BLOB_BASE + 5].copy_from_slice(b"state");
    let h = Header {
        len: json.len() as u64,
        crc: kram_format::crc32c(json),
        restored: false,
    };
    a[..HEADER].copy_from_slice(&h.encode());
    a
}

#[test]
fn header_round_trips_and_pins_its_layout() {
    let h = Header {
        len: 0x0102,
        crc: 0xaabbccdd,
        restored: true,
    };
    let b = h.encode();
    assert_eq!(&b[..8], b"LIVEUPv1");
    assert_eq!(
        &b[8..24],
        &[2, 1, 0, 0, 0, 0, 0, 0, 0xdd, 0xcc, 0xbb, 0xaa, 1, 0, 0, 0]
    );
    assert!(b[24..].iter().all(|&x| x == 0));
    assert_eq!(Header::decode(&b), Some(h));
    assert_eq!(Header::decode(&[0u8; HEADER]), None);
    assert_eq!(Header::decode(&b[..10]), None);
}

#[test]
fn a_stored_manifest_loads_once() {
    let mut a = area(&manifest());
    let m = load(&a).unwrap().unwrap();
    assert_eq!(m.vms[0].config.name, "vm1");
    assert_eq!(blob(&a, &m.vms[0]).unwrap(), b"state");
    set_restored(&mut a);
    assert!(load(&a).unwrap().is_none());
}

#[test]
fn another_format_version_or_an_unknown_field_is_refused_and_kept() {
    let mut a = area(&manifest());
    a[7] = b'2';
    let before = a.clone();
    let e = load(&a).unwrap_err().to_string();
    assert!(
        e.contains("format LIVEUPv2") && e.contains("reads LIVEUPv1"),
        "{e}"
    );
    assert_eq!(a, before, "nothing of it changed");
    // a manifest with a field this liveup does not know
    let mut j = serde_json::to_value(manifest()).unwrap();
    j["new_field"] = serde_json::json!(1);
    let a = area_json(&serde_json::to_vec(&j).unwrap());
    let e = format!("{:#}", load(&a).unwrap_err());
    assert!(e.contains("new_field"), "{e}");
    // and one inside a VM's entry, or inside its configuration
    for path in [&["vms", "0"][..], &["vms", "0", "config"][..]] {
        let mut j = serde_json::to_value(manifest()).unwrap();
        let mut v = &mut j;
        for k in path {
            v = match k.parse::<usize>() {
                Ok(n) => &mut v[n],
                Err(_) => &mut v[*k],
            };
        }
        v["nested_new"] = serde_json::json!(true);
        let a = area_json(&serde_json::to_vec(&j).unwrap());
        let e = format!("{:#}", load(&a).unwrap_err());
        assert!(e.contains("nested_new"), "{path:?}: {e}");
    }
    // no magic at all is still "no state"
    assert!(load(&[0u8; HEADER]).unwrap().is_none());
}

#[test]
fn a_partial_restore_marks_only_the_vms_it_restored() {
    let mut m = manifest();
    let mut vm2 = m.vms[0].clone();
    vm2.config.name = "vm2".into();
    m.vms.push(vm2);
    let mut a = area(&m);
    mark_vms_restored(&mut a, &["vm1".to_string()]).unwrap();
    let back = load(&a).unwrap().expect("still there for --retry");
    assert!(back.vms[0].restored && !back.vms[1].restored);
    // the states are untouched
    assert_eq!(blob(&a, &back.vms[1]).unwrap(), b"state");
    // an old manifest without the field reads as not restored
    let old = serde_json::to_string(&m)
        .unwrap()
        .replace(",\"restored\":false", "");
    let v: Manifest = serde_json::from_str(&old).unwrap();
    assert!(!v.vms[0].restored);
}

#[test]
fn a_new_upgrade_may_not_overwrite_what_no_restore_brought_back() {
    let none = |_: &VmConfig| false;
    // nothing there, invalidated (aborted upgrade): free
    assert_eq!(pending(&[0u8; HEADER], none), None);
    let mut m = manifest();
    let mut vm2 = m.vms[0].clone();
    vm2.config.name = "vm2".into();
    m.vms.push(vm2);
    let mut a = area(&m);
    // saved, never restored: both named
    let why = pending(&a, none).expect("refused");
    assert!(
        why.contains("vm1, vm2") && why.contains("restore --retry"),
        "{why}"
    );
    // partly restored: only the one still in KRAM
    mark_vms_restored(&mut a, &["vm1".to_string()]).unwrap();
    let why = pending(&a, none).expect("refused");
    assert!(
        why.contains("VM(s) vm2 ") && why.contains("kram delete liveup-state"),
        "{why}"
    );
    // vm2 runs (its state is stale; as --retry skips it): free
    assert_eq!(pending(&a, |v: &VmConfig| v.name == "vm2"), None);
    // restored: free
    set_restored(&mut a);
    assert_eq!(pending(&a, none), None);
    // every VM marked one by one: free
    let mut a = area(&m);
    mark_vms_restored(&mut a, &["vm1".to_string(), "vm2".to_string()]).unwrap();
    assert_eq!(pending(&a, none), None);
    // unreadable (another version, or corrupt): kept, not overwritten
    let mut a = area(&m);
    a[7] = b'9';
    let why = pending(&a, none).expect("refused");
    assert!(
        why.contains("cannot read") && why.contains("LIVEUPv9"),
        "{why}"
    );
    let mut a = area(&m);
    a[HEADER] ^= 1;
    assert!(pending(&a, none).expect("refused").contains("checksum"));
}

#[test]
fn hostile_lengths_and_offsets_are_refused_not_panicked_on() {
    let good = area(&manifest());
    for len in [u64::MAX, u64::MAX - 10, (2 << 20) as u64] {
        let mut a = good.clone();
        a[8..16].copy_from_slice(&len.to_le_bytes());
        let e = load(&a).unwrap_err().to_string();
        assert!(e.contains("manifest length"), "{e}");
    }
    let mut a = good.clone();
    a[HEADER] ^= 1;
    assert!(load(&a).unwrap_err().to_string().contains("checksum"));
    let m = load(&good).unwrap().unwrap();
    for (off, len) in [
        (u64::MAX, 5),
        (BLOB_BASE as u64, u64::MAX),
        (u64::MAX - 2, 5),
    ] {
        let mut v = m.vms[0].clone();
        v.state_offset = off;
        v.state_len = len;
        assert!(blob(&good, &v)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
    }
    let mut v = m.vms[0].clone();
    v.state_crc ^= 1;
    assert!(blob(&good, &v)
        .unwrap_err()
        .to_string()
        .contains("checksum"));
}

// Bounded fuzzing (run by make check): a manifest area with random
// bytes in the JSON, a random length, the checksum made valid, and
// saved states at random offsets. Every outcome is a refusal or a
// manifest; nothing panics.
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fuzzed_manifests(
        edits in proptest::collection::vec((0usize..600, any::<u8>()), 0..12),
        len in prop_oneof![0u64..700, any::<u64>()],
        off in any::<u64>(),
        slen in prop_oneof![0u64..64, any::<u64>()],
    ) {
        let mut a = area(&manifest());
        for &(o, v) in &edits {
            a[HEADER + o] = v;
        }
        let json_len = usize::try_from(len).ok().filter(|&l| HEADER + l <= a.len());
        let crc = json_len.map_or(0, |l| kram_format::crc32c(&a[HEADER..HEADER + l]));
        let h = Header { len, crc, restored: false };
        a[..HEADER].copy_from_slice(&h.encode());
        if let Ok(Some(m)) = load(&a) {
            for v in &m.vms {
                let _ = blob(&a, v);
                let mut w = v.clone();
                w.state_offset = off;
                w.state_len = slen;
                if let Ok(b) = blob(&a, &w) {
                    prop_assert_eq!(b.len() as u64, slen);
                }
            }
        }
    }
}
