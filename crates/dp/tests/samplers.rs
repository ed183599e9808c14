//! The samplers against their exact pmfs: chi-square goodness of fit and variance.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{chi2_quantile_999, chi_square, mean_var, variance_se};
use concord_dp::Mechanism;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const N: usize = 40_000;

fn draw(m: Mechanism, seed: u64, n: usize) -> Vec<i64> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let s = m.sampler().unwrap();
    (0..n).map(|_| s.sample(&mut rng).unwrap()).collect()
}

fn check(m: Mechanism, seed: u64) {
    let samples = draw(m, seed, N);
    let search = m.tail_bound() as i64 + 2;
    let (stat, df) = chi_square(&samples, |k| m.pmf(k), search);
    let critical = chi2_quantile_999(df);
    eprintln!("{m:?}: chi2 = {stat:.1} on {df} df (0.999 quantile {critical:.1})");
    assert!(stat < critical, "{m:?}: chi2 {stat} >= {critical} on {df} df");

    let (mean, var) = mean_var(&samples);
    let se = variance_se(|k| m.pmf(k), search, N);
    let expected = m.variance();
    eprintln!("{m:?}: sample variance {var:.3}, formula {expected:.3}, se {se:.3}, mean {mean:.3}");
    assert!((var - expected).abs() < 4.0 * se, "{m:?}: variance {var} vs {expected} (se {se})");
    assert!(mean.abs() < 4.0 * (expected / N as f64).sqrt(), "{m:?}: mean {mean}");
}

#[test]
fn discrete_laplace_scale_0_8_fits_pmf() {
    check(Mechanism::discrete_laplace(0.8).unwrap(), 1);
}

#[test]
fn discrete_laplace_scale_12_5_fits_pmf() {
    check(Mechanism::discrete_laplace(12.5).unwrap(), 2);
}

#[test]
fn discrete_gaussian_sigma_1_5_fits_pmf() {
    check(Mechanism::discrete_gaussian(1.5).unwrap(), 3);
}

#[test]
fn discrete_gaussian_sigma_20_fits_pmf() {
    check(Mechanism::discrete_gaussian(20.0).unwrap(), 4);
}

/// The test can fail: a sampler with the wrong scale is rejected.
#[test]
fn chi_square_rejects_a_wrong_scale() {
    let samples = draw(Mechanism::discrete_laplace(3.3).unwrap(), 5, N);
    let wrong = Mechanism::discrete_laplace(3.0).unwrap();
    let (stat, df) = chi_square(&samples, |k| wrong.pmf(k), wrong.tail_bound() as i64 + 2);
    assert!(stat > chi2_quantile_999(df), "chi2 {stat} on {df} df should reject");
}

#[test]
fn same_seed_same_noise() {
    let m = Mechanism::discrete_gaussian(7.0).unwrap();
    assert_eq!(draw(m, 9, 100), draw(m, 9, 100));
    assert_ne!(draw(m, 9, 100), draw(m, 10, 100));
}
