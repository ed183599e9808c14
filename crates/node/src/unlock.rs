//! Threshold unlock: "k of n operators unlock a record".
//!
//! # The unlock key (`POST /api/unlock-keys`, `concord unlock setup`)
//!
//! Every active consortium ([`crate::consortium`]) can have one unlock key:
//! an ElGamal key over ristretto255 made without a dealer by the committed
//! Pedersen DKG of [`concord_threshold::unlock_dkg_round1`] ..., with the
//! consortium's members and threshold. The node asked (a member, the
//! coordinator) drives it over the control channel with [`UnlockMsg`]:
//!
//! 1. `dkg_start` to every member: each checks the consortium is active here
//!    with the same members and threshold, runs round 1 and answers its
//!    commitment (broadcast);
//! 2. `dkg_round1` with all commitments: each answers its public polynomial
//!    (broadcast);
//! 3. `dkg_round2` with all polynomials: each computes one secret share per
//!    other member and sends it **directly** to it (`dkg_round3`, member to
//!    member over mutually authenticated TLS; the coordinator never sees it);
//! 4. `dkg_finish`: each checks the shares it received, stores its
//!    [`UnlockShare`] (secret: never served, never logged) and the
//!    [`UnlockPublicKey`], deletes its round state and answers the public key;
//! 5. `dkg_outcome`: `active` if every member derived the same public key.
//!
//! # Sealing and unsealing
//!
//! `concord seal` encrypts locally under the public key (the content never
//! goes to a node). `concord unseal` submits the sealed file (ciphertext
//! only: a decryption share is computed from the file's ElGamal header and
//! bound to its SHA-256 digest, which the node recomputes) as an unlock
//! request to a member node, the requester, which forwards it (`request`) to
//! every other member. Each member's operator approves or rejects it; on
//! approval, and only then, the member computes its decryption share (with a
//! Chaum-Pedersen proof) and sends it (`share`) to the requester; a
//! rejection is sent too (`rejected`). The requester serves the shares it
//! collected to whoever asked it to unseal; `concord unseal` checks every
//! proof, names a node whose share is forged ([`open_sealed`]) and decrypts
//! locally once `t` valid shares are in. No node ever sees the content.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, OnceLock};

use concord_threshold::{
    DecryptionShare, SealedFile, ThresholdError, UnlockPublicKey, UnlockRound1Msg, UnlockRound1Secret, UnlockRound2Msg,
    UnlockRound2Secret, UnlockRound3Msg, UnlockRound3Secret, UnlockShare,
};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::consortium::{api_error, ApiFailure, ApiResult};
use crate::service::{PeerReply, PeerRequest, Service, ServiceError};
use crate::store::Store;
use crate::{hex, unix_now, NodeError};

/// The largest sealed file an unlock request may carry (bytes).
pub const MAX_SEALED_FILE: usize = 4 << 20;

/// The longest reason an unlock request or a rejection may give (characters).
pub const MAX_REASON: usize = 2000;

/// Test hook: a node started with this variable set to `1` sends a forged
/// decryption share (a valid group element that is not its share), so that
/// tests can check the requester names it.
pub const FORGE_SHARE_ENV: &str = "CONCORD_TEST_FORGE_UNLOCK_SHARE";

/// One member's broadcast, with its index (1-based position in the member list).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Indexed<T> {
    /// The sender's index.
    pub index: u16,
    /// Its broadcast.
    pub message: T,
}

/// The broadcasts as a map by index, except ours; a repeated index is refused.
fn by_index<T>(list: Vec<Indexed<T>>, me: Option<u16>) -> Result<BTreeMap<u16, T>, ServiceError> {
    let mut out = BTreeMap::new();
    for m in list {
        if Some(m.index) != me && out.insert(m.index, m.message).is_some() {
            return Err(err("bad_request", format!("two broadcasts for member {}", m.index)));
        }
    }
    Ok(out)
}

/// Unlock control messages (inside [`PeerRequest::Unlock`]). `Debug` shows
/// the kind and names only (round-3 messages are secret).
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum UnlockMsg {
    /// Coordinator to member: a new unlock key for `consortium`; answer the round-1 commitment.
    DkgStart {
        /// Consortium name.
        consortium: String,
        /// Its members, in index order (must match the consortium here).
        members: Vec<String>,
        /// Its threshold (must match).
        threshold: u16,
    },
    /// Coordinator to member: every member's round-1 commitment (keyed by index); answer round 2.
    DkgRound1 {
        /// Consortium name.
        consortium: String,
        /// All `n` commitments.
        round1: Vec<Indexed<UnlockRound1Msg>>,
    },
    /// Coordinator to member: every member's public polynomial; send each
    /// round-3 share directly to its recipient.
    DkgRound2 {
        /// Consortium name.
        consortium: String,
        /// All `n` round-2 broadcasts.
        round2: Vec<Indexed<UnlockRound2Msg>>,
    },
    /// Member to member (directly; secret): the sender's share for the receiver.
    DkgRound3 {
        /// Consortium name.
        consortium: String,
        /// The share and the sender's echo digest.
        message: UnlockRound3Msg,
    },
    /// Coordinator to member: every share was delivered; finish and answer the public key.
    DkgFinish {
        /// Consortium name.
        consortium: String,
    },
    /// Coordinator to member: the outcome.
    DkgOutcome {
        /// Consortium name.
        consortium: String,
        /// Whether every member derived the same public key.
        active: bool,
        /// Why not.
        reason: Option<String>,
    },
    /// Requester to member: an unlock request for its operator.
    Request {
        /// Request id (32 hex digits).
        id: String,
        /// Consortium name (whose unlock key sealed the file).
        consortium: String,
        /// The sealed file (ciphertext; hex).
        sealed: Box<SealedFile>,
        /// Why the requester wants it opened.
        reason: String,
    },
    /// Member to requester: the member's operator approved; its decryption share.
    Share {
        /// Request id.
        id: String,
        /// The decryption share, with its proof.
        share: Box<DecryptionShare>,
    },
    /// Member to requester: the member's operator rejected the request.
    Rejected {
        /// Request id.
        id: String,
        /// The operator's reason.
        reason: String,
    },
}

impl std::fmt::Debug for UnlockMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DkgStart { consortium, members, threshold } => {
                write!(f, "DkgStart({consortium:?}, {members:?}, t = {threshold})")
            }
            Self::DkgRound1 { consortium, .. } => write!(f, "DkgRound1({consortium:?})"),
            Self::DkgRound2 { consortium, .. } => write!(f, "DkgRound2({consortium:?})"),
            Self::DkgRound3 { consortium, .. } => write!(f, "DkgRound3({consortium:?}, [redacted])"),
            Self::DkgFinish { consortium } => write!(f, "DkgFinish({consortium:?})"),
            Self::DkgOutcome { consortium, active, .. } => write!(f, "DkgOutcome({consortium:?}, active = {active})"),
            Self::Request { id, consortium, sealed, .. } => write!(f, "Request({id}, {consortium:?}, {sealed:?})"),
            Self::Share { id, .. } => write!(f, "Share({id})"),
            Self::Rejected { id, .. } => write!(f, "Rejected({id})"),
        }
    }
}

/// Answers to [`UnlockMsg`] (inside [`PeerReply::Unlock`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum UnlockReply {
    /// Round-1 commitment (broadcast).
    Round1 {
        /// The commitment.
        message: UnlockRound1Msg,
    },
    /// Round-2 public polynomial (broadcast).
    Round2 {
        /// The polynomial, proof and opening.
        message: UnlockRound2Msg,
    },
    /// The public key the member derived.
    Finished {
        /// The consortium's unlock public key.
        public_key: UnlockPublicKey,
    },
}

// -------------------------------------------------------------------------
// Round states (in memory, secret, per node; lost on restart, which aborts the DKG).

enum Stage {
    Round1(UnlockRound1Secret),
    Round2(UnlockRound2Secret),
    Round3(UnlockRound3Secret),
}

struct Dkg {
    members: Vec<String>,
    coordinator: String,
    stage: Option<Stage>,
    inbox: BTreeMap<u16, UnlockRound3Msg>,
}

type Rounds = HashMap<(String, String), Dkg>;

/// Round states keyed by (node name, consortium): a process may run several nodes (tests).
fn rounds() -> MutexGuard<'static, Rounds> {
    static ROUNDS: OnceLock<Mutex<Rounds>> = OnceLock::new();
    ROUNDS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner())
}

// -------------------------------------------------------------------------
// Store.

