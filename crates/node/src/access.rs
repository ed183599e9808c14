//! Access control at one node: the analyst registry and the replay guard
//! over the node's store, the policy file, and the mapping between the
//! signed request's options (`concord-access`) and a session's options.
//!
//! Every node decides for itself (see docs/THREAT_MODEL.md, "Access
//! control"): with a policy file configured, a session runs on this node's
//! data only if it comes with a request signed by an analyst registered
//! here, not expired, not replayed, covering exactly what would run, and
//! allowed by this node's policy.

use std::path::Path;

use concord_access::{
    AccessError, AnalystPublicKey, AnalystRecord, AnalystRegistry, Epsilon, InputCheck, Nonce, OrderMethod, Policy,
    ReplayGuard, RequestOptions, Scheme,
};
use concord_session::{Privacy, SchemeChoice, SessionOptions};

use crate::store::Store;

/// The analysts registered in a store.
pub struct StoreRegistry<'a>(pub &'a Store);

impl AnalystRegistry for StoreRegistry<'_> {
    fn lookup(&self, name: &str) -> Result<Option<AnalystRecord>, AccessError> {
        let entry = self.0.analyst(name).map_err(|e| AccessError::Store(e.to_string()))?;
        entry
            .map(|a| {
                Ok(AnalystRecord {
                    key: AnalystPublicKey::from_text(&a.public_key)?,
                    role: a.role,
                    revoked: a.revoked_at.is_some(),
                })
            })
            .transpose()
    }
}

/// The request nonces recorded in a store (persisted: a restart does not reopen replays).
pub struct StoreReplay<'a>(pub &'a mut Store);

impl ReplayGuard for StoreReplay<'_> {
    fn check_and_record(
        &mut self,
        analyst: &str,
        nonce: &Nonce,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<bool, AccessError> {
        self.0
            .record_request_nonce(analyst, &nonce.to_string(), expires_at_ms, now_ms)
            .map_err(|e| AccessError::Store(e.to_string()))
    }
}

/// Read and parse the policy file (every error names the file and the line).
pub fn load_policy(path: &Path) -> Result<Policy, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Policy::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The signed form of a session's options. A `rho` parameter has no signed
/// form yet (write `WITH PRIVACY (rho = ...)` in the SQL, which is signed).
pub fn request_options(o: &SessionOptions) -> Result<RequestOptions, String> {
    let epsilon = match o.privacy {
        None => None,
        Some(Privacy::Epsilon(e)) => Some(Epsilon::new(e).map_err(|e| e.to_string())?),
        Some(Privacy::Rho(_)) => {
            return Err("a rho option cannot be signed; write WITH PRIVACY (rho = ...) in the query instead".into())
        }
    };
    let input_check = match o.input_check.as_deref() {
        None => None,
        Some("clamp") => Some(InputCheck::Clamp),
        Some("reject") => Some(InputCheck::Reject),
        Some("off") => Some(InputCheck::Off),
        Some(other) => return Err(format!("unknown input check {other:?}")),
    };
    let order_method = match o.order_method.as_deref() {
        None => None,
        Some("auto") => Some(OrderMethod::Auto),
        Some("search") => Some(OrderMethod::Search),
        Some("sort") => Some(OrderMethod::Sort),
        Some(other) => return Err(format!("unknown order method {other:?}")),
    };
    Ok(RequestOptions {
        threshold: o.threshold.map(|t| t as u64),
        scheme: o.scheme.map(|s| match s {
            SchemeChoice::Additive => Scheme::Additive,
            SchemeChoice::Shamir => Scheme::Shamir,
        }),
        min_group_size: o.min_group_size,
        input_check,
        reveal_final: o.reveal_final,
        order_method,
        epsilon,
    })
}

/// The session options a signed request asks for.
pub fn session_options(r: &RequestOptions) -> SessionOptions {
    SessionOptions {
        threshold: r.threshold.and_then(|t| usize::try_from(t).ok()),
        scheme: r.scheme.map(|s| match s {
            Scheme::Additive => SchemeChoice::Additive,
            Scheme::Shamir => SchemeChoice::Shamir,
        }),
        min_group_size: r.min_group_size,
        input_check: r.input_check.map(|c| c.as_str().to_owned()),
        reveal_final: r.reveal_final,
        order_method: r.order_method.map(|m| m.as_str().to_owned()),
        privacy: r.epsilon.map(|e| Privacy::Epsilon(e.get())),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn options_round_trip_through_their_signed_form() {
        let o = SessionOptions {
            threshold: Some(1),
            scheme: Some(SchemeChoice::Shamir),
            min_group_size: Some(5),
            input_check: Some("clamp".into()),
            reveal_final: false,
            order_method: Some("search".into()),
            privacy: Some(Privacy::Epsilon(0.5)),
        };
        assert_eq!(session_options(&request_options(&o).unwrap()), o);
        let rho = SessionOptions { privacy: Some(Privacy::Rho(0.1)), ..SessionOptions::default() };
        assert!(request_options(&rho).unwrap_err().contains("rho"));
        let bad = SessionOptions { input_check: Some("maybe".into()), ..SessionOptions::default() };
        assert!(request_options(&bad).unwrap_err().contains("maybe"));
    }

    #[test]
    fn registry_and_replay_guard_over_the_store() {
        let mut store = Store::open_in_memory().unwrap();
        let key = concord_access::AnalystSecretKey::from_seed([7; 32]).public_key();
        store.add_analyst("alice", &key.to_text(), "researcher").unwrap();
        let found = StoreRegistry(&store).lookup("alice").unwrap().unwrap();
        assert_eq!((found.key, found.role.as_str(), found.revoked), (key, "researcher", false));
        assert!(StoreRegistry(&store).lookup("bob").unwrap().is_none());
        store.revoke_analyst("alice").unwrap();
        assert!(StoreRegistry(&store).lookup("alice").unwrap().unwrap().revoked);
        let nonce = Nonce([1; 16]);
        let mut guard = StoreReplay(&mut store);
        assert!(guard.check_and_record("alice", &nonce, 2_000, 1_000).unwrap());
        assert!(!guard.check_and_record("alice", &nonce, 2_000, 1_500).unwrap());
        assert!(guard.check_and_record("bob", &nonce, 2_000, 1_500).unwrap());
        assert_eq!(store.requests_today("alice", 1_600).unwrap(), 1);
    }
}
