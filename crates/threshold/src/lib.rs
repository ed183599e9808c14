//! Threshold cryptography for Concord consortia, as pure per-round functions.
//!
//! A consortium is a fixed, ordered list of nodes (one per organisation), identified by
//! index `1..=n` ([`Consortium`]); any `t` of them act for the group. This crate gives
//! them:
//!
//! - **Distributed key generation without a dealer** for threshold Schnorr signatures
//!   ([`dkg_round1`], [`dkg_round2`], [`dkg_finish`]): the FROST key generation of
//!   Komlo & Goldberg 2020 (Figure 1), which is Pedersen's DKG (Pedersen 1991) with proofs
//!   of knowledge against rogue keys.
//! - **Threshold signing** (FROST, RFC 9591, ciphersuite FROST(ristretto255, SHA-512)) of
//!   result statements ([`ResultStatement`]) and approvals ("k of n data owners approve a
//!   request", [`ApprovalStatement`]): [`sign_round1`], [`sign_round2`], [`aggregate`],
//!   [`verify`]. An invalid signature share is blamed on its signer.
//! - **Share refresh** (proactive secret sharing; same group key, old shares useless:
//!   [`refresh_round1`] ...) and **share repair** (`t` helpers rebuild a lost share:
//!   [`repair_round1`] ...).
//! - **Threshold unlock** of sealed records: a separate consortium encryption key from a
//!   committed Pedersen DKG ([`unlock_dkg_round1`] ...), threshold ElGamal in the sense of
//!   Desmedt & Frankel 1989 used as a KEM with HKDF-SHA256 and ChaCha20-Poly1305
//!   ([`seal`]), decryption shares proven correct with Chaum-Pedersen 1992 proofs of
//!   equality of discrete logarithms ([`decryption_share`]), and [`unseal`] which checks
//!   every proof and names a participant whose share is forged.
//!
//! Every function takes the caller's secret state and the messages received, and returns
//! the new state and the messages to send (the style of `frost-core`'s `keys::dkg`). The
//! crate does no I/O: the node carries messages (serde/JSON) over its control channel,
//! keyed by the *authenticated* index of their sender, and stores states exported with the
//! explicit `export_secret` methods. Randomness is an `&mut (impl RngCore + CryptoRng)`.
//!
//! The cryptography is reused: `frost-ristretto255` (the Zcash Foundation's RFC 9591
//! implementation) and `elastic-elgamal` (threshold ElGamal, Pedersen DKG, Chaum-Pedersen
//! proofs; not audited). This crate is the glue, the statements, the sealed-file format and
//! the checks that name culprits.
//!
//! References:
//! - RFC 9591, "The Flexible Round-Optimized Schnorr Threshold (FROST) Protocol for
//!   Two-Round Schnorr Signatures", 2024.
//! - C. Komlo, I. Goldberg, "FROST: Flexible Round-Optimized Schnorr Threshold
//!   Signatures", SAC 2020 (ePrint 2020/852).
//! - T. P. Pedersen, "A Threshold Cryptosystem without a Trusted Party", EUROCRYPT 1991.
//! - D. Chaum, T. P. Pedersen, "Wallet Databases with Observers", CRYPTO 1992.
//! - Y. Desmedt, Y. Frankel, "Threshold Cryptosystems", CRYPTO 1989.
//! - A. Herzberg et al., "Proactive Secret Sharing", CRYPTO 1995 (refresh); T. Laing,
//!   D. Stinson, "A Survey and Refinement of Repairable Threshold Schemes", ePrint
//!   2017/1155 (repair).

mod frost_keys;
mod sign;
mod unlock;

