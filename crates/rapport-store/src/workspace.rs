//! The workspace on disk and its catalog.
//!
//! ```text
//! <workspace>/            mode 0700; every file in it 0600
//!   catalog.sqlite        ingests, ingested files (content hashes), table parts with
//!                         their SHA-256, row count and size
//!   key                   the master key (unless RAPPORT_KEY or a key file elsewhere)
//!   writer.lock           held (exclusive) by the one command that may change the
//!                         workspace; names its pid and command
//!   readers.lock          held (shared) by every command that reads it
//!   tables/<name>/*.parquet
//!   reports/quality.json, reports/report.html
//!   staging/<txn>/...     files of a transaction not yet committed
//! ```
//!
//! A table is the set of its part files listed in the catalog. Writers (`ingest`, `run`,
//! `uplift`, …) take `writer.lock`, so there is one at a time; readers (`sql`, `export`,
//! `explain`, `check`, …) never take it and never wait for a writer.
//!
//! A commit happens in these steps, each durable before the next:
//! 1. **staged** — the new parts are written and synced under `staging/<txn>/`;
//! 2. **intent** — the catalog records (`placing`) where each part will go;
//! 3. **placed** — each part is renamed into its table folder and the folders synced;
//!    the parts are still unlisted, so no reader sees them;
//! 4. **committed** — one SQLite transaction lists the new parts (with their checksums),
//!    moves the replaced ones to `garbage` and forgets the `placing` rows;
//! 5. **collected** — replaced parts are deleted once no reader holds `readers.lock`
//!    (otherwise a later writer deletes them).
//!
//! Tables that grow by many small appends (the server's flushes) are compacted
//! ([`Workspace::compact`]): once a table ends in [`COMPACT_AT`] small parts, the newest
//! of them are rewritten as one part in a transaction of their own, which retires them.
//!
//! A crash before step 4 leaves the catalog as it was: the next writer deletes whatever
//! `placing` names and clears `staging/`. A crash after it leaves the new state, complete.
//! Readers take a snapshot of the part list when they open, under `readers.lock`, so the
//! files they read are neither half-committed nor deleted under them.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use rusqlite::{params, Connection, OptionalExtension};

use crate::crypto::Keys;
use crate::error::{Result, StoreError};
use crate::fsutil::{crash_point, create_private_dir_all, make_private, sha256_file, sync_dir};
use crate::tables::{part_schema, read_parts, FinishedPart, PartWriter};

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
CREATE TABLE IF NOT EXISTS placing(path TEXT PRIMARY KEY, txn INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS garbage(path TEXT PRIMARY KEY, txn INTEGER NOT NULL);
";

/// Who opens the workspace for writing, and how long to wait for another writer.
#[derive(Debug, Clone)]
pub struct Writer {
    /// What the holder is doing, shown to a writer that finds the workspace locked
    /// (`rapport ingest`); no arguments, which may name personal files or values.
    pub command: String,
    /// How long to wait for the lock; zero fails at once.
    pub wait: Duration,
}

impl Writer {
    pub fn new(command: &str) -> Self {
        Self {
            command: command.to_string(),
            wait: Duration::ZERO,
        }
    }

    pub fn waiting(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }
}

enum Access {
    /// Holds `writer.lock` exclusively.
    Write(#[allow(dead_code)] File),
    /// Holds `readers.lock` shared.
    Read(#[allow(dead_code)] File),
}

/// One committed part of a table.
/// How many small parts at the end of a table start a compaction.
pub const COMPACT_AT: usize = 16;
/// A part with fewer rows than this is small (compacted with its neighbours).
pub const SMALL_PART_ROWS: u64 = 1 << 20;

/// What [`Workspace::compact`] merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    pub table: String,
    pub parts: usize,
    pub rows: u64,
}

#[derive(Debug, Clone)]
pub struct Part {
    pub file: String,
    pub rows: u64,
    pub sha256: Option<String>,
    pub bytes: Option<u64>,
}

pub struct Workspace {
    root: PathBuf,
    conn: Connection,
    access: Access,
    /// The committed parts of every table as of opening (readers) or of the last commit
    /// (the writer): what this process reads.
    snapshot: RefCell<BTreeMap<String, Vec<Part>>>,
}

/// A file already ingested, found again by its content hash.
#[derive(Debug, Clone)]
pub struct KnownFile {
    pub name: String,
    pub txn: i64,
}

fn lock_file(path: &Path) -> Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| StoreError::io(path, e))?;
    make_private(path)?;
    Ok(f)
}

