//! k-of-n data-owner approval: at least `k` of the named data owners approve a
//! request before it runs, and their approvals are aggregated into one FROST
//! threshold signature (RFC 9591, ristretto255) over the request's hash,
//! stored with the session and checked by every member node before it starts.
//!
//! A policy rule with `approvals = { k = 2, of = ["a", "b", "c"] }` makes a
//! node require it. The data owners `of` must form an active consortium
//! ([`crate::consortium`]: a dealerless FROST key of exactly those members
//! with threshold `k`), and every one of them must be a party of the session.
//!
//! # Steps (in the session's life, see [`crate::service`])
//!
//! 1. **Plan.** The coordinator, whose own policy requires the approval,
//!    names the consortium in the plan ([`SessionPlan::approval_consortium`]).
//!    Every participant whose policy requires it checks that the named
//!    consortium is active here, with exactly the rule's members and
//!    threshold; one that does not name it is refused (`approvals_required`).
//! 2. **Ask.** Every member of the consortium that is a party waits for its
//!    operator (`concord approvals approve`, the dashboard's approvals page),
//!    even if its own policy asks for no approval: its approval counts towards
//!    the `k`. A member's rejection is a veto and ends the session.
//! 3. **Sign.** Once `k` members' operators approved (and every node whose own
//!    policy requires its operator's approval did), the coordinator asks `k`
//!    approving members to sign [`ApprovalStatement`]`{request_hash}` with
//!    FROST: `approve_commit` (each signer checks the session is one it
//!    accepted, naming this consortium, and that **its own operator
//!    approved it**, before it commits to nonces), then `approve_share` (each
//!    signer checks the message is the statement it derived itself). The
//!    coordinator aggregates (an invalid share is blamed on its signer) and
//!    verifies the signature.
//! 4. **Check.** The coordinator sends the signature to every party
//!    (`approval`); each member verifies it under the group key it holds
//!    from the key generation (not one sent with it) over the hash of the
//!    request in the plan it accepted, and stores it. A member refuses to
//!    start a session whose approval it does not hold, verified.
//!
//! The signature proves that `k` members' nodes signed the request's hash
//! after their operators approved; it is kept with the session
//! (`GET /api/sessions/{id}`, `approval`), in each member's audit log, and in
//! result files, where `concord verify` checks it offline.

use concord_access::Approvals;
use concord_threshold::{ApprovalStatement, Consortium, GroupPublicKey, Signature};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::consortium::{self, ConsortiumMsg, ConsortiumRecord};
use crate::service::{PeerReply, Service, ServiceError, SessionPlan, APPROVED};
use crate::store::{SessionState, Store};
use crate::{hex, NodeError};

/// One session's threshold approval, as stored, sent to the parties and
/// written into result files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSignature {
    /// The consortium whose members approved.
    pub consortium: String,
    /// Its group public key (`concord-group-v1:...`), for information: verifiers use their own.
    pub group_key: String,
    /// The hash of the signed request ([`concord_access::Request::hash`]), hex.
    pub request_hash: String,
    /// The FROST signature of [`ApprovalStatement::digest`] (128 hex digits).
    pub signature: String,
    /// The members that signed (each after its operator approved).
    pub signers: Vec<String>,
}

fn err(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError { code, message: message.into() }
}

/// The statement the approvers of `plan` sign: the hash of its signed request.
pub fn statement(plan: &SessionPlan) -> Result<ApprovalStatement, ServiceError> {
    let request = plan.request.as_ref().ok_or_else(|| {
        err("bad_plan", format!("session {} needs a threshold approval but carries no signed request", plan.id))
    })?;
    Ok(ApprovalStatement { request_hash: request.request.hash() })
}

/// Check `approval` for `plan` under `key`: the request hash is the plan's,
/// and the signature verifies over its statement.
pub fn check(plan: &SessionPlan, approval: &ApprovalSignature, key: &GroupPublicKey) -> Result<(), String> {
    let st = statement(plan).map_err(|e| e.message)?;
    if approval.request_hash != hex(&st.request_hash) {
        return Err(format!(
            "it approves request {}, but the session's request is {}",
            approval.request_hash,
            hex(&st.request_hash)
        ));
    }
    let sig: Signature = approval.signature.parse().map_err(|e| format!("malformed signature: {e}"))?;
    concord_threshold::verify(key, &st.digest(), &sig)
        .map_err(|_| format!("the signature does not verify under group key {key}"))
}

