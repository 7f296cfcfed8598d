//! Recommendations: item-to-item neighbours on BM25 weights, implicit ALS, "bought
//! together" by lift, content from product attributes ([`crate::catalog`]) and popularity, blended per
//! customer by weighted reciprocal-rank fusion. The blend's weights are chosen on an
//! inner time split of the training data (the last `VALIDATION_DAYS` before the cut-off),
//! among grids that include each single model, so the blend is as good as the best of
//! them on data it has not seen — `rapport evaluate recs` checks that on a real split.
//! Each recommendation keeps the model that put it there as its `reason`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rayon::prelude::*;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;

use rapport_model::als::{Als, AlsConfig};
use rapport_model::recs::{association_rules, blend, popularity, ranking_metrics, Bm25, CoPurchase, Content, ItemKnn, Source, Weighted};
use rapport_store::schema::Table;
use rapport_store::Workspace;

use crate::catalog::Catalog;
use crate::columns::Columns;
use crate::config::ModelsConfig;
use crate::results::{AlsSettings, RankingScore, RecsEvaluation, RecsReport, RuleFound, RulesReport, WeightTrial, WeightValidation};
use crate::session::{f32_column, int_column, text_column, Personal, Session};
use crate::{EngineError, Result};

use crate::days::MICROS_PER_DAY;
/// Neighbours kept per item (60 and 30 score best on Online Retail; 100 is a little worse).
pub const NEIGHBOURS: usize = 60;

/// Completed purchases with a product: one row per customer, product and time of
/// order, customers and products as indices of their sorted ids. Sixteen bytes a row,
/// so a hundred million order lines fit in a couple of gigabytes.
#[derive(Debug, Clone, Default)]
struct Purchases {
    /// Customer ids, sorted.
    customers: Vec<String>,
    /// Product ids, sorted.
    products: Vec<String>,
    /// Sorted by (customer, product, day).
    rows: Vec<Purchase>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Purchase {
    customer: u32,
    product: u32,
    /// Days since 1970-01-01.
    day: i32,
    /// Order lines.
    lines: u32,
}

impl Purchases {
    /// The purchases up to and including `last_day`.
    fn until(mut self, last_day: i64) -> Self {
        self.rows.retain(|r| i64::from(r.day) <= last_day);
        self
    }

    /// The index of a customer id, if it bought.
    fn customer(&self, id: &str) -> Option<u32> {
        self.customers.binary_search_by(|c| c.as_str().cmp(id)).ok().map(|i| i as u32)
    }

    /// The rows of each customer, in order.
    fn per_customer(&self) -> impl Iterator<Item = &[Purchase]> {
        self.rows.chunk_by(|a, b| a.customer == b.customer)
    }
}

/// The purchases of the workspace, read batch by batch in key order (a query's row
/// order varies between runs; item ids and ties must not).
fn purchases(session: &Session<'_>) -> Result<Purchases> {
    let mut customers: Vec<String> = Vec::new();
    let mut products: HashMap<String, u32> = HashMap::new();
    let mut rows = Vec::new();
    session.for_each_batch(
        "SELECT customer_id, product_id, CAST(ordered_at AS BIGINT) AS at, count(*) AS n FROM orders
         WHERE customer_id IS NOT NULL AND product_id IS NOT NULL AND quantity > 0 AND status = 'completed'
         GROUP BY customer_id, product_id, ordered_at
         ORDER BY customer_id, product_id, at",
        &Personal::Stored,
        |b| {
            let (c, p, t, n) = (text_column(b, 0)?, text_column(b, 1)?, int_column(b, 2)?, int_column(b, 3)?);
            for r in 0..b.num_rows() {
                if c.is_null(r) || p.is_null(r) {
                    continue;
                }
                let id = c.value(r);
                match customers.last() {
                    Some(last) if last.as_str() == id => {}
                    Some(last) if last.as_str() > id => {
                        return Err(
                            datafusion::error::DataFusionError::Internal(format!("purchases came out of order: {id} after {last}")).into(),
                        )
                    }
                    _ => customers.push(id.to_string()),
                }
                let next = products.len() as u32;
                let product = match products.get(p.value(r)) {
                    Some(&i) => i,
                    None => *products.entry(p.value(r).to_string()).or_insert(next),
                };
                let day = t.value(r).div_euclid(MICROS_PER_DAY);
                rows.push(Purchase {
                    customer: (customers.len() - 1) as u32,
                    product,
                    day: i32::try_from(day).unwrap_or(if day < 0 { i32::MIN } else { i32::MAX }),
                    lines: u32::try_from(n.value(r)).unwrap_or(u32::MAX),
                });
            }
            Ok(())
        },
    )?;
    // Products by id: the rows were sorted by id, so they stay sorted.
    let mut names: Vec<(String, u32)> = products.into_iter().collect();
    names.sort_unstable();
    let mut rank = vec![0u32; names.len()];
    for (r, (_, first_seen)) in names.iter().enumerate() {
        rank[*first_seen as usize] = r as u32;
    }
    for row in &mut rows {
        row.product = rank[row.product as usize];
    }
    Ok(Purchases {
        customers,
        products: names.into_iter().map(|(n, _)| n).collect(),
        rows,
    })
}

/// Days before a cut-off that validate the blend's weights.
pub const VALIDATION_DAYS: i64 = 90;
/// Partners kept per item for "bought together".
const PARTNERS: usize = 30;
/// Candidates each model contributes to the blend.
const CANDIDATES: usize = 50;

/// One model's candidates for one customer.
type Candidates = (Source, Vec<(u32, f64)>);

/// Customers whose candidate lists are made together (ALS scores them as one block; the
/// blocks run in parallel and only their final lists are kept).
const BLOCK: usize = 256;

/// Customers the weight validation scores at most (an even sample of those who bought on
/// both sides of its split): precision@k over 20,000 customers has a standard error
/// under 0.004, and the validation's cost stays flat as the base grows.
const VALIDATION_CUSTOMERS: usize = 20_000;

/// Whom [`Fitted::lists_many`] makes lists for.
struct Who<'a> {
    /// The customer in the training data, if they are in it.
    u: Option<usize>,
    basket: &'a [(u32, f64)],
    stated: &'a [(u32, f64)],
}

