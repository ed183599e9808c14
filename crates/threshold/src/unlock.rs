//! Threshold unlock: a consortium encryption key from a committed Pedersen DKG, threshold
//! ElGamal (Desmedt & Frankel 1989) as a KEM for sealed files, decryption shares with
//! Chaum-Pedersen proofs.

use std::collections::BTreeMap;
use std::fmt;

use curve25519_dalek::ristretto::RistrettoPoint;
use elastic_elgamal::dkg::{
    ParticipantCollectingCommitments, ParticipantCollectingPolynomials, ParticipantExchangingSecrets, PublicInfo,
};
use elastic_elgamal::group::Ristretto;
use elastic_elgamal::sharing::{ActiveParticipant, Params, PublicKeySet};
use elastic_elgamal::{CandidateDecryption, Ciphertext, LogEqualityProof, PublicKey, SecretKey};
use ring::{aead, hkdf};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{
    check_index, check_params, check_senders, decode_err, export_json, from_hex, hex_serde, import_json, to_hex,
    Result, Rng06, ThresholdError,
};

fn params(n: u16, t: u16) -> Result<Params> {
    check_params(n, t)?;
    Ok(Params::new(usize::from(n), usize::from(t)))
}

/// State kept between rounds of the unlock DKG (the elastic-elgamal participant, whose
/// secrets zeroize on drop, and the running digest of the broadcasts seen so far).
#[derive(Serialize, Deserialize)]
struct UnlockState<P> {
    me: u16,
    n: u16,
    t: u16,
    #[serde(with = "hex_serde")]
    digest: [u8; 32],
    inner: P,
}

/// Only the sizes of a stored elastic-elgamal state, checked before it is used (its
/// methods panic on out-of-range indices).
#[derive(Deserialize)]
struct Shape {
    inner: InnerShape,
}

#[derive(Deserialize)]
struct InnerShape {
    params: Params,
    index: usize,
    dealer: DealerShape,
    commitments: Option<Vec<Option<IgnoredAny>>>,
    public_polynomials: Option<Vec<Option<Vec<IgnoredAny>>>>,
    shares_received: Option<Vec<bool>>,
}

#[derive(Deserialize)]
struct DealerShape {
    params: Params,
    polynomial: Vec<IgnoredAny>,
}

/// Import a stored unlock DKG state; `missing` lists the members the state still awaits,
/// which must be everyone but us (states are stored only at the start of a round).
fn import_state<P: serde::de::DeserializeOwned>(
    what: &'static str,
    json: &str,
    missing: impl Fn(&P) -> Vec<usize>,
) -> Result<UnlockState<P>> {
    let shape: Shape = import_json(what, json)?;
    let s: UnlockState<P> = import_json(what, json)?;
    let (n, t, i) = (usize::from(s.n), usize::from(s.t), shape.inner);
    check_index(what, s.me, s.n)?;
    let ok = params(s.n, s.t)? == i.params
        && i.dealer.params == i.params
        && i.index + 1 == usize::from(s.me)
        && i.dealer.polynomial.len() == t
        && i.commitments.is_none_or(|c| c.len() == n)
        && i.public_polynomials.is_none_or(|p| p.len() == n && p.iter().flatten().all(|q| q.len() == t))
        && i.shares_received.is_none_or(|r| r.len() == n)
        && missing(&s.inner) == (0..n).filter(|j| j + 1 != usize::from(s.me)).collect::<Vec<_>>();
    if !ok {
        return Err(decode_err(what, "inconsistent state (sizes, index or received messages)"));
    }
    Ok(s)
}

