//! The customer 360's rows in memory: every row of the workspace tables the 360 shows
//! (sources, profiles, the `customers` row, gaps, recommendations, the next action,
//! consents), kept as the Arrow batches of the tables' part files with a hash map from
//! each customer id, and every source id, to its rows. A read is a lookup and the
//! conversion of a handful of rows; no query is planned and no file opened.
//!
//! The index belongs to one committed state of the catalog. Each read compares the
//! catalog files' sizes and modification times with those the index was built at
//! (two `stat` calls); when they differ and the catalog's committed transactions have
//! changed, the reader that noticed rebuilds it from a fresh workspace snapshot while
//! the others go on being served from the previous index, then the new one replaces it
//! for everyone. A client that waited for its records to be flushed therefore reads
//! them on its next request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use arrow_array::cast::AsArray;
use arrow_array::RecordBatch;
use rapport_engine::results::{Cell, Record};
use rapport_engine::session::{shown_records, Personal};
use rapport_store::crypto::Keys;
use rapport_store::schema::Table;
use rapport_store::Workspace;

use crate::auth::Role;
use crate::error::ApiError;

/// The catalog's files as last seen: (size, modified) of catalog.sqlite and its WAL.
type Stamp = [Option<(u64, SystemTime)>; 2];

fn stamp(root: &Path) -> Stamp {
    let of = |name: &str| {
        std::fs::metadata(root.join(name))
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)))
    };
    [of("catalog.sqlite"), of("catalog.sqlite-wal")]
}

/// The index of one workspace, rebuilt when its catalog changes.
pub struct CustomerIndex {
    root: PathBuf,
    current: RwLock<(Stamp, Option<Arc<Snapshot>>)>,
    /// Held by the one reader rebuilding.
    building: Mutex<()>,
}

impl CustomerIndex {
    pub fn new(root: &Path) -> Self {
        CustomerIndex {
            root: root.to_path_buf(),
            current: RwLock::new(([None, None], None)),
            building: Mutex::new(()),
        }
    }

    /// The index of the last committed state (see the module's note on who waits).
    pub fn snapshot(&self) -> Result<Arc<Snapshot>, ApiError> {
        let now = stamp(&self.root);
        let previous = {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            match &current.1 {
                Some(s) if current.0 == now => return Ok(s.clone()),
                other => other.clone(),
            }
        };
        let _building = match (self.building.try_lock(), previous) {
            (Ok(guard), _) => guard,
            // Another reader is rebuilding: serve the previous index meanwhile.
            (Err(_), Some(previous)) => return Ok(previous),
            // None yet: wait for the first one.
            (Err(_), None) => self.building.lock().unwrap_or_else(|e| e.into_inner()),
        };
        // Rebuilt while this reader waited?
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = &current.1 {
                if current.0 == now {
                    return Ok(s.clone());
                }
            }
        }
        // The stamp is taken before the snapshot is read: a commit after it changes the
        // files again and the next read rebuilds.
        let ws = Workspace::reader(&self.root)?;
        let transactions = ws.committed_transactions()?;
        let unchanged = {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            current.1.clone().filter(|s| s.transactions == transactions)
        };
        let snapshot = match unchanged {
            // A checkpoint or a reader touched the files; nothing was committed.
            Some(s) => s,
            None => Arc::new(Snapshot::build(&ws, transactions)?),
        };
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (now, Some(snapshot.clone()));
        Ok(snapshot)
    }
}

/// The rows of one table by customer id (in the tables' commit order).
#[derive(Default)]
struct Rows {
    batches: Vec<RecordBatch>,
    of: HashMap<String, Vec<(u32, u32)>>,
}

/// Which columns of a table the index keeps.
#[derive(Clone, Copy)]
enum Keep<'a> {
    All,
    AllButId,
    /// These, in this order (those the parts have).
    Only(&'a [&'a str]),
}