/// Blend weights of (item-kNN, ALS, co-purchase, content); popularity only fills.
pub type Weights = [f64; 4];

/// The grid the weights are chosen from: each model alone and the mixtures.
const GRID: &[Weights] = &[
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
    [1.0, 0.5, 0.0, 0.0],
    [1.0, 1.0, 0.0, 0.0],
    [0.5, 1.0, 0.0, 0.0],
    [1.0, 0.0, 0.5, 0.0],
    [1.0, 0.5, 0.5, 0.0],
    [1.0, 0.5, 0.0, 0.2],
    [1.0, 1.0, 0.5, 0.2],
];

/// The item ids of one fit and the product each stands for.
#[derive(Debug, Clone, PartialEq)]
struct Items<'a> {
    /// The item of each product of the purchases (by index), if it is one.
    of: Vec<Option<u32>>,
    /// The product id of each item.
    names: Vec<&'a str>,
}

impl Items<'_> {
    fn len(&self) -> usize {
        self.names.len()
    }

    fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Numbers the products bought before `before` in order of first purchase.
    fn bought_before(p: &Purchases, before: i64) -> Items<'_> {
        let mut items = Items {
            of: vec![None; p.products.len()],
            names: Vec::new(),
        };
        for r in p.rows.iter().filter(|r| i64::from(r.day) < before) {
            let slot = &mut items.of[r.product as usize];
            if slot.is_none() {
                *slot = Some(items.names.len() as u32);
                items.names.push(&p.products[r.product as usize]);
            }
        }
        items
    }
}

/// Purchases before a day, indexed.
struct Data {
    /// The customers who bought (indices of `Purchases::customers`), ascending.
    customers: Vec<u32>,
    baskets: Vec<Vec<(u32, f64)>>,
    /// Items of each (customer, day) basket.
    orders: Vec<Vec<u32>>,
}

impl Data {
    /// The position of customer `c` (an index of `Purchases::customers`).
    fn position(&self, c: u32) -> Option<usize> {
        self.customers.binary_search(&c).ok()
    }
}

fn index_data(p: &Purchases, items: &Items<'_>, before: i64) -> Data {
    let mut d = Data {
        customers: Vec::new(),
        baskets: Vec::new(),
        orders: Vec::new(),
    };
    let mut bought: Vec<(u32, u32)> = Vec::new();
    let mut days: Vec<(i32, u32)> = Vec::new();
    for rows in p.per_customer() {
        bought.clear();
        days.clear();
        for r in rows.iter().filter(|r| i64::from(r.day) < before) {
            if let Some(i) = items.of[r.product as usize] {
                bought.push((i, r.lines));
                days.push((r.day, i));
            }
        }
        if bought.is_empty() {
            continue;
        }
        d.customers.push(rows[0].customer);
        bought.sort_unstable_by_key(|x| x.0);
        let mut basket: Vec<(u32, f64)> = Vec::new();
        for &(i, n) in &bought {
            match basket.last_mut() {
                Some(last) if last.0 == i => last.1 += f64::from(n),
                _ => basket.push((i, f64::from(n))),
            }
        }
        d.baskets.push(basket);
        days.sort_unstable();
        days.dedup();
        d.orders
            .extend(days.chunk_by(|a, b| a.0 == b.0).map(|o| o.iter().map(|x| x.1).collect()));
    }
    d
}

/// Every model fitted on one training period.
pub struct Fitted {
    knn: ItemKnn,
    als: Als,
    co: CoPurchase,
    pop: Vec<(u32, f64)>,
    content: Content,
    /// The content fields, in the order of `content.field_weights`.
    content_fields: Vec<String>,
    /// The id of each content feature (`category=books` → id), for stated preferences.
    feature_ids: HashMap<String, u32>,
    /// Category index of each item (products table), if known.
    category: Vec<Option<u32>>,
    /// Categories whose products may be recommended again to those who bought them.
    repeat: BTreeSet<u32>,
}

fn als_config(cfg: &ModelsConfig) -> AlsConfig {
    AlsConfig {
        factors: cfg.als_factors,
        iterations: cfg.als_iterations,
        regularization: cfg.als_regularization as f32,
        alpha: cfg.als_alpha as f32,
        cg_steps: 3,
        seed: cfg.seed,
    }
}

impl Fitted {
    /// Fits every model on `d`; `items` names the item ids (the catalog gives their
    /// categories and content features).
    fn fit(d: &Data, items: &[&str], catalog: &Catalog, repeat_categories: &[String], cfg: &ModelsConfig) -> Self {
        let n_items = items.len();
        let (category, category_names) = index_categories(&catalog.category, items);
        let repeat = category_names
            .iter()
            .enumerate()
            .filter(|(_, c)| repeat_categories.iter().any(|r| r == *c))
            .map(|(i, _)| i as u32)
            .collect();
        let ix = catalog.index(items);
        let pop = popularity(&d.baskets, n_items);
        Fitted {
            knn: ItemKnn::fit(&d.baskets, n_items, NEIGHBOURS, Bm25::default()),
            als: Als::fit(&d.baskets, n_items, &als_config(cfg)),
            co: CoPurchase::fit(&d.orders, n_items, PARTNERS, 3),
            content: Content::fit(&ix.per_item, &ix.field, ix.fields.len(), &d.baskets, &pop),
            content_fields: ix.fields,
            feature_ids: ix.ids,
            pop,
            category,
            repeat,
        }
    }

