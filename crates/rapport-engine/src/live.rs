//! Live rescoring between runs. When records arrive through the server's intake, the
//! customers whose orders, events or survey answers changed (and new customers) are
//! scored again with what the last `rapport run` fitted — BG/NBD and Gamma-Gamma
//! parameters, horizons, margin and discount from models.json; the churn classifier,
//! the loyalty regression, the activity columns they read and the RFM population's cut
//! points from `models/scoring.bin` ([`ScoringState`]); no refit — by the same code the
//! run scores every customer with ([`crate::run::history`], [`crate::run::clv::value_of`],
//! [`crate::run::predict::matrix`], [`rapport_model::rfm::Cuts`]). Their orders, revenue,
//! first and last order, recency, tenure, RFM scores and segment, P(alive), expected
//! orders, expected spend, CLV, churn probability and loyalty score are brought up to
//! date as of the later of the run's date and the last day one of the customers scored
//! together ordered, did something or answered; the cluster and next
//! action stay the run's. Every other customer keeps the run's row. Two columns say
//! which is which: `live` (true when rescored since the run) and `scored_as_of` (the
//! date the row's scores are as of).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use rapport_model::bgnbd::BgNbd;
use rapport_model::gamma_gamma::GammaGamma;
use rapport_store::schema::Table;
use rapport_store::workspace::Transaction;
use rapport_store::Workspace;

use rapport_model::rfm::{Cuts, Rfm};

use crate::columns::Columns;
use crate::config::{ModelsConfig, TimeUnit};
use crate::days::{parse_as_of, MICROS_PER_DAY};
use crate::results::{AlsSettings, ModelsReport};
use crate::run::activity::{self, Activity};
use crate::run::predict::{self, ScoringModels};
use crate::run::{clv, features, history};
use crate::session::{first_float, first_int, new_context, register, Personal};
use crate::Result;

/// What the last run left for scoring one customer.
#[derive(Debug, Clone)]
pub struct Scoring {
    pub bg: BgNbd,
    pub gg: Option<GammaGamma>,
    pub cfg: ModelsConfig,
    /// The run's as-of day (days since 1970-01-01).
    pub as_of_day: i64,
    /// The churn and loyalty models and RFM cuts (None: only the BTYD scores are live).
    pub state: Option<ScoringState>,
    /// The run's ALS settings, to fold purchases into its stored item factors (None: it
    /// made no recommendations).
    pub als: Option<AlsSettings>,
}

/// `models/scoring.bin`: what a run fitted beyond models.json's parameters that scoring
/// one customer again needs, in postcard (exact floats, NaN included — a least-squares
/// fit can have undefined standard errors, which JSON cannot hold).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScoringState {
    /// The as-of date of the run that wrote it (the same as models.json's).
    pub as_of: String,
    pub models: ScoringModels,
    /// The cut points of the run's RFM quintiles (None without buyers).
    pub rfm: Option<Cuts>,
    /// The best review rating in the run's data (low ratings are at most 40 % of it).
    pub review_max: Option<f64>,
}

/// Where a run keeps its [`ScoringState`].
pub fn state_path(ws: &Workspace) -> PathBuf {
    ws.root().join("models").join("scoring.bin")
}

impl ScoringState {
    /// Writes the state (replacing the last run's at once).
    pub fn write(&self, ws: &Workspace) -> Result<()> {
        let bytes = postcard::to_allocvec(self).map_err(|e| crate::EngineError::usage(format!("scoring state: {e}")))?;
        let path = state_path(ws);
        let dir = path.parent().expect("a directory");
        std::fs::create_dir_all(dir).map_err(|e| crate::EngineError::io(dir, e))?;
        crate::report::write_atomic(&path, bytes)
    }

