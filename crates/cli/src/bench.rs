//! `concord bench`: whole-protocol benchmarks over the simulated network
//! (all parties in this process) or loopback TLS (one OS process per party).
//!
//! Inputs are pseudo-random 32-bit integers derived from `--seed`, the same
//! at every run, so every party can check the opened result.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use concord_engine::rep3::{Extremum, Rep3Engine};
use concord_engine::{AdditiveEngine, EngineError, EngineStats, Mpc, ShamirEngine};
use concord_math::{batch, Field, Ring, M127, M61, Z64};
use concord_net::sim::{self, LinkParams};
use concord_net::Transport;
use concord_protocol::rep3::RingShare;
use indicatif::{ProgressBar, ProgressStyle};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

use crate::local::{peak_rss_bytes, run_parties};

/// What to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Element-wise product of two shared vectors (inputs of parties 0 and 1), opened.
    Mul,
    /// Inner product of two shared vectors, opened.
    InnerProduct,
    /// Every party inputs a vector; the element-wise sum is opened.
    Sum,
    /// A shared vector is opened.
    Open,
    /// `x < y` for 32-bit signed x (party 0) and y (party 1), revealed (replicated engine).
    Cmp,
    /// `x == y` for 32-bit x and y, half of the pairs equal, revealed (replicated engine).
    Eq,
    /// The minimum of party 0's 32-bit signed values and its index, revealed (replicated engine).
    Min,
    /// The maximum, as `min`.
    Max,
    /// The median of party 0's 32-bit signed values by oblivious sorting (shuffle, then
    /// quicksort with opened comparisons); for an even count the sum of the two middle values.
    Median,
    /// Fixed-point division x / y (16 fractional bits) of party 0's and party 1's values.
    Div,
    /// Fixed-point square root (16 fractional bits) of party 0's values.
    Sqrt,
    /// Accuracy of the differentially private AVG (distributed discrete Laplace noise) against
    /// epsilon and the number of parties: average and worst-case accuracy, table and PNG plot
    /// (`--epsilons`, `--party-counts`, `--rows`, `--runs`, `--out`).
    Dp,
}

impl Workload {
    /// Whether the workload needs the comparison circuits of the replicated engine.
    fn nonlinear(self) -> bool {
        matches!(
            self,
            Workload::Cmp
                | Workload::Eq
                | Workload::Min
                | Workload::Max
                | Workload::Median
                | Workload::Div
                | Workload::Sqrt
        )
    }
}

/// The arithmetic domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Domain {
    /// GF(2^61 - 1).
    M61,
    /// GF(2^127 - 1).
    M127,
    /// Z/2^64 (additive sharing only).
    Z64,
}

/// The sharing scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// t-of-n Shamir, honest majority (fields only).
    Shamir,
    /// n-of-n additive with Beaver triples from the insecure dealer test double.
    Additive,
    /// Three-party replicated sharing over Z/2^64 with bit-sliced comparisons (t = 1).
    Rep3,
}

/// The network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// One OS process per party, mutually authenticated TLS 1.3 over loopback.
    Tls,
    /// All parties in this process over the simulated network.
    Sim,
}

/// Arguments of `concord bench`.
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct BenchArgs {
    /// Workload.
    #[arg(value_enum)]
    pub workload: Workload,
    /// Number of elements.
    #[arg(long, default_value_t = 1_000_000)]
    pub size: usize,
    /// Number of parties.
    #[arg(long, default_value_t = 3)]
    pub parties: usize,
    /// Threshold t (Shamir; default (n-1)/2). Additive sharing always tolerates n-1.
    #[arg(long)]
    pub threshold: Option<usize>,
    /// Arithmetic domain (default: m61; z64 for rep3).
    #[arg(long, value_enum)]
    pub domain: Option<Domain>,
    /// Sharing scheme (default: rep3 for cmp/eq/min/max, shamir for m61/m127, additive for z64).
    #[arg(long, value_enum)]
    pub scheme: Option<Scheme>,
    /// Network.
    #[arg(long, value_enum, default_value = "tls")]
    pub transport: TransportKind,
    /// One-way link latency in milliseconds (sim only).
    #[arg(long, default_value_t = 0.0)]
    pub latency_ms: f64,
    /// Link bandwidth in megabits per second (sim only; default unlimited).
    #[arg(long)]
    pub bandwidth_mbps: Option<f64>,
    /// Packet loss probability in [0, 0.9] (sim only).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Jitter bound in milliseconds (sim only).
    #[arg(long, default_value_t = 0.0)]
    pub jitter_ms: f64,
    /// Seed for inputs and the simulated network.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds any party waits for a peer before aborting.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Fault injection for tests: this party's process exits abruptly after connecting.
    #[arg(long, hide = true)]
    pub crash_party: Option<usize>,
    /// Options of the `dp` workload.
    #[command(flatten)]
    pub dp: crate::bench_dp::DpArgs,
}