    /// Each model's candidates for each customer of `who`: `u`, the customer in the
    /// training data (else the basket, from outside it, is folded into ALS), bought
    /// products left out except in repeat categories; `stated` content features
    /// (preferred categories) stand in for a profile when nothing was bought. ALS scores
    /// the customers as one block.
    fn lists_many(&self, who: &[Who<'_>]) -> Vec<Vec<Candidates>> {
        // ALS factors of the customers who bought (stored, or their basket folded in);
        // nothing bought: only the stated categories say anything (content).
        let mut flat: Vec<f32> = Vec::new();
        let mut scored: Vec<usize> = Vec::new();
        for (c, w) in who.iter().enumerate() {
            match w.u {
                Some(u) => flat.extend_from_slice(self.als.user_vector(u)),
                None if w.basket.is_empty() => continue,
                None => flat.extend(self.als.fold_in(w.basket)),
            }
            scored.push(c);
        }
        let excludes: Vec<Vec<(u32, f64)>> = who
            .iter()
            .map(|w| {
                w.basket
                    .iter()
                    .copied()
                    .filter(|(i, _)| {
                        !self
                            .category
                            .get(*i as usize)
                            .copied()
                            .flatten()
                            .is_some_and(|c| self.repeat.contains(&c))
                    })
                    .collect()
            })
            .collect();
        let ex: Vec<&[(u32, f64)]> = scored.iter().map(|&c| excludes[c].as_slice()).collect();
        let mut als = self.als.recommend_many(&flat, CANDIDATES, &ex).into_iter();
        let mut als_of: Vec<Vec<(u32, f64)>> = vec![Vec::new(); who.len()];
        for &c in &scored {
            als_of[c] = als.next().unwrap_or_default();
        }
        who.iter()
            .zip(excludes)
            .zip(als_of)
            .map(|((w, exclude), als)| {
                let keep =
                    |v: Vec<(u32, f64)>| -> Vec<(u32, f64)> { v.into_iter().filter(|(i, _)| !exclude.iter().any(|e| e.0 == *i)).collect() };
                let profile = if w.basket.is_empty() {
                    self.content.stated_profile(w.stated)
                } else {
                    self.content.profile(w.basket)
                };
                vec![
                    (
                        Source::ItemKnn,
                        keep(self.knn.recommend(w.basket, CANDIDATES + w.basket.len(), true))
                            .into_iter()
                            .take(CANDIDATES)
                            .collect(),
                    ),
                    (Source::Als, als),
                    (Source::CoPurchase, keep(self.co.recommend(w.basket, CANDIDATES))),
                    (Source::Content, self.content.recommend(&profile, &exclude, CANDIDATES)),
                ]
            })
            .collect()
    }

    /// [`Fitted::lists_many`] over `items` in parallel blocks of `BLOCK`: `who` says
    /// whom each item stands for, `then` turns a customer's lists into what is kept (so
    /// only that outlives its block).
    fn in_blocks<'d, I: Sync, T: Send>(
        &self,
        items: &'d [I],
        who: impl Fn(&'d I) -> Who<'d> + Sync,
        then: impl Fn(&Who<'d>, Vec<Candidates>) -> T + Sync,
    ) -> Vec<T> {
        items
            .par_chunks(BLOCK)
            .flat_map_iter(|block| {
                let whom: Vec<Who<'d>> = block.iter().map(&who).collect();
                let lists = self.lists_many(&whom);
                whom.iter().zip(lists).map(|(w, l)| then(w, l)).collect::<Vec<_>>()
            })
            .collect()
    }

    /// The candidate lists of the training customers `us`.
    fn lists_of(&self, d: &Data, us: &[usize]) -> Vec<Vec<Candidates>> {
        self.in_blocks(
            us,
            |&u| Who {
                u: Some(u),
                basket: &d.baskets[u],
                stated: &[],
            },
            |_, l| l,
        )
    }

    /// The `k` products for a customer with candidate lists `l` (from
    /// [`Fitted::lists_many`]), basket and stated categories, by the blend with weights
    /// `w`, the last
    /// `recs_new_product_slots` places going to the products nobody has bought yet (item
    /// ids from `bought` on) that match the customer best: no behaviour model can rank
    /// them, and without a place they would never sell. Nothing bought and nothing
    /// stated: the most popular products. `k` is `recommendations` of `cfg`.
    fn recommend(
        &self,
        l: &[Candidates],
        basket: &[(u32, f64)],
        stated: &[(u32, f64)],
        w: &Weights,
        bought: u32,
        cfg: &ModelsConfig,
    ) -> Vec<(u32, f64, Source)> {
        let k = cfg.recommendations;
        if basket.is_empty() && stated.is_empty() {
            return self.rank(&[], &[0.0; 4], basket, k);
        }
        let w = if basket.is_empty() { &[0.0, 0.0, 0.0, 1.0] } else { w };
        // Products nobody has bought yet only take the places kept for them.
        let known: Vec<(Source, Vec<(u32, f64)>)> = l
            .iter()
            .map(|(s, c)| (*s, c.iter().copied().filter(|(i, _)| *i < bought).collect()))
            .collect();
        let out = self.rank(&known, w, basket, k);
        let fresh: Vec<(u32, f64)> = l
            .iter()
            .filter(|(s, _)| *s == Source::Content)
            .flat_map(|(_, c)| c.iter().copied())
            .filter(|(i, _)| *i >= bought && !out.iter().any(|o| o.0 == *i))
            .take(cfg.recs_new_product_slots.min(k))
            .collect();
        with_new_products(out, fresh, k)
    }

    /// The blended top `k`, topped up with popular products.
    fn rank(&self, lists: &[(Source, Vec<(u32, f64)>)], w: &Weights, basket: &[(u32, f64)], k: usize) -> Vec<(u32, f64, Source)> {
        let weighted: Vec<Weighted<'_>> = lists.iter().zip(w).map(|((s, l), w)| (*s, *w, l.as_slice())).collect();
        let mut out = blend(&weighted, k);
        if out.len() < k {
            let bought: BTreeSet<u32> = basket.iter().map(|x| x.0).collect();
            for &(i, c) in &self.pop {
                if out.len() >= k {
                    break;
                }
                if !bought.contains(&i) && !out.iter().any(|o| o.0 == i) {
                    out.push((i, c / 1e6, Source::Popular));
                }
            }
        }
        out
    }
}

/// Each item's category index (categories numbered in name order) and the names.
fn index_categories(cats: &BTreeMap<String, String>, names: &[&str]) -> (Vec<Option<u32>>, Vec<String>) {
    let used: BTreeSet<&str> = names.iter().filter_map(|n| cats.get(*n).map(String::as_str)).collect();
    let id: HashMap<&str, u32> = used.iter().enumerate().map(|(i, c)| (*c, i as u32)).collect();
    (
        names.iter().map(|n| cats.get(*n).map(|c| id[c.as_str()])).collect(),
        used.into_iter().map(str::to_string).collect(),
    )
}

/// Scores ranked lists of the customers in `evaluated` against what they bought later.
fn score(ranked: &[Vec<u32>], relevant: &[Vec<u32>], k: usize, n_items: usize) -> RankingScore {
    let (mut p, mut r, mut nd) = (0.0, 0.0, 0.0);
    let mut shown: BTreeSet<u32> = BTreeSet::new();
    for (list, rel) in ranked.iter().zip(relevant) {
        shown.extend(list.iter().copied());
        let (a, b, c) = ranking_metrics(list, rel, k);
        p += a;
        r += b;
        nd += c;
    }
    let m = ranked.len().max(1) as f64;
    RankingScore {
        precision_at_k: p / m,
        recall_at_k: r / m,
        ndcg_at_k: nd / m,
        coverage: shown.len() as f64 / n_items.max(1) as f64,
    }
}

/// A time split of the purchases at `split`: the training data, and for customers who
/// bought on both sides, what they bought after (products first sold after the split
/// count as relevant too, with ids past the known ones, though no model can hit them).
struct Split<'a> {
    items: Items<'a>,
    train: Data,
    evaluated: Vec<usize>,
    relevant: Vec<Vec<u32>>,
}

fn split(p: &Purchases, at: i64, until: i64) -> Split<'_> {
    let items = Items::bought_before(p, at);
    let train = index_data(p, &items, at);
    let mut later: BTreeMap<usize, BTreeSet<u32>> = BTreeMap::new();
    let mut new_items: HashMap<u32, u32> = HashMap::new();
    let known = items.len() as u32;
    for r in p.rows.iter().filter(|r| i64::from(r.day) >= at && i64::from(r.day) < until) {
        let Some(u) = train.position(r.customer) else { continue };
        let i = match items.of[r.product as usize] {
            Some(i) => i,
            None => {
                let next = known + new_items.len() as u32;
                *new_items.entry(r.product).or_insert(next)
            }
        };
        later.entry(u).or_default().insert(i);
    }
    Split {
        items,
        train,
        evaluated: later.keys().copied().collect(),
        relevant: later.into_values().map(|s| s.into_iter().collect()).collect(),
    }
}

