//! The audit log (api.md, "Audit"): every request that reveals personal data, writes or
//! runs SQL, and every 401 and 403, appends a row — time, token name, role, method,
//! route, subject customer ids, outcome, row count — to `<workspace>/audit.sqlite`.
//! Rows are hash-chained: `hash = sha256(previous hash || row)`, the row as canonical
//! JSON, so editing, removing or reordering a row breaks the chain from there on;
//! `rapport audit verify` finds the first broken row.
//!
//! Requests hand their rows to one writer thread, which appends every row waiting in
//! one transaction (WAL, `synchronous=FULL`); a request does not wait for it.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};

use rapport_store::StoreError;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// The hash before the first row.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audited request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditRow {
    /// UTC, RFC 3339 with microseconds.
    pub at: String,
    /// The token's name; null without a (valid) token.
    pub token: Option<String>,
    pub role: Option<String>,
    pub method: String,
    /// The route as declared (`/v1/customers/{id}`), or the path when no route matched.
    pub route: String,
    /// Unified ids of the customers whose data the request revealed or wrote.
    pub subjects: Vec<String>,
    /// The response's HTTP status.
    pub outcome: u16,
    /// Rows returned or records written.
    pub rows: u64,
}

/// A stored row with its place in the chain.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Chained {
    pub seq: i64,
    #[serde(flatten)]
    pub row: AuditRow,
    pub hash: String,
}

/// The canonical text of a row: JSON with the fields in declaration order.
fn canonical(row: &AuditRow) -> String {
    serde_json::to_string(row).expect("an audit row serialises")
}

fn chain(prev: &str, row: &AuditRow) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(canonical(row).as_bytes());
    hex::encode(h.finalize())
}

