//! Shared random elements and bits over the simulated network: values,
//! distribution, retries, rounds and bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{net, run_parties};
use concord_engine::bits::{random_bits, random_bits_cost, random_elements, random_elements_cost};
use concord_engine::{EngineError, EngineStats, Mpc, ShamirEngine};
use concord_math::small::SmallPrime;
use concord_math::{Field, Ring, M127, M61};
use concord_net::Transport;
use concord_protocol::message::HEADER_LEN;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// Bits generated (and then opened) by every party, with the stats of the generation alone.
fn generate_bits<F: Field>(n: usize, t: usize, len: usize) -> Vec<(usize, EngineStats, Vec<F>)> {
    run_parties(net(n), move |net| async move {
        let me = net.me();
        let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
        let mut mpc = ShamirEngine::<F, _>::new(net, t, &mut rng).await.unwrap();
        let mut private = ChaCha12Rng::seed_from_u64(1000 + me as u64);
        let before = mpc.stats();
        let b = random_bits(&mut mpc, len, &mut private).await.unwrap();
        let used = mpc.stats() - before;
        assert_eq!(b.len(), len);
        let opened = mpc.open(&b).await.unwrap();
        mpc.finish().await.unwrap();
        (me, used, opened)
    })
}

/// Every party opened the same vector of 0s and 1s, with a number of ones
/// within 4 standard deviations of len / 2.
fn assert_uniform_bits<F: Field>(out: &[(usize, EngineStats, Vec<F>)], len: usize, what: &str) {
    let bits = &out[0].2;
    for (me, _, opened) in out {
        assert_eq!(opened, bits, "{what}: party {me} opened different values");
    }
    assert!(bits.iter().all(|b| *b == F::ZERO || *b == F::ONE), "{what}: an opened value is not a bit");
    let ones = bits.iter().filter(|b| **b == F::ONE).count() as f64;
    let (mean, sigma) = (len as f64 / 2.0, (len as f64 / 4.0).sqrt());
    assert!((ones - mean).abs() <= 4.0 * sigma, "{what}: {ones} ones out of {len}");
}

/// Elements sent per element per party in one attempt: RAN_p, the product if a resharer, the opening.
fn per_element(n: usize, t: usize, me: usize) -> u64 {
    ((n - 1 - t) * (1 + usize::from(me <= 2 * t)) + t) as u64
}

fn check_bits<F: Field>(n: usize, t: usize) {
    let len = 2000;
    let what = format!("{} n={n} t={t}", F::NAME);
    let out = generate_bits::<F>(n, t, len);
    assert_uniform_bits(&out, len, &what);
    for (me, used, _) in &out {
        let me = *me;
        // One attempt (a retry has probability about len / p here).
        let c = random_bits_cost(n, t, me, len);
        assert_eq!(used.rounds, c.rounds, "{what} party {me}: rounds");
        assert_eq!(used.bytes_sent, c.bytes_sent(F::BYTES), "{what} party {me}: bytes");
        // The formula of the module documentation, independently of the cost functions.
        assert_eq!(used.rounds, (n - t + 2) as u64, "{what} party {me}");
        let per = per_element(n, t, me);
        assert_eq!(used.bytes_sent, per * (len * F::BYTES + HEADER_LEN) as u64, "{what} party {me}");
        assert_eq!(used.messages_sent, per, "{what} party {me}");
    }
}

#[test]
fn random_bits_are_uniform_bits_at_the_predicted_cost() {
    check_bits::<M61>(3, 1);
    check_bits::<M61>(5, 2);
    check_bits::<M127>(3, 1);
    check_bits::<M127>(5, 2);
    // Bytes per bit (headers aside) for the resharing parties.
    assert_eq!(per_element(3, 1, 0) * 8, 24);
    assert_eq!(per_element(3, 1, 0) * 16, 48);
    assert_eq!(per_element(5, 2, 4) * 8, 48);
    assert_eq!(random_bits_cost(3, 1, 0, 2000).bytes_sent(8), 24 * 2000 + 3 * HEADER_LEN as u64);
}

/// In GF(7) and GF(11) (both = 3 mod 4), r = 0 for 1/7 or 1/11 of the
/// positions: they are regenerated until every position holds a bit.
#[test]
fn positions_whose_square_opens_to_zero_are_regenerated() {
    fn check<F: Field>(n: usize, t: usize) {
        let len = 2000;
        let what = format!("GF({}) n={n} t={t}", F::MODULUS);
        let out = generate_bits::<F>(n, t, len);
        assert_uniform_bits(&out, len, &what);
        // Attempts k from the rounds; total elements m over the attempts from
        // party 0's bytes; every party's bytes must agree with (k, m).
        let per_attempt = (n - t + 2) as u64;
        let rounds = out[0].1.rounds;
        assert_eq!(rounds % per_attempt, 0, "{what}");
        let k = rounds / per_attempt;
        assert!(k >= 2, "{what}: expected retries, got {k} attempt(s)");
        let b = F::BYTES as u64;
        let elems = out[0].1.bytes_sent / per_element(n, t, 0) - k * HEADER_LEN as u64;
        assert_eq!(elems % b, 0);
        let m = elems / b;
        // About len * (1 + 1/p + 1/p^2 + ...).
        assert!(m > len as u64 && m < 2 * len as u64, "{what}: {m} elements over {k} attempts");
        for (me, used, _) in &out {
            assert_eq!(used.rounds, rounds, "{what} party {me}");
            assert_eq!(used.bytes_sent, per_element(n, t, *me) * (m * b + k * HEADER_LEN as u64), "{what} party {me}");
        }
    }
    check::<SmallPrime<11>>(3, 1);
    check::<SmallPrime<7>>(5, 2);
}