/// The unlock key of a consortium as this node stores it (public facts only).
#[derive(Clone, Debug, Serialize)]
pub struct UnlockKeyRecord {
    /// Consortium name.
    pub consortium: String,
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
    /// The public key, once known.
    pub public_key: Option<UnlockPublicKey>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

fn sql(store: &Store) -> impl Fn(rusqlite::Error) -> NodeError + '_ {
    move |source| NodeError::Store { path: store.path().to_owned(), source }
}

fn corrupt(store: &Store, reason: String) -> NodeError {
    NodeError::Corrupt { path: store.path().to_owned(), reason }
}

const KEY_COLUMNS: &str =
    "consortium, members, threshold, coordinator, state, reason, public_key, created_at, updated_at";

fn read_key(store: &Store, r: &rusqlite::Row<'_>) -> Result<UnlockKeyRecord, NodeError> {
    let s = sql(store);
    let consortium: String = r.get(0).map_err(&s)?;
    let members: String = r.get(1).map_err(&s)?;
    let members = serde_json::from_str(&members)
        .map_err(|e| corrupt(store, format!("members of the unlock key of {consortium:?}: {e}")))?;
    let public_key: Option<String> = r.get(6).map_err(&s)?;
    let public_key = public_key
        .map(|k| serde_json::from_str(&k))
        .transpose()
        .map_err(|e| corrupt(store, format!("unlock public key of {consortium:?}: {e}")))?;
    Ok(UnlockKeyRecord {
        consortium,
        members,
        threshold: r.get(2).map_err(&s)?,
        coordinator: r.get(3).map_err(&s)?,
        state: r.get(4).map_err(&s)?,
        reason: r.get(5).map_err(&s)?,
        public_key,
        created_at: r.get(7).map_err(&s)?,
        updated_at: r.get(8).map_err(&s)?,
    })
}

/// Every unlock key this node knows (never a share).
pub fn list_keys(store: &Store) -> Result<Vec<UnlockKeyRecord>, NodeError> {
    let s = sql(store);
    let mut stmt =
        store.conn().prepare(&format!("SELECT {KEY_COLUMNS} FROM unlock_keys ORDER BY consortium")).map_err(&s)?;
    let mut rows = stmt.query([]).map_err(&s)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(&s)? {
        out.push(read_key(store, r)?);
    }
    Ok(out)
}

/// The unlock key of `consortium`, if known here.
pub fn get_key(store: &Store, consortium: &str) -> Result<Option<UnlockKeyRecord>, NodeError> {
    let s = sql(store);
    let mut stmt =
        store.conn().prepare(&format!("SELECT {KEY_COLUMNS} FROM unlock_keys WHERE consortium = ?1")).map_err(&s)?;
    let mut rows = stmt.query([consortium]).map_err(&s)?;
    match rows.next().map_err(&s)? {
        Some(r) => read_key(store, r).map(Some),
        None => Ok(None),
    }
}

fn begin_key(store: &Store, consortium: &str, members: &[String], t: u16, coordinator: &str) -> Result<(), NodeError> {
    let s = sql(store);
    let members = serde_json::to_string(members).map_err(|e| NodeError::Unlock(e.to_string()))?;
    let conn = store.conn();
    conn.execute("DELETE FROM unlock_keys WHERE consortium = ?1 AND state = 'failed'", [consortium]).map_err(&s)?;
    let n = conn
        .execute(
            "INSERT OR IGNORE INTO unlock_keys (consortium, members, threshold, coordinator, state, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'creating', ?5, ?5)",
            params![consortium, members, t, coordinator, unix_now()],
        )
        .map_err(&s)?;
    if n == 0 {
        return Err(NodeError::Unlock(format!("consortium {consortium:?} has an unlock key already on this node")));
    }
    conn.execute("DELETE FROM unlock_key_shares WHERE consortium = ?1", [consortium]).map_err(&s)?;
    Ok(())
}

fn set_key_state(store: &Store, consortium: &str, state: &str, reason: Option<&str>) -> Result<(), NodeError> {
    let s = sql(store);
    store
        .conn()
        .execute(
            "UPDATE unlock_keys SET state = ?2, reason = ?3, updated_at = ?4 WHERE consortium = ?1",
            params![consortium, state, reason, unix_now()],
        )
        .map_err(&s)?;
    if state == "failed" {
        store.conn().execute("DELETE FROM unlock_key_shares WHERE consortium = ?1", [consortium]).map_err(&s)?;
    }
    Ok(())
}

fn store_share(store: &Store, consortium: &str, share: &UnlockShare, key: &UnlockPublicKey) -> Result<(), NodeError> {
    let s = sql(store);
    let secret =
        share.export_secret().map_err(|e| NodeError::Unlock(format!("cannot export the unlock share: {e}")))?;
    let key = serde_json::to_string(key).map_err(|e| NodeError::Unlock(e.to_string()))?;
    let conn = store.conn();
    conn.execute(
        "INSERT OR REPLACE INTO unlock_key_shares (consortium, secret) VALUES (?1, ?2)",
        params![consortium, secret.as_str()],
    )
    .map_err(&s)?;
    conn.execute(
        "UPDATE unlock_keys SET public_key = ?2, updated_at = ?3 WHERE consortium = ?1",
        params![consortium, key, unix_now()],
    )
    .map_err(&s)?;
    Ok(())
}

fn load_share(store: &Store, consortium: &str) -> Result<UnlockShare, NodeError> {
    let s = sql(store);
    let secret: Option<zeroize::Zeroizing<String>> = store
        .conn()
        .query_row("SELECT secret FROM unlock_key_shares WHERE consortium = ?1", [consortium], |r| {
            r.get::<_, String>(0).map(zeroize::Zeroizing::new)
        })
        .optional()
        .map_err(&s)?;
    let secret =
        secret.ok_or_else(|| NodeError::Unlock(format!("no unlock share for consortium {consortium:?} here")))?;
    UnlockShare::import_secret(&secret)
        .map_err(|e| corrupt(store, format!("unlock share of consortium {consortium:?}: {e}")))
}

/// An unlock request as a node stores it: every member has one (with its
/// operator's decision); the requester also collects the members' answers.
#[derive(Clone, Debug, Serialize)]
pub struct UnlockRequestRecord {
    /// Request id (32 hex digits).
    pub id: String,
    /// Consortium whose key sealed the file.
    pub consortium: String,
    /// The node that collects the decryption shares.
    pub requester: String,
    /// SHA-256 of the sealed file, hex (computed by this node).
    pub digest: String,
    /// Size of the sealed file, bytes.
    pub size: usize,
    /// Why the requester wants it opened.
    pub reason: String,
    /// This node's operator's decision: `pending`, `approved` or `rejected`.
    pub decision: String,
    /// Who decided.
    pub decided_by: Option<String>,
    /// The rejection's reason.
    pub decision_reason: Option<String>,
    /// Unix seconds.
    pub decided_at: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
}

const REQ_COLUMNS: &str =
    "id, consortium, requester, digest, size, reason, decision, decided_by, decision_reason, decided_at, created_at";

fn read_request(store: &Store, r: &rusqlite::Row<'_>) -> Result<UnlockRequestRecord, NodeError> {
    let s = sql(store);
    let size: i64 = r.get(4).map_err(&s)?;
    Ok(UnlockRequestRecord {
        id: r.get(0).map_err(&s)?,
        consortium: r.get(1).map_err(&s)?,
        requester: r.get(2).map_err(&s)?,
        digest: r.get(3).map_err(&s)?,
        size: usize::try_from(size).map_err(|_| corrupt(store, format!("unlock request size {size}")))?,
        reason: r.get(5).map_err(&s)?,
        decision: r.get(6).map_err(&s)?,
        decided_by: r.get(7).map_err(&s)?,
        decision_reason: r.get(8).map_err(&s)?,
        decided_at: r.get(9).map_err(&s)?,
        created_at: r.get(10).map_err(&s)?,
    })
}

/// Every unlock request this node knows, newest first.
pub fn list_requests(store: &Store) -> Result<Vec<UnlockRequestRecord>, NodeError> {
    let s = sql(store);
    let mut stmt = store
        .conn()
        .prepare(&format!("SELECT {REQ_COLUMNS} FROM unlock_requests ORDER BY created_at DESC, rowid DESC"))
        .map_err(&s)?;
    let mut rows = stmt.query([]).map_err(&s)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(&s)? {
        out.push(read_request(store, r)?);
    }
    Ok(out)
}

