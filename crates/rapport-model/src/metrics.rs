//! Classifier metrics: ROC AUC (with ties), log-loss, Brier score, precision / recall /
//! F1 at a threshold, calibration bins, and seeded stratified k-fold splits.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Area under the ROC curve: the probability that a random positive scores above a
/// random negative, ties counting one half (the Mann–Whitney statistic). `None` when one
/// class is absent.
pub fn auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    // Sum of the (average) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg * idx[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

/// Points (false positive rate, true positive rate) of the ROC curve, at most `max_points`.
pub fn roc_curve(scores: &[f64], labels: &[bool], max_points: usize) -> Vec<(f64, f64)> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let pos = labels.iter().filter(|&&l| l).count().max(1) as f64;
    let neg = (labels.len() as f64 - labels.iter().filter(|&&l| l).count() as f64).max(1.0);
    let mut pts = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    let step = (idx.len() / max_points.max(2)).max(1);
    for (n, &k) in idx.iter().enumerate() {
        if labels[k] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_tie = n + 1 == idx.len() || scores[idx[n + 1]] != scores[k];
        if last_of_tie && (n % step == 0 || n + 1 == idx.len()) {
            pts.push((fp / neg, tp / pos));
        }
    }
    pts
}

/// Mean negative log-likelihood of the labels under the probabilities (clipped at 1e-15).
pub fn log_loss(p: &[f64], labels: &[bool]) -> f64 {
    let s: f64 = p
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = p.clamp(1e-15, 1.0 - 1e-15);
            if y {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    s / p.len().max(1) as f64
}

/// Mean squared error of the probabilities.
pub fn brier(p: &[f64], labels: &[bool]) -> f64 {
    let s: f64 = p.iter().zip(labels).map(|(&p, &y)| (p - f64::from(u8::from(y))).powi(2)).sum();
    s / p.len().max(1) as f64
}

/// Precision, recall and F1 when `p >= threshold` is called positive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Confusion {
    pub threshold: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

pub fn confusion(p: &[f64], labels: &[bool], threshold: f64) -> Confusion {
    let (mut tp, mut fp, mut fneg) = (0.0, 0.0, 0.0);
    for (&p, &y) in p.iter().zip(labels) {
        match (p >= threshold, y) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fneg += 1.0,
            _ => {}
        }
    }
    let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
    let recall = if tp + fneg > 0.0 { tp / (tp + fneg) } else { 0.0 };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    Confusion {
        threshold,
        precision,
        recall,
        f1,
    }
}

/// The threshold (among 99 percentiles of `p`) with the highest F1.
pub fn best_f1(p: &[f64], labels: &[bool]) -> Confusion {
    let mut sorted = p.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut best = confusion(p, labels, 0.5);
    for q in 1..100 {
        let t = sorted[(sorted.len() - 1) * q / 100];
        let c = confusion(p, labels, t);
        if c.f1 > best.f1 {
            best = c;
        }
    }
    best
}

/// One calibration bin: mean predicted probability, observed rate and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationBin {
    pub predicted: f64,
    pub observed: f64,
    pub count: usize,
}

/// Equal-count bins of predicted probability with the observed rate in each.
pub fn calibration(p: &[f64], labels: &[bool], bins: usize) -> Vec<CalibrationBin> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let bins = bins.min(idx.len()).max(1);
    (0..bins)
        .filter_map(|b| {
            let part = &idx[b * idx.len() / bins..(b + 1) * idx.len() / bins];
            (!part.is_empty()).then(|| CalibrationBin {
                predicted: part.iter().map(|&i| p[i]).sum::<f64>() / part.len() as f64,
                observed: part.iter().filter(|&&i| labels[i]).count() as f64 / part.len() as f64,
                count: part.len(),
            })
        })
        .collect()
}

/// Fold number (0..k) of every row, stratified by label and shuffled with `seed`.
pub fn stratified_folds(labels: &[bool], k: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut fold = vec![0; labels.len()];
    for class in [false, true] {
        let mut rows: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        rows.shuffle(&mut rng);
        for (n, i) in rows.into_iter().enumerate() {
            fold[i] = n % k.max(1);
        }
    }
    fold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_as_half_and_needs_both_classes() {
        assert_eq!(auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]), Some(0.75));
        assert_eq!(auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(auc(&[0.5, 0.6], &[true, true]), None);
    }

    #[test]
    fn roc_curve_runs_from_origin_to_one_one() {
        let pts = roc_curve(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true], 10);
        assert_eq!(pts[0], (0.0, 0.0));
        assert_eq!(*pts.last().unwrap(), (1.0, 1.0));
    }

    #[test]
    fn confusion_and_best_f1() {
        let p = [0.9, 0.8, 0.3, 0.2];
        let y = [true, false, true, false];
        let c = confusion(&p, &y, 0.5);
        assert_eq!((c.precision, c.recall), (0.5, 0.5));
        assert!(best_f1(&p, &y).f1 >= c.f1);
    }

    #[test]
    fn folds_are_stratified_and_deterministic() {
        let y: Vec<bool> = (0..100).map(|i| i % 4 == 0).collect();
        let f = stratified_folds(&y, 5, 7);
        assert_eq!(f, stratified_folds(&y, 5, 7));
        for k in 0..5 {
            assert_eq!((0..100).filter(|&i| f[i] == k && y[i]).count(), 5);
            assert_eq!((0..100).filter(|&i| f[i] == k).count(), 20);
        }
    }

    #[test]
    fn calibration_of_perfect_probabilities() {
        let p = [0.0, 0.0, 1.0, 1.0];
        let bins = calibration(&p, &[false, false, true, true], 2);
        assert_eq!(bins.len(), 2);
        assert_eq!(bins[1].observed, 1.0);
        assert!((log_loss(&p, &[false, false, true, true])).abs() < 1e-12);
        assert_eq!(brier(&p, &[false, false, true, true]), 0.0);
    }
}
