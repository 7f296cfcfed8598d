//! Exponential smoothing with a damped additive trend and optional additive seasonality
//! (ETS(A,Ad,A) / ETS(A,Ad,N) in Hyndman et al., *Forecasting with Exponential
//! Smoothing*, 2008). Smoothing parameters are fitted by minimising the one-step sum of
//! squared errors (BFGS on logit-transformed parameters); prediction intervals use the
//! model's analytic forecast variance σ²(1 + Σ c_j²).

use crate::optimize::{best_of_with, Objective};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EtsParams {
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
    pub phi: f64,
}

/// A fitted model with its in-sample one-step forecasts and the forecasts ahead.
#[derive(Debug, Clone, PartialEq)]
pub struct Ets {
    pub params: EtsParams,
    /// Season length, or 0 without seasonality.
    pub season: usize,
    /// One-step-ahead forecasts of the observed periods.
    pub fitted: Vec<f64>,
    /// Forecasts of the next periods, with lower and upper bounds.
    pub ahead: Vec<(f64, f64, f64)>,
    pub sigma: f64,
}

struct State {
    level: f64,
    trend: f64,
    seasonal: Vec<f64>,
}

fn initial(y: &[f64], m: usize) -> State {
    if m > 0 {
        let first: f64 = y[..m].iter().sum::<f64>() / m as f64;
        let second: f64 = y[m..2 * m].iter().sum::<f64>() / m as f64;
        // Seasonal states from the first season around its linear trend; the level is the
        // one just before the first observation.
        let trend = (second - first) / m as f64;
        let centre = (m as f64 - 1.0) / 2.0;
        State {
            level: first - trend * (centre + 1.0),
            trend,
            seasonal: y[..m]
                .iter()
                .enumerate()
                .map(|(i, v)| v - first - trend * (i as f64 - centre))
                .collect(),
        }
    } else {
        let k = y.len().min(4);
        let level = y[..k].iter().sum::<f64>() / k as f64;
        let trend = if y.len() > 1 {
            (y[k - 1] - y[0]) / (k as f64 - 1.0).max(1.0)
        } else {
            0.0
        };
        State {
            level,
            trend,
            seasonal: vec![0.0],
        }
    }
}

/// Runs the recursions; returns the one-step forecasts and the final state.
fn filter(y: &[f64], m: usize, p: &EtsParams) -> (Vec<f64>, State) {
    let mut s = initial(y, m);
    let mut fitted = Vec::with_capacity(y.len());
    for (t, &obs) in y.iter().enumerate() {
        let season = if m > 0 { s.seasonal[t % m] } else { 0.0 };
        let f = s.level + p.phi * s.trend + season;
        fitted.push(f);
        let e = obs - f;
        s.level = s.level + p.phi * s.trend + p.alpha * e;
        s.trend = p.phi * s.trend + p.beta * e;
        if m > 0 {
            s.seasonal[t % m] = season + p.gamma * e;
        }
    }
    (fitted, s)
}