// -------------------------------------------------------------------------
// Store (table `session_approvals`, migration 10).

fn sql(store: &Store) -> impl Fn(rusqlite::Error) -> NodeError + '_ {
    move |source| NodeError::Store { path: store.path().to_owned(), source }
}

/// Store the (verified) approval of session `id`.
pub fn put(store: &Store, id: &str, a: &ApprovalSignature) -> Result<(), NodeError> {
    let body = serde_json::to_string(a).map_err(|e| NodeError::Consortium(e.to_string()))?;
    store
        .conn()
        .execute(
            "INSERT OR REPLACE INTO session_approvals (session_id, consortium, body) VALUES (?1, ?2, ?3)",
            params![id, a.consortium, body],
        )
        .map_err(sql(store))?;
    Ok(())
}

/// The stored approval of session `id`, if any.
pub fn get(store: &Store, id: &str) -> Result<Option<ApprovalSignature>, NodeError> {
    let body: Option<String> = store
        .conn()
        .query_row("SELECT body FROM session_approvals WHERE session_id = ?1", [id], |r| r.get(0))
        .optional()
        .map_err(sql(store))?;
    body.map(|b| {
        serde_json::from_str(&b).map_err(|e| NodeError::Corrupt {
            path: store.path().to_owned(),
            reason: format!("approval of session {id}: {e}"),
        })
    })
    .transpose()
}

/// The `approval` of session `id` for the API (`null` if none).
pub fn approval_json(store: &Store, id: &str) -> Result<Value, NodeError> {
    Ok(get(store, id)?.map_or(Value::Null, |a| serde_json::to_value(a).unwrap_or(Value::Null)))
}

/// Add a session's `attestation` and `approval` to the OpenAPI document's `Session` schema.
pub fn add_openapi(doc: &mut Value) {
    let props = &mut doc["components"]["schemas"]["Session"]["properties"];
    props["attestation"] = serde_json::json!({ "type": "object", "nullable": true,
        "description": "the consortium's threshold signature of the result (docs/WIRE_PROTOCOL.md section 10), or why there is none" });
    props["approval"] = serde_json::json!({ "type": "object", "nullable": true,
        "description": "k-of-n data-owner approval: a FROST signature over the signed request's hash",
        "properties": {
            "consortium": { "type": "string" }, "group_key": { "type": "string" },
            "request_hash": { "type": "string" }, "signature": { "type": "string" },
            "signers": { "type": "array", "items": { "type": "string" } } } });
}

/// A line for the plan in words, if the session needs a threshold approval.
pub fn describe(plan: &SessionPlan, store: &Store) -> Option<String> {
    let name = plan.approval_consortium.as_deref()?;
    Some(match consortium::get(store, name) {
        Ok(Some(c)) => format!(
            "It runs only once {} of the data owners {} approve; their approvals become one threshold signature \
             (consortium {name:?}) over the request's hash.",
            c.threshold,
            c.members.join(", ")
        ),
        _ => format!("It runs only once the members of consortium {name:?} approve with a threshold signature."),
    })
}

/// Whether `c` is exactly what rule `a` asks for: active, the same members
/// (in any order) and threshold `k`.
fn matches(c: &ConsortiumRecord, a: &Approvals) -> bool {
    let mut members = c.members.clone();
    members.sort();
    let mut of = a.of.clone();
    of.sort();
    of.dedup();
    c.state == "active" && members == of && usize::from(c.threshold) == a.k
}

