//! The Gamma-Gamma model of spend per transaction (Fader, Hardie & Lee 2005, "RFM and
//! CLV: Using Iso-Value Curves for Customer Base Analysis", *Journal of Marketing
//! Research* 42(4); Fader & Hardie 2013, "The Gamma-Gamma Model of Monetary Value").
//!
//! A customer's transactions are Gamma(p, ν) with ν ~ Gamma(q, γ) across customers; the
//! likelihood is that of each customer's mean spend z̄ over x transactions (the density of
//! the mean, Jacobian included). Fitted on customers with x > 0 by maximum likelihood on
//! log-parameters with the analytic gradient and Hessian (Newton's method; BFGS as the
//! fallback).
//!
//! Speed: the Gamma-function terms depend on x alone and are computed once per distinct
//! x; the terms in ln z̄ and ln x are sums fixed before the fit; what is left per customer
//! is one logarithm ln(γ + x z̄) per evaluation, summed in parallel in fixed blocks.

use crate::error::{no_finite_likelihood, ModelError};
use crate::optimize::{fit_from_starts, sample_stride, Second};
use crate::parallel::ordered_fold;
use crate::special::{digamma, ln_gamma, trigamma};

/// Customers laid out for fast evaluation.
struct Prepared {
    xs: Vec<f64>,
    /// Total weight per distinct x, and of w·x.
    wx: Vec<f64>,
    /// Per customer: x, x·z̄ and weight.
    x: Vec<f64>,
    xz: Vec<f64>,
    w: Vec<f64>,
    total: f64,
    /// Σ w ln z̄, Σ w x ln z̄, Σ w x ln x.
    s0: f64,
    s1: f64,
    s2: f64,
}

impl Prepared {
    fn new(data: &[Spend]) -> Self {
        let mut xs: Vec<f64> = data.iter().map(|s| s.x).collect();
        xs.sort_unstable_by(f64::total_cmp);
        xs.dedup();
        let mut wx = vec![0.0; xs.len()];
        for s in data {
            let i = xs.binary_search_by(|v| v.total_cmp(&s.x)).expect("x is in its table");
            wx[i] += s.weight;
        }
        let [s0, s1, s2] = ordered_fold(
            data.len(),
            || [0.0f64; 3],
            |a, i| {
                let s = &data[i];
                let lz = s.mean.ln();
                a[0] += s.weight * lz;
                a[1] += s.weight * s.x * lz;
                a[2] += s.weight * s.x * s.x.ln();
            },
            |a, b| a.iter_mut().zip(b).for_each(|(x, y)| *x += y),
        );
        Self {
            xs,
            wx,
            x: data.iter().map(|s| s.x).collect(),
            xz: data.iter().map(|s| s.x * s.mean).collect(),
            w: data.iter().map(|s| s.weight).collect(),
            total: data.iter().map(|s| s.weight).sum(),
            s0,
            s1,
            s2,
        }
    }

