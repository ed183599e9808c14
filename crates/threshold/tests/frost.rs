//! FROST: DKG, signing, approvals, refresh, repair, encodings, RFC 9591 known answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

mod common;

use common::*;
use concord_threshold::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn statement() -> ResultStatement {
    ResultStatement { request_hash: [7; 32], transcript_hash: [9; 32], result: b"{\"mean\":42}".to_vec() }
}

#[test]
fn dkg_2_of_3_and_3_of_5_sign_with_any_t() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for (n, t) in [(3u16, 2u16), (5, 3)] {
        let (shares, group) = dkg(n, t, &mut rng);
        assert_eq!((group.n(), group.threshold()), (n, t));
        assert_eq!(rt(&group), group);
        let key = group.public_key();
        assert!(key.to_string().starts_with("concord-group-v1:") && key.to_string().len() == 17 + 64);
        assert_eq!(key.to_string().parse::<GroupPublicKey>().unwrap(), key);
        let msg = statement().digest();
        for mask in 1u32..(1 << n) {
            let signers: Vec<u16> = (1..=n).filter(|i| mask & (1 << (i - 1)) != 0).collect();
            if signers.len() < usize::from(t) {
                continue;
            }
            let sig = sign(&shares, &signers, &group, &msg, &mut rng).unwrap();
            verify(&key, &msg, &sig).unwrap();
            assert_eq!(sig.to_string().parse::<Signature>().unwrap(), sig);
            assert_eq!(rt(&sig), sig);
        }
    }
}

#[test]
fn fewer_than_t_cannot_sign() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (shares, group) = dkg(5, 3, &mut rng);
    let msg = statement().digest();
    let (mut nonces, commitments) = commit(&shares, &[1, 2], &mut rng);
    let package = signing_package(&commitments, &msg).unwrap();
    let err = sign_round2(&shares[0], nonces.remove(&1).unwrap(), &package).unwrap_err();
    assert_eq!(err.to_string(), "sign round 2: 2 given, at least 3 (the threshold) are needed");
    // Three sign, the coordinator only has two shares.
    let (mut commitments, mut sig_shares) = sign_shares(&shares, &[1, 2, 3], &msg, &mut rng);
    commitments.remove(&3);
    sig_shares.remove(&3);
    let err = aggregate(&commitments, &sig_shares, &group, &msg).unwrap_err();
    assert_eq!(err.to_string(), "aggregate: 2 given, at least 3 (the threshold) are needed");
}

#[test]
fn altered_statement_or_signature_fails_verification() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (shares, group) = dkg(3, 2, &mut rng);
    let key = group.public_key();
    let st = statement();
    let sig = sign(&shares, &[1, 3], &group, &st.digest(), &mut rng).unwrap();
    verify(&key, &st.digest(), &sig).unwrap();
    let forged = [
        ResultStatement { result: b"{\"mean\":43}".to_vec(), ..st.clone() },
        ResultStatement { transcript_hash: [8; 32], ..st.clone() },
        ResultStatement { request_hash: [8; 32], ..st.clone() },
    ];
    for f in forged {
        let err = verify(&key, &f.digest(), &sig).unwrap_err();
        assert_eq!(err.to_string(), format!("signature does not verify under group key {key} for this message"));
    }
    // A flipped bit in z (the last bytes) is still a valid encoding but not a valid signature.
    let mut hex = sig.to_string();
    let last = if hex.ends_with('0') { "1" } else { "0" };
    hex.replace_range(hex.len() - 1.., last);
    assert!(matches!(verify(&key, &st.digest(), &hex.parse().unwrap()), Err(ThresholdError::InvalidSignature { .. })));
    // Another group's key does not verify it either.
    let (_, other) = dkg(3, 2, &mut rng);
    assert!(verify(&other.public_key(), &st.digest(), &sig).is_err());
    // Approvals are domain separated from results.
    let approval = ApprovalStatement { request_hash: st.request_hash };
    assert_ne!(approval.digest(), st.digest());
    assert_eq!(rt(&approval), approval);
    assert_eq!(rt(&st), st);
}

