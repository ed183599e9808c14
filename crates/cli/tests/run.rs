//! `concord run` end to end (parties over loopback TLS) against a plaintext
//! reference computed here, independently, on the pooled rows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::TempDir;

use std::path::{Path, PathBuf};
use std::process::Command;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;
use serde_json::Value as J;

const SCHEMA: &str = r#"
table = "t"
max_rows = 100000

[[column]]
name = "x"
type = "int"
min = -50
max = 50

[[column]]
name = "y"
type = "int"
min = 0
max = 1000

[[column]]
name = "d"
type = "decimal"
scale = 2
min = 0
max = 100.00

[[column]]
name = "g"
type = "category"
values = ["a", "b", "c"]

[[column]]
name = "h"
type = "category"
values = ["u", "v"]
"#;

#[derive(Clone, Debug)]
struct Row {
    x: Option<i64>,
    y: Option<i64>,
    d: Option<i64>, // hundredths
    g: usize,
    h: usize,
}

fn tempdir(tag: &str) -> TempDir {
    TempDir::new(&format!("run-test-{tag}"))
}

fn gen(seed: u64, rows: usize) -> Vec<Row> {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    let mut pick = |m: u64| (rng.next_u64() % m) as i64;
    (0..rows)
        .map(|_| {
            let x = pick(101) - 50;
            let noise = pick(201) - 100;
            Row {
                x: (pick(20) != 0).then_some(x),
                y: (pick(25) != 0).then_some((500 + 7 * x + noise).clamp(0, 1000)),
                d: (pick(30) != 0).then_some(pick(10001)),
                g: pick(3) as usize,
                h: pick(2) as usize,
            }
        })
        .collect()
}

fn write_csv(dir: &Path, name: &str, rows: &[Row]) -> PathBuf {
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut s = String::from("x,y,d,g,h\n");
    for r in rows {
        let d = r.d.map(|d| format!("{}.{:02}", d / 100, d % 100)).unwrap_or_default();
        s += &format!("{},{},{},{},{}\n", opt(r.x), opt(r.y), d, ["a", "b", "c"][r.g], ["u", "v"][r.h]);
    }
    let p = dir.join(format!("{name}.csv"));
    std::fs::write(&p, s).unwrap();
    p
}

