#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The three-party replicated engine against plaintext, over the simulated network.

mod common;

use common::{net, run_parties};
use concord_engine::rep3::{is_zero_rounds, msb_ands, msb_rounds, Extremum, Rep3Engine};
use concord_engine::EngineError;
use concord_net::sim::SimTransport;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// Signed `bits`-bit test values: edges first, then seeded random ones.
fn values(seed: u64, len: usize, bits: u32) -> Vec<i64> {
    let lo = -(1i64 << (bits - 1));
    let hi = (1i64 << (bits - 1)) - 1;
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    let mut v: Vec<i64> = [lo, hi, 0, -1, 1, lo + 1, hi - 1].into_iter().filter(|x| (lo..=hi).contains(x)).collect();
    while v.len() < len {
        let span = (hi - lo) as u64 + 1;
        v.push(lo + (rng.next_u64() % span) as i64);
    }
    v.truncate(len);
    v
}

fn enc(v: &[i64]) -> Vec<u64> {
    v.iter().map(|&x| x as u64).collect()
}

async fn engine(net: SimTransport) -> Rep3Engine<SimTransport> {
    let me = concord_net::Transport::me(&net) as u64;
    let mut rng = ChaCha12Rng::seed_from_u64(100 + me);
    Rep3Engine::new(net, &mut rng).await.unwrap()
}

/// Party 0 inputs x, party 1 inputs y; every party runs `f` and returns what it opened.
fn two_inputs<F, Fut>(x: Vec<i64>, y: Vec<i64>, f: F) -> Vec<Vec<bool>>
where
    F: Fn(Rep3Engine<SimTransport>, concord_protocol::rep3::RingShare, concord_protocol::rep3::RingShare) -> Fut
        + Send
        + Sync
        + Clone
        + 'static,
    Fut: std::future::Future<Output = Vec<bool>>,
{
    let len = x.len();
    run_parties(net(3), move |n| {
        let (x, y, f) = (x.clone(), y.clone(), f.clone());
        async move {
            let mut e = engine(n).await;
            let me = e.me();
            let xs = e.input(0, (me == 0).then(|| enc(&x)).as_deref(), len).await.unwrap();
            let ys = e.input(1, (me == 1).then(|| enc(&y)).as_deref(), len).await.unwrap();
            f(e, xs, ys).await
        }
    })
}

#[test]
fn input_open_and_mul_match_plaintext() {
    let x = values(1, 100, 63);
    let y = values(2, 100, 63);
    let (x2, y2) = (x.clone(), y.clone());
    let out = run_parties(net(3), move |n| {
        let (x, y) = (x2.clone(), y2.clone());
        async move {
            let mut e = engine(n).await;
            let me = e.me();
            let xs = e.input(2, (me == 2).then(|| enc(&x)).as_deref(), x.len()).await.unwrap();
            let ys = e.input(1, (me == 1).then(|| enc(&y)).as_deref(), y.len()).await.unwrap();
            let p = e.mul(&xs, &ys).await.unwrap();
            let opened = (e.open(&xs).await.unwrap(), e.open(&p).await.unwrap());
            e.finish().await.unwrap();
            opened
        }
    });
    for (xo, po) in out {
        assert_eq!(xo, enc(&x));
        let expect: Vec<u64> = x.iter().zip(&y).map(|(a, b)| (*a as u64).wrapping_mul(*b as u64)).collect();
        assert_eq!(po, expect);
    }
}

