//! What the "buy till you die" models share: calibration histories grouped by identical
//! (x, t_x, T), so a fit costs in proportion to distinct histories, not customers, and
//! the fit report every model returns.

use crate::error::ModelError;
/// One customer's calibration history: `x` repeat purchases (purchase occasions after
/// the first), the time `t_x` of the last one and the age `t` of the customer at the
/// end of calibration, both measured from the first purchase in the model's time unit;
/// `weight` customers share it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct History {
    pub x: f64,
    pub t_x: f64,
    pub t: f64,
    pub weight: f64,
}

impl History {
    pub fn new(x: f64, t_x: f64, t: f64) -> Self {
        Self { x, t_x, t, weight: 1.0 }
    }

    /// Why the history cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let ok = self.x.is_finite()
            && self.x >= 0.0
            && self.x.fract() == 0.0
            && self.t_x.is_finite()
            && self.t.is_finite()
            && self.t > 0.0
            && self.t_x >= 0.0
            && self.t_x <= self.t * (1.0 + 1e-12)
            && (self.x > 0.0 || self.t_x == 0.0)
            && self.weight > 0.0;
        (!ok).then(|| {
            format!(
                "invalid history x = {}, t_x = {}, T = {}, weight = {}",
                self.x, self.t_x, self.t, self.weight
            )
        })
    }
}

/// Merges identical histories, adding their weights; the order of the input does not
/// change the result.
pub fn group(histories: &[History]) -> Vec<History> {
    use rayon::prelude::*;
    // Valid histories have non-negative finite values (−0 made +0), whose bit patterns sort as the
    // numbers do; the weight is part of the key, so equal keys are equal records and the
    // (parallel, unstable) sort cannot make the sums depend on the input order.
    let mut v: Vec<[u64; 4]> = histories
        .par_iter()
        .map(|h| {
            [
                (h.x + 0.0).to_bits(),
                (h.t_x + 0.0).to_bits(),
                (h.t + 0.0).to_bits(),
                h.weight.to_bits(),
            ]
        })
        .collect();
    v.par_sort_unstable();
    let mut out: Vec<History> = Vec::with_capacity(v.len() / 2);
    for k in v {
        let h = History {
            x: f64::from_bits(k[0]),
            t_x: f64::from_bits(k[1]),
            t: f64::from_bits(k[2]),
            weight: f64::from_bits(k[3]),
        };
        match out.last_mut() {
            Some(last) if last.x == h.x && last.t_x == h.t_x && last.t == h.t => last.weight += h.weight,
            _ => out.push(h),
        }
    }
    out
}

/// Parameters of a fitted model with its diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit<P> {
    pub params: P,
    pub log_likelihood: f64,
    pub converged: bool,
    pub iterations: usize,
    /// Distinct histories the likelihood was evaluated on.
    pub groups: usize,
    pub message: String,
}

/// Checks the data of a fit; the error names the first bad history.
pub fn check(histories: &[History]) -> Result<(), ModelError> {
    if histories.is_empty() {
        return Err(ModelError::TooLittleData("no customers to fit".into()));
    }
    match histories.iter().find_map(History::problem) {
        Some(p) => Err(ModelError::InvalidInput(p)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_adds_weights_and_ignores_order() {
        let a = [
            History::new(1.0, 2.0, 5.0),
            History::new(0.0, 0.0, 5.0),
            History::new(1.0, 2.0, 5.0),
        ];
        let mut b = a;
        b.reverse();
        let g = group(&a);
        assert_eq!(g, group(&b));
        assert_eq!(g.len(), 2);
        assert_eq!(g.iter().map(|h| h.weight).sum::<f64>(), 3.0);
    }

    #[test]
    fn bad_histories_are_named() {
        assert!(check(&[History::new(1.0, 6.0, 5.0)]).unwrap_err().message().contains("t_x = 6"));
        assert!(check(&[History::new(0.0, 1.0, 5.0)]).is_err());
        assert!(check(&[]).is_err());
    }
}