/// Unlock request `id`, if known here.
pub fn get_request(store: &Store, id: &str) -> Result<Option<UnlockRequestRecord>, NodeError> {
    let s = sql(store);
    let mut stmt =
        store.conn().prepare(&format!("SELECT {REQ_COLUMNS} FROM unlock_requests WHERE id = ?1")).map_err(&s)?;
    let mut rows = stmt.query([id]).map_err(&s)?;
    match rows.next().map_err(&s)? {
        Some(r) => read_request(store, r).map(Some),
        None => Ok(None),
    }
}

fn insert_request(
    store: &Store,
    id: &str,
    consortium: &str,
    requester: &str,
    sealed: &SealedFile,
    reason: &str,
) -> Result<(), NodeError> {
    let s = sql(store);
    let n = store
        .conn()
        .execute(
            "INSERT OR IGNORE INTO unlock_requests (id, consortium, requester, digest, size, sealed, reason, decision, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8)",
            params![
                id,
                consortium,
                requester,
                hex(&sealed.digest()),
                sealed.as_bytes().len() as i64,
                sealed.as_bytes(),
                reason,
                unix_now()
            ],
        )
        .map_err(&s)?;
    if n == 0 {
        return Err(NodeError::Unlock(format!("an unlock request {id} exists already on this node")));
    }
    Ok(())
}

fn load_sealed(store: &Store, id: &str) -> Result<SealedFile, NodeError> {
    let s = sql(store);
    let bytes: Vec<u8> =
        store.conn().query_row("SELECT sealed FROM unlock_requests WHERE id = ?1", [id], |r| r.get(0)).map_err(&s)?;
    SealedFile::from_bytes(&bytes).map_err(|e| corrupt(store, format!("sealed file of unlock request {id}: {e}")))
}

fn decide(store: &Store, id: &str, decision: &str, by: &str, reason: Option<&str>) -> Result<(), NodeError> {
    let s = sql(store);
    store
        .conn()
        .execute(
            "UPDATE unlock_requests SET decision = ?2, decided_by = ?3, decision_reason = ?4, decided_at = ?5
             WHERE id = ?1 AND decision = 'pending'",
            params![id, decision, by, reason, unix_now()],
        )
        .map_err(&s)?;
    Ok(())
}

/// A member's answer to an unlock request, as the requester stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The member's node name.
    pub member: String,
    /// Its index in the consortium (1-based).
    pub index: u16,
    /// `pending`, `approved`, `rejected` or `unreachable` (the request never reached it).
    pub decision: String,
    /// Why it rejected, or why it was unreachable.
    pub reason: Option<String>,
    /// Its decryption share, once approved.
    pub share: Option<DecryptionShare>,
}

fn put_response(
    store: &Store,
    id: &str,
    member: &str,
    decision: &str,
    reason: Option<&str>,
    share: Option<&DecryptionShare>,
) -> Result<(), NodeError> {
    let s = sql(store);
    let share = share.map(serde_json::to_string).transpose().map_err(|e| NodeError::Unlock(e.to_string()))?;
    store
        .conn()
        .execute(
            "INSERT OR REPLACE INTO unlock_responses (request_id, member, decision, reason, share, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, member, decision, reason, share, unix_now()],
        )
        .map_err(&s)?;
    Ok(())
}

/// The answers collected for request `id` (requester only): one per member, `pending` if none yet.
pub fn responses(store: &Store, id: &str, members: &[String]) -> Result<Vec<Response>, NodeError> {
    let s = sql(store);
    let mut stmt = store
        .conn()
        .prepare("SELECT member, decision, reason, share FROM unlock_responses WHERE request_id = ?1")
        .map_err(&s)?;
    let mut rows = stmt.query([id]).map_err(&s)?;
    let mut got: HashMap<String, (String, Option<String>, Option<String>)> = HashMap::new();
    while let Some(r) = rows.next().map_err(&s)? {
        got.insert(r.get(0).map_err(&s)?, (r.get(1).map_err(&s)?, r.get(2).map_err(&s)?, r.get(3).map_err(&s)?));
    }
    let mut out = Vec::with_capacity(members.len());
    for (i, m) in members.iter().enumerate() {
        let (decision, reason, share) = got.remove(m).unwrap_or_else(|| ("pending".into(), None, None));
        let share = share
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|e| corrupt(store, format!("decryption share of {m:?} for unlock request {id}: {e}")))?;
        out.push(Response { member: m.clone(), index: i as u16 + 1, decision, reason, share });
    }
    Ok(out)
}

// -------------------------------------------------------------------------
// Opening a sealed file with the collected shares (pure; used by `concord unseal`).

/// The outcome of [`open_sealed`].
#[derive(Debug, Default)]
pub struct Opening {
    /// The content, if `t` valid shares were among those given.
    pub plaintext: Option<Vec<u8>>,
    /// Members whose share was refused, with why (a forged share, a share for another file).
    pub refused: Vec<(String, String)>,
    /// How many valid shares were used or found.
    pub valid: usize,
}

/// Open `file` with the decryption shares of the named members (`members`
/// in index order). Every share's Chaum-Pedersen proof is checked by
/// [`concord_threshold::unseal`]; a refused share is set aside, named, and
/// the others are tried again. Fewer than `t` valid shares: no plaintext.
/// Errors that blame no member (the file failed authentication: it was
/// altered) are returned as errors.
pub fn open_sealed(
    key: &UnlockPublicKey,
    members: &[String],
    file: &SealedFile,
    shares: &[(String, DecryptionShare)],
) -> Result<Opening, NodeError> {
    let mut indexed = Vec::with_capacity(shares.len());
    for (m, s) in shares {
        let i = members
            .iter()
            .position(|x| x == m)
            .ok_or_else(|| NodeError::Unlock(format!("{m:?} is not a member of the consortium")))?;
        indexed.push((i as u16 + 1, s.clone()));
    }
    let mut out = Opening::default();
    loop {
        if indexed.len() < usize::from(key.threshold()) {
            out.valid = indexed.len();
            return Ok(out);
        }
        match concord_threshold::unseal(key, file, &indexed) {
            Ok(plain) => {
                out.valid = indexed.len();
                out.plaintext = Some(plain);
                return Ok(out);
            }
            Err(e) => match e.culprit() {
                Some(i) => {
                    let name = members.get(usize::from(i) - 1).cloned().unwrap_or_else(|| format!("member {i}"));
                    out.refused.push((name, e.to_string()));
                    indexed.retain(|(j, _)| *j != i);
                }
                None => return Err(NodeError::Unlock(format!("cannot open the sealed file: {e}"))),
            },
        }
    }
}

// -------------------------------------------------------------------------
// The service side.

fn err(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError { code, message: message.into() }
}

fn internal(e: impl std::fmt::Display) -> ServiceError {
    err("internal", e.to_string())
}

fn reply(r: UnlockReply) -> Result<PeerReply, ServiceError> {
    Ok(PeerReply::Unlock(Box::new(r)))
}

/// A CSPRNG seeded from the operating system.
fn os_rng() -> rand_chacha::ChaCha12Rng {
    <rand_chacha::ChaCha12Rng as rand_core::SeedableRng>::from_os_rng()
}

fn blame(members: &[String], step: &str, e: &ThresholdError) -> ServiceError {
    match e.culprit().and_then(|i| members.get(usize::from(i).wrapping_sub(1))) {
        Some(name) => err("misbehaviour", format!("{step}: member {name:?} misbehaved: {e}")),
        None => err("dkg_failed", format!("{step}: {e}")),
    }
}

fn index_of(members: &[String], name: &str) -> Option<u16> {
    members.iter().position(|m| m == name).map(|i| i as u16 + 1)
}

fn no_dkg(me: &str, consortium: &str) -> ServiceError {
    err("bad_state", format!("node {me:?} runs no unlock key generation for consortium {consortium:?}"))
}

fn check_id(id: &str) -> Result<(), ServiceError> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(err("bad_request", format!("unlock request id {id:?} is not 32 lower-case hex digits")))
    }
}

fn check_reason(what: &str, reason: &str) -> Result<(), ServiceError> {
    if reason.chars().count() > MAX_REASON {
        return Err(err("bad_request", format!("{what} is longer than {MAX_REASON} characters")));
    }
    Ok(())
}

/// Replace the share of `d` by another valid group element (test hook).
fn forge(key: &UnlockPublicKey, d: DecryptionShare) -> Result<DecryptionShare, ServiceError> {
    let other = concord_threshold::seal(key, b"forged", &mut os_rng()).map_err(internal)?;
    let mut v = serde_json::to_value(&d).map_err(internal)?;
    // The "share" of a fresh random element: `R` of another sealed file is a valid point.
    let r = other.as_bytes().get(9..41).ok_or_else(|| internal("short sealed file"))?;
    v["share"] = Value::String(hex(r));
    serde_json::from_value(v).map_err(internal)
}