/// Fits on the data before `at` and picks the weights that score best (precision@k,
/// then NDCG) on the `VALIDATION_DAYS` before it. Returns the weights and their scores.
fn choose_weights(catalog: &Catalog, purchases: &Purchases, at: i64, k: usize, cfg: &ModelsConfig) -> (Weights, WeightValidation) {
    let mut s = split(purchases, at - VALIDATION_DAYS, at);
    if s.evaluated.len() > VALIDATION_CUSTOMERS {
        let n = s.evaluated.len();
        let pick: Vec<usize> = (0..VALIDATION_CUSTOMERS).map(|i| i * n / VALIDATION_CUSTOMERS).collect();
        s.evaluated = pick.iter().map(|&i| s.evaluated[i]).collect();
        s.relevant = pick.iter().map(|&i| std::mem::take(&mut s.relevant[i])).collect();
    }
    if s.evaluated.len() < 50 || s.items.is_empty() {
        return (
            [1.0, 0.5, 0.0, 0.0],
            WeightValidation::Defaults {
                message: "too few customers to validate the weights; defaults used".into(),
            },
        );
    }
    let t = std::time::Instant::now();
    let m = Fitted::fit(&s.train, &s.items.names, catalog, &[], cfg);
    tracing::debug!(seconds = t.elapsed().as_secs_f64(), "recommenders fitted for the weight validation");
    let lists = m.lists_of(&s.train, &s.evaluated);
    let mut best: Option<(Weights, f64, f64)> = None;
    let mut tried = Vec::new();
    for w in GRID {
        let ranked: Vec<Vec<u32>> = s
            .evaluated
            .par_iter()
            .zip(&lists)
            .map(|(&u, l)| m.rank(l, w, &s.train.baskets[u], k).into_iter().map(|x| x.0).collect())
            .collect();
        let sc = score(&ranked, &s.relevant, k, s.items.len());
        tried.push(WeightTrial {
            weights: *w,
            precision_at_k: sc.precision_at_k,
            ndcg_at_k: sc.ndcg_at_k,
        });
        if best.is_none_or(|b| (sc.precision_at_k, sc.ndcg_at_k) > (b.1, b.2)) {
            best = Some((*w, sc.precision_at_k, sc.ndcg_at_k));
        }
    }
    let (w, _, _) = best.expect("grid is not empty");
    (
        w,
        WeightValidation::Validated {
            validation_from: crate::days::day_text(at - VALIDATION_DAYS),
            customers: s.evaluated.len(),
            tried,
        },
    )
}

