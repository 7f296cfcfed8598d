//! The Pareto/NBD model (Schmittlein, Morrison & Colombo 1987), with the likelihood as
//! written by Fader & Hardie (2005, "A Note on Deriving the Pareto/NBD Model and Related
//! Expressions").
//!
//! While alive, purchases are Poisson with rate λ ~ Gamma(r, α); lifetimes are
//! exponential with rate μ ~ Gamma(s, β). The likelihood needs the Gauss hypergeometric
//! function; the difference of its two terms is taken in log space (log1p of the ratio)
//! so it does not cancel catastrophically. The gradient is by central differences on the
//! log-parameters (the 2F1 parameter derivatives are not worth their complexity here).

use crate::btyd::{check, group, Fit, History};
use crate::error::{no_finite_likelihood, ModelError};
use crate::optimize::{best_of_with, bfgs_with, sample_stride, Minimum};
use crate::special::{ln_gamma, ln_hyp2f1_a_a1, log_add_exp};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParetoNbd {
    pub r: f64,
    pub alpha: f64,
    pub s: f64,
    pub beta: f64,
}

impl ParetoNbd {
    fn from_log(v: &[f64]) -> Self {
        Self {
            r: v[0].exp(),
            alpha: v[1].exp(),
            s: v[2].exp(),
            beta: v[3].exp(),
        }
    }

    /// The branch of A0 the parameters take: the larger of α and β, the second 2F1
    /// parameter (which may depend on x) and |α − β|.
    fn a0_branch(&self, x: f64) -> (f64, f64, f64) {
        let Self { r, alpha, s, beta } = *self;
        if alpha >= beta {
            (alpha, s + 1.0, alpha - beta)
        } else {
            (beta, r + x, beta - alpha)
        }
    }

    /// One of the two terms of A0 at time `t` (t_x or T) for frequency `x`, in log space.
    fn a0_term(&self, x: f64, t: f64) -> Option<f64> {
        let rsx = self.r + self.s + x;
        let (big, b_par, diff) = self.a0_branch(x);
        Some(ln_hyp2f1_a_a1(rsx, b_par, diff / (big + t))? - rsx * (big + t).ln())
    }

    /// ln A0 of Fader & Hardie's note from its two terms, lt1 at t_x and lt2 at T.
    fn ln_a0_of(lt1: f64, lt2: f64) -> f64 {
        // ln(e^lt1 − e^lt2), with lt1 ≥ lt2 since t_x ≤ T.
        let d = lt2 - lt1;
        if d >= 0.0 {
            return f64::NEG_INFINITY;
        }
        lt1 + (-d.exp()).ln_1p()
    }

    /// ln A0 of Fader & Hardie's note (`None` outside the domain of 2F1).
    fn ln_a0(&self, h: &History) -> Option<f64> {
        Some(Self::ln_a0_of(self.a0_term(h.x, h.t_x)?, self.a0_term(h.x, h.t)?))
    }

    /// The log-likelihood of a history whose A0 terms are known.
    fn log_likelihood_with(&self, h: &History, lt1: f64, lt2: f64) -> f64 {
        let Self { r, alpha, s, beta } = *self;
        let x = h.x;
        let ln_a0 = Self::ln_a0_of(lt1, lt2);
        let head = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln() + s * beta.ln();
        let alive = -(r + x) * (alpha + h.t).ln() - s * (beta + h.t).ln();
        let died = (s / (r + s + x)).ln() + ln_a0;
        head + log_add_exp(alive, died)
    }

    pub fn log_likelihood(&self, h: &History) -> f64 {
        match (self.a0_term(h.x, h.t_x), self.a0_term(h.x, h.t)) {
            (Some(lt1), Some(lt2)) => self.log_likelihood_with(h, lt1, lt2),
            _ => f64::NAN,
        }
    }

    /// Σ weight × log-likelihood over grouped histories.
    pub fn total_log_likelihood(&self, data: &[History]) -> f64 {
        Prepared::new(data).total_log_likelihood(self)
    }

