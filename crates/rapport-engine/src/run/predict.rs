//! The predictive models of `rapport run`, all on a time split of the customers' own
//! history. With W = `churn_window_days` and three snapshots of every customer — at
//! as-of − 2W (S0), as-of − W (S1) and the as-of date (S2) — each model learns how
//! behaviour before a cut-off relates to what happened in the W days after it:
//!
//! - **churn**: buyers at S0 labelled by "no purchase day in (S0, S1]" train a logistic
//!   regression, boosted trees and their blend; the same question one window later
//!   (S1 → S2) validates them; the best by validation AUC is refitted on S1 → S2 and
//!   scores every buyer at S2 (`churn_probability`);
//! - **loyalty**: a linear regression of the mean of the four loyalty indicators where
//!   present (repeat purchase, retention over (S1, S2], referral events, stated
//!   satisfaction) on behaviour at S1; `loyalty_score` is its prediction at S2;
//! - **behaviour**: a softmax regression of the next-window behaviour class (purchase,
//!   return, support, browse, inactive) trained on S0 → S1, its log-loss and calibration
//!   measured on S1 → S2, refitted there and applied at S2 (`behaviour` table).

use rapport_model::classify::{Fitted, Kind};
use rapport_model::kmeans::sample_indices;
use rapport_model::metrics::{auc, best_f1, brier, calibration, log_loss, roc_curve};
use rapport_model::regression::{LinearFit, Softmax, Standardizer};
use rapport_model::rfm::Rfm;

use super::activity::Activity;
use super::features::Features;
use super::ModelInputs;
use crate::config::ModelsConfig;
use crate::results::{
    BehaviourReport, CalibrationBin, CandidateAuc, ChurnReport, ClassCalibration, Coefficient, Fit, LoyaltyReport, OutcomeRate, Skipped,
};
use crate::session::Session;
use crate::Result;

/// What the predictive models give every customer, with their reports.
pub struct Predictions {
    pub churn: Vec<Option<f64>>,
    pub churn_report: Fit<ChurnReport>,
    pub loyalty: Vec<Option<f64>>,
    pub loyalty_report: Fit<LoyaltyReport>,
    pub behaviour: Option<Behaviour>,
    pub behaviour_report: Fit<BehaviourReport>,
    pub outcome_rates: Vec<OutcomeRate>,
    /// The fitted churn and loyalty models over `names`, for scoring between runs.
    pub models: ScoringModels,
}

/// The churn and loyalty models a run scored every customer with, kept (in
/// `models/scoring.bin`) so a customer can be scored again between runs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScoringModels {
    /// The columns of the design matrix ([`matrix`]).
    pub names: Vec<String>,
    pub churn: Option<ChurnModel>,
    pub loyalty: Option<LoyaltyModel>,
}

/// The churn classifier refitted on the latest window, and which of its kinds won.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ChurnModel {
    pub kind: Kind,
    pub fitted: Fitted,
}

impl ChurnModel {
    /// P(churn) of each row of `x` (rows of the model's names).
    pub fn predict(&self, x: &[f64]) -> Vec<f64> {
        self.fitted.predict(self.kind, x)
    }
}

/// The loyalty regression: the columns it uses, their scaling and the fit.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LoyaltyModel {
    /// Positions in the model's names of the columns used.
    pub keep: Vec<usize>,
    pub scaler: Standardizer,
    pub fit: LinearFit,
}

impl LoyaltyModel {
    /// The loyalty score (0–1) of each row of `x` (rows of all the model's `d` names).
    pub fn predict(&self, x: &[f64], d: usize) -> Vec<f64> {
        let (mean, sd) = (&self.scaler.mean, &self.scaler.sd);
        x.chunks_exact(d.max(1))
            .map(|r| {
                let z: Vec<f64> = self.keep.iter().enumerate().map(|(k, &j)| (r[j] - mean[k]) / sd[k]).collect();
                self.fit.predict(&z).clamp(0.0, 1.0)
            })
            .collect()
    }
}