impl BenchArgs {
    fn scheme(&self) -> Scheme {
        self.scheme.unwrap_or(match (self.workload.nonlinear(), self.domain) {
            (true, _) => Scheme::Rep3,
            (false, Some(Domain::Z64)) => Scheme::Additive,
            _ => Scheme::Shamir,
        })
    }

    fn domain(&self) -> Domain {
        self.domain.unwrap_or(if self.scheme() == Scheme::Rep3 { Domain::Z64 } else { Domain::M61 })
    }

    fn threshold(&self) -> usize {
        match self.scheme() {
            Scheme::Rep3 => 1,
            Scheme::Additive => self.parties.saturating_sub(1),
            Scheme::Shamir => self.threshold.unwrap_or(self.parties.saturating_sub(1) / 2),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.size == 0 {
            bail!("--size must be at least 1");
        }
        if !(2..=64).contains(&self.parties) {
            bail!("--parties must be between 2 and 64, got {}", self.parties);
        }
        if self.workload.nonlinear() && self.scheme() != Scheme::Rep3 {
            bail!("{:?} runs on the replicated engine: use --scheme rep3 (or leave --scheme out)", self.workload);
        }
        match self.scheme() {
            Scheme::Rep3 => {
                if self.parties != 3 {
                    bail!("--scheme rep3 runs exactly 3 parties, got --parties {}", self.parties);
                }
                if self.domain() != Domain::Z64 {
                    bail!("--scheme rep3 computes in z64, not {:?}", self.domain());
                }
                if self.threshold.is_some_and(|t| t != 1) {
                    bail!("--scheme rep3 tolerates exactly one corrupted party: its threshold is 1");
                }
            }
            Scheme::Shamir => {
                if self.domain() == Domain::Z64 {
                    bail!("Shamir sharing needs a field: use --domain m61 or m127, or --scheme additive with z64");
                }
                let t = self.threshold();
                if t == 0 || t >= self.parties {
                    bail!("--threshold must satisfy 1 <= t < n = {}, got {t}", self.parties);
                }
                let needs_mul = matches!(self.workload, Workload::Mul | Workload::InnerProduct);
                if needs_mul && self.parties < 2 * t + 1 {
                    bail!(
                        "{:?} multiplies, which with Shamir sharing needs n >= 2t + 1; n = {}, t = {t}",
                        self.workload,
                        self.parties
                    );
                }
            }
            Scheme::Additive => {
                if let Some(t) = self.threshold {
                    if t != self.parties - 1 {
                        bail!("additive sharing is n-of-n: its threshold is n - 1 = {}, not {t}", self.parties - 1);
                    }
                }
            }
        }
        let sim_only =
            self.latency_ms != 0.0 || self.bandwidth_mbps.is_some() || self.loss != 0.0 || self.jitter_ms != 0.0;
        if self.transport == TransportKind::Tls && sim_only {
            bail!("--latency-ms, --bandwidth-mbps, --loss and --jitter-ms shape the simulated network: add --transport sim");
        }
        if !(self.latency_ms.is_finite()
            && self.latency_ms >= 0.0
            && self.jitter_ms.is_finite()
            && self.jitter_ms >= 0.0)
        {
            bail!("--latency-ms and --jitter-ms must be non-negative");
        }
        if let Some(b) = self.bandwidth_mbps {
            if !(b.is_finite() && b > 0.0) {
                bail!("--bandwidth-mbps must be positive, got {b}");
            }
        }
        if !(0.0..=0.9).contains(&self.loss) {
            bail!("--loss must be in [0, 0.9], got {}", self.loss);
        }
        Ok(())
    }
}

/// What one party measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PartyReport {
    party: usize,
    setup_seconds: f64,
    preprocessing_seconds: f64,
    online_seconds: f64,
    online_rounds: u64,
    online_bytes_sent: u64,
    online_bytes_received: u64,
    setup_bytes_sent: u64,
    #[serde(default)]
    preprocessing_rounds: u64,
    #[serde(default)]
    preprocessing_bytes_sent: u64,
    total_rounds: u64,
    wire_bytes_sent: u64,
    peak_rss_bytes: u64,
    correct: bool,
}