fn logistic(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

fn params_of(v: &[f64], seasonal: bool) -> EtsParams {
    let alpha = 0.001 + 0.998 * logistic(v[0]);
    EtsParams {
        alpha,
        beta: alpha * 0.999 * logistic(v[1]),
        gamma: if seasonal { (1.0 - alpha) * 0.999 * logistic(v[2]) } else { 0.0 },
        // φ in [0.8, 0.98], the usual range.
        phi: 0.8 + 0.18 * logistic(v[3]),
    }
}

impl Ets {
    /// Fits to the series `y` (equally spaced) and forecasts `horizon` periods with a
    /// `z` × σ interval (1.96 for 95 %). `season` is used only when at least two full
    /// seasons are observed. `None` for fewer than 4 observations.
    pub fn fit(y: &[f64], season: usize, horizon: usize, z: f64) -> Option<Self> {
        if y.len() < 4 || y.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let plain = Self::fit_with(y, 0, horizon, z)?;
        if season < 2 || y.len() < 2 * season {
            return Some(plain);
        }
        // The seasonal model must earn its m extra states: keep it only when its AIC,
        // n ln(SSE / n) + 2 × (parameters + initial states), is lower.
        let seasonal = Self::fit_with(y, season, horizon, z)?;
        let aic = |e: &Ets, k: usize| {
            let n = y.len() as f64;
            let sse: f64 = y.iter().zip(&e.fitted).map(|(a, b)| (a - b).powi(2)).sum();
            n * (sse / n).max(1e-300).ln() + 2.0 * k as f64
        };
        Some(if aic(&seasonal, 6 + season) < aic(&plain, 5) {
            seasonal
        } else {
            plain
        })
    }

    fn fit_with(y: &[f64], m: usize, horizon: usize, z: f64) -> Option<Self> {
        let sse = |v: &[f64]| -> f64 {
            let p = params_of(v, m > 0);
            let (f, _) = filter(y, m, &p);
            y.iter().zip(&f).map(|(a, b)| (a - b).powi(2)).sum::<f64>()
        };
        let objective: &Objective<'_> = &|v: &[f64]| {
            let f0 = sse(v);
            let g = (0..4)
                .map(|i| {
                    let mut w = v.to_vec();
                    w[i] += 1e-6;
                    (sse(&w) - f0) / 1e-6
                })
                .collect();
            (f0, g)
        };
        let starts = vec![vec![-1.0, -2.0, -2.0, 1.0], vec![0.5, -3.0, -3.0, 0.0], vec![-3.0, -4.0, -1.0, 2.0]];
        let best = best_of_with(objective, Some(&sse), &starts, 200, 1e-8)?;
        let params = params_of(&best.x, m > 0);
        let (fitted, state) = filter(y, m, &params);
        let n = y.len();
        let dof = (n as f64 - 4.0).max(1.0);
        let sigma = (y.iter().zip(&fitted).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / dof).sqrt();
        let mut ahead = Vec::with_capacity(horizon);
        let mut damp = 0.0;
        let mut var_sum = 0.0;
        for h in 1..=horizon {
            damp += params.phi.powi(h as i32);
            let season = if m > 0 { state.seasonal[(n + h - 1) % m] } else { 0.0 };
            let f = state.level + damp * state.trend + season;
            if h > 1 {
                let j = h - 1;
                let c = params.alpha
                    + params.beta * params.phi * (1.0 - params.phi.powi(j as i32)) / (1.0 - params.phi)
                    + if m > 0 && j % m == 0 { params.gamma } else { 0.0 };
                var_sum += c * c;
            }
            let half = z * sigma * (1.0 + var_sum).sqrt();
            ahead.push((f, f - half, f + half));
        }
        Some(Ets {
            params,
            season: m,
            fitted,
            ahead,
            sigma,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_trend_and_a_season() {
        let y: Vec<f64> = (0..120)
            .map(|t| 100.0 + 0.5 * f64::from(t) + 10.0 * (f64::from(t % 12) * std::f64::consts::PI / 6.0).sin())
            .collect();
        let m = Ets::fit(&y, 12, 12, 1.96).unwrap();
        assert_eq!(m.season, 12);
        for (h, (f, lo, hi)) in m.ahead.iter().enumerate() {
            let t = 120 + h as i32;
            let truth = 100.0 + 0.5 * f64::from(t) + 10.0 * (f64::from(t % 12) * std::f64::consts::PI / 6.0).sin();
            assert!((f - truth).abs() < 3.0, "h {h}: {f} vs {truth}");
            assert!(lo <= f && f <= hi);
        }
        // Intervals widen with the horizon.
        let w = |i: usize| m.ahead[i].2 - m.ahead[i].1;
        assert!(w(11) >= w(0));
    }

    #[test]
    fn short_or_flat_series() {
        assert!(Ets::fit(&[1.0, 2.0], 0, 3, 1.96).is_none());
        let m = Ets::fit(&[5.0; 10], 52, 4, 1.96).unwrap();
        assert_eq!(m.season, 0);
        assert!(m.ahead.iter().all(|(f, _, _)| (f - 5.0).abs() < 1e-6));
    }
}
