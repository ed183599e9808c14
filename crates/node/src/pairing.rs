//! Pairing by one-time invitation.
//!
//! The inviting node creates a random 32-byte secret and prints an
//! invitation: `concord-invite:v1:` followed by the hex of a JSON object
//! `{api, name, ed25519_public, tls_fingerprint, secret, expires}`. Its store
//! keeps only the invitation id (SHA-256 of the secret), a MAC key derived
//! from the secret ([`mac_key`]), the expiry and whether it was used; never
//! the secret.
//!
//! The joining node sends its public identity to `POST /api/pair` with
//! `mac = HMAC-SHA256(mac_key, "concord-pair-request:v1\n" || canonical JSON)`
//! and the inviter replies with its own, MAC'd the same way under the label
//! `concord-pair-reply:v1`. Canonical JSON: the fields (invitation id
//! included) in a JSON object with sorted keys and no whitespace.
//! Each side pins the other's Ed25519 key and TLS fingerprint.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{hex, unhex};

/// Prefix of an encoded invitation.
pub const INVITATION_PREFIX: &str = "concord-invite:v1:";
/// Default lifetime of an invitation, in seconds.
pub const DEFAULT_TTL_SECS: u64 = 600;
const REQUEST_LABEL: &[u8] = b"concord-pair-request:v1\n";
const REPLY_LABEL: &[u8] = b"concord-pair-reply:v1\n";

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// The invitation id: SHA-256 of the secret, hex.
pub fn invitation_id(secret: &[u8]) -> String {
    hex(&Sha256::digest(secret))
}

/// The MAC key derived from the secret: SHA-256("concord-pair-mac:v1" || secret).
pub fn mac_key(secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"concord-pair-mac:v1");
    h.update(secret);
    h.finalize().into()
}

/// A decoded invitation. `Debug` redacts the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invitation {
    /// The inviting node's HTTP API address (`host:port`).
    pub api: String,
    /// The inviting node's name.
    pub name: String,
    /// Its Ed25519 public key, hex.
    pub ed25519_public: String,
    /// Its TLS certificate fingerprint, hex.
    pub tls_fingerprint: String,
    /// The one-time secret, hex (64 digits).
    pub secret: String,
    /// Expiry, Unix seconds.
    pub expires: i64,
}

impl Invitation {
    /// The one-line text form.
    pub fn encode(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{INVITATION_PREFIX}{}", hex(json.as_bytes()))
    }

    /// Parse the text form; the error names what is wrong.
    pub fn parse(text: &str) -> Result<Invitation, String> {
        let body = text
            .trim()
            .strip_prefix(INVITATION_PREFIX)
            .ok_or_else(|| format!("malformed invitation: it does not start with {INVITATION_PREFIX:?}"))?;
        let bytes = unhex(body).ok_or("malformed invitation: the part after the prefix is not hexadecimal")?;
        let inv: Invitation = serde_json::from_slice(&bytes)
            .map_err(|e| format!("malformed invitation: its JSON content is invalid: {e}"))?;
        crate::config::check_name(&inv.name).map_err(|e| format!("malformed invitation: field `name`: {e}"))?;
        check_hex32("ed25519_public", &inv.ed25519_public).map_err(|e| format!("malformed invitation: {e}"))?;
        check_hex32("tls_fingerprint", &inv.tls_fingerprint).map_err(|e| format!("malformed invitation: {e}"))?;
        check_hex32("secret", &inv.secret).map_err(|e| format!("malformed invitation: {e}"))?;
        if inv.api.trim().is_empty() || !inv.api.contains(':') {
            return Err(format!("malformed invitation: field `api` {:?} is not host:port", inv.api));
        }
        Ok(inv)
    }

    /// The secret's bytes (checked by [`Invitation::parse`]).
    pub fn secret_bytes(&self) -> Vec<u8> {
        unhex(&self.secret).unwrap_or_default()
    }
}

impl core::fmt::Debug for Invitation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Invitation")
            .field("api", &self.api)
            .field("name", &self.name)
            .field("ed25519_public", &self.ed25519_public)
            .field("tls_fingerprint", &self.tls_fingerprint)
            .field("secret", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

/// Check that field `field` is 64 hexadecimal digits (32 bytes). The
/// `secret` field's value is never echoed in the error.
pub fn check_hex32(field: &str, value: &str) -> Result<(), String> {
    match unhex(value) {
        Some(b) if b.len() == 32 => Ok(()),
        _ if field == "secret" => {
            Err(format!("field `{field}` must be 64 hexadecimal digits, got {} characters", value.chars().count()))
        }
        _ => Err(format!("field `{field}` must be 64 hexadecimal digits, got {value:?}")),
    }
}

/// One side's public facts, as exchanged during pairing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairFields {
    /// Node name.
    pub name: String,
    /// Ed25519 public key, hex.
    pub ed25519_public: String,
    /// TLS fingerprint, hex.
    pub tls_fingerprint: String,
    /// MPC address (`host:port`).
    pub mpc_address: String,
}

