//! Checking a signed request: the analyst, the signature, the validity window
//! and the nonce; then, before running, that the session is what was signed.
//!
//! The node keeps the analysts ([`AnalystRegistry`]) and the nonces seen
//! ([`ReplayGuard`]) in its store; both traits are small so that an SQLite
//! table can implement them. The node must persist nonces until the request
//! they came with expires, or a restart opens a replay window;
//! [`MemoryReplayGuard`] is the in-memory version (tests, and nodes that do
//! not restart within a request lifetime).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::request::{Nonce, Request, RequestOptions, REQUEST_VERSION};
use crate::{unhex, AccessError, AnalystPublicKey, SignedRequest};

/// How far in the future `issued_at_ms` may be (analyst's clock ahead of the node's).
pub const CLOCK_SKEW_MS: u64 = 120_000;

/// What a node knows of a registered analyst.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnalystRecord {
    /// The analyst's public key.
    pub key: AnalystPublicKey,
    /// The analyst's role (matched by policy rules' `roles`).
    pub role: String,
    /// Whether the registration has been revoked.
    pub revoked: bool,
}

/// The analysts registered on a node, by name.
pub trait AnalystRegistry {
    /// The analyst called `name`, if registered (revoked ones included).
    fn lookup(&self, name: &str) -> Result<Option<AnalystRecord>, AccessError>;
}

impl AnalystRegistry for HashMap<String, AnalystRecord> {
    fn lookup(&self, name: &str) -> Result<Option<AnalystRecord>, AccessError> {
        Ok(self.get(name).cloned())
    }
}

impl AnalystRegistry for BTreeMap<String, AnalystRecord> {
    fn lookup(&self, name: &str) -> Result<Option<AnalystRecord>, AccessError> {
        Ok(self.get(name).cloned())
    }
}

/// The (analyst, nonce) pairs a node has accepted.
pub trait ReplayGuard {
    /// Atomically: if `analyst` already used `nonce`, return `false`;
    /// otherwise remember it until `expires_at_ms` and return `true`.
    /// `now_ms` lets an implementation forget pairs whose request has
    /// expired (those requests are refused as expired anyway).
    fn check_and_record(
        &mut self,
        analyst: &str,
        nonce: &Nonce,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<bool, AccessError>;
}

/// An in-memory [`ReplayGuard`]. It forgets a nonce once its request has
/// expired, so it holds at most the requests accepted within one maximum
/// lifetime (plus the clock skew). It is lost on restart: a node persists
/// nonces in its store instead.
#[derive(Clone, Debug, Default)]
pub struct MemoryReplayGuard {
    seen: HashMap<(String, Nonce), u64>,
    by_expiry: BTreeSet<(u64, String, Nonce)>,
}

impl MemoryReplayGuard {
    /// An empty guard.
    pub fn new() -> MemoryReplayGuard {
        MemoryReplayGuard::default()
    }

    /// Number of nonces remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn prune(&mut self, now_ms: u64) {
        while let Some(first) = self.by_expiry.first() {
            if first.0 > now_ms {
                break;
            }
            if let Some((_, analyst, nonce)) = self.by_expiry.pop_first() {
                self.seen.remove(&(analyst, nonce));
            }
        }
    }
}

impl ReplayGuard for MemoryReplayGuard {
    fn check_and_record(
        &mut self,
        analyst: &str,
        nonce: &Nonce,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<bool, AccessError> {
        self.prune(now_ms);
        let key = (analyst.to_string(), *nonce);
        if self.seen.contains_key(&key) {
            return Ok(false);
        }
        self.seen.insert(key, expires_at_ms);
        self.by_expiry.insert((expires_at_ms, analyst.to_string(), *nonce));
        Ok(true)
    }
}

/// A request whose signature, analyst, validity window and nonce have been
/// checked by [`verify()`] (the only way to obtain one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRequest {
    request: Request,
    hash: [u8; 32],
    role: String,
    key: AnalystPublicKey,
}

