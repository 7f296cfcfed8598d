//! Behaviour beyond the order summary, as of a date: event counts by type (all time and
//! the last 30 days), order lines by channel and by product category, feature use by
//! subject, service signals (low review ratings, returned lines), the latest
//! numeric survey answers (satisfaction, NPS, will_repurchase) and the spread of the
//! time between purchase days. Computed by one DataFusion query in long format
//! (customer, name, value) over whichever of the tables exist, then pivoted into dense
//! columns aligned with [`Features`](super::features::Features).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use datafusion::arrow::array::Array;
use datafusion::prelude::SessionContext;

use crate::Result;

use crate::days::MICROS_PER_DAY;
use crate::session::{float_column, text_column};

/// Named per-customer columns (0 where a customer has nothing).
#[derive(Debug, Default, Clone)]
pub struct Activity {
    pub names: Vec<String>,
    pub values: Vec<Vec<f64>>,
}

impl Activity {
    pub fn column(&self, name: &str) -> Option<&[f64]> {
        self.names.iter().position(|n| n == name).map(|k| self.values[k].as_slice())
    }

    /// Names starting with `prefix`, without it.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a [f64])> + 'a {
        self.names
            .iter()
            .zip(&self.values)
            .filter_map(move |(n, v)| n.strip_prefix(prefix).map(|s| (s, v.as_slice())))
    }
}

/// How many columns of each family to keep (the most common ones).
const LIMITS: [(&str, usize); 5] = [
    ("events:", 30),
    ("events_30d:", 30),
    ("channel:", 10),
    ("category:", 30),
    ("survey:", 10),
];

fn sql(end: i64, tables: &BTreeSet<String>, review_max: Option<f64>) -> Option<String> {
    let mut parts = Vec::new();
    if tables.contains("events") {
        parts.extend(event_parts(end, review_max));
    }
    if tables.contains("orders") {
        parts.extend(order_parts(end));
    }
    if tables.contains("orders") && tables.contains("products") {
        parts.push(format!(
            "SELECT o.customer_id, 'category:' || p.category AS name, CAST(count(*) AS DOUBLE) AS value
             FROM orders o JOIN products p ON o.product_id = p.product_id
             WHERE o.ordered_at < to_timestamp_micros({end}) AND o.status = 'completed' AND o.quantity > 0 AND p.category IS NOT NULL
             GROUP BY 1, 2"
        ));
    }
    if tables.contains("surveys") {
        parts.push(format!(
            "SELECT customer_id, 'survey:' || question AS name,
                    first_value(CASE WHEN lower(trim(answer)) IN ('yes', 'true', 'y') THEN 1.0
                                     WHEN lower(trim(answer)) IN ('no', 'false', 'n') THEN 0.0
                                     ELSE try_cast(answer AS DOUBLE) END ORDER BY answered_at DESC) AS value
             FROM surveys WHERE answered_at < to_timestamp_micros({end})
               AND question IN ('satisfaction', 'nps', 'will_repurchase')
             GROUP BY 1, 2"
        ));
    }
    (!parts.is_empty()).then(|| parts.join(" UNION ALL "))
}

/// Per customer, from the events before `end`: counts by type and feature used, when
/// first and last seen, review ratings, and counts by type in the last 30 days.
fn event_parts(end: i64, review_max: Option<f64>) -> Vec<String> {
    let recent = end - 30 * MICROS_PER_DAY;
    let mut parts = Vec::new();
    parts.push(format!(
        "SELECT customer_id, 'events:' || event_type AS name, CAST(count(*) AS DOUBLE) AS value FROM events
         WHERE occurred_at < to_timestamp_micros({end}) GROUP BY 1, 2"
    ));
    parts.push(format!(
        "SELECT customer_id, 'feature:' || subject AS name, CAST(count(*) AS DOUBLE) AS value FROM events
         WHERE occurred_at < to_timestamp_micros({end}) AND event_type = 'feature_use' AND subject IS NOT NULL GROUP BY 1, 2"
    ));
    // When the customer was last and first seen doing anything (for the "has left"
    // evidence of the satisfaction and frequency gaps); days before the end, not
    // model features.
    parts.push(format!(
        "SELECT customer_id, 'activity:events' AS name, CAST(count(*) AS DOUBLE) AS value FROM events
         WHERE occurred_at < to_timestamp_micros({end}) GROUP BY 1
         UNION ALL
         SELECT customer_id, 'activity:first_event_ago_days' AS name,
                CAST({end} - CAST(min(occurred_at) AS BIGINT) AS DOUBLE) / {MICROS_PER_DAY}.0 AS value FROM events
         WHERE occurred_at < to_timestamp_micros({end}) GROUP BY 1
         UNION ALL
         SELECT customer_id, 'activity:last_event_ago_days' AS name,
                CAST({end} - CAST(max(occurred_at) AS BIGINT) AS DOUBLE) / {MICROS_PER_DAY}.0 AS value FROM events
         WHERE occurred_at < to_timestamp_micros({end}) GROUP BY 1"
    ));
    // Review ratings, and how many are low (at most 40 % of the best rating given
    // anywhere: 2 of 5, 4 of 10), for the satisfaction gap; the count of rated reviews
    // is bookkeeping (`events:review` already counts reviews for the models). The best
    // rating is the whole table's unless given (live scoring of a few customers).
    let best = review_max.map_or_else(
        || "(SELECT max(value) FROM events WHERE event_type = 'review')".to_string(),
        |v| format!("CAST({v:?} AS DOUBLE)"),
    );
    parts.push(format!(
        "SELECT customer_id, 'activity:reviews_rated' AS name, CAST(count(*) AS DOUBLE) AS value FROM events
         WHERE occurred_at < to_timestamp_micros({end}) AND event_type = 'review' AND value IS NOT NULL GROUP BY 1
         UNION ALL
         SELECT customer_id, 'service:reviews_low' AS name, CAST(count(*) AS DOUBLE) AS value FROM events
         WHERE occurred_at < to_timestamp_micros({end}) AND event_type = 'review'
           AND value <= 0.4 * {best} GROUP BY 1"
    ));
    parts.push(format!(
        "SELECT customer_id, 'events_30d:' || event_type AS name, CAST(count(*) AS DOUBLE) AS value FROM events
         WHERE occurred_at < to_timestamp_micros({end}) AND occurred_at >= to_timestamp_micros({recent}) GROUP BY 1, 2"
    ));
    parts
}

