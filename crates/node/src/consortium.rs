//! Consortia of nodes: a FROST group key made without a dealer, and
//! threshold-signed session results that anyone can check offline.
//!
//! # Creation (FROST DKG, RFC 9591 key generation of Komlo-Goldberg)
//!
//! A member node (the coordinator) asked to create consortium `name` with
//! members `m_1..m_n` (index `i` is the position in that list) and threshold
//! `t` checks that every other member is a paired peer that answers
//! heartbeats, then drives the three rounds over the control channel with
//! [`ConsortiumMsg`]:
//!
//! 1. `dkg_start` to every member: each draws its polynomial
//!    ([`concord_threshold::dkg_round1`]), keeps the secret in memory, and
//!    answers its round-1 broadcast;
//! 2. `dkg_round1` to every member with all `n` broadcasts: each computes its
//!    round-2 packages and sends each one **directly** to its recipient
//!    (`dkg_round2`, member to member, over mutually authenticated TLS: the
//!    coordinator never sees them), then answers;
//! 3. `dkg_finish` to every member: each checks the packages it received,
//!    derives its key share (stored, never served or logged) and the group
//!    key, deletes its round state, and answers the group key;
//! 4. `dkg_outcome` to every member: `active` if every member reported the
//!    same group key, else `failed` with the culprit named.
//!
//! # Signed results
//!
//! A session that names a consortium ends with a signature: once all sealed
//! shares are in, the coordinator asks `t` of the consortium's members that
//! are parties of the session to sign the [`ResultStatement`] of
//! [`result_statement`] (`sign_commit`, then `sign_share`). Each signer
//! recomputes the statement itself from the plan it accepted and checks its
//! own envelope is among those presented before it commits to nonces, and
//! checks the message of the signing package before it signs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use concord_session::seal::Envelope;
use concord_threshold::{
    Commitment, Consortium, GroupKey, GroupPublicKey, KeyShare, Nonces, ResultStatement, Round1Msg, Round1Secret,
    Round2Msg, Round2Secret, Signature, SignatureShare, SigningPackage,
};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::service::Service;
use crate::service::{PeerReply, PeerRequest, ServiceError, SessionPlan};
use crate::store::{SessionState, Store};
use crate::{hex, unix_now, NodeError};

/// Domain separation of the transcript hash.
pub const TRANSCRIPT_DOMAIN: &[u8] = b"concord-consortium/transcript/v1\0";

/// Format tag of result files (`concord query --result-file`).
pub const RESULT_FORMAT: &str = "concord-result-v1";

/// One member's round-1 broadcast, with its index.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexedRound1 {
    /// The sender's index (1-based position in the member list).
    pub index: u16,
    /// Its broadcast.
    pub package: Round1Msg,
}

/// Consortium control messages (inside [`PeerRequest::Consortium`]).
/// `Debug` shows the kind and names only (round-2 packages are secret).
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConsortiumMsg {
    /// Coordinator to member: a new consortium; run DKG round 1 and answer the broadcast.
    DkgStart {
        /// Consortium name.
        name: String,
        /// Members, in index order.
        members: Vec<String>,
        /// Threshold.
        threshold: u16,
    },
    /// Coordinator to member: every member's round-1 broadcast; run round 2
    /// and send each round-2 package directly to its recipient.
    DkgRound1 {
        /// Consortium name.
        name: String,
        /// All `n` broadcasts.
        round1: Vec<IndexedRound1>,
    },
    /// Member to member (directly; secret): the sender's round-2 package for the receiver.
    DkgRound2 {
        /// Consortium name.
        name: String,
        /// The package.
        package: Round2Msg,
    },
    /// Coordinator to member: every round-2 package was delivered; finish and answer the group key.
    DkgFinish {
        /// Consortium name.
        name: String,
    },
    /// Coordinator to member: the outcome.
    DkgOutcome {
        /// Consortium name.
        name: String,
        /// Whether every member got the same group key.
        active: bool,
        /// Why not.
        reason: Option<String>,
    },
    /// Session coordinator to signer: commit to nonces for the result of `session`.
    SignCommit {
        /// Consortium name.
        consortium: String,
        /// Session id.
        session: String,
        /// Every party's sealed envelope, in party order.
        envelopes: Vec<Envelope>,
    },
    /// Session coordinator to signer: sign.
    SignShare {
        /// Consortium name.
        consortium: String,
        /// Session id.
        session: String,
        /// The signers' commitments and the message.
        package: SigningPackage,
    },
    /// Session coordinator to approving member: commit to nonces for the
    /// threshold approval of `session` ([`crate::approval`]).
    ApproveCommit {
        /// Consortium name.
        consortium: String,
        /// Session id.
        session: String,
    },
    /// Session coordinator to approving member: sign the approval statement.
    ApproveShare {
        /// Consortium name.
        consortium: String,
        /// Session id.
        session: String,
        /// The signers' commitments and the message.
        package: SigningPackage,
    },
    /// Session coordinator to every party: the aggregated approval signature, to check and keep.
    Approval {
        /// Session id.
        session: String,
        /// The signature.
        approval: crate::approval::ApprovalSignature,
    },
}

impl std::fmt::Debug for ConsortiumMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DkgStart { name, members, threshold } => {
                write!(f, "DkgStart({name:?}, {members:?}, t = {threshold})")
            }
            Self::DkgRound1 { name, .. } => write!(f, "DkgRound1({name:?})"),
            Self::DkgRound2 { name, .. } => write!(f, "DkgRound2({name:?}, [redacted])"),
            Self::DkgFinish { name } => write!(f, "DkgFinish({name:?})"),
            Self::DkgOutcome { name, active, .. } => write!(f, "DkgOutcome({name:?}, active = {active})"),
            Self::SignCommit { consortium, session, .. } => write!(f, "SignCommit({consortium:?}, {session})"),
            Self::SignShare { consortium, session, .. } => write!(f, "SignShare({consortium:?}, {session})"),
            Self::ApproveCommit { consortium, session } => write!(f, "ApproveCommit({consortium:?}, {session})"),
            Self::ApproveShare { consortium, session, .. } => write!(f, "ApproveShare({consortium:?}, {session})"),
            Self::Approval { session, approval } => write!(f, "Approval({:?}, {session})", approval.consortium),
        }
    }
}

/// Answers to [`ConsortiumMsg`] (inside [`PeerReply::Consortium`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConsortiumReply {
    /// Round-1 broadcast.
    Round1 {
        /// The package.
        package: Round1Msg,
    },
    /// The group key the member derived.
    Finished {
        /// Public key package.
        group_key: Box<GroupKey>,
    },
    /// A signer's commitment.
    Commitment {
        /// The commitment.
        commitment: Commitment,
    },
    /// A signer's signature share.
    Share {
        /// The share.
        share: SignatureShare,
    },
}

enum Stage {
    Round1(Round1Secret),
    Round2 { secret: Round2Secret, round1: BTreeMap<u16, Round1Msg> },
}

struct Dkg {
    consortium: Consortium,
    coordinator: String,
    stage: Option<Stage>,
    inbox: BTreeMap<u16, Round2Msg>,
}

struct PendingSign {
    nonces: Nonces,
    digest: [u8; 32],
}

#[derive(Default)]
struct RoundsInner {
    dkg: HashMap<String, Dkg>,
    signing: HashMap<(String, String), PendingSign>,
}