/// Checks `signed` at time `now_ms`, in this order: version, signature
/// present, well-formed ([`Request::validate`]), analyst registered,
/// signature by the registered key, analyst not revoked, not issued more than
/// [`CLOCK_SKEW_MS`] in the future, not expired (`now_ms < expires_at_ms`),
/// lifetime at most `max_lifetime_ms`, and finally nonce not seen (only a
/// request that passed every other check consumes its nonce).
pub fn verify(
    signed: &SignedRequest,
    registry: &impl AnalystRegistry,
    now_ms: u64,
    replay: &mut impl ReplayGuard,
    max_lifetime_ms: u64,
) -> Result<VerifiedRequest, AccessError> {
    let r = &signed.request;
    if r.version != REQUEST_VERSION {
        return Err(AccessError::UnsupportedVersion { found: r.version, supported: REQUEST_VERSION });
    }
    if signed.signature.trim().is_empty() {
        return Err(AccessError::Unsigned);
    }
    r.validate()?;
    let record = registry.lookup(&r.analyst)?.ok_or_else(|| AccessError::UnknownAnalyst(r.analyst.clone()))?;
    let sig =
        unhex::<64>(signed.signature.trim()).map_err(|reason| AccessError::Malformed { field: "signature", reason })?;
    if !record.key.verify_bytes(&r.canonical_bytes(), &sig) {
        return Err(AccessError::BadSignature(r.analyst.clone()));
    }
    if record.revoked {
        return Err(AccessError::Revoked(r.analyst.clone()));
    }
    if r.issued_at_ms > now_ms.saturating_add(CLOCK_SKEW_MS) {
        return Err(AccessError::NotYetValid { issued_at_ms: r.issued_at_ms, now_ms, skew_ms: CLOCK_SKEW_MS });
    }
    if now_ms >= r.expires_at_ms {
        return Err(AccessError::Expired { expires_at_ms: r.expires_at_ms, now_ms });
    }
    let lifetime_ms = r.expires_at_ms - r.issued_at_ms;
    if lifetime_ms > max_lifetime_ms {
        return Err(AccessError::LifetimeTooLong { lifetime_ms, max_ms: max_lifetime_ms });
    }
    if !replay.check_and_record(&r.analyst, &r.nonce, r.expires_at_ms, now_ms)? {
        return Err(AccessError::Replayed { analyst: r.analyst.clone(), nonce: r.nonce.to_string() });
    }
    Ok(VerifiedRequest { hash: r.hash(), request: r.clone(), role: record.role, key: record.key })
}

impl VerifiedRequest {
    /// The request.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// [`Request::hash`], computed once.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// The analyst's name.
    pub fn analyst(&self) -> &str {
        &self.request.analyst
    }

    /// The analyst's role in the registry at verification time.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The key that signed.
    pub fn key(&self) -> &AnalystPublicKey {
        &self.key
    }

    /// Refuses unless what a node is about to run is what was signed: the
    /// same SQL text, dataset, parties (in order), threshold, scheme, input
    /// check, `reveal_final` and order method. Two options may only be
    /// tightened, as the policy does: the minimum group size may be raised
    /// (absent = 0), and epsilon may be lowered, or set by the policy when
    /// the request gives none.
    pub fn check_covers(
        &self,
        sql: &str,
        dataset: &str,
        parties: &[String],
        options: &RequestOptions,
    ) -> Result<(), AccessError> {
        let r = &self.request;
        let differ =
            |field: &'static str, signed: String, run: String| Err(AccessError::NotCovered { field, signed, run });
        if r.sql != sql {
            return differ("the SQL text", format!("{:?}", r.sql), format!("{sql:?}"));
        }
        if r.dataset != dataset {
            return differ("the dataset", r.dataset.clone(), dataset.to_string());
        }
        if r.parties != parties {
            return differ("the parties", r.parties.join(","), parties.join(","));
        }
        let (s, o) = (&r.options, options);
        if s.threshold != o.threshold {
            return differ("the threshold", show(s.threshold), show(o.threshold));
        }
        if s.scheme != o.scheme {
            return differ("the scheme", show(s.scheme.map(|x| x.as_str())), show(o.scheme.map(|x| x.as_str())));
        }
        if s.input_check != o.input_check {
            let (a, b) = (s.input_check.map(|x| x.as_str()), o.input_check.map(|x| x.as_str()));
            return differ("the input check", show(a), show(b));
        }
        if s.reveal_final != o.reveal_final {
            return differ("reveal_final", s.reveal_final.to_string(), o.reveal_final.to_string());
        }
        if s.order_method != o.order_method {
            let (a, b) = (s.order_method.map(|x| x.as_str()), o.order_method.map(|x| x.as_str()));
            return differ("the order method", show(a), show(b));
        }
        if o.min_group_size.unwrap_or(0) < s.min_group_size.unwrap_or(0) {
            return differ("a lower minimum group size", show(s.min_group_size), show(o.min_group_size));
        }
        if let Some(signed) = s.epsilon {
            if o.epsilon.is_none_or(|run| run > signed) {
                return differ("a larger or absent epsilon", signed.to_string(), show(o.epsilon));
            }
        }
        Ok(())
    }
}

