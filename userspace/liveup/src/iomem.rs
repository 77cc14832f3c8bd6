//! Parser for `/proc/iomem`: finds the ranges reserved on the kernel command
//! line (memmap=SIZE$ADDR shows up as a top-level "Reserved" range) that KRAM
//! can own, and tells whether a range overlaps System RAM.

use std::fmt;

/// One line of `/proc/iomem`: an inclusive physical range and its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub start: u64,
    /// Inclusive end, as the kernel prints it.
    pub end: u64,
    pub name: String,
    /// Nesting depth (two spaces of indentation per level).
    pub depth: usize,
}

impl Resource {
    /// Size in bytes (never zero: the end is inclusive).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn overlaps(&self, start: u64, len: u64) -> bool {
        len > 0 && start <= self.end && start.saturating_add(len - 1) >= self.start
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}-{:#x} {}", self.start, self.end, self.name)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("line {0}: expected 'START-END : NAME'")]
    Syntax(usize),
    #[error("line {0}: bad hexadecimal address")]
    Address(usize),
    #[error("line {0}: range ends before it starts")]
    Inverted(usize),
    #[error("all addresses are zero: read /proc/iomem as root")]
    Unprivileged,
}

/// Parse the text of `/proc/iomem`.
pub fn parse(text: &str) -> Result<Vec<Resource>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let depth = (line.len() - line.trim_start().len()) / 2;
        let (range, name) = line.trim().split_once(" : ").ok_or(ParseError::Syntax(n))?;
        let (s, e) = range.split_once('-').ok_or(ParseError::Syntax(n))?;
        let start = u64::from_str_radix(s, 16).map_err(|_| ParseError::Address(n))?;
        let end = u64::from_str_radix(e, 16).map_err(|_| ParseError::Address(n))?;
        if end < start {
            return Err(ParseError::Inverted(n));
        }
        out.push(Resource {
            start,
            end,
            name: name.to_string(),
            depth,
        });
    }
    if !out.is_empty() && out.iter().all(|r| r.start == 0 && r.end == 0) {
        return Err(ParseError::Unprivileged);
    }
    Ok(out)
}

/// The parts at or above 4 GiB of top-level "Reserved" ranges that do not
/// touch System RAM: what memmap=SIZE$ADDR leaves for a KRAM region. The
/// kernel merges a memmap= range with adjacent firmware ranges (the BIOS
/// area just below 4 GiB), so a range is clipped at 4 GiB, not skipped.
pub fn reserved_candidates(res: &[Resource]) -> Vec<Resource> {
    const FOUR_GIB: u64 = 1 << 32;
    res.iter()
        .filter(|r| r.depth == 0 && r.name == "Reserved" && r.end >= FOUR_GIB)
        .filter(|r| !overlaps_ram(res, r.start, r.len()))
        .map(|r| Resource {
            start: r.start.max(FOUR_GIB),
            ..r.clone()
        })
        .collect()
}

/// Whether any System RAM range overlaps `[start, start + len)`.
pub fn overlaps_ram(res: &[Resource], start: u64, len: u64) -> bool {
    res.iter()
        .any(|r| r.name == "System RAM" && r.overlaps(start, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
000f0000-000fffff : Reserved
  000f0000-000fffff : System ROM
00100000-7ffdffff : System RAM
  01000000-01ffffff : Kernel code
b0000000-bfffffff : PCI ECAM 0000 [bus 00-ff]
fffc0000-10fffffff : Reserved
110000000-17fffffff : System RAM
";

    #[test]
    fn parses_nesting_and_ranges() {
        let r = parse(SAMPLE).unwrap();
        assert_eq!(r.len(), 9);
        assert_eq!(r[3].depth, 1);
        assert_eq!(r[3].name, "System ROM");
        assert_eq!(r[7].start, 0xfffc_0000);
        assert_eq!(r[7].len(), (256 << 20) + (256 << 10));
    }

    #[test]
    fn finds_the_memmap_region_only() {
        let r = parse(SAMPLE).unwrap();
        let c = reserved_candidates(&r);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].start, 0x1_0000_0000);
        assert_eq!(c[0].len(), 256 << 20);
    }

    #[test]
    fn ram_overlap_is_detected_at_the_edges() {
        let r = parse(SAMPLE).unwrap();
        assert!(!overlaps_ram(&r, 0x1_0000_0000, 256 << 20));
        assert!(overlaps_ram(&r, 0x1_0000_0000, (256 << 20) + 1));
        assert!(overlaps_ram(&r, 0x7ffd_f000, 0x1000));
        assert!(!overlaps_ram(&r, 0x7ffe_0000, 0x1000));
        assert!(!overlaps_ram(&r, 0x1_0000_0000, 0));
    }

    #[test]
    fn garbage_is_refused_with_the_line_number() {
        assert_eq!(parse("zz-10 : x\n"), Err(ParseError::Address(1)));
        assert_eq!(parse("00-10 : a\nnonsense\n"), Err(ParseError::Syntax(2)));
        assert_eq!(parse("20-10 : a\n"), Err(ParseError::Inverted(1)));
        assert_eq!(
            parse("0-0 : System RAM\n0-0 : Reserved\n"),
            Err(ParseError::Unprivileged)
        );
    }
}
