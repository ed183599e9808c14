//! Secure comparison over the simulated network: BitLT, LTZ and less-than
//! against plaintext, rounds and bytes against the documented cost, and
//! refusal of parameters that would wrap modulo p.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{net, run_parties};
use concord_engine::compare::{
    bit_lt_cost, bit_lt_muls, bit_lt_public, bit_lt_rounds, less_than, less_than_zero, less_than_zero_cost,
    random_bitwise, DEFAULT_KAPPA,
};
use concord_engine::{AdditiveEngine, EngineError, EngineStats, Mpc, ShamirEngine};
use concord_math::{Field, Ring, M127, M61};
use concord_net::Transport;
use concord_sharing::ShareVec;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// A signed integer as a field element (x mod p).
fn enc<F: Ring>(v: i128) -> F {
    if v < 0 {
        -F::from_u128(v.unsigned_abs())
    } else {
        F::from_u128(v as u128)
    }
}

fn ceil_log2(m: usize) -> u64 {
    if m <= 1 {
        0
    } else {
        (usize::BITS - (m - 1).leading_zeros()) as u64
    }
}

/// Random values below 2^m (m <= 128), with the edge values first.
fn random_below(rng: &mut impl RngCore, m: usize, count: usize) -> Vec<u128> {
    let mask = if m >= 128 { u128::MAX } else { (1u128 << m) - 1 };
    let mut v = vec![0, mask, 1 & mask, mask >> 1, (mask >> 1) + 1];
    while v.len() < count {
        let x = ((rng.next_u64() as u128) << 64 | rng.next_u64() as u128) & mask;
        // A third of the values near 0 to get ties and close calls.
        v.push(if v.len() % 3 == 0 { x & 7 } else { x });
    }
    v.truncate(count);
    v.iter().map(|x| x & mask).collect()
}

/// BitLT on `m` bits: party 0 inputs the bits of r; every party knows c.
/// Returns every party's opened result and the stats of BitLT alone.
fn run_bit_lt<F: Field>(m: usize, c: Vec<u128>, r: Vec<u128>) -> Vec<(usize, EngineStats, Vec<F>)> {
    run_parties(net(3), move |net| {
        let (c, r) = (c.clone(), r.clone());
        async move {
            let me = net.me();
            let len = c.len();
            let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
            let mut mpc = ShamirEngine::<F, _>::new(net, 1, &mut rng).await.unwrap();
            let mine: Vec<F> = (0..m).flat_map(|i| r.iter().map(move |x| F::from_u64(((x >> i) & 1) as u64))).collect();
            let all = mpc.input(0, (me == 0).then_some(&mine[..]), m * len).await.unwrap();
            let bits: Vec<ShareVec<F>> =
                (0..m).map(|i| ShareVec::from_raw(all.expose()[i * len..(i + 1) * len].to_vec())).collect();
            let before = mpc.stats();
            let lt = bit_lt_public(&mut mpc, &c, &bits).await.unwrap();
            let used = mpc.stats() - before;
            let opened = mpc.open(&lt).await.unwrap();
            mpc.finish().await.unwrap();
            (me, used, opened)
        }
    })
}

fn check_bit_lt<F: Field>(m: usize, c: Vec<u128>, r: Vec<u128>) {
    let len = c.len();
    let expected: Vec<F> = c.iter().zip(&r).map(|(a, b)| F::from_u64(u64::from(a < b))).collect();
    for (me, used, opened) in run_bit_lt::<F>(m, c, r) {
        assert_eq!(opened, expected, "{} m={m}: party {me}", F::NAME);
        assert_eq!(used.rounds, ceil_log2(m), "m={m} party {me}: rounds");
        assert_eq!(used.rounds, bit_lt_rounds(m));
        assert_eq!(used.bytes_sent, bit_lt_cost(3, 1, me, m, len).bytes_sent(F::BYTES), "m={m} party {me}: bytes");
    }
}

