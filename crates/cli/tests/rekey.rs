//! Consortium key refresh and repair through three `concord node` processes:
//! a refresh that fails at its last round (one member's stored group key is
//! corrupted) replaces nobody's share; a 2-of-3 consortium is refreshed (same
//! group key on every member, new shares in every store, a result signed
//! afterwards verifies offline under the same key); a refresh is refused
//! while a member is down; a member is
//! replaced by a fresh node with the same name, re-paired, and its share is
//! rebuilt by two helpers (refused under a wrong group key), after which it
//! signs results again, and a refresh makes the replaced node's old share
//! useless.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::nodes::{http, init_node, pair_all, query, sessions, start, wait_all_up, wait_until, Node};
use common::{concord, fails, ok, TempDir};

use serde_json::Value as J;

const SCHEMA: &str =
    "table = \"patients\"\nmax_rows = 100000\n\n[[column]]\nname = \"age\"\ntype = \"int\"\nmin = 0\nmax = 120\n";

fn consortium(api: &str, name: &str) -> J {
    let list = http(api, "GET", "/api/consortia", "").1["consortia"].as_array().unwrap().clone();
    list.into_iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no consortium {name} on {api}"))
}

fn db(dir: &str) -> rusqlite::Connection {
    rusqlite::Connection::open(format!("{dir}/data/concord.db")).unwrap()
}

/// The stored (secret) key share of consortium `name` in node `dir`'s store.
fn share(dir: &str, name: &str) -> String {
    db(dir).query_row("SELECT secret FROM consortium_key_shares WHERE consortium = ?1", [name], |r| r.get(0)).unwrap()
}

