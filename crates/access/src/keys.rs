//! Analysts' Ed25519 keys (RFC 8032) and their text forms.
//!
//! | key | text form |
//! | --- | --- |
//! | secret (key file) | `concord-analyst-secret-v1:` + 64 hex digits of the 32-byte RFC 8032 seed |
//! | public (registered on nodes) | `concord-analyst-v1:` + 64 hex digits of the 32-byte RFC 8032 public key |
//!
//! The fingerprint of a public key is the first 16 hex digits (8 bytes) of
//! SHA-256 of its 32 bytes: short enough to read out over the phone when an
//! operator registers an analyst.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{hex, unhex, AccessError};

/// Prefix of an analyst's public key in text form.
pub const PUBLIC_PREFIX: &str = "concord-analyst-v1:";
/// Prefix of an analyst's secret key in text form (the key file).
pub const SECRET_PREFIX: &str = "concord-analyst-secret-v1:";

/// An analyst's Ed25519 signing key (the 32-byte RFC 8032 seed). Zeroized on
/// drop, redacted in `Debug`, compared in constant time; not `Clone`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct AnalystSecretKey {
    seed: [u8; 32],
}

impl AnalystSecretKey {
    /// A fresh key from `rng`.
    pub fn generate(rng: &mut impl CryptoRng) -> AnalystSecretKey {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        AnalystSecretKey { seed }
    }

    /// The key with this RFC 8032 seed.
    pub fn from_seed(seed: [u8; 32]) -> AnalystSecretKey {
        AnalystSecretKey { seed }
    }

    /// Reads the text form `concord-analyst-secret-v1:<64 hex>` (surrounding
    /// whitespace, such as a key file's final newline, is ignored). Errors
    /// never echo the text.
    pub fn from_text(text: &str) -> Result<AnalystSecretKey, AccessError> {
        let err = |reason: String| AccessError::Key { kind: "analyst secret key", reason };
        let body = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| err(format!("expected the prefix `{SECRET_PREFIX}`")))?;
        let seed = Zeroizing::new(unhex::<32>(body).map_err(err)?);
        Ok(AnalystSecretKey { seed: *seed })
    }

    /// **Opens the secret**: the text form for the analyst's key file. Write
    /// it only to a file readable by the analyst alone; never log it.
    pub fn expose_text(&self) -> Zeroizing<String> {
        let body = Zeroizing::new(hex(&self.seed));
        Zeroizing::new(format!("{SECRET_PREFIX}{}", body.as_str()))
    }

    /// The matching public key.
    pub fn public_key(&self) -> AnalystPublicKey {
        AnalystPublicKey(self.signing_key().verifying_key())
    }

    /// The RFC 8032 Ed25519 signature of `message` (the dalek key is
    /// rebuilt per call and zeroized when it is dropped).
    pub(crate) fn sign_bytes(&self, message: &[u8]) -> [u8; 64] {
        self.signing_key().sign(message).to_bytes()
    }

    fn signing_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.seed)
    }
}

impl ConstantTimeEq for AnalystSecretKey {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.seed.ct_eq(&other.seed)
    }
}

impl PartialEq for AnalystSecretKey {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.ct_eq(other))
    }
}

impl Eq for AnalystSecretKey {}

impl fmt::Debug for AnalystSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AnalystSecretKey([redacted])")
    }
}

/// An analyst's Ed25519 public key, as registered on the nodes. Serialized
/// (serde) as its text form `concord-analyst-v1:<64 hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AnalystPublicKey(VerifyingKey);

impl AnalystPublicKey {
    /// The key from its 32 bytes; refuses bytes that are not a point and the
    /// small-order (weak) keys, for which a signature proves nothing.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<AnalystPublicKey, AccessError> {
        let err = |reason: &str| AccessError::Key { kind: "analyst public key", reason: reason.into() };
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| err("not a valid Ed25519 point"))?;
        if key.is_weak() {
            return Err(err("a small-order (weak) Ed25519 key is not accepted"));
        }
        Ok(AnalystPublicKey(key))
    }

    /// The 32 bytes of the key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Reads the text form `concord-analyst-v1:<64 hex>` (surrounding
    /// whitespace is ignored).
    pub fn from_text(text: &str) -> Result<AnalystPublicKey, AccessError> {
        let err = |reason: String| AccessError::Key { kind: "analyst public key", reason };
        let trimmed = text.trim();
        let body = match trimmed.strip_prefix(PUBLIC_PREFIX) {
            Some(body) => body,
            None if trimmed.starts_with(SECRET_PREFIX) => {
                return Err(err("this is a secret key, not a public key: do not share it".into()))
            }
            None => return Err(err(format!("expected the prefix `{PUBLIC_PREFIX}`"))),
        };
        AnalystPublicKey::from_bytes(&unhex::<32>(body).map_err(err)?)
    }

    /// The text form `concord-analyst-v1:<64 hex>`.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_PREFIX}{}", hex(self.0.as_bytes()))
    }

    /// First 16 hex digits of SHA-256 of the key's 32 bytes.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        hex(&digest[..8])
    }

    /// Strict RFC 8032 verification (canonical encodings, no small-order
    /// components) of a 64-byte signature of `message`.
    pub(crate) fn verify_bytes(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.0.verify_strict(message, &Signature::from_bytes(signature)).is_ok()
    }
}

