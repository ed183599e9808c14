//! Consortium key refresh and repair: new shares under the same group key,
//! and a lost member's share rebuilt by `t` helpers.
//!
//! # Refresh (`POST /api/consortia/{name}/refresh`, `concord consortium refresh`)
//!
//! Proactive refresh ([`concord_threshold::refresh_round1`] ...): every
//! member adds to its share a share of a fresh polynomial whose constant term
//! is zero, so the group public key stays the same while every share
//! changes; a share stolen before a refresh cannot be combined with shares
//! made after it. The node asked (a member, the coordinator) checks every
//! other member is a paired peer that is up, then drives the rounds over the
//! control channel with [`RekeyMsg`], in the shape of the key generation of
//! [`crate::consortium`]:
//!
//! 1. `refresh_start` to every member (with the members, threshold and group
//!    public key the coordinator holds): each checks them against its own
//!    record, draws its zero-constant polynomial, keeps the secret in memory
//!    and answers its round-1 broadcast;
//! 2. `refresh_round1` to every member with all `n` broadcasts: each sends
//!    its round-2 package for each other member **directly** to it
//!    (`refresh_round2`, member to member; the coordinator never sees them);
//! 3. `refresh_finish`: each checks the packages it received, computes its
//!    new share and the new group key, checks the new group public key is the
//!    one it stores, **holds** the new share in memory (the stored share is
//!    untouched) and answers the new group key;
//! 4. `refresh_outcome`: `commit` if every member answered the same new group
//!    key, and then each replaces its stored share and group key in one
//!    transaction; else `abort`, and each drops the new share. Nobody replaces
//!    its share unless every member derived the same key.
//!
//! # Repair (`POST /api/consortia/{name}/repair`, `concord consortium repair`)
//!
//! A member whose store lost its share (a replacement node initialised with
//! the same node name and paired again with the others) asks `t` helpers to
//! rebuild it ([`concord_threshold::repair_round1`] ...). The node being
//! repaired drives it:
//!
//! 1. `repair_record` to the first helper: the consortium's public record
//!    (members, threshold, coordinator, group key). The repaired node checks
//!    its group public key equals the one its operator gave (`--group-key`):
//!    a helper cannot make it adopt another consortium;
//! 2. `repair_start` to every helper: each checks the requester is a paired
//!    peer named as a member (not a helper), that it holds an active share of
//!    the same group key, and opens an inbox;
//! 3. `repair_round1`: each helper computes one delta per helper and sends
//!    each **directly** to that helper (`repair_delta`, helper to helper);
//! 4. `repair_round2`: each helper sums the deltas it received into its
//!    sigma, deletes its round state and answers the sigma (over the
//!    requester's own mutually authenticated connection: directly to it);
//! 5. the repaired node rebuilds its share ([`concord_threshold::repair_finish`]
//!    checks it against its verifying share in the group key) and stores it
//!    with the consortium's record, `active`.
//!
//! Round states live in memory ([`RekeyRounds`]), are deleted once used and
//! are lost on restart (which aborts the refresh or repair).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use concord_threshold::{
    Consortium, GroupKey, GroupPublicKey, KeyShare, RefreshRound1Secret, RefreshRound2Secret, RepairDelta, RepairSigma,
    Round1Msg, Round2Msg,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::consortium::{self as cons, api_error, ApiResult, ConsortiumRecord, IndexedRound1};
use crate::service::{PeerReply, PeerRequest, Service, ServiceError};
use crate::NodeError;

/// Refresh and repair control messages (inside [`PeerRequest::Rekey`]).
/// `Debug` shows the kind and names only (round-2 packages and deltas are secret).
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RekeyMsg {
    /// Coordinator to member: refresh consortium `name`; run round 1 and answer the broadcast.
    RefreshStart {
        /// Consortium name.
        name: String,
        /// Members, in index order, as the coordinator stores them.
        members: Vec<String>,
        /// Threshold, as the coordinator stores it.
        threshold: u16,
        /// Group public key (`concord-group-v1:...`), as the coordinator stores it.
        group_key: String,
    },
    /// Coordinator to member: every member's round-1 broadcast; send each
    /// round-2 package directly to its recipient.
    RefreshRound1 {
        /// Consortium name.
        name: String,
        /// All `n` broadcasts.
        round1: Vec<IndexedRound1>,
    },
    /// Member to member (directly; secret): the sender's refresh round-2 package for the receiver.
    RefreshRound2 {
        /// Consortium name.
        name: String,
        /// The package.
        package: Round2Msg,
    },
    /// Coordinator to member: compute the new share, hold it, answer the new group key.
    RefreshFinish {
        /// Consortium name.
        name: String,
    },
    /// Coordinator to member: replace the stored share by the held one (`commit`), or drop it.
    RefreshOutcome {
        /// Consortium name.
        name: String,
        /// Whether every member derived the same new group key.
        commit: bool,
        /// Why not.
        reason: Option<String>,
    },
    /// Repaired member to a helper: the consortium's public record.
    RepairRecord {
        /// Consortium name.
        name: String,
    },
    /// Repaired member to each helper: repair my share with these helpers.
    RepairStart {
        /// Consortium name.
        name: String,
        /// The helpers (member names), `t` or more, not the sender.
        helpers: Vec<String>,
        /// The group public key the repaired member's operator gave.
        group_key: String,
    },
    /// Repaired member to each helper: compute the deltas and send them to the other helpers.
    RepairRound1 {
        /// Consortium name.
        name: String,
    },
    /// Helper to helper (directly; secret): the sender's delta for the receiver.
    RepairDelta {
        /// Consortium name.
        name: String,
        /// The member being repaired.
        lost: String,
        /// The delta.
        delta: RepairDelta,
    },
    /// Repaired member to each helper: sum the deltas received and answer the sigma.
    RepairRound2 {
        /// Consortium name.
        name: String,
    },
    /// Repaired member to each helper: the repair failed; drop the round state.
    RepairAbort {
        /// Consortium name.
        name: String,
    },
}

impl std::fmt::Debug for RekeyMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RefreshStart { name, members, threshold, group_key } => {
                write!(f, "RefreshStart({name:?}, {members:?}, t = {threshold}, {group_key})")
            }
            Self::RefreshRound1 { name, .. } => write!(f, "RefreshRound1({name:?})"),
            Self::RefreshRound2 { name, .. } => write!(f, "RefreshRound2({name:?}, [redacted])"),
            Self::RefreshFinish { name } => write!(f, "RefreshFinish({name:?})"),
            Self::RefreshOutcome { name, commit, .. } => write!(f, "RefreshOutcome({name:?}, commit = {commit})"),
            Self::RepairRecord { name } => write!(f, "RepairRecord({name:?})"),
            Self::RepairStart { name, helpers, .. } => write!(f, "RepairStart({name:?}, helpers = {helpers:?})"),
            Self::RepairRound1 { name } => write!(f, "RepairRound1({name:?})"),
            Self::RepairDelta { name, lost, .. } => write!(f, "RepairDelta({name:?}, lost = {lost:?}, [redacted])"),
            Self::RepairRound2 { name } => write!(f, "RepairRound2({name:?})"),
            Self::RepairAbort { name } => write!(f, "RepairAbort({name:?})"),
        }
    }
}

