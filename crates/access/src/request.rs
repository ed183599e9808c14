//! The signed query request: what an analyst asks, in a canonical form that
//! every node checks against the analyst's registered key.
//!
//! ## JSON transport form ([`SignedRequest`])
//!
//! ```json
//! {
//!   "request": {
//!     "version": 1,
//!     "analyst": "alice",
//!     "sql": "SELECT region, AVG(bmi) FROM patients GROUP BY region",
//!     "dataset": "patients",
//!     "parties": ["hospital-a", "hospital-b", "hospital-c"],
//!     "options": { "scheme": "shamir", "min_group_size": 10, "reveal_final": false, "epsilon": "0.5" },
//!     "recipient": "<64 hex: the analyst's X25519 public key for this query>",
//!     "nonce": "<32 hex: 16 random bytes>",
//!     "issued_at_ms": 1767225600000,
//!     "expires_at_ms": 1767225900000
//!   },
//!   "signature": "<128 hex: Ed25519 signature of the canonical bytes>"
//! }
//! ```
//!
//! Unknown fields are refused. Absent options mean "node default"
//! (`threshold`, `scheme`, `min_group_size`, `input_check` = `clamp` |
//! `reject` | `off`, `order_method` = `auto` | `search` | `sort`, `epsilon`);
//! `reveal_final` defaults to false. `epsilon` is a JSON *string* holding the
//! shortest decimal that parses back to the same `f64` (Rust's `{:?}`), so
//! the JSON form round-trips bit for bit whatever JSON number parser a
//! reader uses.
//!
//! ## Canonical bytes ([`Request::canonical_bytes`])
//!
//! What is signed and hashed; never JSON. Integers are big-endian; `str` is
//! a `u64` byte length then the UTF-8 bytes; `opt<T>` is byte `0` (absent)
//! or byte `1` then `T`; `bool` is one byte `0` or `1`. In this fixed order:
//!
//! ```text
//! "concord-access-request" 0x00     domain separator, 23 bytes
//! u32 version
//! str analyst | str sql | str dataset
//! u64 number of parties, then str per party (in order)
//! opt<u64> threshold | opt<str> scheme | opt<u64> min_group_size
//! opt<str> input_check | bool reveal_final | opt<str> order_method
//! opt<u64> epsilon (the IEEE 754 bits of the f64)
//! 32 bytes recipient | 16 bytes nonce
//! u64 issued_at_ms | u64 expires_at_ms
//! ```
//!
//! Every variable-length item is length-prefixed and the field order is
//! fixed, so two different requests never have equal canonical bytes.
//! [`Request::hash`] is SHA-256 of these bytes.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{hex, unhex, AccessError, AnalystSecretKey};

/// The request format version this crate writes and understands.
pub const REQUEST_VERSION: u32 = 1;

/// Domain separator at the start of the canonical bytes.
pub const DOMAIN: &[u8; 23] = b"concord-access-request\0";

/// Longest accepted analyst, dataset or party name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// A query request, as the analyst signs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Format version ([`REQUEST_VERSION`]).
    pub version: u32,
    /// The analyst's registered name.
    pub analyst: String,
    /// The SQL text, exactly as it will run.
    pub sql: String,
    /// The dataset (table) the query reads at every party.
    pub dataset: String,
    /// The participating nodes, in party order.
    pub parties: Vec<String>,
    /// Session options.
    pub options: RequestOptions,
    /// The analyst's per-query X25519 public key; result shares are sealed to it.
    pub recipient: RecipientKey,
    /// 16 random bytes, unique per analyst (replay protection).
    pub nonce: Nonce,
    /// Start of the validity window, ms since the Unix epoch.
    pub issued_at_ms: u64,
    /// End of the validity window (exclusive), ms since the Unix epoch.
    pub expires_at_ms: u64,
}

/// What the analyst asks for besides the query; mirrors the session's options
/// (absent = the node's default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestOptions {
    /// Shamir threshold t.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u64>,
    /// Sharing scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Scheme>,
    /// Minimum group size (overrides the schema's; 0 turns it off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_group_size: Option<u64>,
    /// Input check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_check: Option<InputCheck>,
    /// Compute the final statistics inside MPC instead of revealing sums.
    #[serde(default)]
    pub reveal_final: bool,
    /// Order method for MIN/MAX/MEDIAN/PERCENTILE_CONT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_method: Option<OrderMethod>,
    /// Differential-privacy parameter (absent: the policy's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<Epsilon>,
}

/// The sharing scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// n-of-n additive sharing.
    Additive,
    /// t-of-n Shamir sharing.
    Shamir,
}

