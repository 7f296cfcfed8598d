//! Robust location and scale: the median and the median absolute deviation (MAD).
//!
//! Used to flag absurd values (an order of 80,000 units in a shop that sells by the
//! piece) without letting the absurd values themselves move the yardstick, as a mean
//! and standard deviation would.

/// The consistency constant that makes the MAD estimate the standard deviation of a
/// normal distribution.
pub const MAD_TO_SD: f64 = 1.482_602_218_505_602;

/// The median of `values`, ignoring non-finite entries; `None` when nothing is left.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    median_in_place(&mut v)
}

fn median_in_place(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    let mid = n / 2;
    let (_, upper, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        Some(upper)
    } else {
        let lower = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some((lower + upper) / 2.0)
    }
}

/// Robust location and scale of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RobustScale {
    pub median: f64,
    /// The MAD scaled to estimate a standard deviation (`MAD_TO_SD × MAD`).
    pub sigma: f64,
}

impl RobustScale {
    /// Median and scaled MAD of the finite values; `None` for an empty sample.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        let median = median_in_place(&mut v)?;
        for x in v.iter_mut() {
            *x = (*x - median).abs();
        }
        let mad = median_in_place(&mut v)?;
        Some(Self {
            median,
            sigma: MAD_TO_SD * mad,
        })
    }

    /// How many (floored) robust standard deviations `x` lies above the median.
    /// `min_sigma` keeps a sample whose values are nearly all equal (a MAD of zero)
    /// from turning every other value into an outlier.
    pub fn upper_z(&self, x: f64, min_sigma: f64) -> f64 {
        (x - self.median) / self.sigma.max(min_sigma)
    }
}

/// An outlier rule for positive magnitudes that span orders of magnitude (quantities,
/// amounts): robust z-scores on the log10 scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogOutlierRule {
    pub scale: RobustScale,
    /// Floor on the log10-scale sigma.
    pub min_sigma: f64,
}

impl LogOutlierRule {
    /// Fits the rule on the non-zero magnitudes of `values`; `None` if there are none.
    pub fn fit(values: &[f64], min_sigma: f64) -> Option<Self> {
        let logs: Vec<f64> = values
            .iter()
            .filter(|x| x.is_finite() && **x != 0.0)
            .map(|x| x.abs().log10())
            .collect();
        RobustScale::of(&logs).map(|scale| Self { scale, min_sigma })
    }

    /// The robust z-score of `|x|` on the log scale (0 for x = 0).
    pub fn z(&self, x: f64) -> f64 {
        if x == 0.0 || !x.is_finite() {
            return 0.0;
        }
        self.scale.upper_z(x.abs().log10(), self.min_sigma)
    }

    /// The smallest magnitude whose z-score exceeds `k`.
    pub fn threshold(&self, k: f64) -> f64 {
        10f64.powf(self.scale.median + k * self.scale.sigma.max(self.min_sigma))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn mad_ignores_a_single_wild_value() {
        let mut v: Vec<f64> = (1..=99).map(f64::from).collect();
        let before = RobustScale::of(&v).unwrap();
        v.push(1e9);
        let after = RobustScale::of(&v).unwrap();
        assert!((before.median - after.median).abs() <= 0.5);
        assert!((before.sigma - after.sigma).abs() / before.sigma < 0.05);
    }

    #[test]
    fn log_rule_flags_orders_of_magnitude_not_ordinary_spread() {
        let mut q: Vec<f64> = Vec::new();
        for i in 0..1000 {
            q.push(f64::from(1 + i % 12));
        }
        let rule = LogOutlierRule::fit(&q, 0.5).unwrap();
        assert!(rule.z(99.0) < 5.0);
        assert!(rule.z(-12.0) < 5.0);
        assert!(rule.z(1e7) > 10.0);
        assert_eq!(rule.z(0.0), 0.0);
        let t = rule.threshold(10.0);
        assert!(rule.z(t * 1.01) > 10.0 && rule.z(t * 0.99) < 10.0);
    }

    #[test]
    fn constant_sample_uses_the_floor() {
        let rule = LogOutlierRule::fit(&[1.0; 50], 0.5).unwrap();
        assert_eq!(rule.scale.sigma, 0.0);
        // log10(1000) = 3 = 6 floored sigmas.
        assert!((rule.z(1000.0) - 6.0).abs() < 1e-12);
    }
}
