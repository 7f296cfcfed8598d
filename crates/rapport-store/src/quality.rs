//! `reports/quality.json`: what an ingest found, table by table (outputs.md).
//! For every table, rows_read = rows_accepted + sum(rejected) + duplicates_removed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TableQuality {
    pub rows_read: u64,
    pub rows_accepted: u64,
    pub rejected: BTreeMap<String, u64>,
    pub duplicates_removed: u64,
    pub values_imputed: BTreeMap<String, u64>,
    pub outliers_flagged: BTreeMap<String, u64>,
    /// Empty values among accepted rows, per column the files have (after defaults).
    pub missing_values: BTreeMap<String, u64>,
    /// Canonical columns none of the table's files has.
    pub absent_columns: Vec<String>,
    /// Values stored as tokens because they are personal, per column (`attributes`
    /// for unmapped columns): declared in `[privacy] pii_columns`, or found in free
    /// text (an email address or a phone number), or a source id that is one.
    #[serde(default)]
    pub personal_values_sealed: BTreeMap<String, u64>,
    pub files: Vec<String>,
}

impl TableQuality {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    pub fn balanced(&self) -> bool {
        self.rows_read == self.rows_accepted + self.rejected_total() + self.duplicates_removed
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IdentityQuality {
    /// Source ids known to the workspace after this ingest.
    pub source_ids: u64,
    pub unified_customers: u64,
    pub merged_by_email: u64,
    pub merged_by_phone: u64,
    /// Source ids first seen in this ingest.
    pub new_source_ids: u64,
    /// Unified ids absorbed into another by a merge this ingest found.
    pub remapped_ids: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SkippedFile {
    pub table: String,
    pub file: String,
    pub same_as: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Quality {
    pub ingest_id: i64,
    pub ingested_at: String,
    pub data_dir: String,
    pub tables: BTreeMap<String, TableQuality>,
    pub identity: IdentityQuality,
    pub skipped_files: Vec<SkippedFile>,
    /// Tables the data folder did not have, and what they would make possible.
    pub absent_tables: BTreeMap<String, String>,
    pub warnings: Vec<String>,
}

impl Quality {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("quality serialises")
    }
}