    /// The state of the run of `as_of`; None when there is none, or it is another run's
    /// (a run that stopped between writing the two), or unreadable (with a warning).
    pub fn read(ws: &Workspace, as_of: &str) -> Option<Self> {
        let path = state_path(ws);
        let bytes = std::fs::read(&path).ok()?;
        match postcard::from_bytes::<ScoringState>(&bytes) {
            Ok(s) if s.as_of == as_of => Some(s),
            Ok(s) => {
                tracing::warn!(
                    "{} is of the run as of {}, models.json of {as_of}: churn, loyalty and RFM stay the run's until the next run",
                    path.display(),
                    s.as_of
                );
                None
            }
            Err(e) => {
                tracing::warn!("{}: {e}; churn, loyalty and RFM stay the run's until the next run", path.display());
                None
            }
        }
    }

    /// The state of a run: its models, the RFM cuts of its buyers and its review scale.
    pub fn of_run(ws: &Workspace, inputs: &crate::run::ModelInputs, models: ScoringModels) -> Result<Self> {
        let f = &inputs.features;
        let b = &inputs.buyers;
        let rfm = (!b.is_empty()).then(|| {
            let recency: Vec<f64> = b
                .iter()
                .map(|&i| f.last_day[i].map_or(0.0, |d| (inputs.as_of_day - d) as f64))
                .collect();
            let freq: Vec<f64> = b.iter().map(|&i| f.orders[i]).collect();
            let mon: Vec<f64> = b.iter().map(|&i| f.revenue[i]).collect();
            Cuts::fit(&recency, &freq, &mon)
        });
        let review_max = if ws.has(Table::Events)? {
            first_float(&crate::export::query(ws, activity::REVIEW_MAX_SQL, &Personal::Stored)?)?
        } else {
            None
        };
        Ok(ScoringState {
            as_of: crate::days::day_text(inputs.as_of_day),
            models,
            rfm,
            review_max,
        })
    }

    /// The activity columns the models read.
    fn activity_names(&self) -> BTreeSet<String> {
        self.models.names.iter().skip(predict::BASE.len()).cloned().collect()
    }
}

impl Scoring {
    /// The scoring of the last run in `ws`, with its [`ScoringState`] when it has one.
    pub fn of_workspace(ws: &Workspace) -> Option<Self> {
        let m = crate::report::models_or_warn(ws)?;
        let mut s = Self::of_run(&m)?;
        s.state = ScoringState::read(ws, &m.as_of);
        Some(s)
    }

    /// The scoring of the run that wrote `m`; None when it fitted no BG/NBD (or was
    /// written before runs recorded their scoring settings).
    pub fn of_run(m: &ModelsReport) -> Option<Self> {
        let p = m.bgnbd.as_ref()?.params.as_ref()?;
        let s = m.scoring.as_ref()?;
        let cfg = ModelsConfig {
            time_unit: if m.time_unit == "day" { TimeUnit::Day } else { TimeUnit::Week },
            horizons_days: s.horizons_days.clone(),
            clv_horizon_days: s.clv_horizon_days,
            margin: s.margin,
            discount_rate: s.discount_rate,
            ..ModelsConfig::default()
        };
        Some(Scoring {
            bg: BgNbd {
                r: p.r,
                alpha: p.alpha,
                a: p.a,
                b: p.b,
            },
            gg: m.gamma_gamma.params.as_ref().map(|g| GammaGamma {
                p: g.p,
                q: g.q,
                gamma: g.gamma,
            }),
            cfg,
            as_of_day: parse_as_of(&m.as_of).ok()?,
            state: None,
            als: m.recommendations.fitted().map(|r| r.als),
        })
    }

