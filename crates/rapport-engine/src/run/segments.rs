//! The segments stage of a run: RFM scores and segments, clusters on behaviour
//! features, each buyer's main order channel, and the `segments` table (RFM segments and
//! clusters with their sizes, revenue shares, feature means and a description of what
//! sets each apart).

use std::collections::BTreeMap;

use datafusion::arrow::record_batch::RecordBatch;

use rapport_model::dbscan;
use rapport_model::kmeans::{fit, gap_statistic, gap_supported, sample_indices, silhouette, KMeansParams};
use rapport_model::rfm;

use super::activity::Activity;
use super::features::Features;
use super::ModelInputs;
use crate::columns::Columns;
use crate::config::{Clustering, ModelsConfig};
use crate::results::{ClusterReport, DbscanReport, GapStatistic, KMeansReport};
use crate::Result;

/// The clustering features, in the order of the segments table's mean columns.
pub const FEATURES: [&str; 5] = ["recency_days", "orders", "revenue", "avg_order_value", "tenure_days"];
const TRANSFORM: &str = "log1p, then standardised";

/// Every way the run groups customers.
pub struct Segmentation {
    /// Each buyer's RFM scores and segment (None for non-buyers).
    pub rfm: Vec<Option<rfm::Rfm>>,
    pub clusters: Option<Clusters>,
    /// The channel each buyer's order lines mostly go through.
    pub channels: Vec<Option<String>>,
    /// Per customer, (segment_id, name) of every segment they belong to.
    pub members: Vec<Vec<(String, String)>>,
}

impl Segmentation {
    /// Each customer's RFM segment name.
    pub fn rfm_names(&self) -> Vec<Option<&'static str>> {
        self.rfm.iter().map(|r| r.map(|r| r.segment)).collect()
    }
}

/// RFM, clusters and channels of the customers as of the inputs' date.
pub fn segment(inputs: &ModelInputs, cfg: &ModelsConfig) -> Result<Segmentation> {
    let f = &inputs.features;
    let rfm = rfm_of(f, &inputs.buyers, inputs.as_of_day);
    let clusters = cluster(f, &inputs.buyers, inputs.as_of_day, cfg)?;
    let channels = main_channels(f, &inputs.activity);
    let members = memberships(f.len(), &rfm, clusters.as_ref(), &channels);
    Ok(Segmentation {
        rfm,
        clusters,
        channels,
        members,
    })
}

/// Each buyer's RFM scores and segment as of `as_of_day` (None for non-buyers).
pub fn rfm_of(features: &Features, buyers: &[usize], as_of_day: i64) -> Vec<Option<rfm::Rfm>> {
    let recency: Vec<f64> = buyers
        .iter()
        .map(|&i| (as_of_day - features.last_day[i].expect("buyer")) as f64)
        .collect();
    let freq: Vec<f64> = buyers.iter().map(|&i| features.orders[i]).collect();
    let mon: Vec<f64> = buyers.iter().map(|&i| features.revenue[i]).collect();
    let scores = rfm::score(&recency, &freq, &mon);
    let mut out = vec![None; features.len()];
    for (k, &i) in buyers.iter().enumerate() {
        out[i] = Some(scores[k]);
    }
    out
}

/// The channel a buyer's order lines mostly go through (ties: the first by name).
fn main_channels(f: &Features, activity: &Activity) -> Vec<Option<String>> {
    (0..f.len())
        .map(|i| {
            if f.purchase_days[i] == 0.0 {
                return None;
            }
            activity
                .with_prefix("channel:")
                .filter(|(_, v)| v[i] > 0.0)
                .max_by(|a, b| a.1[i].total_cmp(&b.1[i]).then(b.0.cmp(a.0)))
                .map(|(c, _)| c.to_string())
        })
        .collect()
}

fn raw_features(f: &Features, i: usize, as_of_day: i64) -> [f64; 5] {
    let recency = (as_of_day - f.last_day[i].unwrap_or(as_of_day)) as f64;
    let tenure = (as_of_day - f.first_day[i].unwrap_or(as_of_day)) as f64;
    let aov = if f.orders[i] > 0.0 { f.revenue[i] / f.orders[i] } else { 0.0 };
    [recency, f.orders[i], f.revenue[i], aov, tenure]
}

/// The segment of customers whose orders mostly go through `channel`.
pub fn channel_segment(channel: &str) -> (String, String) {
    (format!("channel-{channel}"), format!("{channel} customers"))
}