/// Which decision an operator takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Compute and send this node's decryption share.
    Approve,
    /// Refuse (the requester is told).
    Reject,
}

impl Service {
    async fn unlock_call(&self, member: &str, msg: UnlockMsg) -> Result<PeerReply, ServiceError> {
        if member == self.name() {
            let me = self.name().to_owned();
            return self.handle_unlock(&me, msg).await;
        }
        self.call(member, &PeerRequest::Unlock(msg)).await
    }

    async fn unlock_ask(&self, member: &str, msg: UnlockMsg) -> Result<UnlockReply, ServiceError> {
        match self.unlock_call(member, msg).await? {
            PeerReply::Unlock(r) => Ok(*r),
            other => Err(err("bad_peer_reply", format!("{member:?} answered {other:?}"))),
        }
    }

    /// Handle an unlock control message from `from` (authenticated peer name).
    pub(crate) async fn on_unlock(&self, from: &str, msg: UnlockMsg) -> PeerReply {
        match self.handle_unlock(from, msg).await {
            Ok(r) => r,
            Err(e) => PeerReply::Error { code: e.code.to_owned(), message: e.message },
        }
    }

    async fn handle_unlock(&self, from: &str, msg: UnlockMsg) -> Result<PeerReply, ServiceError> {
        let me = self.name().to_owned();
        match msg {
            UnlockMsg::DkgStart { consortium, members, threshold } => {
                let rec = crate::consortium::get(&self.store(), &consortium)?.ok_or_else(|| {
                    err("unknown_consortium", format!("node {me:?} knows no consortium named {consortium:?}"))
                })?;
                if rec.state != "active" {
                    return Err(err(
                        "unknown_consortium",
                        format!("consortium {consortium:?} is {} on {me:?}", rec.state),
                    ));
                }
                if rec.members != members || rec.threshold != threshold {
                    return Err(err(
                        "bad_request",
                        format!(
                            "consortium {consortium:?} on {me:?} is {} of {:?}, not {threshold} of {members:?}",
                            rec.threshold, rec.members
                        ),
                    ));
                }
                let index = index_of(&members, &me)
                    .ok_or_else(|| err("not_a_member", format!("node {me:?} is not a member of {consortium:?}")))?;
                if index_of(&members, from).is_none() {
                    return Err(err("not_a_member", format!("{from:?} is not a member of {consortium:?}")));
                }
                begin_key(&self.store(), &consortium, &members, threshold, from)?;
                let n = members.len() as u16;
                let (secret, message) =
                    concord_threshold::unlock_dkg_round1(index, n, threshold, &mut os_rng()).map_err(internal)?;
                rounds().insert(
                    (me.clone(), consortium.clone()),
                    Dkg {
                        members,
                        coordinator: from.to_owned(),
                        stage: Some(Stage::Round1(secret)),
                        inbox: BTreeMap::new(),
                    },
                );
                tracing::info!(consortium = %consortium, coordinator = from, "unlock DKG round 1");
                reply(UnlockReply::Round1 { message })
            }
            UnlockMsg::DkgRound1 { consortium, round1 } => {
                let (secret, members) = self.take_stage(from, &consortium)?;
                let Stage::Round1(secret) = secret else {
                    return Err(err(
                        "bad_state",
                        format!("the unlock DKG of {consortium:?} on {me:?} is not in round 1"),
                    ));
                };
                let round1 = by_index(round1, index_of(&members, &me))?;
                let (secret, message) = concord_threshold::unlock_dkg_round2(secret, &round1)
                    .map_err(|e| blame(&members, &format!("unlock DKG round 2 on {me:?}"), &e))?;
                self.put_stage(&consortium, Stage::Round2(secret));
                reply(UnlockReply::Round2 { message })
            }
            UnlockMsg::DkgRound2 { consortium, round2 } => {
                let (secret, members) = self.take_stage(from, &consortium)?;
                let Stage::Round2(secret) = secret else {
                    return Err(err(
                        "bad_state",
                        format!("the unlock DKG of {consortium:?} on {me:?} is not in round 2"),
                    ));
                };
                let round2 = by_index(round2, index_of(&members, &me))?;
                let (secret, out) = concord_threshold::unlock_dkg_round3(secret, &round2)
                    .map_err(|e| blame(&members, &format!("unlock DKG round 3 on {me:?}"), &e))?;
                self.put_stage(&consortium, Stage::Round3(secret));
                // Each share goes directly to its recipient, never through another node.
                for (to, message) in out {
                    let member = members
                        .get(usize::from(to).wrapping_sub(1))
                        .ok_or_else(|| internal(format!("no member {to}")))?
                        .clone();
                    let msg = UnlockMsg::DkgRound3 { consortium: consortium.clone(), message };
                    self.call(&member, &PeerRequest::Unlock(msg)).await.map_err(|e| {
                        err(e.code, format!("{me:?} could not deliver its unlock share to {member:?}: {}", e.message))
                    })?;
                }
                Ok(PeerReply::Ok)
            }
            UnlockMsg::DkgRound3 { consortium, message } => {
                let mut rounds = rounds();
                let dkg = rounds.get_mut(&(me.clone(), consortium.clone())).ok_or_else(|| no_dkg(&me, &consortium))?;
                let sender = index_of(&dkg.members, from)
                    .ok_or_else(|| err("not_a_member", format!("{from:?} is not a member of {consortium:?}")))?;
                if Some(sender) == index_of(&dkg.members, &me) || dkg.inbox.insert(sender, message).is_some() {
                    return Err(err("bad_request", format!("a second unlock share from {from:?} for {consortium:?}")));
                }
                Ok(PeerReply::Ok)
            }
            UnlockMsg::DkgFinish { consortium } => {
                let dkg = {
                    let mut rounds = rounds();
                    let key = (me.clone(), consortium.clone());
                    match rounds.get(&key) {
                        None => return Err(no_dkg(&me, &consortium)),
                        Some(d) if d.coordinator != from => {
                            return Err(err(
                                "not_coordinator",
                                format!("{from:?} does not run the unlock DKG of {consortium:?}"),
                            ))
                        }
                        Some(_) => {}
                    }
                    // The round state is deleted here, whatever the outcome.
                    rounds.remove(&key).ok_or_else(|| no_dkg(&me, &consortium))?
                };
                let Some(Stage::Round3(secret)) = dkg.stage else {
                    return Err(err(
                        "bad_state",
                        format!("the unlock DKG of {consortium:?} on {me:?} is not in round 3"),
                    ));
                };
                let (share, public_key) = concord_threshold::unlock_dkg_finish(secret, &dkg.inbox)
                    .map_err(|e| blame(&dkg.members, &format!("unlock DKG finish on {me:?}"), &e))?;
                store_share(&self.store(), &consortium, &share, &public_key)?;
                tracing::info!(consortium = %consortium, "unlock key share stored");
                reply(UnlockReply::Finished { public_key })
            }
            UnlockMsg::DkgOutcome { consortium, active, reason } => {
                let rec = get_key(&self.store(), &consortium)?.ok_or_else(|| no_dkg(&me, &consortium))?;
                if rec.coordinator != from || rec.state != "creating" {
                    return Err(err(
                        "not_coordinator",
                        format!("{from:?} runs no unlock key generation of {consortium:?} here (it is {})", rec.state),
                    ));
                }
                rounds().remove(&(me.clone(), consortium.clone()));
                let state = if active { "active" } else { "failed" };
                set_key_state(&self.store(), &consortium, state, reason.as_deref())?;
                let _ = self.store().record_event(
                    &format!("unlock_key.{state}"),
                    &format!(
                        "the unlock key of consortium {consortium:?} is {state}{}",
                        reason.map(|r| format!(": {r}")).unwrap_or_default()
                    ),
                );
                Ok(PeerReply::Ok)
            }
            UnlockMsg::Request { id, consortium, sealed, reason } => {
                check_id(&id)?;
                check_reason("the reason", &reason)?;
                if sealed.as_bytes().len() > MAX_SEALED_FILE {
                    return Err(err("bad_request", format!("sealed file larger than {MAX_SEALED_FILE} bytes")));
                }
                let key = self.active_key(&consortium)?;
                if index_of(&key.members, from).is_none() {
                    return Err(err(
                        "not_a_member",
                        format!("{from:?} is not a member of consortium {consortium:?}: it cannot request an unlock"),
                    ));
                }
                insert_request(&self.store(), &id, &consortium, from, &sealed, &reason)?;
                let _ = self.store().record_event(
                    "unlock.request",
                    &format!(
                        "unlock request {id} from {from:?} (consortium {consortium:?}, file {}) awaits the operator: {reason}",
                        hex(&sealed.digest())
                    ),
                );
                tracing::info!(request = %id, requester = from, consortium = %consortium, "unlock request awaits the operator");
                Ok(PeerReply::Ok)
            }
            UnlockMsg::Share { id, share } => {
                let (_, key) = self.own_request(from, &id)?;
                self.check_open_response(from, &id, &key)?;
                put_response(&self.store(), &id, from, "approved", None, Some(&share))?;
                tracing::info!(request = %id, member = from, "decryption share received");
                Ok(PeerReply::Ok)
            }
            UnlockMsg::Rejected { id, reason } => {
                check_reason("the reason", &reason)?;
                let (_, key) = self.own_request(from, &id)?;
                self.check_open_response(from, &id, &key)?;
                put_response(&self.store(), &id, from, "rejected", Some(&reason), None)?;
                tracing::info!(request = %id, member = from, "unlock request rejected");
                Ok(PeerReply::Ok)
            }
        }
    }

