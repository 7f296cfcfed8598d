//! `rapport run`: features as of a date, RFM segments, clusters and the CLV suite
//! (BG/NBD, Pareto/NBD, Gamma-Gamma), written as the `customers` and `segments` tables
//! and `reports/models.json`.

pub mod actions;
pub mod activity;
pub mod config;
pub mod features;
pub mod forecasts;
pub mod gaps;
pub mod outcomes;
pub mod predict;
pub mod segments;

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray, UInt8Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit as ArrowUnit};
use datafusion::arrow::record_batch::RecordBatch;

use rapport_model::bgnbd::BgNbd;
use rapport_model::btyd::History;
use rapport_model::gamma_gamma::{GammaGamma, Spend};
use rapport_model::pareto_nbd::ParetoNbd;
use rapport_model::rfm;
use rapport_model::ModelError;
use rapport_store::Workspace;

use crate::results::{Checked, ClvFit, Fit, GapCheck, ModelsReport};
use crate::session::{Personal, Session};
use crate::{block_on, report, EngineError, Result};
use activity::Activity;
use config::ModelsConfig;
use features::Features;
use predict::Snapshot;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// What a run produced, for the CLI to print.
#[derive(Debug)]
pub struct RunSummary {
    pub as_of: String,
    pub customers: usize,
    pub modelled: usize,
    pub models: ModelsReport,
}

pub(crate) fn parse_as_of(s: &str) -> Result<i64> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| EngineError::Usage(format!("--as-of \"{s}\": expected YYYY-MM-DD")))?;
    Ok(d.signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid"))
        .num_days())
}

