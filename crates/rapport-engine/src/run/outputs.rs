//! The outputs stage of a run: every table it writes in one transaction, then
//! `reports/models.json` and the report, from what the other stages produced.

use datafusion::arrow::record_batch::RecordBatch;

use rapport_store::schema::Table;
use rapport_store::Workspace;

use super::actions::Decided;
use super::clv::Clv;
use super::features::Features;
use super::gaps;
use super::predict::{Behaviour, Predictions};
use super::segments::{self, Segmentation};
use super::{actions, forecasts, outcomes, ModelInputs};
use crate::columns::Columns;
use crate::config::ModelsConfig;
use crate::days::day_text;
use crate::recs::Recommendations;
use crate::results::{ClvFit, Fit, ForecastReport, ModelsReport};
use crate::uplift::UpliftRow;
use crate::{report, Result};

/// What every stage of a run produced.
pub struct Stages {
    pub inputs: ModelInputs,
    pub clv: Clv,
    pub segments: Segmentation,
    pub predictions: Predictions,
    pub forecasts: (Vec<forecasts::Row>, ForecastReport),
    pub gaps: gaps::Outputs,
    pub recs: Option<Recommendations>,
    pub actions: Decided,
    pub uplift: Vec<UpliftRow>,
}

/// Writes the tables (replacing the last run's), models.json and the report.
pub fn write(ws: &Workspace, cfg: &ModelsConfig, stages: Stages) -> Result<ModelsReport> {
    let mut txn = ws.begin("run")?;
    for (table, batch) in tables(&stages, cfg)? {
        txn.replace(table);
        txn.write_part(table, batch.schema(), &[batch])?;
    }
    txn.commit(&format!("{{\"as_of\": \"{}\"}}", day_text(stages.inputs.as_of_day)))?;
    // What scoring between runs needs, before models.json (which names the run it is of).
    crate::live::ScoringState::of_run(ws, &stages.inputs, stages.predictions.models.clone())?.write(ws)?;
    let models = models_report(stages, cfg);
    report::write_atomic(&ws.reports_dir().join("models.json"), models.to_json())?;
    report::write_report(ws, Some(&models))?;
    Ok(models)
}

/// Every table of the run, in the order they are written.
fn tables(st: &Stages, cfg: &ModelsConfig) -> Result<Vec<(&'static str, RecordBatch)>> {
    let (f, seg) = (&st.inputs.features, &st.segments);
    let mut out = vec![
        (Table::Customers.name(), customers_batch(st, cfg)?),
        (
            Table::Segments.name(),
            segments::segments_batch(
                f,
                &st.inputs.buyers,
                &seg.rfm,
                seg.clusters.as_ref(),
                &seg.channels,
                st.inputs.as_of_day,
            )?,
        ),
        (Table::Actions.name(), actions::batch(&f.customer_id, &st.actions)?),
        (Table::Uplift.name(), crate::uplift::batch(&st.uplift)?),
    ];
    if let Some(r) = &st.recs {
        out.push((Table::Recommendations.name(), r.batch.clone()));
        out.push((Table::ItemFactors.name(), r.item_factors.clone()));
    }
    out.extend([
        (Table::Gaps.name(), gaps::gaps_batch(&f.customer_id, &st.gaps.gaps)?),
        (Table::GapSummary.name(), gaps::summary_batch(&st.gaps.gaps, &seg.members)?),
        (Table::KnowledgeGaps.name(), gaps::knowledge_batch(&st.gaps.knowledge)?),
        (
            Table::Behaviour.name(),
            behaviour_batch(&f.customer_id, st.predictions.behaviour.as_ref(), &st.gaps.reported_purchase)?,
        ),
        (Table::Forecasts.name(), forecasts::batch(&st.forecasts.0)?),
        (Table::OutcomeRates.name(), outcomes::batch(&st.predictions.outcome_rates)?),
    ]);
    Ok(out)
}

/// models.json: every stage's report.
fn models_report(st: Stages, cfg: &ModelsConfig) -> ModelsReport {
    let Stages {
        inputs,
        clv,
        segments,
        predictions: p,
        forecasts: (_, forecasts),
        gaps,
        recs,
        actions,
        uplift,
    } = st;
    ModelsReport {
        as_of: day_text(inputs.as_of_day),
        time_unit: cfg.time_unit.name().to_string(),
        scoring: Some(crate::results::ScoringSettings {
            horizons_days: cfg.horizons_days.clone(),
            clv_horizon_days: cfg.clv_horizon_days,
            margin: cfg.margin,
            discount_rate: cfg.discount_rate,
        }),
        customers: inputs.features.len(),
        buyers: inputs.buyers.len(),
        bgnbd: clv.bgnbd.map(ClvFit::from),
        pareto_nbd: clv.pareto_nbd,
        gamma_gamma: clv.gamma_gamma,
        kmeans: segments.clusters.map(|c| c.report),
        churn: p.churn_report,
        loyalty: p.loyalty_report,
        behaviour: p.behaviour_report,
        outcome_rates: p.outcome_rates,
        forecasts,
        gaps: gaps.report,
        actions: actions.report,
        uplift: crate::uplift::report(&uplift),
        recommendations: recs.map_or_else(|| Fit::skipped("needs orders with product_id"), |r| Fit::Fitted(r.report)),
    }
}