/// The input check policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputCheck {
    /// Clamp out-of-range statistics inside MPC.
    Clamp,
    /// Abort on out-of-range statistics.
    Reject,
    /// No check.
    Off,
}

/// The order method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderMethod {
    /// The session chooses.
    Auto,
    /// Domain search.
    Search,
    /// Oblivious sort.
    Sort,
}

impl Scheme {
    /// The name used in JSON and in the session options.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Additive => "additive",
            Scheme::Shamir => "shamir",
        }
    }
}

impl InputCheck {
    /// The name used in JSON and in the session options.
    pub fn as_str(self) -> &'static str {
        match self {
            InputCheck::Clamp => "clamp",
            InputCheck::Reject => "reject",
            InputCheck::Off => "off",
        }
    }
}

impl OrderMethod {
    /// The name used in JSON and in the session options.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderMethod::Auto => "auto",
            OrderMethod::Search => "search",
            OrderMethod::Sort => "sort",
        }
    }
}

/// A differential-privacy epsilon: finite and > 0 (so its bits are canonical).
/// Serialized as a string, the shortest decimal that parses back exactly.
#[derive(Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Epsilon(f64);

impl Epsilon {
    /// `value` if it is finite and > 0 (NaN, infinities, zero and negatives are refused).
    pub fn new(value: f64) -> Result<Epsilon, AccessError> {
        if value.is_finite() && value > 0.0 {
            Ok(Epsilon(value))
        } else {
            Err(AccessError::Malformed { field: "epsilon", reason: format!("must be finite and > 0, got {value}") })
        }
    }

    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl Eq for Epsilon {}

impl fmt::Display for Epsilon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Debug for Epsilon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epsilon({:?})", self.0)
    }
}

impl FromStr for Epsilon {
    type Err = AccessError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v: f64 = s.trim().parse().map_err(|_| AccessError::Malformed {
            field: "epsilon",
            reason: format!("{s:?} is not a decimal number"),
        })?;
        Epsilon::new(v)
    }
}

impl TryFrom<String> for Epsilon {
    type Error = AccessError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Epsilon> for String {
    fn from(e: Epsilon) -> String {
        e.to_string()
    }
}

/// Declares a fixed-size byte string that is hex in JSON.
macro_rules! hex_bytes {
    ($(#[$doc:meta])* $name:ident, $n:literal, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(pub [u8; $n]);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), hex(&self.0))
            }
        }

        impl FromStr for $name {
            type Err = AccessError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                unhex::<$n>(s).map($name).map_err(|reason| AccessError::Malformed { field: $field, reason })
            }
        }

        impl TryFrom<String> for $name {
            type Error = AccessError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.to_string()
            }
        }
    };
}

hex_bytes!(
    /// A request nonce: 16 random bytes, hex in JSON.
    Nonce,
    16,
    "nonce"
);

hex_bytes!(
    /// The analyst's per-query X25519 public key (32 bytes, hex in JSON).
    RecipientKey,
    32,
    "recipient"
);

impl Nonce {
    /// A fresh nonce from `rng`.
    pub fn random(rng: &mut impl CryptoRng) -> Nonce {
        let mut n = [0u8; 16];
        rng.fill_bytes(&mut n);
        Nonce(n)
    }
}

/// The canonical encoder (see the [module docs](self)).
struct Canonical(Vec<u8>);

impl Canonical {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn flag(&mut self, b: bool) {
        self.0.push(u8::from(b));
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        self.flag(v.is_some());
        if let Some(v) = v {
            self.u64(v);
        }
    }
    fn opt_str(&mut self, v: Option<&str>) {
        self.flag(v.is_some());
        if let Some(v) = v {
            self.str(v);
        }
    }
}

