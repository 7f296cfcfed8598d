//! The statistics of the information gap (seed 000: Δ(y) = P_reported(y) / p(y|x); seed
//! 004: knowledge gaps between groups). Each function compares what a customer or a
//! group states with what the behaviour model says, and returns the ratio Δ together
//! with the evidence for a gap — a posterior probability or a p-value — so that a gap is
//! only reported where the data supports it.

use crate::special::{ln_gamma, normal_cdf};

/// Which way a statement misses the behaviour: `Over` = says more than does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Over,
    Under,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Over => "over",
            Direction::Under => "under",
        }
    }
}

/// A stated value against the model's prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    pub reported: f64,
    pub observed: f64,
    /// reported / observed.
    pub delta: f64,
    /// The posterior probability that the truth lies on the observed side of the
    /// statement (0 when the prediction agrees with it).
    pub evidence: f64,
    /// `None` when the prediction falls inside what the statement allows.
    pub direction: Option<Direction>,
}

/// Regularised lower incomplete gamma P(a, x) (series below a + 1, continued fraction above).
pub fn gamma_p(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x < a + 1.0 {
        let front = (-x + a * x.ln() - ln_gamma(a)).exp();
        let (mut term, mut sum, mut n) = (1.0 / a, 1.0 / a, a);
        for _ in 0..10_000 {
            n += 1.0;
            term *= x / n;
            sum += term;
            if term.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        (sum * front).clamp(0.0, 1.0)
    } else {
        1.0 - gamma_q_fraction(a, x)
    }
}

/// A purchase-rate posterior: a mixture of Gamma(shape, rate) components (weights sum
/// to one), in purchases per year.
#[derive(Debug, Clone, PartialEq)]
pub struct RatePosterior {
    pub components: Vec<(f64, f64, f64)>,
}

impl RatePosterior {
    pub fn mean(&self) -> f64 {
        self.components.iter().map(|(w, k, r)| w * k / r).sum()
    }

    pub fn cdf(&self, x: f64) -> f64 {
        self.components.iter().map(|(w, k, r)| w * gamma_p(*k, r * x)).sum()
    }
}

/// A stated purchase rate as an interval of rates per year (a frequency class covers a
/// range) and the representative value used for Δ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatedRate {
    pub low: f64,
    pub high: f64,
    pub value: f64,
}

impl StatedRate {
    /// Reads `weekly`, `monthly`, `quarterly`, `yearly`, `rarely` or a number of
    /// purchases per year (± 25 %).
    pub fn parse(answer: &str) -> Option<Self> {
        let a = answer.trim().to_ascii_lowercase();
        let (low, high, value) = match a.as_str() {
            "weekly" => (40.0, f64::INFINITY, 52.0),
            "monthly" => (9.0, 40.0, 12.0),
            "quarterly" => (3.0, 9.0, 4.0),
            "yearly" | "annually" => (0.8, 3.0, 1.0),
            "rarely" | "never" => (0.0, 0.8, 0.4),
            _ => {
                let v: f64 = a.parse().ok().filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
                (v * 0.8, v * 1.25, v)
            }
        };
        Some(StatedRate { low, high, value })
    }

    /// The range widened by `factor` (≥ 1) on both sides, on the log scale: a gap worth
    /// acting on is a rate well outside what was said, not one just across a class
    /// boundary (someone buying 8.5 times a year who says "monthly" is not misreporting).
    pub fn widened(self, factor: f64) -> Self {
        let f = if factor.is_finite() { factor.max(1.0) } else { 1.0 };
        StatedRate {
            low: self.low / f,
            high: self.high * f,
            value: self.value,
        }
    }
}

/// What the posterior of a customer's purchase rate says of a stated range: the
/// probability that the rate is below it, inside it and above it (each computed
/// directly, so a tiny probability keeps its digits), and the posterior mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateCheck {
    pub below: f64,
    pub inside: f64,
    pub above: f64,
    pub mean: f64,
}

impl RateCheck {
    /// The side of the range the rate more probably lies on when it is outside.
    pub fn direction(&self) -> Direction {
        if self.below >= self.above {
            Direction::Over
        } else {
            Direction::Under
        }
    }
}

/// The stated range against the posterior of the customer's rate.
pub fn rate_check(stated: StatedRate, posterior: &RatePosterior) -> RateCheck {
    let (mut below, mut above, mut inside) = (0.0, 0.0, 0.0);
    for &(w, k, r) in &posterior.components {
        let (p_low, q_low) = gamma_pq(k, r * stated.low);
        let (p_high, q_high) = if stated.high.is_finite() {
            gamma_pq(k, r * stated.high)
        } else {
            (1.0, 0.0)
        };
        below += w * p_low;
        above += w * q_high;
        // Inside = P(high) − P(low) = Q(low) − Q(high): the pair that is not near one.
        inside += w * if p_low >= 0.5 { q_low - q_high } else { p_high - p_low }.max(0.0);
    }
    RateCheck {
        below,
        inside,
        above,
        mean: posterior.mean(),
    }
}

/// The regularised incomplete gamma functions P(a, x) and Q(a, x) = 1 − P(a, x), each
/// computed directly where it is the small one.
pub fn gamma_pq(a: f64, x: f64) -> (f64, f64) {
    if x <= 0.0 {
        return (0.0, 1.0);
    }
    if x < a + 1.0 {
        let p = gamma_p(a, x);
        (p, 1.0 - p)
    } else {
        let q = gamma_q_fraction(a, x);
        (1.0 - q, q)
    }
}

