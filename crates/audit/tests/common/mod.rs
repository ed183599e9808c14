//! Shared test helpers: deterministic keys and chains.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use concord_audit::{append, Entry, Record};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

/// A fixed key per seed byte.
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A record.
pub fn record(time_ms: u64, kind: &str, session: Option<&str>, body: Value) -> Record {
    Record { time_ms, kind: kind.into(), session: session.map(Into::into), body }
}

/// Append each record to `chain`.
pub fn extend(chain: &mut Vec<Entry>, node: &str, records: Vec<Record>, key: &SigningKey) {
    for r in records {
        let e = append(chain.last(), node, r, key).unwrap();
        chain.push(e);
    }
}

/// A chain of `n` varied entries.
pub fn chain(node: &str, n: u64, key: &SigningKey) -> Vec<Entry> {
    const KINDS: [&str; 4] = ["request.received", "policy.decision", "approval", "budget.spent"];
    let mut c = Vec::new();
    let records = (0..n)
        .map(|i| {
            record(
                1_700_000_000_000 + i,
                KINDS[(i % 4) as usize],
                (i % 2 == 0).then_some("s1"),
                json!({"i": i, "who": node}),
            )
        })
        .collect();
    extend(&mut c, node, records, key);
    c
}