/// Deterministic inputs of party `p`: 32-bit integers.
fn inputs<R: Ring>(seed: u64, p: usize, len: usize) -> Vec<R> {
    let mut rng = ChaCha12Rng::seed_from_u64(seed ^ ((p as u64 + 1) << 32));
    (0..len).map(|_| R::from_u64(rng.next_u32() as u64)).collect()
}

/// Run the workload on an engine whose setup started at `t0`.
async fn run_workload<M: Mpc>(
    mpc: &mut M,
    args: &BenchArgs,
    t0: Instant,
    preprocessing_seconds: f64,
) -> Result<PartyReport, EngineError> {
    let (me, n, len) = (mpc.me(), mpc.parties(), args.size);
    let own: Vec<M::Elem> = inputs(args.seed, me, len);
    // Setup: share inputs.
    let mut shared = Vec::new();
    let owners: Vec<usize> = match args.workload {
        Workload::Mul | Workload::InnerProduct => vec![0, 1],
        Workload::Sum => (0..n).collect(),
        _ => vec![0],
    };
    for &o in &owners {
        shared.push(mpc.input(o, (o == me).then_some(&own[..]), len).await?);
    }
    let setup_seconds = t0.elapsed().as_secs_f64();
    let before = mpc.stats();
    // Online.
    let t1 = Instant::now();
    let (opened, expect) = match args.workload {
        Workload::Mul => {
            let z = mpc.mul(&shared[0], &shared[1]).await?;
            let out = mpc.open(&z).await?;
            (out, None)
        }
        Workload::InnerProduct => {
            let z = mpc.inner_product(&shared[0], &shared[1]).await?;
            (mpc.open(&z).await?, None)
        }
        Workload::Sum => {
            let mut acc = shared[0].clone();
            for s in &shared[1..] {
                acc = mpc.add(&acc, s)?;
            }
            (mpc.open(&acc).await?, None)
        }
        Workload::Open => (mpc.open(&shared[0]).await?, Some(inputs::<M::Elem>(args.seed, 0, len))),
        w => return Err(EngineError::Usage(format!("{w:?} runs on the replicated engine"))),
    };
    let online_seconds = t1.elapsed().as_secs_f64();
    let after = mpc.stats();
    // Check against the plaintext (outside the timed part).
    let expect = expect.unwrap_or_else(|| {
        let (x, y): (Vec<M::Elem>, Vec<M::Elem>) = (inputs(args.seed, 0, len), inputs(args.seed, 1, len));
        match args.workload {
            Workload::Mul => batch::mul(&x, &y),
            Workload::InnerProduct => vec![batch::inner_product(&x, &y)],
            _ => {
                let mut acc = vec![M::Elem::ZERO; len];
                for p in 0..n {
                    batch::add_assign(&mut acc, &inputs::<M::Elem>(args.seed, p, len));
                }
                acc
            }
        }
    });
    let correct = opened == expect;
    mpc.finish().await?;
    let times = (setup_seconds, preprocessing_seconds, online_seconds);
    Ok(PartyReport::new(me, times, before, after, EngineStats::default(), mpc.stats().rounds, 0, correct))
}

