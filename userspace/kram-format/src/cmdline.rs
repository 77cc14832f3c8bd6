// SPDX-License-Identifier: GPL-2.0
//! Finding the KRAM region on the kernel command line.
//!
//! Shared like `format.rs`: the `kram` module includes this file by path to
//! discover its region when loaded without `base=`/`size=`, and the host
//! tests it. `core` only, no `unsafe`, no panics on any input.
//!
//! Two reservations qualify:
//! - `memmap=SIZE$ADDR` (E820 reserved) and `memmap=SIZE!ADDR` (E820
//!   persistent memory): a fixed physical range the kernel never uses. One
//!   `memmap=` may list several entries separated by commas.
//! - `reserve_mem=SIZE:ALIGN:kram`: a range memblock sets aside at boot and
//!   looks up by name (the kernel gives its address; with KHO it is kept at
//!   the same address across kexec).

/// Where the region comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// One `memmap=` range: `(base, size)`.
    Memmap(u64, u64),
    /// A `reserve_mem=` entry named [`RESERVE_MEM_NAME`]; its address comes from the kernel.
    ReserveMem,
}

/// Why the command line names no single region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindError {
    /// Neither a `memmap=` `$`/`!` range nor `reserve_mem=...:kram`.
    None,
    /// Several `memmap=` ranges qualify: the module needs `base=`/`size=`.
    Ambiguous,
}

/// The `reserve_mem=` label KRAM claims.
pub const RESERVE_MEM_NAME: &str = "kram";

/// Parse a number the way the kernel's `memparse()` does: decimal, `0x` hex
/// or leading-`0` octal, then an optional K/M/G/T/P/E suffix. Returns the
/// value and the rest of the string; `None` on no digits or overflow.
pub fn memparse(s: &str) -> Option<(u64, &str)> {
    let b = s.as_bytes();
    let (radix, mut i) = if b.len() > 1 && b[0] == b'0' && (b[1] == b'x' || b[1] == b'X') {
        (16, 2)
    } else if b.len() > 1 && b[0] == b'0' && b[1].is_ascii_digit() {
        (8, 1)
    } else {
        (10, 0)
    };
    let start = i;
    let mut v: u64 = 0;
    while i < b.len() {
        let d = match (b[i] as char).to_digit(radix) {
            Some(d) => d,
            None => break,
        };
        v = v.checked_mul(radix as u64)?.checked_add(d as u64)?;
        i += 1;
    }
    if i == start && radix != 8 {
        return None;
    }
    let shift = match b.get(i) {
        Some(b'K' | b'k') => 10,
        Some(b'M' | b'm') => 20,
        Some(b'G' | b'g') => 30,
        Some(b'T' | b't') => 40,
        Some(b'P' | b'p') => 50,
        Some(b'E' | b'e') => 60,
        _ => 0,
    };
    if shift != 0 {
        i += 1;
        if v.leading_zeros() < shift {
            return None;
        }
        v <<= shift;
    }
    Some((v, &s[i..]))
}

/// The `memmap=` ranges of type `$` or `!` in one entry list
/// (`SIZE$ADDR[,SIZE!ADDR...]`), passed to `f` as `(base, size)`.
fn memmap_ranges(list: &str, f: &mut impl FnMut(u64, u64)) {
    for entry in list.split(',') {
        let Some((size, rest)) = memparse(entry) else {
            continue;
        };
        let mut chars = rest.chars();
        if !matches!(chars.next(), Some('$' | '!')) {
            continue;
        }
        match memparse(chars.as_str()) {
            Some((base, "")) if size != 0 => f(base, size),
            _ => {}
        }
    }
}

