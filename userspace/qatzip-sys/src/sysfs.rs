//! QAT devices as sysfs shows them: Intel PCI functions whose device ID is
//! a QuickAssist physical or virtual function, with the bound driver.

use serde::Serialize;
use std::path::Path;

const INTEL: u32 = 0x8086;

/// (device id, generation name, is a virtual function)
const QAT_IDS: &[(u32, &str, bool)] = &[
    (0x0435, "dh895xcc", false),
    (0x0443, "dh895xcc", true),
    (0x37c8, "c62x", false),
    (0x37c9, "c62x", true),
    (0x19e2, "c3xxx", false),
    (0x19e3, "c3xxx", true),
    (0x18ee, "200xx", false),
    (0x18ef, "200xx", true),
    (0x18a0, "c4xxx", false),
    (0x18a1, "c4xxx", true),
    (0x4940, "4xxx", false),
    (0x4941, "4xxx", true),
    (0x4942, "401xx", false),
    (0x4943, "401xx", true),
    (0x4944, "402xx", false),
    (0x4945, "402xx", true),
    (0x4946, "420xx", false),
    (0x4947, "420xx", true),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QatDevice {
    /// PCI address, e.g. 0000:6b:00.0.
    pub address: String,
    pub device_id: u32,
    /// Product family, e.g. "4xxx".
    pub family: &'static str,
    pub virtual_function: bool,
    /// The bound kernel driver (qat_4xxx, vfio-pci, ...), if any.
    pub driver: Option<String>,
    pub numa_node: Option<i32>,
}

fn read_hex(p: &Path) -> Option<u32> {
    let s = std::fs::read_to_string(p).ok()?;
    u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// QAT functions on this host (`/sys/bus/pci/devices`). An unreadable
/// sysfs yields an empty list: no usable QAT.
pub fn devices() -> Vec<QatDevice> {
    devices_in(Path::new("/sys/bus/pci/devices"))
}

/// As [`devices`], under another directory (tests use a fake tree).
pub fn devices_in(dir: &Path) -> Vec<QatDevice> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<QatDevice> = entries
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            if read_hex(&p.join("vendor"))? != INTEL {
                return None;
            }
            let id = read_hex(&p.join("device"))?;
            let &(_, family, vf) = QAT_IDS.iter().find(|(d, _, _)| *d == id)?;
            let driver = std::fs::read_link(p.join("driver"))
                .ok()
                .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()));
            let numa_node = std::fs::read_to_string(p.join("numa_node"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            Some(QatDevice {
                address: e.file_name().to_string_lossy().into_owned(),
                device_id: id,
                family,
                virtual_function: vf,
                driver,
                numa_node,
            })
        })
        .collect();
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fake(dir: &Path, addr: &str, vendor: &str, device: &str, driver: Option<&str>) {
        let d = dir.join(addr);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("vendor"), format!("{vendor}\n")).unwrap();
        fs::write(d.join("device"), format!("{device}\n")).unwrap();
        fs::write(d.join("numa_node"), "1\n").unwrap();
        if let Some(drv) = driver {
            let target = dir.join("drivers").join(drv);
            fs::create_dir_all(&target).unwrap();
            std::os::unix::fs::symlink(&target, d.join("driver")).unwrap();
        }
    }

    #[test]
    fn finds_qat_physical_and_virtual_functions_only() {
        let t = std::env::temp_dir().join(format!("qat-sysfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&t);
        let pci = t.join("devices");
        fake(&pci, "0000:6b:00.0", "0x8086", "0x4940", Some("qat_4xxx"));
        fake(&pci, "0000:6b:00.1", "0x8086", "0x4941", Some("vfio-pci"));
        fake(&pci, "0000:00:02.0", "0x8086", "0x1234", None); // not QAT
        fake(&pci, "0000:01:00.0", "0x10de", "0x4940", None); // not Intel
        let devs = devices_in(&pci);
        assert_eq!(devs.len(), 2, "{devs:?}");
        assert_eq!(devs[0].address, "0000:6b:00.0");
        assert_eq!(devs[0].family, "4xxx");
        assert!(!devs[0].virtual_function);
        assert_eq!(devs[0].driver.as_deref(), Some("qat_4xxx"));
        assert_eq!(devs[0].numa_node, Some(1));
        assert!(devs[1].virtual_function);
        assert_eq!(devs[1].driver.as_deref(), Some("vfio-pci"));
        assert!(devices_in(&t.join("missing")).is_empty());
        fs::remove_dir_all(&t).unwrap();
    }
}
