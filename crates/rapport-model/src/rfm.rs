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