/// Find the one KRAM region the command line reserves. `memmap=` ranges come
/// first; `reserve_mem=...:kram` only if there is none.
pub fn find_region(cmdline: &str) -> Result<Found, FindError> {
    let mut found: Option<(u64, u64)> = None;
    let mut count = 0u32;
    let mut reserve_mem = false;
    for word in cmdline.split_ascii_whitespace() {
        if let Some(list) = word.strip_prefix("memmap=") {
            memmap_ranges(list, &mut |b, s| {
                count += 1;
                found = Some((b, s));
            });
        } else if let Some(v) = word.strip_prefix("reserve_mem=") {
            // SIZE:ALIGN:NAME
            let mut parts = v.splitn(3, ':');
            let (size, align, name) = (parts.next(), parts.next(), parts.next());
            let sized = size
                .and_then(memparse)
                .is_some_and(|(n, r)| n != 0 && r.is_empty());
            let aligned = align.and_then(memparse).is_some_and(|(_, r)| r.is_empty());
            if sized && aligned && name == Some(RESERVE_MEM_NAME) {
                reserve_mem = true;
            }
        }
    }
    match (count, found) {
        (1, Some((b, s))) => Ok(Found::Memmap(b, s)),
        (0, _) if reserve_mem => Ok(Found::ReserveMem),
        (0, _) => Err(FindError::None),
        _ => Err(FindError::Ambiguous),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memparse_like_the_kernel() {
        assert_eq!(memparse("256M"), Some((256 << 20, "")));
        assert_eq!(memparse("0x100000000"), Some((0x1_0000_0000, "")));
        assert_eq!(memparse("4G$0x1"), Some((4 << 30, "$0x1")));
        assert_eq!(memparse("010"), Some((8, "")));
        assert_eq!(memparse("0"), Some((0, "")));
        assert_eq!(memparse("1k"), Some((1024, "")));
        assert_eq!(memparse(""), None);
        assert_eq!(memparse("M"), None);
        assert_eq!(memparse("0x"), None);
        assert_eq!(memparse("99999999999999999999"), None);
        assert_eq!(memparse("16E"), None);
    }

    #[test]
    fn finds_one_memmap_range() {
        let c = "console=ttyS0 memmap=256M$0x100000000 quiet";
        assert_eq!(find_region(c), Ok(Found::Memmap(0x1_0000_0000, 256 << 20)));
        let c = "memmap=1G!4G";
        assert_eq!(find_region(c), Ok(Found::Memmap(4 << 30, 1 << 30)));
        // usable (@) and ACPI (#) entries are not KRAM candidates
        let c = "memmap=100M@2G,64M$0x80000000,16M#3G";
        assert_eq!(find_region(c), Ok(Found::Memmap(0x8000_0000, 64 << 20)));
    }

    #[test]
    fn refuses_none_or_several() {
        assert_eq!(find_region("console=ttyS0"), Err(FindError::None));
        assert_eq!(
            find_region("memmap=exactmap memmap=640K@0"),
            Err(FindError::None)
        );
        assert_eq!(find_region("memmap=0$4G"), Err(FindError::None));
        assert_eq!(find_region("memmap=64M$4Gx"), Err(FindError::None));
        assert_eq!(
            find_region("memmap=64M$4G memmap=64M!8G"),
            Err(FindError::Ambiguous)
        );
        assert_eq!(
            find_region("memmap=64M$4G,64M$8G"),
            Err(FindError::Ambiguous)
        );
    }

    #[test]
    fn reserve_mem_by_name() {
        assert_eq!(
            find_region("reserve_mem=64M:2M:kram"),
            Ok(Found::ReserveMem)
        );
        assert_eq!(find_region("reserve_mem=64M:2M:oops"), Err(FindError::None));
        assert_eq!(find_region("reserve_mem=0:2M:kram"), Err(FindError::None));
        assert_eq!(find_region("reserve_mem=64M:kram"), Err(FindError::None));
        // a memmap range wins over reserve_mem
        assert_eq!(
            find_region("reserve_mem=64M:2M:kram memmap=16M$1G"),
            Ok(Found::Memmap(1 << 30, 16 << 20))
        );
    }

    #[test]
    fn never_panics_on_junk() {
        for c in [
            "memmap=",
            "memmap=$",
            "memmap=,,,",
            "reserve_mem=:::",
            "memmap=1$$1",
            "memmap=0x$0x",
        ] {
            let _ = find_region(c);
        }
    }
}
