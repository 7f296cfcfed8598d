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

/// A population prior of customers' category shares that can describe both a
/// favourite-and-the-rest taste and a spread one: a mixture of K + 1 Dirichlets over
/// the K categories — a diffuse one, Dir(b·m), and for each category j a "favourite j"
/// one, Dir(f·m + β·e_j) — with m the population's mix and b, f, β and the K + 1
/// weights fitted by maximum likelihood of the customers' order lines per category
/// (Dirichlet–multinomial, BFGS on log-parameters and weight logits; identical count
/// vectors once, and of more than 40,000 distinct ones a systematic sample). Concentrated
/// tastes show as heavy favourite components with a large β; spread tastes as a heavy
/// diffuse one. Nothing about how large a favourite's share is, or how many customers
/// have one, is fixed in advance.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryMixture {
    /// The population mix m (smoothed shares of all lines).
    pub mix: Vec<f64>,
    pub diffuse_precision: f64,
    pub favourite_precision: f64,
    pub favourite_boost: f64,
    /// Weights of the diffuse component, then of "favourite j" for each j.
    pub weights: Vec<f64>,
    pub log_likelihood: f64,
    pub converged: bool,
    pub iterations: usize,
}

/// ln Γ(a + n) − ln Γ(a) and ψ(a + n) − ψ(a) for a whole count n: a sum for small n.
fn gamma_ratio(a: f64, n: u32) -> (f64, f64) {
    if n == 0 {
        return (0.0, 0.0);
    }
    if n <= 40 {
        let (mut l, mut d) = (0.0, 0.0);
        for t in 0..n {
            let v = a + f64::from(t);
            l += v.ln();
            d += 1.0 / v;
        }
        return (l, d);
    }
    let n = f64::from(n);
    (
        ln_gamma(a + n) - ln_gamma(a),
        crate::special::digamma(a + n) - crate::special::digamma(a),
    )
}

/// Each distinct vector of whole line counts (customers × `k`, row-major; customers
/// without lines left out) with how many customers have it, and the lines per category.
fn distinct_counts(counts: &[f64], k: usize) -> (std::collections::BTreeMap<Vec<u32>, f64>, Vec<f64>) {
    let mut distinct: std::collections::BTreeMap<Vec<u32>, f64> = std::collections::BTreeMap::new();
    let mut sums = vec![0.0; k];
    for row in counts.chunks_exact(k) {
        let n: Vec<u32> = row
            .iter()
            .map(|&c| if c.is_finite() && c > 0.0 { c.round() as u32 } else { 0 })
            .collect();
        if n.iter().all(|&c| c == 0) {
            continue;
        }
        for (s, &c) in sums.iter_mut().zip(&n) {
            *s += f64::from(c);
        }
        *distinct.entry(n).or_default() += 1.0;
    }
    (distinct, sums)
}

/// One count vector's log-likelihood under each component (weights included) and its
/// derivatives: per component, d/d ln b (diffuse only), d/d ln f and d/d ln β.
struct RowTerms {
    ll: Vec<f64>,
    d_diffuse: f64,
    d_f: Vec<f64>,
    d_beta: Vec<f64>,
}

