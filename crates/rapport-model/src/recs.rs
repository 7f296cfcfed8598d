//! Item-to-item recommendations from implicit feedback (who bought what, how often):
//! items are compared by the customers they share, with BM25 weighting of the
//! item × customer counts (common customers who buy a lot say less about an item, as
//! common words do about a document), each item keeps its `k` most similar items, and a
//! customer's score for an item is the sum of its similarities to what they bought,
//! weighted by how often. Also popularity, and the ranking metrics used to compare them.

use std::collections::HashMap;

use rayon::prelude::*;

/// Purchases: per customer, (item, count) with items below `n_items`.
pub type Baskets = [Vec<(u32, f64)>];

/// BM25 parameters (those of the `implicit` library's BM25Recommender by default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bm25 {
    pub k1: f64,
    pub b: f64,
}

impl Default for Bm25 {
    fn default() -> Self {
        Self { k1: 1.2, b: 0.75 }
    }
}

/// The fitted neighbourhoods: for each item, its most similar items and similarities.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemKnn {
    pub neighbours: Vec<Vec<(u32, f64)>>,
}

impl ItemKnn {
    pub fn fit(baskets: &Baskets, n_items: usize, k: usize, bm25: Bm25) -> Self {
        // Item lengths (total counts) and customer "idf" over items.
        let mut item_total = vec![0.0; n_items];
        for b in baskets {
            for &(i, c) in b {
                item_total[i as usize] += c;
            }
        }
        let used: Vec<f64> = item_total.iter().copied().filter(|t| *t > 0.0).collect();
        let avg = used.iter().sum::<f64>() / used.len().max(1) as f64;
        let n = n_items as f64;
        // Weighted baskets: w(u, i) = c (k1 + 1) / (k1 · norm(i) + c) · idf(u).
        let weighted: Vec<Vec<(u32, f64)>> = baskets
            .iter()
            .map(|b| {
                let idf = n.ln() - (b.len() as f64).ln_1p();
                b.iter()
                    .map(|&(i, c)| {
                        let norm = (1.0 - bm25.b) + bm25.b * item_total[i as usize] / avg.max(1e-12);
                        (i, c * (bm25.k1 + 1.0) / (bm25.k1 * norm + c) * idf)
                    })
                    .collect()
            })
            .collect();
        // Item → (customer, weight) lists.
        let mut by_item: Vec<Vec<(u32, f64)>> = vec![Vec::new(); n_items];
        for (u, b) in weighted.iter().enumerate() {
            for &(i, w) in b {
                by_item[i as usize].push((u as u32, w));
            }
        }
        let neighbours = (0..n_items)
            .into_par_iter()
            .map(|i| {
                let mut acc: HashMap<u32, f64> = HashMap::new();
                for &(u, wi) in &by_item[i] {
                    for &(j, wj) in &weighted[u as usize] {
                        *acc.entry(j).or_insert(0.0) += wi * wj;
                    }
                }
                let mut v: Vec<(u32, f64)> = acc.into_iter().collect();
                v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                v.truncate(k);
                v
            })
            .collect();
        ItemKnn { neighbours }
    }

    /// The `n` best items for a customer who bought `basket`, with their scores; bought
    /// items are left out unless `include_bought`.
    pub fn recommend(&self, basket: &[(u32, f64)], n: usize, include_bought: bool) -> Vec<(u32, f64)> {
        let mut acc: HashMap<u32, f64> = HashMap::new();
        for &(i, c) in basket {
            for &(j, s) in &self.neighbours[i as usize] {
                *acc.entry(j).or_insert(0.0) += c * s;
            }
        }
        if !include_bought {
            for &(i, _) in basket {
                acc.remove(&i);
            }
        }
        top(acc.into_iter().collect(), n)
    }
}

fn top(mut v: Vec<(u32, f64)>, n: usize) -> Vec<(u32, f64)> {
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// Items by the number of customers who bought them (most popular first).
pub fn popularity(baskets: &Baskets, n_items: usize) -> Vec<(u32, f64)> {
    let mut c = vec![0.0; n_items];
    for b in baskets {
        for &(i, _) in b {
            c[i as usize] += 1.0;
        }
    }
    top(
        c.into_iter()
            .enumerate()
            .filter(|(_, v)| *v > 0.0)
            .map(|(i, v)| (i as u32, v))
            .collect(),
        n_items,
    )
}

/// Precision, recall and NDCG at k of one ranked list against the relevant items.
pub fn ranking_metrics(ranked: &[u32], relevant: &[u32], k: usize) -> (f64, f64, f64) {
    if relevant.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let rel: std::collections::HashSet<u32> = relevant.iter().copied().collect();
    let hits: Vec<bool> = ranked.iter().take(k).map(|i| rel.contains(i)).collect();
    let h = hits.iter().filter(|x| **x).count() as f64;
    let dcg: f64 = hits
        .iter()
        .enumerate()
        .filter(|(_, x)| **x)
        .map(|(p, _)| 1.0 / (p as f64 + 2.0).log2())
        .sum();
    let idcg: f64 = (0..k.min(rel.len())).map(|p| 1.0 / (p as f64 + 2.0).log2()).sum();
    (h / k as f64, h / rel.len() as f64, dcg / idcg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_bought_together_are_recommended_together() {
        // Items 0 and 1 go together, 2 and 3 go together; 4 is bought by everyone.
        let mut baskets = Vec::new();
        for _ in 0..20 {
            baskets.push(vec![(0, 1.0), (1, 1.0), (4, 1.0)]);
            baskets.push(vec![(2, 1.0), (3, 2.0), (4, 1.0)]);
        }
        let m = ItemKnn::fit(&baskets, 5, 10, Bm25::default());
        let r = m.recommend(&[(0, 1.0)], 2, false);
        assert_eq!(r[0].0, 1, "{r:?}");
        assert!(m.recommend(&[(2, 1.0)], 3, false).iter().all(|(i, _)| *i != 2));
        assert_eq!(m.recommend(&[(2, 1.0)], 1, false)[0].0, 3);
        assert_eq!(popularity(&baskets, 5)[0].0, 4);
        let (p, r, ndcg) = ranking_metrics(&[1, 5, 3], &[1, 3], 2);
        assert_eq!((p, r), (0.5, 0.5));
        assert!((ndcg - 1.0 / (1.0 + 1.0 / 3f64.log2())).abs() < 1e-12);
    }
}