/// Answers to [`RekeyMsg`] (inside [`PeerReply::Rekey`]).
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RekeyReply {
    /// Refresh round-1 broadcast.
    Round1 {
        /// The package.
        package: Round1Msg,
    },
    /// The new group key a member derived (and holds, uncommitted).
    Finished {
        /// Public key package.
        group_key: Box<GroupKey>,
    },
    /// The consortium's public record, for a member being repaired.
    Record {
        /// Members, in index order.
        members: Vec<String>,
        /// Threshold.
        threshold: u16,
        /// The node that ran the key generation.
        coordinator: String,
        /// Public key package.
        group_key: Box<GroupKey>,
    },
    /// A helper's repair message for the member being repaired (secret).
    Sigma {
        /// The sigma.
        sigma: RepairSigma,
    },
}

impl std::fmt::Debug for RekeyReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Round1 { .. } => f.write_str("Round1"),
            Self::Finished { group_key } => write!(f, "Finished({})", group_key.public_key()),
            Self::Record { members, threshold, group_key, .. } => {
                write!(f, "Record({members:?}, t = {threshold}, {})", group_key.public_key())
            }
            Self::Sigma { .. } => f.write_str("Sigma([redacted])"),
        }
    }
}

enum Stage {
    Round1(RefreshRound1Secret),
    Round2 {
        secret: RefreshRound2Secret,
        round1: BTreeMap<u16, Round1Msg>,
    },
    /// The new share, computed and checked, waiting for the outcome.
    Ready(Box<(KeyShare, GroupKey)>),
}

struct Refresh {
    consortium: Consortium,
    coordinator: String,
    stage: Option<Stage>,
    inbox: BTreeMap<u16, Round2Msg>,
}

struct Repair {
    consortium: Consortium,
    /// The member being repaired (who drives the repair).
    lost: String,
    helpers: Vec<u16>,
    started: bool,
    inbox: BTreeMap<u16, RepairDelta>,
}

#[derive(Default)]
struct Inner {
    refresh: HashMap<String, Refresh>,
    repair: HashMap<String, Repair>,
}

/// In-memory round states of this node's refreshes and repairs in progress
/// (secret; deleted once used; lost on restart, which aborts them).
#[derive(Default)]
pub struct RekeyRounds(Mutex<Inner>);

impl std::fmt::Debug for RekeyRounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RekeyRounds([redacted])")
    }
}

impl RekeyRounds {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What an operator asks at the node being repaired: `POST /api/consortia/{name}/repair`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairRequest {
    /// The helpers (member node names, at least the threshold; not this node).
    pub helpers: Vec<String>,
    /// The consortium's group public key (`concord-group-v1:...`), obtained independently.
    pub group_key: String,
}

/// `POST /api/consortia/{name}/refresh` takes an empty object.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {}

// -------------------------------------------------------------------------
// The service side.

fn err(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError { code, message: message.into() }
}

fn internal(e: impl std::fmt::Display) -> ServiceError {
    err("internal", e.to_string())
}

fn reply(r: RekeyReply) -> Result<PeerReply, ServiceError> {
    Ok(PeerReply::Rekey(Box::new(r)))
}

/// A CSPRNG seeded from the operating system.
fn os_rng() -> rand_chacha::ChaCha12Rng {
    <rand_chacha::ChaCha12Rng as rand_core::SeedableRng>::from_os_rng()
}

/// A threshold error, with the culprit (if any) named.
fn blame(c: &Consortium, step: &str, e: &concord_threshold::ThresholdError) -> ServiceError {
    match e.culprit().and_then(|i| c.name(i)) {
        Some(name) => err("misbehaviour", format!("{step}: member {name:?} misbehaved: {e}")),
        None => err("rekey_failed", format!("{step}: {e}")),
    }
}

fn no_refresh(me: &str, name: &str) -> ServiceError {
    err("bad_state", format!("node {me:?} runs no refresh of consortium {name:?}"))
}

fn no_repair(me: &str, name: &str) -> ServiceError {
    err("bad_state", format!("node {me:?} helps no repair of consortium {name:?}"))
}

/// Consortium `name` as stored here, active, with its members and threshold.
fn active(svc: &Service, name: &str) -> Result<(ConsortiumRecord, Consortium), ServiceError> {
    let me = svc.name().to_owned();
    let rec = cons::get(&svc.store(), name)?
        .ok_or_else(|| err("unknown_consortium", format!("node {me:?} knows no consortium named {name:?}")))?;
    if rec.state != "active" {
        return Err(err("not_active", format!("consortium {name:?} is {} on node {me:?}", rec.state)));
    }
    let c = Consortium::new(rec.members.clone(), rec.threshold).map_err(internal)?;
    Ok((rec, c))
}

/// Replace the stored key share and group key of `name`, mark it active, in
/// one transaction (creating the record from `c` and `coordinator` if absent).
fn commit_share(
    store: &crate::store::Store,
    name: &str,
    c: &Consortium,
    coordinator: &str,
    share: &KeyShare,
    group: &GroupKey,
) -> Result<(), NodeError> {
    let sql = |source| NodeError::Store { path: store.path().to_owned(), source };
    let tx = store.conn().unchecked_transaction().map_err(sql)?;
    if cons::get(store, name)?.is_none() {
        cons::begin(store, c, name, coordinator)?;
    }
    cons::store_key(store, name, share, group)?;
    cons::set_state(store, name, "active", None)?;
    tx.commit().map_err(sql)
}

impl Service {
    /// Send a rekey message to `member` (or handle it here if it is us).
    async fn rekey_call(&self, member: &str, msg: RekeyMsg) -> Result<PeerReply, ServiceError> {
        if member == self.name() {
            let me = self.name().to_owned();
            return self.handle_rekey(&me, msg).await;
        }
        self.call(member, &PeerRequest::Rekey(msg)).await
    }

    /// [`Self::rekey_call`] for a message answered with data.
    async fn rekey_ask(&self, member: &str, msg: RekeyMsg) -> Result<RekeyReply, ServiceError> {
        match self.rekey_call(member, msg).await? {
            PeerReply::Rekey(r) => Ok(*r),
            other => Err(err("bad_peer_reply", format!("{member:?} answered {other:?}"))),
        }
    }

