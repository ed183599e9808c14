//! The export round-trips, is checked against the expected key, and no byte
//! string (random, or a valid export with one byte changed) panics the parser
//! or is accepted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{chain, extend, key, record};
use concord_audit::{export, hex, verify_export, AuditError, Checkpoint, Entry};
use proptest::prelude::*;
use serde_json::json;

fn sample() -> (Vec<Entry>, Checkpoint, Vec<u8>) {
    let k = key(3);
    let mut c = chain("org-a", 3, &k);
    let body = json!({"to": ["org-b"], "result_hash": "ab".repeat(32), "note": "line\nbreak \"q\" é \u{7f}", "n": -5});
    extend(&mut c, "org-a", vec![record(9, "result.revealed", Some("s1"), body)], &k);
    let cp = Checkpoint::sign(&c[3], 10, &k);
    let bytes = export(&c, &cp, "org-a", &k.verifying_key()).unwrap();
    (c, cp, bytes)
}

#[test]
fn export_round_trips() {
    let (c, cp, bytes) = sample();
    let vk = key(3).verifying_key();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert_eq!(text.lines().count(), 6);
    assert!(text.starts_with("{\"format\":\"concord-audit-export\",\"version\":1,\"node\":\"org-a\",\"public_key\":\""));
    let s = verify_export(&bytes, Some(&vk)).unwrap();
    assert_eq!((s.node.as_str(), s.entries, s.checkpoint), ("org-a", c, cp));
    // Without an expected key, the key found is reported for the auditor to compare.
    assert_eq!(verify_export(&bytes, None).unwrap().public_key, hex(vk.as_bytes()));
    assert_eq!(
        verify_export(&bytes, Some(&key(4).verifying_key())),
        Err(AuditError::KeyMismatch { expected: hex(key(4).verifying_key().as_bytes()), found: hex(vk.as_bytes()) })
    );
}

#[test]
fn export_refuses_inconsistent_input() {
    let (c, cp, _) = sample();
    let vk = key(3).verifying_key();
    assert!(export(&c, &cp, "org-b", &vk).is_err());
    assert!(export(&c, &Checkpoint::sign(&c[2], 1, &key(3)), "org-a", &vk).is_err());
    assert!(matches!(export(&c[..2], &cp, "org-a", &vk), Err(AuditError::Truncated { .. })));
    assert!(matches!(export(&c, &cp, "org-a", &key(4).verifying_key()), Err(AuditError::GenesisMismatch)));
}

#[test]
fn tampered_exports_name_the_problem() {
    let (_, _, bytes) = sample();
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let join = |ls: &[&str]| ls.iter().map(|l| format!("{l}\n")).collect::<String>().into_bytes();
    let vk = key(3).verifying_key();
    // An entry removed, or the tail cut off (with or without the trailer).
    let removed = join(&[lines[0], lines[1], lines[3], lines[4], lines[5]]);
    assert_eq!(verify_export(&removed, Some(&vk)), Err(AuditError::Missing { position: 1, found: 2 }));
    let cut = join(&[lines[0], lines[1], lines[2], lines[5]]);
    assert_eq!(verify_export(&cut, Some(&vk)), Err(AuditError::Truncated { checkpoint_seq: 3, len: 2 }));
    assert!(matches!(verify_export(&join(&lines[..4]), Some(&vk)), Err(AuditError::Export { line: 4, .. })));
    // An edited body.
    let edited = text.replace("\"n\":-5", "\"n\":-6").into_bytes();
    assert_eq!(verify_export(&edited, Some(&vk)), Err(AuditError::HashMismatch { seq: 3 }));
    // Another node's export under this node's header: the key does not sign it.
    let kb = key(4);
    let b = chain("org-a", 4, &kb);
    let other = export(&b, &Checkpoint::sign(&b[3], 1, &kb), "org-a", &kb.verifying_key()).unwrap();
    let other_text = String::from_utf8(other).unwrap();
    let other_lines: Vec<&str> = other_text.lines().collect();
    let spliced = join(&[lines[0], other_lines[1], other_lines[2], other_lines[3], other_lines[4], other_lines[5]]);
    assert_eq!(verify_export(&spliced, None), Err(AuditError::GenesisMismatch));
    // A trailer that does not vouch for the last entry.
    let (c, _, _) = sample();
    let early = format!("{{\"checkpoint\":{}}}", Checkpoint::sign(&c[2], 10, &key(3)).to_json());
    let unwitnessed = join(&[lines[0], lines[1], lines[2], lines[3], lines[4], &early]);
    assert!(matches!(verify_export(&unwitnessed, Some(&vk)), Err(AuditError::Export { line: 6, .. })));
    // Not UTF-8, on line 3.
    let mut bad = text.clone().into_bytes();
    let at = lines[0].len() + lines[1].len() + 5;
    bad[at] = 0xff;
    assert!(matches!(verify_export(&bad, None), Err(AuditError::Export { line: 3, .. })));
}

#[test]
fn every_byte_position_is_checked() {
    let (_, _, bytes) = sample();
    for i in 0..bytes.len() {
        for flip in [0x01, 0x20, 0x80] {
            let mut changed = bytes.clone();
            changed[i] ^= flip;
            assert!(verify_export(&changed, None).is_err(), "byte {i} ^ {flip:#x}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(verify_export(&bytes, None).is_err());
    }

    #[test]
    fn random_bytes_after_a_valid_header_are_refused(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
        let (_, _, bytes) = sample();
        let header_end = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
        let mut input = bytes[..header_end].to_vec();
        input.extend_from_slice(&tail);
        prop_assert!(verify_export(&input, None).is_err());
    }

    #[test]
    fn any_changed_byte_is_refused(at in any::<prop::sample::Index>(), flip in 1u8..=255, cut in any::<prop::sample::Index>()) {
        let (_, _, bytes) = sample();
        let mut changed = bytes.clone();
        let i = at.index(bytes.len());
        changed[i] ^= flip;
        prop_assert!(verify_export(&changed, None).is_err(), "byte {} {:?} -> {:?}", i, bytes[i] as char, changed[i] as char);
        let mut removed = bytes.clone();
        removed.remove(i);
        prop_assert!(verify_export(&removed, None).is_err());
        let mut inserted = bytes.clone();
        inserted.insert(i, flip);
        prop_assert!(verify_export(&inserted, None).is_err());
        prop_assert!(verify_export(&bytes[..cut.index(bytes.len())], None).is_err());
    }
}
