//! An orders file drawn from the BG/NBD and Gamma-Gamma processes themselves, for the
//! model benchmarks: the fits then have a known answer (the parameters below), real
//! dropout and a realistic mix of one-time and frequent buyers, like CDNOW.
//!
//! Each customer makes a first purchase at a uniform time in the first two years; while
//! alive they buy as a Poisson process with rate λ ~ Gamma(r, α) per week and, after each
//! purchase, drop out with probability p ~ Beta(a, b) (Fader, Hardie & Lee 2005). Each
//! order's value is Gamma(p_s, ν) with ν ~ Gamma(q, γ) per customer (the Gamma-Gamma
//! model), spread over one or two order lines. Observation ends three years after the
//! start.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::company::exp;
use crate::write::{bench_start, Out, BENCH_CHANNELS, BENCH_HEADER};
use crate::Result;

/// The parameters the file is drawn from; time in weeks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BtydTruth {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

impl Default for BtydTruth {
    fn default() -> Self {
        Self {
            r: 0.6,
            alpha: 8.0,
            a: 0.8,
            b: 3.0,
            p: 6.0,
            q: 3.7,
            gamma: 15.0,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BtydFile {
    pub lines: u64,
    pub orders: u64,
    pub truth: BtydTruth,
}

/// A Gamma(shape, rate) draw.
pub(crate) fn gamma(rng: &mut ChaCha8Rng, shape: f64, rate: f64) -> f64 {
    rapport_model::sample::gamma(rng, shape, 1.0 / rate)
}

/// Writes `customers` customers' orders to `path` (the orders table's CSV format).
pub fn write_orders_btyd(path: &std::path::Path, customers: u64, seed: u64, truth: BtydTruth) -> Result<BtydFile> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Out::create(path)?;
    out.line(BENCH_HEADER)?;
    let (channels, start) = (BENCH_CHANNELS, bench_start());
    const WEEK: f64 = 7.0 * 86_400.0;
    let end_weeks = 3.0 * 52.0;
    let (mut orders, mut lines) = (0u64, 0u64);
    for c in 0..customers {
        let lambda = gamma(&mut rng, truth.r, truth.alpha);
        let ga = gamma(&mut rng, truth.a, 1.0);
        let gb = gamma(&mut rng, truth.b, 1.0);
        let drop = ga / (ga + gb);
        let nu = gamma(&mut rng, truth.q, truth.gamma);
        let channel = channels[rng.random_range(0..channels.len())];
        let mut t = rng.random::<f64>() * 2.0 * 52.0;
        let mut repeat = false;
        loop {
            orders += 1;
            let at = start + chrono::Duration::seconds((t * WEEK) as i64);
            let ts = at.format("%Y-%m-%d %H:%M:%S");
            let value = gamma(&mut rng, truth.p, nu).max(0.01);
            let n = rng.random_range(1..=2u32);
            for k in 0..n {
                let share = value / f64::from(n);
                let product = rng.random_range(0..50_000u32);
                let q = if k == 0 { 1 } else { rng.random_range(1..=2u32) };
                let price = (share / f64::from(q) * 100.0).round().max(1.0) / 100.0;
                out.line(&format!("O{orders},C{c},{ts},P{product},{q},{price:.2},{channel},completed"))?;
                lines += 1;
            }
            // After a repeat purchase the customer leaves with probability `drop` (in
            // BG/NBD no one leaves right after the first one).
            if (repeat && rng.random::<f64>() < drop) || lambda <= 0.0 {
                break;
            }
            repeat = true;
            t += exp(&mut rng, lambda);
            if t >= end_weeks {
                break;
            }
        }
    }
    out.finish()?;
    Ok(BtydFile { lines, orders, truth })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_deterministic_and_every_customer_buys() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
        let fa = write_orders_btyd(&a, 500, 3, BtydTruth::default()).unwrap();
        let fb = write_orders_btyd(&b, 500, 3, BtydTruth::default()).unwrap();
        assert_eq!(fa, fb);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let text = std::fs::read_to_string(&a).unwrap();
        let ids: std::collections::BTreeSet<&str> = text.lines().skip(1).map(|l| l.split(',').nth(1).unwrap()).collect();
        assert_eq!(ids.len(), 500);
        assert_eq!(text.lines().count() as u64, fa.lines + 1);
        assert!(fa.orders > 500, "some customers come back");
    }
}