impl Service {
    /// The coordinator: the active consortium that carries out rule `rule`'s
    /// approvals `a` for a session over `parties`.
    pub(crate) fn approval_consortium_for(
        &self,
        rule: &str,
        a: &Approvals,
        parties: &[String],
    ) -> Result<String, ServiceError> {
        let me = self.name();
        if let Some(outside) = a.of.iter().find(|m| !parties.contains(m)) {
            return Err(err(
                "approvals_required",
                format!(
                    "node {me:?}: rule {rule:?} requires {} of {} to approve, but {outside:?} is not a party of the \
                     session (every approving data owner must take part)",
                    a.k,
                    a.of.join(", ")
                ),
            ));
        }
        let all = consortium::list(&self.store())?;
        all.into_iter().find(|c| matches(c, a)).map(|c| c.name).ok_or_else(|| {
            err(
                "approvals_required",
                format!(
                    "node {me:?}: rule {rule:?} requires {} of {} to approve with a threshold signature, but no \
                     active consortium of exactly those members with threshold {} is known here (create one: \
                     concord consortium create NAME --members {} --threshold {})",
                    a.k,
                    a.of.join(", "),
                    a.k,
                    a.of.join(","),
                    a.k
                ),
            )
        })
    }

    /// A node whose rule `rule` requires approvals `a`: the plan must name a
    /// consortium that is exactly the rule's (checked on this node's own record).
    pub(crate) fn check_approval_consortium(
        &self,
        plan: &SessionPlan,
        rule: &str,
        a: &Approvals,
    ) -> Result<(), ServiceError> {
        let me = self.name();
        let Some(name) = plan.approval_consortium.as_deref() else {
            return Err(err(
                "approvals_required",
                format!(
                    "node {me:?}: rule {rule:?} requires {} of {} to approve with a threshold signature, and the \
                     session asks for none (the coordinator's policy must require it too)",
                    a.k,
                    a.of.join(", ")
                ),
            ));
        };
        let c = consortium::get(&self.store(), name)?;
        match c {
            Some(c) if matches(&c, a) => Ok(()),
            Some(c) => Err(err(
                "approvals_required",
                format!(
                    "node {me:?}: rule {rule:?} requires {} of {}, but consortium {name:?} is {} of {} ({})",
                    a.k,
                    a.of.join(", "),
                    c.threshold,
                    c.members.join(", "),
                    c.state
                ),
            )),
            None => Err(err(
                "approvals_required",
                format!(
                    "node {me:?}: rule {rule:?} requires approvals by consortium members, but {name:?} is unknown here"
                ),
            )),
        }
    }

    /// The approving members of `plan` that are parties, and the threshold, if
    /// the plan names a consortium this node knows (as a member).
    pub(crate) fn approvers(&self, plan: &SessionPlan) -> Result<Option<(Vec<String>, usize)>, ServiceError> {
        let Some(name) = plan.approval_consortium.as_deref() else { return Ok(None) };
        let Some(c) = consortium::get(&self.store(), name)? else { return Ok(None) };
        if c.state != "active" {
            return Err(err(
                "approvals_required",
                format!("consortium {name:?} is {} on node {:?}", c.state, self.name()),
            ));
        }
        let members: Vec<String> = c.members.into_iter().filter(|m| plan.index_of(m).is_some()).collect();
        let k = usize::from(c.threshold);
        if members.len() < k {
            return Err(err(
                "bad_plan",
                format!("only {} of consortium {name:?}'s members are parties; {k} must approve", members.len()),
            ));
        }
        Ok(Some((members, k)))
    }

    /// Step 3, at the coordinator: `k` approving members sign the request's hash.
    pub(crate) async fn sign_approval(
        &self,
        plan: &SessionPlan,
        approved: &[String],
    ) -> Result<ApprovalSignature, String> {
        let name = plan.approval_consortium.clone().ok_or("the session needs no approval")?;
        let rec = consortium::get(&self.store(), &name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("consortium {name:?} is unknown on the coordinator"))?;
        let c = Consortium::new(rec.members.clone(), rec.threshold).map_err(|e| e.to_string())?;
        let st = statement(plan).map_err(|e| e.message)?;
        let digest = st.digest();
        let (_, group) = consortium::load_key(&self.store(), &name).map_err(|e| e.to_string())?;
        // Approving members commit to nonces, each after checking its operator approved.
        let commit = || ConsortiumMsg::ApproveCommit { consortium: name.clone(), session: plan.id.clone() };
        let share =
            |package| ConsortiumMsg::ApproveShare { consortium: name.clone(), session: plan.id.clone(), package };
        let (signature, signers) =
            self.threshold_sign(&c, &group, approved, &digest, "approver", commit, share).await?;
        Ok(ApprovalSignature {
            consortium: name,
            group_key: group.public_key().to_string(),
            request_hash: hex(&st.request_hash),
            signature: signature.to_string(),
            signers,
        })
    }