impl Workspace {
    /// Opens the workspace at `root` for writing (creating it if needed): takes the
    /// writer lock, then finishes or rolls back what a crashed writer left.
    pub fn writer(root: &Path, who: &Writer) -> Result<Self> {
        if !root.exists() {
            create_private_dir_all(root)?;
        }
        let lock = Self::take_writer_lock(root, who)?;
        for d in ["tables", "reports", "staging"] {
            create_private_dir_all(&root.join(d))?;
        }
        let catalog = root.join("catalog.sqlite");
        let ws = Self::with_access(root, Access::Write(lock))?;
        make_private(&catalog)?;
        ws.conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")?;
        ws.conn.execute_batch(SCHEMA)?;
        ws.upgrade()?;
        ws.recover()?;
        ws.refresh()?;
        Ok(ws)
    }

    /// Opens an existing workspace for writing; an error if there is none at `root`.
    pub fn existing_writer(root: &Path, who: &Writer) -> Result<Self> {
        Self::must_exist(root)?;
        Self::writer(root, who)
    }

    /// Opens an existing workspace for reading: a snapshot of its last committed state,
    /// kept (files included) for as long as this value lives. Never waits for a writer.
    pub fn reader(root: &Path) -> Result<Self> {
        Self::must_exist(root)?;
        let lock = lock_file(&root.join("readers.lock"))?;
        // A writer holds this exclusively only while deleting replaced parts.
        lock.lock_shared().map_err(|e| StoreError::io(&root.join("readers.lock"), e))?;
        let ws = Self::with_access(root, Access::Read(lock))?;
        ws.refresh()?;
        Ok(ws)
    }

    /// The catalog connection, before any snapshot is read.
    fn with_access(root: &Path, access: Access) -> Result<Self> {
        let conn = Connection::open(root.join("catalog.sqlite"))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        Ok(Self {
            root: root.to_path_buf(),
            conn,
            access,
            snapshot: RefCell::new(BTreeMap::new()),
        })
    }

    fn must_exist(root: &Path) -> Result<()> {
        if !root.join("catalog.sqlite").is_file() {
            return Err(StoreError::Usage(format!(
                "{} is not a Rapport workspace (no catalog.sqlite); run `rapport ingest --data DIR` first",
                root.display()
            )));
        }
        Ok(())
    }

