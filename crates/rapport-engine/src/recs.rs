//! `rapport evaluate recs`: recommendations checked on a time split — trained on the
//! orders before the split, scored on the products each customer bought after it
//! (customers active on both sides), with precision@k, recall@k, NDCG@k and coverage,
//! next to the popularity baseline.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use datafusion::arrow::array::{Array, AsArray, Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use serde_json::{json, Value};

use rapport_model::recs::{popularity, ranking_metrics, Bm25, ItemKnn};
use rapport_store::Workspace;

use crate::session::{workspace_context, Personal};
use crate::{block_on, EngineError, Result};

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Neighbours kept per item (60 and 30 score best on Online Retail; 100 is a little worse).
pub const NEIGHBOURS: usize = 60;

/// (customer, product, day, lines) of completed purchases with a product.
fn purchases(ws: &Workspace) -> Result<Vec<(String, String, i64, f64)>> {
    let batches = block_on(async {
        let ctx = workspace_context(ws, &Personal::Stored).await?;
        Ok::<_, EngineError>(
            ctx.sql(
                "SELECT customer_id, product_id, CAST(ordered_at AS BIGINT) AS at, CAST(count(*) AS DOUBLE) AS n FROM orders
                 WHERE product_id IS NOT NULL AND quantity > 0 AND status = 'completed'
                 GROUP BY customer_id, product_id, ordered_at",
            )
            .await?
            .collect()
            .await?,
        )
    })?;
    let mut out = Vec::new();
    for b in &batches {
        let col =
            |i: usize, t: &DataType| datafusion::arrow::compute::cast(b.column(i), t).map_err(datafusion::error::DataFusionError::from);
        let (c, p, t, n) = (
            col(0, &DataType::Utf8)?,
            col(1, &DataType::Utf8)?,
            col(2, &DataType::Int64)?,
            col(3, &DataType::Float64)?,
        );
        let (c, p, t, n) = (
            c.as_string::<i32>(),
            p.as_string::<i32>(),
            t.as_primitive::<Int64Type>(),
            n.as_primitive::<Float64Type>(),
        );
        for r in 0..b.num_rows() {
            if !c.is_null(r) && !p.is_null(r) {
                out.push((
                    c.value(r).to_string(),
                    p.value(r).to_string(),
                    t.value(r).div_euclid(MICROS_PER_DAY),
                    n.value(r),
                ));
            }
        }
    }
    Ok(out)
}

/// Evaluates on the split at the start of `split_day` (days since 1970-01-01).
pub fn evaluate(ws: &Workspace, split_day: i64, k: usize) -> Result<Value> {
    let rows = purchases(ws)?;
    if rows.is_empty() {
        return Err(EngineError::Usage("no orders with a product_id: recommendations need them".into()));
    }
    let mut items: BTreeMap<&str, u32> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.2 < split_day) {
        let next = items.len() as u32;
        items.entry(r.1.as_str()).or_insert(next);
    }
    let mut train: BTreeMap<&str, HashMap<u32, f64>> = BTreeMap::new();
    let mut test: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    // Products first sold after the split are relevant too (no model can hit them): they
    // get ids past the known ones.
    let mut new_items: BTreeMap<&str, u32> = BTreeMap::new();
    let known = items.len() as u32;
    for r in &rows {
        match items.get(r.1.as_str()) {
            Some(&i) if r.2 < split_day => *train.entry(r.0.as_str()).or_default().entry(i).or_insert(0.0) += r.3,
            Some(&i) => {
                test.entry(r.0.as_str()).or_default().insert(i);
            }
            None => {
                let next = known + new_items.len() as u32;
                let i = *new_items.entry(r.1.as_str()).or_insert(next);
                test.entry(r.0.as_str()).or_default().insert(i);
            }
        }
    }
    let customers: Vec<&str> = train.keys().copied().collect();
    let baskets: Vec<Vec<(u32, f64)>> = customers
        .iter()
        .map(|c| {
            let mut b: Vec<(u32, f64)> = train[c].iter().map(|(i, n)| (*i, *n)).collect();
            b.sort_by_key(|x| x.0);
            b
        })
        .collect();
    let n_items = items.len();
    let t0 = std::time::Instant::now();
    let knn = ItemKnn::fit(&baskets, n_items, NEIGHBOURS, Bm25::default());
    let fit_seconds = t0.elapsed().as_secs_f64();
    let pop = popularity(&baskets, n_items);
    let evaluated: Vec<usize> = (0..customers.len())
        .filter(|&u| test.get(customers[u]).is_some_and(|t| !t.is_empty()))
        .collect();
    if evaluated.is_empty() {
        return Err(EngineError::Usage("no customer bought both before and after the split".into()));
    }
    let mut report = serde_json::Map::new();
    for name in ["item_knn_bm25", "popular"] {
        let (mut p, mut r, mut nd) = (0.0, 0.0, 0.0);
        let mut shown: BTreeSet<u32> = BTreeSet::new();
        for &u in &evaluated {
            let basket = &baskets[u];
            let ranked: Vec<u32> = if name == "popular" {
                let bought: BTreeSet<u32> = basket.iter().map(|x| x.0).collect();
                pop.iter().map(|x| x.0).filter(|i| !bought.contains(i)).take(k).collect()
            } else {
                let mut v: Vec<u32> = knn.recommend(basket, k, false).into_iter().map(|x| x.0).collect();
                // Too few neighbours: fill with popular items not yet bought.
                let bought: BTreeSet<u32> = basket.iter().map(|x| x.0).collect();
                for &(i, _) in &pop {
                    if v.len() >= k {
                        break;
                    }
                    if !bought.contains(&i) && !v.contains(&i) {
                        v.push(i);
                    }
                }
                v
            };
            shown.extend(ranked.iter().copied());
            let relevant: Vec<u32> = test[customers[u]].iter().copied().collect();
            let (a, b, c) = ranking_metrics(&ranked, &relevant, k);
            p += a;
            r += b;
            nd += c;
        }
        let m = evaluated.len() as f64;
        report.insert(
            name.into(),
            json!({"precision_at_k": p / m, "recall_at_k": r / m, "ndcg_at_k": nd / m, "coverage": shown.len() as f64 / n_items.max(1) as f64}),
        );
    }
    Ok(json!({
        "split": crate::run::day_text(split_day),
        "k": k,
        "customers_evaluated": evaluated.len(),
        "items": n_items,
        "fit_seconds": fit_seconds,
        "models": report,
    }))
}

