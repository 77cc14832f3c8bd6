//! What liveup reads in a libvirt domain's XML, and the one edit it makes
//! to it: the QEMU argument pair (`-global migration.x-ignore-shared=on`)
//! without which a restoring QEMU refuses a state saved without guest RAM
//! ("Capability x-ignore-shared is off, but received capability is on").
//! Edits splice the text at the byte ranges the parser reports, so the
//! rest of the document stays as libvirt wrote it.

use thiserror::Error;

/// libvirt's namespace for QEMU pass-through arguments.
pub const QEMU_NS: &str = "http://libvirt.org/schemas/domain/qemu/1.0";
/// The value of the `-global` liveup adds.
pub const KEEP_GLOBAL: &str = "migration.x-ignore-shared=on";
/// Prefix of the KRAM area holding a domain's RAM (then 28 hex digits of
/// its UUID: KRAM names hold at most 31 bytes).
pub const AREA_PREFIX: &str = "lv-";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum XmlError {
    #[error("the domain XML does not parse: {0}")]
    Parse(String),
    #[error("the domain XML has no {0}")]
    Missing(&'static str),
    #[error("the domain XML's {what} is not understood: {text:?}")]
    Value { what: &'static str, text: String },
    #[error("the domain XML binds libvirt's QEMU namespace to prefix {0:?}, not \"qemu\"")]
    Prefix(String),
}

/// A domain as liveup needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub uuid: String,
    /// The running domain's id (absent when it is not running).
    pub id: Option<u32>,
    pub memory_bytes: u64,
    /// `<memoryBacking><source type='file'/><access mode='shared'/>`:
    /// libvirt gives QEMU a file under memory_backing_dir for its RAM.
    pub ram_in_shared_file: bool,
    /// Guest NUMA cells (`<cpu><numa>`): one RAM file per cell.
    pub numa: bool,
    /// `<hostdev>` devices (passed-through PCI or USB devices).
    pub hostdevs: usize,
    /// Whether liveup's `-global` is among its QEMU arguments.
    pub keep_global: bool,
    /// The user and group libvirt runs its QEMU as (the DAC seclabel's
    /// `<label>`, `+UID:+GID` or `USER:GROUP`), when the XML has one: a
    /// running domain's, or one libvirt is starting.
    pub dac_label: Option<String>,
}

impl Domain {
    /// The KRAM area of this domain's RAM: the prefix and the first 28 hex
    /// digits of its UUID (a name that survives renames).
    pub fn area_name(&self) -> String {
        area_name(&self.uuid)
    }
}

/// [`Domain::area_name`] of a UUID.
pub fn area_name(uuid: &str) -> String {
    let hex: String = uuid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .take(28)
        .collect();
    format!("{AREA_PREFIX}{hex}")
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| {
        c.is_element() && c.tag_name().name() == name && c.tag_name().namespace().is_none()
    })
}

/// Bytes in one `unit` of libvirt's memory elements.
fn unit_bytes(unit: &str) -> Option<u64> {
    Some(match unit {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "TiB" => 1 << 40,
        _ => return None,
    })
}

/// The (`-global`, [`KEEP_GLOBAL`]) argument pair: the two `qemu:arg`
/// elements, in order, in a `qemu:commandline`.
fn keep_pair<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
) -> Option<(roxmltree::Node<'a, 'i>, roxmltree::Node<'a, 'i>)> {
    let args: Vec<_> = doc
        .descendants()
        .filter(|n| {
            n.is_element()
                && n.tag_name().name() == "arg"
                && n.tag_name().namespace() == Some(QEMU_NS)
        })
        .collect();
    args.windows(2)
        .find(|w| {
            w[0].attribute("value") == Some("-global")
                && w[1].attribute("value") == Some(KEEP_GLOBAL)
        })
        .map(|w| (w[0], w[1]))
}

/// The facts of domain XML `xml` (libvirt's `dumpxml`, or what a hook is
/// given on its standard input).
pub fn parse(xml: &str) -> Result<Domain, XmlError> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| XmlError::Parse(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "domain" {
        return Err(XmlError::Missing("<domain> root element"));
    }
    let text = |name: &'static str| -> Result<String, XmlError> {
        child(root, name)
            .and_then(|n| n.text())
            .map(|t| t.trim().to_string())
            .ok_or(XmlError::Missing(name))
    };
    let name = text("name")?;
    let uuid = text("uuid")?;
    let id = match root.attribute("id") {
        None => None,
        Some(t) => Some(t.parse().map_err(|_| XmlError::Value {
            what: "id",
            text: t.into(),
        })?),
    };
    let mem = child(root, "memory").ok_or(XmlError::Missing("memory"))?;
    let unit = mem.attribute("unit").unwrap_or("KiB");
    let amount = mem.text().unwrap_or("").trim();
    let memory_bytes = amount
        .parse::<u64>()
        .ok()
        .zip(unit_bytes(unit))
        .and_then(|(n, u)| n.checked_mul(u))
        .ok_or_else(|| XmlError::Value {
            what: "memory",
            text: format!("{amount} {unit}"),
        })?;
    let backing = child(root, "memoryBacking");
    let attr_of = |el: &str, attr: &str| {
        backing
            .and_then(|b| child(b, el))
            .and_then(|n| n.attribute(attr))
            .map(String::from)
    };
    let ram_in_shared_file = attr_of("source", "type").as_deref() == Some("file")
        && attr_of("access", "mode").as_deref() == Some("shared");
    let numa = child(root, "cpu").and_then(|c| child(c, "numa")).is_some();
    let hostdevs = child(root, "devices")
        .map(|d| {
            d.children()
                .filter(|c| c.is_element() && c.tag_name().name() == "hostdev")
                .count()
        })
        .unwrap_or(0);
    let keep_global = keep_pair(&doc).is_some();
    let dac_label = root
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "seclabel")
        .find(|c| c.attribute("model") == Some("dac"))
        .and_then(|c| child(c, "label"))
        .and_then(|l| l.text())
        .map(|t| t.trim().to_string());
    Ok(Domain {
        name,
        uuid,
        id,
        memory_bytes,
        ram_in_shared_file,
        numa,
        hostdevs,
        keep_global,
        dac_label,
    })
}

