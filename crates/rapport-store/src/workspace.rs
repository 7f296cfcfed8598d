//! The workspace on disk and its catalog.
//!
//! ```text
//! <workspace>/
//!   catalog.sqlite        ingests, ingested files (content hashes), table parts
//!   key                   the master key (unless RAPPORT_KEY is set), mode 0600
//!   tables/<name>/*.parquet
//!   reports/quality.json, reports/report.html
//!   staging/<txn>/...     files of a transaction not yet committed
//! ```
//!
//! A table is the set of its part files listed in the catalog. A command writes new
//! parts into `staging/`, then commits in one SQLite transaction that records the new
//! parts, drops replaced ones and notes the file moves still to do; the moves happen
//! after the commit and are finished on the next open if the process died in between.
//! Anything in `staging/` that no committed transaction claims is deleted on open. So a
//! failed command — bad input, disk full, a crash — leaves every table as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use rusqlite::{params, Connection, OptionalExtension};

use crate::crypto::Keys;
use crate::error::{Result, StoreError};
use crate::tables::{read_parts, PartWriter};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transactions(
  id INTEGER PRIMARY KEY, kind TEXT NOT NULL, started_at TEXT NOT NULL,
  committed_at TEXT, summary TEXT);
CREATE TABLE IF NOT EXISTS files(
  sha256 TEXT NOT NULL, table_name TEXT NOT NULL, name TEXT NOT NULL,
  bytes INTEGER NOT NULL, rows INTEGER NOT NULL, txn INTEGER NOT NULL,
  PRIMARY KEY(sha256, table_name));
CREATE TABLE IF NOT EXISTS parts(
  table_name TEXT NOT NULL, file TEXT NOT NULL, rows INTEGER NOT NULL, txn INTEGER NOT NULL,
  PRIMARY KEY(table_name, file));
CREATE TABLE IF NOT EXISTS pending(op TEXT NOT NULL, src TEXT NOT NULL, dst TEXT);
";

pub struct Workspace {
    root: PathBuf,
    conn: Connection,
}

/// A file already ingested, found again by its content hash.
#[derive(Debug, Clone)]
pub struct KnownFile {
    pub name: String,
    pub txn: i64,
}

