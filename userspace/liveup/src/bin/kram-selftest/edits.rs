//! Looking at and changing an area's bytes, a preserved VT-d record and
//! physical words: the selftests' way to check contents and to corrupt
//! them on purpose.

use crate::data::tinyvm_sum;
use anyhow::{bail, ensure, Context, Result};
use liveup::kram::{Kram, PAGE_SIZE};
use std::os::unix::fs::FileExt;

fn hex(s: &str) -> Result<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .with_context(|| format!("{s} is not hexadecimal"))
}

/// tinyvm's checksum of bytes `start..end` (hex) of the area.
pub fn sum(k: &Kram, area: &str, start: &str, end: &str) -> Result<()> {
    let m = k.map(&k.lookup(area)?)?;
    let (a, b) = (hex(start)? as usize, hex(end)? as usize);
    ensure!(
        a <= b && b <= m.len() && a % 4 == 0 && b % 4 == 0,
        "range {start}..{end} is not inside area {area} ({} bytes) or not word aligned",
        m.len()
    );
    println!("{:x}", tinyvm_sum(&m[a..b]));
    Ok(())
}

/// Every byte of the area is zero.
pub fn zero(k: &Kram, area: &str) -> Result<()> {
    let m = k.map(&k.lookup(area)?)?;
    let bad = m.iter().filter(|&&b| b != 0).count();
    ensure!(
        bad == 0,
        "{bad} of {} bytes of area {area} are not zero",
        m.len()
    );
    println!("{} bytes of {area} zero", m.len());
    Ok(())
}

/// Change one field of the VT-d record in the area's first page, with a
/// valid checksum (a record sound in itself that does not match the
/// machine).
pub fn record_edit(k: &Kram, area: &str, field: &str, value: &str) -> Result<()> {
    use kram_format::vtd::Record;
    let mut m = k.map(&k.lookup(area)?)?;
    let page = &mut m[..PAGE_SIZE as usize];
    let mut r = Record::decode(page)
        .map_err(|e| anyhow::anyhow!("record in {area} refused: {e:?}"))?
        .with_context(|| format!("no record in {area}"))?;
    let v = hex(value)?;
    let mut reserved0 = None;
    match field {
        "root" => r.root = v,
        "devfn" => r.devfn = u8::try_from(v).context("devfn is one byte")?,
        // (no field of a decoded record: set in the bytes, then sealed)
        "reserved0" => reserved0 = Some(u8::try_from(v).context("reserved0 is one byte")?),
        _ => bail!("field {field}: root, devfn or reserved0"),
    }
    r.encode(page)
        .map_err(|e| anyhow::anyhow!("record not encoded: {e:?}"))?;
    if let Some(b) = reserved0 {
        page[kram_format::vtd::off::RESERVED0] = b;
        Record::seal(page, r.pages().len())
            .map_err(|e| anyhow::anyhow!("record not sealed: {e:?}"))?;
    }
    Ok(())
}

/// Offset and open file of 8-byte word `addr` (hex) of /dev/mem.
fn phys_word(addr: &str, write: bool) -> Result<(std::fs::File, u64)> {
    let a = hex(addr)?;
    ensure!(a % 8 == 0, "address {addr} is not 8-byte aligned");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open("/dev/mem")
        .context("/dev/mem")?;
    Ok((f, a))
}

pub fn peek_phys(addr: &str) -> Result<()> {
    let (f, a) = phys_word(addr, false)?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, a)
        .with_context(|| format!("read at {addr}"))?;
    println!("{:#x}", u64::from_le_bytes(b));
    Ok(())
}

pub fn poke_phys(addr: &str, value: &str) -> Result<()> {
    let (f, a) = phys_word(addr, true)?;
    let v = hex(value)?;
    f.write_all_at(&v.to_le_bytes(), a)
        .with_context(|| format!("write at {addr}"))?;
    Ok(())
}

/// XOR one byte of the area with `xor`.
pub fn poke(k: &Kram, area: &str, offset: &str, xor: &str) -> Result<()> {
    let mut m = k.map(&k.lookup(area)?)?;
    let (o, x) = (hex(offset)? as usize, hex(xor)?);
    ensure!(
        o < m.len() && x <= 0xff,
        "offset {offset} outside area {area} or mask {xor} over 0xff"
    );
    m[o] ^= x as u8;
    Ok(())
}

pub fn free(k: &Kram, area: &str, offset: &str) -> Result<()> {
    k.free(k.lookup(area)?.id, hex(offset)?)?;
    Ok(())
}