impl PartyReport {
    /// A report from the phase timings (setup, preprocessing, online), the
    /// counters before and after the online phase, the preprocessing counters,
    /// the total rounds and the transport's wire bytes.
    #[allow(clippy::too_many_arguments)]
    fn new(
        party: usize,
        (setup_seconds, preprocessing_seconds, online_seconds): (f64, f64, f64),
        before: EngineStats,
        after: EngineStats,
        pre: EngineStats,
        total_rounds: u64,
        wire_bytes_sent: u64,
        correct: bool,
    ) -> Self {
        PartyReport {
            party,
            setup_seconds,
            preprocessing_seconds,
            online_seconds,
            online_rounds: after.rounds - before.rounds,
            online_bytes_sent: after.bytes_sent - before.bytes_sent,
            online_bytes_received: after.bytes_received - before.bytes_received,
            setup_bytes_sent: before.bytes_sent,
            preprocessing_rounds: pre.rounds,
            preprocessing_bytes_sent: pre.bytes_sent,
            total_rounds,
            wire_bytes_sent,
            peak_rss_bytes: 0,
            correct,
        }
    }
}

/// Signed 32-bit inputs of party `p`: the values of [`inputs`], sign-extended.
fn signed_inputs(seed: u64, p: usize, len: usize) -> Vec<i64> {
    let mut rng = ChaCha12Rng::seed_from_u64(seed ^ ((p as u64 + 1) << 32));
    (0..len).map(|_| i64::from(rng.next_u32() as i32)).collect()
}

/// daBits a tree reduction of `n` values consumes (whole words per level).
fn tree_dabits(mut n: usize) -> usize {
    let mut total = 0;
    while n > 1 {
        let h = n / 2;
        total += h.div_ceil(64) * 64;
        n -= h;
    }
    total
}

fn as_ring(v: &[i64]) -> Vec<u64> {
    v.iter().map(|&a| a as u64).collect()
}

/// Fractional bits of the fixed-point workloads.
const FRAC: u32 = 16;

