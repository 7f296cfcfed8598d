//! k-means with k-means++ seeding (Arthur & Vassilvitskii 2007), several seeded restarts
//! run in parallel, Lloyd iterations with a parallel assignment step; the silhouette
//! (Rousseeuw 1987) and the gap statistic (Tibshirani, Walther & Hastie 2001) to choose k.
//!
//! Data are row-major: `n` points of `d` features in one slice. Every restart draws
//! from its own ChaCha stream derived from the caller's seed, so results are the same
//! whatever the number of threads.

use crate::error::ModelError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::parallel::{add_into, ordered_fold, ordered_sum, BLOCK};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KMeansParams {
    pub k: usize,
    pub restarts: usize,
    pub max_iter: usize,
    /// Stop when no point changes cluster, or when the centroids' total squared movement
    /// in one iteration is at most `tol` × the mean variance of the features (the rule
    /// and default of scikit-learn's KMeans, so the two stop at comparable points).
    pub tol: f64,
    pub seed: u64,
}

impl KMeansParams {
    pub fn new(k: usize, seed: u64) -> Self {
        Self {
            k,
            restarts: 4,
            max_iter: 300,
            tol: 1e-4,
            seed,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    pub k: usize,
    pub d: usize,
    /// Row-major k × d.
    pub centroids: Vec<f64>,
    pub labels: Vec<usize>,
    pub inertia: f64,
    pub iterations: usize,
    pub converged: bool,
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn nearest(point: &[f64], centroids: &[f64], d: usize) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (j, c) in centroids.chunks_exact(d).enumerate() {
        let v = dist2(point, c);
        if v < best.1 {
            best = (j, v);
        }
    }
    best
}

fn seed_plus_plus(data: &[f64], d: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let n = data.len() / d;
    let mut centroids = Vec::with_capacity(k * d);
    let first = rng.random_range(0..n);
    centroids.extend_from_slice(&data[first * d..(first + 1) * d]);
    let mut closest: Vec<f64> = data.par_chunks_exact(d).map(|p| dist2(p, &centroids[..d])).collect();
    for _ in 1..k {
        let total: f64 = closest.iter().sum();
        let pick = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            let mut idx = n - 1;
            for (i, w) in closest.iter().enumerate() {
                if target < *w {
                    idx = i;
                    break;
                }
                target -= w;
            }
            idx
        } else {
            rng.random_range(0..n)
        };
        let c = data[pick * d..(pick + 1) * d].to_vec();
        closest
            .par_iter_mut()
            .zip(data.par_chunks_exact(d))
            .for_each(|(m, p)| *m = m.min(dist2(p, &c)));
        centroids.extend_from_slice(&c);
    }
    centroids
}

/// The nearest centroid of a point and the distances (not squared) to the nearest and
/// the second nearest.
fn two_nearest(point: &[f64], centroids: &[f64], d: usize) -> (usize, f64, f64) {
    let (mut best, mut first, mut second) = (0, f64::INFINITY, f64::INFINITY);
    for (j, c) in centroids.chunks_exact(d).enumerate() {
        let v = dist2(point, c);
        if v < first {
            second = first;
            first = v;
            best = j;
        } else if v < second {
            second = v;
        }
    }
    (best, first.sqrt(), second.sqrt())
}

/// One pass that labels the points through `visit` (which returns 1 when a label
/// changed) and, in the same sweep, sums each cluster's points block by block; the
/// blocks are merged in order, so the sums are the same bits on any number of threads.
fn sweep<F>(
    data: &[f64],
    d: usize,
    k: usize,
    labels: &mut [u32],
    upper: &mut [f64],
    lower: &mut [f64],
    visit: F,
) -> (Vec<f64>, Vec<usize>, usize)
where
    F: Fn(&mut u32, &mut f64, &mut f64, &[f64]) -> usize + Sync,
{
    let blocks: Vec<(Vec<f64>, Vec<usize>, usize)> = labels
        .par_chunks_mut(BLOCK)
        .zip(upper.par_chunks_mut(BLOCK))
        .zip(lower.par_chunks_mut(BLOCK))
        .zip(data.par_chunks(BLOCK * d))
        .map(|(((ls, us), los), ps)| {
            let (mut sums, mut counts, mut changed) = (vec![0.0; k * d], vec![0usize; k], 0);
            for (((l, u), lo), p) in ls.iter_mut().zip(us.iter_mut()).zip(los.iter_mut()).zip(ps.chunks_exact(d)) {
                changed += visit(l, u, lo, p);
                let j = *l as usize;
                counts[j] += 1;
                for (a, b) in sums[j * d..(j + 1) * d].iter_mut().zip(p) {
                    *a += b;
                }
            }
            (sums, counts, changed)
        })
        .collect();
    let (mut sums, mut counts, mut changed) = (vec![0.0; k * d], vec![0usize; k], 0);
    for (s, c, ch) in blocks {
        add_into(&mut sums, &s);
        counts.iter_mut().zip(&c).for_each(|(a, b)| *a += b);
        changed += ch;
    }
    (sums, counts, changed)
}

/// Lloyd's algorithm with Hamerly's bounds (Hamerly 2010, "Making k-means even faster"):
/// each point keeps an upper bound on the distance to its centroid and a lower bound on
/// the distance to every other; while the first is below the second (or below half the
/// distance from its centroid to the nearest other centroid) the point cannot change
/// cluster and no distance is computed. The iterations are those of plain Lloyd.
fn lloyd(data: &[f64], d: usize, mut centroids: Vec<f64>, params: &KMeansParams, tol: f64) -> KMeans {
    let k = centroids.len() / d;
    let n = data.len() / d;
    // Labels as u32 (k is small): less memory to sweep through every iteration.
    let mut labels = vec![0u32; n];
    let mut upper = vec![0.0f64; n];
    let mut lower = vec![0.0f64; n];
    let (mut sums, mut counts, _) = sweep(data, d, k, &mut labels, &mut upper, &mut lower, |l, u, lo, p| {
        let (j, a, b) = two_nearest(p, &centroids, d);
        (*l, *u, *lo) = (j as u32, a, b);
        1
    });
    let mut converged = false;
    let mut stable = false;
    let mut iterations = 0;
    let mut shift = vec![0.0f64; k];
    let mut half = vec![0.0f64; k];
    for it in 0..params.max_iter {
        iterations = it + 1;
        let moved = update_centroids(&mut centroids, &sums, &counts, d, &mut shift);
        if moved <= tol {
            converged = true;
            break;
        }
        // A point's lower bound drops by the largest shift of a centroid other than its own.
        let (big, big_j, next) = two_largest(&shift);
        half_distances(&centroids, d, &mut half);
        let changed;
        (sums, counts, changed) = sweep(data, d, k, &mut labels, &mut upper, &mut lower, |l, u, lo, p| {
            let own = *l as usize;
            *u += shift[own];
            *lo -= if own == big_j { next } else { big };
            let bound = half[own].max(*lo);
            if *u <= bound {
                return 0;
            }
            *u = dist2(p, &centroids[own * d..(own + 1) * d]).sqrt();
            if *u <= bound {
                return 0;
            }
            let (j, a, b) = two_nearest(p, &centroids, d);
            (*l, *u, *lo) = (j as u32, a, b);
            usize::from(j != own)
        });
        if changed == 0 {
            converged = true;
            stable = true;
            break;
        }
    }
    // Unless the last pass changed nothing, the centroids moved after it: label again.
    let labels: Vec<usize> = if stable {
        labels.iter().map(|l| *l as usize).collect()
    } else {
        data.par_chunks_exact(d)
            .with_min_len(BLOCK)
            .map(|p| nearest(p, &centroids, d).0)
            .collect()
    };
    let inertia = inertia_of(data, d, &centroids, &labels);
    KMeans {
        k,
        d,
        centroids,
        labels,
        inertia,
        iterations,
        converged,
    }
}

/// Moves each non-empty cluster's centroid to the mean of its points (`sums` / `counts`);
/// `shift` gets how far each moved. Returns the sum of the squared moves.
fn update_centroids(centroids: &mut [f64], sums: &[f64], counts: &[usize], d: usize, shift: &mut [f64]) -> f64 {
    let mut moved: f64 = 0.0;
    for j in 0..shift.len() {
        shift[j] = 0.0;
        if counts[j] == 0 {
            continue; // an empty cluster keeps its centroid
        }
        let new: Vec<f64> = sums[j * d..(j + 1) * d].iter().map(|s| s / counts[j] as f64).collect();
        let m = dist2(&new, &centroids[j * d..(j + 1) * d]);
        moved += m;
        shift[j] = m.sqrt();
        centroids[j * d..(j + 1) * d].copy_from_slice(&new);
    }
    moved
}

/// The largest value, its index, and the second largest.
fn two_largest(v: &[f64]) -> (f64, usize, f64) {
    let (mut big, mut big_j, mut next) = (0.0, usize::MAX, 0.0);
    for (j, x) in v.iter().enumerate() {
        if *x > big {
            next = big;
            big = *x;
            big_j = j;
        } else if *x > next {
            next = *x;
        }
    }
    (big, big_j, next)
}

/// Per centroid, half the distance to its nearest other centroid.
fn half_distances(centroids: &[f64], d: usize, half: &mut [f64]) {
    let k = half.len();
    for (j, h) in half.iter_mut().enumerate() {
        let c = &centroids[j * d..(j + 1) * d];
        *h = 0.5
            * (0..k)
                .filter(|o| *o != j)
                .map(|o| dist2(c, &centroids[o * d..(o + 1) * d]).sqrt())
                .fold(f64::INFINITY, f64::min);
    }
}

/// The sum of squared distances of the points to their centroids (summed in a fixed
/// order).
fn inertia_of(data: &[f64], d: usize, centroids: &[f64], labels: &[usize]) -> f64 {
    ordered_sum(labels.len(), |i| {
        let l = labels[i];
        dist2(&data[i * d..(i + 1) * d], &centroids[l * d..(l + 1) * d])
    })
}

/// Mean of the per-feature variances of `n × d` data.
fn mean_variance(data: &[f64], d: usize) -> f64 {
    let n = (data.len() / d) as f64;
    let (sums, squares) = ordered_fold(
        data.len() / d,
        || (vec![0.0; d], vec![0.0; d]),
        |(s, q), i| {
            for (j, v) in data[i * d..(i + 1) * d].iter().enumerate() {
                s[j] += v;
                q[j] += v * v;
            }
        },
        |(s1, q1), (s2, q2)| {
            add_into(s1, &s2);
            add_into(q1, &q2);
        },
    );
    sums.iter()
        .zip(&squares)
        .map(|(s, q)| (q / n - (s / n) * (s / n)).max(0.0))
        .sum::<f64>()
        / d as f64
}

/// Fits k-means on `n × d` row-major `data`; the best of `restarts` runs by inertia.
pub fn fit(data: &[f64], d: usize, params: &KMeansParams) -> Result<KMeans, ModelError> {
    if d == 0 || !data.len().is_multiple_of(d) {
        return Err(ModelError::InvalidInput(format!(
            "data of {} values is not a whole number of {d}-feature rows",
            data.len()
        )));
    }
    let n = data.len() / d;
    if params.k == 0 || params.k > n {
        return Err(ModelError::TooLittleData(format!(
            "k = {} needs between 1 and {n} points",
            params.k
        )));
    }
    if data.iter().any(|v| !v.is_finite()) {
        return Err(ModelError::InvalidInput("data holds a value that is not a finite number".into()));
    }
    let tol = params.tol * mean_variance(data, d);
    let runs: Vec<KMeans> = (0..params.restarts.max(1))
        .map(|r| {
            let mut rng = ChaCha8Rng::seed_from_u64(params.seed.wrapping_mul(1_000_003).wrapping_add(r as u64));
            let c = seed_plus_plus(data, d, params.k, &mut rng);
            lloyd(data, d, c, params, tol)
        })
        .collect();
    Ok(runs
        .into_iter()
        .min_by(|a, b| a.inertia.total_cmp(&b.inertia))
        .expect("at least one restart"))
}

/// Mean silhouette of a labelling over the points `sample` (indices), O(|sample| · n).
pub fn silhouette(data: &[f64], d: usize, labels: &[usize], k: usize, sample: &[usize]) -> f64 {
    let sizes = labels.iter().fold(vec![0usize; k], |mut c, l| {
        c[*l] += 1;
        c
    });
    let scores: Vec<f64> = sample
        .par_iter()
        .map(|&i| {
            let p = &data[i * d..(i + 1) * d];
            let mut sums = vec![0.0; k];
            for (j, q) in data.chunks_exact(d).enumerate() {
                sums[labels[j]] += dist2(p, q).sqrt();
            }
            let own = labels[i];
            if sizes[own] <= 1 {
                return 0.0;
            }
            let a = sums[own] / (sizes[own] - 1) as f64;
            let b = (0..k)
                .filter(|c| *c != own && sizes[*c] > 0)
                .map(|c| sums[c] / sizes[c] as f64)
                .fold(f64::INFINITY, f64::min);
            if !b.is_finite() {
                return 0.0;
            }
            (b - a) / a.max(b).max(f64::MIN_POSITIVE)
        })
        .collect();
    scores.iter().sum::<f64>() / scores.len().max(1) as f64
}

/// The gap statistic at one k: how much tighter the data's k clusters are than those of
/// data with no cluster structure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GapStat {
    pub k: usize,
    /// log W_k, W_k the within-cluster sum of squares of the data.
    pub log_w: f64,
    /// E*[log W_k] − log W_k over the reference draws.
    pub gap: f64,
    /// The standard error of the reference mean, sd · sqrt(1 + 1/B).
    pub s: f64,
}

