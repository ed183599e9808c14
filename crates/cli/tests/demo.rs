//! `concord demo` runs on its built-in data and every MPC answer matches the plaintext.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn demo_runs_and_matches_the_plaintext() {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_concord")).arg("demo").output().expect("run concord demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(stdout.contains("all results match the plaintext: yes"), "{stdout}");
    // Seven exact queries and one differentially private one, each with its SQL shown;
    // the seventh needs secure comparisons.
    assert_eq!(stdout.matches("   SELECT ").count(), 8, "{stdout}");
    assert!(stdout.contains("WITH PRIVACY (epsilon = 1)") && stdout.contains("pure 1-DP"), "{stdout}");
    assert_eq!(stdout.matches("95% CI [").count(), 4, "{stdout}");
    assert!(stdout.contains("MEDIAN(age)") && stdout.contains("over M127"), "{stdout}");
    assert!(!stdout.contains("DIFFERS"), "{stdout}");
    let matches = stdout.matches(" match").count();
    assert!(matches >= 15, "expected at least 15 compared values, got {matches}:\n{stdout}");
    // The pooled patient count is the sum of the three tables.
    assert!(stdout.contains("MPC 30120"), "{stdout}");
    // What a party received is shown, and it is not a small plaintext number.
    assert!(stdout.contains("What riverside actually received"), "{stdout}");
}
