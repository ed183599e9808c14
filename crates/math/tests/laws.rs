//! Field and ring laws, checked against a big-integer reference.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use concord_math::batch;
use concord_math::encoding::{decode_signed, encode_signed, FixedPoint};
use concord_math::{Field, MathError, Ring, M127, M61, Z64};
use num_bigint::BigUint;
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha12Rng;

fn big(v: u128) -> BigUint {
    BigUint::from(v)
}

fn reference<R: Ring>(a: R, b: R) -> (u128, u128, u128) {
    let m = big(R::MODULUS);
    let (x, y) = (big(a.to_u128()), big(b.to_u128()));
    let add = (&x + &y) % &m;
    let sub = (&x + &m - &y) % &m;
    let mul = (&x * &y) % &m;
    let to = |v: BigUint| -> u128 {
        let d = v.to_u64_digits();
        d.first().copied().unwrap_or(0) as u128 | (d.get(1).copied().unwrap_or(0) as u128) << 64
    };
    (to(add), to(sub), to(mul))
}

fn check_ops<R: Ring>(a: R, b: R) {
    let (add, sub, mul) = reference(a, b);
    assert_eq!((a + b).to_u128(), add, "{a:?} + {b:?}");
    assert_eq!((a - b).to_u128(), sub, "{a:?} - {b:?}");
    assert_eq!((a * b).to_u128(), mul, "{a:?} * {b:?}");
    assert_eq!((a + (-a)), R::ZERO);
    assert!(a.to_u128() < R::MODULUS);
}

