//! Live rescoring between runs. When records arrive through the server's intake, the
//! customers whose orders changed (and new customers) are scored again with what the
//! last `rapport run` fitted — BG/NBD and Gamma-Gamma parameters, horizons, margin and
//! discount, no refit — by the same code the run scores every customer with
//! ([`crate::run::history`], [`crate::run::clv::value_of`]). Their orders, revenue,
//! first and last order, recency, tenure, P(alive), expected orders, expected spend and
//! CLV are brought up to date as of the later of the run's date and their last order;
//! what needs models a run does not store (RFM scores and segment, cluster, churn and
//! loyalty scores, next action) stays the run's. Every other customer keeps the run's
//! row. Two columns say which is which: `live` (true when rescored since the run) and
//! `scored_as_of` (the date the row's scores are as of).

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

use crate::columns::Columns;
use crate::config::{ModelsConfig, TimeUnit};
use crate::days::{parse_as_of, MICROS_PER_DAY};
use crate::results::ModelsReport;
use crate::run::{clv, features, history};
use crate::session::{int_column, new_context, register, Personal};
use crate::Result;

/// What the last run left for scoring one customer.
#[derive(Debug, Clone)]
pub struct Scoring {
    pub bg: BgNbd,
    pub gg: Option<GammaGamma>,
    pub cfg: ModelsConfig,
    /// The run's as-of day (days since 1970-01-01).
    pub as_of_day: i64,
}

impl Scoring {
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
        })
    }

    /// The rescored columns of `features`' customers as of `as_of_day`.
    pub fn score(&self, f: &features::Features, as_of_day: i64) -> Result<RecordBatch> {
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
        c.bools("live", false, (0..n).map(|_| Some(true)));
        let day = i32::try_from(as_of_day).unwrap_or(i32::MAX);
        c.dates("scored_as_of", false, (0..n).map(|_| Some(day)));
        c.finish()
    }
}

/// The `customers` table after transaction `txn`: the last run's rows, with the
/// customers whose orders the transaction added (every customer when `everyone`, as
/// after identities merged) and the customers new to it scored again. None when the
/// stored table is not a run's (no run yet, or an ingest since): then the caller writes
/// the ingest's unified table.
pub async fn rescored(ws: &Workspace, txn: &Transaction<'_>, scoring: &Scoring, everyone: bool) -> Result<Option<Vec<RecordBatch>>> {
    let ctx = new_context();
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
    let before: BTreeSet<PathBuf> = ws.table_files(Table::Orders.name())?.into_iter().collect();
    let added: Vec<PathBuf> = txn
        .files_after(Table::Orders.name())?
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let touched = touched_customers(&ctx, added, everyone).await?;
    let fresh = if touched.is_empty() {
        None
    } else {
        Some(score_touched(&ctx, scoring, touched).await?)
    };
    let sql = merge_sql(&old_columns, fresh.as_ref(), scoring.as_of_day);
    if let Some(f) = fresh {
        ctx.register_table("fresh", Arc::new(MemTable::try_new(f.schema(), vec![vec![f]])?))?;
    }
    Ok(Some(ctx.sql(&sql).await?.collect().await?))
}

/// The customers with orders in `added` and those not in the run's table (new ones),
/// or every customer when `everyone`.
async fn touched_customers(ctx: &SessionContext, added: Vec<PathBuf>, everyone: bool) -> Result<Vec<RecordBatch>> {
    let new_customers = "SELECT DISTINCT s.customer_id FROM all_sources s LEFT JOIN old o ON o.customer_id = s.customer_id
                         WHERE o.customer_id IS NULL";
    let sql = if everyone {
        "SELECT DISTINCT customer_id FROM all_sources".to_string()
    } else if added.is_empty() {
        new_customers.to_string()
    } else {
        register(ctx, "added_orders", added, &Personal::Stored).await?;
        format!("SELECT DISTINCT customer_id FROM added_orders UNION {new_customers}")
    };
    let batches = ctx.sql(&sql).await?.collect().await?;
    Ok(batches.into_iter().filter(|b| b.num_rows() > 0).collect())
}

/// The rescored rows of the `touched` customers, as of the later of the run's date and
/// their last order.
async fn score_touched(ctx: &SessionContext, scoring: &Scoring, touched: Vec<RecordBatch>) -> Result<RecordBatch> {
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
    let only_touched = if ids.len() <= 5_000 {
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
    // The feature queries read `orders` and `customer_sources`: only the touched ones.
    for (view, table) in [("orders", "all_orders"), ("customer_sources", "all_sources")] {
        ctx.sql(&format!("CREATE VIEW {view} AS SELECT * FROM {table} WHERE {only_touched}"))
            .await?
            .collect()
            .await?;
    }
    let last = ctx
        .sql("SELECT CAST(max(ordered_at) AS BIGINT) FROM orders")
        .await?
        .collect()
        .await?;
    let last_day = last
        .first()
        .filter(|b| b.num_rows() > 0)
        .map(|b| int_column(b, 0))
        .transpose()?
        .and_then(|c| (!c.is_null(0)).then(|| c.value(0).div_euclid(MICROS_PER_DAY)));
    let as_of_day = last_day.map_or(scoring.as_of_day, |d| d.max(scoring.as_of_day));
    let f = features::compute(ctx, (as_of_day + 1) * MICROS_PER_DAY).await?;
    scoring.score(&f, as_of_day)
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