#[test]
fn bit_lt_public_matches_plaintext() {
    // Exhaustive on 3 bits.
    let (c, r): (Vec<u128>, Vec<u128>) = (0..64u128).map(|x| (x & 7, x >> 3)).unzip();
    check_bit_lt::<M127>(3, c, r);
    let mut rng = ChaCha12Rng::seed_from_u64(99);
    for m in [1usize, 2, 5, 8, 33, 64, 100, 127] {
        let c = random_below(&mut rng, m, 120);
        let mut r = random_below(&mut rng, m, 120);
        // Equal pairs and neighbours.
        r[10] = c[10];
        r[11] = c[11] ^ 1;
        r[20..40].copy_from_slice(&c[20..40]);
        check_bit_lt::<M127>(m, c, r);
    }
    let c = random_below(&mut rng, 60, 100);
    let r = random_below(&mut rng, 60, 100);
    check_bit_lt::<M61>(60, c, r);
    // Multiplications per comparison: 2(m-1) - ceil(log2 m).
    for m in 1..200 {
        assert_eq!(bit_lt_muls(m), 2 * (m as u64 - 1) - ceil_log2(m), "m={m}");
    }
    assert_eq!(bit_lt_muls(63), 118);
}

#[test]
fn bit_lt_public_works_on_the_additive_engine_and_refuses_bad_inputs() {
    let m = 16;
    let mut rng = ChaCha12Rng::seed_from_u64(5);
    let c = random_below(&mut rng, m, 50);
    let r = random_below(&mut rng, m, 50);
    let expected: Vec<M61> = c.iter().zip(&r).map(|(a, b)| M61::from_u64(u64::from(a < b))).collect();
    let out = run_parties(net(3), move |net| {
        let (c, r) = (c.clone(), r.clone());
        async move {
            let me = net.me();
            let len = c.len();
            let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
            let mut mpc = AdditiveEngine::<M61, _, _>::with_insecure_dealer(net, &mut rng).await.unwrap();
            let mine: Vec<M61> =
                (0..m).flat_map(|i| r.iter().map(move |x| M61::from_u64(((x >> i) & 1) as u64))).collect();
            let all = mpc.input(1, (me == 1).then_some(&mine[..]), m * len).await.unwrap();
            let bits: Vec<ShareVec<M61>> =
                (0..m).map(|i| ShareVec::from_raw(all.expose()[i * len..(i + 1) * len].to_vec())).collect();
            let lt = bit_lt_public(&mut mpc, &c, &bits).await.unwrap();
            // Refused locally, identically everywhere: c too large, lengths differ.
            let mut big = c.clone();
            big[3] = 1 << m;
            let e1 = bit_lt_public(&mut mpc, &big, &bits).await.map(|_| ());
            let e2 = bit_lt_public(&mut mpc, &c[1..], &bits).await.map(|_| ());
            // Empty batch and no bits: no communication.
            let before = mpc.stats();
            let empty = bit_lt_public(&mut mpc, &[], &vec![ShareVec::zeros(0); 4]).await.unwrap();
            let none = bit_lt_public(&mut mpc, &[0, 0], &[]).await.unwrap();
            assert_eq!(mpc.stats(), before);
            assert_eq!((empty.len(), none.len()), (0, 2));
            let opened = mpc.open(&lt).await.unwrap();
            mpc.finish().await.unwrap();
            (opened, e1, e2)
        }
    });
    for (opened, e1, e2) in out {
        assert_eq!(opened, expected);
        assert!(matches!(e1, Err(EngineError::Usage(ref s)) if s.contains("does not fit")), "{e1:?}");
        assert!(matches!(e2, Err(EngineError::Usage(ref s)) if s.contains("elements")), "{e2:?}");
    }
}

#[test]
fn random_bitwise_gives_bits_of_r() {
    let (k, len) = (20, 200);
    let out = run_parties(net(3), move |net| async move {
        let me = net.me();
        let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
        let mut mpc = ShamirEngine::<M61, _>::new(net, 1, &mut rng).await.unwrap();
        let mut private = ChaCha12Rng::seed_from_u64(77 + me as u64);
        let (bits, r) = random_bitwise(&mut mpc, k, len, &mut private).await.unwrap();
        assert_eq!(bits.len(), k);
        let mut opened_bits = Vec::new();
        for b in &bits {
            opened_bits.push(mpc.open(b).await.unwrap());
        }
        let r = mpc.open(&r).await.unwrap();
        mpc.finish().await.unwrap();
        (opened_bits, r)
    });
    let (bits, r) = &out[0];
    assert!(out.iter().all(|o| &o.1 == r));
    let mut distinct = r.iter().map(|v| v.to_u128()).collect::<Vec<_>>();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() > len - 5, "r repeats too often");
    for j in 0..len {
        let mut v = 0u128;
        for (i, b) in bits.iter().enumerate() {
            let x = b[j].to_u128();
            assert!(x <= 1);
            v |= x << i;
        }
        assert_eq!(v, r[j].to_u128());
    }
}