fn db_path(workspace: &Path) -> PathBuf {
    workspace.join("audit.sqlite")
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    crate::durable_db(
        path,
        "CREATE TABLE IF NOT EXISTS audit (
           seq INTEGER PRIMARY KEY, at TEXT NOT NULL, token TEXT, role TEXT, method TEXT NOT NULL,
           route TEXT NOT NULL, subjects TEXT NOT NULL, outcome INTEGER NOT NULL, rows INTEGER NOT NULL,
           hash TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS audit_at ON audit (at);",
    )
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Chained> {
    let subjects: String = r.get(6)?;
    Ok(Chained {
        seq: r.get(0)?,
        row: AuditRow {
            at: r.get(1)?,
            token: r.get(2)?,
            role: r.get(3)?,
            method: r.get(4)?,
            route: r.get(5)?,
            subjects: serde_json::from_str(&subjects).unwrap_or_default(),
            outcome: r.get(7)?,
            rows: r.get(8)?,
        },
        hash: r.get(9)?,
    })
}

const COLUMNS: &str = "seq, at, token, role, method, route, subjects, outcome, rows, hash";

/// The audit log of one workspace: a writer thread appending rows.
pub struct AuditLog {
    rows: Mutex<Option<mpsc::Sender<AuditRow>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AuditLog {
    /// Opens (or creates) the log of the workspace at `workspace` and starts its writer.
    pub fn start(workspace: &Path) -> Result<Self, StoreError> {
        let mut conn = open(&db_path(workspace))?;
        let last: Option<String> = conn
            .query_row("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1", [], |r| r.get(0))
            .optional()?;
        let (tx, rx) = mpsc::channel::<AuditRow>();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let mut prev = last.unwrap_or_else(|| GENESIS.to_string());
                while let Ok(first) = rx.recv() {
                    let mut rows = vec![first];
                    rows.extend(rx.try_iter().take(10_000));
                    match append(&mut conn, &prev, &rows) {
                        Ok(last) => prev = last,
                        Err(e) => tracing::error!(error = %e, rows = rows.len(), "audit rows could not be written"),
                    }
                }
            })
            .map_err(|e| StoreError::io(workspace, e))?;
        Ok(AuditLog {
            rows: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Appends `row` (in the background).
    pub fn record(&self, row: AuditRow) {
        if let Some(tx) = self.rows.lock().expect("audit sender").as_ref() {
            let _ = tx.send(row);
        }
    }

    /// Writes the rows waiting and stops the writer.
    pub fn close(&self) {
        self.rows.lock().expect("audit sender").take();
        if let Some(t) = self.thread.lock().expect("audit thread").take() {
            let _ = t.join();
        }
    }
}

/// Appends `rows` after the row whose hash is `prev`, in one transaction; returns the
/// last hash.
fn append(conn: &mut Connection, prev: &str, rows: &[AuditRow]) -> Result<String, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut prev = prev.to_string();
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO audit (at, token, role, method, route, subjects, outcome, rows, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for r in rows {
            let hash = chain(&prev, r);
            let subjects = serde_json::to_string(&r.subjects).unwrap_or_else(|_| "[]".into());
            insert.execute(params![r.at, r.token, r.role, r.method, r.route, subjects, r.outcome, r.rows, hash])?;
            prev = hash;
        }
    }
    tx.commit()?;
    Ok(prev)
}

/// Rows at or after `since` (RFC 3339 or a date), oldest first, at most `limit`.
pub fn rows_since(workspace: &Path, since: Option<&str>, limit: usize) -> Result<Vec<Chained>, StoreError> {
    let path = db_path(workspace);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let conn = open(&path)?;
    let mut q = conn.prepare(&format!("SELECT {COLUMNS} FROM audit WHERE at >= ?1 ORDER BY seq LIMIT ?2"))?;
    let rows = q.query_map(params![since.unwrap_or(""), limit as i64], read_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What `rapport audit verify` found.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub rows: u64,
    /// The first row whose hash does not follow from the rows before it, and why.
    pub broken: Option<(i64, String)>,
}

/// Checks the chain from the first row: each row's hash is sha256(previous hash ||
/// row), and the sequence numbers have no gap.
pub fn verify(workspace: &Path) -> Result<Verified, StoreError> {
    let path = db_path(workspace);
    if !path.exists() {
        return Ok(Verified { rows: 0, broken: None });
    }
    let conn = open(&path)?;
    let mut q = conn.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))?;
    let mut rows = q.query_map([], read_row)?;
    let (mut prev, mut n, mut expected_seq) = (GENESIS.to_string(), 0u64, None::<i64>);
    while let Some(r) = rows.next().transpose()? {
        if let Some(s) = expected_seq {
            if r.seq != s {
                return Ok(Verified {
                    rows: n,
                    broken: Some((r.seq, format!("row {s} is missing (the row after {} is {})", s - 1, r.seq))),
                });
            }
        }
        if chain(&prev, &r.row) != r.hash {
            return Ok(Verified {
                rows: n,
                broken: Some((
                    r.seq,
                    "its hash does not follow from the rows before it: it or a row before it was changed".into(),
                )),
            });
        }
        prev = r.hash;
        n += 1;
        expected_seq = Some(r.seq + 1);
    }
    Ok(Verified { rows: n, broken: None })
}

/// The time of a row being written now.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: u64) -> AuditRow {
        AuditRow {
            at: format!("2026-01-01T00:00:{i:02}.000000Z"),
            token: Some("t".into()),
            role: Some("privacy".into()),
            method: "GET".into(),
            route: "/v1/customers/{id}".into(),
            subjects: vec![format!("cu_{i}")],
            outcome: 200,
            rows: 1,
        }
    }

    #[test]
    fn the_chain_holds_and_a_changed_or_missing_row_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::start(dir.path()).unwrap();
        for i in 0..5 {
            log.record(row(i));
        }
        log.close();
        // Reopened, the chain goes on from the last hash.
        let log = AuditLog::start(dir.path()).unwrap();
        log.record(row(5));
        log.close();
        assert_eq!(verify(dir.path()).unwrap(), Verified { rows: 6, broken: None });
        assert_eq!(rows_since(dir.path(), Some("2026-01-01T00:00:03"), 10).unwrap().len(), 3);

        let c = Connection::open(db_path(dir.path())).unwrap();
        c.execute("UPDATE audit SET subjects = '[\"cu_other\"]' WHERE seq = 3", []).unwrap();
        let v = verify(dir.path()).unwrap();
        assert_eq!((v.rows, v.broken.map(|b| b.0)), (2, Some(3)));
        c.execute("UPDATE audit SET subjects = '[\"cu_2\"]' WHERE seq = 3", []).unwrap();
        assert!(verify(dir.path()).unwrap().broken.is_none());
        c.execute("DELETE FROM audit WHERE seq = 4", []).unwrap();
        assert_eq!(verify(dir.path()).unwrap().broken.map(|b| b.0), Some(5));
    }
}