impl Rows {
    /// The rows of `batches` (a table's), the columns `keep` says, keyed by `customer_id`.
    fn of(batches: &[RecordBatch], keep: Keep<'_>) -> Result<Self, ApiError> {
        let mut rows = Rows::default();
        for batch in batches {
            let schema = batch.schema();
            let columns: Vec<usize> = match keep {
                Keep::All => (0..schema.fields().len()).collect(),
                Keep::AllButId => (0..schema.fields().len())
                    .filter(|&i| schema.field(i).name() != "customer_id")
                    .collect(),
                Keep::Only(names) => names.iter().filter_map(|c| schema.index_of(c).ok()).collect(),
            };
            let ids = text_column(batch, "customer_id")?;
            let b = u32::try_from(rows.batches.len()).map_err(|_| ApiError::internal("too many batches"))?;
            for (i, id) in ids.into_iter().enumerate() {
                if let Some(id) = id {
                    rows.of.entry(id).or_default().push((b, i as u32));
                }
            }
            rows.batches
                .push(batch.project(&columns).map_err(|e| ApiError::internal(e.to_string()))?);
        }
        Ok(rows)
    }

    fn of_table(ws: &Workspace, table: Table, keep: Keep<'_>) -> Result<Self, ApiError> {
        Self::of(&ws.read_table(table.name())?, keep)
    }

    /// The customer's rows shown as `personal` says.
    fn records(&self, customer: &str, personal: &Personal) -> Result<Vec<Record>, ApiError> {
        let mut out = Vec::new();
        for &(b, i) in self.of.get(customer).map(Vec::as_slice).unwrap_or_default() {
            out.extend(shown_records(&self.batches[b as usize].slice(i as usize, 1), personal)?);
        }
        Ok(out)
    }
}

/// A column's values as text.
fn text_column(batch: &RecordBatch, column: &str) -> Result<Vec<Option<String>>, ApiError> {
    let i = batch
        .schema()
        .index_of(column)
        .map_err(|_| ApiError::internal(format!("a table without {column}")))?;
    Ok(rapport_engine::session::text_column(batch, i)?
        .iter()
        .map(|v| v.map(str::to_string))
        .collect())
}

/// One committed state of the workspace, indexed.
pub struct Snapshot {
    transactions: usize,
    /// The key, when the server has it (for reveals and for source ids that are emails
    /// or phones, which are stored as tokens); else why not.
    keys: Result<Keys, String>,
    /// The date the last run's scores are as of.
    pub as_of: Option<String>,
    totals: Totals,
    /// Every source id (as stored) → the (source, customer) pairs it names.
    source_ids: HashMap<String, Vec<(String, String)>>,
    sources: Rows,
    profiles: Rows,
    customers: Rows,
    gaps: Rows,
    recommendations: Rows,
    actions: Rows,
    consents: Rows,
}

/// Figures over the `customers` table (the dashboard's overview).
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub customers: u64,
    pub revenue: f64,
    pub mean_clv: Option<f64>,
    pub mean_churn: Option<f64>,
    /// Customers rescored since the last run.
    pub live: u64,
}

impl Totals {
    fn of(batches: &[RecordBatch]) -> Result<Self, ApiError> {
        let floats = |b: &RecordBatch, c: &str| -> Result<Option<Vec<Option<f64>>>, ApiError> {
            let Ok(i) = b.schema().index_of(c) else { return Ok(None) };
            Ok(Some(rapport_engine::session::float_column(b, i)?.iter().collect()))
        };
        let mut t = Totals::default();
        let (mut clv, mut churn) = ((0.0, 0u64), (0.0, 0u64));
        for b in batches {
            t.customers += b.num_rows() as u64;
            t.revenue += floats(b, "revenue")?.unwrap_or_default().into_iter().flatten().sum::<f64>();
            for (sum, col) in [(&mut clv, "clv"), (&mut churn, "churn_probability")] {
                for v in floats(b, col)?.unwrap_or_default().into_iter().flatten() {
                    sum.0 += v;
                    sum.1 += 1;
                }
            }
            if let Some(live) = b.column_by_name("live").and_then(|c| c.as_boolean_opt()) {
                t.live += live.true_count() as u64;
            }
        }
        t.mean_clv = (clv.1 > 0).then(|| clv.0 / clv.1 as f64);
        t.mean_churn = (churn.1 > 0).then(|| churn.0 / churn.1 as f64);
        Ok(t)
    }
}

