//! Unconstrained minimisation by BFGS with a backtracking (Armijo) line search.
//!
//! The customer-base models are fitted on log-parameters, so the search space is all of
//! R^n; the objective returns its value and analytic gradient. A point where the
//! objective is not finite is treated as infinitely bad, so the line search backs off
//! from it instead of failing.

/// The result of a minimisation. A run that stops without meeting the tolerance is
/// still returned, with `converged: false` and the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimum {
    pub x: Vec<f64>,
    pub value: f64,
    pub gradient_norm: f64,
    pub iterations: usize,
    pub converged: bool,
    pub message: String,
}

impl Minimum {
    fn converged(x: Vec<f64>, value: f64, gradient_norm: f64, iterations: usize) -> Self {
        Minimum {
            x,
            value,
            gradient_norm,
            iterations,
            converged: true,
            message: "gradient below tolerance".into(),
        }
    }

    /// The line search found no acceptable step: converged if the gradient is already
    /// small (no progress is possible at machine precision), else a failure.
    fn stalled(x: Vec<f64>, value: f64, gradient_norm: f64, iterations: usize) -> Self {
        let converged = gradient_norm <= 1e-5 * value.abs().max(1.0);
        Minimum {
            x,
            value,
            gradient_norm,
            iterations,
            converged,
            message: if converged {
                "no further progress possible at machine precision".into()
            } else {
                "line search failed".into()
            },
        }
    }

    fn exhausted(x: Vec<f64>, value: f64, gradient_norm: f64, max_iter: usize) -> Self {
        Minimum {
            x,
            value,
            gradient_norm,
            iterations: max_iter,
            converged: false,
            message: format!("stopped after {max_iter} iterations"),
        }
    }
}

/// The best of several runs: converged ones first, then the lowest value (the first of
/// equals); `None` when no run ends at a finite value.
pub fn best(runs: impl IntoIterator<Item = Minimum>) -> Option<Minimum> {
    runs.into_iter()
        .filter(|m| m.value.is_finite())
        .min_by(|a, b| (!a.converged).cmp(&!b.converged).then(a.value.total_cmp(&b.value)))
}