/// Q(a, x) by Lentz's continued fraction (for x ≥ a + 1).
fn gamma_q_fraction(a: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let front = (-x + a * x.ln() - ln_gamma(a)).exp();
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / TINY;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..10_000 {
        let an = -f64::from(i) * (f64::from(i) - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < TINY {
            d = TINY;
        }
        c = b + an / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    (front * h).clamp(0.0, 1.0)
}

/// The honesty mixture behind every behaviour gap: each statement is honest (what the
/// customer says is true of them) or a misreport, with a prior share of misreports
/// estimated from all statements together. A statement's two likelihoods are what its
/// behaviour says under each reading: honest — the posterior probability that the
/// statement holds, times the chance an honest customer in that state gives this answer;
/// misreport — the probability that it does not hold, times the chance a misreporter
/// gives this answer. The posterior probability of a misreport is the gap's evidence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Honesty {
    /// Prior share of misreports (at most one half: most answers are honest).
    pub misreport_share: f64,
    pub iterations: usize,
}

impl Honesty {
    /// Fits the misreport share by EM over `(misreport, honest)` likelihood pairs.
    /// Without statements, the share is the starting guess of 0.1.
    pub fn fit(pairs: &[(f64, f64)]) -> Self {
        let mut share = 0.1;
        let mut iterations = 0;
        let usable: Vec<(f64, f64)> = pairs
            .iter()
            .copied()
            .filter(|(m, h)| m.is_finite() && h.is_finite() && *m >= 0.0 && *h >= 0.0 && m + h > 0.0)
            .collect();
        if usable.is_empty() {
            return Honesty {
                misreport_share: share,
                iterations,
            };
        }
        for it in 1..=1000 {
            let total: f64 = usable.iter().map(|&(m, h)| posterior(share, m, h)).sum();
            let next = (total / usable.len() as f64).clamp(1e-4, 0.5);
            iterations = it;
            let moved = (next - share).abs();
            share = next;
            if moved < 1e-10 {
                break;
            }
        }
        Honesty {
            misreport_share: share,
            iterations,
        }
    }

    /// P(misreport | behaviour, statement).
    pub fn posterior(&self, misreport: f64, honest: f64) -> f64 {
        posterior(self.misreport_share, misreport, honest)
    }
}

fn posterior(share: f64, m: f64, h: f64) -> f64 {
    let a = share * m;
    let b = (1.0 - share) * h;
    if a + b <= 0.0 {
        share
    } else {
        a / (a + b)
    }
}

/// A Dirichlet population prior of customers' category shares, fitted to their order
/// lines per category by maximum likelihood (Minka's fixed point on the
/// Dirichlet–multinomial, with the counts kept as histograms so an iteration costs the
/// largest count, not the customers).
#[derive(Debug, Clone, PartialEq)]
pub struct DirichletPrior {
    pub alpha: Vec<f64>,
    pub iterations: usize,
    pub converged: bool,
}

impl DirichletPrior {
    /// `counts` is customers × `k` (row-major); customers without lines are ignored.
    /// `None` when fewer than two customers have lines or `k` < 2.
    pub fn fit(counts: &[f64], k: usize) -> Option<Self> {
        if k < 2 || !counts.len().is_multiple_of(k) {
            return None;
        }
        // above[j][t] = customers with more than t lines in j; above_total likewise for
        // their totals.
        let mut above: Vec<Vec<f64>> = vec![Vec::new(); k];
        let mut above_total: Vec<f64> = Vec::new();
        let mut sums = vec![0.0; k];
        let mut customers = 0usize;
        let bump = |v: &mut Vec<f64>, n: usize| {
            if v.len() < n {
                v.resize(n, 0.0);
            }
            v[n - 1] += 1.0;
        };
        for row in counts.chunks_exact(k) {
            let n: Vec<usize> = row
                .iter()
                .map(|&c| if c.is_finite() && c > 0.0 { c.round() as usize } else { 0 })
                .collect();
            let total: usize = n.iter().sum();
            if total == 0 {
                continue;
            }
            customers += 1;
            for (j, &c) in n.iter().enumerate() {
                sums[j] += c as f64;
                if c > 0 {
                    bump(&mut above[j], c);
                }
            }
            bump(&mut above_total, total);
        }
        if customers < 2 {
            return None;
        }
        // Histograms of "exactly n" into "more than t" by a suffix sum.
        let suffix = |v: &mut Vec<f64>| {
            for t in (0..v.len().saturating_sub(1)).rev() {
                v[t] += v[t + 1];
            }
        };
        above.iter_mut().for_each(suffix);
        suffix(&mut above_total);
        let lines: f64 = sums.iter().sum();
        // Start: the mean shares with a precision of k.
        let mut alpha: Vec<f64> = sums.iter().map(|s| ((s + 0.5) / (lines + 0.5 * k as f64)) * k as f64).collect();
        let mut converged = false;
        let mut iterations = 0;
        for it in 1..=2000 {
            let a0: f64 = alpha.iter().sum();
            let den: f64 = above_total.iter().enumerate().map(|(t, c)| c / (a0 + t as f64)).sum();
            let mut moved = 0.0f64;
            for j in 0..k {
                let num: f64 = above[j].iter().enumerate().map(|(t, c)| c / (alpha[j] + t as f64)).sum();
                let next = (alpha[j] * num / den).clamp(1e-6, 1e6);
                moved = moved.max((next / alpha[j]).ln().abs());
                alpha[j] = next;
            }
            iterations = it;
            if moved < 1e-9 {
                converged = true;
                break;
            }
        }
        Some(DirichletPrior {
            alpha,
            iterations,
            converged,
        })
    }

    /// The posterior mean shares of a customer with these counts.
    pub fn posterior_mean(&self, counts: &[f64]) -> Vec<f64> {
        let total: f64 = self.alpha.iter().zip(counts).map(|(a, n)| a + n.max(0.0)).sum();
        self.alpha.iter().zip(counts).map(|(a, n)| (a + n.max(0.0)) / total).collect()
    }
}

/// The probability, under a Dirichlet posterior of a customer's category shares with
/// parameters `shapes` (the population prior plus their lines), that category `c` is
/// bought less than `ratio` times as much as the `named`-th most bought of the other
/// categories: a stated preference for c among `named` preferred categories is then
/// contradicted (an honest respondent names categories from the top of their own mix).
/// Returns (P(contradicted), P(not contradicted)), each computed directly.
///
/// With the shares as normalised Gamma(shapes) draws G, P(not contradicted) =
/// ∫ f_c(g) · P(fewer than `named` others exceed g / ratio) dg: a one-dimensional
/// integral over ln g (Simpson's rule where the integrand lives), the inner probability
/// a Poisson-binomial of the others' Gamma tails.
pub fn category_contradiction(shapes: &[f64], c: usize, named: usize, ratio: f64) -> (f64, f64) {
    let k = shapes.len();
    if c >= k || k < 2 || named == 0 || named >= k || ratio.is_nan() || ratio <= 0.0 {
        return (0.0, 1.0);
    }
    let a_c = shapes[c].max(1e-9);
    // H(t) = P(at most named − 1 of the others exceed t).
    let others: Vec<f64> = shapes
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != c)
        .map(|(_, &a)| a.max(1e-9))
        .collect();
    let fewer = |t: f64| -> f64 {
        // dp[m] = P(exactly m exceed so far), for m < named; the rest is dropped.
        let mut dp = vec![0.0; named];
        dp[0] = 1.0;
        for &a in &others {
            let (_, q) = gamma_pq(a, t);
            for m in (0..named).rev() {
                let stay = dp[m] * (1.0 - q);
                let from = if m > 0 { dp[m - 1] * q } else { 0.0 };
                dp[m] = stay + from;
            }
        }
        dp.iter().sum::<f64>().clamp(0.0, 1.0)
    };
    let log_density = |x: f64| a_c * x - x.exp() - ln_gamma(a_c);
    // Where ln G_c lives: its density is log-concave with its mode at ln a_c.
    let mode = a_c.ln();
    let spread = (1.0 / a_c.sqrt()).clamp(0.05, 1.0);
    let mut hi = mode + spread;
    while log_density(hi) > -40.0 {
        hi += spread;
    }
    let mut lo = mode - 1.0;
    // Left: until the density is negligible, or H(e^x / ratio) is (the integrand is the
    // product of both).
    let h_of = |x: f64| fewer(x.exp() / ratio);
    let mut step = spread;
    while log_density(lo) > -40.0 && h_of(lo) > 1e-16 {
        lo -= step;
        step *= 1.5;
    }
    // Simpson's rule on an even number of intervals.
    const INTERVALS: usize = 128;
    let width = (hi - lo) / INTERVALS as f64;
    let mut honest = 0.0;
    for i in 0..=INTERVALS {
        let x = lo + width * i as f64;
        let wgt = if i == 0 || i == INTERVALS {
            1.0
        } else if i % 2 == 1 {
            4.0
        } else {
            2.0
        };
        honest += wgt * log_density(x).exp() * h_of(x);
    }
    // Outside [lo, hi] the density or the inner probability is negligible.
    let honest = (honest * width / 3.0).clamp(0.0, 1.0);
    (1.0 - honest, honest)
}