/// The id and name of each segment a customer belongs to (RFM, cluster, main channel).
pub fn memberships(
    n: usize,
    rfm_of: &[Option<rfm::Rfm>],
    clusters: Option<&Clusters>,
    channels: &[Option<String>],
) -> Vec<Vec<(String, String)>> {
    (0..n)
        .map(|i| {
            let mut m = Vec::new();
            if let Some(r) = rfm_of[i] {
                let idx = rfm::SEGMENTS.iter().position(|s| *s == r.segment).unwrap_or(0);
                m.push((format!("rfm-{idx:02}"), r.segment.to_string()));
            }
            if let Some(l) = clusters.and_then(|c| c.labels[i]) {
                m.push((format!("cluster-{l:02}"), clusters.expect("labelled").report.names()[l].clone()));
            }
            if let Some(ch) = &channels[i] {
                m.push(channel_segment(ch));
            }
            m
        })
        .collect()
}

/// The clustering matrix of the buyers (row-major, `FEATURES.len()` columns): each
/// feature log1p-transformed, then standardised.
pub fn cluster_matrix(f: &Features, buyers: &[usize], as_of_day: i64) -> Vec<f64> {
    let m = buyers.len().max(1);
    let d = FEATURES.len();
    let mut x: Vec<f64> = Vec::with_capacity(m * d);
    for &i in buyers {
        x.extend(raw_features(f, i, as_of_day).iter().map(|v| v.max(0.0).ln_1p()));
    }
    let mut mean = vec![0.0; d];
    let mut sd = vec![0.0; d];
    for row in x.chunks_exact(d) {
        for j in 0..d {
            mean[j] += row[j] / m as f64;
        }
    }
    for row in x.chunks_exact(d) {
        for j in 0..d {
            sd[j] += (row[j] - mean[j]).powi(2) / m as f64;
        }
    }
    for s in sd.iter_mut() {
        *s = s.sqrt().max(1e-9);
    }
    for row in x.chunks_exact_mut(d) {
        for j in 0..d {
            row[j] = (row[j] - mean[j]) / sd[j];
        }
    }
    x
}

pub struct Clusters {
    /// Per customer (all customers), the cluster of buyers.
    pub labels: Vec<Option<usize>>,
    pub report: ClusterReport,
}

/// k-means on log-transformed, standardised features of the buyers. k is chosen in
/// `k_min..=k_max` where the data show structure: the gap statistic (Tibshirani et al.
/// 2001, on a sample of at most 3,000 buyers) names the k it supports (adding a cluster
/// tightens the data no more than it tightens structureless data), and among those the
/// k with the best silhouette wins; when it supports none in the range, the silhouette
/// alone chooses.
pub fn cluster(f: &Features, buyers: &[usize], as_of_day: i64, cfg: &ModelsConfig) -> Result<Option<Clusters>> {
    let m = buyers.len();
    if m < cfg.k_min * 5 {
        return Ok(None);
    }
    let d = FEATURES.len();
    let x = cluster_matrix(f, buyers, as_of_day);
    if cfg.clustering == Clustering::Dbscan {
        return cluster_dbscan(f, buyers, &x, cfg).map(Some);
    }
    let sample = sample_indices(m, 3000, cfg.seed);
    let k_max = cfg.k_max.min(m - 1);
    let xs: Vec<f64> = sample.iter().flat_map(|&k| x[k * d..(k + 1) * d].iter().copied()).collect();
    let stats = gap_statistic(&xs, d, (k_max + 1).min(sample.len()), 10, cfg.seed)?;
    let supported = gap_supported(&stats);
    let in_range: Vec<usize> = supported.iter().copied().filter(|k| (cfg.k_min..=k_max).contains(k)).collect();
    let mut by_k = BTreeMap::new();
    let mut best: Option<(usize, f64, rapport_model::kmeans::KMeans)> = None;
    for k in cfg.k_min..=k_max {
        let km = fit(&x, d, &KMeansParams::new(k, cfg.seed))?;
        let s = silhouette(&x, d, &km.labels, k, &sample);
        by_k.insert(k.to_string(), s.is_finite().then_some(s));
        let eligible = in_range.is_empty() || in_range.contains(&k);
        if eligible && best.as_ref().is_none_or(|b| s > b.1) {
            best = Some((k, s, km));
        }
    }
    let Some((k, s, km)) = best else { return Ok(None) };
    let names: Vec<String> = (0..k).map(|c| cluster_name(c, &km.centroids[c * d..(c + 1) * d])).collect();
    let mut labels = vec![None; f.len()];
    for (k_i, &i) in buyers.iter().enumerate() {
        labels[i] = Some(km.labels[k_i]);
    }
    let gap_by_k = stats
        .iter()
        .map(|g| (g.k.to_string(), GapStatistic { gap: g.gap, s: g.s }))
        .collect();
    let criterion = if in_range.is_empty() {
        "silhouette (the gap statistic supports no k in range)"
    } else {
        "gap statistic, then silhouette among the k it supports"
    };
    let report = ClusterReport::Kmeans(KMeansReport {
        k,
        k_min: cfg.k_min,
        k_max,
        criterion: criterion.into(),
        silhouette: s,
        inertia: km.inertia,
        iterations: km.iterations,
        converged: km.converged,
        silhouette_by_k: by_k,
        gap_by_k,
        gap_first_k: supported.first().copied(),
        gap_supported_k: supported,
        features: FEATURES.iter().map(|f| f.to_string()).collect(),
        transform: TRANSFORM.into(),
        names,
    });
    Ok(Some(Clusters { labels, report }))
}