fn norm_inf(g: &[f64]) -> f64 {
    g.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// An objective: its value and gradient at a point.
pub type Objective<'a> = dyn Fn(&[f64]) -> (f64, Vec<f64>) + 'a;

/// Minimises `f` from `x0`. Convergence: the largest gradient component is below
/// `tol × max(1, |f|)`.
pub fn bfgs(f: &Objective<'_>, x0: &[f64], max_iter: usize, tol: f64) -> Minimum {
    bfgs_with(f, None, x0, max_iter, tol)
}

/// The value alone, for objectives whose gradient costs much more than their value
/// (finite differences): the line search then tries points by value and asks for the
/// gradient only at the point it accepts.
pub type Value<'a> = dyn Fn(&[f64]) -> f64 + 'a;

/// [`bfgs`] with an optional value-only function for the line search.
pub fn bfgs_with(f: &Objective<'_>, value: Option<&Value<'_>>, x0: &[f64], max_iter: usize, tol: f64) -> Minimum {
    let n = x0.len();
    let mut x = x0.to_vec();
    let (mut fx, mut g) = f(&x);
    if !fx.is_finite() || g.iter().any(|v| !v.is_finite()) {
        return Minimum {
            x,
            value: fx,
            gradient_norm: f64::NAN,
            iterations: 0,
            converged: false,
            message: "the objective is not finite at the starting point".into(),
        };
    }
    // Inverse Hessian approximation, starting as the identity.
    let mut h = vec![vec![0.0; n]; n];
    for (i, row) in h.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    let mut first_step = true;
    for it in 0..max_iter {
        let gn = norm_inf(&g);
        if gn <= tol * fx.abs().max(1.0) {
            return Minimum::converged(x, fx, gn, it);
        }
        let mut d: Vec<f64> = (0..n).map(|i| -(0..n).map(|j| h[i][j] * g[j]).sum::<f64>()).collect();
        let mut slope: f64 = d.iter().zip(&g).map(|(a, b)| a * b).sum();
        if slope >= 0.0 {
            // Not a descent direction: restart from steepest descent.
            for (i, row) in h.iter_mut().enumerate() {
                row.iter_mut().for_each(|v| *v = 0.0);
                row[i] = 1.0;
            }
            d = g.iter().map(|v| -v).collect();
            slope = -g.iter().map(|v| v * v).sum::<f64>();
        }
        // The first step of steepest descent is scaled to move at most one unit.
        let mut step = if first_step { (1.0 / norm_inf(&d)).min(1.0) } else { 1.0 };
        first_step = false;
        let mut accepted = None;
        for _ in 0..60 {
            let xn: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + step * b).collect();
            let sufficient = |v: f64| v.is_finite() && v <= fx + 1e-4 * step * slope;
            if value.is_none_or(|v| sufficient(v(&xn))) {
                let (fn_, gn_) = f(&xn);
                if sufficient(fn_) && gn_.iter().all(|v| v.is_finite()) {
                    accepted = Some((xn, fn_, gn_));
                    break;
                }
            }
            step *= 0.5;
        }
        let Some((xn, fn_, gn_)) = accepted else {
            return Minimum::stalled(x, fx, norm_inf(&g), it);
        };
        let s: Vec<f64> = xn.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gn_.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy: f64 = s.iter().zip(&y).map(|(a, b)| a * b).sum();
        if sy > 1e-12 {
            // H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ
            let rho = 1.0 / sy;
            let hy: Vec<f64> = (0..n).map(|i| (0..n).map(|j| h[i][j] * y[j]).sum()).collect();
            let yhy: f64 = y.iter().zip(&hy).map(|(a, b)| a * b).sum();
            for i in 0..n {
                for j in 0..n {
                    h[i][j] += -rho * (hy[i] * s[j] + s[i] * hy[j]) + (rho * rho * yhy + rho) * s[i] * s[j];
                }
            }
        }
        let rel = (fx - fn_).abs() / fx.abs().max(1.0);
        x = xn;
        fx = fn_;
        g = gn_;
        if rel < 1e-16 && norm_inf(&g) <= 1e-5 * fx.abs().max(1.0) {
            return Minimum {
                x,
                value: fx,
                gradient_norm: norm_inf(&g),
                iterations: it + 1,
                converged: true,
                message: "no further decrease".into(),
            };
        }
    }
    Minimum::exhausted(x, fx, norm_inf(&g), max_iter)
}

/// An objective with its exact Hessian (row-major n × n); `None` where it is not finite.
pub type Second<'a> = dyn Fn(&[f64]) -> Option<(f64, Vec<f64>, Vec<f64>)> + 'a;