/// The terms of count vector `n` at precisions `b`, `f`, boost `beta` and log weights
/// `ln_w`.
fn row_terms(n: &[u32], mix: &[f64], (b, f, beta): (f64, f64, f64), ln_w: &[f64]) -> RowTerms {
    let k = mix.len();
    let (sb, sf) = (b, f + beta);
    let mut t = RowTerms {
        ll: vec![0.0; k + 1],
        d_diffuse: 0.0,
        d_f: vec![0.0; k + 1],
        d_beta: vec![0.0; k + 1],
    };
    let total: u32 = n.iter().sum();
    // Diffuse.
    let (l0, dg0) = gamma_ratio(sb, total);
    let mut l_diffuse = -l0;
    let mut d_diffuse = -dg0 * b;
    // Favourites share their base part: Σ_j over the f·m_j shapes.
    let (lf, dgf) = gamma_ratio(sf, total);
    let mut base_l = -lf;
    let mut base_d = -dgf * f;
    let mut own: Vec<(f64, f64, f64, f64)> = Vec::with_capacity(k);
    for j in 0..k {
        let (l, d) = gamma_ratio(b * mix[j], n[j]);
        l_diffuse += l;
        d_diffuse += d * b * mix[j];
        let (lb, db) = gamma_ratio(f * mix[j], n[j]);
        base_l += lb;
        base_d += db * f * mix[j];
        let (lboost, dboost) = gamma_ratio(f * mix[j] + beta, n[j]);
        own.push((lb, db, lboost, dboost));
    }
    t.ll[0] = ln_w[0] + l_diffuse;
    t.d_diffuse = d_diffuse;
    for j in 0..k {
        let (lb, db, lboost, dboost) = own[j];
        t.ll[j + 1] = ln_w[j + 1] + base_l - lb + lboost;
        t.d_f[j + 1] = base_d - db * f * mix[j] + dboost * f * mix[j];
        // d/d ln β: the boosted shape, and the total's shape.
        t.d_beta[j + 1] = (dboost - dgf) * beta;
    }
    t
}

/// The mixture's negative log-likelihood per customer and its gradient. Parameters:
/// ln b, ln f, ln β, then K + 1 weight logits (the first pulled lightly toward 0, which
/// leaves the weights free but the logits finite; the precisions pulled away from the
/// caps).
fn mixture_objective(x: &[f64], rows: &[(&Vec<u32>, f64)], mix: &[f64], customers: f64) -> (f64, Vec<f64>) {
    let k = mix.len();
    let cap = |v: f64| v.clamp(-12.0, 12.0);
    let (b, f, beta) = (cap(x[0]).exp(), cap(x[1]).exp(), cap(x[2]).exp());
    let logits = &x[3..];
    let top = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = logits.iter().map(|u| (u - top).exp()).sum();
    let ln_w: Vec<f64> = logits.iter().map(|u| u - top - z.ln()).collect();
    let mut value = 0.0;
    let mut grad = vec![0.0; x.len()];
    for &(n, w) in rows {
        let t = row_terms(n, mix, (b, f, beta), &ln_w);
        let top_ll = t.ll.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = t.ll.iter().map(|v| (v - top_ll).exp()).sum();
        let lse = top_ll + sum.ln();
        value -= w * lse;
        let r: Vec<f64> = t.ll.iter().map(|v| (v - lse).exp()).collect();
        grad[0] -= w * r[0] * t.d_diffuse;
        for ((r, d_f), d_beta) in r.iter().zip(&t.d_f).zip(&t.d_beta).skip(1) {
            grad[1] -= w * r * d_f;
            grad[2] -= w * r * d_beta;
        }
        for z in 0..=k {
            grad[3 + z] -= w * (r[z] - ln_w[z].exp());
        }
    }
    value /= customers;
    grad.iter_mut().for_each(|g| *g /= customers);
    value += 1e-6 * x[3] * x[3];
    grad[3] += 2e-6 * x[3];
    for i in 0..3 {
        let over = (x[i].abs() - 9.0).max(0.0);
        value += 1e-3 * over * over;
        grad[i] += 2e-3 * over * x[i].signum();
    }
    (value, grad)
}

impl CategoryMixture {
    /// The shapes of component `z` (0: diffuse, 1 + j: favourite j).
    pub fn shapes(&self, z: usize) -> Vec<f64> {
        if z == 0 {
            self.mix.iter().map(|m| self.diffuse_precision * m).collect()
        } else {
            self.mix
                .iter()
                .enumerate()
                .map(|(j, m)| self.favourite_precision * m + if j + 1 == z { self.favourite_boost } else { 0.0 })
                .collect()
        }
    }

