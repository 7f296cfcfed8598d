//! `rapport evaluate --holdout-days N`: the calibration/holdout checks of the CLV
//! models, as Fader, Hardie & Lee (2005) report them — the holdout forecast against what
//! happened, in total and by calibration frequency; and `rapport evaluate gaps`, the
//! held-out reliability of the gap evidence, which needs no truth.

use rapport_model::bgnbd::BgNbd;
use rapport_model::btyd::History;
use rapport_model::pareto_nbd::ParetoNbd;
use rapport_store::Workspace;

use crate::config::ModelsConfig;
use rapport_model::metrics;

use crate::days::day_text;
use crate::results::{CalibrationBin, ChurnCheck, ChurnHoldout, ClvFit, Fit, FrequencyBin, GapEvaluation, HoldoutForecast, HoldoutReport};
use crate::run::predict::{self, Snapshot};
use crate::run::{model_inputs, snapshots, ModelInputs};
use crate::session::Session;
use crate::{EngineError, Result};

/// Splits at `holdout_days` before the last order date, fits on the calibration
/// period and compares forecasts with the holdout.
/// Mean holdout purchases, actual and expected by each model, per number of repeat
/// purchases in the calibration period (0 to 6, and 7 or more), as in Fader, Hardie and
/// Lee's conditional-expectation plot.
fn by_frequency(histories: &[History], holdout: &[f64], e_bg: &[f64], e_pn: &[f64]) -> Vec<FrequencyBin> {
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
        bins.push(FrequencyBin {
            x: if x < 7 { x.to_string() } else { "7+".into() },
            customers: members.len(),
            actual: mean(holdout),
            bgnbd: mean(e_bg),
            pareto_nbd: mean(e_pn),
        });
    }
    bins
}

pub fn evaluate(ws: &Workspace, cfg: &ModelsConfig, holdout_days: u32) -> Result<HoldoutReport> {
    if holdout_days == 0 {
        return Err(EngineError::usage("--holdout-days must be at least 1"));
    }
    // The whole history (as of the last order) and the calibration period; both list
    // every customer in the same order, so their purchase days subtract row by row.
    let session = Session::new(ws);
    let full = model_inputs(&session, cfg, None)?;
    let (last_day, cutoff) = (full.as_of_day, full.as_of_day - i64::from(holdout_days));
    let cal = model_inputs(&session, cfg, Some(&day_text(cutoff)))?;
    let histories = &cal.histories;
    let holdout: Vec<f64> = cal
        .buyers
        .iter()
        .map(|&i| full.features.purchase_days[i] - cal.features.purchase_days[i])
        .collect();
    if histories.is_empty() {
        return Err(EngineError::usage(format!(
            "no customer bought before the calibration cut-off ({holdout_days} days before the last order)"
        )));
    }
    let unit = cfg.time_unit.days();
    let horizon = f64::from(holdout_days) / unit;
    let bg = BgNbd::fit(histories)?;
    let pn = ParetoNbd::fit(histories)?;
    let e_bg: Vec<f64> = histories
        .iter()
        .map(|h| bg.params.conditional_expected(horizon, h).unwrap_or(f64::NAN))
        .collect();
    let e_pn: Vec<f64> = histories
        .iter()
        .map(|h| pn.params.conditional_expected(horizon, h).unwrap_or(f64::NAN))
        .collect();
    let bins = by_frequency(histories, &holdout, &e_bg, &e_pn);
    let churn = churn_holdout(&session, cfg, &cal, &full, cutoff)?;
    Ok(HoldoutReport {
        churn,
        calibration_end: day_text(cutoff),
        holdout_end: day_text(last_day),
        holdout_days,
        time_unit: cfg.time_unit.name().to_string(),
        customers: histories.len(),
        holdout_actual: holdout.iter().sum::<f64>(),
        holdout_forecast: HoldoutForecast {
            bgnbd: e_bg.iter().sum::<f64>(),
            pareto_nbd: e_pn.iter().sum::<f64>(),
        },
        bgnbd: ClvFit::from(bg),
        pareto_nbd: ClvFit::from(pn),
        by_calibration_frequency: bins,
    })
}