/// Signed k-bit test values: edges, then random values (some small).
fn signed_values(rng: &mut impl RngCore, k: usize, count: usize) -> Vec<i128> {
    let h = 1i128 << (k - 1);
    let q = 1i128 << (k - 2);
    let mut v = vec![0, 1, -1, q, -q, q - 1, -q + 1, h - 1, -h, -h + 1, h - 2, 2, -2];
    // For tiny k some edges coincide or fall outside [-2^(k-1), 2^(k-1)).
    v.retain(|x| (-h..h).contains(x));
    while v.len() < count {
        let x = (rng.next_u64() as u128 | (rng.next_u64() as u128) << 64) & ((1u128 << k) - 1);
        let x = x as i128 - h;
        v.push(if v.len() % 4 == 0 { x % 5 } else { x });
    }
    v
}

/// LTZ on every party; returns the opened results and the stats of the comparison alone.
fn run_ltz<F: Field>(k: usize, kappa: usize, a: Vec<i128>) -> Vec<(usize, EngineStats, Vec<F>)> {
    run_parties(net(3), move |net| {
        let a = a.clone();
        async move {
            let me = net.me();
            let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
            let mut mpc = ShamirEngine::<F, _>::new(net, 1, &mut rng).await.unwrap();
            let mine: Vec<F> = a.iter().map(|&v| enc(v)).collect();
            let x = mpc.input(2, (me == 2).then_some(&mine[..]), a.len()).await.unwrap();
            let mut private = ChaCha12Rng::seed_from_u64(500 + me as u64);
            let before = mpc.stats();
            let s = less_than_zero(&mut mpc, &x, k, kappa, &mut private).await.unwrap();
            let used = mpc.stats() - before;
            let opened = mpc.open(&s).await.unwrap();
            mpc.finish().await.unwrap();
            (me, used, opened)
        }
    })
}

fn check_ltz<F: Field>(k: usize, kappa: usize, count: usize, rounds: u64) {
    let mut rng = ChaCha12Rng::seed_from_u64(k as u64 * 1000 + kappa as u64);
    let a = signed_values(&mut rng, k, count);
    let expected: Vec<F> = a.iter().map(|&v| F::from_u64(u64::from(v < 0))).collect();
    for (me, used, opened) in run_ltz::<F>(k, kappa, a.clone()) {
        for (j, (o, e)) in opened.iter().zip(&expected).enumerate() {
            assert_eq!(o, e, "{} k={k}: LTZ({}) at party {me}", F::NAME, a[j]);
        }
        let c = less_than_zero_cost(3, 1, me, k, kappa, count);
        assert_eq!(used.rounds, rounds, "k={k} party {me}: rounds");
        assert_eq!(used.rounds, c.rounds);
        assert_eq!(used.bytes_sent, c.bytes_sent(F::BYTES), "k={k} party {me}: bytes");
        println!(
            "LTZ {} k={k} kappa={kappa} party {me}: {} rounds, {:.1} bytes sent per comparison",
            F::NAME,
            used.rounds,
            used.bytes_sent as f64 / count as f64
        );
    }
}

#[test]
fn less_than_zero_matches_plaintext_m127() {
    // n - t + 2 (random bits) + 1 (open) + ceil(log2 63) (BitLT) = 4 + 1 + 6.
    check_ltz::<M127>(64, DEFAULT_KAPPA, 320, 11);
    // Small k: 4 + 1 + ceil(log2 1) = 5 and 4 + 1 + ceil(log2 2) = 6.
    check_ltz::<M127>(2, DEFAULT_KAPPA, 40, 5);
    check_ltz::<M127>(3, DEFAULT_KAPPA, 40, 6);
    // The largest k for kappa = 40: k + kappa + 1 = 126 < 127; 4 + 1 + ceil(log2 84) = 12.
    check_ltz::<M127>(85, DEFAULT_KAPPA, 40, 12);
}

#[test]
fn less_than_zero_matches_plaintext_m61() {
    // 4 + 1 + ceil(log2 31) = 10.
    check_ltz::<M61>(32, 20, 300, 10);
    // The largest kappa for k = 32 over GF(2^61-1).
    check_ltz::<M61>(32, 27, 40, 10);
}

