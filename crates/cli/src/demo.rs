//! `concord demo`: three hospitals answer an analyst's questions about the
//! union of their patients without pooling a single row.
//!
//! Each hospital's table is generated deterministically here and written to
//! a private CSV file; every query then runs exactly as `concord run` runs
//! it (local statistics, secret sharing over loopback TLS, reconstruction by
//! the analyst). Beside each answer the demo prints the plaintext answer on
//! the pooled rows, computed independently in f64, which only a demo can see.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use concord_query::{Schema, Value};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

use crate::run::{
    choose_scheme, execute, execute_with, local_inputs, local_statistics, plan_order, run_session, value_text,
    OrderMethodArg, PartySpec, Phases,
};
use concord_session::SessionOptions;

const SCHEMA: &str = r#"
table = "patients"
max_rows = 100000

[[column]]
name = "age"
type = "int"
min = 18
max = 100

[[column]]
name = "sex"
type = "category"
values = ["F", "M"]

[[column]]
name = "bmi"
type = "decimal"
scale = 1
min = 12.0
max = 60.0

[[column]]
name = "systolic_bp"
type = "int"
min = 70
max = 240

[[column]]
name = "cholesterol"
type = "decimal"
scale = 1
min = 2.0
max = 12.0

[[column]]
name = "smoker"
type = "category"
values = ["no", "yes"]

[[column]]
name = "diabetic"
type = "category"
values = ["no", "yes"]
"#;

/// One patient (values as stored: bmi and cholesterol in tenths).
#[derive(Clone, Debug)]
struct Patient {
    age: i64,
    female: bool,
    bmi10: i64,
    bp: i64,
    chol10: i64,
    smoker: bool,
    diabetic: bool,
}

struct Hospital {
    name: &'static str,
    seed: u64,
    rows: usize,
    age_mean: f64,
    smoke_rate: f64,
}

const HOSPITALS: [Hospital; 3] = [
    Hospital { name: "st-marys", seed: 11, rows: 9_850, age_mean: 48.0, smoke_rate: 0.18 },
    Hospital { name: "riverside", seed: 22, rows: 10_240, age_mean: 61.0, smoke_rate: 0.12 },
    Hospital { name: "northgate", seed: 33, rows: 10_030, age_mean: 39.0, smoke_rate: 0.26 },
];

fn unit(rng: &mut ChaCha12Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn normal(rng: &mut ChaCha12Rng) -> f64 {
    // Box-Muller.
    let (u, v) = (unit(rng).max(1e-12), unit(rng));
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

fn generate(h: &Hospital) -> Vec<Patient> {
    let mut rng = ChaCha12Rng::seed_from_u64(h.seed);
    (0..h.rows)
        .map(|_| {
            let age = (h.age_mean + 16.0 * normal(&mut rng)).round().clamp(18.0, 100.0) as i64;
            let female = unit(&mut rng) < 0.52;
            let smoker = unit(&mut rng) < h.smoke_rate;
            let bmi = (26.5 + 0.04 * (age as f64 - 50.0) + 4.5 * normal(&mut rng)).clamp(12.0, 60.0);
            let diabetic = unit(&mut rng) < 0.03 + 0.004 * (age as f64 - 18.0) + 0.01 * (bmi - 25.0).max(0.0);
            let bp = (105.0 + 0.5 * age as f64 + 0.6 * (bmi - 25.0) + if diabetic { 6.0 } else { 0.0 }
                - if female { 4.0 } else { 0.0 }
                + 11.0 * normal(&mut rng))
            .round()
            .clamp(70.0, 240.0) as i64;
            let chol =
                (4.6 + 0.015 * age as f64 + if smoker { 0.35 } else { 0.0 } + 0.8 * normal(&mut rng)).clamp(2.0, 12.0);
            Patient {
                age,
                female,
                bmi10: (bmi * 10.0).round() as i64,
                bp,
                chol10: (chol * 10.0).round() as i64,
                smoker,
                diabetic,
            }
        })
        .collect()
}

fn to_csv(rows: &[Patient]) -> String {
    let mut s = String::from("age,sex,bmi,systolic_bp,cholesterol,smoker,diabetic\n");
    for p in rows {
        let _ = writeln!(
            s,
            "{},{},{}.{},{},{}.{},{},{}",
            p.age,
            if p.female { "F" } else { "M" },
            p.bmi10 / 10,
            p.bmi10 % 10,
            p.bp,
            p.chol10 / 10,
            p.chol10 % 10,
            if p.smoker { "yes" } else { "no" },
            if p.diabetic { "yes" } else { "no" }
        );
    }
    s
}

// ----- plaintext references on the pooled rows (f64, independent of the MPC path) -----

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn var_samp(v: &[f64]) -> f64 {
    let m = mean(v);
    v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() as f64 - 1.0)
}

fn covar_pop(y: &[f64], x: &[f64]) -> f64 {
    let (my, mx) = (mean(y), mean(x));
    y.iter().zip(x).map(|(a, b)| (a - my) * (b - mx)).sum::<f64>() / y.len() as f64
}

fn var_pop(v: &[f64]) -> f64 {
    covar_pop(v, v)
}

/// Ordinary least squares with intercept by Gaussian elimination in f64 (the demo's data are well conditioned).
fn ols(y: &[f64], xs: &[Vec<f64>]) -> Vec<f64> {
    let k = xs.len() + 1;
    let row = |i: usize| -> Vec<f64> { std::iter::once(1.0).chain(xs.iter().map(|c| c[i])).collect() };
    let mut a = vec![vec![0.0; k + 1]; k];
    for (i, yi) in y.iter().enumerate() {
        let r = row(i);
        for p in 0..k {
            for q in 0..k {
                a[p][q] += r[p] * r[q];
            }
            a[p][k] += r[p] * yi;
        }
    }
    for c in 0..k {
        let piv = (c..k).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap_or(c);
        a.swap(c, piv);
        let pivot = a[c].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != c && pivot[c] != 0.0 {
                let f = row[c] / pivot[c];
                for (x, p) in row.iter_mut().zip(&pivot).skip(c) {
                    *x -= f * p;
                }
            }
        }
    }
    (0..k).map(|i| a[i][k] / a[i][i]).collect()
}