/// Category gap: the customer names `c` as preferred; `counts[j]` are their order lines
/// per category and `prior[j]` their segment's shares (summing to one), with strength
/// `kappa` (the Dirichlet–multinomial smoothing). The reported share is the share a
/// preferred category would have (the largest smoothed share), the observed one is c's
/// smoothed share. `preferred[j]` is the posterior probability that j is the customer's
/// preferred category ([`PreferredCategory::posterior`]); the evidence is
/// 1 − `preferred[c]`, and the direction is `Over` when another category is the more
/// likely preferred one.
pub fn category(c: usize, counts: &[f64], prior: &[f64], kappa: f64, preferred: &[f64]) -> Assessment {
    let total: f64 = counts.iter().sum();
    let post: Vec<f64> = counts.iter().zip(prior).map(|(n, p)| n + kappa * p).collect();
    let share = |j: usize| post[j] / (total + kappa);
    let top = (0..post.len())
        .filter(|&j| j != c)
        .max_by(|&a, &b| post[a].total_cmp(&post[b]).then(b.cmp(&a)));
    let observed = share(c);
    let Some(top) = top else {
        return Assessment {
            reported: observed,
            observed,
            delta: 1.0,
            evidence: 0.0,
            direction: None,
        };
    };
    let reported = share(top).max(observed);
    let p_c = preferred.get(c).copied().unwrap_or(0.0);
    let rival = preferred.iter().enumerate().any(|(j, &p)| j != c && p > p_c);
    Assessment {
        reported,
        observed,
        delta: reported / observed.max(1e-12),
        evidence: (1.0 - p_c).clamp(0.0, 1.0),
        direction: rival.then_some(Direction::Over),
    }
}

/// A latent-class model of a preferred category: each customer has one preferred
/// category z (drawn from their group's distribution `priors[g]`); each of their order
/// lines falls in z with probability `share`, and otherwise follows the `background`
/// mix of all customers. This is what "my preferred category is X" claims, and unlike a
/// smoothed share it knows that a preference concentrates the lines: three of six lines
/// in one category and two in the stated one make the stated one unlikely to be the
/// preferred one. All parameters are estimated by EM over every customer with lines.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferredCategory {
    pub share: f64,
    pub background: Vec<f64>,
    pub priors: Vec<Vec<f64>>,
    pub iterations: usize,
}

