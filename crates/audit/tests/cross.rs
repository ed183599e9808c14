//! Cross-checking several nodes' accounts of one session.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{extend, key, record};
use concord_audit::{cross_check, AuditError, Entry};
use serde_json::{json, Value};

const S: &str = "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f";

/// One node's log of session `S` (and of another session), with `result` and `state`.
fn log(node: &str, seed: u8, result: &str, state: &str) -> Vec<Entry> {
    let parties = json!(["a", "b", "c"]);
    let mut c = Vec::new();
    let records = vec![
        record(1, "request.received", Some(S), json!({"request_hash": "r1", "from": "analyst"})),
        record(2, "policy.decision", Some(S), json!({"request_hash": "r1", "decision": "allow"})),
        record(3, "session.started", Some("other"), json!({"request_hash": "zz", "plan_hash": "q"})),
        record(4, "session.started", Some(S), json!({"plan_hash": "p1", "parties": parties})),
        record(5, "session.finished", Some(S), json!({"state": state, "result_hash": result})),
    ];
    extend(&mut c, node, records, &key(seed));
    c
}

fn field_of(e: AuditError) -> (String, String) {
    match e {
        AuditError::Disagreement { node, field, .. } => (node, field),
        other => panic!("not a disagreement: {other}"),
    }
}

#[test]
fn agreeing_nodes_pass() {
    let (a, b) = (log("a", 1, "h", "done"), log("b", 2, "h", "done"));
    let x = cross_check(S, &[("a", &a), ("b", &b)]).unwrap();
    assert_eq!(x.nodes, ["a", "b"]);
    assert_eq!(x.parties_missing, ["c"]);
    let agreed: Vec<(&str, &Value)> = x.agreed.iter().map(|(k, v)| (k.as_str(), v)).collect();
    assert_eq!(
        agreed,
        [
            ("parties", &json!(["a", "b", "c"])),
            ("plan_hash", &json!("p1")),
            ("request_hash", &json!("r1")),
            ("result_hash", &json!("h")),
            ("state", &json!("done"))
        ]
    );
}

#[test]
fn the_odd_node_and_field_are_named() {
    let (a, b, c) = (log("a", 1, "h", "done"), log("b", 2, "h", "done"), log("c", 3, "H", "done"));
    let e = cross_check(S, &[("a", &a), ("b", &b), ("c", &c)]).unwrap_err();
    assert!(e.to_string().contains("records \"H\", 2 of 3 nodes record \"h\""), "{e}");
    assert_eq!(field_of(e), ("c".into(), "result_hash".into()));
    // The odd node first: still named.
    assert_eq!(
        field_of(cross_check(S, &[("c", &c), ("a", &a), ("b", &b)]).unwrap_err()),
        ("c".into(), "result_hash".into())
    );
    let failed = log("b", 2, "h", "failed");
    assert_eq!(field_of(cross_check(S, &[("a", &a), ("b", &failed)]).unwrap_err()), ("b".into(), "state".into()));
}

#[test]
fn missing_and_inconsistent_records_are_disagreements() {
    let a = log("a", 1, "h", "done");
    // b never finished: no state and no result.
    let b_unfinished: Vec<Entry> = log("b", 2, "h", "done")[..4].to_vec();
    let e = cross_check(S, &[("a", &a), ("b", &b_unfinished)]).unwrap_err();
    assert_eq!(field_of(e), ("b".into(), "result_hash".into()));
    // b records two request hashes.
    let mut b = log("b", 2, "h", "done");
    extend(&mut b, "b", vec![record(6, "approval", Some(S), json!({"request_hash": "r2"}))], &key(2));
    let e = cross_check(S, &[("a", &a), ("b", &b)]).unwrap_err();
    assert!(e.to_string().contains("entry 0 records \"r1\", entry 5 records \"r2\""), "{e}");
    assert_eq!(field_of(e), ("b".into(), "request_hash".into()));
    // No entry at all, a log under another name, a node outside the parties.
    let d = log("d", 4, "h", "done");
    assert_eq!(field_of(cross_check("nope", &[("a", &a)]).unwrap_err()), ("a".into(), "session".into()));
    assert_eq!(field_of(cross_check(S, &[("a", &a), ("b", &d)]).unwrap_err()), ("b".into(), "node".into()));
    assert_eq!(field_of(cross_check(S, &[("a", &a), ("d", &d)]).unwrap_err()), ("d".into(), "parties".into()));
    assert!(matches!(cross_check(S, &[("a", &a), ("a", &a)]), Err(AuditError::Invalid(_))));
    assert!(matches!(cross_check(S, &[]), Err(AuditError::Invalid(_))));
}
