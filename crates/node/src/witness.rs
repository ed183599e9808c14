//! Peers witness each other's audit logs.
//!
//! A node's own signed head file shows truncation to whoever reads it, but a
//! node whose operator controls its signing key can cut its log, re-sign the
//! head and look intact. So every heartbeat (`ping`) carries the sender's
//! latest signed head checkpoint ([`concord_audit::Checkpoint`]); the
//! receiver verifies it under the sender's pinned Ed25519 key and keeps every
//! new one (`audit_witness`, one row per node and seq). An auditor then checks
//! a node's export against the checkpoints its peers hold
//! (`concord audit verify-export FILE --witness URL`, which uses
//! [`concord_audit::verify_with_checkpoints`]): a rewritten or truncated log no
//! longer contains the entries the peers saw vouched for.
//!
//! A peer that sends a checkpoint contradicting one already held (another
//! hash at the same seq: its log forked) or going backwards (a lower seq than
//! the highest held: its log was cut) is reported as an event
//! (`audit.peer_forked`, `audit.peer_rolled_back`), hence in the receiver's own
//! audit log; the checkpoint is not stored, so the evidence held stays the
//! first one.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use concord_audit::Checkpoint;
use ed25519_dalek::VerifyingKey;
use rusqlite::{params, OptionalExtension};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::server::AppState;
use crate::service::Service;
use crate::store::Store;
use crate::{hex, unhex, unix_now, NodeError};

/// Checkpoints kept per peer (the oldest are dropped beyond it).
pub const MAX_PER_PEER: i64 = 10_000;

/// What receiving a peer's checkpoint did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Witnessed {
    /// A new checkpoint, stored.
    New,
    /// The same checkpoint was already held (or an equal one at the same seq).
    Known,
    /// Another hash at a seq already held: the peer's log forked.
    Forked {
        /// The hash held, hex.
        held: String,
    },
    /// A seq below the highest held: the peer's log went backwards.
    RolledBack {
        /// The highest seq held.
        held_seq: u64,
    },
}

fn sql(store: &Store) -> impl Fn(rusqlite::Error) -> NodeError + '_ {
    move |source| NodeError::Store { path: store.path().to_owned(), source }
}

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Keep `cp` (already verified) as evidence about `cp.node`'s log.
pub fn record(store: &Store, cp: &Checkpoint) -> Result<Witnessed, NodeError> {
    let s = sql(store);
    let conn = store.conn();
    let held: Option<String> = conn
        .query_row(
            "SELECT checkpoint FROM audit_witness WHERE node = ?1 AND seq = ?2",
            params![cp.node, seq_i64(cp.seq)],
            |r| r.get(0),
        )
        .optional()
        .map_err(&s)?;
    if let Some(line) = held {
        let same = Checkpoint::from_json(&line).is_ok_and(|h| h.head_hash == cp.head_hash);
        return Ok(if same {
            Witnessed::Known
        } else {
            let held = Checkpoint::from_json(&line).map(|h| hex(&h.head_hash)).unwrap_or(line);
            Witnessed::Forked { held }
        });
    }
    let highest: Option<i64> =
        conn.query_row("SELECT MAX(seq) FROM audit_witness WHERE node = ?1", [&cp.node], |r| r.get(0)).map_err(&s)?;
    if let Some(h) = highest.filter(|h| *h > seq_i64(cp.seq)) {
        return Ok(Witnessed::RolledBack { held_seq: u64::try_from(h).unwrap_or(0) });
    }
    conn.execute(
        "INSERT INTO audit_witness (node, seq, checkpoint, received_at) VALUES (?1, ?2, ?3, ?4)",
        params![cp.node, seq_i64(cp.seq), cp.to_json(), unix_now()],
    )
    .map_err(&s)?;
    conn.execute(
        "DELETE FROM audit_witness WHERE node = ?1 AND seq NOT IN
           (SELECT seq FROM audit_witness WHERE node = ?1 ORDER BY seq DESC LIMIT ?2)",
        params![cp.node, MAX_PER_PEER],
    )
    .map_err(&s)?;
    Ok(Witnessed::New)
}

/// The checkpoints of `node`'s log held here, by seq.
pub fn held(store: &Store, node: &str) -> Result<Vec<Checkpoint>, NodeError> {
    let s = sql(store);
    let mut stmt =
        store.conn().prepare("SELECT checkpoint FROM audit_witness WHERE node = ?1 ORDER BY seq").map_err(&s)?;
    let lines = stmt.query_map([node], |r| r.get::<_, String>(0)).map_err(&s)?;
    let mut out = Vec::new();
    for line in lines {
        let line = line.map_err(&s)?;
        out.push(Checkpoint::from_json(&line).map_err(|e| NodeError::Corrupt {
            path: store.path().to_owned(),
            reason: format!("a witnessed checkpoint of {node:?}: {e}"),
        })?);
    }
    Ok(out)
}

impl Service {
    /// This node's latest signed head checkpoint, to send with a heartbeat.
    pub(crate) fn own_checkpoint(&self) -> Option<String> {
        self.store().audit_head().ok().flatten().map(|cp| cp.to_json())
    }

    /// A checkpoint `from` sent with its heartbeat: verified under its pinned
    /// key and kept; contradictions are recorded as events.
    pub(crate) fn on_checkpoint(&self, from: &str, line: &str) {
        if let Err(why) = self.witness(from, line) {
            tracing::warn!(peer = from, "ignored an audit checkpoint: {why}");
        }
    }

