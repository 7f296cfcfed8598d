//! The typed results of the engine: `reports/models.json`, one struct per section, its
//! shape as in the spec's outputs.md (more keys allowed, none renamed), and what
//! `evaluate`, `evaluate gaps`, `evaluate recs` and `train` find. The engine, the CLI and
//! the report read these fields; JSON exists only where the file is written and read
//! back ([`ModelsReport::to_json`], [`ModelsReport::from_json`]) and where the CLI
//! prints `--json`.
//!
//! A float that is not a number (an undefined statistic) is written as `null`, as JSON
//! has no NaN; fields that can be undefined read `null` back as NaN ([`nan`]).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `reports/models.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelsReport {
    pub as_of: String,
    pub time_unit: String,
    /// The run's horizons and CLV settings: with the fitted parameters, what scoring a
    /// customer again between runs needs (live rescoring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring: Option<ScoringSettings>,
    pub customers: usize,
    pub buyers: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgnbd: Option<ClvFit<BgNbdParams>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pareto_nbd: Option<ClvFit<ParetoNbdParams>>,
    pub gamma_gamma: ClvFit<GammaGammaParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kmeans: Option<ClusterReport>,
    pub churn: Fit<ChurnReport>,
    pub loyalty: Fit<LoyaltyReport>,
    pub behaviour: Fit<BehaviourReport>,
    pub outcome_rates: Vec<OutcomeRate>,
    pub forecasts: ForecastReport,
    pub gaps: GapReport,
    pub actions: ActionsReport,
    pub uplift: Vec<UpliftReport>,
    pub recommendations: Fit<RecsReport>,
}

/// The settings of a run that scoring one customer needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoringSettings {
    /// Horizons of the `expected_orders_{days}d` columns.
    pub horizons_days: Vec<u32>,
    pub clv_horizon_days: u32,
    pub margin: f64,
    pub discount_rate: f64,
}

impl ModelsReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a models report serialises")
    }

    /// Reads models.json back; the error says what does not fit the shape.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// A model that may not have been fitted: in JSON, its report with `"fitted": true`, or
/// `{"fitted": false, "message": …}` saying why not.
#[derive(Debug, Clone, PartialEq)]
pub enum Fit<T> {
    Fitted(T),
    Skipped(Skipped),
}

/// Why a model was not fitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub message: String,
    /// The churn window the churn model would have used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon_days: Option<u32>,
}

impl<T> Fit<T> {
    pub fn skipped(message: impl Into<String>) -> Self {
        Fit::Skipped(Skipped {
            message: message.into(),
            horizon_days: None,
        })
    }

    pub fn fitted(&self) -> Option<&T> {
        match self {
            Fit::Fitted(t) => Some(t),
            Fit::Skipped(_) => None,
        }
    }
}

impl<T: Serialize> Serialize for Fit<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Tagged<'a, R> {
            fitted: bool,
            #[serde(flatten)]
            report: &'a R,
        }
        match self {
            Fit::Fitted(report) => Tagged { fitted: true, report }.serialize(s),
            Fit::Skipped(report) => Tagged { fitted: false, report }.serialize(s),
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Fit<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Tagged {
            fitted: bool,
            #[serde(flatten)]
            rest: serde_json::Map<String, serde_json::Value>,
        }
        let t = Tagged::deserialize(d)?;
        let rest = serde_json::Value::Object(t.rest);
        let out = if t.fitted {
            serde_json::from_value(rest).map(Fit::Fitted)
        } else {
            serde_json::from_value(rest).map(Fit::Skipped)
        };
        out.map_err(serde::de::Error::custom)
    }
}

/// Reads `null` as NaN (how serde_json writes a non-finite float).
pub mod nan {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(*v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// A CLV model's fit: its parameters, or only why it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClvFit<P> {
    #[serde(flatten)]
    pub params: Option<P>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_likelihood: Option<f64>,
    pub converged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<usize>,
    /// Distinct histories the likelihood was evaluated on (BG/NBD, Pareto/NBD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<usize>,
    /// Customers with repeat spend (Gamma-Gamma).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customers: Option<f64>,
    pub message: String,
}

impl<P> ClvFit<P> {
    /// A fit that did not happen, with the reason.
    pub fn failed(message: impl Into<String>) -> Self {
        ClvFit {
            params: None,
            log_likelihood: None,
            converged: false,
            iterations: None,
            groups: None,
            customers: None,
            message: message.into(),
        }
    }

