//! Regression models over a row-major feature matrix (`n × d`, one row per customer):
//! standardisation, L2-regularised logistic regression (Newton's method), multinomial
//! logistic (softmax) regression (BFGS with analytic gradient) and ordinary least squares
//! with standard errors.

use crate::error::ModelError;
use rayon::prelude::*;

use crate::linalg::{solve_spd, spd_inverse};
use crate::optimize::bfgs;
use crate::parallel::{add_into, ordered_fold, ordered_sum};

/// Column means and standard deviations; constant columns get a scale of 1.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Standardizer {
    pub mean: Vec<f64>,
    pub sd: Vec<f64>,
}

impl Standardizer {
    pub fn fit(x: &[f64], d: usize) -> Self {
        let n = (x.len() / d.max(1)).max(1) as f64;
        let mut mean = vec![0.0; d];
        for row in x.chunks_exact(d) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; d];
        for row in x.chunks_exact(d) {
            for j in 0..d {
                var[j] += (row[j] - mean[j]).powi(2);
            }
        }
        let sd = var
            .iter()
            .map(|v| (v / n).sqrt())
            .map(|s| if s > 1e-12 { s } else { 1.0 })
            .collect();
        Self { mean, sd }
    }

    pub fn apply(&self, x: &[f64]) -> Vec<f64> {
        let d = self.mean.len();
        let mut out = x.to_vec();
        for row in out.chunks_exact_mut(d) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.sd) {
                *v = (*v - m) / s;
            }
        }
        out
    }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// A fitted logistic regression: `P(y) = σ(w·x + b)`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Logistic {
    pub weights: Vec<f64>,
    pub intercept: f64,
    pub iterations: usize,
    pub converged: bool,
}

impl Logistic {
    /// Maximises the log-likelihood minus `l2 / 2 · |w|²` (the intercept is not
    /// penalised) by Newton's method with step halving. `x` should be standardised.
    pub fn fit(x: &[f64], d: usize, y: &[bool], l2: f64) -> Self {
        let p = d + 1;
        let mut w = vec![0.0; p];
        let pos = y.iter().filter(|&&v| v).count() as f64;
        let rate = ((pos + 0.5) / (y.len() as f64 + 1.0)).clamp(1e-6, 1.0 - 1e-6);
        w[d] = (rate / (1.0 - rate)).ln();
        let objective = |w: &[f64]| -> f64 {
            let dd = d.max(1);
            let ll = ordered_sum(y.len(), |i| {
                let z = linear(w, &x[i * dd..(i + 1) * dd], d);
                // log(1 + e^z) computed without overflow.
                let soft = if z > 0.0 { z + (-z).exp().ln_1p() } else { z.exp().ln_1p() };
                if y[i] {
                    z - soft
                } else {
                    -soft
                }
            });
            -ll + 0.5 * l2 * w[..d].iter().map(|v| v * v).sum::<f64>()
        };
        let mut f = objective(&w);
        let mut converged = false;
        let mut iterations = 0;
        for it in 0..100 {
            iterations = it + 1;
            let dd = d.max(1);
            let (mut g, mut h) = ordered_fold(
                y.len(),
                || (vec![0.0; p], vec![0.0; p * p]),
                |(g, h), i| {
                    let row = &x[i * dd..(i + 1) * dd];
                    let mu = sigmoid(linear(&w, row, d));
                    let r = mu - f64::from(u8::from(y[i]));
                    let wt = (mu * (1.0 - mu)).max(1e-12);
                    for a in 0..p {
                        let xa = if a < d { row[a] } else { 1.0 };
                        g[a] += r * xa;
                        for b in 0..=a {
                            let xb = if b < d { row[b] } else { 1.0 };
                            h[a * p + b] += wt * xa * xb;
                        }
                    }
                },
                |(g1, h1), (g2, h2)| {
                    add_into(g1, &g2);
                    add_into(h1, &h2);
                },
            );
            for a in 0..p {
                for b in 0..a {
                    h[b * p + a] = h[a * p + b];
                }
            }
            for a in 0..d {
                g[a] += l2 * w[a];
                h[a * p + a] += l2;
            }
            let step = solve_spd(&h, p, &g);
            let decrement: f64 = step.iter().zip(&g).map(|(s, g)| s * g).sum();
            let mut t = 1.0;
            let mut accepted = false;
            for _ in 0..30 {
                let cand: Vec<f64> = w.iter().zip(&step).map(|(w, s)| w - t * s).collect();
                let fc = objective(&cand);
                if fc.is_finite() && fc <= f + 1e-12 * f.abs().max(1.0) {
                    w = cand;
                    f = fc;
                    accepted = true;
                    break;
                }
                t *= 0.5;
            }
            if !accepted || decrement.abs() < 1e-10 * f.abs().max(1.0) {
                converged = true;
                break;
            }
        }
        Logistic {
            intercept: w[d],
            weights: w[..d].to_vec(),
            iterations,
            converged,
        }
    }

