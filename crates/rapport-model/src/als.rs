//! Implicit-feedback matrix factorisation: alternating least squares after Hu, Koren and
//! Volinsky (2008), "Collaborative Filtering for Implicit Feedback Datasets", with the
//! conjugate-gradient inner solver of Takács, Pilászy and Tikk (2011).
//!
//! Every (customer, item) pair is a preference p = 1 if bought, else 0, held with
//! confidence c = 1 + α·r (r = how often). With the item factors Y fixed, a customer's
//! factors x solve
//!
//! ```text
//! (YᵀY + Yᵀ(Cᵤ − I)Y + λI) x = Yᵀ Cᵤ p(u)
//! ```
//!
//! where YᵀY is shared by all customers, so each solve only touches the items the
//! customer bought. A few conjugate-gradient steps from the previous x replace the exact
//! solve (cost O(f² + nᵤ·f) per step instead of O(f³ + nᵤ·f²)). Items are updated the same
//! way with the roles swapped. Customers (and items) are solved in parallel; each solve
//! reads only the other side's factors, so results do not depend on the thread count.
//! A new customer is folded in by one exact solve against the fitted item factors.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BinaryHeap;

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

use crate::linalg::solve_spd;
use crate::recs::Baskets;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlsConfig {
    pub factors: usize,
    pub iterations: usize,
    /// λ, the ridge on the factors.
    pub regularization: f32,
    /// α, the confidence weight of a purchase count.
    pub alpha: f32,
    /// Conjugate-gradient steps per solve.
    pub cg_steps: usize,
    pub seed: u64,
}

impl Default for AlsConfig {
    fn default() -> Self {
        Self {
            factors: 64,
            iterations: 15,
            regularization: 1.0,
            alpha: 1.0,
            cg_steps: 3,
            seed: 42,
        }
    }
}

/// The fitted factors, row-major (`factors` numbers per customer and per item).
#[derive(Debug, Clone, PartialEq)]
pub struct Als {
    pub factors: usize,
    pub user: Vec<f32>,
    pub item: Vec<f32>,
    pub regularization: f32,
    pub alpha: f32,
    /// YᵀY of the final item factors, kept for fold-in (f × f).
    item_gram: Vec<f32>,
}

/// Rows of a sparse matrix: per row, (column, value).
type Rows = Vec<Vec<(u32, f32)>>;

fn transpose(rows: &[Vec<(u32, f32)>], n_cols: usize) -> Rows {
    let mut out: Rows = vec![Vec::new(); n_cols];
    for (r, row) in rows.iter().enumerate() {
        for &(c, v) in row {
            out[c as usize].push((r as u32, v));
        }
    }
    out
}

/// Σ yᵢ yᵢᵀ over the rows of `y` (f × f, row-major): the upper triangle summed in f32
/// within fixed blocks of rows, the blocks added in order in f64, then mirrored.
fn gram(y: &[f32], f: usize) -> Vec<f32> {
    let n = y.len() / f;
    const ROWS: usize = 2048;
    let blocks: Vec<Vec<f32>> = (0..n.div_ceil(ROWS))
        .into_par_iter()
        .map(|b| {
            let mut g = vec![0.0f32; f * f];
            for i in b * ROWS..((b + 1) * ROWS).min(n) {
                let v = &y[i * f..(i + 1) * f];
                for a in 0..f {
                    let va = v[a];
                    for (gc, vc) in g[a * f + a..(a + 1) * f].iter_mut().zip(&v[a..]) {
                        *gc += va * vc;
                    }
                }
            }
            g
        })
        .collect();
    let mut g = vec![0.0f64; f * f];
    for b in blocks {
        for (x, y) in g.iter_mut().zip(b) {
            *x += f64::from(y);
        }
    }
    for a in 0..f {
        for c in 0..a {
            g[a * f + c] = g[c * f + a];
        }
    }
    g.into_iter().map(|x| x as f32).collect()
}

/// Dot product in eight independent lanes (a fixed order, so the same result on every
/// run, and one the compiler can keep in SIMD registers; a single running sum cannot be
/// vectorised because float addition is not reassociated).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7])) + tail
}