macro_rules! unlock_secret {
    ($(#[$doc:meta])* $name:ident, $inner:ty, $what:literal, $missing:expr) => {
        $(#[$doc])*
        pub struct $name(UnlockState<$inner>);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl $name {
            /// Our index in the consortium.
            pub fn index(&self) -> u16 {
                self.0.me
            }
            /// Export this **secret** state as JSON for the node's secret store (wiped from
            /// memory on drop). Never send it.
            pub fn export_secret(&self) -> Result<Zeroizing<String>> {
                export_json($what, &self.0)
            }
            /// Import a state exported by `export_secret`, checking its consistency.
            pub fn import_secret(json: &str) -> Result<Self> {
                import_state($what, json, $missing).map(Self)
            }
        }
    };
}

unlock_secret!(
    /// Secret state after unlock DKG round 1 (our secret polynomial and commitment opening).
    UnlockRound1Secret, ParticipantCollectingCommitments<Ristretto>, "unlock round-1 secret",
    |p: &ParticipantCollectingCommitments<Ristretto>| p.missing_commitments().collect()
);
unlock_secret!(
    /// Secret state after unlock DKG round 2.
    UnlockRound2Secret, ParticipantCollectingPolynomials<Ristretto>, "unlock round-2 secret",
    |p: &ParticipantCollectingPolynomials<Ristretto>| p.missing_public_polynomials().collect()
);
unlock_secret!(
    /// Secret state after unlock DKG round 3.
    UnlockRound3Secret, ParticipantExchangingSecrets<Ristretto>, "unlock round-3 secret",
    |p: &ParticipantExchangingSecrets<Ristretto>| p.missing_shares().collect()
);

/// Unlock DKG round-1 message: a hash commitment to the sender's public key share.
/// **Broadcast.**
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockRound1Msg {
    #[serde(with = "hex_serde")]
    commitment: [u8; 32],
}

/// Unlock DKG round-2 message: the sender's public polynomial, its proof of possession and
/// the opening of its round-1 commitment. **Broadcast.**
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnlockRound2Msg(PublicInfo<'static, Ristretto>);

/// Unlock DKG round-3 message for one recipient: its secret share of the sender's
/// polynomial, and the digest of the broadcasts as the sender saw them. **Secret**:
/// confidential, authenticated channel only.
#[derive(Clone, Serialize, Deserialize)]
pub struct UnlockRound3Msg {
    share: SecretKey<Ristretto>,
    #[serde(with = "hex_serde")]
    digest: [u8; 32],
}

impl fmt::Debug for UnlockRound3Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnlockRound3Msg([redacted])")
    }
}

/// Unlock DKG round 1 for member `me` of `n` with threshold `t`.
pub fn unlock_dkg_round1(
    me: u16,
    n: u16,
    t: u16,
    rng: &mut impl rand_core::CryptoRng,
) -> Result<(UnlockRound1Secret, UnlockRound1Msg)> {
    let p = params(n, t)?;
    check_index("unlock DKG round 1", me, n)?;
    // Pedersen 1991: each member deals a Feldman VSS of a random secret; here it first
    // commits (by hash) to its public key share, against bias of the joint key.
    let inner = ParticipantCollectingCommitments::<Ristretto>::new(p, usize::from(me - 1), &mut Rng06(rng));
    let msg = UnlockRound1Msg { commitment: inner.commitment() };
    Ok((UnlockRound1Secret(UnlockState { me, n, t, digest: [0; 32], inner }), msg))
}

/// Unlock DKG round 2: given every other member's round-1 message, our state and the
/// message to broadcast.
pub fn unlock_dkg_round2(
    secret: UnlockRound1Secret,
    received: &BTreeMap<u16, UnlockRound1Msg>,
) -> Result<(UnlockRound2Secret, UnlockRound2Msg)> {
    let UnlockState { me, n, t, mut inner, .. } = secret.0;
    check_senders("unlock DKG round 2", me, n, received)?;
    let mut h = Sha256::new();
    h.update(b"concord-threshold/unlock-round1/v1\0");
    for i in 1..=n {
        h.update(received.get(&i).map_or(inner.commitment(), |m| m.commitment));
    }
    for (i, m) in received {
        inner.insert_commitment(usize::from(i - 1), m.commitment);
    }
    let inner = inner.finish_commitment_phase();
    let msg = UnlockRound2Msg(inner.public_info().into_owned());
    Ok((UnlockRound2Secret(UnlockState { me, n, t, digest: h.finalize().into(), inner }), msg))
}

/// Unlock DKG round 3: given every other member's round-2 message, our state and one
/// secret message per recipient. A polynomial that does not match its commitment or whose
/// proof fails is blamed on its sender.
pub fn unlock_dkg_round3(
    secret: UnlockRound2Secret,
    received: &BTreeMap<u16, UnlockRound2Msg>,
) -> Result<(UnlockRound3Secret, BTreeMap<u16, UnlockRound3Msg>)> {
    const STEP: &str = "unlock DKG round 3";
    let UnlockState { me, n, t, digest, mut inner } = secret.0;
    check_senders(STEP, me, n, received)?;
    let mut h = Sha256::new();
    h.update(b"concord-threshold/unlock-round2/v1\0");
    h.update(digest);
    let own = UnlockRound2Msg(inner.public_info().into_owned());
    for i in 1..=n {
        let info = serde_json::to_vec(received.get(&i).unwrap_or(&own)).map_err(|e| decode_err(STEP, e.to_string()))?;
        h.update((info.len() as u64).to_le_bytes());
        h.update(info);
    }
    for (&participant, m) in received {
        let blame = |reason: String| ThresholdError::Misbehaviour { step: STEP, participant, reason };
        if m.0.polynomial.len() != usize::from(t) {
            return Err(blame(format!("public polynomial has {} coefficients, expected {t}", m.0.polynomial.len())));
        }
        inner.insert_public_polynomial(usize::from(participant - 1), m.0.clone()).map_err(|e| blame(e.to_string()))?;
    }
    let inner = inner.finish_polynomials_phase();
    let digest: [u8; 32] = h.finalize().into();
    let out = (1..=n)
        .filter(|&j| j != me)
        .map(|j| (j, UnlockRound3Msg { share: inner.secret_share_for_participant(usize::from(j - 1)), digest }))
        .collect();
    Ok((UnlockRound3Secret(UnlockState { me, n, t, digest, inner }), out))
}

/// End of the unlock DKG: given the round-3 messages sent to us, our key share and the
/// consortium's public key set. A share off its sender's polynomial is blamed on it.
pub fn unlock_dkg_finish(
    secret: UnlockRound3Secret,
    received: &BTreeMap<u16, UnlockRound3Msg>,
) -> Result<(UnlockShare, UnlockPublicKey)> {
    const STEP: &str = "unlock DKG finish";
    let UnlockState { me, n, digest, mut inner, .. } = secret.0;
    check_senders(STEP, me, n, received)?;
    if let Some((&participant, _)) = received.iter().find(|(_, m)| m.digest != digest) {
        return Err(ThresholdError::InconsistentBroadcast { step: STEP, participant });
    }
    for (&participant, m) in received {
        inner
            .insert_secret_share(usize::from(participant - 1), m.share.clone())
            .map_err(|e| ThresholdError::Misbehaviour { step: STEP, participant, reason: e.to_string() })?;
    }
    let active = inner.complete().map_err(|e| ThresholdError::Unlock { step: STEP, reason: e.to_string() })?;
    let key = UnlockPublicKey(active.key_set().clone());
    Ok((UnlockShare(active), key))
}

/// The consortium's public encryption key set: the shared ElGamal key and every member's
/// public key share (to verify decryption shares). JSON form
/// `{"n", "threshold", "shared_key", "participant_keys"}` (keys as hex), checked on parse.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "UnlockPublicKeyRepr", into = "UnlockPublicKeyRepr")]
pub struct UnlockPublicKey(PublicKeySet<Ristretto>);

#[derive(Serialize, Deserialize)]
struct UnlockPublicKeyRepr {
    n: u16,
    threshold: u16,
    shared_key: String,
    participant_keys: Vec<String>,
}

impl From<UnlockPublicKey> for UnlockPublicKeyRepr {
    fn from(k: UnlockPublicKey) -> Self {
        Self {
            n: k.n(),
            threshold: k.threshold(),
            shared_key: to_hex(k.0.shared_key().as_bytes()),
            participant_keys: k.0.participant_keys().iter().map(|p| to_hex(p.as_bytes())).collect(),
        }
    }
}

impl TryFrom<UnlockPublicKeyRepr> for UnlockPublicKey {
    type Error = ThresholdError;
    fn try_from(r: UnlockPublicKeyRepr) -> Result<Self> {
        const WHAT: &str = "unlock public key";
        let keys = r.participant_keys.iter().enumerate().map(|(i, hex)| {
            let bytes =
                from_hex(hex).ok_or_else(|| decode_err(WHAT, format!("key of participant {} is not hex", i + 1)))?;
            PublicKey::from_bytes(&bytes).map_err(|e| decode_err(WHAT, format!("key of participant {}: {e}", i + 1)))
        });
        let set = PublicKeySet::from_participants(params(r.n, r.threshold)?, keys.collect::<Result<_>>()?)
            .map_err(|e| decode_err(WHAT, e.to_string()))?;
        if to_hex(set.shared_key().as_bytes()) != r.shared_key.to_ascii_lowercase() {
            return Err(decode_err(WHAT, "the shared key does not match the participant keys"));
        }
        Ok(Self(set))
    }
}

impl UnlockPublicKey {
    /// Number of members `n`.
    pub fn n(&self) -> u16 {
        self.0.params().shares as u16
    }
    /// Number of decryption shares needed `t`.
    pub fn threshold(&self) -> u16 {
        self.0.params().threshold as u16
    }
}

/// A member's share of the consortium decryption key (secret; zeroized on drop).
pub struct UnlockShare(ActiveParticipant<Ristretto>);

#[derive(Serialize, Deserialize)]
struct UnlockShareRepr {
    index: u16,
    public_key: UnlockPublicKey,
    secret_share: SecretKey<Ristretto>,
}

impl fmt::Debug for UnlockShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnlockShare {{ index: {}, share: [redacted] }}", self.index())
    }
}

