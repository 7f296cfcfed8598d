//! Personal data at rest: AES-256-GCM encryption and keyed-hash pseudonyms.
//!
//! One 256-bit master key per workspace, from `RAPPORT_KEY` (64 hex digits) or the
//! workspace's key file, created on first use. Two keys are derived from it with
//! HMAC-SHA256: one encrypts, one makes pseudonyms (the join keys identity resolution
//! matches on), so a pseudonym reveals nothing without the key.
//!
//! The nonce of each value is derived from the value itself (an HMAC under a third
//! derived key, as in SIV constructions): the same value under the same key always
//! encrypts to the same bytes, which keeps workspaces reproducible. This reveals which
//! stored values are equal, which the pseudonyms reveal anyway, and nothing more; a
//! nonce never repeats for two different values.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Result, StoreError};

type HmacSha256 = Hmac<Sha256>;

/// The environment variable that holds the master key, as 64 hex digits.
pub const KEY_ENV: &str = "RAPPORT_KEY";

#[derive(Clone)]
pub struct Keys {
    cipher: Aes256Gcm,
    nonce_key: [u8; 32],
    pseudonym_key: [u8; 32],
    check: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys {{ check: {} }}", self.check)
    }
}

fn derive(master: &[u8; 32], label: &str) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(master).expect("hmac takes any key length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

impl Keys {
    pub fn from_master(master: &[u8; 32]) -> Self {
        let enc = derive(master, "rapport/encrypt/v1");
        Self {
            cipher: Aes256Gcm::new_from_slice(&enc).expect("32-byte key"),
            nonce_key: derive(master, "rapport/nonce/v1"),
            pseudonym_key: derive(master, "rapport/pseudonym/v1"),
            check: hex::encode(&derive(master, "rapport/check/v1")[..8]),
        }
    }

    /// A short fingerprint of the key, stored in the catalog so that a workspace opened
    /// with a different key is refused instead of producing undecryptable data.
    pub fn check_value(&self) -> &str {
        &self.check
    }

    pub fn parse_hex(text: &str) -> Result<[u8; 32]> {
        let bytes = hex::decode(text.trim()).map_err(|_| StoreError::Key("expected 64 hex digits".into()))?;
        bytes
            .try_into()
            .map_err(|_| StoreError::Key("expected 64 hex digits (a 256-bit key)".into()))
    }

    /// Loads the key from `RAPPORT_KEY` or `key_file`; creates the file (mode 0600) with
    /// a fresh random key when neither exists and `create` is set.
    pub fn load_or_create(key_file: &Path, create: bool) -> Result<Self> {
        if let Ok(text) = std::env::var(KEY_ENV) {
            return Self::parse_hex(&text)
                .map(|k| Self::from_master(&k))
                .map_err(|e| StoreError::Key(format!("{KEY_ENV}: {e}")));
        }
        if key_file.is_file() {
            let text = std::fs::read_to_string(key_file).map_err(|e| StoreError::io(key_file, e))?;
            return Self::parse_hex(&text)
                .map(|k| Self::from_master(&k))
                .map_err(|e| StoreError::Key(format!("{}: {e}", key_file.display())));
        }
        if !create {
            return Err(StoreError::Key(format!("no key: set {KEY_ENV} or restore {}", key_file.display())));
        }
        let mut master = [0u8; 32];
        getrandom(&mut master)?;
        write_private(key_file, &hex::encode(master))?;
        Ok(Self::from_master(&master))
    }

    /// Encrypts one value: nonce (12 bytes) followed by ciphertext and tag.
    pub fn encrypt(&self, plaintext: &str) -> Vec<u8> {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.nonce_key).expect("any key length");
        mac.update(plaintext.as_bytes());
        let tag = mac.finalize().into_bytes();
        let nonce = Nonce::from_slice(&tag[..12]);
        let mut out = tag[..12].to_vec();
        out.extend(
            self.cipher
                .encrypt(nonce, plaintext.as_bytes())
                .expect("AES-GCM encryption of a short value cannot fail"),
        );
        out
    }

    pub fn decrypt(&self, data: &[u8]) -> Result<String> {
        if data.len() < 12 + 16 {
            return Err(StoreError::Key("encrypted value is truncated".into()));
        }
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(&data[..12]), &data[12..])
            .map_err(|_| StoreError::Key("a value does not decrypt with this key".into()))?;
        String::from_utf8(plain).map_err(|_| StoreError::Key("a decrypted value is not text".into()))
    }

    /// A keyed-hash pseudonym of a normalised value within a namespace (`email`,
    /// `phone`): 128 bits, hex.
    pub fn pseudonym(&self, namespace: &str, normalised: &str) -> String {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.pseudonym_key).expect("any key length");
        mac.update(namespace.as_bytes());
        mac.update(b":");
        mac.update(normalised.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

fn getrandom(buf: &mut [u8]) -> Result<()> {
    use aes_gcm::aead::rand_core::RngCore;
    aes_gcm::aead::OsRng
        .try_fill_bytes(buf)
        .map_err(|e| StoreError::Key(format!("no randomness from the operating system: {e}")))
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| StoreError::io(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| StoreError::io(path, e))?;
    f.sync_all().map_err(|e| StoreError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_determinism() {
        let k = Keys::from_master(&[7u8; 32]);
        let a = k.encrypt("ada@example.com");
        assert_eq!(a, k.encrypt("ada@example.com"));
        assert_ne!(a, k.encrypt("bob@example.com"));
        assert_eq!(k.decrypt(&a).unwrap(), "ada@example.com");
        assert!(!String::from_utf8_lossy(&a).contains("example"));
        let other = Keys::from_master(&[8u8; 32]);
        assert!(other.decrypt(&a).is_err());
        assert_ne!(k.pseudonym("email", "x"), other.pseudonym("email", "x"));
        assert_ne!(k.pseudonym("email", "x"), k.pseudonym("phone", "x"));
        assert_eq!(k.pseudonym("email", "x").len(), 32);
    }

    #[test]
    fn key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        if std::env::var(KEY_ENV).is_ok() {
            return;
        }
        assert!(Keys::load_or_create(&path, false).is_err());
        let a = Keys::load_or_create(&path, true).unwrap();
        let b = Keys::load_or_create(&path, false).unwrap();
        assert_eq!(a.check_value(), b.check_value());
    }
}