/// The gap statistic (Tibshirani, Walther & Hastie 2001) for k = 1..=k_max: reference
/// data drawn uniformly over the box aligned with the data's principal components
/// (their method b), `references` draws, each clustered like the data. Deterministic
/// in `seed`.
pub fn gap_statistic(data: &[f64], d: usize, k_max: usize, references: usize, seed: u64) -> Result<Vec<GapStat>, ModelError> {
    if d == 0 || !data.len().is_multiple_of(d) || data.len() / d < k_max.max(2) {
        return Err(ModelError::TooLittleData(format!(
            "the gap statistic up to k = {k_max} needs at least {k_max} points of {d} features"
        )));
    }
    let n = data.len() / d;
    let params = |k: usize, s: u64| KMeansParams {
        restarts: 2,
        ..KMeansParams::new(k, s)
    };
    let log_w =
        |x: &[f64], k: usize, s: u64| -> Result<f64, ModelError> { Ok(fit(x, d, &params(k, s))?.inertia.max(f64::MIN_POSITIVE).ln()) };
    // Principal axes of the centred data.
    let mut mean = vec![0.0; d];
    for row in data.chunks_exact(d) {
        add_into(&mut mean, row);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0.0; d * d];
    for row in data.chunks_exact(d) {
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] += (row[i] - mean[i]) * (row[j] - mean[j]) / n as f64;
            }
        }
    }
    let (_, v) = crate::linalg::symmetric_eigen(&cov, d);
    // The box of the data in principal coordinates.
    let (mut lo, mut hi) = (vec![f64::INFINITY; d], vec![f64::NEG_INFINITY; d]);
    for row in data.chunks_exact(d) {
        for c in 0..d {
            let z: f64 = (0..d).map(|i| (row[i] - mean[i]) * v[i * d + c]).sum();
            lo[c] = lo[c].min(z);
            hi[c] = hi[c].max(z);
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0067_6170_7374_6174);
    let draws: Vec<Vec<f64>> = (0..references.max(2))
        .map(|_| {
            let mut x = Vec::with_capacity(n * d);
            let mut z = vec![0.0; d];
            for _ in 0..n {
                for c in 0..d {
                    z[c] = lo[c] + rng.random::<f64>() * (hi[c] - lo[c]);
                }
                x.extend((0..d).map(|i| mean[i] + (0..d).map(|c| v[i * d + c] * z[c]).sum::<f64>()));
            }
            x
        })
        .collect();
    (1..=k_max)
        .map(|k| {
            let lw = log_w(data, k, seed)?;
            let refs = draws
                .iter()
                .enumerate()
                .map(|(b, x)| log_w(x, k, seed.wrapping_add(1 + b as u64)))
                .collect::<Result<Vec<f64>, ModelError>>()?;
            let b = refs.len() as f64;
            let m = refs.iter().sum::<f64>() / b;
            let sd = (refs.iter().map(|r| (r - m).powi(2)).sum::<f64>() / b).sqrt();
            Ok(GapStat {
                k,
                log_w: lw,
                gap: m - lw,
                s: sd * (1.0 + 1.0 / b).sqrt(),
            })
        })
        .collect()
}