    /// Take the DKG stage of `consortium` (checking `from` runs it).
    fn take_stage(&self, from: &str, consortium: &str) -> Result<(Stage, Vec<String>), ServiceError> {
        let me = self.name().to_owned();
        let mut rounds = rounds();
        let dkg = rounds.get_mut(&(me.clone(), consortium.to_owned())).ok_or_else(|| no_dkg(&me, consortium))?;
        if dkg.coordinator != from {
            return Err(err("not_coordinator", format!("{from:?} does not run the unlock DKG of {consortium:?}")));
        }
        let stage = dkg
            .stage
            .take()
            .ok_or_else(|| err("bad_state", format!("the unlock DKG of {consortium:?} on {me:?} is in no round")))?;
        Ok((stage, dkg.members.clone()))
    }

    fn put_stage(&self, consortium: &str, stage: Stage) {
        if let Some(dkg) = rounds().get_mut(&(self.name().to_owned(), consortium.to_owned())) {
            dkg.stage = Some(stage);
        }
    }

    fn active_key(&self, consortium: &str) -> Result<UnlockKeyRecord, ServiceError> {
        let me = self.name();
        let key = get_key(&self.store(), consortium)?.ok_or_else(|| {
            err("unknown_unlock_key", format!("node {me:?} has no unlock key for consortium {consortium:?}"))
        })?;
        if key.state != "active" {
            return Err(err(
                "unknown_unlock_key",
                format!("the unlock key of consortium {consortium:?} is {} on node {me:?}", key.state),
            ));
        }
        Ok(key)
    }

    /// Request `id`, which this node made, and its key; `from` must be a member.
    fn own_request(&self, from: &str, id: &str) -> Result<(UnlockRequestRecord, UnlockKeyRecord), ServiceError> {
        let me = self.name().to_owned();
        let rec = get_request(&self.store(), id)?
            .ok_or_else(|| err("unknown_unlock_request", format!("node {me:?} has no unlock request {id}")))?;
        if rec.requester != me {
            return Err(err("not_requester", format!("node {me:?} did not make unlock request {id}")));
        }
        let key = self.active_key(&rec.consortium)?;
        if index_of(&key.members, from).is_none() {
            return Err(err("not_a_member", format!("{from:?} is not a member of consortium {:?}", rec.consortium)));
        }
        Ok((rec, key))
    }

    fn check_open_response(&self, from: &str, id: &str, key: &UnlockKeyRecord) -> Result<(), ServiceError> {
        let got = responses(&self.store(), id, &key.members)?;
        if got.iter().any(|r| r.member == from && (r.decision == "approved" || r.decision == "rejected")) {
            return Err(err("bad_request", format!("{from:?} answered unlock request {id} already")));
        }
        Ok(())
    }

    /// `POST /api/unlock-keys`: run the unlock DKG for consortium `name` (this node must be a member).
    pub async fn setup_unlock_key(&self, consortium: &str) -> Result<UnlockKeyRecord, ServiceError> {
        let me = self.name().to_owned();
        let rec = crate::consortium::get(&self.store(), consortium)?.ok_or_else(|| {
            err("unknown_consortium", format!("node {me:?} knows no consortium named {consortium:?}"))
        })?;
        if rec.state != "active" {
            return Err(err(
                "unknown_consortium",
                format!("consortium {consortium:?} is {} on node {me:?}", rec.state),
            ));
        }
        if index_of(&rec.members, &me).is_none() {
            return Err(err(
                "bad_request",
                format!("node {me:?} is not a member of {consortium:?}; ask a member node"),
            ));
        }
        if let Some(k) = get_key(&self.store(), consortium)? {
            if k.state != "failed" {
                return Err(err(
                    "unlock_key_exists",
                    format!("consortium {consortium:?} has an unlock key already ({})", k.state),
                ));
            }
        }
        let started = std::time::Instant::now();
        match self.run_unlock_dkg(consortium, &rec.members, rec.threshold).await {
            Ok(()) => {
                tracing::info!(consortium = %consortium, ms = started.elapsed().as_millis() as u64, "unlock key active");
            }
            Err(reason) => {
                for m in &rec.members {
                    let msg = UnlockMsg::DkgOutcome {
                        consortium: consortium.to_owned(),
                        active: false,
                        reason: Some(reason.clone()),
                    };
                    let _ = self.unlock_call(m, msg).await;
                }
                rounds().remove(&(me.clone(), consortium.to_owned()));
                let missing = get_key(&self.store(), consortium)?.is_none();
                if missing {
                    begin_key(&self.store(), consortium, &rec.members, rec.threshold, &me)?;
                }
                set_key_state(&self.store(), consortium, "failed", Some(&reason))?;
                return Err(err("dkg_failed", format!("the unlock key of {consortium:?} failed: {reason}")));
            }
        }
        get_key(&self.store(), consortium)?.ok_or_else(|| internal("the unlock key vanished"))
    }