    fn take_writer_lock(root: &Path, who: &Writer) -> Result<File> {
        use std::io::{Read, Seek, Write};
        let path = root.join("writer.lock");
        let mut f = lock_file(&path)?;
        let deadline = Instant::now() + who.wait;
        loop {
            match f.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    if Instant::now() >= deadline {
                        let mut holder = String::new();
                        let _ = std::fs::File::open(&path).and_then(|mut h| h.read_to_string(&mut holder));
                        let holder = holder.trim();
                        let holder = if holder.is_empty() { "another process" } else { holder };
                        let waited = if who.wait.is_zero() {
                            String::new()
                        } else {
                            format!(" after waiting {} s", who.wait.as_secs_f64())
                        };
                        return Err(StoreError::Locked(format!(
                            "{} is being changed by {holder}{waited}; try again when it has finished, or pass --wait SECONDS",
                            root.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(100).min(deadline - Instant::now()));
                }
                Err(TryLockError::Error(e)) => return Err(StoreError::io(&path, e)),
            }
        }
        let note = format!(
            "pid {} ({}, since {})\n",
            std::process::id(),
            who.command,
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
        );
        let io = |e| StoreError::io(&path, e);
        f.set_len(0).map_err(io)?;
        f.rewind().map_err(io)?;
        f.write_all(note.as_bytes()).map_err(io)?;
        Ok(f)
    }

    fn is_writer(&self) -> bool {
        matches!(self.access, Access::Write(_))
    }

    fn require_writer(&self) -> Result<()> {
        if self.is_writer() {
            Ok(())
        } else {
            Err(StoreError::Internal("the workspace was opened for reading".into()))
        }
    }

    /// Catalogs written before parts had checksums get them now (the parts are read
    /// once and hashed).
    fn upgrade(&self) -> Result<()> {
        if self.parts_have_checksums()? {
            return Ok(());
        }
        // Moves a crashed commit of the old protocol left are finished first.
        self.finish_legacy_moves()?;
        let tx = self.conn.unchecked_transaction()?;
        tx.execute_batch("ALTER TABLE parts ADD COLUMN sha256 TEXT; ALTER TABLE parts ADD COLUMN bytes INTEGER;")?;
        let parts: Vec<(String, String)> = tx
            .prepare("SELECT table_name, file FROM parts")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (table, file) in parts {
            let path = self.root.join("tables").join(&table).join(&file);
            if let Ok((sha, bytes)) = sha256_file(&path) {
                tx.execute(
                    "UPDATE parts SET sha256 = ?1, bytes = ?2 WHERE table_name = ?3 AND file = ?4",
                    params![sha, bytes as i64, table, file],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The post-commit moves of the catalog format before `placing` (a workspace last
    /// written by an older Rapport that crashed mid-commit).
    fn finish_legacy_moves(&self) -> Result<()> {
        let ops: Vec<(String, String, Option<String>)> = self
            .conn
            .prepare("SELECT op, src, dst FROM pending")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (op, src, dst) in &ops {
            let src = self.root.join(src);
            match (op.as_str(), dst) {
                ("move", Some(dst)) => {
                    let dst = self.root.join(dst);
                    if src.exists() {
                        if let Some(d) = dst.parent() {
                            create_private_dir_all(d)?;
                        }
                        std::fs::rename(&src, &dst).map_err(|e| StoreError::io(&src, e))?;
                        if let Some(d) = dst.parent() {
                            sync_dir(d)?;
                        }
                    } else if !dst.exists() {
                        return Err(StoreError::Corrupt(format!(
                            "a committed part is missing: neither {} nor {} exists",
                            src.display(),
                            dst.display()
                        )));
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
        Ok(())
    }

    /// What a crashed writer left: parts placed for a commit that never happened are
    /// deleted, staging is emptied, replaced parts are collected. Writers only.
    fn recover(&self) -> Result<()> {
        self.finish_legacy_moves()?;
        let placed = self.paths_in("placing")?;
        if !placed.is_empty() {
            self.delete_durably(&placed)?;
            self.conn.execute("DELETE FROM placing", [])?;
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
        self.collect_garbage()
    }

    /// Whether the catalog's `parts` has checksum columns (catalogs written before them
    /// get them from the first writer, see [`Workspace::upgrade`]).
    fn parts_have_checksums(&self) -> Result<bool> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM pragma_table_info('parts') WHERE name = 'sha256'", [], |r| {
                r.get(0)
            })?;
        Ok(n > 0)
    }

    fn has_table(&self, name: &str) -> Result<bool> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            params![name],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// The workspace-relative paths a bookkeeping table (`placing`, `garbage`) lists.
    fn paths_in(&self, table: &str) -> Result<Vec<String>> {
        Ok(self
            .conn
            .prepare(&format!("SELECT path FROM {table}"))?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes files (workspace-relative; a missing one is fine) and syncs their folders.
    fn delete_durably(&self, paths: &[String]) -> Result<()> {
        let mut dirs = BTreeSet::new();
        for rel in paths {
            let p = self.root.join(rel);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&p, e)),
            }
            if let Some(d) = p.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        for d in dirs.iter().filter(|d| d.exists()) {
            sync_dir(d)?;
        }
        Ok(())
    }

    /// Deletes replaced parts if no reader holds the workspace; otherwise leaves them
    /// for a later writer. Never waits.
    fn collect_garbage(&self) -> Result<()> {
        let garbage = self.paths_in("garbage")?;
        if garbage.is_empty() {
            return Ok(());
        }
        let lock_path = self.root.join("readers.lock");
        let readers = lock_file(&lock_path)?;
        match readers.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(()),
            Err(TryLockError::Error(e)) => return Err(StoreError::io(&lock_path, e)),
        }
        self.delete_durably(&garbage)?;
        crash_point("collecting");
        self.conn.execute("DELETE FROM garbage", [])?;
        Ok(())
    }

    /// Reads the committed part list (one statement, so one committed state).
    fn refresh(&self) -> Result<()> {
        let sql = if self.parts_have_checksums()? {
            "SELECT table_name, file, rows, sha256, bytes FROM parts ORDER BY table_name, txn, file"
        } else {
            "SELECT table_name, file, rows, NULL, NULL FROM parts ORDER BY table_name, txn, file"
        };
        let mut snap: BTreeMap<String, Vec<Part>> = BTreeMap::new();
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Part {
                    file: r.get(1)?,
                    rows: r.get::<_, i64>(2)? as u64,
                    sha256: r.get(3)?,
                    bytes: r.get::<_, Option<i64>>(4)?.map(|b| b as u64),
                },
            ))
        })?;
        for row in rows {
            let (t, p) = row?;
            snap.entry(t).or_default().push(p);
        }
        *self.snapshot.borrow_mut() = snap;
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn reports_dir(&self) -> PathBuf {
        self.root.join("reports")
    }

    /// Where the key file is: `RAPPORT_KEY_FILE`, else the file `[privacy] key_file`
    /// named when the workspace was written (recorded in the catalog), else
    /// `<workspace>/key`. (`RAPPORT_KEY`, when set, takes precedence over any file.)
    pub fn key_file(&self) -> PathBuf {
        if let Some(p) = std::env::var_os(crate::crypto::KEY_FILE_ENV) {
            return PathBuf::from(p);
        }
        match self.meta("key_file") {
            Ok(Some(p)) => PathBuf::from(p),
            _ => self.root.join("key"),
        }
    }

    /// A value of the catalog's `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0))
            .optional()?)
    }

    /// Sets a value of the catalog's `meta` table (writers only).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.require_writer()?;
        self.conn
            .execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)", params![key, value])?;
        Ok(())
    }

