//! Random draws the simulations in tests and benchmarks need.

use rand::Rng;

/// A Gamma(shape, scale) draw by Marsaglia & Tsang (2000); shapes below one through the
/// U^(1/shape) boost.
pub fn gamma<R: Rng + ?Sized>(rng: &mut R, shape: f64, scale: f64) -> f64 {
    if shape < 1.0 {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        return gamma(rng, shape + 1.0, scale) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let v = (1.0 + c * z).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        if u.ln() < 0.5 * z * z + d - d * v + d * v.ln() {
            return d * v * scale;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn gamma_draws_have_the_right_mean_and_variance() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for (shape, rate) in [(0.5, 2.0), (3.7, 15.0), (6.0, 0.5)] {
            let n = 200_000;
            let v: Vec<f64> = (0..n).map(|_| gamma(&mut rng, shape, 1.0 / rate)).collect();
            let mean = v.iter().sum::<f64>() / n as f64;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            assert!((mean - shape / rate).abs() < 0.02 * shape / rate, "mean {mean} for {shape}, {rate}");
            assert!(
                (var - shape / rate / rate).abs() < 0.05 * shape / rate / rate,
                "var {var} for {shape}, {rate}"
            );
        }
    }
}