fn check_comparisons(bits: u32, len: usize) {
    let x = values(10 + bits as u64, len, bits);
    let mut y = values(20 + bits as u64, len, bits);
    // Ties and neighbours.
    y[..len / 4].copy_from_slice(&x[..len / 4]);
    for k in len / 4..len / 3 {
        y[k] = x[k].saturating_add(1).min((1i64 << (bits - 1)) - 1);
    }
    let out = two_inputs(x.clone(), y.clone(), move |mut e, xs, ys| async move {
        let mut all = Vec::new();
        let lt = e.less_than(&xs, &ys, bits).await.unwrap();
        all.extend(e.open_bools(&lt).await.unwrap());
        let le = e.less_equal(&xs, &ys, bits).await.unwrap();
        all.extend(e.open_bools(&le).await.unwrap());
        let gt = e.greater_than(&xs, &ys, bits).await.unwrap();
        all.extend(e.open_bools(&gt).await.unwrap());
        let eq = e.equal(&xs, &ys, bits).await.unwrap();
        all.extend(e.open_bools(&eq).await.unwrap());
        let sg = e.sign(&xs, bits).await.unwrap();
        all.extend(e.open_bools(&sg).await.unwrap());
        e.finish().await.unwrap();
        all
    });
    let mut expect = Vec::new();
    expect.extend(x.iter().zip(&y).map(|(a, b)| a < b));
    expect.extend(x.iter().zip(&y).map(|(a, b)| a <= b));
    expect.extend(x.iter().zip(&y).map(|(a, b)| a > b));
    expect.extend(x.iter().zip(&y).map(|(a, b)| a == b));
    expect.extend(x.iter().map(|a| *a < 0));
    for got in out {
        assert_eq!(got, expect, "bits = {bits}");
    }
}

#[test]
fn comparisons_match_plaintext_for_32_bit_values() {
    check_comparisons(32, 300);
}

#[test]
fn comparisons_match_plaintext_for_every_small_and_large_bit_length() {
    for bits in [1, 2, 3, 4, 5, 8, 17, 63] {
        check_comparisons(bits, 70);
    }
}

#[test]
fn rounds_and_bytes_match_the_cost_formulas() {
    let len = 640; // 10 words per plane
    let x = values(3, len, 32);
    let y = values(4, len, 32);
    let out = two_inputs(x, y, move |mut e, xs, ys| async move {
        let s0 = e.stats();
        let _ = e.less_than(&xs, &ys, 32).await.unwrap();
        let s1 = e.stats();
        let _ = e.equal(&xs, &ys, 32).await.unwrap();
        let s2 = e.stats();
        e.finish().await.unwrap();
        vec![
            s1.rounds - s0.rounds == msb_rounds(33),
            s1.bytes_sent - s0.bytes_sent == msb_ands(33) * len as u64 / 8 + 8 * msb_rounds(33),
            s2.rounds - s1.rounds <= is_zero_rounds(32),
        ]
    });
    assert_eq!(msb_rounds(33), 7);
    assert_eq!(msb_ands(33), 118);
    for o in out {
        assert_eq!(o, vec![true, true, true]);
    }
}