    /// Fits the mixture to `counts` (customers × `k`, row-major; customers without
    /// lines ignored). `None` when fewer than ten customers have lines or `k` < 2.
    pub fn fit(counts: &[f64], k: usize) -> Option<Self> {
        if k < 2 || !counts.len().is_multiple_of(k) {
            return None;
        }
        let (distinct, sums) = distinct_counts(counts, k);
        let customers: f64 = distinct.values().sum();
        if customers < 10.0 {
            return None;
        }
        let lines: f64 = sums.iter().sum();
        let mix: Vec<f64> = sums.iter().map(|s| (s + 0.5) / (lines + 0.5 * k as f64)).collect();
        // Many distinct vectors (large or many-category data): a systematic sample of
        // them, each standing for `stride` times its multiplicity.
        let stride = crate::optimize::sample_stride(distinct.len()).unwrap_or(1);
        let rows: Vec<(&Vec<u32>, f64)> = distinct.iter().step_by(stride).map(|(n, w)| (n, *w * stride as f64)).collect();
        let customers: f64 = rows.iter().map(|r| r.1).sum();
        let objective = |x: &[f64]| mixture_objective(x, &rows, &mix, customers);
        let mut x0 = vec![(k as f64).ln(), 0.0, 1.0];
        x0.extend(std::iter::repeat_n(0.0, k + 1));
        let starts = vec![x0.clone(), {
            let mut v = x0.clone();
            v[2] = 3.0;
            v
        }];
        let m = crate::optimize::best_of(&objective, &starts, 500, 1e-8)?;
        let x = &m.x;
        let top = x[3..].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = x[3..].iter().map(|u| (u - top).exp()).sum();
        Some(CategoryMixture {
            mix,
            diffuse_precision: x[0].clamp(-12.0, 12.0).exp(),
            favourite_precision: x[1].clamp(-12.0, 12.0).exp(),
            favourite_boost: x[2].clamp(-12.0, 12.0).exp(),
            weights: x[3..].iter().map(|u| (u - top).exp() / z).collect(),
            log_likelihood: -m.value * customers,
            converged: m.converged,
            iterations: m.iterations,
        })
    }

    /// P(component | counts) for each component.
    pub fn responsibilities(&self, counts: &[f64]) -> Vec<f64> {
        let n: Vec<u32> = counts
            .iter()
            .map(|&c| if c.is_finite() && c > 0.0 { c.round() as u32 } else { 0 })
            .collect();
        let total: u32 = n.iter().sum();
        let ll: Vec<f64> = (0..self.weights.len())
            .map(|z| {
                let a = self.shapes(z);
                let a0: f64 = a.iter().sum();
                self.weights[z].max(1e-300).ln() - gamma_ratio(a0, total).0
                    + a.iter().zip(&n).map(|(&a, &c)| gamma_ratio(a, c).0).sum::<f64>()
            })
            .collect();
        let top = ll.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = ll.iter().map(|v| (v - top).exp()).collect();
        let s: f64 = w.iter().sum();
        w.iter().map(|v| v / s).collect()
    }