#[test]
fn k_of_n_owners_approve_a_request() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let owners =
        Consortium::new(["hospital-a", "hospital-b", "lab-c", "registry-d"].map(String::from).to_vec(), 3).unwrap();
    let (shares, group) = dkg(owners.n(), owners.threshold(), &mut rng);
    let approval = ApprovalStatement { request_hash: [0xab; 32] };
    let signers: Vec<u16> = ["hospital-b", "lab-c", "registry-d"].iter().map(|n| owners.index(n).unwrap()).collect();
    let sig = sign(&shares, &signers, &group, &approval.digest(), &mut rng).unwrap();
    verify(&group.public_key(), &approval.digest(), &sig).unwrap();
    let as_result = ResultStatement { request_hash: [0xab; 32], transcript_hash: [0; 32], result: vec![] };
    assert!(verify(&group.public_key(), &as_result.digest(), &sig).is_err());
    // Two owners of four are not enough.
    let (mut nonces, commitments) = commit(&shares, &signers[..2], &mut rng);
    let package = signing_package(&commitments, &approval.digest()).unwrap();
    let first = signers[0];
    let err = sign_round2(&shares[usize::from(first - 1)], nonces.remove(&first).unwrap(), &package).unwrap_err();
    assert!(matches!(err, ThresholdError::NotEnoughShares { got: 2, need: 3, .. }), "{err}");
}

#[test]
fn bad_signature_share_is_blamed_on_its_signer() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let (shares, group) = dkg(5, 3, &mut rng);
    let msg = statement().digest();
    let (commitments, mut sig_shares) = sign_shares(&shares, &[2, 4, 5], &msg, &mut rng);
    let good = aggregate(&commitments, &sig_shares, &group, &msg).unwrap();
    verify(&group.public_key(), &msg, &good).unwrap();
    let fives = sig_shares[&5];
    sig_shares.insert(4, fives);
    let err = aggregate(&commitments, &sig_shares, &group, &msg).unwrap_err();
    assert_eq!(err.culprit(), Some(4));
    assert_eq!(err.to_string(), "aggregate: participant 4 misbehaved: Invalid signature share.");
    // Shares for another message are blamed too.
    let err = aggregate(&commitments, &sig_shares, &group, b"another message").unwrap_err();
    assert!(matches!(err, ThresholdError::Misbehaviour { .. }), "{err}");
    // Mismatched sets and unknown signers are named.
    let mut fewer = sig_shares.clone();
    fewer.remove(&2);
    let err = aggregate(&commitments, &fewer, &group, &msg).unwrap_err();
    assert_eq!(err.to_string(), "aggregate: no message from participant 2");
    let mut more = sig_shares.clone();
    more.insert(1, fives);
    let err = aggregate(&commitments, &more, &group, &msg).unwrap_err();
    assert_eq!(err.to_string(), "aggregate: unexpected message from participant 1");
    more.insert(9, fives);
    let err = aggregate(&commitments, &more, &group, &msg).unwrap_err();
    assert_eq!(err.to_string(), "aggregate: participant 9 is not a member (indices are 1..=5)");
    // A signer refuses a package without its commitment.
    let (mut nonces, _) = commit(&shares, &[1], &mut rng);
    let package = signing_package(&commitments, &msg).unwrap();
    let err = sign_round2(&shares[0], nonces.remove(&1).unwrap(), &package).unwrap_err();
    assert!(err.to_string().starts_with("sign round 2: The Signing Package must contain"), "{err}");
}

