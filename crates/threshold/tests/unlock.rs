//! Threshold unlock: DKG, seal/unseal, blame, tampering, encodings, parsing untrusted input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use concord_threshold::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

#[test]
fn three_of_five_unlock_and_two_cannot() {
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let (members, key) = unlock_dkg(5, 3, &mut rng);
    let record = b"patient 17: HbA1c 6.1".to_vec();
    let file = seal(&key, &record, &mut rng).unwrap();
    assert_eq!(file.as_bytes().len(), 85 + record.len() + 16);
    assert_eq!(SealedFile::from_bytes(file.as_bytes()).unwrap(), file);
    assert_eq!(rt(&file), file);
    for who in [&[1u16, 2, 3][..], &[5, 2, 4], &[4, 1, 5, 3], &[1, 2, 3, 4, 5]] {
        assert_eq!(unseal(&key, &file, &shares_of(&members, who, &file, &mut rng)).unwrap(), record);
    }
    let err = unseal(&key, &file, &shares_of(&members, &[2, 5], &file, &mut rng)).unwrap_err();
    assert_eq!(err.to_string(), "unseal: 2 given, at least 3 (the threshold) are needed");
    // Two sealings of the same record differ; the empty record seals too.
    assert_ne!(seal(&key, &record, &mut rng).unwrap(), file);
    let empty = seal(&key, b"", &mut rng).unwrap();
    assert_eq!(unseal(&key, &empty, &shares_of(&members, &[1, 3, 5], &empty, &mut rng)).unwrap(), b"");
    // 2 of 3 works the same way.
    let (members, key) = unlock_dkg(3, 2, &mut rng);
    let file = seal(&key, &record, &mut rng).unwrap();
    assert_eq!(unseal(&key, &file, &shares_of(&members, &[3, 1], &file, &mut rng)).unwrap(), record);
}

#[test]
fn wrong_or_forged_decryption_shares_are_named() {
    let mut rng = ChaCha20Rng::seed_from_u64(22);
    let (members, key) = unlock_dkg(5, 3, &mut rng);
    let file = seal(&key, b"secret", &mut rng).unwrap();
    let other = seal(&key, b"secret", &mut rng).unwrap();
    let good = shares_of(&members, &[1, 2, 3], &file, &mut rng);
    let mut forged = good.clone();
    forged[1].1 = good[2].1.clone(); // 2 sends 3's (valid) share as its own
    let err = unseal(&key, &file, &forged).unwrap_err();
    assert_eq!(err.culprit(), Some(2));
    assert_eq!(
        err.to_string(),
        "unseal: participant 2 misbehaved: forged decryption share (Chaum-Pedersen proof does not verify)"
    );
    let mut stale = good.clone();
    stale[0].1 = decryption_share(&members[0], &other, &mut rng).unwrap();
    assert_eq!(
        unseal(&key, &file, &stale).unwrap_err().to_string(),
        "unseal: participant 1 misbehaved: decryption share is for another sealed file"
    );
    // A share element or proof altered in transit.
    let edit = |field: &str, value: String| {
        let mut v = serde_json::to_value(&good[2].1).unwrap();
        v[field] = value.into();
        let mut shares = good.clone();
        shares[2].1 = serde_json::from_value(v).unwrap();
        unseal(&key, &file, &shares).unwrap_err().to_string()
    };
    assert_eq!(edit("share", "ff".repeat(32)), "unseal: participant 3 misbehaved: share is not a group element");
    assert_eq!(edit("proof", "ff".repeat(64)), "unseal: participant 3 misbehaved: malformed proof");
    let mut proof = serde_json::to_value(&good[2].1).unwrap()["proof"].as_str().unwrap().to_string();
    proof.replace_range(0..2, if proof.starts_with("00") { "01" } else { "00" });
    assert!(edit("proof", proof).contains("participant 3 misbehaved: forged decryption share"));
    let mut dup = good.clone();
    dup[2].0 = 1;
    assert_eq!(unseal(&key, &file, &dup).unwrap_err().to_string(), "unseal: participant 1 appears more than once");
    dup[2].0 = 6;
    assert_eq!(
        unseal(&key, &file, &dup).unwrap_err().to_string(),
        "unseal: participant 6 is not a member (indices are 1..=5)"
    );
}