fn show<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "(absent)".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::request::tests::sample;
    use crate::request::{Epsilon, InputCheck, OrderMethod, RecipientKey, Scheme};
    use crate::{sign, AnalystSecretKey};

    const NOW: u64 = 1_100_000;
    const MAX_LIFE: u64 = 600_000;

    fn setup() -> (AnalystSecretKey, BTreeMap<String, AnalystRecord>) {
        let key = AnalystSecretKey::from_seed([1; 32]);
        let mut reg = BTreeMap::new();
        reg.insert(
            "alice".to_string(),
            AnalystRecord { key: key.public_key(), role: "researcher".into(), revoked: false },
        );
        (key, reg)
    }

    fn check(
        signed: &SignedRequest,
        reg: &BTreeMap<String, AnalystRecord>,
        now: u64,
    ) -> Result<VerifiedRequest, AccessError> {
        verify(signed, reg, now, &mut MemoryReplayGuard::new(), MAX_LIFE)
    }

    #[test]
    fn accepts_a_good_request_once() {
        let (key, reg) = setup();
        let signed = sign(sample(), &key);
        let mut guard = MemoryReplayGuard::new();
        let v = verify(&signed, &reg, NOW, &mut guard, MAX_LIFE).unwrap();
        assert_eq!(v.request(), &signed.request);
        assert_eq!(v.hash(), signed.request.hash());
        assert_eq!((v.analyst(), v.role()), ("alice", "researcher"));
        assert_eq!(v.key(), &key.public_key());
        let e = verify(&signed, &reg, NOW + 1, &mut guard, MAX_LIFE).unwrap_err();
        assert_eq!(e.to_string(), format!("replayed request: analyst `alice` already used nonce {}", "09".repeat(16)));
        // Another analyst may use the same nonce.
        assert!(guard.check_and_record("bob", &signed.request.nonce, 2_000_000, NOW).unwrap());
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let (key, mut reg) = setup();
        let signed = sign(sample(), &key);
        let mut unsigned = signed.clone();
        unsigned.signature.clear();
        assert_eq!(check(&unsigned, &reg, NOW).unwrap_err().to_string(), "the request is not signed (empty signature)");
        let mut json: serde_json::Value = serde_json::from_str(&signed.to_json().unwrap()).unwrap();
        json.as_object_mut().unwrap().remove("signature");
        let no_field = SignedRequest::from_json(&json.to_string()).unwrap();
        assert_eq!(check(&no_field, &reg, NOW).unwrap_err(), AccessError::Unsigned);
        let mut short = signed.clone();
        short.signature.truncate(10);
        assert_eq!(
            check(&short, &reg, NOW).unwrap_err().to_string(),
            "malformed request: `signature` expected 128 hex digits, got 10 characters"
        );
        let mut v2 = signed.clone();
        v2.request.version = 2;
        assert_eq!(
            check(&v2, &reg, NOW).unwrap_err().to_string(),
            "unsupported request version 2 (this node understands version 1)"
        );
        let mut bob = sample();
        bob.analyst = "bob".into();
        assert_eq!(
            check(&sign(bob, &key), &reg, NOW).unwrap_err().to_string(),
            "unknown analyst `bob`: not registered on this node"
        );
        let other = AnalystSecretKey::from_seed([2; 32]);
        assert_eq!(
            check(&sign(sample(), &other), &reg, NOW).unwrap_err().to_string(),
            "bad signature: the request was not signed by analyst `alice`'s registered key, or was altered after signing"
        );
        let e = check(&signed, &reg, 1_300_000).unwrap_err();
        assert_eq!(e.to_string(), "the request expired at 1300000 ms (now 1300000 ms)");
        assert!(check(&signed, &reg, 1_299_999).is_ok());
        let e = check(&signed, &reg, 1_000_000 - CLOCK_SKEW_MS - 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the request is not valid yet: issued at 1000000 ms, now 879999 ms (clock skew allowance 120000 ms)"
        );
        assert!(check(&signed, &reg, 1_000_000 - CLOCK_SKEW_MS).is_ok());
        let mut long = sample();
        long.expires_at_ms = long.issued_at_ms + MAX_LIFE + 1;
        assert_eq!(
            check(&sign(long, &key), &reg, NOW).unwrap_err().to_string(),
            "the request's lifetime 600001 ms exceeds the maximum 600000 ms"
        );
        reg.get_mut("alice").unwrap().revoked = true;
        assert_eq!(check(&signed, &reg, NOW).unwrap_err().to_string(), "analyst `alice` has been revoked on this node");
    }

    #[test]
    fn altering_any_field_breaks_the_signature() {
        let (key, reg) = setup();
        let signed = sign(sample(), &key);
        let alterations: Vec<fn(&mut Request)> = vec![
            |r| r.sql.push(' '),
            |r| r.dataset = "patients2".into(),
            |r| r.parties.swap(0, 1),
            |r| r.parties.pop().map(drop).unwrap_or(()),
            |r| r.options.threshold = Some(2),
            |r| r.options.scheme = Some(Scheme::Additive),
            |r| r.options.min_group_size = Some(1),
            |r| r.options.input_check = Some(InputCheck::Off),
            |r| r.options.reveal_final = true,
            |r| r.options.order_method = Some(OrderMethod::Sort),
            |r| r.options.epsilon = Some(Epsilon::new(5.0).unwrap()),
            |r| r.options.epsilon = None,
            |r| r.recipient = RecipientKey([8; 32]),
            |r| r.nonce.0[15] ^= 1,
            |r| r.issued_at_ms -= 1,
            |r| r.expires_at_ms += 1,
        ];
        for (i, alter) in alterations.into_iter().enumerate() {
            let mut forged = signed.clone();
            alter(&mut forged.request);
            assert_ne!(forged.request, signed.request, "alteration {i}");
            let e = check(&forged, &reg, NOW).unwrap_err();
            assert_eq!(e, AccessError::BadSignature("alice".into()), "alteration {i}");
        }
        // Renaming the analyst points at someone else's key (or nobody's).
        let mut forged = signed.clone();
        forged.request.analyst = "mallory".into();
        assert_eq!(check(&forged, &reg, NOW).unwrap_err(), AccessError::UnknownAnalyst("mallory".into()));
        // A flipped signature bit fails too.
        let mut forged = signed;
        let flipped = if forged.signature.starts_with('0') { "1" } else { "0" };
        forged.signature.replace_range(0..1, flipped);
        assert_eq!(check(&forged, &reg, NOW).unwrap_err(), AccessError::BadSignature("alice".into()));
    }

    #[test]
    fn replay_guard_forgets_expired_nonces() {
        let mut g = MemoryReplayGuard::new();
        for i in 0..100u8 {
            assert!(g.check_and_record("alice", &Nonce([i; 16]), 1000 + u64::from(i), 0).unwrap());
        }
        assert_eq!(g.len(), 100);
        assert!(!g.check_and_record("alice", &Nonce([50; 16]), 1050, 1049).unwrap());
        assert!(g.check_and_record("alice", &Nonce([200; 16]), 5000, 1049).unwrap());
        assert_eq!(g.len(), 51, "nonces expiring at or before 1049 are forgotten");
        assert!(g.check_and_record("alice", &Nonce([201; 16]), 6000, 5000).unwrap());
        assert_eq!(g.len(), 1);
        assert!(!g.is_empty());
    }

    #[test]
    fn check_covers_names_the_differing_field() {
        let (key, reg) = setup();
        let v = check(&sign(sample(), &key), &reg, NOW).unwrap();
        let r = sample();
        let run = |sql: &str, ds: &str, parties: &[String], o: &RequestOptions| {
            v.check_covers(sql, ds, parties, o).map_err(|e| e.to_string())
        };
        assert_eq!(run(&r.sql, &r.dataset, &r.parties, &r.options), Ok(()));
        let mut tighter = r.options.clone();
        tighter.min_group_size = Some(10);
        tighter.epsilon = Some(Epsilon::new(0.25).unwrap());
        assert_eq!(run(&r.sql, &r.dataset, &r.parties, &tighter), Ok(()));
        let e = run("SELECT 1", &r.dataset, &r.parties, &r.options).unwrap_err();
        assert!(e.starts_with("the signature does not cover the SQL text: signed \"SELECT region"), "{e}");
        let e = run(&r.sql, "staff", &r.parties, &r.options).unwrap_err();
        assert_eq!(e, "the signature does not cover the dataset: signed patients, about to run staff");
        let reordered: Vec<String> = vec!["b".into(), "a".into(), "c".into()];
        let e = run(&r.sql, &r.dataset, &reordered, &r.options).unwrap_err();
        assert_eq!(e, "the signature does not cover the parties: signed a,b,c, about to run b,a,c");
        type Case = (fn(&mut RequestOptions), &'static str);
        let cases: Vec<Case> = vec![
            (|o| o.threshold = None, "the threshold: signed 1, about to run (absent)"),
            (|o| o.scheme = Some(Scheme::Additive), "the scheme: signed shamir, about to run additive"),
            (|o| o.input_check = Some(InputCheck::Reject), "the input check: signed clamp, about to run reject"),
            (|o| o.reveal_final = true, "reveal_final: signed false, about to run true"),
            (|o| o.order_method = None, "the order method: signed auto, about to run (absent)"),
            (|o| o.min_group_size = Some(4), "a lower minimum group size: signed 5, about to run 4"),
            (
                |o| o.epsilon = Some(Epsilon::new(0.75).unwrap()),
                "a larger or absent epsilon: signed 0.5, about to run 0.75",
            ),
            (|o| o.epsilon = None, "a larger or absent epsilon: signed 0.5, about to run (absent)"),
        ];
        for (alter, msg) in cases {
            let mut o = r.options.clone();
            alter(&mut o);
            assert_eq!(
                run(&r.sql, &r.dataset, &r.parties, &o).unwrap_err(),
                format!("the signature does not cover {msg}")
            );
        }
    }
}
