//! `rapport run`: everything as seen at the end of a date, in stages, each a module with
//! typed inputs and outputs — `features` and `activity` (the model inputs), `clv`,
//! `segments`, `predict` (with `outcomes`), `forecasts`, `gaps`, recommendations
//! (`crate::recs`), `actions`, uplift (`crate::uplift`) and `outputs` (the tables,
//! `reports/models.json` and the report). [`run_on`] is the list of stages, each timed ([`StageCost`]).

pub mod actions;
pub mod activity;
pub mod clv;
pub mod features;
pub mod forecasts;
pub mod gaps;
pub mod outcomes;
pub mod outputs;
pub mod predict;
pub mod reliability;
pub mod segments;

use std::collections::BTreeSet;

use rapport_model::bgnbd::BgNbd;
use rapport_model::btyd::History;
use rapport_model::gamma_gamma::Spend;
use rapport_store::schema::Table;
use rapport_store::Workspace;

use crate::config::ModelsConfig;
use crate::days::{day_text, parse_as_of, MICROS_PER_DAY};
use crate::results::ModelsReport;
use crate::session::{int_column, Personal, Session};
use crate::{block_on, EngineError, Result};
use activity::Activity;
use features::Features;

/// What a run produced, for the CLI to print.
#[derive(Debug)]
pub struct RunSummary {
    pub as_of: String,
    pub customers: usize,
    pub modelled: usize,
    pub models: ModelsReport,
    /// How long each stage took, and this process's peak memory during it.
    pub stages: Vec<StageCost>,
}

/// One stage of a run: its wall-clock seconds and the peak resident memory of the
/// process while it ran (None where the system does not tell).
#[derive(Debug, Clone)]
pub struct StageCost {
    pub stage: &'static str,
    pub seconds: f64,
    pub peak_rss_bytes: Option<u64>,
}

/// Runs one stage, recording its cost: the process's peak-memory mark is reset first
/// (Linux's `clear_refs`), so the peak read after is the stage's own.
fn staged<T>(costs: &mut Vec<StageCost>, stage: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    crate::memory::reset_peak();
    let start = std::time::Instant::now();
    let out = f()?;
    let cost = StageCost {
        stage,
        seconds: start.elapsed().as_secs_f64(),
        peak_rss_bytes: crate::memory::peak_rss(),
    };
    tracing::info!(stage, seconds = cost.seconds, peak_rss = cost.peak_rss_bytes, "run stage done");
    costs.push(cost);
    Ok(out)
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
    if !tables.contains_key(Table::Orders.name()) {
        return Err(EngineError::usage(
            "the workspace has no orders; run `rapport ingest --data DIR` first",
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
                int_column(&b[0], 0)?.value(0).div_euclid(MICROS_PER_DAY)
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
        .map(|&i| history(&features, i, as_of_day, unit).expect("buyer"))
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

/// The calibration history of customer `i` as seen at `as_of_day`, in time units of
/// `unit` days (None for a customer without a purchase): x repeat purchase days, the
/// last at t_x, over T up to the start of the as-of day, as in Fader & Hardie's CDNOW
/// summary.
pub fn history(features: &Features, i: usize, as_of_day: i64, unit: f64) -> Option<History> {
    let first = features.first_day[i]? as f64;
    let last = features.last_day[i]? as f64;
    let t = ((as_of_day as f64 - first) / unit).max(1.0 / unit);
    Some(History::new(features.purchase_days[i] - 1.0, ((last - first) / unit).min(t), t))
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
        clv::optional_fit(
            clv::timed("BG/NBD (gaps as of an earlier day)", || BgNbd::fit(&inputs.histories)),
            "bgnbd",
        )?
    };
    let p_alive = clv::p_alive(bg.as_ref().map(|b| &b.params), &inputs);
    let f = &inputs.features;
    let rfm_names: Vec<Option<&'static str>> = segments::rfm_of(f, &inputs.buyers, inputs.as_of_day)
        .iter()
        .map(|r| r.map(|r| r.segment))
        .collect();
    let answers = gaps::answers(s, inputs.as_of_day, &f.customer_id)?;
    let out = gaps::analyse(&gaps::Inputs {
        model: &inputs,
        answers: &answers,
        bgnbd: bg.as_ref().map(|b| &b.params),
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

/// Runs the models as seen at the end of `as_of` (default: the last order date).
/// [`run_with`] under the default `[actions]` policy.
pub fn run(ws: &Workspace, cfg: &ModelsConfig, as_of: Option<&str>) -> Result<RunSummary> {
    run_with(ws, cfg, &actions::ActionsConfig::default_policy(), as_of)
}

/// A run as its stages, each reading what the earlier ones produced: features, CLV,
/// segments, predictions, forecasts, gaps, recommendations, actions, uplift, outputs.
pub fn run_with(ws: &Workspace, cfg: &ModelsConfig, policy: &actions::ActionsConfig, as_of: Option<&str>) -> Result<RunSummary> {
    run_on(&Session::new(ws), cfg, policy, as_of)
}

/// [`run_with`] with the queries where `s`'s engine runs them (a cluster, or this
/// process under its memory limit); the models and the outputs stay here.
pub fn run_on(s: &Session<'_>, cfg: &ModelsConfig, policy: &actions::ActionsConfig, as_of: Option<&str>) -> Result<RunSummary> {
    let ws = s.workspace();
    let mut costs = Vec::new();
    let c = &mut costs;
    let inputs = staged(c, "features", || model_inputs(s, cfg, as_of))?;
    let clv = staged(c, "clv", || clv::fit(&inputs, cfg))?;
    let segments = staged(c, "segments", || segments::segment(&inputs, cfg))?;
    let predictions = staged(c, "predictions", || predict::predict(s, &inputs, &segments.rfm, cfg))?;
    let forecasts = staged(c, "forecasts", || forecasts::forecast(s, &inputs, &segments.rfm_names()))?;
    let gaps = staged(c, "gaps", || gaps::judge(s, &inputs, &clv, &segments, &predictions.churn, cfg))?;
    let recs = staged(c, "recommendations", || {
        crate::recs::recommendations(s, &inputs.features.customer_id, inputs.as_of_day, cfg)
    })?;
    let actions = staged(c, "actions", || {
        let scores = actions::CustomerScores {
            segment: &segments.rfm_names(),
            churn: &predictions.churn,
            clv: &clv.clv,
        };
        actions::plan(s, policy, &inputs, &scores, &gaps.gaps, recs.as_ref().map(|r| r.top.as_slice()))
    })?;
    let uplift = staged(c, "uplift", || crate::uplift::compute(s))?;
    let (as_of, customers, modelled) = (day_text(inputs.as_of_day), inputs.features.len(), inputs.buyers.len());
    let stages = outputs::Stages {
        inputs,
        clv,
        segments,
        predictions,
        forecasts,
        gaps,
        recs,
        actions,
        uplift,
    };
    let models = staged(c, "outputs", || outputs::write(ws, cfg, stages))?;
    Ok(RunSummary {
        as_of,
        customers,
        modelled,
        models,
        stages: costs,
    })
}