/// The workload on the three-party replicated engine.
async fn rep3<T: Transport>(net: T, args: &BenchArgs, t0: Instant) -> Result<PartyReport, EngineError> {
    let mut rng = ChaCha12Rng::seed_from_u64(args.seed.wrapping_add(net.me() as u64 * 7919));
    let mut e = Rep3Engine::new(net, &mut rng).await?;
    let (me, len) = (e.me(), args.size);
    let x = signed_inputs(args.seed, 0, len);
    let y: Vec<i64> = match args.workload {
        // Half of the pairs equal, so that equality has both answers.
        Workload::Eq => x
            .iter()
            .zip(signed_inputs(args.seed, 1, len))
            .enumerate()
            .map(|(k, (a, b))| if k % 2 == 0 { *a } else { b })
            .collect(),
        _ => signed_inputs(args.seed, 1, len),
    };
    let z = signed_inputs(args.seed, 2, len);
    // Fixed point with 16 fractional bits: numerators below 2^9, denominators
    // of both signs with |Y| in [2^10, 2^30), radicands below 2^31.
    let (x, y) = match args.workload {
        Workload::Div => (
            x.iter().map(|v| v >> 7).collect(),
            y.iter()
                .map(|v| {
                    let magnitude = (v.rem_euclid(1 << 20) + (1 << 10)) << v.rem_euclid(10);
                    if *v < 0 {
                        -magnitude
                    } else {
                        magnitude
                    }
                })
                .collect(),
        ),
        Workload::Sqrt => (x.iter().map(|v| v.abs()).collect(), y),
        _ => (x, y),
    };
    // Preprocessing: the daBits of every selection of a tree reduction.
    let tp = Instant::now();
    if matches!(args.workload, Workload::Min | Workload::Max) {
        e.preprocess(tree_dabits(len)).await?;
    }
    let preprocessing_seconds = tp.elapsed().as_secs_f64();
    let pre = e.preprocessing_stats();
    let owners: &[usize] = match args.workload {
        Workload::Sum => &[0, 1, 2],
        Workload::Open | Workload::Min | Workload::Max | Workload::Median | Workload::Sqrt => &[0],
        _ => &[0, 1],
    };
    let mut shared = Vec::new();
    for &o in owners {
        let v = as_ring(match o {
            0 => &x,
            1 => &y,
            _ => &z,
        });
        shared.push(e.input(o, (o == me).then_some(&v[..]), len).await?);
    }
    let (sx, sy) = match (shared.first(), shared.get(1)) {
        (Some(a), Some(b)) => (a.clone(), b.clone()),
        (Some(a), None) => (a.clone(), a.clone()),
        _ => return Err(EngineError::Usage("no input was shared".into())),
    };
    let setup_seconds = t0.elapsed().as_secs_f64();
    let before = e.stats();
    let t1 = Instant::now();
    let bools = |b: Vec<bool>| b.into_iter().map(u64::from).collect::<Vec<u64>>();
    let opened = match args.workload {
        Workload::Cmp => {
            let b = e.less_than(&sx, &sy, 32).await?;
            bools(e.open_bools(&b).await?)
        }
        Workload::Eq => {
            let b = e.equal(&sx, &sy, 32).await?;
            bools(e.open_bools(&b).await?)
        }
        Workload::Min | Workload::Max => {
            let which = if args.workload == Workload::Min { Extremum::Min } else { Extremum::Max };
            let (v, i) = e.extremum(&sx, 32, which).await?;
            e.open(&RingShare::concat(&[&v, &i])).await?
        }
        Workload::Median => {
            let sorted = e.sort(&sx, 32).await?;
            let mid = if len % 2 == 1 {
                sorted.slice(len / 2..len / 2 + 1)?
            } else {
                sorted.slice(len / 2 - 1..len / 2)?.add(&sorted.slice(len / 2..len / 2 + 1)?)?
            };
            e.open(&mid).await?
        }
        Workload::Div => {
            let q = e.divide(&sx, &sy, FRAC, 40).await?;
            e.open(&q).await?
        }
        Workload::Sqrt => {
            let r = e.sqrt(&sx, FRAC, 40).await?;
            e.open(&r).await?
        }
        Workload::Mul => {
            let p = e.mul(&sx, &sy).await?;
            e.open(&p).await?
        }
        Workload::InnerProduct => {
            let p = e.inner_product(&sx, &sy).await?;
            e.open(&p).await?
        }
        Workload::Sum => {
            let mut acc = sx.clone();
            for s in &shared[1..] {
                acc = acc.add(s).map_err(EngineError::from)?;
            }
            e.open(&acc).await?
        }
        Workload::Open => e.open(&sx).await?,
        // Not an MPC workload: `run` handles it before any party starts.
        Workload::Dp => Vec::new(),
    };
    let online_seconds = t1.elapsed().as_secs_f64();
    let after = e.stats();
    // Check against the plaintext (outside the timed part).
    let pairs = x.iter().zip(&y);
    let expect: Vec<u64> = match args.workload {
        Workload::Cmp => pairs.map(|(a, b)| u64::from(a < b)).collect(),
        Workload::Eq => pairs.map(|(a, b)| u64::from(a == b)).collect(),
        Workload::Min | Workload::Max => {
            let best = if args.workload == Workload::Min { x.iter().min() } else { x.iter().max() };
            let best = best.copied().unwrap_or_default();
            let at = x.iter().position(|v| *v == best).unwrap_or_default();
            vec![best as u64, at as u64]
        }
        Workload::Median => {
            let mut s = x.clone();
            s.sort_unstable();
            let mid = if len % 2 == 1 { s[len / 2] } else { s[len / 2 - 1] + s[len / 2] };
            vec![mid as u64]
        }
        Workload::Div | Workload::Sqrt | Workload::Dp => Vec::new(),
        Workload::Mul => pairs.map(|(a, b)| (*a as u64).wrapping_mul(*b as u64)).collect(),
        Workload::InnerProduct => {
            vec![pairs.fold(0u64, |acc, (a, b)| acc.wrapping_add((*a as u64).wrapping_mul(*b as u64)))]
        }
        Workload::Sum => (0..len).map(|k| (x[k] as u64).wrapping_add(y[k] as u64).wrapping_add(z[k] as u64)).collect(),
        Workload::Open => as_ring(&x),
    };
    let correct = match args.workload {
        // Within the documented error bound of the fixed-point kernels.
        Workload::Div | Workload::Sqrt => {
            let scale = f64::from(1u32 << FRAC);
            opened.len() == len
                && (0..len).all(|k| {
                    let got = opened[k] as i64 as f64 / scale;
                    let (want, slack) = if args.workload == Workload::Div {
                        let yk = y[k] as f64 / scale;
                        (x[k] as f64 / y[k] as f64, 2.0 + 1.0 / (scale * yk.abs()))
                    } else {
                        ((x[k] as f64 / scale).sqrt(), 2.0)
                    };
                    (got - want).abs() <= want.abs() * 2f64.powi(-15) + slack / scale
                })
        }
        _ => opened == expect,
    };
    e.finish().await?;
    let times = (setup_seconds, preprocessing_seconds, online_seconds);
    let wire = e.session().transport().stats().wire_bytes_sent;
    Ok(PartyReport::new(me, times, before, after, pre, e.stats().rounds, wire, correct))
}

