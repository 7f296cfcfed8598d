//! Per-customer features as of a date, computed by DataFusion over the stored tables,
//! and converted once into plain vectors for the models.

use datafusion::arrow::array::Array;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;

use crate::session::{float_column, from_micros, int_column, micros, text_column};
use crate::Result;

use crate::days::MICROS_PER_DAY;

/// One row per unified customer (sorted by id). Days are counted from 1970-01-01 (UTC);
/// customers without a purchase before the cut-off have `None` where it matters.
#[derive(Debug, Default)]
pub struct Features {
    pub customer_id: Vec<String>,
    pub first_order_at: Vec<Option<i64>>,
    pub last_order_at: Vec<Option<i64>>,
    pub orders: Vec<f64>,
    pub revenue: Vec<f64>,
    pub first_day: Vec<Option<i64>>,
    pub last_day: Vec<Option<i64>>,
    /// Distinct purchase days.
    pub purchase_days: Vec<f64>,
    /// Mean spend per repeat purchase day (after the first).
    pub repeat_spend: Vec<Option<f64>>,
    pub returned_lines: Vec<f64>,
}

impl Features {
    pub fn len(&self) -> usize {
        self.customer_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.customer_id.is_empty()
    }
}

fn sql(end_micros: i64) -> String {
    format!(
        "WITH o AS (SELECT customer_id, order_id, ordered_at, amount, quantity, status FROM orders
                    WHERE ordered_at < to_timestamp_micros({end_micros}) AND status <> 'cancelled'),
              p AS (SELECT * FROM o WHERE status = 'completed' AND quantity > 0),
              d AS (SELECT customer_id, {day} AS day, sum({amount}) AS spend FROM p GROUP BY 1, 2),
              f AS (SELECT customer_id, min(day) AS first_day, max(day) AS last_day, count(*) AS days FROM d GROUP BY 1),
              z AS (SELECT d.customer_id, {zbar} AS zbar FROM d JOIN f ON d.customer_id = f.customer_id
                    WHERE d.day > f.first_day GROUP BY 1),
              po AS (SELECT customer_id, order_id, min(ordered_at) AS at FROM p GROUP BY 1, 2),
              a AS (SELECT customer_id, min(at) AS first_order_at, max(at) AS last_order_at, count(*) AS orders
                    FROM po GROUP BY 1),
              v AS (SELECT customer_id, {revenue} AS revenue,
                           sum(CASE WHEN quantity < 0 OR status = 'returned' THEN 1 ELSE 0 END) AS returned_lines
                    FROM o GROUP BY 1),
              c AS (SELECT DISTINCT customer_id FROM customer_sources)
         SELECT c.customer_id,
                CAST(a.first_order_at AS BIGINT) AS first_order_at, CAST(a.last_order_at AS BIGINT) AS last_order_at,
                CAST(coalesce(a.orders, 0) AS DOUBLE) AS orders, CAST(coalesce(v.revenue, 0) AS DOUBLE) AS revenue,
                CAST(f.first_day AS BIGINT) AS first_day, CAST(f.last_day AS BIGINT) AS last_day,
                CAST(coalesce(f.days, 0) AS DOUBLE) AS purchase_days, z.zbar,
                CAST(coalesce(v.returned_lines, 0) AS DOUBLE) AS returned_lines
         FROM c LEFT JOIN a ON a.customer_id = c.customer_id LEFT JOIN v ON v.customer_id = c.customer_id
                LEFT JOIN f ON f.customer_id = c.customer_id LEFT JOIN z ON z.customer_id = c.customer_id
         ORDER BY c.customer_id",
        // Money in micro-units, so sums do not depend on the plan's parallelism.
        amount = micros("amount"),
        day = crate::days::day_start_micros("ordered_at"),
        zbar = from_micros("sum(d.spend)") + " / count(*)",
        revenue = from_micros(&format!("sum({})", micros("amount"))),
    )
}

fn ints(b: &RecordBatch, i: usize, scale: i64) -> Result<Vec<Option<i64>>> {
    let a = int_column(b, i)?;
    Ok((0..a.len())
        .map(|j| (!a.is_null(j)).then(|| a.value(j).div_euclid(scale)))
        .collect())
}

fn floats(b: &RecordBatch, i: usize) -> Result<Vec<Option<f64>>> {
    let a = float_column(b, i)?;
    Ok((0..a.len()).map(|j| (!a.is_null(j)).then(|| a.value(j))).collect())
}

/// Features of every customer from orders strictly before `end_micros`.
pub async fn compute(ctx: &SessionContext, end_micros: i64) -> Result<Features> {
    let batches = ctx.sql(&sql(end_micros)).await?.collect().await?;
    let mut f = Features::default();
    for b in &batches {
        let ids = text_column(b, 0)?;
        f.customer_id.extend(ids.iter().map(|s| s.unwrap_or_default().to_string()));
        f.first_order_at.extend(ints(b, 1, 1)?);
        f.last_order_at.extend(ints(b, 2, 1)?);
        f.orders.extend(floats(b, 3)?.into_iter().map(|v| v.unwrap_or(0.0)));
        f.revenue.extend(floats(b, 4)?.into_iter().map(|v| v.unwrap_or(0.0)));
        f.first_day.extend(ints(b, 5, MICROS_PER_DAY)?);
        f.last_day.extend(ints(b, 6, MICROS_PER_DAY)?);
        f.purchase_days.extend(floats(b, 7)?.into_iter().map(|v| v.unwrap_or(0.0)));
        f.repeat_spend.extend(floats(b, 8)?);
        f.returned_lines.extend(floats(b, 9)?.into_iter().map(|v| v.unwrap_or(0.0)));
    }
    Ok(f)
}
