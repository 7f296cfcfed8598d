//! The CLV stage of a run: BG/NBD, Pareto/NBD and Gamma-Gamma fitted by maximum
//! likelihood on the buyers' calibration histories and repeat spend, then per customer
//! P(alive), expected orders over each horizon, expected spend and the discounted value.

use rapport_model::bgnbd::BgNbd;
use rapport_model::btyd::{Fit, History};
use rapport_model::gamma_gamma::GammaGamma;
use rapport_model::pareto_nbd::ParetoNbd;
use rapport_model::ModelError;

use super::ModelInputs;
use crate::config::ModelsConfig;
use crate::results::{ClvFit, GammaGammaParams, ParetoNbdParams};
use crate::Result;

/// The fits and what they predict for every customer (`None` for non-buyers, or when
/// BG/NBD could not be fitted).
pub struct Clv {
    /// The gap analysis reads the BG/NBD parameters.
    pub bgnbd: Option<Fit<BgNbd>>,
    pub pareto_nbd: Option<ClvFit<ParetoNbdParams>>,
    pub gamma_gamma: ClvFit<GammaGammaParams>,
    pub p_alive: Vec<Option<f64>>,
    /// Per horizon of `horizons_days`, per customer.
    pub expected: Vec<Vec<Option<f64>>>,
    pub spend: Vec<Option<f64>>,
    pub clv: Vec<Option<f64>>,
}

/// Fits the three models; a fit the data are too thin for is recorded (or, for BG/NBD,
/// skipped with a warning) and the run goes on; a broken call is an error.
pub fn fit(inputs: &ModelInputs, cfg: &ModelsConfig) -> Result<Clv> {
    let histories = &inputs.histories;
    let (bgnbd, pareto_nbd) = if histories.is_empty() {
        (None, None)
    } else {
        let bgnbd = optional_fit(timed("BG/NBD", || BgNbd::fit(histories)), "bgnbd")?;
        let pareto_nbd = Some(clv_fit(timed("Pareto/NBD", || ParetoNbd::fit(histories)).map(ClvFit::from))?);
        (bgnbd, pareto_nbd)
    };
    let t = std::time::Instant::now();
    let gg = GammaGamma::fit(&inputs.spends);
    tracing::debug!(seconds = t.elapsed().as_secs_f64(), "Gamma-Gamma fitted");
    let gamma_gamma = clv_fit(gg.as_ref().map(ClvFit::from).map_err(Clone::clone))?;
    let mut clv = Clv {
        bgnbd,
        pareto_nbd,
        gamma_gamma,
        p_alive: Vec::new(),
        expected: Vec::new(),
        spend: Vec::new(),
        clv: Vec::new(),
    };
    let t = std::time::Instant::now();
    predict_customers(&mut clv, inputs, gg.ok().map(|g| g.params), cfg);
    tracing::debug!(seconds = t.elapsed().as_secs_f64(), "customers valued");
    Ok(clv)
}

/// P(alive), expected orders, expected spend and value of every buyer.
fn predict_customers(out: &mut Clv, inputs: &ModelInputs, gg: Option<GammaGamma>, cfg: &ModelsConfig) {
    let n = inputs.features.len();
    let f = &inputs.features;
    out.p_alive = vec![None; n];
    out.expected = vec![vec![None; n]; cfg.horizons_days.len()];
    out.spend = vec![None; n];
    out.clv = vec![None; n];
    let Some(p) = out.bgnbd.as_ref().map(|b| b.params) else {
        return;
    };
    for (k, &i) in inputs.buyers.iter().enumerate() {
        let v = value_of(
            &p,
            gg.as_ref(),
            &inputs.histories[k],
            f.repeat_spend[i],
            f.revenue[i],
            f.orders[i],
            cfg,
        );
        out.p_alive[i] = Some(v.p_alive);
        for (j, e) in v.expected.into_iter().enumerate() {
            out.expected[j][i] = e;
        }
        out.spend[i] = v.spend;
        out.clv[i] = v.clv;
    }
}