    /// Every name in `names` but ours is a paired peer that is up.
    fn check_up<'a>(&self, names: impl IntoIterator<Item = &'a String>, role: &str) -> Result<(), ServiceError> {
        let me = self.name().to_owned();
        let peers = self.store().list_peers()?;
        let health = self.health();
        for m in names.into_iter().filter(|m| **m != me) {
            let p = peers
                .iter()
                .find(|p| p.name == *m && p.revoked_at.is_none())
                .ok_or_else(|| err("unknown_peer", format!("{role} {m:?} is not a paired peer of node {me:?}")))?;
            let state = health.get(&p.name).map_or("unknown", |h| h.state.as_str());
            if state != "up" {
                return Err(err("peer_down", format!("{role} {m:?} is not up (its health is {state})")));
            }
        }
        Ok(())
    }

    /// Handle a refresh or repair message from `from` (authenticated peer name).
    pub(crate) async fn on_rekey(&self, from: &str, msg: RekeyMsg) -> PeerReply {
        match self.handle_rekey(from, msg).await {
            Ok(r) => r,
            Err(e) => PeerReply::Error { code: e.code.to_owned(), message: e.message },
        }
    }

    pub(crate) async fn handle_rekey(&self, from: &str, msg: RekeyMsg) -> Result<PeerReply, ServiceError> {
        match msg {
            RekeyMsg::RefreshStart { name, members, threshold, group_key } => {
                self.on_refresh_start(from, &name, members, threshold, &group_key)
            }
            RekeyMsg::RefreshRound1 { name, round1 } => self.on_refresh_round1(from, &name, round1).await,
            RekeyMsg::RefreshRound2 { name, package } => {
                let me = self.name().to_owned();
                let mut rounds = self.rekey_rounds().lock();
                let r = rounds.refresh.get_mut(&name).ok_or_else(|| no_refresh(&me, &name))?;
                let sender = r
                    .consortium
                    .index(from)
                    .ok_or_else(|| err("not_a_member", format!("{from:?} is not a member of {name:?}")))?;
                if Some(sender) == r.consortium.index(&me) || r.inbox.insert(sender, package).is_some() {
                    return Err(err("bad_request", format!("a second refresh package from {from:?} for {name:?}")));
                }
                Ok(PeerReply::Ok)
            }
            RekeyMsg::RefreshFinish { name } => self.on_refresh_finish(from, &name),
            RekeyMsg::RefreshOutcome { name, commit, reason } => self.on_refresh_outcome(from, &name, commit, reason),
            RekeyMsg::RepairRecord { name } => {
                let (rec, c) = active(self, &name)?;
                if c.index(from).is_none() {
                    return Err(err("not_a_member", format!("{from:?} is not a member of consortium {name:?}")));
                }
                let (_, group) = cons::load_key(&self.store(), &name)?;
                reply(RekeyReply::Record {
                    members: rec.members,
                    threshold: rec.threshold,
                    coordinator: rec.coordinator,
                    group_key: Box::new(group),
                })
            }
            RekeyMsg::RepairStart { name, helpers, group_key } => {
                self.on_repair_start(from, &name, &helpers, &group_key)
            }
            RekeyMsg::RepairRound1 { name } => self.on_repair_round1(from, &name).await,
            RekeyMsg::RepairDelta { name, lost, delta } => {
                let me = self.name().to_owned();
                let mut rounds = self.rekey_rounds().lock();
                let r = rounds.repair.get_mut(&name).ok_or_else(|| no_repair(&me, &name))?;
                if r.lost != lost {
                    return Err(err("bad_request", format!("{me:?} helps repair {:?}, not {lost:?}", r.lost)));
                }
                let sender = r.consortium.index(from).filter(|i| r.helpers.contains(i)).ok_or_else(|| {
                    err("not_a_helper", format!("{from:?} is not a helper of the repair of {lost:?} in {name:?}"))
                })?;
                if Some(sender) == r.consortium.index(&me) || r.inbox.insert(sender, delta).is_some() {
                    return Err(err("bad_request", format!("a second repair delta from {from:?} for {name:?}")));
                }
                Ok(PeerReply::Ok)
            }
            RekeyMsg::RepairRound2 { name } => self.on_repair_round2(from, &name),
            RekeyMsg::RepairAbort { name } => {
                let mut rounds = self.rekey_rounds().lock();
                if rounds.repair.get(&name).is_some_and(|r| r.lost == from) {
                    rounds.repair.remove(&name);
                }
                Ok(PeerReply::Ok)
            }
        }
    }

    fn on_refresh_start(
        &self,
        from: &str,
        name: &str,
        members: Vec<String>,
        threshold: u16,
        group_key: &str,
    ) -> Result<PeerReply, ServiceError> {
        let me = self.name().to_owned();
        let (rec, c) = active(self, name)?;
        if rec.members != members || rec.threshold != threshold || rec.group_key.as_deref() != Some(group_key) {
            return Err(err(
                "record_mismatch",
                format!(
                    "node {me:?} stores consortium {name:?} as {} of [{}] with group key {}, not as the coordinator \
                     {from:?} does",
                    rec.threshold,
                    rec.members.join(", "),
                    rec.group_key.as_deref().unwrap_or("-")
                ),
            ));
        }
        if c.index(from).is_none() {
            return Err(err("not_a_member", format!("{from:?} is not a member of {name:?}")));
        }
        let (share, group) = cons::load_key(&self.store(), name)?;
        let (secret, package) = concord_threshold::refresh_round1(&share, &group, &mut os_rng())
            .map_err(|e| err("rekey_failed", format!("refresh round 1 on {me:?}: {e}")))?;
        let mut rounds = self.rekey_rounds().lock();
        if rounds.refresh.get(name).is_some_and(|r| r.coordinator != from) {
            return Err(err("busy", format!("node {me:?} is refreshing consortium {name:?} already")));
        }
        rounds.refresh.insert(
            name.to_owned(),
            Refresh {
                consortium: c,
                coordinator: from.to_owned(),
                stage: Some(Stage::Round1(secret)),
                inbox: BTreeMap::new(),
            },
        );
        tracing::info!(consortium = %name, coordinator = from, "consortium refresh round 1");
        reply(RekeyReply::Round1 { package })
    }