impl Request {
    /// The canonical byte encoding (see the [module docs](self)): what is
    /// signed and hashed.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut c = Canonical(Vec::with_capacity(256 + self.sql.len()));
        c.0.extend_from_slice(DOMAIN);
        c.0.extend_from_slice(&self.version.to_be_bytes());
        c.str(&self.analyst);
        c.str(&self.sql);
        c.str(&self.dataset);
        c.u64(self.parties.len() as u64);
        for p in &self.parties {
            c.str(p);
        }
        let o = &self.options;
        c.opt_u64(o.threshold);
        c.opt_str(o.scheme.map(Scheme::as_str));
        c.opt_u64(o.min_group_size);
        c.opt_str(o.input_check.map(InputCheck::as_str));
        c.flag(o.reveal_final);
        c.opt_str(o.order_method.map(OrderMethod::as_str));
        c.opt_u64(o.epsilon.map(|e| e.0.to_bits()));
        c.0.extend_from_slice(&self.recipient.0);
        c.0.extend_from_slice(&self.nonce.0);
        c.u64(self.issued_at_ms);
        c.u64(self.expires_at_ms);
        c.0
    }

    /// SHA-256 of [`Request::canonical_bytes`]: the request's identity in
    /// approvals and the audit log.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
    }

    /// [`Request::hash`] in hex.
    pub fn hash_hex(&self) -> String {
        hex(&self.hash())
    }

    /// Structural checks (done by [`crate::verify()`]; call before signing to
    /// fail early): names are 1..=[`MAX_NAME_LEN`] bytes without control
    /// characters or surrounding spaces, at least one party and no party twice,
    /// non-empty SQL, and `expires_at_ms > issued_at_ms`.
    pub fn validate(&self) -> Result<(), AccessError> {
        check_name("analyst", &self.analyst)?;
        check_name("dataset", &self.dataset)?;
        if self.parties.is_empty() {
            return Err(AccessError::Malformed { field: "parties", reason: "must name at least one node".into() });
        }
        let mut seen = HashSet::new();
        for p in &self.parties {
            check_name("parties", p)?;
            if !seen.insert(p.as_str()) {
                return Err(AccessError::Malformed { field: "parties", reason: format!("names node `{p}` twice") });
            }
        }
        if self.sql.trim().is_empty() {
            return Err(AccessError::Malformed { field: "sql", reason: "is empty".into() });
        }
        if self.expires_at_ms <= self.issued_at_ms {
            return Err(AccessError::Malformed {
                field: "expires_at_ms",
                reason: format!("{} is not after issued_at_ms {}", self.expires_at_ms, self.issued_at_ms),
            });
        }
        Ok(())
    }
}

fn check_name(field: &'static str, name: &str) -> Result<(), AccessError> {
    let reason = if name.is_empty() {
        "is empty".to_string()
    } else if name.len() > MAX_NAME_LEN {
        format!("is longer than {MAX_NAME_LEN} bytes")
    } else if name.chars().any(char::is_control) || name.trim() != name {
        format!("{name:?} contains control characters or surrounding spaces")
    } else {
        return Ok(());
    };
    Err(AccessError::Malformed { field, reason })
}

/// A request with the analyst's Ed25519 signature of its canonical bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRequest {
    /// The request.
    pub request: Request,
    /// 128 hex digits (64 bytes); empty or absent means unsigned.
    #[serde(default)]
    pub signature: String,
}

/// Signs `request` with the analyst's key (RFC 8032 Ed25519 over
/// [`Request::canonical_bytes`]). Does not validate; see [`Request::validate`].
pub fn sign(request: Request, key: &AnalystSecretKey) -> SignedRequest {
    let signature = hex(&key.sign_bytes(&request.canonical_bytes()));
    SignedRequest { request, signature }
}

impl SignedRequest {
    /// The JSON transport form (pretty-printed).
    pub fn to_json(&self) -> Result<String, AccessError> {
        serde_json::to_string_pretty(self).map_err(|e| AccessError::Json(e.to_string()))
    }