    fn witness(&self, from: &str, line: &str) -> Result<(), String> {
        let cp = Checkpoint::from_json(line)?;
        if cp.node != from {
            return Err(format!("it is of node {:?}'s log", cp.node));
        }
        let peers = self.store().list_peers().map_err(|e| e.to_string())?;
        let peer = peers.into_iter().find(|p| p.name == from).ok_or("not a paired peer")?;
        let key = unhex(&peer.ed25519_public)
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .and_then(|k| VerifyingKey::from_bytes(&k).ok())
            .ok_or("the pinned key is corrupt")?;
        cp.verify(&key).map_err(|e| e.to_string())?;
        let outcome = record(&self.store(), &cp).map_err(|e| e.to_string())?;
        let event = match &outcome {
            Witnessed::New | Witnessed::Known => return Ok(()),
            Witnessed::Forked { held } => (
                "audit.peer_forked",
                format!(
                    "peer {from:?} signed entry {} of its audit log with hash {}, but this node holds its earlier \
                     checkpoint of entry {} with hash {held}: its log was rewritten",
                    cp.seq,
                    hex(&cp.head_hash),
                    cp.seq
                ),
            ),
            Witnessed::RolledBack { held_seq } => (
                "audit.peer_rolled_back",
                format!(
                    "peer {from:?} signed its audit log's head at entry {}, but this node holds its checkpoint of \
                     entry {held_seq}: its log was cut",
                    cp.seq
                ),
            ),
        };
        tracing::error!(peer = from, "{}", event.1);
        let _ = self.store().record_event(event.0, &event.1);
        Ok(())
    }
}

/// Query of `GET /api/audit/witness`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessQuery {
    /// The node whose checkpoints are asked for.
    pub node: String,
}

/// `GET /api/audit/witness?node=NAME`: the checkpoints of `NAME`'s audit log
/// this node received and verified, by seq (each as its canonical JSON object).
pub async fn api_witness(
    State(state): State<AppState>,
    query: Result<Query<WitnessQuery>, QueryRejection>,
) -> Response {
    let error = |status: StatusCode, code: &str, message: String| {
        (status, Json(json!({ "error": { "code": code, "message": message } }))).into_response()
    };
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    let answer = state.with_store(|s| held(s, &q.node));
    match answer {
        Some(Ok(cps)) => {
            let list: Vec<Value> =
                cps.iter().map(|cp| serde_json::from_str(&cp.to_json()).unwrap_or(Value::Null)).collect();
            Json(json!({ "node": q.node, "checkpoints": list })).into_response()
        }
        Some(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        None => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the store lock is poisoned".into()),
    }
}

/// Add `GET /api/audit/witness` to the OpenAPI document.
pub fn add_openapi(doc: &mut Value) {
    doc["paths"]["/api/audit/witness"] = json!({ "get": {
        "summary": "The checkpoints of a peer's audit log that this node received with its heartbeats and verified (evidence against a rewritten log)",
        "parameters": [ { "name": "node", "in": "query", "required": true, "schema": { "type": "string" } } ],
        "responses": {
            "200": { "description": "Checkpoints, by seq", "content": { "application/json": { "schema": {
                "type": "object", "required": ["node", "checkpoints"], "properties": {
                    "node": { "type": "string" },
                    "checkpoints": { "type": "array", "items": { "$ref": "#/components/schemas/AuditCheckpoint" } } } } } } },
            "400": { "description": "Error" }, "500": { "description": "Error" } }
    } });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use concord_audit::{append, Record};
    use ed25519_dalek::SigningKey;

    fn chain(key: &SigningKey, n: usize, tag: &str) -> Vec<concord_audit::Entry> {
        let mut out: Vec<concord_audit::Entry> = Vec::new();
        for i in 0..n {
            let record = Record {
                time_ms: 1_000 + i as u64,
                kind: "test.event".into(),
                session: None,
                body: json!({ "i": i, "tag": tag }),
            };
            let e = append(out.last(), "b", record, key).unwrap();
            out.push(e);
        }
        out
    }

    #[test]
    fn checkpoints_are_kept_and_contradictions_named() {
        let store = Store::open_in_memory().unwrap();
        let key = SigningKey::from_bytes(&[5; 32]);
        let log = chain(&key, 6, "x");
        let cp = |e: &concord_audit::Entry| Checkpoint::sign(e, 9, &key);
        assert_eq!(record(&store, &cp(&log[2])).unwrap(), Witnessed::New);
        assert_eq!(record(&store, &cp(&log[2])).unwrap(), Witnessed::Known);
        assert_eq!(record(&store, &cp(&log[4])).unwrap(), Witnessed::New);
        // The log cut to 3 entries and re-signed: its head goes backwards.
        assert_eq!(record(&store, &cp(&log[3])).unwrap(), Witnessed::RolledBack { held_seq: 4 });
        // Rewritten from entry 0: same seq, another hash.
        let other = chain(&key, 6, "y");
        assert_eq!(
            record(&store, &cp(&other[4])).unwrap(),
            Witnessed::Forked { held: hex(&log[4].hash) },
            "the first evidence is kept"
        );
        let held = held(&store, "b").unwrap();
        assert_eq!(held.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![2, 4]);
        // What an auditor does with them: the true log passes, the rewritten one and a cut one do not.
        let vk = key.verifying_key();
        assert!(concord_audit::verify_with_checkpoints(&log, &vk, &held).is_ok());
        assert!(concord_audit::verify_with_checkpoints(&other, &vk, &held).is_err());
        assert!(concord_audit::verify_with_checkpoints(&log[..4], &vk, &held).is_err());
        assert!(super::held(&store, "nobody").unwrap().is_empty());
    }
}