/// The predict stage: the snapshots one and two churn windows back, then churn, loyalty,
/// behaviour and the outcome rates by RFM segment.
pub fn predict(session: &Session<'_>, inputs: &ModelInputs, rfm: &[Option<Rfm>], cfg: &ModelsConfig) -> Result<Predictions> {
    let (day, w) = (inputs.as_of_day, i64::from(cfg.churn_window_days));
    let older = super::snapshots(session, &[day - 2 * w, day - w])?;
    let s0 = Snapshot {
        features: &older[0].0,
        activity: &older[0].1,
        day: day - 2 * w,
    };
    let s1 = Snapshot {
        features: &older[1].0,
        activity: &older[1].1,
        day: day - w,
    };
    let s2 = Snapshot {
        features: &inputs.features,
        activity: &inputs.activity,
        day,
    };
    let names = feature_names(&inputs.activity);
    let (churn_p, churn_report, churn_model) = churn_fitted([&s0, &s1, &s2], &names, cfg.churn_window_days, cfg.seed);
    let (loyalty_p, loyalty_report, loyalty_model) = loyalty_fitted([&s0, &s1, &s2], &names);
    let (behaviour_p, behaviour_report) = behaviour([&s0, &s1, &s2], &names, cfg.seed);
    Ok(Predictions {
        churn: churn_p,
        churn_report,
        loyalty: loyalty_p,
        loyalty_report,
        behaviour: behaviour_p,
        behaviour_report,
        outcome_rates: super::outcomes::by_segment(&s1, &inputs.features, &inputs.buyers, rfm),
        models: ScoringModels {
            names,
            churn: churn_model,
            loyalty: loyalty_model,
        },
    })
}

/// Rows a model trains on at most (a seeded sample beyond that); scoring covers everyone.
const MAX_TRAIN: usize = 200_000;

/// One snapshot of every customer.
pub struct Snapshot<'a> {
    pub features: &'a Features,
    pub activity: &'a Activity,
    /// The last day included (days since 1970-01-01).
    pub day: i64,
}

/// Behaviour classes, in the order of the `behaviour` table.
pub const CLASSES: [&str; 5] = ["purchase", "return", "support", "browse", "inactive"];
const SUPPORT_EVENTS: [&str; 3] = ["support_ticket", "complaint", "query"];

pub const BASE: [&str; 9] = [
    "bought",
    "log_recency_days",
    "log_orders",
    "log_revenue",
    "log_avg_order_value",
    "log_tenure_days",
    "log_purchase_days",
    "log_returned_lines",
    "purchase_days_per_30d",
];

/// The model columns: the base features, then the activity columns of the latest
/// snapshot (but the `activity:` bookkeeping the gap analysis reads).
pub fn feature_names(latest: &Activity) -> Vec<String> {
    BASE.iter()
        .map(|s| s.to_string())
        .chain(latest.names.iter().filter(|n| !n.starts_with("activity:")).cloned())
        .collect()
}

/// The design matrix of `rows` in a snapshot (row-major, `names.len()` columns).
pub fn matrix(s: &Snapshot<'_>, rows: &[usize], names: &[String]) -> Vec<f64> {
    let f = s.features;
    let cols: Vec<Option<&[f64]>> = names[BASE.len()..].iter().map(|n| s.activity.column(n)).collect();
    let mut x = Vec::with_capacity(rows.len() * names.len());
    for &i in rows {
        let bought = f.purchase_days[i] > 0.0;
        let recency = f.last_day[i].map_or(0.0, |d| (s.day - d) as f64);
        let tenure = f.first_day[i].map_or(0.0, |d| (s.day - d) as f64);
        let aov = if f.orders[i] > 0.0 { f.revenue[i] / f.orders[i] } else { 0.0 };
        x.extend([
            f64::from(u8::from(bought)),
            recency.ln_1p(),
            f.orders[i].ln_1p(),
            f.revenue[i].max(0.0).ln_1p(),
            aov.max(0.0).ln_1p(),
            tenure.ln_1p(),
            f.purchase_days[i].ln_1p(),
            f.returned_lines[i].ln_1p(),
            f.purchase_days[i] / (tenure + 1.0) * 30.0,
        ]);
        for (name, c) in names[BASE.len()..].iter().zip(&cols) {
            let v = c.map_or(0.0, |c| c[i]);
            x.push(if name.starts_with("survey:") { v } else { v.max(0.0).ln_1p() });
        }
    }
    x
}

fn events_of(a: &Activity, i: usize, filter: impl Fn(&str) -> bool) -> f64 {
    a.with_prefix("events:").filter(|(t, _)| filter(t)).map(|(_, v)| v[i]).sum()
}