/// Evaluates on the split at the start of `split_day` (days since 1970-01-01): every
/// model alone, the blend and popularity, over customers who bought on both sides.
pub fn evaluate(session: &Session<'_>, split_day: i64, k: usize, cfg: &ModelsConfig) -> Result<RecsEvaluation> {
    let rows = purchases(session)?;
    if rows.rows.is_empty() {
        return Err(EngineError::usage("no orders with a product_id: recommendations need them"));
    }
    let s = split(&rows, split_day, i64::MAX);
    if s.evaluated.is_empty() {
        return Err(EngineError::usage("no customer bought both before and after the split"));
    }
    let n_items = s.items.len();
    let t0 = std::time::Instant::now();
    let catalog = Catalog::read(session)?;
    let (weights, validation) = choose_weights(&catalog, &rows, split_day, k, cfg);
    let m = Fitted::fit(&s.train, &s.items.names, &catalog, &[], cfg);
    let fit_seconds = t0.elapsed().as_secs_f64();
    let report = model_scores(&m, &s, weights, k);
    Ok(RecsEvaluation {
        split: crate::days::day_text(split_day),
        k,
        customers_evaluated: s.evaluated.len(),
        items: n_items,
        fit_seconds,
        weights: weights.into(),
        weight_validation: validation,
        als: AlsSettings::of(cfg),
        models: report,
    })
}

/// Precision, recall, NDCG at `k` and coverage on the later purchases of a split: the
/// classic cosine item-kNN (for comparison, not in the blend), each model alone, the
/// popular products, and the blend with `weights`.
fn model_scores(m: &Fitted, s: &Split<'_>, weights: Weights, k: usize) -> BTreeMap<String, RankingScore> {
    let n_items = s.items.len();
    let lists = m.lists_of(&s.train, &s.evaluated);
    let mut report = BTreeMap::new();
    let cosine = ItemKnn::fit_cosine(&s.train.baskets, n_items, NEIGHBOURS);
    let ranked: Vec<Vec<u32>> = s
        .evaluated
        .iter()
        .map(|&u| {
            let basket = &s.train.baskets[u];
            let l = vec![(Source::ItemKnn, cosine.recommend(basket, CANDIDATES, false))];
            m.rank(&l, &[1.0, 0.0, 0.0, 0.0], basket, k).into_iter().map(|x| x.0).collect()
        })
        .collect();
    report.insert("item_knn_cosine".to_string(), score(&ranked, &s.relevant, k, n_items));
    let single = |j: usize| {
        let mut w = [0.0; 4];
        w[j] = 1.0;
        w
    };
    for (name, w) in [
        ("item_knn_bm25", Some(single(0))),
        ("als", Some(single(1))),
        ("co_purchase", Some(single(2))),
        ("content", Some(single(3))),
        ("popular", None),
        ("blend", Some(weights)),
    ] {
        let ranked = ranked_by(m, s, &lists, w.as_ref(), k);
        report.insert(name.to_string(), score(&ranked, &s.relevant, k, n_items));
    }
    report
}

/// Each evaluated customer's top `k` by the blend with weights `w` of their candidate
/// `lists`, or the most popular products without weights.
fn ranked_by(m: &Fitted, s: &Split<'_>, lists: &[Vec<Candidates>], w: Option<&Weights>, k: usize) -> Vec<Vec<u32>> {
    s.evaluated
        .iter()
        .zip(lists)
        .map(|(&u, l)| {
            let basket = &s.train.baskets[u];
            match w {
                Some(w) => m.rank(l, w, basket, k).into_iter().map(|x| x.0).collect(),
                None => m.rank(&[], &[0.0; 4], basket, k).into_iter().map(|x| x.0).collect(),
            }
        })
        .collect()
}

/// The split day: `--split-date YYYY-MM-DD`, or `holdout_days` before the day after the
/// last order.
pub fn split_day(session: &Session<'_>, split_date: Option<&str>, holdout_days: Option<u32>) -> Result<i64> {
    match (split_date, holdout_days) {
        (Some(d), _) => crate::days::parse_as_of(d),
        (None, Some(h)) => {
            let last = purchases(session)?
                .rows
                .iter()
                .map(|r| i64::from(r.day))
                .max()
                .ok_or_else(|| EngineError::usage("no orders with a product_id"))?;
            Ok(last + 1 - i64::from(h))
        }
        (None, None) => Err(EngineError::usage(
            "evaluate recs needs --split-date YYYY-MM-DD or --holdout-days N",
        )),
    }
}

/// What [`recommendations`] produced.
pub struct Recommendations {
    /// The `recommendations` table.
    pub batch: RecordBatch,
    /// Weights, settings and association rules for models.json.
    pub report: RecsReport,
    /// Each customer's first recommendation (in the order of the ids given).
    pub top: Vec<Option<String>>,
    /// The `item_factors` table: each product's ALS factors (`product_id`, `f0`…), kept
    /// so a new customer can be folded in without refitting ([`fold_in`]).
    pub item_factors: RecordBatch,
}

/// The `item_factors` table of a fitted ALS model.
fn item_factors_batch(als: &Als, names: &[&str]) -> Result<RecordBatch> {
    use datafusion::arrow::array::{ArrayRef, Float32Array};
    use datafusion::arrow::datatypes::Field;
    let f = als.factors;
    let mut fields = vec![Field::new("product_id", DataType::Utf8, false)];
    let mut cols: Vec<ArrayRef> = vec![std::sync::Arc::new(StringArray::from(names.to_vec()))];
    for k in 0..f {
        fields.push(Field::new(format!("f{k}"), DataType::Float32, false));
        let v: Vec<f32> = (0..names.len()).map(|i| als.item[i * f + k]).collect();
        cols.push(std::sync::Arc::new(Float32Array::from(v)));
    }
    Ok(
        RecordBatch::try_new(std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(fields)), cols)
            .map_err(datafusion::error::DataFusionError::from)?,
    )
}

