//! Binary classifiers behind one interface, and their comparison by cross-validation:
//! an L2-regularised logistic regression on standardised features, gradient-boosted
//! trees (early-stopped on an inner validation split) and their blend (the mean of the
//! two probabilities). A caller compares them on held-out data and keeps the best.

use crate::error::ModelError;
use crate::gbt::{Gbt, GbtParams};
use crate::metrics::{auc, stratified_folds};
use crate::regression::{Logistic, Standardizer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Kind {
    Logistic,
    Gbt,
    Blend,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Logistic, Kind::Gbt, Kind::Blend];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Logistic => "logistic",
            Kind::Gbt => "gbt",
            Kind::Blend => "blend",
        }
    }
}

/// Both component models, fitted once; each [`Kind`] predicts from them.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Fitted {
    pub scaler: Standardizer,
    pub logistic: Logistic,
    pub gbt: Gbt,
}

/// L2 penalty of the logistic regression (on standardised features; scikit-learn's C = 1).
pub const L2: f64 = 1.0;

impl Fitted {
    pub fn fit(x: &[f64], d: usize, y: &[bool], seed: u64) -> Self {
        let scaler = Standardizer::fit(x, d);
        let logistic = Logistic::fit(&scaler.apply(x), d, y, L2);
        // Early stopping needs rows the trees do not see: a stratified sixth.
        let fold = stratified_folds(y, 6, seed ^ 0x5eed);
        let (mut tx, mut ty, mut vx, mut vy) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, &f) in fold.iter().enumerate() {
            let row = &x[i * d..(i + 1) * d];
            if f == 0 {
                vx.extend_from_slice(row);
                vy.push(y[i]);
            } else {
                tx.extend_from_slice(row);
                ty.push(y[i]);
            }
        }
        let params = GbtParams {
            seed,
            ..GbtParams::default()
        };
        let gbt = if vy.iter().any(|&v| v) && vy.iter().any(|&v| !v) {
            Gbt::fit(&tx, d, &ty, Some((&vx, &vy)), &params)
        } else {
            Gbt::fit(x, d, y, None, &GbtParams { trees: 100, ..params })
        };
        Fitted { scaler, logistic, gbt }
    }

    pub fn predict(&self, kind: Kind, x: &[f64]) -> Vec<f64> {
        let lr = || self.logistic.predict_all(&self.scaler.apply(x));
        match kind {
            Kind::Logistic => lr(),
            Kind::Gbt => self.gbt.predict_all(x),
            Kind::Blend => lr().iter().zip(self.gbt.predict_all(x)).map(|(a, b)| 0.5 * (a + b)).collect(),
        }
    }
}

/// Out-of-fold AUC of every kind.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossValidation {
    pub folds: usize,
    /// Per kind (in [`Kind::ALL`] order), the AUC of each fold.
    pub auc: Vec<(Kind, Vec<f64>)>,
}

impl CrossValidation {
    pub fn mean_sd(values: &[f64]) -> (f64, f64) {
        let n = values.len().max(1) as f64;
        let m = values.iter().sum::<f64>() / n;
        let v = values.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        (m, v.sqrt())
    }

    /// The kind with the highest mean AUC (ties: the simpler model, in [`Kind::ALL`] order).
    pub fn best(&self) -> Kind {
        let mut best = (Kind::Logistic, f64::NEG_INFINITY);
        for (k, a) in &self.auc {
            let m = Self::mean_sd(a).0;
            if m > best.1 + 1e-12 {
                best = (*k, m);
            }
        }
        best.0
    }
}

/// Builds `(x_train, x_test, d)` from training and test row numbers.
pub type Encoder<'a> = dyn Fn(&[usize], &[usize]) -> (Vec<f64>, Vec<f64>, usize) + 'a;

/// Stratified k-fold cross-validation. `encode(train_rows, test_rows)` builds the
/// training and test matrices (so any encoding is fitted on the training rows only) and
/// returns `(x_train, x_test, d)`.
pub fn cross_validate(y: &[bool], folds: usize, seed: u64, encode: &Encoder<'_>) -> Result<CrossValidation, ModelError> {
    let pos = y.iter().filter(|&&v| v).count();
    if pos < folds || y.len() - pos < folds {
        return Err(ModelError::TooLittleData(format!(
            "{pos} positive and {} negative rows: each class needs at least {folds} (one per fold)",
            y.len() - pos
        )));
    }
    let fold = stratified_folds(y, folds, seed);
    let mut aucs: Vec<(Kind, Vec<f64>)> = Kind::ALL.iter().map(|k| (*k, Vec::new())).collect();
    for f in 0..folds {
        let train: Vec<usize> = (0..y.len()).filter(|&i| fold[i] != f).collect();
        let test: Vec<usize> = (0..y.len()).filter(|&i| fold[i] == f).collect();
        let (xtr, xte, d) = encode(&train, &test);
        let ytr: Vec<bool> = train.iter().map(|&i| y[i]).collect();
        let yte: Vec<bool> = test.iter().map(|&i| y[i]).collect();
        let m = Fitted::fit(&xtr, d, &ytr, seed.wrapping_add(f as u64));
        for (k, a) in aucs.iter_mut() {
            a.push(auc(&m.predict(*k, &xte), &yte).unwrap_or(0.5));
        }
    }
    Ok(CrossValidation { folds, auc: aucs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn cross_validation_ranks_a_signal_above_chance() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 2000;
        let x: Vec<f64> = (0..n * 2).map(|_| rng.random::<f64>()).collect();
        let y: Vec<bool> = (0..n).map(|i| x[i * 2] + 0.3 * rng.random::<f64>() > 0.6).collect();
        let encode = |tr: &[usize], te: &[usize]| {
            let pick = |rows: &[usize]| rows.iter().flat_map(|&i| [x[i * 2], x[i * 2 + 1]]).collect::<Vec<_>>();
            (pick(tr), pick(te), 2)
        };
        let cv = cross_validate(&y, 5, 1, &encode).unwrap();
        for (_, a) in &cv.auc {
            assert_eq!(a.len(), 5);
            assert!(CrossValidation::mean_sd(a).0 > 0.9);
        }
        assert_eq!(cv, cross_validate(&y, 5, 1, &encode).unwrap());
        assert!(cross_validate(&[true, false, false], 5, 1, &encode).is_err());
    }
}