pub use frost_keys::{
    dkg_finish, dkg_round1, dkg_round2, refresh_finish, refresh_round1, refresh_round2, repair_finish, repair_round1,
    repair_round2, GroupKey, GroupPublicKey, KeyShare, RefreshRound1Secret, RefreshRound2Secret, RepairDelta,
    RepairSigma, Round1Msg, Round1Secret, Round2Msg, Round2Secret,
};
pub use sign::{
    aggregate, sign_round1, sign_round2, signing_package, verify, ApprovalStatement, Commitment, Nonces,
    ResultStatement, Signature, SignatureShare, SigningPackage,
};
pub use unlock::{
    decryption_share, seal, unlock_dkg_finish, unlock_dkg_round1, unlock_dkg_round2, unlock_dkg_round3, unseal,
    DecryptionShare, SealedFile, UnlockPublicKey, UnlockRound1Msg, UnlockRound1Secret, UnlockRound2Msg,
    UnlockRound2Secret, UnlockRound3Msg, UnlockRound3Secret, UnlockShare,
};

use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use zeroize::Zeroizing;

/// Everything that can go wrong in this crate. Messages name the step and, where one can be
/// blamed, the participant (by index; [`Consortium::name`] gives its node name).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ThresholdError {
    /// The arguments are not usable together: `n` and `t`, a member list, a key share and a
    /// group key, the message sets of two rounds.
    #[error("invalid arguments: {0}")]
    InvalidParameters(String),
    /// An index outside `1..=n`.
    #[error("{step}: participant {index} is not a member (indices are 1..={n})")]
    UnknownParticipant {
        /// Protocol step.
        step: &'static str,
        /// The index given.
        index: u16,
        /// Consortium size.
        n: u16,
    },
    /// The same participant twice where each may appear once.
    #[error("{step}: participant {index} appears more than once")]
    DuplicateParticipant {
        /// Protocol step.
        step: &'static str,
        /// The repeated index.
        index: u16,
    },
    /// A message every member must send is missing.
    #[error("{step}: no message from participant {index}")]
    MissingMessage {
        /// Protocol step.
        step: &'static str,
        /// Who did not send.
        index: u16,
    },
    /// A message from someone who should not send one in this step (or from ourselves).
    #[error("{step}: unexpected message from participant {index}")]
    UnexpectedMessage {
        /// Protocol step.
        step: &'static str,
        /// The sender.
        index: u16,
    },
    /// A participant sent something provably wrong (bad proof, share, signature share).
    #[error("{step}: participant {participant} misbehaved: {reason}")]
    Misbehaviour {
        /// Protocol step.
        step: &'static str,
        /// The culprit.
        participant: u16,
        /// What was wrong.
        reason: String,
    },
    /// Another member saw different broadcast messages than we did: someone equivocated.
    #[error("{step}: participant {participant} saw different broadcast messages than we did (a member sent different messages to different members, or the message sets differ)")]
    InconsistentBroadcast {
        /// Protocol step.
        step: &'static str,
        /// The member whose view differs (not necessarily the culprit).
        participant: u16,
    },
    /// Fewer shares or commitments than the threshold.
    #[error("{step}: {got} given, at least {need} (the threshold) are needed")]
    NotEnoughShares {
        /// Protocol step.
        step: &'static str,
        /// How many were given.
        got: usize,
        /// The threshold.
        need: u16,
    },
    /// A FROST error without a culprit.
    #[error("{step}: {source}")]
    Frost {
        /// Protocol step.
        step: &'static str,
        /// The error reported by `frost-ristretto255`.
        #[source]
        source: frost_ristretto255::Error,
    },
    /// An error of the threshold ElGamal key generation without a culprit.
    #[error("{step}: {reason}")]
    Unlock {
        /// Protocol step.
        step: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The signature does not verify for this message under this group key.
    #[error("signature does not verify under group key {group_key} for this message")]
    InvalidSignature {
        /// The group key, in its text encoding.
        group_key: String,
    },
    /// A repaired share does not match the verifying share recorded in the group key.
    #[error("repair: the recovered share of participant {participant} does not match its verifying share in the group key (a helper sent a wrong value, or the helpers differ)")]
    RepairMismatch {
        /// The participant whose share was being repaired.
        participant: u16,
    },
    /// The sealed file's authentication tag does not verify.
    #[error("unseal: the sealed file failed authentication (its header, ciphertext or tag was altered)")]
    SealedFileAuthentication,
    /// Bytes, text or a stored state that cannot be decoded.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
}

