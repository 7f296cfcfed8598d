//! `rapport ingest`: read, validate, clean, unify, store — all or nothing.
//!
//! The order of work: find the files and check every header (so a bad mapping fails
//! before anything heavy); read the profiles (`customers`) and resolve identities; then
//! stream every other table in batches — validate in parallel, apply the quantity
//! outlier rule, drop exact duplicates, resolve each row's customer, write Parquet into
//! staging — and finally commit everything in one catalog transaction.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema};
use rayon::prelude::*;

use rapport_model::robust::LogOutlierRule;

use crate::config::Config;
use crate::crypto::Keys;
use crate::discover::{discover, TableInput};
use crate::error::{Result, StoreError};
use crate::identity::{calling_code_region, normalise_email, normalise_phone, phone_region, Identity, Lookup, MatchedOn, Node};
use crate::quality::{IdentityQuality, Quality, SkippedFile, TableQuality};
use crate::reader::{open, Batch, RowMeta, RowReader, SourceFile};
use crate::reason::Reason;
use crate::schema::{InputTable, Table};
use crate::tables::{
    customer_sources_schema, quarantine_schema, stored_schema, timestamp_type, BackgroundPart, BatchBuilder, ColBuilder, PartWriter, Val,
};
use crate::validate::{CheckedRows, RowCheck, Validator, IMPUTED_AMOUNT, IMPUTED_QUANTITY, IMPUTED_STATUS};
use crate::workspace::{Transaction, Workspace};

/// Reports progress of long steps; the CLI draws bars, tests pass [`NoProgress`].
pub trait Progress: Send + Sync {
    fn begin(&self, label: &str, total_bytes: Option<u64>);
    fn advance(&self, bytes: u64);
    fn end(&self);
    fn note(&self, message: &str);
}

pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
    fn note(&self, _: &str) {}
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub data_dir: PathBuf,
    pub config_file: Option<PathBuf>,
    /// The time of the ingest (UTC microseconds): later timestamps are implausible.
    pub now_micros: i64,
    pub batch_rows: usize,
    /// The folder holds files named after the canonical tables with canonical columns
    /// (the server's intake): the `[tables]` of the config file do not apply; its
    /// ingest, identity and privacy settings do.
    pub canonical: bool,
    /// Catalog metadata set in the ingest's transaction (the server's intake records
    /// the last record sequence number it stored, so a flush counts once).
    pub meta: BTreeMap<String, String>,
    /// Rows rejected before they reached a file (by the server's intake, with the
    /// same validator), quarantined in this ingest's transaction.
    pub quarantined: Vec<Quarantined>,
}

/// A row rejected before it reached a file, to be quarantined as ingest does.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub table: InputTable,
    /// Where the row came from (the `file` column of the quarantine).
    pub source: String,
    /// Its position there (the `line` column).
    pub line: u64,
    pub reason: String,
    pub detail: Option<String>,
    /// The row as received.
    pub raw: String,
}

impl IngestOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            config_file: None,
            now_micros: chrono::Utc::now().timestamp_micros(),
            batch_rows: 256 * 1024,
            canonical: false,
            meta: BTreeMap::new(),
            quarantined: Vec::new(),
        }
    }
}

/// What an ingest did.
#[derive(Debug, Clone)]
pub struct IngestOutcome {
    pub quality: Quality,
    /// Nothing new: every file had been ingested before.
    pub nothing_new: bool,
    /// When this ingest brought the workspace's first orders: per unified customer with
    /// order lines, what the `customers` table needs from them (see [`OrderSums`]),
    /// summed while the lines were stored so they need not be read back.
    pub orders_by_customer: Option<RecordBatch>,
}

/// Runs one ingest into the workspace at `ws` and commits it.
pub fn ingest(ws: &Workspace, opts: &IngestOptions, progress: &dyn Progress) -> Result<IngestOutcome> {
    let (txn, outcome) = prepare(ws, opts, progress)?;
    if !outcome.nothing_new {
        txn.commit(&outcome.summary())?;
    }
    Ok(outcome)
}

impl IngestOutcome {
    /// A one-line JSON summary for the catalog: accepted rows per table.
    pub fn summary(&self) -> String {
        serde_json::to_string(
            &self
                .quality
                .tables
                .iter()
                .map(|(k, v)| (k.clone(), v.rows_accepted))
                .collect::<BTreeMap<_, _>>(),
        )
        .unwrap_or_default()
    }
}

/// Does all of an ingest but the commit, so that the caller can add derived tables to
/// the same transaction. Dropping the transaction instead of committing it leaves the
/// workspace as it was.
pub fn prepare<'w>(ws: &'w Workspace, opts: &IngestOptions, progress: &dyn Progress) -> Result<(Transaction<'w>, IngestOutcome)> {
    let (mut config, config_file) = Config::for_data(&opts.data_dir, opts.config_file.as_deref())?;
    if opts.canonical {
        config.tables.clear();
    }
    let (inputs, ignored) = discover(&opts.data_dir, &config, config_file.as_deref())?;
    check_inputs(ws, opts, &inputs, &ignored)?;
    if let Some(key_file) = &config.privacy.key_file {
        // A relative path is read from the folder of the rapport.toml that names it.
        let base = config_file.as_deref().and_then(Path::parent).unwrap_or(&opts.data_dir);
        ws.use_key_file(&base.join(key_file))?;
    }
    let keys = ws.keys(true)?;
    let mut txn = ws.begin("ingest")?;
    record_phone_codes(ws, &mut txn, &config)?;
    let q = first_quality(ws, opts, txn.id, &inputs, &ignored)?;
    let stored_sources = ws.read_table(Table::CustomerSources.name())?;
    let before: usize = stored_sources.iter().map(|b| b.num_rows()).sum();
    let mut state = State {
        identity: Identity::from_stored(nodes_from_batches(&stored_sources)?, keys.clone()),
        keys,
        phone_region: config.identity.default_country_code.as_deref().and_then(calling_code_region),
        quarantine: BatchBuilder::new(quarantine_schema()),
        quarantine_writer: None,
        txn_id: txn.id,
        seen_hashes: HashSet::new(),
        // Only when every stored order will be this ingest's: later ingests may add
        // lines to orders stored before, which only the stored table knows.
        order_sums: (!ws.has(Table::Orders)?).then(OrderSums::default),
    };
    if !inputs.iter().any(|i| i.table == InputTable::Customers) {
        state.identity.resolve();
    }
    let mut run = Run {
        ws,
        opts,
        progress,
        config: &config,
        state,
        txn,
        q,
        any_new: false,
    };
    // Profiles first (inputs come in the order of `InputTable::ALL`): every other table
    // resolves against them.
    for input in &inputs {
        run.table(input)?;
    }
    let Run {
        mut state,
        mut txn,
        mut q,
        mut any_new,
        ..
    } = run;
    for r in &opts.quarantined {
        state.quarantine_received(r, q.tables.entry(r.table.name().into()).or_default());
        any_new = true;
    }
    for (key, value) in &opts.meta {
        txn.set_meta(key, value);
    }
    state.flush_quarantine(&mut txn, true)?;
    let orders_by_customer = store_identities(ws, &mut txn, &mut state, &mut q, before, progress)?;
    // Millions of small strings (every source id, key and unified id, in the nodes and
    // the maps) take over a second to free: that happens on another thread while the
    // caller goes on to unify the customers.
    drop_elsewhere(state);
    Ok((
        txn,
        IngestOutcome {
            quality: q,
            nothing_new: !any_new,
            orders_by_customer,
        },
    ))
}