async fn shamir<F: Field, T: Transport>(net: T, args: &BenchArgs, t0: Instant) -> Result<PartyReport, EngineError> {
    let mut rng = ChaCha12Rng::seed_from_u64(args.seed.wrapping_add(net.me() as u64 * 7919));
    let mut mpc = ShamirEngine::<F, T>::new(net, args.threshold(), &mut rng).await?;
    let mut r = run_workload(&mut mpc, args, t0, 0.0).await?;
    r.wire_bytes_sent = mpc.session().transport().stats().wire_bytes_sent;
    Ok(r)
}

async fn additive<R: Ring, T: Transport>(net: T, args: &BenchArgs, t0: Instant) -> Result<PartyReport, EngineError> {
    let mut rng = ChaCha12Rng::seed_from_u64(args.seed.wrapping_add(net.me() as u64 * 7919));
    let mut mpc = AdditiveEngine::<R, T, _>::with_insecure_dealer(net, &mut rng).await?;
    let tp = Instant::now();
    if matches!(args.workload, Workload::Mul | Workload::InnerProduct) {
        mpc.preprocess(args.size).await?;
    }
    let prep = tp.elapsed().as_secs_f64();
    let mut r = run_workload(&mut mpc, args, t0, prep).await?;
    r.wire_bytes_sent = mpc.session().transport().stats().wire_bytes_sent;
    Ok(r)
}

/// One party's whole run on transport `net`; setup timing starts at `t0`.
async fn party_main<T: Transport>(net: T, args: BenchArgs, t0: Instant) -> Result<PartyReport, EngineError> {
    match (args.domain(), args.scheme()) {
        (_, Scheme::Rep3) => rep3(net, &args, t0).await,
        (Domain::M61, Scheme::Shamir) => shamir::<M61, T>(net, &args, t0).await,
        (Domain::M127, Scheme::Shamir) => shamir::<M127, T>(net, &args, t0).await,
        (Domain::M61, Scheme::Additive) => additive::<M61, T>(net, &args, t0).await,
        (Domain::M127, Scheme::Additive) => additive::<M127, T>(net, &args, t0).await,
        (Domain::Z64, _) => additive::<Z64, T>(net, &args, t0).await,
    }
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed}] {msg}") {
        pb.set_style(style);
    }
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// `concord bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.workload == Workload::Dp {
        return crate::bench_dp::run(&args.dp, args.seed, args.json);
    }
    args.validate()?;
    let pb = spinner(&format!(
        "{:?}: {} elements, {} parties over {:?}",
        args.workload, args.size, args.parties, args.transport
    ));
    let wall = Instant::now();
    let reports = match args.transport {
        TransportKind::Sim => run_sim(&args)?,
        TransportKind::Tls => run_tls(&args, &pb)?,
    };
    let wall_seconds = wall.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let summary = summarise(&args, &reports, wall_seconds)?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_table(&summary);
    }
    if !summary.correct {
        bail!("the opened result differs from the plaintext result");
    }
    Ok(())
}

