//! Concord access control, free of I/O: who may ask which query of which
//! nodes.
//!
//! A Concord node only runs a query that an identified analyst asked for and
//! that its own policy allows. This crate holds the pure logic; the node
//! stores analysts, nonces and usage counts, serves the HTTP API and the CLI.
//!
//! * [`keys`]: analysts' Ed25519 keys ([`AnalystSecretKey`],
//!   [`AnalystPublicKey`]) and their text forms. Ed25519 is RFC 8032
//!   (S. Josefsson, I. Liusvaara, "Edwards-Curve Digital Signature Algorithm
//!   (EdDSA)", RFC 8032, January 2017), implemented by `ed25519-dalek`;
//!   verification is strict (canonical `S`, no small-order keys).
//! * [`request`]: the signed query request ([`Request`], [`SignedRequest`],
//!   [`sign`]): a versioned document naming the analyst, SQL, dataset,
//!   ordered parties, session options, result recipient, nonce and validity
//!   window, with a canonical byte encoding ([`Request::canonical_bytes`])
//!   whose SHA-256 ([`Request::hash`]) approvals and the audit log refer to.
//! * [`verify`](mod@verify): checking a signed request against the registered
//!   analysts, the clock and the nonces already seen ([`verify()`] gives a
//!   [`VerifiedRequest`]), and checking that what a node is about to run is
//!   what was signed ([`VerifiedRequest::check_covers`]).
//! * [`policy`]: a node's TOML policy ([`Policy::from_toml`]) and its
//!   decision on one request ([`Policy::evaluate`] gives a [`Decision`]).
//!
//! The concepts follow the access-control part of the Concord reference
//! `../shared/reference/smc-in-the-iot-management-access-control.md`
//! (M. von Maltitz, G. Carle, "Leveraging Secure Multiparty Computation in
//! the Internet of Things", TU Munich 2018, after M. von Maltitz, D. Bitzer,
//! G. Carle, "Access control and Accountability for Secure Multiparty
//! Computation"): request and query formats, request generation, access
//! control and authorisation at every peer, the request-to-session
//! translation, and accountability (every decision refers to the request
//! hash).
//!
//! # Flow at one node
//!
//! ```
//! use std::collections::BTreeMap;
//! use concord_access::*;
//! use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
//!
//! let mut rng = ChaCha20Rng::seed_from_u64(7);
//! // The analyst (CLI): a key, registered on every node, then a signed request.
//! let key = AnalystSecretKey::generate(&mut rng);
//! let now = 1_767_225_600_000;
//! let request = Request {
//!     version: REQUEST_VERSION,
//!     analyst: "alice".into(),
//!     sql: "SELECT region, AVG(bmi) FROM patients GROUP BY region".into(),
//!     dataset: "patients".into(),
//!     parties: vec!["a".into(), "b".into()],
//!     options: RequestOptions { min_group_size: Some(2), ..Default::default() },
//!     recipient: RecipientKey([1; 32]), // the analyst's X25519 key for this query
//!     nonce: Nonce::random(&mut rng),
//!     issued_at_ms: now,
//!     expires_at_ms: now + 300_000,
//! };
//! let json = sign(request, &key).to_json()?;
//!
//! // A node: verify, parse the query, decide.
//! let mut analysts = BTreeMap::new();
//! analysts.insert(
//!     "alice".to_string(),
//!     AnalystRecord { key: key.public_key(), role: "researcher".into(), revoked: false },
//! );
//! let mut nonces = MemoryReplayGuard::new(); // a node persists these
//! let signed = SignedRequest::from_json(&json)?;
//! let verified = verify(&signed, &analysts, now + 1_000, &mut nonces, 600_000)?;
//! let schema = concord_query::Schema::from_toml(
//!     "table = \"patients\"\n[[column]]\nname = \"bmi\"\ntype = \"int\"\nmin = 10\nmax = 80\n\
//!      [[column]]\nname = \"region\"\ntype = \"category\"\nvalues = [\"n\", \"s\"]\n",
//! ).map_err(|e| e.to_string())?;
//! let query = concord_query::parse(&verified.request().sql, &schema).map_err(|e| e.to_string())?;
//! let policy = Policy::from_toml(
//!     "[defaults]\nmin_group_size = 10\n[[rule]]\nname = \"r\"\nroles = [\"researcher\"]\n\
//!      datasets = [\"patients\"]\ncolumns = [\"bmi\"]\nfunctions = [\"AVG\"]\ngroup_by_columns = [\"region\"]\n",
//! )?;
//! let decision = policy.evaluate(&verified.facts(&schema, &query)?, &Usage { queries_today: 0 });
//! let Decision::Allow(allowed) = &decision else { panic!("{}", decision.explain()) };
//! assert_eq!(allowed.min_group_size, 10); // raised from the requested 2
//!
//! // Before running the session the coordinator built (minimum group size raised):
//! let r = verified.request();
//! let session = RequestOptions { min_group_size: Some(allowed.min_group_size), ..r.options.clone() };
//! verified.check_covers(&r.sql, &r.dataset, &r.parties, &session)?;
//! allowed.check_session(session.min_group_size, session.epsilon)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod keys;
pub mod policy;
pub mod request;
pub mod verify;