/// Refuses an ingest without orders (in the folder or stored before), and checks every
/// file's header and mapping before any heavy work.
fn check_inputs(ws: &Workspace, opts: &IngestOptions, inputs: &[TableInput], ignored: &[String]) -> Result<()> {
    if !inputs.iter().any(|t| t.table == InputTable::Orders) && !ws.has(Table::Orders)? {
        return Err(StoreError::Usage(format!(
            "no orders in {}: Rapport needs an orders table (a file named like orders.csv, orders.jsonl or orders.parquet, or `[tables.orders] path` in rapport.toml); found: {}",
            opts.data_dir.display(),
            if ignored.is_empty() { "no files".to_string() } else { ignored.join(", ") }
        )));
    }
    for input in inputs {
        for f in &input.files {
            open(f, input.table, &input.config)?;
        }
    }
    Ok(())
}

/// Records the default region phones were read in, for recomputing their pseudonyms
/// when the key is rotated.
fn record_phone_codes(ws: &Workspace, txn: &mut Transaction<'_>, config: &Config) -> Result<()> {
    let Some(code) = config.identity.default_country_code.as_deref() else {
        return Ok(());
    };
    let known = ws.meta("phone_default_codes")?.unwrap_or_default();
    let code = code.trim().trim_start_matches('+');
    if !known.split(',').any(|c| c == code) {
        let all = if known.is_empty() {
            code.to_string()
        } else {
            format!("{known},{code}")
        };
        txn.set_meta("phone_default_codes", &all);
    }
    Ok(())
}

/// The ingest's quality report before any row: when, from where, the files ignored and
/// the tables neither in the folder nor stored (with what they would make possible).
fn first_quality(ws: &Workspace, opts: &IngestOptions, ingest_id: i64, inputs: &[TableInput], ignored: &[String]) -> Result<Quality> {
    let mut q = Quality {
        ingest_id,
        ingested_at: chrono::DateTime::from_timestamp_micros(opts.now_micros)
            .map(|d| d.to_rfc3339())
            .unwrap_or_default(),
        data_dir: opts.data_dir.display().to_string(),
        ..Quality::default()
    };
    for f in ignored {
        q.warnings
            .push(format!("ignored {f}: not named like an input table and not in rapport.toml"));
    }
    let stored = ws.tables()?;
    for t in InputTable::ALL {
        if !inputs.iter().any(|i| i.table == t) && !stored.contains_key(t.stored_name()) {
            q.absent_tables.insert(t.name().into(), what_it_enables(t).into());
        }
    }
    Ok(q)
}

/// An ingest under way: what it reads with, the identities and quarantine so far, the
/// transaction it writes into and its quality report.
struct Run<'w, 'a> {
    ws: &'w Workspace,
    opts: &'a IngestOptions,
    progress: &'a dyn Progress,
    config: &'a Config,
    state: State,
    txn: Transaction<'w>,
    q: Quality,
    /// Some file had content not ingested before.
    any_new: bool,
}

/// One input table being ingested: its validator, its output and its figures so far.
struct TableRun<'i> {
    input: &'i TableInput,
    validator: Validator,
    tq: TableQuality,
    writer: Option<BackgroundPart>,
    /// The quantity outlier rule, fitted on the first batch of orders.
    outlier_rule: Option<LogOutlierRule>,
    seen: Seen,
    /// Per canonical column: present in some file.
    present: Vec<bool>,
    /// Profile rows (customers), stored once identities are resolved.
    profiles: Vec<Vec<Val<'static>>>,
}

impl Run<'_, '_> {
    /// Ingests every file of one input table.
    fn table(&mut self, input: &TableInput) -> Result<()> {
        let declared: Vec<String> = self
            .config
            .privacy
            .pii_columns
            .iter()
            .filter_map(|e| e.split_once('.'))
            .filter(|(t, _)| *t == input.table.name())
            .map(|(_, c)| c.to_string())
            .collect();
        let ing = &self.config.ingest;
        let max_ts = ing.max_timestamp.unwrap_or(self.opts.now_micros);
        let validator = Validator::new(input.table, ing.timezone, &input.config.formats, ing.min_timestamp, max_ts)
            .with_keys(self.state.keys.clone())
            .with_personal(&declared);
        let mut t = TableRun {
            input,
            validator,
            tq: TableQuality::default(),
            writer: None,
            outlier_rule: None,
            seen: Seen::new(),
            present: vec![false; input.table.columns().len()],
            profiles: Vec::new(),
        };
        for file in &input.files {
            self.file(&mut t, file)?;
        }
        self.close(t)
    }

    /// Whether the content of `file` was ingested before (by an earlier ingest, or as
    /// another file of this one): then it is recorded as skipped.
    fn known(&mut self, table: InputTable, file: &SourceFile, sha: &str) -> Result<bool> {
        if let Some(known) = self.ws.known_file(sha, table.name())? {
            self.progress.note(&format!(
                "skipped {}: the same content was ingested before as {} (ingest {})",
                file.name, known.name, known.txn
            ));
            self.q.skipped_files.push(SkippedFile {
                table: table.name().into(),
                file: file.name.clone(),
                same_as: known.name,
            });
            return Ok(true);
        }
        if !self.state.seen_hashes.insert((sha.to_string(), table)) {
            self.q.skipped_files.push(SkippedFile {
                table: table.name().into(),
                file: file.name.clone(),
                same_as: "another file of this ingest".into(),
            });
            return Ok(true);
        }
        Ok(false)
    }

