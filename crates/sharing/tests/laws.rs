//! Algebraic laws of the sharing schemes, and uniformity of t Shamir shares.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use concord_math::small::SmallPrime;
use concord_math::{batch, Ring, M127, M61, Z64};
use concord_sharing::lagrange::Lagrange;
use concord_sharing::shamir::{self, Completer, ShamirParams};
use concord_sharing::{additive, ShareVec, SharingError};
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha12Rng;

/// All subsets of 0..n of size k.
fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    (0u32..(1 << n))
        .filter(|m| m.count_ones() as usize == k)
        .map(|m| (0..n).filter(|i| m >> i & 1 == 1).collect())
        .collect()
}

fn vec_of<R: Ring>(seed: u64, len: usize) -> Vec<R> {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    (0..len).map(|_| R::random(&mut rng)).collect()
}

fn shamir_roundtrip<F: concord_math::Field>(seed: u64, n: usize, t: usize, len: usize) {
    let params = ShamirParams::new::<F>(n, t).unwrap();
    let secret: Vec<F> = vec_of(seed, len);
    let mut rng = ChaCha12Rng::seed_from_u64(seed ^ 0xabc);
    let shares = shamir::share(&secret, params, &mut rng);
    for k in t + 1..=n {
        for set in subsets(n, k) {
            let given: Vec<_> = set.iter().map(|&p| (p, &shares[p])).collect();
            assert_eq!(shamir::reconstruct(&given, params).unwrap(), secret, "set {set:?}");
        }
    }
    // t shares are not enough.
    let given: Vec<_> = (0..t).map(|p| (p, &shares[p])).collect();
    assert!(matches!(shamir::reconstruct(&given, params), Err(SharingError::NotEnoughShares { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn shamir_every_qualified_set_reconstructs(seed in any::<u64>(), n in 2usize..8, len in 0usize..5) {
        let t = (seed as usize % (n - 1)) + 1;
        shamir_roundtrip::<M61>(seed, n, t, len);
        shamir_roundtrip::<M127>(seed, n, t, len);
    }

    #[test]
    fn additive_roundtrip(seed in any::<u64>(), n in 2usize..8) {
        let secret: Vec<Z64> = vec_of(seed, 6);
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        let shares = additive::share(&secret, n, &mut rng).unwrap();
        let given: Vec<_> = shares.iter().enumerate().collect();
        prop_assert_eq!(additive::reconstruct(&given, n).unwrap(), secret.clone());
        let m: Vec<M61> = vec_of(seed, 6);
        let shares = additive::share(&m, n, &mut rng).unwrap();
        let given: Vec<_> = shares.iter().enumerate().collect();
        prop_assert_eq!(additive::reconstruct(&given, n).unwrap(), m);
    }

    /// share(x) + share(y) and c * share(x) are sharings of x + y and c * x.
    #[test]
    fn shamir_linearity(seed in any::<u64>(), c in any::<u64>()) {
        let params = ShamirParams::new::<M61>(5, 2).unwrap();
        let (x, y): (Vec<M61>, Vec<M61>) = (vec_of(seed, 4), vec_of(seed + 1, 4));
        let c = M61::from_u64(c);
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        let sx = shamir::share(&x, params, &mut rng);
        let sy = shamir::share(&y, params, &mut rng);
        let combined: Vec<ShareVec<M61>> = sx.iter().zip(&sy).map(|(a, b)| {
            let mut v = a.expose().to_vec();
            batch::scale(&mut v, c);
            batch::add_assign(&mut v, b.expose());
            ShareVec::from_raw(v)
        }).collect();
        let given: Vec<_> = [4usize, 1, 3].iter().map(|&p| (p, &combined[p])).collect();
        let expect: Vec<M61> = x.iter().zip(&y).map(|(a, b)| c * *a + *b).collect();
        prop_assert_eq!(shamir::reconstruct(&given, params).unwrap(), expect);
    }

    /// The product of two degree-t sharings is a degree-2t sharing of the product.
    #[test]
    fn shamir_product_has_degree_2t(seed in any::<u64>()) {
        let params = ShamirParams::new::<M61>(5, 2).unwrap();
        let (x, y): (Vec<M61>, Vec<M61>) = (vec_of(seed, 3), vec_of(seed + 1, 3));
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        let (sx, sy) = (shamir::share(&x, params, &mut rng), shamir::share(&y, params, &mut rng));
        let prods: Vec<Vec<M61>> = (0..5).map(|p| batch::mul(sx[p].expose(), sy[p].expose())).collect();
        let lag = Lagrange::<M61>::at_zero(&[0, 1, 2, 3, 4], 5).unwrap();
        let refs: Vec<&[M61]> = prods.iter().map(|v| v.as_slice()).collect();
        prop_assert_eq!(lag.combine(&refs).unwrap(), batch::mul(&x, &y));
    }

    /// A completed sharing is a valid degree-t sharing of the secret.
    #[test]
    fn completer_yields_valid_sharing(seed in any::<u64>()) {
        let params = ShamirParams::new::<M61>(5, 2).unwrap();
        let secret: Vec<M61> = vec_of(seed, 4);
        let (f0, f1): (Vec<M61>, Vec<M61>) = (vec_of(seed + 1, 4), vec_of(seed + 2, 4));
        let c = Completer::<M61>::new(params, &[3, 0], &[1, 2, 4]).unwrap();
        let rest = c.complete(&secret, &[&f0, &f1]).unwrap();
        let all = [
            ShareVec::from_raw(f1.clone()), ShareVec::from_raw(rest[0].clone()),
            ShareVec::from_raw(rest[1].clone()), ShareVec::from_raw(f0.clone()),
            ShareVec::from_raw(rest[2].clone()),
        ];
        for set in subsets(5, 3) {
            let given: Vec<_> = set.iter().map(|&p| (p, &all[p])).collect();
            prop_assert_eq!(shamir::reconstruct(&given, params).unwrap(), secret.clone());
        }
    }
}

/// Chi-square statistic of observed counts against a uniform expectation.
fn chi_square(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum()
}

/// Any t shares of a Shamir sharing are jointly uniform, whatever the secret.
/// GF(11), n = 5, t = 2: the pair of shares of two parties falls in one of
/// 121 cells; over 24,200 seeded sharings of a fixed secret every cell should
/// hold about 200. The 0.1% critical value of chi-square with 120 degrees of
/// freedom is 173.6; a degree-(t-1) polynomial or a biased coefficient fails.
#[test]
fn any_t_shares_are_uniform_chi_square() {
    type F = SmallPrime<11>;
    let params = ShamirParams::new::<F>(5, 2).unwrap();
    let mut rng = ChaCha12Rng::seed_from_u64(2024);
    for (secret, pair) in [(0u64, [0usize, 1]), (7, [2, 4]), (10, [1, 3])] {
        let mut counts = vec![0u64; 121];
        for _ in 0..24_200 {
            let shares = shamir::share(&[F::from_u64(secret)], params, &mut rng);
            let a = shares[pair[0]].expose()[0].value();
            let b = shares[pair[1]].expose()[0].value();
            counts[(a * 11 + b) as usize] += 1;
        }
        let chi = chi_square(&counts);
        assert!(chi < 173.6, "secret {secret}, parties {pair:?}: chi-square {chi:.1} >= 173.6");
    }
    // And a single share of a t = 1 sharing over GF(11): 10 degrees of freedom, 0.1% value 29.6.
    let p1 = ShamirParams::new::<F>(3, 1).unwrap();
    let mut counts = vec![0u64; 11];
    for _ in 0..11_000 {
        let shares = shamir::share(&[F::from_u64(3)], p1, &mut rng);
        counts[shares[2].expose()[0].value() as usize] += 1;
    }
    let chi = chi_square(&counts);
    assert!(chi < 29.6, "single share chi-square {chi:.1}");
}

/// The statistic does detect non-uniformity (so the test above can fail):
/// t + 1 shares of a fixed secret are NOT uniform.
#[test]
fn chi_square_detects_t_plus_one_shares() {
    type F = SmallPrime<11>;
    let params = ShamirParams::new::<F>(3, 1).unwrap();
    let mut rng = ChaCha12Rng::seed_from_u64(5);
    let mut counts = vec![0u64; 121];
    for _ in 0..24_200 {
        let shares = shamir::share(&[F::from_u64(4)], params, &mut rng);
        counts[(shares[0].expose()[0].value() * 11 + shares[1].expose()[0].value()) as usize] += 1;
    }
    assert!(chi_square(&counts) > 173.6);
}

#[test]
fn bad_parameters_are_refused() {
    assert!(ShamirParams::new::<M61>(3, 0).is_err());
    assert!(ShamirParams::new::<M61>(3, 3).is_err());
    assert!(ShamirParams::new::<SmallPrime<5>>(5, 2).is_err());
    assert!(additive::share::<Z64, _>(&[], 1, &mut ChaCha12Rng::seed_from_u64(0)).is_err());
    assert_eq!(Lagrange::<M61>::at_zero(&[0, 0], 3), Err(SharingError::DuplicateParty(0)));
    assert_eq!(Lagrange::<M61>::at_zero(&[0, 7], 3), Err(SharingError::PartyOutOfRange { party: 7, n: 3 }));
}

#[test]
fn share_debug_is_redacted_and_eq_works() {
    let s = ShareVec::from_raw(vec![M61::from_u64(123456789)]);
    let d = format!("{s:?}");
    assert!(!d.contains("123456789"), "{d}");
    assert_eq!(s, ShareVec::from_raw(vec![M61::from_u64(123456789)]));
    assert_ne!(s, ShareVec::from_raw(vec![M61::from_u64(1)]));
    assert_ne!(s, ShareVec::from_raw(vec![]));
}
