//! Durable intake: `POST /v1/ingest/{table}` (api.md, "Writing records").
//!
//! A request's records are checked by file ingest's validator (the same reasons), then
//! handed to one writer thread that stores many requests' records in one SQLite
//! transaction (group commit) in `<workspace>/intake.sqlite` — WAL, `synchronous=FULL`
//! — and answers each request only after that commit. A record's idempotency key is
//! stored in the same transaction as the record, so a record counts once across
//! retries and restarts. Bodies are stored encrypted under the workspace key.
//!
//! A flusher thread moves stored records into the workspace as soon as they are stored,
//! at most once per `flush_min_seconds` and within `flush_seconds` (so a customer's 360
//! shows a posted order, rescored, about a second later while the flushes keep up): it
//! writes them as canonical JSON Lines into a staging folder and runs file ingest on it
//! (identities resolved, the unified customers rederived), the rejected ones quarantined
//! with their reasons, and the last record's sequence number written as catalog
//! metadata in the same transaction. That number, not the intake database, says what
//! the workspace holds: a crash between the workspace commit and the intake's clean-up
//! flushes nothing twice.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rapport_store::config::Config;
use rapport_store::crypto::Keys;
use rapport_store::ingest::{IngestOptions, NoProgress, Quarantined};
use rapport_store::reason::Reason;
use rapport_store::schema::InputTable;
use rapport_store::validate::{RowCheck, Validator};
use rapport_store::{StoreError, Workspace};
use rusqlite::{params, Connection};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;

/// The catalog metadata key holding the last intake sequence number in the workspace.
pub const INTAKE_SEQ: &str = "intake_seq";
/// The column name under which record bodies are encrypted.
const SEALED_AS: &str = "intake";
/// Most records moved into the workspace by one flush.
const FLUSH_LIMIT: i64 = 1_000_000;
/// The largest record taken (its JSON text); a larger one is refused, the rest of its
/// request taken.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// A flush of this many records or more is taken as a stream's: the next one waits
/// for longer than `flush_min_seconds`.
const STREAM_RECORDS: usize = 10_000;
/// Most records stored by one group commit.
const GROUP_LIMIT: usize = 200_000;

/// What a request of records got: api.md's response.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct IngestAck {
    /// Records stored (durable: committed and fsynced).
    pub accepted: u64,
    /// Records whose `id` was accepted before, not stored again.
    pub duplicates: u64,
    /// Records refused, with their position in the request and why; they are
    /// quarantined as file ingest quarantines rows.
    pub rejected: Vec<RejectedRecord>,
    /// The intake sequence number of the request's last record (the latest one when
    /// nothing was stored).
    pub seq: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RejectedRecord {
    /// The record's position in the request (0-based).
    pub index: usize,
    /// Its idempotency key, when it had one.
    pub id: Option<String>,
    /// The quarantine reason, then what was wrong.
    pub reason: String,
}

/// One record of a request, checked and sealed.
struct Incoming {
    id: String,
    body: Vec<u8>,
    /// The quarantine reason and detail of a refused record.
    rejected: Option<(String, Option<String>)>,
}

/// A request's records on their way to the writer thread.
struct Job {
    table: InputTable,
    records: Vec<Incoming>,
    reply: tokio::sync::oneshot::Sender<Result<Stored, String>>,
}

/// What the writer did with a job's records.
struct Stored {
    accepted: u64,
    duplicates: u64,
    seq: i64,
}

/// How the intake behaves.
#[derive(Debug, Clone)]
pub struct IntakeSettings {
    /// The configuration whose `[ingest]`, `[identity]` and `[privacy]` settings records
    /// are checked and stored with (its `[tables]` do not apply: records are canonical).
    pub config: Config,
    pub config_file: Option<PathBuf>,
    /// The longest a stored record waits to join the workspace (`flush_seconds`).
    pub flush_every: Duration,
    /// The shortest time between two flushes (`flush_min_seconds`).
    pub flush_min: Duration,
}

/// The intake of one workspace: the writer and flusher threads and what they share.
pub struct Intake {
    workspace: PathBuf,
    settings: IntakeSettings,
    keys: Result<Keys, String>,
    jobs: Mutex<Option<mpsc::SyncSender<Job>>>,
    wake: Mutex<Option<mpsc::Sender<()>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The last sequence number stored, and the last one in the workspace.
    stored: Arc<AtomicI64>,
    flushed: Arc<AtomicI64>,
}