pub use keys::{AnalystPublicKey, AnalystSecretKey};
pub use policy::{Allowed, Approvals, Budget, Decision, Denial, DenyReason, Part, Policy, RequestFacts, Rule, Usage};
pub use request::{
    sign, Epsilon, InputCheck, Nonce, OrderMethod, RecipientKey, Request, RequestOptions, Scheme, SignedRequest,
    REQUEST_VERSION,
};
pub use verify::{
    verify, AnalystRecord, AnalystRegistry, MemoryReplayGuard, ReplayGuard, VerifiedRequest, CLOCK_SKEW_MS,
};

/// Everything that can go wrong in this crate. Messages name the field, line,
/// analyst or node at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// A key's text form is malformed (the secret itself is never echoed).
    #[error("{kind}: {reason}")]
    Key {
        /// Which key (`analyst public key`, `analyst secret key`).
        kind: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A request field is malformed (bad hex, empty name, bad epsilon, ...).
    #[error("malformed request: `{field}` {reason}")]
    Malformed {
        /// The field.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The JSON form of a signed request cannot be read (with line and column).
    #[error("signed request JSON: {0}")]
    Json(String),
    /// The request's version is not one this crate understands.
    #[error("unsupported request version {found} (this node understands version {supported})")]
    UnsupportedVersion {
        /// The version in the request.
        found: u32,
        /// The version understood.
        supported: u32,
    },
    /// The request carries no signature.
    #[error("the request is not signed (empty signature)")]
    Unsigned,
    /// The analyst is not registered on this node.
    #[error("unknown analyst `{0}`: not registered on this node")]
    UnknownAnalyst(String),
    /// The analyst's registration has been revoked.
    #[error("analyst `{0}` has been revoked on this node")]
    Revoked(String),
    /// The signature is not the registered key's signature of this request.
    #[error(
        "bad signature: the request was not signed by analyst `{0}`'s registered key, or was altered after signing"
    )]
    BadSignature(String),
    /// The request's validity window has ended.
    #[error("the request expired at {expires_at_ms} ms (now {now_ms} ms)")]
    Expired {
        /// End of the validity window.
        expires_at_ms: u64,
        /// The node's clock.
        now_ms: u64,
    },
    /// The request is issued in the future, beyond the allowed clock skew.
    #[error("the request is not valid yet: issued at {issued_at_ms} ms, now {now_ms} ms (clock skew allowance {skew_ms} ms)")]
    NotYetValid {
        /// Start of the validity window.
        issued_at_ms: u64,
        /// The node's clock.
        now_ms: u64,
        /// The allowance.
        skew_ms: u64,
    },
    /// The validity window is longer than the node accepts.
    #[error("the request's lifetime {lifetime_ms} ms exceeds the maximum {max_ms} ms")]
    LifetimeTooLong {
        /// `expires_at_ms - issued_at_ms`.
        lifetime_ms: u64,
        /// The node's maximum.
        max_ms: u64,
    },
    /// This analyst already used this nonce.
    #[error("replayed request: analyst `{analyst}` already used nonce {nonce}")]
    Replayed {
        /// The analyst.
        analyst: String,
        /// The nonce, hex.
        nonce: String,
    },
    /// What a node is about to run differs from what was signed.
    #[error("the signature does not cover {field}: signed {signed}, about to run {run}")]
    NotCovered {
        /// The differing field.
        field: &'static str,
        /// The signed value.
        signed: String,
        /// The value about to run.
        run: String,
    },
    /// A session is weaker than this node's policy decision requires.
    #[error("the session's {what} is {session}, but this node's policy requires {required}")]
    BelowPolicy {
        /// The setting (`minimum group size`, `epsilon`).
        what: &'static str,
        /// What the policy requires.
        required: String,
        /// What the session has.
        session: String,
    },
    /// A policy file cannot be read (the message names the line).
    #[error("policy: {0}")]
    Policy(String),
    /// The query refers to something the schema does not have.
    #[error("query: {0}")]
    Query(String),
    /// The node's analyst or nonce store failed.
    #[error("access store: {0}")]
    Store(String),
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Decodes exactly `N` bytes of hex (either case); the error says what is wrong
/// without echoing the input.
pub(crate) fn unhex<const N: usize>(s: &str) -> Result<[u8; N], String> {
    if s.len() != 2 * N {
        return Err(format!("expected {} hex digits, got {} characters", 2 * N, s.chars().count()));
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        let digit = |c: u8| char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok());
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => *o = (h << 4) | l,
            _ => return Err("contains a character that is not a hex digit".into()),
        }
    }
    Ok(out)
}

/// 1-based line of byte offset `at` in `text`.
pub(crate) fn line_at(text: &str, at: usize) -> usize {
    text.as_bytes().iter().take(at).filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(unhex::<3>("00ABff").unwrap(), [0x00, 0xab, 0xff]);
        assert_eq!(unhex::<2>("abc").unwrap_err(), "expected 4 hex digits, got 3 characters");
        assert_eq!(unhex::<2>("ab g").unwrap_err(), "contains a character that is not a hex digit");
        assert_eq!(unhex::<1>("é").unwrap_err(), "contains a character that is not a hex digit");
        assert_eq!(line_at("a\nb\nc", 4), 3);
    }
}
