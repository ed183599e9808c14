//! Result shares sealed to the analyst.
//!
//! A party's [`ShareReport`](crate::ShareReport) is its share of a secret
//! result: only the analyst may see all `n` of them. When the reports travel
//! through a coordinating node, each party encrypts its report to a key the
//! analyst chose for this session, so the coordinator only relays
//! ciphertexts. The construction is the base mode of HPKE (RFC 9180) with
//! fixed choices, written out:
//!
//! 1. the analyst draws a secret scalar `a` and publishes `A = X25519(a, 9)`
//!    (RFC 7748);
//! 2. the party draws an ephemeral `e`, computes `E = X25519(e, 9)` and the
//!    shared secret `Z = X25519(e, A)`, refusing the all-zero output (a
//!    low-order `A`);
//! 3. `key = HKDF-SHA256(salt = E || A, ikm = Z, info = "concord/result-share/v1" || context)`
//!    (RFC 5869), where `context` binds the session id and the party index;
//! 4. the report is encrypted with ChaCha20-Poly1305 (RFC 8439) under `key`,
//!    nonce zero (the key is used once), associated data `context`.
//!
//! The analyst recomputes `Z = X25519(a, E)` and opens the envelope; a
//! changed byte, a wrong key or an envelope moved to another party or
//! session fails authentication.

use std::fmt;

use curve25519_dalek::montgomery::MontgomeryPoint;
use rand_core::{CryptoRng, RngCore};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::hkdf::{Salt, HKDF_SHA256};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::SessionError;

const INFO: &[u8] = b"concord/result-share/v1";

/// The analyst's secret key for one session. Zeroised on drop; `Debug` redacts it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AnalystKey([u8; 32]);

impl fmt::Debug for AnalystKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AnalystKey(<redacted>)")
    }
}

impl AnalystKey {
    /// A fresh key.
    pub fn generate<G: RngCore + CryptoRng>(rng: &mut G) -> AnalystKey {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        AnalystKey(k)
    }

    /// The public key to give the parties (`X25519(a, 9)`).
    pub fn public(&self) -> [u8; 32] {
        MontgomeryPoint::mul_base_clamped(self.0).to_bytes()
    }

    /// The secret key's 32 bytes, hex: for disclosing a per-query key after
    /// the fact (a verifiable result file), never for keeping.
    pub fn disclose(&self) -> String {
        hex(&self.0)
    }

    /// A key disclosed by [`AnalystKey::disclose`] (64 hex digits).
    pub fn from_disclosed(hex_key: &str) -> Option<AnalystKey> {
        decode32(hex_key.trim()).map(AnalystKey)
    }

    /// Open `envelope`, sealed by party `party` in session `session`.
    /// Fails if it was sealed to another key, session or party, or altered.
    pub fn open(&self, session: &str, party: usize, envelope: &Envelope) -> Result<Vec<u8>, SessionError> {
        let fail = |reason: &str| SessionError::Seal { party, reason: reason.to_owned() };
        let ephemeral = decode32(&envelope.ephemeral).ok_or_else(|| fail("the ephemeral key is not 32 hex bytes"))?;
        let mut ciphertext = unhex(&envelope.ciphertext).ok_or_else(|| fail("the ciphertext is not hex"))?;
        let shared = MontgomeryPoint(ephemeral).mul_clamped(self.0).to_bytes();
        if shared == [0u8; 32] {
            return Err(fail("the ephemeral key is a low-order point"));
        }
        let key = derive(&shared, &ephemeral, &self.public(), session, party).map_err(|()| fail("key derivation"))?;
        let aad = context(session, party);
        let plain = key
            .open_in_place(Nonce::assume_unique_for_key([0u8; 12]), Aad::from(aad.as_slice()), &mut ciphertext)
            .map_err(|_| fail("authentication failed (wrong key, wrong session or party, or altered)"))?;
        Ok(plain.to_vec())
    }
}

/// A sealed report: the party's ephemeral public key and the ciphertext, hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// `E`, hex.
    pub ephemeral: String,
    /// ChaCha20-Poly1305 ciphertext and tag, hex.
    pub ciphertext: String,
}