    /// The rescored columns of `features`' customers as of `as_of_day` (`activity`: their
    /// activity in the columns of the state's models; `next`: their next actions, when
    /// checked again).
    pub fn score(
        &self,
        f: &features::Features,
        activity: &Activity,
        next: Option<&[Option<String>]>,
        as_of_day: i64,
    ) -> Result<RecordBatch> {
        let n = f.len();
        let unit = self.cfg.time_unit.days();
        let values: Vec<Option<clv::BuyerValue>> = (0..n)
            .map(|i| {
                history(f, i, as_of_day, unit).map(|h| {
                    clv::value_of(
                        &self.bg,
                        self.gg.as_ref(),
                        &h,
                        f.repeat_spend[i],
                        f.revenue[i],
                        f.orders[i],
                        &self.cfg,
                    )
                })
            })
            .collect();
        let mut c = Columns::default();
        crate::run::outputs::order_columns(&mut c, f, as_of_day);
        if let Some(cuts) = self.state.as_ref().and_then(|s| s.rfm.as_ref()) {
            let rfm: Vec<Option<Rfm>> = (0..n)
                .map(|i| f.last_day[i].map(|last| cuts.score((as_of_day - last) as f64, f.orders[i], f.revenue[i])))
                .collect();
            c.small("rfm_r", true, rfm.iter().map(|r| r.map(|r| r.r)));
            c.small("rfm_f", true, rfm.iter().map(|r| r.map(|r| r.f)));
            c.small("rfm_m", true, rfm.iter().map(|r| r.map(|r| r.m)));
            c.text("rfm_segment", true, rfm.iter().map(|r| r.map(|r| r.segment)));
        }
        c.floats("p_alive", true, values.iter().map(|v| v.as_ref().map(|v| v.p_alive)));
        for (j, days) in self.cfg.horizons_days.iter().enumerate() {
            c.floats(
                &format!("expected_orders_{days}d"),
                true,
                values.iter().map(|v| v.as_ref().and_then(|v| v.expected[j])),
            );
        }
        c.floats("expected_avg_spend", true, values.iter().map(|v| v.as_ref().and_then(|v| v.spend)));
        c.floats("clv", true, values.iter().map(|v| v.as_ref().and_then(|v| v.clv)));
        if let Some(state) = &self.state {
            // The run's model matrix for the buyers, as the run builds it at its as-of date.
            let names = &state.models.names;
            let snap = predict::Snapshot {
                features: f,
                activity,
                day: as_of_day,
            };
            let buyers: Vec<usize> = (0..n).filter(|&i| f.purchase_days[i] > 0.0).collect();
            let x = predict::matrix(&snap, &buyers, names);
            let spread = |p: Vec<f64>| {
                let mut out = vec![None; n];
                for (k, &i) in buyers.iter().enumerate() {
                    out[i] = Some(p[k]);
                }
                out
            };
            if let Some(m) = &state.models.churn {
                c.floats("churn_probability", true, spread(m.predict(&x)));
            }
            if let Some(m) = &state.models.loyalty {
                c.floats("loyalty_score", true, spread(m.predict(&x, names.len())));
            }
        }
        if let Some(next) = next {
            c.text("next_action", true, next.iter().map(|a| a.as_deref()));
        }
        c.bools("live", false, (0..n).map(|_| Some(true)));
        let day = i32::try_from(as_of_day).unwrap_or(i32::MAX);
        c.dates("scored_as_of", false, (0..n).map(|_| Some(day)));
        c.finish()
    }
}