fn run_sim(args: &BenchArgs) -> Result<Vec<PartyReport>> {
    let params = LinkParams {
        latency: Duration::from_secs_f64(args.latency_ms / 1000.0),
        bandwidth: args.bandwidth_mbps.map(|m| m * 1e6 / 8.0),
        jitter: Duration::from_secs_f64(args.jitter_ms / 1000.0),
        loss: args.loss,
        recv_timeout: Duration::from_secs(args.timeout_secs),
        ..LinkParams::default()
    };
    let nets = sim::network(args.parties, params, args.seed)?;
    let t0 = Instant::now();
    let a = args.clone();
    let results = run_parties(nets, move |net| party_main(net, a.clone(), t0))?;
    let rss = peak_rss_bytes();
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.map(|mut r| {
                r.peak_rss_bytes = rss;
                r
            })
            .map_err(|e| anyhow!("party {i}: {e}"))
        })
        .collect()
}

fn run_tls(args: &BenchArgs, pb: &ProgressBar) -> Result<Vec<PartyReport>> {
    let spec = serde_json::to_string(args)?;
    let timeout = Duration::from_secs(args.timeout_secs);
    let results = crate::procs::run_processes(
        args.parties,
        "bench-party",
        |_| vec!["--spec".into(), spec.clone()],
        timeout,
        Some(pb),
    )?;
    results
        .iter()
        .enumerate()
        .map(|(i, r)| serde_json::from_str(r).with_context(|| format!("party {i} sent an unreadable report")))
        .collect()
}

/// Arguments of the hidden `concord bench-party`.
#[derive(Args, Clone, Debug)]
pub struct PartyArgs {
    #[command(flatten)]
    child: crate::procs::ChildArgs,
    /// The benchmark arguments, as JSON.
    #[arg(long)]
    spec: String,
}

/// `concord bench-party`: one party of a TLS benchmark.
pub fn run_party(p: PartyArgs) -> Result<()> {
    let args: BenchArgs = serde_json::from_str(&p.spec).context("parsing --spec")?;
    args.validate()?;
    let me = p.child.party;
    let mut t0 = Instant::now();
    let (rt, net) =
        crate::procs::child_connect(&p.child, args.parties, Duration::from_secs(args.timeout_secs), || {
            t0 = Instant::now()
        })?;
    if args.crash_party == Some(me) {
        // Simulated crash: no abort message, no goodbye.
        std::process::exit(3);
    }
    let mut report = rt.block_on(party_main(net, args, t0)).map_err(|e| anyhow!("party {me}: {e}"))?;
    report.peak_rss_bytes = peak_rss_bytes();
    crate::procs::result(&serde_json::to_string(&report)?)
}

/// The summary printed by `concord bench`.
#[derive(Debug, Serialize)]
pub struct Summary {
    workload: Workload,
    size: usize,
    parties: usize,
    threshold: usize,
    domain: Domain,
    scheme: Scheme,
    transport: TransportKind,
    setup_seconds: f64,
    preprocessing_seconds: f64,
    preprocessing_rounds: u64,
    preprocessing_bytes_sent_per_party: u64,
    online_seconds: f64,
    wall_seconds: f64,
    ops_per_second: f64,
    ops_per_second_with_preprocessing: f64,
    rounds: u64,
    bytes_sent_per_party: u64,
    bytes_sent_per_op: f64,
    setup_bytes_sent_per_party: u64,
    wire_bytes_sent_per_party: u64,
    total_rounds: u64,
    peak_rss_bytes: u64,
    correct: bool,
    link: Option<LinkSummary>,
}

/// Simulated link parameters, echoed in the summary.
#[derive(Debug, Serialize)]
pub struct LinkSummary {
    latency_ms: f64,
    bandwidth_mbps: Option<f64>,
    loss: f64,
    jitter_ms: f64,
}

