//! The BG/NBD model of repeat buying (Fader, Hardie & Lee 2005, "Counting Your
//! Customers the Easy Way", *Marketing Science* 24(2) 275–284).
//!
//! While alive, a customer buys as a Poisson process with rate λ ~ Gamma(r, α); after
//! each purchase they drop out with probability p ~ Beta(a, b). Fitted by maximum
//! likelihood on log-parameters with the analytic gradient (BFGS, several starts); the
//! likelihood is evaluated in log space with log-sum-exp, so long, busy histories do not
//! overflow.

use crate::btyd::{check, group, Fit, History};
use crate::optimize::best_of;
use crate::special::{digamma, hyp2f1, ln_gamma, log_add_exp};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbd {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

impl BgNbd {
    fn from_log(v: &[f64]) -> Self {
        Self {
            r: v[0].exp(),
            alpha: v[1].exp(),
            a: v[2].exp(),
            b: v[3].exp(),
        }
    }

    /// Log-likelihood of one history.
    pub fn log_likelihood(&self, h: &History) -> f64 {
        self.ll_grad(h).0
    }

    /// Log-likelihood of one history and its gradient with respect to (r, α, a, b).
    fn ll_grad(&self, h: &History) -> (f64, [f64; 4]) {
        let Self { r, alpha, a, b } = *self;
        let (x, tx, t) = (h.x, h.t_x, h.t);
        let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
        let a2 = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
        let a3 = -(r + x) * (alpha + t).ln();
        let d1 = [digamma(r + x) - digamma(r) + alpha.ln(), r / alpha, 0.0, 0.0];
        let pab = digamma(a + b) - digamma(a + b + x);
        let d2 = [0.0, 0.0, pab, pab + digamma(b + x) - digamma(b)];
        let d3 = [-(alpha + t).ln(), -(r + x) / (alpha + t), 0.0, 0.0];
        if x == 0.0 {
            let g = [d1[0] + d3[0], d1[1] + d3[1], d2[2], d2[3]];
            return (a1 + a2 + a3, g);
        }
        let a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + tx).ln();
        let d4 = [-(alpha + tx).ln(), -(r + x) / (alpha + tx), 1.0 / a, -1.0 / (b + x - 1.0)];
        let lse = log_add_exp(a3, a4);
        let (w3, w4) = ((a3 - lse).exp(), (a4 - lse).exp());
        let mut g = [0.0; 4];
        for i in 0..4 {
            g[i] = d1[i] + d2[i] + w3 * d3[i] + w4 * d4[i];
        }
        (a1 + a2 + lse, g)
    }

    /// Total log-likelihood of (grouped) histories.
    pub fn total_log_likelihood(&self, data: &[History]) -> f64 {
        data.iter().map(|h| h.weight * self.log_likelihood(h)).sum()
    }

    /// Maximum-likelihood fit. Never panics: bad data is an error naming the history,
    /// and a fit that does not converge comes back with `converged: false`.
    pub fn fit(histories: &[History]) -> Result<Fit<BgNbd>, String> {
        check(histories)?;
        let data = group(histories);
        let total: f64 = data.iter().map(|h| h.weight).sum();
        let objective = |v: &[f64]| -> (f64, Vec<f64>) {
            if v.iter().any(|z| !(-30.0..30.0).contains(z)) {
                return (f64::INFINITY, vec![0.0; 4]);
            }
            let m = Self::from_log(v);
            let mut ll = 0.0;
            let mut g = [0.0; 4];
            for h in &data {
                let (l, gh) = m.ll_grad(h);
                ll += h.weight * l;
                for i in 0..4 {
                    g[i] += h.weight * gh[i];
                }
            }
            let p = [m.r, m.alpha, m.a, m.b];
            // Minimise the mean negative log-likelihood; chain rule through exp.
            (-ll / total, (0..4).map(|i| -g[i] * p[i] / total).collect())
        };
        let mean_t = data.iter().map(|h| h.weight * h.t).sum::<f64>() / total;
        let starts = [
            vec![0.0, mean_t.ln(), 0.0, 0.0],
            vec![(0.5f64).ln(), (mean_t / 4.0).ln(), (0.5f64).ln(), (3.0f64).ln()],
            vec![(2.0f64).ln(), (mean_t * 2.0).ln(), (2.0f64).ln(), (0.5f64).ln()],
        ];
        let best = best_of(&objective, &starts, 500, 1e-10);
        let Some(m) = best else {
            return Err("the likelihood is not finite from any starting point".into());
        };
        Ok(Fit {
            params: Self::from_log(&m.x),
            log_likelihood: -m.value * total,
            converged: m.converged,
            iterations: m.iterations,
            groups: data.len(),
            message: m.message,
        })
    }

    /// P(alive) at the end of calibration.
    pub fn p_alive(&self, h: &History) -> f64 {
        if h.x == 0.0 {
            return 1.0;
        }
        let ln_ratio = self.a.ln() - (self.b + h.x - 1.0).ln() + (self.r + h.x) * ((self.alpha + h.t) / (self.alpha + h.t_x)).ln();
        1.0 / (1.0 + ln_ratio.exp())
    }

    /// E[X(t)]: expected repeat purchases in (0, t] of a customer who just made a first
    /// purchase.
    pub fn expected_purchases(&self, t: f64) -> Option<f64> {
        let Self { r, alpha, a, b } = *self;
        let z = t / (alpha + t);
        let f = hyp2f1(r, b, a + b - 1.0, z)?;
        Some((a + b - 1.0) / (a - 1.0) * (1.0 - (alpha / (alpha + t)).powf(r) * f))
    }

    /// E[Y(t) | x, t_x, T]: expected purchases in the next `horizon` time units.
    pub fn conditional_expected(&self, horizon: f64, h: &History) -> Option<f64> {
        let Self { r, alpha, a, b } = *self;
        let (x, tx, t) = (h.x, h.t_x, h.t);
        let z = horizon / (alpha + t + horizon);
        let f = hyp2f1(r + x, b + x, a + b + x - 1.0, z)?;
        let num = (a + b + x - 1.0) / (a - 1.0) * (1.0 - ((alpha + t) / (alpha + t + horizon)).powf(r + x) * f);
        let den = if x > 0.0 {
            1.0 + a / (b + x - 1.0) * ((alpha + t) / (alpha + tx)).powf(r + x)
        } else {
            1.0
        };
        Some(num / den)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAPER: BgNbd = BgNbd {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };

    #[test]
    fn single_customer_log_density_matches_the_hardie_note() {
        let m = BgNbd {
            r: 0.25,
            alpha: 4.0,
            a: 0.8,
            b: 2.5,
        };
        assert!((m.log_likelihood(&History::new(0.0, 0.0, 40.0)) + 0.599_473_82).abs() < 1e-6);
        assert!((m.log_likelihood(&History::new(200.0, 38.0, 40.0)) - 100.795_7).abs() < 1e-3);
    }

    #[test]
    fn gradient_equals_finite_differences() {
        let m = BgNbd {
            r: 0.7,
            alpha: 3.0,
            a: 1.3,
            b: 2.2,
        };
        for h in [
            History::new(0.0, 0.0, 30.0),
            History::new(4.0, 20.0, 35.0),
            History::new(1.0, 0.5, 2.0),
        ] {
            let (_, g) = m.ll_grad(&h);
            let p = [m.r, m.alpha, m.a, m.b];
            for i in 0..4 {
                let step = 1e-6 * p[i];
                let mut hi = p;
                let mut lo = p;
                hi[i] += step;
                lo[i] -= step;
                let f = |q: [f64; 4]| {
                    BgNbd {
                        r: q[0],
                        alpha: q[1],
                        a: q[2],
                        b: q[3],
                    }
                    .log_likelihood(&h)
                };
                let fd = (f(hi) - f(lo)) / (2.0 * step);
                assert!((g[i] - fd).abs() < 1e-5 * (1.0 + fd.abs()), "param {i}: {} vs {fd}", g[i]);
            }
        }
    }

    /// The maximum-likelihood estimates on the CDNOW sample at full precision (CLVTools).
    const MLE: BgNbd = BgNbd {
        r: 0.242_594_5,
        alpha: 4.413_601_9,
        a: 0.792_919_9,
        b: 2.425_888_1,
    };

    #[test]
    fn expectations_match_the_published_spreadsheet() {
        for (t, want) in [
            (0.1429, 0.0078),
            (1.0, 0.0532),
            (3.0, 0.1506),
            (31.8571, 1.0405),
            (32.0, 1.0437),
            (78.0, 1.8576),
        ] {
            let got = MLE.expected_purchases(t).unwrap();
            assert!((got - want).abs() < 1e-3, "E[X({t})] = {got}, want {want}");
        }
        let y = PAPER.conditional_expected(39.0, &History::new(2.0, 30.43, 38.86)).unwrap();
        assert!((y - 1.226).abs() < 1e-3, "{y}");
    }

    #[test]
    fn probabilities_stay_in_range() {
        for h in [
            History::new(0.0, 0.0, 10.0),
            History::new(50.0, 1.0, 100.0),
            History::new(3.0, 9.9, 10.0),
        ] {
            let p = PAPER.p_alive(&h);
            assert!((0.0..=1.0).contains(&p), "{p}");
        }
    }

    #[test]
    fn degenerate_data_gives_a_diagnostic_not_a_panic() {
        let all_one_time: Vec<History> = (1..200).map(|i| History::new(0.0, 0.0, f64::from(i))).collect();
        let f = BgNbd::fit(&all_one_time).unwrap();
        assert!(f.params.r.is_finite() && f.log_likelihood.is_finite());
        assert!(BgNbd::fit(&[]).is_err());
        let tiny = [History::new(1.0, 2.0, 10.0), History::new(0.0, 0.0, 3.0)];
        let f = BgNbd::fit(&tiny).unwrap();
        assert!(f.log_likelihood.is_finite());
    }
}