    /// Mean negative log-likelihood over log-parameters with gradient and Hessian.
    fn objective(&self, v: &[f64]) -> Option<(f64, Vec<f64>, Vec<f64>)> {
        if v.iter().any(|z| !(-30.0..30.0).contains(z)) {
            return None;
        }
        let (p, q, gamma) = (v[0].exp(), v[1].exp(), v[2].exp());
        let n = self.total;
        // Per customer: Σ w L, Σ w x L, Σ w I, Σ w x I, Σ w I², Σ w x I²
        // with L = ln(γ + x z̄), I = 1/(γ + x z̄).
        let s = ordered_fold(
            self.w.len(),
            || [0.0f64; 6],
            |a, i| {
                let (w, x) = (self.w[i], self.x[i]);
                let d = gamma + self.xz[i];
                let (l, inv) = (d.ln(), 1.0 / d);
                a[0] += w * l;
                a[1] += w * x * l;
                a[2] += w * inv;
                a[3] += w * x * inv;
                a[4] += w * inv * inv;
                a[5] += w * x * inv * inv;
            },
            |a, b| a.iter_mut().zip(b).for_each(|(x, y)| *x += y),
        );
        let (lg_q, dg_q, tg_q) = (ln_gamma(q), digamma(q), trigamma(q));
        let mut ll = -n * lg_q + n * q * gamma.ln() + p * self.s1 - self.s0 + p * self.s2 - p * s[1] - q * s[0];
        let mut g = [
            self.s1 + self.s2 - s[1],
            -n * dg_q + n * gamma.ln() - s[0],
            n * q / gamma - p * s[3] - q * s[2],
        ];
        let mut h = [[0.0; 3]; 3];
        h[1][1] = -n * tg_q;
        h[0][2] = -s[3];
        h[1][2] = n / gamma - s[2];
        h[2][2] = -n * q / (gamma * gamma) + p * s[5] + q * s[4];
        for (x, w) in self.xs.iter().zip(&self.wx) {
            let px = p * x;
            ll += w * (ln_gamma(px + q) - ln_gamma(px));
            let (d1, d0) = (digamma(px + q), digamma(px));
            let (t1, t0) = (trigamma(px + q), trigamma(px));
            g[0] += w * x * (d1 - d0);
            g[1] += w * d1;
            h[0][0] += w * x * x * (t1 - t0);
            h[0][1] += w * x * t1;
            h[1][1] += w * t1;
        }
        let pv = [p, q, gamma];
        let grad: Vec<f64> = (0..3).map(|i| -g[i] * pv[i] / n).collect();
        let mut hess = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                let hij = if i <= j { h[i][j] } else { h[j][i] };
                let mut v = pv[i] * pv[j] * hij;
                if i == j {
                    v += pv[i] * g[i];
                }
                hess[i * 3 + j] = -v / n;
            }
        }
        Some((-ll / n, grad, hess))
    }
}

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
    pub fn fit(spends: &[Spend]) -> Result<GammaGammaFit, ModelError> {
        let data: Vec<Spend> = spends
            .iter()
            .copied()
            .filter(|s| s.x > 0.0 && s.mean > 0.0 && s.mean.is_finite() && s.weight > 0.0)
            .collect();
        if data.len() < 2 {
            return Err(ModelError::TooLittleData(format!(
                "Gamma-Gamma needs customers with repeat spend; found {}",
                data.len()
            )));
        }
        let prep = Prepared::new(&data);
        let total = prep.total;
        let mean = data.iter().map(|s| s.weight * s.mean).sum::<f64>() / total;
        let starts = [
            vec![0.0, 0.0, mean.ln()],
            vec![(2.0f64).ln(), (3.0f64).ln(), (mean).ln()],
            vec![(5.0f64).ln(), (2.0f64).ln(), (mean / 2.0).ln()],
        ];
        let on = |v: &[f64]| prep.objective(v);
        // As for BG/NBD: the starts on a systematic sample, the best polished on all.
        let sample = sample_stride(data.len()).map(|step| Prepared::new(&data.iter().step_by(step).copied().collect::<Vec<_>>()));
        let on_sample = |v: &[f64]| sample.as_ref().and_then(|s| s.objective(v));
        let on_sample: Option<&Second<'_>> = if sample.is_some() { Some(&on_sample) } else { None };
        let (best, iterations) = fit_from_starts(&on, on_sample, &starts).ok_or_else(no_finite_likelihood)?;
        Ok(GammaGammaFit {
            params: Self {
                p: best.x[0].exp(),
                q: best.x[1].exp(),
                gamma: best.x[2].exp(),
            },
            log_likelihood: -best.value * total,
            converged: best.converged,
            iterations,
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
    fn prepared_objective_matches_the_plain_sum_and_its_derivatives() {
        let data: Vec<Spend> = [(1.0, 20.0), (7.0, 55.5), (2.0, 13.25), (7.0, 40.0), (1.0, 99.0)]
            .iter()
            .map(|&(x, mean)| Spend { x, mean, weight: 1.0 })
            .collect();
        let prep = Prepared::new(&data);
        let v = [(6.0f64).ln(), (3.5f64).ln(), (15.0f64).ln()];
        let (f, g, h) = prep.objective(&v).unwrap();
        let m = GammaGamma {
            p: 6.0,
            q: 3.5,
            gamma: 15.0,
        };
        let plain = -data.iter().map(|s| m.log_likelihood(s)).sum::<f64>() / data.len() as f64;
        assert!((f - plain).abs() < 1e-12, "{f} vs {plain}");
        for i in 0..3 {
            let step = 1e-5;
            let (mut hi, mut lo) = (v, v);
            hi[i] += step;
            lo[i] -= step;
            let (fh, gh, _) = prep.objective(&hi).unwrap();
            let (fl, gl, _) = prep.objective(&lo).unwrap();
            assert!((g[i] - (fh - fl) / (2.0 * step)).abs() < 1e-7, "gradient {i}");
            for j in 0..3 {
                let fd = (gh[j] - gl[j]) / (2.0 * step);
                assert!((h[i * 3 + j] - fd).abs() < 1e-6, "hessian {i},{j}: {} vs {fd}", h[i * 3 + j]);
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