    pub fn predict(&self, row: &[f64]) -> f64 {
        sigmoid(self.weights.iter().zip(row).map(|(w, x)| w * x).sum::<f64>() + self.intercept)
    }

    pub fn predict_all(&self, x: &[f64]) -> Vec<f64> {
        let d = self.weights.len().max(1);
        x.par_chunks_exact(d).map(|row| self.predict(row)).collect()
    }
}

fn linear(w: &[f64], row: &[f64], d: usize) -> f64 {
    let mut z = w[d];
    for j in 0..d {
        z += w[j] * row[j];
    }
    z
}

/// A fitted multinomial logistic regression over `classes` classes:
/// `p(k | x) ∝ exp(w_k·x + b_k)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Softmax {
    /// `classes × (d + 1)`, the intercept last in each row.
    pub weights: Vec<f64>,
    pub classes: usize,
    pub d: usize,
    pub iterations: usize,
    pub converged: bool,
}

impl Softmax {
    /// Maximises the log-likelihood minus `l2 / 2 · |W|²` (intercepts unpenalised) by
    /// BFGS. `y[i]` is the class of row `i`, below `classes`.
    pub fn fit(x: &[f64], d: usize, y: &[usize], classes: usize, l2: f64) -> Self {
        let p = d + 1;
        let n = y.len();
        let objective = |w: &[f64]| -> (f64, Vec<f64>) {
            let dd = d.max(1);
            let (ll, mut g) = ordered_fold(
                n,
                || (0.0, vec![0.0; classes * p]),
                |(ll, g), i| {
                    let (row, yi) = (&x[i * dd..(i + 1) * dd], y[i]);
                    let z: Vec<f64> = (0..classes).map(|k| linear(&w[k * p..(k + 1) * p], row, d)).collect();
                    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                    *ll += z[yi] - lse;
                    for k in 0..classes {
                        let r = (z[k] - lse).exp() - f64::from(u8::from(k == yi));
                        for j in 0..d {
                            g[k * p + j] += r * row[j];
                        }
                        g[k * p + d] += r;
                    }
                },
                |(a, g1), (b, g2)| {
                    *a += b;
                    add_into(g1, &g2);
                },
            );
            let mut pen = 0.0;
            for k in 0..classes {
                for j in 0..d {
                    pen += w[k * p + j] * w[k * p + j];
                    g[k * p + j] += l2 * w[k * p + j];
                }
            }
            // Scaled by n so the tolerance means the same at every data size.
            let s = 1.0 / n.max(1) as f64;
            g.iter_mut().for_each(|v| *v *= s);
            ((-ll + 0.5 * l2 * pen) * s, g)
        };
        let m = bfgs(&objective, &vec![0.0; classes * p], 500, 1e-5);
        Softmax {
            weights: m.x,
            classes,
            d,
            iterations: m.iterations,
            converged: m.converged,
        }
    }

    /// Class probabilities of one row.
    pub fn predict(&self, row: &[f64]) -> Vec<f64> {
        let p = self.d + 1;
        let z: Vec<f64> = (0..self.classes)
            .map(|k| linear(&self.weights[k * p..(k + 1) * p], row, self.d))
            .collect();
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|v| v / s).collect()
    }
}

/// Ordinary least squares with an intercept, with the usual inference.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LinearFit {
    /// Coefficients of the `d` columns, then the intercept.
    pub coefficients: Vec<f64>,
    pub std_errors: Vec<f64>,
    pub r2: f64,
    pub mse: f64,
    pub n: usize,
}

