//! `rapport evaluate --holdout-days N`: the calibration/holdout checks of the CLV
//! models, as Fader, Hardie & Lee (2005) report them — the holdout forecast against what
//! happened, in total and by calibration frequency.

use serde_json::{json, Value};

use rapport_model::bgnbd::BgNbd;
use rapport_model::pareto_nbd::ParetoNbd;
use rapport_store::Workspace;

use crate::run::config::ModelsConfig;
use crate::run::{day_text, model_inputs};
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
    let histories = cal.histories;
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
    let bg = BgNbd::fit(&histories).map_err(EngineError::Usage)?;
    let pn = ParetoNbd::fit(&histories).map_err(EngineError::Usage)?;
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
    Ok(json!({
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