/// The k the gap statistic supports: those k in `stats` (but the last) with
/// Gap(k) ≥ Gap(k+1) − s(k+1), Tibshirani's rule; the first of them is the
/// paper's estimate.
pub fn gap_supported(stats: &[GapStat]) -> Vec<usize> {
    stats.windows(2).filter(|w| w[0].gap >= w[1].gap - w[1].s).map(|w| w[0].k).collect()
}

/// A deterministic sample of at most `m` indices out of `n`.
pub fn sample_indices(n: usize, m: usize, seed: u64) -> Vec<usize> {
    if n <= m {
        return (0..n).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..m {
        let j = rng.random_range(i..n);
        idx.swap(i, j);
    }
    let mut s = idx[..m].to_vec();
    s.sort_unstable();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per cluster the sum of its points and their count: the plain computation the
    /// fused sweep must agree with.
    fn cluster_sums(data: &[f64], d: usize, k: usize, labels: &[usize]) -> (Vec<f64>, Vec<usize>) {
        ordered_fold(
            labels.len(),
            || (vec![0.0; k * d], vec![0usize; k]),
            |(s, c), i| {
                let l = labels[i];
                c[l] += 1;
                for (a, b) in s[l * d..(l + 1) * d].iter_mut().zip(&data[i * d..(i + 1) * d]) {
                    *a += b;
                }
            },
            |(s1, c1), (s2, c2)| {
                add_into(s1, &s2);
                c1.iter_mut().zip(&c2).for_each(|(a, b)| *a += b);
            },
        )
    }

    fn blobs(seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let centers = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)];
        let mut v = Vec::new();
        for i in 0..600 {
            let (cx, cy) = centers[i % 3];
            v.push(cx + rng.random::<f64>() - 0.5);
            v.push(cy + rng.random::<f64>() - 0.5);
        }
        v
    }

    #[test]
    fn finds_well_separated_blobs_and_prefers_the_true_k() {
        let data = blobs(1);
        let sample = sample_indices(600, 300, 2);
        let mut best = (0, f64::NEG_INFINITY);
        for k in 2..=6 {
            let m = fit(&data, 2, &KMeansParams::new(k, 7)).unwrap();
            let s = silhouette(&data, 2, &m.labels, k, &sample);
            if s > best.1 {
                best = (k, s);
            }
        }
        assert_eq!(best.0, 3);
        assert!(best.1 > 0.8);
        let m = fit(&data, 2, &KMeansParams::new(3, 7)).unwrap();
        assert!(m.converged);
        for i in (0..600).step_by(3) {
            assert_eq!(m.labels[i], m.labels[0]);
        }
    }

    #[test]
    fn the_gap_statistic_finds_three_blobs_and_no_structure_in_noise() {
        let data = blobs(1);
        let stats = gap_statistic(&data, 2, 6, 8, 3).unwrap();
        assert_eq!(gap_supported(&stats).first(), Some(&3), "{stats:?}");
        // One uniform cloud: k = 1 is supported, so there is nothing to find.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let noise: Vec<f64> = (0..1200).map(|_| rng.random::<f64>() * 4.0).collect();
        let stats = gap_statistic(&noise, 2, 6, 8, 3).unwrap();
        assert_eq!(gap_supported(&stats).first(), Some(&1), "{stats:?}");
        // Deterministic in the seed.
        assert_eq!(
            gap_statistic(&noise, 2, 4, 4, 9).unwrap(),
            gap_statistic(&noise, 2, 4, 4, 9).unwrap()
        );
    }

    /// Hamerly's bounds only skip work: the iterations are those of plain Lloyd.
    #[test]
    fn bounds_give_the_plain_lloyd_result() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (n, d, k) = (3000, 3, 6);
        let data: Vec<f64> = (0..n * d)
            .map(|i| rng.random::<f64>() * if i % d == 0 { 4.0 } else { 1.0 })
            .collect();
        let params = KMeansParams {
            tol: 0.0,
            ..KMeansParams::new(k, 9)
        };
        let mut seed_rng = ChaCha8Rng::seed_from_u64(1);
        let start = seed_plus_plus(&data, d, k, &mut seed_rng);
        let fast = lloyd(&data, d, start.clone(), &params, 0.0);
        // Plain Lloyd: assign every point, move every centroid, until nothing changes.
        let mut c = start;
        let mut labels = vec![usize::MAX; n];
        loop {
            let new: Vec<usize> = data.chunks_exact(d).map(|p| nearest(p, &c, d).0).collect();
            if new == labels {
                break;
            }
            labels = new;
            let (sums, counts) = cluster_sums(&data, d, k, &labels);
            for j in 0..k {
                if counts[j] > 0 {
                    for f in 0..d {
                        c[j * d + f] = sums[j * d + f] / counts[j] as f64;
                    }
                }
            }
        }
        assert!(fast.converged);
        assert_eq!(fast.labels, labels);
        assert!(fast.centroids.iter().zip(&c).all(|(a, b)| (a - b).abs() < 1e-12));
    }

    #[test]
    fn same_seed_same_result() {
        let data = blobs(3);
        assert_eq!(
            fit(&data, 2, &KMeansParams::new(4, 11)).unwrap(),
            fit(&data, 2, &KMeansParams::new(4, 11)).unwrap()
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(fit(&[1.0, 2.0, 3.0], 2, &KMeansParams::new(1, 0)).is_err());
        assert!(fit(&[1.0, 2.0], 2, &KMeansParams::new(2, 0)).is_err());
        assert!(fit(&[f64::NAN, 2.0], 2, &KMeansParams::new(1, 0)).is_err());
        let same = vec![1.0; 20];
        let m = fit(&same, 2, &KMeansParams::new(3, 0)).unwrap();
        assert_eq!(m.inertia, 0.0);
    }
}