/// Words for a standardised feature far from the average: (below, above).
fn feature_words(j: usize) -> (&'static str, &'static str) {
    match FEATURES[j] {
        "recency_days" => ("recent", "lapsed"),
        "orders" => ("infrequent", "frequent"),
        "revenue" => ("low spend", "high spend"),
        "avg_order_value" => ("small baskets", "large baskets"),
        "tenure_days" => ("new", "long-standing"),
        other => unreachable!("no words for feature {other}"),
    }
}

/// Names a cluster by the two standardised features farthest from the average
/// ("cluster 2: frequent, high spend").
fn cluster_name(c: usize, centroid: &[f64]) -> String {
    let mut by_distance: Vec<(usize, f64)> = centroid.iter().copied().enumerate().collect();
    by_distance.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
    let words: Vec<&str> = by_distance
        .iter()
        .take(2)
        .filter(|(_, v)| v.abs() >= 0.25)
        .map(|&(j, v)| if v < 0.0 { feature_words(j).0 } else { feature_words(j).1 })
        .collect();
    if words.is_empty() {
        format!("cluster {c}: average")
    } else {
        format!("cluster {c}: {}", words.join(", "))
    }
}

/// Per clustering feature, over a set of buyers: the mean and standard deviation of its
/// log1p, and the median of its raw value.
struct Spread {
    log_mean: Vec<f64>,
    log_sd: Vec<f64>,
    median: Vec<f64>,
}

impl Spread {
    fn of(f: &Features, set: &[usize], as_of_day: i64) -> Self {
        let d = FEATURES.len();
        let rows: Vec<[f64; 5]> = set.iter().map(|&i| raw_features(f, i, as_of_day)).collect();
        let count = rows.len().max(1) as f64;
        let (mut log_mean, mut log_sd, mut median) = (vec![0.0; d], vec![0.0; d], vec![f64::NAN; d]);
        for j in 0..d {
            let logs: Vec<f64> = rows.iter().map(|r| r[j].max(0.0).ln_1p()).collect();
            log_mean[j] = logs.iter().sum::<f64>() / count;
            log_sd[j] = (logs.iter().map(|v| (v - log_mean[j]).powi(2)).sum::<f64>() / count).sqrt();
            let mut raw: Vec<f64> = rows.iter().map(|r| r[j]).collect();
            raw.sort_by(f64::total_cmp);
            median[j] = raw.get(raw.len() / 2).copied().unwrap_or(f64::NAN);
        }
        Spread { log_mean, log_sd, median }
    }
}

