//! FROST threshold signing (RFC 9591, FROST(ristretto255, SHA-512)) of domain-separated
//! statements: results of a computation, and approvals of a request.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use frost_ristretto255 as frost;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::frost_keys::{frost_err, ident, to_frost_map};
use crate::{
    check_index, decode_err, export_json, hex_serde, import_json, GroupKey, GroupPublicKey, KeyShare, Result, Rng06,
    ThresholdError,
};

/// What a consortium signs for a computation's result:
/// `SHA-256(DOMAIN || request_hash || transcript_hash || result)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultStatement {
    /// Hash of the request (query) that was computed.
    #[serde(with = "hex_serde")]
    pub request_hash: [u8; 32],
    /// Hash of the transcript of the computation.
    #[serde(with = "hex_serde")]
    pub transcript_hash: [u8; 32],
    /// The result, as bytes (hex in JSON).
    #[serde(with = "hex_serde")]
    pub result: Vec<u8>,
}

impl ResultStatement {
    /// Domain separation tag (prefix-free with [`ApprovalStatement::DOMAIN`]).
    pub const DOMAIN: &'static [u8] = b"concord-threshold/result/v1\0";

    /// The 32-byte message that is signed.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(Self::DOMAIN);
        h.update(self.request_hash);
        h.update(self.transcript_hash);
        h.update(&self.result);
        h.finalize().into()
    }
}

/// What "k of n data owners approve a request" signs, with a consortium of threshold k:
/// `SHA-256(DOMAIN || request_hash)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalStatement {
    /// Hash of the request being approved.
    #[serde(with = "hex_serde")]
    pub request_hash: [u8; 32],
}

impl ApprovalStatement {
    /// Domain separation tag (prefix-free with [`ResultStatement::DOMAIN`]).
    pub const DOMAIN: &'static [u8] = b"concord-threshold/approval/v1\0";

    /// The 32-byte message that is signed.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(Self::DOMAIN);
        h.update(self.request_hash);
        h.finalize().into()
    }
}

/// A signer's single-use nonces (secret; zeroized on drop). Using the same nonces for two
/// signatures reveals the key share: [`sign_round2`] consumes them.
pub struct Nonces(frost::round1::SigningNonces);

impl fmt::Debug for Nonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Nonces([redacted])")
    }
}

impl Zeroize for Nonces {
    fn zeroize(&mut self) {
        self.0.zeroize()
    }
}

impl Nonces {
    /// Export these **secret, single-use** nonces as JSON, for a node that must survive a
    /// restart between the two signing rounds. The stored copy must be deleted when
    /// [`sign_round2`] is called and never restored twice: reuse reveals the key share.
    pub fn export_secret(&self) -> Result<Zeroizing<String>> {
        export_json("signing nonces", &self.0)
    }
    /// Import nonces exported by [`Self::export_secret`].
    pub fn import_secret(json: &str) -> Result<Self> {
        import_json("signing nonces", json).map(Self)
    }
}

/// A signer's round-1 commitment to its nonces; sent to the coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Commitment(frost::round1::SigningCommitments);

/// What the coordinator sends to the chosen signers: their commitments and the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SigningPackage(frost::SigningPackage);

impl SigningPackage {
    /// The message to be signed. A signer must check that it is the digest of the
    /// statement it means to sign before calling [`sign_round2`].
    pub fn message(&self) -> &[u8] {
        self.0.message()
    }
}

/// A signer's share of the signature; sent to the coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SignatureShare(frost::round2::SignatureShare);

/// A FROST Schnorr signature (64 bytes: `R || z`). Text and serde form: 128 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Signature(frost::Signature);

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::to_hex(&self.0.serialize().map_err(|_| fmt::Error)?))
    }
}

impl FromStr for Signature {
    type Err = ThresholdError;
    fn from_str(s: &str) -> Result<Self> {
        let bytes = crate::from_hex(s.trim()).filter(|b| b.len() == 64);
        let bytes = bytes.ok_or_else(|| decode_err("signature", "expected 128 hex digits"))?;
        frost::Signature::deserialize(&bytes).map(Self).map_err(|e| decode_err("signature", e.to_string()))
    }
}

impl TryFrom<String> for Signature {
    type Error = ThresholdError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Signature> for String {
    fn from(s: Signature) -> Self {
        s.to_string()
    }
}

/// Signing round 1 (RFC 9591 Section 5.1, `commit`): fresh nonces, kept secret until
/// round 2, and their commitment, sent to the coordinator.
pub fn sign_round1(share: &KeyShare, rng: &mut impl rand_core::CryptoRng) -> (Nonces, Commitment) {
    let (nonces, commitment) = frost::round1::commit(share.package().signing_share(), &mut Rng06(rng));
    (Nonces(nonces), Commitment(commitment))
}

/// The coordinator's signing package: the commitments of the chosen signers (keyed by
/// signer) and the message (the digest of a statement).
pub fn signing_package(commitments: &BTreeMap<u16, Commitment>, message: &[u8]) -> Result<SigningPackage> {
    Ok(SigningPackage(frost::SigningPackage::new(to_frost_map(commitments, |c| c.0)?, message)))
}

/// Signing round 2 (RFC 9591 Section 5.2, `sign`): our signature share. Consumes the
/// nonces; fails if the package has fewer than `t` signers or lacks our commitment.
pub fn sign_round2(share: &KeyShare, nonces: Nonces, package: &SigningPackage) -> Result<SignatureShare> {
    const STEP: &str = "sign round 2";
    let got = package.0.signing_commitments().len();
    if got < usize::from(share.threshold()) {
        return Err(ThresholdError::NotEnoughShares { step: STEP, got, need: share.threshold() });
    }
    frost::round2::sign(&package.0, &nonces.0, share.package()).map(SignatureShare).map_err(|e| frost_err(STEP, e))
}

/// The coordinator's last step (RFC 9591 Section 5.3, `aggregate`, with each share checked
/// as in Section 5.4): the signature of `message` from the signers' commitments and shares
/// (both keyed by signer). An invalid share is blamed on its signer.
pub fn aggregate(
    commitments: &BTreeMap<u16, Commitment>,
    shares: &BTreeMap<u16, SignatureShare>,
    group: &GroupKey,
    message: &[u8],
) -> Result<Signature> {
    const STEP: &str = "aggregate";
    for &index in commitments.keys().chain(shares.keys()) {
        check_index(STEP, index, group.n())?;
    }
    if let Some(&index) = commitments.keys().find(|i| !shares.contains_key(i)) {
        return Err(ThresholdError::MissingMessage { step: STEP, index });
    }
    if let Some(&index) = shares.keys().find(|i| !commitments.contains_key(i)) {
        return Err(ThresholdError::UnexpectedMessage { step: STEP, index });
    }
    if shares.len() < usize::from(group.threshold()) {
        return Err(ThresholdError::NotEnoughShares { step: STEP, got: shares.len(), need: group.threshold() });
    }
    let package = signing_package(commitments, message)?;
    let shares = shares.iter().map(|(i, s)| Ok((ident(*i)?, s.0))).collect::<Result<BTreeMap<_, _>>>()?;
    frost::aggregate(&package.0, &shares, group.package()).map(Signature).map_err(|e| frost_err(STEP, e))
}

/// Verify a signature of `message` (RFC 9591 Section 6: a plain Schnorr verification).
pub fn verify(key: &GroupPublicKey, message: &[u8], signature: &Signature) -> Result<()> {
    key.0.verify(message, &signature.0).map_err(|_| ThresholdError::InvalidSignature { group_key: key.to_string() })
}