impl LinearFit {
    pub fn fit(x: &[f64], d: usize, y: &[f64]) -> Result<Self, ModelError> {
        let n = y.len();
        let p = d + 1;
        if n <= p {
            return Err(ModelError::TooLittleData(format!("{n} rows are too few for {p} coefficients")));
        }
        let mut xtx = vec![0.0; p * p];
        let mut xty = vec![0.0; p];
        for (row, &yi) in x.chunks_exact(d.max(1)).zip(y) {
            for a in 0..p {
                let xa = if a < d { row[a] } else { 1.0 };
                xty[a] += xa * yi;
                for b in 0..p {
                    let xb = if b < d { row[b] } else { 1.0 };
                    xtx[a * p + b] += xa * xb;
                }
            }
        }
        let beta = solve_spd(&xtx, p, &xty);
        let pred = |row: &[f64]| (0..d).map(|j| beta[j] * row[j]).sum::<f64>() + beta[d];
        let rss: f64 = x.chunks_exact(d.max(1)).zip(y).map(|(r, &yi)| (yi - pred(r)).powi(2)).sum();
        let mean = y.iter().sum::<f64>() / n as f64;
        let tss: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
        let sigma2 = rss / (n - p) as f64;
        let std_errors = match spd_inverse(&xtx, p) {
            Some(inv) => (0..p).map(|j| (sigma2 * inv[j * p + j]).sqrt()).collect(),
            None => vec![f64::NAN; p],
        };
        Ok(LinearFit {
            coefficients: beta,
            std_errors,
            r2: if tss > 0.0 { 1.0 - rss / tss } else { 0.0 },
            mse: rss / n as f64,
            n,
        })
    }

    pub fn predict(&self, row: &[f64]) -> f64 {
        let d = self.coefficients.len() - 1;
        (0..d).map(|j| self.coefficients[j] * row[j]).sum::<f64>() + self.coefficients[d]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::auc;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn simulated(n: usize, w: &[f64], b: f64, seed: u64) -> (Vec<f64>, Vec<bool>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = w.len();
        let mut x = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let row: Vec<f64> = (0..d).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
            let p = sigmoid(row.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() + b);
            y.push(rng.random::<f64>() < p);
            x.extend(row);
        }
        (x, y)
    }

    #[test]
    fn logistic_recovers_its_coefficients() {
        let (x, y) = simulated(20_000, &[2.0, -1.0, 0.0], 0.5, 1);
        let m = Logistic::fit(&x, 3, &y, 1e-6);
        assert!(m.converged);
        for (got, want) in m.weights.iter().zip([2.0, -1.0, 0.0]) {
            assert!((got - want).abs() < 0.1, "{got} vs {want}");
        }
        assert!((m.intercept - 0.5).abs() < 0.1);
        let p = m.predict_all(&x);
        assert!(auc(&p, &y).unwrap() > 0.7);
    }

    #[test]
    fn fits_are_bit_for_bit_repeatable_across_threads() {
        let (x, y) = simulated(30_000, &[1.0, -0.5, 0.25], 0.1, 9);
        let first = Logistic::fit(&x, 3, &y, 1.0);
        let cls: Vec<usize> = y.iter().map(|&v| usize::from(v)).collect();
        let soft = Softmax::fit(&x[..3 * 9000], 3, &cls[..9000], 2, 1.0);
        for _ in 0..3 {
            assert_eq!(Logistic::fit(&x, 3, &y, 1.0), first);
            assert_eq!(Softmax::fit(&x[..3 * 9000], 3, &cls[..9000], 2, 1.0), soft);
        }
    }

    #[test]
    fn logistic_survives_separable_data() {
        let x = vec![-2.0, -1.0, 1.0, 2.0];
        let y = vec![false, false, true, true];
        let m = Logistic::fit(&x, 1, &y, 1.0);
        assert!(m.weights[0].is_finite() && m.weights[0] > 0.0);
    }

    #[test]
    fn softmax_gradient_fit_matches_two_class_logistic() {
        let (x, y) = simulated(5_000, &[1.5, -0.5], -0.2, 2);
        let cls: Vec<usize> = y.iter().map(|&v| usize::from(v)).collect();
        let s = Softmax::fit(&x, 2, &cls, 2, 1e-6);
        let l = Logistic::fit(&x, 2, &y, 1e-6);
        for i in 0..20 {
            let row = &x[i * 2..i * 2 + 2];
            assert!((s.predict(row)[1] - l.predict(row)).abs() < 1e-3);
        }
    }

    #[test]
    fn ols_matches_a_known_line() {
        let x: Vec<f64> = (0..50).map(f64::from).collect();
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, v)| 3.0 + 2.0 * v + if i % 2 == 0 { 0.5 } else { -0.5 })
            .collect();
        let f = LinearFit::fit(&x, 1, &y).unwrap();
        assert!((f.coefficients[0] - 2.0).abs() < 1e-2);
        assert!((f.coefficients[1] - 3.0).abs() < 0.05);
        assert!(f.r2 > 0.999 && f.std_errors[0] > 0.0 && (f.mse - 0.25).abs() < 0.01);
        assert!(LinearFit::fit(&x[..1], 1, &y[..1]).is_err());
    }
}