    async fn run_unlock_dkg(&self, consortium: &str, members: &[String], t: u16) -> Result<(), String> {
        let c = consortium.to_owned();
        let mut round1 = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let msg = UnlockMsg::DkgStart { consortium: c.clone(), members: members.to_vec(), threshold: t };
            match self.unlock_ask(m, msg).await {
                Ok(UnlockReply::Round1 { message }) => {
                    round1.push(Indexed { index: i as u16 + 1, message });
                }
                Ok(other) => return Err(format!("member {m:?} answered round 1 with {other:?}")),
                Err(e) => return Err(format!("member {m:?} failed round 1: {}", e.message)),
            }
        }
        let mut round2 = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let msg = UnlockMsg::DkgRound1 { consortium: c.clone(), round1: round1.clone() };
            match self.unlock_ask(m, msg).await {
                Ok(UnlockReply::Round2 { message }) => {
                    round2.push(Indexed { index: i as u16 + 1, message });
                }
                Ok(other) => return Err(format!("member {m:?} answered round 2 with {other:?}")),
                Err(e) => return Err(format!("member {m:?} failed round 2: {}", e.message)),
            }
        }
        // Round 3: members send their secret shares to each other directly, concurrently.
        let mut calls = Vec::new();
        for m in members {
            let (svc, m, msg) =
                (self.clone(), m.clone(), UnlockMsg::DkgRound2 { consortium: c.clone(), round2: round2.clone() });
            calls.push(tokio::spawn(async move {
                let r = svc.unlock_call(&m, msg).await;
                (m, r)
            }));
        }
        for call in calls {
            match call.await {
                Ok((_, Ok(_))) => {}
                Ok((m, Err(e))) => return Err(format!("member {m:?} failed round 3: {}", e.message)),
                Err(e) => return Err(format!("internal: {e}")),
            }
        }
        let mut keys = Vec::with_capacity(members.len());
        for m in members {
            match self.unlock_ask(m, UnlockMsg::DkgFinish { consortium: c.clone() }).await {
                Ok(UnlockReply::Finished { public_key }) => {
                    let json = serde_json::to_string(&public_key).map_err(|e| e.to_string())?;
                    keys.push((m.clone(), json));
                }
                Ok(other) => return Err(format!("member {m:?} answered the last round with {other:?}")),
                Err(e) => return Err(format!("member {m:?} failed the last round: {}", e.message)),
            }
        }
        let (first_name, first) = keys.first().cloned().ok_or("no members")?;
        for (m, k) in &keys {
            if *k != first {
                return Err(format!("member {m:?} derived another unlock public key than {first_name:?}"));
            }
        }
        for m in members {
            let msg = UnlockMsg::DkgOutcome { consortium: c.clone(), active: true, reason: None };
            self.unlock_call(m, msg).await.map_err(|e| format!("member {m:?} could not activate: {}", e.message))?;
        }
        Ok(())
    }

    /// `POST /api/unlock-requests`: store the request here (this node collects
    /// the shares) and forward it to every other member. A member that cannot
    /// be reached is recorded as `unreachable`.
    pub async fn request_unlock(
        &self,
        consortium: Option<&str>,
        sealed: SealedFile,
        reason: &str,
    ) -> Result<String, ServiceError> {
        let me = self.name().to_owned();
        check_reason("the reason", reason)?;
        if sealed.as_bytes().len() > MAX_SEALED_FILE {
            return Err(err("bad_request", format!("the sealed file is larger than {MAX_SEALED_FILE} bytes")));
        }
        let consortium = match consortium {
            Some(c) => c.to_owned(),
            None => {
                let keys = list_keys(&self.store())?;
                let active: Vec<String> =
                    keys.into_iter().filter(|k| k.state == "active").map(|k| k.consortium).collect();
                match active.as_slice() {
                    [one] => one.clone(),
                    [] => return Err(err("unknown_unlock_key", format!("node {me:?} has no active unlock key"))),
                    many => {
                        return Err(err(
                            "bad_request",
                            format!("node {me:?} has several unlock keys ({}): name the consortium", many.join(", ")),
                        ))
                    }
                }
            }
        };
        let key = self.active_key(&consortium)?;
        if index_of(&key.members, &me).is_none() {
            return Err(err("bad_request", format!("node {me:?} is not a member of {consortium:?}")));
        }
        let id = {
            let mut b = [0u8; 16];
            rand_core::RngCore::fill_bytes(&mut os_rng(), &mut b);
            hex(&b)
        };
        insert_request(&self.store(), &id, &consortium, &me, &sealed, reason)?;
        let _ = self.store().record_event(
            "unlock.request",
            &format!("unlock request {id} (consortium {consortium:?}, file {}): {reason}", hex(&sealed.digest())),
        );
        // Forwarded to every other member concurrently (one slow member does not hold up the others).
        let mut calls = Vec::new();
        for m in key.members.iter().filter(|m| **m != me) {
            let msg = UnlockMsg::Request {
                id: id.clone(),
                consortium: consortium.clone(),
                sealed: Box::new(sealed.clone()),
                reason: reason.to_owned(),
            };
            let (svc, m) = (self.clone(), m.clone());
            calls.push(tokio::spawn(async move {
                let r = svc.call(&m, &PeerRequest::Unlock(msg)).await;
                (m, r)
            }));
        }
        for call in calls {
            let (m, r) = call.await.map_err(internal)?;
            if let Err(e) = r {
                tracing::warn!(request = %id, member = %m, error = %e.message, "unlock request not delivered");
                put_response(&self.store(), &id, &m, "unreachable", Some(&e.message), None)?;
            }
        }
        Ok(id)
    }

    /// An operator's decision on unlock request `id`. Approving computes this
    /// node's decryption share and sends it to the requester (the decision
    /// is recorded once delivered); rejecting tells the requester.
    pub async fn decide_unlock(
        &self,
        id: &str,
        decision: Decision,
        by: &str,
        reason: Option<&str>,
    ) -> Result<UnlockRequestRecord, ServiceError> {
        let me = self.name().to_owned();
        check_id(id)?;
        let rec = get_request(&self.store(), id)?
            .ok_or_else(|| err("unknown_unlock_request", format!("node {me:?} has no unlock request {id}")))?;
        if rec.decision != "pending" {
            return Err(err(
                "already_decided",
                format!("unlock request {id} was {} already on node {me:?}", rec.decision),
            ));
        }
        let key = self.active_key(&rec.consortium)?;
        let msg = match decision {
            Decision::Approve => {
                let share = load_share(&self.store(), &rec.consortium)?;
                let sealed = load_sealed(&self.store(), id)?;
                let mut d = concord_threshold::decryption_share(&share, &sealed, &mut os_rng()).map_err(internal)?;
                drop(share);
                if std::env::var(FORGE_SHARE_ENV).as_deref() == Ok("1") {
                    let public = key.public_key.clone().ok_or_else(|| internal("no public key"))?;
                    tracing::warn!("{FORGE_SHARE_ENV} is set: sending a forged decryption share (a test hook)");
                    d = forge(&public, d)?;
                }
                UnlockMsg::Share { id: id.to_owned(), share: Box::new(d) }
            }
            Decision::Reject => {
                let why = reason.unwrap_or("no reason given");
                check_reason("the reason", why)?;
                UnlockMsg::Rejected { id: id.to_owned(), reason: why.to_owned() }
            }
        };
        self.unlock_call(&rec.requester, msg).await.map_err(|e| {
            err(
                e.code,
                format!("node {me:?} could not send its answer to the requester {:?}: {}", rec.requester, e.message),
            )
        })?;
        let (word, reason) = match decision {
            Decision::Approve => ("approved", None),
            Decision::Reject => ("rejected", Some(reason.unwrap_or("no reason given"))),
        };
        decide(&self.store(), id, word, by, reason)?;
        let _ = self.store().record_event(
            &format!("unlock.{word}"),
            &format!("unlock request {id} from {:?} {word} by {by}", rec.requester),
        );
        get_request(&self.store(), id)?.ok_or_else(|| internal("the unlock request vanished"))
    }
}

// -------------------------------------------------------------------------
// HTTP API (routes in crate::server).