impl UnlockShare {
    /// Our index in the consortium.
    pub fn index(&self) -> u16 {
        self.0.index() as u16 + 1
    }
    /// The consortium's public key set.
    pub fn public_key(&self) -> UnlockPublicKey {
        UnlockPublicKey(self.0.key_set().clone())
    }
    /// Export this **secret** share as JSON for the node's secret store (wiped from memory
    /// on drop). Never send it.
    pub fn export_secret(&self) -> Result<Zeroizing<String>> {
        let repr = UnlockShareRepr {
            index: self.index(),
            public_key: self.public_key(),
            secret_share: self.0.secret_share().clone(),
        };
        export_json("unlock share", &repr)
    }
    /// Import a share exported by [`Self::export_secret`], checking it against its public
    /// key share.
    pub fn import_secret(json: &str) -> Result<Self> {
        const WHAT: &str = "unlock share";
        let r: UnlockShareRepr = import_json(WHAT, json)?;
        check_index(WHAT, r.index, r.public_key.n())?;
        ActiveParticipant::new(r.public_key.0, usize::from(r.index - 1), r.secret_share)
            .map(Self)
            .map_err(|_| decode_err(WHAT, "the secret share does not match the member's public key share"))
    }
}

const MAGIC: &[u8; 8] = b"CNCDSEAL";
const VERSION: u8 = 1;
/// Magic, version, ElGamal ciphertext (R, B), AEAD nonce.
const HEADER_LEN: usize = 8 + 1 + 64 + 12;
const TAG_LEN: usize = 16;

