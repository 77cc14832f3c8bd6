use super::*;
use crate::libvirt::virsh::VirshError;
use std::sync::Mutex;

/// libvirt as the tests want it: domains with their XML, a log of calls,
/// and calls made to fail.
struct Fake {
    doms: Vec<(String, String, bool)>, // name, XML, persistent
    running: Mutex<Vec<String>>,
    saved_xml: Mutex<Vec<(String, String)>>,
    calls: Mutex<Vec<String>>,
    fail: Option<&'static str>,
}

fn xml(name: &str, uuid: &str, backing: bool) -> String {
    let mb = if backing {
        "<memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>"
    } else {
        ""
    };
    format!("<domain type='kvm' id='1'><name>{name}</name><uuid>{uuid}</uuid><memory unit='KiB'>32768</memory>{mb}<devices/></domain>")
}

const U1: &str = "11111111-2222-3333-4444-555555555555";
const U2: &str = "aaaaaaaa-2222-3333-4444-555555555555";

impl Fake {
    fn new(doms: Vec<(String, String, bool)>) -> Self {
        let running = doms.iter().map(|d| d.0.clone()).collect();
        Fake {
            doms,
            running: Mutex::new(running),
            saved_xml: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            fail: None,
        }
    }
    fn call(&self, c: String) -> Result<(), VirshError> {
        let failing = self.fail.is_some_and(|f| c == f);
        self.calls.lock().unwrap().push(c.clone());
        if failing {
            return Err(VirshError::Failed {
                args: c,
                status: "exit status: 1".into(),
                stderr: "error: injected".into(),
            });
        }
        Ok(())
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Libvirt for Fake {
    fn running(&self) -> Result<Vec<String>, VirshError> {
        Ok(self.running.lock().unwrap().clone())
    }
    fn dumpxml(&self, name: &str) -> Result<String, VirshError> {
        Ok(self.doms.iter().find(|d| d.0 == name).unwrap().1.clone())
    }
    fn persistent(&self, name: &str) -> Result<bool, VirshError> {
        Ok(self.doms.iter().find(|d| d.0 == name).unwrap().2)
    }
    fn monitor(&self, name: &str, command: &str) -> Result<String, VirshError> {
        let on = command.contains("\"state\":true");
        self.call(format!("monitor {name} {}", if on { "on" } else { "off" }))?;
        Ok("{\"return\":{}}".into())
    }
    fn managedsave(&self, name: &str) -> Result<(), VirshError> {
        self.call(format!("managedsave {name}"))?;
        self.running.lock().unwrap().retain(|n| n != name);
        let x = self.dumpxml(name)?;
        self.saved_xml.lock().unwrap().push((name.into(), x));
        Ok(())
    }
    fn managedsave_dumpxml(&self, name: &str) -> Result<String, VirshError> {
        self.call(format!("managedsave-dumpxml {name}"))?;
        Ok(self
            .saved_xml
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.0 == name)
            .unwrap()
            .1
            .clone())
    }
    fn managedsave_define(&self, name: &str, xml: &str) -> Result<(), VirshError> {
        self.call(format!("managedsave-define {name}"))?;
        let mut s = self.saved_xml.lock().unwrap();
        s.retain(|x| x.0 != name);
        s.push((name.into(), xml.into()));
        Ok(())
    }
    fn start(&self, name: &str) -> Result<(), VirshError> {
        self.call(format!("start {name}"))?;
        self.running.lock().unwrap().push(name.into());
        Ok(())
    }
    fn qemu_pid(&self, name: &str) -> Option<i32> {
        Some(if name == "a" { 100 } else { 200 })
    }
}

fn areas() -> Vec<Area> {
    vec![
        Area {
            id: 1,
            name: domain::area_name(U1),
            npages: 8192,
            offset: 0,
        },
        Area {
            id: 2,
            name: domain::area_name(U2),
            npages: 8192,
            offset: 8192 * 4096,
        },
    ]
}

fn maps(pid: i32) -> Option<String> {
    Some(match pid {
        100 => "7f0000000000-7f0002000000 rw-s 00000000 00:06 12 /dev/kram-area/1".into(),
        _ => "7f0000000000-7f0002000000 rw-s 00000000 00:06 13 /var/lib/libvirt/qemu/ram/libvirt/qemu/2-b/pc.ram (deleted)".into(),
    })
}

/// A directory removed when dropped (no crate for so little).
struct TempDir(std::path::PathBuf);
impl TempDir {
    fn new() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "liveup-lv-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn markers() -> (TempDir, Markers) {
    let d = TempDir::new();
    let m = Markers { dir: d.0.join("m") };
    (d, m)
}

#[test]
fn preflight_keeps_a_domain_on_its_area_and_names_every_refusal() {
    let f = Fake::new(vec![("a".into(), xml("a", U1, true), true)]);
    let k = preflight(&f, &areas(), &maps).unwrap();
    assert_eq!(k.len(), 1);
    assert_eq!(k[0].area, domain::area_name(U1));
    // b: RAM in libvirt's own file (its QEMU does not map the area)
    let f = Fake::new(vec![
        ("a".into(), xml("a", U1, true), true),
        ("b".into(), xml("b", U2, true), true),
        (
            "c".into(),
            xml("c", "cccccccc-2222-3333-4444-555555555555", false),
            true,
        ),
        (
            "d".into(),
            xml("d", "dddddddd-2222-3333-4444-555555555555", true),
            false,
        ),
        (
            "e".into(),
            xml("e", "eeeeeeee-2222-3333-4444-555555555555", true),
            true,
        ),
    ]);
    let e = preflight(&f, &areas(), &maps).unwrap_err().to_string();
    assert!(e.starts_with("4 libvirt domain(s) cannot be kept"), "{e}");
    assert!(
        e.contains("domain b: its QEMU (pid 200) does not map KRAM area"),
        "{e}"
    );
    assert!(
        e.contains("domain c: its RAM is not in a shared file"),
        "{e}"
    );
    assert!(e.contains("domain d: transient"), "{e}");
    assert!(e.contains("domain e: no KRAM area lv-eeeeeeee"), "{e}");
    assert!(!e.contains("domain a"), "{e}");
}

#[test]
fn preflight_refuses_a_small_area_numa_and_hostdev() {
    let small = vec![Area {
        id: 1,
        name: domain::area_name(U1),
        npages: 100,
        offset: 0,
    }];
    let f = Fake::new(vec![("a".into(), xml("a", U1, true), true)]);
    let e = preflight(&f, &small, &maps).unwrap_err().to_string();
    assert!(e.contains("has 409600 bytes, the domain 33554432"), "{e}");
    let numa = xml("a", U1, true).replace(
        "<devices/>",
        "<cpu><numa><cell id='0'/></numa></cpu><devices/>",
    );
    let f = Fake::new(vec![("a".into(), numa, true)]);
    assert!(preflight(&f, &areas(), &maps)
        .unwrap_err()
        .to_string()
        .contains("NUMA"));
    let hd = xml("a", U1, true).replace("<devices/>", "<devices><hostdev/></devices>");
    let f = Fake::new(vec![("a".into(), hd, true)]);
    assert!(preflight(&f, &areas(), &maps)
        .unwrap_err()
        .to_string()
        .contains("1 <hostdev>"));
}

#[test]
fn save_then_resume_through_libvirt() {
    let (_d, m) = markers();
    let f = Fake::new(vec![("a".into(), xml("a", U1, true), true)]);
    let k = preflight(&f, &areas(), &maps).unwrap();
    let r = save_all(&f, &m, &k, 1e9, 42);
    assert!(r.iter().all(|(_, r)| r.is_ok()));
    assert_eq!(
        f.calls(),
        [
            "monitor a on",
            "managedsave a",
            "managedsave-dumpxml a",
            "managedsave-define a"
        ]
    );
    let mk = m.get(U1).unwrap();
    assert!(mk.saved && mk.t_stop == 42 && mk.area == domain::area_name(U1));
    // the image's XML now has the -global
    let saved = f.saved_xml.lock().unwrap()[0].1.clone();
    assert!(domain::parse(&saved).unwrap().keep_global);
    let done = resume_all(&f, &m).unwrap();
    assert_eq!(done.len(), 1);
    assert!(done[0].1.is_ok());
    assert_eq!(
        &f.calls()[4..],
        ["managedsave-dumpxml a", "start a", "monitor a off"]
    );
    assert!(m.get(U1).is_none(), "record gone once running");
}

#[test]
fn a_failed_save_leaves_the_domain_running_without_a_record() {
    let (_d, m) = markers();
    let mut f = Fake::new(vec![("a".into(), xml("a", U1, true), true)]);
    f.fail = Some("managedsave a");
    let k = preflight(&f, &areas(), &maps).unwrap();
    let r = save_all(&f, &m, &k, 1e9, 1);
    let e = format!("{:#}", r[0].1.as_ref().unwrap_err());
    assert!(e.contains("not saved (still running)"), "{e}");
    assert_eq!(
        f.calls(),
        ["monitor a on", "managedsave a", "monitor a off"]
    );
    assert!(m.get(U1).is_none());
    assert!(f.running().unwrap().contains(&"a".to_string()));
}

#[test]
fn resume_amends_an_image_whose_xml_was_not_amended() {
    let (_d, m) = markers();
    let mut f = Fake::new(vec![("a".into(), xml("a", U1, true), true)]);
    f.fail = Some("managedsave-define a");
    let k = preflight(&f, &areas(), &maps).unwrap();
    let r = save_all(&f, &m, &k, 1e9, 1);
    assert!(r[0].1.is_err());
    // saved, not amended: the record says so and stays
    assert!(!m.get(U1).unwrap().saved);
    f.fail = None;
    let done = resume_all(&f, &m).unwrap();
    assert!(done[0].1.is_ok(), "{:?}", done[0].1);
    let c = f.calls();
    assert_eq!(
        &c[c.len() - 4..],
        [
            "managedsave-dumpxml a",
            "managedsave-define a",
            "start a",
            "monitor a off"
        ]
    );
}

#[test]
fn resume_of_a_domain_still_running_only_clears() {
    let (_d, m) = markers();
    let f = Fake::new(vec![("a".into(), xml("a", U1, true), true)]);
    m.put(&Marker {
        name: "a".into(),
        uuid: U1.into(),
        area: domain::area_name(U1),
        tsc_hz: 1e9,
        t_stop: 0,
        saved: false,
        t_saved: 0,
    })
    .unwrap();
    let done = resume_all(&f, &m).unwrap();
    assert!(done[0].1.is_ok());
    assert_eq!(f.calls(), ["monitor a off"]);
    assert!(m.get(U1).is_none());
}

#[test]
fn records_only_for_uuids() {
    let (_d, m) = markers();
    let mut bad = Marker {
        name: "x".into(),
        uuid: "../../etc/passwd".into(),
        area: "lv-".into(),
        tsc_hz: 1.0,
        t_stop: 0,
        saved: true,
        t_saved: 0,
    };
    assert!(m.put(&bad).is_err());
    bad.uuid = U2.into();
    m.put(&bad).unwrap();
    assert_eq!(m.all(), vec![bad]);
    assert!(m.get("../x").is_none());
}