/// The churn model as `rapport run` would have fitted it at the cut-off (snapshots at
/// cut-off − 2W and − W), scored at the cut-off and checked against what the buyers did in
/// the W days after it (only when the holdout covers W days).
fn churn_holdout(session: &Session<'_>, cfg: &ModelsConfig, cal: &ModelInputs, full: &ModelInputs, cutoff: i64) -> Result<ChurnHoldout> {
    let w = i64::from(cfg.churn_window_days);
    let not_evaluated = |message: String| ChurnHoldout {
        evaluated: false,
        message: Some(message),
        check: None,
    };
    if full.as_of_day - cutoff < w {
        return Ok(not_evaluated(format!("the holdout is shorter than the {w}-day churn window")));
    }
    let older = snapshots(session, &[cutoff - 2 * w, cutoff - w])?;
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
    let fit = match fit {
        Fit::Fitted(f) => f,
        Fit::Skipped(s) => return Ok(not_evaluated(s.message)),
    };
    // What happened: no purchase day within W days after the cut-off.
    let after = snapshots(session, &[cutoff + w])?;
    let (mut scores, mut churned) = (Vec::new(), Vec::new());
    for (i, pi) in p.iter().enumerate() {
        if let Some(pi) = pi {
            scores.push(*pi);
            churned.push(after[0].0.purchase_days[i] <= cal.features.purchase_days[i]);
        }
    }
    let best = metrics::best_f1(&scores, &churned);
    let calibration = metrics::calibration(&scores, &churned, 10)
        .iter()
        .map(|b| CalibrationBin {
            predicted: b.predicted,
            observed: b.observed,
            customers: b.count,
        })
        .collect();
    let check = ChurnCheck {
        model: fit.model,
        window_days: cfg.churn_window_days,
        customers: scores.len(),
        churn_rate: churned.iter().filter(|c| **c).count() as f64 / churned.len().max(1) as f64,
        auc: metrics::auc(&scores, &churned),
        brier: metrics::brier(&scores, &churned),
        log_loss: metrics::log_loss(&scores, &churned),
        precision: best.precision,
        recall: best.recall,
        f1: best.f1,
        threshold: best.threshold,
        calibration,
    };
    Ok(ChurnHoldout {
        evaluated: true,
        message: None,
        check: Some(check),
    })
}

/// The reliability of the gap evidence on the company's own data, without any truth.
///
/// Every behaviour statement is judged twice: as of a cut-off `holdout_days` before the
/// last order (evidence e), and with the later behaviour too (evidence e'). If the
/// evidence is a calibrated probability, the later data confirm it on average: among
/// statements with e near 0.9, the mean of e' is near 0.9 (a posterior is a martingale).
/// Evidence that claims more than the later behaviour bears out shows as a mean e'
/// below the mean e in the high bins. Per gap type: the statements judged at both dates
/// (the same answer), bins of e with their mean e and e', the weighted mean gap between
/// them, and of the gaps reported at the cut-off (e ≥ `gap_evidence`) the share still
/// reported with the later data.
pub fn evaluate_gaps(ws: &Workspace, cfg: &ModelsConfig, holdout_days: u32) -> Result<GapEvaluation> {
    if holdout_days == 0 {
        return Err(EngineError::usage("--holdout-days must be at least 1"));
    }
    let session = Session::new(ws);
    let (ids_now, now, last_day) = crate::run::assess_gaps(&session, cfg, None)?;
    let cutoff = last_day - i64::from(holdout_days);
    let (ids_then, then, _) = crate::run::assess_gaps(&session, cfg, Some(&day_text(cutoff)))?;
    Ok(GapEvaluation {
        calibration_end: day_text(cutoff),
        holdout_end: day_text(last_day),
        holdout_days,
        gap_evidence: cfg.gap_evidence,
        gaps: crate::run::reliability::gap_reliability((&ids_then, &then), (&ids_now, &now), cfg.gap_evidence),
    })
}