/// What the models say of one buyer.
#[derive(Debug, Clone, PartialEq)]
pub struct BuyerValue {
    pub p_alive: f64,
    /// Expected orders over each horizon of `horizons_days`.
    pub expected: Vec<Option<f64>>,
    /// Expected spend per order (Gamma-Gamma; the mean order value without it).
    pub spend: Option<f64>,
    /// Discounted expected margin over the CLV horizon.
    pub clv: Option<f64>,
}

/// P(alive), expected orders, expected spend and value of one buyer with history `h`
/// (in `cfg.time_unit`s), mean repeat spend `repeat_spend`, `revenue` over `orders`:
/// what `run` computes for every buyer, and live rescoring for one.
pub fn value_of(
    p: &BgNbd,
    gg: Option<&GammaGamma>,
    h: &History,
    repeat_spend: Option<f64>,
    revenue: f64,
    orders: f64,
    cfg: &ModelsConfig,
) -> BuyerValue {
    let unit = cfg.time_unit.days();
    let expected = cfg
        .horizons_days
        .iter()
        .map(|days| p.conditional_expected(f64::from(*days) / unit, h))
        .collect();
    let mean = match (gg, repeat_spend) {
        (Some(g), Some(m)) => g.expected_spend(h.x, m),
        (Some(g), None) => g.expected_spend(0.0, 0.0),
        (None, _) => revenue / orders.max(1.0),
    };
    let spend = mean.is_finite().then_some(mean);
    BuyerValue {
        p_alive: p.p_alive(h),
        expected,
        spend,
        clv: spend.and_then(|s| customer_value(p, h, s, cfg, unit)),
    }
}

/// Each buyer's BG/NBD P(alive) (None for non-buyers, or without a fit).
pub fn p_alive(bg: Option<&BgNbd>, inputs: &ModelInputs) -> Vec<Option<f64>> {
    let mut out = vec![None; inputs.features.len()];
    if let Some(p) = bg {
        for (k, &i) in inputs.buyers.iter().enumerate() {
            out[i] = Some(p.p_alive(&inputs.histories[k]));
        }
    }
    out
}

/// Discounted expected margin over the CLV horizon: the expected purchases of each
/// 30-day step, times expected spend and margin, discounted to the as-of date.
fn customer_value(p: &BgNbd, h: &History, spend: f64, cfg: &ModelsConfig, unit: f64) -> Option<f64> {
    let steps = cfg.clv_horizon_days.div_ceil(30);
    let mut prev = 0.0;
    let mut total = 0.0;
    for k in 1..=steps {
        let days = f64::from((k * 30).min(cfg.clv_horizon_days));
        let e = p.conditional_expected(days / unit, h)?;
        total += (e - prev) * spend * cfg.margin / (1.0 + cfg.discount_rate).powf(days / 365.0);
        prev = e;
    }
    total.is_finite().then_some(total)
}

/// A CLV fit for models.json: the fit, or why it failed when the data are too thin for
/// it; a broken call is an error.
fn clv_fit<P>(fit: std::result::Result<ClvFit<P>, ModelError>) -> Result<ClvFit<P>> {
    match fit {
        Ok(f) => Ok(f),
        Err(e @ ModelError::InvalidInput(_)) => Err(e.into()),
        Err(e) => Ok(ClvFit::failed(e.message())),
    }
}

/// A BTYD fit, its seconds and outcome logged at debug level
/// (`RAPPORT_LOG=rapport_engine=debug`).
pub(crate) fn timed<T>(
    model: &str,
    fit: impl FnOnce() -> std::result::Result<Fit<T>, ModelError>,
) -> std::result::Result<Fit<T>, ModelError> {
    let t = std::time::Instant::now();
    let r = fit();
    tracing::debug!(
        seconds = t.elapsed().as_secs_f64(),
        fit = ?r.as_ref().ok().map(|f| (f.converged, f.iterations, f.groups, &f.message)),
        "{model} fitted"
    );
    r
}

/// A fit the run can do without: `None` when the data are too thin for it (the run
/// goes on, as with no buyers at all); a broken call is an error.
pub(super) fn optional_fit<T>(fit: std::result::Result<T, ModelError>, model: &str) -> Result<Option<T>> {
    match fit {
        Ok(f) => Ok(Some(f)),
        Err(ModelError::TooLittleData(why)) => {
            tracing::warn!(model, "not fitted: {why}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
