//! `rapport rekey`: every personal value and pseudonym of the workspace under a new
//! key, in one transaction.
//!
//! The new key is written (0600, synced) beside the current key file as
//! `<key file>.next` first; the transaction re-encrypts every Binary column of every
//! table, recomputes every pseudonym (`email_key`, `phone_key`) from the decrypted
//! profile values, and records the new key's check value; after the commit the new
//! file replaces the old one, so the old key is refused from then on. A crash before
//! the commit leaves everything under the old key; a crash after it is finished by the
//! next command that needs the key ([`Workspace::keys`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, StringBuilder};
use arrow_array::{Array, ArrayRef, BinaryArray, RecordBatch, StringArray};
use arrow_schema::DataType;

use crate::crypto::{Keys, KEY_ENV, TOKEN_PREFIX};
use crate::error::{Result, StoreError};
use crate::fsutil::sync_dir;
use crate::identity::{calling_code_region, normalise_email, normalise_phone, phone_region};
use crate::schema::Table;
use crate::workspace::{rotated_key_path, Workspace};

/// What a key rotation changed.
#[derive(Debug, Clone, Default)]
pub struct RekeyReport {
    /// Tables rewritten (those with personal columns or pseudonyms).
    pub tables: usize,
    /// Personal values re-encrypted.
    pub values: u64,
    /// Pseudonyms recomputed.
    pub pseudonyms: u64,
    /// Where the new key is.
    pub key_file: PathBuf,
}

/// Rotates the workspace's key. `new_key_file` is where the new key goes when the
/// current one comes from `RAPPORT_KEY` (there is no file to replace then).
pub fn rekey(ws: &Workspace, new_key_file: Option<&Path>) -> Result<RekeyReport> {
    let old = ws.keys(false)?;
    let from_env = std::env::var_os(KEY_ENV).is_some();
    let target = match (new_key_file, from_env) {
        (Some(p), _) => p.to_path_buf(),
        (None, false) => ws.key_file(),
        (None, true) => {
            return Err(StoreError::Usage(format!(
                "the key comes from {KEY_ENV}: name a file for the new key with --new-key-file"
            )))
        }
    };
    if new_key_file.is_some() && target.exists() {
        return Err(StoreError::Usage(format!(
            "{} exists; name a new file for the new key",
            target.display()
        )));
    }
    let master = Keys::generate()?;
    let new = Keys::from_master(&master);
    let pending = rotated_key_path(&target);
    // A `.next` left by a rotation that never committed holds a key nothing uses.
    if pending.exists() {
        std::fs::remove_file(&pending).map_err(|e| StoreError::io(&pending, e))?;
    }
    Keys::write_file(&pending, &master)?;
    if let Some(d) = pending.parent() {
        sync_dir(d)?;
    }
    let result = rewrite(ws, &old, &new, &target);
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&pending);
            return Err(e);
        }
    };
    std::fs::rename(&pending, &target).map_err(|e| StoreError::io(&target, e))?;
    if let Some(d) = target.parent() {
        sync_dir(d)?;
    }
    Ok(report)
}

fn rewrite(ws: &Workspace, old: &Keys, new: &Keys, target: &Path) -> Result<RekeyReport> {
    let pseudonyms = pseudonym_map(ws, old, new)?;
    let mut report = RekeyReport {
        key_file: target.to_path_buf(),
        ..RekeyReport::default()
    };
    let mut txn = ws.begin("rekey")?;
    for table in ws.tables()?.keys() {
        let batches = ws.read_table(table)?;
        let Some(schema) = batches.first().map(RecordBatch::schema) else {
            continue;
        };
        let holds_tokens = |f: &arrow_schema::Field| {
            f.data_type() == &DataType::Utf8
                && batches.iter().any(|b| {
                    b.column_by_name(f.name())
                        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                        .is_some_and(|s| s.iter().flatten().any(|v| v.contains(TOKEN_PREFIX)))
                })
        };
        let tokened: Vec<bool> = schema.fields().iter().map(|f| holds_tokens(f)).collect();
        let touched = schema
            .fields()
            .iter()
            .any(|f| f.data_type() == &DataType::Binary || is_pseudonym(f.name()))
            || tokened.iter().any(|&t| t);
        if !touched {
            continue;
        }
        let mut out = Vec::with_capacity(batches.len());
        for b in &batches {
            let mut cols: Vec<ArrayRef> = Vec::with_capacity(b.num_columns());
            for ((f, c), tokened) in schema.fields().iter().zip(b.columns()).zip(&tokened) {
                let col = if *tokened {
                    let (a, n) = reseal_tokens(c, f.name(), old, new, table)?;
                    report.values += n;
                    a
                } else if f.data_type() == &DataType::Binary {
                    let (a, n) = reencrypt(c, f.name(), old, new, table)?;
                    report.values += n;
                    a
                } else if is_pseudonym(f.name()) {
                    let (a, n) = remap(c, &pseudonyms, table, f.name())?;
                    report.pseudonyms += n;
                    a
                } else {
                    c.clone()
                };
                cols.push(col);
            }
            out.push(RecordBatch::try_new(schema.clone(), cols)?);
        }
        txn.replace(table);
        txn.write_part(table, schema, &out)?;
        report.tables += 1;
    }
    txn.set_meta("key_check", new.check_value());
    txn.commit("rekey")?;
    Ok(report)
}

fn is_pseudonym(column: &str) -> bool {
    matches!(column, "email_key" | "phone_key")
}

