//! `concord bench dp`: accuracy of the differentially private AVG as the
//! parties release it (every party adds its own discrete Laplace noise share
//! to its local count and centred sum before they are summed; see
//! `concord-dp`), against epsilon and the number of parties.
//!
//! The metrics are those of eq. (9) and (10) of the ASMC trade-off paper
//! (`shared/reference/asmc-security-performance-tradeoff.md`): with the
//! accuracy measure `w(f, f^) = max(0, 1 - |f^ - f| / |f|)` (one minus the
//! relative error, floored at 0),
//! - **average accuracy** `Acc = E[w(f(x), f^(x))]`, the expectation over the
//!   noise, for a typical input `x` (uniform values in [0, 120]);
//! - **worst-case accuracy** `Acc_wc = min_x E[w(f(x), f^(x))]`, the minimum
//!   over a set of inputs (uniform, centred, all low, all high values); the
//!   all-low input (mean about 3) is where relative error is largest.
//!
//! The expectation is estimated over `--runs` independent releases with
//! generators seeded by `--seed`. Output: a table on stdout, `OUT/dp.csv` and a plot of
//! accuracy against epsilon, `OUT/dp.png`.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use concord_dp::estimate::{avg_laplace_plans, centred, DEFAULT_COUNT_FRACTION};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::plot::{Chart, Series};

/// Options of `concord bench dp`.
#[derive(Args, Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DpArgs {
    /// Epsilon values (total budget of the AVG), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [0.01, 0.05, 0.1, 0.5, 1.0, 2.0])]
    pub epsilons: Vec<f64>,
    /// Numbers of parties, comma-separated.
    #[arg(long = "party-counts", value_delimiter = ',', default_values_t = [3usize, 5, 10])]
    pub party_counts: Vec<usize>,
    /// Rows of the column (split evenly over the parties).
    #[arg(long, default_value_t = 30_000)]
    pub rows: usize,
    /// Releases per (epsilon, parties, input), over which the expectation is taken.
    #[arg(long, default_value_t = 1_000)]
    pub runs: usize,
    /// Directory for dp.csv and dp.png.
    #[arg(long, default_value = "dp-bench")]
    pub out: PathBuf,
}

const LO: i64 = 0;
const HI: i64 = 120;

/// A column generator: a row's value from 44 random bits.
type Generator = fn(u64) -> i64;

/// The inputs over which the worst case is taken: name and generator.
const INPUTS: [(&str, Generator); 4] = [
    ("uniform", |r| (r % 121) as i64),
    ("centred", |r| ((r % 31) + ((r >> 8) % 31) + ((r >> 16) % 31) + ((r >> 24) % 31)) as i64),
    ("low", |r| (r % 7) as i64),
    ("high", |r| 120 - (r % 7) as i64),
];

fn column(rows: usize, f: Generator) -> Vec<i64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..rows)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            f(x >> 20).clamp(LO, HI)
        })
        .collect()
}

/// One row of the result table.
#[derive(Debug, serde::Serialize)]
pub struct DpRow {
    epsilon: f64,
    parties: usize,
    average_accuracy: f64,
    worst_case_accuracy: f64,
    worst_case_input: &'static str,
    median_relative_error: f64,
    ci95_coverage: f64,
}

/// E[w] over `runs` releases of the AVG of `values` split over `parties`, and
/// (median relative error, share of 95% intervals covering the truth).
fn expected_accuracy(values: &[i64], epsilon: f64, parties: usize, runs: usize, seed: u64) -> Result<(f64, f64, f64)> {
    let plans = avg_laplace_plans(epsilon, LO, HI, DEFAULT_COUNT_FRACTION, parties, parties - 1)
        .map_err(|e| anyhow!("epsilon {epsilon}, {parties} parties: {e}"))?;
    let sum_sampler = plans.sum.share_mechanism().sampler().map_err(|e| anyhow!("{e}"))?;
    let count_sampler = plans.count.share_mechanism().sampler().map_err(|e| anyhow!("{e}"))?;
    let per = values.len().div_ceil(parties).max(1);
    let local: Vec<(i64, i64)> =
        values.chunks(per).map(|p| (p.iter().map(|&v| centred(v, LO, HI) as i64).sum(), p.len() as i64)).collect();
    let truth = values.iter().sum::<i64>() as f64 / values.len().max(1) as f64;
    let mut rngs: Vec<ChaCha20Rng> =
        (0..parties).map(|p| ChaCha20Rng::seed_from_u64(seed ^ ((p as u64 + 1) << 40))).collect();
    let (mut acc, mut covered) = (0.0, 0usize);
    let mut errors = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (mut s, mut c) = (0i64, 0i64);
        for (p, rng) in rngs.iter_mut().enumerate() {
            let (ls, lc) = local.get(p).copied().unwrap_or((0, 0));
            s += ls + sum_sampler.sample(rng).map_err(|e| anyhow!("{e}"))?;
            c += lc + count_sampler.sample(rng).map_err(|e| anyhow!("{e}"))?;
        }
        let e = plans.estimate(s, c, 1.0);
        let rel = (e.value - truth).abs() / truth.abs().max(f64::MIN_POSITIVE);
        acc += (1.0 - rel).max(0.0);
        errors.push(rel);
        covered += usize::from(e.ci95.0 <= truth && truth <= e.ci95.1);
    }
    errors.sort_by(f64::total_cmp);
    let median = errors.get(errors.len() / 2).copied().unwrap_or(0.0);
    Ok((acc / runs.max(1) as f64, median, covered as f64 / runs.max(1) as f64))
}