#[test]
fn dkg_errors_name_the_participant() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    assert!(dkg_round1(1, 3, 4, &mut rng).unwrap_err().to_string().contains("threshold = 4"));
    assert_eq!(
        dkg_round1(4, 3, 2, &mut rng).unwrap_err().to_string(),
        "DKG round 1: participant 4 is not a member (indices are 1..=3)"
    );
    let fresh = |rng: &mut ChaCha20Rng| (1..=3).map(|i| dkg_round1(i, 3, 2, rng).unwrap()).collect::<Vec<_>>();
    let r1 = fresh(&mut rng);
    let msgs: BTreeMap<u16, Round1Msg> = r1.iter().enumerate().map(|(k, (_, m))| (k as u16 + 1, m.clone())).collect();
    let [(s1, _), (s2, _), (s3, _)]: [_; 3] = r1.try_into().unwrap();
    // Missing, unexpected (our own), and a proof of knowledge that is not the sender's.
    let mut only2 = others(&msgs, 1);
    only2.remove(&3);
    assert_eq!(dkg_round2(s1, &only2).unwrap_err().to_string(), "DKG round 2: no message from participant 3");
    assert_eq!(dkg_round2(s2, &msgs).unwrap_err().to_string(), "DKG round 2: unexpected message from participant 2");
    let mut swapped = others(&msgs, 1);
    swapped.insert(2, msgs[&3].clone());
    let s1 = Round1Secret::import_secret(&fresh(&mut rng)[0].0.export_secret().unwrap()).unwrap();
    let err = dkg_round2(s1, &swapped).unwrap_err();
    assert_eq!(
        (err.culprit(), err.to_string().as_str()),
        (Some(2), "DKG round 2: participant 2 misbehaved: The proof of knowledge is not valid.")
    );
    drop(s3);

    // A wrong round-2 share: member 1 gets, as 2's share, the one 3 made for it.
    let r1 = fresh(&mut rng);
    let msgs: BTreeMap<u16, Round1Msg> = r1.iter().enumerate().map(|(k, (_, m))| (k as u16 + 1, m.clone())).collect();
    let mut r2 = BTreeMap::new();
    let mut secrets = Vec::new();
    for (k, (s, _)) in r1.into_iter().enumerate() {
        let me = k as u16 + 1;
        let (s, out) = dkg_round2(s, &others(&msgs, me)).unwrap();
        secrets.push(s);
        r2.insert(me, out);
    }
    let mut for1: BTreeMap<u16, Round2Msg> = [(2, r2[&2][&1].clone()), (3, r2[&3][&1].clone())].into();
    dkg_finish(&secrets[0], &others(&msgs, 1), &for1).unwrap();
    let mut changed = others(&msgs, 1);
    changed.insert(2, msgs[&3].clone());
    assert_eq!(
        dkg_finish(&secrets[0], &changed, &for1).unwrap_err().to_string(),
        "invalid arguments: DKG finish: the round-1 messages differ from those of round 2"
    );
    for1.insert(2, r2[&3][&1].clone());
    let err = dkg_finish(&secrets[0], &others(&msgs, 1), &for1).unwrap_err();
    assert_eq!(err.to_string(), "DKG finish: participant 2 misbehaved: Invalid secret share.");
    assert_eq!(format!("{:?}", secrets[0]), "Round2Secret([redacted])");
    assert!(Round2Secret::import_secret("{}")
        .unwrap_err()
        .to_string()
        .starts_with("cannot decode DKG round-2 secret:"));
}

#[test]
fn equivocation_in_round1_is_detected() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let r1: Vec<_> = (1..=3).map(|i| dkg_round1(i, 3, 2, &mut rng).unwrap()).collect();
    let (_, other3) = dkg_round1(3, 3, 2, &mut rng).unwrap();
    let msgs: BTreeMap<u16, Round1Msg> = r1.iter().enumerate().map(|(k, (_, m))| (k as u16 + 1, m.clone())).collect();
    // Member 3 shows member 1 a different round-1 message than the one member 2 sees.
    let mut seen_by_1 = others(&msgs, 1);
    seen_by_1.insert(3, other3);
    let mut it = r1.into_iter();
    let (_, from1) = dkg_round2(it.next().unwrap().0, &seen_by_1).unwrap();
    let (s2, _) = dkg_round2(it.next().unwrap().0, &others(&msgs, 2)).unwrap();
    let (_, from3) = dkg_round2(it.next().unwrap().0, &others(&msgs, 3)).unwrap();
    let for2: BTreeMap<u16, Round2Msg> = [(1, from1[&2].clone()), (3, from3[&2].clone())].into();
    let err = dkg_finish(&s2, &others(&msgs, 2), &for2).unwrap_err();
    assert!(matches!(err, ThresholdError::InconsistentBroadcast { participant: 1, .. }), "{err}");
    assert!(err.to_string().starts_with("DKG finish: participant 1 saw different broadcast messages"), "{err}");
}