    async fn on_refresh_round1(
        &self,
        from: &str,
        name: &str,
        round1: Vec<IndexedRound1>,
    ) -> Result<PeerReply, ServiceError> {
        let me = self.name().to_owned();
        let (secret, c, index) = {
            let mut rounds = self.rekey_rounds().lock();
            let r = rounds.refresh.get_mut(name).ok_or_else(|| no_refresh(&me, name))?;
            if r.coordinator != from {
                return Err(err("not_coordinator", format!("{from:?} does not run the refresh of {name:?}")));
            }
            let index = r.consortium.index(&me).ok_or_else(|| err("not_a_member", format!("{me:?} is no member")))?;
            let Some(Stage::Round1(secret)) = r.stage.take() else {
                return Err(err("bad_state", format!("the refresh of {name:?} on {me:?} is not in round 1")));
            };
            (secret, r.consortium.clone(), index)
        };
        let mut received = BTreeMap::new();
        for m in round1 {
            if m.index != index && received.insert(m.index, m.package).is_some() {
                return Err(err("bad_request", format!("two round-1 messages for member {}", m.index)));
            }
        }
        let (secret2, out) = concord_threshold::refresh_round2(secret, &received)
            .map_err(|e| blame(&c, &format!("refresh round 2 on {me:?}"), &e))?;
        if let Some(r) = self.rekey_rounds().lock().refresh.get_mut(name) {
            r.stage = Some(Stage::Round2 { secret: secret2, round1: received });
        }
        // Each round-2 package goes directly to its recipient, never through another node.
        for (to, package) in out {
            let member = c.name(to).ok_or_else(|| internal(format!("no member {to}")))?.to_owned();
            let msg = RekeyMsg::RefreshRound2 { name: name.to_owned(), package };
            self.call(&member, &PeerRequest::Rekey(msg)).await.map_err(|e| {
                err(e.code, format!("{me:?} could not deliver its refresh package to {member:?}: {}", e.message))
            })?;
        }
        Ok(PeerReply::Ok)
    }

    fn on_refresh_finish(&self, from: &str, name: &str) -> Result<PeerReply, ServiceError> {
        let me = self.name().to_owned();
        let (stage, c, inbox) = {
            let mut rounds = self.rekey_rounds().lock();
            let r = rounds.refresh.get_mut(name).ok_or_else(|| no_refresh(&me, name))?;
            if r.coordinator != from {
                return Err(err("not_coordinator", format!("{from:?} does not run the refresh of {name:?}")));
            }
            (r.stage.take(), r.consortium.clone(), std::mem::take(&mut r.inbox))
        };
        let Some(Stage::Round2 { secret, round1 }) = stage else {
            self.rekey_rounds().lock().refresh.remove(name);
            return Err(err("bad_state", format!("the refresh of {name:?} on {me:?} is not in round 2")));
        };
        let outcome = (|| {
            let (old_share, old_group) = cons::load_key(&self.store(), name)?;
            let stored_key = old_group.public_key();
            let (share, group) = concord_threshold::refresh_finish(&secret, &round1, &inbox, old_share, &old_group)
                .map_err(|e| blame(&c, &format!("refresh finish on {me:?}"), &e))?;
            if group.public_key() != stored_key || share.group_public_key() != stored_key {
                return Err(err(
                    "group_key_changed",
                    format!(
                        "the refresh on {me:?} gave group key {}, not the stored {stored_key}; the share is not replaced",
                        group.public_key()
                    ),
                ));
            }
            Ok((share, group))
        })();
        let mut rounds = self.rekey_rounds().lock();
        match outcome {
            Ok((share, group)) => {
                let answer = group.clone();
                if let Some(r) = rounds.refresh.get_mut(name) {
                    r.stage = Some(Stage::Ready(Box::new((share, group))));
                }
                tracing::info!(consortium = %name, "consortium refresh: new share held, waiting for the outcome");
                reply(RekeyReply::Finished { group_key: Box::new(answer) })
            }
            Err(e) => {
                rounds.refresh.remove(name);
                Err(e)
            }
        }
    }

    fn on_refresh_outcome(
        &self,
        from: &str,
        name: &str,
        commit: bool,
        reason: Option<String>,
    ) -> Result<PeerReply, ServiceError> {
        let me = self.name().to_owned();
        let r = {
            let mut rounds = self.rekey_rounds().lock();
            match rounds.refresh.get(name) {
                Some(r) if r.coordinator != from => {
                    return Err(err("not_coordinator", format!("{from:?} does not run the refresh of {name:?}")))
                }
                None if !commit => return Ok(PeerReply::Ok),
                None => return Err(no_refresh(&me, name)),
                Some(_) => {}
            }
            // The round state is deleted here, whatever the outcome.
            rounds.refresh.remove(name).ok_or_else(|| no_refresh(&me, name))?
        };
        if !commit {
            tracing::warn!(consortium = %name, reason = ?reason, "consortium refresh aborted; the share is unchanged");
            return Ok(PeerReply::Ok);
        }
        let Some(Stage::Ready(ready)) = r.stage else {
            return Err(err("bad_state", format!("node {me:?} holds no refreshed share of {name:?}")));
        };
        let (share, group) = *ready;
        let mut store = self.store();
        commit_share(&store, name, &r.consortium, from, &share, &group)?;
        let _ = store.record_event(
            "consortium.refreshed",
            &format!(
                "the key share of consortium {name:?} was refreshed (coordinator {from:?}); group key {} unchanged",
                group.public_key()
            ),
        );
        tracing::info!(consortium = %name, group_key = %group.public_key(), "consortium key share refreshed");
        Ok(PeerReply::Ok)
    }

    /// `POST /api/consortia/{name}/refresh`: refresh every member's share
    /// (this node must be a member); the consortium as stored here.
    pub async fn refresh_consortium(&self, name: &str) -> Result<ConsortiumRecord, ServiceError> {
        let me = self.name().to_owned();
        let (rec, c) = active(self, name)?;
        if c.index(&me).is_none() {
            return Err(err("not_a_member", format!("node {me:?} is not a member of {name:?}; ask a member node")));
        }
        let key = rec.group_key.clone().ok_or_else(|| internal(format!("consortium {name:?} has no group key")))?;
        self.check_up(c.members(), "member")?;
        let started = std::time::Instant::now();
        match self.run_refresh(name, &c, &rec, &key).await {
            Ok(()) => {
                tracing::info!(consortium = %name, group_key = %key, ms = started.elapsed().as_millis() as u64, "consortium refreshed");
            }
            Err(reason) => {
                for m in c.members() {
                    let msg =
                        RekeyMsg::RefreshOutcome { name: name.to_owned(), commit: false, reason: Some(reason.clone()) };
                    let _ = self.rekey_call(m, msg).await;
                }
                let _ = self.store().record_event(
                    "consortium.refresh_failed",
                    &format!("refresh of consortium {name:?} failed: {reason}"),
                );
                return Err(err("refresh_failed", format!("the refresh of consortium {name:?} failed: {reason}")));
            }
        }
        cons::get(&self.store(), name)?.ok_or_else(|| internal("the consortium vanished"))
    }

