//! The CLV models on the CDNOW sample against the published values (Fader, Hardie & Lee
//! 2005; Fader & Hardie's Gamma-Gamma note; the BTYD walkthrough). Time unit: weeks;
//! calibration ends 1997-09-30 (week 39); repeat transactions are distinct purchase days.

use rapport_model::bgnbd::BgNbd;
use rapport_model::btyd::History;
use rapport_model::gamma_gamma::{GammaGamma, Spend};

struct Row {
    id: u32,
    x: f64,
    t_x: f64,
    t: f64,
    zbar: f64,
}

fn summary() -> Vec<Row> {
    let text = include_str!("data/cdnow_customers_summary_with_transactions.csv");
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<f64> = l.split(',').map(|v| v.trim().parse().unwrap()).collect();
            Row {
                id: f[0] as u32,
                x: f[1],
                t_x: f[2],
                t: f[3],
                zbar: f[4],
            }
        })
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

#[test]
fn bgnbd_reproduces_the_paper() {
    let rows = summary();
    let hist: Vec<History> = rows.iter().map(|r| History::new(r.x, r.t_x, r.t)).collect();
    let fit = BgNbd::fit(&hist).unwrap();
    let p = fit.params;
    assert!(fit.converged, "{fit:?}");
    for (got, want) in [(p.r, 0.2426), (p.alpha, 4.4136), (p.a, 0.7929), (p.b, 2.4259)] {
        assert!(rel(got, want) <= 1e-3, "{got} vs {want}");
    }
    assert!((fit.log_likelihood + 9582.43).abs() < 0.01, "{}", fit.log_likelihood);
    assert!(fit.groups < hist.len(), "histories are grouped");

    // Customer 1516: x = 26, t_x = 30.86, T = 31.
    let c = rows.iter().find(|r| r.id == 1516).unwrap();
    let h = History::new(c.x, c.t_x, c.t);
    let e52 = p.conditional_expected(52.0, &h).unwrap();
    assert!((e52 - 25.757).abs() < 0.01, "{e52}");
    assert!((p.p_alive(&h) - 0.96885).abs() < 1e-4, "{}", p.p_alive(&h));
    assert!((p.expected_purchases(52.0).unwrap() - 1.444).abs() < 1e-3);
}

/// The number of distinct repeat purchase days of the sample in weeks 0–78.
fn holdout_repeat_days() -> usize {
    let text = include_str!("data/CDNOW_sample.txt");
    let mut first: std::collections::BTreeMap<u32, u32> = std::collections::BTreeMap::new();
    let mut days: std::collections::BTreeSet<(u32, u32)> = std::collections::BTreeSet::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let id: u32 = f[1].parse().unwrap();
        let d = f[2];
        let (y, m, dd): (i32, u32, u32) = (d[..4].parse().unwrap(), d[4..6].parse().unwrap(), d[6..].parse().unwrap());
        let day = days_since_1997(y, m, dd);
        days.insert((id, day));
        let e = first.entry(id).or_insert(day);
        *e = (*e).min(day);
    }
    days.iter().filter(|(id, d)| first[id] != *d).count()
}

fn days_since_1997(y: i32, m: u32, d: u32) -> u32 {
    // Neither 1997 nor 1998 is a leap year.
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let base = if y == 1998 { 365 } else { 0 };
    base + cum[(m - 1) as usize] + d - 1
}

#[test]
fn bgnbd_tracks_the_holdout_like_the_paper() {
    let rows = summary();
    let hist: Vec<History> = rows.iter().map(|r| History::new(r.x, r.t_x, r.t)).collect();
    let p = BgNbd::fit(&hist).unwrap().params;
    let actual = holdout_repeat_days();
    assert_eq!(actual, 4339, "cumulative repeat transactions at week 78");
    // Calibration ends on day 272 (1997-09-30), the holdout 39 weeks later on
    // 1998-06-30: each customer's horizon is their age T plus 39 weeks.
    let forecast: f64 = rows.iter().map(|r| p.expected_purchases(r.t + 39.0).unwrap()).sum();
    assert!((forecast - 4160.6).abs() < 1.0, "{forecast}");
}

#[test]
fn gamma_gamma_reproduces_the_note() {
    let spends: Vec<Spend> = summary()
        .iter()
        .map(|r| Spend {
            x: r.x,
            mean: r.zbar,
            weight: 1.0,
        })
        .collect();
    let fit = GammaGamma::fit(&spends).unwrap();
    assert!(fit.converged, "{fit:?}");
    let GammaGamma { p, q, gamma } = fit.params;
    for (got, want) in [(p, 6.2488), (q, 3.7446), (gamma, 15.4477)] {
        assert!(rel(got, want) <= 1e-3, "{got} vs {want}");
    }
    assert_eq!(fit.customers, 946.0);
    assert!((fit.log_likelihood + 4055.92).abs() < 0.02, "{}", fit.log_likelihood);
}

#[test]
fn pareto_nbd_reproduces_the_published_fit() {
    use rapport_model::pareto_nbd::ParetoNbd;
    let rows = summary();
    let hist: Vec<History> = rows.iter().map(|r| History::new(r.x, r.t_x, r.t)).collect();
    let fit = ParetoNbd::fit(&hist).unwrap();
    assert!(fit.converged, "{fit:?}");
    let p = fit.params;
    for (got, want) in [(p.r, 0.5532), (p.alpha, 10.576), (p.s, 0.6063), (p.beta, 11.672)] {
        assert!(rel(got, want) <= 2e-3, "{got} vs {want}: {fit:?}");
    }
    assert!((fit.log_likelihood + 9594.98).abs() < 0.01, "{}", fit.log_likelihood);
    let c = rows.iter().find(|r| r.id == 1516).unwrap();
    let h = History::new(c.x, c.t_x, c.t);
    assert!((p.conditional_expected(52.0, &h).unwrap() - 25.456).abs() < 0.02);
    assert!((p.p_alive(&h).unwrap() - 0.997_874).abs() < 1e-3);
    let forecast: f64 = rows.iter().map(|r| p.expected_purchases(r.t + 39.0)).sum();
    assert!((forecast - 4270.1).abs() < 1.5, "{forecast}");
}
