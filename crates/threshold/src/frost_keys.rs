//! FROST keys: dealer-free key generation (Komlo & Goldberg 2020, Figure 1), the key
//! share and group key types, share refresh and share repair.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use frost::keys::dkg::{round1, round2};
use frost::keys::{KeyPackage, PublicKeyPackage, VerifyingShare};
use frost::{Identifier, VerifyingKey};
use frost_ristretto255 as frost;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::{
    check_index, check_params, check_senders, decode_err, export_json, hex_serde, import_json, to_hex, Result, Rng06,
    ThresholdError,
};

/// The FROST identifier of participant `index` (1-based).
pub(crate) fn ident(index: u16) -> Result<Identifier> {
    Identifier::try_from(index).map_err(|_| ThresholdError::UnknownParticipant { step: "identifier", index, n: 0 })
}

/// The index of a FROST identifier made by [`ident`] (its scalar is `index`, little-endian).
pub(crate) fn index_of(id: &Identifier) -> Option<u16> {
    let b = id.serialize();
    (b.len() == 32 && b[2..].iter().all(|x| *x == 0)).then(|| u16::from_le_bytes([b[0], b[1]]))
}

/// A FROST error, as [`ThresholdError::Misbehaviour`] when frost names a culprit.
pub(crate) fn frost_err(step: &'static str, e: frost::Error) -> ThresholdError {
    match e.culprits().first().and_then(index_of) {
        Some(participant) => ThresholdError::Misbehaviour { step, participant, reason: e.to_string() },
        None => ThresholdError::Frost { step, source: e },
    }
}

/// Our `u16`-keyed messages as frost's identifier-keyed map.
pub(crate) fn to_frost_map<T, U>(msgs: &BTreeMap<u16, T>, f: impl Fn(&T) -> U) -> Result<BTreeMap<Identifier, U>> {
    msgs.iter().map(|(i, m)| Ok((ident(*i)?, f(m)))).collect()
}

/// Frost's identifier-keyed map as ours.
fn from_frost_map<T, U>(
    step: &'static str,
    msgs: BTreeMap<Identifier, T>,
    f: impl Fn(T) -> U,
) -> Result<BTreeMap<u16, U>> {
    msgs.into_iter()
        .map(|(id, m)| Ok((index_of(&id).ok_or_else(|| decode_err(step, "identifier is not an index"))?, f(m))))
        .collect()
}

/// State kept between rounds of the DKG and of refresh.
#[derive(Serialize, Deserialize)]
struct RoundState<P> {
    me: u16,
    n: u16,
    t: u16,
    /// Our own round-1 broadcast (it enters the digest of all broadcasts).
    own: Option<Round1Msg>,
    /// Round 2: digest of every member's round-1 broadcast, as we saw them.
    #[serde(with = "hex_serde")]
    digest: [u8; 32],
    package: P,
}

