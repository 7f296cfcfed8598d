//! The Rapport workspace on disk.
//!
//! This crate owns everything between a user's exports and the stored tables: the
//! `rapport.toml` mapping ([`config`]), the readers for CSV, JSON Lines and Parquet
//! ([`reader`], [`csv`]), type validation and the quarantine ([`validate`]), identity
//! resolution ([`identity`]), encryption of personal data ([`crypto`]), the Parquet
//! tables and the SQLite catalog with all-or-nothing commits ([`tables`],
//! [`workspace`]), and the ingest that ties them together ([`ingest`]). It knows
//! nothing about models.

pub mod config;
pub mod crypto;
pub mod csv;
pub mod discover;
pub mod error;
pub mod fsutil;
pub mod identity;
pub mod ingest;
pub mod quality;
pub mod reader;
pub mod reason;
pub mod rekey;
pub mod schema;
pub mod tables;
pub mod validate;
pub mod value;
pub mod workspace;

pub use config::Config;
pub use error::{Result, StoreError};
pub use ingest::{ingest, IngestOptions, IngestOutcome, NoProgress, Progress};
pub use quality::Quality;
pub use workspace::{Workspace, Writer};

/// Hash maps and sets keyed by ids from the input: foldhash is several times faster
/// than the standard SipHash on short keys, and none of these is iterated for output.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// A 64-bit hash of `text` that is the same in every run (a fixed seed, unlike the
/// maps above), for hashes kept and compared as values.
pub(crate) fn seeded_hash(seed: u64, text: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(seed).hash_one(text)
}