/// `concord bench dp`.
pub fn run(args: &DpArgs, seed: u64, json: bool) -> Result<()> {
    if args.epsilons.is_empty() || args.epsilons.iter().any(|e| !(e.is_finite() && *e > 0.0)) {
        bail!("--epsilons: every value must be a positive number, got {:?}", args.epsilons);
    }
    if args.party_counts.is_empty() || args.party_counts.iter().any(|&n| n < 2) {
        bail!("--party-counts: every value must be at least 2, got {:?}", args.party_counts);
    }
    if args.rows == 0 || args.runs == 0 {
        bail!("--rows and --runs must be positive");
    }
    let inputs: Vec<(&'static str, Vec<i64>)> = INPUTS.iter().map(|(n, f)| (*n, column(args.rows, *f))).collect();
    let mut table = Vec::new();
    for &n in &args.party_counts {
        for &eps in &args.epsilons {
            let mut per_input = Vec::new();
            for (k, (name, values)) in inputs.iter().enumerate() {
                let seed = seed ^ ((k as u64) << 56) ^ (eps.to_bits() >> 8) ^ ((n as u64) << 48);
                per_input.push((*name, expected_accuracy(values, eps, n, args.runs, seed)?));
            }
            let (_, (avg, median, coverage)) = per_input.first().copied().ok_or_else(|| anyhow!("no inputs"))?;
            let (worst_name, (worst, _, _)) = per_input
                .iter()
                .copied()
                .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
                .ok_or_else(|| anyhow!("no inputs"))?;
            table.push(DpRow {
                epsilon: eps,
                parties: n,
                average_accuracy: avg,
                worst_case_accuracy: worst,
                worst_case_input: worst_name,
                median_relative_error: median,
                ci95_coverage: coverage,
            });
        }
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut csv = String::from(
        "epsilon,parties,average_accuracy,worst_case_accuracy,worst_case_input,median_relative_error,ci95_coverage\n",
    );
    for r in &table {
        csv.push_str(&format!(
            "{},{},{:.6},{:.6},{},{:.6},{:.4}\n",
            r.epsilon,
            r.parties,
            r.average_accuracy,
            r.worst_case_accuracy,
            r.worst_case_input,
            r.median_relative_error,
            r.ci95_coverage
        ));
    }
    let csv_path = args.out.join("dp.csv");
    std::fs::write(&csv_path, csv).with_context(|| format!("cannot write {}", csv_path.display()))?;
    let colors = [[31, 119, 180], [214, 39, 40], [44, 160, 44], [148, 103, 189], [255, 127, 14]];
    let mut series = Vec::new();
    let mut ymin: f64 = 100.0;
    for (i, &n) in args.party_counts.iter().enumerate() {
        let color = colors.get(i % colors.len()).copied().unwrap_or([0, 0, 0]);
        let rows: Vec<&DpRow> = table.iter().filter(|r| r.parties == n).collect();
        let avg: Vec<(f64, f64)> = rows.iter().map(|r| (r.epsilon, 100.0 * r.average_accuracy)).collect();
        let wc: Vec<(f64, f64)> = rows.iter().map(|r| (r.epsilon, 100.0 * r.worst_case_accuracy)).collect();
        ymin = wc.iter().chain(&avg).fold(ymin, |m, p| m.min(p.1));
        series.push(Series { label: format!("n={n} average"), color, dashed: false, points: avg });
        series.push(Series { label: format!("n={n} worst"), color, dashed: true, points: wc });
    }
    let chart = Chart {
        title: format!("dp avg: accuracy vs epsilon ({} rows in [0,120], {} runs)", args.rows, args.runs),
        x_label: "epsilon".into(),
        y_label: "accuracy (%)".into(),
        x_ticks: args.epsilons.clone(),
        y_range: ((ymin / 10.0).floor() * 10.0, 100.0),
        series,
    };
    let png_path = args.out.join("dp.png");
    std::fs::write(&png_path, chart.png(1000, 600)).with_context(|| format!("cannot write {}", png_path.display()))?;
    if json {
        println!("{}", serde_json::to_string(&table)?);
    } else {
        println!("| epsilon | parties | average accuracy | worst-case accuracy (input) | median relative error | 95% CI coverage |");
        println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
        for r in &table {
            println!(
                "| {} | {} | {:.4}% | {:.4}% ({}) | {:.4}% | {:.1}% |",
                r.epsilon,
                r.parties,
                100.0 * r.average_accuracy,
                100.0 * r.worst_case_accuracy,
                r.worst_case_input,
                100.0 * r.median_relative_error,
                100.0 * r.ci95_coverage
            );
        }
    }
    eprintln!("wrote {} and {}", csv_path.display(), png_path.display());
    Ok(())
}
