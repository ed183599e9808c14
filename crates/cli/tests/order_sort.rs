//! `concord run --order-method sort|search|auto`: order statistics by
//! oblivious sort on the replicated engine, against a plaintext reference
//! computed here on the pooled rows and against the domain search.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::TempDir;

use std::path::{Path, PathBuf};
use std::process::Command;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;
use serde_json::Value as J;

/// x: int with ties and negatives; d: decimal (hundredths) with negatives;
/// g: group c never has a row.
fn schema_of(max_rows: u64) -> String {
    format!(
        "table = \"t\"\nmax_rows = {max_rows}\n\
         [[column]]\nname = \"x\"\ntype = \"int\"\nmin = -1000000\nmax = 1000000\n\
         [[column]]\nname = \"d\"\ntype = \"decimal\"\nscale = 2\nmin = -100.00\nmax = 100.00\n\
         [[column]]\nname = \"g\"\ntype = \"category\"\nvalues = [\"a\", \"b\", \"c\"]\n"
    )
}

#[derive(Clone, Debug)]
struct Row {
    x: Option<i64>,
    d: Option<i64>,
    g: usize,
}

fn tempdir(tag: &str) -> TempDir {
    TempDir::new(&format!("sort-test-{tag}"))
}

fn gen(seed: u64, rows: usize) -> Vec<Row> {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    let mut pick = |m: u64| (rng.next_u64() % m) as i64;
    (0..rows)
        .map(|_| Row {
            // Few distinct values: many ties.
            x: (pick(8) != 0).then_some((pick(21) - 10) * 1000),
            d: (pick(6) != 0).then_some(pick(20001) - 10000),
            g: pick(2) as usize,
        })
        .collect()
}

fn write_csv(dir: &Path, name: &str, rows: &[Row]) -> PathBuf {
    let mut s = String::from("x,d,g\n");
    for r in rows {
        let x = r.x.map(|v| v.to_string()).unwrap_or_default();
        let d =
            r.d.map(|d| format!("{}{}.{:02}", if d < 0 { "-" } else { "" }, d.abs() / 100, d.abs() % 100))
                .unwrap_or_default();
        s += &format!("{x},{d},{}\n", ["a", "b", "c"][r.g]);
    }
    let p = dir.join(format!("{name}.csv"));
    std::fs::write(&p, s).unwrap();
    p
}

fn concord(args: &[String]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_concord")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// `parties` CSV files with `rows[p]` rows each and a schema with `max_rows`.
fn setup(dir: &Path, max_rows: u64, rows: &[usize], seed: u64) -> (Vec<String>, Vec<Row>) {
    let schema = dir.join(format!("schema-{max_rows}.toml"));
    std::fs::write(&schema, schema_of(max_rows)).unwrap();
    let mut args = vec!["run".to_string(), "--schema".into(), schema.display().to_string()];
    let mut pooled = Vec::new();
    for (p, &n) in rows.iter().enumerate() {
        let r = gen(seed * 10 + p as u64, n);
        let f = write_csv(dir, &format!("p{p}-{seed}"), &r);
        args.extend(["--party".into(), format!("p{p}={}", f.display())]);
        pooled.extend(r);
    }
    (args, pooled)
}

fn run(base: &[String], sql: &str, extra: &[&str]) -> (J, String) {
    let mut args = base.to_vec();
    args.extend(["--sql".to_string(), sql.to_string(), "--format".into(), "json".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let (ok, out, err) = concord(&args);
    assert!(ok, "concord run {extra:?} failed for {sql}: {err}");
    (serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}")), err)
}

/// PostgreSQL's percentile_cont(num/den) of integers in units of 1/scale, exact k and r.
fn percentile(values: &[i64], num: i64, den: i64, scale: f64) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_unstable();
    let n = v.len() as i64;
    if n == 0 {
        return None;
    }
    let (k, r) = ((num * (n - 1) / den) as usize, num * (n - 1) % den);
    let times_den = den * v[k] + if r == 0 { 0 } else { r * (v[k + 1] - v[k]) };
    Some(times_den as f64 / (den as f64 * scale))
}

const SQL: &str = "SELECT g, COUNT(*), MIN(x), MAX(x), MEDIAN(x), PERCENTILE_CONT(0.3) WITHIN GROUP (ORDER BY d), \
     MIN(d), MAX(d), MEDIAN(d), PERCENTILE_CONT(0) WITHIN GROUP (ORDER BY x), \
     PERCENTILE_CONT(1) WITHIN GROUP (ORDER BY d), PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY x DESC) \
     FROM t WHERE d > -90 OR d IS NULL GROUP BY g";

fn expected(pooled: &[Row]) -> Vec<Vec<J>> {
    (0..3)
        .map(|g| {
            let rows: Vec<&Row> = pooled.iter().filter(|r| r.g == g && r.d.is_none_or(|d| d > -9000)).collect();
            let xs: Vec<i64> = rows.iter().filter_map(|r| r.x).collect();
            let ds: Vec<i64> = rows.iter().filter_map(|r| r.d).collect();
            let int = |v: Option<f64>| v.map(|v| J::from(v as i64)).unwrap_or(J::Null);
            let num = |v: Option<f64>| v.map(J::from).unwrap_or(J::Null);
            vec![
                J::from(["a", "b", "c"][g]),
                J::from(rows.len()),
                int(percentile(&xs, 0, 1, 1.0)),
                int(percentile(&xs, 1, 1, 1.0)),
                num(percentile(&xs, 1, 2, 1.0)),
                num(percentile(&ds, 3, 10, 100.0)),
                num(percentile(&ds, 0, 1, 100.0)),
                num(percentile(&ds, 1, 1, 100.0)),
                num(percentile(&ds, 1, 2, 100.0)),
                num(percentile(&xs, 0, 1, 1.0)),
                num(percentile(&ds, 1, 1, 100.0)),
                // DESC: the 0.95-quantile of the descending order is the 0.05-quantile.
                num(percentile(&xs, 1, 20, 1.0)),
            ]
        })
        .collect()
}

fn close(got: &J, want: &J, what: &str) {
    match (got, want) {
        (J::Number(a), J::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-9), "{what}: got {a}, want {b}");
        }
        _ => assert_eq!(got, want, "{what}"),
    }
}