#[test]
fn tampered_sealed_files_are_rejected() {
    let mut rng = ChaCha20Rng::seed_from_u64(23);
    let (members, key) = unlock_dkg(5, 3, &mut rng);
    let file = seal(&key, b"the record", &mut rng).unwrap();
    let other = seal(&key, b"another record", &mut rng).unwrap();
    let parse_err = |bytes: &[u8]| SealedFile::from_bytes(bytes).unwrap_err().to_string();
    let mut b = file.as_bytes().to_vec();
    b[0] ^= 1;
    assert_eq!(parse_err(&b), "cannot decode sealed file: bad magic (not a Concord sealed file)");
    let mut b = file.as_bytes().to_vec();
    b[8] = 2;
    assert_eq!(parse_err(&b), "cannot decode sealed file: unsupported version 2 (this build reads version 1)");
    assert_eq!(parse_err(&file.as_bytes()[..100]), "cannot decode sealed file: 100 bytes, at least 101 expected");
    let mut b = file.as_bytes().to_vec();
    b[9..41].copy_from_slice(&[0xff; 32]);
    assert_eq!(parse_err(&b), "cannot decode sealed file: the ElGamal ciphertext is not two ristretto255 points");
    b[9..41].copy_from_slice(&[0; 32]);
    assert_eq!(parse_err(&b), "cannot decode sealed file: the ElGamal random element is the identity");
    // Well-formed but altered: R or B from another file, the nonce, the body, the tag. The
    // members honestly make shares for the file they are shown; the tag check fails.
    let len = file.as_bytes().len();
    let parts = [
        ("R", 9..41, true),
        ("B", 41..73, true),
        ("nonce", 80..81, false),
        ("body", 85..86, false),
        ("tag", len - 1..len, false),
    ];
    for (what, range, from_other) in parts {
        let mut b = file.as_bytes().to_vec();
        if from_other {
            b[range.clone()].copy_from_slice(&other.as_bytes()[range]);
        } else {
            b[range.start] ^= 0x80;
        }
        let bad = SealedFile::from_bytes(&b).unwrap();
        let err = unseal(&key, &bad, &shares_of(&members, &[1, 2, 3], &bad, &mut rng)).unwrap_err();
        assert!(matches!(err, ThresholdError::SealedFileAuthentication), "{what}: {err}");
        assert_eq!(
            err.to_string(),
            "unseal: the sealed file failed authentication (its header, ciphertext or tag was altered)"
        );
    }
    assert_eq!(unseal(&key, &file, &shares_of(&members, &[1, 2, 3], &file, &mut rng)).unwrap(), b"the record");
}

