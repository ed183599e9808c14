//! `concord bench` end to end: parties as separate processes over loopback TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

fn concord(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_concord")).args(args).output().expect("run concord");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn bench_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.push("--json");
    let (ok, stdout, stderr) = concord(&all);
    assert!(ok, "concord {all:?} failed:\n{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn mul_over_tls_processes_reports_the_theoretical_cost() {
    let n = 20_000u64;
    let v = bench_json(&["mul", "--size", "20000", "--transport", "tls"]);
    for key in [
        "workload",
        "size",
        "parties",
        "threshold",
        "transport",
        "setup_seconds",
        "online_seconds",
        "wall_seconds",
        "ops_per_second",
        "rounds",
        "bytes_sent_per_party",
        "peak_rss_bytes",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["correct"], true);
    assert_eq!(v["transport"], "tls");
    assert_eq!(v["rounds"], 2, "one round to multiply, one to open");
    // Shamir n=3, t=1: 8 bytes to reshare + 8 to open per product, plus an
    // 8-byte header per batch of 2^16 elements in each of the two rounds.
    assert_eq!(v["bytes_sent_per_party"], 16 * n + 2 * 8);
    let big = bench_json(&["mul", "--size", "200000", "--transport", "sim"]);
    assert_eq!(big["bytes_sent_per_party"], 16 * 200_000 + 2 * 8 * 4);
    assert!(v["peak_rss_bytes"].as_u64().unwrap_or(0) > 0);
    let online = v["online_seconds"].as_f64().unwrap_or(0.0);
    let ops = v["ops_per_second"].as_f64().unwrap_or(0.0);
    assert!((ops * online - n as f64).abs() < 1.0, "ops_per_second = size / online_seconds");
    assert!(v["wire_bytes_sent_per_party"].as_u64().unwrap_or(0) > v["bytes_sent_per_party"].as_u64().unwrap_or(0));
}

#[test]
fn other_workloads_domains_and_party_counts_over_tls() {
    let v = bench_json(&["sum", "--size", "1000", "--parties", "5", "--threshold", "2", "--domain", "m127"]);
    assert_eq!((v["correct"].clone(), v["rounds"].clone(), v["threshold"].clone()), (true.into(), 1.into(), 2.into()));
    // Opening with t = 2 sends 2 shares of 16 bytes per element.
    assert_eq!(v["bytes_sent_per_party"], 2 * (16 * 1000 + 8));
    let v = bench_json(&["mul", "--size", "3000", "--domain", "z64"]);
    assert_eq!(v["correct"], true);
    assert_eq!(v["scheme"], "additive");
    // Beaver: 2(n-1) elements to open d, e, then (n-1) to open the product.
    assert_eq!(v["bytes_sent_per_party"], 2 * (2 * 3000 * 8 + 8) + 2 * (3000 * 8 + 8));
    let v = bench_json(&["inner-product", "--size", "5000", "--parties", "7", "--threshold", "3"]);
    assert_eq!(v["correct"], true);
    let v = bench_json(&["open", "--size", "100", "--parties", "2", "--domain", "z64"]);
    assert_eq!(v["correct"], true);
}

#[test]
fn simulated_latency_shows_in_the_online_time() {
    let v = bench_json(&["mul", "--size", "1000", "--transport", "sim", "--latency-ms", "25", "--loss", "0.01"]);
    assert_eq!(v["correct"], true);
    let online = v["online_seconds"].as_f64().unwrap_or(0.0);
    assert!(online >= 0.05, "two rounds over 25 ms links take at least 50 ms, got {online}");
    let fast = bench_json(&["mul", "--size", "1000", "--transport", "sim"]);
    assert!(fast["online_seconds"].as_f64().unwrap_or(1.0) < online);
}

#[test]
fn a_crashed_party_gives_a_clean_failure_naming_it() {
    let started = Instant::now();
    let (ok, _, stderr) = concord(&[
        "bench",
        "mul",
        "--size",
        "1000",
        "--transport",
        "tls",
        "--timeout-secs",
        "10",
        "--crash-party",
        "2",
    ]);
    assert!(!ok);
    assert!(started.elapsed() < Duration::from_secs(30), "no hang");
    assert!(stderr.contains("party 2"), "the error names the crashed party:\n{stderr}");
    // The surviving parties report their own clean errors about party 2.
    assert!(stderr.contains("party 0: ") || stderr.contains("party 1: "), "{stderr}");
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    for (args, needle) in [
        (vec!["bench", "mul", "--parties", "3", "--threshold", "2"], "n >= 2t + 1"),
        (vec!["bench", "mul", "--latency-ms", "5"], "--transport sim"),
        (vec!["bench", "mul", "--size", "0"], "--size"),
        (vec!["bench", "mul", "--domain", "z64", "--scheme", "shamir"], "field"),
        (vec!["bench", "mul", "--transport", "sim", "--loss", "0.95"], "--loss"),
        (vec!["bench", "mul", "--parties", "1"], "--parties"),
        (vec!["bench", "cmp", "--parties", "4"], "exactly 3 parties"),
        (vec!["bench", "min", "--scheme", "shamir"], "replicated engine"),
        (vec!["bench", "eq", "--domain", "m61"], "z64"),
        (vec!["bench", "median", "--threshold", "2"], "threshold is 1"),
    ] {
        let (ok, _, stderr) = concord(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(stderr.contains(needle), "{args:?}: expected {needle:?} in:\n{stderr}");
    }
}

#[test]
fn comparison_workloads_on_the_replicated_engine_over_tls() {
    // x < y of 32-bit values: the sign of x - y on 33 bits, 7 AND rounds and
    // 118 AND bits per comparison, then one round to open the bits.
    let v = bench_json(&["cmp", "--size", "3000"]);
    assert_eq!(v["correct"], true);
    assert_eq!(v["scheme"], "rep3");
    assert_eq!(v["domain"], "z64");
    assert_eq!(v["rounds"], 8);
    let words = 3000u64.div_ceil(64);
    assert_eq!(v["bytes_sent_per_party"], 118 * words * 8 + words * 8 + 8 * 8);
    let v = bench_json(&["eq", "--size", "1000"]);
    assert_eq!(v["correct"], true);
    assert!(v["rounds"].as_u64().unwrap() <= 8);
    // Min and max: a tree of ceil(log2 n) levels, daBits counted as preprocessing.
    for w in ["min", "max"] {
        let v = bench_json(&[w, "--size", "1000"]);
        assert_eq!(v["correct"], true, "{w}");
        assert_eq!(v["preprocessing_rounds"], 2, "{w}");
        assert!(v["preprocessing_bytes_sent_per_party"].as_u64().unwrap() > 0);
        assert_eq!(v["rounds"].as_u64().unwrap(), 10 * 9 + 1, "{w}: 10 levels of 9 rounds, then the opening");
    }
    let v = bench_json(&["median", "--size", "1001"]);
    assert_eq!(v["correct"], true);
    let v = bench_json(&["median", "--size", "64", "--transport", "sim"]);
    assert_eq!(v["correct"], true);
    // Fixed-point division and square root, within their documented error bound.
    for w in ["div", "sqrt"] {
        let v = bench_json(&[w, "--size", "300", "--transport", "sim"]);
        assert_eq!(v["correct"], true, "{w}");
    }
}

#[test]
fn bench_dp_writes_table_and_plot() {
    let out = std::env::temp_dir().join(format!("concord-bench-dp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["bench", "dp", "--runs", "30", "--rows", "3000", "--epsilons", "0.5,1", "--party-counts", "3"])
        .arg("--out")
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        let (avg, worst) = (r["average_accuracy"].as_f64().unwrap(), r["worst_case_accuracy"].as_f64().unwrap());
        // Eq. (10) is a minimum over inputs that include eq. (9)'s.
        assert!(worst <= avg && avg <= 1.0 && worst >= 0.0, "{r}");
        // 3,000 values in [0, 120] at epsilon >= 0.5: the mean is within a fraction of a percent.
        assert!(avg > 0.99, "{r}");
        assert_eq!(r["worst_case_input"], "low", "relative error is largest where the mean is smallest: {r}");
    }
    let csv = std::fs::read_to_string(out.join("dp.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let png = std::fs::read(out.join("dp.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 100_000, "{} bytes", png.len());
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["bench", "dp", "--epsilons", "0,1"])
        .output()
        .unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--epsilons"));
    let _ = std::fs::remove_dir_all(&out);
}
