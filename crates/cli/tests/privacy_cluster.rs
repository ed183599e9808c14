//! Differential privacy through three `concord node` processes: noisy
//! answers with their accuracy, per-analyst budgets enforced by every node
//! (refusal naming the node and what is left, refund of a query that never
//! started, persistence across a restart, concurrent queries of which only
//! the admissible run), and a node that requires noise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::nodes::{http, init_node, pair_all, query, sessions, start, wait_all_up, wait_until, Node};
use common::{concord, fails, ok, TempDir};

use serde_json::Value as J;

const SCHEMA: &str = "table = \"patients\"\nmax_rows = 100000\n\n[[column]]\nname = \"age\"\ntype = \"int\"\nmin = 0\nmax = 120\n\n[[column]]\nname = \"sex\"\ntype = \"category\"\nvalues = [\"F\", \"M\"]\n";

/// Rows (age, sex) of party `p`: deterministic.
fn rows(p: usize, n: usize) -> Vec<(i64, &'static str)> {
    (0..n).map(|i| (20 + ((i * 7 + p * 13) % 60) as i64, if (i + p).is_multiple_of(3) { "F" } else { "M" })).collect()
}

/// What node `api` says analyst `who` has spent on `patients`.
fn spent(api: &str, who: &str) -> f64 {
    let (_, v) = http(api, "GET", "/api/budgets", "");
    v["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["analyst"] == who && b["dataset"] == "patients")
        .map_or(0.0, |b| b["spent_rho"].as_f64().unwrap())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn private_queries_through_nodes_spend_and_enforce_budgets() {
    let root = TempDir::new("privacy-cluster");
    std::fs::write(root.0.join("schema.toml"), SCHEMA).unwrap();
    let names = ["hospital-a", "hospital-b", "hospital-c"];
    // Budgets: 0.3 on a and c, 0.2 on b; c refuses queries without noise.
    let budgets = [0.3, 0.2, 0.3];
    let mut all = Vec::new();
    let mut dirs = Vec::new();
    let mut apis = Vec::new();
    for (p, name) in names.iter().enumerate() {
        let r = rows(p, 300 + 50 * p);
        let csv: String =
            std::iter::once("age,sex\n".to_owned()).chain(r.iter().map(|(a, s)| format!("{a},{s}\n"))).collect();
        let file = root.join(&format!("party{p}.csv"));
        std::fs::write(&file, csv).unwrap();
        all.extend(r);
        let dir = root.join(name);
        let api = init_node(&dir, name, |c| {
            let c = c.replace("budget_rho = 1.0", &format!("budget_rho = {}", budgets[p]));
            if p == 2 {
                c.replace("require = false", "require = true")
            } else {
                c
            }
        });
        ok(&concord(&[
            "dataset",
            "add",
            "patients",
            "--file",
            &file,
            "--schema",
            &root.join("schema.toml"),
            "--dir",
            &dir,
        ]));
        dirs.push(dir);
        apis.push(api);
    }
    let mut nodes: Vec<Option<Node>> = (0..3).map(|i| Some(start(&dirs[i], &apis[i], &[]))).collect();
    pair_all(&dirs);
    wait_all_up(&apis);
    let parties = names.join(",");
    let n = all.len() as f64;

    // A node that requires noise refuses a query without it, and says so.
    let err = fails(&query(&apis[0], "SELECT COUNT(*) FROM patients", &parties, &["--analyst", "alice"]));
    assert!(err.contains("hospital-c") && err.contains("requires differential privacy"), "{err}");

    // A private COUNT: epsilon 0.5 costs rho 0.125 on every node.
    let out =
        ok(&query(&apis[0], "SELECT COUNT(*) FROM patients", &parties, &["--analyst", "alice", "--epsilon", "0.5"]));
    let v: J = serde_json::from_str(&out).unwrap();
    let count = v["rows"][0][0].as_f64().unwrap();
    let cell = &v["privacy"]["cells"][0];
    let sd = cell["noise_sd"].as_f64().unwrap();
    // Three parties' discrete Laplace(2) samples: sd = sqrt(3 * 2q/(1-q)^2), q = exp(-1/2).
    let q = (-0.5f64).exp();
    assert!((sd - (3.0 * 2.0 * q / ((1.0 - q) * (1.0 - q))).sqrt()).abs() < 1e-9, "{out}");
    assert!((count - n).abs() < 12.0 * sd, "{count} vs {n}: {out}");
    let (lo, hi) = (cell["ci95"][0].as_f64().unwrap(), cell["ci95"][1].as_f64().unwrap());
    assert!(lo < count && count < hi && hi - lo > 2.0 * sd, "{out}");
    assert!(close(v["privacy"]["rho"].as_f64().unwrap(), 0.125), "{out}");
    for api in &apis {
        assert!(close(spent(api, "alice"), 0.125), "{api}");
    }

    // A private GROUP BY mean for another analyst (its own budget): within a few noise scales.
    let sql = "SELECT sex, AVG(age) FROM patients GROUP BY sex WITH PRIVACY (epsilon = 0.8)";
    let out = ok(&query(&apis[1], sql, &parties, &["--analyst", "bob"]));
    let v: J = serde_json::from_str(&out).unwrap();
    for (g, row) in v["rows"].as_array().unwrap().iter().enumerate() {
        let sex = row[0].as_str().unwrap();
        let ages: Vec<f64> = all.iter().filter(|r| r.1 == sex).map(|r| r.0 as f64).collect();
        let mean = ages.iter().sum::<f64>() / ages.len() as f64;
        let cell = v["privacy"]["cells"].as_array().unwrap().iter().find(|c| c["row"] == g).unwrap();
        let sd = cell["noise_sd"].as_f64().unwrap();
        assert!((row[1].as_f64().unwrap() - mean).abs() < 10.0 * sd, "{sex}: {mean} vs {out}");
    }
    assert!(close(spent(&apis[2], "bob"), 0.16)); // 0.8^2 / (2 x 2 releases).

    // Alice's second COUNT fits a (0.25 of 0.3) but not b (0.2): b refuses, naming
    // what is left; a and c give back what they charged for the query that never started.
    let err =
        fails(&query(&apis[0], "SELECT COUNT(*) FROM patients", &parties, &["--analyst", "alice", "--epsilon", "0.5"]));
    assert!(err.contains("budget_exceeded") && err.contains("hospital-b") && err.contains("0.075000 left"), "{err}");
    wait_until("refunds", 10, || apis.iter().all(|a| close(spent(a, "alice"), 0.125)));

    // Budgets survive a restart of the refusing node.
    nodes[1] = None;
    nodes[1] = Some(start(&dirs[1], &apis[1], &[]));
    assert!(close(spent(&apis[1], "alice"), 0.125));
    wait_until("b up again", 30, || {
        let (_, v) = http(&apis[0], "GET", "/api/peers", "");
        v["peers"].as_array().unwrap().iter().all(|p| p["health"] == "up")
    });
    let err =
        fails(&query(&apis[0], "SELECT COUNT(*) FROM patients", &parties, &["--analyst", "alice", "--epsilon", "0.5"]));
    assert!(err.contains("budget_exceeded") && err.contains("hospital-b"), "{err}");

    // Four concurrent queries of rho 0.08 for carol: b (0.2) admits two, a and c (0.3)
    // three: exactly two run, the others are refused, and no node overspends.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (api, parties) = (apis[0].clone(), parties.clone());
            std::thread::spawn(move || {
                query(&api, "SELECT COUNT(*) FROM patients", &parties, &["--analyst", "carol", "--epsilon", "0.4"])
            })
        })
        .collect();
    let outs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let done = outs.iter().filter(|o| o.status.success()).count();
    for o in outs.iter().filter(|o| !o.status.success()) {
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("budget_exceeded"), "{e}");
    }
    assert_eq!(done, 2, "{outs:?}");
    wait_until("settled budgets", 10, || close(spent(&apis[1], "carol"), 0.16));
    for (api, budget) in apis.iter().zip(budgets) {
        assert!(spent(api, "carol") <= budget + 1e-12, "{api}");
    }
    let done_here = sessions(&apis[1]).iter().filter(|s| s["state"] == "done").count();
    assert!(done_here >= 4, "{done_here}");

    // b's operator raises alice's budget on b: the refused query now runs.
    let set = ok(&concord(&[
        "budget",
        "set",
        "--analyst",
        "alice",
        "--dataset",
        "patients",
        "--rho",
        "0.5",
        "--dir",
        &dirs[1],
    ]));
    assert!(set.contains("0.375000 left"), "{set}");
    ok(&query(&apis[0], "SELECT COUNT(*) FROM patients", &parties, &["--analyst", "alice", "--epsilon", "0.5"]));
    let list = ok(&concord(&["budget", "list", "--dir", &dirs[1]]));
    assert!(list.contains("alice") && list.contains("0.250000") && list.contains("0.500000"), "{list}");
    let err = fails(&concord(&[
        "budget",
        "set",
        "--analyst",
        "alice",
        "--dataset",
        "patients",
        "--rho=-1",
        "--dir",
        &dirs[1],
    ]));
    assert!(err.contains("a budget must be a number >= 0"), "{err}");

    // What is refused is refused before anything runs: a query DP cannot cover.
    let err = fails(&query(&apis[0], "SELECT MEDIAN(age) FROM patients", &parties, &["--epsilon", "1"]));
    assert!(err.contains("MEDIAN(age) is not supported"), "{err}");

    // The dashboard lists the budgets.
    let (status, page) = common::get(&apis[1], "/");
    assert_eq!(status, 200);
    assert!(page.contains("Privacy budgets") && page.contains("carol") && page.contains("alice"), "{page}");
}
