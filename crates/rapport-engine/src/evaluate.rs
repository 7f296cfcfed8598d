//! `rapport evaluate --holdout-days N`: the calibration/holdout checks of the CLV
//! models, as Fader, Hardie & Lee (2005) report them — the holdout forecast against what
//! happened, in total and by calibration frequency.

use serde_json::{json, Value};

use rapport_model::bgnbd::BgNbd;
use rapport_model::btyd::History;
use rapport_model::pareto_nbd::ParetoNbd;
use rapport_store::Workspace;

use crate::run::config::ModelsConfig;
use crate::run::features;
use crate::session::{workspace_context, Personal};
use crate::{block_on, EngineError, Result};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Splits at `holdout_days` before the last order date, fits on the calibration
/// period and compares forecasts with the holdout.
pub fn evaluate(ws: &Workspace, cfg: &ModelsConfig, holdout_days: u32) -> Result<Value> {
    if holdout_days == 0 {
        return Err(EngineError::Usage("--holdout-days must be at least 1".into()));
    }
    let (cal, full, last_day) = block_on(async {
        let ctx = workspace_context(ws, &Personal::Stored).await?;
        let b = ctx
            .sql("SELECT CAST(max(ordered_at) AS BIGINT) FROM orders")
            .await?
            .collect()
            .await?;
        let v = datafusion::arrow::compute::cast(b[0].column(0), &datafusion::arrow::datatypes::DataType::Int64)
            .map_err(datafusion::error::DataFusionError::from)?;
        let v = v.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().expect("Int64");
        if v.is_empty() || datafusion::arrow::array::Array::is_null(v, 0) {
            return Err(EngineError::Usage("the workspace has no orders".into()));
        }
        let last_day = v.value(0).div_euclid(MICROS_PER_DAY);
        let cutoff = last_day - i64::from(holdout_days);
        let cal = features::compute(&ctx, (cutoff + 1) * MICROS_PER_DAY).await?;
        let full = features::compute(&ctx, (last_day + 1) * MICROS_PER_DAY).await?;
        Ok::<_, EngineError>((cal, full, last_day))
    })?;
    let cutoff = last_day - i64::from(holdout_days);
    let unit = cfg.time_unit.days();
    let mut histories = Vec::new();
    let mut holdout = Vec::new();
    for i in 0..cal.len() {
        let Some(first) = cal.first_day[i] else { continue };
        let last = cal.last_day[i].expect("buyers have a last day");
        let t = ((cutoff - first) as f64 / unit).max(1.0 / unit);
        histories.push(History::new(cal.purchase_days[i] - 1.0, ((last - first) as f64 / unit).min(t), t));
        debug_assert_eq!(cal.customer_id[i], full.customer_id[i]);
        holdout.push(full.purchase_days[i] - cal.purchase_days[i]);
    }
    if histories.is_empty() {
        return Err(EngineError::Usage(format!(
            "no customer bought before the calibration cut-off ({holdout_days} days before the last order)"
        )));
    }
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
    let day = |d: i64| (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid") + chrono::Duration::days(d)).to_string();
    Ok(json!({
        "calibration_end": day(cutoff),
        "holdout_end": day(last_day),
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