/// The split day: `--split-date YYYY-MM-DD`, or `holdout_days` before the day after the
/// last order.
pub fn split_day(ws: &Workspace, split_date: Option<&str>, holdout_days: Option<u32>) -> Result<i64> {
    match (split_date, holdout_days) {
        (Some(d), _) => crate::run::parse_as_of(d),
        (None, Some(h)) => {
            let last = purchases(ws)?
                .iter()
                .map(|r| r.2)
                .max()
                .ok_or_else(|| EngineError::Usage("no orders with a product_id".into()))?;
            Ok(last + 1 - i64::from(h))
        }
        (None, None) => Err(EngineError::Usage(
            "evaluate recs needs --split-date YYYY-MM-DD or --holdout-days N".into(),
        )),
    }
}

/// The `recommendations` table as of the end of `as_of_day`: for every customer who has
/// bought, the `k` best products they have not bought yet by item-to-item neighbours
/// (reason `item_knn`), topped up with the most popular ones (reason `popular`); for
/// customers without purchases, the most popular products. `None` without product ids.
pub fn recommendations(ws: &Workspace, ids: &[String], as_of_day: i64, k: usize) -> Result<Option<RecordBatch>> {
    let rows: Vec<_> = purchases(ws)?.into_iter().filter(|r| r.2 <= as_of_day).collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let mut items: BTreeMap<&str, u32> = BTreeMap::new();
    for r in &rows {
        let next = items.len() as u32;
        items.entry(r.1.as_str()).or_insert(next);
    }
    let names: Vec<&str> = {
        let mut v = vec![""; items.len()];
        for (name, &i) in &items {
            v[i as usize] = name;
        }
        v
    };
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let mut counts: Vec<HashMap<u32, f64>> = vec![HashMap::new(); ids.len()];
    for r in &rows {
        if let Some(&u) = index.get(r.0.as_str()) {
            *counts[u].entry(items[r.1.as_str()]).or_insert(0.0) += r.3;
        }
    }
    let baskets: Vec<Vec<(u32, f64)>> = counts
        .into_iter()
        .map(|c| {
            let mut b: Vec<(u32, f64)> = c.into_iter().collect();
            b.sort_by_key(|x| x.0);
            b
        })
        .collect();
    let knn = ItemKnn::fit(&baskets, items.len(), NEIGHBOURS, Bm25::default());
    let pop = popularity(&baskets, items.len());
    let (mut cid, mut rank, mut pid, mut score, mut reason) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (u, basket) in baskets.iter().enumerate() {
        let bought: BTreeSet<u32> = basket.iter().map(|x| x.0).collect();
        let mut list: Vec<(u32, f64, &str)> = knn
            .recommend(basket, k, false)
            .into_iter()
            .map(|(i, s)| (i, s, "item_knn"))
            .collect();
        for &(i, s) in &pop {
            if list.len() >= k {
                break;
            }
            if !bought.contains(&i) && !list.iter().any(|x| x.0 == i) {
                list.push((i, s / baskets.len().max(1) as f64, "popular"));
            }
        }
        for (r, (i, s, why)) in list.into_iter().enumerate() {
            cid.push(ids[u].as_str());
            rank.push(r as i64 + 1);
            pid.push(names[i as usize]);
            score.push(s);
            reason.push(why);
        }
    }
    let schema = datafusion::arrow::datatypes::Schema::new(vec![
        datafusion::arrow::datatypes::Field::new("customer_id", DataType::Utf8, false),
        datafusion::arrow::datatypes::Field::new("rank", DataType::Int64, false),
        datafusion::arrow::datatypes::Field::new("product_id", DataType::Utf8, false),
        datafusion::arrow::datatypes::Field::new("score", DataType::Float64, false),
        datafusion::arrow::datatypes::Field::new("reason", DataType::Utf8, false),
    ]);
    Ok(Some(
        RecordBatch::try_new(
            std::sync::Arc::new(schema),
            vec![
                std::sync::Arc::new(StringArray::from(cid)),
                std::sync::Arc::new(Int64Array::from(rank)),
                std::sync::Arc::new(StringArray::from(pid)),
                std::sync::Arc::new(Float64Array::from(score)),
                std::sync::Arc::new(StringArray::from(reason)),
            ],
        )
        .map_err(datafusion::error::DataFusionError::from)?,
    ))
}
