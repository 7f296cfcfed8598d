//! Which files make up which input table: the paths and globs of `rapport.toml`, or,
//! for tables it does not name, files named like the table (`orders.csv`,
//! `events_2024.jsonl.gz`, `customers.parquet`, …) in the data folder.

use std::path::{Path, PathBuf};

use crate::config::{Config, TableConfig};
use crate::error::{Result, StoreError};
use crate::reader::SourceFile;
use crate::schema::InputTable;

const EXTENSIONS: &[&str] = &["csv", "tsv", "txt", "jsonl", "ndjson", "json", "parquet", "pq"];

/// The files of one table and how to read them.
#[derive(Debug, Clone)]
pub struct TableInput {
    pub table: InputTable,
    pub files: Vec<SourceFile>,
    pub config: TableConfig,
}

/// Finds the input files; also returns files in the folder that belong to no table.
pub fn discover(data: &Path, config: &Config, config_file: Option<&Path>) -> Result<(Vec<TableInput>, Vec<String>)> {
    if !data.is_dir() {
        return Err(StoreError::Usage(format!(
            "data folder {} does not exist or is not a folder",
            data.display()
        )));
    }
    let mut listing: Vec<PathBuf> = std::fs::read_dir(data)
        .map_err(|e| StoreError::io(data, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    listing.sort();
    let mut claimed: Vec<PathBuf> = Vec::new();
    let mut inputs = Vec::new();
    for table in InputTable::ALL {
        let tc = config.tables.get(table.name()).cloned().unwrap_or_default();
        let paths: Vec<PathBuf> = match &tc.path {
            Some(pattern) => {
                let full = data.join(pattern);
                let full_str = full.to_string_lossy().to_string();
                let mut found: Vec<PathBuf> = glob::glob(&full_str)
                    .map_err(|e| StoreError::Config {
                        file: config_file.map(Path::to_path_buf).unwrap_or_else(|| data.join("rapport.toml")),
                        message: format!("`tables.{table}.path` = \"{pattern}\": not a valid glob ({e})"),
                    })?
                    .filter_map(|p| p.ok())
                    .filter(|p| p.is_file())
                    .collect();
                found.sort();
                if found.is_empty() {
                    return Err(StoreError::Config {
                        file: config_file.map(Path::to_path_buf).unwrap_or_else(|| data.join("rapport.toml")),
                        message: format!("`tables.{table}.path` = \"{pattern}\": no file matches in {}", data.display()),
                    });
                }
                found
            }
            None => listing.iter().filter(|p| named_like(p, table.name())).cloned().collect(),
        };
        if paths.is_empty() {
            if config.tables.contains_key(table.name()) {
                return Err(StoreError::Config {
                    file: config_file.map(Path::to_path_buf).unwrap_or_else(|| data.join("rapport.toml")),
                    message: format!(
                        "`tables.{table}` is configured but no file named like {table}.csv (or .jsonl, .parquet) is in {}; set `path`",
                        data.display()
                    ),
                });
            }
            continue;
        }
        let mut files = Vec::new();
        for p in paths {
            let name = p.strip_prefix(data).unwrap_or(&p).to_string_lossy().to_string();
            files.push(SourceFile::new(p.clone(), name, tc.format)?);
            claimed.push(p);
        }
        inputs.push(TableInput { table, files, config: tc });
    }
    let ignored = listing
        .iter()
        .filter(|p| !claimed.contains(p))
        .filter(|p| Some(p.as_path()) != config_file)
        .filter_map(|p| p.file_name().map(|f| f.to_string_lossy().to_string()))
        .filter(|f| f != "rapport.toml" && !f.starts_with('.'))
        .collect();
    Ok((inputs, ignored))
}

fn named_like(path: &Path, table: &str) -> bool {
    let Some(name) = path.file_name().map(|f| f.to_string_lossy().to_ascii_lowercase()) else {
        return false;
    };
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return false;
    };
    if !EXTENSIONS.contains(&ext) {
        return false;
    }
    stem == table
        || stem
            .strip_prefix(table)
            .is_some_and(|rest| rest.starts_with('_') || rest.starts_with('-') || rest.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let n = |s: &str, t: &str| named_like(Path::new(s), t);
        assert!(n("orders.csv", "orders"));
        assert!(n("Orders_2023.CSV.gz", "orders"));
        assert!(n("events-part1.jsonl", "events"));
        assert!(n("customers.parquet", "customers"));
        assert!(!n("orders.xlsx", "orders"));
        assert!(!n("preorders.csv", "orders"));
        assert!(!n("ordersheet.csv", "orders"));
        assert!(!n("campaign_outcomes.csv", "orders"));
    }
}