/// What customer `i` did in the window between two snapshots.
pub fn behaviour_class(before: &Snapshot<'_>, after: &Snapshot<'_>, i: usize) -> usize {
    let (a, b) = (before, after);
    let support = |s: &Snapshot<'_>| events_of(s.activity, i, |t| SUPPORT_EVENTS.contains(&t));
    let all = |s: &Snapshot<'_>| events_of(s.activity, i, |_| true);
    if b.features.purchase_days[i] > a.features.purchase_days[i] {
        0
    } else if b.features.returned_lines[i] > a.features.returned_lines[i] {
        1
    } else if support(b) > support(a) {
        2
    } else if all(b) > all(a) {
        3
    } else {
        4
    }
}

fn churned(before: &Snapshot<'_>, after: &Snapshot<'_>, i: usize) -> bool {
    after.features.purchase_days[i] <= before.features.purchase_days[i]
}

fn buyers(s: &Snapshot<'_>) -> Vec<usize> {
    (0..s.features.len()).filter(|&i| s.features.purchase_days[i] > 0.0).collect()
}

fn sample(rows: Vec<usize>, seed: u64) -> Vec<usize> {
    if rows.len() <= MAX_TRAIN {
        return rows;
    }
    let mut pick: Vec<usize> = sample_indices(rows.len(), MAX_TRAIN, seed).into_iter().map(|k| rows[k]).collect();
    pick.sort_unstable();
    pick
}

fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

