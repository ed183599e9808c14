//! The running node: peer control channel, failure detector, discovery of
//! moved peers, and sessions (coordinator and participant sides).
//!
//! Every node listens on one peer port ([`concord_net::peer::PeerPort`]):
//! mutually authenticated TLS 1.3 connections from paired, non-revoked peers
//! only, routed either to a session's MPC mesh or to the control channel,
//! which carries one JSON [`PeerRequest`] and one [`PeerReply`] per
//! connection.
//!
//! # Sessions
//!
//! The node that receives a query (the coordinator) checks that every named
//! party is itself or a paired peer, asks each for the schema of the named
//! dataset and refuses a mismatch, chooses the whole computation
//! ([`SessionSpec::plan`]) and sends every participant the [`SessionPlan`]
//! (`propose`). Each participant verifies it for itself (it is named once,
//! every other party is a peer it paired with under the same fingerprint,
//! its dataset exists, is valid and has exactly the plan's schema, and the
//! plan re-derives), stores it as `pending`, and accepts. When all accepted,
//! the coordinator sends `start`; the participants connect to each other
//! through their peer ports, run the computation on a thread of their own
//! (never on the node's async workers), seal their result share to the
//! analyst's key ([`concord_session::seal`]) and send it to the coordinator,
//! which stores the envelopes for the analyst. States are stored durably on
//! every node: pending, running, done, failed (with the reason), cancelled.
//!
//! A party that crashes breaks its TLS connections: the others' transports
//! fail naming it, they record and report the failure, and the coordinator
//! tells everyone the reason; the failure detector (heartbeats) catches a
//! silent party as well. A restarted node marks the sessions it was running
//! as failed. Continuing despite a lost party is not attempted.
//!
//! # Failure detector and discovery
//!
//! Every `heartbeat_period` the node pings each peer. A peer that answered
//! within `heartbeat_timeout` is `up`; one that missed a ping but answered
//! within the timeout is `suspected`; beyond it, `down`, and pings back off
//! exponentially (up to 16 periods) until it answers again. At start-up, a
//! node announces its address to its peers in a message signed with its
//! Ed25519 key; a peer stores the new address only if the signature verifies
//! with the pinned key and the announcement is newer than the last one.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use concord_net::peer::{control_accept, control_call, PeerPort};
use concord_net::tls::{FingerprintPredicate, TlsConfig, TlsPeer, TlsTransport};
use concord_session::seal::{seal, Envelope};
use concord_session::{Privacy, SessionOptions, SessionSpec};
use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use rand_core::{OsRng, TryRngCore};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::access::{load_policy, now_ms, request_options, StoreRegistry, StoreReplay};
use crate::config::{AccessConfig, PrivacyConfig};
use crate::identity::NodeIdentity;
use crate::store::{DatasetStatus, PeerRecord, SessionRecord, SessionState, Store};
use crate::{hex, unhex, unix_now, NodeError};
use concord_access::{Allowed, Decision, Policy, SignedRequest, Usage, VerifiedRequest};

/// How long a session proposed to this node may stay pending before it fails.
pub const PENDING_LIMIT_SECS: i64 = 120;

/// One party of a session plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanParty {
    /// The node's name.
    pub name: String,
    /// Its peer address (`host:port`).
    pub address: String,
    /// Its TLS fingerprint, hex.
    pub tls_fingerprint: String,
}

/// Everything every participant of a session is told before it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionPlan {
    /// Session id: 16 random bytes, hex.
    pub id: String,
    /// The coordinating node.
    pub coordinator: String,
    /// The dataset every party computes on.
    pub dataset: String,
    /// The parties, in party order.
    pub parties: Vec<PlanParty>,
    /// The computation.
    pub spec: SessionSpec,
    /// The analyst's X25519 public key, hex: only the analyst can open the result shares.
    pub analyst_key: String,
    /// The analyst's name: privacy budgets are kept per analyst and dataset.
    #[serde(default = "anonymous")]
    pub analyst: String,
    /// The options the coordinator planned with (after its policy's tightening);
    /// every participant re-plans from them and must find the same computation.
    #[serde(default)]
    pub options: SessionOptions,
    /// The analyst's signed request, if it came with one (required by nodes with a policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<SignedRequest>,
    /// When the coordinator created it, Unix seconds.
    pub created_at: i64,
    /// The consortium that signs the result, if any ([`crate::consortium`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consortium: Option<String>,
    /// The consortium whose members must approve the request, `k` of them
    /// with one threshold signature, before it runs ([`crate::approval`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_consortium: Option<String>,
}

/// Progress phase of a node whose operator has not approved the session yet.
pub const AWAITING_APPROVAL: &str = "awaiting approval";
/// Progress phase once the node's operator approved.
pub const APPROVED: &str = "approved";

/// A participant's answer to a proposed session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Acceptance {
    /// Accepted; it may start.
    Accepted,
    /// Accepted; it waits for this node's operator, as this node's policy requires.
    AwaitingOwn,
    /// Accepted; this node's operator is asked as one of the `k` of `n` approving data owners.
    AwaitingThreshold,
}

fn unsigned(me: &str) -> ServiceError {
    err(
        "unsigned_request",
        format!(
            "node {me:?} requires queries signed by an analyst registered there (concord query --key KEY --analyst NAME)"
        ),
    )
}

/// The analyst name of requests that give none (one shared budget).
pub const ANONYMOUS: &str = "anonymous";

fn anonymous() -> String {
    ANONYMOUS.to_owned()
}

impl SessionPlan {
    /// Index of party `name`, if it is one.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.parties.iter().position(|p| p.name == name)
    }

    /// One line for logs.
    pub fn summary(&self) -> String {
        let names: Vec<&str> = self.parties.iter().map(|p| p.name.as_str()).collect();
        format!("{} on dataset {:?} with {}", self.spec.sql, self.dataset, names.join(", "))
    }
}

/// A node's signed announcement of its peer address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announcement {
    /// The announcing node.
    pub name: String,
    /// Its peer address now.
    pub address: String,
    /// When, Unix milliseconds (announcements not newer than the last are ignored).
    pub at: i64,
    /// Ed25519 signature over [`Announcement::message`], hex.
    pub signature: String,
}

impl Announcement {
    fn message(name: &str, address: &str, at: i64) -> Vec<u8> {
        format!("concord-announce/v1\n{name}\n{address}\n{at}").into_bytes()
    }

    /// Sign an announcement.
    pub fn sign(identity: &NodeIdentity, address: &str, at: i64) -> Announcement {
        let sig = identity.signing_key().sign(&Announcement::message(identity.name(), address, at));
        Announcement {
            name: identity.name().to_owned(),
            address: address.to_owned(),
            at,
            signature: hex(&sig.to_bytes()),
        }
    }

    /// Verify it with the pinned Ed25519 key (hex).
    pub fn verify(&self, ed25519_public: &str) -> bool {
        let Some(key) = unhex(ed25519_public).and_then(|k| <[u8; 32]>::try_from(k).ok()) else { return false };
        let Ok(key) = VerifyingKey::from_bytes(&key) else { return false };
        let Some(sig) = unhex(&self.signature).and_then(|s| <[u8; 64]>::try_from(s).ok()) else { return false };
        key.verify(&Announcement::message(&self.name, &self.address, self.at), &Signature::from_bytes(&sig)).is_ok()
    }
}

/// A control message from one node to another.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PeerRequest {
    /// Heartbeat.
    Ping {
        /// Sender's clock, Unix seconds.
        at: i64,
        /// The sender's latest signed audit head checkpoint (canonical JSON), for
        /// the receiver to keep as a witness ([`crate::witness`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<String>,
    },
    /// The sender's (possibly new) address, signed.
    Announce(Announcement),
    /// The schema of one of the receiver's datasets.
    Schema {
        /// The dataset's name.
        dataset: String,
    },
    /// Take part in a session (from its coordinator).
    Propose {
        /// The plan.
        plan: Box<SessionPlan>,
    },
    /// Start an accepted session (from its coordinator).
    Start {
        /// Session id.
        session: String,
    },
    /// Cancel or fail a session (from its coordinator).
    Cancel {
        /// Session id.
        session: String,
        /// Why.
        reason: String,
        /// Whether it failed (else it was cancelled).
        failed: bool,
    },
    /// A participant's progress (to the coordinator).
    Progress {
        /// Session id.
        session: String,
        /// Phase reached.
        phase: String,
    },
    /// A participant's sealed result (to the coordinator).
    Finished {
        /// Session id.
        session: String,
        /// The result share, sealed to the analyst.
        envelope: Envelope,
        /// Rounds and bytes sent, public.
        rounds: u64,
        /// Bytes sent by the participant.
        bytes_sent: u64,
    },
    /// A participant failed (to the coordinator).
    Failed {
        /// Session id.
        session: String,
        /// Why.
        reason: String,
    },
    /// The participant's operator approved the session (to the coordinator).
    Approved {
        /// Session id.
        session: String,
    },
    /// The participant's operator vetoed the session (to the coordinator, which ends it everywhere).
    Vetoed {
        /// Session id.
        session: String,
        /// The operator's reason.
        reason: String,
    },
    /// Consortium key generation and result signing ([`crate::consortium`]).
    Consortium(crate::consortium::ConsortiumMsg),
    /// Threshold unlock: key generation, unlock requests and answers ([`crate::unlock`]).
    Unlock(crate::unlock::UnlockMsg),
    /// Consortium key refresh and repair ([`crate::rekey`]).
    Rekey(crate::rekey::RekeyMsg),
}