/// Pairs (a, b) of (k-1)-bit signed values: edges, equal pairs, random.
fn pairs(rng: &mut impl RngCore, k: usize, count: usize) -> (Vec<i128>, Vec<i128>) {
    let q = 1i128 << (k - 2);
    let mut a = vec![0, 0, 1, -1, 0, 1, -1, q - 1, -q, q - 1, -q, q, -q, -q + 1, 5, -7];
    let mut b = vec![0, 1, 0, 0, -1, -1, 1, -q, q - 1, q - 1, -q, -q + 1, q, q, 5, -7];
    let vals = signed_values(rng, k - 1, 2 * count);
    let mut i = 0;
    while a.len() < count {
        a.push(vals[i]);
        // Every fifth pair equal.
        b.push(if a.len() % 5 == 0 { vals[i] } else { vals[i + 1] });
        i += 2;
    }
    // a - b must fit k bits.
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y) >= -2 * q && (x - y) < 2 * q));
    (a, b)
}

fn check_lt<F: Field>(k: usize, kappa: usize, count: usize, rounds: u64) {
    let mut rng = ChaCha12Rng::seed_from_u64(3 + k as u64);
    let (a, b) = pairs(&mut rng, k, count);
    let expected: Vec<F> = a.iter().zip(&b).map(|(x, y)| F::from_u64(u64::from(x < y))).collect();
    let out = run_parties(net(3), move |net| {
        let (a, b) = (a.clone(), b.clone());
        async move {
            let me = net.me();
            let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
            let mut mpc = ShamirEngine::<F, _>::new(net, 1, &mut rng).await.unwrap();
            let (ea, eb): (Vec<F>, Vec<F>) = (a.iter().map(|&v| enc(v)).collect(), b.iter().map(|&v| enc(v)).collect());
            let x = mpc.input(0, (me == 0).then_some(&ea[..]), a.len()).await.unwrap();
            let y = mpc.input(1, (me == 1).then_some(&eb[..]), b.len()).await.unwrap();
            let mut private = ChaCha12Rng::seed_from_u64(900 + me as u64);
            let before = mpc.stats();
            let s = less_than(&mut mpc, &x, &y, k, kappa, &mut private).await.unwrap();
            let used = mpc.stats() - before;
            let opened = mpc.open(&s).await.unwrap();
            mpc.finish().await.unwrap();
            (me, used, opened)
        }
    });
    for (me, used, opened) in out {
        assert_eq!(opened, expected, "{} k={k} party {me}", F::NAME);
        assert_eq!(used.rounds, rounds, "party {me}");
        assert_eq!(used.bytes_sent, less_than_zero_cost(3, 1, me, k, kappa, count).bytes_sent(F::BYTES));
    }
}

#[test]
fn less_than_matches_plaintext() {
    check_lt::<M127>(64, DEFAULT_KAPPA, 310, 11);
    check_lt::<M61>(32, 20, 300, 10);
}

#[test]
fn parameters_that_would_wrap_are_refused() {
    let out = run_parties(net(3), |net| async move {
        let me = net.me();
        let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
        let mut mpc = ShamirEngine::<M127, _>::new(net, 1, &mut rng).await.unwrap();
        let x = ShareVec::zeros(4);
        let before = mpc.stats();
        // k + kappa + 1 = 127 is not below 127 bits.
        let r = less_than_zero(&mut mpc, &x, 64, 62, &mut rng).await.map(|_| ());
        assert_eq!(mpc.stats(), before, "refused before any message");
        r
    });
    for r in out {
        assert!(matches!(r, Err(EngineError::Usage(ref s)) if s.contains("2^(k + kappa + 1) < p")), "{r:?}");
    }
    let out = run_parties(net(3), |net| async move {
        let me = net.me();
        let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
        let mut mpc = ShamirEngine::<M61, _>::new(net, 1, &mut rng).await.unwrap();
        let x = ShareVec::zeros(4);
        less_than(&mut mpc, &x, &x, 32, 28, &mut rng).await.map(|_| ())
    });
    for r in out {
        assert!(matches!(r, Err(EngineError::Usage(ref s)) if s.contains("at most kappa = 27")), "{r:?}");
    }
    let out = run_parties(net(3), |net| async move {
        let me = net.me();
        let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
        let mut mpc = ShamirEngine::<M61, _>::new(net, 1, &mut rng).await.unwrap();
        less_than_zero(&mut mpc, &ShareVec::zeros(1), 1, 20, &mut rng).await.map(|_| ())
    });
    for r in out {
        assert!(matches!(r, Err(EngineError::Usage(ref s)) if s.contains("k >= 2")), "{r:?}");
    }
}