impl PreferredCategory {
    /// Fits the model to `counts` (customers × categories, row-major, `k` columns) with
    /// each customer's group in `groups` (`n_groups` groups). `None` without lines.
    pub fn fit(counts: &[f64], k: usize, groups: &[usize], n_groups: usize) -> Option<Self> {
        use crate::parallel::{add_into, ordered_fold};
        let n = groups.len();
        if k < 2 || counts.len() != n * k || groups.iter().any(|&g| g >= n_groups) {
            return None;
        }
        let mut background = vec![0.0; k];
        for row in counts.chunks_exact(k) {
            add_into(&mut background, row);
        }
        let lines: f64 = background.iter().sum();
        if !(lines > 0.0 && lines.is_finite()) {
            return None;
        }
        background.iter_mut().for_each(|b| *b = (*b + 1e-3) / (lines + 1e-3 * k as f64));
        let mut model = PreferredCategory {
            share: 0.3,
            background,
            priors: vec![vec![1.0 / k as f64; k]; n_groups],
            iterations: 0,
        };
        // The accumulator: lines drawn from the preferred category, the other lines per
        // category, and the responsibilities summed per group.
        struct Acc {
            preferred: f64,
            other: Vec<f64>,
            resp: Vec<f64>,
        }
        for it in 1..=500 {
            let acc = ordered_fold(
                n,
                || Acc {
                    preferred: 0.0,
                    other: vec![0.0; k],
                    resp: vec![0.0; n_groups * k],
                },
                |a, i| {
                    let row = &counts[i * k..(i + 1) * k];
                    if row.iter().sum::<f64>() <= 0.0 {
                        return;
                    }
                    let r = model.posterior(row, groups[i]);
                    for j in 0..k {
                        // P(a line in j came from the preference) = r_j · s / (s + (1 − s) b_j).
                        let from_pref = r[j] * model.share / (model.share + (1.0 - model.share) * model.background[j]);
                        a.preferred += row[j] * from_pref;
                        a.other[j] += row[j] * (1.0 - from_pref);
                        a.resp[groups[i] * k + j] += r[j];
                    }
                },
                |a, b| {
                    a.preferred += b.preferred;
                    add_into(&mut a.other, &b.other);
                    add_into(&mut a.resp, &b.resp);
                },
            );
            let share = (acc.preferred / lines).clamp(1e-6, 1.0 - 1e-6);
            let other: f64 = acc.other.iter().sum();
            for (b, o) in model.background.iter_mut().zip(&acc.other) {
                *b = (o + 1e-3) / (other + 1e-3 * k as f64);
            }
            // Each group's distribution of preferences, with one pseudo-customer spread
            // evenly (a group of a few customers keeps every category possible).
            for (g, prior) in model.priors.iter_mut().enumerate() {
                let r = &acc.resp[g * k..(g + 1) * k];
                let total: f64 = r.iter().sum();
                for (p, v) in prior.iter_mut().zip(r) {
                    *p = (v + 1.0 / k as f64) / (total + 1.0);
                }
            }
            let moved = (share - model.share).abs();
            model.share = share;
            model.iterations = it;
            if moved < 1e-9 {
                break;
            }
        }
        Some(model)
    }

    /// P(preferred category = j | the customer's lines per category), for a customer
    /// of group `group`.
    pub fn posterior(&self, counts: &[f64], group: usize) -> Vec<f64> {
        let s = self.share;
        let mut lp: Vec<f64> = (0..counts.len())
            .map(|j| self.priors[group][j].ln() + counts[j] * (s / ((1.0 - s) * self.background[j])).ln_1p())
            .collect();
        let max = lp.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        lp.iter_mut().for_each(|v| *v = (*v - max).exp());
        let total: f64 = lp.iter().sum();
        lp.iter_mut().for_each(|v| *v /= total);
        lp
    }
}

/// Two-proportion z-test of x1/n1 against x2/n2: the difference and its two-sided p-value.
pub fn two_proportion(x1: f64, n1: f64, x2: f64, n2: f64) -> (f64, f64) {
    if n1 <= 0.0 || n2 <= 0.0 {
        return (0.0, 1.0);
    }
    let (p1, p2) = (x1 / n1, x2 / n2);
    let pooled = (x1 + x2) / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se <= 0.0 {
        return (p1 - p2, if p1 == p2 { 1.0 } else { 0.0 });
    }
    let z = (p1 - p2) / se;
    (p1 - p2, (2.0 * (1.0 - normal_cdf(z.abs()))).clamp(0.0, 1.0))
}

/// Benjamini–Hochberg adjusted p-values (q-values), in the input order.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut idx: Vec<usize> = (0..m).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]).then(a.cmp(&b)));
    let mut q = vec![1.0; m];
    let mut running = 1.0f64;
    for (rank, &i) in idx.iter().enumerate().rev() {
        running = running.min(p[i] * m as f64 / (rank + 1) as f64);
        q[i] = running.min(1.0);
    }
    q
}

/// The Gamma prior of customers' event rates (events per day) by the method of moments
/// of the Gamma–Poisson with unequal exposures: mean m = Σn / ΣE, and the shape from
/// Var[n] = mE + (m²/r)E². Returns (shape, rate); a near-Poisson population (no excess
/// variance) gets a large shape. `None` without events or exposure.
pub fn event_rate_prior(counts: &[f64], exposures: &[f64]) -> Option<(f64, f64)> {
    let n: f64 = counts.iter().sum();
    let e: f64 = exposures.iter().sum();
    if n <= 0.0 || e <= 0.0 || !(n.is_finite() && e.is_finite()) {
        return None;
    }
    let m = n / e;
    let e2: f64 = exposures.iter().map(|x| x * x).sum();
    let excess: f64 = counts.iter().zip(exposures).map(|(c, x)| (c - m * x).powi(2) - m * x).sum();
    let shape = if excess > 0.0 {
        (m * m * e2 / excess).clamp(1e-3, 1e6)
    } else {
        1e6
    };
    Some((shape, shape / m))
}

/// P(the customer has left) from the BG/NBD P(alive) and the silence of their other
/// activity (visits, app events, tickets), which stops when a customer leaves.
///
/// While alive, events arrive as a Poisson process whose rate has the posterior
/// Gamma(r + n, α + E) given the prior `(r, α)`, `n` events over `exposure` days; the
/// chance of seeing none in the last `silence` days is (β / (β + silence))^(r + n) with
/// β = α + E. A customer who left produces none, so the odds of having left are the
/// BG/NBD odds divided by that chance (activity assumed independent of purchases given
/// the state). No silence leaves P(alive) as it is; the longer the silence and the busier
/// the customer was, the more it says.
pub fn left_with_activity(p_alive: f64, events: f64, exposure: f64, silence: f64, prior: (f64, f64)) -> f64 {
    let (r, alpha) = prior;
    let (k, beta) = (r + events.max(0.0), alpha + exposure.max(0.0));
    let ln_p_none = k * (beta.ln() - (beta + silence.max(0.0)).ln());
    let p_alive = p_alive.clamp(0.0, 1.0);
    if p_alive == 0.0 {
        return 1.0;
    }
    // ln odds(left) = ln(1 − p) − ln p − ln P(no events | alive).
    let ln_odds = (1.0 - p_alive).ln() - p_alive.ln() - ln_p_none;
    1.0 / (1.0 + (-ln_odds).exp())
}

