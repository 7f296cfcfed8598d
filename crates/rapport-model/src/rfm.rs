//! RFM scoring: recency, frequency and monetary quintile scores (5 = best) and the
//! standard named segments on the recency × frequency grid.
//!
//! Ties are scored alike and deterministically: a value's score is 1 + ⌊5 · (number of
//! customers with a strictly worse value) / n⌋, so equal values always share a score and
//! the result does not depend on the order of the input.

/// Quintile scores 1..=5 for `values`, where a larger value is better.
pub fn quintiles(values: &[f64]) -> Vec<u8> {
    let n = values.len();
    let mut sorted: Vec<f64> = values.iter().map(|v| if v.is_finite() { *v } else { f64::NEG_INFINITY }).collect();
    sorted.sort_by(f64::total_cmp);
    values
        .iter()
        .map(|v| {
            let v = if v.is_finite() { *v } else { f64::NEG_INFINITY };
            let below = sorted.partition_point(|x| x.total_cmp(&v).is_lt());
            (1 + (5 * below) / n.max(1)).min(5) as u8
        })
        .collect()
}

/// The four cut points of the quintile scores of `values` (larger is better): a value
/// scores 1 + the number of cuts it exceeds, which for a value of `values` is exactly its
/// [`quintiles`] score — so a customer scored later against the same population (live,
/// between runs) gets the score the population's ranking would give them.
pub fn quintile_cuts(values: &[f64]) -> [f64; 4] {
    let n = values.len();
    let mut sorted: Vec<f64> = values.iter().map(|v| finite_or_worst(*v)).collect();
    sorted.sort_by(f64::total_cmp);
    // A score of at least k + 1 needs at least ⌈k·n/5⌉ values strictly below.
    std::array::from_fn(|k| {
        let need = ((k + 1) * n).div_ceil(5);
        if need == 0 {
            f64::NEG_INFINITY
        } else {
            sorted[need - 1]
        }
    })
}

/// The score 1..=5 of `value` against [`quintile_cuts`].
pub fn quintile_of(cuts: &[f64; 4], value: f64) -> u8 {
    let v = finite_or_worst(value);
    1 + cuts.iter().filter(|c| v.total_cmp(c).is_gt()).count() as u8
}

fn finite_or_worst(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        f64::NEG_INFINITY
    }
}

/// The population a run scored RFM against, as cut points: what scoring one customer
/// again between runs needs.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Cuts {
    /// Cuts of minus the recency in days (a smaller recency is better).
    pub neg_recency: [f64; 4],
    pub frequency: [f64; 4],
    pub monetary: [f64; 4],
}

impl Cuts {
    /// The cuts of the population [`score`] scores.
    pub fn fit(recency_days: &[f64], frequency: &[f64], monetary: &[f64]) -> Self {
        let neg: Vec<f64> = recency_days.iter().map(|v| -v).collect();
        Cuts {
            neg_recency: quintile_cuts(&neg),
            frequency: quintile_cuts(frequency),
            monetary: quintile_cuts(monetary),
        }
    }

    /// One customer's scores and segment against the population.
    pub fn score(&self, recency_days: f64, frequency: f64, monetary: f64) -> Rfm {
        let (r, f, m) = (
            quintile_of(&self.neg_recency, -recency_days),
            quintile_of(&self.frequency, frequency),
            quintile_of(&self.monetary, monetary),
        );
        Rfm {
            r,
            f,
            m,
            segment: segment(r, f),
        }
    }
}

/// The named segments, in the order reports list them.
pub const SEGMENTS: [&str; 11] = [
    "Champions",
    "Loyal",
    "Potential Loyalist",
    "New",
    "Promising",
    "Need Attention",
    "About to Sleep",
    "At Risk",
    "Cannot Lose",
    "Hibernating",
    "Lost",
];

/// The segment of a recency score `r` and frequency score `f` (both 1..=5).
pub fn segment(r: u8, f: u8) -> &'static str {
    match (r, f) {
        (1, 1) => "Lost",
        (1..=2, 1..=2) => "Hibernating",
        (1..=2, 3..=4) => "At Risk",
        (1..=2, _) => "Cannot Lose",
        (3, 1..=2) => "About to Sleep",
        (3, 3) => "Need Attention",
        (3..=4, 4..=5) => "Loyal",
        (4, 1) => "Promising",
        (5, 1) => "New",
        (4..=5, 2..=3) => "Potential Loyalist",
        _ => "Champions",
    }
}