    /// [`p_preferred`](Self::p_preferred) with its own generator seeded by `seed`, so
    /// each statement's draws are the same whatever the order statements are judged in.
    pub fn p_preferred_seeded(&self, counts: &[f64], c: usize, ratio: f64, draws: usize, seed: u64) -> f64 {
        use rand::SeedableRng;
        self.p_preferred(counts, c, ratio, draws, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
    }

    /// The probability that category `c` is bought at least `ratio` times as much as
    /// the customer's most bought category (what naming it as preferred claims), under
    /// the posterior of their shares given `counts` (all zeros: the prior), by `draws`
    /// Monte Carlo draws from `rng`; smoothed by half a draw so it is never 0 or 1.
    pub fn p_preferred<R: rand::Rng + ?Sized>(&self, counts: &[f64], c: usize, ratio: f64, draws: usize, rng: &mut R) -> f64 {
        let k = self.mix.len();
        let resp = self.responsibilities(counts);
        let shapes: Vec<Vec<f64>> = (0..resp.len())
            .map(|z| self.shapes(z).iter().zip(counts).map(|(a, n)| a + n.max(0.0)).collect())
            .collect();
        let mut hits = 0usize;
        let mut g = vec![0.0; k];
        for _ in 0..draws {
            // The component, then the shares (as Gamma draws; the ratio needs no sum).
            let mut u: f64 = rng.random();
            let mut z = resp.len() - 1;
            for (i, r) in resp.iter().enumerate() {
                if u < *r {
                    z = i;
                    break;
                }
                u -= r;
            }
            for j in 0..k {
                g[j] = crate::sample::gamma(rng, shapes[z][j], 1.0);
            }
            let max = g.iter().copied().fold(0.0, f64::max);
            if g[c] >= ratio * max {
                hits += 1;
            }
        }
        (hits as f64 + 0.5) / (draws as f64 + 1.0)
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
    /// The level of a score: `satisfied` or more is satisfied, `dissatisfied` or less
    /// dissatisfied, in between neutral.
    pub fn of_score(v: f64, satisfied: f64, dissatisfied: f64) -> Self {
        if v >= satisfied {
            Stated::Satisfied
        } else if v <= dissatisfied {
            Stated::Dissatisfied
        } else {
            Stated::Neutral
        }
    }

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

    /// Customers' lines per category drawn from `shares` (one row per customer).
    fn simulate_lines(shares: &[Vec<f64>], rng: &mut rand_chacha::ChaCha8Rng) -> Vec<f64> {
        use rand::Rng;
        let k = shares[0].len();
        let mut out = Vec::new();
        for sh in shares {
            let lines = rng.random_range(1..=25);
            let mut row = vec![0.0; k];
            for _ in 0..lines {
                let mut u: f64 = rng.random();
                let mut j = k - 1;
                for (i, p) in sh.iter().enumerate() {
                    if u < *p {
                        j = i;
                        break;
                    }
                    u -= p;
                }
                row[j] += 1.0;
            }
            out.extend(row);
        }
        out
    }

    #[test]
    fn the_category_mixture_tells_favourites_from_spread_tastes() {
        use rand::{Rng, SeedableRng};
        let k = 8;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        // A favourite with 65 % of the lines, the rest spread evenly.
        let concentrated: Vec<Vec<f64>> = (0..3000)
            .map(|_| {
                let fav = rng.random_range(0..k);
                (0..k).map(|j| if j == fav { 0.65 } else { 0.0 } + 0.35 / k as f64).collect()
            })
            .collect();
        let lines = simulate_lines(&concentrated, &mut rng);
        let m = CategoryMixture::fit(&lines, k).unwrap();
        assert!(m.converged, "{m:?}");
        assert!(m.weights[0] < 0.2, "{m:?}");
        // The favourite component's mean share of its category is near 0.65 + 0.35/8.
        let a = m.shapes(1);
        let fav_share = a[0] / a.iter().sum::<f64>();
        assert!((fav_share - 0.69).abs() < 0.08, "{fav_share} {m:?}");
        // Spread tastes: Dirichlet(0.7) shares.
        let spread: Vec<Vec<f64>> = (0..3000)
            .map(|_| {
                let g: Vec<f64> = (0..k).map(|_| crate::sample::gamma(&mut rng, 0.7, 1.0)).collect();
                let t: f64 = g.iter().sum();
                g.iter().map(|v| v / t).collect()
            })
            .collect();
        let lines = simulate_lines(&spread, &mut rng);
        let d = CategoryMixture::fit(&lines, k).unwrap();
        assert!(d.converged, "{d:?}");
        assert!(d.weights[0] > 0.5, "{d:?}");
        // A customer with ten lines in category 0 prefers it, not category 3; with no
        // lines the prior says neither.
        let mut counts = vec![0.0; k];
        counts[0] = 10.0;
        let p0 = m.p_preferred(&counts, 0, 0.5, 2000, &mut rng);
        let p3 = m.p_preferred(&counts, 3, 0.5, 2000, &mut rng);
        assert!(p0 > 0.99 && p3 < 0.01, "{p0} {p3}");
        let prior = m.p_preferred(&vec![0.0; k], 3, 0.5, 4000, &mut rng);
        assert!((0.05..0.5).contains(&prior), "{prior}");
        assert!(CategoryMixture::fit(&[1.0, 0.0], 2).is_none());
    }

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