/// The last run's ALS item factors, read back from the `item_factors` table with the
/// run's regularisation and confidence: what folding a basket in needs (no refit).
pub struct StoredAls {
    model: Als,
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl StoredAls {
    /// The stored factors; an error saying what to run when there are none.
    pub fn read(ws: &Workspace) -> Result<Self> {
        let als = Self::settings(ws)?;
        let batches = crate::export::query(ws, "SELECT * FROM item_factors", &Personal::Stored)?;
        Self::of_batches(&batches, als.regularization, als.alpha)
    }

    /// The run's ALS settings, once it is known there are stored factors.
    pub fn settings(ws: &Workspace) -> Result<crate::results::AlsSettings> {
        if !ws.has(Table::ItemFactors)? {
            return Err(EngineError::usage(
                "no item_factors table: run `rapport run` on data with product ids first",
            ));
        }
        let models = crate::report::read_models(ws)?;
        models
            .as_ref()
            .and_then(|m| m.recommendations.fitted())
            .map(|r| r.als)
            .ok_or_else(|| EngineError::usage("reports/models.json has no recommendations.als settings: run `rapport run` again"))
    }

    /// The factors of the `item_factors` rows `batches`, with the run's regularisation
    /// and confidence scale.
    pub fn of_batches(batches: &[RecordBatch], lambda: f64, alpha: f64) -> Result<Self> {
        let mut names: Vec<String> = Vec::new();
        let mut item: Vec<f32> = Vec::new();
        let mut f = 0;
        for b in batches {
            f = b.num_columns() - 1;
            let ids = text_column(b, 0)?;
            let cols = (1..=f).map(|c| f32_column(b, c)).collect::<Result<Vec<_>>>()?;
            for r in 0..b.num_rows() {
                names.push(ids.value(r).to_string());
                item.extend(cols.iter().map(|c| c.value(r)));
            }
        }
        if f == 0 || names.is_empty() {
            return Err(EngineError::usage("the item_factors table is empty"));
        }
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i as u32)).collect();
        Ok(StoredAls {
            model: Als::from_item_factors(item, f, lambda as f32, alpha as f32),
            names,
            index,
        })
    }

    /// How many products the factors cover.
    pub fn products(&self) -> usize {
        self.names.len()
    }

    /// The item of a product id, if the run saw it.
    pub fn item(&self, product: &str) -> Option<u32> {
        self.index.get(product).copied()
    }

    /// The `k` best products for a basket of (item, quantity) — sorted by item, each
    /// once — best first, the basket's products left out: (product id, score).
    pub fn recommend(&self, basket: &[(u32, f64)], k: usize) -> Vec<(String, f64)> {
        let x = self.model.fold_in(basket);
        self.model
            .recommend(&x, k, basket)
            .into_iter()
            .map(|(i, s)| (self.names[i as usize].clone(), s))
            .collect()
    }
}

/// Recommendations for a customer the last `rapport run` did not see, from a basket of
/// (product id, quantity; a product named twice counts with the quantities added): the
/// basket is folded into the stored ALS item factors by one
/// exact least-squares solve (no refit), products in the basket are left out. Returns
/// (product_id, score) best first. Unknown product ids are an error naming them.
pub fn fold_in(ws: &Workspace, basket: &[(String, f64)], k: usize) -> Result<Vec<(String, f64)>> {
    let als = StoredAls::read(ws)?;
    let unknown: Vec<&str> = basket
        .iter()
        .filter(|(p, _)| als.item(p).is_none())
        .map(|(p, _)| p.as_str())
        .collect();
    if !unknown.is_empty() {
        return Err(EngineError::usage(format!(
            "unknown product id(s) {}: not among the {} products of the last run",
            unknown.join(", "),
            als.products()
        )));
    }
    if let Some((p, q)) = basket.iter().find(|(_, q)| !(q.is_finite() && *q > 0.0)) {
        return Err(EngineError::usage(format!("quantity {q} for {p}: must be a positive number")));
    }
    // A product named twice counts once with the quantities added (sorted by item).
    let mut merged: BTreeMap<u32, f64> = BTreeMap::new();
    for (p, q) in basket {
        *merged.entry(als.item(p).expect("known")).or_insert(0.0) += q;
    }
    let b: Vec<(u32, f64)> = merged.into_iter().collect();
    Ok(als.recommend(&b, k))
}

/// The `recommendations` table as of the end of `as_of_day` and a models.json report
/// (weights, association rules): for every customer the `k` best products by the blend
/// (bought ones left out, except in `recs_repeat_categories`), each with the model that
/// put it there as `reason`; customers without purchases get content from their stated
/// `preferred_category` answers, else the most popular products. `None` without product
/// ids.
pub fn recommendations(session: &Session<'_>, ids: &[String], as_of_day: i64, cfg: &ModelsConfig) -> Result<Option<Recommendations>> {
    let k = cfg.recommendations;
    let rows = purchases(session)?.until(as_of_day);
    if rows.rows.is_empty() {
        return Ok(None);
    }
    let catalog = Catalog::read(session)?;
    let t = std::time::Instant::now();
    let (weights, validation) = choose_weights(&catalog, &rows, as_of_day + 1, k, cfg);
    tracing::debug!(seconds = t.elapsed().as_secs_f64(), "recommendation weights validated");
    let t = std::time::Instant::now();
    let (items, bought) = index_items(&rows, &catalog);
    let names = &items.names;
    let d = index_data(&rows, &items, as_of_day + 1);
    let m = Fitted::fit(&d, names, &catalog, &cfg.recs_repeat_categories, cfg);
    tracing::debug!(seconds = t.elapsed().as_secs_f64(), "recommenders fitted");
    let t = std::time::Instant::now();
    let stated = stated_categories(session, &m)?;
    let lists: Vec<Vec<(u32, f64, Source)>> = m.in_blocks(
        ids,
        |id| {
            let u = rows.customer(id).and_then(|c| d.position(c));
            Who {
                u,
                basket: u.map_or(&[], |u| &d.baskets[u]),
                stated: stated.get(id).map_or(&[][..], Vec::as_slice),
            }
        },
        |w, l| m.recommend(&l, w.basket, w.stated, &weights, bought, cfg),
    );
    tracing::debug!(
        seconds = t.elapsed().as_secs_f64(),
        customers = ids.len(),
        "recommendation lists made"
    );
    let top: Vec<Option<String>> = lists.iter().map(|l| l.first().map(|x| names[x.0 as usize].to_string())).collect();
    let batch = recommendations_batch(ids, &lists, names)?;
    let report = RecsReport {
        model: "blend".into(),
        weights: weights.into(),
        weight_validation: validation,
        neighbours: NEIGHBOURS,
        content_field_weights: m
            .content_fields
            .iter()
            .cloned()
            .zip(m.content.field_weights.iter().copied())
            .collect(),
        als: AlsSettings::of(cfg),
        rows: batch.num_rows(),
        association_rules: rules_report(&d, names, cfg),
    };
    Ok(Some(Recommendations {
        batch,
        report,
        top,
        item_factors: item_factors_batch(&m.als, names)?,
    }))
}