#[test]
fn select_clamp_and_extrema_match_plaintext() {
    let x = values(5, 101, 32);
    let mut y = values(6, 101, 32);
    (y[0], y[1]) = (0, 0); // values() starts with the bounds
    y[50] = i64::from(i32::MIN); // the unique minimum of y is at index 50 ...
    y[60] = i64::from(i32::MIN) + 5;
    y[70] = i64::from(i32::MAX);
    y[80] = i64::from(i32::MAX); // ... and the maximum ties at 70 and 80.
    let (x2, y2) = (x.clone(), y.clone());
    let out = run_parties(net(3), move |n| {
        let (x, y) = (x2.clone(), y2.clone());
        async move {
            let mut e = engine(n).await;
            let me = e.me();
            let len = x.len();
            e.preprocess(1000).await.unwrap();
            let pre = e.preprocessing_stats();
            let xs = e.input(0, (me == 0).then(|| enc(&x)).as_deref(), len).await.unwrap();
            let ys = e.input(1, (me == 1).then(|| enc(&y)).as_deref(), len).await.unwrap();
            let c = e.less_than(&xs, &ys, 32).await.unwrap();
            let m = e.select(&c, &xs, &ys).await.unwrap();
            let clamped = e.clamp(&ys, -1000, 1000, 32).await.unwrap();
            let (mn, imn) = e.extremum(&ys, 32, Extremum::Min).await.unwrap();
            let (mx, imx) = e.extremum(&ys, 32, Extremum::Max).await.unwrap();
            let single = e.extremum(&ys.slice(3..4).unwrap(), 32, Extremum::Max).await.unwrap().0;
            let opened = vec![
                e.open(&m).await.unwrap(),
                e.open(&clamped).await.unwrap(),
                e.open(&mn).await.unwrap(),
                e.open(&imn).await.unwrap(),
                e.open(&mx).await.unwrap(),
                e.open(&imx).await.unwrap(),
                e.open(&single).await.unwrap(),
            ];
            e.finish().await.unwrap();
            (opened, pre.rounds)
        }
    });
    let min_xy: Vec<i64> = x.iter().zip(&y).map(|(a, b)| *a.min(b)).collect();
    let clamped: Vec<i64> = y.iter().map(|v| (*v).clamp(-1000, 1000)).collect();
    for (o, pre_rounds) in out {
        assert_eq!(pre_rounds, 2, "daBits take two multiplication rounds");
        assert_eq!(o[0], enc(&min_xy));
        assert_eq!(o[1], enc(&clamped));
        assert_eq!(o[2], vec![i64::from(i32::MIN) as u64]);
        assert_eq!(o[3], vec![50]);
        assert_eq!(o[4], vec![i64::from(i32::MAX) as u64]);
        assert_eq!(o[5], vec![70], "ties go to the first index");
        assert_eq!(o[6], vec![y[3] as u64]);
    }
}

#[test]
fn bad_parameters_are_refused_with_a_clear_error() {
    // Two parties cannot run the replicated engine.
    let out = run_parties(net(2), |n| async move {
        let mut rng = ChaCha12Rng::seed_from_u64(1);
        Rep3Engine::new(n, &mut rng).await.err().map(|e| e.to_string())
    });
    for o in out {
        assert!(o.unwrap().contains("exactly 3 parties"));
    }
    let out = two_inputs(vec![1, 2], vec![3, 4], |mut e, xs, ys| async move {
        let a = matches!(e.less_than(&xs, &ys, 64).await, Err(EngineError::Usage(m)) if m.contains("1..=63"));
        let short = xs.slice(0..1).unwrap();
        let b = e.mul(&short, &ys).await.is_err();
        vec![a, b]
    });
    for o in out {
        assert_eq!(o, vec![true, true]);
    }
}

#[test]
fn shuffle_permutes_and_sort_matches_plaintext() {
    let mut x = values(7, 150, 32);
    x[10] = x[20]; // ties
    x[30] = x[20];
    let x2 = x.clone();
    let out = run_parties(net(3), move |n| {
        let x = x2.clone();
        async move {
            let mut e = engine(n).await;
            let me = e.me();
            let len = x.len();
            let xs = e.input(0, (me == 0).then(|| enc(&x)).as_deref(), len).await.unwrap();
            let sh = e.shuffle(&xs, 1).await.unwrap();
            let shuffled = e.open(&sh).await.unwrap();
            let sorted = e.sort(&xs, 32).await.unwrap();
            let sorted = e.open(&sorted).await.unwrap();
            let mut small = Vec::new();
            for k in [1usize, 2, 3] {
                let s = e.sort(&xs.slice(0..k).unwrap(), 32).await.unwrap();
                small.push(e.open(&s).await.unwrap());
            }
            let bad = e.sort(&xs, 60).await.err().map(|e| e.to_string());
            e.finish().await.unwrap();
            (shuffled, sorted, small, bad)
        }
    });
    let mut expect = x.clone();
    expect.sort_unstable();
    for (shuffled, sorted, small, bad) in out {
        assert_ne!(shuffled, enc(&x), "the shuffle left the order unchanged");
        let mut s: Vec<i64> = shuffled.iter().map(|&v| v as i64).collect();
        s.sort_unstable();
        assert_eq!(s, expect, "the shuffle is not a permutation");
        assert_eq!(sorted, enc(&expect));
        for (k, got) in small.iter().enumerate() {
            let mut e = x[..=k].to_vec();
            e.sort_unstable();
            assert_eq!(got, &enc(&e));
        }
        assert!(bad.unwrap().contains("at most 62"));
    }
}