fn concord(args: &[String]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_concord")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Set up `parties` CSV files and the schema; returns (dir guard, base args).
fn setup(parties: usize, seed: u64, rows: usize) -> (TempDir, Vec<String>, Vec<Row>) {
    let dir = tempdir(&format!("{parties}-{seed}"));
    let schema = dir.0.join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let mut args = vec!["run".to_string(), "--schema".into(), schema.display().to_string()];
    let mut pooled = Vec::new();
    for p in 0..parties {
        let rows = gen(seed * 100 + p as u64, rows + 37 * p);
        let f = write_csv(&dir.0, &format!("party{p}"), &rows);
        args.push("--party".into());
        args.push(format!("p{p}={}", f.display()));
        pooled.extend(rows);
    }
    (dir, args, pooled)
}

fn run_json(base: &[String], sql: &str, extra: &[&str]) -> J {
    let mut args = base.to_vec();
    args.extend(["--sql".to_string(), sql.to_string(), "--format".into(), "json".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let (ok, out, err) = concord(&args);
    assert!(ok, "concord run failed for {sql}: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

// ---------- plaintext reference (PostgreSQL semantics, f64) ----------

fn vals(rows: &[&Row], f: fn(&Row) -> Option<f64>) -> Vec<f64> {
    rows.iter().filter_map(|r| f(r)).collect()
}
fn pairs(rows: &[&Row], fy: fn(&Row) -> Option<f64>, fx: fn(&Row) -> Option<f64>) -> (Vec<f64>, Vec<f64>) {
    rows.iter().filter_map(|r| Some((fy(r)?, fx(r)?))).unzip()
}
fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}
fn cov(y: &[f64], x: &[f64], ddof: f64) -> Option<f64> {
    let n = y.len() as f64;
    if n - ddof <= 0.0 {
        return None;
    }
    let (my, mx) = (mean(y)?, mean(x)?);
    Some(y.iter().zip(x).map(|(a, b)| (a - my) * (b - mx)).sum::<f64>() / (n - ddof))
}
fn ols(y: &[f64], xs: &[Vec<f64>]) -> Vec<f64> {
    let k = xs.len() + 1;
    let mut a = vec![vec![0.0f64; k + 1]; k];
    for i in 0..y.len() {
        let r: Vec<f64> = std::iter::once(1.0).chain(xs.iter().map(|c| c[i])).collect();
        for p in 0..k {
            for q in 0..k {
                a[p][q] += r[p] * r[q];
            }
            a[p][k] += r[p] * y[i];
        }
    }
    for c in 0..k {
        let piv = (c..k).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap();
        a.swap(c, piv);
        let pivot = a[c].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != c {
                let f = row[c] / pivot[c];
                for (x, p) in row.iter_mut().zip(&pivot).skip(c) {
                    *x -= f * p;
                }
            }
        }
    }
    (0..k).map(|i| a[i][k] / a[i][i]).collect()
}

fn x(r: &Row) -> Option<f64> {
    r.x.map(|v| v as f64)
}
fn y(r: &Row) -> Option<f64> {
    r.y.map(|v| v as f64)
}
fn d(r: &Row) -> Option<f64> {
    r.d.map(|v| v as f64 / 100.0)
}

fn num(v: Option<f64>) -> J {
    v.map(J::from).unwrap_or(J::Null)
}

fn close(got: &J, want: &J, what: &str) {
    match (got, want) {
        (J::Array(a), J::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{what}");
            for (p, q) in a.iter().zip(b) {
                close(p, q, what);
            }
        }
        (J::Number(a), J::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-9), "{what}: got {a}, want {b}");
        }
        _ => assert_eq!(got, want, "{what}"),
    }
}

fn check_rows(out: &J, want: Vec<Vec<J>>, sql: &str) {
    let rows = out["rows"].as_array().unwrap();
    assert_eq!(rows.len(), want.len(), "{sql}: {out}");
    for (r, w) in rows.iter().zip(want) {
        let r = r.as_array().unwrap();
        assert_eq!(r.len(), w.len(), "{sql}");
        for (i, (g, w)) in r.iter().zip(&w).enumerate() {
            close(g, w, &format!("{sql} column {i}"));
        }
    }
}

fn univariate(rows: &[&Row]) -> Vec<J> {
    let xv = vals(rows, x);
    let dv = vals(rows, d);
    vec![
        J::from(rows.len()),
        J::from(xv.len()),
        if xv.is_empty() { J::Null } else { J::from(xv.iter().sum::<f64>() as i64) },
        num(mean(&xv)),
        num(cov(&xv, &xv, 0.0)),
        num(cov(&xv, &xv, 1.0)),
        num(cov(&dv, &dv, 0.0).map(f64::sqrt)),
        num(cov(&dv, &dv, 1.0).map(f64::sqrt)),
        num((!dv.is_empty()).then(|| dv.iter().sum::<f64>())),
    ]
}

const UNIVARIATE: &str =
    "SELECT COUNT(*), COUNT(x), SUM(x), AVG(x), VAR_POP(x), VAR_SAMP(x), STDDEV_POP(d), STDDEV_SAMP(d), SUM(d) FROM t";

fn bivariate(rows: &[&Row]) -> Vec<J> {
    let (yy, xx) = pairs(rows, y, x);
    let vy = cov(&yy, &yy, 0.0);
    let vx = cov(&xx, &xx, 0.0);
    let c = cov(&yy, &xx, 0.0);
    let slope = match (c, vx) {
        (Some(c), Some(v)) if v != 0.0 => Some(c / v),
        _ => None,
    };
    vec![
        num(c),
        num(cov(&yy, &xx, 1.0)),
        num(match (c, vx, vy) {
            (Some(c), Some(a), Some(b)) if a > 0.0 && b > 0.0 => Some(c / (a * b).sqrt()),
            _ => None,
        }),
        num(slope),
        num(slope.and_then(|s| Some(mean(&yy)? - s * mean(&xx)?))),
        num(match (c, vx, vy) {
            (Some(c), Some(a), Some(b)) if a > 0.0 && b > 0.0 => Some(c * c / (a * b)),
            _ => None,
        }),
    ]
}

/// The expected rows of `SELECT g, {BIVARIATE} FROM t GROUP BY g`.
fn bivariate_by_g(pooled: &[Row]) -> Vec<Vec<J>> {
    (0..3)
        .map(|g| {
            let rows: Vec<&Row> = pooled.iter().filter(|r| r.g == g).collect();
            let mut v = vec![J::from(["a", "b", "c"][g])];
            v.extend(bivariate(&rows));
            v
        })
        .collect()
}

const BIVARIATE: &str =
    "COVAR_POP(y, x), COVAR_SAMP(y, x), CORR(y, x), REGR_SLOPE(y, x), REGR_INTERCEPT(y, x), REGR_R2(y, x)";

#[test]
fn every_aggregate_matches_the_plaintext_for_2_3_5_7_parties() {
    for (n, extra) in [
        (2usize, vec![]),
        (3, vec![]),
        (3, vec!["--scheme", "additive"]),
        (5, vec!["--threshold", "2"]),
        (5, vec!["--threshold", "1"]),
        (7, vec!["--threshold", "3"]),
        (7, vec!["--threshold", "6"]),
    ] {
        let (_dir, base, pooled) = setup(n, n as u64, 300);
        let all: Vec<&Row> = pooled.iter().collect();

        // No WHERE, no GROUP BY.
        let out = run_json(&base, UNIVARIATE, &extra);
        check_rows(&out, vec![univariate(&all)], UNIVARIATE);
        assert!(out["stats"]["rounds"].as_u64().unwrap() >= 1);
        assert!(out["stats"]["bytes_per_party"].as_u64().unwrap() > 0);

        // WHERE.
        let sql = format!("{UNIVARIATE} WHERE (y > 500 AND g IN ('a', 'b')) OR NOT d BETWEEN 10 AND 90");
        let out = run_json(&base, &sql, &extra);
        let sel: Vec<&Row> = pooled
            .iter()
            .filter(|r| {
                // (y > 500 AND g IN ('a','b')) with NULL y: unknown if g matches, else false.
                let a = match r.y {
                    Some(v) => Some(v > 500 && r.g < 2),
                    None if r.g < 2 => None,
                    None => Some(false),
                };
                let b = r.d.map(|v| !(1000..=9000).contains(&v));
                matches!((a, b), (Some(true), _) | (_, Some(true)))
            })
            .collect();
        check_rows(&out, vec![univariate(&sel)], &sql);

        // GROUP BY, two-column aggregates.
        let sql = format!("SELECT g, {BIVARIATE} FROM t GROUP BY g");
        let out = run_json(&base, &sql, &extra);
        check_rows(&out, bivariate_by_g(&pooled), &sql);
        assert_eq!(out["columns"][0], "g");

        // GROUP BY two columns, WHERE IS NULL, histogram.
        let sql = "SELECT g, h, COUNT(*), HISTOGRAM(y, 0, 1000, 10) FROM t WHERE x IS NOT NULL GROUP BY g, h";
        let out = run_json(&base, sql, &extra);
        let mut want = Vec::new();
        for g in 0..3 {
            for h in 0..2 {
                let rows: Vec<&Row> = pooled.iter().filter(|r| r.g == g && r.h == h && r.x.is_some()).collect();
                let mut bins = vec![0i64; 10];
                for v in rows.iter().filter_map(|r| r.y) {
                    if (0..1000).contains(&v) {
                        bins[(v / 100) as usize] += 1;
                    }
                }
                want.push(vec![
                    J::from(["a", "b", "c"][g]),
                    J::from(["u", "v"][h]),
                    J::from(rows.len()),
                    J::Array(bins.into_iter().map(J::from).collect()),
                ]);
            }
        }
        check_rows(&out, want, sql);

        // Multiple regression.
        let sql = "SELECT LINREG(y, x, d) FROM t WHERE h = 'u'";
        let out = run_json(&base, sql, &extra);
        let rows: Vec<&Row> =
            pooled.iter().filter(|r| r.h == 0 && r.x.is_some() && r.y.is_some() && r.d.is_some()).collect();
        let yv: Vec<f64> = rows.iter().map(|r| y(r).unwrap()).collect();
        let xs = vec![rows.iter().map(|r| x(r).unwrap()).collect(), rows.iter().map(|r| d(r).unwrap()).collect()];
        let b = ols(&yv, &xs);
        let got = out["rows"][0][0].as_array().unwrap();
        for (g, w) in got.iter().zip(&b) {
            let g = g.as_f64().unwrap();
            // The reference solves the normal equations in f64; ours is exact.
            assert!((g - w).abs() <= 1e-7 * w.abs().max(1.0), "LINREG: got {g}, want {w}");
        }
    }
}

#[test]
fn output_formats() {
    let (_dir, base, pooled) = setup(3, 9, 50);
    let mut args = base.clone();
    args.extend(["--sql".into(), "SELECT h, COUNT(*) FROM t GROUP BY h".into(), "--format".into(), "csv".into()]);
    let (ok, out, err) = concord(&args);
    assert!(ok, "{err}");
    let u = pooled.iter().filter(|r| r.h == 0).count();
    assert_eq!(out.lines().next(), Some("h,COUNT(*)"));
    assert_eq!(out.lines().nth(1), Some(format!("u,{u}").as_str()));
    let mut args = base;
    args.extend(["--sql".into(), "SELECT COUNT(*) FROM t".into()]);
    let (ok, out, err) = concord(&args);
    assert!(ok, "{err}");
    assert!(out.contains(&pooled.len().to_string()), "{out}");
    assert!(err.contains("rounds"), "the table format reports cost on stderr: {err}");
}

#[test]
fn schema_data_and_query_errors_are_refused_with_their_reason() {
    let (dir, base, _) = setup(2, 5, 20);
    let bad_rows = dir.0.join("bad.csv");
    std::fs::write(&bad_rows, "x,y,d,g,h\n1,2,3.00,a,u\n60,2,3.00,a,u\n").unwrap();
    let missing_col = dir.0.join("missing.csv");
    std::fs::write(&missing_col, "x,y,g,h\n1,2,a,u\n").unwrap();
    let bad_cat = dir.0.join("cat.csv");
    std::fs::write(&bad_cat, "x,y,d,g,h\n1,2,3.00,z,u\n").unwrap();
    let bad_dec = dir.0.join("dec.csv");
    std::fs::write(&bad_dec, "x,y,d,g,h\n1,2,3.001,a,u\n").unwrap();
    let p = |f: &Path| format!("bad={}", f.display());
    let with = |party: String, sql: &str| {
        let mut a = base.clone();
        a.extend(["--party".into(), party, "--sql".into(), sql.into()]);
        a
    };
    for (args, needles) in [
        (with(p(&bad_rows), "SELECT COUNT(*) FROM t"), vec!["bad.csv", "row 2", "x", "50"]),
        (with(p(&missing_col), "SELECT COUNT(*) FROM t"), vec!["missing.csv", "d"]),
        (with(p(&bad_cat), "SELECT COUNT(*) FROM t"), vec!["cat.csv", "row 1", "g", "z"]),
        (with(p(&bad_dec), "SELECT COUNT(*) FROM t"), vec!["dec.csv", "row 1", "d"]),
        (with(p(&dir.0.join("nope.csv")), "SELECT COUNT(*) FROM t"), vec!["nope.csv"]),
        (with(p(&bad_rows).replace("bad.csv", "bad.txt"), "SELECT COUNT(*) FROM t"), vec!["bad.txt"]),
        (
            {
                let mut a = base.clone();
                a.extend(["--sql".into(), "SELECT COUNT(*) FROM t".into(), "--threshold".into(), "2".into()]);
                a
            },
            vec!["threshold"],
        ),
        (
            {
                let mut a = base.clone();
                a.extend(["--sql".into(), "SELECT AVG(zz) FROM t".into()]);
                a
            },
            vec!["zz"],
        ),
        (
            {
                let mut a = base.clone();
                a.extend(["--sql".into(), "SELECT MEDIAN(x) FROM t".into()]);
                a
            },
            vec!["MEDIAN", "honest majority"],
        ),
        (
            {
                let mut a = base.clone();
                a.extend(["--sql".into(), "SELECT COUNT(*) FROM t GROUP BY x".into()]);
                a
            },
            vec!["GROUP BY", "x"],
        ),
        (
            {
                let mut a = base.clone();
                a.extend(["--sql".into(), "SELECT COUNT(*) FROM t JOIN u ON t.x = u.x".into()]);
                a
            },
            vec!["JOIN"],
        ),
    ] {
        let (ok, _, err) = concord(&args);
        assert!(!ok, "{args:?} should fail");
        for n in needles {
            assert!(err.contains(n), "expected {n:?} in the error for {args:?}:\n{err}");
        }
    }
    // A bad schema file names itself.
    let schema = dir.0.join("bad_schema.toml");
    std::fs::write(&schema, "table = \"t\"\n[[column]]\nname = \"x\"\ntype = \"float\"\n").unwrap();
    let mut a = base.clone();
    a[2] = schema.display().to_string();
    a.extend(["--sql".into(), "SELECT COUNT(*) FROM t".into()]);
    let (ok, _, err) = concord(&a);
    assert!(!ok);
    assert!(err.contains("bad_schema.toml") && err.contains("float"), "{err}");
}

/// Every party in its own OS process, reading only its own file, over
/// loopback TLS; only result shares reach the analyst (the parent).
#[test]
fn parties_as_separate_processes_over_real_sockets() {
    for (n, extra) in [(3usize, vec!["--processes"]), (4, vec!["--processes", "--threshold", "3"])] {
        let (_dir, base, pooled) = setup(n, 40 + n as u64, 200);
        let all: Vec<&Row> = pooled.iter().collect();
        let out = run_json(&base, UNIVARIATE, &extra);
        check_rows(&out, vec![univariate(&all)], UNIVARIATE);
        let sql = format!("SELECT g, {BIVARIATE} FROM t GROUP BY g");
        let out = run_json(&base, &sql, &extra);
        check_rows(&out, bivariate_by_g(&pooled), &sql);
    }
    // A party whose file is bad refuses in its own process, naming file, row and column.
    let (dir, base, _) = setup(3, 77, 30);
    let bad = dir.0.join("bad.csv");
    std::fs::write(&bad, "x,y,d,g,h\n1,2,3.00,a,u\n1,2000,3.00,a,u\n").unwrap();
    let mut args = base;
    args.extend([
        "--party".into(),
        format!("bad={}", bad.display()),
        "--processes".into(),
        "--sql".into(),
        "SELECT COUNT(*) FROM t".into(),
    ]);
    let (ok, _, err) = concord(&args);
    assert!(!ok);
    assert!(err.contains("bad.csv") && err.contains("row 2") && err.contains("y"), "{err}");
    assert!(err.contains("party 3"), "the analyst names the failed party: {err}");
}

/// The planner bounds every pooled sum from the declared bounds and
/// max_rows: GF(2^61-1) when it fits, GF(2^127-1) when not, refusal beyond.
#[test]
fn the_planner_picks_the_field_from_the_declared_bounds() {
    let dir = tempdir("domain");
    let data = dir.0.join("a.csv");
    std::fs::write(&data, "v\n1\n-3\n5\n").unwrap();
    let data2 = dir.0.join("b.csv");
    std::fs::write(&data2, "v\n7\n").unwrap();
    let schema_with = |max_rows: u64, bound: i64| {
        let p = dir.0.join(format!("s-{max_rows}-{bound}.toml"));
        std::fs::write(
            &p,
            format!("table = \"t\"\nmax_rows = {max_rows}\n[[column]]\nname = \"v\"\ntype = \"int\"\nmin = -{bound}\nmax = {bound}\n"),
        )
        .unwrap();
        p
    };
    let run = |schema: &Path, sql: &str| {
        concord(&[
            "run".into(),
            "--schema".into(),
            schema.display().to_string(),
            "--party".into(),
            format!("a={}", data.display()),
            "--party".into(),
            format!("b={}", data2.display()),
            "--sql".into(),
            sql.into(),
            "--format".into(),
            "json".into(),
        ])
    };
    // Small bounds: sums of squares fit GF(2^61-1).
    let (ok, out, err) = run(&schema_with(1000, 1000), "SELECT SUM(v), VAR_POP(v) FROM t");
    assert!(ok, "{err}");
    let v: J = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["stats"]["domain"], "m61");
    assert_eq!(v["rows"][0][0], 10);
    // 2 x 10^9 rows x (10^9)^2 exceeds 2^60 but not 2^126.
    let (ok, out, err) = run(&schema_with(1_000_000_000, 1_000_000_000), "SELECT SUM(v), VAR_POP(v) FROM t");
    assert!(ok, "{err}");
    let v: J = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["stats"]["domain"], "m127");
    let mean = 10.0 / 4.0;
    let var = [1.0f64, -3.0, 5.0, 7.0].iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 4.0;
    close(&v["rows"][0][1], &J::from(var), "VAR_POP in m127");
    // Bounds near i64::MAX squared, times 10^18 rows: beyond GF(2^127-1).
    let (ok, _, err) =
        run(&schema_with(1_000_000_000_000_000_000, 4_000_000_000_000_000_000), "SELECT VAR_POP(v) FROM t");
    assert!(!ok);
    assert!(err.to_lowercase().contains("overflow") || err.contains("2^127"), "{err}");
}