/// An RNG that always returns zero: a party contributing no randomness.
struct ZeroRng;

impl RngCore for ZeroRng {
    fn next_u32(&mut self) -> u32 {
        0
    }
    fn next_u64(&mut self) -> u64 {
        0
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        dst.fill(0);
    }
}

/// Opened random elements of every party, and the stats of the generation;
/// the parties in `lazy` contribute zeros.
fn generate_elements<F: Field>(n: usize, t: usize, len: usize, lazy: &'static [usize]) -> Vec<(EngineStats, Vec<F>)> {
    run_parties(net(n), move |net| async move {
        let me = net.me();
        let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
        let mut mpc = ShamirEngine::<F, _>::new(net, t, &mut rng).await.unwrap();
        let before = mpc.stats();
        let r = if lazy.contains(&me) {
            random_elements(&mut mpc, len, &mut ZeroRng).await.unwrap()
        } else {
            random_elements(&mut mpc, len, &mut ChaCha12Rng::seed_from_u64(2000 + me as u64)).await.unwrap()
        };
        let used = mpc.stats() - before;
        let opened = mpc.open(&r).await.unwrap();
        mpc.finish().await.unwrap();
        (used, opened)
    })
}

fn assert_uniform_elements<F: Field>(out: &[(EngineStats, Vec<F>)], len: usize, what: &str) {
    let values = &out[0].1;
    assert!(out.iter().all(|(_, v)| v == values), "{what}: parties opened different values");
    assert_eq!(values.len(), len);
    let mut distinct: Vec<u128> = values.iter().map(|v| v.to_u128()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    // Over a field of 2^61 elements or more, 2000 uniform draws collide with probability < 2^-40.
    assert_eq!(distinct.len(), len, "{what}: repeated values");
    let top = 127 - F::MODULUS.leading_zeros(); // index of the top bit of p - 1
    let high = values.iter().filter(|v| v.to_u128() >> top == 1).count() as f64;
    let (mean, sigma) = (len as f64 / 2.0, (len as f64 / 4.0).sqrt());
    assert!((high - mean).abs() <= 4.0 * sigma, "{what}: top bit set in {high} of {len}");
}

#[test]
fn random_elements_look_uniform_at_the_predicted_cost() {
    let len = 2000;
    for (n, t) in [(3usize, 1usize), (5, 2)] {
        let out = generate_elements::<M61>(n, t, len, &[]);
        assert_uniform_elements(&out, len, &format!("m61 n={n} t={t}"));
        for (me, (used, _)) in out.iter().enumerate() {
            let c = random_elements_cost(n, t, me, len);
            assert_eq!(used.rounds, c.rounds, "n={n} t={t} party {me}");
            assert_eq!(used.rounds, (n - t) as u64);
            assert_eq!(used.bytes_sent, c.bytes_sent(8), "n={n} t={t} party {me}");
            assert_eq!(used.bytes_sent, ((n - 1 - t) * (len * 8 + HEADER_LEN)) as u64);
        }
    }
    let out = generate_elements::<M127>(3, 1, len, &[]);
    assert_uniform_elements(&out, len, "m127 n=3 t=1");
    // One honest contributor suffices.
    let out = generate_elements::<M61>(3, 1, len, &[0, 2]);
    assert_uniform_elements(&out, len, "m61 with parties 0 and 2 contributing zeros");
    // The check can fail: with nobody contributing, every value is 0.
    let out = generate_elements::<M61>(3, 1, 10, &[0, 1, 2]);
    assert!(out[0].1.iter().all(|v| *v == M61::ZERO));
}

#[test]
fn empty_requests_and_unsuitable_fields() {
    let out = run_parties(net(3), |net| async move {
        let me = net.me();
        let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
        let mut mpc = ShamirEngine::<M61, _>::new(net, 1, &mut rng).await.unwrap();
        let before = mpc.stats();
        let b = random_bits(&mut mpc, 0, &mut rng).await.unwrap();
        let used = mpc.stats() - before;
        mpc.finish().await.unwrap();
        (b.len(), used)
    });
    for (len, used) in out {
        assert_eq!((len, used), (0, EngineStats::default()));
    }
    // 13 = 1 (mod 4): s^((p+1)/4) is not a square root; refused before any message.
    let out = run_parties(net(3), |net| async move {
        let me = net.me();
        let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
        let mut mpc = ShamirEngine::<SmallPrime<13>, _>::new(net, 1, &mut rng).await.unwrap();
        random_bits(&mut mpc, 10, &mut rng).await.map(|_| ())
    });
    for r in out {
        assert!(matches!(r, Err(EngineError::Usage(ref m)) if m.contains("3 (mod 4)")), "{r:?}");
    }
}