#[test]
fn decomposition_and_exact_truncation_match_plaintext() {
    let x = values(8, 200, 40);
    let x2 = x.clone();
    let out = run_parties(net(3), move |n| {
        let x = x2.clone();
        async move {
            let mut e = engine(n).await;
            let me = e.me();
            let xs = e.input(1, (me == 1).then(|| enc(&x)).as_deref(), x.len()).await.unwrap();
            let bits = e.bit_decompose(&xs, 40).await.unwrap();
            let bits = e.open_bits(&bits).await.unwrap();
            let mut truncs = Vec::new();
            for d in [1u32, 7, 16, 39] {
                let t = e.truncate(&xs, d, 40).await.unwrap();
                truncs.push(e.open(&t).await.unwrap());
            }
            let bad = e.truncate(&xs, 0, 40).await.is_err() && e.truncate(&xs, 40, 40).await.is_err();
            e.finish().await.unwrap();
            (bits, truncs, bad)
        }
    });
    for (bits, truncs, bad) in out {
        let values = concord_protocol::rep3::unslice_bits(&bits, 40, x.len());
        let expect: Vec<u64> = x.iter().map(|&v| v as u64 & ((1 << 40) - 1)).collect();
        assert_eq!(values, expect);
        for (t, d) in truncs.iter().zip([1u32, 7, 16, 39]) {
            let expect: Vec<u64> = x.iter().map(|&v| (v >> d) as u64).collect();
            assert_eq!(t, &expect, "floor(x / 2^{d})");
        }
        assert!(bad);
    }
}

#[test]
fn fixed_point_division_and_square_root_are_within_the_documented_bound() {
    const F: u32 = 16;
    let scale = f64::from(1u32 << F);
    let mut rng = ChaCha12Rng::seed_from_u64(9);
    // Numerators in (-1000, 1000), denominators of both signs across the range
    // (1/8 .. 16,000), and edge values.
    let mut xs: Vec<f64> = vec![0.0, 1.0, -1.0, 999.5, -999.5];
    let mut ys: Vec<f64> = vec![1.0, -1.0, 0.125, 16000.0, -3.0];
    while xs.len() < 120 {
        xs.push((rng.next_u64() % 2_000_000) as f64 / 1000.0 - 1000.0);
        let mag = 2f64.powf((rng.next_u64() % 1000) as f64 / 1000.0 * 17.0 - 3.0);
        ys.push(if rng.next_u64() % 2 == 0 { mag } else { -mag });
    }
    let roots: Vec<f64> =
        (0..120).map(|k| if k < 3 { [0.0, 1.0, 16_000_000.0][k] } else { xs[k].abs() * 7.0 }).collect();
    let fx = |v: &[f64]| v.iter().map(|a| (a * scale).round() as i64).collect::<Vec<i64>>();
    let (xe, ye, re) = (fx(&xs), fx(&ys), fx(&roots));
    let out = run_parties(net(3), move |n| {
        let (xe, ye, re) = (xe.clone(), ye.clone(), re.clone());
        async move {
            let mut e = engine(n).await;
            let me = e.me();
            let len = xe.len();
            let x = e.input(0, (me == 0).then(|| enc(&xe)).as_deref(), len).await.unwrap();
            let y = e.input(1, (me == 1).then(|| enc(&ye)).as_deref(), len).await.unwrap();
            let r = e.input(2, (me == 2).then(|| enc(&re)).as_deref(), len).await.unwrap();
            let q = e.divide(&x, &y, F, 40).await.unwrap();
            let s = e.sqrt(&r, F, 40).await.unwrap();
            let inv = e.reciprocal(&y, F, 40).await.unwrap();
            let opened = (e.open(&q).await.unwrap(), e.open(&s).await.unwrap(), e.open(&inv).await.unwrap());
            e.finish().await.unwrap();
            opened
        }
    });
    for (q, s, inv) in out {
        for k in 0..xs.len() {
            let got = inv[k] as i64 as f64 / scale;
            let want = 1.0 / ((ys[k] * scale).round() / scale);
            let bound = want.abs() * 2f64.powi(-15) + (2.0 + 1.0 / (scale * ys[k].abs())) / scale;
            assert!((got - want).abs() <= bound, "1 / {} = {want}, got {got}", ys[k]);
            let got = q[k] as i64 as f64 / scale;
            let want = ((xs[k] * scale).round() / scale) / ((ys[k] * scale).round() / scale);
            let bound = want.abs() * 2f64.powi(-15) + (2.0 + 1.0 / (scale * ys[k].abs())) / scale;
            assert!((got - want).abs() <= bound, "{} / {} = {want}, got {got}", xs[k], ys[k]);
            let got = s[k] as i64 as f64 / scale;
            let want = ((roots[k] * scale).round() / scale).sqrt();
            let bound = want * 2f64.powi(-15) + 4.0 / scale;
            assert!((got - want).abs() <= bound, "sqrt({}) = {want}, got {got}", roots[k]);
        }
    }
}