/// What sets a group of buyers apart from `all` buyers: the two features whose mean
/// (log-transformed, in standard deviations of all buyers) is farthest from all buyers',
/// each with the group's median against all buyers' ("orders: median 6 vs 2 for all
/// buyers (+1.4 sd)").
fn describe(f: &Features, members: &[usize], all: &Spread, as_of_day: i64) -> String {
    let own = Spread::of(f, members, as_of_day);
    let mut z: Vec<(usize, f64)> = (0..FEATURES.len())
        .map(|j| (j, (own.log_mean[j] - all.log_mean[j]) / all.log_sd[j].max(1e-9)))
        .collect();
    z.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
    z.iter()
        .take(2)
        .map(|&(j, zj)| {
            format!(
                "{}: median {} vs {} for all buyers ({:+.1} sd)",
                FEATURES[j].replace('_', " "),
                round_for_text(own.median[j]),
                round_for_text(all.median[j]),
                zj
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn round_for_text(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// DBSCAN on at most 50,000 buyers (a seeded sample); the others join the cluster of
/// their nearest core point within eps. Noise has no cluster.
fn cluster_dbscan(f: &Features, buyers: &[usize], x: &[f64], cfg: &ModelsConfig) -> Result<Clusters> {
    let d = FEATURES.len();
    let m = buyers.len();
    let mut fit_rows = sample_indices(m, 50_000, cfg.seed);
    fit_rows.sort_unstable();
    let pick = |rows: &[usize]| rows.iter().flat_map(|&k| x[k * d..(k + 1) * d].iter().copied()).collect::<Vec<_>>();
    let xf = pick(&fit_rows);
    let model = dbscan::dbscan(&xf, d, cfg.dbscan_eps, cfg.dbscan_min_points)?;
    let mut label_of = vec![None; m];
    for (j, &k) in fit_rows.iter().enumerate() {
        label_of[k] = model.labels[j];
    }
    if fit_rows.len() < m {
        let fitted: std::collections::HashSet<usize> = fit_rows.iter().copied().collect();
        let rest: Vec<usize> = (0..m).filter(|k| !fitted.contains(k)).collect();
        for (k, l) in rest.iter().zip(dbscan::assign(&model, &xf, &pick(&rest), d, cfg.dbscan_eps)) {
            label_of[*k] = l;
        }
    }
    let mut centroids = vec![0.0; model.clusters * d];
    let mut sizes = vec![0usize; model.clusters];
    for (k, l) in label_of.iter().enumerate() {
        if let Some(c) = l {
            sizes[*c] += 1;
            for j in 0..d {
                centroids[c * d + j] += x[k * d + j];
            }
        }
    }
    for c in 0..model.clusters {
        for j in 0..d {
            centroids[c * d + j] /= sizes[c].max(1) as f64;
        }
    }
    let names: Vec<String> = (0..model.clusters)
        .map(|c| cluster_name(c, &centroids[c * d..(c + 1) * d]))
        .collect();
    let mut labels = vec![None; f.len()];
    for (k, &i) in buyers.iter().enumerate() {
        labels[i] = label_of[k];
    }
    let noise = label_of.iter().filter(|l| l.is_none()).count();
    let report = ClusterReport::Dbscan(DbscanReport {
        k: model.clusters,
        eps: cfg.dbscan_eps,
        min_points: cfg.dbscan_min_points,
        noise,
        noise_share: noise as f64 / m.max(1) as f64,
        fitted_on: fit_rows.len(),
        sizes,
        features: FEATURES.iter().map(|f| f.to_string()).collect(),
        transform: TRANSFORM.into(),
        names,
    });
    Ok(Clusters { labels, report })
}

/// One row per RFM segment and per cluster.
pub fn segments_batch(
    f: &Features,
    buyers: &[usize],
    rfm_of: &[Option<rfm::Rfm>],
    clusters: Option<&Clusters>,
    channels: &[Option<String>],
    as_of_day: i64,
) -> Result<RecordBatch> {
    let total_rev: f64 = buyers.iter().map(|&i| f.revenue[i].max(0.0)).sum::<f64>().max(f64::MIN_POSITIVE);
    let n = buyers.len().max(1) as f64;
    let groups = groups(f.len(), buyers, rfm_of, clusters, channels);
    let all = Spread::of(f, buyers, as_of_day);
    let mut c = Columns::default();
    c.text("segment_id", false, groups.keys().map(|k| Some(k.1.as_str())));
    c.text("kind", false, groups.keys().map(|k| Some(k.0.as_str())));
    c.text("name", false, groups.keys().map(|k| Some(k.2.as_str())));
    c.ints("customers", false, groups.values().map(|m| Some(m.len() as i64)));
    c.floats("share", false, groups.values().map(|m| Some(m.len() as f64 / n)));
    let revenue = |m: &Vec<usize>| m.iter().map(|&i| f.revenue[i].max(0.0)).sum::<f64>() / total_rev;
    c.floats("revenue_share", false, groups.values().map(|m| Some(revenue(m))));
    let descriptions: Vec<String> = groups.values().map(|m| describe(f, m, &all, as_of_day)).collect();
    c.text("description", false, descriptions.iter().map(|d| Some(d.as_str())));
    for (j, feature) in FEATURES.iter().enumerate() {
        let mean = |m: &Vec<usize>| m.iter().map(|&i| raw_features(f, i, as_of_day)[j]).sum::<f64>() / m.len() as f64;
        c.floats(&format!("mean_{feature}"), false, groups.values().map(|m| Some(mean(m))));
    }
    c.finish()
}

/// (kind, id, name) of every segment, cluster and channel group with its buyers; the
/// kind is the id's prefix.
fn groups(
    n: usize,
    buyers: &[usize],
    rfm_of: &[Option<rfm::Rfm>],
    clusters: Option<&Clusters>,
    channels: &[Option<String>],
) -> BTreeMap<(String, String, String), Vec<usize>> {
    let mut groups: BTreeMap<(String, String, String), Vec<usize>> = BTreeMap::new();
    let member_of = memberships(n, rfm_of, clusters, channels);
    for &i in buyers {
        for (id, name) in &member_of[i] {
            let kind = id.split_once('-').map_or(id.as_str(), |(k, _)| k).to_string();
            groups.entry((kind, id.clone(), name.clone())).or_default().push(i);
        }
    }
    groups
}