/// The answer to a [`PeerRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PeerReply {
    /// Done.
    Ok,
    /// Accepted, but the session waits for this node's operator's approval.
    AwaitingApproval,
    /// Accepted; this node is one of the data owners of the session's
    /// threshold approval: its operator's approval counts towards the `k`.
    AwaitingThresholdApproval,
    /// Heartbeat answer.
    Pong {
        /// Receiver's clock.
        at: i64,
    },
    /// A dataset's schema.
    Schema {
        /// Its schema, TOML.
        schema_toml: String,
    },
    /// Refused, with a stable code and a message.
    Error {
        /// Stable code.
        code: String,
        /// What was wrong.
        message: String,
    },
    /// An answer to a consortium message ([`crate::consortium`]).
    Consortium(Box<crate::consortium::ConsortiumReply>),
    /// An answer to an unlock message ([`crate::unlock`]).
    Unlock(Box<crate::unlock::UnlockReply>),
    /// An answer to a refresh or repair message ([`crate::rekey`]).
    Rekey(Box<crate::rekey::RekeyReply>),
}

/// A refusal or failure of the service, with a stable code for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// Stable code (`unknown_peer`, `schema_mismatch`, ...).
    pub code: &'static str,
    /// What was wrong, naming the party or input.
    pub message: String,
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

fn err(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError { code, message: message.into() }
}

impl From<NodeError> for ServiceError {
    fn from(e: NodeError) -> ServiceError {
        let code = match &e {
            NodeError::UnknownDataset(_) => "unknown_dataset",
            NodeError::UnknownSession(_) => "unknown_session",
            NodeError::UnknownPeer(_) => "unknown_peer",
            _ => "internal",
        };
        err(code, e.to_string())
    }
}

/// What an analyst submits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The query.
    pub sql: String,
    /// The parties, by node name, in party order.
    pub parties: Vec<String>,
    /// The dataset (default: the query's FROM table).
    #[serde(default)]
    pub dataset: Option<String>,
    /// Options of the computation.
    #[serde(default)]
    pub options: SessionOptions,
    /// The analyst's X25519 public key for this session, hex.
    pub analyst_key: String,
    /// The analyst's name (default `anonymous`); privacy budgets are kept per analyst.
    #[serde(default)]
    pub analyst: Option<String>,
    /// The analyst's signed request (required by nodes with a policy file):
    /// it must cover exactly the query, dataset, parties, options and key above.
    #[serde(default)]
    pub request: Option<SignedRequest>,
    /// A consortium whose members sign the result ([`crate::consortium`]).
    #[serde(default)]
    pub consortium: Option<String>,
}

/// A peer's health as the failure detector sees it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Health {
    /// `up`, `suspected`, `down` or `unknown` (not pinged yet).
    pub state: String,
    /// Last answer, Unix seconds.
    pub last_seen: Option<i64>,
    /// Heartbeats missed in a row.
    pub missed: u64,
    /// Heartbeats missed in total.
    pub missed_total: u64,
    #[serde(skip)]
    next_ping: Option<Instant>,
}

/// Timeouts and periods of the service.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Between heartbeats.
    pub heartbeat_period: Duration,
    /// Silence after which a peer is down.
    pub heartbeat_timeout: Duration,
    /// One control call.
    pub rpc_timeout: Duration,
    /// Connecting a session's mesh.
    pub connect_timeout: Duration,
    /// Waiting for one protocol message.
    pub recv_timeout: Duration,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Protocol bytes sent in sessions (all peers).
    pub mpc_bytes_sent: AtomicU64,
    /// Control bytes sent, per peer.
    pub control_bytes_sent: Mutex<BTreeMap<String, u64>>,
    /// Protocol payload bytes sent in sessions, per peer.
    pub mpc_bytes_sent_to: Mutex<BTreeMap<String, u64>>,
    /// Sum of per-round latencies (session compute seconds / rounds), microseconds.
    pub round_latency_us_sum: AtomicU64,
    /// Sessions counted in `round_latency_us_sum`.
    pub round_latency_count: AtomicU64,
}

struct Shared {
    identity: NodeIdentity,
    advertise: String,
    store: Arc<Mutex<Store>>,
    port: PeerPort,
    timing: Timing,
    health: Mutex<BTreeMap<String, Health>>,
    cancels: Mutex<HashMap<String, watch::Sender<Option<String>>>>,
    metrics: Metrics,
    slow_ms: u64,
    privacy: PrivacyConfig,
    access: AccessConfig,
    consortium_rounds: crate::consortium::Rounds,
    rekey_rounds: crate::rekey::RekeyRounds,
}

/// The running node's service. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("name", &self.shared.identity.name()).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn fingerprint_of(hex_fp: &str) -> Option<[u8; 32]> {
    unhex(hex_fp).and_then(|v| v.try_into().ok())
}

/// The table after FROM in `sql` (the default dataset name).
pub fn from_table(sql: &str) -> Option<String> {
    let mut words = sql.split_whitespace();
    while let Some(w) = words.next() {
        if w.eq_ignore_ascii_case("from") {
            return words.next().map(|t| t.trim_end_matches([';', ',', ')']).to_owned());
        }
    }
    None
}

/// The first line where two schema texts differ.
fn first_difference(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    for i in 0..la.len().max(lb.len()) {
        let (x, y) = (la.get(i).copied().unwrap_or("<end>"), lb.get(i).copied().unwrap_or("<end>"));
        if x.trim() != y.trim() {
            return format!("line {}: {:?} vs {:?}", i + 1, x.trim(), y.trim());
        }
    }
    "whitespace only".to_owned()
}

/// Replace `party i` in a transport error by `party i (name)`.
fn name_parties(reason: &str, plan: &SessionPlan) -> String {
    let mut out = reason.to_owned();
    for (i, p) in plan.parties.iter().enumerate() {
        out = out.replace(&format!("party {i} "), &format!("party {i} ({}) ", p.name));
    }
    out
}

impl Service {
    /// A service for `identity` over `store`, with its peer port already
    /// started. `advertise` is the peer address announced to peers.
    pub fn new(
        identity: NodeIdentity,
        advertise: String,
        store: Arc<Mutex<Store>>,
        port: PeerPort,
        timing: Timing,
        privacy: PrivacyConfig,
        access: AccessConfig,
    ) -> Service {
        // Test hook: hold every session this node takes part in for that long
        // once connected (so tests can kill or stop a node mid-session).
        let slow_ms = std::env::var("CONCORD_TEST_SESSION_DELAY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        if slow_ms > 0 {
            tracing::warn!(slow_ms, "CONCORD_TEST_SESSION_DELAY_MS is set: every session is held up (a test hook)");
        }
        Service {
            shared: Arc::new(Shared {
                identity,
                advertise,
                store,
                port,
                timing,
                health: Mutex::new(BTreeMap::new()),
                cancels: Mutex::new(HashMap::new()),
                metrics: Metrics::default(),
                slow_ms,
                privacy,
                access,
                consortium_rounds: Default::default(),
                rekey_rounds: Default::default(),
            }),
        }
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        self.shared.identity.name()
    }

    /// This node's privacy rules (`[privacy]` of its configuration).
    pub fn privacy(&self) -> &PrivacyConfig {
        &self.shared.privacy
    }

