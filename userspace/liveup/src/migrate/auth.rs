//! Who may migrate to whom: both hosts hold the same pre-shared key (32
//! random bytes, hex, in a root-only file; `liveup migrate keygen` makes
//! one, the operator copies it to the hosts that may exchange VMs).
//!
//! Why a pre-shared key and HMAC-SHA256 rather than TLS: the peers are two
//! hosts of one operator, not strangers, so a certificate authority buys
//! nothing; the key file is what the operator already distributes for
//! other cluster secrets; and QEMU's own migration stream can use the
//! same secret through its `tls-creds-psk` object (TLS-PSK, gnutls), so
//! one key covers liveup's control connection and QEMU's data.
//!
//! The control connection opens with a challenge-response: each side
//! sends a fresh nonce and proves it holds the key with an HMAC over both
//! nonces and its role; the destination proves it first, so the source
//! says nothing to a host without the key. Both then derive a session key
//! from the two nonces; every later message carries an HMAC over its
//! direction, its sequence number and its bytes (a forged, replayed,
//! reordered or truncated message is refused), and the data keys (QEMU's
//! TLS-PSK, the relay's frame MACs) are derived from it.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

type HmacSha256 = Hmac<Sha256>;

pub const KEY_LEN: usize = 32;
/// Where `send` and `receive` look for the key unless told.
pub const DEFAULT_KEY: &str = "/etc/liveup/migrate.key";
/// How long either side waits for each step of the key handshake (a new
/// connection that takes longer is dropped).
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// What the MACs are bound to: this protocol and its version.
const DOMAIN: &[u8] = b"liveup-migrate-v1";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("migration key {path}: {source} (make one with `liveup migrate keygen {path}` and copy it to both hosts)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("migration key {path}: readable by group or others (mode {mode:o}): chmod 600 it")]
    Mode { path: PathBuf, mode: u32 },
    #[error("migration key {path}: not {} hexadecimal digits", KEY_LEN * 2)]
    Format { path: PathBuf },
    #[error("migration key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no random bytes: {0}")]
    Random(std::io::Error),
}

/// The pre-shared key.
#[derive(Clone)]
pub struct Key([u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub fn from_bytes(b: [u8; KEY_LEN]) -> Key {
        Key(b)
    }

    /// Read a key file: 64 hex digits, mode 0600 or stricter.
    pub fn load(path: &Path) -> Result<Key, AuthError> {
        let read = |source| AuthError::Read {
            path: path.into(),
            source,
        };
        let mut f = std::fs::File::open(path).map_err(read)?;
        let mode = f.metadata().map_err(read)?.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AuthError::Mode {
                path: path.into(),
                mode,
            });
        }
        let mut s = String::new();
        f.read_to_string(&mut s).map_err(read)?;
        let b = unhex(s.trim())
            .and_then(|v| <[u8; KEY_LEN]>::try_from(v).ok())
            .ok_or_else(|| AuthError::Format { path: path.into() })?;
        Ok(Key(b))
    }

    /// Make a new key file (mode 0600; an existing file is not replaced).
    pub fn generate(path: &Path) -> Result<(), AuthError> {
        let k = random::<KEY_LEN>()?;
        let write = |source| AuthError::Write {
            path: path.into(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write)?;
        f.write_all(format!("{}\n", hex(&k)).as_bytes())
            .map_err(write)
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        m.update(DOMAIN);
        for p in parts {
            m.update(&(p.len() as u64).to_le_bytes());
            m.update(p);
        }
        m
    }

    /// A 32-byte MAC of `parts` (each length-prefixed, after the domain).
    pub fn sign(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.mac(parts).finalize().into_bytes().into()
    }

    /// Whether `tag` is the MAC of `parts` (compared in constant time).
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        self.mac(parts).verify_slice(tag).is_ok()
    }

    /// A key for one purpose, derived from this one.
    pub fn derive(&self, label: &str, parts: &[&[u8]]) -> Key {
        let mut all: Vec<&[u8]> = vec![label.as_bytes()];
        all.extend_from_slice(parts);
        Key(self.sign(&all))
    }

    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

/// Which side proves or signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Destination,
}

impl Role {
    pub fn label(self) -> &'static [u8] {
        match self {
            Role::Source => b"source",
            Role::Destination => b"destination",
        }
    }

    pub fn peer(self) -> Role {
        match self {
            Role::Source => Role::Destination,
            Role::Destination => Role::Source,
        }
    }
}

/// The proof that `role` holds `key`, for this pair of nonces.
pub fn proof(key: &Key, role: Role, source_nonce: &[u8], dest_nonce: &[u8]) -> [u8; 32] {
    key.sign(&[b"proof", role.label(), source_nonce, dest_nonce])
}

pub fn check_proof(
    key: &Key,
    role: Role,
    source_nonce: &[u8],
    dest_nonce: &[u8],
    p: &[u8],
) -> bool {
    key.verify(&[b"proof", role.label(), source_nonce, dest_nonce], p)
}

/// `N` bytes from the kernel's random pool.
pub fn random<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(AuthError::Random)?;
    Ok(b)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("liveup-auth-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&d);
        d
    }

    #[test]
    fn key_files_are_made_and_checked() {
        let p = tmp("k");
        Key::generate(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let k = Key::load(&p).unwrap();
        assert_eq!(k.hex().len(), 64);
        // not replaced
        assert!(Key::generate(&p).is_err());
        // too open
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Key::load(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        // not hex, or short
        for bad in ["zz", "abcd", ""] {
            std::fs::write(&p, bad).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            let e = Key::load(&p).unwrap_err().to_string();
            assert!(e.contains("hexadecimal digits"), "{e}");
        }
        std::fs::remove_file(&p).unwrap();
        let e = Key::load(&p).unwrap_err().to_string();
        assert!(e.contains("liveup migrate keygen"), "{e}");
    }

    #[test]
    fn proofs_bind_key_role_and_nonces() {
        let k = Key([7; 32]);
        let other = Key([8; 32]);
        let p = proof(&k, Role::Destination, b"n1", b"n2");
        assert!(check_proof(&k, Role::Destination, b"n1", b"n2", &p));
        assert!(!check_proof(&other, Role::Destination, b"n1", b"n2", &p));
        assert!(!check_proof(&k, Role::Source, b"n1", b"n2", &p));
        assert!(!check_proof(&k, Role::Destination, b"n2", b"n1", &p));
        assert!(!check_proof(&k, Role::Destination, b"n1", b"n2", &p[..31]));
        // length prefixes: ("ab","c") and ("a","bc") differ
        assert_ne!(k.sign(&[b"ab", b"c"]), k.sign(&[b"a", b"bc"]));
        assert_ne!(k.derive("a", &[]).hex(), k.derive("b", &[]).hex());
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])).unwrap(),
            vec![0, 1, 0xab, 0xff]
        );
        assert!(unhex("0g").is_none());
        assert!(unhex("abc").is_none());
    }
}