/// What a customer said about their satisfaction, on three levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stated {
    Satisfied,
    Neutral,
    Dissatisfied,
}

impl Stated {
    fn index(self) -> usize {
        match self {
            Stated::Satisfied => 0,
            Stated::Neutral => 1,
            Stated::Dissatisfied => 2,
        }
    }
}

/// One customer's service signals and behaviour, for the satisfaction model.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ServiceSignals {
    /// Complaints and support tickets, and the orders they are counted against.
    pub complaints: f64,
    pub tickets: f64,
    pub orders: f64,
    /// Reviews with a low rating (at most 2 of 5) among the rated ones.
    pub low_reviews: f64,
    pub rated_reviews: f64,
    /// Returned order lines among all lines.
    pub returned_lines: f64,
    pub lines: f64,
    /// P(the customer has left), from the purchase and activity model.
    pub left: f64,
    pub stated: Option<Stated>,
}

/// The parameters of one latent class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServiceClass {
    pub share: f64,
    /// Complaints and tickets per order.
    pub complaint_rate: f64,
    pub ticket_rate: f64,
    /// Share of rated reviews that are low, of lines returned, of customers who left.
    pub low_review_share: f64,
    pub return_share: f64,
    pub left_share: f64,
    /// P(says satisfied, neutral, dissatisfied | class), among respondents.
    pub says: [f64; 3],
}

/// A latent-class model of satisfaction: each customer is truly satisfied or not, and
/// that state shows in their complaints and tickets (Poisson per order), low review
/// ratings and returns (binomial), whether they left, and — for those who answered — in
/// their answer, which an honest respondent gives truthfully and a misreporter does not.
/// All parameters, the share of misreports among them, are fitted by EM over every
/// customer (answers or not); the class with the worse service record is the
/// dissatisfied one.
#[derive(Debug, Clone, PartialEq)]
pub struct SatisfactionModel {
    pub satisfied: ServiceClass,
    pub dissatisfied: ServiceClass,
    pub iterations: usize,
    pub log_likelihood: f64,
}

impl SatisfactionModel {
    /// Fits the model; `None` without customers or without any answer.
    pub fn fit(customers: &[ServiceSignals]) -> Option<Self> {
        if customers.is_empty() || customers.iter().all(|c| c.stated.is_none()) {
            return None;
        }
        // Start from the answers (and, without one, from complaints).
        let mut w: Vec<f64> = customers
            .iter()
            .map(|c| match c.stated {
                Some(Stated::Satisfied) => 0.8,
                Some(Stated::Dissatisfied) => 0.2,
                _ if c.complaints > 0.0 => 0.4,
                _ => 0.6,
            })
            .collect();
        let mut classes = [Self::m_step(customers, &w, true), Self::m_step(customers, &w, false)];
        let mut last = f64::NEG_INFINITY;
        let mut iterations = 0;
        for it in 1..=500 {
            let mut ll = 0.0;
            for (wi, c) in w.iter_mut().zip(customers) {
                let (a, b) = (classes[0].log_density(c), classes[1].log_density(c));
                let m = a.max(b);
                ll += m + ((a - m).exp() + (b - m).exp()).ln();
                *wi = 1.0 / (1.0 + (b - a).exp());
            }
            classes = [Self::m_step(customers, &w, true), Self::m_step(customers, &w, false)];
            iterations = it;
            let done = (ll - last).abs() < 1e-9 * ll.abs().max(1.0);
            last = ll;
            if done {
                break;
            }
        }
        // The dissatisfied class is the one whose record is worse: more complaints and
        // tickets per order, more low reviews and returns, more leaving (the sum of the
        // log ratios). The answers do not name it: where half of them are misreported
        // they cannot.
        let [a, b] = classes;
        let worse = (a.complaint_rate / b.complaint_rate).ln()
            + (a.ticket_rate / b.ticket_rate).ln()
            + (a.low_review_share / b.low_review_share).ln()
            + (a.return_share / b.return_share).ln()
            + (a.left_share / b.left_share).ln();
        let (satisfied, dissatisfied) = if worse <= 0.0 { (a, b) } else { (b, a) };
        Some(SatisfactionModel {
            satisfied,
            dissatisfied,
            iterations,
            log_likelihood: last,
        })
    }

    /// Weighted maximum likelihood of one class (`w` = P(first class), or its
    /// complement), with a light pseudo-count so no rate is exactly 0 or 1.
    fn m_step(customers: &[ServiceSignals], w: &[f64], first: bool) -> ServiceClass {
        let (mut n, mut comp, mut tick, mut orders, mut low, mut rated, mut ret, mut lines, mut left) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        let mut says = [0.0; 3];
        for (&wi, c) in w.iter().zip(customers) {
            let wi = if first { wi } else { 1.0 - wi };
            n += wi;
            comp += wi * c.complaints;
            tick += wi * c.tickets;
            orders += wi * c.orders.max(1.0);
            low += wi * c.low_reviews;
            rated += wi * c.rated_reviews;
            ret += wi * c.returned_lines;
            lines += wi * c.lines;
            left += wi * c.left.clamp(0.0, 1.0);
            if let Some(s) = c.stated {
                says[s.index()] += wi;
            }
        }
        let answered: f64 = says.iter().sum();
        ServiceClass {
            share: (n / customers.len() as f64).clamp(1e-6, 1.0 - 1e-6),
            complaint_rate: (comp + 0.01) / (orders + 1.0),
            ticket_rate: (tick + 0.01) / (orders + 1.0),
            low_review_share: (low + 0.5) / (rated + 1.0),
            return_share: (ret + 0.5) / (lines + 1.0),
            left_share: (left + 0.5) / (n + 1.0),
            says: says.map(|s| (s + 0.5) / (answered + 1.5)),
        }
    }

    /// P(truly satisfied | signals, answer).
    pub fn p_satisfied(&self, c: &ServiceSignals) -> f64 {
        let (a, b) = (self.satisfied.log_density(c), self.dissatisfied.log_density(c));
        1.0 / (1.0 + (b - a).exp())
    }

    /// P(truly satisfied | signals), the answer left out: what the behaviour alone says.
    pub fn p_satisfied_by_behaviour(&self, c: &ServiceSignals) -> f64 {
        let c = ServiceSignals { stated: None, ..*c };
        self.p_satisfied(&c)
    }

