//! DBSCAN (Ester, Kriegel, Sander & Xu, 1996) for the low-dimensional behaviour space of
//! the segments: points with at least `min_points` neighbours within `eps` are core
//! points; clusters are the connected core points and the points they reach; the rest is
//! noise. Neighbours are found through a grid of cells of side `eps` (only the 3^d
//! adjacent cells can hold a neighbour), and clusters are grown in index order, so the
//! result is deterministic.

use crate::error::ModelError;
use std::collections::HashMap;

const MAX_DIM: usize = 8;

/// A clustering: `labels[i]` is the cluster of point i, `None` for noise.
#[derive(Debug, Clone, PartialEq)]
pub struct Dbscan {
    pub labels: Vec<Option<usize>>,
    pub clusters: usize,
    pub noise: usize,
    pub core: Vec<bool>,
}

struct Grid<'a> {
    x: &'a [f64],
    d: usize,
    eps: f64,
    cells: HashMap<[i64; MAX_DIM], Vec<u32>>,
}

impl<'a> Grid<'a> {
    fn key(&self, p: &[f64]) -> [i64; MAX_DIM] {
        let mut k = [0i64; MAX_DIM];
        for (j, v) in p.iter().enumerate() {
            k[j] = (v / self.eps).floor() as i64;
        }
        k
    }

    fn new(x: &'a [f64], d: usize, eps: f64) -> Self {
        let mut g = Grid {
            x,
            d,
            eps,
            cells: HashMap::new(),
        };
        for (i, p) in x.chunks_exact(d).enumerate() {
            let k = g.key(p);
            g.cells.entry(k).or_default().push(i as u32);
        }
        g
    }

    /// Indices of the points within eps of `p` (in increasing order).
    fn neighbours(&self, p: &[f64]) -> Vec<u32> {
        let base = self.key(p);
        let mut out = Vec::new();
        let combos = 3usize.pow(self.d as u32);
        for c in 0..combos {
            let mut k = base;
            let mut rest = c;
            for kj in k.iter_mut().take(self.d) {
                *kj += (rest % 3) as i64 - 1;
                rest /= 3;
            }
            if let Some(list) = self.cells.get(&k) {
                for &i in list {
                    let q = &self.x[i as usize * self.d..(i as usize + 1) * self.d];
                    let dist2: f64 = p.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum();
                    if dist2 <= self.eps * self.eps {
                        out.push(i);
                    }
                }
            }
        }
        out.sort_unstable();
        out
    }
}

/// Clusters the rows of `x` (row-major, `d` ≤ 8 columns).
pub fn dbscan(x: &[f64], d: usize, eps: f64, min_points: usize) -> Result<Dbscan, ModelError> {
    if d == 0 || d > MAX_DIM || !x.len().is_multiple_of(d) {
        return Err(ModelError::InvalidInput(format!(
            "dbscan needs 1 to {MAX_DIM} columns and whole rows (got {d} columns, {} values)",
            x.len()
        )));
    }
    if eps.is_nan() || eps <= 0.0 || !eps.is_finite() || min_points == 0 {
        return Err(ModelError::InvalidInput(format!(
            "dbscan needs eps > 0 and min_points ≥ 1 (got eps {eps}, min_points {min_points})"
        )));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(ModelError::InvalidInput("dbscan input has a missing or infinite value".into()));
    }
    let n = x.len() / d;
    let grid = Grid::new(x, d, eps);
    let row = |i: usize| &x[i * d..(i + 1) * d];
    let neighbours: Vec<Vec<u32>> = {
        use rayon::prelude::*;
        (0..n).into_par_iter().map(|i| grid.neighbours(row(i))).collect()
    };
    let core: Vec<bool> = neighbours.iter().map(|nb| nb.len() >= min_points).collect();
    let mut labels = vec![None; n];
    let mut clusters = 0;
    for start in 0..n {
        if !core[start] || labels[start].is_some() {
            continue;
        }
        let c = clusters;
        clusters += 1;
        labels[start] = Some(c);
        let mut queue = vec![start];
        while let Some(p) = queue.pop() {
            for &q in &neighbours[p] {
                let q = q as usize;
                if labels[q].is_none() {
                    labels[q] = Some(c);
                    if core[q] {
                        queue.push(q);
                    }
                }
            }
        }
    }
    let noise = labels.iter().filter(|l| l.is_none()).count();
    Ok(Dbscan {
        labels,
        clusters,
        noise,
        core,
    })
}

/// Assigns new points to the cluster of their nearest core point within eps (else noise).
pub fn assign(model: &Dbscan, x_fit: &[f64], x_new: &[f64], d: usize, eps: f64) -> Vec<Option<usize>> {
    let cores: Vec<f64> = x_fit
        .chunks_exact(d)
        .zip(&model.core)
        .filter(|(_, c)| **c)
        .flat_map(|(r, _)| r.iter().copied())
        .collect();
    let core_labels: Vec<Option<usize>> = model.labels.iter().zip(&model.core).filter(|(_, c)| **c).map(|(l, _)| *l).collect();
    let grid = Grid::new(&cores, d, eps);
    x_new
        .chunks_exact(d)
        .map(|p| {
            grid.neighbours(p)
                .into_iter()
                .map(|i| {
                    let q = &cores[i as usize * d..(i as usize + 1) * d];
                    (p.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum::<f64>(), i)
                })
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
                .and_then(|(_, i)| core_labels[i as usize])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_blobs_and_an_outlier() {
        let mut x = Vec::new();
        for i in 0..30 {
            let t = f64::from(i) * 0.01;
            x.extend([t, t]);
            x.extend([5.0 + t, 5.0 - t]);
        }
        x.extend([20.0, -20.0]);
        let m = dbscan(&x, 2, 0.3, 4).unwrap();
        assert_eq!(m.clusters, 2);
        assert_eq!(m.noise, 1);
        assert_eq!(m.labels[60], None);
        assert_ne!(m.labels[0], m.labels[1]);
        assert!((0..60).step_by(2).all(|i| m.labels[i] == m.labels[0]));
        // New points join the nearest cluster, or none.
        let new = assign(&m, &x, &[0.05, 0.05, 5.1, 4.9, 10.0, 10.0], 2, 0.3);
        assert_eq!(new, vec![m.labels[0], m.labels[1], None]);
        assert!(dbscan(&x, 2, 0.0, 4).is_err());
        assert!(dbscan(&[f64::NAN, 0.0], 2, 0.3, 1).is_err());
    }
}
