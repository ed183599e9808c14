//! Untrusted input never panics: every single-character mutation of every message and
//! stored state is parsed and, when it parses, used in the next protocol step; random
//! bytes are parsed as everything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use common::*;
use concord_threshold::*;
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

struct Fixture {
    m1: BTreeMap<u16, Round1Msg>,
    r2_for_1: BTreeMap<u16, Round2Msg>,
    rm1: BTreeMap<u16, Round1Msg>,
    rr2_for_1: BTreeMap<u16, Round2Msg>,
    shares: Vec<KeyShare>,
    group: GroupKey,
    commitments: BTreeMap<u16, Commitment>,
    sig_shares: BTreeMap<u16, SignatureShare>,
    msg: [u8; 32],
    run: Run,
    unlock_shares: Vec<UnlockShare>,
    unlock_key: UnlockPublicKey,
    file: SealedFile,
    dec_shares: Vec<(u16, DecryptionShare)>,
    /// (kind, valid text).
    samples: Vec<(&'static str, String)>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(31);
        // FROST DKG among 3 (t = 2), keeping member 1's states and inputs.
        let r1: Vec<_> = (1..=3).map(|i| dkg_round1(i, 3, 2, &mut rng).unwrap()).collect();
        let m1: BTreeMap<u16, Round1Msg> = r1.iter().enumerate().map(|(k, (_, m))| (k as u16 + 1, m.clone())).collect();
        let r1_secret = r1[0].0.export_secret().unwrap().to_string();
        let mut r2 = Vec::new();
        for (k, (s, _)) in r1.into_iter().enumerate() {
            r2.push(dkg_round2(s, &others(&m1, k as u16 + 1)).unwrap());
        }
        let r2_for_1: BTreeMap<u16, Round2Msg> = [(2, r2[1].1[&1].clone()), (3, r2[2].1[&1].clone())].into();
        let r2_secret = r2[0].0.export_secret().unwrap().to_string();
        let (shares, group) = dkg(3, 2, &mut rng);
        let msg = [5u8; 32];
        let (mut nonces, commitments) = commit(&shares, &[1, 2], &mut rng);
        let nonces1 = nonces.remove(&1).unwrap();
        let package = signing_package(&commitments, &msg).unwrap();
        let nonces_text = nonces1.export_secret().unwrap().to_string();
        let sig_shares: BTreeMap<u16, SignatureShare> = [
            (1, sign_round2(&shares[0], nonces1, &package).unwrap()),
            (2, sign_round2(&shares[1], nonces.remove(&2).unwrap(), &package).unwrap()),
        ]
        .into();
        let signature = aggregate(&commitments, &sig_shares, &group, &msg).unwrap();
        // Refresh, keeping member 1's states and inputs.
        let rr1: Vec<_> = shares.iter().map(|s| refresh_round1(s, &group, &mut rng).unwrap()).collect();
        let rm1: BTreeMap<u16, Round1Msg> =
            rr1.iter().enumerate().map(|(k, (_, m))| (k as u16 + 1, m.clone())).collect();
        let rr1_secret = rr1[0].0.export_secret().unwrap().to_string();
        let mut rr2 = Vec::new();
        for (k, (s, _)) in rr1.into_iter().enumerate() {
            rr2.push(refresh_round2(s, &others(&rm1, k as u16 + 1)).unwrap());
        }
        let rr2_for_1: BTreeMap<u16, Round2Msg> = [(2, rr2[1].1[&1].clone()), (3, rr2[2].1[&1].clone())].into();
        // Unlock.
        let run = unlock_run(3, 2, &mut rng);
        let (unlock_shares, unlock_key) = unlock_dkg(3, 2, &mut rng);
        let file = seal(&unlock_key, b"record", &mut rng).unwrap();
        let dec_shares = shares_of(&unlock_shares, &[1, 2], &file, &mut rng);
        let samples = vec![
            ("Round1Secret", r1_secret),
            ("Round2Secret", r2_secret),
            ("RefreshRound1Secret", rr1_secret),
            ("RefreshRound2Secret", rr2[0].0.export_secret().unwrap().to_string()),
            ("KeyShare", shares[0].export_secret().unwrap().to_string()),
            ("Nonces", nonces_text),
            ("GroupKey", json(&group)),
            ("Round1Msg", json(&m1[&2])),
            ("Round2Msg", json(&r2_for_1[&2])),
            ("Commitment", json(&commitments[&2])),
            ("SigningPackage", json(&package)),
            ("SignatureShare", json(&sig_shares[&2])),
            ("Signature", signature.to_string()),
            ("GroupPublicKey", group.public_key().to_string()),
            ("UnlockRound1Secret", run.exported[0][0].clone()),
            ("UnlockRound2Secret", run.exported[1][0].clone()),
            ("UnlockRound3Secret", run.exported[2][0].clone()),
            ("UnlockRound1Msg", json(&run.m1[&2])),
            ("UnlockRound2Msg", json(&run.m2[&2])),
            ("UnlockRound3Msg", json(&run.m3[&(2, 1)])),
            ("UnlockShare", unlock_shares[0].export_secret().unwrap().to_string()),
            ("UnlockPublicKey", json(&unlock_key)),
            ("SealedFile", json(&file)),
            ("DecryptionShare", json(&dec_shares[1].1)),
            (
                "ResultStatement",
                json(&ResultStatement { request_hash: [1; 32], transcript_hash: [2; 32], result: vec![3] }),
            ),
            ("Consortium", json(&Consortium::new(vec!["a".into(), "b".into()], 2).unwrap())),
        ];
        Fixture {
            m1,
            r2_for_1,
            rm1,
            rr2_for_1,
            shares,
            group,
            commitments,
            sig_shares,
            msg,
            run,
            unlock_shares,
            unlock_key,
            file,
            dec_shares,
            samples,
        }
    })
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

