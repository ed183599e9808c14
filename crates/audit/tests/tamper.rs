//! Tampering with a chain is detected, and the error names the entry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{chain, extend, key, record};
use concord_audit::{append, genesis_hash, verify, verify_with_checkpoints, AuditError, Checkpoint, Entry, Record};
use ed25519_dalek::Signer;
use proptest::prelude::*;
use serde_json::{json, Value};

#[test]
fn a_fresh_chain_verifies() {
    let k = key(1);
    let c = chain("a", 6, &k);
    let s = verify(&c, &k.verifying_key()).unwrap();
    assert_eq!((s.node.as_deref(), s.len, s.head_hash, s.witnessed_seq), (Some("a"), 6, c[5].hash, None));
    assert_eq!(c[0].prev_hash, genesis_hash(&k.verifying_key()));
    let empty = verify(&[], &k.verifying_key()).unwrap();
    assert_eq!((empty.node, empty.len, empty.head_hash), (None, 0, genesis_hash(&k.verifying_key())));
}

#[test]
fn edits_are_detected() {
    let k = key(1);
    let c = chain("a", 5, &k);
    let edits: [fn(&mut Entry); 5] = [
        |e| e.body["i"] = json!(99),
        |e| e.kind = "veto".into(),
        |e| e.time_ms += 1,
        |e| e.session = None,
        |e| e.node = "b".into(),
    ];
    for edit in edits {
        let mut t = c.clone();
        edit(&mut t[2]);
        assert_eq!(verify(&t, &k.verifying_key()), Err(AuditError::HashMismatch { seq: 2 }));
    }
    // An editor without the key recomputes the hash: the signature fails.
    let mut t = c.clone();
    t[2].body["i"] = json!(99);
    t[2].hash = t[2].compute_hash().unwrap();
    assert_eq!(verify(&t, &k.verifying_key()), Err(AuditError::BadSignature { seq: 2 }));
    // A kind out of its domain is reported as such.
    let mut t = c.clone();
    t[3].kind = "Veto!".into();
    assert!(matches!(verify(&t, &k.verifying_key()), Err(AuditError::Malformed { seq: 3, .. })));
}

#[test]
fn removal_and_reordering_are_detected() {
    let k = key(1);
    let c = chain("a", 5, &k);
    let vk = k.verifying_key();
    let mut t = c.clone();
    t.remove(2);
    assert_eq!(verify(&t, &vk), Err(AuditError::Missing { position: 2, found: 3 }));
    let mut t = c.clone();
    t.remove(0);
    assert_eq!(verify(&t, &vk), Err(AuditError::Missing { position: 0, found: 1 }));
    let mut t = c.clone();
    t.swap(1, 3);
    assert_eq!(verify(&t, &vk), Err(AuditError::Reordered { position: 1, found: 3 }));
    let mut t = c.clone();
    t.insert(3, c[2].clone());
    assert_eq!(verify(&t, &vk), Err(AuditError::Reordered { position: 3, found: 2 }));
    // Removing and renumbering breaks the hash; the error names the renumbered entry.
    let mut t = c.clone();
    t.remove(2);
    t[2].seq = 2;
    assert_eq!(verify(&t, &vk), Err(AuditError::HashMismatch { seq: 2 }));
}

#[test]
fn entries_of_another_node_are_detected() {
    let (ka, kb) = (key(1), key(2));
    let (a, b) = (chain("a", 5, &ka), chain("b", 5, &kb));
    let vk = ka.verifying_key();
    let mut t = a.clone();
    t[3] = b[3].clone();
    assert_eq!(verify(&t, &vk), Err(AuditError::BadSignature { seq: 3 }));
    assert_eq!(verify(&b, &vk), Err(AuditError::GenesisMismatch));
    // Even under the same name, another key's chain starts from another genesis.
    let other = chain("a", 5, &kb);
    assert_eq!(verify(&other, &vk), Err(AuditError::GenesisMismatch));
    let mut t = a.clone();
    t[0] = other[0].clone();
    assert_eq!(verify(&t, &vk), Err(AuditError::GenesisMismatch));
    // An entry the node itself signed under another name.
    let mut t = a[..3].to_vec();
    t.push(append(t.last(), "a", record(0, "veto", None, json!({})), &ka).unwrap());
    t[3].node = "z".into();
    t[3].hash = t[3].compute_hash().unwrap();
    t[3].signature = ka.sign(&[concord_audit::TAG_ENTRY_SIGNATURE, &t[3].hash].concat()).to_bytes();
    assert_eq!(verify(&t, &vk), Err(AuditError::NodeMismatch { seq: 3, expected: "a".into(), found: "z".into() }));
}