    /// Reads, checks and stores one file, batch by batch.
    fn file(&mut self, t: &mut TableRun<'_>, file: &SourceFile) -> Result<()> {
        let table = t.input.table;
        // The reader starts on the file's first batch while the content hash is
        // computed (a file found known is dropped unread beyond that batch).
        let mut reading = ReadAhead::start(open(file, table, &t.input.config)?, self.opts.batch_rows)?;
        let digest_started = std::time::Instant::now();
        let (sha, bytes) = crate::fsutil::sha256_file(&file.path)?;
        if self.known(table, file, &sha)? {
            return Ok(());
        }
        tracing::debug!(file = %file.name, digest_s = digest_started.elapsed().as_secs_f64(), "content hash");
        self.any_new = true;
        t.tq.files.push(file.name.clone());
        self.progress
            .begin(&format!("{table} ← {}", file.name), (!file.gzip).then_some(bytes));
        let mut file_rows = 0u64;
        // Seconds spent waiting for the reader, validating, screening and storing
        // (RAPPORT_LOG=debug).
        let mut spent = [0f64; 4];
        // The value vectors of the checked rows, kept from batch to batch: allocated
        // anew each time, their memory went back to the system and came back as fresh
        // pages the kernel had to zero.
        let mut recycled: Vec<(Vec<Val<'static>>, Vec<RowCheck>)> = Vec::new();
        loop {
            let clock = std::time::Instant::now();
            let (batch, more) = reading.next()?;
            spent[0] += clock.elapsed().as_secs_f64();
            file_rows += batch.rows.len() as u64;
            let ctx = BatchCtx {
                table,
                file: &file.name,
                file_tag: &sha[..8],
                batch: &batch,
            };
            self.batch(t, &ctx, &mut recycled, &mut spent)?;
            self.progress.advance(batch.raw.len() as u64 + batch.rows.len() as u64);
            reading.give_back(batch);
            if !more {
                break;
            }
        }
        let here = reading.finish()?;
        self.progress.end();
        tracing::debug!(
            file = %file.name,
            read_wait_s = spent[0],
            validate_s = spent[1],
            screen_s = spent[2],
            store_s = spent[3],
            "ingested"
        );
        for (p, here) in t.present.iter_mut().zip(here) {
            *p |= here;
        }
        self.txn.record_file(&sha, table.name(), &file.name, bytes, file_rows);
        Ok(())
    }

    /// One batch: validated in parallel, screened in order, stored (or kept, for
    /// profiles); `spent` adds the seconds of validating, screening and storing.
    fn batch(
        &mut self,
        t: &mut TableRun<'_>,
        ctx: &BatchCtx<'_>,
        recycled: &mut Vec<(Vec<Val<'static>>, Vec<RowCheck>)>,
        spent: &mut [f64; 4],
    ) -> Result<()> {
        let mut clock = std::time::Instant::now();
        let mut lap = |k: usize, clock: &mut std::time::Instant| {
            spent[k] += clock.elapsed().as_secs_f64();
            *clock = std::time::Instant::now();
        };
        let batch = ctx.batch;
        let chunks = batch.rows.len().div_ceil(CHECK_CHUNK);
        let buffers: Vec<(Vec<Val<'_>>, Vec<RowCheck>)> = (0..chunks)
            .map(|_| recycled.pop().map(|(v, r)| (relifetime(v), r)).unwrap_or_default())
            .collect();
        let validator = &t.validator;
        let checked: Vec<CheckedRows<'_>> = batch
            .rows
            .par_chunks(CHECK_CHUNK)
            .zip(buffers)
            .map(|(rows, (vals, checks))| validator.check_rows_into(batch, rows, vals, checks))
            .collect();
        lap(1, &mut clock);
        let table = ctx.table;
        if table == InputTable::Orders && t.outlier_rule.is_none() {
            t.outlier_rule = fit_quantity_rule(&checked);
        }
        let accepted = self
            .state
            .screen(ctx, &checked, &mut t.tq, &mut t.seen, t.outlier_rule.as_ref(), self.config);
        lap(2, &mut clock);
        if table == InputTable::Customers {
            for a in &accepted {
                t.profiles.push(self.state.profile_values(a.values));
            }
        } else {
            let w = match &mut t.writer {
                Some(w) => w,
                None => t.writer.insert(BackgroundPart::spawn(
                    self.txn.part_writer(table.stored_name(), stored_schema(table))?,
                )?),
            };
            if table == InputTable::Orders {
                if let Some(sums) = &mut self.state.order_sums {
                    sums.add(&accepted);
                }
            }
            w.write(self.state.stored_rows(ctx, &accepted)?)?;
        }
        self.state.flush_quarantine(&mut self.txn, false)?;
        drop(accepted);
        recycled.extend(checked.into_iter().map(|c| (relifetime(c.vals), c.rows)));
        lap(3, &mut clock);
        Ok(())
    }

    /// Ends a table: profiles stored under their unified ids once identities are
    /// resolved, or the table's part closed; its quality figures recorded.
    fn close(&mut self, mut t: TableRun<'_>) -> Result<()> {
        let table = t.input.table;
        if table == InputTable::Customers {
            self.state.identity.resolve();
            self.store_profiles(std::mem::take(&mut t.profiles))?;
        } else if let Some(w) = t.writer {
            let closing = std::time::Instant::now();
            self.txn.add_part(table.stored_name(), w.finish()?)?;
            tracing::debug!(table = table.name(), close_s = closing.elapsed().as_secs_f64(), "part closed");
        }
        let mut tq = t.tq;
        if !tq.files.is_empty() {
            debug_assert!(tq.balanced());
            for (c, here) in table.columns().iter().zip(&t.present) {
                if !here {
                    tq.missing_values.remove(c.name);
                    tq.absent_columns.push(c.name.to_string());
                }
            }
            tq.personal_values_sealed = t.validator.sealed_counts();
            self.q.tables.insert(table.name().into(), tq);
        }
        Ok(())
    }

    /// The `customer_profiles` part: each profile row under its unified id.
    fn store_profiles(&mut self, profiles: Vec<Vec<Val<'static>>>) -> Result<()> {
        let schema = stored_schema(InputTable::Customers);
        let mut b = BatchBuilder::new(schema.clone());
        let mut w = self.txn.part_writer(Table::CustomerProfiles.name(), schema)?;
        for mut row in profiles {
            // Slot 0 holds the node index until the unified id is known.
            let Val::Num(node) = row[0] else {
                unreachable!("profile rows start with their node")
            };
            let node = &self.state.identity.nodes[node as usize];
            row[0] = Val::Owned(node.unified.to_string());
            b.push_row(&row);
            if b.len() >= 64 * 1024 {
                w.write(&b.finish()?)?;
            }
        }
        w.write(&b.finish()?)?;
        self.txn.add_part(Table::CustomerProfiles.name(), w)
    }
}

/// After every table: merges found now re-label rows stored by earlier ingests, and
/// `customer_sources` is written anew while the per-customer order sums and the count
/// of unified customers are made on another thread; the identity figures go into `q`.
/// Returns the order sums when this ingest brought the workspace's first orders.
fn store_identities(
    ws: &Workspace,
    txn: &mut Transaction<'_>,
    state: &mut State,
    q: &mut Quality,
    before: usize,
    progress: &dyn Progress,
) -> Result<Option<RecordBatch>> {
    let tail_started = std::time::Instant::now();
    let remap = std::mem::take(&mut state.identity.remap);
    if !remap.is_empty() {
        progress.note(&format!("{} unified ids merged into others; re-labelling stored rows", remap.len()));
        for t in InputTable::ALL.iter().filter(|t| t.refers_to_customers()) {
            relabel(ws, txn, t.stored_name(), &remap)?;
        }
    }
    let sums = state.order_sums.take().filter(|_| q.tables.contains_key(Table::Orders.name()));
    let identity = &state.identity;
    let nodes = &identity.nodes;
    let (orders_by_customer, unified_customers) = std::thread::scope(|scope| -> Result<_> {
        let summing = scope.spawn(move || {
            let summed = std::time::Instant::now();
            let sums = sums.map(|s| s.finish(nodes, identity.resolved)).transpose();
            tracing::debug!(order_sums_s = summed.elapsed().as_secs_f64(), "orders summed per customer");
            (sums, identity.unified_customers())
        });
        txn.replace(Table::CustomerSources.name());
        txn.write_part(
            Table::CustomerSources.name(),
            customer_sources_schema(),
            &[customer_sources(nodes)?],
        )?;
        tracing::debug!(customer_sources_s = tail_started.elapsed().as_secs_f64(), "identities stored");
        let (sums, unified) = summing
            .join()
            .map_err(|_| StoreError::Internal("summing the orders panicked".into()))?;
        Ok((sums?, unified))
    })?;
    q.identity = IdentityQuality {
        source_ids: nodes.len() as u64,
        unified_customers: unified_customers as u64,
        merged_by_email: identity.merges.merged_by_email,
        merged_by_phone: identity.merges.merged_by_phone,
        new_source_ids: (nodes.len() - before) as u64,
        remapped_ids: remap.len() as u64,
    };
    tracing::debug!(summary_s = tail_started.elapsed().as_secs_f64(), "identity summary");
    Ok(orders_by_customer)
}

/// The `customer_sources` table: every source id with its unified id and how it was
/// matched.
fn customer_sources(nodes: &[Node]) -> Result<RecordBatch> {
    let mut b = BatchBuilder::new(customer_sources_schema());
    for n in nodes {
        b.push_row(&[
            Val::Str(&n.unified),
            Val::Str(&n.source),
            Val::Str(&n.source_id),
            Val::Str(n.matched_on.as_str()),
            n.email_key.as_deref().map(Val::Str).unwrap_or(Val::Null),
            n.phone_key.as_deref().map(Val::Str).unwrap_or(Val::Null),
        ]);
    }
    b.finish()
}

/// A file read on a thread of its own, a batch ahead of its consumer: parsing the next
/// batch overlaps the work on this one. Used batches go back to the reader for reuse.
/// Dropped early (a file found known, an error), it stops the reader and waits for it.
struct ReadAhead {
    full: Option<std::sync::mpsc::Receiver<Result<(Batch, bool)>>>,
    empty: std::sync::mpsc::Sender<Batch>,
    handle: Option<std::thread::JoinHandle<Vec<bool>>>,
}

impl ReadAhead {
    fn start(mut reader: Box<dyn RowReader + Send>, batch_rows: usize) -> Result<Self> {
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Result<(Batch, bool)>>(1);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Batch>();
        let handle = std::thread::Builder::new()
            .name("rapport-reader".into())
            .spawn(move || {
                loop {
                    let mut batch = empty_rx.try_recv().unwrap_or_default();
                    batch.clear();
                    let read = reader.next_batch(&mut batch, batch_rows);
                    let more = matches!(read, Ok(true));
                    // A failed send: the consumer is gone.
                    if full_tx.send(read.map(|more| (batch, more))).is_err() || !more {
                        break;
                    }
                }
                reader.present()
            })
            .map_err(|e| StoreError::Internal(format!("cannot start a reader thread: {e}")))?;
        Ok(Self {
            full: Some(full_rx),
            empty: empty_tx,
            handle: Some(handle),
        })
    }

    /// The next batch and whether more follow.
    fn next(&mut self) -> Result<(Batch, bool)> {
        let full = self.full.as_ref().expect("open until finish");
        match full.recv() {
            Ok(read) => read,
            Err(_) => {
                self.stop();
                Err(StoreError::Internal("the reader thread stopped".into()))
            }
        }
    }

    fn give_back(&self, batch: Batch) {
        let _ = self.empty.send(batch);
    }

    /// Per canonical column, whether the file had it.
    fn finish(mut self) -> Result<Vec<bool>> {
        self.stop().ok_or_else(|| StoreError::Internal("the reader thread panicked".into()))
    }

    fn stop(&mut self) -> Option<Vec<bool>> {
        drop(self.full.take());
        self.handle.take().and_then(|h| h.join().ok())
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An emptied vector of values, for values that borrow from another batch: the
/// allocation is kept (an in-place collect of an empty vector; no element is moved).
fn relifetime<'x>(mut v: Vec<Val<'_>>) -> Vec<Val<'x>> {
    v.clear();
    v.into_iter().map(|_| unreachable!("the vector is empty")).collect()
}

/// Drops `v` on a thread of its own (if no thread can be started, the closure and `v`
/// with it are dropped here).
fn drop_elsewhere<T: Send + 'static>(v: T) {
    let _ = std::thread::Builder::new().name("rapport-drop".into()).spawn(move || drop(v));
}

fn what_it_enables(t: InputTable) -> &'static str {
    match t {
        InputTable::Customers => "profiles from several systems: identity resolution across sources, profile gaps",
        InputTable::Products => "product categories and attributes: category gaps, content-based recommendations",
        InputTable::Orders => "everything: Rapport needs orders",
        InputTable::Events => "interactions: behaviour model, knowledge gaps from feature use, complaints",
        InputTable::Surveys => "what customers say: frequency, category and satisfaction gaps",
        InputTable::Consents => "consent: without it no marketing action is taken for anyone",
        InputTable::CampaignOutcomes => "feedback: uplift of actions against control groups",
    }
}

fn fit_quantity_rule(checked: &[CheckedRows<'_>]) -> Option<LogOutlierRule> {
    let q = InputTable::Orders.column("quantity").map(|(i, _)| i).expect("orders have quantity");
    let values: Vec<f64> = checked
        .iter()
        .flat_map(|c| {
            c.rows.iter().filter_map(move |r| match r {
                RowCheck::Ok { at, .. } => c.values(*at)[q].as_num(),
                RowCheck::Rejected(_) => None,
            })
        })
        .collect();
    LogOutlierRule::fit(&values, 0.5)
}

/// Rows validated together (one parallel task).
const CHECK_CHUNK: usize = 4096;

/// Exact-duplicate detection: the hashes of the rows kept so far, in shards by hash
/// (a fixed number, so the outcome does not depend on the number of threads), each
/// shard filled in row order, so the first of a set of duplicates is the one kept.
struct Seen {
    shards: Vec<crate::FastSet<u128>>,
}

const SEEN_SHARDS: usize = 16;

impl Seen {
    fn new() -> Self {
        Self {
            shards: (0..SEEN_SHARDS).map(|_| crate::FastSet::default()).collect(),
        }
    }

    fn shard(hash: u128) -> usize {
        (hash >> 64) as usize % SEEN_SHARDS
    }

    /// For each `(row, hash)` in row order: whether an earlier row had the same hash.
    /// Marks repeats in `dup` (indexed by row).
    fn mark(&mut self, rows: &[(usize, u128)], dup: &mut [bool]) {
        let mut by_shard: Vec<Vec<(usize, u128)>> = vec![Vec::new(); SEEN_SHARDS];
        for &(r, h) in rows {
            by_shard[Self::shard(h)].push((r, h));
        }
        let repeats: Vec<Vec<usize>> = self
            .shards
            .par_iter_mut()
            .zip(by_shard)
            .map(|(set, rows)| {
                set.reserve(rows.len());
                rows.into_iter().filter(|&(_, h)| !set.insert(h)).map(|(r, _)| r).collect()
            })
            .collect();
        for r in repeats.into_iter().flatten() {
            dup[r] = true;
        }
    }
}

/// What the parallel look at a row found before the rules that need the rows in order.
#[derive(Clone, Copy)]
struct Pre {
    /// Robust z of the quantity (0 where there is no rule or no quantity).
    z: f64,
    /// The row's customer, if it is already known (`None`: look it up in order).
    node: Option<usize>,
    /// Bit per canonical column that is empty.
    missing: u64,
}

/// An accepted row: its place in the batch, its values and its customer.
pub(crate) struct Accepted<'b, 'a> {
    row: &'b RowMeta,
    values: &'b [Val<'a>],
    node: Option<usize>,
}

struct BatchCtx<'a> {
    table: InputTable,
    file: &'a str,
    /// A short tag of the file's content, for order ids made up for rows without one.
    file_tag: &'a str,
    batch: &'a Batch,
}