/// Churn probability of every customer at S2 (`None` for non-buyers), and the report.
pub fn churn(s: [&Snapshot<'_>; 3], names: &[String], window_days: u32, seed: u64) -> (Vec<Option<f64>>, Fit<ChurnReport>) {
    let (p, report, _) = churn_fitted(s, names, window_days, seed);
    (p, report)
}

/// [`churn`], and the model that scored S2.
pub fn churn_fitted(
    s: [&Snapshot<'_>; 3],
    names: &[String],
    window_days: u32,
    seed: u64,
) -> (Vec<Option<f64>>, Fit<ChurnReport>, Option<ChurnModel>) {
    let n = s[2].features.len();
    let d = names.len();
    let train = sample(buyers(s[0]), seed);
    let valid = sample(buyers(s[1]), seed ^ 1);
    let ytr: Vec<bool> = train.iter().map(|&i| churned(s[0], s[1], i)).collect();
    let yva: Vec<bool> = valid.iter().map(|&i| churned(s[1], s[2], i)).collect();
    let enough = |y: &[bool]| y.iter().filter(|&&v| v).count() >= 20 && y.iter().filter(|&&v| !v).count() >= 20;
    if !enough(&ytr) || !enough(&yva) {
        return (
            vec![None; n],
            Fit::Skipped(too_little_history(window_days, train.len(), valid.len())),
            None,
        );
    }
    let xtr = matrix(s[0], &train, names);
    let xva = matrix(s[1], &valid, names);
    let m = Fitted::fit(&xtr, d, &ytr, seed);
    let (kind, a, p, by_kind) = best_model(&m, &xva, &yva);
    let c = best_f1(&p, &yva);
    let (cal, roc) = curves(&p, &yva);
    // Refit on the most recent window and score everyone who has bought.
    let refit = ChurnModel {
        kind,
        fitted: Fitted::fit(&xva, d, &yva, seed),
    };
    let out = score_buyers(s[2], names, |x| refit.predict(x), |p| p);
    let report = ChurnReport {
        model: kind.name().to_string(),
        auc: round4(a),
        horizon_days: window_days,
        label: format!("no purchase day within {window_days} days after the cut-off"),
        train_cutoff: crate::days::day_text(s[0].day),
        validation_cutoff: crate::days::day_text(s[1].day),
        train_customers: train.len(),
        validation_customers: valid.len(),
        validation_churn_rate: round4(yva.iter().filter(|&&v| v).count() as f64 / yva.len() as f64),
        threshold: round4(c.threshold),
        precision: round4(c.precision),
        recall: round4(c.recall),
        f1: round4(c.f1),
        brier: round4(brier(&p, &yva)),
        log_loss: round4(log_loss(&p, &yva)),
        models: by_kind,
        calibration: cal,
        roc,
        features: d,
        gbt_trees: refit.fitted.gbt.best_trees,
    };
    (out, Fit::Fitted(report), Some(refit))
}

/// Why churn is not fitted: fewer than 20 churned or 20 retained buyers in one of the
/// last two windows.
fn too_little_history(window_days: u32, train: usize, valid: usize) -> Skipped {
    Skipped {
        message: format!(
            "too little history for a {window_days}-day churn window: it needs at least 20 churned and 20 retained \
             buyers in each of the last two windows (found {train} and {valid} buyers)"
        ),
        horizon_days: Some(window_days),
    }
}

/// The classifier with the best validation AUC (ties to the first of `Kind::ALL`), that
/// AUC, its validation predictions, and every candidate's AUC.
fn best_model(m: &Fitted, xva: &[f64], yva: &[bool]) -> (Kind, f64, Vec<f64>, std::collections::BTreeMap<String, CandidateAuc>) {
    let mut by_kind = std::collections::BTreeMap::new();
    let mut best = (Kind::Logistic, f64::NEG_INFINITY, Vec::new());
    for k in Kind::ALL {
        let p = m.predict(k, xva);
        let a = auc(&p, yva).unwrap_or(0.5);
        by_kind.insert(k.name().to_string(), CandidateAuc { validation_auc: round4(a) });
        if a > best.1 + 1e-12 {
            best = (k, a, p);
        }
    }
    (best.0, best.1, best.2, by_kind)
}

/// The calibration by deciles and the ROC curve (60 points) of predictions `p`.
fn curves(p: &[f64], y: &[bool]) -> (Vec<CalibrationBin>, Vec<[f64; 2]>) {
    let cal = calibration(p, y, 10)
        .iter()
        .map(|b| CalibrationBin {
            predicted: round4(b.predicted),
            observed: round4(b.observed),
            customers: b.count,
        })
        .collect();
    let roc = roc_curve(p, y, 60).into_iter().map(|(x, y)| [round4(x), round4(y)]).collect();
    (cal, roc)
}

/// `predict` of the feature rows (`names`) of every buyer at snapshot `s`, each value
/// passed through `post`; `None` for customers who have not bought.
fn score_buyers(s: &Snapshot<'_>, names: &[String], predict: impl Fn(&[f64]) -> Vec<f64>, post: impl Fn(f64) -> f64) -> Vec<Option<f64>> {
    let now = buyers(s);
    let p = predict(&matrix(s, &now, names));
    let mut out = vec![None; s.features.len()];
    for (k, &i) in now.iter().enumerate() {
        out[i] = Some(post(p[k]));
    }
    out
}

/// Loyalty score of every buyer at S2, the regression report and the model.
fn loyalty_fitted(s: [&Snapshot<'_>; 3], names: &[String]) -> (Vec<Option<f64>>, Fit<LoyaltyReport>, Option<LoyaltyModel>) {
    let n = s[2].features.len();
    let rows = buyers(s[1]);
    let (indicators, target) = loyalty_target(s, &rows);
    // The indicators themselves are not predictors, and a column that does not vary
    // (every buyer has `bought` = 1) has no coefficient.
    let full = matrix(s[1], &rows, names);
    let keep = loyalty_predictors(&full, names);
    let used: Vec<String> = keep.iter().map(|&j| names[j].clone()).collect();
    let pick = |x: &[f64]| -> Vec<f64> {
        x.chunks_exact(names.len())
            .flat_map(|r| keep.iter().map(|&j| r[j]).collect::<Vec<_>>())
            .collect()
    };
    let x = pick(&full);
    let scaler = Standardizer::fit(&x, used.len());
    let fit = match LinearFit::fit(&scaler.apply(&x), used.len(), &target) {
        Ok(f) => f,
        Err(e) => return (vec![None; n], Fit::skipped(e.message()), None),
    };
    let model = LoyaltyModel { keep, scaler, fit };
    let out = score_buyers(s[2], names, |x| model.predict(x, names.len()), |v| v);
    let fit = &model.fit;
    let coefficients = used
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let c = Coefficient {
                estimate: round4(fit.coefficients[j]),
                std_error: round4(fit.std_errors[j]),
            };
            (name.clone(), c)
        })
        .collect();
    let report = LoyaltyReport {
        target: format!("mean of {} (0–1)", indicators.join(", ")),
        indicators: indicators.iter().map(|s| s.to_string()).collect(),
        customers: rows.len(),
        r2: round4(fit.r2),
        mse: round4(fit.mse),
        intercept: round4(fit.coefficients[used.len()]),
        coefficients,
        note: "coefficients are per standard deviation of each feature".into(),
    };
    (out, Fit::Fitted(report), Some(model))
}

/// The loyalty indicators (repeat purchase and retention; referral and satisfaction
/// where the data have them) and, per buyer in `rows`, their mean as of S1 → S2.
fn loyalty_target(s: [&Snapshot<'_>; 3], rows: &[usize]) -> (Vec<&'static str>, Vec<f64>) {
    let referral = s[2].activity.column("events:referral");
    let satisfaction = s[2].activity.column("survey:satisfaction");
    let mut indicators = vec!["repeat_purchase", "retention"];
    if referral.is_some() {
        indicators.push("referral");
    }
    if satisfaction.is_some() {
        indicators.push("satisfaction");
    }
    let target = rows
        .iter()
        .map(|&i| {
            let mut v = vec![
                f64::from(u8::from(s[1].features.purchase_days[i] >= 2.0)),
                f64::from(u8::from(!churned(s[1], s[2], i))),
            ];
            if let Some(r) = referral {
                v.push(f64::from(u8::from(r[i] > 0.0)));
            }
            // Satisfaction 1–5 scaled to 0–1, only where the customer answered.
            if let Some(sat) = satisfaction.filter(|c| c[i] > 0.0) {
                v.push(((sat[i] - 1.0) / 4.0).clamp(0.0, 1.0));
            }
            v.iter().sum::<f64>() / v.len() as f64
        })
        .collect();
    (indicators, target)
}

/// The columns of `x` (rows of `names`) that predict loyalty: not survey answers or
/// referrals (the indicators themselves), and varying.
fn loyalty_predictors(x: &[f64], names: &[String]) -> Vec<usize> {
    let varies = |j: usize| {
        let mut col = x.chunks_exact(names.len()).map(|r| r[j]);
        let first = col.next();
        col.any(|v| Some(v) != first)
    };
    (0..names.len())
        .filter(|&j| !(names[j].starts_with("survey:") || names[j].ends_with(":referral")) && varies(j))
        .collect()
}

/// Predicted probability of each behaviour class for every customer at S2.
pub struct Behaviour {
    pub classes: Vec<&'static str>,
    /// Per customer, one probability per class.
    pub p: Vec<Vec<f64>>,
}

pub fn behaviour(s: [&Snapshot<'_>; 3], names: &[String], seed: u64) -> (Option<Behaviour>, Fit<BehaviourReport>) {
    let n = s[2].features.len();
    let d = names.len();
    let train = sample((0..n).collect(), seed ^ 2);
    let valid = sample((0..n).collect(), seed ^ 3);
    let ytr: Vec<usize> = train.iter().map(|&i| behaviour_class(s[0], s[1], i)).collect();
    let yva: Vec<usize> = valid.iter().map(|&i| behaviour_class(s[1], s[2], i)).collect();
    // Only the classes the data shows.
    let present: Vec<usize> = (0..CLASSES.len()).filter(|c| ytr.contains(c) || yva.contains(c)).collect();
    if present.len() < 2 {
        return (None, Fit::skipped("fewer than two behaviour classes occur in the last two windows"));
    }
    let remap = |y: &[usize]| -> Vec<usize> { y.iter().map(|c| present.iter().position(|p| p == c).expect("present")).collect() };
    let (ytr, yva) = (remap(&ytr), remap(&yva));
    let k = present.len();
    let xtr_raw = matrix(s[0], &train, names);
    let scaler = Standardizer::fit(&xtr_raw, d);
    let m = Softmax::fit(&scaler.apply(&xtr_raw), d, &ytr, k, 1.0);
    let xva = scaler.apply(&matrix(s[1], &valid, names));
    let pva: Vec<Vec<f64>> = xva.chunks_exact(d).map(|r| m.predict(r)).collect();
    let ll = pva.iter().zip(&yva).map(|(p, &y)| -p[y].max(1e-15).ln()).sum::<f64>() / yva.len() as f64;
    let freq: Vec<f64> = (0..k)
        .map(|c| (ytr.iter().filter(|&&y| y == c).count() as f64 + 0.5) / (ytr.len() as f64 + 0.5 * k as f64))
        .collect();
    let base_ll = yva.iter().map(|&y| -freq[y].ln()).sum::<f64>() / yva.len() as f64;
    let accuracy = pva
        .iter()
        .zip(&yva)
        .filter(|(p, &y)| p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(c, _)| c) == Some(y))
        .count() as f64
        / yva.len() as f64;
    let calibration: Vec<ClassCalibration> = (0..k)
        .map(|c| {
            let predicted = pva.iter().map(|p| p[c]).sum::<f64>() / pva.len() as f64;
            let observed = yva.iter().filter(|&&y| y == c).count() as f64 / yva.len() as f64;
            ClassCalibration {
                class: CLASSES[present[c]].to_string(),
                mean_predicted: round4(predicted),
                observed: round4(observed),
            }
        })
        .collect();
    // Refit on the latest window and predict the next one for everyone.
    let xl_raw = matrix(s[1], &valid, names);
    let scaler2 = Standardizer::fit(&xl_raw, d);
    let m2 = Softmax::fit(&scaler2.apply(&xl_raw), d, &yva, k, 1.0);
    let all: Vec<usize> = (0..n).collect();
    let xnow = scaler2.apply(&matrix(s[2], &all, names));
    let p: Vec<Vec<f64>> = xnow.chunks_exact(d).map(|r| m2.predict(r)).collect();
    let classes: Vec<&'static str> = present.iter().map(|&c| CLASSES[c]).collect();
    let report = BehaviourReport {
        classes: classes.iter().map(|c| c.to_string()).collect(),
        log_loss: round4(ll),
        baseline_log_loss: round4(base_ll),
        accuracy: round4(accuracy),
        calibration,
        converged: m.converged && m2.converged,
        iterations: m2.iterations,
        train_customers: train.len(),
    };
    (Some(Behaviour { classes, p }), Fit::Fitted(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` customers who bought `purchase_days[i]` days, with one activity column.
    fn features(purchase_days: &[f64], returned: &[f64], day: i64) -> Features {
        let n = purchase_days.len();
        Features {
            customer_id: (0..n).map(|i| format!("c{i:04}")).collect(),
            first_order_at: vec![None; n],
            last_order_at: vec![None; n],
            orders: purchase_days.to_vec(),
            revenue: purchase_days.iter().map(|p| 20.0 * p).collect(),
            first_day: purchase_days.iter().map(|p| (*p > 0.0).then_some(day - 200)).collect(),
            last_day: purchase_days.iter().map(|p| (*p > 0.0).then_some(day - 10)).collect(),
            purchase_days: purchase_days.to_vec(),
            repeat_spend: vec![None; n],
            returned_lines: returned.to_vec(),
        }
    }

    fn activity(columns: &[(&str, Vec<f64>)]) -> Activity {
        Activity {
            names: columns.iter().map(|c| c.0.to_string()).collect(),
            values: columns.iter().map(|c| c.1.clone()).collect(),
        }
    }

    #[test]
    fn behaviour_classes_follow_what_changed_between_snapshots() {
        // Customers: bought again, returned a line, opened a ticket, browsed, nothing.
        let f0 = features(&[1.0; 5], &[0.0; 5], 100);
        let f1 = features(&[2.0, 1.0, 1.0, 1.0, 1.0], &[0.0, 1.0, 0.0, 0.0, 0.0], 190);
        let a0 = activity(&[("events:support_ticket", vec![0.0; 5]), ("events:view", vec![1.0; 5])]);
        let a1 = activity(&[
            ("events:support_ticket", vec![0.0, 0.0, 1.0, 0.0, 0.0]),
            ("events:view", vec![1.0, 1.0, 1.0, 3.0, 1.0]),
        ]);
        let before = Snapshot {
            features: &f0,
            activity: &a0,
            day: 100,
        };
        let after = Snapshot {
            features: &f1,
            activity: &a1,
            day: 190,
        };
        let classes: Vec<&str> = (0..5).map(|i| CLASSES[behaviour_class(&before, &after, i)]).collect();
        assert_eq!(classes, ["purchase", "return", "support", "browse", "inactive"]);
        assert_eq!((0..5).filter(|&i| churned(&before, &after, i)).count(), 4);
    }

    #[test]
    fn the_design_matrix_logs_counts_and_keeps_survey_scores() {
        let f = features(&[3.0, 0.0], &[1.0, 0.0], 100);
        let a = activity(&[
            ("events:view", vec![9.0, 0.0]),
            ("survey:satisfaction", vec![4.0, 0.0]),
            ("activity:lines", vec![5.0, 0.0]),
        ]);
        let s = Snapshot {
            features: &f,
            activity: &a,
            day: 100,
        };
        let names = feature_names(&a);
        assert_eq!(names.len(), BASE.len() + 2, "bookkeeping columns are not features: {names:?}");
        let x = matrix(&s, &[0, 1], &names);
        let d = names.len();
        let row = &x[..d];
        assert_eq!(row[0], 1.0);
        assert!((row[1] - 11f64.ln()).abs() < 1e-12, "log(1 + recency 10)");
        assert!((row[2] - 4f64.ln()).abs() < 1e-12, "log(1 + 3 orders)");
        assert!((row[8] - 3.0 / 201.0 * 30.0).abs() < 1e-12, "purchase days per 30 days of tenure");
        assert!((row[BASE.len()] - 10f64.ln()).abs() < 1e-12, "log(1 + 9 views)");
        assert_eq!(row[BASE.len() + 1], 4.0, "a survey score as answered");
        assert!(x[d..].iter().all(|v| *v == 0.0), "a customer with nothing is all zeros");
    }

    /// Snapshots at days 100, 190 and 280 with the same activity.
    fn snapshots<'a>(f: &'a [Features], a: &'a Activity) -> Vec<Snapshot<'a>> {
        f.iter()
            .zip([100, 190, 280])
            .map(|(f, day)| Snapshot {
                features: f,
                activity: a,
                day,
            })
            .collect()
    }

    /// 400 buyers; those who browse keep buying, the others stop.
    fn planted_churn() -> ([Features; 3], Activity) {
        let active: Vec<f64> = (0..400).map(|i| f64::from(u8::from(i % 2 == 0))).collect();
        let days = [100, 190, 280];
        let f: Vec<Features> = (0..3)
            .map(|k| {
                let p: Vec<f64> = active.iter().map(|a| 1.0 + a * k as f64).collect();
                features(&p, &[0.0; 400], days[k])
            })
            .collect();
        let views = activity(&[("events:view", active.iter().map(|a| 6.0 * a).collect())]);
        (f.try_into().unwrap_or_else(|_| unreachable!()), views)
    }

    #[test]
    fn churn_finds_a_planted_signal_and_scores_every_buyer() {
        let (f, a) = planted_churn();
        let s = snapshots(&f, &a);
        let names = feature_names(&a);
        let (p, report) = churn([&s[0], &s[1], &s[2]], &names, 90, 7);
        let Fit::Fitted(r) = report else { panic!("fitted: {report:?}") };
        assert!(r.auc > 0.95, "{}", r.auc);
        assert_eq!((r.train_customers, r.validation_customers, r.horizon_days), (400, 400, 90));
        assert!((r.validation_churn_rate - 0.5).abs() < 1e-12);
        assert!(p.iter().all(|v| v.is_some_and(|v| (0.0..=1.0).contains(&v))));
        let mean = |parity: usize| (0..400).filter(|i| i % 2 == parity).map(|i| p[i].unwrap()).sum::<f64>() / 200.0;
        assert!(mean(1) > mean(0) + 0.5, "those who stopped: {} vs {}", mean(1), mean(0));
    }

    #[test]
    fn churn_needs_twenty_of_each_outcome_in_both_windows() {
        let f: Vec<Features> = [100, 190, 280].iter().map(|&d| features(&[1.0; 30], &[0.0; 30], d)).collect();
        let a = Activity::default();
        let s = snapshots(&f, &a);
        let (p, report) = churn([&s[0], &s[1], &s[2]], &feature_names(&a), 90, 7);
        assert!(p.iter().all(Option::is_none));
        let Fit::Skipped(why) = report else { panic!("skipped") };
        assert_eq!(why.horizon_days, Some(90));
        assert!(why.message.contains("90-day churn window"), "{}", why.message);
    }
}