/// Seal `plaintext` from party `party` of session `session` to the analyst's public key `analyst`.
pub fn seal<G: RngCore + CryptoRng>(
    analyst: &[u8; 32],
    session: &str,
    party: usize,
    plaintext: &[u8],
    rng: &mut G,
) -> Result<Envelope, SessionError> {
    let fail = |reason: &str| SessionError::Seal { party, reason: reason.to_owned() };
    let mut e = [0u8; 32];
    rng.fill_bytes(&mut e);
    let ephemeral = MontgomeryPoint::mul_base_clamped(e).to_bytes();
    let shared = MontgomeryPoint(*analyst).mul_clamped(e).to_bytes();
    e.zeroize();
    if shared == [0u8; 32] {
        return Err(fail("the analyst's public key is a low-order point"));
    }
    let key = derive(&shared, &ephemeral, analyst, session, party).map_err(|()| fail("key derivation"))?;
    let aad = context(session, party);
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key([0u8; 12]), Aad::from(aad.as_slice()), &mut buf)
        .map_err(|_| fail("encryption failed"))?;
    Ok(Envelope { ephemeral: hex(&ephemeral), ciphertext: hex(&buf) })
}

fn context(session: &str, party: usize) -> Vec<u8> {
    let mut c = Vec::with_capacity(session.len() + 16);
    c.extend_from_slice(&(session.len() as u64).to_be_bytes());
    c.extend_from_slice(session.as_bytes());
    c.extend_from_slice(&(party as u64).to_be_bytes());
    c
}

fn derive(
    shared: &[u8; 32],
    ephemeral: &[u8; 32],
    analyst: &[u8; 32],
    session: &str,
    party: usize,
) -> Result<LessSafeKey, ()> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(analyst);
    let ctx = context(session, party);
    let info = [INFO, ctx.as_slice()];
    let prk = Salt::new(HKDF_SHA256, &salt).extract(shared);
    let okm = prk.expand(&info, &CHACHA20_POLY1305).map_err(|_| ())?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

pub use concord_net::{hex, unhex};

/// Decode exactly 32 hex bytes.
pub fn decode32(text: &str) -> Option<[u8; 32]> {
    unhex(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn x25519_rfc7748_vectors() {
        // RFC 7748 section 6.1.
        let alice = decode32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").unwrap();
        let alice_pub = decode32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a").unwrap();
        let bob_pub = decode32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f").unwrap();
        let shared = decode32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742").unwrap();
        assert_eq!(AnalystKey(alice).public(), alice_pub);
        assert_eq!(MontgomeryPoint(bob_pub).mul_clamped(alice).to_bytes(), shared);
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let key = AnalystKey::generate(&mut rng);
        let env = seal(&key.public(), "s1", 2, b"secret share", &mut rng).unwrap();
        assert_eq!(key.open("s1", 2, &env).unwrap(), b"secret share");
        // Moved to another party or session.
        assert!(key.open("s1", 1, &env).is_err());
        assert!(key.open("s2", 2, &env).is_err());
        // A flipped ciphertext bit.
        let mut bad = env.clone();
        let mut bytes = unhex(&bad.ciphertext).unwrap();
        bytes[0] ^= 1;
        bad.ciphertext = hex(&bytes);
        assert!(matches!(key.open("s1", 2, &bad), Err(SessionError::Seal { party: 2, .. })));
        // Another analyst's key.
        let other = AnalystKey::generate(&mut rng);
        assert!(other.open("s1", 2, &env).is_err());
        // Garbage fields are errors, not panics.
        let junk = Envelope { ephemeral: "zz".into(), ciphertext: "abc".into() };
        assert!(key.open("s1", 2, &junk).is_err());
        assert!(!format!("{key:?}").contains(&hex(&key.0)));
    }

    #[test]
    fn low_order_keys_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        assert!(seal(&[0u8; 32], "s", 0, b"x", &mut rng).is_err());
        let key = AnalystKey::generate(&mut rng);
        let env = Envelope { ephemeral: hex(&[0u8; 32]), ciphertext: hex(&[0u8; 20]) };
        assert!(key.open("s", 0, &env).is_err());
    }
}
