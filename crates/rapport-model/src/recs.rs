//! Item-to-item recommendations from implicit feedback (who bought what, how often):
//! items are compared by the customers they share, with BM25 weighting of the
//! item × customer counts (common customers who buy a lot say less about an item, as
//! common words do about a document), each item keeps its `k` most similar items, and a
//! customer's score for an item is the sum of its similarities to what they bought,
//! weighted by how often. Also "bought together" by lift over orders, content-based
//! scores from product categories, popularity, the reciprocal-rank blend of them,
//! association rules, and the ranking metrics used to compare them.

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
        Self::from_weighted(weighted, n_items, k)
    }

    /// Neighbours by cosine similarity of the items' customer-count vectors (the
    /// classic item-to-item model, for comparison with BM25).
    pub fn fit_cosine(baskets: &Baskets, n_items: usize, k: usize) -> Self {
        let mut norm = vec![0.0f64; n_items];
        for b in baskets {
            for &(i, c) in b {
                norm[i as usize] += c * c;
            }
        }
        let weighted: Vec<Vec<(u32, f64)>> = baskets
            .iter()
            .map(|b| b.iter().map(|&(i, c)| (i, c / norm[i as usize].sqrt().max(1e-12))).collect())
            .collect();
        Self::from_weighted(weighted, n_items, k)
    }

    /// Item similarities as sums over customers of products of their weights.
    fn from_weighted(weighted: Vec<Vec<(u32, f64)>>, n_items: usize, k: usize) -> Self {
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

/// "Bought together": items that share orders more often than chance. For each item,
/// its `k` best partners by lift = P(i and j in one order) / (P(i) · P(j)) among pairs
/// seen in at least `min_orders` orders.
#[derive(Debug, Clone, PartialEq)]
pub struct CoPurchase {
    pub partners: Vec<Vec<(u32, f64)>>,
}

impl CoPurchase {
    /// `orders`: the distinct items of each order.
    pub fn fit(orders: &[Vec<u32>], n_items: usize, k: usize, min_orders: u32) -> Self {
        let mut item_orders = vec![0u32; n_items];
        let mut pairs: HashMap<(u32, u32), u32> = HashMap::new();
        for o in orders {
            for &i in o {
                item_orders[i as usize] += 1;
            }
            // Very large orders (wholesale restocks) say little about what goes together.
            if o.len() > 100 {
                continue;
            }
            for (a, &i) in o.iter().enumerate() {
                for &j in &o[a + 1..] {
                    let key = if i < j { (i, j) } else { (j, i) };
                    *pairs.entry(key).or_insert(0) += 1;
                }
            }
        }
        let n = orders.len().max(1) as f64;
        let mut partners: Vec<Vec<(u32, f64)>> = vec![Vec::new(); n_items];
        for (&(i, j), &c) in &pairs {
            if c < min_orders {
                continue;
            }
            let lift = f64::from(c) * n / (f64::from(item_orders[i as usize]) * f64::from(item_orders[j as usize]));
            partners[i as usize].push((j, lift));
            partners[j as usize].push((i, lift));
        }
        for p in &mut partners {
            p.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            p.truncate(k);
        }
        CoPurchase { partners }
    }

    /// Items that go with what the customer bought, by summed log-lift.
    pub fn recommend(&self, basket: &[(u32, f64)], n: usize) -> Vec<(u32, f64)> {
        let mut acc: HashMap<u32, f64> = HashMap::new();
        for &(i, _) in basket {
            for &(j, lift) in &self.partners[i as usize] {
                if lift > 1.0 {
                    *acc.entry(j).or_insert(0.0) += lift.ln();
                }
            }
        }
        for &(i, _) in basket {
            acc.remove(&i);
        }
        top(acc.into_iter().collect(), n)
    }
}

/// Content-based scores from product attributes: a customer's (or a stated) category
/// profile times each product's popularity within its category, so new customers with a
/// stated preference and products too new to have neighbours still get recommended.
/// `category[i]` is item i's category index (or None); `profile` sums to 1 over categories.
pub fn content(
    category: &[Option<u32>],
    popularity_rank: &[(u32, f64)],
    profile: &HashMap<u32, f64>,
    exclude: &[(u32, f64)],
    n: usize,
) -> Vec<(u32, f64)> {
    if profile.is_empty() {
        return Vec::new();
    }
    let max = popularity_rank.first().map_or(1.0, |p| p.1.max(1e-12));
    let bought: std::collections::HashSet<u32> = exclude.iter().map(|x| x.0).collect();
    let mut v: Vec<(u32, f64)> = Vec::new();
    // Products never bought have popularity 0: give them a floor so they can appear.
    let mut pop = vec![0.0; category.len()];
    for &(i, c) in popularity_rank {
        if (i as usize) < pop.len() {
            pop[i as usize] = c / max;
        }
    }
    for (i, c) in category.iter().enumerate() {
        let Some(c) = c else { continue };
        let Some(w) = profile.get(c) else { continue };
        if bought.contains(&(i as u32)) {
            continue;
        }
        v.push((i as u32, w * (0.05 + pop[i])));
    }
    top(v, n)
}

/// Which model put an item in a blended list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    ItemKnn,
    Als,
    CoPurchase,
    Content,
    Popular,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::ItemKnn => "item_knn",
            Source::Als => "als",
            Source::CoPurchase => "co_purchase",
            Source::Content => "content",
            Source::Popular => "popular",
        }
    }
}