impl ThresholdError {
    /// The participant this error blames, if any (for [`Consortium::name`]).
    pub fn culprit(&self) -> Option<u16> {
        match self {
            Self::Misbehaviour { participant, .. } => Some(*participant),
            _ => None,
        }
    }
}

/// Result of this crate.
pub type Result<T, E = ThresholdError> = std::result::Result<T, E>;

/// A consortium: its ordered member list (fixed at creation) and threshold. Member `i`
/// (1-based) is `members[i - 1]`; indices are what the protocol functions take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ConsortiumRepr")]
pub struct Consortium {
    members: Vec<String>,
    threshold: u16,
}

#[derive(Deserialize)]
struct ConsortiumRepr {
    members: Vec<String>,
    threshold: u16,
}

impl TryFrom<ConsortiumRepr> for Consortium {
    type Error = ThresholdError;
    fn try_from(r: ConsortiumRepr) -> Result<Self> {
        Self::new(r.members, r.threshold)
    }
}

impl Consortium {
    /// A consortium of distinct, non-empty node names with threshold `2 <= threshold <= n`.
    pub fn new(members: Vec<String>, threshold: u16) -> Result<Self> {
        let n = u16::try_from(members.len())
            .map_err(|_| ThresholdError::InvalidParameters(format!("{} members, at most 65535", members.len())))?;
        check_params(n, threshold)?;
        for (i, name) in members.iter().enumerate() {
            if name.is_empty() {
                return Err(ThresholdError::InvalidParameters(format!("member {} has an empty name", i + 1)));
            }
            if members[..i].contains(name) {
                return Err(ThresholdError::InvalidParameters(format!("member name {name:?} appears twice")));
            }
        }
        Ok(Self { members, threshold })
    }
    /// Number of members `n`.
    pub fn n(&self) -> u16 {
        self.members.len() as u16
    }
    /// The threshold `t`.
    pub fn threshold(&self) -> u16 {
        self.threshold
    }
    /// The member names, in index order.
    pub fn members(&self) -> &[String] {
        &self.members
    }
    /// Name of member `index` (1-based).
    pub fn name(&self, index: u16) -> Option<&str> {
        self.members.get(usize::from(index).checked_sub(1)?).map(String::as_str)
    }
    /// Index (1-based) of the member called `name`.
    pub fn index(&self, name: &str) -> Option<u16> {
        self.members.iter().position(|m| m == name).map(|i| i as u16 + 1)
    }
}

/// `2 <= t <= n`.
pub(crate) fn check_params(n: u16, t: u16) -> Result<()> {
    if n < 2 || t < 2 || t > n {
        return Err(ThresholdError::InvalidParameters(format!(
            "need 2 <= threshold <= n and n >= 2, got n = {n}, threshold = {t}"
        )));
    }
    Ok(())
}

/// `1 <= index <= n`.
pub(crate) fn check_index(step: &'static str, index: u16, n: u16) -> Result<()> {
    if index == 0 || index > n {
        return Err(ThresholdError::UnknownParticipant { step, index, n });
    }
    Ok(())
}

/// The messages of a broadcast round must come from every member but `me`, and only them.
pub(crate) fn check_senders<T>(step: &'static str, me: u16, n: u16, msgs: &BTreeMap<u16, T>) -> Result<()> {
    if let Some(&index) = msgs.keys().find(|&&i| i == me || i == 0 || i > n) {
        return Err(ThresholdError::UnexpectedMessage { step, index });
    }
    match (1..=n).find(|i| *i != me && !msgs.contains_key(i)) {
        Some(index) => Err(ThresholdError::MissingMessage { step, index }),
        None => Ok(()),
    }
}

