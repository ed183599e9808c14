//! The engines over the simulated network: results, rounds and bytes, faults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{net, run_parties};
use concord_engine::{AdditiveEngine, EngineError, Mpc, ShamirEngine};
use concord_math::{batch, Field, Ring, M127, M61, Z64};
use concord_net::sim::{self, LinkParams, SimTransport};
use concord_net::{LinkStats, NetError, PartyId, Transport};
use concord_protocol::cost;
use concord_protocol::message::HEADER_LEN;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha12Rng;

fn values<R: Ring>(seed: u64, len: usize) -> Vec<R> {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    (0..len).map(|_| R::random(&mut rng)).collect()
}

/// x from party 0, y from party 1; z = x * y opened to all, ip opened to party 2 (or 0).
async fn mul_workflow<M: Mpc>(mpc: &mut M, len: usize) -> (Vec<M::Elem>, Option<Vec<M::Elem>>) {
    let me = mpc.me();
    let x: Vec<M::Elem> = values(10, len);
    let y: Vec<M::Elem> = values(11, len);
    let sx = mpc.input(0, (me == 0).then_some(&x[..]), len).await.unwrap();
    let sy = mpc.input(1, (me == 1).then_some(&y[..]), len).await.unwrap();
    let z = mpc.mul(&sx, &sy).await.unwrap();
    let opened = mpc.open(&z).await.unwrap();
    let ip = mpc.inner_product(&sx, &sy).await.unwrap();
    let to = mpc.parties() - 1;
    let got = mpc.open_to(to, &ip).await.unwrap();
    mpc.finish().await.unwrap();
    (opened, got)
}

fn check_shamir<F: Field>(n: usize, t: usize) {
    let len = 257;
    let out = run_parties(net(n), move |net| async move {
        let mut rng = ChaCha12Rng::seed_from_u64(net.me() as u64);
        let mut mpc = ShamirEngine::<F, _>::new(net, t, &mut rng).await.unwrap();
        mul_workflow(&mut mpc, len).await
    });
    let (x, y): (Vec<F>, Vec<F>) = (values(10, len), values(11, len));
    let expect = batch::mul(&x, &y);
    for (p, (opened, ip)) in out.iter().enumerate() {
        assert_eq!(opened, &expect, "n={n} t={t} party {p}");
        if p == n - 1 {
            assert_eq!(ip.as_deref(), Some(&[batch::inner_product(&x, &y)][..]));
        } else {
            assert!(ip.is_none(), "party {p} must not learn a value opened to party {}", n - 1);
        }
    }
}

#[test]
fn shamir_results_for_several_party_counts() {
    check_shamir::<M61>(3, 1);
    check_shamir::<M61>(5, 2);
    check_shamir::<M61>(7, 3);
    check_shamir::<M61>(7, 1);
    check_shamir::<M127>(3, 1);
    check_shamir::<M127>(4, 1);
}

#[test]
fn additive_results() {
    for n in [2, 3, 5] {
        let len = 100;
        let out = run_parties(net(n), move |net| async move {
            let mut rng = ChaCha12Rng::seed_from_u64(net.me() as u64);
            let mut mpc = AdditiveEngine::<Z64, _, _>::with_insecure_dealer(net, &mut rng).await.unwrap();
            mul_workflow(&mut mpc, len).await
        });
        let (x, y): (Vec<Z64>, Vec<Z64>) = (values(10, len), values(11, len));
        for (opened, _) in &out {
            assert_eq!(opened, &batch::mul(&x, &y));
        }
        assert_eq!(out[n - 1].1.as_deref(), Some(&[batch::inner_product(&x, &y)][..]));
    }
}