    /// Maximum-likelihood fit. Many distinct histories: BFGS runs from every start on a
    /// systematic sample of them and the best end point is polished on all (from every
    /// start on all if the polish does not converge).
    pub fn fit(histories: &[History]) -> Result<Fit<ParetoNbd>, ModelError> {
        check(histories)?;
        let data = group(histories);
        let full = Prepared::new(&data);
        let mean_t = data.iter().map(|h| h.weight * h.t).sum::<f64>() / full.total;
        let starts = [
            vec![0.0, mean_t.ln(), 0.0, mean_t.ln()],
            vec![(0.5f64).ln(), (mean_t / 4.0).ln(), (0.5f64).ln(), (mean_t / 4.0).ln()],
            vec![(2.0f64).ln(), (mean_t * 2.0).ln(), (2.0f64).ln(), (mean_t * 2.0).ln()],
        ];
        let on_full = |v: &[f64]| full.objective(v);
        let on_full_value = |v: &[f64]| full.value(v);
        let sampled = sample_stride(data.len()).and_then(|step| {
            let sample: Vec<History> = data.iter().step_by(step).copied().collect();
            let sample = Prepared::new(&sample);
            let start = best_of_with(
                &|v: &[f64]| sample.objective(v),
                Some(&|v: &[f64]| sample.value(v)),
                &starts,
                100,
                1e-8,
            )?;
            // A polish that does not converge on all rows is kept, reported unconverged:
            // the whole search on all rows would find no optimum either.
            let polished = bfgs_with(&on_full, Some(&on_full_value), &start.x, 100, 1e-8);
            polished.value.is_finite().then(|| Minimum {
                iterations: start.iterations + polished.iterations,
                ..polished
            })
        });
        let best = match sampled {
            Some(m) => m,
            None => best_of_with(&on_full, Some(&on_full_value), &starts, 100, 1e-8).ok_or_else(no_finite_likelihood)?,
        };
        Ok(Fit {
            params: Self::from_log(&best.x),
            log_likelihood: -best.value * full.total,
            converged: best.converged,
            iterations: best.iterations,
            groups: data.len(),
            message: best.message,
        })
    }

    /// P(alive) at the end of calibration.
    pub fn p_alive(&self, h: &History) -> Option<f64> {
        let Self { r, alpha, s, beta } = *self;
        let ln_a0 = self.ln_a0(h)?;
        let ln_ratio = (s / (r + s + h.x)).ln() + (r + h.x) * (alpha + h.t).ln() + s * (beta + h.t).ln() + ln_a0;
        Some(1.0 / (1.0 + ln_ratio.exp()))
    }

    /// E[X(t)] for a customer who just made a first purchase.
    pub fn expected_purchases(&self, t: f64) -> f64 {
        let Self { r, alpha, s, beta } = *self;
        r * beta / (alpha * (s - 1.0)) * (1.0 - (beta / (beta + t)).powf(s - 1.0))
    }

    /// E[Y(t) | x, t_x, T].
    pub fn conditional_expected(&self, horizon: f64, h: &History) -> Option<f64> {
        let Self { r, alpha, s, beta } = *self;
        let e = (r + h.x) * (beta + h.t) / ((alpha + h.t) * (s - 1.0)) * (1.0 - ((beta + h.t) / (beta + h.t + horizon)).powf(s - 1.0));
        Some(e * self.p_alive(h)?)
    }
}

/// Grouped histories laid out so the two hypergeometric terms of A0 — the costly part
/// of the likelihood — are computed once per distinct (x, t) pair rather than once per
/// history: t_x and T take few distinct values (days since the first purchase), so the
/// pairs are far fewer than the histories of a large customer base.
struct Prepared<'a> {
    data: &'a [History],
    /// Distinct (x, t) pairs, as bit patterns (valid values are non-negative, so their
    /// bits sort as the numbers do).
    pairs: Vec<(u64, u64)>,
    /// Per history: the indices of its (x, t_x) and (x, T) pairs.
    at: Vec<(u32, u32)>,
    total: f64,
}