/// A sealed record: `magic "CNCDSEAL" (8) || version 1 (1) || R (32) || B (32) ||
/// nonce (12) || ChaCha20-Poly1305 ciphertext || tag (16)`, where `(R, B)` is the ElGamal
/// encryption of a random point `M` under the consortium key, the AEAD key is
/// `HKDF-SHA256(salt "concord-threshold/seal/v1", ikm = encoding of M, info = header)` and
/// the header (the first 85 bytes) is the associated data. Serde form: hex of the bytes.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SealedFile {
    bytes: Vec<u8>,
    ciphertext: Ciphertext<Ristretto>,
}

impl fmt::Debug for SealedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedFile {{ len: {}, digest: {} }}", self.bytes.len(), to_hex(&self.digest()))
    }
}

impl PartialEq for SealedFile {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl SealedFile {
    /// The file's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// SHA-256 of the file's bytes (what an approval to unlock it should name).
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(&self.bytes).into()
    }
    /// Parse a sealed file, checking magic, version and the ElGamal points.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "sealed file";
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(decode_err(WHAT, format!("{} bytes, at least {} expected", bytes.len(), HEADER_LEN + TAG_LEN)));
        }
        if &bytes[..8] != MAGIC {
            return Err(decode_err(WHAT, "bad magic (not a Concord sealed file)"));
        }
        if bytes[8] != VERSION {
            return Err(decode_err(
                WHAT,
                format!("unsupported version {} (this build reads version {VERSION})", bytes[8]),
            ));
        }
        // `Ciphertext` has no constructor from bytes: feed its serde form from the two points.
        let (r, b) = bytes[9..73].split_at(32);
        let map = serde::de::value::MapDeserializer::<_, serde::de::value::Error>::new(
            [("random_element", r), ("blinded_element", b)].into_iter(),
        );
        let ciphertext = Ciphertext::<Ristretto>::deserialize(map)
            .map_err(|_| decode_err(WHAT, "the ElGamal ciphertext is not two ristretto255 points"))?;
        if *ciphertext.random_element() == RistrettoPoint::default() {
            return Err(decode_err(WHAT, "the ElGamal random element is the identity"));
        }
        Ok(Self { bytes: bytes.to_vec(), ciphertext })
    }
}