#[test]
fn wide_division_keeps_its_relative_precision() {
    // Raw numerators up to 2^55 over raw denominators up to 2^30 (both read
    // with 16 fractional bits; the ratio is scale-free).
    let mut rng = ChaCha12Rng::seed_from_u64(11);
    let xs: Vec<i64> = (0..64).map(|k| ((rng.next_u64() >> 9) as i64) * if k % 3 == 0 { -1 } else { 1 }).collect();
    let ys: Vec<i64> = (0..64).map(|_| (rng.next_u64() >> 34) as i64 + 1).collect();
    let (x2, y2) = (xs.clone(), ys.clone());
    let out = run_parties(net(3), move |n| {
        let (xs, ys) = (x2.clone(), y2.clone());
        async move {
            let mut e = engine(n).await;
            let me = e.me();
            let x = e.input(0, (me == 0).then(|| enc(&xs)).as_deref(), xs.len()).await.unwrap();
            let y = e.input(1, (me == 1).then(|| enc(&ys)).as_deref(), ys.len()).await.unwrap();
            let q = e.divide_wide(&x, &y, 16, 40, 56).await.unwrap();
            let q = e.open(&q).await.unwrap();
            e.finish().await.unwrap();
            q
        }
    });
    for q in out {
        for k in 0..xs.len() {
            let want = xs[k] as f64 / ys[k] as f64;
            let got = q[k] as i64 as f64 / 65536.0;
            assert!(
                (got - want).abs() <= want.abs() * 2f64.powi(-15) + 4.0 / 65536.0,
                "{} / {}: {want} vs {got}",
                xs[k],
                ys[k]
            );
        }
    }
}

#[test]
fn a_party_that_leaves_mid_protocol_gives_a_clean_error_naming_it() {
    let out = run_parties(net(3), |n| async move {
        let mut e = engine(n).await;
        let me = e.me();
        let x = e.input(0, (me == 0).then_some(&[1u64, 2, 3][..]), 3).await.unwrap();
        if me == 2 {
            // Crash: drop the engine (and its transport) without a goodbye.
            drop(e);
            return None;
        }
        let r = e.less_than(&x, &x, 32).await;
        Some(r.err().map(|err| (err.culprit(), err.to_string())))
    });
    for (p, o) in out.into_iter().enumerate().take(2) {
        let (culprit, msg) = o.flatten().unwrap_or_else(|| panic!("party {p} did not fail"));
        // Directly (culprit 2), or through the abort of a peer that saw it first.
        assert!(culprit == Some(2) || msg.contains("party 2"), "party {p}: {culprit:?} {msg}");
    }
}