fn summarise(args: &BenchArgs, reports: &[PartyReport], wall_seconds: f64) -> Result<Summary> {
    if reports.is_empty() {
        bail!("no party reported");
    }
    let max_f = |f: fn(&PartyReport) -> f64| reports.iter().map(f).fold(0.0, f64::max);
    let max_u = |f: fn(&PartyReport) -> u64| reports.iter().map(f).max().unwrap_or(0);
    let online = max_f(|r| r.online_seconds);
    let prep = max_f(|r| r.preprocessing_seconds);
    let bytes = max_u(|r| r.online_bytes_sent);
    Ok(Summary {
        workload: args.workload,
        size: args.size,
        parties: args.parties,
        threshold: args.threshold(),
        domain: args.domain(),
        scheme: args.scheme(),
        transport: args.transport,
        setup_seconds: max_f(|r| r.setup_seconds),
        preprocessing_seconds: prep,
        preprocessing_rounds: max_u(|r| r.preprocessing_rounds),
        preprocessing_bytes_sent_per_party: max_u(|r| r.preprocessing_bytes_sent),
        online_seconds: online,
        wall_seconds,
        ops_per_second: if online > 0.0 { args.size as f64 / online } else { 0.0 },
        ops_per_second_with_preprocessing: if online + prep > 0.0 { args.size as f64 / (online + prep) } else { 0.0 },
        rounds: max_u(|r| r.online_rounds),
        bytes_sent_per_party: bytes,
        bytes_sent_per_op: bytes as f64 / args.size as f64,
        setup_bytes_sent_per_party: max_u(|r| r.setup_bytes_sent),
        wire_bytes_sent_per_party: max_u(|r| r.wire_bytes_sent),
        total_rounds: max_u(|r| r.total_rounds),
        peak_rss_bytes: max_u(|r| r.peak_rss_bytes),
        correct: reports.iter().all(|r| r.correct),
        link: (args.transport == TransportKind::Sim).then_some(LinkSummary {
            latency_ms: args.latency_ms,
            bandwidth_mbps: args.bandwidth_mbps,
            loss: args.loss,
            jitter_ms: args.jitter_ms,
        }),
    })
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.2} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn print_table(s: &Summary) {
    let rss_note = if s.transport == TransportKind::Sim { " (whole process, all parties)" } else { "" };
    println!(
        "concord bench {:?}: {} elements, {} parties, t = {}, {:?} {:?}, {:?} transport",
        s.workload, s.size, s.parties, s.threshold, s.domain, s.scheme, s.transport
    );
    if let Some(l) = &s.link {
        println!(
            "  link: latency {} ms, bandwidth {}, loss {}, jitter {} ms",
            l.latency_ms,
            l.bandwidth_mbps.map_or("unlimited".to_string(), |b| format!("{b} Mbit/s")),
            l.loss,
            l.jitter_ms
        );
    }
    let rows = [
        ("setup", format!("{:.4} s  (connect, handshake, seed agreement, input sharing)", s.setup_seconds)),
        (
            "preprocessing",
            format!(
                "{:.4} s, {} rounds, {}  (within setup; {})",
                s.preprocessing_seconds,
                s.preprocessing_rounds,
                human_bytes(s.preprocessing_bytes_sent_per_party),
                match s.scheme {
                    Scheme::Additive => "insecure dealer double",
                    Scheme::Rep3 => "daBits from PRSS bits",
                    Scheme::Shamir => "none needed",
                }
            ),
        ),
        ("online", format!("{:.4} s  (inputs shared -> result opened)", s.online_seconds)),
        ("wall", format!("{:.4} s  (whole run, all parties)", s.wall_seconds)),
        (
            "ops/second",
            format!("{:.0} online, {:.0} with preprocessing", s.ops_per_second, s.ops_per_second_with_preprocessing),
        ),
        ("rounds", format!("{} online, {} in all", s.rounds, s.total_rounds)),
        (
            "bytes sent/party",
            format!(
                "{} online ({:.2} B per op), {} in setup",
                human_bytes(s.bytes_sent_per_party),
                s.bytes_sent_per_op,
                human_bytes(s.setup_bytes_sent_per_party)
            ),
        ),
        ("wire bytes/party", human_bytes(s.wire_bytes_sent_per_party)),
        ("peak memory", format!("{}{rss_note}", human_bytes(s.peak_rss_bytes))),
        ("result", (if s.correct { "matches plaintext" } else { "MISMATCH" }).to_string()),
    ];
    for (k, v) in rows {
        println!("  {k:<18} {v}");
    }
}