    async fn run_refresh(&self, name: &str, c: &Consortium, rec: &ConsortiumRecord, key: &str) -> Result<(), String> {
        let members = c.members().to_vec();
        let rounds = cons::KeyRounds {
            start: PeerRequest::Rekey(RekeyMsg::RefreshStart {
                name: name.to_owned(),
                members: members.clone(),
                threshold: rec.threshold,
                group_key: key.to_owned(),
            }),
            round1: |name, round1| PeerRequest::Rekey(RekeyMsg::RefreshRound1 { name, round1 }),
            finish: PeerRequest::Rekey(RekeyMsg::RefreshFinish { name: name.to_owned() }),
        };
        let keys = self.run_key_rounds(name, &members, rounds).await?;
        let (first_name, first) = keys.first().cloned().ok_or("no members")?;
        for (m, k) in &keys {
            if k.public_key().to_string() != key {
                return Err(format!("member {m:?} derived group key {}, not {key}", k.public_key()));
            }
            if *k != first {
                return Err(format!(
                    "member {m:?} derived other verifying shares than {first_name:?} (same group key {key})"
                ));
            }
        }
        // Every member holds a new share of the same key: commit everywhere.
        let mut failed = Vec::new();
        for m in &members {
            let msg = RekeyMsg::RefreshOutcome { name: name.to_owned(), commit: true, reason: None };
            if let Err(e) = self.rekey_call(m, msg).await {
                failed.push(format!("{m:?}: {}", e.message));
            }
        }
        if !failed.is_empty() {
            // Too late to abort: the others replaced their shares.
            let why = format!(
                "the refresh of consortium {name:?} was committed, but these members did not replace their share \
                 (repair them with `concord consortium repair`): {}",
                failed.join("; ")
            );
            tracing::error!(consortium = %name, "{why}");
            return Err(why);
        }
        Ok(())
    }

    fn on_repair_start(
        &self,
        from: &str,
        name: &str,
        helpers: &[String],
        group_key: &str,
    ) -> Result<PeerReply, ServiceError> {
        let me = self.name().to_owned();
        let (rec, c) = active(self, name)?;
        // The requester is an authenticated, paired peer; it must be named as a member.
        if c.index(from).is_none() {
            return Err(err("not_a_member", format!("{from:?} is not a member of consortium {name:?}")));
        }
        if rec.group_key.as_deref() != Some(group_key) {
            return Err(err(
                "group_key_mismatch",
                format!(
                    "node {me:?} holds consortium {name:?} with group key {}, not {group_key}",
                    rec.group_key.as_deref().unwrap_or("-")
                ),
            ));
        }
        let mut indices = Vec::with_capacity(helpers.len());
        for h in helpers {
            let i =
                c.index(h).ok_or_else(|| err("not_a_member", format!("helper {h:?} is not a member of {name:?}")))?;
            if h == from || indices.contains(&i) {
                return Err(err("bad_request", format!("helper {h:?} is the member repaired or appears twice")));
            }
            indices.push(i);
        }
        if !helpers.contains(&me) {
            return Err(err("bad_request", format!("node {me:?} is not among the helpers")));
        }
        if indices.len() < usize::from(c.threshold()) {
            return Err(err("bad_request", format!("{} helpers for threshold {}", indices.len(), c.threshold())));
        }
        self.check_up(helpers.iter().chain(std::iter::once(&from.to_owned())), "helper or requester")?;
        cons::load_key(&self.store(), name)?;
        self.rekey_rounds().lock().repair.insert(
            name.to_owned(),
            Repair { consortium: c, lost: from.to_owned(), helpers: indices, started: false, inbox: BTreeMap::new() },
        );
        tracing::info!(consortium = %name, lost = from, "consortium repair: helping");
        Ok(PeerReply::Ok)
    }

    async fn on_repair_round1(&self, from: &str, name: &str) -> Result<PeerReply, ServiceError> {
        let me = self.name().to_owned();
        let (c, helpers, lost) = {
            let mut rounds = self.rekey_rounds().lock();
            let r = rounds.repair.get_mut(name).ok_or_else(|| no_repair(&me, name))?;
            if r.lost != from || r.started {
                return Err(err("bad_state", format!("{from:?} runs no repair of {name:?} in round 1 on {me:?}")));
            }
            r.started = true;
            (r.consortium.clone(), r.helpers.clone(), r.lost.clone())
        };
        let lost_index = c.index(&lost).ok_or_else(|| internal("the member repaired vanished"))?;
        let my_index = c.index(&me).ok_or_else(|| internal("not a member"))?;
        let (share, _) = cons::load_key(&self.store(), name)?;
        let mut deltas = concord_threshold::repair_round1(&share, &helpers, lost_index, &mut os_rng())
            .map_err(|e| err("repair_failed", format!("repair round 1 on {me:?}: {e}")))?;
        drop(share);
        if let Some(own) = deltas.remove(&my_index) {
            let mut rounds = self.rekey_rounds().lock();
            let r = rounds.repair.get_mut(name).ok_or_else(|| no_repair(&me, name))?;
            r.inbox.insert(my_index, own);
        }
        // Each delta goes directly to its helper, never through the member repaired.
        for (to, delta) in deltas {
            let helper = c.name(to).ok_or_else(|| internal(format!("no member {to}")))?.to_owned();
            let msg = RekeyMsg::RepairDelta { name: name.to_owned(), lost: lost.clone(), delta };
            self.call(&helper, &PeerRequest::Rekey(msg)).await.map_err(|e| {
                err(e.code, format!("{me:?} could not deliver its repair delta to {helper:?}: {}", e.message))
            })?;
        }
        Ok(PeerReply::Ok)
    }

    fn on_repair_round2(&self, from: &str, name: &str) -> Result<PeerReply, ServiceError> {
        let me = self.name().to_owned();
        let r = {
            let mut rounds = self.rekey_rounds().lock();
            match rounds.repair.get(name) {
                Some(r) if r.lost == from && r.started => {}
                _ => return Err(err("bad_state", format!("{from:?} runs no repair of {name:?} in round 2 on {me:?}"))),
            }
            // The round state is deleted here, whatever the outcome.
            rounds.repair.remove(name).ok_or_else(|| no_repair(&me, name))?
        };
        if let Some(missing) = r.helpers.iter().find(|h| !r.inbox.contains_key(h)) {
            let who = r.consortium.name(*missing).unwrap_or("?");
            return Err(err("repair_failed", format!("{me:?} received no repair delta from helper {who:?}")));
        }
        let sigma = concord_threshold::repair_round2(&r.inbox)
            .map_err(|e| blame(&r.consortium, &format!("repair round 2 on {me:?}"), &e))?;
        let _ = self.store().record_event(
            "consortium.repair_helped",
            &format!("helped rebuild the key share of member {from:?} of consortium {name:?}"),
        );
        reply(RekeyReply::Sigma { sigma })
    }