pub(crate) fn day_text(day: i64) -> String {
    (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid") + chrono::Duration::days(day)).to_string()
}

/// What the models are fitted on: the features as of a date, the customers who bought
/// before it, their calibration histories and repeat spend.
pub struct ModelInputs {
    pub features: Features,
    pub activity: Activity,
    pub as_of_day: i64,
    pub buyers: Vec<usize>,
    pub histories: Vec<History>,
    pub spends: Vec<Spend>,
}

/// Computes the model inputs as seen at the end of `as_of` (default: the last order date).
pub fn model_inputs(s: &Session<'_>, cfg: &ModelsConfig, as_of: Option<&str>) -> Result<ModelInputs> {
    let tables = s.workspace().tables()?;
    if !tables.contains_key("orders") {
        return Err(EngineError::Usage(
            "the workspace has no orders; run `rapport ingest --data DIR` first".into(),
        ));
    }
    let names: BTreeSet<String> = tables.keys().cloned().collect();
    let (features, activity, as_of_day) = block_on(async {
        let ctx = s.context(&Personal::Stored).await?;
        let as_of_day = match as_of {
            Some(s) => parse_as_of(s)?,
            None => {
                let b = ctx
                    .sql("SELECT CAST(max(ordered_at) AS BIGINT) FROM orders")
                    .await?
                    .collect()
                    .await?;
                let v =
                    datafusion::arrow::compute::cast(b[0].column(0), &DataType::Int64).map_err(datafusion::error::DataFusionError::from)?;
                let v = v.as_any().downcast_ref::<Int64Array>().expect("cast to Int64");
                v.value(0).div_euclid(MICROS_PER_DAY)
            }
        };
        let (f, a) = snapshot_in(&ctx, as_of_day, &names).await?;
        Ok::<_, EngineError>((f, a, as_of_day))
    })?;
    let unit = cfg.time_unit.days();
    // Calibration histories of customers who bought before the cut-off. T runs to the
    // start of the as-of day, as in Fader & Hardie's CDNOW summary.
    let buyers: Vec<usize> = (0..features.len())
        .filter(|&i| features.first_day[i].is_some_and(|d| d < as_of_day + 1))
        .collect();
    let histories: Vec<History> = buyers
        .iter()
        .map(|&i| {
            let first = features.first_day[i].expect("buyer") as f64;
            let last = features.last_day[i].expect("buyer") as f64;
            let t = ((as_of_day as f64 - first) / unit).max(1.0 / unit);
            History::new(features.purchase_days[i] - 1.0, ((last - first) / unit).min(t), t)
        })
        .collect();
    let spends: Vec<Spend> = buyers
        .iter()
        .filter_map(|&i| {
            features.repeat_spend[i].map(|m| Spend {
                x: features.purchase_days[i] - 1.0,
                mean: m,
                weight: 1.0,
            })
        })
        .collect();
    Ok(ModelInputs {
        features,
        activity,
        as_of_day,
        buyers,
        histories,
        spends,
    })
}

async fn snapshot_in(ctx: &datafusion::prelude::SessionContext, day: i64, tables: &BTreeSet<String>) -> Result<(Features, Activity)> {
    let end = (day + 1) * MICROS_PER_DAY;
    let f = features::compute(ctx, end).await?;
    let a = activity::compute(ctx, end, tables, &f.customer_id).await?;
    Ok((f, a))
}

/// Features and activity of every customer as seen at the end of `day` (days since
/// 1970-01-01); rows in the same order at every day.
pub fn snapshots(s: &Session<'_>, days: &[i64]) -> Result<Vec<(Features, Activity)>> {
    let names: BTreeSet<String> = s.workspace().tables()?.keys().cloned().collect();
    block_on(async {
        let ctx = s.context(&Personal::Stored).await?;
        let mut out = Vec::new();
        for &d in days {
            out.push(snapshot_in(&ctx, d, &names).await?);
        }
        Ok(out)
    })
}

/// Each buyer's RFM scores and segment as of `as_of_day` (None for non-buyers).
fn rfm_of(features: &Features, buyers: &[usize], as_of_day: i64) -> Vec<Option<rfm::Rfm>> {
    let recency: Vec<f64> = buyers
        .iter()
        .map(|&i| (as_of_day - features.last_day[i].expect("buyer")) as f64)
        .collect();
    let freq: Vec<f64> = buyers.iter().map(|&i| features.orders[i]).collect();
    let mon: Vec<f64> = buyers.iter().map(|&i| features.revenue[i]).collect();
    let scores = rfm::score(&recency, &freq, &mon);
    let mut out = vec![None; features.len()];
    for (k, &i) in buyers.iter().enumerate() {
        out[i] = Some(scores[k]);
    }
    out
}

/// Every behaviour statement's gap evidence as seen at the end of `as_of`, whatever its
/// size: the customers' ids and the rows, for the
/// held-out check of `rapport evaluate gaps`, and the as-of day. Fits only what the
/// gap analysis reads (BG/NBD, RFM); writes nothing.
pub fn assess_gaps(s: &Session<'_>, cfg: &ModelsConfig, as_of: Option<&str>) -> Result<(Vec<String>, Vec<gaps::GapRow>, i64)> {
    let inputs = model_inputs(s, cfg, as_of)?;
    let n = inputs.features.len();
    let bg = if inputs.histories.is_empty() {
        None
    } else {
        optional_fit(BgNbd::fit(&inputs.histories), "bgnbd")?
    };
    let mut p_alive = vec![None; n];
    if let Some(f) = &bg {
        for (k, &i) in inputs.buyers.iter().enumerate() {
            p_alive[i] = Some(f.params.p_alive(&inputs.histories[k]));
        }
    }
    let f = &inputs.features;
    let rfm_names: Vec<Option<&'static str>> = rfm_of(f, &inputs.buyers, inputs.as_of_day)
        .iter()
        .map(|r| r.map(|r| r.segment))
        .collect();
    let answers = gaps::answers(s, inputs.as_of_day, &f.customer_id)?;
    let out = gaps::analyse(&gaps::Inputs {
        features: f,
        activity: &inputs.activity,
        answers: &answers,
        as_of_day: inputs.as_of_day,
        buyers: &inputs.buyers,
        histories: &inputs.histories,
        bgnbd: bg.as_ref().map(|b| &b.params),
        unit_days: cfg.time_unit.days(),
        p_alive: &p_alive,
        churn: &vec![None; n],
        segments: &vec![Vec::new(); n],
        rfm: &rfm_names,
        main_channel: &vec![None; n],
        profile_issues: &[],
        cfg,
    });
    Ok((inputs.features.customer_id, out.assessed, inputs.as_of_day))
}

/// A CLV fit for models.json: the fit, or why it failed when the data are too thin for
/// it; a broken call is an error.
fn clv_fit<P>(fit: std::result::Result<ClvFit<P>, ModelError>) -> Result<ClvFit<P>> {
    match fit {
        Ok(f) => Ok(f),
        Err(e @ ModelError::InvalidInput(_)) => Err(e.into()),
        Err(e) => Ok(ClvFit::failed(e.message())),
    }
}

/// A fit the run can do without: `None` when the data are too thin for it (the run
/// goes on, as with no buyers at all); a broken call is an error.
fn optional_fit<T>(fit: std::result::Result<T, ModelError>, model: &str) -> Result<Option<T>> {
    match fit {
        Ok(f) => Ok(Some(f)),
        Err(ModelError::TooLittleData(why)) => {
            tracing::warn!(model, "not fitted: {why}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs the models as seen at the end of `as_of` (default: the last order date).
/// [`run_with`] under the default `[actions]` policy.
pub fn run(ws: &Workspace, cfg: &ModelsConfig, as_of: Option<&str>) -> Result<RunSummary> {
    run_with(ws, cfg, &actions::ActionsConfig::default_policy(), as_of)
}

pub fn run_with(ws: &Workspace, cfg: &ModelsConfig, policy: &actions::ActionsConfig, as_of: Option<&str>) -> Result<RunSummary> {
    let session = Session::new(ws);
    let s = &session;
    let ModelInputs {
        features,
        activity,
        as_of_day,
        buyers,
        histories,
        spends,
    } = model_inputs(s, cfg, as_of)?;
    let n = features.len();
    let unit = cfg.time_unit.days();
    let bg = if histories.is_empty() {
        None
    } else {
        optional_fit(BgNbd::fit(&histories), "bgnbd")?
    };
    let pareto_nbd = if histories.is_empty() {
        None
    } else {
        Some(clv_fit(ParetoNbd::fit(&histories).map(ClvFit::from))?)
    };
    let gg = GammaGamma::fit(&spends);
    let gamma_gamma = clv_fit(gg.as_ref().map(ClvFit::from).map_err(Clone::clone))?;
    let gg = gg.ok();

    // Per-customer predictions.
    let mut p_alive = vec![None; n];
    let mut expected: Vec<Vec<Option<f64>>> = vec![vec![None; n]; cfg.horizons_days.len()];
    let mut spend = vec![None; n];
    let mut clv = vec![None; n];
    for (k, &i) in buyers.iter().enumerate() {
        let h = histories[k];
        if let Some(f) = &bg {
            let p = f.params;
            p_alive[i] = Some(p.p_alive(&h));
            for (j, days) in cfg.horizons_days.iter().enumerate() {
                expected[j][i] = p.conditional_expected(f64::from(*days) / unit, &h);
            }
            let mean = match (&gg, features.repeat_spend[i]) {
                (Some(g), Some(m)) => g.params.expected_spend(h.x, m),
                (Some(g), None) => g.params.expected_spend(0.0, 0.0),
                (None, _) => features.revenue[i] / features.orders[i].max(1.0),
            };
            spend[i] = mean.is_finite().then_some(mean);
            clv[i] = spend[i].and_then(|s| customer_value(&p, &h, s, cfg, unit));
        }
    }

    let rfm_of = rfm_of(&features, &buyers, as_of_day);

    let clusters = segments::cluster(&features, &buyers, as_of_day, cfg)?;

    // Predictive models on the time split (S0 = as-of − 2W, S1 = as-of − W, S2 = as-of).
    let w = i64::from(cfg.churn_window_days);
    let older = snapshots(s, &[as_of_day - 2 * w, as_of_day - w])?;
    let s0 = Snapshot {
        features: &older[0].0,
        activity: &older[0].1,
        day: as_of_day - 2 * w,
    };
    let s1 = Snapshot {
        features: &older[1].0,
        activity: &older[1].1,
        day: as_of_day - w,
    };
    let s2 = Snapshot {
        features: &features,
        activity: &activity,
        day: as_of_day,
    };
    let names = predict::feature_names(&activity);
    let (churn_p, churn_report) = predict::churn([&s0, &s1, &s2], &names, cfg.churn_window_days, cfg.seed);
    let (loyalty, loyalty_report) = predict::loyalty([&s0, &s1, &s2], &names);
    let (behaviour, behaviour_report) = predict::behaviour([&s0, &s1, &s2], &names, cfg.seed);

    // Outcome rates by segment: churn in the last window by the segment at its start,
    // returns by the current segment.
    let b1: Vec<usize> = (0..n).filter(|&i| s1.features.purchase_days[i] > 0.0).collect();
    let scores1 = rfm::score(
        &b1.iter()
            .map(|&i| (s1.day - s1.features.last_day[i].expect("buyer")) as f64)
            .collect::<Vec<_>>(),
        &b1.iter().map(|&i| s1.features.orders[i]).collect::<Vec<_>>(),
        &b1.iter().map(|&i| s1.features.revenue[i]).collect::<Vec<_>>(),
    );
    let mut rates = outcomes::rates(
        "churned",
        b1.iter()
            .zip(&scores1)
            .map(|(&i, r)| (r.segment.to_string(), features.purchase_days[i] <= s1.features.purchase_days[i])),
    );
    rates.extend(outcomes::rates(
        "returned",
        buyers
            .iter()
            .map(|&i| (rfm_of[i].expect("buyer").segment.to_string(), features.returned_lines[i] > 0.0)),
    ));

    let segment_names: Vec<Option<&str>> = rfm_of.iter().map(|r| r.map(|r| r.segment)).collect();
    let (forecast_rows, forecast_report) = block_on(async {
        let ctx = s.context(&Personal::Stored).await?;
        forecasts::compute(&ctx, as_of_day, &features.customer_id, &segment_names).await
    })?;

    // The information gap.
    // The channel a buyer's order lines mostly go through (their channel segment).
    let channels: Vec<Option<String>> = (0..n)
        .map(|i| {
            if features.purchase_days[i] == 0.0 {
                return None;
            }
            activity
                .with_prefix("channel:")
                .filter(|(_, v)| v[i] > 0.0)
                .max_by(|a, b| a.1[i].total_cmp(&b.1[i]).then(b.0.cmp(a.0)))
                .map(|(c, _)| c.to_string())
        })
        .collect();
    let member_of = segments::memberships(n, &rfm_of, clusters.as_ref(), &channels);
    let answers = gaps::answers(s, as_of_day, &features.customer_id)?;
    let profile_issues = gaps::profile_issues(s, &features.customer_id)?;
    let rfm_names: Vec<Option<&'static str>> = rfm_of.iter().map(|r| r.map(|r| r.segment)).collect();
    let gap_out = gaps::analyse(&gaps::Inputs {
        features: &features,
        activity: &activity,
        answers: &answers,
        as_of_day,
        buyers: &buyers,
        histories: &histories,
        bgnbd: bg.as_ref().map(|f| &f.params),
        unit_days: unit,
        p_alive: &p_alive,
        churn: &churn_p,
        segments: &member_of,
        rfm: &rfm_names,
        main_channel: &channels,
        profile_issues: &profile_issues,
        cfg,
    });
    let mut gap_report = gap_out.report.clone();
    // The held-out check of the evidence (`rapport evaluate gaps`): every statement
    // judged as of `gap_check_days` earlier against the same statements judged now.
    if cfg.gap_check_days > 0 {
        let cutoff = as_of_day - i64::from(cfg.gap_check_days);
        let gaps = match assess_gaps(s, cfg, Some(&day_text(cutoff))) {
            Ok((ids_then, then, _)) => Checked::ByType(crate::evaluate::gap_reliability(
                (&ids_then, &then),
                (&features.customer_id, &gap_out.assessed),
                cfg.gap_evidence,
            )),
            Err(e) => Checked::NotChecked {
                message: format!("not checked: {e}"),
            },
        };
        gap_report.reliability = Some(GapCheck {
            calibration_end: day_text(cutoff),
            days: cfg.gap_check_days,
            gaps,
        });
    }

    // Recommendations, then the next-best actions that use them.
    let recs = crate::recs::recommendations(s, &features.customer_id, as_of_day, cfg)?;
    let top_rec: Vec<Option<String>> = recs.as_ref().map_or_else(|| vec![None; n], |r| r.top.clone());
    let recency: Vec<Option<f64>> = (0..n).map(|i| features.last_day[i].map(|d| (as_of_day - d) as f64)).collect();
    let consents = actions::consents(s, &features.customer_id)?;
    let last_contact = actions::last_contacts(s, &features.customer_id, as_of_day)?;
    let birthdays = actions::birthdays(s, &features.customer_id, as_of_day)?;
    let decided = actions::decide(
        policy,
        &actions::Facts {
            ids: &features.customer_id,
            segment: &rfm_names,
            churn: &churn_p,
            clv: &clv,
            recency_days: &recency,
            gaps: &gap_out.gaps,
            top_recommendation: &top_rec,
            days_to_birthday: &birthdays,
            consents: &consents,
            last_contact_day: &last_contact,
            as_of_day,
        },
        &day_text(as_of_day),
    );
    let mut next_action: Vec<Option<String>> = vec![None; n];
    for a in decided.rows.iter().filter(|a| !a.control) {
        next_action[a.customer].get_or_insert_with(|| a.action.clone());
    }
    let uplift_rows = crate::uplift::compute(s)?;

    // Tables.
    let customers = customers_batch(
        &features,
        as_of_day,
        &rfm_of,
        clusters.as_ref().map(|c| &c.labels),
        &p_alive,
        &expected,
        cfg,
        &spend,
        &clv,
        &churn_p,
        &loyalty,
        &next_action,
    )?;
    let segments_batch = segments::segments_batch(&features, &buyers, &rfm_of, clusters.as_ref(), &channels, as_of_day)?;
    let mut txn = ws.begin("run")?;
    txn.replace("customers");
    txn.write_part("customers", customers.schema(), &[customers])?;
    txn.replace("segments");
    txn.write_part("segments", segments_batch.schema(), &[segments_batch])?;
    let actions_batch = actions::batch(&features.customer_id, &decided)?;
    txn.replace("actions");
    txn.write_part("actions", actions_batch.schema(), &[actions_batch])?;
    let uplift_batch = crate::uplift::batch(&uplift_rows)?;
    txn.replace("uplift");
    txn.write_part("uplift", uplift_batch.schema(), &[uplift_batch])?;
    let recommendations = match recs {
        Some(r) => {
            txn.replace("recommendations");
            txn.write_part("recommendations", r.batch.schema(), &[r.batch])?;
            txn.replace("item_factors");
            txn.write_part("item_factors", r.item_factors.schema(), &[r.item_factors])?;
            Fit::Fitted(r.report)
        }
        None => Fit::skipped("needs orders with product_id"),
    };
    let behaviour_batch = behaviour_batch(&features, behaviour.as_ref(), &gap_out.reported_purchase)?;
    let gaps_batch = gaps::gaps_batch(&features.customer_id, &gap_out.gaps)?;
    txn.replace("gaps");
    txn.write_part("gaps", gaps_batch.schema(), &[gaps_batch])?;
    let summary_batch = gaps::summary_batch(&gap_out.gaps, &member_of)?;
    txn.replace("gap_summary");
    txn.write_part("gap_summary", summary_batch.schema(), &[summary_batch])?;
    let knowledge_batch = gaps::knowledge_batch(&gap_out.knowledge)?;
    txn.replace("knowledge_gaps");
    txn.write_part("knowledge_gaps", knowledge_batch.schema(), &[knowledge_batch])?;
    txn.replace("behaviour");
    txn.write_part("behaviour", behaviour_batch.schema(), &[behaviour_batch])?;
    let forecasts_batch = forecasts::batch(&forecast_rows)?;
    txn.replace("forecasts");
    txn.write_part("forecasts", forecasts_batch.schema(), &[forecasts_batch])?;
    let rates_batch = outcomes::batch(&rates)?;
    txn.replace("outcome_rates");
    txn.write_part("outcome_rates", rates_batch.schema(), &[rates_batch])?;
    txn.commit(&format!("{{\"as_of\": \"{}\"}}", day_text(as_of_day)))?;
    let models = ModelsReport {
        as_of: day_text(as_of_day),
        time_unit: cfg.time_unit.name().to_string(),
        customers: n,
        buyers: buyers.len(),
        bgnbd: bg.clone().map(ClvFit::from),
        pareto_nbd,
        gamma_gamma,
        kmeans: clusters.map(|c| c.report),
        churn: churn_report,
        loyalty: loyalty_report,
        behaviour: behaviour_report,
        outcome_rates: rates,
        forecasts: forecast_report,
        gaps: gap_report,
        actions: decided.report,
        uplift: crate::uplift::report(&uplift_rows),
        recommendations,
    };
    report::write_atomic(&ws.reports_dir().join("models.json"), &models.to_json())?;
    report::write_report(ws, Some(&models))?;
    Ok(RunSummary {
        as_of: day_text(as_of_day),
        customers: n,
        modelled: buyers.len(),
        models,
    })
}

/// Discounted expected margin over the CLV horizon: the expected purchases of each
/// 30-day step, times expected spend and margin, discounted to the as-of date.
fn customer_value(p: &BgNbd, h: &History, spend: f64, cfg: &ModelsConfig, unit: f64) -> Option<f64> {
    let steps = cfg.clv_horizon_days.div_ceil(30);
    let mut prev = 0.0;
    let mut total = 0.0;
    for k in 1..=steps {
        let days = f64::from((k * 30).min(cfg.clv_horizon_days));
        let e = p.conditional_expected(days / unit, h)?;
        total += (e - prev) * spend * cfg.margin / (1.0 + cfg.discount_rate).powf(days / 365.0);
        prev = e;
    }
    total.is_finite().then_some(total)
}

#[allow(clippy::too_many_arguments)]
fn customers_batch(
    f: &Features,
    as_of_day: i64,
    rfm_of: &[Option<rfm::Rfm>],
    clusters: Option<&Vec<Option<usize>>>,
    p_alive: &[Option<f64>],
    expected: &[Vec<Option<f64>>],
    cfg: &ModelsConfig,
    spend: &[Option<f64>],
    clv: &[Option<f64>],
    churn: &[Option<f64>],
    loyalty: &[Option<f64>],
    next_action: &[Option<String>],
) -> Result<RecordBatch> {
    let n = f.len();
    let ts = |v: &[Option<i64>]| Arc::new(TimestampMicrosecondArray::from(v.to_vec()).with_timezone("UTC")) as ArrayRef;
    let fl = |v: Vec<Option<f64>>| Arc::new(Float64Array::from(v)) as ArrayRef;
    let u8s = |g: fn(&rfm::Rfm) -> u8| Arc::new(UInt8Array::from(rfm_of.iter().map(|r| r.as_ref().map(g)).collect::<Vec<_>>())) as ArrayRef;
    let mut fields = vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new(
            "first_order_at",
            DataType::Timestamp(ArrowUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new(
            "last_order_at",
            DataType::Timestamp(ArrowUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("orders", DataType::Float64, false),
        Field::new("revenue", DataType::Float64, false),
        Field::new("avg_order_value", DataType::Float64, true),
        Field::new("recency_days", DataType::Float64, true),
        Field::new("tenure_days", DataType::Float64, true),
        Field::new("returned_lines", DataType::Float64, false),
        Field::new("rfm_r", DataType::UInt8, true),
        Field::new("rfm_f", DataType::UInt8, true),
        Field::new("rfm_m", DataType::UInt8, true),
        Field::new("rfm_segment", DataType::Utf8, true),
        Field::new("cluster", DataType::Int64, true),
        Field::new("p_alive", DataType::Float64, true),
    ];
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(f.customer_id.clone())),
        ts(&f.first_order_at),
        ts(&f.last_order_at),
        fl(f.orders.iter().map(|v| Some(*v)).collect()),
        fl(f.revenue.iter().map(|v| Some(*v)).collect()),
        fl((0..n).map(|i| (f.orders[i] > 0.0).then(|| f.revenue[i] / f.orders[i])).collect()),
        fl((0..n).map(|i| f.last_day[i].map(|d| (as_of_day - d) as f64)).collect()),
        fl((0..n).map(|i| f.first_day[i].map(|d| (as_of_day - d) as f64)).collect()),
        fl(f.returned_lines.iter().map(|v| Some(*v)).collect()),
        u8s(|r| r.r),
        u8s(|r| r.f),
        u8s(|r| r.m),
        Arc::new(StringArray::from(rfm_of.iter().map(|r| r.map(|r| r.segment)).collect::<Vec<_>>())),
        Arc::new(Int64Array::from(
            (0..n).map(|i| clusters.and_then(|c| c[i]).map(|c| c as i64)).collect::<Vec<_>>(),
        )),
        fl(p_alive.to_vec()),
    ];
    for (j, days) in cfg.horizons_days.iter().enumerate() {
        fields.push(Field::new(format!("expected_orders_{days}d"), DataType::Float64, true));
        cols.push(fl(expected[j].clone()));
    }
    fields.push(Field::new("expected_avg_spend", DataType::Float64, true));
    cols.push(fl(spend.to_vec()));
    fields.push(Field::new("clv", DataType::Float64, true));
    cols.push(fl(clv.to_vec()));
    fields.push(Field::new("churn_probability", DataType::Float64, true));
    cols.push(fl(churn.to_vec()));
    fields.push(Field::new("loyalty_score", DataType::Float64, true));
    cols.push(fl(loyalty.to_vec()));
    // The first action of the treatment group (control customers get none).
    fields.push(Field::new("next_action", DataType::Utf8, true));
    cols.push(Arc::new(StringArray::from(next_action.to_vec())));
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(datafusion::error::DataFusionError::from)?)
}

/// The `behaviour` table: one row per customer and class; `reported_p` (and Δ =
/// reported / predicted) where a survey answer maps to the class.
fn behaviour_batch(f: &Features, b: Option<&predict::Behaviour>, reported_purchase: &[Option<f64>]) -> Result<RecordBatch> {
    let (mut ids, mut class, mut p, mut reported) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    if let Some(b) = b {
        for (i, id) in f.customer_id.iter().enumerate() {
            for (k, c) in b.classes.iter().enumerate() {
                ids.push(id.as_str());
                class.push(*c);
                p.push(b.p[i][k]);
                // The stated purchase frequency implies a chance of buying in the window.
                reported.push(if *c == "purchase" { reported_purchase[i] } else { None });
            }
        }
    }
    let delta: Vec<Option<f64>> = reported.iter().zip(&p).map(|(r, p)| r.map(|r| r / p.max(1e-9))).collect();
    let schema = Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("behaviour", DataType::Utf8, false),
        Field::new("predicted_p", DataType::Float64, false),
        Field::new("reported_p", DataType::Float64, true),
        Field::new("delta", DataType::Float64, true),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(StringArray::from(class)),
            Arc::new(Float64Array::from(p)),
            Arc::new(Float64Array::from(reported)),
            Arc::new(Float64Array::from(delta)),
        ],
    )
    .map_err(datafusion::error::DataFusionError::from)?)
}