#[test]
fn prev_hash_links_are_checked() {
    // The node's own key re-signs an entry whose link skips its predecessor.
    let k = key(1);
    let c = chain("a", 4, &k);
    let mut t = c[..2].to_vec();
    t.push(append(Some(&c[0]), "a", record(5, "veto", None, json!({})), &k).unwrap());
    t[2].seq = 2;
    t[2].hash = t[2].compute_hash().unwrap();
    t[2].signature = k.sign(&[concord_audit::TAG_ENTRY_SIGNATURE, &t[2].hash].concat()).to_bytes();
    assert_eq!(verify(&t, &k.verifying_key()), Err(AuditError::PrevHashMismatch { seq: 2 }));
}

#[test]
fn checkpoints_catch_truncation_and_rewriting() {
    let k = key(1);
    let vk = k.verifying_key();
    let c = chain("a", 6, &k);
    let cp3 = Checkpoint::sign(&c[3], 10, &k);
    let cp5 = Checkpoint::sign(&c[5], 11, &k);
    let s = verify_with_checkpoints(&c, &vk, &[cp3.clone(), cp5.clone()]).unwrap();
    assert_eq!(s.witnessed_seq, Some(5));
    // Truncation: a valid checkpoint beyond the end.
    assert_eq!(verify(&c[..4], &vk).map(|s| s.len), Ok(4));
    assert_eq!(
        verify_with_checkpoints(&c[..4], &vk, &[cp3.clone(), cp5.clone()]),
        Err(AuditError::Truncated { checkpoint_seq: 5, len: 4 })
    );
    assert_eq!(
        verify_with_checkpoints(&[], &vk, std::slice::from_ref(&cp3)),
        Err(AuditError::Truncated { checkpoint_seq: 3, len: 0 })
    );
    // Rewriting: the node re-signs a different history from entry 2 on.
    let mut fork = c[..2].to_vec();
    extend(&mut fork, "a", vec![record(7, "approval", None, json!({"forged": 1})); 4], &k);
    assert!(verify(&fork, &vk).is_ok());
    assert_eq!(verify_with_checkpoints(&fork, &vk, std::slice::from_ref(&cp3)), Err(AuditError::Forked { seq: 3 }));
    // Forged checkpoints: another key, or an altered field.
    let other = Checkpoint::sign(&c[5], 11, &key(2));
    assert_eq!(
        verify_with_checkpoints(&c, &vk, &[cp3.clone(), other]),
        Err(AuditError::CheckpointSignature { seq: 5 })
    );
    let mut moved = cp3.clone();
    moved.seq = 9;
    assert_eq!(verify_with_checkpoints(&c[..4], &vk, &[moved]), Err(AuditError::CheckpointSignature { seq: 9 }));
    let mut rehashed = cp5.clone();
    rehashed.head_hash = fork[5].hash;
    assert_eq!(verify_with_checkpoints(&fork, &vk, &[rehashed]), Err(AuditError::CheckpointSignature { seq: 5 }));
    // A checkpoint the key signed for another chain name.
    let b = chain("b", 6, &k);
    assert!(matches!(
        verify_with_checkpoints(&c, &vk, &[Checkpoint::sign(&b[5], 1, &k)]),
        Err(AuditError::CheckpointNode { seq: 5, .. })
    ));
}

#[test]
fn append_refuses_bad_input() {
    let k = key(1);
    let c = chain("a", 2, &k);
    let ok = || record(1, "approval", Some("s"), json!({"x": 1}));
    assert!(append(c.last(), "b", ok(), &k).is_err());
    assert!(append(c.last(), "a", ok(), &key(2)).is_err());
    let mut broken = c[1].clone();
    broken.time_ms += 1;
    assert!(append(Some(&broken), "a", ok(), &k).is_err());
    let bad: [Record; 5] = [
        record(1, "Approval", None, json!({})),
        record(1, "approval", Some(""), json!({})),
        record(1, "approval", None, json!([1])),
        record(1, "approval", None, json!({"rho": 0.25})),
        record(1, "approval", None, json!({})),
    ];
    for (i, r) in bad.into_iter().enumerate() {
        let node = if i == 4 { "-a" } else { "a" };
        assert!(matches!(append(None, node, r, &k), Err(AuditError::Invalid(_))), "case {i}");
    }
}

#[test]
fn entry_and_checkpoint_lines_round_trip_strictly() {
    let k = key(1);
    let mut c = chain("a", 1, &k);
    extend(
        &mut c,
        "a",
        vec![record(1, "result.revealed", Some("s1"), json!({"to": ["b"], "note": "x\n\"y\"\u{1}é"}))],
        &k,
    );
    for e in &c {
        let line = e.to_json().unwrap();
        assert_eq!(&Entry::from_json(&line).unwrap(), e);
        assert!(Entry::from_json(&line.replace("\"seq\":", "\"seq\": ")).is_err());
        assert!(Entry::from_json(&format!("{line} ")).is_err());
    }
    let line = c[1].to_json().unwrap();
    assert!(Entry::from_json(
        &line.replace(&concord_audit::hex(&c[1].hash), &concord_audit::hex(&c[1].hash).to_uppercase())
    )
    .is_err());
    let cp = Checkpoint::sign(&c[1], 5, &k);
    assert_eq!(Checkpoint::from_json(&cp.to_json()).unwrap(), cp);
    assert!(Checkpoint::from_json(&cp.to_json().replace(",", ", ")).is_err());
}