macro_rules! round_secret {
    ($(#[$doc:meta])* $name:ident, $pkg:ty, $what:literal) => {
        $(#[$doc])*
        pub struct $name(RoundState<$pkg>);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl Zeroize for $name {
            fn zeroize(&mut self) {
                self.0.package.zeroize()
            }
        }

        impl $name {
            /// Our index in the consortium.
            pub fn index(&self) -> u16 {
                self.0.me
            }

            /// Export this **secret** state as JSON for the node's secret store, to resume
            /// after a restart (wiped from memory on drop). Never send it.
            pub fn export_secret(&self) -> Result<Zeroizing<String>> {
                export_json($what, &self.0)
            }

            /// Import a state exported by `export_secret`, checking its consistency.
            pub fn import_secret(json: &str) -> Result<Self> {
                let s: RoundState<$pkg> = import_json($what, json)?;
                check_params(s.n, s.t)?;
                check_index($what, s.me, s.n)?;
                let p = &s.package;
                if *p.identifier() != ident(s.me)? || *p.min_signers() != s.t || *p.max_signers() != s.n {
                    return Err(decode_err($what, "the package does not match the recorded index, n or threshold"));
                }
                Ok(Self(s))
            }
        }
    };
}

round_secret!(
    /// Secret state of a member after DKG round 1 (its secret polynomial). Zeroized on drop.
    Round1Secret, round1::SecretPackage, "DKG round-1 secret"
);
round_secret!(
    /// Secret state of a member after DKG round 2. Zeroized on drop.
    Round2Secret, round2::SecretPackage, "DKG round-2 secret"
);
round_secret!(
    /// Secret state of a member after refresh round 1. Zeroized on drop.
    RefreshRound1Secret, round1::SecretPackage, "refresh round-1 secret"
);
round_secret!(
    /// Secret state of a member after refresh round 2. Zeroized on drop.
    RefreshRound2Secret, round2::SecretPackage, "refresh round-2 secret"
);

/// Round-1 message of the DKG (and of refresh): commitments to the sender's polynomial and
/// a proof of knowledge of its constant term. **Broadcast** to every other member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Round1Msg(round1::Package);

/// Round-2 message of the DKG (and of refresh) for one recipient: the sender's secret
/// share for it, and the digest of the round-1 broadcasts as the sender saw them (an echo
/// check against equivocation). **Secret**: send it only over a confidential,
/// authenticated channel to its recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round2Msg {
    package: round2::Package,
    #[serde(with = "hex_serde")]
    round1_digest: [u8; 32],
}

/// Digest of all members' round-1 broadcasts, in index order.
fn round1_digest(me: u16, n: u16, own: &Round1Msg, others: &BTreeMap<u16, Round1Msg>) -> Result<[u8; 32]> {
    const STEP: &str = "round-1 digest";
    let mut h = Sha256::new();
    h.update(b"concord-threshold/dkg-round1/v1\0");
    h.update(n.to_le_bytes());
    for i in 1..=n {
        let msg = if i == me {
            own
        } else {
            others.get(&i).ok_or(ThresholdError::MissingMessage { step: STEP, index: i })?
        };
        let bytes = msg.0.serialize().map_err(|e| frost_err(STEP, e))?;
        h.update(i.to_le_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(h.finalize().into())
}

/// DKG round 1 for member `me` of a consortium of `n` with threshold `t`: returns our
/// secret state and the message to broadcast.
pub fn dkg_round1(me: u16, n: u16, t: u16, rng: &mut impl rand_core::CryptoRng) -> Result<(Round1Secret, Round1Msg)> {
    check_params(n, t)?;
    check_index("DKG round 1", me, n)?;
    // Komlo-Goldberg Fig. 1, round 1, steps 1-4: sample a degree t-1 polynomial, prove
    // knowledge of its constant term, commit to its coefficients.
    let (package, msg) =
        frost::keys::dkg::part1(ident(me)?, n, t, Rng06(rng)).map_err(|e| frost_err("DKG round 1", e))?;
    let own = Round1Msg(msg);
    Ok((Round1Secret(RoundState { me, n, t, own: Some(own.clone()), digest: [0; 32], package }), own))
}

type Part2 = fn(
    round1::SecretPackage,
    &BTreeMap<Identifier, round1::Package>,
) -> Result<(round2::SecretPackage, BTreeMap<Identifier, round2::Package>), frost::Error>;

fn round2_common(
    step: &'static str,
    s: RoundState<round1::SecretPackage>,
    received: &BTreeMap<u16, Round1Msg>,
    part2: Part2,
) -> Result<(RoundState<round2::SecretPackage>, BTreeMap<u16, Round2Msg>)> {
    check_senders(step, s.me, s.n, received)?;
    let own = s.own.as_ref().ok_or_else(|| decode_err(step, "round-1 state without our own broadcast"))?;
    let digest = round1_digest(s.me, s.n, own, received)?;
    // Round 1, step 5 (verify the others' proofs of knowledge), round 2, step 1 (evaluate
    // our polynomial at each other member's index).
    let (package, out) =
        part2(s.package.clone(), &to_frost_map(received, |m| m.0.clone())?).map_err(|e| frost_err(step, e))?;
    let out = from_frost_map(step, out, |package| Round2Msg { package, round1_digest: digest })?;
    Ok((RoundState { me: s.me, n: s.n, t: s.t, own: s.own.clone(), digest, package }, out))
}

/// DKG round 2: given every other member's round-1 message (keyed by sender), returns our
/// secret state and one secret message per recipient (keyed by recipient). A bad proof of
/// knowledge is blamed on its sender.
pub fn dkg_round2(
    secret: Round1Secret,
    received: &BTreeMap<u16, Round1Msg>,
) -> Result<(Round2Secret, BTreeMap<u16, Round2Msg>)> {
    round2_common("DKG round 2", secret.0, received, frost::keys::dkg::part2).map(|(s, out)| (Round2Secret(s), out))
}

/// Checks common to the last step of the DKG and of refresh.
fn check_round2(
    step: &'static str,
    s: &RoundState<round2::SecretPackage>,
    round1: &BTreeMap<u16, Round1Msg>,
    round2: &BTreeMap<u16, Round2Msg>,
) -> Result<(BTreeMap<Identifier, round1::Package>, BTreeMap<Identifier, round2::Package>)> {
    check_senders(step, s.me, s.n, round1)?;
    check_senders(step, s.me, s.n, round2)?;
    let own = s.own.as_ref().ok_or_else(|| decode_err(step, "round-2 state without our own broadcast"))?;
    if round1_digest(s.me, s.n, own, round1)? != s.digest {
        return Err(ThresholdError::InvalidParameters(format!(
            "{step}: the round-1 messages differ from those of round 2"
        )));
    }
    if let Some((&participant, _)) = round2.iter().find(|(_, m)| m.round1_digest != s.digest) {
        return Err(ThresholdError::InconsistentBroadcast { step, participant });
    }
    Ok((to_frost_map(round1, |m| m.0.clone())?, to_frost_map(round2, |m| m.package.clone())?))
}

/// End of the DKG: given the round-1 messages (as in round 2) and the round-2 messages
/// sent to us (keyed by sender), returns our key share and the group key (the same for
/// every member). A share that does not match its sender's commitments is blamed on it.
pub fn dkg_finish(
    secret: &Round2Secret,
    round1: &BTreeMap<u16, Round1Msg>,
    round2: &BTreeMap<u16, Round2Msg>,
) -> Result<(KeyShare, GroupKey)> {
    const STEP: &str = "DKG finish";
    let s = &secret.0;
    let (r1, r2) = check_round2(STEP, s, round1, round2)?;
    // Round 2, steps 2-4: verify each share against its sender's commitments, sum them into
    // our long-lived share, derive every member's verifying share and the group key.
    let (key, group) = frost::keys::dkg::part3(&s.package, &r1, &r2).map_err(|e| frost_err(STEP, e))?;
    Ok((KeyShare(KeyShareState { index: s.me, package: key }), GroupKey::try_from(group)?))
}

#[derive(Serialize, Deserialize)]
struct KeyShareState {
    index: u16,
    package: KeyPackage,
}

/// A member's long-lived FROST key share (its signing share, verifying share, the group
/// verifying key and the threshold). Secret; zeroized on drop.
pub struct KeyShare(KeyShareState);

impl fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyShare {{ index: {}, share: [redacted] }}", self.0.index)
    }
}

impl Zeroize for KeyShare {
    fn zeroize(&mut self) {
        self.0.package.zeroize()
    }
}

impl KeyShare {
    /// Our index in the consortium.
    pub fn index(&self) -> u16 {
        self.0.index
    }
    /// The signing threshold `t`.
    pub fn threshold(&self) -> u16 {
        *self.0.package.min_signers()
    }
    /// The consortium's public key.
    pub fn group_public_key(&self) -> GroupPublicKey {
        GroupPublicKey(*self.0.package.verifying_key())
    }
    pub(crate) fn package(&self) -> &KeyPackage {
        &self.0.package
    }
    /// Export this **secret** key share as JSON for the node's secret store (wiped from
    /// memory on drop). Never send it.
    pub fn export_secret(&self) -> Result<Zeroizing<String>> {
        export_json("key share", &self.0)
    }
    /// Import a key share exported by [`Self::export_secret`], checking that its index,
    /// signing share and verifying share agree.
    pub fn import_secret(json: &str) -> Result<Self> {
        const WHAT: &str = "key share";
        let s: KeyShareState = import_json(WHAT, json)?;
        let p = &s.package;
        if index_of(p.identifier()) != Some(s.index) || s.index == 0 {
            return Err(decode_err(WHAT, "the identifier does not match the index"));
        }
        if VerifyingShare::from(*p.signing_share()) != *p.verifying_share() || *p.min_signers() < 2 {
            return Err(decode_err(WHAT, "the signing share does not match the verifying share"));
        }
        Ok(Self(s))
    }
}

/// Public output of the DKG: every member's verifying share, the group verifying key and
/// the threshold. The coordinator needs it to aggregate (and to blame bad shares).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PublicKeyPackage", into = "PublicKeyPackage")]
pub struct GroupKey(PublicKeyPackage);

impl TryFrom<PublicKeyPackage> for GroupKey {
    type Error = ThresholdError;
    fn try_from(p: PublicKeyPackage) -> Result<Self> {
        let n = p.verifying_shares().len();
        let ok_ids =
            p.verifying_shares().keys().enumerate().all(|(i, id)| index_of(id).map(usize::from) == Some(i + 1));
        match (u16::try_from(n), p.min_signers()) {
            (Ok(n), Some(t)) if ok_ids && check_params(n, t).is_ok() => Ok(Self(p)),
            _ => Err(decode_err("group key", "members must be 1..=n with a threshold 2 <= t <= n")),
        }
    }
}

impl From<GroupKey> for PublicKeyPackage {
    fn from(g: GroupKey) -> Self {
        g.0
    }
}

impl GroupKey {
    /// The consortium's public key (what verifiers need).
    pub fn public_key(&self) -> GroupPublicKey {
        GroupPublicKey(*self.0.verifying_key())
    }
    /// Number of members `n`.
    pub fn n(&self) -> u16 {
        self.0.verifying_shares().len() as u16
    }
    /// The threshold `t`.
    pub fn threshold(&self) -> u16 {
        self.0.min_signers().unwrap_or(u16::MAX)
    }
    pub(crate) fn package(&self) -> &PublicKeyPackage {
        &self.0
    }
}

/// The consortium's group public key (a ristretto255 point). Text form
/// `concord-group-v1:<64 hex digits>` (also its serde form).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GroupPublicKey(pub(crate) VerifyingKey);

impl GroupPublicKey {
    /// Prefix of the text form.
    pub const PREFIX: &'static str = "concord-group-v1:";
}

impl fmt::Display for GroupPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0.serialize().map_err(|_| fmt::Error)?;
        write!(f, "{}{}", Self::PREFIX, to_hex(&bytes))
    }
}