#[test]
fn refresh_keeps_the_group_key_and_old_shares_do_not_mix() {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let (old, old_group) = dkg(5, 3, &mut rng);
    let r1 = old
        .iter()
        .map(|s| {
            let (s, m) = refresh_round1(s, &old_group, &mut rng).unwrap();
            (RefreshRound1Secret::import_secret(&s.export_secret().unwrap()).unwrap(), m)
        })
        .collect();
    let reload = |s: &RefreshRound2Secret| RefreshRound2Secret::import_secret(&s.export_secret().unwrap()).unwrap();
    let old_copies: Vec<KeyShare> =
        old.iter().map(|s| KeyShare::import_secret(&s.export_secret().unwrap()).unwrap()).collect();
    let mut old_iter = old_copies.into_iter();
    let out = two_rounds(r1, refresh_round2, reload, |_, s, r1, r2| {
        refresh_finish(s, r1, r2, old_iter.next().unwrap(), &old_group)
    });
    let group = out[0].1.clone();
    assert!(out.iter().all(|(_, g)| *g == group));
    assert_eq!(group.public_key(), old_group.public_key());
    assert_ne!(group, old_group, "verifying shares change");
    let new: Vec<KeyShare> = out.into_iter().map(|(s, _)| s).collect();
    let msg = statement().digest();
    verify(&group.public_key(), &msg, &sign(&new, &[1, 4, 5], &group, &msg, &mut rng).unwrap()).unwrap();
    // Member 4 signs with its old share, members 1 and 5 with their new ones.
    let (mut n, mut commitments) = commit(&new, &[1, 5], &mut rng);
    let (n4, c4) = sign_round1(&old[3], &mut rng);
    commitments.insert(4, c4);
    let package = signing_package(&commitments, &msg).unwrap();
    let mut sig_shares = BTreeMap::new();
    for i in [1u16, 5] {
        sig_shares.insert(i, sign_round2(&new[usize::from(i - 1)], n.remove(&i).unwrap(), &package).unwrap());
    }
    sig_shares.insert(4, sign_round2(&old[3], n4, &package).unwrap());
    let err = aggregate(&commitments, &sig_shares, &group, &msg).unwrap_err();
    assert!(matches!(err, ThresholdError::Misbehaviour { participant: 4, .. }), "{err}");
    let err = aggregate(&commitments, &sig_shares, &old_group, &msg).unwrap_err();
    assert!(matches!(err, ThresholdError::Misbehaviour { participant: 1, .. }), "{err}");
    // A share of another group cannot start a refresh.
    let (_, foreign) = dkg(5, 3, &mut rng);
    assert_eq!(
        refresh_round1(&new[0], &foreign, &mut rng).unwrap_err().to_string(),
        "invalid arguments: the key share is not of this group key"
    );
}

#[test]
fn repair_rebuilds_a_lost_share() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let (shares, group) = dkg(5, 3, &mut rng);
    let (helpers, lost) = ([1u16, 2, 5], 4u16);
    let mut deltas: BTreeMap<u16, BTreeMap<u16, RepairDelta>> = BTreeMap::new();
    for &h in &helpers {
        for (to, d) in repair_round1(&shares[usize::from(h - 1)], &helpers, lost, &mut rng).unwrap() {
            assert_eq!(format!("{d:?}"), "RepairDelta([redacted])");
            deltas.entry(to).or_default().insert(h, rt(&d));
        }
    }
    let sigmas: BTreeMap<u16, RepairSigma> =
        helpers.iter().map(|h| (*h, rt(&repair_round2(&deltas[h]).unwrap()))).collect();
    let repaired = repair_finish(lost, &sigmas, &group).unwrap();
    assert_eq!((repaired.index(), repaired.group_public_key()), (4, group.public_key()));
    let mut all: Vec<KeyShare> =
        shares.iter().map(|s| KeyShare::import_secret(&s.export_secret().unwrap()).unwrap()).collect();
    all[3] = repaired;
    let msg = statement().digest();
    verify(&group.public_key(), &msg, &sign(&all, &[2, 3, 4], &group, &msg, &mut rng).unwrap()).unwrap();
    // Errors.
    let mut bad = sigmas.clone();
    bad.insert(2, sigmas[&1].clone());
    assert_eq!(
        repair_finish(lost, &bad, &group).unwrap_err().to_string(),
        "repair: the recovered share of participant 4 does not match its verifying share in the group key (a helper sent a wrong value, or the helpers differ)"
    );
    let garbage: RepairSigma = serde_json::from_str(&format!("\"{}\"", "ff".repeat(32))).unwrap();
    bad.insert(2, garbage);
    assert_eq!(
        repair_finish(lost, &bad, &group).unwrap_err().to_string(),
        "repair finish: participant 2 misbehaved: malformed sigma"
    );
    let garbage: RepairDelta = serde_json::from_str(&format!("\"{}\"", "ff".repeat(32))).unwrap();
    let mut bad_deltas = deltas[&1].clone();
    bad_deltas.insert(5, garbage);
    assert_eq!(
        repair_round2(&bad_deltas).unwrap_err().to_string(),
        "repair round 2: participant 5 misbehaved: malformed delta"
    );
    bad.remove(&2);
    assert_eq!(
        repair_finish(lost, &bad, &group).unwrap_err().to_string(),
        "repair finish: 2 given, at least 3 (the threshold) are needed"
    );
    assert_eq!(
        repair_round1(&shares[0], &[1, 2], lost, &mut rng).unwrap_err().to_string(),
        "repair round 1: 2 given, at least 3 (the threshold) are needed"
    );
    assert_eq!(
        repair_round1(&shares[0], &[1, 2, 4], lost, &mut rng).unwrap_err().to_string(),
        "invalid arguments: participant 4 cannot help repair its own share"
    );
    assert_eq!(
        repair_round1(&shares[0], &[1, 2, 2], lost, &mut rng).unwrap_err().to_string(),
        "repair round 1: participant 2 appears more than once"
    );
}