    /// The share of answers that contradict the class they come from: respondents who
    /// say satisfied while dissatisfied or the reverse, by the model's parameters.
    pub fn misreport_share(&self) -> f64 {
        let (s, d) = (&self.satisfied, &self.dissatisfied);
        (s.share * s.says[2] + d.share * d.says[0]) / (s.share * (s.says[0] + s.says[2]) + d.share * (d.says[0] + d.says[2])).max(1e-12)
    }
}

impl ServiceClass {
    /// ln(share × P(signals | class)), up to terms that do not depend on the class.
    fn log_density(&self, c: &ServiceSignals) -> f64 {
        let e = c.orders.max(1.0);
        let poisson = |k: f64, rate: f64| k * rate.ln() - rate * e;
        let binomial = |k: f64, n: f64, p: f64| k * p.ln() + (n - k).max(0.0) * (1.0 - p).ln();
        let l = c.left.clamp(0.0, 1.0);
        let mut v = self.share.ln()
            + poisson(c.complaints, self.complaint_rate)
            + poisson(c.tickets, self.ticket_rate)
            + binomial(c.low_reviews, c.rated_reviews, self.low_review_share)
            + binomial(c.returned_lines, c.lines, self.return_share)
            + (self.left_share * l + (1.0 - self.left_share) * (1.0 - l)).ln();
        if let Some(s) = c.stated {
            v += self.says[s.index()].ln();
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_silence_only_adds_evidence_of_leaving() {
        let prior = (2.0, 60.0); // about one event a month
                                 // No silence: P(left) = 1 − P(alive).
        assert!((left_with_activity(0.3, 10.0, 300.0, 0.0, prior) - 0.7).abs() < 1e-12);
        // Longer silence, and a busier customer, each raise P(left).
        let a = left_with_activity(0.3, 10.0, 300.0, 60.0, prior);
        let b = left_with_activity(0.3, 10.0, 300.0, 180.0, prior);
        let busy = left_with_activity(0.3, 40.0, 300.0, 60.0, prior);
        assert!(0.7 < a && a < b && b < 1.0, "{a} {b}");
        assert!(busy > a, "{busy} {a}");
        // Certain states stay certain.
        assert_eq!(left_with_activity(0.0, 5.0, 100.0, 50.0, prior), 1.0);
        assert!(left_with_activity(1.0, 5.0, 100.0, 50.0, prior) < 1e-12);
    }

    #[test]
    fn event_rate_prior_recovers_a_gamma_poisson_population() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let rate = 50.0; // Gamma(2, 50): mean 0.04 events a day
        let (mut counts, mut exposures) = (Vec::new(), Vec::new());
        for _ in 0..20_000 {
            // Gamma(2, 50) as the sum of two exponentials; Poisson by counting arrivals.
            let lambda = (-(rng.random::<f64>().max(1e-300)).ln() - (rng.random::<f64>().max(1e-300)).ln()) / rate;
            let e = rng.random_range(100.0..700.0);
            let (mut t, mut n) = (0.0, 0.0);
            loop {
                t += -(rng.random::<f64>().max(1e-300)).ln() / lambda;
                if t > e {
                    break;
                }
                n += 1.0;
            }
            counts.push(n);
            exposures.push(e);
        }
        let (r, a) = event_rate_prior(&counts, &exposures).unwrap();
        assert!((r / a - 0.04).abs() < 0.002, "mean {}", r / a);
        assert!((r - 2.0).abs() < 0.2, "shape {r}");
        assert!(event_rate_prior(&[0.0], &[10.0]).is_none());
    }

    #[test]
    fn incomplete_gamma_known_values() {
        // P(1, x) = 1 − e^−x; P(3, 2) = 0.323323583816936 (scipy.special.gammainc).
        assert!((gamma_p(1.0, 0.7) - (1.0 - (-0.7f64).exp())).abs() < 1e-14);
        assert!((gamma_p(3.0, 2.0) - 0.323_323_583_816_936).abs() < 1e-12);
        assert!((gamma_p(3.0, 20.0) - 1.0).abs() < 1e-6);
    }

    fn posterior(x: f64, t_years: f64) -> RatePosterior {
        // A weak Gamma(1, 1) prior updated with x purchases in t years.
        RatePosterior {
            components: vec![(1.0, 1.0 + x, 1.0 + t_years)],
        }
    }

    #[test]
    fn incomplete_gamma_pair_keeps_small_tails() {
        // Q(3, 40) = e^−40 (1 + 40 + 800) (the Poisson tail).
        let (p, q) = gamma_pq(3.0, 40.0);
        let want = (-40.0f64).exp() * (1.0 + 40.0 + 800.0);
        assert!((q / want - 1.0).abs() < 1e-10, "{q} {want}");
        assert_eq!(p, 1.0 - q);
        let (p, q) = gamma_pq(3.0, 2.0);
        assert!((p - 0.323_323_583_816_936).abs() < 1e-12 && (p + q - 1.0).abs() < 1e-15);
    }

    #[test]
    fn a_rate_inside_the_stated_class_is_no_contradiction() {
        let p = posterior(23.0, 1.0); // mean 12 per year
        let c = rate_check(StatedRate::parse("monthly").unwrap(), &p);
        assert!(c.inside > 0.85 && c.below > c.above, "{c:?}");
        assert!((c.below + c.inside + c.above - 1.0).abs() < 1e-12);
        // One purchase in a year from someone who says weekly: overwhelming, not "too little data".
        let once = rate_check(StatedRate::parse("weekly").unwrap(), &posterior(0.0, 1.0));
        assert_eq!(once.direction(), Direction::Over);
        assert!(once.inside < 1e-12 && once.inside > 0.0, "{once:?}");
        let under = rate_check(StatedRate::parse("rarely").unwrap(), &posterior(40.0, 2.0));
        assert_eq!(under.direction(), Direction::Under);
        assert!(under.above > 0.999);
    }

    #[test]
    fn evidence_of_a_rate_grows_with_observed_behaviour() {
        // The same observed rate (2 a year) over more and more time, stated as quarterly.
        let stated = StatedRate::parse("quarterly").unwrap();
        let mut last = 0.0;
        for years in [1.0, 2.0, 4.0, 8.0, 16.0] {
            let c = rate_check(stated, &posterior(2.0 * years, years));
            assert_eq!(c.direction(), Direction::Over);
            assert!(c.below > last, "{years}: {} <= {last}", c.below);
            last = c.below;
        }
        assert!(last > 0.9);
    }

    #[test]
    fn honesty_share_is_estimated_from_the_statements() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for share in [0.05, 0.3, 0.5] {
            // Five classes; the behaviour is the true class plus noise, so P(class | y)
            // is exact; an honest answer names the class, a misreport one of the other
            // four at random.
            let mut pairs = Vec::new();
            let mut truth = Vec::new();
            for _ in 0..20_000 {
                let z = rng.random_range(0..5usize);
                let mis = rng.random_bool(share);
                let s = if mis { (z + rng.random_range(1..5)) % 5 } else { z };
                let u1: f64 = rng.random_range(f64::EPSILON..1.0);
                let noise = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * rng.random::<f64>()).cos();
                let y = z as f64 + 0.4 * noise;
                let w: Vec<f64> = (0..5).map(|k| (-(y - k as f64).powi(2) / (2.0 * 0.16)).exp()).collect();
                let holds = w[s] / w.iter().sum::<f64>();
                pairs.push(((1.0 - holds) / 4.0, holds));
                truth.push(mis);
            }
            let h = Honesty::fit(&pairs);
            assert!((h.misreport_share - share).abs() < 0.02, "{share}: {h:?}");
            // Calibration: among statements with evidence ≥ 0.95, at least 95 % misreports.
            let flagged: Vec<bool> = pairs
                .iter()
                .zip(&truth)
                .filter(|((m, o), _)| h.posterior(*m, *o) >= 0.95)
                .map(|(_, t)| *t)
                .collect();
            let right = flagged.iter().filter(|t| **t).count() as f64 / flagged.len().max(1) as f64;
            assert!(right >= 0.95 && flagged.len() > 100, "{share}: {right} of {}", flagged.len());
        }
        assert_eq!(Honesty::fit(&[]).misreport_share, 0.1);
    }

    fn gamma_draw(rng: &mut rand_chacha::ChaCha8Rng, shape: f64) -> f64 {
        crate::sample::gamma(rng, shape, 1.0)
    }

    #[test]
    fn dirichlet_prior_is_recovered_from_customers_counts() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let alpha = [2.0, 1.0, 0.5, 0.25];
        let mut counts = Vec::new();
        for i in 0..20_000 {
            let g: Vec<f64> = alpha.iter().map(|&a| gamma_draw(&mut rng, a)).collect();
            let total: f64 = g.iter().sum();
            let mut row = [0.0; 4];
            for _ in 0..(1 + i % 15) {
                let mut u: f64 = rng.random::<f64>() * total;
                let j = g.iter().position(|&x| {
                    u -= x;
                    u < 0.0
                });
                row[j.unwrap_or(3)] += 1.0;
            }
            counts.extend(row);
        }
        counts.extend([0.0; 4]); // a customer without lines is ignored
        let fit = DirichletPrior::fit(&counts, 4).unwrap();
        assert!(fit.converged);
        for (a, want) in fit.alpha.iter().zip(alpha) {
            assert!((a / want - 1.0).abs() < 0.08, "{fit:?}");
        }
        assert!(DirichletPrior::fit(&[1.0, 0.0], 2).is_none());
    }

    #[test]
    fn category_contradiction_matches_a_simulation() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let prior = [0.4; 5];
        for (counts, c, named) in [
            ([9.0, 8.0, 2.0, 1.0, 1.0], 0, 1), // the stated category is the most bought one
            ([9.0, 8.0, 2.0, 1.0, 1.0], 1, 1), // a close second
            ([1.0, 20.0, 3.0, 0.0, 0.0], 0, 1),
            ([3.0, 3.0, 3.0, 3.0, 3.0], 4, 2),
            ([0.0, 5.0, 4.0, 0.0, 0.0], 3, 2),
        ] {
            let shapes: Vec<f64> = prior.iter().zip(&counts).map(|(a, n)| a + n).collect();
            let (contra, honest) = category_contradiction(&shapes, c, named, 0.5);
            assert!((contra + honest - 1.0).abs() < 1e-9);
            let draws = 200_000;
            let mut hits = 0;
            for _ in 0..draws {
                let g: Vec<f64> = shapes.iter().map(|&a| gamma_draw(&mut rng, a)).collect();
                let mut others: Vec<f64> = g.iter().enumerate().filter(|&(j, _)| j != c).map(|(_, &v)| v).collect();
                others.sort_by(|a, b| b.total_cmp(a));
                if g[c] < 0.5 * others[named - 1] {
                    hits += 1;
                }
            }
            let sim = f64::from(hits) / f64::from(draws);
            assert!((contra - sim).abs() < 0.004, "{counts:?} {c}: {contra} vs simulated {sim}");
        }
        // Few lines say little; many lines elsewhere say a lot, with the tail kept.
        let (strong, rest) = category_contradiction(&[0.4, 60.4, 0.4, 0.4], 0, 1, 0.5);
        assert!(strong > 0.999_999 && rest > 0.0 && rest < 1e-6, "{strong} {rest}");
        let (top, _) = category_contradiction(&[9.4, 8.4, 2.4, 1.4, 1.4], 0, 1, 0.5);
        assert!(top < 0.05, "{top}");
    }

    /// A Poisson draw by counting exponential arrivals.
    fn poisson(rng: &mut rand_chacha::ChaCha8Rng, mean: f64) -> f64 {
        use rand::Rng;
        let (mut t, mut k) = (0.0, 0.0);
        loop {
            t += -rng.random_range(f64::EPSILON..1.0f64).ln();
            if t > mean {
                return k;
            }
            k += 1.0;
        }
    }

    #[test]
    fn satisfaction_classes_and_misreports_are_recovered() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        let mut people = Vec::new();
        let mut truth = Vec::new();
        for _ in 0..8000 {
            let sat = rng.random_bool(0.7);
            let orders = f64::from(rng.random_range(1..12));
            let (c, t, low, ret, leave) = if sat {
                (0.03, 0.1, 0.1, 0.02, 0.2)
            } else {
                (0.25, 0.35, 0.7, 0.12, 0.5)
            };
            let rated = f64::from(rng.random_range(0..3));
            let lines = orders * 2.0;
            let binom = |rng: &mut rand_chacha::ChaCha8Rng, n: f64, p: f64| (0..n as usize).filter(|_| rng.random_bool(p)).count() as f64;
            let answered = rng.random_bool(0.4);
            let honest = rng.random_bool(0.7);
            let stated = answered.then_some(if sat == honest { Stated::Satisfied } else { Stated::Dissatisfied });
            let left = if rng.random_bool(leave) { 0.9 } else { 0.1 };
            people.push(ServiceSignals {
                complaints: poisson(&mut rng, c * orders),
                tickets: poisson(&mut rng, t * orders),
                orders,
                low_reviews: binom(&mut rng, rated, low),
                rated_reviews: rated,
                returned_lines: binom(&mut rng, lines, ret),
                lines,
                left,
                stated,
            });
            truth.push(sat);
        }
        let m = SatisfactionModel::fit(&people).unwrap();
        assert!((m.satisfied.share - 0.7).abs() < 0.05, "{m:?}");
        assert!((m.dissatisfied.complaint_rate - 0.25).abs() < 0.04, "{m:?}");
        assert!((m.satisfied.complaint_rate - 0.03).abs() < 0.02, "{m:?}");
        assert!((m.misreport_share() - 0.3).abs() < 0.06, "{}", m.misreport_share());
        // Calibration: among answers the model says are contradicted with ≥ 0.95, at
        // least 90 % are misreports.
        let (mut flagged, mut right) = (0, 0);
        for (p, &sat) in people.iter().zip(&truth) {
            let Some(s) = p.stated else { continue };
            let contra = match s {
                Stated::Satisfied => 1.0 - m.p_satisfied(p),
                _ => m.p_satisfied(p),
            };
            if contra >= 0.95 {
                flagged += 1;
                right += usize::from((s == Stated::Satisfied) != sat);
            }
        }
        assert!(flagged > 100 && right as f64 / flagged as f64 >= 0.9, "{right} of {flagged}");
        assert!(SatisfactionModel::fit(&[ServiceSignals::default()]).is_none());
    }

    /// Customers with one preferred category out of four: `share` of their lines in it,
    /// the rest spread evenly; `lines` lines each, deterministic.
    fn preference_population(share: f64, lines: usize, customers: usize) -> (Vec<f64>, Vec<usize>) {
        let k = 4;
        let mut counts = vec![0.0; customers * k];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut uniform = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut truth = Vec::new();
        for i in 0..customers {
            let z = i % k;
            truth.push(z);
            for _ in 0..lines {
                let j = if uniform() < share {
                    z
                } else {
                    (uniform() * k as f64) as usize % k
                };
                counts[i * k + j] += 1.0;
            }
        }
        (counts, truth)
    }

    #[test]
    fn preferred_category_model_recovers_the_share_and_the_preferences() {
        let (counts, truth) = preference_population(0.6, 8, 4000);
        let groups = vec![0; truth.len()];
        let m = PreferredCategory::fit(&counts, 4, &groups, 1).unwrap();
        assert!((m.share - 0.6).abs() < 0.03, "{m:?}");
        for b in &m.background {
            assert!((b - 0.25).abs() < 0.02, "{m:?}");
        }
        let right = truth
            .iter()
            .enumerate()
            .filter(|&(i, &z)| {
                let p = m.posterior(&counts[i * 4..(i + 1) * 4], 0);
                (0..4).all(|j| p[z] >= p[j])
            })
            .count();
        assert!(right as f64 / truth.len() as f64 > 0.9, "{right}");
        // The same customers in another order: the same model.
        let mut order: Vec<usize> = (0..truth.len()).collect();
        order.reverse();
        let shuffled: Vec<f64> = order.iter().flat_map(|&i| counts[i * 4..(i + 1) * 4].to_vec()).collect();
        let again = PreferredCategory::fit(&shuffled, 4, &groups, 1).unwrap();
        assert!((again.share - m.share).abs() < 1e-9);
    }

    #[test]
    fn category_evidence_needs_lines() {
        let (counts, truth) = preference_population(0.6, 8, 2000);
        let m = PreferredCategory::fit(&counts, 4, &vec![0; truth.len()], 1).unwrap();
        let prior = [0.25; 4];
        let assess = |c: usize, lines: &[f64]| category(c, lines, &prior, 4.0, &m.posterior(lines, 0));
        let few = assess(1, &[2.0, 0.0, 0.0, 0.0]);
        let many = assess(1, &[40.0, 1.0, 2.0, 1.0]);
        assert_eq!(many.direction, Some(Direction::Over));
        assert!(many.evidence > 0.99 && few.evidence < many.evidence);
        assert!(many.delta > 5.0);
        let agrees = assess(0, &[40.0, 1.0, 2.0, 1.0]);
        assert_eq!(agrees.direction, None);
        assert!(agrees.evidence < 0.01);
        // No lines: the stated preference is as likely as the group makes it.
        let none = assess(2, &[0.0; 4]);
        assert!((none.evidence - 0.75).abs() < 0.05, "{none:?}");
    }

    #[test]
    fn two_proportions_and_multiple_testing() {
        let (d, p) = two_proportion(10.0, 100.0, 60.0, 100.0);
        assert!((d + 0.5).abs() < 1e-12 && p < 1e-10);
        let (_, same) = two_proportion(30.0, 100.0, 30.0, 100.0);
        assert!((same - 1.0).abs() < 1e-9);
        let q = benjamini_hochberg(&[0.01, 0.04, 0.03, 0.5]);
        let want = [0.04, 0.04 * 4.0 / 3.0, 0.04 * 4.0 / 3.0, 0.5];
        for (a, b) in q.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{q:?}");
        }
    }
}