/// Item ids: the products bought, in order of first purchase, then the products in the
/// catalog nobody has bought yet (only content can rank them); and how many were bought.
fn index_items<'a>(p: &'a Purchases, catalog: &'a Catalog) -> (Items<'a>, u32) {
    let mut items = Items::bought_before(p, i64::MAX);
    let bought = items.len() as u32;
    for (name, _) in catalog.features.iter().filter(|(_, f)| !f.is_empty()) {
        let product = p.products.binary_search(name).ok();
        if product.is_some_and(|i| items.of[i].is_some()) {
            continue;
        }
        if let Some(i) = product {
            items.of[i] = Some(items.names.len() as u32);
        }
        items.names.push(name);
    }
    (items, bought)
}

/// Each surveyed customer's stated preferred categories as content features, for
/// customers who have not bought yet.
fn stated_categories(session: &Session<'_>, m: &Fitted) -> Result<HashMap<String, Vec<(u32, f64)>>> {
    let mut stated: HashMap<String, Vec<(u32, f64)>> = HashMap::new();
    if !session.workspace().has(Table::Surveys)? || m.feature_ids.is_empty() {
        return Ok(stated);
    }
    for r in session.text_rows(
        "SELECT customer_id, answer FROM surveys WHERE question = 'preferred_category' ORDER BY 1, 2",
        &Personal::Stored,
    )? {
        let (Some(c), Some(a)) = (&r[0], &r[1]) else { continue };
        if let Some(&f) = m.feature_ids.get(&Catalog::category_feature(a)) {
            let v = stated.entry(c.clone()).or_default();
            if !v.iter().any(|x| x.0 == f) {
                v.push((f, 1.0));
            }
        }
    }
    Ok(stated)
}

/// `out` with its last places given to the `fresh` products (never bought by anyone),
/// at most `k` in all.
fn with_new_products(mut out: Vec<(u32, f64, Source)>, fresh: Vec<(u32, f64)>, k: usize) -> Vec<(u32, f64, Source)> {
    if !fresh.is_empty() {
        out.truncate(k - fresh.len());
        out.extend(fresh.into_iter().map(|(i, s)| (i, s, Source::Content)));
    }
    out
}

/// The `recommendations` table: one row per customer and rank.
fn recommendations_batch(ids: &[String], lists: &[Vec<(u32, f64, Source)>], names: &[&str]) -> Result<RecordBatch> {
    let rows = || {
        lists
            .iter()
            .enumerate()
            .flat_map(|(u, l)| l.iter().enumerate().map(move |(r, x)| (u, r, x)))
    };
    let mut c = Columns::default();
    c.text("customer_id", false, rows().map(|(u, _, _)| Some(ids[u].as_str())));
    c.ints("rank", false, rows().map(|(_, r, _)| Some(r as i64 + 1)));
    c.text("product_id", false, rows().map(|(_, _, x)| Some(names[x.0 as usize])));
    c.floats("score", false, rows().map(|(_, _, x)| Some(x.1)));
    c.text("reason", false, rows().map(|(_, _, x)| Some(x.2.name())));
    c.finish()
}