    /// Steps 3 and 4 at the coordinator: the signature of `k` of the
    /// `approving` members, kept here and sent to every other party, each of
    /// which must accept it. The error is the session's failure reason.
    pub(crate) async fn collect_approval(&self, plan: &SessionPlan, approving: &[String]) -> Result<(), String> {
        let started = std::time::Instant::now();
        let approval =
            self.sign_approval(plan, approving).await.map_err(|e| format!("the data owners' approval failed: {e}"))?;
        {
            let store = self.store();
            put(&store, &plan.id, &approval).map_err(|e| e.to_string())?;
        }
        let _ = self.store().record_event(
            "approval.threshold",
            &format!(
                "session {}: request {} approved by {} of consortium {:?} ({}); signature aggregated",
                plan.id,
                approval.request_hash,
                approval.signers.len(),
                approval.consortium,
                approval.signers.join(", ")
            ),
        );
        tracing::info!(
            session = %plan.id, signers = ?approval.signers, ms = started.elapsed().as_millis() as u64,
            "threshold approval signed"
        );
        let me = self.name().to_owned();
        for p in plan.parties.iter().filter(|p| p.name != me) {
            let msg = ConsortiumMsg::Approval { session: plan.id.clone(), approval: approval.clone() };
            self.call(&p.name, &crate::service::PeerRequest::Consortium(msg))
                .await
                .map_err(|e| format!("party {:?} did not accept the approval signature: {}", p.name, e.message))?;
        }
        Ok(())
    }

    /// A signer's checks before it commits to an approval signature (step 3):
    /// returns the digest it will sign.
    pub(crate) fn check_approval_request(
        &self,
        from: &str,
        consortium_name: &str,
        session: &str,
    ) -> Result<[u8; 32], ServiceError> {
        let me = self.name().to_owned();
        let refuse = |why: String| {
            err("approval_refused", format!("{me:?} refuses to sign an approval of session {session}: {why}"))
        };
        let rec = self.store().session(session)?;
        let plan = crate::service::parse_plan(&rec)?;
        if rec.coordinator != from || plan.coordinator != from {
            return Err(refuse(format!("it is coordinated by {:?}, not {from:?}", plan.coordinator)));
        }
        if rec.state != SessionState::Pending {
            return Err(refuse(format!("it is {} here, not pending", rec.state.name())));
        }
        if plan.approval_consortium.as_deref() != Some(consortium_name) {
            return Err(refuse(format!("its plan does not ask consortium {consortium_name:?} to approve")));
        }
        if self.phase_of(session, &me).as_deref() != Some(APPROVED) {
            return Err(refuse("this node's operator has not approved it".into()));
        }
        let c = consortium::get(&self.store(), consortium_name)?
            .ok_or_else(|| refuse(format!("consortium {consortium_name:?} is unknown here")))?;
        if c.state != "active" || !c.members.contains(&me) {
            return Err(refuse(format!("this node is not an active member of {consortium_name:?}")));
        }
        Ok(statement(&plan)?.digest())
    }