/// Elements biased towards the edges (0, 1, p-1, 2^k boundaries), where reduction bugs live.
fn edge<R: Ring>() -> impl Strategy<Value = R> {
    prop_oneof![
        any::<u128>().prop_map(R::from_u128),
        Just(R::ZERO),
        Just(R::ONE),
        Just(-R::ONE),
        (0u32..128).prop_map(|k| R::from_u128(1u128 << k)),
        (0u32..128).prop_map(|k| -R::from_u128(1u128 << k)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn m61_matches_bigint(a in edge::<M61>(), b in edge::<M61>()) { check_ops(a, b) }
    #[test]
    fn m127_matches_bigint(a in edge::<M127>(), b in edge::<M127>()) { check_ops(a, b) }
    #[test]
    fn z64_matches_bigint(a in edge::<Z64>(), b in edge::<Z64>()) { check_ops(a, b) }

    #[test]
    fn from_u128_reduces(v in any::<u128>()) {
        prop_assert_eq!(M61::from_u128(v).to_u128(), v % M61::MODULUS);
        prop_assert_eq!(M127::from_u128(v).to_u128(), v % M127::MODULUS);
        prop_assert_eq!(Z64::from_u128(v).to_u128(), v % Z64::MODULUS);
        prop_assert_eq!(M61::from_u64(v as u64).to_u128(), (v as u64 as u128) % M61::MODULUS);
    }

    #[test]
    fn field_laws(a in edge::<M61>(), b in edge::<M61>(), c in edge::<M61>()) {
        prop_assert_eq!((a + b) + c, a + (b + c));
        prop_assert_eq!((a * b) * c, a * (b * c));
        prop_assert_eq!(a * (b + c), a * b + a * c);
        prop_assert_eq!(a * b, b * a);
        if a != M61::ZERO {
            prop_assert_eq!(a * a.inv().unwrap(), M61::ONE);
        }
    }

    #[test]
    fn m127_inverse(a in edge::<M127>()) {
        if a != M127::ZERO {
            prop_assert_eq!(a * a.inv().unwrap(), M127::ONE);
        }
    }

    #[test]
    fn signed_roundtrip(v in any::<i64>()) {
        prop_assert_eq!(decode_signed(encode_signed::<Z64>(v as i128).unwrap()), v as i128);
        prop_assert_eq!(decode_signed(encode_signed::<M127>(v as i128).unwrap()), v as i128);
        let small = (v >> 4) as i128;
        prop_assert_eq!(decode_signed(encode_signed::<M61>(small).unwrap()), small);
    }

    #[test]
    fn signed_arithmetic_wraps_correctly(a in -(1i64 << 29)..(1i64 << 29), b in -(1i64 << 29)..(1i64 << 29)) {
        let (x, y) = (M61::from_i64(a), M61::from_i64(b));
        prop_assert_eq!(decode_signed(x * y), a as i128 * b as i128);
        prop_assert_eq!(decode_signed(x - y), a as i128 - b as i128);
    }

    #[test]
    fn vector_codec_roundtrip(v in proptest::collection::vec(edge::<M127>(), 0..50)) {
        prop_assert_eq!(batch::decode::<M127>(&batch::encode(&v)).unwrap(), v);
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = batch::decode::<M61>(&bytes);
        let _ = batch::decode::<M127>(&bytes);
        let _ = batch::decode::<Z64>(&bytes);
    }

    #[test]
    fn inner_product_matches_naive(a in proptest::collection::vec(edge::<M61>(), 0..200), b in proptest::collection::vec(edge::<M61>(), 0..200)) {
        let naive = a.iter().zip(&b).fold(M61::ZERO, |s, (x, y)| s + *x * *y);
        prop_assert_eq!(batch::inner_product(&a, &b), naive);
    }
}

#[test]
fn signed_range_edges() {
    let max = concord_math::encoding::signed_max::<M61>();
    let min = concord_math::encoding::signed_min::<M61>();
    assert_eq!(max, ((1i128 << 61) - 2) / 2);
    assert_eq!(decode_signed(encode_signed::<M61>(max).unwrap()), max);
    assert_eq!(decode_signed(encode_signed::<M61>(min).unwrap()), min);
    assert!(matches!(encode_signed::<M61>(max + 1), Err(MathError::Overflow { .. })));
    assert!(matches!(encode_signed::<M61>(min - 1), Err(MathError::Overflow { .. })));
    assert_eq!(decode_signed(encode_signed::<Z64>(i64::MIN as i128).unwrap()), i64::MIN as i128);
    assert!(encode_signed::<Z64>(i64::MAX as i128 + 1).is_err());
    let m127max = concord_math::encoding::signed_max::<M127>();
    assert_eq!(decode_signed(encode_signed::<M127>(-m127max).unwrap()), -m127max);
}

#[test]
fn non_canonical_bytes_rejected() {
    let p = M61::P.to_le_bytes();
    assert_eq!(batch::decode::<M61>(&[[0u8; 8], p].concat()), Err(MathError::NonCanonical { index: 1, domain: "m61" }));
    assert!(matches!(batch::decode::<M61>(&[0u8; 9]), Err(MathError::BadLength { len: 9, .. })));
    assert!(batch::decode::<M127>(&M127::P.to_le_bytes()).is_err());
}

#[test]
fn fixed_point_roundtrip_and_overflow() {
    let fp = FixedPoint::new::<M61>(16).unwrap();
    for x in [0.0, 1.5, -2.25, 1234.5678, -0.0001] {
        let back = fp.decode(fp.encode::<M61>(x).unwrap());
        assert!((back - x).abs() <= 0.5 / 65536.0, "{x} -> {back}");
    }
    // Product of two encodings has 2f fractional bits.
    let (a, b) = (fp.encode::<M61>(3.25).unwrap(), fp.encode::<M61>(-2.0).unwrap());
    assert_eq!(decode_signed(a * b), (-6.5 * 65536.0 * 65536.0) as i128);
    assert!(matches!(fp.encode::<M61>(1e40), Err(MathError::Overflow { .. })));
    assert!(matches!(fp.encode::<M61>(f64::NAN), Err(MathError::NotFinite(_))));
    assert!(FixedPoint::new::<M61>(60).is_err());
}

#[test]
fn random_is_uniform_enough_and_seeded() {
    let mut r1 = ChaCha12Rng::seed_from_u64(7);
    let mut r2 = ChaCha12Rng::seed_from_u64(7);
    let a: Vec<M61> = (0..1000).map(|_| M61::random(&mut r1)).collect();
    let b: Vec<M61> = (0..1000).map(|_| M61::random(&mut r2)).collect();
    assert_eq!(a, b);
    // Top bit of a 61-bit value is set about half the time.
    let high = a.iter().filter(|x| x.value() >> 60 == 1).count();
    assert!((400..600).contains(&high), "{high}");
}
