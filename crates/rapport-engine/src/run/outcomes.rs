//! Outcome rates by segment with Beta-Binomial shrinkage: for each binary outcome the
//! data allows — churned (no purchase in the last window, by the RFM segment the
//! customer had at its start), returned (any returned line, by current RFM segment) —
//! P(outcome | segment) as a posterior mean with a 95 % credible interval
//! (`rapport_model::rates`), written as the `outcome_rates` table.

use std::collections::BTreeMap;

use datafusion::arrow::record_batch::RecordBatch;

use rapport_model::rates::BetaPrior;
use rapport_model::rfm::Rfm;

use super::features::Features;
use super::predict::Snapshot;

use crate::columns::Columns;
pub use crate::results::OutcomeRate;
use crate::Result;

/// The rates the data allow: churn in the last window by the RFM segment each buyer had
/// at its start (`before`), and returns by the current segment (`rfm`).
pub fn by_segment(before: &Snapshot<'_>, now: &Features, buyers: &[usize], rfm: &[Option<Rfm>]) -> Vec<OutcomeRate> {
    let then = before.features;
    let b1: Vec<usize> = (0..now.len()).filter(|&i| then.purchase_days[i] > 0.0).collect();
    let scores1 = rapport_model::rfm::score(
        &b1.iter()
            .map(|&i| (before.day - then.last_day[i].expect("buyer")) as f64)
            .collect::<Vec<_>>(),
        &b1.iter().map(|&i| then.orders[i]).collect::<Vec<_>>(),
        &b1.iter().map(|&i| then.revenue[i]).collect::<Vec<_>>(),
    );
    let mut out = rates(
        "churned",
        b1.iter()
            .zip(&scores1)
            .map(|(&i, r)| (r.segment.to_string(), now.purchase_days[i] <= then.purchase_days[i])),
    );
    out.extend(rates(
        "returned",
        buyers
            .iter()
            .map(|&i| (rfm[i].expect("buyer").segment.to_string(), now.returned_lines[i] > 0.0)),
    ));
    out
}

/// Rates of `outcome` per segment from `(segment, happened)` per customer.
pub fn rates(outcome: &str, rows: impl Iterator<Item = (String, bool)>) -> Vec<OutcomeRate> {
    let mut by: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (seg, hit) in rows {
        let e = by.entry(seg).or_default();
        e.0 += f64::from(u8::from(hit));
        e.1 += 1.0;
    }
    let groups: Vec<(f64, f64)> = by.values().copied().collect();
    let prior = BetaPrior::fit(&groups);
    by.into_iter()
        .map(|(segment, (k, n))| {
            let r = prior.posterior(k, n, 0.95);
            OutcomeRate {
                outcome: outcome.to_string(),
                segment,
                customers: n,
                events: k,
                raw_rate: k / n,
                rate: r.mean,
                lower: r.lower,
                upper: r.upper,
            }
        })
        .collect()
}

pub fn batch(rows: &[OutcomeRate]) -> Result<RecordBatch> {
    let x = |f: fn(&OutcomeRate) -> f64| rows.iter().map(move |r| Some(f(r)));
    let mut c = Columns::default();
    c.text("outcome", false, rows.iter().map(|r| Some(r.outcome.as_str())));
    c.text("segment", false, rows.iter().map(|r| Some(r.segment.as_str())));
    c.floats("customers", false, x(|r| r.customers));
    c.floats("events", false, x(|r| r.events));
    c.floats("raw_rate", false, x(|r| r.raw_rate));
    c.floats("rate", false, x(|r| r.rate));
    c.floats("lower", false, x(|r| r.lower));
    c.floats("upper", false, x(|r| r.upper));
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_segment_gets_a_shrunk_rate_inside_its_interval() {
        let rows = (0..1000).map(|i| (if i < 990 { "big" } else { "tiny" }.to_string(), i % 4 == 0 || i >= 995));
        let r = rates("churned", rows);
        assert_eq!(r.len(), 2);
        let tiny = r.iter().find(|r| r.segment == "tiny").unwrap();
        assert_eq!((tiny.customers, tiny.events), (10.0, 6.0));
        assert!(tiny.rate < tiny.raw_rate && tiny.lower < tiny.rate && tiny.rate < tiny.upper);
        assert_eq!(batch(&r).unwrap().num_rows(), 2);
    }
}