#[test]
fn unlock_dkg_blames_and_checks() {
    let mut rng = ChaCha20Rng::seed_from_u64(24);
    let run = unlock_run(4, 3, &mut rng);
    let round2 = |me: u16| UnlockRound2Secret::import_secret(&run.exported[1][usize::from(me - 1)]).unwrap();
    let round3 = |me: u16| UnlockRound3Secret::import_secret(&run.exported[2][usize::from(me - 1)]).unwrap();
    // 2's slot holds 3's polynomial: it does not open 2's commitment.
    let mut m2 = others(&run.m2, 1);
    m2.insert(2, run.m2[&3].clone());
    let err = unlock_dkg_round3(round2(1), &m2).unwrap_err();
    assert_eq!(err.culprit(), Some(2));
    assert!(err.to_string().starts_with("unlock DKG round 3: participant 2 misbehaved: public polynomial"), "{err}");
    // A polynomial of the wrong degree.
    let mut v = serde_json::to_value(&run.m2[&4]).unwrap();
    v["polynomial"].as_array_mut().unwrap().pop();
    let mut m2 = others(&run.m2, 1);
    m2.insert(4, serde_json::from_value(v).unwrap());
    assert_eq!(
        unlock_dkg_round3(round2(1), &m2).unwrap_err().to_string(),
        "unlock DKG round 3: participant 4 misbehaved: public polynomial has 2 coefficients, expected 3"
    );
    // A share for someone else.
    let mut m3 = run.for_member(1);
    m3.insert(2, run.m3[&(2, 3)].clone());
    let err = unlock_dkg_finish(round3(1), &m3).unwrap_err();
    assert_eq!(err.culprit(), Some(2));
    assert!(err.to_string().starts_with("unlock DKG finish: participant 2 misbehaved: secret received"), "{err}");
    // Someone saw other broadcasts.
    let mut v = serde_json::to_value(&run.m3[&(3, 1)]).unwrap();
    v["digest"] = "00".repeat(32).into();
    let mut m3 = run.for_member(1);
    m3.insert(3, serde_json::from_value(v).unwrap());
    let err = unlock_dkg_finish(round3(1), &m3).unwrap_err();
    assert!(matches!(err, ThresholdError::InconsistentBroadcast { participant: 3, .. }), "{err}");
    // Missing and unexpected messages; bad parameters.
    let mut m3 = run.for_member(1);
    m3.remove(&4);
    assert_eq!(
        unlock_dkg_finish(round3(1), &m3).unwrap_err().to_string(),
        "unlock DKG finish: no message from participant 4"
    );
    let r1 = UnlockRound1Secret::import_secret(&run.exported[0][0]).unwrap();
    assert_eq!(
        unlock_dkg_round2(r1, &run.m1).unwrap_err().to_string(),
        "unlock DKG round 2: unexpected message from participant 1"
    );
    assert!(unlock_dkg_round1(1, 4, 1, &mut rng).unwrap_err().to_string().contains("threshold = 1"));
    assert_eq!(
        unlock_dkg_round1(5, 4, 2, &mut rng).unwrap_err().to_string(),
        "unlock DKG round 1: participant 5 is not a member (indices are 1..=4)"
    );
}

#[test]
fn stored_states_and_keys_are_checked() {
    let mut rng = ChaCha20Rng::seed_from_u64(25);
    let run = unlock_run(3, 2, &mut rng);
    for (k, what) in ["unlock round-1 secret", "unlock round-2 secret", "unlock round-3 secret"].iter().enumerate() {
        let bad = run.exported[k][0].replacen("\"me\":1", "\"me\":2", 1);
        let err = match k {
            0 => UnlockRound1Secret::import_secret(&bad).map(|_| ()),
            1 => UnlockRound2Secret::import_secret(&bad).map(|_| ()),
            _ => UnlockRound3Secret::import_secret(&bad).map(|_| ()),
        };
        assert_eq!(
            err.unwrap_err().to_string(),
            format!("cannot decode {what}: inconsistent state (sizes, index or received messages)")
        );
    }
    let (members, key) = unlock_dkg(3, 2, &mut rng);
    assert_eq!(format!("{:?}", members[2]), "UnlockShare { index: 3, share: [redacted] }");
    let bad = members[0].export_secret().unwrap().replacen("\"index\":1", "\"index\":2", 1);
    assert_eq!(
        UnlockShare::import_secret(&bad).unwrap_err().to_string(),
        "cannot decode unlock share: the secret share does not match the member's public key share"
    );
    let bad = members[0].export_secret().unwrap().replacen("\"index\":1", "\"index\":4", 1);
    assert_eq!(
        UnlockShare::import_secret(&bad).unwrap_err().to_string(),
        "unlock share: participant 4 is not a member (indices are 1..=3)"
    );
    let mut v = serde_json::to_value(&key).unwrap();
    v["participant_keys"][1] = v["participant_keys"][2].clone();
    let err = serde_json::from_value::<UnlockPublicKey>(v).unwrap_err().to_string();
    assert!(err.starts_with("cannot decode unlock public key: participants' public keys do not correspond"), "{err}");
    let mut v = serde_json::to_value(&key).unwrap();
    v["shared_key"] = v["participant_keys"][0].clone();
    let err = serde_json::from_value::<UnlockPublicKey>(v).unwrap_err().to_string();
    assert_eq!(err, "cannot decode unlock public key: the shared key does not match the participant keys");
}