    /// Parameters of a fit, if it happened.
    pub fn params(&self) -> Option<&P> {
        self.params.as_ref()
    }
}

impl<P, M: Into<P>> From<rapport_model::btyd::Fit<M>> for ClvFit<P> {
    fn from(f: rapport_model::btyd::Fit<M>) -> Self {
        ClvFit {
            params: Some(f.params.into()),
            log_likelihood: Some(f.log_likelihood),
            converged: f.converged,
            iterations: Some(f.iterations),
            groups: Some(f.groups),
            customers: None,
            message: f.message,
        }
    }
}

impl From<&rapport_model::gamma_gamma::GammaGammaFit> for ClvFit<GammaGammaParams> {
    fn from(f: &rapport_model::gamma_gamma::GammaGammaFit) -> Self {
        ClvFit {
            params: Some(f.params.into()),
            log_likelihood: Some(f.log_likelihood),
            converged: f.converged,
            iterations: Some(f.iterations),
            groups: None,
            customers: Some(f.customers),
            message: f.message.clone(),
        }
    }
}

/// BG/NBD parameters (α in the run's time unit).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BgNbdParams {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

impl From<rapport_model::bgnbd::BgNbd> for BgNbdParams {
    fn from(p: rapport_model::bgnbd::BgNbd) -> Self {
        BgNbdParams {
            r: p.r,
            alpha: p.alpha,
            a: p.a,
            b: p.b,
        }
    }
}

/// Pareto/NBD parameters (α and β in the run's time unit).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ParetoNbdParams {
    pub r: f64,
    pub alpha: f64,
    pub s: f64,
    pub beta: f64,
}