/// Per customer, from the order lines before `end`: lines by channel, lines and
/// returned lines, and the spread of the days between purchases.
fn order_parts(end: i64) -> Vec<String> {
    let mut parts = Vec::new();
    parts.push(format!(
        "SELECT customer_id, 'channel:' || channel AS name, CAST(count(*) AS DOUBLE) AS value FROM orders
         WHERE ordered_at < to_timestamp_micros({end}) AND channel IS NOT NULL AND status <> 'cancelled' GROUP BY 1, 2"
    ));
    // Order lines returned, and all lines, for the satisfaction gap (bookkeeping, not
    // model features: with the category counts they add up to the channel counts).
    parts.push(format!(
        "SELECT customer_id, 'activity:lines' AS name, CAST(count(*) AS DOUBLE) AS value FROM orders
         WHERE ordered_at < to_timestamp_micros({end}) AND status <> 'cancelled' GROUP BY 1
         UNION ALL
         SELECT customer_id, 'activity:returned_lines' AS name, CAST(count(*) AS DOUBLE) AS value FROM orders
         WHERE ordered_at < to_timestamp_micros({end}) AND (status = 'returned' OR quantity < 0) GROUP BY 1"
    ));
    parts.push(format!(
        "SELECT customer_id, 'ipt_sd_days' AS name, stddev(gap) AS value FROM (
           SELECT customer_id, CAST(CAST(day AS BIGINT) - CAST(lag(day) OVER (PARTITION BY customer_id ORDER BY day) AS BIGINT) AS DOUBLE)
                  / {MICROS_PER_DAY}.0 AS gap
           FROM (SELECT DISTINCT customer_id, {day} AS day FROM orders
                 WHERE ordered_at < to_timestamp_micros({end}) AND status = 'completed' AND quantity > 0) d) g
         WHERE gap IS NOT NULL GROUP BY 1 HAVING count(*) >= 2",
        day = crate::days::day_start_micros("ordered_at")
    ));
    parts
}

/// The query of the best review rating anywhere, which marks low ratings.
pub const REVIEW_MAX_SQL: &str = "SELECT CAST(max(value) AS DOUBLE) FROM events WHERE event_type = 'review'";

/// The activity of the customers `ids` (in this order) before `end_micros`.
pub async fn compute(ctx: &SessionContext, end_micros: i64, tables: &BTreeSet<String>, ids: &[String]) -> Result<Activity> {
    compute_with(ctx, end_micros, tables, ids, None).await
}

/// The columns a model was fitted on, and the best review rating of its data: what
/// scoring a few customers again needs to see their activity as the run saw everyone's.
pub struct Fixed<'a> {
    pub names: &'a BTreeSet<String>,
    pub review_max: Option<f64>,
}

/// [`compute`], with the columns and review scale `fixed` when given (else the most
/// common columns of each family and the tables' own best rating).
pub async fn compute_with(
    ctx: &SessionContext,
    end_micros: i64,
    tables: &BTreeSet<String>,
    ids: &[String],
    fixed: Option<&Fixed<'_>>,
) -> Result<Activity> {
    let Some(q) = sql(end_micros, tables, fixed.and_then(|f| f.review_max)) else {
        return Ok(Activity::default());
    };
    let batches = ctx.sql(&q).await?.collect().await?;
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let mut cols: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for b in &batches {
        let (c, n, v) = (text_column(b, 0)?, text_column(b, 1)?, float_column(b, 2)?);
        for r in 0..b.num_rows() {
            if c.is_null(r) || n.is_null(r) || v.is_null(r) || !v.value(r).is_finite() {
                continue;
            }
            if let Some(&i) = index.get(c.value(r)) {
                cols.entry(n.value(r).to_string()).or_insert_with(|| vec![0.0; ids.len()])[i] = v.value(r);
            }
        }
    }
    if let Some(f) = fixed {
        let mut a = Activity::default();
        for name in f.names {
            a.values.push(cols.remove(name).unwrap_or_else(|| vec![0.0; ids.len()]));
            a.names.push(name.clone());
        }
        return Ok(a);
    }
    // Keep the most common names of each family; ties by name, so the choice is stable.
    let mut keep: BTreeSet<String> = cols
        .keys()
        .filter(|k| !LIMITS.iter().any(|(p, _)| k.starts_with(p)))
        .cloned()
        .collect();
    for (prefix, limit) in LIMITS {
        let mut fam: Vec<(&String, usize)> = cols
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k, v.iter().filter(|x| **x != 0.0).count()))
            .collect();
        fam.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        keep.extend(fam.into_iter().take(limit).map(|(k, _)| k.clone()));
    }
    let mut a = Activity::default();
    for (k, v) in cols {
        if keep.contains(&k) {
            a.names.push(k);
            a.values.push(v);
        }
    }
    Ok(a)
}