#[test]
fn linear_operations_and_public_constants() {
    let out = run_parties(net(3), |net| async move {
        let me = net.me();
        let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
        let mut mpc = AdditiveEngine::<M61, _, _>::with_insecure_dealer(net, &mut rng).await.unwrap();
        let a = mpc.input(2, (me == 2).then_some(&[M61::from_u64(5), M61::from_u64(9)][..]), 2).await.unwrap();
        let b = mpc.add_public(&a, &[M61::from_u64(1), M61::from_u64(2)]).unwrap();
        let c = mpc.scale(&b, M61::from_u64(3));
        let d = mpc.sub(&c, &a).unwrap();
        let s = mpc.sum(&d);
        mpc.open(&s).await.unwrap()
    });
    // 3*(5+1) - 5 + 3*(9+2) - 9 = 13 + 24 = 37
    for o in out {
        assert_eq!(o, vec![M61::from_u64(37)]);
    }
}

/// Measured rounds and bytes of every party equal the formulas of `concord_protocol::cost`.
#[test]
fn rounds_and_bytes_match_the_cost_model() {
    for (n, t) in [(3usize, 1usize), (5, 2), (7, 2)] {
        let len = 1000;
        let out = run_parties(net(n), move |net| async move {
            let me = net.me();
            let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
            let mut mpc = ShamirEngine::<M61, _>::new(net, t, &mut rng).await.unwrap();
            let x: Vec<M61> = values(1, len);
            let s0 = mpc.stats();
            let a = mpc.input(0, (me == 0).then_some(&x[..]), len).await.unwrap();
            let s1 = mpc.stats();
            let b = mpc.mul(&a, &a).await.unwrap();
            let s2 = mpc.stats();
            mpc.open(&b).await.unwrap();
            let s3 = mpc.stats();
            (me, s1 - s0, s2 - s1, s3 - s2)
        });
        for (me, input, mul, open) in out {
            let ci = cost::shamir_input(n, t, 0, me, len);
            let receives_input = me != 0 && !((1..=t).contains(&me));
            assert_eq!(input.bytes_sent, ci.bytes_sent(8), "input n={n} t={t} party {me}");
            assert_eq!(input.rounds, u64::from(me == 0 || receives_input), "input rounds party {me}");
            let cm = cost::shamir_mul(n, t, me, len);
            assert_eq!(mul.bytes_sent, cm.bytes_sent(8), "mul n={n} t={t} party {me}");
            assert_eq!(mul.rounds, 1);
            let co = cost::shamir_open(t, len);
            assert_eq!(open.bytes_sent, co.bytes_sent(8), "open n={n} t={t} party {me}");
            assert_eq!(open.rounds, 1);
        }
    }
    // n = 3, t = 1: an opened product is 16 bytes per party per element (plus headers).
    let c = cost::shamir_mul(3, 1, 0, 1_000_000) + cost::shamir_open(1, 1_000_000);
    let batches = 1_000_000u64.div_ceil(cost::BATCH as u64);
    assert_eq!(c.bytes_sent(8), 16_000_000 + 2 * batches * HEADER_LEN as u64);
    assert_eq!(c.rounds, 2);

    let out = run_parties(net(3), |net| async move {
        let me = net.me();
        let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
        let mut mpc = AdditiveEngine::<Z64, _, _>::with_insecure_dealer(net, &mut rng).await.unwrap();
        let a = mpc.input(0, (me == 0).then_some(&[Z64::from_u64(3); 500][..]), 500).await.unwrap();
        let s0 = mpc.stats();
        let b = mpc.mul(&a, &a).await.unwrap();
        let s1 = mpc.stats();
        mpc.open(&b).await.unwrap();
        (s0, s1 - s0, mpc.stats() - s1)
    });
    for (before, mul, open) in out {
        assert_eq!(before.rounds, 1, "additive input needs no round beyond seed agreement");
        assert_eq!(mul.bytes_sent, cost::beaver_mul(3, 500).bytes_sent(8));
        assert_eq!(open.bytes_sent, cost::additive_open(3, 500).bytes_sent(8));
        assert_eq!((mul.rounds, open.rounds), (1, 1));
    }
}