/// Association rules over the (customer, day) baskets, for models.json.
fn rules_report(d: &Data, names: &[&str], cfg: &ModelsConfig) -> RulesReport {
    let rules = association_rules(&d.orders, cfg.rules_min_support, cfg.rules_min_confidence, 50);
    RulesReport {
        orders: d.orders.len(),
        min_support: cfg.rules_min_support,
        min_confidence: cfg.rules_min_confidence,
        rules: rules
            .iter()
            .map(|r| RuleFound {
                antecedent: r.antecedent.iter().map(|i| names[*i as usize].to_string()).collect(),
                consequent: names[r.consequent as usize].to_string(),
                support: r.support,
                support_count: r.support_count,
                confidence: r.confidence,
                lift: r.lift,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Purchases of (customer, product, day, lines) rows, indexed as `purchases` does.
    fn purchases_of(rows: &[(&str, &str, i32, u32)]) -> Purchases {
        let mut customers: Vec<String> = rows.iter().map(|r| r.0.to_string()).collect();
        let mut products: Vec<String> = rows.iter().map(|r| r.1.to_string()).collect();
        customers.sort();
        customers.dedup();
        products.sort();
        products.dedup();
        let at = |v: &[String], x: &str| v.iter().position(|y| y == x).unwrap() as u32;
        let mut rows: Vec<Purchase> = rows
            .iter()
            .map(|r| Purchase {
                customer: at(&customers, r.0),
                product: at(&products, r.1),
                day: r.2,
                lines: r.3,
            })
            .collect();
        rows.sort_by_key(|r| (r.customer, r.product, r.day));
        Purchases { customers, products, rows }
    }

    #[test]
    fn purchases_before_a_day_become_baskets_and_day_orders() {
        let p = purchases_of(&[
            ("a", "x", 1, 1),
            ("a", "x", 1, 2),
            ("a", "y", 2, 1),
            ("b", "y", 5, 1),
            ("b", "z", 9, 1),
        ]);
        let items = Items::bought_before(&p, i64::MAX);
        assert_eq!(items.names, ["x", "y", "z"]);
        let d = index_data(&p, &items, 9);
        assert_eq!(d.customers, [0, 1]);
        assert_eq!(d.baskets, [vec![(0, 3.0), (1, 1.0)], vec![(1, 1.0)]]);
        assert_eq!(d.orders, [vec![0], vec![1], vec![1]]);
        assert_eq!(p.customer("b"), Some(1));
        assert_eq!(p.customer("zz"), None);
        assert_eq!(p.until(2).rows.len(), 3);
    }

    #[test]
    fn a_time_split_scores_customers_who_bought_on_both_sides() {
        let p = purchases_of(&[
            ("a", "y", 1, 1),
            ("a", "x", 2, 1),
            ("b", "x", 3, 1),
            ("a", "w", 11, 1),
            ("a", "x", 12, 1),
            ("c", "x", 12, 1),
            ("b", "x", 30, 1),
        ]);
        let s = split(&p, 10, 20);
        // Items numbered by first purchase before the split (a bought x on day 2 and
        // y on day 1, but rows run by product within a customer); "w" is new after it.
        assert_eq!(s.items.names, ["x", "y"]);
        assert_eq!(s.train.customers, [0, 1]);
        // Only a bought on both sides (c is new, b came back after `until`).
        assert_eq!(s.evaluated, [0]);
        assert_eq!(s.relevant, [vec![0, 2]]);
    }

    #[test]
    fn ranking_scores_average_over_customers_and_coverage_counts_distinct_items() {
        let ranked = [vec![1, 2], vec![3, 4]];
        let relevant = [vec![2], vec![5]];
        let s = score(&ranked, &relevant, 2, 10);
        assert!((s.precision_at_k - 0.25).abs() < 1e-12, "{s:?}");
        assert!((s.recall_at_k - 0.5).abs() < 1e-12, "{s:?}");
        assert!(s.ndcg_at_k > 0.0 && s.ndcg_at_k < 0.5, "{s:?}");
        assert!((s.coverage - 0.4).abs() < 1e-12, "{s:?}");
        let none = score(&[], &[], 2, 0);
        assert_eq!((none.precision_at_k, none.coverage), (0.0, 0.0));
    }

    #[test]
    fn new_products_take_the_last_places() {
        let out = vec![(1, 0.9, Source::Als), (2, 0.8, Source::ItemKnn), (3, 0.7, Source::Popular)];
        let got = with_new_products(out.clone(), vec![(7, 0.2)], 3);
        assert_eq!(got, [(1, 0.9, Source::Als), (2, 0.8, Source::ItemKnn), (7, 0.2, Source::Content)]);
        assert_eq!(with_new_products(out.clone(), vec![], 3), out);
    }

    #[test]
    fn catalog_products_nobody_bought_get_ids_after_the_bought_ones() {
        let p = purchases_of(&[("a", "y", 1, 1), ("b", "x", 2, 1)]);
        let catalog = Catalog {
            category: BTreeMap::new(),
            features: [
                ("new".to_string(), vec!["category=books".to_string()]),
                ("x".to_string(), vec!["category=books".to_string()]),
                ("bare".to_string(), vec![]),
            ]
            .into(),
        };
        let (items, bought) = index_items(&p, &catalog);
        assert_eq!(bought, 2);
        assert_eq!(items.names, ["y", "x", "new"]);
        assert_eq!(items.of, [Some(1), Some(0)]);
    }

    /// Three customers over four products: "p0" bought by all, "p1" and "p2" together.
    fn fitted() -> (Fitted, Data) {
        let p = purchases_of(&[
            ("a", "p0", 1, 1),
            ("a", "p1", 1, 1),
            ("b", "p0", 2, 1),
            ("b", "p1", 2, 1),
            ("b", "p2", 2, 1),
            ("c", "p0", 3, 1),
            ("c", "p3", 3, 1),
        ]);
        let items = Items::bought_before(&p, i64::MAX);
        assert_eq!(items.names, ["p0", "p1", "p2", "p3"]);
        let d = index_data(&p, &items, 10);
        let cfg = ModelsConfig::default();
        (Fitted::fit(&d, &items.names, &Catalog::default(), &[], &cfg), d)
    }

    #[test]
    fn recommendations_leave_out_what_was_bought_and_fall_back_to_popularity() {
        let (m, d) = fitted();
        let cfg = ModelsConfig {
            recommendations: 2,
            ..ModelsConfig::default()
        };
        let w = [1.0, 1.0, 1.0, 0.0];
        // Customer a bought p0 and p1: p2 (bought with p1 by b) comes first.
        let who = [
            Who {
                u: Some(0),
                basket: &d.baskets[0],
                stated: &[],
            },
            Who {
                u: None,
                basket: &[],
                stated: &[],
            },
        ];
        let l = m.lists_many(&who);
        assert_eq!(l.len(), 2);
        let a = m.recommend(&l[0], &d.baskets[0], &[], &w, 4, &cfg);
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|x| x.0 >= 2), "{a:?}");
        assert_eq!(a[0].0, 2, "{a:?}");
        // A stranger with nothing bought and nothing stated: the most popular first.
        let s = m.recommend(&l[1], &[], &[], &w, 4, &cfg);
        assert_eq!(s.iter().map(|x| (x.0, x.2)).collect::<Vec<_>>()[0], (0, Source::Popular));
    }

    #[test]
    fn the_table_has_one_row_per_customer_and_rank() {
        let ids = ["c1".to_string(), "c2".to_string()];
        let lists = [vec![(1, 0.5, Source::Als), (0, 0.25, Source::Popular)], vec![]];
        let b = recommendations_batch(&ids, &lists, &["p0", "p1"]).unwrap();
        assert_eq!(b.num_rows(), 2);
        let text = crate::session::batches_as_text(&[b]).unwrap();
        assert_eq!(
            text[1],
            [
                Some("c1".into()),
                Some("2".into()),
                Some("p0".into()),
                Some("0.25".into()),
                Some("popular".into())
            ]
        );
    }
}
