//! Three `concord node` processes on 127.0.0.1: pairing by invitation,
//! datasets, queries through `concord query` checked against the plaintext,
//! refusals of bad input (each leaving every store as it was), a node killed
//! mid-session (a clean abort with the reason on the others), its restart
//! (its state recovered) and the next query.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::nodes::{health, http, query, sessions, start, wait_until, Node};
use common::{concord, fails, free_port, ok, TempDir};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value as J;

/// Deterministic rows (age, sex, visits) for party `p`.
fn rows(p: u64, n: usize) -> Vec<(i64, &'static str, i64)> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (p + 1);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let age = 18 + (next() % 83) as i64;
            let sex = if next() % 2 == 0 { "F" } else { "M" };
            (age, sex, (next() % 20) as i64)
        })
        .collect()
}

const SCHEMA: &str = "table = \"patients\"\nmax_rows = 100000\n\n[[column]]\nname = \"age\"\ntype = \"int\"\nmin = 0\nmax = 120\n\n[[column]]\nname = \"sex\"\ntype = \"category\"\nvalues = [\"F\", \"M\"]\n\n[[column]]\nname = \"visits\"\ntype = \"int\"\nmin = 0\nmax = 50\n";

fn write_data(root: &Path, p: u64, n: usize) -> Vec<(i64, &'static str, i64)> {
    let r = rows(p, n);
    let mut csv = String::from("age,sex,visits\n");
    for (a, s, v) in &r {
        csv.push_str(&format!("{a},{s},{v}\n"));
    }
    std::fs::write(root.join(format!("party{p}.csv")), csv).unwrap();
    r
}

