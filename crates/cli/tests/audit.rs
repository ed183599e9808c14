//! The node's tamper-evident audit log end to end: `concord audit verify`
//! passes on a node's store and fails, naming the entry, on copies tampered
//! with directly in SQLite (as an attacker with file access but without the
//! node's signing key would: triggers dropped first); exports verify without
//! the node and a changed byte is refused; three running nodes' logs agree on
//! a session they ran, and a log that lies about it is named.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::nodes::{http, init_node, pair_all, query, sessions, start, wait_all_up, wait_until, Node};
use common::{concord, fails, ok, TempDir};

use std::path::Path;

use concord_node::identity::NodeIdentity;
use concord_node::store::STORE_FILE;
use concord_node::Store;
use rusqlite::Connection;
use serde_json::{json, Value as J};

const SCHEMA: &str = "table = \"patients\"\nmax_rows = 1000\n\n[[column]]\nname = \"age\"\ntype = \"int\"\nmin = 0\nmax = 120\n\n[[column]]\nname = \"sex\"\ntype = \"category\"\nvalues = [\"F\", \"M\"]\n";

/// `age,sex` rows of party `p`: deterministic.
fn csv(p: usize, n: usize) -> String {
    let rows = (0..n)
        .map(|i| format!("{},{}\n", 20 + (i * 7 + p * 13) % 60, if (i + p).is_multiple_of(3) { "F" } else { "M" }));
    std::iter::once("age,sex\n".to_owned()).chain(rows).collect()
}

/// A node `name` in `root/name` with a dataset, two budgets and an invitation.
fn make_node(root: &TempDir, name: &str) -> String {
    let dir = root.join(name);
    ok(&concord(&["init", "--name", name, "--dir", &dir]));
    let (file, schema) = (root.join(&format!("{name}.csv")), root.join("schema.toml"));
    std::fs::write(&file, csv(0, 50)).unwrap();
    std::fs::write(&schema, SCHEMA).unwrap();
    ok(&concord(&["dataset", "add", "patients", "--file", &file, "--schema", &schema, "--dir", &dir]));
    ok(&concord(&["dataset", "add", "visits", "--file", &file, "--schema", &schema, "--dir", &dir]));
    ok(&concord(&["budget", "set", "--analyst", "alice", "--dataset", "patients", "--rho", "2", "--dir", &dir]));
    ok(&concord(&["budget", "set", "--analyst", "bob", "--dataset", "patients", "--rho", "0.5", "--dir", &dir]));
    ok(&concord(&["peer", "invite", "--dir", &dir]));
    ok(&concord(&["dataset", "check", "--dir", &dir]));
    dir
}

/// Copy a node directory (the store is closed: no process runs the node).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A fresh copy of node directory `dir`, and its store opened as an
/// attacker would, the audit log's triggers dropped.
fn tampered_copy(root: &TempDir, dir: &str, tag: &str) -> (String, Connection) {
    let copy = root.join(tag);
    copy_dir(Path::new(dir), Path::new(&copy));
    let db = Connection::open(format!("{copy}/data/{STORE_FILE}")).unwrap();
    db.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;").unwrap();
    (copy, db)
}

fn entry(db: &Connection, seq: i64) -> String {
    db.query_row("SELECT entry FROM audit_log WHERE seq = ?1", [seq], |r| r.get(0)).unwrap()
}

fn set_entry(db: &Connection, seq: i64, text: &str) {
    assert_eq!(db.execute("UPDATE audit_log SET entry = ?2 WHERE seq = ?1", rusqlite::params![seq, text]).unwrap(), 1);
}

fn count(db: &Connection) -> i64 {
    db.query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0)).unwrap()
}

/// `concord audit verify` on `dir` fails; its message.
fn verify_fails(dir: &str) -> String {
    fails(&concord(&["audit", "verify", "--dir", dir]))
}