/// `map` with the message of participant 2 replaced.
fn with2<T: Clone>(map: &BTreeMap<u16, T>, m: T) -> BTreeMap<u16, T> {
    let mut map = map.clone();
    map.insert(2, m);
    map
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_str(text).ok()
}

/// Parse `text` as `kind` and, if it parses, use it in the next step with valid inputs.
/// Returns whether it parsed.
fn parse_and_use(kind: &str, text: &str) -> bool {
    let f = fixture();
    let mut rng = ChaCha20Rng::seed_from_u64(32);
    let share1 = || KeyShare::import_secret(&f.shares[0].export_secret().unwrap()).unwrap();
    let sample = |k: &str| f.samples.iter().find(|(s, _)| *s == k).map(|(_, t)| t.as_str()).unwrap();
    match kind {
        "Round1Secret" => Round1Secret::import_secret(text).map(|s| dkg_round2(s, &others(&f.m1, 1))).is_ok(),
        "Round2Secret" => {
            Round2Secret::import_secret(text).map(|s| dkg_finish(&s, &others(&f.m1, 1), &f.r2_for_1)).is_ok()
        }
        "RefreshRound1Secret" => {
            RefreshRound1Secret::import_secret(text).map(|s| refresh_round2(s, &others(&f.rm1, 1))).is_ok()
        }
        "RefreshRound2Secret" => RefreshRound2Secret::import_secret(text)
            .map(|s| refresh_finish(&s, &others(&f.rm1, 1), &f.rr2_for_1, share1(), &f.group))
            .is_ok(),
        "KeyShare" => KeyShare::import_secret(text)
            .map(|k| {
                let (n, c) = sign_round1(&k, &mut rng);
                let package = signing_package(&with2(&[(k.index(), c)].into(), f.commitments[&2]), &f.msg);
                let _ = package.map(|p| sign_round2(&k, n, &p));
                let _ = refresh_round1(&k, &f.group, &mut rng);
                let _ = repair_round1(&k, &[1, 2], 3, &mut rng);
            })
            .is_ok(),
        "Nonces" => Nonces::import_secret(text)
            .map(|n| sign_round2(&share1(), n, &parse(sample("SigningPackage")).unwrap()))
            .is_ok(),
        "GroupKey" => parse::<GroupKey>(text)
            .map(|g| {
                let _ = aggregate(&f.commitments, &f.sig_shares, &g, &f.msg);
                let _ = refresh_round1(&share1(), &g, &mut rng);
            })
            .is_some(),
        "Round1Msg" => parse::<Round1Msg>(text)
            .map(|m| {
                dkg_round2(Round1Secret::import_secret(sample("Round1Secret")).unwrap(), &with2(&others(&f.m1, 1), m))
            })
            .is_some(),
        "Round2Msg" => parse::<Round2Msg>(text)
            .map(|m| {
                let s = Round2Secret::import_secret(sample("Round2Secret")).unwrap();
                dkg_finish(&s, &others(&f.m1, 1), &with2(&f.r2_for_1, m))
            })
            .is_some(),
        "Commitment" => parse::<Commitment>(text)
            .map(|c| aggregate(&with2(&f.commitments, c), &f.sig_shares, &f.group, &f.msg))
            .is_some(),
        "SigningPackage" => parse::<SigningPackage>(text)
            .map(|p| sign_round2(&share1(), Nonces::import_secret(sample("Nonces")).unwrap(), &p))
            .is_some(),
        "SignatureShare" => parse::<SignatureShare>(text)
            .map(|s| aggregate(&f.commitments, &with2(&f.sig_shares, s), &f.group, &f.msg))
            .is_some(),
        "Signature" => text.parse::<Signature>().map(|s| verify(&f.group.public_key(), &f.msg, &s)).is_ok(),
        "GroupPublicKey" => text.parse::<GroupPublicKey>().map(|k| verify(&k, &f.msg, &sample_signature())).is_ok(),
        "UnlockRound1Secret" => {
            UnlockRound1Secret::import_secret(text).map(|s| unlock_dkg_round2(s, &others(&f.run.m1, 1))).is_ok()
        }
        "UnlockRound2Secret" => {
            UnlockRound2Secret::import_secret(text).map(|s| unlock_dkg_round3(s, &others(&f.run.m2, 1))).is_ok()
        }
        "UnlockRound3Secret" => {
            UnlockRound3Secret::import_secret(text).map(|s| unlock_dkg_finish(s, &f.run.for_member(1))).is_ok()
        }
        "UnlockRound1Msg" => parse::<UnlockRound1Msg>(text)
            .map(|m| {
                let s = UnlockRound1Secret::import_secret(sample("UnlockRound1Secret")).unwrap();
                unlock_dkg_round2(s, &with2(&others(&f.run.m1, 1), m))
            })
            .is_some(),
        "UnlockRound2Msg" => parse::<UnlockRound2Msg>(text)
            .map(|m| {
                let s = UnlockRound2Secret::import_secret(sample("UnlockRound2Secret")).unwrap();
                unlock_dkg_round3(s, &with2(&others(&f.run.m2, 1), m))
            })
            .is_some(),
        "UnlockRound3Msg" => parse::<UnlockRound3Msg>(text)
            .map(|m| {
                let s = UnlockRound3Secret::import_secret(sample("UnlockRound3Secret")).unwrap();
                unlock_dkg_finish(s, &with2(&f.run.for_member(1), m))
            })
            .is_some(),
        "UnlockShare" => UnlockShare::import_secret(text)
            .map(|s| {
                let d = decryption_share(&s, &f.file, &mut rng).unwrap();
                unseal(&f.unlock_key, &f.file, &[(s.index(), d), f.dec_shares[1].clone()])
            })
            .is_ok(),
        "UnlockPublicKey" => parse::<UnlockPublicKey>(text)
            .map(|k| {
                let _ = seal(&k, b"x", &mut rng);
                let _ = unseal(&k, &f.file, &f.dec_shares);
            })
            .is_some(),
        "SealedFile" => parse::<SealedFile>(text)
            .map(|file| {
                let d = decryption_share(&f.unlock_shares[0], &file, &mut rng).unwrap();
                unseal(&f.unlock_key, &file, &[(1, d), f.dec_shares[1].clone()])
            })
            .is_some(),
        "DecryptionShare" => parse::<DecryptionShare>(text)
            .map(|d| unseal(&f.unlock_key, &f.file, &[f.dec_shares[0].clone(), (2, d)]))
            .is_some(),
        "ResultStatement" => parse::<ResultStatement>(text).map(|s| s.digest()).is_some(),
        "Consortium" => parse::<Consortium>(text).is_some(),
        other => panic!("unknown kind {other}"),
    }
}

