//! `concord demo`: three hospitals compute pooled statistics over their
//! patient tables without showing each other a single row.
//!
//! Everything runs in this process: three parties, each on its own thread
//! with its own tokio runtime, connected by mutually authenticated TLS 1.3
//! over 127.0.0.1 (fresh certificates, pinned by fingerprint). The tables are
//! generated deterministically from fixed seeds, so the demo can also compute
//! every answer in the clear and check that MPC gave exactly the same result.
//!
//! The protocol is 1-of-3 Shamir sharing over GF(2^61 - 1): any single party
//! sees only uniformly random field elements of the others' inputs.
//!
//! 1. Each hospital secret-shares six local aggregates (count, sums of age,
//!    age², diabetic, systolic BP, age × BP). The parties add the three
//!    shared vectors locally and open the totals to all three hospitals:
//!    every hospital learns the pooled sums, none learns another's own sums.
//! 2. Each hospital secret-shares its number of diabetic patients per age
//!    band; Northgate also secret-shares its private tariff (cost of a year's
//!    diabetes care per band). A secure inner product of the pooled band
//!    counts with the tariff gives the yearly cost of treating every diabetic
//!    patient of the region at Northgate's prices, opened to Northgate only.
//!    Nobody learns the per-band counts; nobody but Northgate the tariff.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use concord_engine::{EngineStats, Mpc, ShamirEngine};
use concord_math::encoding::{decode_signed, encode_signed};
use concord_math::M61;
use concord_net::tls::{Identity, TlsConfig, TlsPeer, TlsTransport};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

use crate::local::run_parties;

/// Number of parties.
const N: usize = 3;
/// Shamir threshold: no single party learns anything.
const THRESHOLD: usize = 1;
/// Who reads the result of the secure inner product (Northgate, which holds the tariff).
const TARIFF_HOLDER: usize = 2;
/// Per-wait timeout for connecting and receiving (the demo itself takes well under a second).
const NET_TIMEOUT: Duration = Duration::from_secs(20);

/// The hospitals: name, number of patients, data seed, and how their populations differ.
const HOSPITALS: [Hospital; N] = [
    Hospital {
        name: "St Mary's",
        patients: 9_850,
        seed: 0x5EED_0001,
        age_mean: 45.0,
        age_sd: 22.0,
        diabetes_base: 0.02,
    },
    Hospital {
        name: "Riverside",
        patients: 10_240,
        seed: 0x5EED_0002,
        age_mean: 62.0,
        age_sd: 15.0,
        diabetes_base: 0.04,
    },
    Hospital {
        name: "Northgate",
        patients: 10_030,
        seed: 0x5EED_0003,
        age_mean: 34.0,
        age_sd: 25.0,
        diabetes_base: 0.01,
    },
];

/// Age bands of the tariff: (label, first age, last age).
const BANDS: [(&str, u32, u32); 5] =
    [("0-17", 0, 17), ("18-39", 18, 39), ("40-64", 40, 64), ("65-79", 65, 79), ("80+", 80, 100)];

/// Northgate's private yearly cost of diabetes care per age band (pounds).
const NORTHGATE_TARIFF: [i128; 5] = [3_900, 2_400, 2_750, 3_300, 4_100];

/// The six local aggregates every hospital secret-shares.
const AGGREGATES: [&str; 6] =
    ["patients", "sum of ages", "sum of age²", "diabetic patients", "sum of systolic BP", "sum of age × BP"];

#[derive(Clone, Copy)]
struct Hospital {
    name: &'static str,
    patients: usize,
    seed: u64,
    age_mean: f64,
    age_sd: f64,
    diabetes_base: f64,
}

/// One patient row.
#[derive(Clone, Copy)]
struct Patient {
    age: u32,
    systolic_bp: u32,
    diabetic: bool,
}