/// The order summary columns of the `customers` table, as seen at `day`: id, first and
/// last order, orders, revenue, mean order value, recency, tenure, returned lines (a run
/// writes them for every customer, live rescoring for the customers it rescores).
pub fn order_columns(c: &mut Columns, f: &Features, day: i64) {
    let n = f.len();
    let all = |v: &[f64]| v.iter().map(|x| Some(*x)).collect::<Vec<_>>();
    c.text("customer_id", false, f.customer_id.iter().map(|s| Some(s.as_str())));
    c.timestamps("first_order_at", true, f.first_order_at.iter().copied());
    c.timestamps("last_order_at", true, f.last_order_at.iter().copied());
    c.floats(Table::Orders.name(), false, all(&f.orders));
    c.floats("revenue", false, all(&f.revenue));
    c.floats(
        "avg_order_value",
        true,
        (0..n).map(|i| (f.orders[i] > 0.0).then(|| f.revenue[i] / f.orders[i])),
    );
    c.floats("recency_days", true, f.last_day.iter().map(|d| d.map(|d| (day - d) as f64)));
    c.floats("tenure_days", true, f.first_day.iter().map(|d| d.map(|d| (day - d) as f64)));
    c.floats("returned_lines", false, all(&f.returned_lines));
}

/// The `customers` table: the features, segments, CLV, churn and loyalty scores and the
/// next action of every customer.
fn customers_batch(st: &Stages, cfg: &ModelsConfig) -> Result<RecordBatch> {
    let (f, day) = (&st.inputs.features, st.inputs.as_of_day);
    let n = f.len();
    let rfm = &st.segments.rfm;
    let mut c = Columns::default();
    order_columns(&mut c, f, day);
    c.small("rfm_r", true, rfm.iter().map(|r| r.map(|r| r.r)));
    c.small("rfm_f", true, rfm.iter().map(|r| r.map(|r| r.f)));
    c.small("rfm_m", true, rfm.iter().map(|r| r.map(|r| r.m)));
    c.text("rfm_segment", true, rfm.iter().map(|r| r.map(|r| r.segment)));
    let cluster = |i: usize| st.segments.clusters.as_ref().and_then(|c| c.labels[i]).map(|c| c as i64);
    c.ints("cluster", true, (0..n).map(cluster));
    c.floats("p_alive", true, st.clv.p_alive.iter().copied());
    for (j, days) in cfg.horizons_days.iter().enumerate() {
        c.floats(&format!("expected_orders_{days}d"), true, st.clv.expected[j].iter().copied());
    }
    c.floats("expected_avg_spend", true, st.clv.spend.iter().copied());
    c.floats("clv", true, st.clv.clv.iter().copied());
    c.floats("churn_probability", true, st.predictions.churn.iter().copied());
    c.floats("loyalty_score", true, st.predictions.loyalty.iter().copied());
    // The first action of the treatment group (control customers get none).
    let next = st.actions.next_actions(n);
    c.text("next_action", true, next.iter().map(|a| a.as_deref()));
    c.finish()
}

/// The `behaviour` table: one row per customer and class; `reported_p` (and Δ =
/// reported / predicted) where a survey answer maps to the class.
fn behaviour_batch(ids: &[String], b: Option<&Behaviour>, reported_purchase: &[Option<f64>]) -> Result<RecordBatch> {
    let (mut id, mut class, mut p, mut reported) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    if let Some(b) = b {
        for (i, customer) in ids.iter().enumerate() {
            for (k, c) in b.classes.iter().enumerate() {
                id.push(Some(customer.as_str()));
                class.push(Some(*c));
                p.push(Some(b.p[i][k]));
                // The stated purchase frequency implies a chance of buying in the window.
                reported.push(if *c == "purchase" { reported_purchase[i] } else { None });
            }
        }
    }
    let delta: Vec<Option<f64>> = reported
        .iter()
        .zip(&p)
        .map(|(r, p)| r.map(|r| r / p.unwrap_or(0.0).max(1e-9)))
        .collect();
    let mut c = Columns::default();
    c.text("customer_id", false, id);
    c.text(Table::Behaviour.name(), false, class);
    c.floats("predicted_p", false, p);
    c.floats("reported_p", true, reported);
    c.floats("delta", true, delta);
    c.finish()
}
