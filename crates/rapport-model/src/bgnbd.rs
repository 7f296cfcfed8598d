//! The BG/NBD model of repeat buying (Fader, Hardie & Lee 2005, "Counting Your
//! Customers the Easy Way", *Marketing Science* 24(2) 275–284).
//!
//! While alive, a customer buys as a Poisson process with rate λ ~ Gamma(r, α); after
//! each purchase they drop out with probability p ~ Beta(a, b). Fitted by maximum
//! likelihood on log-parameters with the analytic gradient (BFGS, several starts); the
//! likelihood is evaluated in log space with log-sum-exp, so long, busy histories do not
//! overflow.
//!
//! Speed: the fit works on distinct (x, t_x, T) histories, the terms that depend on x
//! alone (the Gamma functions) are computed once per distinct x, the logarithms once per
//! distinct time, so a history costs one exponential and one logarithm per evaluation;
//! the sum runs in parallel in fixed blocks (the same bits on any number of threads).
//! The optimiser is Newton's method on the exact Hessian
//! ([`fit_from_starts`](crate::optimize::fit_from_starts)): the starts are first run on
//! a systematic sample of the distinct histories, then the best is polished on all of
//! them, which takes a few iterations. BFGS on all histories is the fallback.

use crate::btyd::{check, group, Fit, History};
use crate::error::{no_finite_likelihood, ModelError};
use crate::optimize::{fit_from_starts, sample_stride, Second};
use crate::parallel::ordered_fold;
use crate::special::{digamma, hyp2f1, ln_gamma, log_add_exp, trigamma};

/// Distinct histories laid out for fast evaluation: indices into tables of distinct x
/// and distinct times.
struct Prepared {
    xs: Vec<f64>,
    /// Total weight per distinct x.
    wx: Vec<f64>,
    times: Vec<f64>,
    xi: Vec<u32>,
    txi: Vec<u32>,
    ti: Vec<u32>,
    w: Vec<f64>,
    total: f64,
}

/// A logarithm and a reciprocal of the same value.
type LnRecip = (f64, f64);

/// Value, gradient and (upper-triangle) Hessian of the log-likelihood in (r, α, a, b).
#[derive(Clone, Copy)]
struct Acc([f64; 15]);

const H: [[usize; 4]; 4] = [[5, 6, 7, 8], [6, 9, 10, 11], [7, 10, 12, 13], [8, 11, 13, 14]];

impl Prepared {
    /// `data` as [`group`] returns it: distinct and sorted by x.
    fn new(data: &[History]) -> Self {
        use rayon::prelude::*;
        let mut xs: Vec<f64> = data.iter().map(|h| h.x).collect();
        xs.dedup();
        // Non-negative times: their bit patterns sort as the numbers do.
        let mut bits: Vec<u64> = data.par_iter().flat_map_iter(|h| [h.t_x.to_bits(), h.t.to_bits()]).collect();
        bits.par_sort_unstable();
        bits.dedup();
        let times: Vec<f64> = bits.iter().map(|b| f64::from_bits(*b)).collect();
        let find = |z: f64| bits.binary_search(&z.to_bits()).expect("time is in its table") as u32;
        let mut wx = vec![0.0; xs.len()];
        let mut xi = Vec::with_capacity(data.len());
        let mut at = 0usize;
        for h in data {
            while xs[at] != h.x {
                at += 1;
            }
            wx[at] += h.weight;
            xi.push(at as u32);
        }
        let (txi, ti): (Vec<u32>, Vec<u32>) = data.par_iter().map(|h| (find(h.t_x), find(h.t))).unzip();
        let w: Vec<f64> = data.iter().map(|h| h.weight).collect();
        let total = w.iter().sum();
        Self {
            xs,
            wx,
            times,
            xi,
            txi,
            ti,
            w,
            total,
        }
    }

    /// Every `step`-th history with its weight: a systematic sample for the starts.
    fn sample(data: &[History], step: usize) -> Self {
        let v: Vec<History> = data.iter().step_by(step.max(1)).copied().collect();
        Self::new(&v)
    }

    fn eval(&self, m: &BgNbd) -> Acc {
        let BgNbd { alpha, a, b, .. } = *m;
        let mut acc = self.frequency_terms(m);
        // Per distinct x: ln(b + x − 1) and its reciprocal; per distinct time: ln(α + t).
        let lbx: Vec<(f64, f64)> = self
            .xs
            .iter()
            .map(|x| {
                if *x > 0.0 {
                    ((b + x - 1.0).ln(), 1.0 / (b + x - 1.0))
                } else {
                    (0.0, 0.0)
                }
            })
            .collect();
        let lt: Vec<(f64, f64)> = self.times.iter().map(|t| ((alpha + t).ln(), 1.0 / (alpha + t))).collect();
        let ln_a = a.ln();
        let sum = ordered_fold(
            self.w.len(),
            || Acc([0.0; 15]),
            |acc, i| self.customer_terms(&mut acc.0, i, m, (&lbx, &lt, ln_a)),
            |a, b| a.0.iter_mut().zip(b.0).for_each(|(x, y)| *x += y),
        );
        acc.0.iter_mut().zip(sum.0).for_each(|(x, y)| *x += y);
        acc
    }