/// Serialise a secret state for the node's store (explicit export; wiped on drop).
pub(crate) fn export_json<T: Serialize>(what: &'static str, value: &T) -> Result<Zeroizing<String>> {
    serde_json::to_string(value)
        .map(Zeroizing::new)
        .map_err(|e| ThresholdError::Decode { what, reason: format!("cannot encode: {e}") })
}

/// Parse a secret state exported by [`export_json`] (the caller then checks consistency).
pub(crate) fn import_json<T: DeserializeOwned>(what: &'static str, json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| ThresholdError::Decode { what, reason: e.to_string() })
}

pub(crate) fn decode_err(what: &'static str, reason: impl Into<String>) -> ThresholdError {
    ThresholdError::Decode { what, reason: reason.into() }
}

/// Adapter: our `rand_core` 0.9 RNG as the `rand_core` 0.6 RNG that `frost` and
/// `elastic-elgamal` take.
pub(crate) struct Rng06<'a, R: ?Sized>(pub(crate) &'a mut R);

impl<R: rand_core::RngCore + ?Sized> rand_core_06::RngCore for Rng06<'_, R> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core_06::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl<R: rand_core::CryptoRng + ?Sized> rand_core_06::CryptoRng for Rng06<'_, R> {}

/// Lower-case hex.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Decode hex (either case); `None` if malformed.
pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks_exact(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
}

/// `#[serde(with = "hex_serde")]` for byte arrays and vectors (lower-case hex strings).
pub(crate) mod hex_serde {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer, T: AsRef<[u8]>>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::to_hex(v.as_ref()))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<Vec<u8>>>(d: D) -> Result<T, D::Error> {
        let s = String::deserialize(d)?;
        let bytes = super::from_hex(&s).ok_or_else(|| D::Error::custom("not a hex string"))?;
        let len = bytes.len();
        T::try_from(bytes).map_err(|_| D::Error::custom(format!("wrong length ({len} bytes)")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&bytes)).unwrap(), bytes);
        assert_eq!(from_hex("0A").unwrap(), vec![10]);
        assert!(from_hex("abc").is_none());
        assert!(from_hex("zz").is_none());
    }

    #[test]
    fn consortium_validation() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let c = Consortium::new(names(&["a", "b", "c"]), 2).unwrap();
        assert_eq!(
            (c.n(), c.threshold(), c.name(2), c.index("c"), c.name(0), c.name(4)),
            (3, 2, Some("b"), Some(3), None, None)
        );
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Consortium>(&json).unwrap(), c);
        let err = Consortium::new(names(&["a", "b", "a"]), 2).unwrap_err();
        assert_eq!(err.to_string(), "invalid arguments: member name \"a\" appears twice");
        let err = Consortium::new(names(&["a", "b"]), 3).unwrap_err();
        assert!(err.to_string().contains("got n = 2, threshold = 3"), "{err}");
        let err = Consortium::new(names(&["a", ""]), 2).unwrap_err();
        assert!(err.to_string().contains("member 2 has an empty name"), "{err}");
        let err = serde_json::from_str::<Consortium>(r#"{"members":["a","b"],"threshold":1}"#).unwrap_err();
        assert!(err.to_string().contains("threshold = 1"), "{err}");
    }

    #[test]
    fn senders_checked() {
        let msgs: BTreeMap<u16, ()> = [(1, ()), (3, ())].into();
        check_senders("s", 2, 3, &msgs).unwrap();
        let err = check_senders("s", 1, 3, &msgs).unwrap_err();
        assert_eq!(err.to_string(), "s: unexpected message from participant 1");
        let err = check_senders("s", 2, 4, &msgs).unwrap_err();
        assert_eq!(err.to_string(), "s: no message from participant 4");
        let err = check_index("s", 5, 4).unwrap_err();
        assert_eq!(err.to_string(), "s: participant 5 is not a member (indices are 1..=4)");
    }
}
