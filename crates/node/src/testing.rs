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