/// In-memory round states of this node's DKGs and signatures in progress
/// (secret; deleted once used; lost on restart, which aborts them).
#[derive(Default)]
pub struct Rounds(Mutex<RoundsInner>);

impl std::fmt::Debug for Rounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rounds([redacted])")
    }
}

impl Rounds {
    fn lock(&self) -> MutexGuard<'_, RoundsInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A consortium as this node stores it (public facts only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConsortiumRecord {
    /// Name.
    pub name: String,
    /// Members, in index order.
    pub members: Vec<String>,
    /// Threshold.
    pub threshold: u16,
    /// The node that ran the DKG.
    pub coordinator: String,
    /// `creating`, `active` or `failed`.
    pub state: String,
    /// Why it failed.
    pub reason: Option<String>,
    /// The group public key (`concord-group-v1:...`), once known.
    pub group_key: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// What an analyst asks: `POST /api/consortia`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// Consortium name.
    pub name: String,
    /// Members (node names), in index order; must include the node asked.
    pub members: Vec<String>,
    /// Threshold `t` (2 <= t <= n).
    pub threshold: u16,
}

/// The attestation of a session's result, as stored and served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    /// Consortium name.
    pub consortium: String,
    /// Its group public key.
    pub group_key: String,
    /// SHA-256 of the plan's canonical JSON, hex.
    pub request_hash: String,
    /// Transcript hash, hex.
    pub transcript_hash: String,
    /// The FROST signature (128 hex digits) of the statement's digest.
    pub signature: String,
    /// The members that signed.
    pub signers: Vec<String>,
}

// -------------------------------------------------------------------------
// The statement.

/// Canonical bytes of a session plan: its `serde_json` serialisation (fields
/// in declaration order, no whitespace).
pub fn plan_bytes(plan: &SessionPlan) -> Result<Vec<u8>, NodeError> {
    serde_json::to_vec(plan).map_err(|e| NodeError::Consortium(format!("cannot encode the session plan: {e}")))
}

/// Canonical bytes of an envelope: `{"ephemeral":"<hex>","ciphertext":"<hex>"}`.
pub fn envelope_bytes(e: &Envelope) -> Result<Vec<u8>, NodeError> {
    serde_json::to_vec(e).map_err(|e| NodeError::Consortium(format!("cannot encode an envelope: {e}")))
}

