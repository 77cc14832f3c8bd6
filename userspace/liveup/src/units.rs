//! Sizes as operators type them, parsed one way everywhere (liveup's
//! commands, `liveup migrate`, prezero, e1000e-dma).
//!
//! A size is a whole number, decimal or `0x` hexadecimal, optionally
//! followed by a binary unit: `K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB`
//! (case-insensitive). Fractions ("1.5G") and `KB`/`MB`/`GB`, which some
//! tools read as powers of ten, are refused with a message rather than
//! guessed at.

/// Why a size was refused; the message names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("bad size {0:?}: expected a whole number with an optional K, M, G or T (KiB, MiB, GiB, TiB)")]
    Syntax(String),
    #[error("bad size {0:?}: fractions are not accepted; use a smaller unit (1536M, not 1.5G)")]
    Fraction(String),
    #[error(
        "bad size {0:?}: KB/MB/GB are ambiguous (1000 or 1024); write K, KiB, M, MiB, G or GiB"
    )]
    Ambiguous(String),
    #[error("bad size {0:?}: too large")]
    Overflow(String),
}

/// `s` in bytes.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let units: [(&str, u32); 8] = [
        ("kib", 10),
        ("mib", 20),
        ("gib", 30),
        ("tib", 40),
        ("k", 10),
        ("m", 20),
        ("g", 30),
        ("t", 40),
    ];
    let (num, shift) = units
        .iter()
        .find_map(|&(u, sh)| lower.strip_suffix(u).map(|n| (n, sh)))
        .unwrap_or((lower.as_str(), 0));
    if ["kb", "mb", "gb", "tb"].iter().any(|u| lower.ends_with(u)) && !lower.starts_with("0x") {
        return Err(SizeError::Ambiguous(s.into()));
    }
    if num.contains('.') {
        return Err(SizeError::Fraction(s.into()));
    }
    let v = match num.strip_prefix("0x") {
        Some(h) if !h.is_empty() => u64::from_str_radix(h, 16),
        Some(_) => return Err(SizeError::Syntax(s.into())),
        None if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) => num.parse::<u64>(),
        None => return Err(SizeError::Syntax(s.into())),
    }
    .map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow => SizeError::Overflow(s.into()),
        _ => SizeError::Syntax(s.into()),
    })?;
    v.checked_mul(1u64 << shift)
        .ok_or_else(|| SizeError::Overflow(s.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_operators_type() {
        for (s, v) in [
            ("4096", 4096u64),
            ("64K", 64 << 10),
            ("64k", 64 << 10),
            ("64KiB", 64 << 10),
            ("2M", 2 << 20),
            ("2mib", 2 << 20),
            ("1G", 1 << 30),
            ("1g", 1 << 30),
            ("1GiB", 1 << 30),
            ("2T", 2 << 40),
            (" 96M ", 96 << 20),
            ("0x40000000", 1 << 30),
            ("0X10", 16),
            ("0x2M", 2 << 20),
            ("0", 0),
        ] {
            assert_eq!(parse_size(s), Ok(v), "{s}");
        }
    }

    #[test]
    fn refused_with_the_reason() {
        for s in ["", "M", "12x", "12Q", "-1", "1 G", "0x", "0xG", "G1", "1e3"] {
            assert_eq!(parse_size(s), Err(SizeError::Syntax(s.into())), "{s}");
        }
        assert_eq!(parse_size("1.5G"), Err(SizeError::Fraction("1.5G".into())));
        assert_eq!(parse_size("64MB"), Err(SizeError::Ambiguous("64MB".into())));
        assert_eq!(parse_size("1gb"), Err(SizeError::Ambiguous("1gb".into())));
        for s in [
            "99999999999999G",
            "18446744073709551616",
            "0x1ffffffffffffffff",
            "16777216T",
        ] {
            assert_eq!(parse_size(s), Err(SizeError::Overflow(s.into())), "{s}");
        }
        assert!(parse_size("64MB")
            .unwrap_err()
            .to_string()
            .contains("ambiguous"));
    }
}