    /// The terms in x alone, weighted by the customers with that x.
    fn frequency_terms(&self, m: &BgNbd) -> Acc {
        let BgNbd { r, alpha, a, b } = *m;
        let mut acc = Acc([0.0; 15]);
        let e = &mut acc.0;
        let (lg_r, dg_r, tg_r) = (ln_gamma(r), digamma(r), trigamma(r));
        let (lg_ab, dg_ab, tg_ab) = (ln_gamma(a + b), digamma(a + b), trigamma(a + b));
        let (lg_b, dg_b, tg_b) = (ln_gamma(b), digamma(b), trigamma(b));
        let ln_alpha = alpha.ln();
        for (x, w) in self.xs.iter().zip(&self.wx) {
            let (x, w) = (*x, *w);
            e[0] += w * (ln_gamma(r + x) - lg_r + r * ln_alpha + lg_ab + ln_gamma(b + x) - lg_b - ln_gamma(a + b + x));
            let pab = dg_ab - digamma(a + b + x);
            let tab = tg_ab - trigamma(a + b + x);
            e[1] += w * (digamma(r + x) - dg_r + ln_alpha);
            e[2] += w * r / alpha;
            e[3] += w * pab;
            e[4] += w * (pab + digamma(b + x) - dg_b);
            e[H[0][0]] += w * (trigamma(r + x) - tg_r);
            e[H[0][1]] += w / alpha;
            e[H[1][1]] -= w * r / (alpha * alpha);
            e[H[2][2]] += w * tab;
            e[H[2][3]] += w * tab;
            e[H[3][3]] += w * (tab + trigamma(b + x) - tg_b);
        }
        acc
    }

    /// Adds the terms of distinct history `i` to `e`: `lbx` and `lt` hold ln(b + x − 1)
    /// per distinct x and ln(α + t) per distinct time, with their reciprocals.
    #[inline]
    fn customer_terms(&self, e: &mut [f64; 15], i: usize, m: &BgNbd, (lbx, lt, ln_a): (&[LnRecip], &[LnRecip], f64)) {
        let BgNbd { r, a, .. } = *m;
        let w = self.w[i];
        let xi = self.xi[i] as usize;
        let x = self.xs[xi];
        let rx = r + x;
        let (l_t, i_t) = lt[self.ti[i] as usize];
        let a3 = -rx * l_t;
        if x == 0.0 {
            e[0] += w * a3;
            e[1] -= w * l_t;
            e[2] -= w * rx * i_t;
            e[H[0][1]] -= w * i_t;
            e[H[1][1]] += w * rx * i_t * i_t;
            return;
        }
        let (l_tx, i_tx) = lt[self.txi[i] as usize];
        let (l_b, c) = lbx[xi];
        let a4 = ln_a - l_b - rx * l_tx;
        // ln(e^a3 + e^a4) = a3 + softplus(d) and the weights of the two terms,
        // from one exponential.
        let d = a4 - a3;
        let z = (-d.abs()).exp();
        let (w4, w3) = if d > 0.0 {
            (1.0 / (1.0 + z), z / (1.0 + z))
        } else {
            (z / (1.0 + z), 1.0 / (1.0 + z))
        };
        e[0] += w * (a3 + d.max(0.0) + z.ln_1p());
        // Gradients of the two terms: g3 = (−L_T, −(r+x) I_T, 0, 0),
        // g4 = (−L_tx, −(r+x) I_tx, 1/a, −c).
        let g3 = [-l_t, -rx * i_t];
        let g4 = [-l_tx, -rx * i_tx, 1.0 / a, -c];
        e[1] += w * (w3 * g3[0] + w4 * g4[0]);
        e[2] += w * (w3 * g3[1] + w4 * g4[1]);
        e[3] += w * w4 * g4[2];
        e[4] += w * w4 * g4[3];
        // Hessian: w3 H3 + w4 H4 + w3 w4 (g3 − g4)(g3 − g4)ᵀ.
        e[H[0][1]] -= w * (w3 * i_t + w4 * i_tx);
        e[H[1][1]] += w * rx * (w3 * i_t * i_t + w4 * i_tx * i_tx);
        e[H[2][2]] -= w * w4 / (a * a);
        e[H[3][3]] += w * w4 * c * c;
        let dg = [g3[0] - g4[0], g3[1] - g4[1], -g4[2], -g4[3]];
        let k = w * w3 * w4;
        for p in 0..4 {
            for q in p..4 {
                e[H[p][q]] += k * dg[p] * dg[q];
            }
        }
    }