/// The messages of node `dir`'s events of kind `kind`.
fn events(dir: &str, kind: &str) -> Vec<String> {
    let conn = db(dir);
    let mut stmt = conn.prepare("SELECT message FROM events WHERE kind = ?1 ORDER BY id").unwrap();
    stmt.query_map([kind], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

/// `concord verify FILE --group-key KEY`: (success, stdout + stderr).
fn verify(file: &str, key: &str) -> (bool, String) {
    let out = concord(&["verify", file, "--group-key", key]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A query through `api` with `parties`, signed by consortium `research`, its
/// result file verified offline under `key`; returns the signers.
fn signed_query(root: &TempDir, tag: &str, api: &str, parties: &str, key: &str) -> Vec<String> {
    let file = root.join(&format!("result-{tag}.json"));
    ok(&query(
        api,
        "SELECT COUNT(*), AVG(age) FROM patients",
        parties,
        &["--consortium", "research", "--result-file", &file],
    ));
    let (good, text) = verify(&file, key);
    assert!(good && text.contains("OK: the answer is what the signed shares"), "{text}");
    let att = &sessions(api)[0]["attestation"];
    assert_eq!(att["group_key"].as_str(), Some(key), "{att}");
    att["signers"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

/// The `ms` of the first line of `dir.log` containing `what`.
fn logged_ms(dir: &str, what: &str) -> String {
    let log = std::fs::read_to_string(format!("{dir}.log")).unwrap();
    let line = log.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no {what:?} in {dir}.log"));
    // Without the terminal colours of the log.
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            plain.push(ch);
        }
    }
    plain.split(" ms=").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or("?").to_owned()
}

/// `concord init` node `name` in `dir` with a patients dataset of `n` rows.
fn make_node(root: &TempDir, dir: &str, name: &str, n: usize) -> String {
    let api = init_node(dir, name, |c| c);
    let csv: String = std::iter::once("age\n".to_owned()).chain((0..n).map(|i| format!("{}\n", 20 + i % 60))).collect();
    let file = root.join(&format!("{name}.csv"));
    std::fs::write(&file, csv).unwrap();
    let schema = root.join("schema.toml");
    ok(&concord(&["dataset", "add", "patients", "--file", &file, "--schema", &schema, "--dir", dir]));
    api
}

#[test]
fn consortium_shares_are_refreshed_and_a_replaced_member_is_repaired() {
    let root = TempDir::new("rekey");
    std::fs::write(root.0.join("schema.toml"), SCHEMA).unwrap();
    let names = ["hospital-a", "hospital-b", "hospital-c"];
    let dirs: Vec<String> = names.iter().map(|n| root.join(n)).collect();
    let mut apis: Vec<String> = names.iter().zip(&dirs).map(|(n, d)| make_node(&root, d, n, 50)).collect();
    let mut nodes: Vec<Option<Node>> = (0..3).map(|i| Some(start(&dirs[i], &apis[i], &[]))).collect();
    pair_all(&dirs);
    wait_all_up(&apis);
    let url = |api: &str| format!("http://{api}");

    ok(&concord(&[
        "consortium",
        "create",
        "research",
        "--members",
        &names.join(","),
        "--threshold",
        "2",
        "--node",
        &url(&apis[0]),
    ]));
    let key = consortium(&apis[0], "research")["group_key"].as_str().unwrap().to_owned();
    // Another consortium (a and b), for a wrong group key below.
    ok(&concord(&[
        "consortium",
        "create",
        "pair",
        "--members",
        "hospital-a,hospital-b",
        "--threshold",
        "2",
        "--node",
        &url(&apis[0]),
    ]));
    let other_key = consortium(&apis[0], "pair")["group_key"].as_str().unwrap().to_owned();
    let before: Vec<String> = dirs.iter().map(|d| share(d, "research")).collect();

    // Two-phase: c's stored group key is corrupted (two verifying shares
    // swapped, same public key), so c derives other verifying shares at the
    // last round; the refresh fails naming c, and nobody replaces its share.
    let group_json: String =
        db(&dirs[2]).query_row("SELECT group_key FROM consortia WHERE name = 'research'", [], |r| r.get(0)).unwrap();
    let mut bad: J = serde_json::from_str(&group_json).unwrap();
    let shares_map = bad["verifying_shares"].as_object_mut().unwrap();
    let ids: Vec<String> = shares_map.keys().cloned().collect();
    let first = shares_map[&ids[0]].clone();
    shares_map[&ids[0]] = shares_map[&ids[1]].clone();
    shares_map[&ids[1]] = first;
    let set_group = |json: &str| {
        db(&dirs[2]).execute("UPDATE consortia SET group_key = ?1 WHERE name = 'research'", [json]).unwrap();
    };
    set_group(&bad.to_string());
    let err = fails(&concord(&["consortium", "refresh", "research", "--node", &url(&apis[0])]));
    assert!(
        err.contains("refresh_failed") && err.contains("member \"hospital-c\" derived other verifying shares"),
        "{err}"
    );
    for (i, d) in dirs.iter().enumerate() {
        assert_eq!(share(d, "research"), before[i], "{} replaced its share after a failed refresh", names[i]);
        assert!(events(d, "consortium.refreshed").is_empty());
    }
    assert_eq!(events(&dirs[0], "consortium.refresh_failed").len(), 1);
    set_group(&group_json);

    // Refresh, coordinated by b: same group key everywhere, a new share in every store.
    let out = ok(&concord(&["consortium", "refresh", "research", "--node", &url(&apis[1])]));
    eprintln!("{out}");
    assert!(out.contains("refreshed") && out.contains(&key), "{out}");
    for (i, api) in apis.iter().enumerate() {
        let c = consortium(api, "research");
        assert_eq!((c["state"].as_str(), c["group_key"].as_str()), (Some("active"), Some(key.as_str())), "{c}");
        let text = serde_json::to_string(&c).unwrap();
        assert!(!text.contains("signing_share") && !text.contains("secret"), "{text}");
        assert_ne!(share(&dirs[i], "research"), before[i], "the share of {} did not change", names[i]);
        assert_eq!(events(&dirs[i], "consortium.refreshed").len(), 1, "{}", names[i]);
    }
    eprintln!("refresh of 3 nodes (coordinator's log): {} ms", logged_ms(&dirs[1], "consortium refreshed"));
    let (_, doc) = http(&apis[0], "GET", "/openapi.json", "");
    assert!(doc["paths"]["/api/consortia/{name}/refresh"]["post"].is_object(), "{doc}");
    assert!(doc["paths"]["/api/consortia/{name}/repair"]["post"].is_object(), "{doc}");
    // The body must be an empty object.
    let (status, v) = http(&apis[1], "POST", "/api/consortia/research/refresh", r#"{"x":1}"#);
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("bad_request")), "{v}");
    let (status, v) = http(&apis[1], "POST", "/api/consortia/nope/refresh", "{}");
    assert_eq!((status, v["error"]["code"].as_str()), (404, Some("unknown_consortium")), "{v}");

    // A result signed after the refresh verifies offline under the same key.
    let signers = signed_query(&root, "refreshed", &apis[0], &names.join(","), &key);
    assert_eq!(signers, ["hospital-a", "hospital-b"]);

    // A member whose share is intact has nothing to repair.
    let err = fails(&concord(&[
        "consortium",
        "repair",
        "research",
        "--helpers",
        "hospital-a,hospital-b",
        "--group-key",
        &key,
        "--node",
        &url(&apis[2]),
    ]));
    assert!(err.contains("nothing_to_repair"), "{err}");

    // c is lost: the refresh is refused, naming it.
    nodes[2].take();
    wait_until("hospital-c down", 30, || common::nodes::health(&apis[0], "hospital-c") == "down");
    let err = fails(&concord(&["consortium", "refresh", "research", "--node", &url(&apis[0])]));
    assert!(err.contains("peer_down") && err.contains("\"hospital-c\" is not up"), "{err}");
    let after_refresh_a = share(&dirs[0], "research");

    // A replacement: a fresh node with the same name (a new identity), paired again.
    std::fs::remove_dir_all(&dirs[2]).unwrap();
    std::fs::remove_file(format!("{}.log", dirs[2])).unwrap();
    apis[2] = make_node(&root, &dirs[2], "hospital-c", 30);
    nodes[2] = Some(start(&dirs[2], &apis[2], &[]));
    for d in &dirs[..2] {
        ok(&concord(&["peer", "remove", "hospital-c", "--dir", d]));
        let inv = ok(&concord(&["peer", "invite", "--dir", d]));
        ok(&concord(&["peer", "join", inv.trim(), "--dir", &dirs[2]]));
        assert_eq!(events(d, "peer.replaced").len(), 1);
    }
    wait_all_up(&apis);
    assert!(http(&apis[2], "GET", "/api/consortia", "").1["consortia"].as_array().unwrap().is_empty());

    // A wrong group key is refused, naming both keys, and nothing is stored.
    let err = fails(&concord(&[
        "consortium",
        "repair",
        "research",
        "--helpers",
        "hospital-a,hospital-b",
        "--group-key",
        &other_key,
        "--node",
        &url(&apis[2]),
    ]));
    assert!(err.contains("group_key_mismatch") && err.contains(&key) && err.contains(&other_key), "{err}");
    assert!(err.contains("\"hospital-a\""), "{err}");
    assert!(http(&apis[2], "GET", "/api/consortia", "").1["consortia"].as_array().unwrap().is_empty());
    // Too few helpers.
    let err = fails(&concord(&[
        "consortium",
        "repair",
        "research",
        "--helpers",
        "hospital-a",
        "--group-key",
        &key,
        "--node",
        &url(&apis[2]),
    ]));
    assert!(err.contains("1 helpers given") && err.contains("needs 2"), "{err}");

    // The repair: a and b rebuild c's share.
    let out = ok(&concord(&[
        "consortium",
        "repair",
        "research",
        "--helpers",
        "hospital-a,hospital-b",
        "--group-key",
        &key,
        "--node",
        &url(&apis[2]),
    ]));
    eprintln!("{out}");
    assert!(out.contains("repaired") && out.contains(&key), "{out}");
    let c = consortium(&apis[2], "research");
    assert_eq!((c["state"].as_str(), c["group_key"].as_str()), (Some("active"), Some(key.as_str())), "{c}");
    assert_eq!(c["members"], serde_json::json!(names));
    assert_eq!(events(&dirs[2], "consortium.repaired").len(), 1);
    for d in &dirs[..2] {
        assert_eq!(events(d, "consortium.repair_helped").len(), 1, "{d}");
    }
    assert_eq!(share(&dirs[0], "research"), after_refresh_a, "a helper's share is unchanged by a repair");
    eprintln!(
        "repair with 2 helpers (repaired node's log): {} ms",
        logged_ms(&dirs[2], "consortium key share repaired")
    );

    // c signs again: a session with parties b and c is signed by b and c.
    let signers = signed_query(&root, "repaired", &apis[1], "hospital-b,hospital-c", &key);
    assert_eq!(signers, ["hospital-b", "hospital-c"]);

    // A refresh after the repair (coordinated by the new c): the rebuilt share,
    // like any share stolen from the old c, is replaced; c still signs.
    let repaired = share(&dirs[2], "research");
    let out = ok(&concord(&["consortium", "refresh", "research", "--node", &url(&apis[2])]));
    assert!(out.contains(&key), "{out}");
    assert_ne!(share(&dirs[2], "research"), repaired);
    let signers = signed_query(&root, "after", &apis[2], "hospital-a,hospital-c", &key);
    assert_eq!(signers, ["hospital-a", "hospital-c"]);
}
