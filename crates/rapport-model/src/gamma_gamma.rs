//! The Gamma-Gamma model of spend per transaction (Fader, Hardie & Lee 2005, "RFM and
//! CLV: Using Iso-Value Curves for Customer Base Analysis", *Journal of Marketing
//! Research* 42(4); Fader & Hardie 2013, "The Gamma-Gamma Model of Monetary Value").
//!
//! A customer's transactions are Gamma(p, ν) with ν ~ Gamma(q, γ) across customers; the
//! likelihood is that of each customer's mean spend z̄ over x transactions (the density of
//! the mean, Jacobian included). Fitted on customers with x > 0 by maximum likelihood on
//! log-parameters with the analytic gradient.

use crate::optimize::best_of;
use crate::special::{digamma, ln_gamma};

/// One customer's spend: `x` transactions with mean value `mean`; `weight` customers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spend {
    pub x: f64,
    pub mean: f64,
    pub weight: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGamma {
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

/// A fitted Gamma-Gamma model with diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct GammaGammaFit {
    pub params: GammaGamma,
    pub log_likelihood: f64,
    pub converged: bool,
    pub iterations: usize,
    pub customers: f64,
    pub message: String,
}

impl GammaGamma {
    fn ll_grad(&self, s: &Spend) -> (f64, [f64; 3]) {
        let Self { p, q, gamma } = *self;
        let (x, z) = (s.x, s.mean);
        let px = p * x;
        let lg = (gamma + x * z).ln();
        let ll = ln_gamma(px + q) - ln_gamma(px) - ln_gamma(q) + q * gamma.ln() + (px - 1.0) * z.ln() + px * x.ln() - (px + q) * lg;
        let dp = x * (digamma(px + q) - digamma(px) + z.ln() + x.ln() - lg);
        let dq = digamma(px + q) - digamma(q) + gamma.ln() - lg;
        let dg = q / gamma - (px + q) / (gamma + x * z);
        (ll, [dp, dq, dg])
    }

    pub fn log_likelihood(&self, s: &Spend) -> f64 {
        self.ll_grad(s).0
    }

    /// E[mean spend | x, z̄]: the customer's expected spend per transaction.
    pub fn expected_spend(&self, x: f64, mean: f64) -> f64 {
        let Self { p, q, gamma } = *self;
        if x <= 0.0 {
            // No transactions seen: the population mean, where it exists.
            return if q > 1.0 { p * gamma / (q - 1.0) } else { f64::NAN };
        }
        p * (gamma + x * mean) / (p * x + q - 1.0)
    }

    /// Fits on customers with at least one transaction and a positive mean; others are
    /// ignored (they carry no information about spend).
    pub fn fit(spends: &[Spend]) -> Result<GammaGammaFit, String> {
        let data: Vec<Spend> = spends
            .iter()
            .copied()
            .filter(|s| s.x > 0.0 && s.mean > 0.0 && s.mean.is_finite() && s.weight > 0.0)
            .collect();
        if data.len() < 2 {
            return Err(format!("Gamma-Gamma needs customers with repeat spend; found {}", data.len()));
        }
        let total: f64 = data.iter().map(|s| s.weight).sum();
        let objective = |v: &[f64]| -> (f64, Vec<f64>) {
            if v.iter().any(|z| !(-30.0..30.0).contains(z)) {
                return (f64::INFINITY, vec![0.0; 3]);
            }
            let m = Self {
                p: v[0].exp(),
                q: v[1].exp(),
                gamma: v[2].exp(),
            };
            let mut ll = 0.0;
            let mut g = [0.0; 3];
            for s in &data {
                let (l, gs) = m.ll_grad(s);
                ll += s.weight * l;
                for i in 0..3 {
                    g[i] += s.weight * gs[i];
                }
            }
            let p = [m.p, m.q, m.gamma];
            (-ll / total, (0..3).map(|i| -g[i] * p[i] / total).collect())
        };
        let mean = data.iter().map(|s| s.weight * s.mean).sum::<f64>() / total;
        let starts = [
            vec![0.0, 0.0, mean.ln()],
            vec![(2.0f64).ln(), (3.0f64).ln(), (mean).ln()],
            vec![(5.0f64).ln(), (2.0f64).ln(), (mean / 2.0).ln()],
        ];
        let best = best_of(&objective, &starts, 500, 1e-10).ok_or("the likelihood is not finite from any starting point")?;
        Ok(GammaGammaFit {
            params: Self {
                p: best.x[0].exp(),
                q: best.x[1].exp(),
                gamma: best.x[2].exp(),
            },
            log_likelihood: -best.value * total,
            converged: best.converged,
            iterations: best.iterations,
            customers: total,
            message: best.message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_equals_finite_differences() {
        let m = GammaGamma {
            p: 6.0,
            q: 3.5,
            gamma: 15.0,
        };
        for s in [
            Spend {
                x: 1.0,
                mean: 20.0,
                weight: 1.0,
            },
            Spend {
                x: 7.0,
                mean: 55.5,
                weight: 1.0,
            },
        ] {
            let (_, g) = m.ll_grad(&s);
            let base = [m.p, m.q, m.gamma];
            for i in 0..3 {
                let h = 1e-6 * base[i];
                let (mut hi, mut lo) = (base, base);
                hi[i] += h;
                lo[i] -= h;
                let f = |v: [f64; 3]| {
                    GammaGamma {
                        p: v[0],
                        q: v[1],
                        gamma: v[2],
                    }
                    .log_likelihood(&s)
                };
                let fd = (f(hi) - f(lo)) / (2.0 * h);
                assert!((g[i] - fd).abs() < 1e-6 * (1.0 + fd.abs()), "{i}");
            }
        }
    }

    #[test]
    fn expected_spend_matches_the_hardie_spreadsheet() {
        let m = GammaGamma {
            p: 6.25,
            q: 3.74,
            gamma: 15.44,
        };
        // CDNOW customer 1: x = 2, mean 22.35; customers 3-5 have x = 0.
        assert!((m.expected_spend(0.0, 0.0) - 35.17).abs() < 0.1);
        assert!((m.expected_spend(2.0, 22.35) - 24.65).abs() < 0.1);
    }
}