impl Workspace {
    /// Opens (creating if needed) the workspace at `root` and finishes or rolls back
    /// any transaction a crash interrupted.
    pub fn open(root: &Path) -> Result<Self> {
        for d in ["tables", "reports", "staging"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|e| StoreError::io(&p, e))?;
        }
        let conn = Connection::open(root.join("catalog.sqlite"))?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")?;
        conn.execute_batch(SCHEMA)?;
        let ws = Self {
            root: root.to_path_buf(),
            conn,
        };
        ws.recover()?;
        Ok(ws)
    }

    /// Opens an existing workspace; an error if there is none at `root`.
    pub fn open_existing(root: &Path) -> Result<Self> {
        if !root.join("catalog.sqlite").is_file() {
            return Err(StoreError::Usage(format!(
                "{} is not a Rapport workspace (no catalog.sqlite); run `rapport ingest --data DIR` first",
                root.display()
            )));
        }
        Self::open(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn reports_dir(&self) -> PathBuf {
        self.root.join("reports")
    }

    pub fn key_file(&self) -> PathBuf {
        self.root.join("key")
    }

    /// The workspace's keys; the first call creates the key. A key that differs from
    /// the one the workspace was created with is refused.
    pub fn keys(&self, create: bool) -> Result<Keys> {
        let keys = Keys::load_or_create(&self.key_file(), create)?;
        let stored: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| r.get(0))
            .optional()?;
        match stored {
            Some(s) if s != keys.check_value() => Err(StoreError::Key(format!(
                "the key ({} or {}) is not the one this workspace was created with",
                crate::crypto::KEY_ENV,
                self.key_file().display()
            ))),
            Some(_) => Ok(keys),
            None => {
                self.conn
                    .execute("INSERT INTO meta(key, value) VALUES ('key_check', ?1)", params![keys.check_value()])?;
                Ok(keys)
            }
        }
    }

    fn recover(&self) -> Result<()> {
        let mut stmt = self.conn.prepare("SELECT op, src, dst FROM pending")?;
        let ops: Vec<(String, String, Option<String>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        drop(stmt);
        for (op, src, dst) in &ops {
            let src = self.root.join(src);
            match (op.as_str(), dst) {
                ("move", Some(dst)) => {
                    let dst = self.root.join(dst);
                    if src.exists() {
                        if let Some(d) = dst.parent() {
                            std::fs::create_dir_all(d).map_err(|e| StoreError::io(d, e))?;
                        }
                        std::fs::rename(&src, &dst).map_err(|e| StoreError::io(&src, e))?;
                    }
                }
                ("delete", _) if src.exists() => {
                    std::fs::remove_file(&src).map_err(|e| StoreError::io(&src, e))?;
                }
                _ => {}
            }
        }
        if !ops.is_empty() {
            self.conn.execute("DELETE FROM pending", [])?;
        }
        let staging = self.root.join("staging");
        if let Ok(entries) = std::fs::read_dir(&staging) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
        Ok(())
    }

    /// The part files of a table, in commit order.
    pub fn table_files(&self, table: &str) -> Result<Vec<PathBuf>> {
        let mut stmt = self
            .conn
            .prepare("SELECT file FROM parts WHERE table_name = ?1 ORDER BY txn, file")?;
        let files = stmt
            .query_map(params![table], |r| r.get::<_, String>(0))?
            .map(|f| f.map(|f| self.root.join("tables").join(table).join(f)))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(files)
    }

    /// Every table that has at least one part, with its row count.
    pub fn tables(&self) -> Result<BTreeMap<String, u64>> {
        let mut stmt = self.conn.prepare("SELECT table_name, SUM(rows) FROM parts GROUP BY table_name")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    pub fn read_table(&self, table: &str) -> Result<Vec<RecordBatch>> {
        read_parts(&self.table_files(table)?)
    }

    pub fn known_file(&self, sha256: &str, table: &str) -> Result<Option<KnownFile>> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, txn FROM files WHERE sha256 = ?1 AND table_name = ?2",
                params![sha256, table],
                |r| {
                    Ok(KnownFile {
                        name: r.get(0)?,
                        txn: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    /// Starts a transaction of the given kind (`ingest`, `run`, …).
    pub fn begin(&self, kind: &str) -> Result<Transaction<'_>> {
        let now = chrono::Utc::now().to_rfc3339();
        self.conn
            .execute("INSERT INTO transactions(kind, started_at) VALUES (?1, ?2)", params![kind, now])?;
        let id = self.conn.last_insert_rowid();
        Ok(Transaction {
            ws: self,
            id,
            parts: Vec::new(),
            replaced: Vec::new(),
            files: Vec::new(),
            counter: 0,
            committed: false,
        })
    }
}

/// Files staged by one command, committed together or not at all.
pub struct Transaction<'a> {
    ws: &'a Workspace,
    pub id: i64,
    parts: Vec<(String, PathBuf, u64)>,
    replaced: Vec<String>,
    files: Vec<(String, String, String, u64, u64)>,
    counter: u32,
    committed: bool,
}

impl Drop for Transaction<'_> {
    /// An abandoned transaction takes its staged files with it at once (the next open
    /// would remove them anyway).
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(self.ws.root.join("staging").join(self.id.to_string()));
        }
    }
}