fn check(out: &J, want: &[Vec<J>], what: &str) {
    let rows = out["rows"].as_array().unwrap();
    assert_eq!(rows.len(), want.len(), "{what}: {out}");
    for (r, w) in rows.iter().zip(want) {
        let r = r.as_array().unwrap();
        assert_eq!(r.len(), w.len(), "{what}");
        for (i, (g, w)) in r.iter().zip(w).enumerate() {
            close(g, w, &format!("{what}, column {i}"));
        }
    }
}

#[test]
fn sort_matches_the_plaintext_and_the_search() {
    let dir = tempdir("match");
    let (base, pooled) = setup(&dir.0, 40, &[40, 25, 31], 5);
    let want = expected(&pooled);
    assert!(want[0][4] != J::Null && want[1][4] != J::Null && want[2][4] == J::Null);
    let (sorted, _) = run(&base, SQL, &["--order-method", "sort"]);
    check(&sorted, &want, "sort");
    let plan = sorted["stats"]["order"]["plan"].as_str().unwrap();
    assert!(plan.contains("oblivious sort of 6 x 3 x 40 padded values"), "{plan}");
    assert!(sorted["stats"]["order"]["rounds"].as_u64().unwrap() > 20);
    assert!(sorted["stats"]["order"]["bytes_per_party"].as_u64().unwrap() > 0);
    let revealed = sorted["stats"]["order"]["revealed_to"].as_str().unwrap();
    assert!(revealed.contains("all computing parties") && revealed.contains("simulatable"), "{revealed}");
    let (searched, _) = run(&base, SQL, &["--order-method", "search"]);
    assert!(searched["stats"]["order"]["plan"].as_str().unwrap().contains("domain search"));
    assert_eq!(sorted["rows"], searched["rows"], "sort and search must give identical answers");
    // One party process each, and the minimum group size on the same engine.
    let (procs, _) = run(&base, SQL, &["--order-method", "sort", "--processes"]);
    assert_eq!(procs["rows"], sorted["rows"]);
    let k = pooled.iter().filter(|r| r.g == 0 && r.d.is_none_or(|d| d > -9000)).count();
    let (gated, _) = run(
        &base,
        "SELECT g, COUNT(*), MEDIAN(x) FROM t WHERE d > -90 OR d IS NULL GROUP BY g",
        &["--order-method", "sort", "--min-group-size", &k.to_string()],
    );
    let rows = gated["rows"].as_array().unwrap();
    assert_eq!(rows[0][2], want[0][4]);
    let b = pooled.iter().filter(|r| r.g == 1 && r.d.is_none_or(|d| d > -9000)).count();
    let supp = J::from(format!("suppressed (fewer than {k} rows)"));
    assert_eq!(rows[1][2] == supp, b < k, "{gated}");
    assert_eq!(rows[2][2], supp);
}

