//! The state area `upgrade` leaves in KRAM for `restore`: a header (magic,
//! manifest length and CRC, a restored flag), the manifest (JSON), then
//! each VM's saved device state.

use super::vm::VmConfig;
use crate::kram::Kram;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// KRAM area holding the manifest and saved device states.
pub const STATE_AREA: &str = "liveup-state";
pub(super) const STATE_AREA_BYTES: u64 = 16 << 20;
pub(super) const MAGIC: &[u8; 8] = b"LIVEUPv1";
pub(super) const HEADER: usize = 64;
/// Saved device states start here; the manifest JSON sits between the header and this.
pub(super) const BLOB_BASE: usize = 1 << 20;

/// What `upgrade` leaves in KRAM for `restore`. A field this liveup does
/// not know is refused, not skipped: a writer that adds one changes
/// `MAGIC`'s version.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub tsc_hz: f64,
    /// TSC when the first VM was stopped.
    pub t_blackout: u64,
    /// TSC when all states were saved and stored.
    pub t_saved: u64,
    /// TSC right before kexec.
    pub t_kexec: u64,
    pub vms: Vec<SavedVm>,
    /// Files the QEMUs had mapped (binary, libraries, modules), as paths
    /// outside any chroot: restore asks for them to be read ahead before it
    /// starts QEMU, so start-up does not fault them in one by one from a
    /// cold page cache.
    #[serde(default)]
    pub preload: Vec<PathBuf>,
    /// TSC ticks spent freezing a kept device's IOMMU tables (0: none).
    #[serde(default)]
    pub freeze_ticks: u64,
}

impl Manifest {
    /// TSC ticks as milliseconds, at the rate `upgrade` measured.
    pub(super) fn ms(&self, ticks: u64) -> f64 {
        ticks as f64 * 1e3 / self.tsc_hz
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedVm {
    pub config: VmConfig,
    pub state_offset: u64,
    pub state_len: u64,
    pub state_crc: u32,
    /// TSC ticks from the first VM stopping to this VM's state read back
    /// (saves run side by side: the save phase is the largest of these).
    pub save_ticks: u64,
    /// Restored by a restore that did not bring every VM back: it has run
    /// since, so this state is never loaded again.
    #[serde(default)]
    pub restored: bool,
}

pub(super) fn state_area(kram: &Kram) -> Result<crate::kram::Area> {
    Ok(kram.ensure(STATE_AREA, STATE_AREA_BYTES / crate::kram::PAGE_SIZE)?)
}

/// Write header + manifest JSON + blobs into the state area.
pub(super) fn store(kram: &Kram, manifest: &Manifest, blobs: &[Vec<u8>]) -> Result<()> {
    let area = state_area(kram)?;
    let mut m = kram.map(&area)?;
    let json = manifest_json(manifest)?;
    let total = BLOB_BASE + blobs.iter().map(Vec::len).sum::<usize>();
    ensure!(
        total <= m.len(),
        "saved state ({total} bytes) does not fit the {} byte KRAM area",
        m.len()
    );
    m[HEADER..HEADER + json.len()].copy_from_slice(&json);
    for (b, v) in blobs.iter().zip(&manifest.vms) {
        let off = v.state_offset as usize;
        m[off..off + b.len()].copy_from_slice(b);
    }
    seal(&mut m, &json);
    Ok(())
}

/// The manifest as stored: JSON that fits between the header and the blobs.
fn manifest_json(manifest: &Manifest) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(manifest)?;
    ensure!(
        HEADER + json.len() <= BLOB_BASE,
        "manifest too large ({} bytes)",
        json.len()
    );
    Ok(json)
}

/// Write the header for the manifest `json` already in `area`: last, so
/// that until then the area holds no valid manifest.
fn seal(area: &mut [u8], json: &[u8]) {
    let h = Header {
        len: json.len() as u64,
        crc: kram_format::crc32c(json),
        restored: false,
    };
    area[..HEADER].copy_from_slice(&h.encode());
}

/// The state area's header: `MAGIC`, the manifest's length (u64) and
/// CRC32C (u32), and whether a restore completed (u32, 0 or 1), little
/// endian, the rest of its `HEADER` bytes zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Header {
    pub len: u64,
    pub crc: u32,
    pub restored: bool,
}

impl Header {
    pub(super) fn encode(&self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..8].copy_from_slice(MAGIC);
        h[8..16].copy_from_slice(&self.len.to_le_bytes());
        h[16..20].copy_from_slice(&self.crc.to_le_bytes());
        h[20..24].copy_from_slice(&u32::from(self.restored).to_le_bytes());
        h
    }

    /// The header at the start of `area`; `None` when there is none (no
    /// magic: never written, or invalidated).
    pub(super) fn decode(area: &[u8]) -> Option<Header> {
        let h = area.get(..HEADER)?;
        if &h[..8] != MAGIC {
            return None;
        }
        Some(Header {
            len: u64::from_le_bytes(h[8..16].try_into().ok()?),
            crc: u32::from_le_bytes(h[16..20].try_into().ok()?),
            restored: u32::from_le_bytes(h[20..24].try_into().ok()?) != 0,
        })
    }
}

/// Mark the state in `area` restored: it is never loaded again.
pub(super) fn set_restored(area: &mut [u8]) {
    if let Some(mut h) = Header::decode(area) {
        h.restored = true;
        area[..HEADER].copy_from_slice(&h.encode());
    }
}