/// A model's ranked list with its weight in the blend.
pub type Weighted<'a> = (Source, f64, &'a [(u32, f64)]);

/// Weighted reciprocal-rank fusion of ranked lists: an item scores Σ w / (60 + rank) over
/// the lists it is in; its reason is the list that gave it most. Lists with weight 0 are
/// ignored; ties go to the smaller item id.
pub fn blend(lists: &[Weighted<'_>], n: usize) -> Vec<(u32, f64, Source)> {
    let mut acc: HashMap<u32, (f64, f64, Source)> = HashMap::new();
    for (src, w, list) in lists {
        if *w <= 0.0 {
            continue;
        }
        for (r, &(i, _)) in list.iter().enumerate() {
            let c = w / (60.0 + r as f64 + 1.0);
            let e = acc.entry(i).or_insert((0.0, 0.0, *src));
            e.0 += c;
            if c > e.1 {
                e.1 = c;
                e.2 = *src;
            }
        }
    }
    let mut v: Vec<(u32, f64, Source)> = acc.into_iter().map(|(i, (s, _, src))| (i, s, src)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// One association rule A → b over orders.
#[derive(Debug, Clone, PartialEq)]
pub struct AssociationRule {
    pub antecedent: Vec<u32>,
    pub consequent: u32,
    /// Orders holding A ∪ {b}.
    pub support_count: u32,
    pub support: f64,
    pub confidence: f64,
    pub lift: f64,
}

/// Frequent item sets of one to three items (level-wise, as Apriori: a set is counted
/// only if all its subsets are frequent) with at least `min_support` of the orders, and
/// the rules A → b among them with at least `min_confidence`, by lift then support.
pub fn association_rules(orders: &[Vec<u32>], min_support: f64, min_confidence: f64, max_rules: usize) -> Vec<AssociationRule> {
    let n = orders.len();
    if n == 0 {
        return Vec::new();
    }
    let min_count = ((min_support * n as f64).ceil() as u32).max(2);
    let mut single: HashMap<u32, u32> = HashMap::new();
    for o in orders {
        for &i in o {
            *single.entry(i).or_insert(0) += 1;
        }
    }
    single.retain(|_, c| *c >= min_count);
    let frequent = |o: &Vec<u32>| -> Vec<u32> {
        let mut v: Vec<u32> = o.iter().copied().filter(|i| single.contains_key(i)).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let mut pairs: HashMap<(u32, u32), u32> = HashMap::new();
    for o in orders {
        let v = frequent(o);
        for a in 0..v.len() {
            for b in a + 1..v.len() {
                *pairs.entry((v[a], v[b])).or_insert(0) += 1;
            }
        }
    }
    pairs.retain(|_, c| *c >= min_count);
    let mut triples: HashMap<(u32, u32, u32), u32> = HashMap::new();
    for o in orders {
        let v: Vec<u32> = frequent(o);
        if v.len() > 60 {
            continue;
        }
        for a in 0..v.len() {
            for b in a + 1..v.len() {
                if !pairs.contains_key(&(v[a], v[b])) {
                    continue;
                }
                for c in b + 1..v.len() {
                    if pairs.contains_key(&(v[a], v[c])) && pairs.contains_key(&(v[b], v[c])) {
                        *triples.entry((v[a], v[b], v[c])).or_insert(0) += 1;
                    }
                }
            }
        }
    }
    triples.retain(|_, c| *c >= min_count);
    let nf = n as f64;
    let mut rules = Vec::new();
    let mut push = |ante: Vec<u32>, ante_count: u32, cons: u32, count: u32| {
        let confidence = f64::from(count) / f64::from(ante_count);
        if confidence >= min_confidence {
            rules.push(AssociationRule {
                antecedent: ante,
                consequent: cons,
                support_count: count,
                support: f64::from(count) / nf,
                confidence,
                lift: confidence / (f64::from(single[&cons]) / nf),
            });
        }
    };
    for (&(a, b), &c) in &pairs {
        push(vec![a], single[&a], b, c);
        push(vec![b], single[&b], a, c);
    }
    for (&(a, b, d), &c) in &triples {
        push(vec![a, b], pairs[&(a, b)], d, c);
        push(vec![a, d], pairs[&(a, d)], b, c);
        push(vec![b, d], pairs[&(b, d)], a, c);
    }
    rules.sort_by(|x, y| {
        y.lift
            .total_cmp(&x.lift)
            .then(y.support_count.cmp(&x.support_count))
            .then(x.antecedent.cmp(&y.antecedent))
            .then(x.consequent.cmp(&y.consequent))
    });
    rules.truncate(max_rules);
    rules
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
        let c = ItemKnn::fit_cosine(&baskets, 5, 10);
        assert_eq!(c.recommend(&[(0, 1.0)], 1, false)[0].0, 1);
        // Cosine of an item with itself is 1.
        assert!((c.neighbours[0].iter().find(|x| x.0 == 0).unwrap().1 - 1.0).abs() < 1e-12);
        assert!(m.recommend(&[(2, 1.0)], 3, false).iter().all(|(i, _)| *i != 2));
        assert_eq!(m.recommend(&[(2, 1.0)], 1, false)[0].0, 3);
        assert_eq!(popularity(&baskets, 5)[0].0, 4);
        let (p, r, ndcg) = ranking_metrics(&[1, 5, 3], &[1, 3], 2);
        assert_eq!((p, r), (0.5, 0.5));
        assert!((ndcg - 1.0 / (1.0 + 1.0 / 3f64.log2())).abs() < 1e-12);
    }

    #[test]
    fn co_purchase_and_rules() {
        // 0 and 1 share orders; 2 is in every order (lift 1).
        let mut orders = Vec::new();
        for k in 0..50u32 {
            orders.push(if k % 2 == 0 { vec![0, 1, 2] } else { vec![2, 3 + k % 5] });
        }
        let cp = CoPurchase::fit(&orders, 8, 5, 2);
        assert_eq!(cp.recommend(&[(0, 1.0)], 3)[0].0, 1);
        assert!(cp.recommend(&[(0, 1.0)], 3).iter().all(|r| r.0 != 2), "lift 1 is not a reason");
        let rules = association_rules(&orders, 0.1, 0.5, 100);
        let r = rules.iter().find(|r| r.antecedent == vec![0] && r.consequent == 1).unwrap();
        assert_eq!(r.support_count, 25);
        assert!((r.confidence - 1.0).abs() < 1e-12 && (r.lift - 2.0).abs() < 1e-12 && (r.support - 0.5).abs() < 1e-12);
        // {0, 1} → 2 has confidence 1 and lift 1; {0, 2} → 1 lift 2.
        let t = rules.iter().find(|r| r.antecedent == vec![0, 2] && r.consequent == 1).unwrap();
        assert!((t.lift - 2.0).abs() < 1e-12);
        assert!(rules.windows(2).all(|w| w[0].lift >= w[1].lift));
    }

    #[test]
    fn blend_keeps_the_best_reason_and_content_reaches_new_items() {
        let b = blend(
            &[
                (Source::ItemKnn, 1.0, &[(5, 3.0), (6, 2.0)]),
                (Source::Als, 0.5, &[(6, 9.0), (7, 1.0)]),
                (Source::Popular, 0.0, &[(9, 1.0)]),
            ],
            10,
        );
        assert_eq!(b.iter().map(|x| x.0).collect::<Vec<_>>(), vec![6, 5, 7]);
        assert_eq!(b[0].2, Source::ItemKnn);
        assert_eq!(b[2].2, Source::Als);
        let category = vec![Some(0), Some(1), Some(1), None];
        let profile: HashMap<u32, f64> = [(1, 1.0)].into_iter().collect();
        let c = content(&category, &[(1, 10.0), (0, 5.0)], &profile, &[(1, 1.0)], 5);
        // Item 2 was never bought and is in the preferred category.
        assert_eq!(c.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2]);
    }
}