    /// Step 4, at every party: check the coordinator's approval signature
    /// under this node's own record of the consortium, and store it.
    pub(crate) fn on_approval_signature(
        &self,
        from: &str,
        session: &str,
        approval: &ApprovalSignature,
    ) -> Result<PeerReply, ServiceError> {
        let me = self.name().to_owned();
        let rec = self.store().session(session)?;
        let plan = crate::service::parse_plan(&rec)?;
        if rec.coordinator != from {
            return Err(err("not_coordinator", format!("{from:?} does not coordinate session {session}")));
        }
        if plan.approval_consortium.as_deref() != Some(approval.consortium.as_str()) {
            return Err(err(
                "bad_approval",
                format!("session {session} asks for no approval by consortium {:?}", approval.consortium),
            ));
        }
        let Some(c) = consortium::get(&self.store(), &approval.consortium)? else {
            // Not a member: nothing to check it against, and nothing this node's policy asked for.
            return Ok(PeerReply::Ok);
        };
        let key: GroupPublicKey = c
            .group_key
            .as_deref()
            .ok_or_else(|| err("bad_approval", format!("consortium {:?} has no group key here", c.name)))?
            .parse()
            .map_err(|e| err("internal", format!("stored group key of {:?}: {e}", c.name)))?;
        check(&plan, approval, &key).map_err(|why| {
            let _ = self.store().record_event(
                "approval.rejected_signature",
                &format!("session {session}: the approval signature sent by {from:?} is invalid: {why}"),
            );
            err("bad_approval", format!("node {me:?} rejects the approval signature of session {session}: {why}"))
        })?;
        let store = self.store();
        put(&store, session, approval)?;
        drop(store);
        self.store().record_event(
            "approval.threshold",
            &format!(
                "session {session}: request {} approved by {} of consortium {:?} ({}); signature verified",
                approval.request_hash,
                approval.signers.len(),
                approval.consortium,
                approval.signers.join(", ")
            ),
        )?;
        Ok(PeerReply::Ok)
    }