/// The `customers` table after transaction `txn`: the last run's rows, with the
/// customers whose orders (and, with a [`ScoringState`], events and survey answers) the
/// transaction added (every customer when `everyone`, as after identities merged) and
/// the customers new to it scored again. None when the
/// stored table is not a run's (no run yet, or an ingest since): then the caller writes
/// the ingest's unified table.
pub async fn rescored(ws: &Workspace, txn: &Transaction<'_>, scoring: &Scoring, everyone: bool) -> Result<Option<Rescored>> {
    let ctx = new_context()?;
    let old = ws.table_files(Table::Customers.name())?;
    if old.is_empty() {
        return Ok(None);
    }
    register(&ctx, "old", old, &Personal::Stored).await?;
    let old_columns: Vec<String> = ctx.table("old").await?.schema().fields().iter().map(|f| f.name().clone()).collect();
    if !old_columns.iter().any(|c| c == "p_alive") {
        return Ok(None);
    }
    register(&ctx, "all_orders", txn.files_after(Table::Orders.name())?, &Personal::Stored).await?;
    register(
        &ctx,
        "all_sources",
        txn.files_after(Table::CustomerSources.name())?,
        &Personal::Stored,
    )
    .await?;
    // The tables the activity columns read, as they are after the transaction.
    let mut tables: BTreeSet<String> = ["orders".to_string()].into();
    let mut added = Vec::new();
    let activity_tables = if scoring.state.is_some() {
        [Table::Orders, Table::Events, Table::Surveys].as_slice()
    } else {
        [Table::Orders].as_slice()
    };
    for t in activity_tables {
        let files = txn.files_after(t.name())?;
        if files.is_empty() {
            continue;
        }
        added.extend(added_parts(ws, *t, &files)?);
        if *t != Table::Orders {
            register(&ctx, &format!("all_{}", t.name()), files, &Personal::Stored).await?;
            tables.insert(t.name().to_string());
        }
    }
    if scoring.state.is_some() {
        let products = txn.files_after(Table::Products.name())?;
        if !products.is_empty() {
            register(&ctx, "products", products, &Personal::Stored).await?;
            tables.insert("products".to_string());
        }
    }
    // The next action is checked again against the consents and contacts: customers
    // with new ones are rescored too.
    let actions = ws.table_files(Table::Actions.name())?;
    if !actions.is_empty() && old_columns.iter().any(|c| c == "next_action") {
        register(&ctx, "actions", actions, &Personal::Stored).await?;
        tables.insert("actions".to_string());
        for t in [Table::Consents, Table::CampaignOutcomes] {
            let files = txn.files_after(t.name())?;
            if files.is_empty() {
                continue;
            }
            added.extend(added_parts(ws, t, &files)?);
            register(&ctx, t.name(), files, &Personal::Stored).await?;
            tables.insert(t.name().to_string());
        }
    }
    let touched = touched_customers(&ctx, added, everyone).await?;
    // The run's recommendations, to fold the touched buyers' purchases in again.
    let old_recs = ws.table_files(Table::Recommendations.name())?;
    let als = match scoring.als {
        Some(settings) if !old_recs.is_empty() => match stored_als(&ctx, ws, settings).await {
            Ok(a) => {
                register(&ctx, "old_recs", old_recs, &Personal::Stored).await?;
                let k = first_int(&ctx.sql("SELECT CAST(max(rank) AS BIGINT) FROM old_recs").await?.collect().await?)?;
                Some((a, k.and_then(|k| usize::try_from(k).ok()).unwrap_or(10)))
            }
            Err(e) => {
                tracing::warn!("recommendations stay the run's: {e}");
                None
            }
        },
        _ => None,
    };
    let (fresh, fresh_recs) = if touched.is_empty() {
        (None, None)
    } else {
        let (f, r) = score_touched(&ctx, scoring, touched, &tables, als.as_ref().map(|(a, k)| (a, *k))).await?;
        (Some(f), r)
    };
    let sql = merge_sql(&old_columns, fresh.as_ref(), scoring.as_of_day);
    if let Some(f) = fresh {
        ctx.register_table("fresh", Arc::new(MemTable::try_new(f.schema(), vec![vec![f]])?))?;
    }
    let customers = ctx.sql(&sql).await?.collect().await?;
    let recommendations = match fresh_recs {
        Some(r) if r.num_rows() > 0 => {
            ctx.register_table("fresh_recs", Arc::new(MemTable::try_new(r.schema(), vec![vec![r]])?))?;
            let sql = "SELECT customer_id, rank, product_id, score, reason FROM old_recs
                       WHERE customer_id NOT IN (SELECT DISTINCT customer_id FROM fresh_recs)
                         AND customer_id IN (SELECT customer_id FROM all_sources)
                       UNION ALL SELECT customer_id, rank, product_id, score, reason FROM fresh_recs
                       ORDER BY customer_id, rank";
            Some(ctx.sql(sql).await?.collect().await?)
        }
        _ => None,
    };
    Ok(Some(Rescored {
        customers,
        recommendations,
    }))
}