/// The statement a consortium signs for a session's result:
///
/// - `request_hash = SHA-256(plan_bytes(plan))`;
/// - `transcript_hash = SHA-256(TRANSCRIPT_DOMAIN || request_hash || n as u32 LE
///   || for i in 0..n: i as u32 LE || len(e_i) as u64 LE || e_i)` with
///   `e_i = envelope_bytes(envelope of party i)`;
/// - `result` = the JSON array of the envelopes in party order (`[e_0,e_1,...]`).
pub fn result_statement(plan: &SessionPlan, envelopes: &[Envelope]) -> Result<ResultStatement, NodeError> {
    if envelopes.len() != plan.parties.len() {
        return Err(NodeError::Consortium(format!(
            "{} envelopes for {} parties of session {}",
            envelopes.len(),
            plan.parties.len(),
            plan.id
        )));
    }
    let request_hash: [u8; 32] = Sha256::digest(plan_bytes(plan)?).into();
    let mut h = Sha256::new();
    h.update(TRANSCRIPT_DOMAIN);
    h.update(request_hash);
    h.update((envelopes.len() as u32).to_le_bytes());
    for (i, e) in envelopes.iter().enumerate() {
        let bytes = envelope_bytes(e)?;
        h.update((i as u32).to_le_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    let result = serde_json::to_vec(envelopes)
        .map_err(|e| NodeError::Consortium(format!("cannot encode the envelopes: {e}")))?;
    Ok(ResultStatement { request_hash, transcript_hash: h.finalize().into(), result })
}

// -------------------------------------------------------------------------
// Store.

fn sql(store: &Store) -> impl Fn(rusqlite::Error) -> NodeError + '_ {
    move |source| NodeError::Store { path: store.path().to_owned(), source }
}

fn corrupt(store: &Store, reason: String) -> NodeError {
    NodeError::Corrupt { path: store.path().to_owned(), reason }
}

const COLUMNS: &str = "name, members, threshold, coordinator, state, reason, public_key, created_at, updated_at";

fn read_record(store: &Store, r: &rusqlite::Row<'_>) -> Result<ConsortiumRecord, NodeError> {
    let s = sql(store);
    let members: String = r.get(1).map_err(&s)?;
    let name: String = r.get(0).map_err(&s)?;
    let members =
        serde_json::from_str(&members).map_err(|e| corrupt(store, format!("members of consortium {name:?}: {e}")))?;
    Ok(ConsortiumRecord {
        name,
        members,
        threshold: r.get(2).map_err(&s)?,
        coordinator: r.get(3).map_err(&s)?,
        state: r.get(4).map_err(&s)?,
        reason: r.get(5).map_err(&s)?,
        group_key: r.get(6).map_err(&s)?,
        created_at: r.get(7).map_err(&s)?,
        updated_at: r.get(8).map_err(&s)?,
    })
}

/// Every consortium this node knows, by name.
pub fn list(store: &Store) -> Result<Vec<ConsortiumRecord>, NodeError> {
    let s = sql(store);
    let mut stmt = store.conn().prepare(&format!("SELECT {COLUMNS} FROM consortia ORDER BY name")).map_err(&s)?;
    let mut rows = stmt.query([]).map_err(&s)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(&s)? {
        out.push(read_record(store, r)?);
    }
    Ok(out)
}

/// Consortium `name`, if known here.
pub fn get(store: &Store, name: &str) -> Result<Option<ConsortiumRecord>, NodeError> {
    let s = sql(store);
    let mut stmt = store.conn().prepare(&format!("SELECT {COLUMNS} FROM consortia WHERE name = ?1")).map_err(&s)?;
    let mut rows = stmt.query([name]).map_err(&s)?;
    match rows.next().map_err(&s)? {
        Some(r) => read_record(store, r).map(Some),
        None => Ok(None),
    }
}

pub(crate) fn begin(store: &Store, c: &Consortium, name: &str, coordinator: &str) -> Result<(), NodeError> {
    let s = sql(store);
    let now = unix_now();
    let members = serde_json::to_string(c.members()).map_err(|e| NodeError::Consortium(e.to_string()))?;
    let conn = store.conn();
    conn.execute("DELETE FROM consortium_key_shares WHERE consortium = ?1", [name]).map_err(&s)?;
    conn.execute("DELETE FROM consortia WHERE name = ?1 AND state = 'failed'", [name]).map_err(&s)?;
    let n = conn
        .execute(
            "INSERT OR IGNORE INTO consortia (name, members, threshold, coordinator, state, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'creating', ?5, ?5)",
            params![name, members, c.threshold(), coordinator, now],
        )
        .map_err(&s)?;
    if n == 0 {
        return Err(NodeError::Consortium(format!("a consortium named {name:?} exists already on this node")));
    }
    Ok(())
}

pub(crate) fn set_state(store: &Store, name: &str, state: &str, reason: Option<&str>) -> Result<(), NodeError> {
    let s = sql(store);
    store
        .conn()
        .execute(
            "UPDATE consortia SET state = ?2, reason = ?3, updated_at = ?4 WHERE name = ?1",
            params![name, state, reason, unix_now()],
        )
        .map_err(&s)?;
    if state == "failed" {
        store.conn().execute("DELETE FROM consortium_key_shares WHERE consortium = ?1", [name]).map_err(&s)?;
    }
    Ok(())
}

pub(crate) fn store_key(store: &Store, name: &str, share: &KeyShare, group: &GroupKey) -> Result<(), NodeError> {
    let s = sql(store);
    let secret =
        share.export_secret().map_err(|e| NodeError::Consortium(format!("cannot export the key share: {e}")))?;
    let group_json = serde_json::to_string(group).map_err(|e| NodeError::Consortium(e.to_string()))?;
    let conn = store.conn();
    conn.execute(
        "INSERT OR REPLACE INTO consortium_key_shares (consortium, secret) VALUES (?1, ?2)",
        params![name, secret.as_str()],
    )
    .map_err(&s)?;
    conn.execute(
        "UPDATE consortia SET group_key = ?2, public_key = ?3, updated_at = ?4 WHERE name = ?1",
        params![name, group_json, group.public_key().to_string(), unix_now()],
    )
    .map_err(&s)?;
    Ok(())
}

pub(crate) fn load_key(store: &Store, name: &str) -> Result<(KeyShare, GroupKey), NodeError> {
    let s = sql(store);
    let secret: Option<zeroize::Zeroizing<String>> = store
        .conn()
        .query_row("SELECT secret FROM consortium_key_shares WHERE consortium = ?1", [name], |r| {
            r.get::<_, String>(0).map(zeroize::Zeroizing::new)
        })
        .optional()
        .map_err(&s)?;
    let secret = secret.ok_or_else(|| NodeError::Consortium(format!("no key share for consortium {name:?} here")))?;
    let share = KeyShare::import_secret(&secret)
        .map_err(|e| corrupt(store, format!("key share of consortium {name:?}: {e}")))?;
    let group: Option<String> = store
        .conn()
        .query_row("SELECT group_key FROM consortia WHERE name = ?1", [name], |r| r.get(0))
        .optional()
        .map_err(&s)?
        .flatten();
    let group = group.ok_or_else(|| NodeError::Consortium(format!("no group key for consortium {name:?} here")))?;
    let group: GroupKey =
        serde_json::from_str(&group).map_err(|e| corrupt(store, format!("group key of consortium {name:?}: {e}")))?;
    Ok((share, group))
}

fn put_attestation(store: &Store, session: &str, a: &Attestation) -> Result<(), NodeError> {
    let s = sql(store);
    let body = serde_json::to_string(a).map_err(|e| NodeError::Consortium(e.to_string()))?;
    store
        .conn()
        .execute(
            "INSERT OR REPLACE INTO session_attestations (session_id, consortium, body, error) VALUES (?1, ?2, ?3, NULL)",
            params![session, a.consortium, body],
        )
        .map_err(&s)?;
    Ok(())
}

fn put_attestation_error(store: &Store, session: &str, consortium: &str, error: &str) -> Result<(), NodeError> {
    let s = sql(store);
    store
        .conn()
        .execute(
            "INSERT OR REPLACE INTO session_attestations (session_id, consortium, body, error) VALUES (?1, ?2, NULL, ?3)",
            params![session, consortium, error],
        )
        .map_err(&s)?;
    Ok(())
}

/// The `attestation` of session `id` for the API: the [`Attestation`], or
/// `{"consortium", "error"}` if signing failed, or `null`.
pub fn attestation_json(store: &Store, id: &str) -> Result<Value, NodeError> {
    let s = sql(store);
    let row: Option<(String, Option<String>, Option<String>)> = store
        .conn()
        .query_row("SELECT consortium, body, error FROM session_attestations WHERE session_id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .map_err(&s)?;
    Ok(match row {
        None => Value::Null,
        Some((_, Some(body), _)) => {
            serde_json::from_str(&body).map_err(|e| corrupt(store, format!("attestation of session {id}: {e}")))?
        }
        Some((consortium, None, error)) => json!({ "consortium": consortium, "error": error }),
    })
}

// -------------------------------------------------------------------------
// The service side.

fn err(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError { code, message: message.into() }
}

fn internal(e: impl std::fmt::Display) -> ServiceError {
    err("internal", e.to_string())
}

fn reply(r: ConsortiumReply) -> Result<PeerReply, ServiceError> {
    Ok(PeerReply::Consortium(Box::new(r)))
}

impl Service {
    /// Send a consortium message to `member` (or handle it here if it is us).
    async fn consortium_call(&self, member: &str, msg: ConsortiumMsg) -> Result<PeerReply, ServiceError> {
        if member == self.name() {
            let me = self.name().to_owned();
            return self.handle_consortium(&me, msg).await;
        }
        self.call(member, &PeerRequest::Consortium(msg)).await
    }

    /// [`Self::consortium_call`] for a message answered with data.
    pub(crate) async fn consortium_ask(
        &self,
        member: &str,
        msg: ConsortiumMsg,
    ) -> Result<ConsortiumReply, ServiceError> {
        match self.consortium_call(member, msg).await? {
            PeerReply::Consortium(r) => Ok(*r),
            other => Err(err("bad_peer_reply", format!("{member:?} answered {other:?}"))),
        }
    }

    /// Handle a consortium control message from `from` (authenticated peer name).
    pub(crate) async fn on_consortium(&self, from: &str, msg: ConsortiumMsg) -> PeerReply {
        match self.handle_consortium(from, msg).await {
            Ok(r) => r,
            Err(e) => PeerReply::Error { code: e.code.to_owned(), message: e.message },
        }
    }

    async fn handle_consortium(&self, from: &str, msg: ConsortiumMsg) -> Result<PeerReply, ServiceError> {
        let me = self.name().to_owned();
        match msg {
            ConsortiumMsg::DkgStart { name, members, threshold } => {
                crate::config::check_name(&name)
                    .map_err(|e| err("bad_request", format!("consortium name {name:?}: {e}")))?;
                let c = Consortium::new(members, threshold).map_err(|e| err("bad_request", e.to_string()))?;
                let index = c
                    .index(&me)
                    .ok_or_else(|| err("not_a_member", format!("node {me:?} is not a member of {name:?}")))?;
                if c.index(from).is_none() {
                    return Err(err("not_a_member", format!("{from:?} is not a member of {name:?}")));
                }
                begin(&self.store(), &c, &name, from)?;
                let (secret, package) =
                    concord_threshold::dkg_round1(index, c.n(), c.threshold(), &mut os_rng()).map_err(internal)?;
                self.consortium_rounds().lock().dkg.insert(
                    name.clone(),
                    Dkg {
                        consortium: c,
                        coordinator: from.to_owned(),
                        stage: Some(Stage::Round1(secret)),
                        inbox: BTreeMap::new(),
                    },
                );
                tracing::info!(consortium = %name, coordinator = from, "consortium DKG round 1");
                reply(ConsortiumReply::Round1 { package })
            }
            ConsortiumMsg::DkgRound1 { name, round1 } => {
                let (secret, c, index) = {
                    let mut rounds = self.consortium_rounds().lock();
                    let dkg = rounds.dkg.get_mut(&name).ok_or_else(|| no_dkg(&me, &name))?;
                    if dkg.coordinator != from {
                        return Err(err("not_coordinator", format!("{from:?} does not run the DKG of {name:?}")));
                    }
                    let Some(Stage::Round1(secret)) = dkg.stage.take() else {
                        return Err(err("bad_state", format!("the DKG of {name:?} on {me:?} is not in round 1")));
                    };
                    (secret, dkg.consortium.clone(), secret_index(&dkg.consortium, &me)?)
                };
                let mut received = BTreeMap::new();
                for m in round1 {
                    if m.index != index && received.insert(m.index, m.package).is_some() {
                        return Err(err("bad_request", format!("two round-1 messages for member {}", m.index)));
                    }
                }
                let (secret2, out) = concord_threshold::dkg_round2(secret, &received)
                    .map_err(|e| blame(&c, &format!("DKG round 2 on {me:?}"), &e))?;
                if let Some(dkg) = self.consortium_rounds().lock().dkg.get_mut(&name) {
                    dkg.stage = Some(Stage::Round2 { secret: secret2, round1: received });
                }
                // Each round-2 package goes directly to its recipient, never through another node.
                for (to, package) in out {
                    let member = c.name(to).ok_or_else(|| internal(format!("no member {to}")))?.to_owned();
                    let msg = ConsortiumMsg::DkgRound2 { name: name.clone(), package };
                    self.call(&member, &PeerRequest::Consortium(msg)).await.map_err(|e| {
                        err(
                            e.code,
                            format!("{me:?} could not deliver its round-2 package to {member:?}: {}", e.message),
                        )
                    })?;
                }
                Ok(PeerReply::Ok)
            }
            ConsortiumMsg::DkgRound2 { name, package } => {
                let mut rounds = self.consortium_rounds().lock();
                let dkg = rounds.dkg.get_mut(&name).ok_or_else(|| no_dkg(&me, &name))?;
                let sender = dkg
                    .consortium
                    .index(from)
                    .ok_or_else(|| err("not_a_member", format!("{from:?} is not a member of {name:?}")))?;
                if sender == secret_index(&dkg.consortium, &me)? || dkg.inbox.insert(sender, package).is_some() {
                    return Err(err("bad_request", format!("a second round-2 package from {from:?} for {name:?}")));
                }
                Ok(PeerReply::Ok)
            }
            ConsortiumMsg::DkgFinish { name } => {
                let dkg = {
                    let mut rounds = self.consortium_rounds().lock();
                    match rounds.dkg.get(&name) {
                        Some(d) if d.coordinator != from => {
                            return Err(err("not_coordinator", format!("{from:?} does not run the DKG of {name:?}")))
                        }
                        None => return Err(no_dkg(&me, &name)),
                        Some(_) => {}
                    }
                    // The round state is deleted here, whatever the outcome.
                    rounds.dkg.remove(&name).ok_or_else(|| no_dkg(&me, &name))?
                };
                let Some(Stage::Round2 { secret, round1 }) = dkg.stage else {
                    return Err(err("bad_state", format!("the DKG of {name:?} on {me:?} is not in round 2")));
                };
                let (share, group) = concord_threshold::dkg_finish(&secret, &round1, &dkg.inbox)
                    .map_err(|e| blame(&dkg.consortium, &format!("DKG finish on {me:?}"), &e))?;
                store_key(&self.store(), &name, &share, &group)?;
                tracing::info!(consortium = %name, group_key = %group.public_key(), "consortium key share stored");
                reply(ConsortiumReply::Finished { group_key: Box::new(group) })
            }
            ConsortiumMsg::DkgOutcome { name, active, reason } => {
                let rec = get(&self.store(), &name)?.ok_or_else(|| no_dkg(&me, &name))?;
                if rec.coordinator != from || rec.state != "creating" {
                    return Err(err(
                        "not_coordinator",
                        format!("{from:?} runs no key generation of {name:?} here (it is {})", rec.state),
                    ));
                }
                self.consortium_rounds().lock().dkg.remove(&name);
                let state = if active { "active" } else { "failed" };
                set_state(&self.store(), &name, state, reason.as_deref())?;
                let _ = self.store().record_event(
                    &format!("consortium.{state}"),
                    &format!("consortium {name:?} is {state}{}", reason.map(|r| format!(": {r}")).unwrap_or_default()),
                );
                Ok(PeerReply::Ok)
            }
            ConsortiumMsg::SignCommit { consortium, session, envelopes } => {
                let digest = self.check_statement(from, &consortium, &session, &envelopes)?;
                let (share, _) = load_key(&self.store(), &consortium)?;
                let (nonces, commitment) = concord_threshold::sign_round1(&share, &mut os_rng());
                self.consortium_rounds().lock().signing.insert((consortium, session), PendingSign { nonces, digest });
                reply(ConsortiumReply::Commitment { commitment })
            }
            ConsortiumMsg::SignShare { consortium, session, package } => {
                let rec = self.store().session(&session)?;
                if rec.coordinator != from {
                    return Err(err("not_coordinator", format!("{from:?} does not coordinate session {session}")));
                }
                let pending =
                    self.consortium_rounds().lock().signing.remove(&(consortium.clone(), session.clone())).ok_or_else(
                        || err("bad_state", format!("{me:?} committed to no signature of session {session}")),
                    )?;
                if package.message() != pending.digest {
                    return Err(err(
                        "bad_statement",
                        format!(
                            "{me:?} refuses to sign: the message is not the statement it checked for session {session}"
                        ),
                    ));
                }
                let (share, _) = load_key(&self.store(), &consortium)?;
                let share = concord_threshold::sign_round2(&share, pending.nonces, &package)
                    .map_err(|e| err("sign_failed", format!("{me:?}: {e}")))?;
                let _ = self.store().record_event(
                    "consortium.sign",
                    &format!("signed the result of session {session} for consortium {consortium:?}"),
                );
                reply(ConsortiumReply::Share { share })
            }
            ConsortiumMsg::ApproveCommit { consortium, session } => {
                let digest = self.check_approval_request(from, &consortium, &session)?;
                let (share, _) = load_key(&self.store(), &consortium)?;
                let (nonces, commitment) = concord_threshold::sign_round1(&share, &mut os_rng());
                let key = (consortium, format!("approval:{session}"));
                self.consortium_rounds().lock().signing.insert(key, PendingSign { nonces, digest });
                reply(ConsortiumReply::Commitment { commitment })
            }
            ConsortiumMsg::ApproveShare { consortium, session, package } => {
                // Checked again: the operator may have vetoed between the two rounds.
                let digest = self.check_approval_request(from, &consortium, &session)?;
                let key = (consortium.clone(), format!("approval:{session}"));
                let pending = self.consortium_rounds().lock().signing.remove(&key).ok_or_else(|| {
                    err("bad_state", format!("{me:?} committed to no approval signature of session {session}"))
                })?;
                if package.message() != pending.digest || package.message() != digest {
                    return Err(err(
                        "bad_statement",
                        format!(
                            "{me:?} refuses to sign: the message is not the approval of session {session}'s request"
                        ),
                    ));
                }
                let (share, _) = load_key(&self.store(), &consortium)?;
                let share = concord_threshold::sign_round2(&share, pending.nonces, &package)
                    .map_err(|e| err("sign_failed", format!("{me:?}: {e}")))?;
                let _ = self.store().record_event(
                    "approval.signed",
                    &format!("signed the approval of session {session} for consortium {consortium:?}"),
                );
                reply(ConsortiumReply::Share { share })
            }
            ConsortiumMsg::Approval { session, approval } => self.on_approval_signature(from, &session, &approval),
        }
    }

    /// A signer's checks before it commits: the session is one it took part
    /// in, coordinated by `from`, naming this consortium; the envelopes
    /// presented contain its own; returns the statement's digest.
    fn check_statement(
        &self,
        from: &str,
        consortium: &str,
        session: &str,
        envelopes: &[Envelope],
    ) -> Result<[u8; 32], ServiceError> {
        let me = self.name().to_owned();
        let refuse = |why: String| err("bad_statement", format!("{me:?} refuses to sign session {session}: {why}"));
        let rec = self.store().session(session)?;
        let plan = crate::service::parse_plan(&rec)?;
        if rec.coordinator != from || plan.coordinator != from {
            return Err(refuse(format!("it is coordinated by {:?}, not {from:?}", plan.coordinator)));
        }
        if matches!(rec.state, SessionState::Failed | SessionState::Cancelled) {
            return Err(refuse(format!("it is {} here", rec.state.name())));
        }
        if plan.consortium.as_deref() != Some(consortium) {
            return Err(refuse(format!("its plan does not name consortium {consortium:?}")));
        }
        let c = get(&self.store(), consortium)?
            .ok_or_else(|| refuse(format!("consortium {consortium:?} is unknown here")))?;
        if c.state != "active" {
            return Err(refuse(format!("consortium {consortium:?} is {} here", c.state)));
        }
        let index = plan.index_of(&me).ok_or_else(|| refuse("this node is not a party".into()))?;
        let own = self
            .store()
            .results(session)?
            .into_iter()
            .find(|(i, _)| *i == index)
            .ok_or_else(|| refuse("this node holds no result share of it".into()))?;
        let own: Envelope =
            serde_json::from_str(&own.1).map_err(|e| internal(format!("stored envelope of session {session}: {e}")))?;
        if envelopes.len() != plan.parties.len() {
            return Err(refuse(format!("{} envelopes for {} parties", envelopes.len(), plan.parties.len())));
        }
        if envelopes.get(index) != Some(&own) {
            return Err(refuse(format!("the envelope of party {index} ({me}) is not the one it sealed")));
        }
        Ok(result_statement(&plan, envelopes)?.digest())
    }

    /// `POST /api/consortia`: run the DKG with every member (this node must be
    /// one) and return the consortium as stored here.
    pub async fn create_consortium(&self, req: CreateRequest) -> Result<ConsortiumRecord, ServiceError> {
        let me = self.name().to_owned();
        let name = req.name.clone();
        crate::config::check_name(&name).map_err(|e| err("bad_request", format!("consortium name {name:?}: {e}")))?;
        let c = Consortium::new(req.members.clone(), req.threshold).map_err(|e| err("bad_request", e.to_string()))?;
        if c.index(&me).is_none() {
            return Err(err("bad_request", format!("node {me:?} is not among the members; ask a member node")));
        }
        if let Some(rec) = get(&self.store(), &name)? {
            if rec.state != "failed" {
                return Err(err("consortium_exists", format!("consortium {name:?} exists already ({})", rec.state)));
            }
        }
        let peers = self.store().list_peers()?;
        let health = self.health();
        for m in c.members().iter().filter(|m| **m != me) {
            let p = peers
                .iter()
                .find(|p| p.name == *m && p.revoked_at.is_none())
                .ok_or_else(|| err("unknown_peer", format!("member {m:?} is not a paired peer of node {me:?}")))?;
            let state = health.get(&p.name).map_or("unknown", |h| h.state.as_str());
            if state != "up" {
                return Err(err("peer_down", format!("member {m:?} is not up (its health is {state})")));
            }
        }
        let started = std::time::Instant::now();
        match self.run_dkg(&name, &c).await {
            Ok(key) => {
                tracing::info!(consortium = %name, group_key = %key, ms = started.elapsed().as_millis() as u64, "consortium active");
            }
            Err(reason) => {
                for m in c.members() {
                    let msg =
                        ConsortiumMsg::DkgOutcome { name: name.clone(), active: false, reason: Some(reason.clone()) };
                    let _ = self.consortium_call(m, msg).await;
                }
                // A member that never started (refused) has no record here yet.
                if get(&self.store(), &name)?.is_none() {
                    begin(&self.store(), &c, &name, &me)?;
                }
                set_state(&self.store(), &name, "failed", Some(&reason))?;
                return Err(err("dkg_failed", format!("consortium {name:?} failed: {reason}")));
            }
        }
        get(&self.store(), &name)?.ok_or_else(|| internal("the consortium vanished"))
    }

    async fn run_dkg(&self, name: &str, c: &Consortium) -> Result<GroupPublicKey, String> {
        let members = c.members().to_vec();
        let rounds = KeyRounds {
            start: PeerRequest::Consortium(ConsortiumMsg::DkgStart {
                name: name.to_owned(),
                members: members.clone(),
                threshold: c.threshold(),
            }),
            round1: |name, round1| PeerRequest::Consortium(ConsortiumMsg::DkgRound1 { name, round1 }),
            finish: PeerRequest::Consortium(ConsortiumMsg::DkgFinish { name: name.to_owned() }),
        };
        let keys = self.run_key_rounds(name, &members, rounds).await?;
        let (first_name, first) = keys.first().cloned().ok_or("no members")?;
        for (m, k) in &keys {
            if *k != first {
                return Err(format!(
                    "member {m:?} derived group key {}, but {first_name:?} derived {}",
                    k.public_key(),
                    first.public_key()
                ));
            }
        }
        for m in &members {
            let msg = ConsortiumMsg::DkgOutcome { name: name.to_owned(), active: true, reason: None };
            self.consortium_call(m, msg)
                .await
                .map_err(|e| format!("member {m:?} could not activate: {}", e.message))?;
        }
        Ok(first.public_key())
    }

    /// Before a session that names consortium `name` is created: the
    /// consortium is active here and at least `t` of its members are parties.
    pub(crate) fn check_session_consortium(&self, name: Option<&str>, parties: &[String]) -> Result<(), ServiceError> {
        let Some(name) = name else { return Ok(()) };
        let me = self.name();
        let c = get(&self.store(), name)?
            .ok_or_else(|| err("unknown_consortium", format!("node {me:?} knows no consortium named {name:?}")))?;
        if c.state != "active" {
            return Err(err("unknown_consortium", format!("consortium {name:?} is {} on node {me:?}", c.state)));
        }
        let signers = c.members.iter().filter(|m| parties.contains(m)).count();
        if signers < usize::from(c.threshold) {
            return Err(err(
                "bad_request",
                format!(
                    "only {signers} of the parties are members of consortium {name:?} ({}); its threshold is {}",
                    c.members.join(", "),
                    c.threshold
                ),
            ));
        }
        Ok(())
    }

    /// The coordinator, once every sealed share of a session naming a
    /// consortium is in: have `t` member parties sign the result, store the
    /// attestation (or why there is none), then mark the session done.
    pub(crate) async fn attest(self, plan: SessionPlan) {
        let Some(consortium) = plan.consortium.clone() else { return };
        let started = std::time::Instant::now();
        let outcome = self.sign_result(&consortium, &plan).await;
        let mut store = self.store();
        let stored = match &outcome {
            Ok(a) => put_attestation(&store, &plan.id, a),
            Err(e) => put_attestation_error(&store, &plan.id, &consortium, e),
        };
        match (&outcome, stored) {
            (Ok(a), Ok(())) => tracing::info!(
                session = %plan.id, consortium = %consortium, signers = ?a.signers,
                ms = started.elapsed().as_millis() as u64, "result signed by the consortium"
            ),
            (Err(e), _) => {
                tracing::warn!(session = %plan.id, consortium = %consortium, error = %e, "result not signed")
            }
            (_, Err(e)) => tracing::error!(session = %plan.id, error = %e, "cannot store the attestation"),
        }
        if let Err(e) = store.set_session_state(&plan.id, SessionState::Done, None) {
            tracing::error!(session = %plan.id, error = %e, "cannot mark the session done");
        }
    }

    async fn sign_result(&self, consortium: &str, plan: &SessionPlan) -> Result<Attestation, String> {
        let rec = get(&self.store(), consortium)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("consortium {consortium:?} is unknown on the coordinator"))?;
        let c = Consortium::new(rec.members.clone(), rec.threshold).map_err(|e| e.to_string())?;
        let (_, group) = load_key(&self.store(), consortium).map_err(|e| e.to_string())?;
        let stored = self.store().results(&plan.id).map_err(|e| e.to_string())?;
        let mut envelopes = Vec::with_capacity(stored.len());
        for (i, (index, json)) in stored.iter().enumerate() {
            if *index != i {
                return Err(format!("the result share of party {i} is missing"));
            }
            envelopes.push(serde_json::from_str::<Envelope>(json).map_err(|e| format!("stored envelope {i}: {e}"))?);
        }
        let statement = result_statement(plan, &envelopes).map_err(|e| e.to_string())?;
        let digest = statement.digest();
        // The first t member parties that agree sign.
        let candidates: Vec<String> = c.members().iter().filter(|m| plan.index_of(m).is_some()).cloned().collect();
        let commit = || ConsortiumMsg::SignCommit {
            consortium: consortium.to_owned(),
            session: plan.id.clone(),
            envelopes: envelopes.clone(),
        };
        let share = |package: SigningPackage| ConsortiumMsg::SignShare {
            consortium: consortium.to_owned(),
            session: plan.id.clone(),
            package,
        };
        let (signature, signers) =
            self.threshold_sign(&c, &group, &candidates, &digest, "signer", commit, share).await?;
        Ok(Attestation {
            consortium: consortium.to_owned(),
            group_key: group.public_key().to_string(),
            request_hash: hex(&statement.request_hash),
            transcript_hash: hex(&statement.transcript_hash),
            signature: signature.to_string(),
            signers,
        })
    }
}

impl Service {
    /// FROST signing of `digest` by the first `t` of `candidates` (members of
    /// `c`, in order) that commit, driven from here over the control channel:
    /// round 1 (`commit()` to each until `t` committed; refusals are
    /// collected), the signing package, round 2 (`share(package)` to each
    /// signer), aggregation (an invalid share is blamed on its signer, called
    /// a `role`) and verification under the group key. Returns the signature
    /// and the signers.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn threshold_sign(
        &self,
        c: &Consortium,
        group: &GroupKey,
        candidates: &[String],
        digest: &[u8; 32],
        role: &str,
        commit: impl Fn() -> ConsortiumMsg,
        share: impl Fn(SigningPackage) -> ConsortiumMsg,
    ) -> Result<(Signature, Vec<String>), String> {
        let t = usize::from(c.threshold());
        let mut commitments = BTreeMap::new();
        let mut signers = Vec::new();
        let mut refusals = Vec::new();
        for m in candidates {
            if commitments.len() == t {
                break;
            }
            match self.consortium_ask(m, commit()).await {
                Ok(ConsortiumReply::Commitment { commitment }) => {
                    let index = c.index(m).ok_or_else(|| format!("{m:?} is not a member"))?;
                    commitments.insert(index, commitment);
                    signers.push(m.clone());
                }
                Ok(other) => refusals.push(format!("{m:?} answered {other:?}")),
                Err(e) => refusals.push(format!("{m:?}: {}", e.message)),
            }
        }
        if commitments.len() < t {
            return Err(format!(
                "only {} of the {t} {role}s needed agreed to sign: {}",
                commitments.len(),
                refusals.join("; ")
            ));
        }
        let package = concord_threshold::signing_package(&commitments, digest).map_err(|e| e.to_string())?;
        let mut shares = BTreeMap::new();
        for (index, m) in commitments.keys().zip(&signers) {
            match self.consortium_ask(m, share(package.clone())).await {
                Ok(ConsortiumReply::Share { share }) => {
                    shares.insert(*index, share);
                }
                Ok(other) => return Err(format!("{role} {m:?} answered {other:?}")),
                Err(e) => return Err(format!("{role} {m:?} did not sign: {}", e.message)),
            }
        }
        let signature = concord_threshold::aggregate(&commitments, &shares, group, digest).map_err(|e| {
            match e.culprit().and_then(|i| c.name(i)) {
                Some(name) => format!("{role} {name:?} sent an invalid signature share: {e}"),
                None => e.to_string(),
            }
        })?;
        concord_threshold::verify(&group.public_key(), digest, &signature).map_err(|e| e.to_string())?;
        Ok((signature, signers))
    }
}