    /// `POST /api/consortia/{name}/repair` at the node being repaired: have
    /// the helpers rebuild this node's share of consortium `name`, whose
    /// group public key must be `req.group_key`.
    pub async fn repair_consortium(&self, name: &str, req: RepairRequest) -> Result<ConsortiumRecord, ServiceError> {
        let me = self.name().to_owned();
        crate::config::check_name(name).map_err(|e| err("bad_request", format!("consortium name {name:?}: {e}")))?;
        let expected: GroupPublicKey =
            req.group_key.parse().map_err(|e| err("bad_request", format!("group key {:?}: {e}", req.group_key)))?;
        let helpers = req.helpers;
        let first = helpers.first().ok_or_else(|| err("bad_request", "no helpers"))?.clone();
        if helpers.contains(&me) {
            return Err(err("bad_request", format!("node {me:?} cannot help repair its own share")));
        }
        self.check_up(&helpers, "helper")?;
        let started = std::time::Instant::now();
        let (members, threshold, coordinator, group) =
            match self.rekey_ask(&first, RekeyMsg::RepairRecord { name: name.to_owned() }).await? {
                RekeyReply::Record { members, threshold, coordinator, group_key } => {
                    (members, threshold, coordinator, *group_key)
                }
                other => return Err(err("bad_peer_reply", format!("helper {first:?} answered {other:?}"))),
            };
        if group.public_key() != expected {
            return Err(err(
                "group_key_mismatch",
                format!(
                    "helper {first:?} serves consortium {name:?} with group key {}, not the {expected} given; refusing \
                     the repair",
                    group.public_key()
                ),
            ));
        }
        let c = Consortium::new(members, threshold)
            .map_err(|e| err("bad_peer_reply", format!("helper {first:?} sent a bad record: {e}")))?;
        if group.n() != c.n() || group.threshold() != c.threshold() {
            return Err(err("bad_peer_reply", format!("helper {first:?} sent a group key of another size")));
        }
        if c.index(&me).is_none() {
            return Err(err("not_a_member", format!("node {me:?} is not a member of consortium {name:?}")));
        }
        for h in &helpers {
            if c.index(h).is_none() {
                return Err(err("not_a_member", format!("helper {h:?} is not a member of consortium {name:?}")));
            }
        }
        if helpers.len() < usize::from(c.threshold()) {
            return Err(err(
                "bad_request",
                format!("{} helpers given; consortium {name:?} needs {}", helpers.len(), c.threshold()),
            ));
        }
        // What this node still knows of the consortium must agree.
        let local = cons::get(&self.store(), name)?;
        if let Some(rec) = local {
            if rec.members != c.members() || rec.threshold != c.threshold() {
                return Err(err(
                    "record_mismatch",
                    format!("node {me:?} stores consortium {name:?} with other members or threshold"),
                ));
            }
            let held = cons::load_key(&self.store(), name).ok();
            if held.is_some_and(|(_, g)| g == group) && rec.state == "active" {
                return Err(err(
                    "nothing_to_repair",
                    format!("node {me:?} holds a valid share of consortium {name:?} already"),
                ));
            }
        }
        tracing::info!(consortium = %name, helpers = ?helpers, "consortium repair started");
        let outcome = self.run_repair(name, &c, &helpers, &req.group_key, &group).await;
        let share = match outcome {
            Ok(share) => share,
            Err(e) => {
                for h in &helpers {
                    let _ = self.rekey_call(h, RekeyMsg::RepairAbort { name: name.to_owned() }).await;
                }
                return Err(e);
            }
        };
        {
            let mut store = self.store();
            commit_share(&store, name, &c, &coordinator, &share, &group)?;
            let _ = store.record_event(
                "consortium.repaired",
                &format!(
                    "the key share of consortium {name:?} was rebuilt by {} (group key {})",
                    helpers.join(", "),
                    group.public_key()
                ),
            );
        }
        tracing::info!(
            consortium = %name, group_key = %group.public_key(), helpers = ?helpers,
            ms = started.elapsed().as_millis() as u64, "consortium key share repaired"
        );
        cons::get(&self.store(), name)?.ok_or_else(|| internal("the consortium vanished"))
    }

    async fn run_repair(
        &self,
        name: &str,
        c: &Consortium,
        helpers: &[String],
        group_key: &str,
        group: &GroupKey,
    ) -> Result<KeyShare, ServiceError> {
        let index = c.index(self.name()).ok_or_else(|| internal("not a member"))?;
        let fail = |h: &str, step: &str, e: ServiceError| {
            err(
                if e.code == "peer_refused" { "repair_refused" } else { e.code },
                format!("helper {h:?} failed {step}: {}", e.message),
            )
        };
        for h in helpers {
            let msg = RekeyMsg::RepairStart {
                name: name.to_owned(),
                helpers: helpers.to_vec(),
                group_key: group_key.to_owned(),
            };
            self.rekey_call(h, msg).await.map_err(|e| fail(h, "to start", e))?;
        }
        let mut calls = Vec::new();
        for h in helpers {
            let (svc, h, msg) = (self.clone(), h.clone(), RekeyMsg::RepairRound1 { name: name.to_owned() });
            calls.push(tokio::spawn(async move {
                let r = svc.rekey_call(&h, msg).await;
                (h, r)
            }));
        }
        for call in calls {
            match call.await {
                Ok((_, Ok(_))) => {}
                Ok((h, Err(e))) => return Err(fail(&h, "round 1", e)),
                Err(e) => return Err(internal(e)),
            }
        }
        let mut sigmas = BTreeMap::new();
        for h in helpers {
            let i = c.index(h).ok_or_else(|| internal(format!("helper {h:?} is not a member")))?;
            match self.rekey_ask(h, RekeyMsg::RepairRound2 { name: name.to_owned() }).await {
                Ok(RekeyReply::Sigma { sigma }) => {
                    sigmas.insert(i, sigma);
                }
                Ok(other) => return Err(err("bad_peer_reply", format!("helper {h:?} answered {other:?}"))),
                Err(e) => return Err(fail(h, "round 2", e)),
            }
        }
        concord_threshold::repair_finish(index, &sigmas, group).map_err(|e| {
            err(
                "repair_failed",
                format!(
                    "the share rebuilt from the sigmas of {} does not check against the group key: {e}",
                    helpers.join(", ")
                ),
            )
        })
    }
}

// -------------------------------------------------------------------------
// HTTP API (routes in crate::server).