fn db_path(workspace: &Path) -> PathBuf {
    workspace.join("intake.sqlite")
}

fn open_db(path: &Path) -> Result<Connection, StoreError> {
    crate::durable_db(
        path,
        "CREATE TABLE IF NOT EXISTS records (
           seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL, id TEXT NOT NULL,
           reason TEXT, detail TEXT, body BLOB NOT NULL, received_at INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS ids (
           tbl TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL,
           PRIMARY KEY (tbl, id)) WITHOUT ROWID;",
    )
}

/// The workspace key, from `[privacy] key_file` when the config names one.
fn keys_of(ws: &Workspace, settings: &IntakeSettings) -> Result<Keys, StoreError> {
    if let Some(key_file) = &settings.config.privacy.key_file {
        // A relative path is read from the folder of the rapport.toml that names it.
        let base = settings.config_file.as_deref().and_then(Path::parent).unwrap_or(Path::new("."));
        ws.use_key_file(&base.join(key_file))?;
    }
    ws.keys(false)
}

/// The workspace's last flushed sequence number.
fn flushed_in(ws: &Workspace) -> Result<i64, StoreError> {
    Ok(ws.meta(INTAKE_SEQ)?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

impl Intake {
    /// Opens (or creates) the intake database of the workspace at `workspace` and starts
    /// the writer and flusher threads. Records stored before and not yet in the
    /// workspace are flushed first.
    pub fn start(workspace: &Path, settings: IntakeSettings) -> Result<Arc<Self>, StoreError> {
        let ws = Workspace::reader(workspace)?;
        let keys = keys_of(&ws, &settings).map_err(|e| e.to_string());
        let flushed = flushed_in(&ws)?;
        drop(ws);
        let conn = open_db(&db_path(workspace))?;
        let last: i64 = conn.query_row(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM records), 0), COALESCE((SELECT MAX(seq) FROM ids), 0))",
            [],
            |r| r.get(0),
        )?;
        // A new intake database beside a workspace that holds records numbers on from
        // the workspace's last one, so the flusher never skips a record.
        let last = last.max(flushed);
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(4096);
        let (wake_tx, wake_rx) = mpsc::channel::<()>();
        let wake_tx_writer = wake_tx.clone();
        let intake = Arc::new(Intake {
            workspace: workspace.to_path_buf(),
            settings,
            keys,
            jobs: Mutex::new(Some(jobs_tx)),
            wake: Mutex::new(Some(wake_tx)),
            writer: Mutex::new(None),
            flusher: Mutex::new(None),
            stored: Arc::new(AtomicI64::new(last)),
            flushed: Arc::new(AtomicI64::new(flushed)),
        });
        let stored = intake.stored.clone();
        let wake = wake_tx_writer;
        let writer = std::thread::Builder::new()
            .name("intake-writer".into())
            .spawn(move || write_loop(conn, jobs_rx, last + 1, &stored, &wake))
            .map_err(|e| StoreError::io(workspace, e))?;
        let flusher = {
            let intake = intake.clone();
            std::thread::Builder::new()
                .name("intake-flusher".into())
                .spawn(move || intake.flush_loop(&wake_rx))
                .map_err(|e| StoreError::io(workspace, e))?
        };
        *intake.writer.lock().expect("intake writer") = Some(writer);
        *intake.flusher.lock().expect("intake flusher") = Some(flusher);
        Ok(intake)
    }

    /// Records stored and not yet in the workspace tables.
    pub fn pending(&self) -> i64 {
        self.stored.load(Ordering::Relaxed) - self.flushed.load(Ordering::Relaxed)
    }

    /// Checks, seals and durably stores one request's records; answers once they are
    /// committed. `body` is a JSON array of records, or JSON Lines when `ndjson`.
    pub async fn take(&self, table: InputTable, body: Vec<u8>, ndjson: bool) -> Result<IngestAck, ApiError> {
        let keys = self
            .keys
            .clone()
            .map_err(|e| ApiError::unavailable(format!("records cannot be stored without the workspace key: {e}")))?;
        let jobs = self
            .jobs
            .lock()
            .expect("intake jobs")
            .clone()
            .ok_or_else(|| ApiError::unavailable("the server is shutting down"))?;
        let config = self.settings.config.clone();
        let (records, mut ack) = crate::blocking(move || check_records(table, &body, ndjson, &config, &keys)).await?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job { table, records, reply };
        tokio::task::spawn_blocking(move || jobs.send(job))
            .await
            .map_err(|e| ApiError::internal(format!("the intake failed: {e}")))?
            .map_err(|_| ApiError::unavailable("the server is shutting down"))?;
        let stored = answer
            .await
            .map_err(|_| ApiError::unavailable("the server is shutting down"))?
            .map_err(|e| {
                tracing::error!(error = %e, "intake commit failed");
                ApiError::internal("the records could not be stored; none of them was acknowledged")
            })?;
        ack.accepted = stored.accepted;
        ack.duplicates = stored.duplicates;
        ack.seq = stored.seq;
        Ok(ack)
    }

    /// Stops taking records, moves what was stored into the workspace, and stops the
    /// threads.
    pub fn close(&self) {
        // The writer ends once the last job is stored and answered; then the flusher,
        // woken by its channel closing, flushes everything stored and ends.
        self.jobs.lock().expect("intake jobs").take();
        if let Some(t) = self.writer.lock().expect("intake writer").take() {
            let _ = t.join();
        }
        self.wake.lock().expect("intake wake").take();
        if let Some(t) = self.flusher.lock().expect("intake flusher").take() {
            let _ = t.join();
        }
    }

    /// Flushes as soon as records are stored (the writer wakes it), at most once per
    /// `flush_min`; after a flush that moved many records (a stream), no sooner than
    /// three times its duration after it began, up to `flush_every` (so flushing takes
    /// about a quarter of the time at most and the intake keeps its throughput). Records
    /// still pending (the workspace was busy, or a flush failed) are tried again after
    /// the gap. Ends after a last flush once the intake closes.
    fn flush_loop(&self, wake: &mpsc::Receiver<()>) {
        let (min, every) = (self.settings.flush_min.min(self.settings.flush_every), self.settings.flush_every);
        let mut gap = min;
        let mut started = std::time::Instant::now();
        loop {
            let woken = if self.pending() > 0 {
                wake.recv_timeout(gap)
            } else {
                wake.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
            };
            let mut last = matches!(woken, Err(mpsc::RecvTimeoutError::Disconnected));
            // At most one flush per `gap`: records stored meanwhile join the next one.
            let deadline = started + gap;
            while !last {
                let now = std::time::Instant::now();
                if now >= deadline {
                    break;
                }
                if let Err(mpsc::RecvTimeoutError::Disconnected) = wake.recv_timeout(deadline - now) {
                    last = true;
                }
            }
            while wake.try_recv().is_ok() {}
            started = std::time::Instant::now();
            let mut moved = 0;
            loop {
                match self.flush() {
                    Ok(n) if n as i64 >= FLUSH_LIMIT => moved += n,
                    Ok(n) => {
                        moved += n;
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "moving posted records into the workspace failed; they stay stored and are tried again");
                        break;
                    }
                }
            }
            gap = if moved < STREAM_RECORDS {
                min
            } else {
                (started.elapsed() * 3).clamp(min, every)
            };
            if last {
                return;
            }
        }
    }

    /// Moves the stored records not yet in the workspace into it, in one catalog
    /// transaction. Returns how many records it moved.
    pub fn flush(&self) -> Result<usize, rapport_engine::EngineError> {
        if self.stored.load(Ordering::Acquire) <= self.flushed.load(Ordering::Acquire) {
            return Ok(0);
        }
        let who = rapport_store::workspace::Writer::new("serve").waiting(Duration::from_secs(1));
        let ws = match Workspace::writer(&self.workspace, &who) {
            Ok(ws) => ws,
            Err(StoreError::Locked(m)) => {
                tracing::info!(holder = %m, "workspace busy; posted records wait for the next flush");
                return Ok(0);
            }
            Err(e) => return Err(e.into()),
        };
        let flushed = flushed_in(&ws)?;
        let conn = open_db(&db_path(&self.workspace))?;
        let rows = pending_rows(&conn, flushed)?;
        let Some(last) = rows.last().map(|r| r.seq) else {
            conn.execute("DELETE FROM records WHERE seq <= ?1", params![flushed])
                .map_err(StoreError::from)?;
            self.flushed.store(flushed, Ordering::Release);
            return Ok(0);
        };
        let staging = self.workspace.join("intake-staging");
        let keys = keys_of(&ws, &self.settings)?;
        let opts = self.stage(&staging, &rows, &keys, last)?;
        let started = std::time::Instant::now();
        let outcome = rapport_engine::ingest::ingest_live(&ws, &opts, &NoProgress);
        let _ = std::fs::remove_dir_all(&staging);
        outcome?;
        conn.execute("DELETE FROM records WHERE seq <= ?1", params![last])
            .map_err(StoreError::from)?;
        self.flushed.store(last, Ordering::Release);
        tracing::info!(
            records = rows.len(),
            seq = last,
            seconds = started.elapsed().as_secs_f64(),
            "posted records joined the workspace"
        );
        // Each flush appends a part to the tables it brought rows to: merge the small ones.
        match ws.compact_all() {
            Ok(done) => {
                for c in done {
                    tracing::info!(table = %c.table, parts = c.parts, rows = c.rows, "compacted");
                }
            }
            Err(e) => tracing::warn!(error = %e, "compacting the workspace's tables failed; they are tried again at the next flush"),
        }
        Ok(rows.len())
    }

    /// Writes the accepted records as canonical JSON Lines files into `staging` and
    /// returns the ingest that takes them (and quarantines the rejected ones).
    fn stage(&self, staging: &Path, rows: &[PendingRow], keys: &Keys, last: i64) -> Result<IngestOptions, rapport_engine::EngineError> {
        let io = |e: std::io::Error| rapport_engine::EngineError::from(StoreError::io(staging, e));
        let _ = std::fs::remove_dir_all(staging);
        rapport_store::fsutil::create_private_dir_all(staging)?;
        let mut files: BTreeMap<&str, std::io::BufWriter<std::fs::File>> = BTreeMap::new();
        let mut quarantined = Vec::new();
        for r in rows {
            let text = keys.decrypt(SEALED_AS, &r.body)?;
            match &r.reason {
                None => {
                    let f = match files.get_mut(r.table.name()) {
                        Some(f) => f,
                        None => {
                            let file = rapport_store::fsutil::create_private(&staging.join(format!("{}.jsonl", r.table)))?;
                            files.entry(r.table.name()).or_insert(std::io::BufWriter::new(file))
                        }
                    };
                    f.write_all(text.as_bytes()).map_err(io)?;
                    f.write_all(b"\n").map_err(io)?;
                }
                Some(reason) => quarantined.push(Quarantined {
                    table: r.table,
                    source: format!("POST /v1/ingest/{}", r.table),
                    line: r.seq as u64,
                    reason: reason.clone(),
                    detail: r.detail.clone(),
                    raw: text,
                }),
            }
        }
        for (_, mut f) in files {
            f.flush().map_err(io)?;
        }
        let mut opts = IngestOptions::new(staging);
        opts.config_file = self.settings.config_file.clone();
        opts.canonical = true;
        opts.meta.insert(INTAKE_SEQ.into(), last.to_string());
        opts.quarantined = quarantined;
        Ok(opts)
    }
}