/// One side's normal equations: the other side's factors `y` (f per row), their Gram
/// matrix `g`, α and λ.
struct System<'a> {
    g: Vec<f32>,
    y: &'a [f32],
    f: usize,
    alpha: f32,
    lambda: f32,
}

impl System<'_> {
    /// (G + λI)·v, the part of A·v every row shares.
    fn apply_shared(&self, v: &[f32], out: &mut [f32]) {
        let f = self.f;
        for a in 0..f {
            out[a] = dot(&self.g[a * f..(a + 1) * f], v) + self.lambda * v[a];
        }
    }

    /// A·v for A = G + Σ (c−1) yᵢyᵢᵀ + λI over the row's items.
    fn apply(&self, row: &[(u32, f32)], v: &[f32], out: &mut [f32]) {
        let f = self.f;
        self.apply_shared(v, out);
        for &(i, r) in row {
            let yi = &self.y[i as usize * f..(i as usize + 1) * f];
            let w = self.alpha * r * dot(yi, v);
            for a in 0..f {
                out[a] += w * yi[a];
            }
        }
    }

    /// A few conjugate-gradient steps on one row's system, from `x`; `scratch` holds
    /// three vectors of f (reused across rows to spare allocations).
    fn cg_solve(&self, row: &[(u32, f32)], steps: usize, x: &mut [f32], scratch: &mut [f32]) {
        let f = self.f;
        let (r, rest) = scratch.split_at_mut(f);
        let (p, ap) = rest.split_at_mut(f);
        let ap = &mut ap[..f];
        // r = b − A x with b = Σ cᵢ yᵢ (p = 1 on the row's items): −(G + λI) x, then
        // one pass over the row's items for both b and their part of A x,
        // Σ [cᵢ − (cᵢ − 1) yᵢ·x] yᵢ.
        self.apply_shared(x, r);
        r.iter_mut().for_each(|v| *v = -*v);
        for &(i, v) in row {
            let c = 1.0 + self.alpha * v;
            let yi = &self.y[i as usize * f..(i as usize + 1) * f];
            let w = c - (c - 1.0) * dot(yi, x);
            for a in 0..f {
                r[a] += w * yi[a];
            }
        }
        p.copy_from_slice(r);
        let mut rs = dot(r, r);
        for _ in 0..steps {
            if rs < 1e-20 {
                break;
            }
            self.apply(row, p, ap);
            let pap = dot(p, ap);
            if pap <= 0.0 || !pap.is_finite() {
                break;
            }
            let step = rs / pap;
            for a in 0..f {
                x[a] += step * p[a];
                r[a] -= step * ap[a];
            }
            let next = dot(r, r);
            let beta = next / rs;
            for a in 0..f {
                p[a] = r[a] + beta * p[a];
            }
            rs = next;
        }
    }
}

fn half_step(x: &mut [f32], y: &[f32], rows: &[Vec<(u32, f32)>], cfg: &AlsConfig) {
    let f = cfg.factors;
    let sys = System {
        g: gram(y, f),
        y,
        f,
        alpha: cfg.alpha,
        lambda: cfg.regularization,
    };
    x.par_chunks_mut(f).zip(rows.par_iter()).with_min_len(128).for_each_init(
        || vec![0.0f32; 3 * f],
        |scratch, (xu, row)| {
            sys.cg_solve(row, cfg.cg_steps, xu, scratch);
        },
    );
}

impl Als {
    /// Fits factors to `baskets` (per customer, (item, count)); items are below `n_items`.
    pub fn fit(baskets: &Baskets, n_items: usize, cfg: &AlsConfig) -> Self {
        let f = cfg.factors.max(1);
        let cfg = AlsConfig { factors: f, ..*cfg };
        let users: Rows = baskets
            .iter()
            .map(|b| b.iter().filter(|x| x.1 > 0.0).map(|&(i, c)| (i, c as f32)).collect())
            .collect();
        let items = transpose(&users, n_items);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let scale = 0.01 / (f as f32).sqrt();
        let mut user: Vec<f32> = (0..users.len() * f).map(|_| rng.random::<f32>() * scale).collect();
        let mut item: Vec<f32> = (0..n_items * f).map(|_| rng.random::<f32>() * scale).collect();
        for _ in 0..cfg.iterations {
            half_step(&mut user, &item, &users, &cfg);
            half_step(&mut item, &user, &items, &cfg);
        }
        Als {
            factors: f,
            item_gram: gram(&item, f),
            user,
            item,
            regularization: cfg.regularization,
            alpha: cfg.alpha,
        }
    }