/// One customer's rows, as the role may see them.
pub struct Found {
    pub customer_id: String,
    pub sources: Vec<Record>,
    pub profiles: Vec<Record>,
    pub scores: Option<Record>,
    pub gaps: Vec<Record>,
    pub recommendations: Vec<Record>,
    pub next_action: Option<Record>,
    pub consents: Vec<Record>,
}

impl Snapshot {
    fn build(ws: &Workspace, transactions: usize) -> Result<Self, ApiError> {
        let source_batches = ws.read_table(Table::CustomerSources.name())?;
        let sources = Rows::of(&source_batches, Keep::Only(&["source", "source_customer_id", "matched_on"]))?;
        let mut source_ids: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for batch in &source_batches {
            let ids = text_column(batch, "customer_id")?;
            let systems = text_column(batch, "source")?;
            let source_ids_of = text_column(batch, "source_customer_id")?;
            for ((id, system), source_id) in ids.into_iter().zip(systems).zip(source_ids_of) {
                if let (Some(id), Some(source_id)) = (id, source_id) {
                    let named = source_ids.entry(source_id).or_default();
                    let pair = (system.unwrap_or_default(), id);
                    if !named.contains(&pair) {
                        named.push(pair);
                    }
                }
            }
        }
        let customer_batches = ws.read_table(Table::Customers.name())?;
        let totals = Totals::of(&customer_batches)?;
        let customers = Rows::of(&customer_batches, Keep::All)?;
        Ok(Snapshot {
            transactions,
            keys: ws.keys(false).map_err(|e| e.to_string()),
            as_of: rapport_engine::report::models_or_warn(ws).map(|m| m.as_of),
            source_ids,
            sources,
            profiles: Rows::of_table(ws, Table::CustomerProfiles, Keep::AllButId)?,
            customers,
            totals,
            gaps: Rows::of_table(
                ws,
                Table::Gaps,
                Keep::Only(&[
                    "gap_type",
                    "subject",
                    "direction",
                    "reported_text",
                    "observed_text",
                    "reported",
                    "observed",
                    "delta",
                    "evidence",
                    "action",
                ]),
            )?,
            recommendations: Rows::of_table(ws, Table::Recommendations, Keep::Only(&["product_id", "score", "reason", "rank"]))?,
            actions: Rows::of_table(ws, Table::Actions, Keep::Only(&["action", "channel", "group", "priority"]))?,
            consents: Rows::of_table(ws, Table::Consents, Keep::Only(&["purpose", "granted", "recorded_at"]))?,
        })
    }

    /// Figures over the `customers` table.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// How `role` sees personal columns (see [`crate::personal_for`]).
    pub fn personal_for(&self, role: Role) -> Result<Personal, ApiError> {
        crate::personal_for(role, || self.keys.clone().map_err(|why| rapport_store::StoreError::Key(why).into()))
    }