fn service_failure(e: ServiceError) -> ApiFailure {
    use axum::http::StatusCode;
    let status = match e.code {
        "bad_request" | "unknown_peer" => StatusCode::BAD_REQUEST,
        "unknown_consortium" | "unknown_unlock_key" | "unknown_unlock_request" => StatusCode::NOT_FOUND,
        "peer_down" | "peer_unreachable" => StatusCode::SERVICE_UNAVAILABLE,
        "unlock_key_exists" | "already_decided" => StatusCode::CONFLICT,
        "dkg_failed" | "peer_refused" | "bad_peer_reply" => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    api_error(status, e.code, e.message)
}

fn node_failure(e: NodeError) -> ApiFailure {
    api_error(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

fn with_store<T>(
    state: &crate::server::AppState,
    f: impl FnOnce(&mut Store) -> Result<T, NodeError>,
) -> Result<T, ApiFailure> {
    state
        .with_store(f)
        .ok_or_else(|| {
            api_error(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", "the store lock is poisoned".into())
        })?
        .map_err(node_failure)
}

fn service(state: &crate::server::AppState) -> Result<&Service, ApiFailure> {
    state.node_service().ok_or_else(|| {
        api_error(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "no_service",
            "this server runs without the node service".into(),
        )
    })
}

/// `GET /api/unlock-keys`: `{"unlock_keys": [...]}` (public keys and states; never a share).
pub async fn api_list_keys(axum::extract::State(state): axum::extract::State<crate::server::AppState>) -> ApiResult {
    let keys = with_store(&state, |s| list_keys(s))?;
    Ok((axum::http::StatusCode::OK, axum::Json(json!({ "unlock_keys": keys }))))
}

/// Body of `POST /api/unlock-keys`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupBody {
    consortium: String,
}

/// `POST /api/unlock-keys` `{"consortium"}`: run the unlock DKG; answers the key once active.
pub async fn api_setup(
    axum::extract::State(state): axum::extract::State<crate::server::AppState>,
    body: axum::body::Bytes,
) -> ApiResult {
    use axum::http::StatusCode;
    let req: SetupBody = serde_json::from_slice(&body)
        .map_err(|e| api_error(StatusCode::BAD_REQUEST, "bad_request", format!("unlock key request: {e}")))?;
    let rec = service(&state)?.setup_unlock_key(&req.consortium).await.map_err(service_failure)?;
    Ok((StatusCode::CREATED, axum::Json(json!(rec))))
}

/// `GET /api/unlock-requests`: every unlock request this node knows, with its operator's decision.
pub async fn api_list_requests(
    axum::extract::State(state): axum::extract::State<crate::server::AppState>,
) -> ApiResult {
    let list = with_store(&state, |s| list_requests(s))?;
    Ok((axum::http::StatusCode::OK, axum::Json(json!({ "unlock_requests": list }))))
}

/// Body of `POST /api/unlock-requests`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBody {
    consortium: Option<String>,
    /// Hex of the sealed file.
    sealed: String,
    #[serde(default)]
    reason: String,
}

/// The view of request `id`: the record, and on the requester the members'
/// answers (with their decryption shares), the threshold and the public key.
fn request_view(store: &Store, id: &str, me: &str) -> Result<Option<Value>, NodeError> {
    let Some(rec) = get_request(store, id)? else { return Ok(None) };
    let mut v = json!(rec);
    if rec.requester == me {
        if let Some(key) = get_key(store, &rec.consortium)? {
            let got = responses(store, id, &key.members)?;
            let approvals = got.iter().filter(|r| r.decision == "approved").count();
            v["threshold"] = json!(key.threshold);
            v["members"] = json!(key.members);
            v["public_key"] = json!(key.public_key);
            v["approvals"] = json!(approvals);
            v["responses"] = json!(got);
        }
    }
    Ok(Some(v))
}

/// `POST /api/unlock-requests` `{"consortium"?, "sealed": hex, "reason"}`:
/// submit an unlock request (this node collects the shares); answers its view.
pub async fn api_request(
    axum::extract::State(state): axum::extract::State<crate::server::AppState>,
    body: axum::body::Bytes,
) -> ApiResult {
    use axum::http::StatusCode;
    let req: RequestBody = serde_json::from_slice(&body)
        .map_err(|e| api_error(StatusCode::BAD_REQUEST, "bad_request", format!("unlock request: {e}")))?;
    if req.sealed.len() > 2 * MAX_SEALED_FILE {
        return Err(api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the sealed file is larger than {MAX_SEALED_FILE} bytes"),
        ));
    }
    let bytes = crate::unhex(&req.sealed)
        .ok_or_else(|| api_error(StatusCode::BAD_REQUEST, "bad_request", "\"sealed\" is not hex".into()))?;
    let sealed = SealedFile::from_bytes(&bytes)
        .map_err(|e| api_error(StatusCode::BAD_REQUEST, "bad_sealed_file", e.to_string()))?;
    let svc = service(&state)?;
    let id = svc.request_unlock(req.consortium.as_deref(), sealed, &req.reason).await.map_err(service_failure)?;
    let me = svc.name().to_owned();
    let view = with_store(&state, |s| request_view(s, &id, &me))?;
    Ok((StatusCode::CREATED, axum::Json(view.unwrap_or(Value::Null))))
}

/// `GET /api/unlock-requests/{id}`.
pub async fn api_get_request(
    axum::extract::State(state): axum::extract::State<crate::server::AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult {
    use axum::http::StatusCode;
    let me = service(&state)?.name().to_owned();
    match with_store(&state, |s| request_view(s, &id, &me))? {
        Some(v) => Ok((StatusCode::OK, axum::Json(v))),
        None => Err(api_error(
            StatusCode::NOT_FOUND,
            "unknown_unlock_request",
            format!("node {me:?} has no unlock request {id:?}"),
        )),
    }
}

/// Body of an operator's decision.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    by: Option<String>,
    reason: Option<String>,
}

/// `POST /api/unlock-requests/{id}/{approve|reject}` `{"by"?, "reason"?}`.
pub async fn api_decide(
    axum::extract::State(state): axum::extract::State<crate::server::AppState>,
    axum::extract::Path((id, action)): axum::extract::Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult {
    use axum::http::StatusCode;
    let body: DecisionBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecisionBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| api_error(StatusCode::BAD_REQUEST, "bad_request", format!("{action} body: {e}")))?
    };
    let decision = match action.as_str() {
        "approve" => Decision::Approve,
        "reject" => Decision::Reject,
        other => {
            return Err(api_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("unknown decision {other:?}: expected approve or reject"),
            ))
        }
    };
    let by = body.by.unwrap_or_else(|| "the operator".into());
    let rec =
        service(&state)?.decide_unlock(&id, decision, &by, body.reason.as_deref()).await.map_err(service_failure)?;
    Ok((StatusCode::OK, axum::Json(json!(rec))))
}