    /// Records that this workspace's key lives in `path` (outside the workspace, from
    /// `[privacy] key_file`).
    pub fn use_key_file(&self, path: &Path) -> Result<()> {
        let abs = std::path::absolute(path).map_err(|e| StoreError::io(path, e))?;
        if self.meta("key_file")?.as_deref() != abs.to_str() {
            let text = abs
                .to_str()
                .ok_or_else(|| StoreError::Usage(format!("{}: the key file's path must be text", abs.display())))?;
            self.set_meta("key_file", text)?;
        }
        Ok(())
    }

    /// The workspace's keys; the first call creates the key. A key that differs from
    /// the one the workspace was created with is refused. A key rotation that committed
    /// but crashed before the new key file took the old one's place is finished here.
    pub fn keys(&self, create: bool) -> Result<Keys> {
        let file = self.key_file();
        let stored = self.meta("key_check")?;
        let keys = Keys::load_or_create(&file, create && self.is_writer() && stored.is_none())?;
        match stored {
            Some(s) if s != keys.check_value() => {
                let pending = rotated_key_path(&file);
                if pending.is_file() && std::env::var_os(crate::crypto::KEY_ENV).is_none() {
                    let next = Keys::from_master(&*Keys::read_file(&pending)?);
                    if next.check_value() == s {
                        if self.is_writer() {
                            std::fs::rename(&pending, &file).map_err(|e| StoreError::io(&file, e))?;
                            if let Some(d) = file.parent() {
                                sync_dir(d)?;
                            }
                        }
                        return Ok(next);
                    }
                }
                Err(StoreError::Key(format!(
                    "the key ({} or {}) is not this workspace's key (it was created with, or rotated to, another)",
                    crate::crypto::KEY_ENV,
                    file.display()
                )))
            }
            Some(_) => Ok(keys),
            None if self.is_writer() => {
                self.set_meta("key_check", keys.check_value())?;
                Ok(keys)
            }
            None => Ok(keys),
        }
    }

    /// The committed parts of a table, in commit order.
    pub fn parts(&self, table: &str) -> Vec<Part> {
        self.snapshot.borrow().get(table).cloned().unwrap_or_default()
    }

    /// The part files of a table, in commit order.
    pub fn table_files(&self, table: &str) -> Result<Vec<PathBuf>> {
        let dir = self.root.join("tables").join(table);
        Ok(self.parts(table).into_iter().map(|p| dir.join(p.file)).collect())
    }

    /// Whether the workspace has table `t` (at least one part).
    pub fn has(&self, t: crate::schema::Table) -> Result<bool> {
        Ok(self.tables()?.contains_key(t.name()))
    }