/// One run of the three rounds of the DKG among a consortium's members (a
/// key generation, or a refresh of [`crate::rekey`]): the request that starts
/// round 1 at every member, the one that carries every round-1 broadcast
/// (members then send their round-2 packages to each other directly), and
/// the one that finishes.
pub(crate) struct KeyRounds {
    /// Round 1, to every member; answered with its broadcast.
    pub(crate) start: PeerRequest,
    /// All broadcasts, to every member (given the consortium's name).
    pub(crate) round1: fn(String, Vec<IndexedRound1>) -> PeerRequest,
    /// The end, to every member; answered with the group key it derived.
    pub(crate) finish: PeerRequest,
}

fn round1_package(reply: PeerReply) -> Result<Round1Msg, PeerReply> {
    match reply {
        PeerReply::Consortium(r) => match *r {
            ConsortiumReply::Round1 { package } => Ok(package),
            other => Err(PeerReply::Consortium(Box::new(other))),
        },
        PeerReply::Rekey(r) => match *r {
            crate::rekey::RekeyReply::Round1 { package } => Ok(package),
            other => Err(PeerReply::Rekey(Box::new(other))),
        },
        other => Err(other),
    }
}

fn finished_key(reply: PeerReply) -> Result<GroupKey, PeerReply> {
    match reply {
        PeerReply::Consortium(r) => match *r {
            ConsortiumReply::Finished { group_key } => Ok(*group_key),
            other => Err(PeerReply::Consortium(Box::new(other))),
        },
        PeerReply::Rekey(r) => match *r {
            crate::rekey::RekeyReply::Finished { group_key } => Ok(*group_key),
            other => Err(PeerReply::Rekey(Box::new(other))),
        },
        other => Err(other),
    }
}