fn service_status(code: &str) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    match code {
        "bad_request" | "unknown_peer" | "not_a_member" | "group_key_mismatch" | "record_mismatch" => {
            StatusCode::BAD_REQUEST
        }
        "unknown_consortium" => StatusCode::NOT_FOUND,
        "peer_down" => StatusCode::SERVICE_UNAVAILABLE,
        "not_active" | "nothing_to_repair" | "busy" => StatusCode::CONFLICT,
        "refresh_failed" | "repair_failed" | "repair_refused" | "misbehaviour" | "peer_refused"
        | "peer_unreachable" | "bad_peer_reply" => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn service(state: &crate::server::AppState) -> Result<&Service, (axum::http::StatusCode, axum::Json<Value>)> {
    state.node_service().ok_or_else(|| {
        api_error(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "no_service",
            "this server runs without the node service".into(),
        )
    })
}

/// `POST /api/consortia/{name}/refresh` `{}`: refresh every member's key
/// share (this node coordinates); answers the consortium once committed.
pub async fn api_refresh(
    axum::extract::State(state): axum::extract::State<crate::server::AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    use axum::http::StatusCode;
    let _: RefreshRequest = serde_json::from_slice(&body)
        .map_err(|e| api_error(StatusCode::BAD_REQUEST, "bad_request", format!("refresh request: {e}")))?;
    let svc = service(&state)?;
    let rec = svc.refresh_consortium(&name).await.map_err(|e| api_error(service_status(e.code), e.code, e.message))?;
    Ok((StatusCode::OK, axum::Json(json!(rec))))
}

/// `POST /api/consortia/{name}/repair` `{"helpers", "group_key"}`, at the
/// node being repaired: rebuild its key share; answers the consortium.
pub async fn api_repair(
    axum::extract::State(state): axum::extract::State<crate::server::AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    use axum::http::StatusCode;
    let req: RepairRequest = serde_json::from_slice(&body)
        .map_err(|e| api_error(StatusCode::BAD_REQUEST, "bad_request", format!("repair request: {e}")))?;
    let svc = service(&state)?;
    let rec =
        svc.repair_consortium(&name, req).await.map_err(|e| api_error(service_status(e.code), e.code, e.message))?;
    Ok((StatusCode::OK, axum::Json(json!(rec))))
}

/// The OpenAPI document with the refresh and repair routes added.
pub fn with_openapi(mut doc: Value) -> Value {
    let error = json!({ "description": "Error", "content": { "application/json": {
        "schema": { "$ref": "#/components/schemas/Error" } } } });
    let name = json!([{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }]);
    let ok = json!({ "description": "The consortium as stored here (active; same group key)",
        "content": { "application/json": { "schema": { "type": "object" } } } });
    doc["paths"]["/api/consortia/{name}/refresh"] = json!({ "post": {
        "summary": "Refresh the key shares of every member (same group key, new shares; old shares useless). \
                    This node (a member) coordinates; every member must be up.",
        "parameters": name,
        "requestBody": { "required": true, "content": { "application/json": { "schema": {
            "type": "object", "additionalProperties": false } } } },
        "responses": { "200": ok, "400": error, "404": error, "409": error, "502": error, "503": error, "500": error }
    } });
    doc["paths"]["/api/consortia/{name}/repair"] = json!({ "post": {
        "summary": "At a member that lost its key share: have t helpers rebuild it, after checking the consortium's \
                    group key is the one given",
        "parameters": name,
        "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object",
            "required": ["helpers", "group_key"], "properties": {
                "helpers": { "type": "array", "items": { "type": "string" } },
                "group_key": { "type": "string", "description": "concord-group-v1:<64 hex>" } } } } } },
        "responses": { "200": ok, "400": error, "404": error, "409": error, "502": error, "503": error, "500": error }
    } });
    doc
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A dealer-free 2-of-3 key (seeded): every member's share and the group key.
    fn dkg() -> (Vec<KeyShare>, GroupKey) {
        crate::testing::dkg_2_of_3(&mut crate::testing::rng(24))
    }

    /// Through the control channel's JSON and back.
    fn carry_msg(m: RekeyMsg) -> RekeyMsg {
        let json = serde_json::to_string(&PeerRequest::Rekey(m)).unwrap();
        assert!(json.starts_with(r#"{"type":"rekey","kind":""#), "{json}");
        match serde_json::from_str(&json).unwrap() {
            PeerRequest::Rekey(m) => m,
            other => panic!("{other:?}"),
        }
    }

    fn carry_reply(r: RekeyReply) -> RekeyReply {
        let json = serde_json::to_string(&PeerReply::Rekey(Box::new(r))).unwrap();
        match serde_json::from_str(&json).unwrap() {
            PeerReply::Rekey(r) => *r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refresh_runs_through_serialised_messages_and_keeps_the_group_key() {
        let (shares, group) = dkg();
        let mut rng = crate::testing::rng(101);
        let start = carry_msg(RekeyMsg::RefreshStart {
            name: "c".into(),
            members: vec!["a".into(), "b".into(), "c".into()],
            threshold: 2,
            group_key: group.public_key().to_string(),
        });
        assert!(matches!(start, RekeyMsg::RefreshStart { threshold: 2, ref group_key, .. }
            if *group_key == group.public_key().to_string()));
        let mut secrets = Vec::new();
        let mut round1 = Vec::new();
        for (k, share) in shares.iter().enumerate() {
            let (s, package) = concord_threshold::refresh_round1(share, &group, &mut rng).unwrap();
            let RekeyReply::Round1 { package } = carry_reply(RekeyReply::Round1 { package }) else { panic!() };
            round1.push(IndexedRound1 { index: k as u16 + 1, package });
            secrets.push(s);
        }
        let RekeyMsg::RefreshRound1 { round1, .. } = carry_msg(RekeyMsg::RefreshRound1 { name: "c".into(), round1 })
        else {
            panic!()
        };
        let others = |i: u16| -> BTreeMap<u16, Round1Msg> {
            round1.iter().filter(|m| m.index != i).map(|m| (m.index, m.package.clone())).collect()
        };
        let mut s2 = Vec::new();
        let mut inbox: BTreeMap<u16, BTreeMap<u16, Round2Msg>> = BTreeMap::new();
        for (k, s) in secrets.into_iter().enumerate() {
            let i = k as u16 + 1;
            let (s, out) = concord_threshold::refresh_round2(s, &others(i)).unwrap();
            for (to, package) in out {
                let RekeyMsg::RefreshRound2 { package, .. } =
                    carry_msg(RekeyMsg::RefreshRound2 { name: "c".into(), package })
                else {
                    panic!()
                };
                inbox.entry(to).or_default().insert(i, package);
            }
            s2.push(s);
        }
        let mut new = Vec::new();
        for ((k, s), old) in s2.iter().enumerate().zip(shares) {
            let i = k as u16 + 1;
            let (share, g) = concord_threshold::refresh_finish(s, &others(i), &inbox[&i], old, &group).unwrap();
            let RekeyReply::Finished { group_key } = carry_reply(RekeyReply::Finished { group_key: Box::new(g) })
            else {
                panic!()
            };
            assert_eq!(group_key.public_key(), group.public_key());
            assert_ne!(*group_key, group, "the verifying shares change");
            new.push((share, *group_key));
        }
        let outcome = carry_msg(RekeyMsg::RefreshOutcome { name: "c".into(), commit: true, reason: None });
        assert!(matches!(outcome, RekeyMsg::RefreshOutcome { commit: true, reason: None, .. }));
        // The new shares sign under the same key.
        let digest = [7u8; 32];
        let mut commitments = BTreeMap::new();
        let mut nonces = Vec::new();
        for (i, (share, _)) in new.iter().enumerate().take(2) {
            let (n, c) = concord_threshold::sign_round1(share, &mut rng);
            commitments.insert(i as u16 + 1, c);
            nonces.push(n);
        }
        let package = concord_threshold::signing_package(&commitments, &digest).unwrap();
        let sig_shares = new
            .iter()
            .zip(nonces)
            .enumerate()
            .map(|(i, ((share, _), n))| (i as u16 + 1, concord_threshold::sign_round2(share, n, &package).unwrap()))
            .collect();
        let sig = concord_threshold::aggregate(&commitments, &sig_shares, &new[0].1, &digest).unwrap();
        concord_threshold::verify(&group.public_key(), &digest, &sig).unwrap();
    }

    #[test]
    fn a_repair_runs_through_serialised_messages() {
        let (shares, group) = dkg();
        let mut rng = crate::testing::rng(102);
        let helpers = [1u16, 2];
        let mut inbox: BTreeMap<u16, BTreeMap<u16, RepairDelta>> = BTreeMap::new();
        for h in helpers {
            let deltas = concord_threshold::repair_round1(&shares[usize::from(h) - 1], &helpers, 3, &mut rng).unwrap();
            for (to, delta) in deltas {
                let RekeyMsg::RepairDelta { delta, lost, .. } =
                    carry_msg(RekeyMsg::RepairDelta { name: "c".into(), lost: "c".into(), delta })
                else {
                    panic!()
                };
                assert_eq!(lost, "c");
                inbox.entry(to).or_default().insert(h, delta);
            }
        }
        let mut sigmas = BTreeMap::new();
        for h in helpers {
            let sigma = concord_threshold::repair_round2(&inbox[&h]).unwrap();
            let RekeyReply::Sigma { sigma } = carry_reply(RekeyReply::Sigma { sigma }) else { panic!() };
            sigmas.insert(h, sigma);
        }
        let RekeyReply::Record { members, threshold, group_key, .. } = carry_reply(RekeyReply::Record {
            members: vec!["a".into(), "b".into(), "c".into()],
            threshold: 2,
            coordinator: "a".into(),
            group_key: Box::new(group.clone()),
        }) else {
            panic!()
        };
        assert_eq!((members.len(), threshold), (3, 2));
        let share = concord_threshold::repair_finish(3, &sigmas, &group_key).unwrap();
        assert_eq!(share.export_secret().unwrap().as_str(), shares[2].export_secret().unwrap().as_str());
        for m in [
            RekeyMsg::RepairRecord { name: "c".into() },
            RekeyMsg::RepairStart { name: "c".into(), helpers: vec!["a".into(), "b".into()], group_key: "k".into() },
            RekeyMsg::RepairRound1 { name: "c".into() },
            RekeyMsg::RepairRound2 { name: "c".into() },
            RekeyMsg::RepairAbort { name: "c".into() },
            RekeyMsg::RefreshFinish { name: "c".into() },
        ] {
            let before = format!("{m:?}");
            assert_eq!(format!("{:?}", carry_msg(m)), before);
        }
        // The API's request bodies are strict.
        assert!(serde_json::from_str::<RefreshRequest>("{}").is_ok());
        assert!(serde_json::from_str::<RefreshRequest>(r#"{"force":true}"#).is_err());
        let r: RepairRequest = serde_json::from_str(r#"{"helpers":["a","b"],"group_key":"k"}"#).unwrap();
        assert_eq!(r.helpers, ["a", "b"]);
        assert!(serde_json::from_str::<RepairRequest>(r#"{"helpers":["a"],"group_key":"k","x":1}"#).is_err());
    }

    #[test]
    fn debug_output_redacts_secret_packages() {
        let (shares, group) = dkg();
        let mut rng = crate::testing::rng(103);
        let (s, m1) = concord_threshold::refresh_round1(&shares[0], &group, &mut rng).unwrap();
        let (_, m2) = concord_threshold::refresh_round1(&shares[1], &group, &mut rng).unwrap();
        let (_, m3) = concord_threshold::refresh_round1(&shares[2], &group, &mut rng).unwrap();
        let (_, out) = concord_threshold::refresh_round2(s, &[(2, m2), (3, m3)].into()).unwrap();
        let package = out[&2].clone();
        let secret_json = serde_json::to_string(&package).unwrap();
        let msg = PeerRequest::Rekey(RekeyMsg::RefreshRound2 { name: "c".into(), package });
        let shown = format!("{msg:?}");
        assert!(shown.contains("RefreshRound2(\"c\", [redacted])"), "{shown}");
        // No hex run of the secret package appears.
        for part in secret_json.split('"').filter(|p| p.len() >= 32) {
            assert!(!shown.contains(part), "{shown}");
        }
        let deltas = concord_threshold::repair_round1(&shares[0], &[1, 2], 3, &mut rng).unwrap();
        let delta = deltas[&2].clone();
        let hex = serde_json::to_string(&delta).unwrap();
        let shown = format!("{:?}", RekeyMsg::RepairDelta { name: "c".into(), lost: "c".into(), delta });
        assert!(shown.contains("[redacted]") && !shown.contains(hex.trim_matches('"')), "{shown}");
        let sigma = concord_threshold::repair_round2(&deltas).unwrap_or_else(|_| panic!());
        let hex = serde_json::to_string(&sigma).unwrap();
        let shown = format!("{:?}", PeerReply::Rekey(Box::new(RekeyReply::Sigma { sigma })));
        assert!(shown.contains("Sigma([redacted])") && !shown.contains(hex.trim_matches('"')), "{shown}");
        let shown = format!("{:?}", RekeyReply::Round1 { package: m1 });
        assert_eq!(shown, "Round1");
        assert_eq!(format!("{:?}", RekeyRounds::default()), "RekeyRounds([redacted])");
    }

    #[test]
    fn a_committed_share_replaces_the_stored_one_or_creates_the_record() {
        let (shares, group) = dkg();
        let store = crate::store::Store::open_in_memory().unwrap();
        let c = Consortium::new(vec!["a".into(), "b".into(), "c".into()], 2).unwrap();
        // A repaired node: no record yet.
        commit_share(&store, "r", &c, "a", &shares[2], &group).unwrap();
        let rec = cons::get(&store, "r").unwrap().unwrap();
        assert_eq!((rec.state.as_str(), rec.coordinator.as_str()), ("active", "a"));
        assert_eq!(rec.group_key, Some(group.public_key().to_string()));
        let (share, g) = cons::load_key(&store, "r").unwrap();
        assert_eq!((share.index(), g), (3, group.clone()));
        // A refreshed node: the share is replaced.
        commit_share(&store, "r", &c, "b", &shares[1], &group).unwrap();
        assert_eq!(cons::load_key(&store, "r").unwrap().0.index(), 2);
        assert_eq!(cons::get(&store, "r").unwrap().unwrap().coordinator, "a");
    }
}