#[test]
fn tampering_with_a_node_store_is_detected_and_named() {
    let root = TempDir::new("audit-tamper");
    let a = make_node(&root, "hospital-a");
    let b = make_node(&root, "hospital-b");

    // The untouched log verifies; every change of the CLI is in it.
    let out = ok(&concord(&["audit", "verify", "--dir", &a]));
    assert!(out.contains("Audit log of node \"hospital-a\": OK"), "{out}");
    let n = {
        let db = Connection::open(format!("{a}/data/{STORE_FILE}")).unwrap();
        count(&db)
    };
    assert_eq!(n, 7, "audit.started, node.init, 2 x dataset.added, 2 x budget.set, invitation.created");
    assert!(out.contains(&format!("entries        {n} (seq 0 to {})", n - 1)), "{out}");
    assert!(out.contains(&format!("vouches for entry {}", n - 1)), "{out}");
    let public: J =
        serde_json::from_str(&std::fs::read_to_string(format!("{a}/identity/public.json")).unwrap()).unwrap();
    let key_a = public["ed25519_public"].as_str().unwrap().to_owned();
    assert!(out.contains(&key_a), "{out}");
    let log = ok(&concord(&["audit", "log", "--limit", "100", "--dir", &a]));
    for kind in ["audit.started", "node.init", "dataset.added", "budget.set", "invitation.created"] {
        assert!(log.contains(kind), "{kind} not in\n{log}");
    }
    assert!(log.contains("\"rho\":\"0.5\""), "fractions are decimal strings:\n{log}");
    assert_eq!(ok(&concord(&["audit", "log", "--limit", "2", "--dir", &a])).lines().count(), 4);

    // An entry's body edited.
    let (t, db) = tampered_copy(&root, &a, "edited");
    let e3 = entry(&db, 3);
    let edited = e3.replacen("\"message\":\"", "\"message\":\"(edited) ", 1);
    assert_ne!(e3, edited);
    set_entry(&db, 3, &edited);
    let err = verify_fails(&t);
    assert!(err.contains("entry 3: hash mismatch: the entry was edited"), "{err}");

    // A middle entry deleted.
    let (t, db) = tampered_copy(&root, &a, "deleted");
    db.execute("DELETE FROM audit_log WHERE seq = 4", []).unwrap();
    let err = verify_fails(&t);
    assert!(err.contains("entry at position 4 has seq 5") && err.contains("were removed"), "{err}");

    // Two entries swapped.
    let (t, db) = tampered_copy(&root, &a, "reordered");
    let (e2, e3) = (entry(&db, 2), entry(&db, 3));
    set_entry(&db, 2, &e3);
    set_entry(&db, 3, &e2);
    let err = verify_fails(&t);
    assert!(err.contains("entry at position 2 has seq 3") && err.contains("reordered"), "{err}");

    // The last entries cut off: only the signed head shows it.
    let (t, db) = tampered_copy(&root, &a, "truncated");
    db.execute("DELETE FROM audit_log WHERE seq >= ?1", [n - 2]).unwrap();
    let err = verify_fails(&t);
    assert!(
        err.contains(&format!(
            "log truncated: a checkpoint vouches for entry {}, the log has {} entries",
            n - 1,
            n - 2
        )),
        "{err}"
    );
    // ... and the node refuses to write over the cut (which would move the head forward).
    let err =
        fails(&concord(&["budget", "set", "--analyst", "carol", "--dataset", "patients", "--rho", "1", "--dir", &t]));
    assert!(err.contains("truncated") && err.contains("refused"), "{err}");
    // The operator, having checked, re-signs the head: logged, and the log verifies again.
    let out = ok(&concord(&["audit", "verify", "--rewrite-head", "--dir", &t]));
    assert!(out.contains("Re-signed the audit head") && out.contains(": OK"), "{out}");
    assert!(ok(&concord(&["audit", "log", "--limit", "1", "--dir", &t])).contains("audit.head_rewritten"));
    ok(&concord(&["budget", "set", "--analyst", "carol", "--dataset", "patients", "--rho", "1", "--dir", &t]));
    ok(&concord(&["audit", "verify", "--dir", &t]));

    // An entry of another node's log spliced in.
    let b_db = Connection::open(format!("{b}/data/{STORE_FILE}")).unwrap();
    let (t, db) = tampered_copy(&root, &a, "spliced");
    set_entry(&db, 5, &entry(&b_db, 5));
    let err = verify_fails(&t);
    assert!(err.contains("entry 5: signature does not verify") && err.contains("another node's chain"), "{err}");

    // The whole log replaced by another node's (the head file too).
    let (t, db) = tampered_copy(&root, &a, "replaced");
    db.execute("DELETE FROM audit_log", []).unwrap();
    let rows: Vec<(i64, String)> = {
        let mut stmt = b_db.prepare("SELECT seq, entry FROM audit_log ORDER BY seq").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    for (seq, text) in &rows {
        db.execute("INSERT INTO audit_log (seq, entry) VALUES (?1, ?2)", rusqlite::params![seq, text]).unwrap();
    }
    std::fs::copy(format!("{b}/data/audit.head"), format!("{t}/data/audit.head")).unwrap();
    let err = verify_fails(&t);
    assert!(
        err.contains("entry 0: previous hash is not the genesis of this key: the chain is another node's"),
        "{err}"
    );

    // A deleted head file: truncation can no longer be ruled out.
    let (t, _db) = tampered_copy(&root, &a, "headless");
    std::fs::remove_file(format!("{t}/data/audit.head")).unwrap();
    assert!(verify_fails(&t).contains("head file is missing"));

    // The original is intact after all this.
    ok(&concord(&["audit", "verify", "--dir", &a]));

    // Export, and verification by an auditor without the node.
    let file = root.join("a.audit");
    let out = ok(&concord(&["audit", "export", "--out", &file, "--dir", &a]));
    assert!(out.contains(&key_a), "{out}");
    let out = ok(&concord(&["audit", "verify-export", &file]));
    assert!(
        out.contains("export of node \"hospital-a\": OK") && out.contains(&format!("signed by      {key_a}")),
        "{out}"
    );
    assert!(out.contains("compare the key above"), "{out}");
    let out = ok(&concord(&["audit", "verify-export", &file, "--key", &key_a]));
    assert!(out.contains("Signed by the expected key"), "{out}");
    let public_b: J =
        serde_json::from_str(&std::fs::read_to_string(format!("{b}/identity/public.json")).unwrap()).unwrap();
    let key_b = public_b["ed25519_public"].as_str().unwrap();
    let err = fails(&concord(&["audit", "verify-export", &file, "--key", key_b]));
    assert!(err.contains("export is signed by key") && err.contains(key_b), "{err}");
    // One changed byte anywhere (here: in a body) is refused, naming the line.
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.windows(9).position(|w| w == b"\"message\"").unwrap() + 12;
    bytes[at] ^= 0x01;
    let bad = root.join("bad.audit");
    std::fs::write(&bad, &bytes).unwrap();
    let err = fails(&concord(&["audit", "verify-export", &bad]));
    assert!(err.contains("the export does not verify") && err.contains("hash mismatch"), "{err}");
    let err = fails(&concord(&["audit", "verify-export", &root.join("missing.audit")]));
    assert!(err.contains("missing.audit"), "{err}");
}

#[test]
fn three_nodes_agree_on_a_session_and_a_lying_log_is_named() {
    let root = TempDir::new("audit-cluster");
    std::fs::write(root.0.join("schema.toml"), SCHEMA).unwrap();
    let names = ["hospital-a", "hospital-b", "hospital-c"];
    let mut dirs = Vec::new();
    let mut apis = Vec::new();
    for (p, name) in names.iter().enumerate() {
        let file = root.join(&format!("party{p}.csv"));
        std::fs::write(&file, csv(p, 100 + 20 * p)).unwrap();
        let dir = root.join(name);
        apis.push(init_node(&dir, name, |c| c));
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
    }
    let nodes: Vec<Node> = (0..3).map(|i| start(&dirs[i], &apis[i], &[])).collect();
    pair_all(&dirs);
    wait_all_up(&apis);
    let out = ok(&query(&apis[1], "SELECT sex, COUNT(*) FROM patients GROUP BY sex", &names.join(","), &[]));
    let v: J = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows"].as_array().unwrap().len(), 2, "{out}");
    let id = sessions(&apis[1])[0]["id"].as_str().unwrap().to_owned();
    for api in &apis {
        wait_until("the session done everywhere", 30, || {
            sessions(api).iter().any(|s| s["id"] == id.as_str() && s["state"] == "done")
        });
    }

    // The API: the most recent entries, newest first, and the signed head.
    let (status, v) = http(&apis[1], "GET", "/api/audit?limit=200", "");
    assert_eq!(status, 200, "{v}");
    let entries = v["entries"].as_array().unwrap();
    assert!(entries.windows(2).all(|w| w[0]["seq"].as_u64() > w[1]["seq"].as_u64()), "{v}");
    assert_eq!(v["count"].as_u64(), entries.first().and_then(|e| e["seq"].as_u64()).map(|s| s + 1));
    assert_eq!(v["head"]["node"], "hospital-b");
    let of_session: Vec<&J> = entries.iter().filter(|e| e["session"] == id.as_str()).collect();
    let kinds: Vec<&str> = of_session.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in [
        "session.created",
        "session.accepted",
        "session.running",
        "session.done",
        "session.finished",
        "result.revealed",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let revealed: Vec<&&J> = of_session.iter().filter(|e| e["kind"] == "result.revealed").collect();
    assert_eq!(revealed.len(), 3, "one per party: {revealed:?}");
    assert!(revealed.iter().all(|e| e["body"]["to"].as_str().unwrap().starts_with("analyst key ")
        && e["body"]["envelope_hash"].as_str().unwrap().len() == 64));
    let (status, v) = http(&apis[1], "GET", "/api/audit?limit=1", "");
    assert_eq!((status, v["entries"].as_array().unwrap().len()), (200, 1));
    let (status, v) = http(&apis[1], "GET", "/api/audit?limit=lots", "");
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("bad_request")), "{v}");
    let (_, doc) = http(&apis[1], "GET", "/openapi.json", "");
    assert!(doc["paths"]["/api/audit"]["get"].is_object() && doc["components"]["schemas"]["AuditEntry"].is_object());
    let page = common::get(&apis[1], "/").1;
    assert!(page.contains("Audit trail") && page.contains("session.accepted"), "{page}");

    // A session refused at propose time: hospital-c gives analyst mallory no budget.
    ok(&concord(&["budget", "set", "--analyst", "mallory", "--dataset", "patients", "--rho", "0", "--dir", &dirs[2]]));
    let parties = names.join(",");
    let err = fails(&query(
        &apis[1],
        "SELECT COUNT(*) FROM patients",
        &parties,
        &["--analyst", "mallory", "--epsilon", "0.5"],
    ));
    assert!(err.contains("budget_exceeded") && err.contains("hospital-c"), "{err}");
    let (_, v) = http(&apis[2], "GET", "/api/audit?limit=20", "");
    let refusal = v["entries"].as_array().unwrap().iter().find(|e| e["kind"] == "session.refused").cloned();
    let refusal = refusal.unwrap_or_else(|| panic!("no session.refused entry on hospital-c: {v}"));
    assert!(refusal["body"]["reason"].as_str().unwrap().contains("budget_exceeded"), "{refusal}");
    assert_eq!(
        (refusal["body"]["from"].as_str(), refusal["body"]["analyst"].as_str()),
        (Some("hospital-b"), Some("mallory"))
    );
    let refused = refusal["session"].as_str().unwrap().to_owned();
    wait_until("the refused session failed on the coordinator", 30, || {
        sessions(&apis[1]).iter().any(|s| s["id"] == refused.as_str() && s["state"] == "failed")
    });

    // Each node's log verifies, although the CLI wrote to it next to the running node.
    for dir in &dirs {
        ok(&concord(&["audit", "verify", "--dir", dir]));
    }
    // Export all three (the nodes still run) and cross-check the session.
    let files: Vec<String> = names.iter().map(|n| root.join(&format!("{n}.audit"))).collect();
    for (dir, file) in dirs.iter().zip(&files) {
        ok(&concord(&["audit", "export", "--out", file, "--dir", dir]));
    }
    let mut args = vec!["audit", "cross-check", "--session", &id];
    args.extend(files.iter().map(String::as_str));
    let out = ok(&concord(&args));
    assert!(out.contains(&format!("Session {id}: the 3 nodes agree")), "{out}");
    assert!(
        out.contains("plan_hash")
            && out.contains("\"done\"")
            && out.contains("[\"hospital-a\",\"hospital-b\",\"hospital-c\"]"),
        "{out}"
    );
    // With a node's key pinned, and with a wrong one.
    let key_c = NodeIdentity::load(Path::new(&dirs[2]), "hospital-c").unwrap().public().ed25519_public;
    let key_a = NodeIdentity::load(Path::new(&dirs[0]), "hospital-a").unwrap().public().ed25519_public;
    let pinned = format!("hospital-c={key_c}");
    let mut with_key = vec!["audit", "cross-check", "--session", &id, "--key", &pinned];
    with_key.extend(files.iter().map(String::as_str));
    ok(&concord(&with_key));
    let wrong = format!("hospital-c={key_a}");
    with_key[5] = wrong.as_str();
    let err = fails(&concord(&with_key));
    assert!(err.contains("hospital-c.audit") && err.contains("export is signed by key"), "{err}");
    // Two exports of one node are refused; a session nobody logged is named.
    let err = fails(&concord(&["audit", "cross-check", "--session", &id, &files[0], &files[0]]));
    assert!(err.contains("given twice"), "{err}");
    let err = fails(&concord(&["audit", "cross-check", "--session", "00ff", &files[0], &files[1]]));
    assert!(err.contains("hospital-a") && err.contains("no entry for the session"), "{err}");
    // The refused session: hospital-c never accepted the plan the others logged.
    let mut refused_args = vec!["audit", "cross-check", "--session", &refused];
    refused_args.extend(files.iter().map(String::as_str));
    let err = fails(&concord(&refused_args));
    assert!(err.contains("\"hospital-c\" disagrees on plan_hash: records nothing, 2 of 3 nodes record"), "{err}");

    // Peers witness each other's logs: hospital-b keeps the checkpoints of hospital-a's log that
    // come with a's heartbeats, and a's export agrees with them.
    let last_seq = |file: &str| -> u64 {
        let text = std::fs::read_to_string(file).unwrap();
        let trailer: J = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        trailer["checkpoint"]["seq"].as_u64().unwrap()
    };
    let witnessed = || -> Vec<u64> {
        let (_, v) = http(&apis[1], "GET", "/api/audit/witness?node=hospital-a", "");
        v["checkpoints"].as_array().unwrap().iter().map(|c| c["seq"].as_u64().unwrap()).collect()
    };
    ok(&concord(&["audit", "export", "--out", &files[0], "--dir", &dirs[0]]));
    let head_a = last_seq(&files[0]);
    wait_until("b witnesses a's head", 30, || witnessed().last() == Some(&head_a));
    let witness_b = format!("http://{}", apis[1]);
    let out = ok(&concord(&["audit", "verify-export", &files[0], "--key", &key_a, "--witness", &witness_b]));
    assert!(out.contains(&format!("up to entry {head_a}")) && out.contains("all in this export"), "{out}");
    let (status, v) = http(&apis[1], "GET", "/api/audit/witness", "");
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("bad_request")), "{v}");
    // hospital-a's operator cuts its log and re-signs the head: on its own it verifies again,
    // but not against what hospital-b witnessed.
    let mut nodes = nodes;
    drop(nodes.remove(0));
    let (cut, db) = tampered_copy(&root, &dirs[0], "a-cut");
    db.execute("DELETE FROM audit_log WHERE seq >= ?1", [i64::try_from(head_a).unwrap() - 1]).unwrap();
    drop(db);
    ok(&concord(&["audit", "verify", "--rewrite-head", "--dir", &cut]));
    let cut_file = root.join("a-cut.audit");
    ok(&concord(&["audit", "export", "--out", &cut_file, "--dir", &cut]));
    ok(&concord(&["audit", "verify-export", &cut_file, "--key", &key_a]));
    let err = fails(&concord(&["audit", "verify-export", &cut_file, "--key", &key_a, "--witness", &witness_b]));
    assert!(
        err.contains("held by witness") && err.contains(&format!("a checkpoint vouches for entry {head_a}")),
        "{err}"
    );
    // ... or rewrites its end with other entries, as long as before.
    {
        let mut store = Store::open(&Path::new(&cut).join("data").join(STORE_FILE)).unwrap();
        let identity = NodeIdentity::load(Path::new(&cut), "hospital-a").unwrap();
        store.set_auditor("hospital-a", identity.signing_key().clone()).unwrap();
        // (re-signing the head logged one entry already)
        store.audit("session.finished", Some(&id), json!({ "state": "failed", "reason": "rewritten" })).unwrap();
    }
    ok(&concord(&["audit", "verify", "--dir", &cut]));
    ok(&concord(&["audit", "export", "--out", &cut_file, "--dir", &cut]));
    assert_eq!(last_seq(&cut_file), head_a);
    let err = fails(&concord(&["audit", "verify-export", &cut_file, "--key", &key_a, "--witness", &witness_b]));
    assert!(err.contains(&format!("log rewritten: entry {head_a} differs")), "{err}");
    drop(nodes);

    // hospital-c lies: with its own key it logs that the session failed. The
    // chain verifies (the key holder can write anything), but the others disagree.
    {
        let dir = Path::new(&dirs[2]);
        let mut store = Store::open(&dir.join("data").join(STORE_FILE)).unwrap();
        let identity = NodeIdentity::load(dir, "hospital-c").unwrap();
        store.set_auditor("hospital-c", identity.signing_key().clone()).unwrap();
        store
            .audit("session.finished", Some(&id), json!({ "state": "failed", "reason": "party hospital-a cheated" }))
            .unwrap();
    }
    ok(&concord(&["audit", "verify", "--dir", &dirs[2]]));
    ok(&concord(&["audit", "export", "--out", &files[2], "--dir", &dirs[2]]));
    let err = fails(&concord(&args));
    assert!(err.contains("do not agree on session") && err.contains("\"hospital-c\" disagrees on state"), "{err}");
    assert!(err.contains("\"failed\""), "{err}");
    // Without the liar, the two others still agree (and say whose log is missing).
    let out = ok(&concord(&["audit", "cross-check", "--session", &id, &files[0], &files[1]]));
    assert!(out.contains("not compared   hospital-c"), "{out}");
}