    /// A model for fold-in only, from stored item factors (row-major, `factors` per
    /// item) and the settings they were fitted with; YᵀY is computed here.
    pub fn from_item_factors(item: Vec<f32>, factors: usize, regularization: f32, alpha: f32) -> Self {
        let f = factors.max(1);
        Als {
            factors: f,
            item_gram: gram(&item, f),
            user: Vec::new(),
            item,
            regularization,
            alpha,
        }
    }

    pub fn user_vector(&self, u: usize) -> &[f32] {
        &self.user[u * self.factors..(u + 1) * self.factors]
    }

    /// Factors of a customer who was not in the fit, by one exact solve against the
    /// item factors (no retraining; YᵀY is computed once, at the end of the fit).
    pub fn fold_in(&self, basket: &[(u32, f64)]) -> Vec<f32> {
        let f = self.factors;
        let mut a: Vec<f64> = self.item_gram.iter().map(|&x| f64::from(x)).collect();
        let mut b = vec![0.0f64; f];
        for k in 0..f {
            a[k * f + k] += f64::from(self.regularization);
        }
        for &(i, c) in basket {
            if c <= 0.0 || i as usize * f >= self.item.len() {
                continue;
            }
            let yi = &self.item[i as usize * f..(i as usize + 1) * f];
            let w = f64::from(self.alpha) * c;
            for p in 0..f {
                b[p] += (1.0 + w) * f64::from(yi[p]);
                for q in 0..f {
                    a[p * f + q] += w * f64::from(yi[p]) * f64::from(yi[q]);
                }
            }
        }
        solve_spd(&a, f, &b).into_iter().map(|x| x as f32).collect()
    }

    /// The `n` best items for a customer with factors `x`, leaving out `exclude`.
    pub fn recommend(&self, x: &[f32], n: usize, exclude: &[(u32, f64)]) -> Vec<(u32, f64)> {
        self.recommend_many(x, n, &[exclude]).pop().unwrap_or_default()
    }

    /// The `n` best items for each customer of `xs` (row-major, `factors` per customer),
    /// leaving out `excludes[c]` for customer `c`, best first (ties by item id). The
    /// customers are scored in blocks, a matrix product against all item factors per
    /// block: the item factors (tens of MB for a large catalogue) pass through the cache
    /// once per block instead of once per customer. Each score is the same dot product
    /// whatever the block, so a customer's list does not depend on who is scored with it.
    pub fn recommend_many(&self, xs: &[f32], n: usize, excludes: &[&[(u32, f64)]]) -> Vec<Vec<(u32, f64)>> {
        let f = self.factors;
        let n_items = self.item.len() / f;
        let users = excludes.len();
        assert_eq!(xs.len(), users * f, "one factor vector per exclusion list");
        if n == 0 || n_items == 0 {
            return vec![Vec::new(); users];
        }
        let items = ArrayView2::from_shape((n_items, f), &self.item[..n_items * f]).expect("item factors are n_items × f");
        // A block's scores stay within a few MB whatever the catalogue.
        let block = (SCORE_BUFFER / n_items).clamp(1, SCORE_BLOCK);
        let mut scores = Array2::<f32>::zeros((block.min(users), n_items));
        let mut out = Vec::with_capacity(users);
        for (xb, eb) in xs.chunks(block * f).zip(excludes.chunks(block)) {
            let m = eb.len();
            let x = ArrayView2::from_shape((m, f), xb).expect("m × f");
            let (mut s, _) = scores.view_mut().split_at(Axis(0), m);
            general_mat_mul(1.0, &x, &items.t(), 0.0, &mut s);
            for (row, exclude) in s.rows().into_iter().zip(eb) {
                out.push(top_scores(
                    row.as_slice().expect("rows of a standard-layout array are contiguous"),
                    n,
                    exclude,
                ));
            }
        }
        out
    }
}