struct State {
    identity: Identity,
    keys: Keys,
    /// Where a national phone is read when its record names no country.
    phone_region: Option<phonenumber::country::Id>,
    quarantine: BatchBuilder,
    quarantine_writer: Option<PartWriter>,
    txn_id: i64,
    seen_hashes: HashSet<(String, InputTable)>,
    order_sums: Option<OrderSums>,
}

/// Per customer, the order lines in brief, as the `customers` table defines them:
/// first and last order time and revenue over lines not cancelled (revenue summed in
/// whole micro-units, each line's amount rounded, as `session::micros` does in SQL),
/// returned lines (negative quantity or status `returned`) and orders (distinct order
/// ids with a completed line of positive quantity). Summed per identity node while the
/// lines are stored, then per unified customer.
#[derive(Debug, Default)]
struct OrderSums {
    nodes: Vec<NodeSums>,
    /// (node, 64-bit hash of the order id) of purchase lines; a line repeating the
    /// node's previous purchase order is not pushed again.
    /// Hash 0 marks a line without an order id, an order of its own.
    purchases: Vec<(u32, u64)>,
}

#[derive(Debug, Clone, Copy)]
struct NodeSums {
    lines: u64,
    first: i64,
    last: i64,
    revenue_micros: i64,
    returned: i64,
    /// The order of the node's last purchase line pushed (0: none yet).
    last_purchase: u64,
}