fn reencrypt(col: &ArrayRef, column: &str, old: &Keys, new: &Keys, table: &str) -> Result<(ArrayRef, u64)> {
    let bin = col
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or_else(|| StoreError::Internal(format!("{table}.{column} is not binary")))?;
    let mut b = BinaryBuilder::with_capacity(bin.len(), bin.value_data().len());
    let mut n = 0;
    for v in bin.iter() {
        match v {
            None => b.append_null(),
            Some(bytes) => {
                let plain = zeroize::Zeroizing::new(old.decrypt(column, bytes).map_err(|e| corrupt(table, column, e))?);
                b.append_value(new.encrypt(column, &plain));
                n += 1;
            }
        }
    }
    Ok((Arc::new(b.finish()), n))
}

/// A text column with each value `f` rewrites replaced (`Ok(Some)`, counted) or kept
/// (`Ok(None)`); the first error stops.
fn map_text(
    col: &ArrayRef,
    table: &str,
    column: &str,
    mut f: impl FnMut(&str, &mut u64) -> Result<Option<String>>,
) -> Result<(ArrayRef, u64)> {
    let s = col
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| StoreError::Internal(format!("{table}.{column} is not text")))?;
    let mut b = StringBuilder::with_capacity(s.len(), s.value_data().len());
    let mut n = 0;
    for v in s.iter() {
        match v {
            None => b.append_null(),
            Some(text) => match f(text, &mut n)? {
                Some(new) => b.append_value(new),
                None => b.append_value(text),
            },
        }
    }
    Ok((Arc::new(b.finish()), n))
}

fn corrupt(table: &str, column: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{table}.{column}: {what}; nothing was changed"))
}

/// Tokens (`enc:…`) in a text column — whole values, or string values inside a JSON
/// object (unmapped columns, event properties) — opened with the old key and sealed
/// with the new.
fn reseal_tokens(col: &ArrayRef, column: &str, old: &Keys, new: &Keys, table: &str) -> Result<(ArrayRef, u64)> {
    let reseal = |token: &str, n: &mut u64| -> Result<Option<String>> {
        match old.open_text(column, token) {
            Some(Ok(plain)) => {
                *n += 1;
                Ok(Some(new.seal_text(column, &zeroize::Zeroizing::new(plain))))
            }
            Some(Err(e)) => Err(corrupt(table, column, e)),
            None => Ok(None),
        }
    };
    map_text(col, table, column, |text, n| {
        if let Some(v) = reseal(text, n)? {
            return Ok(Some(v));
        }
        if !text.contains(TOKEN_PREFIX) {
            return Ok(None);
        }
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(text) else {
            return Ok(None);
        };
        let mut failed = None;
        crate::crypto::map_json_strings(&mut v, &mut |_, s| {
            reseal(s, n).unwrap_or_else(|e| {
                failed = Some(e);
                None
            })
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(Some(v.to_string())),
        }
    })
}

fn remap(col: &ArrayRef, map: &HashMap<String, String>, table: &str, column: &str) -> Result<(ArrayRef, u64)> {
    map_text(col, table, column, |p, n| {
        *n += 1;
        map.get(p)
            .cloned()
            .map(Some)
            .ok_or_else(|| corrupt(table, column, "a pseudonym that no stored profile value gives"))
    })
}

/// Old pseudonym → new pseudonym, from the profiles' decrypted email and phone. A phone
/// is normalised as ingest did: in its record's country, or else in one of the default
/// regions ingests used (recorded in the catalog); the old pseudonym tells which.
fn pseudonym_map(ws: &Workspace, old: &Keys, new: &Keys) -> Result<HashMap<String, String>> {
    let mut map = HashMap::new();
    let defaults: Vec<Option<phonenumber::country::Id>> = std::iter::once(None)
        .chain(
            ws.meta("phone_default_codes")?
                .unwrap_or_default()
                .split(',')
                .filter(|c| !c.is_empty())
                .map(calling_code_region),
        )
        .collect();
    for b in ws.read_table(Table::CustomerProfiles.name())? {
        let bin = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<BinaryArray>().cloned())
        };
        let text = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
        };
        let (email, email_key) = (bin("email"), text("email_key"));
        let (phone, phone_key, country) = (bin("phone"), text("phone_key"), text("country"));
        for i in 0..b.num_rows() {
            if let (Some(e), Some(k)) = (&email, &email_key) {
                if !e.is_null(i) && !k.is_null(i) {
                    let plain = zeroize::Zeroizing::new(old.decrypt("email", e.value(i))?);
                    if let Some(n) = normalise_email(&plain) {
                        if old.pseudonym("email", &n) == k.value(i) {
                            map.insert(k.value(i).to_string(), new.pseudonym("email", &n));
                        }
                    }
                }
            }
            if let (Some(p), Some(k)) = (&phone, &phone_key) {
                if !p.is_null(i) && !k.is_null(i) {
                    let plain = zeroize::Zeroizing::new(old.decrypt("phone", p.value(i))?);
                    let c = country.as_ref().and_then(|c| (!c.is_null(i)).then(|| c.value(i)));
                    for d in &defaults {
                        if let Some(n) = normalise_phone(&plain, phone_region(c, *d)) {
                            if old.pseudonym("phone", &n) == k.value(i) {
                                map.insert(k.value(i).to_string(), new.pseudonym("phone", &n));
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(map)
}