impl<'a> Prepared<'a> {
    fn new(data: &'a [History]) -> Self {
        let key = |x: f64, t: f64| ((x + 0.0).to_bits(), (t + 0.0).to_bits());
        let mut pairs: Vec<(u64, u64)> = data.iter().flat_map(|h| [key(h.x, h.t_x), key(h.x, h.t)]).collect();
        pairs.sort_unstable();
        pairs.dedup();
        let index = |k: (u64, u64)| pairs.binary_search(&k).expect("every pair was added") as u32;
        let at = data.iter().map(|h| (index(key(h.x, h.t_x)), index(key(h.x, h.t)))).collect();
        Self {
            data,
            pairs,
            at,
            total: data.iter().map(|h| h.weight).sum(),
        }
    }

    /// Σ weight × log-likelihood. Fixed chunks are summed in parallel and then added in
    /// order: the result does not depend on the number of threads.
    fn total_log_likelihood(&self, m: &ParetoNbd) -> f64 {
        use rayon::prelude::*;
        let terms: Vec<f64> = self
            .pairs
            .par_chunks(256)
            .flat_map_iter(|c| {
                c.iter()
                    .map(|&(x, t)| m.a0_term(f64::from_bits(x), f64::from_bits(t)).unwrap_or(f64::NAN))
            })
            .collect();
        let parts: Vec<f64> = self
            .data
            .par_chunks(256)
            .zip(self.at.par_chunks(256))
            .map(|(c, at)| {
                c.iter()
                    .zip(at)
                    .map(|(h, &(i, j))| h.weight * m.log_likelihood_with(h, terms[i as usize], terms[j as usize]))
                    .sum()
            })
            .collect();
        parts.iter().sum()
    }

    /// The mean negative log-likelihood at log-parameters `v` (∞ outside the box or where
    /// it is not finite).
    fn value(&self, v: &[f64]) -> f64 {
        if v.iter().any(|z| !(-25.0..25.0).contains(z)) {
            return f64::INFINITY;
        }
        let ll = self.total_log_likelihood(&ParetoNbd::from_log(v));
        if ll.is_finite() {
            -ll / self.total
        } else {
            f64::INFINITY
        }
    }

    /// The value and its gradient by central differences on the log-parameters.
    fn objective(&self, v: &[f64]) -> (f64, Vec<f64>) {
        let f = self.value(v);
        if !f.is_finite() {
            // A rejected trial point of the line search: no gradient needed.
            return (f, vec![0.0; 4]);
        }
        let g = (0..4)
            .map(|i| {
                let h = 1e-6;
                let (mut hi, mut lo) = (v.to_vec(), v.to_vec());
                hi[i] += h;
                lo[i] -= h;
                (self.value(&hi) - self.value(&lo)) / (2.0 * h)
            })
            .collect();
        (f, g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The MLE on the CDNOW sample (reproduced with scipy for the shared data notes).
    const MLE: ParetoNbd = ParetoNbd {
        r: 0.553_276,
        alpha: 10.577_613,
        s: 0.606_213,
        beta: 11.667_907,
    };

    #[test]
    fn unconditional_expectation_matches_btyd() {
        let want = [
            0.0,
            0.050_778_21,
            0.099_160_88,
            0.145_425_07,
            0.189_799_3,
            0.232_474_66,
            0.273_612_74,
            0.313_351_59,
            0.351_810_24,
            0.389_092_11,
        ];
        // BTYD's figures come from slightly different estimates (its optimiser stops
        // earlier); lifetimes checks them to 0.01, we to 0.005.
        for (t, w) in want.iter().enumerate() {
            assert!((MLE.expected_purchases(t as f64) - w).abs() < 5e-3, "{t}");
        }
    }

    #[test]
    fn both_branches_of_a0_agree_near_alpha_equals_beta() {
        let h = History::new(3.0, 20.0, 30.0);
        let a = ParetoNbd {
            r: 0.5,
            alpha: 10.0,
            s: 0.6,
            beta: 10.0 - 1e-7,
        }
        .log_likelihood(&h);
        let b = ParetoNbd {
            r: 0.5,
            alpha: 10.0,
            s: 0.6,
            beta: 10.0 + 1e-7,
        }
        .log_likelihood(&h);
        assert!((a - b).abs() < 1e-6, "{a} {b}");
    }
}