/// The OpenAPI document with the unlock routes added.
pub fn with_openapi(mut doc: Value) -> Value {
    let error = json!({ "description": "Error", "content": { "application/json": {
        "schema": { "$ref": "#/components/schemas/Error" } } } });
    let obj = json!({ "description": "OK", "content": { "application/json": { "schema": { "type": "object" } } } });
    doc["paths"]["/api/unlock-keys"] = json!({
        "get": { "summary": "Unlock keys of this node's consortia: consortium, members, threshold, state, public key (shares are never served)",
            "responses": { "200": obj, "500": error } },
        "post": { "summary": "Run the unlock key generation (threshold ElGamal, no dealer) for a consortium this node is a member of",
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object",
                "required": ["consortium"], "properties": { "consortium": { "type": "string" } } } } } },
            "responses": { "201": obj, "400": error, "404": error, "409": error, "502": error, "500": error } }
    });
    doc["paths"]["/api/unlock-requests"] = json!({
        "get": { "summary": "Unlock requests this node knows, with its operator's decision", "responses": { "200": obj, "500": error } },
        "post": { "summary": "Request the unlock of a sealed file (hex); this node forwards it to every member and collects their decryption shares",
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object",
                "required": ["sealed"], "properties": { "consortium": { "type": "string" }, "sealed": { "type": "string" },
                "reason": { "type": "string" } } } } } },
            "responses": { "201": obj, "400": error, "404": error, "413": error, "500": error } }
    });
    doc["paths"]["/api/unlock-requests/{id}"] = json!({
        "get": { "summary": "One unlock request; on the requester, the members' answers and decryption shares",
            "responses": { "200": obj, "404": error } }
    });
    doc["paths"]["/api/unlock-requests/{id}/{decision}"] = json!({
        "post": { "summary": "The operator approves (sends this node's decryption share to the requester) or rejects",
            "responses": { "200": obj, "400": error, "404": error, "409": error, "502": error } }
    });
    doc
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A `t`-of-`n` unlock key made by running the DKG functions as the nodes do.
    fn dkg(n: u16, t: u16) -> (Vec<UnlockShare>, UnlockPublicKey) {
        let mut rng = os_rng();
        let r1: Vec<_> = (1..=n).map(|i| concord_threshold::unlock_dkg_round1(i, n, t, &mut rng).unwrap()).collect();
        let all1: BTreeMap<u16, UnlockRound1Msg> =
            r1.iter().enumerate().map(|(i, (_, m))| (i as u16 + 1, m.clone())).collect();
        let r2: Vec<_> = r1
            .into_iter()
            .enumerate()
            .map(|(i, (s, _))| {
                let mut others = all1.clone();
                others.remove(&(i as u16 + 1));
                concord_threshold::unlock_dkg_round2(s, &others).unwrap()
            })
            .collect();
        let all2: BTreeMap<u16, UnlockRound2Msg> =
            r2.iter().enumerate().map(|(i, (_, m))| (i as u16 + 1, m.clone())).collect();
        let r3: Vec<_> = r2
            .into_iter()
            .enumerate()
            .map(|(i, (s, _))| {
                let mut others = all2.clone();
                others.remove(&(i as u16 + 1));
                concord_threshold::unlock_dkg_round3(s, &others).unwrap()
            })
            .collect();
        let mut inboxes: Vec<BTreeMap<u16, UnlockRound3Msg>> = vec![BTreeMap::new(); usize::from(n)];
        for (i, (_, out)) in r3.iter().enumerate() {
            for (to, m) in out {
                inboxes[usize::from(*to) - 1].insert(i as u16 + 1, m.clone());
            }
        }
        let done: Vec<_> = r3
            .into_iter()
            .zip(inboxes)
            .map(|((s, _), inbox)| concord_threshold::unlock_dkg_finish(s, &inbox).unwrap())
            .collect();
        let key = done[0].1.clone();
        (done.into_iter().map(|(s, _)| s).collect(), key)
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{}", (b'a' + i as u8) as char)).collect()
    }

    fn shares(members: &[UnlockShare], who: &[usize], file: &SealedFile) -> Vec<(String, DecryptionShare)> {
        let names = names(members.len());
        who.iter()
            .map(|&i| {
                (names[i].clone(), concord_threshold::decryption_share(&members[i], file, &mut os_rng()).unwrap())
            })
            .collect()
    }

    #[test]
    fn open_sealed_needs_t_valid_shares_and_names_a_forger() {
        let (members, key) = dkg(5, 3);
        let names = names(5);
        let file = concord_threshold::seal(&key, b"patient 17", &mut os_rng()).unwrap();
        // Three valid shares open it.
        let o = open_sealed(&key, &names, &file, &shares(&members, &[0, 2, 4], &file)).unwrap();
        assert_eq!(o.plaintext.as_deref(), Some(&b"patient 17"[..]));
        assert!(o.refused.is_empty());
        // Two do not, and nobody is blamed.
        let o = open_sealed(&key, &names, &file, &shares(&members, &[0, 1], &file)).unwrap();
        assert!(o.plaintext.is_none() && o.refused.is_empty() && o.valid == 2);
        // A forged share (the test hook's forgery) is named and set aside.
        let mut s = shares(&members, &[0, 1, 3], &file);
        s[1].1 = forge(&key, s[1].1.clone()).unwrap();
        let o = open_sealed(&key, &names, &file, &s).unwrap();
        assert!(o.plaintext.is_none(), "{o:?}");
        assert_eq!(o.refused.len(), 1);
        assert_eq!(o.refused[0].0, "node-b");
        assert!(o.refused[0].1.contains("forged decryption share"), "{:?}", o.refused);
        // ... and a fourth valid share still opens it.
        s.extend(shares(&members, &[4], &file));
        let o = open_sealed(&key, &names, &file, &s).unwrap();
        assert_eq!(o.plaintext.as_deref(), Some(&b"patient 17"[..]));
        assert_eq!((o.refused.len(), o.valid), (1, 3));
        // A share for another file is named too.
        let other = concord_threshold::seal(&key, b"other", &mut os_rng()).unwrap();
        let mut s = shares(&members, &[0, 1], &file);
        s.extend(shares(&members, &[2], &other));
        let o = open_sealed(&key, &names, &file, &s).unwrap();
        assert_eq!(o.refused[0].0, "node-c");
        assert!(o.refused[0].1.contains("another sealed file"), "{:?}", o.refused);
        // A share from a non-member is an error naming it.
        let mut s = shares(&members, &[0, 1, 2], &file);
        s[0].0 = "intruder".into();
        let e = open_sealed(&key, &names, &file, &s).unwrap_err().to_string();
        assert!(e.contains("\"intruder\" is not a member"), "{e}");
    }

    #[test]
    fn a_tampered_sealed_file_fails_authentication() {
        let (members, key) = dkg(3, 2);
        let names = names(3);
        let file = concord_threshold::seal(&key, b"record", &mut os_rng()).unwrap();
        let mut bytes = file.as_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = SealedFile::from_bytes(&bytes).unwrap();
        let e = open_sealed(&key, &names, &tampered, &shares(&members, &[0, 1], &tampered)).unwrap_err().to_string();
        assert!(e.contains("failed authentication"), "{e}");
    }

    #[test]
    fn messages_round_trip_and_debug_redacts_secrets() {
        let (members, key) = dkg(3, 2);
        let file = concord_threshold::seal(&key, b"x", &mut os_rng()).unwrap();
        let share = concord_threshold::decryption_share(&members[0], &file, &mut os_rng()).unwrap();
        let msgs = [
            UnlockMsg::Request {
                id: "0".repeat(32),
                consortium: "c".into(),
                sealed: Box::new(file.clone()),
                reason: "audit".into(),
            },
            UnlockMsg::Share { id: "1".repeat(32), share: Box::new(share) },
            UnlockMsg::Rejected { id: "2".repeat(32), reason: "no".into() },
            UnlockMsg::DkgOutcome { consortium: "c".into(), active: true, reason: None },
            UnlockMsg::DkgRound1 {
                consortium: "c".into(),
                round1: vec![Indexed {
                    index: 2,
                    message: concord_threshold::unlock_dkg_round1(2, 3, 2, &mut os_rng()).unwrap().1,
                }],
            },
        ];
        for m in msgs {
            let json = serde_json::to_string(&PeerRequest::Unlock(m.clone())).unwrap();
            assert!(json.starts_with(r#"{"type":"unlock","kind":"#), "{json}");
            let back: PeerRequest = serde_json::from_str(&json).unwrap();
            assert_eq!(format!("{back:?}"), format!("{:?}", PeerRequest::Unlock(m)));
        }
        // Unknown fields are refused.
        let bad = r#"{"type":"unlock","kind":"rejected","id":"x","reason":"r","extra":1}"#;
        assert!(serde_json::from_str::<PeerRequest>(bad).is_err());
        // The key share is never in Debug output; the round-3 message is redacted.
        let mut rng = os_rng();
        let (s1, m1) = concord_threshold::unlock_dkg_round1(1, 2, 2, &mut rng).unwrap();
        let (t1, n1) = concord_threshold::unlock_dkg_round1(2, 2, 2, &mut rng).unwrap();
        let (s2, _) = concord_threshold::unlock_dkg_round2(s1, &BTreeMap::from([(2, n1)])).unwrap();
        let (_, n2) = concord_threshold::unlock_dkg_round2(t1, &BTreeMap::from([(1, m1)])).unwrap();
        let (_, out) = concord_threshold::unlock_dkg_round3(s2, &BTreeMap::from([(2, n2)])).unwrap();
        let message = out.into_values().next().unwrap();
        let secret = serde_json::to_value(&message).unwrap()["share"].as_str().unwrap().to_owned();
        let msg = UnlockMsg::DkgRound3 { consortium: "c".into(), message };
        let debug = format!("{:?}", PeerRequest::Unlock(msg));
        assert!(debug.contains("redacted") && !debug.contains(&secret), "{debug}");
        let debug = format!("{:?}", members[0]);
        assert!(debug.contains("redacted"), "{debug}");
    }

    #[test]
    fn ids_and_reasons_are_checked() {
        assert!(check_id(&"a".repeat(32)).is_ok());
        for bad in ["", "abc", &"A".repeat(32), &"g".repeat(32), &"a".repeat(33)] {
            let e = check_id(bad).unwrap_err();
            assert_eq!(e.code, "bad_request");
        }
        assert!(check_reason("r", &"x".repeat(MAX_REASON)).is_ok());
        assert!(check_reason("r", &"x".repeat(MAX_REASON + 1)).is_err());
    }

    #[test]
    fn store_keeps_keys_requests_and_answers() {
        let store = Store::open_in_memory().unwrap();
        let (members, key) = dkg(3, 2);
        let names = names(3);
        begin_key(&store, "c", &names, 2, "node-a").unwrap();
        assert!(begin_key(&store, "c", &names, 2, "node-a")
            .unwrap_err()
            .to_string()
            .contains("has an unlock key already"));
        store_share(&store, "c", &members[1], &key).unwrap();
        set_key_state(&store, "c", "active", None).unwrap();
        let k = get_key(&store, "c").unwrap().unwrap();
        assert_eq!(k.state, "active");
        assert_eq!(serde_json::to_string(&k.public_key).unwrap(), serde_json::to_string(&Some(&key)).unwrap());
        let listed = serde_json::to_string(&list_keys(&store).unwrap()).unwrap();
        assert!(!listed.contains("secret"), "{listed}");
        assert_eq!(load_share(&store, "c").unwrap().index(), 2);
        let file = concord_threshold::seal(&key, b"r", &mut os_rng()).unwrap();
        let id = "ab".repeat(16);
        insert_request(&store, &id, "c", "node-a", &file, "audit").unwrap();
        assert!(insert_request(&store, &id, "c", "node-a", &file, "audit").is_err());
        assert_eq!(load_sealed(&store, &id).unwrap(), file);
        let r = get_request(&store, &id).unwrap().unwrap();
        assert_eq!((r.decision.as_str(), r.digest.clone()), ("pending", hex(&file.digest())));
        let d = concord_threshold::decryption_share(&members[1], &file, &mut os_rng()).unwrap();
        put_response(&store, &id, "node-b", "approved", None, Some(&d)).unwrap();
        put_response(&store, &id, "node-c", "rejected", Some("no"), None).unwrap();
        let got = responses(&store, &id, &names).unwrap();
        assert_eq!(got.iter().map(|r| r.decision.as_str()).collect::<Vec<_>>(), ["pending", "approved", "rejected"]);
        assert_eq!(got[1].share.as_ref(), Some(&d));
        decide(&store, &id, "approved", "op", None).unwrap();
        decide(&store, &id, "rejected", "op", Some("late")).unwrap();
        assert_eq!(get_request(&store, &id).unwrap().unwrap().decision, "approved");
        set_key_state(&store, "c", "failed", Some("test")).unwrap();
        assert!(load_share(&store, "c").is_err());
    }
}