impl Service {
    /// Send a consortium or rekey request to `member`, or handle it here if it is us.
    pub(crate) async fn call_member(&self, member: &str, req: PeerRequest) -> Result<PeerReply, ServiceError> {
        if member != self.name() {
            return self.call(member, &req).await;
        }
        let me = self.name().to_owned();
        match req {
            PeerRequest::Consortium(msg) => self.handle_consortium(&me, msg).await,
            PeerRequest::Rekey(msg) => self.handle_rekey(&me, msg).await,
            other => Err(internal(format!("{other:?} is not a consortium round"))),
        }
    }

    /// Drive `rounds` among `members` from here; every member's group key, in member order.
    pub(crate) async fn run_key_rounds(
        &self,
        name: &str,
        members: &[String],
        rounds: KeyRounds,
    ) -> Result<Vec<(String, GroupKey)>, String> {
        // Round 1: every member's broadcast, collected here.
        let mut round1 = Vec::with_capacity(members.len());
        for (i, m) in members.iter().enumerate() {
            match self.call_member(m, rounds.start.clone()).await.map(round1_package) {
                Ok(Ok(package)) => round1.push(IndexedRound1 { index: i as u16 + 1, package }),
                Ok(Err(other)) => return Err(format!("member {m:?} answered round 1 with {other:?}")),
                Err(e) => return Err(format!("member {m:?} failed round 1: {}", e.message)),
            }
        }
        // Round 2: broadcast all of round 1; members exchange their secret packages directly.
        let mut calls = Vec::new();
        for m in members {
            let (svc, m, req) = (self.clone(), m.clone(), (rounds.round1)(name.to_owned(), round1.clone()));
            calls.push(tokio::spawn(async move {
                let r = svc.call_member(&m, req).await;
                (m, r)
            }));
        }
        for call in calls {
            match call.await {
                Ok((_, Ok(_))) => {}
                Ok((m, Err(e))) => return Err(format!("member {m:?} failed round 2: {}", e.message)),
                Err(e) => return Err(format!("internal: {e}")),
            }
        }
        // Finish: every member derives its share and the group key.
        let mut keys = Vec::with_capacity(members.len());
        for m in members {
            match self.call_member(m, rounds.finish.clone()).await.map(finished_key) {
                Ok(Ok(key)) => keys.push((m.clone(), key)),
                Ok(Err(other)) => return Err(format!("member {m:?} answered the last round with {other:?}")),
                Err(e) => return Err(format!("member {m:?} failed the last round: {}", e.message)),
            }
        }
        Ok(keys)
    }
}