#[test]
fn secrets_are_redacted_and_checked_on_import() {
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let (shares, group) = dkg(3, 2, &mut rng);
    assert_eq!(format!("{:?}", shares[1]), "KeyShare { index: 2, share: [redacted] }");
    let (nonces, _) = sign_round1(&shares[0], &mut rng);
    assert_eq!(format!("{nonces:?}"), "Nonces([redacted])");
    let (r1, _) = dkg_round1(2, 3, 2, &mut rng).unwrap();
    assert_eq!(format!("{r1:?}"), "Round1Secret([redacted])");
    // A state whose recorded index disagrees with its package is refused.
    let json = r1.export_secret().unwrap().replacen("\"me\":2", "\"me\":3", 1);
    assert_eq!(
        Round1Secret::import_secret(&json).unwrap_err().to_string(),
        "cannot decode DKG round-1 secret: the package does not match the recorded index, n or threshold"
    );
    let json = shares[0].export_secret().unwrap().replacen("\"index\":1", "\"index\":2", 1);
    assert_eq!(
        KeyShare::import_secret(&json).unwrap_err().to_string(),
        "cannot decode key share: the identifier does not match the index"
    );
    // A group key with a threshold of 1.
    let mut g = serde_json::to_value(&group).unwrap();
    g["min_signers"] = 1.into();
    assert_eq!(
        serde_json::from_value::<GroupKey>(g).unwrap_err().to_string(),
        "cannot decode group key: members must be 1..=n with a threshold 2 <= t <= n"
    );
    // A verifying share that is not the signing share's.
    let mut v: serde_json::Value = serde_json::from_str(&shares[0].export_secret().unwrap()).unwrap();
    let s2: serde_json::Value = serde_json::from_str(&shares[1].export_secret().unwrap()).unwrap();
    v["package"]["verifying_share"] = s2["package"]["verifying_share"].clone();
    assert_eq!(
        KeyShare::import_secret(&v.to_string()).unwrap_err().to_string(),
        "cannot decode key share: the signing share does not match the verifying share"
    );
}

#[test]
fn text_encodings_reject_garbage() {
    let err = "concord-group-v2:00".parse::<GroupPublicKey>().unwrap_err();
    assert_eq!(err.to_string(), "cannot decode group public key: does not start with \"concord-group-v1:\"");
    let err = "concord-group-v1:00".parse::<GroupPublicKey>().unwrap_err();
    assert_eq!(err.to_string(), "cannot decode group public key: expected 64 hex digits");
    let err = format!("concord-group-v1:{}", "ff".repeat(32)).parse::<GroupPublicKey>().unwrap_err();
    assert!(err.to_string().starts_with("cannot decode group public key: "), "{err}");
    let err = "abcd".parse::<Signature>().unwrap_err();
    assert_eq!(err.to_string(), "cannot decode signature: expected 128 hex digits");
    assert!("ff".repeat(64).parse::<Signature>().is_err());
}

