//! The `[models]` section of rapport.toml.

use serde::Deserialize;

use crate::{EngineError, Result};

/// Unit of α, β and T in the CLV models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    Day,
    Week,
}

impl TimeUnit {
    pub fn days(self) -> f64 {
        match self {
            TimeUnit::Day => 1.0,
            TimeUnit::Week => 7.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TimeUnit::Day => "day",
            TimeUnit::Week => "week",
        }
    }
}

/// How buyers are clustered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Clustering {
    Kmeans,
    Dbscan,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// `kmeans` (k chosen in k_min..=k_max by the gap statistic and the silhouette) or
    /// `dbscan`.
    pub clustering: Clustering,
    /// DBSCAN radius in the standardised log-feature space.
    pub dbscan_eps: f64,
    /// DBSCAN neighbours (itself included) that make a core point.
    pub dbscan_min_points: usize,
    pub time_unit: TimeUnit,
    /// Horizons (days) of the expected-orders columns; the first two name
    /// `expected_orders_90d` and `expected_orders_365d` when they are 90 and 365.
    pub horizons_days: Vec<u32>,
    /// Horizon of the CLV, in days.
    pub clv_horizon_days: u32,
    /// Annual discount rate of the CLV.
    pub discount_rate: f64,
    /// Share of revenue that is margin.
    pub margin: f64,
    /// Days without an order after which a customer counts as churned.
    pub churn_window_days: u32,
    /// The fewest clusters k-means may give (2 is rarely actionable, so 3 by default).
    pub k_min: usize,
    pub k_max: usize,
    pub seed: u64,
    /// Least evidence (posterior probability, or 1 − q for knowledge gaps) to report a gap.
    pub gap_evidence: f64,
    /// Customers whose first purchase is more recent are not judged (0: everyone with a
    /// purchase is; the posterior already says how little a short history shows). They
    /// are counted in models.json under `gaps.not_judged`.
    pub gap_min_tenure_days: u32,
    /// Honest frequency answers may be loose: the stated class's range widened by this
    /// factor on both sides (low / factor, high × factor) counts as what they said.
    pub gap_rate_tolerance: f64,
    /// Strength (in order lines) of the population's category mix in a customer's
    /// smoothed mix (the observed share and Δ of a category gap).
    pub category_prior_strength: f64,
    /// Days before the as-of date at which `run` judges every statement again, to check
    /// the gap evidence against the later behaviour (`gaps.reliability` in models.json,
    /// as `rapport evaluate gaps` prints it); 0 turns the check off.
    pub gap_check_days: u32,
    /// What naming a preferred category claims: it is bought at least this share of the
    /// customer's most bought category (0.5: at least half as much).
    pub category_preference_ratio: f64,
    /// False discovery rate of the knowledge-gap tests (Benjamini–Hochberg).
    pub knowledge_fdr: f64,
    /// Recommendations per customer.
    pub recommendations: usize,
    /// Implicit ALS: latent factors, iterations, ridge λ and confidence weight α.
    pub als_factors: usize,
    pub als_iterations: usize,
    pub als_regularization: f64,
    pub als_alpha: f64,
    /// Product categories bought again and again (groceries, say): products bought in
    /// them may be recommended again.
    pub recs_repeat_categories: Vec<String>,
    /// Places at the end of each customer's list for the best-matching products nobody
    /// has bought yet (by content); 0 leaves them out.
    pub recs_new_product_slots: usize,
    /// Association rules: least share of orders and least confidence.
    pub rules_min_support: f64,
    pub rules_min_confidence: f64,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            clustering: Clustering::Kmeans,
            dbscan_eps: 0.5,
            dbscan_min_points: 10,
            time_unit: TimeUnit::Week,
            horizons_days: vec![90, 365],
            clv_horizon_days: 365,
            discount_rate: 0.10,
            margin: 0.30,
            churn_window_days: 90,
            k_min: 3,
            k_max: 8,
            seed: 42,
            gap_evidence: 0.9,
            gap_min_tenure_days: 0,
            gap_rate_tolerance: 1.0,
            category_prior_strength: 4.0,
            category_preference_ratio: 0.5,
            gap_check_days: 180,
            knowledge_fdr: 0.05,
            recommendations: 10,
            als_factors: 64,
            als_iterations: 15,
            als_regularization: 1.0,
            als_alpha: 1.0,
            recs_repeat_categories: Vec::new(),
            recs_new_product_slots: 1,
            rules_min_support: 0.01,
            rules_min_confidence: 0.3,
        }
    }
}