// ---------- order statistics and the minimum group size ----------

/// PostgreSQL's percentile_cont(num/den) on the values, with exact k and r.
fn percentile(values: &[f64], num: usize, den: usize) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return None;
    }
    let (k, r) = (num * (n - 1) / den, num * (n - 1) % den);
    Some(if r == 0 { v[k] } else { v[k] + (v[k + 1] - v[k]) * r as f64 / den as f64 })
}

const ORDER_SQL: &str = "SELECT g, COUNT(*), MIN(x), MAX(x), MEDIAN(x), \
     PERCENTILE_CONT(0.3) WITHIN GROUP (ORDER BY d), MIN(d), MAX(d), MEDIAN(d), \
     PERCENTILE_CONT(0) WITHIN GROUP (ORDER BY y), PERCENTILE_CONT(1) WITHIN GROUP (ORDER BY y DESC), \
     PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY x DESC) \
     FROM t WHERE h = 'u' AND NOT g = 'c' GROUP BY g";

/// The expected rows of [`ORDER_SQL`]: group c is empty (NULL).
fn order_expected(pooled: &[Row]) -> Vec<Vec<J>> {
    (0..3)
        .map(|g| {
            let rows: Vec<&Row> = pooled.iter().filter(|r| r.g == g && r.h == 0 && g != 2).collect();
            let xs = vals(&rows, x);
            let ds = vals(&rows, d);
            let ys = vals(&rows, y);
            let int = |v: Option<f64>| v.map(|v| J::from(v as i64)).unwrap_or(J::Null);
            vec![
                J::from(["a", "b", "c"][g]),
                J::from(rows.len()),
                int(percentile(&xs, 0, 1)),
                int(percentile(&xs, 1, 1)),
                num(percentile(&xs, 1, 2)),
                num(percentile(&ds, 3, 10)),
                num(percentile(&ds, 0, 1)),
                num(percentile(&ds, 1, 1)),
                num(percentile(&ds, 1, 2)),
                num(percentile(&ys, 0, 1)),
                // The 1-quantile of the descending order is the minimum.
                num(percentile(&ys, 0, 1)),
                num(percentile(&xs, 1, 20)),
            ]
        })
        .collect()
}

