//! Outcome rates by group with Beta-Binomial shrinkage (the empirical-Bayes version of
//! seed 003's Bayes example): a Beta(α, β) prior is fitted to all groups' counts by
//! maximising the Beta-Binomial marginal likelihood, and each group's rate is its
//! posterior Beta(α + k, β + n − k), reported with its mean and an equal-tailed credible
//! interval. Small groups are pulled toward the overall rate; large ones keep their own.

use crate::optimize::bfgs;
use crate::special::{beta_quantile, digamma, ln_beta};

/// The fitted prior.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BetaPrior {
    pub alpha: f64,
    pub beta: f64,
}

/// One group's posterior rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub successes: f64,
    pub trials: f64,
    pub raw: Option<f64>,
    pub mean: f64,
    pub lower: f64,
    pub upper: f64,
}

impl BetaPrior {
    /// Fits the prior to `(successes, trials)` per group. With fewer than two usable
    /// groups, or when the groups do not vary more than chance allows, the prior is a
    /// strong one centred on the pooled rate (the groups share one rate).
    pub fn fit(groups: &[(f64, f64)]) -> Self {
        let used: Vec<(f64, f64)> = groups.iter().copied().filter(|&(k, n)| n > 0.0 && k >= 0.0 && k <= n).collect();
        let (ks, ns) = used.iter().fold((0.0, 0.0), |(a, b), &(k, n)| (a + k, b + n));
        let pooled = ((ks + 0.5) / (ns + 1.0)).clamp(1e-6, 1.0 - 1e-6);
        // The strongest prior we allow: worth this many observations.
        const MAX_STRENGTH: f64 = 1e5;
        let shared = BetaPrior {
            alpha: pooled * MAX_STRENGTH,
            beta: (1.0 - pooled) * MAX_STRENGTH,
        };
        if used.len() < 2 {
            return shared;
        }
        let f = |v: &[f64]| -> (f64, Vec<f64>) {
            let (a, b) = (v[0].exp(), v[1].exp());
            let (mut ll, mut ga, mut gb) = (0.0, 0.0, 0.0);
            for &(k, n) in &used {
                ll += ln_beta(k + a, n - k + b) - ln_beta(a, b);
                let common = digamma(a + b) - digamma(n + a + b);
                ga += digamma(k + a) - digamma(a) + common;
                gb += digamma(n - k + b) - digamma(b) + common;
            }
            // A weak penalty keeps the search finite when the groups do not vary.
            let pen = 1e-4 * (v[0] * v[0] + v[1] * v[1]);
            (-ll + pen, vec![-ga * a + 2e-4 * v[0], -gb * b + 2e-4 * v[1]])
        };
        let start = [(pooled * 2.0).ln(), ((1.0 - pooled) * 2.0).ln()];
        let m = bfgs(&f, &start, 500, 1e-9);
        let (a, b) = (m.x[0].exp(), m.x[1].exp());
        if !a.is_finite() || !b.is_finite() || a + b > MAX_STRENGTH {
            return shared;
        }
        BetaPrior { alpha: a, beta: b }
    }

    /// The posterior rate of a group with `k` successes in `n` trials, with a
    /// `level` (e.g. 0.95) credible interval.
    pub fn posterior(&self, k: f64, n: f64, level: f64) -> Rate {
        let (a, b) = (self.alpha + k, self.beta + n - k);
        let tail = (1.0 - level) / 2.0;
        Rate {
            successes: k,
            trials: n,
            raw: (n > 0.0).then(|| k / n),
            mean: a / (a + b),
            lower: beta_quantile(a, b, tail),
            upper: beta_quantile(a, b, 1.0 - tail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_groups_shrink_toward_the_pool_and_large_ones_do_not() {
        let mut groups: Vec<(f64, f64)> = (0..20).map(|i| (f64::from(10 + i % 7), 100.0)).collect();
        groups.push((3.0, 3.0)); // 100 % on three trials
        groups.push((900.0, 1000.0)); // 90 % on a thousand
        let prior = BetaPrior::fit(&groups);
        let small = prior.posterior(3.0, 3.0, 0.95);
        let large = prior.posterior(900.0, 1000.0, 0.95);
        assert!(small.mean < 0.5, "shrunk: {small:?}");
        assert!((large.mean - 0.9).abs() < 0.02, "kept: {large:?}");
        assert!(small.lower < small.mean && small.mean < small.upper);
        assert!(large.upper - large.lower < small.upper - small.lower);
    }

    #[test]
    fn identical_groups_share_one_rate() {
        let prior = BetaPrior::fit(&[(10.0, 100.0), (10.0, 100.0), (10.0, 100.0)]);
        let r = prior.posterior(0.0, 5.0, 0.95);
        assert!((r.mean - 0.1).abs() < 0.02, "{r:?}");
        let one = BetaPrior::fit(&[(1.0, 4.0)]);
        assert!(one.alpha.is_finite() && one.alpha > 0.0);
    }
}
