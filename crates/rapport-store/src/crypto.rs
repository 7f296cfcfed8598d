//! Personal data at rest: AES-256-GCM encryption and keyed-hash pseudonyms.
//!
//! One 256-bit master key per workspace, from `RAPPORT_KEY` (64 hex digits), a key
//! file (`RAPPORT_KEY_FILE`, `[privacy] key_file`, or the workspace's `key`), created on
//! first use. Keys are derived from it with HMAC-SHA256: one encrypts, one makes the
//! nonces of deterministic encryption, one makes pseudonyms (the join keys identity
//! resolution matches on), so a pseudonym reveals nothing without the key. Key bytes
//! are wiped from memory when dropped.
//!
//! Every value is encrypted with its column's name as associated data: a ciphertext
//! copied into another column does not decrypt. Email and phone are encrypted
//! deterministically (the nonce is an HMAC of column and value, as in SIV
//! constructions), which reveals which stored values are equal — as the pseudonyms do
//! anyway — and nothing more. Everything else (name, birth date, the raw text of
//! quarantined rows, columns named in `[privacy] pii_columns`, personal values found in
//! unmapped columns) gets a random nonce, so equal values do not look equal.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Result, StoreError};

type HmacSha256 = Hmac<Sha256>;

/// The environment variable that holds the master key, as 64 hex digits.
pub const KEY_ENV: &str = "RAPPORT_KEY";
/// The environment variable naming a key file outside the workspace.
pub const KEY_FILE_ENV: &str = "RAPPORT_KEY_FILE";

/// A master key; its bytes are wiped when it is dropped.
pub type MasterKey = Zeroizing<[u8; 32]>;

#[derive(Clone)]
pub struct Keys {
    cipher: Aes256Gcm,
    nonce_key: Zeroizing<[u8; 32]>,
    pseudonym_key: Zeroizing<[u8; 32]>,
    check: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys {{ check: {} }}", self.check)
    }
}

fn derive(master: &[u8; 32], label: &str) -> Zeroizing<[u8; 32]> {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(master).expect("hmac takes any key length");
    mac.update(label.as_bytes());
    Zeroizing::new(mac.finalize().into_bytes().into())
}

/// Whether values of `column` are encrypted deterministically (equal values, equal
/// bytes): only the identity columns and source ids (which rows are joined on).
pub fn is_deterministic(column: &str) -> bool {
    matches!(column, "email" | "phone" | "source_customer_id")
}

/// How a personal value stored inside a text column begins (a source id that is an
/// email address, a phone number in an event's properties, a `[privacy] pii_columns`
/// value): the prefix, then the ciphertext in URL-safe base64.
pub const TOKEN_PREFIX: &str = "enc:";

fn aad(column: &str) -> Vec<u8> {
    format!("rapport/v2/{column}").into_bytes()
}

impl Keys {
    pub fn from_master(master: &[u8; 32]) -> Self {
        let enc = derive(master, "rapport/encrypt/v2");
        Self {
            cipher: Aes256Gcm::new_from_slice(&enc[..]).expect("32-byte key"),
            nonce_key: derive(master, "rapport/nonce/v2"),
            pseudonym_key: derive(master, "rapport/pseudonym/v1"),
            check: hex::encode(&derive(master, "rapport/check/v1")[..8]),
        }
    }

    /// A short fingerprint of the key, stored in the catalog so that a workspace opened
    /// with a different key is refused instead of producing undecryptable data.
    pub fn check_value(&self) -> &str {
        &self.check
    }