impl Transaction<'_> {
    /// A new part file for `table`, in staging.
    pub fn part_writer(&mut self, table: &str, schema: SchemaRef) -> Result<PartWriter> {
        self.counter += 1;
        let path = self
            .ws
            .root
            .join("staging")
            .join(self.id.to_string())
            .join(table)
            .join(format!("part-{:06}-{:04}.parquet", self.id, self.counter));
        PartWriter::create(path, schema)
    }

    /// Adds a finished part to `table`.
    pub fn add_part(&mut self, table: &str, writer: PartWriter) -> Result<()> {
        let (path, rows) = writer.finish()?;
        self.parts.push((table.to_string(), path, rows));
        Ok(())
    }

    /// Writes `batches` as one part of `table`.
    pub fn write_part(&mut self, table: &str, schema: SchemaRef, batches: &[RecordBatch]) -> Result<()> {
        let mut w = self.part_writer(table, schema)?;
        for b in batches {
            w.write(b)?;
        }
        self.add_part(table, w)
    }

    /// At commit, every part `table` had before this transaction is dropped.
    pub fn replace(&mut self, table: &str) {
        if !self.replaced.iter().any(|t| t == table) {
            self.replaced.push(table.to_string());
        }
    }

    /// Records an ingested input file (for recognising it again).
    pub fn record_file(&mut self, sha256: &str, table: &str, name: &str, bytes: u64, rows: u64) {
        self.files.push((sha256.into(), table.into(), name.into(), bytes, rows));
    }

    /// The part files `table` will have once this transaction commits: the committed
    /// ones (unless replaced) and the staged ones.
    pub fn files_after(&self, table: &str) -> Result<Vec<PathBuf>> {
        let mut files = if self.replaced.iter().any(|t| t == table) {
            Vec::new()
        } else {
            self.ws.table_files(table)?
        };
        files.extend(self.parts.iter().filter(|(t, _, _)| t == table).map(|(_, p, _)| p.clone()));
        Ok(files)
    }

    /// Tables this transaction writes or replaces.
    pub fn touched_tables(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .parts
            .iter()
            .map(|(t, _, _)| t.clone())
            .chain(self.replaced.iter().cloned())
            .collect();
        t.sort();
        t.dedup();
        t
    }

    pub fn commit(mut self, summary: &str) -> Result<()> {
        let ws = self.ws;
        let now = chrono::Utc::now().to_rfc3339();
        let tx = ws.conn.unchecked_transaction()?;
        for table in &self.replaced {
            let mut stmt = tx.prepare("SELECT file FROM parts WHERE table_name = ?1")?;
            let old: Vec<String> = stmt.query_map(params![table], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            drop(stmt);
            for f in old {
                tx.execute(
                    "INSERT INTO pending(op, src, dst) VALUES ('delete', ?1, NULL)",
                    params![format!("tables/{table}/{f}")],
                )?;
            }
            tx.execute("DELETE FROM parts WHERE table_name = ?1", params![table])?;
        }
        for (table, path, rows) in &self.parts {
            let file = path.file_name().and_then(|f| f.to_str()).expect("part names are ASCII").to_string();
            let rel = path.strip_prefix(&ws.root).expect("staged under the workspace");
            tx.execute(
                "INSERT INTO parts(table_name, file, rows, txn) VALUES (?1, ?2, ?3, ?4)",
                params![table, file, *rows as i64, self.id],
            )?;
            tx.execute(
                "INSERT INTO pending(op, src, dst) VALUES ('move', ?1, ?2)",
                params![rel.to_string_lossy(), format!("tables/{table}/{file}")],
            )?;
        }
        for (sha, table, name, bytes, rows) in &self.files {
            tx.execute(
                "INSERT OR REPLACE INTO files(sha256, table_name, name, bytes, rows, txn) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![sha, table, name, *bytes as i64, *rows as i64, self.id],
            )?;
        }
        tx.execute(
            "UPDATE transactions SET committed_at = ?1, summary = ?2 WHERE id = ?3",
            params![now, summary, self.id],
        )?;
        tx.commit()?;
        self.committed = true;
        ws.recover()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::customer_sources_schema;
    use arrow_array::StringArray;
    use std::sync::Arc;

    fn batch(ids: &[&str]) -> RecordBatch {
        let s = customer_sources_schema();
        let col = |v: Vec<Option<&str>>| Arc::new(StringArray::from(v)) as arrow_array::ArrayRef;
        let n = ids.len();
        RecordBatch::try_new(
            s,
            vec![
                col(ids.iter().map(|x| Some(*x)).collect()),
                col(vec![Some("default"); n]),
                col(ids.iter().map(|x| Some(*x)).collect()),
                col(vec![Some("none"); n]),
                col(vec![None; n]),
                col(vec![None; n]),
            ],
        )
        .unwrap()
    }

    #[test]
    fn uncommitted_transactions_leave_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        {
            let mut t = ws.begin("test").unwrap();
            t.write_part("x", customer_sources_schema(), &[batch(&["a"])]).unwrap();
            t.commit("first").unwrap();
        }
        {
            let mut t = ws.begin("test").unwrap();
            t.write_part("x", customer_sources_schema(), &[batch(&["b", "c"])]).unwrap();
            // dropped without commit
        }
        let ws = Workspace::open(dir.path()).unwrap();
        assert_eq!(ws.tables().unwrap()["x"], 1);
        assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 0);
        let mut t = ws.begin("test").unwrap();
        t.replace("x");
        t.write_part("x", customer_sources_schema(), &[batch(&["b", "c"])]).unwrap();
        t.commit("replace").unwrap();
        assert_eq!(ws.tables().unwrap()["x"], 2);
        assert_eq!(std::fs::read_dir(dir.path().join("tables/x")).unwrap().count(), 1);
        assert_eq!(ws.read_table("x").unwrap()[0].num_rows(), 2);
    }
}