    /// Every table that has at least one part, with its row count.
    pub fn tables(&self) -> Result<BTreeMap<String, u64>> {
        Ok(self
            .snapshot
            .borrow()
            .iter()
            .map(|(t, parts)| (t.clone(), parts.iter().map(|p| p.rows).sum()))
            .collect())
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

    /// How many transactions have committed.
    pub fn committed_transactions(&self) -> Result<usize> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM transactions WHERE committed_at IS NOT NULL", [], |r| {
                r.get::<_, i64>(0)
            })? as usize)
    }

    /// Compacts `table` when it ends in at least [`COMPACT_AT`] small parts of one
    /// schema: the newest [`COMPACT_AT`] of them, and older ones while each is no larger
    /// than what is merged after it (so a row is rewritten a logarithmic number of
    /// times), become one part in a transaction of their own, in the same place in the
    /// table's order. None when there was nothing to do. Writers only.
    pub fn compact(&self, table: &str) -> Result<Option<Compacted>> {
        self.require_writer()?;
        let parts = self.parts(table);
        if parts.iter().rev().take_while(|p| p.rows < SMALL_PART_ROWS).count() < COMPACT_AT {
            return Ok(None);
        }
        let dir = self.root.join("tables").join(table);
        let newest_schema = match parts.last() {
            Some(p) => part_schema(&dir.join(&p.file))?,
            None => return Ok(None),
        };
        // The small parts at the end of the table, newest first, while their schema is the newest's.
        let mut tail: Vec<&Part> = Vec::new();
        for p in parts.iter().rev() {
            if p.rows >= SMALL_PART_ROWS || part_schema(&dir.join(&p.file))?.fields() != newest_schema.fields() {
                break;
            }
            tail.push(p);
        }
        if tail.len() < COMPACT_AT {
            return Ok(None);
        }
        let mut take = COMPACT_AT;
        let mut rows: u64 = tail[..take].iter().map(|p| p.rows).sum();
        while take < tail.len() && tail[take].rows <= rows {
            rows += tail[take].rows;
            take += 1;
        }
        let chosen: Vec<&Part> = tail[..take].iter().rev().copied().collect();
        let mut txn = self.begin("compact")?;
        let mut w = txn.part_writer(table, newest_schema)?;
        for p in &chosen {
            for b in read_parts(&[dir.join(&p.file)])? {
                w.write(&b)?;
            }
            txn.retire(table, &p.file);
        }
        txn.add_part(table, w)?;
        txn.commit(&format!("compacted {table}: {} parts, {rows} rows, into one", chosen.len()))?;
        Ok(Some(Compacted {
            table: table.to_string(),
            parts: chosen.len(),
            rows,
        }))
    }

    /// [`Workspace::compact`] of every table.
    pub fn compact_all(&self) -> Result<Vec<Compacted>> {
        let mut out = Vec::new();
        for table in self.tables()?.into_keys() {
            out.extend(self.compact(&table)?);
        }
        Ok(out)
    }

    /// Starts a transaction of the given kind (`ingest`, `run`, …). Writers only.
    pub fn begin(&self, kind: &str) -> Result<Transaction<'_>> {
        self.require_writer()?;
        let now = chrono::Utc::now().to_rfc3339();
        self.conn
            .execute("INSERT INTO transactions(kind, started_at) VALUES (?1, ?2)", params![kind, now])?;
        let id = self.conn.last_insert_rowid();
        Ok(Transaction {
            ws: self,
            id,
            parts: Vec::new(),
            replaced: Vec::new(),
            retired: Vec::new(),
            files: Vec::new(),
            meta: Vec::new(),
            counter: 0,
            committed: false,
        })
    }

    /// Checks every committed part against the catalog: present, the recorded size and
    /// SHA-256, readable as Parquet with the recorded row count; and no file in a
    /// table folder that the catalog does not account for. Also SQLite's own check of
    /// the catalog.
    pub fn check(&self) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        // The folders are listed before the catalog is read: a file a writer places
        // after the listing is not seen; one placed before has its `placing` row (or
        // its part row) committed by the time the catalog is read.
        let tables_dir = self.root.join("tables");
        let mut on_disk: BTreeSet<String> = BTreeSet::new();
        if let Ok(entries) = std::fs::read_dir(&tables_dir) {
            for t in entries.flatten() {
                let tp = t.path();
                let tname = t.file_name().to_string_lossy().to_string();
                if !tp.is_dir() {
                    report.problems.push(format!("stray file tables/{tname}"));
                    continue;
                }
                if let Ok(files) = std::fs::read_dir(&tp) {
                    for f in files.flatten() {
                        on_disk.insert(format!("tables/{tname}/{}", f.file_name().to_string_lossy()));
                    }
                }
            }
        }
        let integrity: String = self.conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if integrity != "ok" {
            report.problems.push(format!("catalog.sqlite: {integrity}"));
        }
        self.refresh()?;
        // Catalogs of older workspaces (opened only by readers since) lack these tables.
        let listed_in = |table: &str| -> Result<BTreeSet<String>> {
            Ok(if self.has_table(table)? {
                self.paths_in(table)?.into_iter().collect()
            } else {
                BTreeSet::new()
            })
        };
        let in_flight = listed_in("placing")?;
        let garbage = listed_in("garbage")?;
        report.awaiting_deletion = garbage.len();
        let snapshot = self.snapshot.borrow();
        let mut listed = BTreeSet::new();
        for (table, parts) in snapshot.iter() {
            report.tables += 1;
            for part in parts {
                let rel = format!("tables/{table}/{}", part.file);
                listed.insert(rel.clone());
                report.parts += 1;
                report.rows += part.rows;
                if let Err(problem) = self.check_part(&rel, part) {
                    report.problems.push(format!("{rel}: {problem}"));
                }
            }
        }
        for f in &on_disk {
            if !listed.contains(f) && !in_flight.contains(f) && !garbage.contains(f) {
                report.problems.push(format!("{f}: a file the catalog does not list"));
            }
        }
        Ok(report)
    }

    fn check_part(&self, rel: &str, part: &Part) -> std::result::Result<(), String> {
        let path = self.root.join(rel);
        if !path.is_file() {
            return Err("missing".into());
        }
        let (sha, bytes) = sha256_file(&path).map_err(|e| e.to_string())?;
        if let Some(want) = part.bytes {
            if want != bytes {
                return Err(format!("{bytes} bytes, the catalog recorded {want}"));
            }
        }
        match &part.sha256 {
            Some(want) if *want != sha => return Err("its content differs from what was committed (SHA-256 mismatch)".into()),
            Some(_) => {}
            None => return Err("no checksum recorded".into()),
        }
        let f = File::open(&path).map_err(|e| e.to_string())?;
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(f).map_err(|e| format!("not readable as Parquet: {e}"))?;
        use parquet::file::reader::FileReader;
        let rows = reader.metadata().file_metadata().num_rows() as u64;
        if rows != part.rows {
            return Err(format!("{rows} rows, the catalog recorded {}", part.rows));
        }
        Ok(())
    }
}