#[test]
fn three_nodes_pair_query_survive_a_crash_and_refuse_bad_input() {
    let root = TempDir(std::env::temp_dir().join(format!("concord-cluster-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&root.0);
    std::fs::create_dir_all(&root.0).unwrap();
    std::fs::write(root.0.join("schema.toml"), SCHEMA).unwrap();
    // A schema that differs in one bound, for the mismatch test.
    std::fs::write(root.0.join("other.toml"), SCHEMA.replace("max = 50", "max = 60")).unwrap();
    let names = ["hospital-a", "hospital-b", "hospital-c"];
    let mut all = Vec::new();
    let mut dirs = Vec::new();
    let mut apis = Vec::new();
    for (p, name) in names.iter().enumerate() {
        all.extend(write_data(&root.0, p as u64, 400 + 100 * p));
        let dir = root.0.join(name).to_str().unwrap().to_owned();
        let (api, mpc) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
        ok(&concord(&["init", "--name", name, "--dir", &dir, "--api-listen", &api, "--mpc-listen", &mpc]));
        let config = std::fs::read_to_string(format!("{dir}/concord.toml")).unwrap();
        let config = config
            .replace("heartbeat_period_secs = 5", "heartbeat_period_secs = 1")
            .replace("heartbeat_timeout_secs = 20", "heartbeat_timeout_secs = 3");
        std::fs::write(format!("{dir}/concord.toml"), config).unwrap();
        let file = root.0.join(format!("party{p}.csv"));
        let schema = root.0.join(if p == 2 { "other.toml" } else { "schema.toml" });
        ok(&concord(&[
            "dataset",
            "add",
            "patients",
            "--file",
            file.to_str().unwrap(),
            "--schema",
            root.0.join("schema.toml").to_str().unwrap(),
            "--dir",
            &dir,
        ]));
        ok(&concord(&[
            "dataset",
            "add",
            "other",
            "--file",
            file.to_str().unwrap(),
            "--schema",
            schema.to_str().unwrap(),
            "--dir",
            &dir,
        ]));
        dirs.push(dir);
        apis.push(api);
    }
    let mut nodes: Vec<Option<Node>> = (0..3).map(|i| Some(start(&dirs[i], &apis[i], &[]))).collect();

    // Pairing: a-b, a-c, b-c.
    for (inviter, joiner) in [(0, 1), (0, 2), (1, 2)] {
        let inv = ok(&concord(&["peer", "invite", "--dir", &dirs[inviter]]));
        ok(&concord(&["peer", "join", inv.trim(), "--dir", &dirs[joiner]]));
    }
    wait_until("every peer up", 30, || {
        (0..3).all(|i| (0..3).filter(|&j| j != i).all(|j| health(&apis[i], names[j]) == "up"))
    });
    let list = ok(&concord(&["peer", "list", "--dir", &dirs[0]]));
    assert!(list.contains("hospital-b") && list.contains(" up "), "{list}");

    // Queries through the nodes, against the plaintext.
    let parties = names.join(",");
    let out =
        ok(&query(&apis[0], "SELECT sex, COUNT(*), SUM(visits), AVG(age) FROM patients GROUP BY sex", &parties, &[]));
    let v: J = serde_json::from_str(&out).unwrap();
    for row in v["rows"].as_array().unwrap() {
        let sex = row[0].as_str().unwrap();
        let group: Vec<_> = all.iter().filter(|r| r.1 == sex).collect();
        assert_eq!(row[1].as_i64().unwrap(), group.len() as i64, "{out}");
        assert_eq!(row[2].as_i64().unwrap(), group.iter().map(|r| r.2).sum::<i64>(), "{out}");
        let mean = group.iter().map(|r| r.0 as f64).sum::<f64>() / group.len() as f64;
        assert!((row[3].as_f64().unwrap() - mean).abs() < 1e-9, "{out} vs {mean}");
    }
    assert_eq!(v["stats"]["parties"], 3);
    // Another coordinator, an order statistic.
    let out = ok(&query(&apis[1], "SELECT MEDIAN(age) FROM patients", &parties, &[]));
    let v: J = serde_json::from_str(&out).unwrap();
    let mut ages: Vec<i64> = all.iter().map(|r| r.0).collect();
    ages.sort_unstable();
    let m = ages.len() / 2;
    let median = if ages.len().is_multiple_of(2) { (ages[m - 1] + ages[m]) as f64 / 2.0 } else { ages[m] as f64 };
    assert_eq!(v["rows"][0][0].as_f64().unwrap(), median, "{out}");
    // Every node recorded the session as done.
    let id = sessions(&apis[1])[0]["id"].as_str().unwrap().to_owned();
    for api in &apis {
        let s = sessions(api);
        assert_eq!(s[0]["id"], id.as_str());
        assert_eq!(s[0]["state"], "done", "{s:?}");
    }

    // Bad input: precise errors, no session created anywhere.
    let before: Vec<usize> = apis.iter().map(|a| sessions(a).len()).collect();
    let err = fails(&query(&apis[0], "SELECT COUNT(*) FROM patients", &parties, &["--dataset", "nope"]));
    assert!(err.contains("unknown_dataset") && err.contains("nope"), "{err}");
    let err = fails(&query(&apis[0], "SELECT COUNT(*) FROM patients", &parties, &["--dataset", "other"]));
    assert!(err.contains("schema_mismatch") && err.contains("hospital-c") && err.contains("max = 60"), "{err}");
    let err = fails(&query(&apis[0], "SELECT COUNT(*) FROM patients", "hospital-a,hospital-x", &[]));
    assert!(err.contains("unknown_peer") && err.contains("hospital-x"), "{err}");
    let err = fails(&query(&apis[0], "SELECT COUNT(nope) FROM patients", &parties, &[]));
    assert!(err.contains("invalid_query") && err.contains("nope"), "{err}");
    let (status, v) = http(&apis[0], "POST", "/api/sessions", "{\"sql\": 1}");
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("bad_request")), "{v}");
    let (status, v) = http(&apis[0], "POST", "/api/sessions", "not json");
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("bad_request")), "{v}");
    let (status, v) = http(&apis[0], "GET", "/api/sessions/0123", "");
    assert_eq!((status, v["error"]["code"].as_str()), (404, Some("unknown_session")), "{v}");
    let after: Vec<usize> = apis.iter().map(|a| sessions(a).len()).collect();
    assert_eq!(before, after, "a refused request created a session");
    // The coordinator's log has each refusal with its code.
    let log = std::fs::read_to_string(format!("{}.log", dirs[0])).unwrap();
    for code in
        ["unknown_dataset", "schema_mismatch", "unknown_peer", "invalid_query", "bad_request", "unknown_session"]
    {
        assert!(log.contains("API request refused") && log.contains(code), "{code} is not in the log:\n{log}");
    }

    // A node killed during a session: a clean abort, with the reason, everywhere else.
    drop(nodes[2].take());
    nodes[2] = Some(start(&dirs[2], &apis[2], &[("CONCORD_TEST_SESSION_DELAY_MS", "4000")]));
    wait_until("hospital-c up again", 30, || health(&apis[0], names[2]) == "up" && health(&apis[1], names[2]) == "up");
    let node = format!("http://{}", apis[0]);
    let slow = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["query", "--node", &node, "--sql", "SELECT COUNT(*) FROM patients", "--parties", &parties])
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("hospital-c connected in the session", 30, || {
        sessions(&apis[0]).first().is_some_and(|s| {
            s["progress"].as_array().unwrap().iter().any(|p| p["party"] == "hospital-c" && p["phase"] == "connected")
        })
    });
    let killed_id = sessions(&apis[2])[0]["id"].as_str().unwrap().to_owned();
    let mut victim = nodes[2].take().unwrap();
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let out = slow.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("session {killed_id} failed")) && err.contains("hospital-c"), "{err}");
    for api in &apis[..2] {
        wait_until("the abort recorded", 30, || {
            sessions(api).iter().any(|s| s["id"] == killed_id.as_str() && s["state"] == "failed")
        });
        let s = sessions(api).into_iter().find(|s| s["id"] == killed_id.as_str()).unwrap();
        assert!(s["reason"].as_str().unwrap().contains("hospital-c"), "{s}");
    }
    wait_until("hospital-c marked down", 30, || health(&apis[0], names[2]) == "down");
    let err = fails(&query(&apis[0], "SELECT COUNT(*) FROM patients", &parties, &[]));
    assert!(err.contains("peer_down") && err.contains("hospital-c"), "{err}");

    // Restart: it recovers its peers, datasets and session history, and the next query runs.
    nodes[2] = Some(start(&victim.dir, &victim.api, &[]));
    drop(victim);
    let s = sessions(&apis[2]).into_iter().find(|s| s["id"] == killed_id.as_str()).unwrap();
    assert_eq!(s["state"], "failed");
    assert!(s["reason"].as_str().unwrap().contains("restarted"), "{s}");
    assert!(sessions(&apis[2]).iter().any(|s| s["id"] == id.as_str() && s["state"] == "done"));
    wait_until("hospital-c up after restart", 30, || health(&apis[0], names[2]) == "up");
    let out = ok(&query(&apis[2], "SELECT COUNT(*) FROM patients", &parties, &[]));
    let v: J = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows"][0][0].as_i64().unwrap(), all.len() as i64, "{out}");

    // Several sessions at once, from two coordinators.
    let spawn_query = |api: &str, sql: &str| {
        let node = format!("http://{api}");
        Command::new(env!("CARGO_BIN_EXE_concord"))
            .args(["query", "--node", &node, "--sql", sql, "--parties", &parties, "--format", "json"])
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let q1 = spawn_query(&apis[0], "SELECT SUM(visits) FROM patients");
    let q2 = spawn_query(&apis[1], "SELECT COUNT(*) FROM patients WHERE age > 50");
    let q3 = spawn_query(&apis[2], "SELECT MAX(age) FROM patients");
    let answer = |q: Child| {
        let out = q.wait_with_output().unwrap();
        let v: J = serde_json::from_str(&ok(&out)).unwrap();
        v["rows"][0][0].as_f64().unwrap()
    };
    assert_eq!(answer(q1), all.iter().map(|r| r.2).sum::<i64>() as f64);
    assert_eq!(answer(q2), all.iter().filter(|r| r.0 > 50).count() as f64);
    assert_eq!(answer(q3), all.iter().map(|r| r.0).max().unwrap() as f64);

    // hospital-c moves to another peer port: its signed announcement updates its peers.
    let c = nodes[2].take().unwrap();
    let term = |n: &Node| {
        let pid = n.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    };
    term(&c);
    let mut c = c;
    assert!(c.child.wait().unwrap().success(), "graceful shutdown exits with success");
    let new_mpc = format!("127.0.0.1:{}", free_port());
    let config = std::fs::read_to_string(format!("{}/concord.toml", c.dir)).unwrap();
    let old_mpc = config.lines().find(|l| l.starts_with("mpc_listen")).unwrap().to_owned();
    std::fs::write(format!("{}/concord.toml", c.dir), config.replace(&old_mpc, &format!("mpc_listen = \"{new_mpc}\"")))
        .unwrap();
    nodes[2] = Some(start(&c.dir, &c.api, &[("CONCORD_TEST_SESSION_DELAY_MS", "3000")]));
    drop(c);
    for api in &apis[..2] {
        wait_until("the new address announced", 30, || {
            let (_, v) = http(api, "GET", "/api/peers", "");
            v["peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "hospital-c" && p["mpc_address"] == new_mpc.as_str() && p["health"] == "up")
        });
    }

    // The analyst cancels a running session: cancelled everywhere, with the reason.
    let slow = spawn_query(&apis[0], "SELECT COUNT(*) FROM patients");
    let connected = |api: &str| {
        wait_until("hospital-c connected in the session", 30, || {
            sessions(api).first().is_some_and(|s| {
                s["state"] == "running"
                    && s["progress"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["party"] == "hospital-c" && p["phase"] == "connected")
            })
        });
        sessions(api)[0]["id"].as_str().unwrap().to_owned()
    };
    let cancelled = connected(&apis[0]);
    let (status, v) =
        http(&apis[0], "POST", &format!("/api/sessions/{cancelled}/cancel"), "{\"reason\": \"wrong query\"}");
    assert_eq!(status, 200, "{v}");
    let out = slow.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cancelled") && err.contains("wrong query"), "{err}");
    for api in &apis {
        wait_until("the cancellation recorded", 30, || {
            sessions(api).iter().any(|s| s["id"] == cancelled.as_str() && s["state"] == "cancelled")
        });
    }
    let (status, v) = http(&apis[0], "POST", &format!("/api/sessions/{cancelled}/cancel"), "");
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("session_finished")), "{v}");

    // A graceful shutdown during a session ends it cleanly everywhere, saying why.
    let slow = spawn_query(&apis[0], "SELECT COUNT(*) FROM patients");
    let stopped = connected(&apis[0]);
    let mut c = nodes[2].take().unwrap();
    term(&c);
    assert!(c.child.wait().unwrap().success());
    let out = slow.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("hospital-c") && err.contains("shut down"), "{err}");
    for api in &apis[..2] {
        wait_until("the shutdown recorded", 30, || {
            sessions(api).iter().any(|s| s["id"] == stopped.as_str() && s["state"] == "failed")
        });
    }
    nodes[2] = Some(start(&c.dir, &c.api, &[]));
    drop(c);
    let s = sessions(&apis[2]).into_iter().find(|s| s["id"] == stopped.as_str()).unwrap();
    assert!(s["reason"].as_str().unwrap().contains("shut down"), "{s}");

    // Metrics count the sessions by state.
    let mut metrics = String::new();
    let mut stream = TcpStream::connect(&apis[0]).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    stream.read_to_string(&mut metrics).unwrap();
    assert!(metrics.contains("concord_sessions{state=\"failed\"} 2"), "{metrics}");
    assert!(metrics.contains("concord_sessions{state=\"cancelled\"} 1"), "{metrics}");
    assert!(metrics.contains("concord_heartbeat_misses_total{peer=\"hospital-c\"}"), "{metrics}");
    let sent_to_b = metrics
        .lines()
        .find_map(|l| l.strip_prefix("concord_mpc_peer_bytes_sent_total{peer=\"hospital-b\"} "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(sent_to_b.is_some_and(|n| n > 0), "{metrics}");

    // A revoked peer can no longer take part.
    ok(&concord(&["peer", "remove", "hospital-c", "--dir", &dirs[0]]));
    let err = fails(&query(&apis[0], "SELECT COUNT(*) FROM patients", &parties, &[]));
    assert!(err.contains("revoked_peer") && err.contains("hospital-c"), "{err}");
    assert!(ok(&concord(&["peer", "list", "--dir", &dirs[0]])).contains("revoked"));
    // The running node enforces it: hospital-a now refuses hospital-c's connections.
    wait_until("hospital-a refusing hospital-c", 30, || health(&apis[2], names[0]) != "up");
    drop(nodes);
}