    /// The unified id `customer` names: itself, or a source id of exactly one customer
    /// (of system `source` when given). One that is an email or a phone is looked up by
    /// its token under the key.
    fn unified_id(&self, customer: &str, source: Option<&str>) -> Result<String, ApiError> {
        if source.is_none() && self.sources.of.contains_key(customer) {
            return Ok(customer.to_string());
        }
        let shown = rapport_engine::explain::shown_id(customer);
        // A unified id (`cu_` and hex digits) can look like a phone number; it is never one.
        let stored = match rapport_store::value::personal_kind(customer).filter(|_| !customer.starts_with("cu_")) {
            Some(kind) => match &self.keys {
                Ok(keys) => keys.seal_text("source_customer_id", customer),
                Err(_) => {
                    return Err(ApiError::bad_request(format!(
                        "this id looks like {kind}: such source ids are stored encrypted, and finding one needs the key"
                    )))
                }
            },
            None => customer.to_string(),
        };
        let mut named: Vec<&str> = self
            .source_ids
            .get(&stored)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|(system, _)| source.is_none_or(|s| s == system))
            .map(|(_, id)| id.as_str())
            .collect();
        named.sort_unstable();
        named.dedup();
        match named.as_slice() {
            [one] => Ok(one.to_string()),
            [] => Err(ApiError::not_found(match source {
                Some(s) => format!("no customer {shown} in source \"{s}\""),
                None => format!("no customer {shown} (neither a unified nor a source id)"),
            })),
            many => Err(ApiError::bad_request(format!(
                "{shown} is a source id of several customers ({}); give the unified id, or the source (?source=)",
                many.join(", ")
            ))),
        }
    }

    /// Everything the 360 shows about `customer` (a unified id, or a source id, of
    /// system `source` when given).
    pub fn find(&self, customer: &str, source: Option<&str>, personal: &Personal) -> Result<Found, ApiError> {
        let id = self.unified_id(customer, source)?;
        let mut sources = self.sources.records(&id, personal)?;
        sort(&mut sources, &[("source", false), ("source_customer_id", false)]);
        let mut gaps = self.gaps.records(&id, personal)?;
        sort(&mut gaps, &[("evidence", true), ("gap_type", false), ("subject", false)]);
        let mut recommendations = self.recommendations.records(&id, &Personal::Masked)?;
        sort(&mut recommendations, &[("rank", false)]);
        let mut actions = self.actions.records(&id, &Personal::Masked)?;
        sort(&mut actions, &[("priority", false)]);
        let mut consents = self.consents.records(&id, personal)?;
        sort(&mut consents, &[("recorded_at", false), ("purpose", false)]);
        let scores = self.customers.records(&id, personal)?.into_iter().next();
        // The customer's next action as the `customers` row has it — the run's, or, after
        // consents or contacts arrived, checked again by the flush — else the action they
        // are held out of as control.
        let next = scores.as_ref().and_then(|r| r.get("next_action").as_text().map(str::to_string));
        let next_action = match next {
            Some(a) => actions
                .into_iter()
                .find(|r| r.get("action").as_text() == Some(a.as_str()) && r.get("group").as_text() == Some("treatment")),
            None => actions.into_iter().find(|r| r.get("group").as_text() == Some("control")),
        };
        Ok(Found {
            sources,
            profiles: self.profiles.records(&id, personal)?,
            scores,
            gaps,
            recommendations,
            next_action,
            consents,
            customer_id: id,
        })
    }
}

/// Sorts records by `keys` (column, descending?) as SQL's ORDER BY does: numbers by
/// value, text by bytes, nulls last ascending and first descending.
fn sort(records: &mut [Record], keys: &[(&str, bool)]) {
    use std::cmp::Ordering;
    fn cmp(a: &Cell, b: &Cell) -> Ordering {
        match (a, b) {
            (Cell::Null, Cell::Null) => Ordering::Equal,
            (Cell::Null, _) => Ordering::Greater,
            (_, Cell::Null) => Ordering::Less,
            (Cell::Text(x), Cell::Text(y)) => x.cmp(y),
            (Cell::Bool(x), Cell::Bool(y)) => x.cmp(y),
            _ => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                _ => a.to_string().cmp(&b.to_string()),
            },
        }
    }
    records.sort_by(|a, b| {
        for &(column, descending) in keys {
            let o = cmp(a.get(column), b.get(column));
            let o = if descending { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
}