    pub fn parse_hex(text: &str) -> Result<MasterKey> {
        let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| StoreError::Key("expected 64 hex digits".into()))?);
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return Err(StoreError::Key("expected 64 hex digits (a 256-bit key)".into()));
        }
        key.copy_from_slice(&bytes);
        Ok(key)
    }

    /// A fresh random master key.
    pub fn generate() -> Result<MasterKey> {
        let mut master = Zeroizing::new([0u8; 32]);
        getrandom(&mut master[..])?;
        Ok(master)
    }

    /// The key of a demo workspace: derived from the demo's seed, so that a demo is
    /// reproducible (its data are synthetic). Real workspaces get [`Keys::generate`].
    pub fn for_demo(seed: u64) -> MasterKey {
        derive(&[0u8; 32], &format!("rapport/demo/{seed}"))
    }

    /// Reads a key file. A file that others than its owner may read is refused: the
    /// key must be as private as the data it protects.
    pub fn read_file(key_file: &Path) -> Result<MasterKey> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(key_file).map_err(|e| StoreError::io(key_file, e))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(StoreError::Key(format!(
                    "{} can be read by others (mode {mode:o}); make it private with `chmod 600 {}`",
                    key_file.display(),
                    key_file.display()
                )));
            }
        }
        let text = Zeroizing::new(std::fs::read_to_string(key_file).map_err(|e| StoreError::io(key_file, e))?);
        Self::parse_hex(&text).map_err(|e| StoreError::Key(format!("{}: {e}", key_file.display())))
    }

    /// Writes a new key file (mode 0600); refuses to overwrite one.
    pub fn write_file(key_file: &Path, master: &[u8; 32]) -> Result<()> {
        let text = Zeroizing::new(hex::encode(master));
        write_private(key_file, &text)
    }

    /// Loads the key from `RAPPORT_KEY` or `key_file`; creates the file (mode 0600) with
    /// a fresh random key when neither exists and `create` is set.
    pub fn load_or_create(key_file: &Path, create: bool) -> Result<Self> {
        if let Ok(text) = std::env::var(KEY_ENV) {
            let text = Zeroizing::new(text);
            return Self::parse_hex(&text)
                .map(|k| Self::from_master(&k))
                .map_err(|e| StoreError::Key(format!("{KEY_ENV}: {e}")));
        }
        if key_file.is_file() {
            return Self::read_file(key_file).map(|k| Self::from_master(&k));
        }
        if !create {
            return Err(StoreError::Key(format!("no key: set {KEY_ENV} or restore {}", key_file.display())));
        }
        let master = Self::generate()?;
        Self::write_file(key_file, &master)?;
        Ok(Self::from_master(&master))
    }

    /// Encrypts one value of `column` as that column is encrypted (see
    /// [`is_deterministic`]): nonce (12 bytes) followed by ciphertext and tag.
    pub fn encrypt(&self, column: &str, plaintext: &str) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        if is_deterministic(column) {
            let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.nonce_key[..]).expect("any key length");
            mac.update(column.as_bytes());
            mac.update(&[0]);
            mac.update(plaintext.as_bytes());
            nonce.copy_from_slice(&mac.finalize().into_bytes()[..12]);
        } else {
            getrandom(&mut nonce).expect("the operating system gives random bytes");
        }
        let aad = aad(column);
        let mut out = nonce.to_vec();
        out.extend(
            self.cipher
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: plaintext.as_bytes(),
                        aad: &aad,
                    },
                )
                .expect("AES-GCM encryption of a short value cannot fail"),
        );
        out
    }

    /// Decrypts one value of `column`; fails for a value of another column or key.
    pub fn decrypt(&self, column: &str, data: &[u8]) -> Result<String> {
        if data.len() < 12 + 16 {
            return Err(StoreError::Key("encrypted value is truncated".into()));
        }
        let aad = aad(column);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(&data[..12]),
                Payload {
                    msg: &data[12..],
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Key(format!("a value of {column} does not decrypt with this key")))?;
        String::from_utf8(plain).map_err(|_| StoreError::Key("a decrypted value is not text".into()))
    }

    /// A personal value as a token that can sit in a text column: `enc:` and the
    /// ciphertext (encrypted as `column` is, see [`is_deterministic`]).
    pub fn seal_text(&self, column: &str, text: &str) -> String {
        use base64::Engine;
        let mut out = String::from(TOKEN_PREFIX);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(self.encrypt(column, text), &mut out);
        out
    }

    /// The value of a token made by [`Keys::seal_text`]; `None` if `text` is not one.
    pub fn open_text(&self, column: &str, text: &str) -> Option<Result<String>> {
        use base64::Engine;
        let b64 = text.strip_prefix(TOKEN_PREFIX)?;
        Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(b64)
                .map_err(|_| StoreError::Key(format!("a token in {column} is damaged")))
                .and_then(|bytes| self.decrypt(column, &bytes)),
        )
    }

    /// `text` with every token in it revealed: a whole-cell token, or tokens that are
    /// string values inside a JSON object (unmapped columns, event properties). A token
    /// that does not open with this key stays as it is.
    pub fn reveal_text<'t>(&self, column: &str, text: &'t str) -> std::borrow::Cow<'t, str> {
        use std::borrow::Cow;
        if let Some(Ok(v)) = self.open_text(column, text) {
            return Cow::Owned(v);
        }
        if !text.contains(&format!("\"{TOKEN_PREFIX}")) {
            return Cow::Borrowed(text);
        }
        // Scanned rather than parsed and written again, so the text keeps its own key
        // order and spacing.
        let needle = format!("\"{TOKEN_PREFIX}");
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(&needle) {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let end = after.find('"').unwrap_or(after.len());
            let token = &after[..end];
            match self.open_text(column, token) {
                Some(Ok(v)) => out.push_str(&serde_json::to_string(&v).expect("a string serialises")),
                _ => {
                    out.push('"');
                    out.push_str(token);
                    if end < after.len() {
                        out.push('"');
                    }
                }
            }
            rest = if end < after.len() { &after[end + 1..] } else { "" };
        }
        out.push_str(rest);
        Cow::Owned(out)
    }

    /// A keyed-hash pseudonym of a normalised value within a namespace (`email`,
    /// `phone`): 128 bits, hex.
    pub fn pseudonym(&self, namespace: &str, normalised: &str) -> String {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.pseudonym_key[..]).expect("any key length");
        mac.update(namespace.as_bytes());
        mac.update(b":");
        mac.update(normalised.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

/// Replaces, in place, every string in a JSON value for which `f` (given the string's
/// key when it is an object member) returns a replacement.
pub fn map_json_strings(v: &mut serde_json::Value, f: &mut dyn FnMut(Option<&str>, &str) -> Option<String>) {
    fn walk(v: &mut serde_json::Value, key: Option<&str>, f: &mut dyn FnMut(Option<&str>, &str) -> Option<String>) {
        match v {
            serde_json::Value::String(s) => {
                if let Some(r) = f(key, s) {
                    *s = r;
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| walk(x, key, f)),
            serde_json::Value::Object(o) => o.iter_mut().for_each(|(k, x)| walk(x, Some(k), f)),
            _ => {}
        }
    }
    walk(v, None, f)
}

fn getrandom(buf: &mut [u8]) -> Result<()> {
    use aes_gcm::aead::rand_core::RngCore;
    aes_gcm::aead::OsRng
        .try_fill_bytes(buf)
        .map_err(|e| StoreError::Key(format!("no randomness from the operating system: {e}")))
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = crate::fsutil::create_new_private(path)?;
    f.write_all(text.as_bytes()).map_err(|e| StoreError::io(path, e))?;
    f.sync_all().map_err(|e| StoreError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_determinism() {
        let k = Keys::from_master(&[7u8; 32]);
        let a = k.encrypt("email", "ada@example.com");
        assert_eq!(a, k.encrypt("email", "ada@example.com"));
        assert_ne!(a, k.encrypt("email", "bob@example.com"));
        assert_eq!(k.decrypt("email", &a).unwrap(), "ada@example.com");
        assert!(!String::from_utf8_lossy(&a).contains("example"));
        let other = Keys::from_master(&[8u8; 32]);
        assert!(other.decrypt("email", &a).is_err());
        // Bound to its column: moved into another, it does not decrypt.
        assert!(k.decrypt("phone", &a).is_err());
        // Names and birth dates are randomised: equal values do not look equal.
        let n1 = k.encrypt("name", "Ada Lovelace");
        let n2 = k.encrypt("name", "Ada Lovelace");
        assert_ne!(n1, n2);
        assert_eq!(k.decrypt("name", &n1).unwrap(), k.decrypt("name", &n2).unwrap());
        assert!(k.decrypt("birth_date", &n1).is_err());
        // Tokens in text columns: source ids deterministic (they are joined on), other
        // values randomised.
        let t = k.seal_text("source_customer_id", "ada@example.com");
        assert!(t.starts_with(TOKEN_PREFIX) && !t.contains("example"));
        assert_eq!(t, k.seal_text("source_customer_id", "ada@example.com"));
        assert_eq!(k.open_text("source_customer_id", &t).unwrap().unwrap(), "ada@example.com");
        assert!(k.open_text("source_customer_id", "S000001").is_none());
        assert_ne!(k.seal_text("properties", "x"), k.seal_text("properties", "x"));
        let json = format!(r#"{{"note":"{}","n":1}}"#, k.seal_text("properties", "call \"Ada\" at 4155550123"));
        assert_eq!(k.reveal_text("properties", &json), r#"{"note":"call \"Ada\" at 4155550123","n":1}"#);
        assert_eq!(k.reveal_text("properties", r#"{"a":"b"}"#), r#"{"a":"b"}"#);
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
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = Keys::load_or_create(&path, false).unwrap_err().to_string();
            assert!(err.contains("can be read by others") && err.contains("chmod 600"), "{err}");
        }
    }
}