#[test]
fn order_statistics_match_the_plaintext_with_where_and_group_by() {
    let (_dir, base, pooled) = setup(3, 11, 120);
    let want = order_expected(&pooled);
    for extra in [vec![], vec!["--processes"]] {
        let out = run_json(&base, ORDER_SQL, &extra);
        check_rows(&out, want.clone(), ORDER_SQL);
        let order = &out["stats"]["order"];
        // d spans 0.00 .. 100.00: 10001 values, 14 steps in lockstep.
        let plan = order["plan"].as_str().unwrap();
        assert!(
            plan.contains("domain search over [-50, 50] (x), [0, 1000] (y), [0.00, 100.00] (d), 14 steps"),
            "{plan}"
        );
        assert!(order["revealed_to"].as_str().unwrap().contains("all computing parties"));
        assert!(order["rounds"].as_u64().unwrap() > 14 * 10);
        assert!(order["bytes_per_party"].as_u64().unwrap() > 0);
        assert_eq!(out["stats"]["domain"], "m127");
    }
    // The table format says what is revealed, and to whom.
    let mut args = base.clone();
    args.extend(["--sql".into(), "SELECT MEDIAN(x) FROM t".into()]);
    let (ok, out, err) = concord(&args);
    assert!(ok, "{err}");
    assert!(err.contains("order statistics: domain search over [-50, 50] (x), 7 steps"), "{err}");
    assert!(err.contains("revealed to all 3 computing parties"), "{err}");
    let all: Vec<&Row> = pooled.iter().collect();
    let median = percentile(&vals(&all, x), 1, 2).unwrap();
    assert!(out.contains(&format!("{median:.1}")), "{out}");
}

