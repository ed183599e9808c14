//! Helpers for this crate's unit tests (compiled in tests only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use concord_threshold::{GroupKey, KeyShare};
use rand_core::SeedableRng;

/// The seeded RNG of the unit tests (never entropy in tests).
pub(crate) fn rng(seed: u64) -> rand_chacha::ChaCha12Rng {
    rand_chacha::ChaCha12Rng::seed_from_u64(seed)
}

/// A dealer-free 2-of-3 FROST key made by the three rounds of the DKG, run
/// directly: every member's share (index order) and the group key.
pub(crate) fn dkg_2_of_3(rng: &mut rand_chacha::ChaCha12Rng) -> (Vec<KeyShare>, GroupKey) {
    let r1: Vec<_> = (1..=3u16).map(|i| concord_threshold::dkg_round1(i, 3, 2, rng).unwrap()).collect();
    let all: BTreeMap<u16, _> = r1.iter().enumerate().map(|(i, (_, m))| (i as u16 + 1, m.clone())).collect();
    let others = |me: u16| all.iter().filter(|(i, _)| **i != me).map(|(i, m)| (*i, m.clone())).collect();
    let mut secrets = Vec::new();
    let mut inbox: BTreeMap<u16, BTreeMap<u16, _>> = BTreeMap::new();
    for (i, (s, _)) in r1.into_iter().enumerate() {
        let me = i as u16 + 1;
        let (s2, out) = concord_threshold::dkg_round2(s, &others(me)).unwrap();
        for (to, m) in out {
            inbox.entry(to).or_default().insert(me, m);
        }
        secrets.push(s2);
    }
    let mut shares = Vec::new();
    let mut group = None;
    for (i, s) in secrets.iter().enumerate() {
        let me = i as u16 + 1;
        let (share, g) = concord_threshold::dkg_finish(s, &others(me), &inbox[&me]).unwrap();
        shares.push(share);
        group = Some(g);
    }
    (shares, group.unwrap())
}

/// A plan of `sql` over a one-column table `t` (`x`, int in [0, 9]) with
/// `parties` (node names; the first coordinates), analyst `x`, no request.
pub(crate) fn plan(sql: &str, parties: &[&str]) -> crate::service::SessionPlan {
    let spec = concord_session::SessionSpec::plan(
        "table = \"t\"\nmax_rows = 100\n\n[[column]]\nname = \"x\"\ntype = \"int\"\nmin = 0\nmax = 9\n",
        sql,
        parties.len(),
        &concord_session::SessionOptions::default(),
    )
    .unwrap();
    crate::service::SessionPlan {
        id: "00112233445566778899aabbccddeeff".into(),
        coordinator: parties.first().map(|p| (*p).to_owned()).unwrap_or_default(),
        dataset: "t".into(),
        parties: parties
            .iter()
            .map(|n| crate::service::PlanParty {
                name: (*n).into(),
                address: "127.0.0.1:1".into(),
                tls_fingerprint: "00".repeat(32),
            })
            .collect(),
        spec,
        analyst_key: "11".repeat(32),
        analyst: "x".into(),
        options: concord_session::SessionOptions::default(),
        request: None,
        created_at: 1,
        consortium: None,
        approval_consortium: None,
    }
}