/// The parts of `table` that the transaction adds to `files_after` (its parts after it).
fn added_parts(ws: &Workspace, table: Table, files_after: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let before: BTreeSet<PathBuf> = ws.table_files(table.name())?.into_iter().collect();
    Ok(files_after.iter().filter(|p| !before.contains(*p)).cloned().collect())
}

/// The run's ALS item factors, read in `ctx`.
async fn stored_als(ctx: &SessionContext, ws: &Workspace, settings: AlsSettings) -> Result<crate::recs::StoredAls> {
    register(ctx, "item_factors", ws.table_files(Table::ItemFactors.name())?, &Personal::Stored).await?;
    let batches = ctx.sql("SELECT * FROM item_factors").await?.collect().await?;
    crate::recs::StoredAls::of_batches(&batches, settings.regularization, settings.alpha)
}

/// What a flush writes after live rescoring.
pub struct Rescored {
    /// The `customers` table: the run's rows, the touched customers' rescored.
    pub customers: Vec<RecordBatch>,
    /// The `recommendations` table with the touched buyers' lists folded in again from all
    /// their purchases (None: unchanged).
    pub recommendations: Option<Vec<RecordBatch>>,
}

/// The customers with rows in `added` (parts of orders, events or surveys) and those not
/// in the run's table (new ones), or every customer when `everyone`.
async fn touched_customers(ctx: &SessionContext, added: Vec<PathBuf>, everyone: bool) -> Result<Vec<RecordBatch>> {
    let new_customers = "SELECT DISTINCT s.customer_id FROM all_sources s LEFT JOIN old o ON o.customer_id = s.customer_id
                         WHERE o.customer_id IS NULL";
    let sql = if everyone {
        "SELECT DISTINCT customer_id FROM all_sources".to_string()
    } else if added.is_empty() {
        new_customers.to_string()
    } else {
        // Each added part on its own (the tables' columns differ): their customer ids.
        let mut parts = Vec::new();
        for (k, file) in added.into_iter().enumerate() {
            register(ctx, &format!("added_{k}"), vec![file], &Personal::Stored).await?;
            parts.push(format!("SELECT customer_id FROM added_{k}"));
        }
        format!(
            "SELECT DISTINCT customer_id FROM ({}) UNION {new_customers}",
            parts.join(" UNION ALL ")
        )
    };
    let batches = ctx.sql(&sql).await?.collect().await?;
    Ok(batches.into_iter().filter(|b| b.num_rows() > 0).collect())
}

