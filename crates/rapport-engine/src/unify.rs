//! The unified `customers` table: one row per unified customer, with what ingest can
//! know — how many source ids they have, their order history in brief, and one profile
//! (personal columns still encrypted) chosen deterministically from their sources.
//! `rapport run` rebuilds it with the model columns.

use datafusion::arrow::record_batch::RecordBatch;

use rapport_store::workspace::Transaction;
use rapport_store::Workspace;

use crate::exec::Engine;
use crate::session::{from_micros, micros, register, register_rows, scratch_dir, Personal};
use crate::Result;

/// Per customer: first and last order, orders (distinct order ids with a purchase line),
/// revenue and returned lines. Two levels of grouping (order, then customer) rather than
/// `count(DISTINCT …)`, whose per-group hash sets cost gigabytes on millions of orders.
/// Revenue is summed in micro-units, so it is the same whatever the plan's parallelism.
fn orders_agg() -> String {
    format!(
        "
SELECT customer_id, min(first_at) AS first_order_at, max(last_at) AS last_order_at,
       sum(purchase) AS orders, {} AS revenue, sum(returned) AS returned_lines
FROM (SELECT customer_id, order_id,
             min(ordered_at) FILTER (WHERE status <> 'cancelled') AS first_at,
             max(ordered_at) FILTER (WHERE status <> 'cancelled') AS last_at,
             max(CASE WHEN status = 'completed' AND quantity > 0 THEN 1 ELSE 0 END) AS purchase,
             sum({}) AS revenue_micros,
             sum(CASE WHEN quantity < 0 OR status = 'returned' THEN 1 ELSE 0 END) AS returned
      FROM orders GROUP BY customer_id, order_id)
GROUP BY customer_id",
        from_micros("coalesce(sum(revenue_micros), 0)"),
        micros("CASE WHEN status <> 'cancelled' THEN amount END")
    )
}

fn profile_agg() -> String {
    let pick = |c: &str| format!("first_value({c} ORDER BY {c} IS NULL, source, source_customer_id) AS {c}");
    let cols = [
        "email",
        "phone",
        "name",
        "birth_date",
        "gender",
        "city",
        "region",
        "country",
        "signup_at",
    ];
    format!(
        "SELECT customer_id, {} FROM customer_profiles GROUP BY customer_id",
        cols.iter().map(|c| pick(c)).collect::<Vec<_>>().join(", ")
    )
}

/// Builds `customers` from the tables as they will be once `txn` commits. `orders_sums`,
/// when the ingest computed them (the workspace's first orders: see
/// `rapport_store::ingest::IngestOutcome::orders_by_customer`), stand in for reading the
/// orders back — the same columns as [`orders_agg`], checked equal by a test.
///
/// The query runs where `engine` says; on a cluster, the executors read the
/// transaction's files by path and the order sums from a Parquet file in a `.query-*`
/// folder of the workspace, removed when the query is done.
pub async fn customers(txn: &Transaction<'_>, order_sums: Option<&RecordBatch>, engine: &Engine) -> Result<Vec<RecordBatch>> {
    let mut scratch = None;
    let ctx = engine.context(false).await?;
    for t in ["customer_sources", "orders", "customer_profiles"] {
        register(&ctx, t, txn.files_after(t)?, &Personal::Stored).await?;
    }
    let has_orders = ctx.table_exist("orders")?;
    let has_profiles = ctx.table_exist("customer_profiles")?;
    let mut sql = String::from("WITH ids AS (SELECT customer_id, count(*) AS source_ids FROM customer_sources GROUP BY customer_id)");
    match order_sums {
        Some(b) if has_orders => {
            let root = txn.workspace_root().to_path_buf();
            register_rows(engine, &ctx, "order_sums", b.schema(), vec![b.clone()], || {
                scratch_dir(&root, &mut scratch)
            })
            .await?;
            sql.push_str(", agg AS (SELECT * FROM order_sums)");
        }
        _ if has_orders => sql.push_str(&format!(", agg AS ({})", orders_agg())),
        _ => {}
    }
    if has_profiles {
        sql.push_str(&format!(", prof AS ({})", profile_agg()));
    }
    sql.push_str(" SELECT ids.customer_id, ids.source_ids");
    if has_orders {
        sql.push_str(
            ", agg.first_order_at, agg.last_order_at, coalesce(agg.orders, 0) AS orders, coalesce(agg.revenue, 0.0) AS revenue, \
             CASE WHEN agg.orders > 0 THEN agg.revenue / agg.orders END AS avg_order_value, coalesce(agg.returned_lines, 0) AS returned_lines",
        );
    }
    if has_profiles {
        sql.push_str(
            ", prof.email, prof.phone, prof.name, prof.birth_date, prof.gender, prof.city, prof.region, prof.country, prof.signup_at",
        );
    }
    sql.push_str(" FROM ids");
    if has_orders {
        sql.push_str(" LEFT JOIN agg ON agg.customer_id = ids.customer_id");
    }
    if has_profiles {
        sql.push_str(" LEFT JOIN prof ON prof.customer_id = ids.customer_id");
    }
    sql.push_str(" ORDER BY ids.customer_id");
    Ok(ctx.sql(&sql).await?.collect().await?)
}

/// `customers` as the stored tables alone give it (orders read back and aggregated), in
/// a transaction that is dropped: the check on the sums an ingest computes itself.
pub fn customers_from_stored(ws: &Workspace) -> Result<Vec<RecordBatch>> {
    let txn = ws.begin("unify-check")?;
    crate::block_on(customers(&txn, None, &Engine::local()))
}
