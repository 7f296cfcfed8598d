//! Gradient-boosted decision trees for binary classification (logistic loss), on
//! histogram-binned features: each feature is cut at up to 63 quantiles once, so a split
//! search scans bins instead of sorted values. Trees grow depth-wise; leaf values are
//! Newton steps with L2 shrinkage; rows are subsampled per tree with a seeded generator;
//! with a validation set, boosting keeps the number of trees that scored best on it.
//! Missing values (NaN) fall in the lowest bin, left of every split.

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::metrics::log_loss;

#[derive(Debug, Clone, PartialEq)]
pub struct GbtParams {
    pub trees: usize,
    pub depth: usize,
    pub learning_rate: f64,
    pub l2: f64,
    /// Least sum of hessians (≈ rows × p(1-p)) in a leaf.
    pub min_hessian: f64,
    /// Share of rows each tree sees.
    pub subsample: f64,
    /// Stop after this many trees without improvement on the validation set.
    pub patience: usize,
    pub seed: u64,
}

impl Default for GbtParams {
    fn default() -> Self {
        Self {
            trees: 400,
            depth: 3,
            learning_rate: 0.05,
            l2: 1.0,
            min_hessian: 1.0,
            subsample: 0.8,
            patience: 50,
            seed: 42,
        }
    }
}

const MAX_BINS: usize = 64;

/// Cut points per feature.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Binner {
    cuts: Vec<Vec<f64>>,
}

impl Binner {
    fn fit(x: &[f64], d: usize) -> Self {
        let n = x.len() / d.max(1);
        let rows: Vec<usize> = if n > 50_000 {
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let mut s = sample(&mut rng, n, 50_000).into_vec();
            s.sort_unstable();
            s
        } else {
            (0..n).collect()
        };
        let cuts = (0..d)
            .map(|j| {
                let mut v: Vec<f64> = rows.iter().map(|&i| x[i * d + j]).filter(|v| !v.is_nan()).collect();
                v.sort_by(f64::total_cmp);
                v.dedup();
                if v.len() < MAX_BINS {
                    v.pop();
                    v
                } else {
                    let mut c: Vec<f64> = (1..MAX_BINS - 1).map(|q| v[q * (v.len() - 1) / (MAX_BINS - 1)]).collect();
                    c.dedup();
                    c
                }
            })
            .collect();
        Binner { cuts }
    }