fn sample_signature() -> Signature {
    let f = fixture();
    f.samples.iter().find(|(k, _)| *k == "Signature").unwrap().1.parse().unwrap()
}

#[test]
fn valid_samples_parse_and_work() {
    let f = fixture();
    for (kind, text) in &f.samples {
        assert!(parse_and_use(kind, text), "{kind} does not parse: {text}");
    }
    assert_eq!(unseal(&f.unlock_key, &f.file, &f.dec_shares).unwrap(), b"record");
}

#[test]
fn every_single_character_mutation_is_handled() {
    const CHARS: [char; 8] = ['0', 'f', '9', '"', '1', ']', 'A', '-'];
    for (kind, text) in &fixture().samples {
        let chars: Vec<char> = text.chars().collect();
        let mut parsed = 0;
        for i in 0..chars.len() {
            let mut m = chars.clone();
            m[i] = CHARS[i % CHARS.len()];
            if m[i] == chars[i] {
                m[i] = CHARS[(i + 1) % CHARS.len()];
            }
            parsed += usize::from(parse_and_use(kind, &m.into_iter().collect::<String>()));
        }
        // Not vacuous: some mutations parse and reach the next protocol step, except for the
        // two types every byte of which is checked against the rest.
        if ["UnlockShare", "UnlockPublicKey"].contains(kind) {
            assert_eq!(parsed, 0, "a mutation of {kind} was accepted");
        } else {
            assert!(parsed > 0, "no mutation of {kind} parsed");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), header in any::<bool>()) {
        let mut b = bytes;
        if header && b.len() >= 9 {
            b[..8].copy_from_slice(b"CNCDSEAL");
            b[8] = 1;
        }
        if let Ok(file) = SealedFile::from_bytes(&b) {
            let f = fixture();
            prop_assert!(unseal(&f.unlock_key, &file, &f.dec_shares).is_err());
        }
        let text = String::from_utf8_lossy(&b);
        for (kind, _) in &fixture().samples {
            prop_assert!(!parse_and_use(kind, &text), "random input parsed as {}", kind);
        }
    }
}