impl Default for NodeSums {
    fn default() -> Self {
        NodeSums {
            lines: 0,
            first: i64::MAX,
            last: i64::MIN,
            revenue_micros: 0,
            returned: 0,
            last_purchase: 0,
        }
    }
}

impl NodeSums {
    fn merge(&mut self, o: &NodeSums) {
        self.lines += o.lines;
        self.first = self.first.min(o.first);
        self.last = self.last.max(o.last);
        self.revenue_micros += o.revenue_micros;
        self.returned += o.returned;
    }
}

/// What one order line adds to its node's sums.
struct LineSums {
    node: usize,
    /// The time of a line not cancelled.
    at: Option<i64>,
    micros: i64,
    returned: bool,
    /// A purchase line: `Some(Some(hash))` with an order id, `Some(None)` without.
    purchase: Option<Option<u64>>,
}

/// A 64-bit hash of an order id, never 0. Two order ids of one customer colliding is a
/// chance of about n² / 2⁶⁵ for a customer with n orders.
fn order_hash(id: &str) -> u64 {
    crate::seeded_hash(0x5241_5050_4f52_5421, id).max(1)
}

impl OrderSums {
    fn add(&mut self, rows: &[Accepted<'_, '_>]) {
        let t = InputTable::Orders;
        let col = |name: &str| t.column(name).expect("orders column").0;
        let (at, qty, amount, status, order) = (col("ordered_at"), col("quantity"), col("amount"), col("status"), col("order_id"));
        // What each line adds, in parallel (hashing the order ids is the work); then
        // added to the nodes in row order.
        let lines: Vec<LineSums> = rows
            .par_iter()
            .filter_map(|a| {
                let node = a.node?;
                let st = a.values[status].as_str();
                let q = a.values[qty].as_num();
                // SQL's three-valued logic: a missing status is neither cancelled nor not.
                let kept = st.is_some_and(|x| x != "cancelled");
                Some(LineSums {
                    node,
                    at: match a.values[at] {
                        Val::Ts(ts) if kept => Some(ts),
                        _ => None,
                    },
                    micros: if kept {
                        a.values[amount].as_num().map_or(0, |m| (m * 1_000_000.0).round() as i64)
                    } else {
                        0
                    },
                    returned: q.is_some_and(|q| q < 0.0) || st == Some("returned"),
                    purchase: (st == Some("completed") && q.is_some_and(|q| q > 0.0)).then(|| a.values[order].as_str().map(order_hash)),
                })
            })
            .collect();
        for l in lines {
            if self.nodes.len() <= l.node {
                self.nodes.resize(l.node + 1, NodeSums::default());
            }
            let s = &mut self.nodes[l.node];
            s.lines += 1;
            if let Some(ts) = l.at {
                s.first = s.first.min(ts);
                s.last = s.last.max(ts);
            }
            s.revenue_micros += l.micros;
            s.returned += i64::from(l.returned);
            match l.purchase {
                Some(Some(h)) if h != s.last_purchase => {
                    s.last_purchase = h;
                    self.purchases.push((l.node as u32, h));
                }
                Some(None) => self.purchases.push((l.node as u32, 0)),
                _ => {}
            }
        }
    }

