// SPDX-License-Identifier: GPL-2.0
//! The memory a kept device may reach: its KRAM areas' fixed runs, as
//! physical spans. `liveup upgrade` computes them before the blackout and
//! puts them on the next kernel's command line after the record's address
//! (`intel_iommu_adopt=0xRECORD,0xSTART+0xLEN,...`), where kexec's
//! purgatory checks them with the rest of the loaded image; the freeze
//! refuses a snapshot with a leaf outside them, and the next kernel
//! refuses to adopt one (`verify`). Preserved memory (the record, the
//! tables) cannot widen them.

use core::fmt;

/// At most this many spans (a VM's RAM areas, one per NUMA node or DIMM).
pub const MAX_SPANS: usize = 8;

/// `[start, start + len)`, page-aligned, not empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u64,
    pub len: u64,
}

impl Span {
    /// `None` if empty, not page-aligned or past the end of the address
    /// space.
    pub fn new(start: u64, len: u64) -> Option<Span> {
        let aligned = start.is_multiple_of(super::PAGE) && len.is_multiple_of(super::PAGE);
        (aligned && len > 0 && start.checked_add(len).is_some()).then_some(Span { start, len })
    }

    pub fn end(&self) -> u64 {
        // (`new` checked it does not overflow; a default span is empty)
        self.start.saturating_add(self.len)
    }
}

/// Why a span list is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanError {
    /// Nothing given.
    Empty,
    /// More than `MAX_SPANS`.
    TooMany,
    /// Not `START+LEN`, a number that does not parse, empty, unaligned or
    /// overflowing.
    Bad,
    /// Two spans share memory.
    Overlap,
}

/// Up to `MAX_SPANS` spans, none overlapping another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spans {
    n: usize,
    s: [Span; MAX_SPANS],
}

impl Spans {
    pub fn as_slice(&self) -> &[Span] {
        &self.s[..self.n.min(MAX_SPANS)]
    }

    /// Add one span; refused if full or overlapping one already there.
    pub fn push(&mut self, span: Span) -> Result<(), SpanError> {
        if self.n >= MAX_SPANS {
            return Err(SpanError::TooMany);
        }
        if self
            .as_slice()
            .iter()
            .any(|o| span.start < o.end() && o.start < span.end())
        {
            return Err(SpanError::Overlap);
        }
        self.s[self.n] = span;
        self.n += 1;
        Ok(())
    }

    /// `START+LEN[,START+LEN...]`, each number hexadecimal with `0x` or
    /// decimal (what `Display` writes).
    pub fn parse(text: &str) -> Result<Spans, SpanError> {
        let mut out = Spans::default();
        if text.is_empty() {
            return Err(SpanError::Empty);
        }
        for item in text.split(',') {
            let (a, b) = item.split_once('+').ok_or(SpanError::Bad)?;
            let span = Span::new(number(a)?, number(b)?).ok_or(SpanError::Bad)?;
            out.push(span)?;
        }
        Ok(out)
    }

    /// Whether all of `[start, start + len)` lies in the spans (contiguous
    /// spans count as one).
    pub fn cover(&self, start: u64, len: u64) -> bool {
        let Some(end) = start.checked_add(len) else {
            return false;
        };
        let mut at = start;
        // each round moves `at` past one span: at most n rounds
        for _ in 0..=self.n {
            if at >= end {
                return true;
            }
            match self
                .as_slice()
                .iter()
                .find(|s| s.start <= at && at < s.end())
            {
                Some(s) => at = s.end(),
                None => return false,
            }
        }
        at >= end
    }
}

fn number(s: &str) -> Result<u64, SpanError> {
    let r = match s.strip_prefix("0x") {
        Some(h) if !h.is_empty() && h.len() <= 16 => u64::from_str_radix(h, 16),
        Some(_) => return Err(SpanError::Bad),
        None if !s.is_empty() && s.len() <= 20 => s.parse::<u64>(),
        None => return Err(SpanError::Bad),
    };
    // (from_str_radix takes a leading '+', which START+LEN never has)
    if s.contains('+') {
        return Err(SpanError::Bad);
    }
    r.map_err(|_| SpanError::Bad)
}

impl fmt::Display for Spans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.as_slice().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{:#x}+{:#x}", s.start, s.len)?;
        }
        Ok(())
    }
}