struct DemoQuery {
    title: &'static str,
    sql: &'static str,
    /// Plaintext answer rows on the pooled data.
    plain: fn(&[Patient]) -> Vec<Vec<Value>>,
}

fn f(v: f64) -> Value {
    Value::Number(v)
}

fn col<T: Fn(&Patient) -> f64>(rows: &[&Patient], g: T) -> Vec<f64> {
    rows.iter().map(|p| g(p)).collect()
}

fn queries() -> Vec<DemoQuery> {
    vec![
        DemoQuery {
            title: "How many patients, and how old are they?",
            sql: "SELECT COUNT(*), AVG(age), STDDEV_SAMP(age) FROM patients",
            plain: |all| {
                let r: Vec<&Patient> = all.iter().collect();
                let age = col(&r, |p| p.age as f64);
                vec![vec![Value::Int(r.len() as i128), f(mean(&age)), f(var_samp(&age).sqrt())]]
            },
        },
        DemoQuery {
            title: "Body mass index and blood pressure by sex",
            sql: "SELECT sex, COUNT(*), AVG(bmi), AVG(systolic_bp) FROM patients GROUP BY sex",
            plain: |all| {
                [true, false]
                    .iter()
                    .map(|&fem| {
                        let r: Vec<&Patient> = all.iter().filter(|p| p.female == fem).collect();
                        vec![
                            Value::Text(if fem { "F" } else { "M" }.into()),
                            Value::Int(r.len() as i128),
                            f(mean(&col(&r, |p| p.bmi10 as f64 / 10.0))),
                            f(mean(&col(&r, |p| p.bp as f64))),
                        ]
                    })
                    .collect()
            },
        },
        DemoQuery {
            title: "Cholesterol of patients aged 50 and over, smokers against non-smokers",
            sql: "SELECT smoker, COUNT(*), AVG(cholesterol) FROM patients WHERE age >= 50 GROUP BY smoker",
            plain: |all| {
                [false, true]
                    .iter()
                    .map(|&s| {
                        let r: Vec<&Patient> = all.iter().filter(|p| p.age >= 50 && p.smoker == s).collect();
                        vec![
                            Value::Text(if s { "yes" } else { "no" }.into()),
                            Value::Int(r.len() as i128),
                            f(mean(&col(&r, |p| p.chol10 as f64 / 10.0))),
                        ]
                    })
                    .collect()
            },
        },
        DemoQuery {
            title: "Does blood pressure rise with age?",
            sql: "SELECT CORR(systolic_bp, age), REGR_SLOPE(systolic_bp, age), REGR_INTERCEPT(systolic_bp, age) FROM patients",
            plain: |all| {
                let r: Vec<&Patient> = all.iter().collect();
                let (y, x) = (col(&r, |p| p.bp as f64), col(&r, |p| p.age as f64));
                let slope = covar_pop(&y, &x) / var_pop(&x);
                vec![vec![
                    f(covar_pop(&y, &x) / (var_pop(&y) * var_pop(&x)).sqrt()),
                    f(slope),
                    f(mean(&y) - slope * mean(&x)),
                ]]
            },
        },
        DemoQuery {
            title: "Age distribution of diabetic patients (10-year bins from 20 to 100)",
            sql: "SELECT HISTOGRAM(age, 20, 100, 8) FROM patients WHERE diabetic = 'yes'",
            plain: |all| {
                let mut bins = vec![0i128; 8];
                for p in all.iter().filter(|p| p.diabetic && p.age >= 20 && p.age < 100) {
                    bins[((p.age - 20) / 10) as usize] += 1;
                }
                vec![vec![Value::Array(bins.into_iter().map(Value::Int).collect())]]
            },
        },
        DemoQuery {
            title: "Blood pressure explained by age and BMI (least squares; intercept first)",
            sql: "SELECT LINREG(systolic_bp, age, bmi) FROM patients",
            plain: |all| {
                let r: Vec<&Patient> = all.iter().collect();
                let y = col(&r, |p| p.bp as f64);
                let xs = vec![col(&r, |p| p.age as f64), col(&r, |p| p.bmi10 as f64 / 10.0)];
                vec![vec![Value::Array(ols(&y, &xs).into_iter().map(f).collect())]]
            },
        },
        DemoQuery {
            title: "Median age and the 90th percentile of BMI (secure comparisons; the answers are opened to the hospitals too)",
            sql: "SELECT MEDIAN(age), PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY bmi) FROM patients",
            plain: |all| {
                let r: Vec<&Patient> = all.iter().collect();
                let age = col(&r, |p| p.age as f64);
                let bmi = col(&r, |p| p.bmi10 as f64 / 10.0);
                vec![vec![f(percentile_cont(&age, 0.5)), f(percentile_cont(&bmi, 0.9))]]
            },
        },
    ]
}