    /// One row per unified customer with order lines, in the order of the nodes. Nodes
    /// from `resolved` on have unified ids of their own (see [`Identity::resolved`]),
    /// so only those before are grouped by id.
    fn finish(mut self, nodes: &[crate::identity::Node], resolved: usize) -> Result<RecordBatch> {
        let mut index: crate::FastMap<&str, u32> = crate::FastMap::default();
        let mut ids: Vec<&str> = Vec::new();
        let mut sums: Vec<NodeSums> = Vec::new();
        let mut of_node = vec![u32::MAX; self.nodes.len()];
        for (n, s) in self.nodes.iter().enumerate().filter(|(_, s)| s.lines > 0) {
            let unified: &str = &nodes[n].unified;
            let mut new_customer = || {
                ids.push(unified);
                sums.push(NodeSums::default());
                (ids.len() - 1) as u32
            };
            let u = if n >= resolved {
                new_customer()
            } else {
                *index.entry(unified).or_insert_with(new_customer)
            };
            of_node[n] = u;
            sums[u as usize].merge(s);
        }
        // Distinct orders per customer: the purchase hashes bucketed by customer
        // (counting sort), then each customer's few sorted and counted.
        let mut start = vec![0usize; ids.len() + 1];
        for p in &self.purchases {
            start[of_node[p.0 as usize] as usize + 1] += 1;
        }
        for u in 0..ids.len() {
            start[u + 1] += start[u];
        }
        let mut next = start.clone();
        let mut hashes = vec![0u64; self.purchases.len()];
        for p in &self.purchases {
            let u = of_node[p.0 as usize] as usize;
            hashes[next[u]] = p.1;
            next[u] += 1;
        }
        drop(std::mem::take(&mut self.purchases));
        let orders: Vec<i64> = start
            .windows(2)
            .map(|w| {
                let h = &mut hashes[w[0]..w[1]];
                h.sort_unstable();
                // Hash 0 marks lines without an order id: each is an order.
                let distinct = h.iter().enumerate().filter(|&(i, x)| *x == 0 || i == 0 || h[i - 1] != *x).count();
                distinct as i64
            })
            .collect();
        // Typed as the stored `ordered_at`.
        let ts_type = timestamp_type();
        let ts = |pick: fn(&NodeSums) -> Option<i64>| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(sums.iter().map(pick).collect::<Vec<_>>()).with_timezone("UTC"))
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, false),
            Field::new("first_order_at", ts_type.clone(), true),
            Field::new("last_order_at", ts_type.clone(), true),
            Field::new("orders", DataType::Int64, false),
            Field::new("revenue", DataType::Float64, false),
            Field::new("returned_lines", DataType::Int64, false),
        ]));
        Ok(RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(ids)),
                ts(|s| (s.first != i64::MAX).then_some(s.first)),
                ts(|s| (s.last != i64::MIN).then_some(s.last)),
                Arc::new(Int64Array::from(orders)),
                Arc::new(Float64Array::from(
                    sums.iter().map(|s| s.revenue_micros as f64 / 1_000_000.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(sums.iter().map(|s| s.returned).collect::<Vec<_>>())),
            ],
        )?)
    }
}

/// Where a table that refers to customers has its customer_id and source columns.
#[derive(Clone, Copy)]
struct IdColumns {
    id: usize,
    source: Option<usize>,
}

impl IdColumns {
    fn of(t: InputTable) -> Self {
        IdColumns {
            id: t
                .column("customer_id")
                .map(|(i, _)| i)
                .expect("tables that refer to customers have customer_id"),
            source: t.column("source").map(|(i, _)| i),
        }
    }

    /// The (source, customer_id) a row names.
    fn of_row<'v>(self, values: &'v [Val<'_>]) -> (Option<&'v str>, &'v str) {
        (
            self.source.and_then(|s| values[s].as_str()),
            values[self.id].as_str().expect("required"),
        )
    }
}

/// Exact duplicates, per row of the batch, among the rows that pass the quantity rule
/// (robust z at most `outlier_k`). Order lines without an order_id have no identity:
/// two identical lines can be two genuine purchases, so only lines with one are
/// de-duplicated.
fn duplicates(ctx: &BatchCtx<'_>, checked: &[CheckedRows<'_>], pre: &[Vec<Pre>], seen: &mut Seen, outlier_k: f64) -> Vec<bool> {
    let t = ctx.table;
    let order_id = t.column("order_id").map(|(i, _)| i);
    let rows = ctx.batch.rows.len();
    let mut dup = vec![false; rows];
    let mut candidates = Vec::with_capacity(rows);
    let mut r = 0;
    for (c, p) in checked.iter().zip(pre) {
        for (check, p) in c.rows.iter().zip(p) {
            if let RowCheck::Ok { at, hash, .. } = check {
                let values = c.values(*at);
                let kept = p.z <= outlier_k;
                if kept && t.dedups(order_id.is_some_and(|i| values[i] != Val::Null)) {
                    candidates.push((r, *hash));
                }
            }
            r += 1;
        }
    }
    seen.mark(&candidates, &mut dup);
    dup
}

/// Values filled with the contract default, and empty values per column, among the
/// accepted rows of a batch.
struct ValueCounts {
    missing: [u64; 64],
    imputed: [u64; 3],
}

impl Default for ValueCounts {
    fn default() -> Self {
        Self {
            missing: [0; 64],
            imputed: [0; 3],
        }
    }
}

impl ValueCounts {
    fn add(&mut self, imputed: u8, mut missing: u64) {
        for (k, flag) in [IMPUTED_QUANTITY, IMPUTED_AMOUNT, IMPUTED_STATUS].into_iter().enumerate() {
            self.imputed[k] += u64::from(imputed & flag != 0);
        }
        while missing != 0 {
            self.missing[missing.trailing_zeros() as usize] += 1;
            missing &= missing - 1;
        }
    }

    fn record(&self, cols: &[crate::schema::Column], tq: &mut TableQuality) {
        for (name, n) in ["quantity", "amount", "status"].into_iter().zip(self.imputed) {
            if n > 0 {
                *tq.values_imputed.entry(name.into()).or_default() += n;
            }
        }
        for (c, n) in cols.iter().zip(self.missing) {
            if n > 0 {
                *tq.missing_values.entry(c.name.into()).or_default() += n;
            }
        }
    }
}

