//! `concord demo` end to end: three parties over loopback TLS agree with the plaintext.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

/// The two numbers of a `label   MPC   plaintext  match` line, thousands separators removed.
fn figures(stdout: &str, label: &str) -> (i64, i64) {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{stdout}"));
    let nums: Vec<i64> = line[line.find(label).unwrap() + label.len()..]
        .split_whitespace()
        .filter_map(|w| w.replace(',', "").parse().ok())
        .collect();
    assert_eq!(nums.len(), 2, "expected MPC and plaintext figures in {line:?}");
    assert!(line.trim_end().ends_with("match") && !line.contains("MISMATCH"), "{line:?}");
    (nums[0], nums[1])
}

#[test]
fn demo_matches_the_plaintext() {
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_concord")).arg("demo").output().expect("run concord demo");
    let elapsed = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "concord demo failed:\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("all results match the plaintext: yes"), "{stdout}");
    assert!(!stdout.contains("MISMATCH"), "{stdout}");

    let (mpc, plain) = figures(&stdout, "patients");
    assert_eq!(mpc, plain);
    assert!((29_000..=31_000).contains(&mpc), "pooled count {mpc}");
    for label in ["sum of ages", "diabetic patients", "sum of systolic BP", "yearly cost at tariff"] {
        let (mpc, plain) = figures(&stdout, label);
        assert_eq!(mpc, plain, "{label}");
    }
    assert!(stdout.contains("St Mary's share"), "{stdout}");
    assert!(elapsed < Duration::from_secs(60), "demo took {elapsed:?}");
}