/// The rescored rows of the `touched` customers, as of the later of the run's date and
/// the last day one of them ordered, did something or answered a survey.
async fn score_touched(
    ctx: &SessionContext,
    scoring: &Scoring,
    touched: Vec<RecordBatch>,
    tables: &BTreeSet<String>,
    als: Option<(&crate::recs::StoredAls, usize)>,
) -> Result<(RecordBatch, Option<RecordBatch>)> {
    let schema = touched[0].schema();
    let ids: Vec<String> = touched
        .iter()
        .map(|b| crate::session::text_column(b, 0))
        .collect::<Result<Vec<_>>>()?
        .iter()
        .flat_map(|c| {
            c.iter()
                .flatten()
                .map(|id| format!("'{}'", id.replace('\'', "''")))
                .collect::<Vec<_>>()
        })
        .collect();
    ctx.register_table("touched", Arc::new(MemTable::try_new(schema, vec![touched])?))?;
    // A few customers among many: their ids as a list the Parquet scan filters rows by
    // while decoding (the id column first); many: a join.
    let few = ids.len() <= 5_000;
    let only_touched = if few {
        ctx.state_ref()
            .write()
            .config_mut()
            .options_mut()
            .execution
            .parquet
            .pushdown_filters = true;
        format!("customer_id IN ({})", ids.join(", "))
    } else {
        "customer_id IN (SELECT customer_id FROM touched)".to_string()
    };
    // The feature and activity queries read `orders`, `customer_sources`, `events` and
    // `surveys`: only the touched customers' rows.
    let mut views = vec![("orders", "all_orders"), ("customer_sources", "all_sources")];
    for t in ["events", "surveys"] {
        if tables.contains(t) {
            views.push((t, if t == "events" { "all_events" } else { "all_surveys" }));
        }
    }
    for (view, table) in views {
        let rows = format!("SELECT * FROM {table} WHERE {only_touched}");
        if few {
            // A few customers' rows, read once: the features, activity, next action and
            // recommendation queries then scan them in memory, not every part again.
            let df = ctx.sql(&rows).await?;
            let schema = df.schema().inner().clone();
            let batches = df.collect().await?;
            ctx.register_table(view, Arc::new(MemTable::try_new(schema, vec![batches])?))?;
        } else {
            ctx.sql(&format!("CREATE VIEW {view} AS {rows}")).await?.collect().await?;
        }
    }
    // The latest day the touched customers were seen: an order, an event or an answer.
    let mut seen = vec!["SELECT max(ordered_at) AS at FROM orders"];
    if tables.contains("events") {
        seen.push("SELECT max(occurred_at) AS at FROM events");
    }
    if tables.contains("surveys") {
        seen.push("SELECT max(answered_at) AS at FROM surveys");
    }
    let last = ctx
        .sql(&format!("SELECT CAST(max(at) AS BIGINT) FROM ({})", seen.join(" UNION ALL ")))
        .await?
        .collect()
        .await?;
    let last_day = first_int(&last)?.map(|t| t.div_euclid(MICROS_PER_DAY));
    let as_of_day = last_day.map_or(scoring.as_of_day, |d| d.max(scoring.as_of_day));
    let end = (as_of_day + 1) * MICROS_PER_DAY;
    let f = features::compute(ctx, end).await?;
    let next = if tables.contains("actions") {
        Some(next_actions(ctx, scoring, &only_touched, &f.customer_id, tables).await?)
    } else {
        None
    };
    let a = match &scoring.state {
        Some(state) => {
            let names = state.activity_names();
            let fixed = activity::Fixed {
                names: &names,
                review_max: state.review_max,
            };
            activity::compute_with(ctx, end, tables, &f.customer_id, Some(&fixed)).await?
        }
        None => Activity::default(),
    };
    let scored = scoring.score(&f, &a, next.as_deref(), as_of_day)?;
    let recs = match als {
        Some((als, k)) => Some(folded_in(ctx, als, k, &f.customer_id).await?),
        None => None,
    };
    Ok((scored, recs))
}

/// The `recommendations` rows of the customers `ids` who have bought products the run's
/// ALS factors know: their purchases (order lines per product, as the run counts them)
/// folded into the factors, the `k` best products they have not bought, `reason` "als".
async fn folded_in(ctx: &SessionContext, als: &crate::recs::StoredAls, k: usize, ids: &[String]) -> Result<RecordBatch> {
    let batches = ctx
        .sql(
            "SELECT customer_id, product_id, CAST(count(*) AS DOUBLE) FROM orders
             WHERE product_id IS NOT NULL AND quantity > 0 AND status = 'completed' GROUP BY 1, 2",
        )
        .await?
        .collect()
        .await?;
    let mut baskets: std::collections::HashMap<String, std::collections::BTreeMap<u32, f64>> = std::collections::HashMap::new();
    for b in &batches {
        let (c, p, n) = (
            crate::session::text_column(b, 0)?,
            crate::session::text_column(b, 1)?,
            crate::session::float_column(b, 2)?,
        );
        for r in 0..b.num_rows() {
            if let Some(item) = (!p.is_null(r)).then(|| als.item(p.value(r))).flatten() {
                *baskets.entry(c.value(r).to_string()).or_default().entry(item).or_insert(0.0) += n.value(r);
            }
        }
    }
    let mut rows: Vec<(&str, i64, String, f64)> = Vec::new();
    for id in ids {
        let Some(basket) = baskets.get(id) else { continue };
        let basket: Vec<(u32, f64)> = basket.iter().map(|(i, n)| (*i, *n)).collect();
        for (rank, (product, score)) in als.recommend(&basket, k).into_iter().enumerate() {
            rows.push((id, rank as i64 + 1, product, score));
        }
    }
    let mut c = Columns::default();
    c.text("customer_id", false, rows.iter().map(|r| Some(r.0)));
    c.ints("rank", false, rows.iter().map(|r| Some(r.1)));
    c.text("product_id", false, rows.iter().map(|r| Some(r.2.as_str())));
    c.floats("score", false, rows.iter().map(|r| Some(r.3)));
    c.text("reason", false, rows.iter().map(|_| Some(rapport_model::recs::Source::Als.name())));
    c.finish()
}