impl From<rapport_model::pareto_nbd::ParetoNbd> for ParetoNbdParams {
    fn from(p: rapport_model::pareto_nbd::ParetoNbd) -> Self {
        ParetoNbdParams {
            r: p.r,
            alpha: p.alpha,
            s: p.s,
            beta: p.beta,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GammaGammaParams {
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

impl From<rapport_model::gamma_gamma::GammaGamma> for GammaGammaParams {
    fn from(p: rapport_model::gamma_gamma::GammaGamma) -> Self {
        GammaGammaParams {
            p: p.p,
            q: p.q,
            gamma: p.gamma,
        }
    }
}

/// The clustering of buyers (`kmeans` in models.json, whichever method ran).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum ClusterReport {
    Kmeans(KMeansReport),
    Dbscan(DbscanReport),
}

impl ClusterReport {
    /// Number of clusters.
    pub fn k(&self) -> usize {
        match self {
            ClusterReport::Kmeans(r) => r.k,
            ClusterReport::Dbscan(r) => r.k,
        }
    }

    /// Each cluster's name ("cluster 2: frequent, high spend").
    pub fn names(&self) -> &[String] {
        match self {
            ClusterReport::Kmeans(r) => &r.names,
            ClusterReport::Dbscan(r) => &r.names,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KMeansReport {
    pub k: usize,
    pub k_min: usize,
    pub k_max: usize,
    pub criterion: String,
    #[serde(with = "nan")]
    pub silhouette: f64,
    #[serde(with = "nan")]
    pub inertia: f64,
    pub iterations: usize,
    pub converged: bool,
    /// Silhouette of each k tried (keys are k).
    pub silhouette_by_k: BTreeMap<String, Option<f64>>,
    /// The gap statistic and its standard error by k (keys are k).
    pub gap_by_k: BTreeMap<String, GapStatistic>,
    pub gap_supported_k: Vec<usize>,
    pub gap_first_k: Option<usize>,
    pub features: Vec<String>,
    pub transform: String,
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GapStatistic {
    #[serde(with = "nan")]
    pub gap: f64,
    #[serde(with = "nan")]
    pub s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbscanReport {
    pub k: usize,
    pub eps: f64,
    pub min_points: usize,
    pub noise: usize,
    #[serde(with = "nan")]
    pub noise_share: f64,
    pub fitted_on: usize,
    pub sizes: Vec<usize>,
    pub features: Vec<String>,
    pub transform: String,
    pub names: Vec<String>,
}

/// The churn classifier: validation metrics on the later window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnReport {
    pub model: String,
    #[serde(with = "nan")]
    pub auc: f64,
    pub horizon_days: u32,
    pub label: String,
    pub train_cutoff: String,
    pub validation_cutoff: String,
    pub train_customers: usize,
    pub validation_customers: usize,
    #[serde(with = "nan")]
    pub validation_churn_rate: f64,
    #[serde(with = "nan")]
    pub threshold: f64,
    #[serde(with = "nan")]
    pub precision: f64,
    #[serde(with = "nan")]
    pub recall: f64,
    #[serde(with = "nan")]
    pub f1: f64,
    #[serde(with = "nan")]
    pub brier: f64,
    #[serde(with = "nan")]
    pub log_loss: f64,
    /// Validation AUC of each candidate (logistic, gbt, blend).
    pub models: BTreeMap<String, CandidateAuc>,
    pub calibration: Vec<CalibrationBin>,
    /// The ROC curve as (false positive rate, true positive rate) points.
    pub roc: Vec<[f64; 2]>,
    pub features: usize,
    pub gbt_trees: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CandidateAuc {
    #[serde(with = "nan")]
    pub validation_auc: f64,
}

/// Predicted against observed rate in one bin of predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    #[serde(with = "nan")]
    pub predicted: f64,
    #[serde(with = "nan")]
    pub observed: f64,
    pub customers: usize,
}

/// The loyalty regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoyaltyReport {
    pub target: String,
    pub indicators: Vec<String>,
    pub customers: usize,
    #[serde(with = "nan")]
    pub r2: f64,
    #[serde(with = "nan")]
    pub mse: f64,
    #[serde(with = "nan")]
    pub intercept: f64,
    /// Per standard deviation of each feature.
    pub coefficients: BTreeMap<String, Coefficient>,
    pub note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Coefficient {
    #[serde(with = "nan")]
    pub estimate: f64,
    #[serde(with = "nan")]
    pub std_error: f64,
}

/// The next-window behaviour classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BehaviourReport {
    pub classes: Vec<String>,
    #[serde(with = "nan")]
    pub log_loss: f64,
    #[serde(with = "nan")]
    pub baseline_log_loss: f64,
    #[serde(with = "nan")]
    pub accuracy: f64,
    pub calibration: Vec<ClassCalibration>,
    pub converged: bool,
    pub iterations: usize,
    pub train_customers: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassCalibration {
    pub class: String,
    #[serde(with = "nan")]
    pub mean_predicted: f64,
    #[serde(with = "nan")]
    pub observed: f64,
}

/// One row of the `outcome_rates` table: P(outcome | segment), shrunk, with its 95 %
/// credible interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRate {
    pub outcome: String,
    pub segment: String,
    pub customers: f64,
    pub events: f64,
    #[serde(with = "nan")]
    pub raw_rate: f64,
    #[serde(with = "nan")]
    pub rate: f64,
    #[serde(with = "nan")]
    pub lower: f64,
    #[serde(with = "nan")]
    pub upper: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastReport {
    pub horizon_weeks: usize,
    pub weeks_observed: usize,
    pub series: Vec<SeriesFit>,
}

/// One forecast series' smoothing parameters and its total over the horizon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesFit {
    pub series: String,
    pub metric: String,
    pub weeks: usize,
    pub season: usize,
    #[serde(with = "nan")]
    pub alpha: f64,
    #[serde(with = "nan")]
    pub beta: f64,
    #[serde(with = "nan")]
    pub gamma: f64,
    #[serde(with = "nan")]
    pub phi: f64,
    #[serde(with = "nan")]
    pub sigma: f64,
    #[serde(with = "nan")]
    pub next_12_weeks: f64,
}

/// The information-gap analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapReport {
    pub surveyed_customers: usize,
    pub evidence_threshold: f64,
    pub min_tenure_days: u32,
    /// Reported gaps by `type:direction`.
    pub gaps: BTreeMap<String, usize>,
    pub judged: Judged,
    /// Statements not judged, by gap type and reason.
    pub not_judged: BTreeMap<String, BTreeMap<String, usize>>,
    pub profile_gaps: usize,
    pub knowledge_gaps: Vec<KnowledgeSummary>,
    /// Gap types not computed, with what they need.
    pub not_computed: BTreeMap<String, String>,
    /// The held-out check of the evidence (when `gap_check_days` > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reliability: Option<GapCheck>,
}

/// The gap types whose statements were judged (absent: not judged).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Judged {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<CategoryJudgement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<Judgement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub satisfaction: Option<SatisfactionJudgement>,
}

impl Judged {
    /// (gap type, its common figures), in the order of the JSON keys.
    pub fn each(&self) -> Vec<(&'static str, &Judgement)> {
        let mut out = Vec::new();
        if let Some(c) = &self.category {
            out.push(("category", &c.judgement));
        }
        if let Some(f) = &self.frequency {
            out.push(("frequency", f));
        }
        if let Some(s) = &self.satisfaction {
            out.push(("satisfaction", &s.judgement));
        }
        out
    }
}

/// Statements of one type judged, gaps among them, and the fitted misreport share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub statements: usize,
    pub gaps: usize,
    #[serde(with = "nan")]
    pub misreport_share: f64,
    pub em_iterations: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryJudgement {
    #[serde(flatten)]
    pub judgement: Judgement,
    pub preference_ratio: f64,
    pub prior: CategoryPrior,
}

/// The two-component prior of category shares the category judgement pools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryPrior {
    #[serde(with = "nan")]
    pub diffuse_weight: f64,
    #[serde(with = "nan")]
    pub diffuse_precision: f64,
    #[serde(with = "nan")]
    pub favourite_precision: f64,
    #[serde(with = "nan")]
    pub favourite_boost: f64,
    pub converged: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SatisfactionJudgement {
    #[serde(flatten)]
    pub judgement: Judgement,
    /// Complaints per order of the satisfied and the dissatisfied class.
    pub p_complaint_per_order: [f64; 2],
    /// Share who left, of the satisfied and the dissatisfied class.
    pub left_share: [f64; 2],
    #[serde(with = "nan")]
    pub satisfied_share: f64,
}

/// A significant knowledge shortfall of a segment (the top three per segment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeSummary {
    pub segment_id: String,
    pub segment: String,
    pub subject: String,
    pub rank: usize,
    pub segment_rate: f64,
    pub reference_rate: f64,
    pub q_value: f64,
    pub customers_affected: usize,
}

/// The gap evidence at a cut-off against the same statements judged now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapCheck {
    pub calibration_end: String,
    pub days: u32,
    pub gaps: Checked,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Checked {
    ByType(BTreeMap<String, TypeReliability>),
    NotChecked { message: String },
}

/// The held-out reliability of one gap type's evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TypeReliability {
    Checked(Reliability),
    Unmatched { statements: usize, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reliability {
    pub statements: usize,
    pub bins: Vec<EvidenceBin>,
    #[serde(with = "nan")]
    pub mean_abs_gap: f64,
    pub reported_at_cutoff: usize,
    pub still_reported: usize,
    /// Of the gaps reported at the cut-off, the share still reported (none reported: null).
    pub confirmed_share: Option<f64>,
    pub mean_later_evidence_of_reported: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceBin {
    pub from: f64,
    pub to: f64,
    pub statements: usize,
    pub evidence_at_cutoff: f64,
    pub evidence_with_later_data: f64,
}

/// The next-best-action campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionsReport {
    pub campaign_id: String,
    pub control_share: f64,
    pub seed: u64,
    pub max_actions_per_customer: usize,
    pub cooldown_days: u32,
    pub customers_in_cooldown: usize,
    pub customers_without_marketing_consent: usize,
    pub consent_purposes_recorded: Vec<String>,
    pub rows: usize,
    pub rules: Vec<RuleReport>,
}

/// What one rule of the policy matched and where its customers went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleReport {
    pub action: String,
    pub priority: usize,
    pub marketing: bool,
    pub matched: usize,
    pub blocked_no_marketing_consent: usize,
    pub blocked_no_channel_consent: usize,
    pub capped: usize,
    pub treatment: usize,
    pub control: usize,
}

/// One campaign action's measured effect (a row of the `uplift` table, in short).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpliftReport {
    pub campaign_id: String,
    pub action: String,
    pub treated: u64,
    pub control: u64,
    pub treated_rate: Option<f64>,
    pub control_rate: Option<f64>,
    pub uplift: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub verdict: String,
    pub customers_in_both_groups: u64,
}

/// The recommender: blend weights, settings and association rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecsReport {
    pub model: String,
    pub weights: BlendWeights,
    pub weight_validation: WeightValidation,
    pub neighbours: usize,
    pub content_field_weights: BTreeMap<String, f64>,
    pub als: AlsSettings,
    pub rows: usize,
    pub association_rules: RulesReport,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BlendWeights {
    pub item_knn: f64,
    pub als: f64,
    pub co_purchase: f64,
    pub content: f64,
}

impl From<[f64; 4]> for BlendWeights {
    fn from(w: [f64; 4]) -> Self {
        BlendWeights {
            item_knn: w[0],
            als: w[1],
            co_purchase: w[2],
            content: w[3],
        }
    }
}

/// How the blend weights were chosen on the days before the as-of date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WeightValidation {
    Validated {
        validation_from: String,
        customers: usize,
        tried: Vec<WeightTrial>,
    },
    Defaults {
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightTrial {
    pub weights: [f64; 4],
    pub precision_at_k: f64,
    pub ndcg_at_k: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AlsSettings {
    pub factors: usize,
    pub iterations: usize,
    pub regularization: f64,
    pub alpha: f64,
}

impl AlsSettings {
    pub fn of(cfg: &crate::config::ModelsConfig) -> Self {
        AlsSettings {
            factors: cfg.als_factors,
            iterations: cfg.als_iterations,
            regularization: cfg.als_regularization,
            alpha: cfg.als_alpha,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulesReport {
    pub orders: usize,
    pub min_support: f64,
    pub min_confidence: f64,
    pub rules: Vec<RuleFound>,
}

/// An association rule: customers who bought the antecedent on a day bought the
/// consequent that day too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleFound {
    pub antecedent: Vec<String>,
    pub consequent: String,
    pub support: f64,
    pub support_count: u32,
    pub confidence: f64,
    pub lift: f64,
}

/// `rapport evaluate --holdout-days N`: the CLV models fitted on the calibration period
/// against what happened in the holdout (Fader, Hardie & Lee 2005), and the churn model
/// as the run would have fitted it at the cut-off.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldoutReport {
    pub churn: ChurnHoldout,
    pub calibration_end: String,
    pub holdout_end: String,
    pub holdout_days: u32,
    pub time_unit: String,
    pub customers: usize,
    /// Repeat purchase days in the holdout, all customers together.
    pub holdout_actual: f64,
    pub holdout_forecast: HoldoutForecast,
    pub bgnbd: ClvFit<BgNbdParams>,
    pub pareto_nbd: ClvFit<ParetoNbdParams>,
    pub by_calibration_frequency: Vec<FrequencyBin>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HoldoutForecast {
    #[serde(with = "nan")]
    pub bgnbd: f64,
    #[serde(with = "nan")]
    pub pareto_nbd: f64,
}

/// Customers with `x` repeat purchases in the calibration period ("7+" for seven or
/// more): their mean holdout purchases, actual and forecast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrequencyBin {
    pub x: String,
    pub customers: usize,
    pub actual: f64,
    #[serde(with = "nan")]
    pub bgnbd: f64,
    #[serde(with = "nan")]
    pub pareto_nbd: f64,
}

/// The churn model checked on the holdout, or why it was not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnHoldout {
    pub evaluated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(flatten)]
    pub check: Option<ChurnCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnCheck {
    pub model: String,
    pub window_days: u32,
    pub customers: usize,
    pub churn_rate: f64,
    pub auc: Option<f64>,
    #[serde(with = "nan")]
    pub brier: f64,
    #[serde(with = "nan")]
    pub log_loss: f64,
    #[serde(with = "nan")]
    pub precision: f64,
    #[serde(with = "nan")]
    pub recall: f64,
    #[serde(with = "nan")]
    pub f1: f64,
    #[serde(with = "nan")]
    pub threshold: f64,
    pub calibration: Vec<CalibrationBin>,
}

/// `rapport evaluate gaps`: the gap evidence at a cut-off against the same statements
/// judged with the later data, per gap type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapEvaluation {
    pub calibration_end: String,
    pub holdout_end: String,
    pub holdout_days: u32,
    pub gap_evidence: f64,
    pub gaps: BTreeMap<String, TypeReliability>,
}

/// `rapport evaluate recs`: every recommender alone, the blend and popularity on a time
/// split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecsEvaluation {
    pub split: String,
    pub k: usize,
    pub customers_evaluated: usize,
    pub items: usize,
    pub fit_seconds: f64,
    pub weights: BlendWeights,
    pub weight_validation: WeightValidation,
    pub als: AlsSettings,
    /// By model name: item_knn_cosine, item_knn_bm25, als, co_purchase, content,
    /// popular, blend.
    pub models: BTreeMap<String, RankingScore>,
}

/// Ranking quality at k over the evaluated customers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankingScore {
    pub precision_at_k: f64,
    pub recall_at_k: f64,
    pub ndcg_at_k: f64,
    pub coverage: f64,
}

/// `rapport train`: the best classifier by cross-validated AUC (the `--json` contract:
/// `model`, `auc_mean`, `auc_sd`, `folds`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    pub model: String,
    pub auc_mean: f64,
    pub auc_sd: f64,
    pub folds: usize,
    pub seed: u64,
    pub rows: usize,
    pub positives: usize,
    pub rows_without_label: usize,
    pub features: usize,
    /// Columns not used, with why.
    pub dropped_columns: BTreeMap<String, String>,
    pub models: BTreeMap<String, CrossValidated>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossValidated {
    pub auc_mean: f64,
    pub auc_sd: f64,
    pub auc_folds: Vec<f64>,
}

/// One recommendation for a customer (a row of the `recommendations` table, or of
/// `rapport recommend --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub rank: usize,
    pub product_id: String,
    pub score: f64,
    /// Which model put it there.
    pub reason: String,
}