    /// The mean negative log-likelihood over log-parameters, with gradient and Hessian.
    fn objective(&self, v: &[f64]) -> Option<(f64, Vec<f64>, Vec<f64>)> {
        if v.iter().any(|z| !(-30.0..30.0).contains(z)) {
            return None;
        }
        let m = BgNbd::from_log(v);
        let e = self.eval(&m).0;
        let p = [m.r, m.alpha, m.a, m.b];
        let n = self.total;
        let g: Vec<f64> = (0..4).map(|i| -e[1 + i] * p[i] / n).collect();
        let mut h = vec![0.0; 16];
        for i in 0..4 {
            for j in 0..4 {
                let mut v = p[i] * p[j] * e[H[i][j]];
                if i == j {
                    v += p[i] * e[1 + i];
                }
                h[i * 4 + j] = -v / n;
            }
        }
        Some((-e[0] / n, g, h))
    }
}

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
    pub fn fit(histories: &[History]) -> Result<Fit<BgNbd>, ModelError> {
        check(histories)?;
        let data = group(histories);
        let full = Prepared::new(&data);
        let total = full.total;
        let mean_t = data.iter().map(|h| h.weight * h.t).sum::<f64>() / total;
        let starts = [
            vec![0.0, mean_t.ln(), 0.0, 0.0],
            vec![(0.5f64).ln(), (mean_t / 4.0).ln(), (0.5f64).ln(), (3.0f64).ln()],
            vec![(2.0f64).ln(), (mean_t * 2.0).ln(), (2.0f64).ln(), (0.5f64).ln()],
        ];
        let on_full = |v: &[f64]| full.objective(v);
        let sample = sample_stride(data.len()).map(|step| Prepared::sample(&data, step));
        let on_sample = |v: &[f64]| sample.as_ref().and_then(|s| s.objective(v));
        let on_sample: Option<&Second<'_>> = if sample.is_some() { Some(&on_sample) } else { None };
        let (m, iterations) = fit_from_starts(&on_full, on_sample, &starts).ok_or_else(no_finite_likelihood)?;
        Ok(Fit {
            params: Self::from_log(&m.x),
            log_likelihood: -m.value * total,
            converged: m.converged,
            iterations,
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

    /// P(alive | x, t_x, T) when a customer may also drop out right after their first
    /// purchase, as in the MBG/NBD reading of the same process (Batislam, Denizel &
    /// Filiztekin 2007): 1 / (1 + a / (b + x) · ((α + T) / (α + t_x))^(r + x)). Unlike
    /// [`p_alive`](Self::p_alive) it is below one for a customer who never came back.
    pub fn p_alive_any_purchase(&self, h: &History) -> f64 {
        let ln_ratio = self.a.ln() - (self.b + h.x).ln() + (self.r + h.x) * ((self.alpha + h.t) / (self.alpha + h.t_x)).ln();
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

    #[test]
    fn prepared_objective_matches_the_plain_sum_and_its_derivatives() {
        let hs = vec![
            History::new(0.0, 0.0, 30.0),
            History::new(4.0, 20.0, 35.0),
            History::new(1.0, 0.5, 2.0),
            History::new(4.0, 20.0, 35.0),
            History::new(12.0, 33.0, 35.0),
        ];
        let data = group(&hs);
        let prep = Prepared::new(&data);
        let v = [(0.7f64).ln(), (3.0f64).ln(), (1.3f64).ln(), (2.2f64).ln()];
        let (f, g, h) = prep.objective(&v).unwrap();
        let m = BgNbd::from_log(&v);
        let plain = -hs.iter().map(|h| m.log_likelihood(h)).sum::<f64>() / hs.len() as f64;
        assert!((f - plain).abs() < 1e-12, "{f} vs {plain}");
        for i in 0..4 {
            let step = 1e-5;
            let (mut hi, mut lo) = (v, v);
            hi[i] += step;
            lo[i] -= step;
            let (fh, gh, _) = prep.objective(&hi).unwrap();
            let (fl, gl, _) = prep.objective(&lo).unwrap();
            let fd = (fh - fl) / (2.0 * step);
            assert!((g[i] - fd).abs() < 1e-7, "gradient {i}: {} vs {fd}", g[i]);
            for j in 0..4 {
                let fd = (gh[j] - gl[j]) / (2.0 * step);
                assert!((h[i * 4 + j] - fd).abs() < 1e-6, "hessian {i},{j}: {} vs {fd}", h[i * 4 + j]);
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
