//! Cross-checking what several nodes logged about one session.
//!
//! Each node's account of the session is, per field of [`AGREED_FIELDS`], the
//! value its entries for the session carry in their bodies (any kind), and for
//! [`STATE_FIELD`] the value its [`FINAL_KIND`] entries carry. The check fails
//! when a node's entries carry two values for one field, or when a field is not
//! the same at every node (recorded by all with one value, or by none). The
//! node named is one whose value differs from the most common one (the first
//! node's on a tie).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{AuditError, Entry};

/// Body fields every party must record identically (or none record).
pub const AGREED_FIELDS: [&str; 4] = ["request_hash", "plan_hash", "result_hash", "parties"];
/// The kind of the entry that records a session's final state.
pub const FINAL_KIND: &str = "session.finished";
/// The body field of a [`FINAL_KIND`] entry holding the final state
/// (`done`, `failed`, `cancelled`, ...).
pub const STATE_FIELD: &str = "state";

/// What the nodes agree on.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossCheck {
    /// The session.
    pub session: String,
    /// The nodes compared, in the order given.
    pub nodes: Vec<String>,
    /// Each agreed field recorded (by every node) and its value.
    pub agreed: BTreeMap<String, Value>,
    /// Parties named in the agreed `parties` whose logs were not compared.
    pub parties_missing: Vec<String>,
}

/// Compare the session's entries in each node's log, given as (node name,
/// entries). Verify each log first ([`crate::verify`] or
/// [`crate::verify_export`]): this checks no hash or signature.
pub fn cross_check(session: &str, logs: &[(&str, &[Entry])]) -> Result<CrossCheck, AuditError> {
    let disagree = |node: &str, field: &str, reason: String| AuditError::Disagreement {
        session: session.to_owned(),
        node: node.to_owned(),
        field: field.to_owned(),
        reason,
    };
    if logs.is_empty() {
        return Err(AuditError::Invalid("no logs to cross-check".into()));
    }
    let fields: Vec<&str> = AGREED_FIELDS.iter().copied().chain([STATE_FIELD]).collect();
    // accounts[node][field] = the value the node records, if any.
    let mut accounts: Vec<Vec<Option<&Value>>> = Vec::new();
    for (i, (node, entries)) in logs.iter().enumerate() {
        if logs[..i].iter().any(|(n, _)| n == node) {
            return Err(AuditError::Invalid(format!("node {node:?} given twice")));
        }
        let mine: Vec<&Entry> = entries.iter().filter(|e| e.session.as_deref() == Some(session)).collect();
        if mine.is_empty() {
            return Err(disagree(node, "session", "the node has no entry for the session".into()));
        }
        if let Some(e) = mine.iter().find(|e| e.node != *node) {
            return Err(disagree(node, "node", format!("entry {} is node {:?}'s", e.seq, e.node)));
        }
        let mut account = Vec::new();
        for field in &fields {
            let mut value: Option<(u64, &Value)> = None;
            for e in mine.iter().filter(|e| *field != STATE_FIELD || e.kind == FINAL_KIND) {
                match (value, e.body.get(field)) {
                    (None, Some(v)) => value = Some((e.seq, v)),
                    (Some((seq, old)), Some(v)) if old != v => {
                        return Err(disagree(
                            node,
                            field,
                            format!("entry {seq} records {old}, entry {} records {v}", e.seq),
                        ));
                    }
                    _ => {}
                }
            }
            account.push(value.map(|(_, v)| v));
        }
        accounts.push(account);
    }

    let show = |v: Option<&Value>| v.map_or_else(|| "nothing".to_owned(), Value::to_string);
    let mut agreed = BTreeMap::new();
    for (f, field) in fields.iter().enumerate() {
        let values: Vec<Option<&Value>> = accounts.iter().map(|a| a[f]).collect();
        let count = |v: &Option<&Value>| values.iter().filter(|w| *w == v).count();
        let mut majority = values[0];
        for v in &values {
            if count(v) > count(&majority) {
                majority = *v;
            }
        }
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| **v != majority) {
            let reason =
                format!("records {}, {} of {} nodes record {}", show(*v), count(&majority), logs.len(), show(majority));
            return Err(disagree(logs[i].0, field, reason));
        }
        if let Some(v) = majority {
            agreed.insert((*field).to_owned(), v.clone());
        }
    }

    let nodes: Vec<String> = logs.iter().map(|(n, _)| (*n).to_owned()).collect();
    let mut parties_missing = Vec::new();
    if let Some(parties) = agreed.get("parties").and_then(Value::as_array) {
        let names: Vec<&str> = parties.iter().filter_map(Value::as_str).collect();
        if let Some(outsider) = nodes.iter().find(|n| !names.contains(&n.as_str())) {
            return Err(disagree(
                outsider,
                "parties",
                format!("the node is not among the parties {}", Value::Array(parties.clone())),
            ));
        }
        parties_missing = names.iter().filter(|p| !nodes.iter().any(|n| n == *p)).map(|p| (*p).to_owned()).collect();
    }
    Ok(CrossCheck { session: session.to_owned(), nodes, agreed, parties_missing })
}