impl State {
    /// Applies the rules that need more than one row (outliers, duplicates) and sends
    /// every rejected row to the quarantine; returns the accepted rows. The work that
    /// does not depend on row order (quantity scores, known customers, missing values,
    /// duplicate sets by shard) runs in parallel; the rest walks the rows in order.
    #[allow(clippy::too_many_arguments)]
    fn screen<'b, 'a>(
        &mut self,
        ctx: &BatchCtx<'a>,
        checked: &'b [CheckedRows<'a>],
        tq: &mut TableQuality,
        seen: &mut Seen,
        rule: Option<&LogOutlierRule>,
        config: &Config,
    ) -> Vec<Accepted<'b, 'a>> {
        let t = ctx.table;
        let cols = t.columns();
        let q_idx = t.column("quantity").map(|(i, _)| i);
        // Profiles are registered, not looked up; products refer to no customer.
        let lookup = (t.refers_to_customers() && t != InputTable::Customers).then(|| IdColumns::of(t));
        debug_assert!(cols.len() <= 64, "missing values are kept as a 64-bit mask");
        let started = std::time::Instant::now();
        let pre = self.pre_screen(t, checked, rule, lookup);
        let dup = duplicates(ctx, checked, &pre, seen, config.ingest.quantity_outlier_k);
        let pre_dedup_s = started.elapsed().as_secs_f64();

        // In order: quarantine, counts, customers not known before.
        let mut out = Vec::with_capacity(ctx.batch.rows.len());
        let mut counts = ValueCounts::default();
        let mut r = 0;
        let mut created_clash = false;
        for (c, p) in checked.iter().zip(&pre) {
            for (check, p) in c.rows.iter().zip(p) {
                let row = &ctx.batch.rows[r];
                let is_dup = dup[r];
                r += 1;
                tq.rows_read += 1;
                let (at, imputed) = match check {
                    RowCheck::Rejected(rej) => {
                        self.quarantine_row(ctx, row, rej.reason, rej.detail.as_deref(), tq);
                        continue;
                    }
                    RowCheck::Ok { at, imputed, .. } => (*at, *imputed),
                };
                let values = c.values(at);
                if let (Some(rule), Some(qi)) = (rule, q_idx) {
                    if p.z > config.ingest.quantity_outlier_k {
                        let x = values[qi].as_num().unwrap_or(f64::NAN);
                        let detail = format!(
                            "{x} is more than {:.0} (robust z {:.1} on the log scale)",
                            rule.threshold(config.ingest.quantity_outlier_k),
                            p.z
                        );
                        self.quarantine_row(ctx, row, Reason::AbsurdQuantity, Some(&detail), tq);
                        continue;
                    }
                    if p.z > config.ingest.quantity_flag_k {
                        *tq.outliers_flagged.entry("quantity".into()).or_default() += 1;
                    }
                }
                if is_dup {
                    tq.duplicates_removed += 1;
                    continue;
                }
                let node = if let Some(ids) = lookup {
                    match self.customer_of(ids.of_row(values), p.node, &mut created_clash) {
                        Lookup::Found(i) => Some(i),
                        Lookup::Ambiguous => {
                            let detail = "the id belongs to different customers in several sources and the row names no source";
                            self.quarantine_row(ctx, row, Reason::AmbiguousCustomerId, Some(detail), tq);
                            continue;
                        }
                    }
                } else {
                    None
                };
                counts.add(imputed, p.missing);
                tq.rows_accepted += 1;
                out.push(Accepted { row, values, node });
            }
        }
        counts.record(cols, tq);
        tracing::trace!(pre_dedup_s, walk_s = started.elapsed().as_secs_f64() - pre_dedup_s, "screened");
        out
    }

    /// In parallel, per checked row: the robust z of its quantity, its customer if
    /// already known, and its empty columns.
    fn pre_screen(
        &self,
        t: InputTable,
        checked: &[CheckedRows<'_>],
        rule: Option<&LogOutlierRule>,
        lookup: Option<IdColumns>,
    ) -> Vec<Vec<Pre>> {
        let cols = t.columns();
        let q_idx = t.column("quantity").map(|(i, _)| i);
        let identity = &self.identity;
        checked
            .par_iter()
            .map(|c| {
                c.rows
                    .iter()
                    .map(|r| {
                        let RowCheck::Ok { at, .. } = r else {
                            return Pre {
                                z: 0.0,
                                node: None,
                                missing: 0,
                            };
                        };
                        let values = c.values(*at);
                        let z = match (rule, q_idx.map(|q| &values[q])) {
                            (Some(rule), Some(Val::Num(x))) => rule.z(*x),
                            _ => 0.0,
                        };
                        let node = lookup.and_then(|ids| {
                            let (source, sid) = ids.of_row(values);
                            identity.find(source, sid)
                        });
                        let missing = values[..cols.len()]
                            .iter()
                            .enumerate()
                            .filter(|(_, v)| **v == Val::Null)
                            .fold(0u64, |m, (i, _)| m | 1 << i);
                        Pre { z, node, missing }
                    })
                    .collect()
            })
            .collect()
    }

    /// The customer of a row: `known` from the parallel pass, else looked up in order. A
    /// customer created in this batch can make an id that was known ambiguous; from then
    /// on (`created_clash`) every row is looked up in order.
    fn customer_of(&mut self, (source, sid): (Option<&str>, &str), known: Option<usize>, created_clash: &mut bool) -> Lookup {
        if let Some(i) = known.filter(|_| !*created_clash) {
            return Lookup::Found(i);
        }
        let before = self.identity.nodes.len();
        let l = self.identity.lookup(source, sid);
        if self.identity.nodes.len() > before && self.identity.ids_shared(sid) {
            *created_clash = true;
        }
        l
    }

    fn quarantine_row(&mut self, ctx: &BatchCtx<'_>, row: &RowMeta, reason: Reason, detail: Option<&str>, tq: &mut TableQuality) {
        let reason = reason.to_string();
        *tq.rejected.entry(reason.clone()).or_default() += 1;
        let raw = Val::Bin(self.keys.encrypt("raw", ctx.batch.raw(row)));
        self.quarantine.push_row(&[
            Val::Str(ctx.table.name()),
            Val::Str(ctx.file),
            Val::Num(row.line as f64),
            Val::Owned(reason),
            detail.map(Val::Str).unwrap_or(Val::Null),
            raw,
            Val::Num(self.txn_id as f64),
        ]);
    }

    /// Quarantines a row rejected before it reached a file.
    fn quarantine_received(&mut self, r: &Quarantined, tq: &mut TableQuality) {
        tq.rows_read += 1;
        *tq.rejected.entry(r.reason.clone()).or_default() += 1;
        self.quarantine.push_row(&[
            Val::Str(r.table.name()),
            Val::Str(&r.source),
            Val::Num(r.line as f64),
            Val::Str(&r.reason),
            r.detail.as_deref().map(Val::Str).unwrap_or(Val::Null),
            Val::Bin(self.keys.encrypt("raw", &r.raw)),
            Val::Num(self.txn_id as f64),
        ]);
    }

    fn flush_quarantine(&mut self, txn: &mut Transaction<'_>, last: bool) -> Result<()> {
        if self.quarantine.len() >= 64 * 1024 || (last && !self.quarantine.is_empty()) {
            let w = match &mut self.quarantine_writer {
                Some(w) => w,
                None => self
                    .quarantine_writer
                    .insert(txn.part_writer(Table::Quarantine.name(), quarantine_schema())?),
            };
            w.write(&self.quarantine.finish()?)?;
        }
        if last {
            if let Some(w) = self.quarantine_writer.take() {
                txn.add_part(Table::Quarantine.name(), w)?;
            }
        }
        Ok(())
    }

    /// Turns a validated profile row into its stored form, personal data encrypted;
    /// registers it with identity resolution. The first slot temporarily holds the
    /// node index (the unified id is known only after every profile is read).
    fn profile_values(&mut self, values: &[Val<'_>]) -> Vec<Val<'static>> {
        let t = InputTable::Customers;
        let get = |name: &str| values[t.column(name).expect("profile column").0].as_str().map(str::to_string);
        let sid = get("customer_id").expect("required");
        let source = get("source").unwrap_or_else(|| "default".into());
        let email = get("email");
        let phone = get("phone");
        let email_key = email.as_deref().and_then(normalise_email).map(|e| self.keys.pseudonym("email", &e));
        let phone_key = phone
            .as_deref()
            .and_then(|p| normalise_phone(p, phone_region(get("country").as_deref(), self.phone_region)))
            .map(|p| self.keys.pseudonym("phone", &p));
        self.identity.add_profile(&source, &sid, email_key.clone(), phone_key.clone());
        let node = self.identity_index(&source, &sid);
        let mut out: Vec<Val<'static>> = Vec::new();
        for field in stored_schema(t).fields() {
            let name = field.name().as_str();
            let v = match name {
                "customer_id" => Val::Num(node as f64),
                "source" => Val::Owned(source.clone()),
                "source_customer_id" => Val::Owned(sid.clone()),
                "email_key" => email_key.clone().map(Val::Owned).unwrap_or(Val::Null),
                "phone_key" => phone_key.clone().map(Val::Owned).unwrap_or(Val::Null),
                "attributes" => match values.last().expect("attributes slot").as_str() {
                    Some(json) if !json.is_empty() => Val::Bin(self.keys.encrypt("attributes", json)),
                    _ => Val::Null,
                },
                _ => {
                    let (i, c) = t.column(name).expect("stored columns are canonical");
                    if c.pii {
                        values[i]
                            .as_str()
                            .map(|s| Val::Bin(self.keys.encrypt(name, s)))
                            .unwrap_or(Val::Null)
                    } else {
                        owned(&values[i])
                    }
                }
            };
            out.push(v);
        }
        out
    }

    fn identity_index(&mut self, source: &str, sid: &str) -> usize {
        match self.identity.lookup(Some(source), sid) {
            Lookup::Found(i) => i,
            Lookup::Ambiguous => unreachable!("a lookup with a source is never ambiguous"),
        }
    }

    /// The accepted rows in their stored form, with their unified customer.
    fn stored_rows(&self, ctx: &BatchCtx<'_>, rows: &[Accepted<'_, '_>]) -> Result<RecordBatch> {
        let table = ctx.table;
        let schema = stored_schema(table);
        let plan: Vec<Slot> = schema
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "customer_id" if table.refers_to_customers() => Slot::Unified,
                "source" if table.refers_to_customers() => Slot::Source,
                "source_customer_id" => Slot::Canon(table.column("customer_id").expect("refers").0),
                "attributes" => Slot::Attributes,
                "order_id" => Slot::OrderId(table.column("order_id").expect("orders").0),
                name => Slot::Canon(table.column(name).expect("stored columns are canonical").0),
            })
            .collect();
        // Column by column, in parallel.
        let nodes = &self.identity.nodes;
        let arrays: Vec<ArrayRef> = plan
            .par_iter()
            .zip(schema.fields().to_vec())
            .map(|(slot, field)| {
                let mut b = ColBuilder::with_capacity(field.data_type(), rows.len());
                for a in rows {
                    match slot {
                        Slot::Unified => b.push(&Val::Str(&nodes[a.node.expect("resolved")].unified)),
                        Slot::Source => b.push(&Val::Str(&nodes[a.node.expect("resolved")].source)),
                        Slot::Attributes => b.push(a.values.last().expect("attributes")),
                        Slot::Canon(i) => b.push(&a.values[*i]),
                        // "If absent, each row is its own order": such rows get an id of
                        // their own, stable for the file's content and line.
                        Slot::OrderId(i) => match &a.values[*i] {
                            Val::Null => b.push(&Val::Owned(format!("{}:{}", ctx.file_tag, a.row.line))),
                            v => b.push(v),
                        },
                    }
                }
                b.finish()
            })
            .collect();
        Ok(RecordBatch::try_new(schema, arrays)?)
    }
}