impl TryFrom<String> for SealedFile {
    type Error = ThresholdError;
    fn try_from(s: String) -> Result<Self> {
        Self::from_bytes(&from_hex(&s).ok_or_else(|| decode_err("sealed file", "not hex"))?)
    }
}

impl From<SealedFile> for String {
    fn from(f: SealedFile) -> Self {
        to_hex(&f.bytes)
    }
}

/// The AEAD key of a sealed file from its KEM point `M` and header.
fn file_key(m: &RistrettoPoint, header: &[u8]) -> Result<aead::LessSafeKey> {
    let ikm = Zeroizing::new(m.compress().to_bytes());
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"concord-threshold/seal/v1").extract(&ikm[..]);
    let info = [header];
    let okm = prk.expand(&info, &aead::CHACHA20_POLY1305).map_err(|_| decode_err("sealed file", "HKDF failed"))?;
    Ok(aead::LessSafeKey::new(aead::UnboundKey::from(okm)))
}

fn nonce_of(header: &[u8]) -> Result<aead::Nonce> {
    aead::Nonce::try_assume_unique_for_key(&header[73..HEADER_LEN]).map_err(|_| decode_err("sealed file", "bad nonce"))
}

/// Seal `plaintext` to the consortium: any `t` members' decryption shares open it.
pub fn seal(key: &UnlockPublicKey, plaintext: &[u8], rng: &mut impl rand_core::CryptoRng) -> Result<SealedFile> {
    // KEM: a uniformly random point M, ElGamal-encrypted: (R, B) = (rG, M + rK).
    let mut wide = Zeroizing::new([0u8; 64]);
    rng.fill_bytes(&mut wide[..]);
    let m = RistrettoPoint::from_uniform_bytes(&wide);
    let ciphertext = key.0.shared_key().encrypt_element(m, &mut Rng06(rng));
    let mut bytes = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    bytes.extend_from_slice(MAGIC);
    bytes.push(VERSION);
    bytes.extend_from_slice(&ciphertext.to_bytes());
    let mut nonce = [0u8; 12];
    rng.fill_bytes(&mut nonce);
    bytes.extend_from_slice(&nonce);
    // DEM: ChaCha20-Poly1305 under a key derived from M, the header as associated data.
    let mut body = plaintext.to_vec();
    let (header, k) = (bytes.clone(), file_key(&m, &bytes)?);
    k.seal_in_place_append_tag(nonce_of(&header)?, aead::Aad::from(&header), &mut body)
        .map_err(|_| decode_err("sealed file", "plaintext too long"))?;
    bytes.extend_from_slice(&body);
    Ok(SealedFile { bytes, ciphertext })
}