/// A transport that corrupts the nth message a party sends.
struct Corrupting {
    inner: SimTransport,
    nth: usize,
    count: std::sync::atomic::AtomicUsize,
    garbage: Vec<u8>,
}

impl Transport for Corrupting {
    fn me(&self) -> PartyId {
        self.inner.me()
    }
    fn parties(&self) -> usize {
        self.inner.parties()
    }
    async fn send(&self, to: PartyId, payload: Vec<u8>) -> Result<(), NetError> {
        let k = self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let payload = if k == self.nth { self.garbage.clone() } else { payload };
        self.inner.send(to, payload).await
    }
    async fn recv(&self, from: PartyId) -> Result<Vec<u8>, NetError> {
        self.inner.recv(from).await
    }
    async fn abort(&self, reason: &str) {
        self.inner.abort(reason).await
    }
    fn stats(&self) -> LinkStats {
        self.inner.stats()
    }
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

async fn faulty_run<T: Transport>(net: T) -> Result<Vec<M61>, EngineError> {
    let me = net.me();
    let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
    let mut mpc = ShamirEngine::<M61, _>::new(net, 1, &mut rng).await?;
    let x = [M61::from_u64(4); 10];
    let a = mpc.input(0, (me == 0).then_some(&x[..]), 10).await?;
    let b = mpc.mul(&a, &a).await?;
    let v = mpc.open(&b).await?;
    mpc.finish().await?;
    Ok(v)
}

fn corrupt_party_1(garbage: Vec<u8>, nth: usize) -> Vec<Result<Vec<M61>, EngineError>> {
    let nets = net(3);
    let handles: Vec<_> = nets
        .into_iter()
        .map(|inner| {
            let garbage = garbage.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
                if inner.me() == 1 {
                    let t = Corrupting { inner, nth, count: Default::default(), garbage };
                    rt.block_on(faulty_run(t))
                } else {
                    rt.block_on(faulty_run(inner))
                }
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn garbage_from_a_peer_is_blamed_and_everyone_aborts() {
    // Party 1's messages (n=3, t=1): #0 seed to party 2, #1 reshare (seq 2) to party 0, #2 open (seq 3) to party 2.
    for (garbage, nth, detector) in [
        (vec![0xff; 3], 1usize, 0usize),                               // shorter than a header
        (vec![3, 1, 0, 0, 99, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8], 1, 0), // wrong sequence number
        ([vec![3, 1, 0, 0], 2u32.to_le_bytes().to_vec(), vec![0xff; 80]].concat(), 1, 0), // non-canonical
        ([vec![4, 1, 0, 0], 3u32.to_le_bytes().to_vec(), vec![0; 16]].concat(), 2, 2), // wrong length
        (vec![1, 2, 3], 0, 2),                                         // garbage seed
    ] {
        let out = corrupt_party_1(garbage.clone(), nth);
        let e = out[detector].as_ref().expect_err("the recipient must refuse the garbage");
        assert_eq!(e.culprit(), Some(1), "garbage {garbage:?}: {e}");
        for (p, r) in out.iter().enumerate() {
            assert!(r.is_err(), "party {p} must not produce a result after an abort (garbage {garbage:?})");
        }
        // Party 1 learns that an honest party aborted (the detector, naming
        // party 1, or another party reacting to the detector's exit), or
        // finds it gone if it had already shut down.
        match &out[1] {
            Err(EngineError::Net(NetError::PeerAborted { peer, reason })) => {
                assert_ne!(*peer, 1);
                if *peer == detector {
                    assert!(reason.contains("party 1"), "{reason}")
                }
            }
            Err(EngineError::Net(NetError::Disconnected { peer, .. })) => assert_ne!(*peer, 1),
            other => panic!("party 1 should see an honest party's abort, got {other:?}"),
        }
    }
}

#[test]
fn a_vanished_or_silent_peer_gives_a_clean_error_not_a_hang() {
    for vanish in [true, false] {
        let params = LinkParams { recv_timeout: Duration::from_millis(300), ..LinkParams::default() };
        let mut nets = sim::network(3, params, 1).unwrap();
        let gone = nets.remove(2);
        let keep = if vanish {
            drop(gone);
            None
        } else {
            Some(gone)
        };
        let started = std::time::Instant::now();
        let out = run_parties(nets, faulty_run);
        assert!(started.elapsed() < Duration::from_secs(10));
        let mut saw_party_2 = false;
        for r in out {
            let e = r.expect_err("a run without party 2 must fail");
            // Either this party noticed party 2 itself, or it got the other
            // survivor's abort, whose reason names party 2.
            // Or the other survivor, having failed first, was gone when this one sent.
            match &e {
                EngineError::Net(NetError::PeerAborted { reason, .. }) => {
                    assert!(reason.contains("party 2"), "vanish={vanish}: {e}")
                }
                EngineError::Net(NetError::Disconnected { peer, .. }) if *peer != 2 => {}
                _ => {
                    assert_eq!(e.culprit(), Some(2), "vanish={vanish}: {e}");
                    saw_party_2 = true;
                    if !vanish {
                        assert!(matches!(e, EngineError::Net(NetError::Timeout { peer: 2, .. })), "{e}");
                    }
                }
            }
        }
        assert!(saw_party_2, "at least one survivor blames party 2 directly");
        drop(keep);
    }
}

#[test]
fn misuse_is_refused() {
    let out = run_parties(net(3), |net| async move {
        let me = net.me();
        let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
        let mut mpc = ShamirEngine::<M61, _>::new(net, 1, &mut rng).await.unwrap();
        let wrong = mpc.input(0, Some(&[M61::ONE][..]), 1).await;
        (me, wrong.map(|_| ()))
    });
    for (me, r) in out {
        if me != 0 {
            assert!(matches!(r, Err(EngineError::Usage(_))), "party {me}: {r:?}");
        }
    }
    let bad_t = run_parties(net(3), |net| async move {
        let mut rng = ChaCha12Rng::seed_from_u64(0);
        ShamirEngine::<M61, _>::new(net, 3, &mut rng).await.map(|_| ())
    });
    assert!(bad_t.iter().all(|r| matches!(r, Err(EngineError::Sharing(_)))));
}

/// All parties' inputs in one round, with the same bytes as sequential inputs.
#[test]
fn input_all_is_one_round_and_matches_sequential_inputs() {
    for (n, t) in [(3usize, 1usize), (5, 2), (7, 3)] {
        let len = 70_000; // more than one batch
        let out = run_parties(net(n), move |net| async move {
            let me = net.me();
            let mut rng = ChaCha12Rng::seed_from_u64(me as u64);
            let mut mpc = ShamirEngine::<M61, _>::new(net, t, &mut rng).await.unwrap();
            let mine: Vec<M61> = values(100 + me as u64, len);
            let s0 = mpc.stats();
            let shared = mpc.input_all(&mine, len).await.unwrap();
            let s1 = mpc.stats();
            let mut opened = Vec::new();
            for s in &shared {
                opened.push(mpc.open(s).await.unwrap());
            }
            mpc.finish().await.unwrap();
            (me, s1 - s0, opened)
        });
        for (me, st, opened) in out {
            assert_eq!(st.rounds, 1, "n={n} party {me}");
            let expect: u64 = (0..n).map(|o| cost::shamir_input(n, t, o, me, len).bytes_sent(8)).sum();
            assert_eq!(st.bytes_sent, expect, "n={n} party {me}");
            for (o, v) in opened.iter().enumerate() {
                assert_eq!(v, &values::<M61>(100 + o as u64, len), "n={n}: party {o}'s input as opened by {me}");
            }
        }
    }
}
