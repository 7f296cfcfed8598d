//! Item-to-item recommendations from implicit feedback (who bought what, how often):
//! items are compared by the customers they share, with BM25 weighting of the
//! item × customer counts (common customers who buy a lot say less about an item, as
//! common words do about a document), each item keeps its `k` most similar items, and a
//! customer's score for an item is the sum of its similarities to what they bought,
//! weighted by how often. Also "bought together" by lift over orders, content-based
//! scores from product attributes, popularity, the reciprocal-rank blend of them,
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
                top(acc.into_iter().collect(), k)
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

/// The `n` best of `v`, best first, ties by item id.
fn top(mut v: Vec<(u32, f64)>, n: usize) -> Vec<(u32, f64)> {
    let cmp = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if n == 0 {
        return Vec::new();
    }
    if n < v.len() {
        v.select_nth_unstable_by(n - 1, cmp);
        v.truncate(n);
    }
    v.sort_by(cmp);
    v.shrink_to_fit();
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
            *p = top(std::mem::take(p), k);
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

/// Content-based recommendations from product attributes (category, brand, price band,
/// words of the name, any other attribute): each item is a TF-IDF vector of its features
/// (a feature most products share says little), each feature also weighted by how much
/// its field (category, brand, …) says about what customers buy — ln of the lift of "two
/// items one customer bought share a value of the field" over the same for items of two
/// different customers, so a field buyers ignore (on some data the colour, on other the
/// brand) drops out — and L2-normalised. A customer's profile is the sum of the vectors
/// of what they bought (weighted by ln(1 + count)), or the features they stated (a
/// preferred category); an item's score is its cosine with the profile times a
/// popularity prior with a floor (a product nobody bought yet counts as a typical one,
/// the median), so products too new to have been bought — which no behaviour model can
/// rank — are still recommended to customers whose profile they match.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    items: Vec<Vec<(u32, f64)>>,
    /// Per feature, the items that have it and its weight there (an inverted index).
    postings: Vec<Vec<(u32, f64)>>,
    /// Popularity of each item scaled to [0, 1].
    pop: Vec<f64>,
    /// The weight of each field (ln lift, at least 0; 1 where no customer bought two items).
    pub field_weights: Vec<f64>,
}

/// Strongest profile features kept (a heavy buyer's profile can have hundreds).
const PROFILE_FEATURES: usize = 64;
/// Popularity floor: the least popular item scores at least this share of an equally
/// similar best seller.
const POPULARITY_FLOOR: f64 = 0.05;
/// Item pairs per customer looked at for the field weights.
const FIELD_PAIRS: usize = 64;