/// Minimises `f` by Newton's method with Levenberg–Marquardt damping (a multiple of the
/// identity is added until the Hessian is positive definite), a step of at most `5`
/// units and a backtracking (Armijo) line search. Near the optimum the steps are plain
/// Newton steps, so convergence is quadratic: a handful of iterations where BFGS takes
/// dozens. Convergence: as for [`bfgs`].
pub fn newton(f: &Second<'_>, x0: &[f64], max_iter: usize, tol: f64) -> Minimum {
    let n = x0.len();
    let mut x = x0.to_vec();
    let Some((mut fx, mut g, mut h)) = f(&x).filter(|(v, g, h)| v.is_finite() && g.iter().chain(h).all(|z| z.is_finite())) else {
        return Minimum {
            x,
            value: f64::NAN,
            gradient_norm: f64::NAN,
            iterations: 0,
            converged: false,
            message: "the objective is not finite at the starting point".into(),
        };
    };
    let mut mu = 0.0f64;
    for it in 0..max_iter {
        let gn = norm_inf(&g);
        if gn <= tol * fx.abs().max(1.0) {
            return Minimum::converged(x, fx, gn, it);
        }
        let scale = (0..n).map(|i| h[i * n + i].abs()).fold(0.0, f64::max).max(1e-12);
        let mut d = loop {
            let mut l = h.clone();
            for i in 0..n {
                l[i * n + i] += mu;
            }
            if crate::linalg::cholesky(&mut l, n) {
                break crate::linalg::cholesky_solve(&l, n, &g)
                    .into_iter()
                    .map(|v| -v)
                    .collect::<Vec<f64>>();
            }
            mu = (mu * 4.0).max(1e-6 * scale);
            if mu > 1e12 * scale {
                break g.iter().map(|v| -v / scale).collect();
            }
        };
        let longest = norm_inf(&d);
        if longest > 5.0 {
            d.iter_mut().for_each(|v| *v *= 5.0 / longest);
        }
        let slope: f64 = d.iter().zip(&g).map(|(a, b)| a * b).sum();
        let mut step = 1.0;
        let mut accepted = None;
        if slope < 0.0 {
            for _ in 0..50 {
                let xn: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + step * b).collect();
                if let Some((v, gv, hv)) = f(&xn) {
                    if v.is_finite() && v <= fx + 1e-4 * step * slope && gv.iter().chain(&hv).all(|z| z.is_finite()) {
                        accepted = Some((xn, v, gv, hv));
                        break;
                    }
                }
                step *= 0.5;
            }
        }
        let Some((xn, v, gv, hv)) = accepted else {
            return Minimum::stalled(x, fx, gn, it);
        };
        // Full steps relax the damping; halved ones tighten it.
        mu = if step == 1.0 { mu / 4.0 } else { (mu * 4.0).max(1e-6 * scale) };
        if mu < 1e-12 * scale {
            mu = 0.0;
        }
        x = xn;
        fx = v;
        g = gv;
        h = hv;
    }
    Minimum::exhausted(x, fx, norm_inf(&g), max_iter)
}

/// Minimises from each start and keeps the best: converged runs first, then the lowest
/// value. `None` when no run ends at a finite value.
pub fn best_of(f: &Objective<'_>, starts: &[Vec<f64>], max_iter: usize, tol: f64) -> Option<Minimum> {
    best_of_with(f, None, starts, max_iter, tol)
}

/// [`best_of`] with an optional value-only function (see [`bfgs_with`]).
pub fn best_of_with(f: &Objective<'_>, value: Option<&Value<'_>>, starts: &[Vec<f64>], max_iter: usize, tol: f64) -> Option<Minimum> {
    best(starts.iter().map(|s| bfgs_with(f, value, s, max_iter, tol)))
}

/// Distinct rows at most in the sample [`fit_from_starts`]'s first stage runs on.
pub const SAMPLE: usize = 20_000;

/// The stride of a systematic sample of ≤ about [`SAMPLE`] of `n` rows, or `None` when
/// `n` is small enough to run the starts on everything.
pub fn sample_stride(n: usize) -> Option<usize> {
    (n > 2 * SAMPLE).then(|| n.div_ceil(SAMPLE))
}

/// The maximum-likelihood strategy of the customer-base models. Without a `sample`
/// objective: Newton from every start on `full`, and if no run converges, BFGS from
/// every start on `full` too, the better result kept. With one (many distinct rows), the
/// same search runs on the sample and its best end point is polished by Newton on
/// `full` (then by BFGS if Newton does not converge; 20 Newton steps only, unconverged,
/// when Newton found no optimum on the sample): a likelihood with no finite optimum — a
/// population where nobody drops out, say — costs a bounded number of evaluations on
/// all rows, not the whole search. Returns the best minimum and the
/// iterations spent in all runs; `None` when no run ends at a finite value.
pub fn fit_from_starts(full: &Second<'_>, sample: Option<&Second<'_>>, starts: &[Vec<f64>]) -> Option<(Minimum, usize)> {
    let mut iterations = 0;
    let mut count = |m: Minimum| {
        iterations += m.iterations;
        m
    };
    let found = match sample {
        None => search(full, starts, &mut count).map(|(m, _)| m),
        Some(s) => {
            let (start, clear) = search(s, starts, &mut count)?;
            // Where Newton found no optimum on the sample (a flat or unbounded
            // likelihood), all rows have none either: a short polish reports where it
            // went, unconverged.
            let steps = if clear { 100 } else { 20 };
            let polished = count(newton(full, &start.x, steps, 1e-10));
            if (polished.converged || !clear) && polished.value.is_finite() {
                Some(polished)
            } else {
                let bfgs = count(bfgs(&first_order(full), &polished.x, 200, 1e-10));
                best([polished, bfgs])
            }
        }
    };
    found.map(|m| (m, iterations))
}