#[test]
fn sort_edge_cases_single_value_and_all_ties() {
    let dir = tempdir("edges");
    let schema = dir.0.join("s.toml");
    std::fs::write(&schema, schema_text()).unwrap();
    let files = ["x,d,g\n-7,,a\n", "x,d,g\n,1.5,b\n", "x,d,g\n"];
    let mut base = vec!["run".to_string(), "--schema".into(), schema.display().to_string()];
    for (i, body) in files.iter().enumerate() {
        let f = dir.0.join(format!("e{i}.csv"));
        std::fs::write(&f, body).unwrap();
        base.extend(["--party".into(), format!("e{i}={}", f.display())]);
    }
    let sql = "SELECT g, MIN(x), MAX(x), MEDIAN(x), PERCENTILE_CONT(0.7) WITHIN GROUP (ORDER BY d) FROM t GROUP BY g";
    let (out, _) = run(&base, sql, &["--order-method", "sort"]);
    let want = vec![
        vec![J::from("a"), J::from(-7), J::from(-7), J::from(-7.0), J::Null],
        vec![J::from("b"), J::Null, J::Null, J::Null, J::from(1.5)],
        vec![J::from("c"), J::Null, J::Null, J::Null, J::Null],
    ];
    check(&out, &want, "edges");
    let (search, _) = run(&base, sql, &["--order-method", "search"]);
    assert_eq!(out["rows"], search["rows"]);
}

fn schema_text() -> String {
    schema_of(3)
}

#[test]
fn auto_picks_sort_for_small_data_and_search_for_large() {
    let dir = tempdir("auto");
    let sql = "SELECT MEDIAN(d) FROM t";
    let (small, _) = setup(&dir.0, 20, &[20, 13, 17], 7);
    let mut args = small.clone();
    args.extend(["--sql".into(), sql.into()]);
    let (ok, _, err) = concord(&args);
    assert!(ok, "{err}");
    assert!(err.contains("order statistics: oblivious sort of 3 x 20 padded values"), "{err}");
    // max_rows 100000: 300000 padded values, beyond what auto sorts.
    let (large, _) = setup(&dir.0, 100_000, &[20, 13, 17], 7);
    let mut args = large.clone();
    args.extend(["--sql".into(), sql.into()]);
    let (ok, out_large, err) = concord(&args);
    assert!(ok, "{err}");
    assert!(err.contains("order statistics: domain search over [-100.00, 100.00] (d), 15 steps"), "{err}");
    // Same rows, same answer.
    let (j_small, _) = run(&small, sql, &[]);
    let median = j_small["rows"][0][0].as_f64().unwrap();
    assert!(out_large.contains(&format!("{median}")), "{out_large} vs {median}");
}

#[test]
fn sort_is_refused_when_impossible() {
    let dir = tempdir("refuse");
    let (four, _) = setup(&dir.0, 10, &[3, 3, 3, 3], 9);
    let mut args = four.clone();
    args.extend(["--sql".into(), "SELECT MEDIAN(x) FROM t".into(), "--order-method".into(), "sort".into()]);
    let (ok, _, err) = concord(&args);
    assert!(!ok);
    assert!(err.contains("--order-method sort") && err.contains("4 parties"), "{err}");
    // auto with 4 parties falls back to the search.
    args.truncate(args.len() - 2);
    let (ok, _, err) = concord(&args);
    assert!(ok && err.contains("domain search"), "{err}");
    // Too many padded values to sort.
    let (big, _) = setup(&dir.0, 1_000_000, &[3, 3, 3], 9);
    let mut args = big.clone();
    args.extend(["--sql".into(), "SELECT MIN(x) FROM t".into(), "--order-method".into(), "sort".into()]);
    let (ok, _, err) = concord(&args);
    assert!(!ok && err.contains("lower max_rows"), "{err}");
    // No order statistic to sort.
    let mut args = big.clone();
    args.extend(["--sql".into(), "SELECT COUNT(*) FROM t".into(), "--order-method".into(), "sort".into()]);
    let (ok, _, err) = concord(&args);
    assert!(!ok && err.contains("no MIN, MAX, MEDIAN or PERCENTILE_CONT"), "{err}");
}

#[test]
fn a_party_with_more_rows_than_max_rows_is_refused_by_the_sort() {
    let dir = tempdir("overfull");
    let (base, _) = setup(&dir.0, 2, &[8, 2, 2], 3);
    let mut args = base.clone();
    args.extend(["--sql".into(), "SELECT MAX(x) FROM t".into(), "--order-method".into(), "sort".into()]);
    let (ok, _, err) = concord(&args);
    assert!(!ok);
    assert!(err.contains("max_rows = 2"), "{err}");
}