/// RFC 9591 Appendix E.2, FROST(ristretto255, SHA-512): signers 1 and 3 of a 2-of-3 group,
/// run through this crate's import, signing, aggregation and encodings.
#[test]
fn rfc9591_ristretto255_known_answer() {
    use curve25519_dalek::{constants::RISTRETTO_BASEPOINT_POINT as G, Scalar};
    let hex_of = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let unhex =
        |s: &str| (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect::<Vec<u8>>();
    let point_of = |share: &str| {
        let s = Scalar::from_canonical_bytes(unhex(share).try_into().unwrap()).unwrap();
        hex_of((s * G).compress().as_bytes())
    };
    let group_key = "e2a62f39eede11269e3bd5a7d97554f5ca384f9f6d3dd9c3c0d05083c7254f57";
    let message = unhex("74657374");
    let shares = [
        "5c3430d391552f6e60ecdc093ff9f6f4488756aa6cebdbad75a768010b8f830e",
        "b06fc5eac20b4f6e1b271d9df2343d843e1e1fb03c4cbb673f2872d459ce6f01",
        "f17e505f0e2581c6acfe54d3846a622834b5e7b50cad9a2109a97ba7a80d5c04",
    ];
    let nonces = [
        (
            1u16,
            "b16f611649233ec528d20759e8cf828c12630a3b73996a643e59a5eda63c8b05",
            "0cfb25a32975cc397e86509cdeb461d83d5021e4101c9554bd0b33b776645e09",
            "4818a19481eddc359c299dc101a84820423fcbe4b08badfa78c24b4de56c022e",
            "f6df3b1ca00c88b7688a6ebffd6eb2d81a3d1305342ec69cc24cb4558bc2b41b",
        ),
        (
            3,
            "4388f2f9912a8d2af3e9a655ce20c4eeb4a8c31df626cf628996f770b156b104",
            "c680e9639176fd17747a915864299a3ad8fbd85883271d85726f311c94ed0604",
            "52554f07003db6c789b867872a762bbd5efc5fb699dc8213863369d66117142c",
            "e0842fef27f9ccc38fbe93c73eb1f04d1de6c917b35aafffc8ffc7c02889cd70",
        ),
    ];
    let expected_sig = "fa954853693068803615803a06e2c23a6228f7d6d6b442b72b26696aa776fe75532350f49b27a123b0c811d54671f6c008e319741a59918baf3c5455a5ec2603";

    // Build the key shares, group key and nonces in their exported forms, taking the
    // serialisation header from a real export.
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let (real, real_group) = dkg(3, 2, &mut rng);
    let template: serde_json::Value = serde_json::from_str(&real[0].export_secret().unwrap()).unwrap();
    let id = |i: u16| hex_of(&[[i as u8, 0].as_slice(), &[0u8; 30]].concat());
    let key_share = |i: u16| {
        let mut v = template.clone();
        v["index"] = i.into();
        v["package"]["identifier"] = id(i).into();
        v["package"]["signing_share"] = shares[usize::from(i - 1)].into();
        v["package"]["verifying_share"] = point_of(shares[usize::from(i - 1)]).into();
        v["package"]["verifying_key"] = group_key.into();
        v["package"]["min_signers"] = 2.into();
        KeyShare::import_secret(&v.to_string()).unwrap()
    };
    let mut g: serde_json::Value = serde_json::to_value(&real_group).unwrap();
    g["verifying_key"] = group_key.into();
    g["min_signers"] = 2.into();
    g["verifying_shares"] =
        (1..=3).map(|i| (id(i), serde_json::Value::from(point_of(shares[usize::from(i - 1)])))).collect();
    let group: GroupKey = serde_json::from_value(g).unwrap();
    assert_eq!(group.public_key().to_string(), format!("concord-group-v1:{group_key}"));
    let (real_nonces, _) = sign_round1(&real[0], &mut rng);
    let nonce_template: serde_json::Value = serde_json::from_str(&real_nonces.export_secret().unwrap()).unwrap();
    let mut signers = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for (i, hiding, binding, hiding_c, binding_c) in nonces {
        let mut v = nonce_template.clone();
        v["hiding"] = hiding.into();
        v["binding"] = binding.into();
        v["commitments"]["hiding"] = hiding_c.into();
        v["commitments"]["binding"] = binding_c.into();
        commitments.insert(i, serde_json::from_value::<Commitment>(v["commitments"].clone()).unwrap());
        signers.insert(i, (key_share(i), Nonces::import_secret(&v.to_string()).unwrap()));
    }
    let package = signing_package(&commitments, &message).unwrap();
    let sig_shares: BTreeMap<u16, SignatureShare> =
        signers.into_iter().map(|(i, (share, nonces))| (i, sign_round2(&share, nonces, &package).unwrap())).collect();
    let sig = aggregate(&commitments, &sig_shares, &group, &message).unwrap();
    assert_eq!(sig.to_string(), expected_sig);
    let key: GroupPublicKey = format!("concord-group-v1:{group_key}").parse().unwrap();
    verify(&key, &message, &expected_sig.parse().unwrap()).unwrap();
}