/// A CSPRNG seeded from the operating system.
fn os_rng() -> rand_chacha::ChaCha12Rng {
    <rand_chacha::ChaCha12Rng as rand_core::SeedableRng>::from_os_rng()
}

// -------------------------------------------------------------------------
// HTTP API (routes in crate::server).

/// An API answer of the consortium, rekey and unlock routes: status and JSON, or a failure.
pub(crate) type ApiResult = Result<(axum::http::StatusCode, axum::Json<Value>), ApiFailure>;
/// A refused or failed API request: status and `{"error": {"code", "message"}}`.
pub(crate) type ApiFailure = (axum::http::StatusCode, axum::Json<Value>);

/// An API failure, logged (as an error for 5xx, a warning otherwise).
pub(crate) fn api_error(status: axum::http::StatusCode, code: &str, message: String) -> ApiFailure {
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), code, message = %message, "API request failed");
    } else {
        tracing::warn!(status = status.as_u16(), code, message = %message, "API request refused");
    }
    (status, axum::Json(json!({ "error": { "code": code, "message": message } })))
}

fn service_status(code: &str) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    match code {
        "bad_request" | "unknown_peer" => StatusCode::BAD_REQUEST,
        "peer_down" => StatusCode::SERVICE_UNAVAILABLE,
        "consortium_exists" => StatusCode::CONFLICT,
        "dkg_failed" => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `GET /api/consortia`: every consortium this node knows (never a key share).
pub async fn api_list(axum::extract::State(state): axum::extract::State<crate::server::AppState>) -> ApiResult {
    use axum::http::StatusCode;
    let list = state
        .with_store(|s| list(s))
        .ok_or_else(|| api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the store lock is poisoned".into()))?
        .map_err(|e| api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((StatusCode::OK, axum::Json(json!({ "consortia": list }))))
}

/// `POST /api/consortia` `{"name", "members", "threshold"}`: create a
/// consortium (this node coordinates the DKG); answers it once active.
pub async fn api_create(
    axum::extract::State(state): axum::extract::State<crate::server::AppState>,
    body: axum::body::Bytes,
) -> ApiResult {
    use axum::http::StatusCode;
    let req: CreateRequest = serde_json::from_slice(&body)
        .map_err(|e| api_error(StatusCode::BAD_REQUEST, "bad_request", format!("consortium request: {e}")))?;
    let svc = state.node_service().ok_or_else(|| {
        api_error(StatusCode::SERVICE_UNAVAILABLE, "no_service", "this server runs without the node service".into())
    })?;
    let rec = svc.create_consortium(req).await.map_err(|e| api_error(service_status(e.code), e.code, e.message))?;
    Ok((StatusCode::CREATED, axum::Json(json!(rec))))
}

/// The OpenAPI document with the consortium routes added.
pub fn with_openapi(mut doc: Value) -> Value {
    let error = json!({ "description": "Error", "content": { "application/json": {
        "schema": { "$ref": "#/components/schemas/Error" } } } });
    let consortium = json!({ "type": "object", "properties": {
        "name": { "type": "string" }, "members": { "type": "array", "items": { "type": "string" } },
        "threshold": { "type": "integer" }, "coordinator": { "type": "string" },
        "state": { "type": "string", "enum": ["creating", "active", "failed"] },
        "reason": { "type": "string", "nullable": true },
        "group_key": { "type": "string", "nullable": true, "description": "concord-group-v1:<64 hex>" },
        "created_at": { "type": "integer" }, "updated_at": { "type": "integer" } } });
    doc["paths"]["/api/consortia"] = json!({
        "get": {
            "summary": "The consortia this node knows (public facts; key shares are never served)",
            "responses": { "200": { "description": "Consortia", "content": { "application/json": { "schema": {
                "type": "object", "properties": { "consortia": { "type": "array", "items": consortium } } } } } },
                "500": error }
        },
        "post": {
            "summary": "Create a consortium: this node (a member) runs a FROST key generation with the other members",
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object",
                "required": ["name", "members", "threshold"], "properties": {
                    "name": { "type": "string" }, "members": { "type": "array", "items": { "type": "string" } },
                    "threshold": { "type": "integer" } } } } } },
            "responses": { "201": { "description": "Active", "content": { "application/json": { "schema": consortium } } },
                "400": error, "409": error, "502": error, "503": error, "500": error }
        }
    });
    doc
}

