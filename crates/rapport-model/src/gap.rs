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
    let front = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
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
        // Lentz's continued fraction for Q(a, x).
        const TINY: f64 = 1e-300;
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
        (1.0 - front * h).clamp(0.0, 1.0)
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

/// Frequency gap: the stated rate against the posterior of the customer's rate.
pub fn frequency(stated: StatedRate, posterior: &RatePosterior) -> Assessment {
    let observed = posterior.mean();
    let delta = stated.value / observed.max(1e-9);
    let (direction, evidence) = if observed < stated.low {
        (Some(Direction::Over), posterior.cdf(stated.low))
    } else if observed >= stated.high {
        (Some(Direction::Under), 1.0 - posterior.cdf(stated.high))
    } else {
        (None, 0.0)
    };
    Assessment {
        reported: stated.value,
        observed,
        delta,
        evidence,
        direction,
    }
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
    fn stating_the_prediction_is_no_gap() {
        let p = posterior(23.0, 1.0); // mean 12 per year
        let a = frequency(StatedRate::parse("12").unwrap(), &p);
        assert!((a.delta - 1.0).abs() < 1e-12);
        assert_eq!(a.direction, None);
        assert_eq!(a.evidence, 0.0);
        assert_eq!(frequency(StatedRate::parse("monthly").unwrap(), &p).direction, None);
    }

    #[test]
    fn evidence_grows_with_observed_behaviour() {
        // The same observed rate (2 a year) over more and more time, stated as quarterly.
        let stated = StatedRate::parse("quarterly").unwrap();
        let mut last = 0.0;
        for years in [1.0, 2.0, 4.0, 8.0, 16.0] {
            let a = frequency(stated, &posterior(2.0 * years, years));
            assert_eq!(a.direction, Some(Direction::Over));
            assert!(a.evidence > last, "{years}: {} <= {last}", a.evidence);
            last = a.evidence;
        }
        assert!(last > 0.9);
        let under = frequency(StatedRate::parse("rarely").unwrap(), &posterior(40.0, 2.0));
        assert_eq!(under.direction, Some(Direction::Under));
        assert!(under.evidence > 0.99 && under.delta < 1.0);
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
