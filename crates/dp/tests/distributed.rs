//! Distributed noise: the sum of the parties' shares, and what remains when
//! colluders subtract their own; the accuracy of a distributed-noise AVG.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{chi2_quantile_999, chi_square, mean_var};
use concord_dp::estimate::{avg_laplace_plans, centred, DEFAULT_COUNT_FRACTION};
use concord_dp::{noise_share, Mechanism, NoisePlan};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const RUNS: usize = 20_000;

/// `runs` rounds of `n` parties each drawing a share; returns every party's share per round.
fn rounds(plan: &NoisePlan, seed: u64, runs: usize) -> Vec<Vec<i64>> {
    // One RNG per party, as in a deployment.
    let mut rngs: Vec<ChaCha20Rng> =
        (0..plan.parties()).map(|p| ChaCha20Rng::seed_from_u64(seed * 100 + p as u64)).collect();
    let sampler = plan.share_mechanism().sampler().unwrap();
    (0..runs).map(|_| rngs.iter_mut().map(|r| sampler.sample(r).unwrap()).collect()).collect()
}

fn check_sum(plan: &NoisePlan, seed: u64) {
    let shares = rounds(plan, seed, RUNS);
    // All n shares: the released noise, against the n-fold convolution of the pmf.
    let totals: Vec<i64> = shares.iter().map(|s| s.iter().sum()).collect();
    let total = plan.total_noise();
    let (off, table) = total.pmf_table().unwrap();
    let pmf = |k: i64| table.get((k + off) as usize).copied().filter(|_| k.abs() <= off).unwrap_or(0.0);
    let (stat, df) = chi_square(&totals, pmf, off);
    eprintln!("{plan:?}: total chi2 {stat:.1} on {df} df");
    assert!(stat < chi2_quantile_999(df), "total noise: chi2 {stat} on {df} df");

    // The colluders (the last t parties) subtract their own shares: the rest must be
    // the sum of n - t honest shares, with at least the target's variance.
    let t = plan.tolerate();
    let honest: Vec<i64> =
        shares.iter().zip(&totals).map(|(s, total)| total - s[plan.parties() - t..].iter().sum::<i64>()).collect();
    let h = plan.honest_noise();
    let (off, table) = h.pmf_table().unwrap();
    let pmf = |k: i64| table.get((k + off) as usize).copied().filter(|_| k.abs() <= off).unwrap_or(0.0);
    let (stat, df) = chi_square(&honest, pmf, off);
    eprintln!("{plan:?}: honest part chi2 {stat:.1} on {df} df");
    assert!(stat < chi2_quantile_999(df), "honest noise: chi2 {stat} on {df} df");
    let (_, var) = mean_var(&honest);
    let target = plan.target().variance();
    // At least the centralised variance, up to sampling error (4 standard errors, normal-ish).
    assert!(var > target * (1.0 - 4.0 * (2.0 / RUNS as f64).sqrt() * 2.0), "honest variance {var} < target {target}");
    assert!((var - h.variance()).abs() < 0.1 * h.variance(), "honest variance {var} vs {}", h.variance());
}

#[test]
fn laplace_shares_sum_and_honest_remainder() {
    let plan = NoisePlan::new(Mechanism::discrete_laplace(2.5).unwrap(), 3, 2).unwrap();
    check_sum(&plan, 1);
}

#[test]
fn gaussian_shares_sum_and_honest_remainder() {
    let plan = NoisePlan::new(Mechanism::discrete_gaussian(3.0).unwrap(), 4, 1).unwrap();
    check_sum(&plan, 2);
}

#[test]
fn noise_share_checks_the_collusion_bound() {
    let m = Mechanism::discrete_laplace(1.0).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    assert!(noise_share(&m, 3, 3, &mut rng).is_err());
    assert!(noise_share(&m, 3, 2, &mut rng).is_ok());
}

/// 30,000 deterministic rows in [0, 120] over 3 parties; AVG at epsilon = 1 (count and
/// centred sum, each opened with every party's noise share); 1,000 runs.
#[test]
fn avg_of_30000_rows_at_epsilon_1_is_within_1_percent() {
    let (lo, hi) = (0i64, 120i64);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let rows: Vec<i64> = (0..30_000)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((x >> 33) % 121) as i64
        })
        .collect();
    let parties: Vec<&[i64]> = rows.chunks(10_000).collect();
    let true_mean = rows.iter().sum::<i64>() as f64 / rows.len() as f64;
    // Each party's local aggregates (what it secret-shares).
    let local: Vec<(i64, i64)> =
        parties.iter().map(|p| (p.iter().map(|&v| centred(v, lo, hi) as i64).sum(), p.len() as i64)).collect();
    let plans = avg_laplace_plans(1.0, lo, hi, DEFAULT_COUNT_FRACTION, 3, 2).unwrap();
    let (sum_sampler, count_sampler) =
        (plans.sum.share_mechanism().sampler().unwrap(), plans.count.share_mechanism().sampler().unwrap());
    let mut rngs: Vec<ChaCha20Rng> = (0..3).map(|p| ChaCha20Rng::seed_from_u64(77 + p)).collect();
    let mut errors = Vec::with_capacity(1000);
    let mut covered = 0;
    for _ in 0..1000 {
        let (mut s, mut c) = (0i64, 0i64);
        for (rng, (ls, lc)) in rngs.iter_mut().zip(&local) {
            s += ls + sum_sampler.sample(rng).unwrap();
            c += lc + count_sampler.sample(rng).unwrap();
        }
        let e = plans.estimate(s, c, 1.0);
        errors.push((e.value - true_mean).abs() / true_mean);
        if e.ci95.0 <= true_mean && true_mean <= e.ci95.1 {
            covered += 1;
        }
    }
    errors.sort_by(f64::total_cmp);
    let median = errors[errors.len() / 2];
    eprintln!(
        "AVG, 30,000 rows in [0,120], 3 parties, epsilon 1: true mean {true_mean:.4}, median relative error {:.5}% \
         (max {:.5}%), 95% interval covered the truth in {covered}/1000 runs",
        median * 100.0,
        errors[errors.len() - 1] * 100.0
    );
    assert!(median < 0.01, "median relative error {median}");
    assert!(covered >= 930, "interval coverage {covered}/1000");
}