/// A stored record not yet in the workspace.
struct PendingRow {
    seq: i64,
    table: InputTable,
    reason: Option<String>,
    detail: Option<String>,
    body: Vec<u8>,
}

fn pending_rows(conn: &Connection, after: i64) -> Result<Vec<PendingRow>, StoreError> {
    let mut q = conn.prepare("SELECT seq, tbl, reason, detail, body FROM records WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
    let rows = q.query_map(params![after, FLUSH_LIMIT], |r| {
        let table: String = r.get(1)?;
        let table = InputTable::from_name(&table).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, format!("no input table \"{table}\"").into())
        })?;
        Ok(PendingRow {
            seq: r.get(0)?,
            table,
            reason: r.get(2)?,
            detail: r.get(3)?,
            body: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The writer thread: takes every job waiting, stores them in one transaction, then
/// answers each and wakes the flusher. Ends when every sender is gone.
fn write_loop(mut conn: Connection, jobs: mpsc::Receiver<Job>, mut next_seq: i64, stored: &AtomicI64, wake: &mpsc::Sender<()>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        let mut records = group[0].records.len();
        while records < GROUP_LIMIT {
            match jobs.try_recv() {
                Ok(job) => {
                    records += job.records.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let start = next_seq;
        match store_group(&mut conn, &group, &mut next_seq) {
            Ok(outcomes) => {
                stored.store(next_seq - 1, Ordering::Release);
                for (job, outcome) in group.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
                if next_seq > start {
                    let _ = wake.send(());
                }
            }
            Err(e) => {
                next_seq = start;
                let message = e.to_string();
                for job in group {
                    let _ = job.reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// Stores a group of jobs in one transaction: a record whose key was accepted before
/// is a duplicate; a refused record is kept (for the quarantine) but takes no key.
fn store_group(conn: &mut Connection, group: &[Job], next_seq: &mut i64) -> Result<Vec<Stored>, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = chrono::Utc::now().timestamp_micros();
    let mut outcomes = Vec::with_capacity(group.len());
    {
        let mut key = tx.prepare_cached("INSERT OR IGNORE INTO ids (tbl, id, seq) VALUES (?1, ?2, ?3)")?;
        let mut record =
            tx.prepare_cached("INSERT INTO records (seq, tbl, id, reason, detail, body, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
        for job in group {
            let table = job.table.name();
            let mut s = Stored {
                accepted: 0,
                duplicates: 0,
                seq: *next_seq - 1,
            };
            for r in &job.records {
                let seq = *next_seq;
                let (reason, detail) = match &r.rejected {
                    Some((reason, detail)) => (Some(reason.as_str()), detail.as_deref()),
                    None => {
                        if key.execute(params![table, r.id, seq])? == 0 {
                            s.duplicates += 1;
                            continue;
                        }
                        s.accepted += 1;
                        (None, None)
                    }
                };
                record.execute(params![seq, table, r.id, reason, detail, r.body, now])?;
                s.seq = seq;
                *next_seq += 1;
            }
            outcomes.push(s);
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

/// A record of a request, or what was wrong with it and its text.
type Item = Result<serde_json::Map<String, serde_json::Value>, (String, String)>;

/// Reads a request body into records (objects), each with its problem if it is not one.
fn split_body(body: &[u8], ndjson: bool) -> Result<Vec<Item>, ApiError> {
    let as_record = |v: serde_json::Value| match v {
        serde_json::Value::Object(m) => Ok(m),
        other => Err((format!("a record is a JSON object, not a {}", kind_of(&other)), other.to_string())),
    };
    if ndjson {
        let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(format!("the body is not UTF-8: {e}")))?;
        return Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
                Ok(v) => as_record(v),
                Err(e) => Err((e.to_string(), l.to_string())),
            })
            .collect());
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not JSON ({e}); send a JSON array of records, or JSON Lines with Content-Type: application/x-ndjson"
        ))
    })?;
    match value {
        serde_json::Value::Array(items) => Ok(items.into_iter().map(as_record).collect()),
        other => Err(ApiError::bad_request(format!(
            "the body is a JSON {}; send a JSON array of records",
            kind_of(&other)
        ))),
    }
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "true/false",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// A record's idempotency key: a non-empty string or an integer.
fn record_id(m: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    match m.get("id")? {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// Checks a request's records with file ingest's validator and seals them; returns them
/// with the part of the answer known before storing (the refused records).
fn check_records(
    table: InputTable,
    body: &[u8],
    ndjson: bool,
    config: &Config,
    keys: &Keys,
) -> Result<(Vec<Incoming>, IngestAck), ApiError> {
    let items = split_body(body, ndjson)?;
    let mut ack = IngestAck::default();
    let mut records = Vec::with_capacity(items.len());
    // Each object as one line of JSON Lines, as a file would hold it.
    let mut lines = String::new();
    let mut line_of = Vec::with_capacity(items.len());
    let mut objects = 0;
    for item in &items {
        match item {
            Ok(m) => {
                line_of.push(Some(objects));
                objects += 1;
                lines.push_str(&serde_json::to_string(m).map_err(|e| ApiError::internal(e.to_string()))?);
                lines.push('\n');
            }
            Err(_) => line_of.push(None),
        }
    }
    let ing = &config.ingest;
    let max_ts = ing.max_timestamp.unwrap_or_else(|| chrono::Utc::now().timestamp_micros());
    let validator = Validator::new(table, ing.timezone, &BTreeMap::new(), ing.min_timestamp, max_ts);
    let name = format!("POST /v1/ingest/{table}");
    let batch = rapport_store::reader::json_lines(table, &name, lines)?;
    let checked = validator.check_rows(&batch, &batch.rows);
    for (index, item) in items.iter().enumerate() {
        let (raw, id, problem) = match (item, line_of[index]) {
            (Ok(m), Some(at)) => {
                let raw = batch.raw(&batch.rows[at]).to_string();
                let id = record_id(m);
                let problem = match (&checked.rows[at], &id) {
                    _ if raw.len() > MAX_RECORD_BYTES => Some((
                        Reason::RecordTooLarge.to_string(),
                        Some(format!("{} bytes; a record may have {MAX_RECORD_BYTES}", raw.len())),
                    )),
                    (_, None) => Some((
                        Reason::Missing("id").to_string(),
                        Some("every record needs an \"id\": its idempotency key".to_string()),
                    )),
                    (RowCheck::Rejected(r), Some(_)) => Some((r.reason.to_string(), r.detail.clone())),
                    (RowCheck::Ok { .. }, Some(_)) => None,
                };
                (raw, id, problem)
            }
            (Err((e, raw)), _) => (raw.clone(), None, Some((Reason::MalformedJsonLine.to_string(), Some(e.clone())))),
            (Ok(_), None) => unreachable!("every object has a line"),
        };
        if let Some((reason, detail)) = &problem {
            ack.rejected.push(RejectedRecord {
                index,
                id: id.clone(),
                reason: match detail {
                    Some(d) => format!("{reason}: {d}"),
                    None => reason.clone(),
                },
            });
        }
        records.push(Incoming {
            id: id.unwrap_or_default(),
            body: keys.encrypt(SEALED_AS, &raw),
            rejected: problem,
        });
    }
    Ok((records, ack))
}

/// Records to store, in the table's canonical fields plus `"id"`: a JSON array, or
/// JSON Lines with `Content-Type: application/x-ndjson`.
#[utoipa::path(
    post,
    path = "/v1/ingest/{table}",
    params(("table" = String, Path, description = "customers, products, orders, events, surveys, consents or campaign_outcomes")),
    request_body(content = Vec<Object>, description = "records with the table's canonical fields and an \"id\" (the idempotency key)"),
    responses(
        (status = 200, body = IngestAck, description = "every accepted record is durable"),
        (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody, description = "no such table"),
        (status = 413, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody, description = "shutting down"),
    )
)]
pub async fn ingest(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    caller: crate::auth::Caller,
    axum::extract::Path(table): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::Json<IngestAck>, ApiError> {
    let table = InputTable::from_name(&table).ok_or_else(|| {
        ApiError::not_found(format!(
            "no table \"{table}\"; records go to one of {}",
            InputTable::ALL.map(|t| t.name()).join(", ")
        ))
    })?;
    let body = body.map_err(|e| match e.status() {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(e.body_text()),
        _ => ApiError::bad_request(e.body_text()),
    })?;
    let ndjson = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-ndjson") || v.starts_with("application/jsonl"));
    let ack = state.intake()?.take(table, body.to_vec(), ndjson).await?;
    caller.audit(Vec::new(), ack.accepted);
    metrics::counter!("rapport_ingest_records_total", "table" => table.name(), "outcome" => "accepted").increment(ack.accepted);
    metrics::counter!("rapport_ingest_records_total", "table" => table.name(), "outcome" => "duplicate").increment(ack.duplicates);
    metrics::counter!("rapport_ingest_records_total", "table" => table.name(), "outcome" => "rejected")
        .increment(ack.rejected.len() as u64);
    Ok(axum::Json(ack))
}