    /// Reads the JSON transport form; errors keep serde_json's line and column.
    pub fn from_json(text: &str) -> Result<SignedRequest, AccessError> {
        serde_json::from_str(text).map_err(|e| AccessError::Json(e.to_string()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A well-formed request used across the crate's tests.
    pub(crate) fn sample() -> Request {
        Request {
            version: REQUEST_VERSION,
            analyst: "alice".into(),
            sql: "SELECT region, AVG(bmi) FROM patients GROUP BY region".into(),
            dataset: "patients".into(),
            parties: vec!["a".into(), "b".into(), "c".into()],
            options: RequestOptions {
                threshold: Some(1),
                scheme: Some(Scheme::Shamir),
                min_group_size: Some(5),
                input_check: Some(InputCheck::Clamp),
                reveal_final: false,
                order_method: Some(OrderMethod::Auto),
                epsilon: Some(Epsilon::new(0.5).unwrap()),
            },
            recipient: RecipientKey([7; 32]),
            nonce: Nonce([9; 16]),
            issued_at_ms: 1_000_000,
            expires_at_ms: 1_300_000,
        }
    }

    #[test]
    fn canonical_bytes_layout() {
        let mut r = sample();
        r.options = RequestOptions::default();
        r.parties = vec!["a".into()];
        let b = r.canonical_bytes();
        let mut want = DOMAIN.to_vec();
        want.extend_from_slice(&1u32.to_be_bytes());
        for s in ["alice", r.sql.as_str(), "patients"] {
            want.extend_from_slice(&(s.len() as u64).to_be_bytes());
            want.extend_from_slice(s.as_bytes());
        }
        want.extend_from_slice(&1u64.to_be_bytes());
        want.extend_from_slice(&1u64.to_be_bytes());
        want.push(b'a');
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]); // six absent options and reveal_final = false
        want.extend_from_slice(&[7; 32]);
        want.extend_from_slice(&[9; 16]);
        want.extend_from_slice(&1_000_000u64.to_be_bytes());
        want.extend_from_slice(&1_300_000u64.to_be_bytes());
        assert_eq!(b, want);
        assert_eq!(r.hash(), <[u8; 32]>::from(Sha256::digest(&want)));
        // Epsilon is encoded by its bits.
        r.options.epsilon = Some(Epsilon::new(0.1).unwrap());
        let b = r.canonical_bytes();
        let at = b.len() - 32 - 16 - 16 - 9;
        assert_eq!(&b[at..at + 9], &[&[1u8][..], &0.1f64.to_bits().to_be_bytes()].concat()[..]);
    }

    #[test]
    fn json_round_trip_and_format() {
        let key = AnalystSecretKey::from_seed([3; 32]);
        let signed = sign(sample(), &key);
        let json = signed.to_json().unwrap();
        assert!(json.contains("\"epsilon\": \"0.5\""), "{json}");
        assert!(json.contains(&format!("\"nonce\": \"{}\"", "09".repeat(16))), "{json}");
        let back = SignedRequest::from_json(&json).unwrap();
        assert_eq!(back, signed);
        assert_eq!(back.request.hash(), signed.request.hash());
        assert_eq!(signed.signature.len(), 128);
    }

    #[test]
    fn epsilon_is_validated() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0, -1.0] {
            let e = Epsilon::new(bad).unwrap_err().to_string();
            assert!(e.starts_with("malformed request: `epsilon` must be finite and > 0, got"), "{e}");
        }
        assert_eq!("1e-7".parse::<Epsilon>().unwrap().get(), 1e-7);
        assert_eq!(
            "abc".parse::<Epsilon>().unwrap_err().to_string(),
            "malformed request: `epsilon` \"abc\" is not a decimal number"
        );
        let e = SignedRequest::from_json(
            &sample_json().replace("\"epsilon\": \"0.5\"", "\"epsilon\": \"NaN\"").replace("\n", " "),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`epsilon` must be finite and > 0, got NaN"), "{e}");
        // A JSON number is refused: its parsing is not guaranteed exact.
        let e = SignedRequest::from_json(&sample_json().replace("\"epsilon\": \"0.5\"", "\"epsilon\": 0.5"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a string"), "{e}");
    }

    fn sample_json() -> String {
        sign(sample(), &AnalystSecretKey::from_seed([3; 32])).to_json().unwrap()
    }

    #[test]
    fn json_errors_name_the_field() {
        let j = sample_json();
        let e = SignedRequest::from_json(&j.replace("\"nonce\": \"", "\"nonce\": \"0")).unwrap_err().to_string();
        assert!(e.contains("`nonce` expected 32 hex digits, got 33 characters"), "{e}");
        let e = SignedRequest::from_json(&j.replace("\"dataset\"", "\"datasett\"")).unwrap_err().to_string();
        assert!(e.contains("unknown field `datasett`") && e.contains("line"), "{e}");
        let e = SignedRequest::from_json(&j.replace("\"shamir\"", "\"rot13\"")).unwrap_err().to_string();
        assert!(e.contains("unknown variant `rot13`"), "{e}");
    }

    #[test]
    fn validate_refuses_malformed_requests() {
        type Case = (fn(&mut Request), &'static str);
        let cases: Vec<Case> = vec![
            (|r| r.analyst.clear(), "malformed request: `analyst` is empty"),
            (
                |r| r.dataset = " x".into(),
                "malformed request: `dataset` \" x\" contains control characters or surrounding spaces",
            ),
            (|r| r.analyst = "a".repeat(129), "malformed request: `analyst` is longer than 128 bytes"),
            (|r| r.parties.clear(), "malformed request: `parties` must name at least one node"),
            (|r| r.parties.push("a".into()), "malformed request: `parties` names node `a` twice"),
            (|r| r.sql = "  ".into(), "malformed request: `sql` is empty"),
            (
                |r| r.expires_at_ms = r.issued_at_ms,
                "malformed request: `expires_at_ms` 1000000 is not after issued_at_ms 1000000",
            ),
        ];
        assert!(sample().validate().is_ok());
        for (mutate, msg) in cases {
            let mut r = sample();
            mutate(&mut r);
            assert_eq!(r.validate().unwrap_err().to_string(), msg);
        }
    }
}
