//! Deterministic parallel reduction. Rayon's `sum`, `fold` and `reduce` group items
//! differently from run to run (work stealing), and floating-point addition is not
//! associative, so their results can differ in the last bits. Here the rows are cut into
//! fixed blocks, each block is folded in order on some thread, and the block results are
//! merged in block order: the same input gives the same bits on any number of threads.

use rayon::prelude::*;

/// Rows per block: large enough to amortise scheduling, small enough to balance.
pub const BLOCK: usize = 4096;

/// Folds rows `0..n` with `step` into accumulators made by `zero`, block by block in
/// parallel, and merges the blocks in order with `merge`.
pub fn ordered_fold<A: Send>(n: usize, zero: impl Fn() -> A + Sync, step: impl Fn(&mut A, usize) + Sync, merge: impl Fn(&mut A, A)) -> A {
    let blocks: Vec<A> = (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            let mut a = zero();
            for i in b * BLOCK..((b + 1) * BLOCK).min(n) {
                step(&mut a, i);
            }
            a
        })
        .collect();
    let mut total = zero();
    for b in blocks {
        merge(&mut total, b);
    }
    total
}

/// Σ f(i) for i in 0..n, deterministic.
pub fn ordered_sum(n: usize, f: impl Fn(usize) -> f64 + Sync) -> f64 {
    ordered_fold(n, || 0.0, |a, i| *a += f(i), |a, b| *a += b)
}

/// Adds `b` into `a` element by element.
pub fn add_into(a: &mut [f64], b: &[f64]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bits_every_time() {
        let v: Vec<f64> = (0..100_000).map(|i| 1.0 / (1.0 + f64::from(i)).sqrt()).collect();
        let first = ordered_sum(v.len(), |i| v[i]);
        for _ in 0..20 {
            assert_eq!(ordered_sum(v.len(), |i| v[i]).to_bits(), first.to_bits());
        }
        let seq: f64 = v.chunks(BLOCK).map(|c| c.iter().sum::<f64>()).sum();
        assert_eq!(first.to_bits(), seq.to_bits());
    }
}