/// A member's decryption share of one sealed file: `D_i = x_i R` with a Chaum-Pedersen
/// proof that `log_G(K_i) = log_R(D_i)`. Sent to whoever unseals. JSON fields (hex):
/// `file` (the file's digest), `share` (32 bytes), `proof` (64 bytes: challenge, response).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecryptionShare {
    #[serde(with = "hex_serde")]
    file: [u8; 32],
    #[serde(with = "hex_serde")]
    share: [u8; 32],
    #[serde(with = "hex_serde")]
    proof: [u8; 64],
}

/// Our decryption share of `file`. Only produce it for a file the consortium decided to
/// unlock: with it, whoever holds `t` shares reads the file.
pub fn decryption_share(
    my: &UnlockShare,
    file: &SealedFile,
    rng: &mut impl rand_core::CryptoRng,
) -> Result<DecryptionShare> {
    let (share, proof) = my.0.decrypt_share(file.ciphertext, &mut Rng06(rng));
    let err = |_| decode_err("decryption share", "unexpected encoding size");
    Ok(DecryptionShare {
        file: file.digest(),
        share: share.to_bytes().try_into().map_err(err)?,
        proof: proof.to_bytes().try_into().map_err(err)?,
    })
}

/// Open `file` with decryption shares keyed by the (authenticated) index of their sender.
/// Every share's proof is checked first and a wrong or forged share is blamed on its
/// sender; at least `t` shares are needed.
pub fn unseal(key: &UnlockPublicKey, file: &SealedFile, shares: &[(u16, DecryptionShare)]) -> Result<Vec<u8>> {
    const STEP: &str = "unseal";
    let mut valid = Vec::with_capacity(shares.len());
    for (k, (participant, s)) in shares.iter().enumerate() {
        let participant = *participant;
        check_index(STEP, participant, key.n())?;
        if shares[..k].iter().any(|(i, _)| *i == participant) {
            return Err(ThresholdError::DuplicateParticipant { step: STEP, index: participant });
        }
        let blame = |reason: &str| ThresholdError::Misbehaviour { step: STEP, participant, reason: reason.into() };
        if s.file != file.digest() {
            return Err(blame("decryption share is for another sealed file"));
        }
        let candidate =
            CandidateDecryption::from_bytes(&s.share).ok_or_else(|| blame("share is not a group element"))?;
        let proof = LogEqualityProof::from_bytes(&s.proof).ok_or_else(|| blame("malformed proof"))?;
        let index = usize::from(participant - 1);
        let verified = key.0.verify_share(candidate, file.ciphertext, index, &proof);
        valid.push((
            index,
            verified.map_err(|_| blame("forged decryption share (Chaum-Pedersen proof does not verify)"))?,
        ));
    }
    let need = key.threshold();
    let combined = key.0.params().combine_shares(valid).ok_or(ThresholdError::NotEnoughShares {
        step: STEP,
        got: shares.len(),
        need,
    })?;
    // M = B - x R, with x R interpolated from the shares.
    let m = combined.decrypt_to_element(file.ciphertext);
    let (header, body) = file.bytes.split_at(HEADER_LEN);
    let mut body = body.to_vec();
    let plain = file_key(&m, header)?
        .open_in_place(nonce_of(header)?, aead::Aad::from(header), &mut body)
        .map_err(|_| ThresholdError::SealedFileAuthentication)?;
    Ok(plain.to_vec())
}