enum Slot {
    OrderId(usize),
    Unified,
    Source,
    Attributes,
    Canon(usize),
}

fn owned(v: &Val<'_>) -> Val<'static> {
    match v {
        Val::Null => Val::Null,
        Val::Str(s) => Val::Owned(s.to_string()),
        Val::Owned(s) => Val::Owned(s.clone()),
        Val::Num(x) => Val::Num(*x),
        Val::Ts(x) => Val::Ts(*x),
        Val::Bool(x) => Val::Bool(*x),
        Val::Bin(x) => Val::Bin(x.clone()),
    }
}

fn nodes_from_batches(batches: &[RecordBatch]) -> Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for b in batches {
        let col = |name: &str| -> Result<&StringArray> {
            b.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| StoreError::Internal(format!("customer_sources lacks a text column {name}")))
        };
        let (u, s, sid, m, e, p) = (
            col("customer_id")?,
            col("source")?,
            col("source_customer_id")?,
            col("matched_on")?,
            col("email_key")?,
            col("phone_key")?,
        );
        for i in 0..b.num_rows() {
            let opt = |a: &StringArray| (!a.is_null(i)).then(|| a.value(i).to_string());
            nodes.push(Node {
                source: s.value(i).into(),
                source_id: sid.value(i).into(),
                email_key: opt(e),
                phone_key: opt(p),
                previous: None,
                unified: u.value(i).into(),
                matched_on: match m.value(i) {
                    "email" => MatchedOn::Email,
                    "phone" => MatchedOn::Phone,
                    _ => MatchedOn::None,
                },
            });
        }
    }
    Ok(nodes)
}

/// Rewrites a stored table with merged unified ids replaced by their survivors.
fn relabel(ws: &Workspace, txn: &mut Transaction<'_>, table: &str, remap: &BTreeMap<String, String>) -> Result<()> {
    let batches = ws.read_table(table)?;
    if batches.is_empty() {
        return Ok(());
    }
    let schema = batches[0].schema();
    let idx = schema.index_of("customer_id")?;
    let mut out = Vec::with_capacity(batches.len());
    for b in &batches {
        let ids = b
            .column(idx)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| StoreError::Internal(format!("{table}.customer_id is not text")))?;
        let relabelled: StringArray = ids
            .iter()
            .map(|v| v.map(|v| remap.get(v).map(String::as_str).unwrap_or(v)))
            .collect();
        let mut cols: Vec<ArrayRef> = b.columns().to_vec();
        cols[idx] = Arc::new(relabelled);
        out.push(RecordBatch::try_new(schema.clone(), cols)?);
    }
    txn.replace(table);
    txn.write_part(table, schema, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_value_vectors_keep_their_allocation() {
        let text = String::from("borrowed");
        let mut v: Vec<Val<'_>> = Vec::with_capacity(4096);
        v.push(Val::Str(&text));
        v.push(Val::Num(1.0));
        let again: Vec<Val<'static>> = relifetime(v);
        assert!(again.is_empty() && again.capacity() >= 4096);
    }
}