/// Mark the VMs `names` of the manifest in `area` restored (a partial
/// restore): the manifest is written again with its new length and CRC,
/// header last. (A crash between the two writes leaves a manifest whose
/// CRC fails: restore then refuses it, nothing of it lost but the
/// restore itself.)
pub(super) fn mark_vms_restored(area: &mut [u8], names: &[String]) -> Result<()> {
    let Some(mut man) = load(area)? else {
        return Ok(());
    };
    for v in man.vms.iter_mut() {
        if names.contains(&v.config.name) {
            v.restored = true;
        }
    }
    let json = manifest_json(&man)?;
    ensure!(BLOB_BASE <= area.len(), "state area too small");
    area[HEADER..HEADER + json.len()].copy_from_slice(&json);
    seal(area, &json);
    Ok(())
}

/// The manifest stored in `area`, checked: `Ok(None)` when there is none
/// or it was restored already; an error (and nothing to act on) when its
/// length, checksum or JSON is bad. The area is untrusted input: every
/// length and offset is checked before it is used.
pub(super) fn load(area: &[u8]) -> Result<Option<Manifest>> {
    // Another liveup's format (the magic's version differs): refused by
    // name rather than taken for no state or read as this one's.
    if let Some(m) = area.get(..MAGIC.len()) {
        if m[..MAGIC.len() - 1] == MAGIC[..MAGIC.len() - 1] && m != MAGIC {
            anyhow::bail!(
                "liveup state: format {} (this liveup reads {}); nothing restored, the state stays in KRAM: restore with the liveup that wrote it",
                String::from_utf8_lossy(m).escape_debug(),
                String::from_utf8_lossy(MAGIC)
            );
        }
    }
    let Some(h) = Header::decode(area) else {
        return Ok(None);
    };
    if h.restored {
        return Ok(None);
    }
    let json = usize::try_from(h.len)
        .ok()
        .and_then(|len| area.get(HEADER..HEADER.checked_add(len)?))
        .with_context(|| format!("liveup state: manifest length {} is corrupt", h.len))?;
    ensure!(
        kram_format::crc32c(json) == h.crc,
        "liveup state: manifest checksum mismatch; nothing restored"
    );
    Ok(Some(
        serde_json::from_slice(json).context("liveup state: bad manifest")?,
    ))
}

/// Why a new upgrade must not overwrite the state in `area`: VMs it saved
/// that no restore has brought back (their device state exists only
/// there), or a state this liveup cannot read (another version's, or
/// corrupt: it may still be someone's only copy). `None`: nothing to lose
/// (no state, invalidated by an aborted upgrade, or restored). A VM that
/// `runs` now is not waiting for it: its saved state is older than its RAM
/// (as `restore --retry` skips it).
pub(super) fn pending(area: &[u8], runs: impl Fn(&VmConfig) -> bool) -> Option<String> {
    match load(area) {
        Err(e) => Some(format!(
            "KRAM holds a liveup state this liveup cannot read ({e:#}); a new upgrade would overwrite it. \
             Restore it with the liveup that wrote it, or discard it with `liveup kram delete {STATE_AREA}`"
        )),
        Ok(None) => None,
        Ok(Some(m)) => {
            let names: Vec<&str> = m
                .vms
                .iter()
                .filter(|v| !v.restored && !runs(&v.config))
                .map(|v| v.config.name.as_str())
                .collect();
            (!names.is_empty()).then(|| {
                format!(
                    "KRAM holds the saved state of VM(s) {} that no restore has brought back; a new upgrade would overwrite it. \
                     Run `liveup restore --retry`, or discard them with `liveup kram delete {STATE_AREA}` (their RAM areas stay until deleted)",
                    names.join(", ")
                )
            })
        }
    }
}

/// The state area mapped; `None` when KRAM has none.
pub(super) fn map_state_area(kram: &Kram) -> Result<Option<memmap2::MmapMut>> {
    match kram.lookup(STATE_AREA) {
        Ok(a) => Ok(Some(kram.map(&a)?)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// [`pending`] for the state area in `kram`, if there is one.
pub(super) fn check_no_pending(kram: &Kram) -> Result<()> {
    let Some(m) = map_state_area(kram)? else {
        return Ok(());
    };
    match pending(&m, |vm| super::vm::vm_status(vm) == "running") {
        Some(why) => anyhow::bail!(why),
        None => Ok(()),
    }
}

/// A saved VM's device state in `area`, checked against its length and
/// CRC.
pub(super) fn blob<'a>(area: &'a [u8], v: &SavedVm) -> Result<&'a [u8]> {
    let b = usize::try_from(v.state_offset)
        .ok()
        .zip(usize::try_from(v.state_len).ok())
        .and_then(|(o, l)| area.get(o..o.checked_add(l)?))
        .with_context(|| format!("liveup state: VM {} state out of range", v.config.name))?;
    ensure!(
        kram_format::crc32c(b) == v.state_crc,
        "liveup state: VM {} state checksum mismatch",
        v.config.name
    );
    Ok(b)
}

/// Make the state area hold no manifest (its header zeroed): after an
/// upgrade aborted before kexec the VMs run on, and their saved device state
/// is older than their RAM from then on; a later `restore` must not load it.
pub(super) fn invalidate_state(kram: &Kram) -> Result<()> {
    if let Some(mut m) = map_state_area(kram)? {
        m[..HEADER].fill(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
