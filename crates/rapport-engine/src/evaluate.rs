//! `rapport evaluate --holdout-days N`: the calibration/holdout checks of the CLV
//! models, as Fader, Hardie & Lee (2005) report them — the holdout forecast against what
//! happened, in total and by calibration frequency; and `rapport evaluate gaps`, the
//! held-out reliability of the gap evidence, which needs no truth.

use std::collections::BTreeMap;

use rapport_model::bgnbd::BgNbd;
use rapport_model::pareto_nbd::ParetoNbd;
use rapport_store::Workspace;

use crate::run::config::ModelsConfig;
use rapport_model::metrics;

use crate::results::{
    CalibrationBin, ChurnCheck, ChurnHoldout, ClvFit, EvidenceBin, Fit, FrequencyBin, GapEvaluation, HoldoutForecast, HoldoutReport,
    Reliability, TypeReliability,
};
use crate::run::gaps::{GapRow, GapType};
use crate::run::predict::{self, Snapshot};
use crate::run::{day_text, model_inputs, snapshots, ModelInputs};
use crate::session::Session;
use crate::{EngineError, Result};

/// Splits at `holdout_days` before the last order date, fits on the calibration
/// period and compares forecasts with the holdout.
pub fn evaluate(ws: &Workspace, cfg: &ModelsConfig, holdout_days: u32) -> Result<HoldoutReport> {
    if holdout_days == 0 {
        return Err(EngineError::Usage("--holdout-days must be at least 1".into()));
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
        return Err(EngineError::Usage(format!(
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
            actual: mean(&holdout),
            bgnbd: mean(&e_bg),
            pareto_nbd: mean(&e_pn),
        });
    }
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
        return Err(EngineError::Usage("--holdout-days must be at least 1".into()));
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
        gaps: gap_reliability((&ids_then, &then), (&ids_now, &now), cfg.gap_evidence),
    })
}

/// Per gap type, the evidence of the statements judged at both dates (same customer,
/// subject and answer): bins of the earlier evidence with both means, the weighted mean
/// gap, and how many of the gaps reported earlier (evidence ≥ `threshold`) are still
/// reported.
pub fn gap_reliability(
    (ids_then, then): (&[String], &[GapRow]),
    (ids_now, now): (&[String], &[GapRow]),
    threshold: f64,
) -> BTreeMap<String, TypeReliability> {
    type Key = (String, GapType, String);
    let key = |ids: &[String], g: &GapRow| -> Key { (ids[g.customer].clone(), g.gap_type, g.subject.clone()) };
    let later: BTreeMap<Key, (&str, f64)> = now
        .iter()
        .map(|g| (key(ids_now, g), (g.reported_text.as_str(), g.evidence)))
        .collect();
    const EDGES: [f64; 6] = [0.0, 0.5, 0.8, 0.9, 0.95, 0.99];
    let mut by_type = BTreeMap::new();
    for t in [GapType::Frequency, GapType::Category, GapType::Satisfaction] {
        // (e, e') of the statements judged at both dates with the same answer.
        let pairs: Vec<(f64, f64)> = then
            .iter()
            .filter(|g| g.gap_type == t)
            .filter_map(|g| {
                later
                    .get(&key(ids_then, g))
                    .filter(|(text, _)| *text == g.reported_text)
                    .map(|&(_, e2)| (g.evidence, e2))
            })
            .collect();
        if pairs.is_empty() {
            let message = "no statement judged at both dates".to_string();
            by_type.insert(t.to_string(), TypeReliability::Unmatched { statements: 0, message });
            continue;
        }
        let mut bins = Vec::new();
        let mut weighted_gap = 0.0;
        for (b, &lo) in EDGES.iter().enumerate() {
            let hi = EDGES.get(b + 1).copied().unwrap_or(f64::INFINITY);
            let members: Vec<&(f64, f64)> = pairs.iter().filter(|(e, _)| *e >= lo && *e < hi).collect();
            if members.is_empty() {
                continue;
            }
            let m = members.len() as f64;
            let (then_mean, now_mean) = (
                members.iter().map(|p| p.0).sum::<f64>() / m,
                members.iter().map(|p| p.1).sum::<f64>() / m,
            );
            weighted_gap += m * (then_mean - now_mean).abs();
            bins.push(EvidenceBin {
                from: lo,
                to: hi.min(1.0),
                statements: members.len(),
                evidence_at_cutoff: then_mean,
                evidence_with_later_data: now_mean,
            });
        }
        let flagged: Vec<&(f64, f64)> = pairs.iter().filter(|(e, _)| *e >= threshold).collect();
        let kept = flagged.iter().filter(|(_, e2)| *e2 >= threshold).count();
        let any = !flagged.is_empty();
        let r = Reliability {
            statements: pairs.len(),
            bins,
            mean_abs_gap: weighted_gap / pairs.len() as f64,
            reported_at_cutoff: flagged.len(),
            still_reported: kept,
            confirmed_share: any.then(|| kept as f64 / flagged.len() as f64),
            mean_later_evidence_of_reported: any.then(|| flagged.iter().map(|p| p.1).sum::<f64>() / flagged.len() as f64),
        };
        by_type.insert(t.to_string(), TypeReliability::Checked(r));
    }
    by_type
}
