//! How the gap evidence holds up: the statements judged at a cut-off against the same
//! statements judged with later data. Where the evidence is a calibrated probability,
//! the later data confirm it on average (a posterior is a martingale).

use std::collections::BTreeMap;

use super::gaps::{GapRow, GapType};
use crate::results::{EvidenceBin, Reliability, TypeReliability};

/// Bins of the evidence at the cut-off.
const EDGES: [f64; 6] = [0.0, 0.5, 0.8, 0.9, 0.95, 0.99];

/// Per gap type, the evidence of the statements judged at both dates (same customer,
/// subject and answer): bins of the earlier evidence with both means, the weighted mean
/// gap, and how many of the gaps reported earlier (evidence ≥ `threshold`) are still
/// reported.
pub fn gap_reliability(
    (ids_then, then): (&[String], &[GapRow]),
    (ids_now, now): (&[String], &[GapRow]),
    threshold: f64,
) -> BTreeMap<String, TypeReliability> {
    type Key = (String, GapType, String);
    let key = |ids: &[String], g: &GapRow| -> Key { (ids[g.customer].clone(), g.gap_type, g.subject.clone()) };
    let later: BTreeMap<Key, (&str, f64)> = now
        .iter()
        .map(|g| (key(ids_now, g), (g.reported_text.as_str(), g.evidence)))
        .collect();
    let mut by_type = BTreeMap::new();
    for t in [GapType::Frequency, GapType::Category, GapType::Satisfaction] {
        // (e, e') of the statements judged at both dates with the same answer.
        let pairs: Vec<(f64, f64)> = then
            .iter()
            .filter(|g| g.gap_type == t)
            .filter_map(|g| {
                later
                    .get(&key(ids_then, g))
                    .filter(|(text, _)| *text == g.reported_text)
                    .map(|&(_, e2)| (g.evidence, e2))
            })
            .collect();
        let r = if pairs.is_empty() {
            let message = "no statement judged at both dates".to_string();
            TypeReliability::Unmatched { statements: 0, message }
        } else {
            TypeReliability::Checked(reliability(&pairs, threshold))
        };
        by_type.insert(t.to_string(), r);
    }
    by_type
}

/// The reliability of (evidence at the cut-off, evidence with later data) pairs.
fn reliability(pairs: &[(f64, f64)], threshold: f64) -> Reliability {
    let mut bins = Vec::new();
    let mut weighted_gap = 0.0;
    for (b, &lo) in EDGES.iter().enumerate() {
        let hi = EDGES.get(b + 1).copied().unwrap_or(f64::INFINITY);
        let members: Vec<&(f64, f64)> = pairs.iter().filter(|(e, _)| *e >= lo && *e < hi).collect();
        if members.is_empty() {
            continue;
        }
        let m = members.len() as f64;
        let (then_mean, now_mean) = (
            members.iter().map(|p| p.0).sum::<f64>() / m,
            members.iter().map(|p| p.1).sum::<f64>() / m,
        );
        weighted_gap += m * (then_mean - now_mean).abs();
        bins.push(EvidenceBin {
            from: lo,
            to: hi.min(1.0),
            statements: members.len(),
            evidence_at_cutoff: then_mean,
            evidence_with_later_data: now_mean,
        });
    }
    let flagged: Vec<&(f64, f64)> = pairs.iter().filter(|(e, _)| *e >= threshold).collect();
    let kept = flagged.iter().filter(|(_, e2)| *e2 >= threshold).count();
    let any = !flagged.is_empty();
    Reliability {
        statements: pairs.len(),
        bins,
        mean_abs_gap: weighted_gap / pairs.len() as f64,
        reported_at_cutoff: flagged.len(),
        still_reported: kept,
        confirmed_share: any.then(|| kept as f64 / flagged.len() as f64),
        mean_later_evidence_of_reported: any.then(|| flagged.iter().map(|p| p.1).sum::<f64>() / flagged.len() as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_that_holds_up_is_still_reported() {
        let pairs = [(0.95, 0.97), (0.96, 0.4), (0.2, 0.1), (0.85, 0.9)];
        let r = reliability(&pairs, 0.9);
        assert_eq!((r.statements, r.reported_at_cutoff, r.still_reported), (4, 2, 1));
        assert_eq!(r.confirmed_share, Some(0.5));
        let bins: Vec<(f64, usize)> = r.bins.iter().map(|b| (b.from, b.statements)).collect();
        assert_eq!(bins, [(0.0, 1), (0.8, 1), (0.95, 2)]);
        // |0.2 − 0.1| + |0.85 − 0.9| + 2 × |0.955 − 0.685|, over 4.
        assert!(
            (r.mean_abs_gap - (0.1 + 0.05 + 2.0 * 0.27) / 4.0).abs() < 1e-12,
            "{}",
            r.mean_abs_gap
        );
        let none = reliability(&[(0.3, 0.2)], 0.9);
        assert_eq!((none.reported_at_cutoff, none.confirmed_share), (0, None));
    }
}
