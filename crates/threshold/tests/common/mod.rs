//! Helpers shared by the integration tests: full protocol runs with every message and
//! state passed through its serialised form.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;

use concord_threshold::*;
use rand_chacha::ChaCha20Rng;
use serde::{de::DeserializeOwned, Serialize};

pub fn rt<T: Serialize + DeserializeOwned>(v: &T) -> T {
    serde_json::from_str(&serde_json::to_string(v).unwrap()).unwrap()
}

pub fn others<T: Clone>(all: &BTreeMap<u16, T>, me: u16) -> BTreeMap<u16, T> {
    all.iter().filter(|(i, _)| **i != me).map(|(i, m)| (*i, m.clone())).collect()
}

/// Runs rounds 2 and 3 of a DKG or refresh among all members, passing every message and
/// state through its serialised form.
pub fn two_rounds<S1, S2, R>(
    round1: Vec<(S1, Round1Msg)>,
    round2: impl Fn(S1, &BTreeMap<u16, Round1Msg>) -> Result<(S2, BTreeMap<u16, Round2Msg>)>,
    reload: impl Fn(&S2) -> S2,
    mut finish: impl FnMut(u16, &S2, &BTreeMap<u16, Round1Msg>, &BTreeMap<u16, Round2Msg>) -> Result<R>,
) -> Vec<R> {
    let m1: BTreeMap<u16, Round1Msg> = round1.iter().enumerate().map(|(k, (_, m))| (k as u16 + 1, rt(m))).collect();
    assert!(round1.iter().zip(m1.values()).all(|((_, m), back)| m == back));
    let mut s2 = Vec::new();
    let mut m2 = BTreeMap::new();
    for (k, (s, _)) in round1.into_iter().enumerate() {
        let me = k as u16 + 1;
        let (s, out) = round2(s, &others(&m1, me)).unwrap();
        assert_eq!(
            out.keys().copied().collect::<Vec<_>>(),
            (1..=m1.len() as u16).filter(|i| *i != me).collect::<Vec<_>>()
        );
        s2.push(reload(&s));
        for (to, m) in out {
            assert_eq!(rt(&m), m);
            m2.insert((me, to), m);
        }
    }
    (1..=m1.len() as u16)
        .map(|me| {
            let mine = m2.iter().filter(|((_, to), _)| *to == me).map(|((from, _), m)| (*from, m.clone())).collect();
            finish(me, &s2[usize::from(me - 1)], &others(&m1, me), &mine).unwrap()
        })
        .collect()
}

pub fn dkg(n: u16, t: u16, rng: &mut ChaCha20Rng) -> (Vec<KeyShare>, GroupKey) {
    let r1 = (1..=n)
        .map(|i| {
            let (s, m) = dkg_round1(i, n, t, rng).unwrap();
            (Round1Secret::import_secret(&s.export_secret().unwrap()).unwrap(), m)
        })
        .collect();
    let reload = |s: &Round2Secret| Round2Secret::import_secret(&s.export_secret().unwrap()).unwrap();
    let out = two_rounds(r1, dkg_round2, reload, |_, s, r1, r2| dkg_finish(s, r1, r2));
    let group = out[0].1.clone();
    for (k, (share, g)) in out.iter().enumerate() {
        assert_eq!(g, &group, "member {} got another group key", k + 1);
        assert_eq!((share.index(), share.threshold(), share.group_public_key()), (k as u16 + 1, t, group.public_key()));
    }
    (out.into_iter().map(|(s, _)| KeyShare::import_secret(&s.export_secret().unwrap()).unwrap()).collect(), group)
}

/// Round 1 of signing for `signers`: their nonces and commitments.
pub fn commit(
    shares: &[KeyShare],
    signers: &[u16],
    rng: &mut ChaCha20Rng,
) -> (BTreeMap<u16, Nonces>, BTreeMap<u16, Commitment>) {
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for &i in signers {
        let (n, c) = sign_round1(&shares[usize::from(i - 1)], rng);
        nonces.insert(i, Nonces::import_secret(&n.export_secret().unwrap()).unwrap());
        commitments.insert(i, rt(&c));
    }
    (nonces, commitments)
}