/// The next action of each of `ids` (the touched customers, `only_touched` their SQL
/// condition): the first by priority of their treatment rows in the run's `actions`
/// that consents and contacts since the run still allow
/// ([`crate::run::actions::still_allowed_sql`]); None when none is.
async fn next_actions(
    ctx: &SessionContext,
    scoring: &Scoring,
    only_touched: &str,
    ids: &[String],
    tables: &BTreeSet<String>,
) -> Result<Vec<Option<String>>> {
    let condition = format!("a.\"group\" = 'treatment' AND a.{only_touched}");
    let allowed = crate::run::actions::still_allowed_sql(
        tables.contains("consents"),
        tables.contains("campaign_outcomes"),
        (scoring.as_of_day + 1) * MICROS_PER_DAY,
        Some(&condition),
    );
    let sql = format!("SELECT customer_id, first_value(action ORDER BY priority, action) FROM ({allowed}) GROUP BY customer_id");
    let batches = ctx.sql(&sql).await?.collect().await?;
    let mut first: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for b in &batches {
        let (c, a) = (crate::session::text_column(b, 0)?, crate::session::text_column(b, 1)?);
        for r in 0..b.num_rows() {
            if !c.is_null(r) && !a.is_null(r) {
                first.insert(c.value(r).to_string(), a.value(r).to_string());
            }
        }
    }
    Ok(ids.iter().map(|id| first.remove(id)).collect())
}

/// The run's rows with the rescored ones in their place (and new customers added), in
/// customer order, without customers identities no longer have.
fn merge_sql(old_columns: &[String], fresh: Option<&RecordBatch>, run_day: i64) -> String {
    let fresh_columns: Vec<String> = fresh
        .map(|f| f.schema().fields().iter().map(|f| f.name().clone()).collect())
        .unwrap_or_default();
    let has = |c: &str| fresh_columns.iter().any(|f| f == c);
    let mut select: Vec<String> = old_columns
        .iter()
        .map(|c| match c.as_str() {
            "customer_id" if fresh.is_some() => "coalesce(f.customer_id, o.customer_id) AS customer_id".to_string(),
            c if has(c) => format!(r#"CASE WHEN f.customer_id IS NULL THEN o."{c}" ELSE f."{c}" END AS "{c}""#),
            c => format!(r#"o."{c}""#),
        })
        .collect();
    let flag = |c: &str| old_columns.iter().any(|o| o == c);
    let run_date = format!("CAST(to_timestamp_seconds({}) AS DATE)", run_day * 86_400);
    if !flag("live") {
        select.push(if fresh.is_some() {
            "coalesce(f.live, false) AS live".into()
        } else {
            "false AS live".into()
        });
    }
    if !flag("scored_as_of") {
        select.push(if fresh.is_some() {
            format!("coalesce(f.scored_as_of, {run_date}) AS scored_as_of")
        } else {
            format!("{run_date} AS scored_as_of")
        });
    }
    let from = if fresh.is_some() {
        "old o FULL OUTER JOIN fresh f ON o.customer_id = f.customer_id"
    } else {
        "old o"
    };
    let id = if fresh.is_some() {
        "coalesce(f.customer_id, o.customer_id)"
    } else {
        "o.customer_id"
    };
    format!(
        "SELECT {} FROM {from} WHERE {id} IN (SELECT customer_id FROM all_sources) ORDER BY {id}",
        select.join(", ")
    )
}