impl ModelsConfig {
    pub fn from_table(table: Option<&toml::Table>) -> Result<Self> {
        let c: ModelsConfig = match table {
            Some(t) => t
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| EngineError::usage(format!("[models]: {}", e.message())))?,
            None => Self::default(),
        };
        if !(0.0..1.0).contains(&c.discount_rate) || !(0.0..=1.0).contains(&c.margin) {
            return Err(EngineError::usage(format!(
                "[models]: discount_rate = {} must be in [0, 1) and margin = {} in [0, 1]",
                c.discount_rate, c.margin
            )));
        }
        if c.k_min < 2 || c.k_max < c.k_min || c.k_max > 50 {
            return Err(EngineError::usage(format!(
                "[models]: k_min = {} and k_max = {} must satisfy 2 <= k_min <= k_max <= 50",
                c.k_min, c.k_max
            )));
        }
        if !(0.5..1.0).contains(&c.gap_evidence)
            || !(0.0..0.5).contains(&c.knowledge_fdr)
            || c.category_prior_strength.is_nan()
            || c.category_prior_strength <= 0.0
            || c.category_preference_ratio.is_nan()
            || c.category_preference_ratio <= 0.0
            || c.category_preference_ratio > 1.0
            || !(1.0..=10.0).contains(&c.gap_rate_tolerance)
        {
            return Err(EngineError::usage(format!(
                "[models]: gap_evidence = {} must be in [0.5, 1), knowledge_fdr = {} in (0, 0.5), category_prior_strength = {} positive, category_preference_ratio = {} in (0, 1] and gap_rate_tolerance = {} in [1, 10]",
                c.gap_evidence, c.knowledge_fdr, c.category_prior_strength, c.category_preference_ratio, c.gap_rate_tolerance
            )));
        }
        if !c.dbscan_eps.is_finite() || c.dbscan_eps <= 0.0 || c.dbscan_min_points == 0 {
            return Err(EngineError::usage(format!(
                "[models]: dbscan_eps = {} must be positive and dbscan_min_points = {} at least 1",
                c.dbscan_eps, c.dbscan_min_points
            )));
        }
        if c.recommendations == 0
            || c.als_factors == 0
            || c.als_factors > 512
            || c.als_iterations == 0
            || c.als_regularization.is_nan()
            || c.als_regularization < 0.0
            || c.als_alpha.is_nan()
            || c.als_alpha <= 0.0
            || !(0.0..1.0).contains(&c.rules_min_support)
            || !(0.0..=1.0).contains(&c.rules_min_confidence)
        {
            return Err(EngineError::usage(format!(
                "[models]: recommendations = {} and als_iterations = {} must be positive, als_factors = {} in 1..=512, \
                 als_regularization = {} non-negative, als_alpha = {} positive, rules_min_support = {} in [0, 1) and \
                 rules_min_confidence = {} in [0, 1]",
                c.recommendations,
                c.als_iterations,
                c.als_factors,
                c.als_regularization,
                c.als_alpha,
                c.rules_min_support,
                c.rules_min_confidence
            )));
        }
        if c.horizons_days.is_empty() || c.horizons_days.contains(&0) || c.clv_horizon_days == 0 {
            return Err(EngineError::usage("[models]: horizons must be positive numbers of days"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_and_cluster_settings_are_checked() {
        let parse = |s: &str| ModelsConfig::from_table(Some(&toml::from_str::<toml::Table>(s).unwrap()));
        assert_eq!(parse("category_preference_ratio = 0.6").unwrap().category_preference_ratio, 0.6);
        for bad in ["category_preference_ratio = 0.0", "category_preference_ratio = 1.5", "k_min = 1"] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad.split(' ').next().unwrap()), "{bad}: {err}");
        }
        assert_eq!(ModelsConfig::default().k_min, 3);
    }
}