pub fn sign_shares(
    shares: &[KeyShare],
    signers: &[u16],
    msg: &[u8],
    rng: &mut ChaCha20Rng,
) -> (BTreeMap<u16, Commitment>, BTreeMap<u16, SignatureShare>) {
    let (nonces, commitments) = commit(shares, signers, rng);
    let package = rt(&signing_package(&commitments, msg).unwrap());
    assert_eq!(package.message(), msg);
    let sig_shares = nonces
        .into_iter()
        .map(|(i, n)| (i, rt(&sign_round2(&shares[usize::from(i - 1)], n, &package).unwrap())))
        .collect();
    (commitments, sig_shares)
}

pub fn sign(
    shares: &[KeyShare],
    signers: &[u16],
    group: &GroupKey,
    msg: &[u8],
    rng: &mut ChaCha20Rng,
) -> Result<Signature> {
    let (commitments, sig_shares) = sign_shares(shares, signers, msg, rng);
    aggregate(&commitments, &sig_shares, group, msg)
}

/// Every member's state and messages at each round of an unlock DKG.
pub struct Run {
    pub m1: BTreeMap<u16, UnlockRound1Msg>,
    pub m2: BTreeMap<u16, UnlockRound2Msg>,
    /// (from, to) -> message.
    pub m3: BTreeMap<(u16, u16), UnlockRound3Msg>,
    /// Exported states after rounds 1, 2, 3 of each member.
    pub exported: [Vec<String>; 3],
}

impl Run {
    pub fn for_member(&self, me: u16) -> BTreeMap<u16, UnlockRound3Msg> {
        self.m3.iter().filter(|((_, to), _)| *to == me).map(|((from, _), m)| (*from, m.clone())).collect()
    }
}

pub fn unlock_run(n: u16, t: u16, rng: &mut ChaCha20Rng) -> Run {
    let (mut s1, mut m1) = (Vec::new(), BTreeMap::new());
    for i in 1..=n {
        let (s, m) = unlock_dkg_round1(i, n, t, rng).unwrap();
        assert_eq!(rt(&m), m);
        s1.push(s.export_secret().unwrap().to_string());
        m1.insert(i, m);
    }
    let (mut s2, mut m2) = (Vec::new(), BTreeMap::new());
    for (k, s) in s1.iter().enumerate() {
        let me = k as u16 + 1;
        let (s, m) = unlock_dkg_round2(UnlockRound1Secret::import_secret(s).unwrap(), &others(&m1, me)).unwrap();
        assert_eq!(format!("{s:?}"), "UnlockRound2Secret([redacted])");
        s2.push(s.export_secret().unwrap().to_string());
        m2.insert(me, rt(&m));
    }
    let (mut s3, mut m3) = (Vec::new(), BTreeMap::new());
    for (k, s) in s2.iter().enumerate() {
        let me = k as u16 + 1;
        let (s, out) = unlock_dkg_round3(UnlockRound2Secret::import_secret(s).unwrap(), &others(&m2, me)).unwrap();
        s3.push(s.export_secret().unwrap().to_string());
        for (to, m) in out {
            assert_eq!(format!("{m:?}"), "UnlockRound3Msg([redacted])");
            m3.insert((me, to), rt(&m));
        }
    }
    Run { m1, m2, m3, exported: [s1, s2, s3] }
}

pub fn unlock_dkg(n: u16, t: u16, rng: &mut ChaCha20Rng) -> (Vec<UnlockShare>, UnlockPublicKey) {
    let run = unlock_run(n, t, rng);
    let out: Vec<(UnlockShare, UnlockPublicKey)> = (1..=n)
        .map(|me| {
            let s = UnlockRound3Secret::import_secret(&run.exported[2][usize::from(me - 1)]).unwrap();
            unlock_dkg_finish(s, &run.for_member(me)).unwrap()
        })
        .collect();
    let key = serde_json::to_string(&out[0].1).unwrap();
    for (k, (share, pk)) in out.iter().enumerate() {
        assert_eq!(serde_json::to_string(pk).unwrap(), key, "member {} got another key", k + 1);
        assert_eq!((share.index(), pk.n(), pk.threshold()), (k as u16 + 1, n, t));
    }
    let key = rt(&out[0].1);
    (out.into_iter().map(|(s, _)| UnlockShare::import_secret(&s.export_secret().unwrap()).unwrap()).collect(), key)
}

pub fn shares_of(
    members: &[UnlockShare],
    who: &[u16],
    file: &SealedFile,
    rng: &mut ChaCha20Rng,
) -> Vec<(u16, DecryptionShare)> {
    who.iter().map(|&i| (i, rt(&decryption_share(&members[usize::from(i - 1)], file, rng).unwrap()))).collect()
}