/// `xml` with liveup's `-global` among its QEMU arguments (unchanged if
/// there already).
pub fn with_keep_global(xml: &str) -> Result<String, XmlError> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| XmlError::Parse(e.to_string()))?;
    if keep_pair(&doc).is_some() {
        return Ok(xml.to_string());
    }
    let root = doc.root_element();
    let args = format!("<qemu:arg value='-global'/><qemu:arg value='{KEEP_GLOBAL}'/>");
    let mut out = String::with_capacity(xml.len() + 200);
    match root.lookup_prefix(QEMU_NS) {
        Some("qemu") => {}
        Some(p) => return Err(XmlError::Prefix(p.into())),
        None => {}
    }
    let existing = root.children().find(|n| {
        n.is_element()
            && n.tag_name().name() == "commandline"
            && n.tag_name().namespace() == Some(QEMU_NS)
    });
    let start = root.range().start;
    // the root's start tag: where the namespace declaration goes, if needed
    let declare = root.lookup_prefix(QEMU_NS).is_none();
    let after_name = start + "<domain".len();
    if !xml[start..].starts_with("<domain") {
        return Err(XmlError::Missing("<domain> start tag"));
    }
    match existing {
        Some(cl) => {
            // the pair first in the existing element (after its start tag)
            let r = cl.range();
            let open_end = xml[r.start..r.end]
                .find('>')
                .map(|i| r.start + i + 1)
                .ok_or(XmlError::Missing("qemu:commandline start tag"))?;
            if xml[r.start..open_end].ends_with("/>") {
                // <qemu:commandline/>: replaced whole
                out.push_str(&xml[..r.start]);
                out.push_str(&format!("<qemu:commandline>{args}</qemu:commandline>"));
                out.push_str(&xml[r.end..]);
            } else {
                out.push_str(&xml[..open_end]);
                out.push_str(&args);
                out.push_str(&xml[open_end..]);
            }
        }
        None => {
            let close = xml
                .rfind("</domain>")
                .ok_or(XmlError::Missing("</domain> end tag"))?;
            out.push_str(&xml[..close]);
            out.push_str(&format!("  <qemu:commandline>{args}</qemu:commandline>\n"));
            out.push_str(&xml[close..]);
        }
    }
    if declare {
        out.insert_str(after_name, &format!(" xmlns:qemu='{QEMU_NS}'"));
    }
    // what was written must read back as meant
    let d = parse(&out)?;
    if !d.keep_global {
        return Err(XmlError::Missing("the -global just added"));
    }
    Ok(out)
}

/// `xml` without liveup's `-global` pair (None: it has none). A
/// `qemu:commandline` left empty goes too; the namespace declaration
/// stays (harmless).
pub fn without_keep_global(xml: &str) -> Result<Option<String>, XmlError> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| XmlError::Parse(e.to_string()))?;
    let Some((a, b)) = keep_pair(&doc) else {
        return Ok(None);
    };
    let parent = a.parent_element();
    let only_these = parent.is_some_and(|p| p.children().filter(|c| c.is_element()).count() == 2);
    let (mut start, end) = match (only_these, parent) {
        (true, Some(p)) => (p.range().start, p.range().end),
        _ => (a.range().start, b.range().end),
    };
    // with the indentation before it
    while start > 0 && matches!(xml.as_bytes()[start - 1], b' ' | b'\t') {
        start -= 1;
    }
    let mut end = end;
    if xml.as_bytes().get(end) == Some(&b'\n') && (start == 0 || xml.as_bytes()[start - 1] == b'\n')
    {
        end += 1;
    }
    let out = format!("{}{}", &xml[..start], &xml[end..]);
    let d = parse(&out)?;
    if d.keep_global {
        return Err(XmlError::Value {
            what: "qemu:commandline",
            text: "liveup's -global given twice".into(),
        });
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests;