impl fmt::Display for AnalystPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl fmt::Debug for AnalystPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AnalystPublicKey({})", self.to_text())
    }
}

impl FromStr for AnalystPublicKey {
    type Err = AccessError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AnalystPublicKey::from_text(s)
    }
}

impl TryFrom<String> for AnalystPublicKey {
    type Error = AccessError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        AnalystPublicKey::from_text(&s)
    }
}

impl From<AnalystPublicKey> for String {
    fn from(k: AnalystPublicKey) -> String {
        k.to_text()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// RFC 8032 section 7.1, TEST 1 (empty message).
    const RFC_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const RFC_SIG: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

    #[test]
    fn rfc8032_test_1() {
        let key = AnalystSecretKey::from_text(&format!("{SECRET_PREFIX}{RFC_SECRET}\n")).unwrap();
        assert_eq!(key.public_key().to_text(), format!("{PUBLIC_PREFIX}{RFC_PUBLIC}"));
        let sig = key.sign_bytes(b"");
        assert_eq!(hex(&sig), RFC_SIG);
        assert!(key.public_key().verify_bytes(b"", &sig));
        assert!(!key.public_key().verify_bytes(b"x", &sig));
        assert_eq!(key.expose_text().as_str(), format!("{SECRET_PREFIX}{RFC_SECRET}"));
    }

    #[test]
    fn generate_text_round_trip_and_redaction() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let a = AnalystSecretKey::generate(&mut rng);
        let b = AnalystSecretKey::generate(&mut rng);
        assert_ne!(a, b);
        let a2 = AnalystSecretKey::from_text(&a.expose_text()).unwrap();
        assert_eq!(a, a2);
        assert_eq!(format!("{a:?}"), "AnalystSecretKey([redacted])");
        let pk = a.public_key();
        assert_eq!(pk.to_text().parse::<AnalystPublicKey>().unwrap(), pk);
        assert_eq!(AnalystPublicKey::from_bytes(&pk.to_bytes()).unwrap(), pk);
        let json = serde_json::to_string(&pk).unwrap();
        assert_eq!(json, format!("\"{}\"", pk.to_text()));
        assert_eq!(serde_json::from_str::<AnalystPublicKey>(&json).unwrap(), pk);
        let fp = pk.fingerprint();
        assert_eq!(fp.len(), 16);
        assert_eq!(fp, hex(&Sha256::digest(pk.to_bytes())[..8]));
        assert_ne!(fp, b.public_key().fingerprint());
    }

    #[test]
    fn parse_errors_are_clear_and_do_not_echo_secrets() {
        let e = AnalystSecretKey::from_text("concord-analyst-secret-v1:zz").unwrap_err();
        assert_eq!(e.to_string(), "analyst secret key: expected 64 hex digits, got 2 characters");
        let secretish = format!("{SECRET_PREFIX}{}", "q".repeat(64));
        let e = AnalystSecretKey::from_text(&secretish).unwrap_err().to_string();
        assert_eq!(e, "analyst secret key: contains a character that is not a hex digit");
        let e = AnalystSecretKey::from_text(RFC_SECRET).unwrap_err().to_string();
        assert_eq!(e, "analyst secret key: expected the prefix `concord-analyst-secret-v1:`");
        assert!(!e.contains(RFC_SECRET));
        let e = AnalystPublicKey::from_text(&format!("{SECRET_PREFIX}{RFC_SECRET}")).unwrap_err();
        assert_eq!(e.to_string(), "analyst public key: this is a secret key, not a public key: do not share it");
        let e = AnalystPublicKey::from_text("ssh-ed25519 AAAA").unwrap_err();
        assert_eq!(e.to_string(), "analyst public key: expected the prefix `concord-analyst-v1:`");
        // The identity point (small order) is refused.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let e = AnalystPublicKey::from_bytes(&identity).unwrap_err();
        assert_eq!(e.to_string(), "analyst public key: a small-order (weak) Ed25519 key is not accepted");
        let e = serde_json::from_str::<AnalystPublicKey>("\"concord-analyst-v1:00\"").unwrap_err();
        assert!(e.to_string().contains("expected 64 hex digits"), "{e}");
    }
}
