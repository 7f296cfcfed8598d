//! Did an action work? Treated vs control proportions, their difference (the uplift) with
//! Newcombe's hybrid score interval, and the deterministic split of an audience into
//! treatment and control.
//!
//! Newcombe's interval (method 10 of Newcombe 1998, *Statistics in Medicine* 17:873–890)
//! combines the two Wilson score intervals; unlike the Wald interval it stays inside
//! [−1, 1], behaves at rates near 0 or 1 and has close to nominal coverage for the small
//! control groups campaigns keep.

use crate::special::normal_quantile;

/// Wilson score interval for `x` successes in `n` trials at confidence `level`.
/// `n = 0` gives the uninformative (0, 1).
pub fn wilson(x: f64, n: f64, level: f64) -> (f64, f64) {
    if n <= 0.0 {
        return (0.0, 1.0);
    }
    let z = normal_quantile(0.5 + level / 2.0);
    let p = (x / n).clamp(0.0, 1.0);
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// One comparison of a treated and a control group on a binary outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Uplift {
    pub treated_rate: f64,
    pub control_rate: f64,
    /// treated_rate − control_rate.
    pub uplift: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// The uplift of `x1` of `n1` treated over `x2` of `n2` controls with Newcombe's hybrid
/// score interval. `None` when either group is empty.
pub fn newcombe(x1: f64, n1: f64, x2: f64, n2: f64, level: f64) -> Option<Uplift> {
    if n1 <= 0.0 || n2 <= 0.0 {
        return None;
    }
    let (p1, p2) = (x1 / n1, x2 / n2);
    let (l1, u1) = wilson(x1, n1, level);
    let (l2, u2) = wilson(x2, n2, level);
    let d = p1 - p2;
    Some(Uplift {
        treated_rate: p1,
        control_rate: p2,
        uplift: d,
        ci_low: d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt(),
        ci_high: d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt(),
    })
}

/// 64-bit FNV-1a of `parts` (each followed by a 0xff separator), mixed by SplitMix64's
/// finaliser: a stable hash that does not change between Rust versions or platforms.
pub fn stable_hash(seed: u64, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for p in parts {
        for &b in p.as_bytes().iter().chain(std::iter::once(&0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A uniform number in [0, 1) fixed by the seed and the parts.
pub fn stable_uniform(seed: u64, parts: &[&str]) -> f64 {
    (stable_hash(seed, parts) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether `customer` falls in the control group of `action`: the same answer for the
/// same seed, action and customer whatever else is in the audience or in which order.
pub fn in_control(seed: u64, action: &str, customer: &str, share: f64) -> bool {
    stable_uniform(seed, &[action, customer]) < share
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantile_reference() {
        for (p, z) in [(0.975, 1.959_963_985), (0.5, 0.0), (0.01, -2.326_347_874), (1e-6, -4.753_424_309)] {
            assert!((normal_quantile(p) - z).abs() < 1e-8, "{p}");
        }
    }

    #[test]
    fn wilson_reference() {
        // Newcombe (1998), Table I: 81/263 → 0.2553 to 0.3662 (method 3, no CC).
        let (l, u) = wilson(81.0, 263.0, 0.95);
        assert!((l - 0.2553).abs() < 1e-4 && (u - 0.3662).abs() < 1e-4, "{l} {u}");
        // 0/10 → 0 to 0.2775.
        let (l, u) = wilson(0.0, 10.0, 0.95);
        assert!(l == 0.0 && (u - 0.2775).abs() < 1e-4, "{u}");
    }

    #[test]
    fn newcombe_reference() {
        // Newcombe (1998), Table II, method 10: (a) 56/70 − 48/80 → 0.0524 to 0.3339;
        // (b) 9/10 − 3/10 → 0.1705 to 0.8090.
        let u = newcombe(56.0, 70.0, 48.0, 80.0, 0.95).unwrap();
        assert!((u.uplift - 0.2).abs() < 1e-12);
        assert!((u.ci_low - 0.0524).abs() < 1e-4 && (u.ci_high - 0.3339).abs() < 1e-4, "{u:?}");
        let u = newcombe(9.0, 10.0, 3.0, 10.0, 0.95).unwrap();
        assert!((u.ci_low - 0.1705).abs() < 1e-4 && (u.ci_high - 0.8090).abs() < 1e-4, "{u:?}");
        assert!(newcombe(1.0, 0.0, 1.0, 2.0, 0.95).is_none());
        // Bounds stay in [−1, 1] at the extremes.
        let u = newcombe(10.0, 10.0, 0.0, 10.0, 0.95).unwrap();
        assert!(u.ci_high <= 1.0 && u.ci_low > 0.0);
    }

    #[test]
    fn control_split_is_stable_and_has_the_share() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("c{i}")).collect();
        let control = ids.iter().filter(|c| in_control(7, "retention_offer", c, 0.1)).count();
        assert!((1_800..2_200).contains(&control), "{control}");
        // Same answer on a second call; another action splits differently.
        let a: Vec<bool> = ids.iter().map(|c| in_control(7, "x", c, 0.5)).collect();
        let b: Vec<bool> = ids.iter().map(|c| in_control(7, "x", c, 0.5)).collect();
        let other: Vec<bool> = ids.iter().map(|c| in_control(7, "y", c, 0.5)).collect();
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert!(!ids.iter().any(|c| in_control(7, "x", c, 0.0)));
        assert!(ids.iter().all(|c| in_control(7, "x", c, 1.0)));
    }
}