/// PostgreSQL's `percentile_cont`: linear interpolation at p (N - 1) over the sorted values.
fn percentile_cont(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let h = p * (s.len().saturating_sub(1)) as f64;
    let (lo, frac) = (h.floor() as usize, h - h.floor());
    let a = s.get(lo).copied().unwrap_or(f64::NAN);
    let b = s.get(lo + 1).copied().unwrap_or(a);
    a + frac * (b - a)
}

/// Equal as integers, or within a relative 1e-9 as numbers.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-12),
        (Value::Text(x), Value::Text(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        (Value::Null, Value::Null) => true,
        _ => false,
    }
}

/// Private directory for the generated tables, removed afterwards.
struct Workdir(PathBuf);

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run the demo.
pub fn run() -> Result<()> {
    let start = Instant::now();
    println!("Concord demo: three hospitals answer an analyst's questions about all their patients");
    println!("without sharing a single row.\n");
    println!("Each hospital keeps its own table. For every query each hospital computes exact local sums");
    println!("on its own rows, secret-shares them (Shamir, any 1 of the 3 hospitals learns nothing) with");
    println!("the others over mutually authenticated TLS 1.3 on 127.0.0.1, the shares are added, and only");
    println!("the analyst combines the result shares. Beside each answer: the plaintext answer on the pooled");
    println!("rows, which the demo can compute because it generated all three tables; real parties cannot.\n");

    let mut tag = [0u8; 8];
    ChaCha12Rng::from_os_rng().fill_bytes(&mut tag);
    let dir =
        Workdir(std::env::temp_dir().join(format!("concord-demo-{}-{}", std::process::id(), concord_net::hex(&tag))));
    std::fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
    let schema = Schema::from_toml(SCHEMA).map_err(|e| anyhow!("built-in schema: {e}"))?;
    let mut pooled = Vec::new();
    let mut parties = Vec::new();
    for h in &HOSPITALS {
        let rows = generate(h);
        let file = dir.0.join(format!("{}.csv", h.name));
        std::fs::write(&file, to_csv(&rows)).with_context(|| format!("writing {}", file.display()))?;
        println!("  {:<10} {:>6} patients  (private file {})", h.name, rows.len(), file.display());
        pooled.extend(rows);
        parties.push(PartySpec { name: h.name.to_string(), file });
    }
    println!();

    let scheme = choose_scheme(parties.len(), None, None)?;
    let mut all_ok = true;
    let mut last = None;
    for (i, q) in queries().iter().enumerate() {
        let query = concord_query::parse(q.sql, &schema).map_err(|e| anyhow!("{}: {e}", q.sql))?;
        let plan = query.plan(&schema);
        let order = plan_order(&schema, &query, &plan, parties.len(), None, OrderMethodArg::Auto)?;
        let out = if order.is_some() {
            let locals = local_inputs(&schema, &query, &plan, order.as_ref(), &parties)?;
            let phases = Phases { order: order.as_ref(), check: None };
            let names: Vec<String> = parties.iter().map(|p| p.name.clone()).collect();
            execute_with(&schema, &query, &plan, locals, phases, scheme, &names)?
        } else {
            let locals = local_statistics(&schema, &query, &plan, &parties)?;
            execute(&schema, &query, &plan, locals, scheme)?
        };
        let plain = (q.plain)(&pooled);
        println!("{}. {}", i + 1, q.title);
        println!("   {}", q.sql);
        let ncols = out.table.columns.len();
        for (r, row) in out.table.rows.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                let p = plain.get(r).and_then(|pr| pr.get(c));
                let ok = p.is_some_and(|p| same(v, p));
                all_ok &= ok;
                let name = out.table.columns.get(c).map(String::as_str).unwrap_or("?");
                if matches!(v, Value::Text(_)) {
                    println!("   {name} = {}", value_text(v));
                    continue;
                }
                println!(
                    "     {:<36} MPC {:<28} plaintext {:<28} {}",
                    name,
                    value_text(v),
                    p.map(value_text).unwrap_or_else(|| "-".into()),
                    if ok { "match" } else { "DIFFERS" }
                );
            }
            if ncols == 0 {
                all_ok = false;
            }
        }
        let rounds = out.stats.iter().map(|s| s.rounds).max().unwrap_or(0);
        let bytes = out.stats.iter().map(|s| s.bytes_sent).max().unwrap_or(0);
        println!(
            "   [{} statistics per hospital, {:?} over {:?}, {} rounds, {} bytes sent per hospital, {:.1} ms]\n",
            out.stats_per_party,
            out.scheme,
            out.domain,
            rounds,
            bytes,
            out.seconds * 1e3
        );
        last = Some(out);
    }
    // The same question with differential privacy: every hospital adds noise to
    // its sums before sharing them, so not even the opened totals are exact.
    let sql = "SELECT sex, COUNT(*), AVG(age) FROM patients GROUP BY sex WITH PRIVACY (epsilon = 1)";
    let out = run_session(SCHEMA, sql, &SessionOptions::default(), &parties)?;
    println!(
        "{}. The same kind of question with differential privacy (noise added before sharing)",
        queries().len() + 1
    );
    println!("   {sql}");
    if let Some(p) = &out.privacy {
        for c in &p.estimates {
            let sex = out.table.rows.get(c.row).and_then(|r| r.first()).map(value_text).unwrap_or_default();
            let rows: Vec<&Patient> = pooled.iter().filter(|r| r.female == (sex == "F")).collect();
            let exact = if c.column == "COUNT(*)" { rows.len() as f64 } else { mean(&col(&rows, |p| p.age as f64)) };
            let e = &c.estimate;
            // A noisy answer cannot match; it must be within a few noise scales.
            all_ok &= (e.value - exact).abs() <= 10.0 * e.noise_scale;
            println!(
                "     sex = {sex:<2} {:<10} noisy {:<12.3} ± {:<8.3} 95% CI [{:.3}, {:.3}]   plaintext {exact:.3}",
                c.column, e.value, e.noise_scale, e.ci95.0, e.ci95.1
            );
        }
        println!("   [{}]\n", p.description);
    } else {
        all_ok = false;
    }
    if let Some(out) = last {
        println!("What riverside actually received from st-marys in the last query: Shamir shares such as");
        for v in out.sample_received.iter().take(4) {
            println!("   {v}");
        }
        println!("   (one share of a degree-1 polynomial: uniformly random, independent of st-marys' sums)\n");
    }
    println!("total time {:.2} s", start.elapsed().as_secs_f64());
    if !all_ok {
        println!("all results match the plaintext: NO");
        bail!("an MPC answer differs from the plaintext answer");
    }
    println!("all results match the plaintext: yes");
    Ok(())
}