/// `rapport explain`: everything known about one customer, the numbers behind each.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub customer_id: String,
    /// Every source system's id of the customer, and what matched it.
    pub sources: Vec<Record>,
    /// The profile rows of every source (absent without profiles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profiles: Option<Vec<Record>>,
    /// The customer's row of the `customers` table (null when there is none).
    pub scores: Option<Record>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behaviour: Option<Vec<Record>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub survey_answers: Option<Vec<Record>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gaps: Option<Vec<Record>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consents: Option<Vec<Record>>,
}

/// One row of a query, its columns in order (a JSON object in output).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record(pub Vec<(String, Cell)>);

impl Record {
    /// The cell of `column` (`Cell::Null` when there is no such column).
    pub fn get(&self, column: &str) -> &Cell {
        self.0.iter().find(|(c, _)| c == column).map_or(&Cell::Null, |(_, v)| v)
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// A value of a query result: numbers stay numbers, anything else (times, dates,
/// masked values) is its text.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Cell {
    pub fn is_null(&self) -> bool {
        matches!(self, Cell::Null)
    }

    /// The text of a text cell.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Cell::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The value of a true/false cell.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Cell::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value of a number cell.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Cell::Float(x) => Some(*x),
            Cell::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The value of an integer cell.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Cell::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl std::fmt::Display for Cell {
    /// As a person reads it: whole numbers without decimals, others to four places.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => f.write_str("null"),
            Cell::Bool(b) => write!(f, "{b}"),
            Cell::Int(i) => write!(f, "{i}"),
            Cell::Float(x) if x.fract() == 0.0 => write!(f, "{x}"),
            Cell::Float(x) => write!(f, "{x:.4}"),
            Cell::Text(t) => f.write_str(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipped_model_reads_back_as_skipped_and_a_fitted_one_as_fitted() {
        let s: Fit<Coefficient> = Fit::skipped("too little");
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(text, r#"{"fitted":false,"message":"too little"}"#);
        assert_eq!(serde_json::from_str::<Fit<Coefficient>>(&text).unwrap(), s);
        let f = Fit::Fitted(Coefficient {
            estimate: 1.5,
            std_error: f64::NAN,
        });
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(text, r#"{"fitted":true,"estimate":1.5,"std_error":null}"#);
        match serde_json::from_str::<Fit<Coefficient>>(&text).unwrap() {
            Fit::Fitted(c) => assert!(c.estimate == 1.5 && c.std_error.is_nan()),
            Fit::Skipped(_) => panic!("read back as skipped"),
        }
    }

    #[test]
    fn a_failed_clv_fit_has_only_converged_and_message() {
        let f: ClvFit<BgNbdParams> = ClvFit::failed("no repeat buyers");
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(text, r#"{"converged":false,"message":"no repeat buyers"}"#);
        let back: ClvFit<BgNbdParams> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, f);
        let ok: ClvFit<BgNbdParams> =
            serde_json::from_str(r#"{"r":0.24,"alpha":4.41,"a":0.79,"b":2.43,"log_likelihood":-9582.4,"converged":true,"iterations":31,"groups":5,"message":""}"#)
                .unwrap();
        assert_eq!(ok.params().map(|p| p.r), Some(0.24));
    }
}
