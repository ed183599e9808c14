//! Access control through three `concord node` processes, each with its own
//! policy: signed requests (unsigned, unknown analyst, expired, replayed,
//! altered after signing, not covering what would run: all refused), policy
//! denials at one node naming it and its rule (column, function, WHERE
//! column, group size, daily limit), operator approval, rejection and veto
//! (before and during the run), and `concord policy check`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::nodes::{http, init_node, pair_all, query, sessions, start, wait_all_up, wait_until, Node};
use common::{concord, fails, ok, TempDir};

use serde_json::Value as J;

const SCHEMA: &str = "table = \"patients\"\nmax_rows = 100000\n\n[[column]]\nname = \"age\"\ntype = \"int\"\nmin = 0\nmax = 120\n\n[[column]]\nname = \"sex\"\ntype = \"category\"\nvalues = [\"F\", \"M\"]\n\n[[column]]\nname = \"visits\"\ntype = \"int\"\nmin = 0\nmax = 50\n";

/// Researchers may ask anything (nodes a and c).
const OPEN_POLICY: &str = r#"
[[rule]]
name = "researchers"
roles = ["researcher"]
datasets = ["patients"]
columns = ["*"]
functions = ["*"]
where_columns = ["*"]
group_by_columns = ["*"]
"#;

/// Node b: alice may count and average ages by sex in groups of 5 or more, at most 12 times a day;
/// bob may ask anything, each time approved by b's operator.
const STRICT_POLICY: &str = r#"
[[rule]]
name = "alice-ages"
analysts = ["alice"]
datasets = ["patients"]
columns = ["age"]
functions = ["COUNT", "AVG"]
where_columns = ["sex"]
group_by_columns = ["sex"]
min_group_size = 5
max_queries_per_day = 12

[[rule]]
name = "bob-approved"
analysts = ["bob"]
datasets = ["patients"]
columns = ["*"]
functions = ["*"]
where_columns = ["*"]
group_by_columns = ["*"]
require_operator_approval = true
"#;

fn rows(p: usize, n: usize) -> Vec<(i64, &'static str, i64)> {
    (0..n)
        .map(|i| {
            let sex = if (i + p).is_multiple_of(2) { "F" } else { "M" };
            (20 + ((i * 7 + p * 11) % 60) as i64, sex, ((i + 3 * p) % 9) as i64)
        })
        .collect()
}

/// Submit a signed request file as-is (with the fields it signs), for replay and tampering tests.
fn submit_raw(api: &str, signed: &J) -> (u16, J) {
    let r = &signed["request"];
    let body = serde_json::json!({
        "sql": r["sql"], "parties": r["parties"], "dataset": r["dataset"],
        "options": { "order_method": r["options"]["order_method"] },
        "analyst_key": r["recipient"], "analyst": r["analyst"], "request": signed,
    });
    http(api, "POST", "/api/sessions", &body.to_string())
}

fn approvals(api: &str) -> Vec<J> {
    http(api, "GET", "/api/approvals", "").1["approvals"].as_array().cloned().unwrap_or_default()
}

