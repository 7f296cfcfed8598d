//! Fits on simulated data: parameters come back, and hard regimes give parameters or a
//! diagnostic — never a panic or a NaN. (Pareto/NBD is not in the hard-regime suite yet:
//! far from its optimum each likelihood evaluation can cost long hypergeometric series.)

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rapport_model::bgnbd::BgNbd;
use rapport_model::btyd::History;
use rapport_model::gamma_gamma::{GammaGamma, Spend};
use rapport_model::pareto_nbd::ParetoNbd;
use rapport_model::sample::gamma;

/// BG/NBD histories from known parameters (T uniform in [20, 40] weeks).
fn simulate_bgnbd(p: BgNbd, n: usize, seed: u64) -> Vec<History> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let lambda = gamma(&mut rng, p.r, 1.0 / p.alpha);
            let (ga, gb) = (gamma(&mut rng, p.a, 1.0), gamma(&mut rng, p.b, 1.0));
            let drop = ga / (ga + gb);
            let t_end = rng.random_range(20.0..40.0);
            let (mut t, mut x, mut tx) = (0.0, 0.0, 0.0);
            loop {
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                t += -u.ln() / lambda;
                if t > t_end {
                    break;
                }
                x += 1.0;
                tx = t;
                if rng.random_bool(drop) {
                    break;
                }
            }
            History::new(x, tx, t_end)
        })
        .collect()
}

#[test]
fn bgnbd_recovers_the_parameters_it_was_simulated_with() {
    let truth = BgNbd {
        r: 0.6,
        alpha: 5.0,
        a: 0.9,
        b: 3.0,
    };
    let data = simulate_bgnbd(truth, 20_000, 5);
    let fit = BgNbd::fit(&data).unwrap();
    assert!(fit.converged, "{fit:?}");
    let p = fit.params;
    for (got, want) in [(p.r, truth.r), (p.alpha, truth.alpha), (p.a, truth.a), (p.b, truth.b)] {
        assert!((got - want).abs() / want < 0.2, "{got} vs {want}: {fit:?}");
    }
    // The fitted model is at least as likely as the truth.
    assert!(fit.log_likelihood >= truth.total_log_likelihood(&data) - 1e-6);
}

/// Pareto/NBD histories from known parameters (T uniform in [20, 40] weeks, times in
/// whole days as the engine gives them).
fn simulate_pareto_nbd(p: ParetoNbd, n: usize, seed: u64) -> Vec<History> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let day = |t: f64| (t * 7.0).floor() / 7.0;
    (0..n)
        .map(|_| {
            let lambda = gamma(&mut rng, p.r, 1.0 / p.alpha);
            let mu = gamma(&mut rng, p.s, 1.0 / p.beta);
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            let t_end = day(rng.random_range(20.0..40.0));
            let end = t_end.min(-u.ln() / mu);
            let (mut t, mut x, mut tx) = (0.0, 0.0, 0.0);
            loop {
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                t += -u.ln() / lambda;
                if t > end {
                    break;
                }
                x += 1.0;
                tx = day(t);
            }
            History::new(x, tx, t_end)
        })
        .collect()
}

/// Enough distinct histories that the fit starts on a sample of them and polishes on
/// all: the parameters come back, and the fit is at least as likely as the truth.
#[test]
fn pareto_nbd_recovers_the_parameters_of_a_large_base() {
    let truth = ParetoNbd {
        r: 0.55,
        alpha: 10.0,
        s: 0.6,
        beta: 12.0,
    };
    let data = simulate_pareto_nbd(truth, 200_000, 11);
    let fit = ParetoNbd::fit(&data).unwrap();
    assert!(fit.converged, "{fit:?}");
    assert!(fit.groups > 2 * rapport_model::optimize::SAMPLE, "{fit:?}");
    let p = fit.params;
    for (got, want) in [(p.r, truth.r), (p.alpha, truth.alpha), (p.s, truth.s), (p.beta, truth.beta)] {
        assert!((got - want).abs() / want < 0.2, "{got} vs {want}: {fit:?}");
    }
    assert!(fit.log_likelihood >= truth.total_log_likelihood(&data) - 1e-6);
}

#[test]
fn hard_regimes_give_parameters_or_a_diagnostic() {
    let cases: Vec<Vec<History>> = vec![
        vec![History::new(0.0, 0.0, 10.0)],
        vec![
            History::new(0.0, 0.0, 10.0),
            History::new(0.0, 0.0, 12.0),
            History::new(0.0, 0.0, 3.0),
        ],
        vec![History::new(5.0, 9.0, 10.0); 50],
        simulate_bgnbd(
            BgNbd {
                r: 50.0,
                alpha: 1.0,
                a: 0.1,
                b: 50.0,
            },
            500,
            1,
        ),
        simulate_bgnbd(
            BgNbd {
                r: 0.05,
                alpha: 50.0,
                a: 5.0,
                b: 0.5,
            },
            500,
            2,
        ),
        (0..300).map(|i| History::new(200.0, 39.0 + f64::from(i % 3) * 0.1, 40.0)).collect(),
    ];
    for (i, data) in cases.iter().enumerate() {
        let bg = BgNbd::fit(data).unwrap();
        let p = bg.params;
        assert!(
            [p.r, p.alpha, p.a, p.b, bg.log_likelihood].iter().all(|v| v.is_finite()),
            "case {i}: {bg:?}"
        );
        for h in data.iter().take(20) {
            let pa = p.p_alive(h);
            assert!((0.0..=1.0).contains(&pa), "case {i}");
        }
        // Pareto/NBD: parameters with a finite likelihood, or a stated reason.
        match ParetoNbd::fit(data) {
            Ok(f) => {
                let q = f.params;
                assert!(
                    [q.r, q.alpha, q.s, q.beta, f.log_likelihood].iter().all(|v| v.is_finite()),
                    "case {i}: {f:?}"
                );
                for h in data.iter().take(20) {
                    assert!(q.p_alive(h).is_none_or(|pa| (0.0..=1.0).contains(&pa)), "case {i}");
                }
            }
            Err(e) => assert!(!e.message().is_empty(), "case {i}"),
        }
    }
    let spends = [
        Spend {
            x: 1.0,
            mean: 10.0,
            weight: 1.0,
        },
        Spend {
            x: 1.0,
            mean: 10.0,
            weight: 1.0,
        },
    ];
    let gg = GammaGamma::fit(&spends).unwrap();
    assert!(gg.log_likelihood.is_finite());
    assert!(GammaGamma::fit(&[Spend {
        x: 0.0,
        mean: 0.0,
        weight: 1.0
    }])
    .is_err());
}