fn body() -> impl Strategy<Value = Value> {
    let text = proptest::collection::vec(any::<char>(), 0..6).prop_map(String::from_iter);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        text.clone().prop_map(Value::String),
    ];
    let tree = leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,5}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    proptest::collection::btree_map(
        proptest::collection::vec(any::<char>(), 1..5).prop_map(String::from_iter),
        tree,
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn records() -> impl Strategy<Value = Vec<Record>> {
    let one = (any::<u64>(), "[a-z0-9._-]{1,20}", proptest::option::of("[A-Za-z0-9._:-]{1,40}"), body())
        .prop_map(|(time_ms, kind, session, body)| Record { time_ms, kind, session, body });
    proptest::collection::vec(one, 0..10)
}

/// Change one field of an entry to a different value.
fn mutate(e: &mut Entry, field: usize, x: u64) {
    let bit = 1u8 << (x % 8);
    let at = (x / 8) as usize;
    match field {
        0 => e.seq ^= 1 << (x % 64),
        1 => e.time_ms ^= 1 << (x % 64),
        2 => e.node.push('x'),
        3 => {
            if e.kind.len() < 64 {
                e.kind.push('x')
            } else {
                e.kind.pop();
            }
        }
        4 => e.session = if e.session.is_some() { None } else { Some("mutated".into()) },
        5 => {
            let n = e.body.as_object().map_or(0, |m| m.len());
            e.body["~mutated"] = json!(n);
        }
        6 => e.prev_hash[at % 32] ^= bit,
        7 => e.hash[at % 32] ^= bit,
        _ => e.signature[at % 64] ^= bit,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_chains_verify(records in records()) {
        let k = key(7);
        let mut c = Vec::new();
        extend(&mut c, "node-7", records, &k);
        let s = verify(&c, &k.verifying_key()).unwrap();
        prop_assert_eq!(s.len, c.len() as u64);
        if let Some(last) = c.last() {
            let cp = Checkpoint::sign(last, 0, &k);
            prop_assert_eq!(verify_with_checkpoints(&c, &k.verifying_key(), &[cp]).unwrap().witnessed_seq, Some(last.seq));
        }
    }

    #[test]
    fn any_single_mutation_is_detected(records in records(), which in any::<prop::sample::Index>(), field in 0usize..9, x in any::<u64>()) {
        prop_assume!(!records.is_empty());
        let k = key(7);
        let mut c = Vec::new();
        extend(&mut c, "node-7", records, &k);
        let i = which.index(c.len());
        mutate(&mut c[i], field, x);
        let err = verify(&c, &k.verifying_key()).unwrap_err();
        prop_assert_eq!(err.seq(), Some(i as u64), "{}", err);
    }
}

/// The encoding of `NOTES.md`, pinned (its worked example).
#[test]
fn encoding_is_pinned() {
    let k = key(1);
    let r = record(1_700_000_000_000, "approval", Some("s1"), json!({"b": [1, -2], "a": "é\n"}));
    let e0 = append(None, "org-a", r, &k).unwrap();
    let e1 = append(Some(&e0), "org-a", record(1_700_000_000_001, "veto", None, json!({})), &k).unwrap();
    let cp = Checkpoint::sign(&e1, 1_700_000_000_002, &k);
    let hex = concord_audit::hex;
    assert_eq!(hex(k.verifying_key().as_bytes()), "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c");
    assert_eq!(
        hex(&genesis_hash(&k.verifying_key())),
        "1ab18553cecbadf6a9de4efcb63b04d6fb9f9fd22b2e9960ee2b981f0bfd7c78"
    );
    assert_eq!(hex(&e0.hash), "1ebc28836d49fec021161f63fafa3d55a468e767d128a9f48bf26367692e6572");
    assert_eq!(hex(&e1.hash), "14351c5a6f4e7df0f43de22fb64d3599b5bf673975471733302e2c15c3576218");
    assert_eq!(
        e1.to_json().unwrap(),
        concat!(
            r#"{"seq":1,"time_ms":1700000000001,"node":"org-a","kind":"veto","session":null,"body":{},"#,
            r#""prev_hash":"1ebc28836d49fec021161f63fafa3d55a468e767d128a9f48bf26367692e6572","#,
            r#""hash":"14351c5a6f4e7df0f43de22fb64d3599b5bf673975471733302e2c15c3576218","#,
            r#""signature":"238798ac1b2ab9d0a3e413483446cad25e958d6cc1f26ace82d1726ee91c20dc"#,
            r#"d29d542664b4c4a217540704fdb24d05e557c8e7fb1cae4cf724d93317da6308"}"#
        )
    );
    assert_eq!(
        hex(&cp.signature),
        "105c68b17b1dff52b435dec9b9ef076969f437094186bc4f54a05b8c4e12cad6e5def8816d1011ac7fdccbe71b34ebf52d8de9c124d74508895651b74cd1f407"
    );
}