/// A uniform f64 in [0, 1).
fn unit(rng: &mut ChaCha12Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal sample (Box-Muller).
fn normal(rng: &mut ChaCha12Rng) -> f64 {
    let u1 = 1.0 - unit(rng); // in (0, 1]
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The hospital's private table, the same on every run.
fn generate(h: &Hospital) -> Vec<Patient> {
    let mut rng = ChaCha12Rng::seed_from_u64(h.seed);
    (0..h.patients)
        .map(|_| {
            let age = (h.age_mean + h.age_sd * normal(&mut rng)).round().clamp(0.0, 100.0) as u32;
            let p_diabetic = h.diabetes_base + 0.0022 * f64::from(age);
            let diabetic = unit(&mut rng) < p_diabetic;
            let bp = 102.0 + 0.45 * f64::from(age) + if diabetic { 7.0 } else { 0.0 } + 11.0 * normal(&mut rng);
            Patient { age, systolic_bp: bp.round().clamp(70.0, 240.0) as u32, diabetic }
        })
        .collect()
}

/// The six aggregates of `rows` (see [`AGGREGATES`]).
fn aggregates(rows: &[Patient]) -> [i128; 6] {
    let mut s = [0i128; 6];
    for p in rows {
        let (age, bp) = (i128::from(p.age), i128::from(p.systolic_bp));
        s[0] += 1;
        s[1] += age;
        s[2] += age * age;
        s[3] += i128::from(p.diabetic);
        s[4] += bp;
        s[5] += age * bp;
    }
    s
}

/// Diabetic patients per age band.
fn band_counts(rows: &[Patient]) -> [i128; 5] {
    let mut c = [0i128; 5];
    for p in rows.iter().filter(|p| p.diabetic) {
        if let Some(b) = BANDS.iter().position(|&(_, lo, hi)| (lo..=hi).contains(&p.age)) {
            c[b] += 1;
        }
    }
    c
}

fn encode(values: &[i128]) -> Result<Vec<M61>> {
    values.iter().map(|&v| encode_signed::<M61>(v).map_err(|e| anyhow!("cannot encode {v}: {e}"))).collect()
}

/// What a party is given to start.
struct PartyInput {
    me: usize,
    rows: Vec<Patient>,
    identity: Identity,
    listener: std::net::TcpListener,
    peers: Vec<TlsPeer>,
    session_id: [u8; 16],
}

/// What a party reports back.
struct PartyOutput {
    /// The opened pooled aggregates (every party gets them).
    totals: Vec<i128>,
    /// The secure inner product, for the party it was opened to.
    cost: Option<i128>,
    /// This party's shares of Riverside's aggregate vector.
    riverside_shares: Vec<u64>,
    stats: EngineStats,
    connect: Duration,
    compute: Duration,
}

async fn party(input: PartyInput) -> Result<PartyOutput> {
    let PartyInput { me, rows, identity, listener, peers, session_id } = input;
    let t0 = Instant::now();
    let listener = tokio::net::TcpListener::from_std(listener).context("registering the listener")?;
    let mut cfg = TlsConfig::new(me, identity, peers, session_id);
    cfg.recv_timeout = NET_TIMEOUT;
    cfg.connect_timeout = NET_TIMEOUT;
    let net = TlsTransport::establish(cfg, listener).await.context("TLS connection setup")?;
    let connect = t0.elapsed();

    let t1 = Instant::now();
    let mut rng = ChaCha12Rng::from_os_rng(); // sharing randomness: fresh, unlike the data
    let mut mpc = ShamirEngine::<M61, _>::new(net, THRESHOLD, &mut rng).await?;

    // Step 1: everyone shares its six local aggregates; add the shares; open the totals.
    let mine = encode(&aggregates(&rows))?;
    let mut shared = Vec::with_capacity(N);
    for owner in 0..N {
        shared.push(mpc.input(owner, (owner == me).then_some(&mine[..]), AGGREGATES.len()).await?);
    }
    let riverside_shares = shared[1].expose().iter().map(|x| x.value()).collect();
    let mut pooled = shared[0].clone();
    for s in &shared[1..] {
        pooled = mpc.add(&pooled, s)?;
    }
    let totals = mpc.open(&pooled).await?.into_iter().map(decode_signed).collect();

    // Step 2: pooled diabetic counts per age band · Northgate's private tariff, opened to Northgate only.
    let bands = encode(&band_counts(&rows))?;
    let mut pooled_bands = mpc.input(0, (me == 0).then_some(&bands[..]), BANDS.len()).await?;
    for owner in 1..N {
        let s = mpc.input(owner, (owner == me).then_some(&bands[..]), BANDS.len()).await?;
        pooled_bands = mpc.add(&pooled_bands, &s)?;
    }
    let tariff = encode(&NORTHGATE_TARIFF)?;
    let tariff = mpc.input(TARIFF_HOLDER, (me == TARIFF_HOLDER).then_some(&tariff[..]), BANDS.len()).await?;
    let cost = mpc.inner_product(&pooled_bands, &tariff).await?;
    let cost = mpc.open_to(TARIFF_HOLDER, &cost).await?.and_then(|v| v.first().copied()).map(decode_signed);

    mpc.finish().await?;
    Ok(PartyOutput { totals, cost, riverside_shares, stats: mpc.stats(), connect, compute: t1.elapsed() })
}

/// Statistics derived from the six pooled sums.
struct Derived {
    mean_age: f64,
    sd_age: f64,
    prevalence: f64,
    mean_bp: f64,
    slope: f64,
}

fn derive(s: &[i128]) -> Result<Derived> {
    let &[n, sa, saa, sd, sb, sab] = s else { bail!("expected {} totals, got {}", AGGREGATES.len(), s.len()) };
    if n <= 0 {
        bail!("no patients");
    }
    let nf = n as f64;
    let sxx = n * saa - sa * sa; // n² · variance of age, exact
    let sxy = n * sab - sa * sb; // n² · covariance of age and BP, exact
    Ok(Derived {
        mean_age: sa as f64 / nf,
        sd_age: (sxx as f64).sqrt() / nf,
        prevalence: 100.0 * sd as f64 / nf,
        mean_bp: sb as f64 / nf,
        slope: if sxx == 0 { f64::NAN } else { sxy as f64 / sxx as f64 },
    })
}

/// The same statistics straight from the rows, by the textbook two-pass formulas.
fn derive_plain(rows: &[Patient]) -> Derived {
    let nf = rows.len() as f64;
    let mean_age = rows.iter().map(|p| f64::from(p.age)).sum::<f64>() / nf;
    let mean_bp = rows.iter().map(|p| f64::from(p.systolic_bp)).sum::<f64>() / nf;
    let var = rows.iter().map(|p| (f64::from(p.age) - mean_age).powi(2)).sum::<f64>() / nf;
    let cov =
        rows.iter().map(|p| (f64::from(p.age) - mean_age) * (f64::from(p.systolic_bp) - mean_bp)).sum::<f64>() / nf;
    Derived {
        mean_age,
        sd_age: var.sqrt(),
        prevalence: 100.0 * rows.iter().filter(|p| p.diabetic).count() as f64 / nf,
        mean_bp,
        slope: cov / var,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "match"
    } else {
        "MISMATCH"
    }
}

/// Group digits by thousands: 1234567 -> "1,234,567".
fn thousands(v: i128) -> String {
    let digits = v.unsigned_abs().to_string().into_bytes();
    let groups: Vec<&str> = digits.rchunks(3).rev().map(|g| std::str::from_utf8(g).unwrap_or("?")).collect();
    let sign = if v < 0 { "-" } else { "" };
    format!("{sign}{}", groups.join(","))
}

fn bytes(n: u64) -> String {
    format!("{} B", thousands(i128::from(n)))
}

/// Run the demo.
pub fn run() -> Result<()> {
    let start = Instant::now();
    println!("Concord demo: three hospitals pool statistics without sharing patient data");
    println!();
    println!("Each hospital holds a private table of ~10,000 patients (age, systolic blood pressure, diabetic).");
    println!("The three parties run as threads of this process, connected by mutually authenticated TLS 1.3");
    println!("over 127.0.0.1 (fresh certificates pinned by fingerprint). They compute with 1-of-3 Shamir");
    println!("secret sharing over GF(2^61 - 1): no single hospital sees anything but random-looking shares.");
    println!();
    println!("  1. Each hospital secret-shares 6 local aggregates; the sums are added under sharing and the");
    println!("     pooled totals are opened to all three hospitals (each hospital's own totals stay secret).");
    println!("  2. Each hospital secret-shares its diabetic patients per age band, Northgate its private tariff");
    println!("     per band; a secure inner product gives the region's yearly cost at Northgate's prices,");
    println!("     opened to Northgate only. Band counts and tariff are never revealed.");
    println!();

    let tables: Vec<Vec<Patient>> = HOSPITALS.iter().map(generate).collect();
    for (i, (h, t)) in HOSPITALS.iter().zip(&tables).enumerate() {
        println!("  party {i}  {:<10} {:>7} patients (private)", h.name, thousands(t.len() as i128));
    }
    println!();

    // Identities and listeners first, so that every party knows every address and fingerprint.
    let mut identities = Vec::with_capacity(N);
    let mut listeners = Vec::with_capacity(N);
    let mut peers = Vec::with_capacity(N);
    for (i, h) in HOSPITALS.iter().enumerate() {
        let identity = Identity::generate(&format!("concord-demo-{i}"))
            .map_err(|e| anyhow!("party {i} ({}): cannot create its TLS identity: {e}", h.name))?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .with_context(|| format!("party {i} ({}): cannot listen on 127.0.0.1", h.name))?;
        let addr: SocketAddr = listener.local_addr()?;
        peers.push(TlsPeer { addr, fingerprint: identity.fingerprint() });
        identities.push(identity);
        listeners.push(listener);
    }
    let mut session_id = [0u8; 16];
    ChaCha12Rng::from_os_rng().fill_bytes(&mut session_id);
    let inputs: Vec<PartyInput> = identities
        .into_iter()
        .zip(listeners)
        .zip(tables.iter().cloned())
        .enumerate()
        .map(|(me, ((identity, listener), rows))| PartyInput {
            me,
            rows,
            identity,
            listener,
            peers: peers.clone(),
            session_id,
        })
        .collect();

    let mpc_start = Instant::now();
    let results = run_parties(inputs, party)?;
    let mpc_wall = mpc_start.elapsed();
    let mut failures = String::new();
    let mut outputs = Vec::with_capacity(N);
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(o) => outputs.push(o),
            Err(e) => {
                let _ = write!(failures, "\n  party {i} ({}): {e:#}", HOSPITALS[i].name);
            }
        }
    }
    if !failures.is_empty() {
        bail!("the secure computation failed:{failures}");
    }
    let [mary, _, northgate] = &outputs[..] else { bail!("expected {N} party outputs, got {}", outputs.len()) };
    if outputs.iter().any(|o| o.totals != mary.totals) {
        bail!("the parties opened different totals");
    }
    let mut all_ok = true;

    // Plaintext check on the pooled rows.
    let pooled_rows: Vec<Patient> = tables.concat();
    let plain = aggregates(&pooled_rows);
    println!("Pooled totals (opened to all three hospitals)");
    println!("plaintext check (the demo can see all tables; real parties cannot)");
    println!();
    println!("  {:<28} {:>16} {:>16}", "statistic", "MPC", "plaintext");
    for ((name, mpc), plain) in AGGREGATES.iter().zip(&mary.totals).zip(&plain) {
        let ok = mpc == plain;
        all_ok &= ok;
        println!("  {name:<28} {:>16} {:>16}  {}", thousands(*mpc), thousands(*plain), verdict(ok));
    }
    println!();
    let d = derive(&mary.totals)?;
    let p = derive_plain(&pooled_rows);
    let rows: [(&str, f64, f64, usize); 5] = [
        ("mean age (years)", d.mean_age, p.mean_age, 2),
        ("age standard deviation", d.sd_age, p.sd_age, 2),
        ("diabetes prevalence (%)", d.prevalence, p.prevalence, 2),
        ("mean systolic BP (mmHg)", d.mean_bp, p.mean_bp, 2),
        ("BP slope (mmHg per year)", d.slope, p.slope, 4),
    ];
    println!("  derived from the totals (f64)");
    for (name, m, pl, prec) in rows {
        let ok = close(m, pl);
        all_ok &= ok;
        println!("  {name:<28} {m:>16.prec$} {pl:>16.prec$}  {}", verdict(ok));
    }
    println!();

    let plain_cost: i128 = band_counts(&pooled_rows).iter().zip(&NORTHGATE_TARIFF).map(|(c, t)| c * t).sum();
    let cost_ok = northgate.cost == Some(plain_cost) && mary.cost.is_none() && outputs[1].cost.is_none();
    all_ok &= cost_ok;
    println!("Secure multiplication (inner product), opened to Northgate only");
    println!();
    println!("  {:<28} {:>16} {:>16}", "", "MPC", "plaintext");
    let shown = northgate.cost.map_or_else(|| "-".to_string(), thousands);
    println!("  {:<28} {:>16} {:>16}  {}", "yearly cost at tariff (£)", shown, thousands(plain_cost), verdict(cost_ok));
    println!("  St Mary's and Riverside received: nothing (open_to party {TARIFF_HOLDER})");
    println!();

    println!("What St Mary's actually received of Riverside's input (its Shamir shares, first 4 of 6):");
    let riverside_real = aggregates(&tables[1]);
    for (k, share) in mary.riverside_shares.iter().take(4).enumerate() {
        println!(
            "  {:<20} real value {:>12}   St Mary's share {:>20}",
            AGGREGATES[k],
            thousands(riverside_real[k]),
            share
        );
    }
    println!("  (one share of a degree-1 polynomial: uniformly random in GF(2^61 - 1), independent of the value)");
    println!();

    println!("Cost, per party");
    println!(
        "  {:<10} {:>7} {:>14} {:>14} {:>9} {:>12}",
        "party", "rounds", "sent", "received", "messages", "TLS setup"
    );
    for (h, o) in HOSPITALS.iter().zip(&outputs) {
        println!(
            "  {:<10} {:>7} {:>14} {:>14} {:>9} {:>9.1} ms",
            h.name,
            o.stats.rounds,
            bytes(o.stats.bytes_sent),
            bytes(o.stats.bytes_received),
            o.stats.messages_sent,
            o.connect.as_secs_f64() * 1e3
        );
    }
    let compute = outputs.iter().map(|o| o.compute).max().unwrap_or_default();
    println!("  MPC (seed agreement to finish): {:.1} ms", compute.as_secs_f64() * 1e3);
    println!("  parties' wall time incl. TLS:   {:.1} ms", mpc_wall.as_secs_f64() * 1e3);
    println!("  demo wall time:                 {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
    println!();
    println!("all results match the plaintext: {}", if all_ok { "yes" } else { "NO" });
    if !all_ok {
        bail!("MPC results differ from the plaintext check");
    }
    Ok(())
}