impl PairFields {
    /// Check the fields' forms; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        crate::config::check_name(&self.name).map_err(|e| format!("field `name`: {e}"))?;
        check_hex32("ed25519_public", &self.ed25519_public)?;
        check_hex32("tls_fingerprint", &self.tls_fingerprint)?;
        if self.mpc_address.is_empty() || self.mpc_address.len() > 255 {
            return Err("field `mpc_address` must be 1 to 255 characters".into());
        }
        Ok(())
    }

    fn canonical(&self, label: &[u8], invitation_id: &str) -> Vec<u8> {
        // serde_json's map is sorted by key: canonical form.
        let json = serde_json::json!({
            "invitation_id": invitation_id,
            "name": self.name,
            "ed25519_public": self.ed25519_public,
            "tls_fingerprint": self.tls_fingerprint,
            "mpc_address": self.mpc_address,
        });
        let mut out = label.to_vec();
        out.extend_from_slice(json.to_string().as_bytes());
        out
    }

    /// MAC of these fields as a pairing request (`reply = false`) or reply.
    pub fn mac(&self, key: &[u8; 32], invitation_id: &str, reply: bool) -> String {
        let label = if reply { REPLY_LABEL } else { REQUEST_LABEL };
        hex(&hmac_sha256(key, &self.canonical(label, invitation_id)))
    }

    /// Verify `mac` (hex) in constant time.
    pub fn verify(&self, key: &[u8; 32], invitation_id: &str, reply: bool, mac: &str) -> bool {
        let expected = self.mac(key, invitation_id, reply);
        let given = unhex(mac).unwrap_or_default();
        let expected = unhex(&expected).unwrap_or_default();
        given.len() == expected.len() && bool::from(given.ct_eq(&expected))
    }
}

/// Body of `POST /api/pair`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairRequest {
    /// SHA-256 of the invitation's secret, hex.
    pub invitation_id: String,
    /// The joining node's facts.
    #[serde(flatten)]
    pub fields: PairFields,
    /// The inviter's Ed25519 key as read in the invitation: the inviter
    /// refuses (`identity_mismatch`, invitation not consumed) if it is not
    /// its own, so that a pairing the joiner will refuse is not recorded.
    pub expect_ed25519_public: String,
    /// The inviter's TLS fingerprint as read in the invitation (likewise).
    pub expect_tls_fingerprint: String,
    /// HMAC, hex.
    pub mac: String,
}

/// Answer of `POST /api/pair`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairReply {
    /// The inviting node's facts.
    #[serde(flatten)]
    pub fields: PairFields,
    /// HMAC, hex.
    pub mac: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex(&mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn hmac_rfc4231_case_6_long_key() {
        let mac = hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex(&mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn the_secret_reaches_neither_debug_nor_errors() {
        let inv = sample();
        assert!(!format!("{inv:?}").contains(&inv.secret));
        let almost = inv.secret[..63].to_string();
        let err = check_hex32("secret", &almost).unwrap_err();
        assert!(!err.contains(&almost) && err.contains("63 characters"), "{err}");
    }

    fn sample() -> Invitation {
        Invitation {
            api: "127.0.0.1:7300".into(),
            name: "a".into(),
            ed25519_public: "11".repeat(32),
            tls_fingerprint: "22".repeat(32),
            secret: "33".repeat(32),
            expires: 5,
        }
    }

    #[test]
    fn invitation_round_trip_and_errors() {
        let inv = sample();
        assert_eq!(Invitation::parse(&inv.encode()), Ok(inv.clone()));
        assert!(Invitation::parse("hello").unwrap_err().contains("does not start with"));
        assert!(Invitation::parse("concord-invite:v1:zz").unwrap_err().contains("not hexadecimal"));
        let mut bad = inv.clone();
        bad.secret = "33".into();
        assert!(Invitation::parse(&bad.encode()).unwrap_err().contains("field `secret`"));
    }

    #[test]
    fn mac_verifies_and_binds_fields() {
        let key = mac_key(&[7; 32]);
        let f = PairFields {
            name: "b".into(),
            ed25519_public: "11".repeat(32),
            tls_fingerprint: "22".repeat(32),
            mpc_address: "127.0.0.1:7301".into(),
        };
        let mac = f.mac(&key, "id", false);
        assert!(f.verify(&key, "id", false, &mac));
        assert!(!f.verify(&key, "id", true, &mac));
        assert!(!f.verify(&key, "other", false, &mac));
        assert!(!f.verify(&mac_key(&[8; 32]), "id", false, &mac));
        let mut g = f.clone();
        g.mpc_address = "127.0.0.1:9".into();
        assert!(!g.verify(&key, "id", false, &mac));
        assert!(!f.verify(&key, "id", false, "zz"));
    }
}