impl Content {
    /// `features[i]`: the feature ids of item i (below `field.len()`; repeats count
    /// once); `field[x]`: the field of feature x (below `n_fields`); `baskets` for the
    /// field weights and `popularity` as from [`popularity`].
    pub fn fit(features: &[Vec<u32>], field: &[u32], n_fields: usize, baskets: &Baskets, popularity: &[(u32, f64)]) -> Self {
        let n = features.len();
        let n_features = field.len();
        let mut df = vec![0usize; n_features];
        let sets: Vec<Vec<u32>> = features
            .iter()
            .map(|f| {
                let mut f: Vec<u32> = f.iter().copied().filter(|&x| (x as usize) < n_features).collect();
                f.sort_unstable();
                f.dedup();
                f
            })
            .collect();
        for f in &sets {
            for &x in f {
                df[x as usize] += 1;
            }
        }
        let field_weights = Self::field_weights(&sets, field, n_fields, baskets);
        let weight = |x: u32| {
            let fw = field
                .get(x as usize)
                .and_then(|&f| field_weights.get(f as usize))
                .copied()
                .unwrap_or(1.0);
            (1.0 + n as f64 / df[x as usize].max(1) as f64).ln() * fw
        };
        let mut postings = vec![Vec::new(); n_features];
        let items: Vec<Vec<(u32, f64)>> = sets
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let raw: Vec<(u32, f64)> = f.iter().map(|&x| (x, weight(x))).filter(|x| x.1 > 0.0).collect();
                let norm = raw.iter().map(|x| x.1 * x.1).sum::<f64>().sqrt().max(1e-12);
                let v: Vec<(u32, f64)> = raw.into_iter().map(|(x, w)| (x, w / norm)).collect();
                for &(x, w) in &v {
                    postings[x as usize].push((i as u32, w));
                }
                v
            })
            .collect();
        let max = popularity.first().map_or(1.0, |p| p.1.max(1e-12));
        // An item nobody has bought yet is new rather than a flop: it gets the median
        // popularity of the items bought (`popularity` is sorted, best first).
        let median = popularity.get(popularity.len() / 2).map_or(0.0, |p| p.1 / max);
        let mut pop = vec![median; n];
        for &(i, c) in popularity {
            if let Some(p) = pop.get_mut(i as usize) {
                *p = c / max;
            }
        }
        Content {
            items,
            postings,
            pop,
            field_weights,
        }
    }

    /// ln(within / across) per field, where `within` is the share of item pairs bought by
    /// one customer that share a value of the field and `across` the same for pairs of
    /// items of two neighbouring customers (in basket order): the chance level, with the
    /// same popularity. Consecutive items of a basket, at most `FIELD_PAIRS` a customer.
    fn field_weights(sets: &[Vec<u32>], field: &[u32], n_fields: usize, baskets: &Baskets) -> Vec<f64> {
        let shares = |a: u32, b: u32, f: u32| -> bool {
            let (Some(x), Some(y)) = (sets.get(a as usize), sets.get(b as usize)) else {
                return false;
            };
            x.iter().any(|v| field[*v as usize] == f && y.binary_search(v).is_ok())
        };
        let mut within = vec![0.0f64; n_fields];
        let mut across = vec![0.0f64; n_fields];
        let (mut pairs_within, mut pairs_across) = (0.0f64, 0.0f64);
        for (u, b) in baskets.iter().enumerate() {
            for w in b.windows(2).take(FIELD_PAIRS) {
                pairs_within += 1.0;
                for f in 0..n_fields as u32 {
                    within[f as usize] += f64::from(u8::from(shares(w[0].0, w[1].0, f)));
                }
            }
            if let Some(next) = baskets.get(u + 1) {
                for (x, y) in b.iter().zip(next).take(FIELD_PAIRS) {
                    pairs_across += 1.0;
                    for f in 0..n_fields as u32 {
                        across[f as usize] += f64::from(u8::from(shares(x.0, y.0, f)));
                    }
                }
            }
        }
        (0..n_fields)
            .map(|f| {
                if pairs_within < 1.0 || pairs_across < 1.0 {
                    return 1.0;
                }
                // Add-one smoothing keeps a field seen in few pairs near lift 1.
                let p_in = (within[f] + 1.0) / (pairs_within + 2.0);
                let p_out = (across[f] + 1.0) / (pairs_across + 2.0);
                (p_in / p_out).ln().max(0.0)
            })
            .collect()
    }

    /// A customer's profile from what they bought: Σ ln(1 + count) × item vector,
    /// normalised, its strongest features kept.
    pub fn profile(&self, basket: &[(u32, f64)]) -> Vec<(u32, f64)> {
        let mut acc: HashMap<u32, f64> = HashMap::new();
        for &(i, c) in basket {
            let Some(v) = self.items.get(i as usize) else { continue };
            let w = c.max(0.0).ln_1p();
            for &(x, f) in v {
                *acc.entry(x).or_insert(0.0) += w * f;
            }
        }
        Self::normalised(acc.into_iter().collect())
    }

    /// A profile from stated features (each with a weight, e.g. 1 per preferred category).
    pub fn stated_profile(&self, stated: &[(u32, f64)]) -> Vec<(u32, f64)> {
        Self::normalised(
            stated
                .iter()
                .copied()
                .filter(|&(x, w)| (x as usize) < self.postings.len() && w > 0.0)
                .collect(),
        )
    }

    fn normalised(v: Vec<(u32, f64)>) -> Vec<(u32, f64)> {
        let mut v = top(v, PROFILE_FEATURES);
        let norm = v.iter().map(|x| x.1 * x.1).sum::<f64>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| x.1 /= norm);
        }
        v
    }

    /// The `n` best items for a profile, `exclude`d items left out: cosine ×
    /// (floor + popularity).
    pub fn recommend(&self, profile: &[(u32, f64)], exclude: &[(u32, f64)], n: usize) -> Vec<(u32, f64)> {
        let mut acc: HashMap<u32, f64> = HashMap::new();
        for &(x, w) in profile {
            for &(i, f) in &self.postings[x as usize] {
                *acc.entry(i).or_insert(0.0) += w * f;
            }
        }
        for &(i, _) in exclude {
            acc.remove(&i);
        }
        top(
            acc.into_iter()
                .map(|(i, cos)| (i, cos * (POPULARITY_FLOOR + self.pop[i as usize])))
                .collect(),
            n,
        )
    }
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
    v.shrink_to_fit();
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
    fn blend_keeps_the_best_reason() {
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
    }

    #[test]
    fn content_follows_the_attributes_and_reaches_new_items() {
        // Features: 0 books, 1 garden, 2 brand Acme, 3 brand Borealis, 4 price band high,
        // 5 the word "oak". Items 0–2 are books, 3–5 garden; item 5 was never bought.
        let features = vec![vec![0, 2], vec![0, 3], vec![0, 3, 4], vec![1, 2, 5], vec![1, 3], vec![1, 3, 4, 5]];
        let pop = vec![(0, 9.0), (1, 8.0), (2, 7.0), (3, 6.0), (4, 5.0)];
        // Fields: 0 category, 1 brand, 2 price, 3 word; no baskets: every field weighs 1.
        let field = [0, 0, 1, 1, 2, 3];
        let c = Content::fit(&features, &field, 4, &[], &pop);
        assert_eq!(c.field_weights, vec![1.0; 4]);
        // Someone who bought the expensive Borealis book: the other Borealis book comes
        // first; the never-bought item 5 (garden, Borealis, high) is in the list, item 3
        // (garden, Acme, oak), which shares nothing with it, is not.
        let basket = [(2, 1.0)];
        let r = c.recommend(&c.profile(&basket), &basket, 10);
        let ids: Vec<u32> = r.iter().map(|x| x.0).collect();
        assert_eq!(ids[0], 1, "{r:?}");
        assert!(!ids.contains(&2) && ids.contains(&5) && !ids.contains(&3), "{r:?}");
        // Without popularity, item 5 shares two features and beats item 0 (one).
        let flat = Content::fit(&features, &field, 4, &[], &[]);
        let r = flat.recommend(&flat.profile(&basket), &basket, 10);
        let at = |i: u32| r.iter().position(|x| x.0 == i).unwrap();
        assert!(at(5) < at(0), "{r:?}");
        // A stated preference for garden: only garden items.
        let g = c.recommend(&c.stated_profile(&[(1, 1.0)]), &[], 10);
        let garden: std::collections::BTreeSet<u32> = g.iter().map(|x| x.0).collect();
        assert_eq!(garden, [3, 4, 5].into());
        // Items with no features and unknown features are harmless.
        let e = Content::fit(&[vec![], vec![7]], &[0, 0, 0], 1, &[], &[]);
        assert!(e.recommend(&e.profile(&[(0, 1.0), (1, 1.0)]), &[], 5).is_empty());
    }

    #[test]
    fn fields_buyers_ignore_weigh_nothing() {
        // 40 items: category = i % 4 (features 0–3), brand = i % 5 (features 4–8).
        let features: Vec<Vec<u32>> = (0..40u32).map(|i| vec![i % 4, 4 + i % 5]).collect();
        let field = [0, 0, 0, 0, 1, 1, 1, 1, 1];
        // Each customer buys within one category, brands as they come.
        let baskets: Vec<Vec<(u32, f64)>> = (0..200u32)
            .map(|u| (0..6u32).map(|k| ((u % 4) + 4 * ((u + 3 * k) % 10), 1.0)).collect::<Vec<_>>())
            .map(|mut b| {
                b.sort_by_key(|x| x.0);
                b.dedup_by_key(|x| x.0);
                b
            })
            .collect();
        let pop = popularity(&baskets, 40);
        let c = Content::fit(&features, &field, 2, &baskets, &pop);
        assert!(c.field_weights[0] > 1.0, "{:?}", c.field_weights);
        assert!(c.field_weights[1] < 0.2, "{:?}", c.field_weights);
        // So a category-0 buyer is recommended category-0 items, whatever their brand.
        let basket = [(0, 1.0), (4, 1.0)];
        let r = c.recommend(&c.profile(&basket), &basket, 5);
        assert!(r.iter().all(|x| x.0 % 4 == 0), "{r:?}");
    }
}