impl FromStr for GroupPublicKey {
    type Err = ThresholdError;
    fn from_str(s: &str) -> Result<Self> {
        const WHAT: &str = "group public key";
        let hex = s
            .trim()
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| decode_err(WHAT, format!("does not start with {:?}", Self::PREFIX)))?;
        let bytes =
            crate::from_hex(hex).filter(|b| b.len() == 32).ok_or_else(|| decode_err(WHAT, "expected 64 hex digits"))?;
        VerifyingKey::deserialize(&bytes).map(Self).map_err(|e| decode_err(WHAT, e.to_string()))
    }
}

impl TryFrom<String> for GroupPublicKey {
    type Error = ThresholdError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<GroupPublicKey> for String {
    fn from(k: GroupPublicKey) -> Self {
        k.to_string()
    }
}

/// Refresh round 1 (every member of the group takes part): like [`dkg_round1`] with a
/// polynomial whose constant term is zero, so the group key stays the same.
pub fn refresh_round1(
    share: &KeyShare,
    group: &GroupKey,
    rng: &mut impl rand_core::CryptoRng,
) -> Result<(RefreshRound1Secret, Round1Msg)> {
    const STEP: &str = "refresh round 1";
    let (me, n, t) = (share.index(), group.n(), share.threshold());
    if share.group_public_key() != group.public_key() || t != group.threshold() {
        return Err(ThresholdError::InvalidParameters("the key share is not of this group key".into()));
    }
    check_index(STEP, me, n)?;
    let (package, msg) =
        frost::keys::refresh::refresh_dkg_part1(ident(me)?, n, t, Rng06(rng)).map_err(|e| frost_err(STEP, e))?;
    let own = Round1Msg(msg);
    Ok((RefreshRound1Secret(RoundState { me, n, t, own: Some(own.clone()), digest: [0; 32], package }), own))
}

/// Refresh round 2, as [`dkg_round2`].
pub fn refresh_round2(
    secret: RefreshRound1Secret,
    received: &BTreeMap<u16, Round1Msg>,
) -> Result<(RefreshRound2Secret, BTreeMap<u16, Round2Msg>)> {
    round2_common("refresh round 2", secret.0, received, frost::keys::refresh::refresh_dkg_part2)
        .map(|(s, out)| (RefreshRound2Secret(s), out))
}

/// End of refresh: our new key share and the new group key (same group public key, new
/// verifying shares). The old share is consumed: shares from before and after a refresh
/// cannot be combined.
pub fn refresh_finish(
    secret: &RefreshRound2Secret,
    round1: &BTreeMap<u16, Round1Msg>,
    round2: &BTreeMap<u16, Round2Msg>,
    old_share: KeyShare,
    old_group: &GroupKey,
) -> Result<(KeyShare, GroupKey)> {
    const STEP: &str = "refresh finish";
    let s = &secret.0;
    if old_share.index() != s.me {
        return Err(ThresholdError::InvalidParameters("the old key share is not ours".into()));
    }
    let (r1, r2) = check_round2(STEP, s, round1, round2)?;
    let (key, group) = frost::keys::refresh::refresh_dkg_shares(
        &s.package,
        &r1,
        &r2,
        old_group.0.clone(),
        old_share.0.package.clone(),
    )
    .map_err(|e| frost_err(STEP, e))?;
    Ok((KeyShare(KeyShareState { index: s.me, package: key }), GroupKey::try_from(group)?))
}

macro_rules! repair_value {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Zeroize, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(#[serde(with = "hex_serde")] [u8; 32]);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                self.0.zeroize()
            }
        }
    };
}