    /// Bin of a value: 0 for NaN, else 1 + the number of cuts below it.
    fn bin(&self, j: usize, v: f64) -> u8 {
        if v.is_nan() {
            0
        } else {
            (1 + self.cuts[j].partition_point(|c| *c < v)) as u8
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
enum Node {
    /// Rows with bin ≤ `bin` go left.
    Split {
        feature: usize,
        bin: u8,
        left: usize,
        right: usize,
    },
    Leaf(f64),
}

/// A fitted booster.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Gbt {
    binner: Binner,
    base: f64,
    trees: Vec<Vec<Node>>,
    pub d: usize,
    /// Trees kept (the best count on the validation set, if one was given).
    pub best_trees: usize,
    pub best_validation_loss: Option<f64>,
}

struct Grown {
    nodes: Vec<Node>,
}

fn leaf(g: f64, h: f64, l2: f64, lr: f64) -> f64 {
    -g / (h + l2) * lr
}

fn grow(binned: &[u8], n: usize, d: usize, grad: &[f64], hess: &[f64], rows: Vec<u32>, p: &GbtParams) -> Grown {
    let mut nodes = vec![Node::Leaf(0.0)];
    // (node index, rows, depth)
    let mut frontier = vec![(0usize, rows, 0usize)];
    while let Some((id, rows, depth)) = frontier.pop() {
        let (gs, hs) = rows
            .iter()
            .fold((0.0, 0.0), |(g, h), &i| (g + grad[i as usize], h + hess[i as usize]));
        let score = |g: f64, h: f64| g * g / (h + p.l2);
        let mut best: Option<(f64, usize, u8)> = None;
        if depth < p.depth && rows.len() >= 2 {
            let found = (0..d)
                .into_par_iter()
                .filter_map(|j| {
                    let col = &binned[j * n..(j + 1) * n];
                    let mut hg = [0.0; MAX_BINS + 1];
                    let mut hh = [0.0; MAX_BINS + 1];
                    for &i in &rows {
                        let b = col[i as usize] as usize;
                        hg[b] += grad[i as usize];
                        hh[b] += hess[i as usize];
                    }
                    let (mut gl, mut hl) = (0.0, 0.0);
                    let mut local: Option<(f64, usize, u8)> = None;
                    for b in 0..MAX_BINS {
                        gl += hg[b];
                        hl += hh[b];
                        let (gr, hr) = (gs - gl, hs - hl);
                        if hl < p.min_hessian || hr < p.min_hessian {
                            continue;
                        }
                        let gain = score(gl, hl) + score(gr, hr) - score(gs, hs);
                        if gain > 1e-9 && local.is_none_or(|(bg, _, _)| gain > bg) {
                            local = Some((gain, j, b as u8));
                        }
                    }
                    local
                })
                .collect::<Vec<_>>();
            // Deterministic choice: highest gain, then lowest feature.
            for f in found {
                if best.is_none_or(|(bg, bj, _)| f.0 > bg || (f.0 == bg && f.1 < bj)) {
                    best = Some(f);
                }
            }
        }
        match best {
            Some((_, j, b)) => {
                let col = &binned[j * n..(j + 1) * n];
                let (l, r): (Vec<u32>, Vec<u32>) = rows.iter().partition(|&&i| col[i as usize] <= b);
                let left = nodes.len();
                nodes.push(Node::Leaf(0.0));
                nodes.push(Node::Leaf(0.0));
                nodes[id] = Node::Split {
                    feature: j,
                    bin: b,
                    left,
                    right: left + 1,
                };
                frontier.push((left, l, depth + 1));
                frontier.push((left + 1, r, depth + 1));
            }
            None => nodes[id] = Node::Leaf(leaf(gs, hs, p.l2, p.learning_rate)),
        }
    }
    Grown { nodes }
}

fn tree_value(nodes: &[Node], bin_of: impl Fn(usize) -> u8) -> f64 {
    let mut k = 0;
    loop {
        match nodes[k] {
            Node::Leaf(v) => return v,
            Node::Split { feature, bin, left, right } => k = if bin_of(feature) <= bin { left } else { right },
        }
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Gbt {
    /// Fits on `x` (row-major, `d` columns) and labels `y`; with `valid`, keeps the number
    /// of trees with the lowest validation log-loss.
    pub fn fit(x: &[f64], d: usize, y: &[bool], valid: Option<(&[f64], &[bool])>, p: &GbtParams) -> Self {
        let n = y.len();
        let binner = Binner::fit(x, d);
        let mut binned = vec![0u8; n * d];
        binned.par_chunks_mut(n.max(1)).enumerate().for_each(|(j, col)| {
            for (i, b) in col.iter_mut().enumerate() {
                *b = binner.bin(j, x[i * d + j]);
            }
        });
        let pos = y.iter().filter(|&&v| v).count() as f64;
        let rate = ((pos + 0.5) / (n as f64 + 1.0)).clamp(1e-6, 1.0 - 1e-6);
        let base = (rate / (1.0 - rate)).ln();
        let mut margin = vec![base; n];
        let valid_bins: Option<(Vec<u8>, &[bool])> = valid.map(|(vx, vy)| {
            let m = vy.len();
            let mut b = vec![0u8; m * d];
            for i in 0..m {
                for j in 0..d {
                    b[i * d + j] = binner.bin(j, vx[i * d + j]);
                }
            }
            (b, vy)
        });
        let mut valid_margin = valid_bins.as_ref().map(|(_, vy)| vec![base; vy.len()]);
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let mut trees = Vec::new();
        let mut best = (f64::INFINITY, 0usize);
        let take = ((n as f64 * p.subsample).round() as usize).clamp(1, n.max(1));
        for t in 0..p.trees {
            let (grad, hess): (Vec<f64>, Vec<f64>) = margin
                .iter()
                .zip(y)
                .map(|(&m, &yi)| {
                    let q = sigmoid(m);
                    (q - f64::from(u8::from(yi)), (q * (1.0 - q)).max(1e-12))
                })
                .unzip();
            let mut rows: Vec<u32> = if take < n {
                sample(&mut rng, n, take).into_iter().map(|i| i as u32).collect()
            } else {
                (0..n as u32).collect()
            };
            rows.sort_unstable();
            let tree = grow(&binned, n, d, &grad, &hess, rows, p).nodes;
            margin.par_iter_mut().enumerate().for_each(|(i, m)| {
                *m += tree_value(&tree, |j| binned[j * n + i]);
            });
            trees.push(tree);
            if let (Some((vb, vy)), Some(vm)) = (&valid_bins, valid_margin.as_mut()) {
                for (i, m) in vm.iter_mut().enumerate() {
                    *m += tree_value(trees.last().expect("pushed"), |j| vb[i * d + j]);
                }
                let probs: Vec<f64> = vm.iter().map(|&m| sigmoid(m)).collect();
                let loss = log_loss(&probs, vy);
                if loss < best.0 - 1e-9 {
                    best = (loss, t + 1);
                } else if t + 1 - best.1 >= p.patience {
                    break;
                }
            }
        }
        let (best_trees, best_validation_loss) = if valid.is_some() {
            trees.truncate(best.1.max(1));
            (trees.len(), Some(best.0))
        } else {
            (trees.len(), None)
        };
        Gbt {
            binner,
            base,
            trees,
            d,
            best_trees,
            best_validation_loss,
        }
    }

    pub fn predict(&self, row: &[f64]) -> f64 {
        let bins: Vec<u8> = (0..self.d).map(|j| self.binner.bin(j, row[j])).collect();
        sigmoid(self.base + self.trees.iter().map(|t| tree_value(t, |j| bins[j])).sum::<f64>())
    }

    pub fn predict_all(&self, x: &[f64]) -> Vec<f64> {
        x.par_chunks_exact(self.d.max(1)).map(|r| self.predict(r)).collect()
    }

    /// How often each feature is used to split, a simple importance.
    pub fn split_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.d];
        for t in &self.trees {
            for node in t {
                if let Node::Split { feature, .. } = node {
                    c[*feature] += 1;
                }
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::auc;
    use rand::Rng;

    /// A label that depends on an interaction a linear model cannot see.
    fn xor_data(n: usize, seed: u64) -> (Vec<f64>, Vec<bool>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..n {
            let a: f64 = rng.random::<f64>() * 2.0 - 1.0;
            let b: f64 = rng.random::<f64>() * 2.0 - 1.0;
            let noise: f64 = rng.random::<f64>();
            x.extend([a, b, if noise < 0.1 { f64::NAN } else { noise }]);
            y.push((a * b > 0.0) ^ (noise < 0.05));
        }
        (x, y)
    }

    #[test]
    fn learns_an_interaction_and_stops_early() {
        let (x, y) = xor_data(4000, 1);
        let (vx, vy) = xor_data(1000, 2);
        let p = GbtParams::default();
        let m = Gbt::fit(&x, 3, &y, Some((&vx, &vy)), &p);
        let a = auc(&m.predict_all(&vx), &vy).unwrap();
        assert!(a > 0.9, "auc {a}");
        assert!(m.best_trees <= p.trees);
        let counts = m.split_counts();
        assert!(counts[0] > counts[2] && counts[1] > counts[2]);
        // Same seed, same model.
        assert_eq!(m, Gbt::fit(&x, 3, &y, Some((&vx, &vy)), &p));
    }

    #[test]
    fn constant_features_give_the_base_rate() {
        let x = vec![1.0; 100];
        let y: Vec<bool> = (0..100).map(|i| i < 30).collect();
        let m = Gbt::fit(&x, 1, &y, None, &GbtParams::default());
        assert!((m.predict(&[1.0]) - 0.3).abs() < 0.01);
    }
}