#[test]
fn every_node_checks_signed_requests_against_its_own_policy() {
    let root = TempDir::new("access");
    std::fs::write(root.0.join("schema.toml"), SCHEMA).unwrap();
    let names = ["hospital-a", "hospital-b", "hospital-c"];
    let mut all = Vec::new();
    let (mut dirs, mut apis) = (Vec::new(), Vec::new());
    for (p, name) in names.iter().enumerate() {
        let r = rows(p, 200 + 40 * p);
        let csv: String = std::iter::once("age,sex,visits\n".to_owned())
            .chain(r.iter().map(|(a, s, v)| format!("{a},{s},{v}\n")))
            .collect();
        let file = root.join(&format!("party{p}.csv"));
        std::fs::write(&file, csv).unwrap();
        all.extend(r);
        let dir = root.join(name);
        let api = init_node(&dir, name, |c| c.replace("# policy = \"policy.toml\"", "policy = \"policy.toml\""));
        std::fs::write(format!("{dir}/policy.toml"), if p == 1 { STRICT_POLICY } else { OPEN_POLICY }).unwrap();
        let schema = root.join("schema.toml");
        ok(&concord(&["dataset", "add", "patients", "--file", &file, "--schema", &schema, "--dir", &dir]));
        // The same rows under another name, which no rule covers.
        ok(&concord(&["dataset", "add", "archive", "--file", &file, "--schema", &schema, "--dir", &dir]));
        dirs.push(dir);
        apis.push(api);
    }
    // Analysts: alice and bob registered everywhere; carol nowhere.
    let mut keys = Vec::new();
    for who in ["alice", "bob", "carol"] {
        let path = root.join(&format!("{who}.key"));
        let public = ok(&concord(&["analyst", "new", "--out", &path]));
        assert!(public.trim().starts_with("concord-analyst-v1:"), "{public}");
        if who != "carol" {
            for dir in &dirs {
                ok(&concord(&["analyst", "add", who, public.trim(), "--role", "researcher", "--dir", dir]));
            }
        }
        keys.push(path);
    }
    let err = fails(&concord(&["analyst", "new", "--out", &keys[0]]));
    assert!(err.contains("never overwritten"), "{err}");
    let mut nodes: Vec<Option<Node>> = (0..3).map(|i| Some(start(&dirs[i], &apis[i], &[]))).collect();
    pair_all(&dirs);
    wait_all_up(&apis);
    let parties = names.join(",");
    let alice = ["--analyst", "alice", "--key", &keys[0]];
    let with = |extra: &[&str]| -> Vec<String> { alice.iter().chain(extra).map(|s| s.to_string()).collect() };
    let q = |api: &str, sql: &str, extra: &[String]| {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        query(api, sql, &parties, &extra)
    };
    let count_sessions = || -> Vec<usize> { apis.iter().map(|a| sessions(a).len()).collect() };

    // Refused at the coordinator, nothing created anywhere: unsigned, unknown analyst.
    let before = count_sessions();
    let err = fails(&query(&apis[0], "SELECT COUNT(*) FROM patients", &parties, &[]));
    assert!(err.contains("unsigned_request") && err.contains("hospital-a"), "{err}");
    let err = fails(&q(
        &apis[0],
        "SELECT COUNT(*) FROM patients",
        &["--analyst".into(), "carol".into(), "--key".into(), keys[2].clone()],
    ));
    assert!(err.contains("unknown analyst `carol`"), "{err}");
    assert_eq!(count_sessions(), before);

    // Allowed everywhere (b raises nothing: alice asks for groups of 5 herself).
    let sql = "SELECT sex, COUNT(*), AVG(age) FROM patients GROUP BY sex";
    let out = ok(&q(&apis[0], sql, &with(&["--min-group-size", "5"])));
    let v: J = serde_json::from_str(&out).unwrap();
    for row in v["rows"].as_array().unwrap() {
        let g: Vec<_> = all.iter().filter(|r| r.1 == row[0].as_str().unwrap()).collect();
        assert_eq!(row[1].as_i64().unwrap(), g.len() as i64, "{out}");
    }

    // Denied by b's policy, naming b, the rule and what: group size, column, function, WHERE column.
    for (sql, extra, want) in [
        (sql, vec![], "minimum group size"),
        ("SELECT AVG(visits) FROM patients", vec!["--min-group-size", "5"], "visits"),
        ("SELECT SUM(age) FROM patients", vec!["--min-group-size", "5"], "SUM"),
        ("SELECT COUNT(*) FROM patients WHERE visits > 3", vec!["--min-group-size", "5"], "visits"),
    ] {
        let err = fails(&q(&apis[0], sql, &with(&extra)));
        assert!(err.contains("hospital-b") && err.contains("alice-ages") && err.contains(want), "{sql}: {err}");
    }

    // A dataset no rule covers: refused by the coordinator's own policy, naming it and the dataset.
    let err =
        fails(&q(&apis[0], "SELECT COUNT(*) FROM patients", &with(&["--dataset", "archive", "--min-group-size", "5"])));
    assert!(
        err.contains("hospital-a") && err.contains("rule \"default\"") && err.contains("to query dataset `archive`"),
        "{err}"
    );

    // A signed request file: policy check explains, then replay and tampering are refused.
    let req = root.join("req.json");
    let sql = "SELECT COUNT(*) FROM patients WHERE sex = 'F'";
    ok(&q(&apis[0], sql, &with(&["--min-group-size", "5", "--request-out", &req])));
    let explained = ok(&concord(&["policy", "check", &req, "--dir", &dirs[1]]));
    assert!(explained.contains("alice-ages"), "{explained}");
    let denied = root.join("denied.json");
    ok(&q(&apis[0], "SELECT SUM(visits) FROM patients", &with(&["--request-out", &denied])));
    let err = fails(&concord(&["policy", "check", &denied, "--dir", &dirs[1]]));
    assert!(err.contains("denied") && explained.contains("alice"), "{err}");
    let signed: J = serde_json::from_str(&std::fs::read_to_string(&req).unwrap()).unwrap();
    let (status, v) = submit_raw(&apis[0], &signed);
    assert_eq!(status, 202, "{v}");
    let (status, v) = submit_raw(&apis[0], &signed);
    assert_eq!(status, 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("replayed"), "{v}");
    let mut altered = signed.clone();
    altered["request"]["sql"] = J::from("SELECT COUNT(*) FROM patients WHERE sex = 'M'");
    let (status, v) = submit_raw(&apis[0], &altered);
    assert_eq!(status, 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("bad signature"), "{v}");
    // Signed, but the submission asks for something else than what was signed.
    let fresh = root.join("fresh.json");
    ok(&q(&apis[0], sql, &with(&["--min-group-size", "5", "--request-out", &fresh])));
    let signed: J = serde_json::from_str(&std::fs::read_to_string(&fresh).unwrap()).unwrap();
    let mut body = serde_json::json!({
        "sql": "SELECT COUNT(*) FROM patients", "parties": signed["request"]["parties"], "dataset": "patients",
        "options": {}, "analyst_key": signed["request"]["recipient"], "analyst": "alice", "request": signed,
    });
    let (status, v) = http(&apis[0], "POST", "/api/sessions", &body.to_string());
    assert_eq!(status, 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("the SQL text"), "{v}");
    body["sql"] = signed["request"]["sql"].clone();
    body["analyst"] = J::from("bob");
    let (status, v) = http(&apis[0], "POST", "/api/sessions", &body.to_string());
    assert_eq!(status, 403, "{v}");
    // Expired.
    let short = root.join("short.json");
    ok(&q(&apis[0], sql, &with(&["--min-group-size", "5", "--request-ttl-secs", "1", "--request-out", &short])));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let signed: J = serde_json::from_str(&std::fs::read_to_string(&short).unwrap()).unwrap();
    let (status, v) = submit_raw(&apis[0], &signed);
    assert_eq!(status, 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("expired"), "{v}");
    // Every refusal and decision is in the deciding node's event log (and so in its audit log).
    let (_, page) = common::get(&apis[0], "/");
    assert!(page.contains("request.refused") && page.contains("replayed"), "{page}");
    let (_, page) = common::get(&apis[1], "/");
    assert!(page.contains("policy.decision") && page.contains("alice-ages"), "{page}");

    // Bob needs b's operator: the session waits, is shown with its plan, and runs once approved.
    let bob = ["--analyst", "bob", "--key", &keys[1]];
    let bob_args: Vec<String> = bob.iter().map(|s| s.to_string()).collect();
    let (api0, parties0, args0) = (apis[0].clone(), parties.clone(), bob_args.clone());
    let waiting = std::thread::spawn(move || {
        let extra: Vec<&str> = args0.iter().map(String::as_str).collect();
        query(&api0, "SELECT SUM(visits) FROM patients", &parties0, &extra)
    });
    wait_until("an approval request at b", 30, || !approvals(&apis[1]).is_empty());
    let pending = approvals(&apis[1]);
    let id = pending[0]["id"].as_str().unwrap().to_owned();
    let listed = ok(&concord(&["approvals", "list", "--node", &format!("http://{}", apis[1])]));
    assert!(
        listed.contains(&id) && listed.contains("revealed to the analyst only") && listed.contains("bob"),
        "{listed}"
    );
    ok(&concord(&["approvals", "approve", &id, "--node", &format!("http://{}", apis[1])]));
    let out = ok(&waiting.join().unwrap());
    let v: J = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows"][0][0].as_i64().unwrap(), all.iter().map(|r| r.2).sum::<i64>(), "{out}");
    let err = fails(&concord(&["approvals", "approve", &id, "--node", &format!("http://{}", apis[1])]));
    assert!(err.contains("not waiting"), "{err}");

    // What a web page the operator visits could send (a "simple" cross-origin POST) is refused,
    // on every POST of the API: a veto, an unlock approval, a new session.
    for path in [format!("/api/sessions/{id}/veto"), "/api/unlock-requests/x/approve".into(), "/api/sessions".into()] {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&apis[1]).unwrap();
        let body = "{\"by\": \"evil.example\"}";
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut forged = String::new();
        stream.read_to_string(&mut forged).unwrap();
        assert!(forged.starts_with("HTTP/1.1 415") && forged.contains("json_required"), "{path}: {forged}");
    }

    // Rejected while waiting: ends everywhere with the operator's reason.
    let (api0, parties0, args0) = (apis[0].clone(), parties.clone(), bob_args.clone());
    let waiting = std::thread::spawn(move || {
        let extra: Vec<&str> = args0.iter().map(String::as_str).collect();
        query(&api0, "SELECT SUM(visits) FROM patients", &parties0, &extra)
    });
    wait_until("another approval request at b", 30, || !approvals(&apis[1]).is_empty());
    let id = approvals(&apis[1])[0]["id"].as_str().unwrap().to_owned();
    ok(&concord(&["approvals", "reject", &id, "--reason", "not this week", "--node", &format!("http://{}", apis[1])]));
    let err = fails(&waiting.join().unwrap());
    assert!(err.contains("vetoed by the operator of \"hospital-b\"") && err.contains("not this week"), "{err}");
    for api in &apis {
        wait_until("the veto everywhere", 10, || {
            sessions(api).iter().any(|s| s["id"] == id.as_str() && s["state"] == "cancelled")
        });
    }

    // Vetoed while running, by c's operator (c holds every session for 4 s).
    nodes[2] = None;
    nodes[2] = Some(start(&dirs[2], &apis[2], &[("CONCORD_TEST_SESSION_DELAY_MS", "4000")]));
    wait_until("c up again", 30, || {
        let (_, v) = http(&apis[0], "GET", "/api/peers", "");
        v["peers"].as_array().unwrap().iter().all(|p| p["health"] == "up")
    });
    let (api0, parties0, args0) = (apis[0].clone(), parties.clone(), with(&["--min-group-size", "5"]));
    let running = std::thread::spawn(move || {
        let extra: Vec<&str> = args0.iter().map(String::as_str).collect();
        query(&api0, "SELECT COUNT(*) FROM patients", &parties0, &extra)
    });
    let mut id = String::new();
    wait_until("a running session at c", 30, || {
        let s = sessions(&apis[2]);
        match s.iter().find(|s| s["state"] == "running") {
            Some(s) => {
                id = s["id"].as_str().unwrap().to_owned();
                true
            }
            None => false,
        }
    });
    ok(&concord(&[
        "approvals",
        "veto",
        &id,
        "--reason",
        "consent withdrawn",
        "--node",
        &format!("http://{}", apis[2]),
    ]));
    let err = fails(&running.join().unwrap());
    assert!(err.contains("vetoed") && err.contains("consent withdrawn"), "{err}");
    nodes[2] = None;
    nodes[2] = Some(start(&dirs[2], &apis[2], &[]));
    wait_until("c up once more", 30, || {
        let (_, v) = http(&apis[0], "GET", "/api/peers", "");
        v["peers"].as_array().unwrap().iter().all(|p| p["health"] == "up")
    });

    // Daily limit at b: 12 requests of alice reached b today; the next are refused.
    let mut refused = None;
    for _ in 0..12 {
        let o = q(&apis[0], "SELECT COUNT(*) FROM patients", &with(&["--min-group-size", "5"]));
        if !o.status.success() {
            refused = Some(String::from_utf8_lossy(&o.stderr).into_owned());
            break;
        }
    }
    let err = refused.expect("the daily limit never refused");
    assert!(err.contains("hospital-b") && err.contains("the limit is 12 per day"), "{err}");

    // A revoked analyst is refused.
    ok(&concord(&["analyst", "remove", "alice", "--dir", &dirs[0]]));
    let err = fails(&q(&apis[0], "SELECT COUNT(*) FROM patients", &with(&["--min-group-size", "5"])));
    assert!(err.contains("revoked"), "{err}");
    let list = ok(&concord(&["analyst", "list", "--dir", &dirs[0]]));
    assert!(list.contains("alice") && list.contains("revoked") && list.contains("bob"), "{list}");
}
