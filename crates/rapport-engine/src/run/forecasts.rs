//! Weekly orders and revenue, overall and per RFM segment, with a 12-week forecast by
//! damped-trend exponential smoothing (`rapport_model::forecast`; weekly seasonality of
//! 52 once two years are observed) and 95 % prediction intervals → the `forecasts` table.
//! Weeks end at the as-of date, so the last week is complete. A segment series follows
//! today's members of the segment back in time.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;

use rapport_model::forecast::Ets;

use super::ModelInputs;
use crate::columns::Columns;
use crate::results::{ForecastReport, SeriesFit};
use crate::session::{int_column, text_column, Personal, Session};
use crate::Result;

use crate::days::MICROS_PER_DAY;
pub const HORIZON_WEEKS: usize = 12;

/// One row of the `forecasts` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub series: String,
    pub metric: &'static str,
    /// Days since 1970-01-01.
    pub period_start: i32,
    pub actual: Option<f64>,
    pub forecast: Option<f64>,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
}

/// Weekly series `(segment, metric) → values oldest first`, ending with the week that
/// ends at `as_of_day`.
async fn weekly(
    session: &Session<'_>,
    ctx: &SessionContext,
    as_of_day: i64,
    ids: &[String],
    segment: &[Option<&str>],
) -> Result<(usize, BTreeMap<(String, &'static str), Vec<f64>>)> {
    let seg_schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, true),
    ]));
    let seg = RecordBatch::try_new(
        seg_schema.clone(),
        vec![
            Arc::new(StringArray::from(ids.to_vec())),
            Arc::new(StringArray::from(segment.to_vec())),
        ],
    )
    .map_err(datafusion::error::DataFusionError::from)?;
    session.register_batches(ctx, "forecast_segments", seg_schema, vec![seg]).await?;
    let end = (as_of_day + 1) * MICROS_PER_DAY;
    let week = 7 * MICROS_PER_DAY;
    let q = format!(
        "WITH po AS (SELECT customer_id, order_id, min(ordered_at) AS at, sum({amount}) AS amount FROM orders
                     WHERE ordered_at < to_timestamp_micros({end}) AND status = 'completed' AND quantity > 0 GROUP BY 1, 2),
              w AS (SELECT customer_id, CAST(({end} - CAST(at AS BIGINT)) / {week} AS BIGINT) AS wk, amount FROM po)
         SELECT coalesce(s.segment, '') AS segment, w.wk, CAST(count(*) AS DOUBLE) AS orders, {revenue} AS revenue
         FROM w LEFT JOIN forecast_segments s ON w.customer_id = s.customer_id GROUP BY 1, 2",
        // Money in micro-units, so sums do not depend on the plan's parallelism.
        amount = crate::session::micros("amount"),
        revenue = crate::session::from_micros("sum(w.amount)"),
    );
    let batches = ctx.sql(&q).await?.collect().await?;
    let mut rows = Vec::new();
    for b in &batches {
        let (seg, wk) = (text_column(b, 0)?, int_column(b, 1)?);
        let (o, r) = (b.column(2).as_primitive::<Float64Type>(), b.column(3).as_primitive::<Float64Type>());
        for i in 0..b.num_rows() {
            rows.push((
                seg.value(i).to_string(),
                wk.value(i) as usize,
                o.value(i),
                if r.is_null(i) { 0.0 } else { r.value(i) },
            ));
        }
    }
    // The "all" series adds the segments' figures: in a fixed order, as a parallel plan
    // returns groups in any order and floating-point sums depend on it.
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let weeks = rows.iter().map(|r| r.1 + 1).max().unwrap_or(0);
    let mut series: BTreeMap<(String, &'static str), Vec<f64>> = BTreeMap::new();
    for (seg, wk, o, r) in rows {
        let t = weeks - 1 - wk;
        for name in ["all".to_string(), seg].into_iter().filter(|s| !s.is_empty()) {
            series.entry((name.clone(), "orders")).or_insert_with(|| vec![0.0; weeks])[t] += o;
            series.entry((name, "revenue")).or_insert_with(|| vec![0.0; weeks])[t] += r;
        }
    }
    Ok((weeks, series))
}

/// The forecasts stage: weekly orders and revenue, overall and per RFM segment
/// (`segment`, per customer).
pub fn forecast(session: &Session<'_>, inputs: &ModelInputs, segment: &[Option<&str>]) -> Result<(Vec<Row>, ForecastReport)> {
    crate::block_on(async {
        let ctx = session.context(&Personal::Stored).await?;
        compute(session, &ctx, inputs.as_of_day, &inputs.features.customer_id, segment).await
    })
}

/// The forecasts of every series with enough history, and a summary for models.json.
pub async fn compute(
    session: &Session<'_>,
    ctx: &SessionContext,
    as_of_day: i64,
    ids: &[String],
    segment: &[Option<&str>],
) -> Result<(Vec<Row>, ForecastReport)> {
    let (weeks, series) = weekly(session, ctx, as_of_day, ids, segment).await?;
    let first_start = as_of_day + 1 - 7 * weeks as i64;
    let mut out = Vec::new();
    let mut summary = Vec::new();
    for ((name, metric), y) in &series {
        // A series needs some history and some activity to be worth a model.
        if y.len() < 8 || y.iter().filter(|v| **v > 0.0).count() < 4 {
            continue;
        }
        let Some(m) = Ets::fit(y, 52, HORIZON_WEEKS, 1.96) else { continue };
        let half = 1.96 * m.sigma;
        for (t, (&a, &f)) in y.iter().zip(&m.fitted).enumerate() {
            out.push(Row {
                series: name.clone(),
                metric,
                period_start: (first_start + 7 * t as i64) as i32,
                actual: Some(a),
                forecast: Some(f),
                lower: Some(f - half),
                upper: Some(f + half),
            });
        }
        for (h, &(f, lo, hi)) in m.ahead.iter().enumerate() {
            out.push(Row {
                series: name.clone(),
                metric,
                period_start: (first_start + 7 * (y.len() + h) as i64) as i32,
                actual: None,
                forecast: Some(f.max(0.0)),
                lower: Some(lo.max(0.0)),
                upper: Some(hi.max(0.0)),
            });
        }
        summary.push(SeriesFit {
            series: name.clone(),
            metric: metric.to_string(),
            weeks: y.len(),
            season: m.season,
            alpha: m.params.alpha,
            beta: m.params.beta,
            gamma: m.params.gamma,
            phi: m.params.phi,
            sigma: m.sigma,
            next_12_weeks: m.ahead.iter().map(|a| a.0.max(0.0)).sum::<f64>(),
        });
    }
    Ok((
        out,
        ForecastReport {
            horizon_weeks: HORIZON_WEEKS,
            weeks_observed: weeks,
            series: summary,
        },
    ))
}

pub fn batch(rows: &[Row]) -> Result<RecordBatch> {
    let mut c = Columns::default();
    c.text("series", false, rows.iter().map(|r| Some(r.series.as_str())));
    c.text("metric", false, rows.iter().map(|r| Some(r.metric)));
    c.dates("period_start", false, rows.iter().map(|r| Some(r.period_start)));
    c.floats("actual", true, rows.iter().map(|r| r.actual));
    c.floats("forecast", true, rows.iter().map(|r| r.forecast));
    c.floats("lower", true, rows.iter().map(|r| r.lower));
    c.floats("upper", true, rows.iter().map(|r| r.upper));
    c.finish()
}