/// Newton from every start; if no run converges, BFGS from every start as well, the
/// better result kept. Also says whether Newton converged (a clear optimum).
fn search(f: &Second<'_>, starts: &[Vec<f64>], count: &mut impl FnMut(Minimum) -> Minimum) -> Option<(Minimum, bool)> {
    let found = best(starts.iter().map(|x| count(newton(f, x, 200, 1e-10))));
    if found.as_ref().is_some_and(|m| m.converged) {
        return found.map(|m| (m, true));
    }
    let bfgs = best_of(&first_order(f), starts, 500, 1e-10).map(count);
    best(found.into_iter().chain(bfgs)).map(|m| (m, false))
}

/// The value and gradient of a second-order objective (∞ where it is not finite).
fn first_order<'a>(f: &'a Second<'_>) -> impl Fn(&[f64]) -> (f64, Vec<f64>) + 'a {
    move |v: &[f64]| match f(v) {
        Some((value, g, _)) => (value, g),
        None => (f64::INFINITY, vec![0.0; v.len()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rosenbrock() {
        let f = |x: &[f64]| {
            let (a, b) = (x[0], x[1]);
            let v = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
            (v, vec![-2.0 * (1.0 - a) - 400.0 * a * (b - a * a), 200.0 * (b - a * a)])
        };
        let m = bfgs(&f, &[-1.2, 1.0], 500, 1e-10);
        assert!(m.converged, "{m:?}");
        assert!((m.x[0] - 1.0).abs() < 1e-6 && (m.x[1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn newton_on_rosenbrock_and_a_convex_bowl() {
        let f = |x: &[f64]| {
            let (a, b) = (x[0], x[1]);
            let v = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
            let g = vec![-2.0 * (1.0 - a) - 400.0 * a * (b - a * a), 200.0 * (b - a * a)];
            let h = vec![2.0 - 400.0 * b + 1200.0 * a * a, -400.0 * a, -400.0 * a, 200.0];
            Some((v, g, h))
        };
        let m = newton(&f, &[-1.2, 1.0], 200, 1e-12);
        assert!(m.converged, "{m:?}");
        assert!((m.x[0] - 1.0).abs() < 1e-8 && (m.x[1] - 1.0).abs() < 1e-8);
        // A quadratic is solved in one step.
        let q = |x: &[f64]| {
            Some((
                (x[0] - 3.0).powi(2) + 2.0 * (x[1] + 1.0).powi(2),
                vec![2.0 * (x[0] - 3.0), 4.0 * (x[1] + 1.0)],
                vec![2.0, 0.0, 0.0, 4.0],
            ))
        };
        let m = newton(&q, &[0.5, 0.5], 50, 1e-12);
        assert!(m.converged && m.iterations <= 2, "{m:?}");
        let bad = |_: &[f64]| None;
        assert!(!newton(&bad, &[0.0], 10, 1e-8).converged);
    }

    #[test]
    fn a_non_finite_start_is_a_diagnostic_not_a_panic() {
        let f = |_: &[f64]| (f64::NAN, vec![0.0]);
        let m = bfgs(&f, &[0.0], 10, 1e-8);
        assert!(!m.converged);
    }
}