fn no_dkg(me: &str, name: &str) -> ServiceError {
    err("bad_state", format!("node {me:?} runs no key generation for consortium {name:?}"))
}

fn secret_index(c: &Consortium, me: &str) -> Result<u16, ServiceError> {
    c.index(me).ok_or_else(|| err("not_a_member", format!("node {me:?} is not a member")))
}

/// A threshold error, with the culprit (if any) named.
fn blame(c: &Consortium, step: &str, e: &concord_threshold::ThresholdError) -> ServiceError {
    match e.culprit().and_then(|i| c.name(i)) {
        Some(name) => err("misbehaviour", format!("{step}: member {name:?} misbehaved: {e}")),
        None => err("dkg_failed", format!("{step}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use concord_session::seal::seal;

    fn plan() -> SessionPlan {
        SessionPlan { consortium: Some("c".into()), ..crate::testing::plan("SELECT COUNT(*) FROM t", &["a", "b"]) }
    }

    fn envelopes() -> Vec<Envelope> {
        let mut rng = <rand_chacha::ChaCha12Rng as rand_core::SeedableRng>::seed_from_u64(1);
        (0..2).map(|i| seal(&[9; 32], "s", i, b"share", &mut rng).unwrap()).collect()
    }

    #[test]
    fn statement_bytes_are_as_documented() {
        let (p, e) = (plan(), envelopes());
        let s = result_statement(&p, &e).unwrap();
        assert_eq!(s.request_hash, <[u8; 32]>::from(Sha256::digest(serde_json::to_vec(&p).unwrap())));
        let mut bytes = TRANSCRIPT_DOMAIN.to_vec();
        bytes.extend_from_slice(&s.request_hash);
        bytes.extend_from_slice(&2u32.to_le_bytes());
        for (i, env) in e.iter().enumerate() {
            let b = format!(r#"{{"ephemeral":"{}","ciphertext":"{}"}}"#, env.ephemeral, env.ciphertext);
            bytes.extend_from_slice(&(i as u32).to_le_bytes());
            bytes.extend_from_slice(&(b.len() as u64).to_le_bytes());
            bytes.extend_from_slice(b.as_bytes());
        }
        assert_eq!(s.transcript_hash, <[u8; 32]>::from(Sha256::digest(&bytes)));
        assert_eq!(s.result, serde_json::to_vec(&e).unwrap());
        // Any change changes the digest: the plan, an envelope, their order.
        let mut p2 = p.clone();
        p2.spec.sql.push(' ');
        assert_ne!(result_statement(&p2, &e).unwrap().digest(), s.digest());
        let mut e2 = e.clone();
        let flipped = if e2[1].ciphertext.starts_with("00") { "01" } else { "00" };
        e2[1].ciphertext.replace_range(0..2, flipped);
        assert_ne!(result_statement(&p, &e2).unwrap().digest(), s.digest());
        let swapped = vec![e[1].clone(), e[0].clone()];
        assert_ne!(result_statement(&p, &swapped).unwrap().digest(), s.digest());
        let err = result_statement(&p, &e[..1]).unwrap_err();
        assert!(err.to_string().contains("1 envelopes for 2 parties"), "{err}");
    }

    #[test]
    fn a_plan_without_consortium_serialises_as_before() {
        let mut p = plan();
        p.consortium = None;
        let json = serde_json::to_string(&p).unwrap();
        assert!(!json.contains("consortium"), "{json}");
        assert_eq!(serde_json::from_str::<SessionPlan>(&json).unwrap(), p);
    }

    #[test]
    fn messages_round_trip_through_the_control_channel_format() {
        let mut rng = os_rng();
        let (s1, m1) = concord_threshold::dkg_round1(1, 2, 2, &mut rng).unwrap();
        let (s2, m2) = concord_threshold::dkg_round1(2, 2, 2, &mut rng).unwrap();
        let msg = PeerRequest::Consortium(ConsortiumMsg::DkgRound1 {
            name: "c".into(),
            round1: vec![
                IndexedRound1 { index: 1, package: m1.clone() },
                IndexedRound1 { index: 2, package: m2.clone() },
            ],
        });
        let json = serde_json::to_string(&msg).unwrap();
        assert!(json.starts_with(r#"{"type":"consortium","kind":"dkg_round1""#), "{json}");
        let back: PeerRequest = serde_json::from_str(&json).unwrap();
        let PeerRequest::Consortium(ConsortiumMsg::DkgRound1 { round1, .. }) = back else { panic!("{json}") };
        assert_eq!(round1[1].package, m2);
        // Round 2 and finish through serialised messages, then signing.
        let (s1, out1) = concord_threshold::dkg_round2(s1, &[(2, m2.clone())].into()).unwrap();
        let (s2, out2) = concord_threshold::dkg_round2(s2, &[(1, m1.clone())].into()).unwrap();
        let carry = |m: &Round2Msg| -> Round2Msg {
            let json = serde_json::to_string(&PeerRequest::Consortium(ConsortiumMsg::DkgRound2 {
                name: "c".into(),
                package: m.clone(),
            }))
            .unwrap();
            match serde_json::from_str(&json).unwrap() {
                PeerRequest::Consortium(ConsortiumMsg::DkgRound2 { package, .. }) => package,
                _ => panic!(),
            }
        };
        let (k1, g1) = concord_threshold::dkg_finish(&s1, &[(2, m2)].into(), &[(2, carry(&out2[&1]))].into()).unwrap();
        let (k2, g2) = concord_threshold::dkg_finish(&s2, &[(1, m1)].into(), &[(1, carry(&out1[&2]))].into()).unwrap();
        let reply = PeerReply::Consortium(Box::new(ConsortiumReply::Finished { group_key: Box::new(g1.clone()) }));
        let back: PeerReply = serde_json::from_str(&serde_json::to_string(&reply).unwrap()).unwrap();
        let PeerReply::Consortium(back) = back else { panic!() };
        let ConsortiumReply::Finished { group_key } = *back else { panic!() };
        assert_eq!(*group_key, g2);
        let s = result_statement(&plan(), &envelopes()).unwrap();
        let (n1, c1) = concord_threshold::sign_round1(&k1, &mut rng);
        let (n2, c2) = concord_threshold::sign_round1(&k2, &mut rng);
        let commitments: BTreeMap<u16, Commitment> = [(1, c1), (2, c2)].into();
        let package = concord_threshold::signing_package(&commitments, &s.digest()).unwrap();
        let msg = PeerRequest::Consortium(ConsortiumMsg::SignShare {
            consortium: "c".into(),
            session: "s".into(),
            package: package.clone(),
        });
        let back: PeerRequest = serde_json::from_str(&serde_json::to_string(&msg).unwrap()).unwrap();
        let PeerRequest::Consortium(ConsortiumMsg::SignShare { package: p2, .. }) = back else { panic!() };
        assert_eq!(p2, package);
        let shares: BTreeMap<u16, SignatureShare> = [
            (1, concord_threshold::sign_round2(&k1, n1, &p2).unwrap()),
            (2, concord_threshold::sign_round2(&k2, n2, &p2).unwrap()),
        ]
        .into();
        let sig = concord_threshold::aggregate(&commitments, &shares, &g1, &s.digest()).unwrap();
        concord_threshold::verify(&g1.public_key(), &s.digest(), &sig).unwrap();
    }

    #[test]
    fn consortium_records_and_attestations_in_the_store() {
        let store = Store::open_in_memory().unwrap();
        let c = Consortium::new(vec!["a".into(), "b".into()], 2).unwrap();
        begin(&store, &c, "c1", "a").unwrap();
        let err = begin(&store, &c, "c1", "a").unwrap_err();
        assert!(err.to_string().contains("exists already"), "{err}");
        set_state(&store, "c1", "failed", Some("member \"b\" misbehaved")).unwrap();
        begin(&store, &c, "c1", "a").unwrap(); // a failed consortium may be created again
        let rec = get(&store, "c1").unwrap().unwrap();
        assert_eq!((rec.state.as_str(), rec.members.len(), rec.threshold), ("creating", 2, 2));
        assert_eq!(list(&store).unwrap().len(), 1);
        assert!(get(&store, "nope").unwrap().is_none());
        assert!(load_key(&store, "c1").unwrap_err().to_string().contains("no key share"));
        assert_eq!(attestation_json(&store, "s").unwrap(), Value::Null);
    }
}