repair_value!(
    /// Repair round-1 message from one helper to another helper (a random share of the
    /// sender's contribution). **Secret**: confidential, authenticated channel only.
    RepairDelta
);
repair_value!(
    /// Repair round-2 message from a helper to the member being repaired. **Secret**:
    /// confidential, authenticated channel only.
    RepairSigma
);

/// Repair round 1, run by each helper (the helpers, at least `t` members agreed on
/// beforehand, not including `lost`): one message per helper, ourselves included.
pub fn repair_round1(
    helper: &KeyShare,
    helpers: &[u16],
    lost: u16,
    rng: &mut impl rand_core::CryptoRng,
) -> Result<BTreeMap<u16, RepairDelta>> {
    const STEP: &str = "repair round 1";
    for (k, &h) in helpers.iter().enumerate() {
        if helpers[..k].contains(&h) {
            return Err(ThresholdError::DuplicateParticipant { step: STEP, index: h });
        }
    }
    if helpers.contains(&lost) {
        return Err(ThresholdError::InvalidParameters(format!("participant {lost} cannot help repair its own share")));
    }
    if helpers.len() < usize::from(helper.threshold()) {
        return Err(ThresholdError::NotEnoughShares { step: STEP, got: helpers.len(), need: helper.threshold() });
    }
    let ids = helpers.iter().map(|h| ident(*h)).collect::<Result<Vec<_>>>()?;
    let deltas = frost::keys::repairable::repair_share_part1::<frost::Ristretto255Sha512, _>(
        &ids,
        helper.package(),
        &mut Rng06(rng),
        ident(lost)?,
    )
    .map_err(|e| frost_err(STEP, e))?;
    from_frost_map(STEP, deltas, |d| {
        let mut b = [0u8; 32];
        b.copy_from_slice(&Zeroizing::new(d.serialize()));
        RepairDelta(b)
    })
}