/// A schema with one column whose values the test writes by hand.
fn tiny(dir: &Path, header: &str, files: &[&str]) -> Vec<String> {
    let schema = dir.join("tiny.toml");
    std::fs::write(
        &schema,
        format!(
            "table = \"t\"\nmax_rows = 100\n{header}\n[[column]]\nname = \"v\"\ntype = \"decimal\"\nscale = 1\nmin = -5\nmax = 5\n\
             [[column]]\nname = \"k\"\ntype = \"category\"\nvalues = [\"p\", \"q\"]\n"
        ),
    )
    .unwrap();
    let mut args = vec!["run".to_string(), "--schema".into(), schema.display().to_string()];
    for (i, body) in files.iter().enumerate() {
        let f = dir.join(format!("tiny{i}.csv"));
        std::fs::write(&f, format!("v,k\n{body}")).unwrap();
        args.extend(["--party".into(), format!("p{i}={}", f.display())]);
    }
    args
}

#[test]
fn order_statistics_edge_cases() {
    let dir = tempdir("order-edges");
    // A single row in all: every percentile is that value.
    let base = tiny(&dir.0, "", &["-2.5,p\n", ",q\n", ",p\n"]);
    let out =
        run_json(&base, "SELECT MIN(v), MAX(v), MEDIAN(v), PERCENTILE_CONT(0.7) WITHIN GROUP (ORDER BY v) FROM t", &[]);
    check_rows(&out, vec![vec![J::from(-2.5); 4]], "single row");
    // GROUP BY: q has no non-null value (NULL); p the extremes of the domain, with ties.
    let base = tiny(&dir.0, "", &["-5.0,p\n5.0,p\n,q\n", "5.0,p\n-5.0,p\n", "-5.0,p\n"]);
    let out = run_json(
        &base,
        "SELECT k, COUNT(v), MIN(v), MAX(v), MEDIAN(v), PERCENTILE_CONT(0.875) WITHIN GROUP (ORDER BY v) FROM t GROUP BY k",
        &[],
    );
    // p: -5, -5, -5, 5, 5; h = 0.875 x 4 = 3.5 -> 5.
    check_rows(
        &out,
        vec![
            vec![J::from("p"), J::from(5), J::from(-5.0), J::from(5.0), J::from(-5.0), J::from(5.0)],
            vec![J::from("q"), J::from(0), J::Null, J::Null, J::Null, J::Null],
        ],
        "edges",
    );
    // Refusals: p outside [0, 1], a category column, 2 parties, additive sharing.
    let base3 = tiny(&dir.0, "", &["1.0,p\n", "2.0,p\n", "3.0,q\n"]);
    let base2 = tiny(&dir.0, "", &["1.0,p\n", "2.0,p\n"]);
    let sql_args = |base: &[String], sql: &str, extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend(["--sql".to_string(), sql.to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    for (args, needles) in [
        (
            sql_args(&base3, "SELECT PERCENTILE_CONT(1.01) WITHIN GROUP (ORDER BY v) FROM t", &[]),
            vec!["between 0 and 1", "`1.01` at line 1, column 24"],
        ),
        (sql_args(&base3, "SELECT MAX(k) FROM t", &[]), vec!["MAX needs a numeric", "k is a category"]),
        (sql_args(&base2, "SELECT MEDIAN(v) FROM t", &[]), vec!["honest majority", "at least 3 parties"]),
        (sql_args(&base3, "SELECT MIN(v) FROM t", &["--scheme", "additive"]), vec!["honest majority"]),
        (sql_args(&base2, "SELECT COUNT(*) FROM t", &["--min-group-size", "2"]), vec!["minimum group size"]),
    ] {
        let (ok, _, err) = concord(&args);
        assert!(!ok, "{args:?} should fail");
        for n in needles {
            assert!(err.contains(n), "expected {n:?} in the error for {args:?}:\n{err}");
        }
    }
}

#[test]
fn small_groups_are_suppressed_inside_mpc() {
    let (_dir, base, pooled) = setup(3, 21, 40);
    let sql = "SELECT g, h, COUNT(*), AVG(x), MEDIAN(y) FROM t WHERE x > 30 GROUP BY g, h";
    let counts: Vec<usize> = (0..6)
        .map(|i| pooled.iter().filter(|r| r.g == i / 2 && r.h == i % 2 && r.x.is_some_and(|v| v > 30)).count())
        .collect();
    let mut sorted = counts.clone();
    sorted.sort();
    // A threshold that keeps some groups and suppresses others.
    let k = sorted[3];
    assert!(sorted[0] < k, "the data should have a small group: {counts:?}");
    for extra in [
        vec!["--min-group-size".to_string(), k.to_string()],
        vec!["--processes".into(), "--min-group-size".into(), k.to_string()],
    ] {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let out = run_json(&base, sql, &extra);
        let rows = out["rows"].as_array().unwrap();
        let mut suppressed = 0;
        for (i, row) in rows.iter().enumerate() {
            let sel: Vec<&Row> =
                pooled.iter().filter(|r| r.g == i / 2 && r.h == i % 2 && r.x.is_some_and(|v| v > 30)).collect();
            if sel.len() < k {
                suppressed += 1;
                for c in 2..5 {
                    assert_eq!(row[c], J::from(format!("suppressed (fewer than {k} rows)")), "row {i}");
                }
            } else {
                let want = vec![
                    row[0].clone(),
                    row[1].clone(),
                    J::from(sel.len()),
                    num(mean(&vals(&sel, x))),
                    num(percentile(&vals(&sel, y), 1, 2)),
                ];
                check_rows(&serde_json::json!({ "rows": [row] }), vec![want], sql);
            }
        }
        assert_eq!(out["stats"]["suppressed_groups"], suppressed);
        assert!(suppressed > 0 && suppressed < 6);
    }
    // The schema's min_group_size applies without the flag; no GROUP BY: all or nothing.
    let (dir, mut base, pooled) = setup(3, 22, 30);
    let schema = dir.0.join("schema-k.toml");
    std::fs::write(&schema, format!("min_group_size = {}\n{SCHEMA}", pooled.len() + 1)).unwrap();
    base[2] = schema.display().to_string();
    let out = run_json(&base, "SELECT COUNT(*), SUM(x) FROM t", &[]);
    let k = pooled.len() + 1;
    assert_eq!(out["rows"][0][0], J::from(format!("suppressed (fewer than {k} rows)")));
    // The flag overrides the schema (0 turns it off).
    let out = run_json(&base, "SELECT COUNT(*) FROM t", &["--min-group-size", "0"]);
    assert_eq!(out["rows"][0][0], J::from(pooled.len()));
    let out = run_json(&base, "SELECT COUNT(*) FROM t", &["--min-group-size", &pooled.len().to_string()]);
    assert_eq!(out["rows"][0][0], J::from(pooled.len()));
}

// ---------- input check: poisoned statistics ----------

/// Per group of `g`: (non-null y count, sum of y, non-null x count, sum of x).
fn per_group_sums(rows: &[Row]) -> Vec<(i128, i128, i128, i128)> {
    (0..3)
        .map(|g| {
            let in_g: Vec<&Row> = rows.iter().filter(|r| r.g == g).collect();
            let ys: Vec<i128> = in_g.iter().filter_map(|r| r.y).map(i128::from).collect();
            let xs: Vec<i128> = in_g.iter().filter_map(|r| r.x).map(i128::from).collect();
            (ys.len() as i128, ys.iter().sum(), xs.len() as i128, xs.iter().sum())
        })
        .collect()
}

const POISON_SQL: &str = "SELECT g, COUNT(y), SUM(y), AVG(y), SUM(x) FROM t GROUP BY g";

#[test]
fn a_poisoned_party_is_clamped_to_its_bounds_inside_mpc() {
    let (_dir, base, _) = setup(3, 41, 30);
    let parties: Vec<Vec<Row>> = (0..3).map(|p| gen(4100 + p as u64, 30 + 37 * p)).collect();
    let sums: Vec<_> = parties.iter().map(|r| per_group_sums(r)).collect();
    let out = run_json(&base, POISON_SQL, &["--poison", "p1=1000"]);
    assert_eq!(out["stats"]["input_check"]["policy"], "clamp");
    assert!(out["stats"]["input_check"]["rounds"].as_u64().unwrap() >= 10);
    assert_eq!(out["stats"]["domain"], "m127");
    for g in 0..3 {
        let (mut n, mut sy, mut sx) = (0i128, 0i128, 0i128);
        for (p, s) in sums.iter().enumerate() {
            let (ny, y, nx, x) = s[g];
            n += ny;
            if p == 1 {
                // What the clamp must produce: the poisoned sums projected
                // onto [n lo, n hi] in plaintext.
                sy += (1000 * y).clamp(0, 1000 * ny);
                sx += (1000 * x).clamp(-50 * nx, 50 * nx);
            } else {
                sy += y;
                sx += x;
            }
        }
        let row = &out["rows"][g];
        assert_eq!(row[1], J::from(n as i64), "group {g}: counts are not poisoned");
        assert_eq!(row[2], J::from(sy as i64), "group {g}: SUM(y) clamped");
        close(&row[3], &J::from(sy as f64 / n as f64), "AVG(y) clamped");
        assert_eq!(row[4], J::from(sx as i64), "group {g}: SUM(x) clamped");
        // The mean moves no further than party 1 answering the bound for every row.
        let honest: i128 = sums.iter().map(|s| s[g].1).sum();
        let worst = honest - sums[1][g].1 + 1000 * sums[1][g].0;
        assert!(sy <= worst && sy >= honest, "group {g}: {honest} <= {sy} <= {worst}");
    }
    // Without the check the poison goes through.
    let off = run_json(&base, POISON_SQL, &["--poison", "p1=1000", "--input-check", "off"]);
    let poisoned: i128 = sums.iter().enumerate().map(|(p, s)| if p == 1 { 1000 * s[0].1 } else { s[0].1 }).sum();
    assert_eq!(off["rows"][0][2], J::from(poisoned as i64));
    assert_eq!(off["stats"]["input_check"]["policy"], "off");
}

#[test]
fn reject_names_the_poisoning_party_and_honest_inputs_pass_every_policy() {
    let (_dir, base, _) = setup(3, 43, 25);
    let mut args = base.clone();
    args.extend(["--sql", POISON_SQL, "--input-check", "reject", "--poison", "p2=-7"].iter().map(|s| s.to_string()));
    let (ok, out, err) = concord(&args);
    assert!(!ok, "a poisoned party must be rejected: {out}");
    assert!(err.contains("p2 (party 2)") && err.contains("infeasible"), "{err}");
    assert!(!err.contains("p0 (party 0)") && !err.contains("p1 (party 1)"), "{err}");
    // Honest inputs: identical results with clamp, reject and off.
    let sql = "SELECT g, h, COUNT(*), AVG(y), VAR_SAMP(d), CORR(y, x), HISTOGRAM(x, -50, 50, 4) FROM t GROUP BY g, h";
    let clamp = run_json(&base, sql, &["--input-check", "clamp"]);
    let reject = run_json(&base, sql, &["--input-check", "reject"]);
    let off = run_json(&base, sql, &["--input-check", "off"]);
    assert_eq!(clamp["rows"], off["rows"]);
    assert_eq!(reject["rows"], off["rows"]);
    assert_eq!(reject["stats"]["input_check"]["policy"], "reject");
    // With order statistics in the same session.
    let sql = "SELECT g, MEDIAN(y), AVG(y) FROM t GROUP BY g";
    assert_eq!(run_json(&base, sql, &[])["rows"], run_json(&base, sql, &["--input-check", "off"])["rows"]);
}

#[test]
fn two_parties_or_additive_sharing_default_to_no_input_check() {
    let (_dir, base, _) = setup(2, 47, 20);
    let out = run_json(&base, "SELECT AVG(y) FROM t", &[]);
    assert_eq!(out["stats"]["input_check"]["policy"], "off");
    for policy in ["clamp", "reject"] {
        let mut args = base.clone();
        args.extend(["--sql", "SELECT AVG(y) FROM t", "--input-check", policy].iter().map(|s| s.to_string()));
        let (ok, _, err) = concord(&args);
        assert!(!ok);
        assert!(err.contains("honest majority") && err.contains("--input-check off"), "{err}");
    }
    let (_dir3, base3, _) = setup(3, 48, 20);
    let out = run_json(&base3, "SELECT AVG(y) FROM t", &["--scheme", "additive"]);
    assert_eq!(out["stats"]["input_check"]["policy"], "off");
    let mut args = base3.clone();
    args.extend(
        ["--sql", "SELECT AVG(y) FROM t", "--scheme", "additive", "--input-check", "clamp"]
            .iter()
            .map(|s| s.to_string()),
    );
    let (ok, _, err) = concord(&args);
    assert!(!ok && err.contains("--scheme shamir"), "{err}");
}

/// `got` within the documented precision of `--reveal final` of `want` (NULL exactly).
fn near(got: &J, want: &J, what: &str) {
    match (got, want) {
        (J::Number(a), J::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() <= b.abs() * 2f64.powi(-12) + 1e-3, "{what}: got {a}, want {b}");
        }
        _ => assert_eq!(got, want, "{what}"),
    }
}

#[test]
fn final_statistics_inside_mpc_match_the_plaintext_within_their_precision() {
    let (_dir, base, pooled) = setup(3, 41, 60);
    let all: Vec<&Row> = pooled.iter().collect();
    // Univariate, one group, in this process.
    let out = run_json(&base, UNIVARIATE, &["--reveal", "final"]);
    let want = univariate(&all);
    let row = out["rows"][0].as_array().unwrap();
    for (i, (g, w)) in row.iter().zip(&want).enumerate() {
        near(g, w, &format!("{UNIVARIATE} column {i}"));
    }
    assert!(out["stats"]["reveal"]["final"].as_str().unwrap().contains("16 fractional bits"));
    // Bivariate by group, parties as processes.
    let sql = format!("SELECT g, {BIVARIATE} FROM t GROUP BY g");
    let out = run_json(&base, &sql, &["--reveal", "final", "--processes"]);
    let want = bivariate_by_g(&pooled);
    for (r, w) in out["rows"].as_array().unwrap().iter().zip(&want) {
        for (i, (g, w)) in r.as_array().unwrap().iter().zip(w).enumerate() {
            near(g, w, &format!("{sql} column {i}"));
        }
    }
}

#[test]
fn final_statistics_null_cases_and_refusals() {
    let dir = tempdir("final-edges");
    // Group p: two equal values (sample variance 0, no correlation); group q: no rows.
    let args = tiny(&dir.0, "", &["1.0,p\n", "1.0,p\n", "-2.0,k_absent_is_fine\n"]);
    let args: Vec<String> = args.into_iter().collect();
    let (ok, _, err) = concord(&[args.clone(), vec!["--sql".into(), "SELECT AVG(v) FROM t".into()]].concat());
    assert!(!ok && err.contains("k_absent_is_fine"), "a bad category value is refused: {err}");
    let args = tiny(&dir.0, "", &["1.0,p\n", "1.0,p\n", "1.0,p\n"]);
    let sql = "SELECT k, AVG(v), VAR_SAMP(v), STDDEV_POP(v), CORR(v, v), REGR_R2(v, v) FROM t GROUP BY k";
    let out = run_json(&args, sql, &["--reveal", "final"]);
    let rows = out["rows"].as_array().unwrap();
    near(&rows[0][1], &J::from(1.0), "AVG of p");
    near(&rows[0][2], &J::from(0.0), "VAR_SAMP of p");
    near(&rows[0][3], &J::from(0.0), "STDDEV_POP of p");
    assert_eq!(rows[0][4], J::Null, "CORR of a constant is NULL");
    assert_eq!(rows[0][5], J::Null, "REGR_R2 with var(x) = 0 is NULL");
    for (c, v) in rows[1].as_array().unwrap().iter().enumerate().skip(1) {
        assert_eq!(*v, J::Null, "group q has no rows: column {c}");
    }
    for (extra, sql, needle) in [
        (vec![], "SELECT LINREG(v, v) FROM t", "matrix inverse"),
        (vec![], "SELECT MEDIAN(v) FROM t", "order statistics"),
        (vec!["--min-group-size", "2"], "SELECT AVG(v) FROM t", "minimum group size"),
        (vec!["--threshold", "1"], "SELECT AVG(v) FROM t", "drop --threshold"),
        (vec!["--input-check", "clamp"], "SELECT AVG(v) FROM t", "--input-check off"),
    ] {
        let mut a = args.clone();
        a.extend(["--sql".to_string(), sql.to_string(), "--reveal".into(), "final".into()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        let (ok, _, err) = concord(&a);
        assert!(!ok && err.contains(needle), "{sql} {extra:?}: expected {needle:?} in {err}");
    }
    let two = tiny(&dir.0, "", &["1.0,p\n", "2.0,q\n"]);
    let (ok, _, err) = concord(
        &[two, vec!["--sql".into(), "SELECT AVG(v) FROM t".into(), "--reveal".into(), "final".into()]].concat(),
    );
    assert!(!ok && err.contains("three-party"), "{err}");
}

#[test]
fn differentially_private_runs_report_noise_and_refuse_what_dp_does_not_cover() {
    let (_dir, base, pooled) = setup(3, 41, 400);
    // In process and as processes, with --epsilon and with the clause: every answer
    // within a few noise scales of the plaintext, with its scale and interval.
    for (sql, extra) in [
        ("SELECT g, COUNT(*), SUM(y), AVG(y), HISTOGRAM(x, -50, 50, 4) FROM t GROUP BY g", vec!["--epsilon", "2"]),
        (
            "SELECT g, COUNT(*), SUM(y), AVG(y), HISTOGRAM(x, -50, 50, 4) FROM t GROUP BY g WITH PRIVACY (rho = 1)",
            vec![],
        ),
        (
            "SELECT g, COUNT(*), SUM(y), AVG(y), HISTOGRAM(x, -50, 50, 4) FROM t GROUP BY g",
            vec!["--epsilon", "2", "--processes"],
        ),
    ] {
        let out = run_json(&base, sql, &extra);
        let cells = out["privacy"]["cells"].as_array().unwrap();
        assert_eq!(cells.len(), 3 * (3 + 4), "{out}");
        for (gi, row) in out["rows"].as_array().unwrap().iter().enumerate() {
            let g: Vec<&Row> = pooled.iter().filter(|r| r.g == gi).collect();
            let ys: Vec<f64> = g.iter().filter_map(|r| r.y.map(|v| v as f64)).collect();
            let mut bins = [0.0; 4];
            for x in g.iter().filter_map(|r| r.x) {
                bins[(((x + 50) * 4) / 100).min(3) as usize] += 1.0;
            }
            let want = [g.len() as f64, ys.iter().sum(), ys.iter().sum::<f64>() / ys.len() as f64];
            for (k, w) in want.iter().enumerate() {
                let cell = cells.iter().find(|c| c["row"] == gi && c["column"] == out["columns"][k + 1]).unwrap();
                let (got, sd) = (row[k + 1].as_f64().unwrap(), cell["noise_sd"].as_f64().unwrap());
                assert!(sd > 0.0 && (got - w).abs() < 10.0 * sd, "{sql}: {got} vs {w} (sd {sd})");
                let (lo, hi) = (cell["ci95"][0].as_f64().unwrap(), cell["ci95"][1].as_f64().unwrap());
                assert!(lo <= got && got <= hi, "{cell}");
            }
            for (b, w) in bins.iter().enumerate() {
                let cell = cells.iter().find(|c| c["row"] == gi && c["bin"] == b).unwrap();
                let got = row[4][b].as_f64().unwrap();
                assert!((got - w).abs() < 10.0 * cell["noise_sd"].as_f64().unwrap(), "{sql}: bin {b}: {got} vs {w}");
            }
        }
        // Four releases (COUNT(*), SUM(y) and COUNT(y) for AVG, the histogram).
        let rho = out["privacy"]["rho"].as_f64().unwrap();
        let want = if sql.contains("rho = 1") { 1.0 } else { 4.0 * 0.5 * 0.5 * 0.5 };
        assert!((rho - want).abs() < 1e-12, "{rho} vs {want}");
        assert!(out["stats"]["domain"] == "m127", "{out}");
    }
    // Refusals, each with its reason and before anything runs.
    for (sql, extra, want) in [
        ("SELECT MEDIAN(x) FROM t", vec!["--epsilon", "1"], "MEDIAN(x) is not supported"),
        ("SELECT VAR_POP(x) FROM t WITH PRIVACY (epsilon = 1)", vec![], "VAR_POP(x) is not supported"),
        ("SELECT COUNT(*) FROM t", vec!["--epsilon", "1", "--min-group-size", "5"], "minimum group size"),
        ("SELECT COUNT(*) FROM t", vec!["--epsilon", "1", "--input-check", "clamp"], "input check"),
        ("SELECT COUNT(*) FROM t", vec!["--epsilon", "0"], "epsilon must be"),
        (
            "SELECT COUNT(*) FROM t WITH PRIVACY (epsilon = 1)",
            vec!["--epsilon", "2"],
            "give the privacy parameter once",
        ),
        ("SELECT COUNT(*) FROM t WITH PRIVACY (delta = 1)", vec![], "unknown parameter \"delta\""),
        ("SELECT AVG(x) FROM t", vec!["--epsilon", "1", "--reveal", "final"], "reveal final"),
    ] {
        let mut args = base.clone();
        args.extend(["--sql".to_string(), sql.to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let (ok, _, err) = concord(&args);
        assert!(!ok && err.contains(want), "{sql} {extra:?}: {err}");
    }
}