    /// Before this node starts `plan`: a member of its approval consortium
    /// holds the verified approval signature.
    pub(crate) fn check_approval_held(&self, plan: &SessionPlan) -> Result<(), ServiceError> {
        let Some(name) = plan.approval_consortium.as_deref() else { return Ok(()) };
        if consortium::get(&self.store(), name)?.is_none() {
            return Ok(()); // not a member
        }
        let held = get(&self.store(), &plan.id)?;
        if held.is_none() {
            return Err(err(
                "approval_missing",
                format!(
                    "node {:?} holds no verified threshold approval of session {} by consortium {name:?}",
                    self.name(),
                    plan.id
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use concord_access::{AnalystSecretKey, Nonce, RecipientKey, Request, RequestOptions, REQUEST_VERSION};
    use concord_threshold::{GroupKey, KeyShare};
    use std::collections::BTreeMap;
    type Rng = rand_chacha::ChaCha12Rng;

    fn dkg(rng: &mut Rng) -> (Vec<KeyShare>, GroupKey) {
        crate::testing::dkg_2_of_3(rng)
    }

    fn sign(shares: &[KeyShare], signers: &[u16], group: &GroupKey, digest: &[u8; 32], rng: &mut Rng) -> Signature {
        let mut nonces = BTreeMap::new();
        let mut commitments = BTreeMap::new();
        for &i in signers {
            let (n, c) = concord_threshold::sign_round1(&shares[usize::from(i - 1)], rng);
            nonces.insert(i, n);
            commitments.insert(i, c);
        }
        let package = concord_threshold::signing_package(&commitments, digest).unwrap();
        let sig_shares = signers
            .iter()
            .map(|&i| {
                let share = &shares[usize::from(i - 1)];
                (i, concord_threshold::sign_round2(share, nonces.remove(&i).unwrap(), &package).unwrap())
            })
            .collect();
        concord_threshold::aggregate(&commitments, &sig_shares, group, digest).unwrap()
    }

    fn plan_with(sql: &str) -> SessionPlan {
        let request = Request {
            version: REQUEST_VERSION,
            analyst: "alice".into(),
            sql: sql.into(),
            dataset: "t".into(),
            parties: vec!["a".into(), "b".into(), "c".into()],
            options: RequestOptions::default(),
            recipient: RecipientKey([7; 32]),
            nonce: Nonce([9; 16]),
            issued_at_ms: 1,
            expires_at_ms: 2,
        };
        let signed = concord_access::sign(request, &AnalystSecretKey::from_seed([3; 32]));
        SessionPlan {
            analyst_key: "07".repeat(32),
            analyst: "alice".into(),
            request: Some(signed),
            approval_consortium: Some("owners".into()),
            ..crate::testing::plan(sql, &["a", "b", "c"])
        }
    }

    #[test]
    fn k_of_n_approval_verifies_only_for_its_request_and_key() {
        let mut rng = crate::testing::rng(6);
        let (shares, group) = dkg(&mut rng);
        let plan = plan_with("SELECT COUNT(*) FROM t");
        let st = statement(&plan).unwrap();
        assert_eq!(st.request_hash, plan.request.as_ref().unwrap().request.hash());
        let key = group.public_key();
        let sig = sign(&shares, &[1, 3], &group, &st.digest(), &mut rng);
        let approval = ApprovalSignature {
            consortium: "owners".into(),
            group_key: key.to_string(),
            request_hash: hex(&st.request_hash),
            signature: sig.to_string(),
            signers: vec!["a".into(), "c".into()],
        };
        check(&plan, &approval, &key).unwrap();
        // Any two members give a signature that verifies under the same key.
        let sig23 = sign(&shares, &[2, 3], &group, &st.digest(), &mut rng);
        check(&plan, &ApprovalSignature { signature: sig23.to_string(), ..approval.clone() }, &key).unwrap();

        // Another request: the hash is named as not the session's.
        let other = plan_with("SELECT SUM(x) FROM t");
        let e = check(&other, &approval, &key).unwrap_err();
        assert!(e.contains("it approves request") && e.contains(&approval.request_hash), "{e}");
        // The hash claimed for the other request, but the signature is over the first.
        let claimed =
            ApprovalSignature { request_hash: hex(&statement(&other).unwrap().request_hash), ..approval.clone() };
        let e = check(&other, &claimed, &key).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        // Another consortium's key.
        let (_, group2) = dkg(&mut rng);
        let e = check(&plan, &approval, &group2.public_key()).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        // A flipped digit of the signature, and garbage.
        let mut flipped = approval.signature.clone();
        let last = if flipped.ends_with('0') { "1" } else { "0" };
        flipped.replace_range(flipped.len() - 1.., last);
        assert!(check(&plan, &ApprovalSignature { signature: flipped, ..approval.clone() }, &key).is_err());
        let e = check(&plan, &ApprovalSignature { signature: "zz".into(), ..approval.clone() }, &key).unwrap_err();
        assert!(e.contains("malformed signature"), "{e}");
        // A plan without a signed request cannot carry an approval.
        let unsigned = SessionPlan { request: None, ..plan };
        assert!(check(&unsigned, &approval, &key).unwrap_err().contains("no signed request"));
    }

    #[test]
    fn the_rule_must_match_the_consortium_exactly() {
        let rec = |members: &[&str], t: u16, state: &str| ConsortiumRecord {
            name: "owners".into(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            threshold: t,
            coordinator: "a".into(),
            state: state.into(),
            reason: None,
            group_key: None,
            created_at: 0,
            updated_at: 0,
        };
        let rule = Approvals { k: 2, of: vec!["c".into(), "a".into(), "b".into()] };
        assert!(matches(&rec(&["a", "b", "c"], 2, "active"), &rule), "order does not matter");
        assert!(!matches(&rec(&["a", "b", "c"], 3, "active"), &rule), "another threshold");
        assert!(!matches(&rec(&["a", "b"], 2, "active"), &rule), "fewer members");
        assert!(!matches(&rec(&["a", "b", "c", "d"], 2, "active"), &rule), "more members");
        assert!(!matches(&rec(&["a", "b", "c"], 2, "failed"), &rule), "not active");
    }

    #[test]
    fn approvals_are_stored_with_the_session() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(get(&store, "s").unwrap(), None);
        assert_eq!(approval_json(&store, "s").unwrap(), Value::Null);
        let a = ApprovalSignature {
            consortium: "owners".into(),
            group_key: "concord-group-v1:00".into(),
            request_hash: "ab".repeat(32),
            signature: "cd".repeat(64),
            signers: vec!["a".into(), "b".into()],
        };
        put(&store, "s", &a).unwrap();
        assert_eq!(get(&store, "s").unwrap(), Some(a.clone()));
        assert_eq!(approval_json(&store, "s").unwrap()["signers"], serde_json::json!(["a", "b"]));
    }
}