    /// The counters for `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.shared.store)
    }

    pub(crate) fn consortium_rounds(&self) -> &crate::consortium::Rounds {
        &self.shared.consortium_rounds
    }

    pub(crate) fn rekey_rounds(&self) -> &crate::rekey::RekeyRounds {
        &self.shared.rekey_rounds
    }

    /// Every peer's health (paired, non-revoked peers; `unknown` before the first ping).
    pub fn health(&self) -> BTreeMap<String, Health> {
        lock(&self.shared.health).clone()
    }

    /// Start the background tasks (control server, heartbeats, announcement)
    /// on the current runtime; they stop when `shutdown` turns true.
    pub fn spawn(&self, shutdown: watch::Receiver<bool>) {
        if let Some(rx) = self.shared.port.take_control() {
            tokio::spawn(self.clone().control_server(rx, shutdown.clone()));
        }
        tokio::spawn(self.clone().heartbeats(shutdown.clone()));
        tokio::spawn(self.clone().announce());
    }

    fn active_peer(&self, name: &str) -> Result<PeerRecord, ServiceError> {
        let peers = self.store().list_peers()?;
        let p = peers
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| err("unknown_peer", format!("{name:?} is not a paired peer of node {:?}", self.name())))?;
        if let Some(at) = p.revoked_at {
            return Err(err("revoked_peer", format!("the pairing with {name:?} was revoked at {at} (Unix seconds)")));
        }
        Ok(p)
    }

    fn add_control_bytes(&self, peer: &str, n: usize) {
        *lock(&self.shared.metrics.control_bytes_sent).entry(peer.to_owned()).or_insert(0) += n as u64;
    }

    /// Send `req` to peer `name` and return its reply (a refusal becomes an error naming the peer).
    pub async fn call(&self, name: &str, req: &PeerRequest) -> Result<PeerReply, ServiceError> {
        let peer = self.active_peer(name)?;
        let fp = fingerprint_of(&peer.tls_fingerprint)
            .ok_or_else(|| err("internal", format!("stored fingerprint of {name:?} is corrupt")))?;
        let body = serde_json::to_vec(req).map_err(|e| err("internal", e.to_string()))?;
        self.add_control_bytes(name, body.len());
        let reply = control_call(self.shared.identity.tls(), &peer.address, fp, &body, self.shared.timing.rpc_timeout)
            .await
            .map_err(|e| err("peer_unreachable", format!("peer {name:?} at {} did not answer: {e}", peer.address)))?;
        let reply: PeerReply = serde_json::from_slice(&reply)
            .map_err(|e| err("bad_peer_reply", format!("peer {name:?} sent an unreadable reply: {e}")))?;
        if let PeerReply::Error { code, message } = &reply {
            return Err(ServiceError {
                code: "peer_refused",
                message: format!("peer {name:?} refused ({code}): {message}"),
            });
        }
        Ok(reply)
    }

    async fn control_server(
        self,
        mut rx: tokio::sync::mpsc::Receiver<tokio::net::TcpStream>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let stream = tokio::select! {
                s = rx.recv() => match s { Some(s) => s, None => return },
                _ = stop.changed() => return,
            };
            let me = self.clone();
            tokio::spawn(async move {
                let store = me.shared.store.clone();
                let allowed: FingerprintPredicate = Arc::new(move |fp: &[u8; 32]| {
                    let hexfp = hex(fp);
                    lock(&store)
                        .list_peers()
                        .map(|ps| ps.iter().any(|p| p.tls_fingerprint == hexfp && p.revoked_at.is_none()))
                        .unwrap_or(false)
                });
                let req = match control_accept(stream, me.shared.identity.tls(), allowed, me.shared.timing.rpc_timeout)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "refused a peer connection");
                        return;
                    }
                };
                let fp = hex(&req.peer_fingerprint);
                let from = me.store().list_peers().ok().and_then(|ps| ps.into_iter().find(|p| p.tls_fingerprint == fp));
                let reply = match (from, serde_json::from_slice::<PeerRequest>(&req.request)) {
                    (None, _) => PeerReply::Error { code: "unknown_peer".into(), message: "not paired".into() },
                    (Some(_), Err(e)) => PeerReply::Error { code: "bad_request".into(), message: e.to_string() },
                    (Some(peer), Ok(r)) => me.handle(&peer.name, r).await,
                };
                let bytes = serde_json::to_vec(&reply).unwrap_or_default();
                if let Err(e) = req.reply(&bytes).await {
                    tracing::debug!(error = %e, "could not send a control reply");
                }
            });
        }
    }

    async fn handle(&self, from: &str, req: PeerRequest) -> PeerReply {
        let result = match req {
            PeerRequest::Ping { checkpoint, .. } => {
                self.saw(from);
                if let Some(line) = checkpoint {
                    self.on_checkpoint(from, &line);
                }
                return PeerReply::Pong { at: unix_now() };
            }
            PeerRequest::Announce(a) => self.on_announce(from, &a),
            PeerRequest::Schema { dataset } => match self.store().get_dataset(&dataset) {
                Ok(d) => match d.status {
                    DatasetStatus::Valid => return PeerReply::Schema { schema_toml: d.schema_toml },
                    DatasetStatus::Invalid(reason) => Err(err(
                        "invalid_dataset",
                        format!("dataset {dataset:?} on node {:?} is invalid: {reason}", self.name()),
                    )),
                },
                Err(NodeError::UnknownDataset(_)) => {
                    Err(err("unknown_dataset", format!("node {:?} has no dataset named {dataset:?}", self.name())))
                }
                Err(e) => Err(e.into()),
            },
            PeerRequest::Propose { plan } => {
                match self
                    .on_propose(from, &plan)
                    .inspect_err(|e| crate::audit::session_refused(&mut self.store(), from, &plan, e))
                {
                    Ok(Acceptance::AwaitingOwn) => return PeerReply::AwaitingApproval,
                    Ok(Acceptance::AwaitingThreshold) => return PeerReply::AwaitingThresholdApproval,
                    Ok(Acceptance::Accepted) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            PeerRequest::Approved { session } => self.on_approved(from, &session),
            PeerRequest::Vetoed { session, reason } => self.on_vetoed(from, &session, &reason).await,
            PeerRequest::Start { session } => self.on_start(from, &session),
            PeerRequest::Cancel { session, reason, failed } => self.on_cancel(from, &session, &reason, failed),
            PeerRequest::Progress { session, phase } => self.on_progress(from, &session, &phase),
            PeerRequest::Finished { session, envelope, rounds, bytes_sent } => {
                self.on_finished(from, &session, &envelope, rounds, bytes_sent).await
            }
            PeerRequest::Failed { session, reason } => self.on_failed(from, &session, &reason).await,
            PeerRequest::Consortium(msg) => return self.on_consortium(from, msg).await,
            PeerRequest::Rekey(msg) => return self.on_rekey(from, msg).await,
            PeerRequest::Unlock(msg) => return self.on_unlock(from, msg).await,
        };
        match result {
            Ok(()) => PeerReply::Ok,
            Err(e) => PeerReply::Error { code: e.code.to_owned(), message: e.message },
        }
    }

    fn on_announce(&self, from: &str, a: &Announcement) -> Result<(), ServiceError> {
        let peer = self.active_peer(from)?;
        if a.name != from || !a.verify(&peer.ed25519_public) {
            tracing::warn!(peer = from, "announcement with a bad signature or name refused");
            return Err(err("bad_signature", "the announcement's signature does not verify with the pinned key"));
        }
        if self.store().update_peer_address(from, &a.address, a.at)? {
            tracing::info!(peer = from, address = %a.address, "peer moved");
        }
        self.saw(from);
        Ok(())
    }

    fn saw(&self, peer: &str) {
        let mut health = lock(&self.shared.health);
        let h = health.entry(peer.to_owned()).or_default();
        if h.state == "down" {
            let _ = self.store().record_event("peer.up", &format!("peer {peer:?} is up again"));
        }
        h.state = "up".into();
        h.last_seen = Some(unix_now());
        h.missed = 0;
        h.next_ping = None;
    }

    async fn announce(self) {
        let a = Announcement::sign(&self.shared.identity, &self.shared.advertise, crate::unix_now_ms());
        let peers = self.store().list_peers().unwrap_or_default();
        for p in peers.into_iter().filter(|p| p.revoked_at.is_none()) {
            match self.call(&p.name, &PeerRequest::Announce(a.clone())).await {
                Ok(_) => tracing::info!(peer = %p.name, "announced our address"),
                Err(e) => {
                    tracing::info!(peer = %p.name, error = %e, "could not announce our address (will retry on heartbeat)")
                }
            }
        }
    }

    async fn heartbeats(self, mut stop: watch::Receiver<bool>) {
        let period = self.shared.timing.heartbeat_period;
        loop {
            let peers = self.store().list_peers().unwrap_or_default();
            let now = Instant::now();
            let checkpoint = self.own_checkpoint();
            let mut calls = Vec::new();
            for p in peers.iter().filter(|p| p.revoked_at.is_none()) {
                let due = lock(&self.shared.health).get(&p.name).and_then(|h| h.next_ping).is_none_or(|t| t <= now);
                if due {
                    let me = self.clone();
                    let name = p.name.clone();
                    let checkpoint = checkpoint.clone();
                    calls.push(tokio::spawn(async move {
                        let ok = me.call(&name, &PeerRequest::Ping { at: unix_now(), checkpoint }).await.is_ok();
                        (name, ok)
                    }));
                }
            }
            for c in calls {
                let Ok((name, ok)) = c.await else { continue };
                if ok {
                    let was_down = lock(&self.shared.health).get(&name).is_some_and(|h| h.state == "down");
                    self.saw(&name);
                    if was_down {
                        tokio::spawn(self.clone().announce());
                    }
                } else {
                    self.missed(&name);
                }
            }
            self.expire_stale_sessions(unix_now());
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// A session proposed to us that its coordinator never started (it
    /// crashed, or lost us) would stay pending forever: fail it after
    /// [`PENDING_LIMIT_SECS`].
    fn expire_stale_sessions(&self, now: i64) {
        // The list first: the store's lock must be released before `phase_of` takes it again.
        let sessions = self.store().list_sessions(200).unwrap_or_default();
        let stale: Vec<String> = sessions
            .into_iter()
            .filter(|s| s.state == SessionState::Pending && s.coordinator != self.name())
            .filter(|s| {
                // A session waiting for (or just given) this operator's approval has longer.
                let waiting =
                    matches!(self.phase_of(&s.id, self.name()).as_deref(), Some(AWAITING_APPROVAL | APPROVED));
                let limit = if waiting {
                    i64::try_from(self.shared.access.approval_timeout_secs).unwrap_or(i64::MAX).saturating_add(60)
                } else {
                    PENDING_LIMIT_SECS
                };
                now - s.created_at > limit
            })
            .map(|s| s.id)
            .collect();
        for id in stale {
            let reason = "the coordinator did not start the session in time".to_owned();
            if let Ok(true) = self.store().set_session_state(&id, SessionState::Failed, Some(&reason)) {
                tracing::warn!(session = %id, "{reason}");
            }
        }
    }

    fn missed(&self, peer: &str) {
        let period = self.shared.timing.heartbeat_period;
        let timeout = self.shared.timing.heartbeat_timeout.as_secs() as i64;
        let became_down = {
            let mut health = lock(&self.shared.health);
            let h = health.entry(peer.to_owned()).or_default();
            h.missed += 1;
            h.missed_total += 1;
            let silent_for = h.last_seen.map_or(i64::MAX, |t| unix_now() - t);
            let was_down = h.state == "down";
            if silent_for >= timeout || (h.last_seen.is_none() && h.missed >= 2) {
                h.state = "down".into();
                let backoff = period * 2u32.saturating_pow(u32::try_from(h.missed.min(4)).unwrap_or(4));
                h.next_ping = Some(Instant::now() + backoff);
            } else {
                h.state = "suspected".into();
            }
            !was_down && h.state == "down"
        };
        if became_down {
            tracing::warn!(peer, "peer is down");
            let _ = self.store().record_event("peer.down", &format!("peer {peer:?} stopped answering heartbeats"));
            let me = self.clone();
            let peer = peer.to_owned();
            tokio::spawn(async move { me.fail_sessions_with(&peer).await });
        }
    }

    /// The coordinator side: fail every active session that involves `peer`.
    async fn fail_sessions_with(&self, peer: &str) {
        let sessions = self.store().list_sessions(200).unwrap_or_default();
        for s in sessions.into_iter().filter(|s| !s.state.is_terminal() && s.coordinator == self.name()) {
            let Ok(plan) = serde_json::from_str::<SessionPlan>(&s.plan) else { continue };
            if plan.index_of(peer).is_some() {
                let reason = format!("party {peer:?} is down (no heartbeat answer)");
                self.finish(&plan, SessionState::Failed, &reason).await;
            }
        }
    }

    /// Graceful shutdown: end every session still active here, telling the
    /// other parties why (a participant reports to its coordinator, a
    /// coordinator tells every participant).
    pub async fn shutdown(&self) {
        let sessions = self.store().list_sessions(1000).unwrap_or_default();
        let reason = format!("node {:?} shut down during the session", self.name());
        for s in sessions.into_iter().filter(|s| !s.state.is_terminal()) {
            let Ok(plan) = parse_plan(&s) else { continue };
            if plan.coordinator == self.name() {
                self.finish(&plan, SessionState::Failed, &reason).await;
            } else {
                self.party_failed(&plan, &reason).await;
            }
        }
    }

    // ---------------------------------------------------------------------
    // Coordinator.

    /// Check and create a session for an analyst's request; the rest runs in the background.
    pub async fn submit(&self, req: SubmitRequest) -> Result<SessionPlan, ServiceError> {
        let me = self.name().to_owned();
        let analyst = req.analyst.clone().unwrap_or_else(anonymous);
        crate::config::check_name(&analyst)
            .map_err(|e| err("bad_request", format!("analyst name {analyst:?}: {e}")))?;
        let analyst_key = unhex(&req.analyst_key)
            .filter(|k| k.len() == 32)
            .ok_or_else(|| err("bad_request", "analyst_key must be 32 bytes of hex (an X25519 public key)"))?;
        if req.parties.len() < 2 {
            return Err(err("bad_request", format!("a session needs at least two parties, got {}", req.parties.len())));
        }
        for (i, p) in req.parties.iter().enumerate() {
            if req.parties[..i].contains(p) {
                return Err(err("bad_request", format!("party {p:?} is named twice")));
            }
        }
        self.check_session_consortium(req.consortium.as_deref(), &req.parties)?;
        let dataset = match req.dataset.clone().or_else(|| from_table(&req.sql)) {
            Some(d) => d,
            None => return Err(err("bad_request", "the query names no table after FROM and no dataset was given")),
        };
        let mut parties = Vec::with_capacity(req.parties.len());
        for name in &req.parties {
            if *name == me {
                parties.push(PlanParty {
                    name: me.clone(),
                    address: self.shared.advertise.clone(),
                    tls_fingerprint: hex(&self.shared.identity.tls().fingerprint()),
                });
            } else {
                let p = self.active_peer(name)?;
                if lock(&self.shared.health).get(name).is_some_and(|h| h.state == "down") {
                    return Err(err("peer_down", format!("party {name:?} is down (it stopped answering heartbeats)")));
                }
                parties.push(PlanParty { name: p.name, address: p.address, tls_fingerprint: p.tls_fingerprint });
            }
        }
        // Every party's schema for the dataset, compared with the first.
        let mut schemas = Vec::with_capacity(parties.len());
        for p in &parties {
            let schema = if p.name == me {
                let d = self.store().get_dataset(&dataset).map_err(|_| {
                    err("unknown_dataset", format!("node {me:?} (this node) has no dataset named {dataset:?}"))
                })?;
                if let DatasetStatus::Invalid(reason) = d.status {
                    return Err(err(
                        "invalid_dataset",
                        format!("dataset {dataset:?} on node {me:?} is invalid: {reason}"),
                    ));
                }
                d.schema_toml
            } else {
                match self.call(&p.name, &PeerRequest::Schema { dataset: dataset.clone() }).await {
                    Ok(PeerReply::Schema { schema_toml }) => schema_toml,
                    Ok(other) => return Err(err("bad_peer_reply", format!("peer {:?} answered {other:?}", p.name))),
                    Err(e) if e.message.contains("(unknown_dataset)") => {
                        return Err(err(
                            "unknown_dataset",
                            format!("node {:?} has no dataset named {dataset:?}", p.name),
                        ))
                    }
                    Err(e) => return Err(e),
                }
            };
            schemas.push(schema);
        }
        let first = schemas.first().cloned().unwrap_or_default();
        for (p, s) in parties.iter().zip(&schemas).skip(1) {
            if s.trim() != first.trim() {
                let a = parties.first().map_or("?", |p| p.name.as_str());
                let b = &p.name;
                return Err(err(
                    "schema_mismatch",
                    format!(
                        "dataset {dataset:?} has a different schema on {b:?} than on {a:?} ({})",
                        first_difference(&first, s)
                    ),
                ));
            }
        }
        let mut options = req.options.clone();
        let asked = concord_session::privacy::resolve(&req.sql, options.privacy)
            .map_err(|e| err("invalid_query", e.to_string()))?;
        if let (None, Some(e)) = (asked, self.shared.privacy.default_epsilon) {
            options.privacy = Some(Privacy::Epsilon(e));
        }
        // With a policy: the signed request is checked here first, and the
        // policy may tighten the options (minimum group size, default epsilon).
        let mut checked = None;
        if let Some(policy) = self.policy().map_err(|e| self.refused(e))? {
            let signed = req.request.as_ref().ok_or_else(|| self.refused(unsigned(&me)))?;
            let verified = self.verify_request(signed).map_err(|e| self.refused(e))?;
            let allowed = self.decide(&policy, &verified, &first, &req.sql)?;
            let private = asked.is_some() || options.privacy.is_some();
            if !private && allowed.epsilon_from_policy {
                if let Some(e) = allowed.epsilon {
                    options.privacy = Some(Privacy::Epsilon(e.get()));
                }
            }
            if options.privacy.is_none() && asked.is_none() {
                let schema_min = concord_query::Schema::from_toml(&first).ok().and_then(|s| s.min_group_size);
                if options.min_group_size.or(schema_min).unwrap_or(0) < allowed.min_group_size {
                    options.min_group_size = Some(allowed.min_group_size);
                }
            }
            checked = Some((verified, allowed));
        }
        let spec = SessionSpec::plan(&first, &req.sql, parties.len(), &options)
            .map_err(|e| err("invalid_query", e.to_string()))?;
        let approval_consortium = match &checked {
            Some((_, Allowed { rule, approvals_required: Some(a), .. })) => {
                Some(self.approval_consortium_for(rule, a, &req.parties).map_err(|e| self.refused(e))?)
            }
            _ => None,
        };
        let mut id = [0u8; 16];
        OsRng.try_fill_bytes(&mut id).map_err(|e| err("internal", format!("operating system RNG failed: {e}")))?;
        let plan = SessionPlan {
            id: hex(&id),
            coordinator: me.clone(),
            dataset,
            parties,
            spec,
            analyst_key: hex(&analyst_key),
            analyst,
            options,
            request: req.request.clone(),
            created_at: unix_now(),
            consortium: req.consortium.clone(),
            approval_consortium,
        };
        let mut needs_approval = false;
        if let Some((verified, allowed)) = &checked {
            self.check_request_covers(&plan, verified, allowed).map_err(|e| self.refused(e))?;
            needs_approval = allowed.needs_operator_approval;
        }
        let approver =
            self.approvers(&plan).map_err(|e| self.refused(e))?.is_some_and(|(members, _)| members.contains(&me));
        // This node's own privacy checks, as every participant does them.
        self.check_privacy(&plan)?;
        let plan_json = serde_json::to_string(&plan).map_err(|e| err("internal", e.to_string()))?;
        let created = self.store().create_session(&plan.id, &me, &plan_json, &plan.summary());
        if let Err(e) = created {
            let _ = self.store().refund_budget(&plan.id);
            return Err(e.into());
        }
        tracing::info!(session = %plan.id, "session created: {}", plan.summary());
        if needs_approval || approver {
            let _ = self.store().set_progress(&plan.id, &me, AWAITING_APPROVAL);
        }
        tokio::spawn(self.clone().coordinate(plan.clone(), needs_approval));
        Ok(plan)
    }

    /// `own_approval`: this node's policy requires its operator's approval.
    async fn coordinate(self, plan: SessionPlan, own_approval: bool) {
        let me = self.name().to_owned();
        // Step 1: every participant verifies and accepts the plan.
        let mut proposals = Vec::new();
        for p in plan.parties.iter().filter(|p| p.name != me) {
            let (svc, name, plan) = (self.clone(), p.name.clone(), plan.clone());
            proposals.push(tokio::spawn(async move {
                let r = svc.call(&name, &PeerRequest::Propose { plan: Box::new(plan) }).await;
                (name, r)
            }));
        }
        let awaiting_here = self.phase_of(&plan.id, &me).as_deref() == Some(AWAITING_APPROVAL);
        if plan.index_of(&me).is_some() && !awaiting_here {
            let _ = self.store().set_progress(&plan.id, &me, "accepted");
        }
        // Nodes whose own policy requires their operator's approval.
        let mut awaiting: Vec<String> = Vec::new();
        if awaiting_here && own_approval {
            awaiting.push(me.clone());
        }
        for p in proposals {
            match p.await {
                Ok((name, Ok(PeerReply::AwaitingApproval))) => {
                    let _ = self.store().set_progress(&plan.id, &name, AWAITING_APPROVAL);
                    awaiting.push(name);
                }
                Ok((name, Ok(PeerReply::AwaitingThresholdApproval))) => {
                    let _ = self.store().set_progress(&plan.id, &name, AWAITING_APPROVAL);
                }
                Ok((_, Ok(_))) => {}
                Ok((name, Err(e))) => {
                    let reason = format!("party {name:?} did not accept the session: {}", e.message);
                    return self.finish(&plan, SessionState::Failed, &reason).await;
                }
                Err(e) => return self.finish(&plan, SessionState::Failed, &format!("internal: {e}")).await,
            }
        }
        // Step 1b: wait for the operators who must approve, and for k of the
        // n approving data owners (a rejection or a veto ends the session meanwhile).
        let approvers = match self.approvers(&plan) {
            Ok(a) => a,
            Err(e) => return self.finish(&plan, SessionState::Failed, &e.message).await,
        };
        let approved = |svc: &Service, names: &[String]| -> Vec<String> {
            names.iter().filter(|n| svc.phase_of(&plan.id, n).as_deref() == Some(APPROVED)).cloned().collect()
        };
        let mut approving = Vec::new();
        if !awaiting.is_empty() || approvers.is_some() {
            tracing::info!(session = %plan.id, nodes = ?awaiting, approvers = ?approvers, "waiting for operators' approval");
            let deadline = Instant::now() + Duration::from_secs(self.shared.access.approval_timeout_secs.max(1));
            loop {
                let pending_state = self.store().session(&plan.id).map(|r| r.state == SessionState::Pending);
                if !matches!(pending_state, Ok(true)) {
                    return;
                }
                let own_done = approved(&self, &awaiting).len() == awaiting.len();
                if let Some((members, _)) = &approvers {
                    approving = approved(&self, members);
                }
                let k_done = approvers.as_ref().is_none_or(|(_, k)| approving.len() >= *k);
                if own_done && k_done {
                    break;
                }
                if Instant::now() >= deadline {
                    let missing: Vec<&String> =
                        awaiting.iter().filter(|n| self.phase_of(&plan.id, n).as_deref() != Some(APPROVED)).collect();
                    let mut reason = String::new();
                    if !missing.is_empty() {
                        reason = format!("no approval from the operator(s) of {missing:?} in time");
                    }
                    if let (false, Some((members, k))) = (k_done, &approvers) {
                        if !reason.is_empty() {
                            reason.push_str("; ");
                        }
                        reason.push_str(&format!(
                            "only {} of the {k} data-owner approvals needed from {} in time (approved: {:?})",
                            approving.len(),
                            members.join(", "),
                            approving
                        ));
                    }
                    return self.finish(&plan, SessionState::Failed, &reason).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // Step 1c: the approving data owners' threshold signature, checked and kept by every party.
        if approvers.is_some() {
            if let Err(reason) = self.collect_approval(&plan, &approving).await {
                return self.finish(&plan, SessionState::Failed, &reason).await;
            }
        }
        // Step 2: start everywhere.
        match self.store().set_session_state(&plan.id, SessionState::Running, None) {
            Ok(true) => {}
            _ => return, // cancelled meanwhile
        }
        if let Some(index) = plan.index_of(&me) {
            self.start_party(plan.clone(), index);
        }
        let mut starts = Vec::new();
        for p in plan.parties.iter().filter(|p| p.name != me) {
            let (svc, name, id) = (self.clone(), p.name.clone(), plan.id.clone());
            starts.push(tokio::spawn(async move {
                let r = svc.call(&name, &PeerRequest::Start { session: id }).await;
                (name, r)
            }));
        }
        for s in starts {
            if let Ok((name, Err(e))) = s.await {
                let reason = format!("party {name:?} could not be started: {}", e.message);
                return self.finish(&plan, SessionState::Failed, &reason).await;
            }
        }
    }

    /// Record a final state here and tell every other party (best effort).
    async fn finish(&self, plan: &SessionPlan, state: SessionState, reason: &str) {
        let changed = self.store().set_session_state(&plan.id, state, Some(reason)).unwrap_or(false);
        if let Some(tx) = lock(&self.shared.cancels).remove(&plan.id) {
            let _ = tx.send(Some(reason.to_owned()));
        }
        if !changed || plan.coordinator != self.name() {
            return;
        }
        tracing::warn!(session = %plan.id, state = state.name(), reason, "session ended");
        let me = self.name().to_owned();
        for p in plan.parties.iter().filter(|p| p.name != me) {
            let req = PeerRequest::Cancel {
                session: plan.id.clone(),
                reason: reason.to_owned(),
                failed: state == SessionState::Failed,
            };
            if let Err(e) = self.call(&p.name, &req).await {
                tracing::info!(peer = %p.name, error = %e, "could not tell the peer that the session ended");
            }
        }
    }

    /// The analyst (or operator) cancels session `id` (coordinator only).
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<(), ServiceError> {
        let rec = self.store().session(id)?;
        let plan = parse_plan(&rec)?;
        if rec.coordinator != self.name() {
            return Err(err(
                "not_coordinator",
                format!("session {id} is coordinated by {:?}; cancel it there", rec.coordinator),
            ));
        }
        if rec.state.is_terminal() {
            return Err(err("session_finished", format!("session {id} is already {}", rec.state.name())));
        }
        self.finish(&plan, SessionState::Cancelled, &format!("cancelled: {reason}")).await;
        Ok(())
    }

    fn session_from(&self, from: &str, id: &str) -> Result<(SessionRecord, SessionPlan), ServiceError> {
        let rec = self.store().session(id)?;
        let plan = parse_plan(&rec)?;
        if plan.index_of(from).is_none() && from != plan.coordinator {
            return Err(err("not_a_party", format!("{from:?} is not a party of session {id}")));
        }
        Ok((rec, plan))
    }

    fn on_progress(&self, from: &str, id: &str, phase: &str) -> Result<(), ServiceError> {
        let (_, plan) = self.session_from(from, id)?;
        if plan.index_of(from).is_none() {
            return Err(err("not_a_party", format!("{from:?} is not a party of session {id}")));
        }
        self.store().set_progress(id, from, phase)?;
        Ok(())
    }

    async fn on_finished(
        &self,
        from: &str,
        id: &str,
        env: &Envelope,
        rounds: u64,
        bytes: u64,
    ) -> Result<(), ServiceError> {
        let (rec, plan) = self.session_from(from, id)?;
        let index = plan.index_of(from).ok_or_else(|| err("not_a_party", format!("{from:?} is not a party")))?;
        if rec.coordinator != self.name() {
            return Err(err("not_coordinator", format!("this node does not coordinate session {id}")));
        }
        self.record_result(&plan, index, env, rounds, bytes)
    }

    fn record_result(
        &self,
        plan: &SessionPlan,
        index: usize,
        env: &Envelope,
        rounds: u64,
        bytes: u64,
    ) -> Result<(), ServiceError> {
        let json = serde_json::to_string(env).map_err(|e| err("internal", e.to_string()))?;
        let mut store = self.store();
        let name = plan.parties.get(index).map_or("?", |p| p.name.as_str());
        store.set_progress(&plan.id, name, &format!("done ({rounds} rounds, {bytes} bytes sent)"))?;
        let fresh = !store.results(&plan.id)?.iter().any(|(i, _)| *i == index);
        let count = store.put_result(&plan.id, index, &json)?;
        if fresh {
            crate::audit::result_revealed(&mut store, plan, index, &json)?; // audit: the first share of this party
        }
        if count == plan.parties.len() && plan.consortium.is_some() {
            // Done once the consortium has signed (or failed to).
            tokio::spawn(self.clone().attest(plan.clone()));
        } else if count == plan.parties.len() {
            store.set_session_state(&plan.id, SessionState::Done, None)?;
            tracing::info!(session = %plan.id, "session done; result shares held for the analyst");
        }
        Ok(())
    }

    async fn on_failed(&self, from: &str, id: &str, reason: &str) -> Result<(), ServiceError> {
        let (rec, plan) = self.session_from(from, id)?;
        if rec.coordinator != self.name() {
            return Err(err("not_coordinator", format!("this node does not coordinate session {id}")));
        }
        let _ = self.store().set_progress(id, from, "failed");
        self.finish(&plan, SessionState::Failed, &format!("party {from:?} failed: {reason}")).await;
        Ok(())
    }

    // ---------------------------------------------------------------------
    // Participant.

    /// A proposed session: verified and stored as pending, and whether it
    /// waits for this node's operator's approval.
    fn on_propose(&self, from: &str, plan: &SessionPlan) -> Result<Acceptance, ServiceError> {
        let me = self.name().to_owned();
        if plan.coordinator != from {
            return Err(err(
                "bad_plan",
                format!("the plan names {:?} as coordinator, but {from:?} sent it", plan.coordinator),
            ));
        }
        if plan.parties.iter().filter(|p| p.name == me).count() != 1 {
            return Err(err("bad_plan", format!("node {me:?} is not named exactly once among the parties")));
        }
        if plan.parties.len() != plan.spec.parties {
            return Err(err("bad_plan", "the plan's party list and its computation disagree on the number of parties"));
        }
        if unhex(&plan.id).is_none_or(|b| b.len() != 16) || unhex(&plan.analyst_key).is_none_or(|b| b.len() != 32) {
            return Err(err("bad_plan", "malformed session id or analyst key"));
        }
        for p in plan.parties.iter().filter(|p| p.name != me) {
            let pinned = self.active_peer(&p.name)?;
            if pinned.tls_fingerprint != p.tls_fingerprint {
                return Err(err(
                    "bad_plan",
                    format!("the plan gives party {:?} another certificate than the one pinned here", p.name),
                ));
            }
        }
        let d = self
            .store()
            .get_dataset(&plan.dataset)
            .map_err(|_| err("unknown_dataset", format!("node {me:?} has no dataset named {:?}", plan.dataset)))?;
        if let DatasetStatus::Invalid(reason) = &d.status {
            return Err(err(
                "invalid_dataset",
                format!("dataset {:?} on node {me:?} is invalid: {reason}", plan.dataset),
            ));
        }
        if d.schema_toml.trim() != plan.spec.schema_toml.trim() {
            return Err(err(
                "schema_mismatch",
                format!(
                    "dataset {:?} on node {me:?} has another schema than the plan's ({})",
                    plan.dataset,
                    first_difference(&plan.spec.schema_toml, &d.schema_toml)
                ),
            ));
        }
        crate::config::check_name(&plan.analyst)
            .map_err(|e| err("bad_plan", format!("analyst name {:?}: {e}", plan.analyst)))?;
        // The computation must be what the plan's options give (never trust a plan not derived here).
        let replanned = SessionSpec::plan(&d.schema_toml, &plan.spec.sql, plan.parties.len(), &plan.options)
            .map_err(|e| err("bad_plan", format!("the plan's options do not give a computation here: {e}")))?;
        if replanned != plan.spec {
            return Err(err("bad_plan", "the plan's computation is not the one its options give"));
        }
        let mut needs_approval = false;
        if let Some(policy) = self.policy().map_err(|e| self.refused(e))? {
            let signed = plan.request.as_ref().ok_or_else(|| self.refused(unsigned(&me)))?;
            let verified = self.verify_request(signed).map_err(|e| self.refused(e))?;
            let allowed = self.decide(&policy, &verified, &d.schema_toml, &plan.spec.sql)?;
            self.check_request_covers(plan, &verified, &allowed).map_err(|e| self.refused(e))?;
            needs_approval = allowed.needs_operator_approval;
        }
        if plan.approval_consortium.is_some() && plan.request.is_none() {
            return Err(err("bad_plan", "a threshold approval needs a signed request, and the plan carries none"));
        }
        let approver = self.approvers(plan)?.is_some_and(|(members, _)| members.contains(&me));
        self.check_privacy(plan)?;
        let json = serde_json::to_string(plan).map_err(|e| err("internal", e.to_string()))?;
        let created = self.store().create_session(&plan.id, &plan.coordinator, &json, &plan.summary());
        if let Err(e) = created {
            let _ = self.store().refund_budget(&plan.id);
            return Err(e.into());
        }
        if needs_approval || approver {
            let _ = self.store().set_progress(&plan.id, &me, AWAITING_APPROVAL);
            let why = if needs_approval { "this operator's approval" } else { "the data owners' approval" };
            let _ = self.store().record_event(
                "approval.requested",
                &format!("session {} waits for {why}: {}", plan.id, plan.summary()),
            );
        }
        tracing::info!(session = %plan.id, coordinator = from, "session accepted: {}", plan.summary());
        Ok(match (needs_approval, approver) {
            (true, _) => Acceptance::AwaitingOwn,
            (false, true) => Acceptance::AwaitingThreshold,
            (false, false) => Acceptance::Accepted,
        })
    }

    // ---------------------------------------------------------------------
    // Access control (see `crate::access`).

    /// Log a refused request (the event log, hence the audit log) and pass the error on.
    fn refused(&self, e: ServiceError) -> ServiceError {
        let _ = self.store().record_event("request.refused", &format!("{}: {}", e.code, e.message));
        e
    }

    /// This node's policy, if access control is on; an unreadable policy
    /// refuses everything (naming the file and line) rather than allowing.
    fn policy(&self) -> Result<Option<Policy>, ServiceError> {
        let Some(path) = &self.shared.access.policy else { return Ok(None) };
        load_policy(path).map(Some).map_err(|e| {
            err(
                "policy_error",
                format!("node {:?} cannot read its policy, so it refuses every query: {e}", self.name()),
            )
        })
    }

    /// Signature, registration, validity window and nonce of a signed request, at this node.
    fn verify_request(&self, signed: &SignedRequest) -> Result<VerifiedRequest, ServiceError> {
        let mut store = self.store();
        let registry = StoreRegistry(&store);
        // The registry borrows the store immutably; look the analyst up first.
        let record = concord_access::AnalystRegistry::lookup(&registry, &signed.request.analyst);
        let mut table = std::collections::BTreeMap::new();
        if let Ok(Some(r)) = record {
            table.insert(signed.request.analyst.clone(), r);
        }
        let max_ms = self.shared.access.max_request_lifetime_secs.saturating_mul(1000);
        concord_access::verify(signed, &table, now_ms(), &mut StoreReplay(&mut store), max_ms)
            .map_err(|e| err("request_refused", format!("node {:?} refuses the request: {e}", self.name())))
    }

    /// This node's policy decision on a verified request.
    fn decide(
        &self,
        policy: &Policy,
        verified: &VerifiedRequest,
        schema_toml: &str,
        sql: &str,
    ) -> Result<Allowed, ServiceError> {
        let me = self.name();
        let schema = concord_query::Schema::from_toml(schema_toml)
            .map_err(|e| err("invalid_dataset", format!("node {me:?}: schema: {e}")))?;
        let query = concord_query::parse(sql, &schema).map_err(|e| err("invalid_query", e.to_string()))?;
        let facts = verified.facts(&schema, &query).map_err(|e| err("invalid_query", e.to_string()))?;
        // The request itself is already recorded among today's.
        let today = self.store().requests_today(verified.analyst(), now_ms())?.saturating_sub(1);
        let decision = policy.evaluate(&facts, &Usage { queries_today: today });
        let _ = self.store().record_event(
            "policy.decision",
            &format!("request {} of analyst {:?}: {}", hex(&verified.hash()), verified.analyst(), decision.explain()),
        );
        match decision {
            Decision::Allow(a) => Ok(a),
            Decision::Deny(d) => Err(err(
                "policy_denied",
                format!("node {me:?} denies the request (rule {:?}): {}", d.rule, Decision::Deny(d.clone()).explain()),
            )),
        }
    }

    /// The plan is what the request signed (only tightened), and satisfies the policy's conditions.
    fn check_request_covers(
        &self,
        plan: &SessionPlan,
        verified: &VerifiedRequest,
        allowed: &Allowed,
    ) -> Result<(), ServiceError> {
        let me = self.name();
        let refuse = |m: String| err("request_refused", format!("node {me:?} refuses the session: {m}"));
        if verified.analyst() != plan.analyst {
            return Err(refuse(format!(
                "the request is signed by analyst {:?} but the session names {:?}",
                verified.analyst(),
                plan.analyst
            )));
        }
        if verified.request().recipient.to_string() != plan.analyst_key {
            return Err(refuse("the results would be sealed to another key than the signed recipient".into()));
        }
        let names: Vec<String> = plan.parties.iter().map(|p| p.name.clone()).collect();
        let options = request_options(&plan.options).map_err(&refuse)?;
        verified.check_covers(&plan.spec.sql, &plan.dataset, &names, &options).map_err(|e| refuse(e.to_string()))?;
        // With differential privacy the noise, not suppression, protects small groups.
        let min_group = if plan.spec.privacy.is_some() {
            Some(allowed.min_group_size)
        } else {
            let schema_min =
                concord_query::Schema::from_toml(&plan.spec.schema_toml).ok().and_then(|s| s.min_group_size);
            plan.options.min_group_size.or(schema_min)
        };
        let epsilon = match plan.spec.privacy {
            Some(Privacy::Epsilon(e)) => concord_access::Epsilon::new(e).ok(),
            _ => None,
        };
        allowed.check_session(min_group, epsilon).map_err(|e| refuse(format!("{e} (rule {:?})", allowed.rule)))?;
        if let Some(a) = &allowed.approvals_required {
            self.check_approval_consortium(plan, &allowed.rule, a)?;
        }
        Ok(())
    }

    /// This node's latest phase in session `id`.
    pub(crate) fn phase_of(&self, id: &str, node: &str) -> Option<String> {
        self.store().progress(id).ok()?.into_iter().find(|p| p.party == node).map(|p| p.phase)
    }

    /// Sessions waiting for this node's operator's approval.
    pub fn pending_approvals(&self) -> Result<Vec<SessionPlan>, ServiceError> {
        let me = self.name().to_owned();
        let sessions = self.store().list_sessions(200)?;
        let mut out = Vec::new();
        for rec in sessions.into_iter().filter(|r| r.state == SessionState::Pending) {
            if self.phase_of(&rec.id, &me).as_deref() == Some(AWAITING_APPROVAL) {
                out.push(parse_plan(&rec)?);
            }
        }
        Ok(out)
    }

    /// The operator approves session `id` (which waits for this node's approval).
    pub async fn approve(&self, id: &str, by: &str) -> Result<(), ServiceError> {
        let me = self.name().to_owned();
        let rec = self.store().session(id)?;
        let plan = parse_plan(&rec)?;
        if rec.state != SessionState::Pending || self.phase_of(id, &me).as_deref() != Some(AWAITING_APPROVAL) {
            return Err(err("not_awaiting_approval", format!("session {id} is not waiting for this node's approval")));
        }
        self.store().set_progress(id, &me, APPROVED)?;
        self.store().record_event("approval.granted", &format!("session {id} approved by {by}: {}", plan.summary()))?;
        if plan.coordinator != me {
            self.call(&plan.coordinator, &PeerRequest::Approved { session: id.to_owned() }).await?;
        }
        Ok(())
    }

    /// The operator rejects a session waiting for approval, or vetoes one that
    /// is pending or running: it ends on every node with the reason.
    pub async fn veto(&self, id: &str, by: &str, reason: &str) -> Result<(), ServiceError> {
        let me = self.name().to_owned();
        let rec = self.store().session(id)?;
        let plan = parse_plan(&rec)?;
        if rec.state.is_terminal() {
            return Err(err("session_finished", format!("session {id} is already {}", rec.state.name())));
        }
        let why = format!("vetoed by the operator of {me:?} ({by}): {reason}");
        self.store().record_event("approval.vetoed", &format!("session {id}: {why}"))?;
        if plan.coordinator == me {
            self.finish(&plan, SessionState::Cancelled, &why).await;
            return Ok(());
        }
        // The coordinator ends it everywhere (this node included) with the reason;
        // stopping here first would let the others see a disconnect before the veto.
        let told =
            self.call(&plan.coordinator, &PeerRequest::Vetoed { session: id.to_owned(), reason: why.clone() }).await;
        // Whatever the coordinator did, this node stops now.
        let _ = self.store().set_session_state(id, SessionState::Cancelled, Some(&why));
        if let Some(tx) = lock(&self.shared.cancels).remove(id) {
            let _ = tx.send(Some(why.clone()));
        }
        told.map(|_| ())
    }

    async fn on_vetoed(&self, from: &str, id: &str, reason: &str) -> Result<(), ServiceError> {
        let (rec, plan) = self.session_from(from, id)?;
        if rec.coordinator != self.name() {
            return Err(err("not_coordinator", format!("this node does not coordinate session {id}")));
        }
        let _ = self.store().set_progress(id, from, "vetoed");
        self.finish(&plan, SessionState::Cancelled, reason).await;
        Ok(())
    }

    fn on_approved(&self, from: &str, id: &str) -> Result<(), ServiceError> {
        let (_, plan) = self.session_from(from, id)?;
        if plan.coordinator != self.name() {
            return Err(err("not_coordinator", format!("this node does not coordinate session {id}")));
        }
        if self.phase_of(id, from).as_deref() != Some(AWAITING_APPROVAL) {
            return Err(err("not_awaiting_approval", format!("session {id} was not waiting for {from:?}")));
        }
        self.store().set_progress(id, from, APPROVED)?;
        Ok(())
    }

    /// Re-derive the computation and apply this node's privacy rules to it:
    /// refuse a query without noise if this node requires it; charge a private
    /// query's cost to the analyst's budget on this dataset (atomically),
    /// refusing it with what is left when it would exceed it.
    fn check_privacy(&self, plan: &SessionPlan) -> Result<(), ServiceError> {
        let me = self.name();
        let prepared =
            plan.spec.prepare().map_err(|e| err("bad_plan", format!("the computation does not re-derive: {e}")))?;
        let Some(dp) = &prepared.dp else {
            if self.shared.privacy.require {
                return Err(err(
                    "privacy_required",
                    format!(
                        "node {me:?} requires differential privacy on its data: add WITH PRIVACY (epsilon = ...) \
                         or --epsilon"
                    ),
                ));
            }
            return Ok(());
        };
        let cost = dp.cost.value();
        let spent =
            self.store().spend_budget(&plan.id, &plan.analyst, &plan.dataset, cost, self.shared.privacy.budget_rho);
        match spent {
            Ok(b) => {
                tracing::info!(session = %plan.id, analyst = %plan.analyst, cost, left = b.remaining(), "privacy budget charged");
                Ok(())
            }
            Err(NodeError::BudgetExceeded { cost, budget }) => {
                let left = budget.remaining();
                let eps = concord_session::privacy::shown_epsilon(left);
                Err(err(
                    "budget_exceeded",
                    format!(
                        "node {me:?} refuses: the query costs rho {cost:.6} ({}), but analyst {:?} has rho {left:.6} \
                         left of {:.6} on dataset {:?} (about ({eps}, {:e})-DP)",
                        dp.privacy,
                        budget.analyst,
                        budget.budget,
                        budget.dataset,
                        concord_session::privacy::SHOWN_DELTA
                    ),
                ))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn on_start(&self, from: &str, id: &str) -> Result<(), ServiceError> {
        let (rec, plan) = self.session_from(from, id)?;
        if from != plan.coordinator {
            return Err(err("not_coordinator", format!("only {:?} may start session {id}", plan.coordinator)));
        }
        if rec.state != SessionState::Pending {
            return Err(err("bad_state", format!("session {id} is {}, not pending", rec.state.name())));
        }
        let index = plan.index_of(self.name()).ok_or_else(|| err("not_a_party", "this node is not a party"))?;
        self.check_approval_held(&plan)?;
        self.store().set_session_state(id, SessionState::Running, None)?;
        if self.phase_of(id, self.name()).as_deref() == Some(AWAITING_APPROVAL) {
            // An approving data owner whose approval was not needed: k others gave theirs.
            let _ = self.store().set_progress(id, self.name(), "approval not needed (k data owners approved)");
        }
        self.start_party(plan, index);
        Ok(())
    }

    fn on_cancel(&self, from: &str, id: &str, reason: &str, failed: bool) -> Result<(), ServiceError> {
        let (_, plan) = self.session_from(from, id)?;
        if from != plan.coordinator {
            return Err(err("not_coordinator", format!("only {:?} may end session {id}", plan.coordinator)));
        }
        let state = if failed { SessionState::Failed } else { SessionState::Cancelled };
        self.store().set_session_state(id, state, Some(reason))?;
        if let Some(tx) = lock(&self.shared.cancels).remove(id) {
            let _ = tx.send(Some(reason.to_owned()));
        }
        Ok(())
    }

    /// Report progress to the coordinator (or record it, if we are it).
    async fn report(&self, plan: &SessionPlan, req: PeerRequest) -> Result<(), ServiceError> {
        let me = self.name().to_owned();
        if plan.coordinator == me {
            match req {
                PeerRequest::Progress { phase, .. } => Ok(self.store().set_progress(&plan.id, &me, &phase)?),
                PeerRequest::Finished { envelope, rounds, bytes_sent, .. } => {
                    let index = plan.index_of(&me).unwrap_or(usize::MAX);
                    self.record_result(plan, index, &envelope, rounds, bytes_sent)
                }
                PeerRequest::Failed { reason, .. } => {
                    let _ = self.store().set_progress(&plan.id, &me, "failed");
                    self.finish(plan, SessionState::Failed, &format!("party {me:?} failed: {reason}")).await;
                    Ok(())
                }
                _ => Ok(()),
            }
        } else {
            self.call(&plan.coordinator, &req).await.map(|_| ())
        }
    }

    fn start_party(&self, plan: SessionPlan, index: usize) {
        let (tx, rx) = watch::channel(None);
        lock(&self.shared.cancels).insert(plan.id.clone(), tx);
        let svc = self.clone();
        let handle = tokio::runtime::Handle::current();
        let spawned =
            std::thread::Builder::new().name(format!("session-{}", plan.id.get(..8).unwrap_or(""))).spawn(move || {
                // The computation runs on this thread's own runtime, never on the node's workers.
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        handle.spawn(
                            async move { svc.party_failed(&plan, &format!("cannot start a runtime: {e}")).await },
                        );
                        return;
                    }
                };
                let outcome = rt.block_on(svc.run_party(&plan, index, rx));
                let svc2 = svc.clone();
                handle.spawn(async move {
                    match outcome {
                        Ok(()) => {}
                        Err(reason) => svc2.party_failed(&plan, &reason).await,
                    }
                });
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot spawn a session thread");
        }
    }

    async fn party_failed(&self, plan: &SessionPlan, reason: &str) {
        let changed = self.store().set_session_state(&plan.id, SessionState::Failed, Some(reason)).unwrap_or(false);
        // Stop our computation (if it still runs) only after the coordinator
        // has heard our reason, so that the others' view of our departure
        // (a closed connection) does not overtake it.
        let stop = lock(&self.shared.cancels).remove(&plan.id);
        if !changed {
            drop(stop);
            return; // already ended (cancelled or failed by the coordinator)
        }
        tracing::warn!(session = %plan.id, reason, "our part of the session failed");
        if plan.coordinator == self.name() {
            let _ = self.store().set_progress(&plan.id, self.name(), "failed");
            let me = self.name().to_owned();
            for p in plan.parties.iter().filter(|p| p.name != me) {
                let req = PeerRequest::Cancel { session: plan.id.clone(), reason: reason.to_owned(), failed: true };
                let _ = self.call(&p.name, &req).await;
            }
        } else {
            let req = PeerRequest::Failed { session: plan.id.clone(), reason: reason.to_owned() };
            if let Err(e) = self.call(&plan.coordinator, &req).await {
                tracing::info!(error = %e, "could not report the failure to the coordinator");
            }
        }
        if let Some(tx) = stop {
            let _ = tx.send(Some(reason.to_owned()));
        }
    }

    async fn run_party(
        &self,
        plan: &SessionPlan,
        index: usize,
        mut cancel: watch::Receiver<Option<String>>,
    ) -> Result<(), String> {
        let progress = |phase: &str| PeerRequest::Progress { session: plan.id.clone(), phase: phase.to_owned() };
        let _ = self.report(plan, progress("loading data")).await;
        let prepared = plan.spec.prepare().map_err(|e| e.to_string())?;
        let file = self.store().get_dataset(&plan.dataset).map_err(|e| e.to_string())?.file_path;
        let local = prepared.local_input(index, &file).map_err(|e| e.to_string())?;
        let _ = self.report(plan, progress("connecting")).await;
        let id: [u8; 16] =
            unhex(&plan.id).and_then(|b| b.try_into().ok()).ok_or("the session id is not 16 hex bytes")?;
        let mut peers = Vec::with_capacity(plan.parties.len());
        for p in &plan.parties {
            let addr: SocketAddr = tokio::net::lookup_host(&p.address)
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| format!("cannot resolve the address {} of party {:?}", p.address, p.name))?;
            let fingerprint = fingerprint_of(&p.tls_fingerprint).ok_or("bad fingerprint in the plan")?;
            peers.push(TlsPeer { addr, fingerprint });
        }
        let inbound = self.shared.port.register(id).map_err(|e| e.to_string())?;
        let mut cfg = TlsConfig::new(index, self.shared.identity.tls().clone(), peers, id);
        cfg.connect_timeout = self.shared.timing.connect_timeout;
        cfg.recv_timeout = self.shared.timing.recv_timeout;
        let started = Instant::now();
        let traffic: Mutex<Option<concord_net::tls::PeerTraffic>> = Mutex::new(None);
        let run = async {
            let net = TlsTransport::establish_routed(cfg, inbound).await.map_err(|e| e.to_string())?;
            *traffic.lock().unwrap_or_else(|e| e.into_inner()) = Some(net.traffic());
            let _ = self.report(plan, progress("connected")).await;
            if self.shared.slow_ms > 0 {
                tokio::time::sleep(Duration::from_millis(self.shared.slow_ms)).await;
            }
            let _ = self.report(plan, progress("computing")).await;
            let mut rng = <rand_chacha::ChaCha12Rng as rand_core::SeedableRng>::from_os_rng();
            let report = prepared.run_party(net, &local, &mut rng).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(report)
        };
        let outcome = tokio::select! {
            r = run => r.map_err(|e| name_parties(&e, plan)),
            _ = cancel.changed() => {
                let why = cancel.borrow().clone().unwrap_or_default();
                Err(format!("stopped: {why}"))
            }
        };
        // Bytes sent per peer, whatever the outcome.
        if let Some(t) = lock(&traffic).take() {
            let mut per = lock(&self.shared.metrics.mpc_bytes_sent_to);
            for (p, n) in plan.parties.iter().zip(t.payload_sent()) {
                if p.name != self.name() {
                    *per.entry(p.name.clone()).or_insert(0) += n;
                }
            }
        }
        let report = outcome?;
        let secs = started.elapsed().as_secs_f64();
        let m = &self.shared.metrics;
        m.mpc_bytes_sent.fetch_add(report.bytes_sent, Ordering::Relaxed);
        if report.rounds > 0 {
            m.round_latency_us_sum.fetch_add((secs * 1e6 / report.rounds as f64) as u64, Ordering::Relaxed);
            m.round_latency_count.fetch_add(1, Ordering::Relaxed);
        }
        let body = serde_json::to_vec(&report).map_err(|e| e.to_string())?;
        let key: [u8; 32] = unhex(&plan.analyst_key).and_then(|k| k.try_into().ok()).ok_or("bad analyst key")?;
        let mut rng = <rand_chacha::ChaCha12Rng as rand_core::SeedableRng>::from_os_rng();
        let envelope = seal(&key, &plan.id, index, &body, &mut rng).map_err(|e| e.to_string())?;
        let (rounds, bytes_sent) = (report.rounds, report.bytes_sent);
        drop(report);
        if plan.consortium.is_some() && plan.coordinator != self.name() {
            // Kept so that this node can check the result statement before it signs it.
            let json = serde_json::to_string(&envelope).map_err(|e| e.to_string())?;
            self.store().put_result(&plan.id, index, &json).map_err(|e| e.to_string())?;
        }
        self.report(plan, PeerRequest::Finished { session: plan.id.clone(), envelope, rounds, bytes_sent })
            .await
            .map_err(|e| format!("could not deliver the result share to the coordinator: {e}"))?;
        lock(&self.shared.cancels).remove(&plan.id);
        if plan.coordinator != self.name() {
            let _ = self.store().set_session_state(&plan.id, SessionState::Done, None);
        }
        Ok(())
    }
}

/// Parse a stored plan.
pub fn parse_plan(rec: &SessionRecord) -> Result<SessionPlan, ServiceError> {
    serde_json::from_str(&rec.plan)
        .map_err(|e| err("internal", format!("stored plan of session {} is corrupt: {e}", rec.id)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn announcements_verify_only_with_the_right_key_and_fields() {
        let id = NodeIdentity::generate("a").unwrap();
        let a = Announcement::sign(&id, "10.0.0.1:7301", 100);
        let key = id.public().ed25519_public;
        assert!(a.verify(&key));
        let moved = Announcement { address: "10.0.0.2:7301".into(), ..a.clone() };
        assert!(!moved.verify(&key));
        let later = Announcement { at: 101, ..a.clone() };
        assert!(!later.verify(&key));
        let other = NodeIdentity::generate("b").unwrap();
        assert!(!a.verify(&other.public().ed25519_public));
        assert!(!Announcement { signature: "zz".into(), ..a }.verify(&key));
    }

    #[tokio::test]
    async fn proposed_sessions_never_started_expire() {
        let store = Arc::new(Mutex::new(Store::open_in_memory().unwrap()));
        lock(&store).create_session("theirs", "b", "{}", "q").unwrap();
        lock(&store).create_session("ours", "a", "{}", "q").unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = PeerPort::start(listener).unwrap();
        let secs = Duration::from_secs(1);
        let timing = Timing {
            heartbeat_period: secs,
            heartbeat_timeout: secs,
            rpc_timeout: secs,
            connect_timeout: secs,
            recv_timeout: secs,
        };
        let svc = Service::new(
            NodeIdentity::generate("a").unwrap(),
            "127.0.0.1:1".into(),
            store.clone(),
            port,
            timing,
            PrivacyConfig::default(),
            AccessConfig::default(),
        );
        svc.expire_stale_sessions(unix_now());
        assert_eq!(lock(&store).session("theirs").unwrap().state, SessionState::Pending, "not yet");
        svc.expire_stale_sessions(unix_now() + PENDING_LIMIT_SECS + 1);
        let theirs = lock(&store).session("theirs").unwrap();
        assert_eq!(theirs.state, SessionState::Failed);
        assert!(theirs.reason.unwrap().contains("did not start"));
        // A session we coordinate is ours to end, not the watchdog's.
        assert_eq!(lock(&store).session("ours").unwrap().state, SessionState::Pending);
    }

    #[test]
    fn helpers() {
        assert_eq!(from_table("SELECT COUNT(*) FROM patients WHERE x > 1").as_deref(), Some("patients"));
        assert_eq!(from_table("select 1"), None);
        assert!(first_difference("a\nb = 1\n", "a\nb = 2\n").starts_with("line 2"));
    }
}
