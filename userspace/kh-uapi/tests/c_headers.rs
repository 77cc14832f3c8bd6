//! The C uapi headers against the Rust definitions: every struct's size,
//! every field's offset and size, every ioctl number and constant, as C11
//! static assertions compiled by the C compiler (`$CC`, else `cc`) against
//! the headers in the tree. A header that drifts from the Rust fails here.

use kh_uapi::{iommu_preserve as iopr, kram, prezero};
use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One `_Static_assert` line.
fn check(c: &mut String, expr: &str, value: u64) {
    writeln!(
        c,
        "_Static_assert(({expr}) == {value}ULL, \"{expr} is {value} in kh-uapi\");"
    )
    .unwrap();
}

/// Size of a struct and offset and size of each named field.
macro_rules! layout {
    ($c:expr, $rust:ty, $cname:literal, $($field:ident),+ $(,)?) => {{
        check($c, concat!("sizeof(struct ", $cname, ")"), size_of::<$rust>() as u64);
        $(
            check($c, concat!("offsetof(struct ", $cname, ", ", stringify!($field), ")"),
                  offset_of!($rust, $field) as u64);
            check($c, concat!("sizeof(((struct ", $cname, " *)0)->", stringify!($field), ")"),
                  {
                      fn field_size<T, F>(_: fn(&T) -> &F) -> usize { size_of::<F>() }
                      field_size(|s: &$rust| &s.$field) as u64
                  });
        )+
    }};
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kram_checks() -> String {
    let mut c = String::from("#include <stddef.h>\n#include \"kram/include/uapi/kram.h\"\n");
    layout!(
        &mut c,
        kram::Status,
        "kram_status",
        base,
        size,
        pages,
        meta_pages,
        used_pages,
        free_pages,
        generation,
        state,
        error,
        areas,
        max_areas
    );
    layout!(
        &mut c,
        kram::Area,
        "kram_area",
        name,
        npages,
        offset,
        id,
        flags
    );
    layout!(&mut c, kram::Page, "kram_page", id, pad, offset);
    layout!(&mut c, kram::Format, "kram_format", confirm);
    check(&mut c, "KRAM_NAME_LEN", kram::NAME_LEN as u64);
    check(&mut c, "KRAM_MAX_AREAS", kram::MAX_AREAS.into());
    check(&mut c, "KRAM_FORMAT_CONFIRM", kram::FORMAT_CONFIRM);
    check(&mut c, "KRAM_IOC_MAGIC", kram::IOC_MAGIC.into());
    for (name, v) in [
        ("KRAM_IOC_STATUS", kram::IOC_STATUS),
        ("KRAM_IOC_FORMAT", kram::IOC_FORMAT),
        ("KRAM_IOC_CREATE", kram::IOC_CREATE),
        ("KRAM_IOC_DELETE", kram::IOC_DELETE),
        ("KRAM_IOC_LOOKUP", kram::IOC_LOOKUP),
        ("KRAM_IOC_AREA_AT", kram::IOC_AREA_AT),
        ("KRAM_IOC_ALLOC", kram::IOC_ALLOC),
        ("KRAM_IOC_FREE", kram::IOC_FREE),
    ] {
        check(&mut c, name, v.into());
    }
    c
}

fn prezero_checks() -> String {
    let mut c = String::from("#include <stddef.h>\n#include \"prezero/include/uapi/prezero.h\"\n");
    layout!(
        &mut c,
        prezero::Req,
        "prezero_req",
        size,
        node,
        flags,
        count,
        done,
        ns
    );
    check(&mut c, "PREZERO_ZERO_POOL", prezero::ZERO_POOL.into());
    check(&mut c, "PREZERO_IOC_MAGIC", prezero::IOC_MAGIC.into());
    check(&mut c, "PREZERO_IOC_ZERO", prezero::IOC_ZERO.into());
    c
}

/// The VT-d preservation record's contract header against kram-format's
/// offsets (the encoder and decoder use those): each field's offset and
/// size, the header's size, magic and version.
fn vtd_record_checks() -> String {
    use kram_format::vtd::{off, MAGIC, VERSION};
    let mut c = String::from(
        "#include <stddef.h>\n#include <string.h>\n#include \"iommu-preserve/include/abi/vtd_record.h\"\n",
    );
    for (field, at, size) in [
        ("magic", off::MAGIC, 8),
        ("version", off::VERSION, 4),
        ("crc", off::CRC, 4),
        ("seg", off::SEG, 2),
        ("bus", off::BUS, 1),
        ("devfn", off::DEVFN, 1),
        ("did", off::DID, 2),
        ("levels", off::LEVELS, 1),
        ("reserved0", off::RESERVED0, 1),
        ("old_root", off::OLD_ROOT, 8),
        ("root", off::ROOT, 8),
        ("ctx", off::CTX, 8),
        ("top", off::TOP, 8),
        ("npages", off::NPAGES, 4),
        ("reserved1", off::RESERVED1, 4),
        ("pages", off::PAGES, 0),
    ] {
        check(
            &mut c,
            &format!("offsetof(struct kh_vtd_record, {field})"),
            at as u64,
        );
        if size > 0 {
            check(
                &mut c,
                &format!("sizeof(((struct kh_vtd_record *)0)->{field})"),
                size,
            );
        }
    }
    check(&mut c, "sizeof(struct kh_vtd_record)", off::PAGES as u64);
    check(&mut c, "sizeof(((struct kh_vtd_record *)0)->pages[0])", 8);
    check(&mut c, "KH_VTD_RECORD_VERSION", VERSION.into());
    check(
        &mut c,
        "sizeof(KH_VTD_RECORD_MAGIC) - 1",
        MAGIC.len() as u64,
    );
    // (a string's bytes are no constant expression in C: its text here)
    let header =
        std::fs::read_to_string(repo().join("iommu-preserve/include/abi/vtd_record.h")).unwrap();
    let want = format!(
        "#define KH_VTD_RECORD_MAGIC \"{}\"",
        std::str::from_utf8(&MAGIC).unwrap()
    );
    assert!(header.contains(&want), "vtd_record.h lacks {want}");
    c
}

fn iommu_preserve_checks() -> String {
    let mut c = String::from(
        "#include <stddef.h>\n#include \"iommu-preserve/include/uapi/iommu_preserve.h\"\n",
    );
    layout!(&mut c, iopr::Dev, "iopr_dev", seg, bus, devfn);
    layout!(&mut c, iopr::Span, "iopr_span", start, len);
    layout!(&mut c, iopr::Freeze, "iopr_freeze", dev, nspans, spans);
    layout!(
        &mut c,
        iopr::Status,
        "iopr_status",
        state,
        seg,
        bus,
        devfn,
        did,
        levels,
        pad,
        npages,
        record,
        root
    );
    for (name, v) in [
        ("IOPR_STATE_NONE", iopr::STATE_NONE),
        ("IOPR_STATE_FROZEN", iopr::STATE_FROZEN),
        ("IOPR_STATE_ADOPTED", iopr::STATE_ADOPTED),
        ("IOPR_STATE_BLOCKED", iopr::STATE_BLOCKED),
        ("IOPR_STATE_ATTACHED", iopr::STATE_ATTACHED),
        ("IOPR_STATE_REFUSED", iopr::STATE_REFUSED),
        ("IOPR_IOC_MAGIC", iopr::IOC_MAGIC),
        ("IOPR_MAX_SPANS", iopr::MAX_SPANS as u32),
        ("IOPR_IOC_STATUS", iopr::IOC_STATUS),
        ("IOPR_IOC_FREEZE", iopr::IOC_FREEZE),
        ("IOPR_IOC_THAW", iopr::IOC_THAW),
        ("IOPR_IOC_RELEASE", iopr::IOC_RELEASE),
        ("IOPR_IOC_DISCARD", iopr::IOC_DISCARD),
    ] {
        check(&mut c, name, v.into());
    }
    c
}

/// Compiles `src` (syntax and static assertions only); the compiler's
/// messages on failure.
fn compile(name: &str, src: &str) -> Result<(), String> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let file = dir.join(format!("{name}.c"));
    std::fs::write(&file, src).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Werror", "-fsyntax-only", "-I"])
        .arg(repo())
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{cc}: {e} (a C compiler is needed to check the uapi headers)"));
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn kram_header_matches() {
    compile("kram_uapi", &kram_checks()).unwrap_or_else(|e| panic!("kram.h differs:\n{e}"));
}

#[test]
fn vtd_record_header_matches() {
    compile("vtd_record", &vtd_record_checks())
        .unwrap_or_else(|e| panic!("vtd_record.h differs:\n{e}"));
}

#[test]
fn prezero_header_matches() {
    compile("prezero_uapi", &prezero_checks())
        .unwrap_or_else(|e| panic!("prezero.h differs:\n{e}"));
}

#[test]
fn iommu_preserve_header_matches() {
    compile("iopr_uapi", &iommu_preserve_checks())
        .unwrap_or_else(|e| panic!("iommu_preserve.h differs:\n{e}"));
}

/// The check itself can fail: a header with one field moved is refused,
/// with the field named.
#[test]
fn a_drifted_header_is_refused() {
    let header = std::fs::read_to_string(repo().join("kram/include/uapi/kram.h")).unwrap();
    let drifted = header.replacen("\t__u32 state;", "\t__u32 error2;\n\t__u32 state;", 1);
    assert_ne!(
        header, drifted,
        "the header no longer has the line this test moves"
    );
    let src = kram_checks().replace("#include \"kram/include/uapi/kram.h\"\n", &drifted);
    let err = compile("kram_uapi_drifted", &src).expect_err("a drifted header passed");
    assert!(err.contains("offsetof(struct kram_status, state)"), "{err}");
    // And a wrong ioctl number.
    let wrong = kram_checks().replace(&format!("{}ULL", kram::IOC_FREE), "1ULL");
    let err = compile("kram_uapi_wrong_nr", &wrong).expect_err("a wrong number passed");
    assert!(err.contains("KRAM_IOC_FREE"), "{err}");
}

/// And the VT-d contract: two fields swapped are refused, named.
#[test]
fn a_drifted_vtd_record_is_refused() {
    let header =
        std::fs::read_to_string(repo().join("iommu-preserve/include/abi/vtd_record.h")).unwrap();
    let drifted = header.replacen(
        "\t__u8 bus;\n\t__u8 devfn;",
        "\t__u8 devfn;\n\t__u8 bus;",
        1,
    );
    assert_ne!(
        header, drifted,
        "the header no longer has the lines this test swaps"
    );
    let src = vtd_record_checks().replace(
        "#include \"iommu-preserve/include/abi/vtd_record.h\"\n",
        &drifted,
    );
    let err = compile("vtd_record_drifted", &src).expect_err("a drifted header passed");
    assert!(err.contains("offsetof(struct kh_vtd_record, bus)"), "{err}");
}

/// The encoder against numbers written out by hand from the kernel's rules.
#[test]
fn request_numbers() {
    // _IOR(0xBC, 0, 72 bytes): dir 2, size 72.
    assert_eq!(kram::IOC_STATUS, 0x8048_BC00);
    // _IOW(0xBC, 7, 16 bytes): dir 1.
    assert_eq!(kram::IOC_FREE, 0x4010_BC07);
    // _IOWR(0xb7, 1, 40 bytes): dir 3.
    assert_eq!(prezero::IOC_ZERO, 0xC028_B701);
    // _IO(0xBD, 2): no direction, no size; _IOR(0xBD, 0, 32 bytes).
    assert_eq!(iopr::IOC_THAW, 0x0000_BD02);
    assert_eq!(iopr::IOC_STATUS, 0x8020_BD00);
    // _IOW(0xBD, 1, 136 bytes): dir 1.
    assert_eq!(iopr::IOC_FREEZE, 0x4088_BD01);
}