/// Customers scored together (rows of one matrix product).
const SCORE_BLOCK: usize = 64;
/// Scores held per block (f32s): 16 MB.
const SCORE_BUFFER: usize = 4 << 20;

/// A candidate in the bounded heap of [`top_scores`]: "greater" is worse (a lower score,
/// or the same score and a higher item id), so the heap's top is the one to drop.
#[derive(Debug, Clone, Copy)]
struct Worse(f32, u32);

impl PartialEq for Worse {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Worse {}
impl PartialOrd for Worse {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worse {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

/// The `n` highest of `scores` (item id = position) outside `exclude`, best first, ties
/// by item id: a heap of the `n` best so far whose worst score is a floor, so most items
/// cost one comparison; the excluded items are stepped over as gaps between runs.
fn top_scores(scores: &[f32], n: usize, exclude: &[(u32, f64)]) -> Vec<(u32, f64)> {
    let mut skip: Vec<usize> = exclude.iter().map(|e| e.0 as usize).filter(|&i| i < scores.len()).collect();
    skip.sort_unstable();
    skip.dedup();
    let mut heap: BinaryHeap<Worse> = BinaryHeap::with_capacity(n + 1);
    // Below the worst kept score an item cannot enter (NaN and ties take the full order).
    let mut floor = f32::NEG_INFINITY;
    let mut from = 0;
    for end in skip.into_iter().chain(std::iter::once(scores.len())) {
        for (i, &v) in scores[from..end].iter().enumerate() {
            if v < floor {
                continue;
            }
            let c = Worse(v, (from + i) as u32);
            if heap.len() < n {
                heap.push(c);
            } else if let Some(mut worst) = heap.peek_mut() {
                if c < *worst {
                    *worst = c;
                }
            }
            if heap.len() == n {
                floor = heap.peek().map_or(f32::NEG_INFINITY, |w| w.0);
            }
        }
        from = end + 1;
    }
    let mut best = heap.into_vec();
    best.sort_unstable();
    // Callers keep the lists of many customers: capacity for n items only.
    let mut out = Vec::with_capacity(best.len());
    out.extend(best.into_iter().map(|Worse(v, i)| (i, f64::from(v))));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two groups of customers buying from two disjoint sets of items.
    fn two_blocks() -> Vec<Vec<(u32, f64)>> {
        (0..200)
            .map(|u| {
                let base = if u % 2 == 0 { 0 } else { 10 };
                (0..10)
                    .filter(|i| (u * 7 + i * 13 + u * i) % 10 < 6)
                    .map(|i| ((base + i) as u32, 1.0 + (i % 2) as f64))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn recovers_the_blocks_and_is_deterministic() {
        let b = two_blocks();
        let cfg = AlsConfig {
            factors: 2,
            iterations: 10,
            ..AlsConfig::default()
        };
        let m = Als::fit(&b, 20, &cfg);
        for u in [0usize, 1, 2, 3] {
            let recs = m.recommend(m.user_vector(u), 2, &b[u]);
            let own = if u % 2 == 0 { 0..10 } else { 10..20 };
            assert!(recs.iter().all(|r| own.contains(&r.0)), "{u}: {recs:?}");
            assert!(recs.iter().all(|r| !b[u].iter().any(|x| x.0 == r.0)));
            // Lists are kept for every customer: one holds its n items, not the catalogue.
            assert!(recs.capacity() <= 2, "{}", recs.capacity());
        }
        assert_eq!(m, Als::fit(&b, 20, &cfg));
        assert!(m.user.iter().chain(&m.item).all(|v| v.is_finite()));
    }

    #[test]
    fn fold_in_matches_the_group() {
        let b = two_blocks();
        let m = Als::fit(
            &b,
            20,
            &AlsConfig {
                factors: 2,
                ..AlsConfig::default()
            },
        );
        let new = vec![(11u32, 2.0), (12, 1.0), (14, 1.0)];
        let x = m.fold_in(&new);
        let recs = m.recommend(&x, 3, &new);
        assert!(recs.iter().all(|r| (10..20).contains(&r.0)), "{recs:?}");
        // A customer with nothing gets finite (near-zero) factors.
        assert!(m.fold_in(&[]).iter().all(|v| v.is_finite()));
        // Stored item factors fold in exactly as the fitted model does.
        let stored = Als::from_item_factors(m.item.clone(), m.factors, m.regularization, m.alpha);
        assert_eq!(stored.fold_in(&new), x);
        assert_eq!(stored.recommend(&x, 3, &new), recs);
    }

    #[test]
    fn many_customers_at_once_get_the_lists_each_would_get_alone() {
        let f = 8;
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let items: Vec<f32> = (0..300 * f).map(|_| rng.random::<f32>() - 0.5).collect();
        let m = Als::from_item_factors(items, f, 1.0, 1.0);
        // More customers than one block holds.
        let users = 2 * SCORE_BLOCK + 22;
        let xs: Vec<f32> = (0..users * f).map(|_| rng.random::<f32>() - 0.5).collect();
        let excl: Vec<Vec<(u32, f64)>> = (0..users)
            .map(|u| (0..u % 5).map(|j| (((u * 7 + j * 13) % 300) as u32, 1.0)).collect())
            .collect();
        let refs: Vec<&[(u32, f64)]> = excl.iter().map(Vec::as_slice).collect();
        let many = m.recommend_many(&xs, 10, &refs);
        assert_eq!(many.len(), users);
        for u in 0..users {
            let x = &xs[u * f..(u + 1) * f];
            assert_eq!(many[u], m.recommend(x, 10, &excl[u]), "customer {u}");
            // Against scoring every item one by one and sorting.
            let mut all: Vec<(u32, f64)> = (0..300u32)
                .filter(|i| !excl[u].iter().any(|e| e.0 == *i))
                .map(|i| (i, f64::from(dot(x, &m.item[i as usize * f..(i as usize + 1) * f]))))
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            assert!(many[u].iter().all(|r| !excl[u].iter().any(|e| e.0 == r.0)));
            assert!(many[u].windows(2).all(|w| w[0].1 >= w[1].1));
            for (got, want) in many[u].iter().zip(&all) {
                assert!((got.1 - want.1).abs() < 1e-5, "customer {u}: {got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn top_scores_break_ties_by_item_and_skip_the_excluded() {
        let scores = [1.0f32, 3.0, 3.0, 2.0, 3.0, f32::NEG_INFINITY];
        assert_eq!(top_scores(&scores, 3, &[(2, 1.0)]), vec![(1, 3.0), (4, 3.0), (3, 2.0)]);
        assert_eq!(top_scores(&scores, 10, &[(4, 1.0), (1, 1.0), (9, 1.0)]).len(), 4);
        assert!(top_scores(&scores, 0, &[]).is_empty());
        let all = top_scores(&scores, 10, &[]);
        assert_eq!(all.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2, 4, 3, 0, 5]);
        assert!(all.capacity() <= 6);
        // Against sorting everything, on scores with many ties.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for round in 0..200 {
            let len = 1 + round % 97;
            let scores: Vec<f32> = (0..len).map(|_| (rng.random::<f32>() * 8.0).floor() - 4.0).collect();
            let exclude: Vec<(u32, f64)> = (0..round % 7).map(|_| (rng.random_range(0..len as u32 + 3), 1.0)).collect();
            let n = round % 13;
            let mut want: Vec<(u32, f64)> = (0..len as u32)
                .filter(|i| !exclude.iter().any(|e| e.0 == *i))
                .map(|i| (i, f64::from(scores[i as usize])))
                .collect();
            want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            want.truncate(n);
            assert_eq!(top_scores(&scores, n, &exclude), want, "round {round}");
        }
    }

    #[test]
    fn empty_inputs() {
        let m = Als::fit(&[], 5, &AlsConfig::default());
        assert!(m.user.is_empty());
        assert!(m.recommend(&vec![0.0; 64], 3, &[]).len() == 3);
    }
}