/// Scores of one customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfm {
    pub r: u8,
    pub f: u8,
    pub m: u8,
    pub segment: &'static str,
}

/// Scores every customer: recency in days since the last purchase (smaller is better),
/// frequency (orders) and monetary value (revenue).
pub fn score(recency_days: &[f64], frequency: &[f64], monetary: &[f64]) -> Vec<Rfm> {
    let neg: Vec<f64> = recency_days.iter().map(|v| -v).collect();
    let (r, f, m) = (quintiles(&neg), quintiles(frequency), quintiles(monetary));
    (0..r.len())
        .map(|i| Rfm {
            r: r[i],
            f: f[i],
            m: m[i],
            segment: segment(r[i], f[i]),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quintiles_of_distinct_values() {
        let v: Vec<f64> = (0..10).map(f64::from).collect();
        assert_eq!(quintiles(&v), vec![1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    }

    #[test]
    fn ties_share_a_score_whatever_the_order() {
        let v = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 9.0, 9.0];
        let s = quintiles(&v);
        assert!(s[..6].iter().all(|x| *x == 1));
        assert_eq!(s[8], s[9]);
        let mut rev = v;
        rev.reverse();
        let mut s2 = quintiles(&rev);
        s2.reverse();
        assert_eq!(s, s2);
        assert_eq!(quintiles(&[4.0; 7]), vec![1; 7]);
    }

    #[test]
    fn cuts_give_every_member_its_quintile_and_rank_newcomers() {
        // Ties, repeated values, an infinite one and sizes not divisible by five.
        let mut state = 7u64;
        for n in [1usize, 2, 3, 4, 5, 7, 11, 23, 100, 101] {
            let v: Vec<f64> = (0..n)
                .map(|i| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    if i == 3 {
                        f64::INFINITY
                    } else {
                        ((state >> 33) % 13) as f64
                    }
                })
                .collect();
            let cuts = quintile_cuts(&v);
            let q = quintiles(&v);
            for (x, s) in v.iter().zip(&q) {
                assert_eq!(quintile_of(&cuts, *x), *s, "n = {n}, value {x}");
            }
            // A newcomer better than everyone scores 5; no value scores below the worst.
            assert_eq!(quintile_of(&cuts, 1e9), 5);
            assert_eq!(quintile_of(&cuts, f64::NAN), 1);
        }
        let rec = [1.0, 300.0, 5.0, 200.0, 2.0, 40.0, 41.0];
        let freq = [10.0, 1.0, 8.0, 1.0, 12.0, 3.0, 2.0];
        let mon = [900.0, 10.0, 700.0, 15.0, 1000.0, 50.0, 60.0];
        let cuts = Cuts::fit(&rec, &freq, &mon);
        for (i, s) in score(&rec, &freq, &mon).iter().enumerate() {
            assert_eq!(cuts.score(rec[i], freq[i], mon[i]), *s);
        }
    }

    #[test]
    fn every_cell_of_the_grid_has_a_named_segment() {
        let mut seen = std::collections::BTreeSet::new();
        for r in 1..=5 {
            for f in 1..=5 {
                let s = segment(r, f);
                assert!(SEGMENTS.contains(&s));
                seen.insert(s);
            }
        }
        assert_eq!(seen.len(), SEGMENTS.len());
        assert_eq!(segment(5, 5), "Champions");
        assert_eq!(segment(1, 5), "Cannot Lose");
    }

    #[test]
    fn recent_frequent_big_spenders_are_champions() {
        let rec = [1.0, 300.0, 5.0, 200.0, 2.0];
        let freq = [20.0, 1.0, 15.0, 1.0, 1.0];
        let mon = [900.0, 10.0, 700.0, 20.0, 15.0];
        let s = score(&rec, &freq, &mon);
        assert_eq!(s[0].segment, "Champions");
        assert!(matches!(s[1].segment, "Lost" | "Hibernating"));
    }
}