/// Repair round 2, run by each helper on the deltas it received from every helper
/// (itself included): the message for the member being repaired.
pub fn repair_round2(deltas: &BTreeMap<u16, RepairDelta>) -> Result<RepairSigma> {
    let deltas = deltas
        .iter()
        .map(|(i, d)| {
            frost::keys::repairable::Delta::deserialize(&d.0).map_err(|_| ThresholdError::Misbehaviour {
                step: "repair round 2",
                participant: *i,
                reason: "malformed delta".into(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut b = [0u8; 32];
    b.copy_from_slice(&Zeroizing::new(frost::keys::repairable::repair_share_part2(&deltas).serialize()));
    Ok(RepairSigma(b))
}

/// End of repair, run by the member `lost`: rebuilds its key share from the helpers'
/// messages (keyed by helper) and checks it against its verifying share in `group`.
pub fn repair_finish(lost: u16, sigmas: &BTreeMap<u16, RepairSigma>, group: &GroupKey) -> Result<KeyShare> {
    const STEP: &str = "repair finish";
    check_index(STEP, lost, group.n())?;
    if sigmas.len() < usize::from(group.threshold()) {
        return Err(ThresholdError::NotEnoughShares { step: STEP, got: sigmas.len(), need: group.threshold() });
    }
    let sigmas = sigmas
        .iter()
        .map(|(i, s)| {
            frost::keys::repairable::Sigma::deserialize(&s.0).map_err(|_| ThresholdError::Misbehaviour {
                step: STEP,
                participant: *i,
                reason: "malformed sigma".into(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let id = ident(lost)?;
    let key = frost::keys::repairable::repair_share_part3(&sigmas, id, &group.0).map_err(|e| frost_err(STEP, e))?;
    if group.0.verifying_shares().get(&id) != Some(key.verifying_share()) {
        return Err(ThresholdError::RepairMismatch { participant: lost });
    }
    Ok(KeyShare(KeyShareState { index: lost, package: key }))
}