/// Where `rapport rekey` writes the new key before its commit: `<key file>.next`.
pub fn rotated_key_path(key_file: &Path) -> PathBuf {
    let mut name = key_file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".next");
    key_file.with_file_name(name)
}

/// What [`Workspace::check`] found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CheckReport {
    pub tables: usize,
    pub parts: usize,
    pub rows: u64,
    /// Replaced parts not yet deleted because a reader was open (not a problem).
    pub awaiting_deletion: usize,
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Files staged by one command, committed together or not at all.
pub struct Transaction<'a> {
    ws: &'a Workspace,
    pub id: i64,
    parts: Vec<(String, FinishedPart)>,
    replaced: Vec<String>,
    /// Committed parts (table, file) this transaction drops.
    retired: Vec<(String, String)>,
    files: Vec<(String, String, String, u64, u64)>,
    meta: Vec<(String, String)>,
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
    /// The folder of the workspace the transaction writes to.
    pub fn workspace_root(&self) -> &Path {
        self.ws.root()
    }

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
        self.parts.push((table.to_string(), writer.finish()?));
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

    /// At commit, the committed part `file` of `table` is dropped (its rows are in a
    /// part this transaction writes).
    pub fn retire(&mut self, table: &str, file: &str) {
        self.retired.push((table.to_string(), file.to_string()));
    }

    /// Sets a catalog `meta` value when this transaction commits.
    pub fn set_meta(&mut self, key: &str, value: &str) {
        self.meta.push((key.to_string(), value.to_string()));
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
            let dir = self.ws.root.join("tables").join(table);
            self.ws
                .parts(table)
                .into_iter()
                .filter(|p| !self.retired.iter().any(|(t, f)| t == table && *f == p.file))
                .map(|p| dir.join(p.file))
                .collect()
        };
        files.extend(self.parts.iter().filter(|(t, _)| t == table).map(|(_, p)| p.path.clone()));
        Ok(files)
    }

    /// Tables this transaction writes or replaces.
    pub fn touched_tables(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .parts
            .iter()
            .map(|(t, _)| t.clone())
            .chain(self.replaced.iter().cloned())
            .chain(self.retired.iter().map(|(t, _)| t.clone()))
            .collect();
        t.sort();
        t.dedup();
        t
    }

    /// Commits in the steps the module documentation lists; on any error before the
    /// catalog transaction, the workspace stays as it was (the next writer removes
    /// what was placed).
    pub fn commit(mut self, summary: &str) -> Result<()> {
        let ws = self.ws;
        crash_point("staged");
        let file_name = |p: &FinishedPart| {
            p.path
                .file_name()
                .and_then(|f| f.to_str())
                .expect("part names are ASCII")
                .to_string()
        };
        let tx = ws.conn.unchecked_transaction()?;
        for (table, part) in &self.parts {
            let file = file_name(part);
            tx.execute(
                "INSERT INTO placing(path, txn) VALUES (?1, ?2)",
                params![format!("tables/{table}/{file}"), self.id],
            )?;
        }
        tx.commit()?;
        crash_point("intent");
        let tables_dir = ws.root.join("tables");
        let mut dirs = BTreeSet::new();
        for (table, part) in &self.parts {
            let dir = tables_dir.join(table);
            if !dir.exists() {
                create_private_dir_all(&dir)?;
                sync_dir(&tables_dir)?;
            }
            let dst = dir.join(file_name(part));
            std::fs::rename(&part.path, &dst).map_err(|e| StoreError::io(&dst, e))?;
            dirs.insert(dir);
        }
        for d in &dirs {
            sync_dir(d)?;
        }
        crash_point("placed");
        let now = chrono::Utc::now().to_rfc3339();
        let tx = ws.conn.unchecked_transaction()?;
        for table in &self.replaced {
            tx.execute(
                "INSERT OR IGNORE INTO garbage(path, txn) SELECT 'tables/' || table_name || '/' || file, ?2 FROM parts WHERE table_name = ?1",
                params![table, self.id],
            )?;
            tx.execute("DELETE FROM parts WHERE table_name = ?1", params![table])?;
        }
        for (table, file) in &self.retired {
            tx.execute(
                "INSERT OR IGNORE INTO garbage(path, txn) VALUES ('tables/' || ?1 || '/' || ?2, ?3)",
                params![table, file, self.id],
            )?;
            tx.execute("DELETE FROM parts WHERE table_name = ?1 AND file = ?2", params![table, file])?;
        }
        for (table, part) in &self.parts {
            tx.execute(
                "INSERT INTO parts(table_name, file, rows, txn, sha256, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![table, file_name(part), part.rows as i64, self.id, part.sha256, part.bytes as i64],
            )?;
        }
        tx.execute("DELETE FROM placing WHERE txn = ?1", params![self.id])?;
        for (sha, table, name, bytes, rows) in &self.files {
            tx.execute(
                "INSERT OR REPLACE INTO files(sha256, table_name, name, bytes, rows, txn) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![sha, table, name, *bytes as i64, *rows as i64, self.id],
            )?;
        }
        for (k, v) in &self.meta {
            tx.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)", params![k, v])?;
        }
        tx.execute(
            "UPDATE transactions SET committed_at = ?1, summary = ?2 WHERE id = ?3",
            params![now, summary, self.id],
        )?;
        tx.commit()?;
        self.committed = true;
        crash_point("committed");
        let _ = std::fs::remove_dir_all(ws.root.join("staging").join(self.id.to_string()));
        ws.refresh()?;
        ws.collect_garbage()
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
        let w = Writer::new("test");
        let ws = Workspace::writer(dir.path(), &w).unwrap();
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
        drop(ws);
        let ws = Workspace::writer(dir.path(), &w).unwrap();
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

    fn ids(ws: &Workspace) -> Vec<String> {
        let mut out = Vec::new();
        for b in ws.read_table("x").unwrap() {
            let c = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            out.extend(c.iter().flatten().map(str::to_string));
        }
        out.sort();
        out
    }

    /// The ids of table x in stored order.
    fn ids_in_order(ws: &Workspace) -> Vec<String> {
        let mut out = Vec::new();
        for b in ws.read_table("x").unwrap() {
            let c = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            out.extend(c.iter().flatten().map(str::to_string));
        }
        out
    }

    #[test]
    fn many_small_appends_are_compacted_in_order_and_readers_keep_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::writer(dir.path(), &Writer::new("test")).unwrap();
        let mut want = Vec::new();
        let append = |ws: &Workspace, want: &mut Vec<String>, k: usize| {
            let id = format!("id{k:04}");
            let mut t = ws.begin("test").unwrap();
            t.write_part("x", customer_sources_schema(), &[batch(&[&id])]).unwrap();
            t.commit("append").unwrap();
            want.push(id);
        };
        for k in 0..COMPACT_AT - 1 {
            append(&ws, &mut want, k);
        }
        assert_eq!(ws.compact("x").unwrap(), None, "too few parts");
        append(&ws, &mut want, COMPACT_AT);
        // A reader opened before the compaction goes on reading its parts.
        let reader = Workspace::reader(dir.path()).unwrap();
        let done = ws.compact("x").unwrap().unwrap();
        assert_eq!((done.parts, done.rows), (COMPACT_AT, COMPACT_AT as u64));
        assert_eq!(ws.parts("x").len(), 1);
        assert_eq!(ids_in_order(&ws), want);
        assert_eq!(ids_in_order(&reader), want);
        drop(reader);
        // Appends go on; each compaction takes the newest parts and the older ones no
        // larger than them, so the table keeps few parts and its order.
        for round in 0..5 {
            for k in 0..COMPACT_AT {
                append(&ws, &mut want, 100 * (round + 1) + k);
            }
            assert!(ws.compact("x").unwrap().is_some());
            assert!(ws.parts("x").len() <= 3, "{} parts", ws.parts("x").len());
            assert_eq!(ids_in_order(&ws), want);
        }
        let report = ws.check().unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.awaiting_deletion, 0);
        assert_eq!(ws.compact_all().unwrap(), vec![]);
    }

    const CHILD_ENV: &str = "RAPPORT_TEST_CHILD_WORKSPACE";

    /// Not a test on its own: the process the crash tests start, which replaces table x
    /// and is aborted at the step `RAPPORT_TEST_CRASH_AT` names.
    #[test]
    fn crash_child() {
        let Ok(dir) = std::env::var(CHILD_ENV) else {
            return;
        };
        let ws = Workspace::writer(Path::new(&dir), &Writer::new("crash child")).unwrap();
        let mut t = ws.begin("test").unwrap();
        t.replace("x");
        t.write_part("x", customer_sources_schema(), &[batch(&["b", "c"])]).unwrap();
        t.write_part("x", customer_sources_schema(), &[batch(&["d"])]).unwrap();
        t.commit("replace").unwrap();
    }

    /// A writer killed at each named step of a commit: the next writer finds every table
    /// as it was before or, once the catalog committed, as it is after; the check is
    /// clean and the next commit works.
    #[cfg(debug_assertions)]
    #[test]
    fn a_crash_at_every_commit_step_leaves_before_or_after() {
        for (step, committed) in [
            ("staged", false),
            ("intent", false),
            ("placed", false),
            ("committed", true),
            ("collecting", true),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let w = Writer::new("test");
            {
                let ws = Workspace::writer(dir.path(), &w).unwrap();
                let mut t = ws.begin("test").unwrap();
                t.write_part("x", customer_sources_schema(), &[batch(&["a"])]).unwrap();
                t.commit("first").unwrap();
            }
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "workspace::tests::crash_child", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, dir.path())
                .env("RAPPORT_TEST_CRASH_AT", step)
                .output()
                .unwrap();
            assert!(!out.status.success(), "{step}: the child was not stopped");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains(&format!("crash injected at {step}")),
                "{step}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let ws = Workspace::writer(dir.path(), &w).unwrap();
            let want: Vec<String> = if committed {
                vec!["b".into(), "c".into(), "d".into()]
            } else {
                vec!["a".into()]
            };
            assert_eq!(ids(&ws), want, "{step}");
            let report = ws.check().unwrap();
            assert!(report.is_clean(), "{step}: {report:?}");
            assert_eq!(report.awaiting_deletion, 0, "{step}: recovery collects replaced parts");
            assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 0, "{step}");
            let mut t = ws.begin("test").unwrap();
            t.write_part("x", customer_sources_schema(), &[batch(&["e"])]).unwrap();
            t.commit("after").unwrap();
            assert_eq!(ids(&ws).len(), want.len() + 1, "{step}");
            assert!(ws.check().unwrap().is_clean(), "{step}");
        }
    }

    #[test]
    fn check_finds_missing_changed_truncated_and_stray_parts() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::writer(dir.path(), &Writer::new("test")).unwrap();
        let mut t = ws.begin("test").unwrap();
        t.write_part("x", customer_sources_schema(), &[batch(&["a", "b"])]).unwrap();
        t.commit("first").unwrap();
        let report = ws.check().unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!((report.tables, report.parts, report.rows), (1, 1, 2));
        let part = ws.table_files("x").unwrap()[0].clone();
        let good = std::fs::read(&part).unwrap();

        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x10;
        std::fs::write(&part, &flipped).unwrap();
        let p = ws.check().unwrap().problems;
        assert!(p.len() == 1 && p[0].contains("SHA-256"), "{p:?}");

        std::fs::write(&part, &good[..good.len() - 9]).unwrap();
        let p = ws.check().unwrap().problems;
        assert!(p.len() == 1 && p[0].contains("bytes"), "{p:?}");

        std::fs::remove_file(&part).unwrap();
        let p = ws.check().unwrap().problems;
        assert!(p.len() == 1 && p[0].contains("missing"), "{p:?}");

        std::fs::write(&part, &good).unwrap();
        std::fs::write(part.with_file_name("extra.parquet"), &good).unwrap();
        let p = ws.check().unwrap().problems;
        assert!(
            p.len() == 1 && p[0].contains("extra.parquet") && p[0].contains("does not list"),
            "{p:?}"
        );
    }

    #[test]
    fn one_writer_at_a_time_and_readers_keep_their_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::writer(dir.path(), &Writer::new("rapport ingest")).unwrap();
        let mut t = ws.begin("test").unwrap();
        t.write_part("x", customer_sources_schema(), &[batch(&["a"])]).unwrap();
        t.commit("first").unwrap();

        let err = Workspace::writer(dir.path(), &Writer::new("rapport run")).err().unwrap();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Locked(_)), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())) && msg.contains("rapport ingest"),
            "{msg}"
        );

        // A reader opened now keeps reading "a" after the writer replaces the table,
        // and the replaced part stays on disk until no reader is left.
        let reader = Workspace::reader(dir.path()).unwrap();
        assert!(reader.begin("x").is_err(), "readers cannot write");
        let mut t = ws.begin("test").unwrap();
        t.replace("x");
        t.write_part("x", customer_sources_schema(), &[batch(&["z"])]).unwrap();
        t.commit("replace").unwrap();
        assert_eq!(ids(&reader), vec!["a"]);
        assert_eq!(ids(&ws), vec!["z"]);
        assert_eq!(ws.check().unwrap().awaiting_deletion, 1);
        assert!(ws.check().unwrap().is_clean());
        drop(reader);
        drop(ws);
        let ws = Workspace::writer(dir.path(), &Writer::new("rapport run").waiting(Duration::from_secs(1))).unwrap();
        assert_eq!(ws.check().unwrap().awaiting_deletion, 0);
        assert_eq!(std::fs::read_dir(dir.path().join("tables/x")).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn workspace_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        let ws = Workspace::writer(&root, &Writer::new("test")).unwrap();
        ws.keys(true).unwrap();
        let mut t = ws.begin("test").unwrap();
        t.write_part("x", customer_sources_schema(), &[batch(&["a"])]).unwrap();
        t.commit("first").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        for f in ["catalog.sqlite", "key", "writer.lock"] {
            assert_eq!(mode(&root.join(f)), 0o600, "{f}");
        }
        assert_eq!(mode(&ws.table_files("x").unwrap()[0]), 0o600);
        assert_eq!(mode(&root.join("tables/x")), 0o700);
    }
}
