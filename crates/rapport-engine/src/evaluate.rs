//! `rapport evaluate --holdout-days N`: the calibration/holdout checks of the CLV
//! models, as Fader, Hardie & Lee (2005) report them — the holdout forecast against what
//! happened, in total and by calibration frequency.

use serde_json::{json, Value};

use rapport_model::bgnbd::BgNbd;
use rapport_model::pareto_nbd::ParetoNbd;
use rapport_store::Workspace;

use crate::run::config::ModelsConfig;
use rapport_model::metrics;

use crate::run::predict::{self, Snapshot};
use crate::run::{day_text, model_inputs, snapshots, ModelInputs};
use crate::{EngineError, Result};

/// Splits at `holdout_days` before the last order date, fits on the calibration
/// period and compares forecasts with the holdout.
pub fn evaluate(ws: &Workspace, cfg: &ModelsConfig, holdout_days: u32) -> Result<Value> {
    if holdout_days == 0 {
        return Err(EngineError::Usage("--holdout-days must be at least 1".into()));
    }
    // The whole history (as of the last order) and the calibration period; both list
    // every customer in the same order, so their purchase days subtract row by row.
    let full = model_inputs(ws, cfg, None)?;
    let (last_day, cutoff) = (full.as_of_day, full.as_of_day - i64::from(holdout_days));
    let cal = model_inputs(ws, cfg, Some(&day_text(cutoff)))?;
    let histories = &cal.histories;
    let holdout: Vec<f64> = cal
        .buyers
        .iter()
        .map(|&i| full.features.purchase_days[i] - cal.features.purchase_days[i])
        .collect();
    if histories.is_empty() {
        return Err(EngineError::Usage(format!(
            "no customer bought before the calibration cut-off ({holdout_days} days before the last order)"
        )));
    }
    let unit = cfg.time_unit.days();
    let horizon = f64::from(holdout_days) / unit;
    let bg = BgNbd::fit(histories).map_err(EngineError::Usage)?;
    let pn = ParetoNbd::fit(histories).map_err(EngineError::Usage)?;
    let e_bg: Vec<f64> = histories
        .iter()
        .map(|h| bg.params.conditional_expected(horizon, h).unwrap_or(f64::NAN))
        .collect();
    let e_pn: Vec<f64> = histories
        .iter()
        .map(|h| pn.params.conditional_expected(horizon, h).unwrap_or(f64::NAN))
        .collect();
    let mut bins = Vec::new();
    for x in 0..=7usize {
        let members: Vec<usize> = (0..histories.len())
            .filter(|&i| {
                if x < 7 {
                    histories[i].x as usize == x
                } else {
                    histories[i].x >= 7.0
                }
            })
            .collect();
        if members.is_empty() {
            continue;
        }
        let mean = |v: &[f64]| members.iter().map(|&i| v[i]).sum::<f64>() / members.len() as f64;
        bins.push(
            json!({"x": if x < 7 { x.to_string() } else { "7+".into() }, "customers": members.len(),
                         "actual": mean(&holdout), "bgnbd": mean(&e_bg), "pareto_nbd": mean(&e_pn)}),
        );
    }
    let churn = churn_holdout(ws, cfg, &cal, &full, cutoff)?;
    Ok(json!({
        "churn": churn,
        "calibration_end": day_text(cutoff),
        "holdout_end": day_text(last_day),
        "holdout_days": holdout_days,
        "time_unit": cfg.time_unit.name(),
        "customers": histories.len(),
        "holdout_actual": holdout.iter().sum::<f64>(),
        "holdout_forecast": {"bgnbd": e_bg.iter().sum::<f64>(), "pareto_nbd": e_pn.iter().sum::<f64>()},
        "bgnbd": {"r": bg.params.r, "alpha": bg.params.alpha, "a": bg.params.a, "b": bg.params.b, "log_likelihood": bg.log_likelihood, "converged": bg.converged},
        "pareto_nbd": {"r": pn.params.r, "alpha": pn.params.alpha, "s": pn.params.s, "beta": pn.params.beta, "log_likelihood": pn.log_likelihood, "converged": pn.converged},
        "by_calibration_frequency": bins,
    }))
}

/// The churn model as `rapport run` would have fitted it at the cut-off (snapshots at
/// cut-off − 2W and − W), scored at the cut-off and checked against what the buyers did in
/// the W days after it (only when the holdout covers W days).
fn churn_holdout(ws: &Workspace, cfg: &ModelsConfig, cal: &ModelInputs, full: &ModelInputs, cutoff: i64) -> Result<Value> {
    let w = i64::from(cfg.churn_window_days);
    if full.as_of_day - cutoff < w {
        return Ok(json!({"evaluated": false, "message": format!("the holdout is shorter than the {w}-day churn window")}));
    }
    let older = snapshots(ws, &[cutoff - 2 * w, cutoff - w])?;
    let snap = |k: usize, day: i64| Snapshot {
        features: &older[k].0,
        activity: &older[k].1,
        day,
    };
    let (s0, s1) = (snap(0, cutoff - 2 * w), snap(1, cutoff - w));
    let s2 = Snapshot {
        features: &cal.features,
        activity: &cal.activity,
        day: cutoff,
    };
    let names = predict::feature_names(&cal.activity);
    let (p, fit) = predict::churn([&s0, &s1, &s2], &names, cfg.churn_window_days, cfg.seed);
    if fit["fitted"] != true {
        return Ok(json!({"evaluated": false, "message": fit["message"]}));
    }
    // What happened: no purchase day within W days after the cut-off.
    let after = snapshots(ws, &[cutoff + w])?;
    let (mut scores, mut churned) = (Vec::new(), Vec::new());
    for (i, pi) in p.iter().enumerate() {
        if let Some(pi) = pi {
            scores.push(*pi);
            churned.push(after[0].0.purchase_days[i] <= cal.features.purchase_days[i]);
        }
    }
    let best = metrics::best_f1(&scores, &churned);
    let calibration: Vec<Value> = metrics::calibration(&scores, &churned, 10)
        .iter()
        .map(|b| json!({"predicted": b.predicted, "observed": b.observed, "customers": b.count}))
        .collect();
    Ok(json!({
        "evaluated": true,
        "model": fit["model"],
        "window_days": w,
        "customers": scores.len(),
        "churn_rate": churned.iter().filter(|c| **c).count() as f64 / churned.len().max(1) as f64,
        "auc": metrics::auc(&scores, &churned),
        "brier": metrics::brier(&scores, &churned),
        "log_loss": metrics::log_loss(&scores, &churned),
        "precision": best.precision, "recall": best.recall, "f1": best.f1, "threshold": best.threshold,
        "calibration": calibration,
    }))
}
