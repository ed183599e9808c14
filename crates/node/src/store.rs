//! The node's embedded store: SQLite (bundled) in WAL mode, schema managed by
//! versioned migrations (`rusqlite_migration`, version in `user_version`).
//!
//! Tables: `datasets` (registered local data), `peers` (paired nodes, their
//! pinned keys), `invitations` (pairing invitations: id, derived MAC key,
//! expiry, use; never the secret) and `events`, an append-only log (triggers refuse updates and
//! deletes). Every write runs in one transaction together with the event that
//! records it, so the store is never left half-updated.
//!
//! `audit_log` holds the signed, hash-chained audit entries (see
//! [`crate::audit`]): once the store has an auditor ([`Store::set_auditor`]),
//! every event recorded in a write transaction is appended to it in the same
//! transaction, and the signed head goes to `audit.head` after the commit.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use rusqlite_migration::{Migrations, M};
use serde_json::{json, Value};

use crate::audit::{Auditor, Pending};
use crate::{unix_now, NodeError};

/// File name of the store inside the data directory.
pub const STORE_FILE: &str = "concord.db";

const MIGRATIONS: &[M<'static>] = &[
    M::up(
        "CREATE TABLE datasets (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            file_path TEXT NOT NULL,
            schema_toml TEXT NOT NULL,
            file_sha256 TEXT NOT NULL,
            file_size INTEGER NOT NULL,
            file_mtime_ns INTEGER NOT NULL,
            row_count INTEGER NOT NULL,
            validated_at INTEGER NOT NULL,
            invalid_reason TEXT
        ) STRICT;
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at INTEGER NOT NULL,
            kind TEXT NOT NULL,
            message TEXT NOT NULL
        ) STRICT;
        CREATE TRIGGER events_no_update BEFORE UPDATE ON events
            BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
            BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;",
    ),
    M::up(
        "CREATE TABLE peers (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            address TEXT NOT NULL,
            ed25519_public TEXT NOT NULL,
            tls_fingerprint TEXT NOT NULL,
            added_at INTEGER NOT NULL
        ) STRICT;",
    ),
    M::up(
        "ALTER TABLE peers ADD COLUMN api_address TEXT NOT NULL DEFAULT '';
        CREATE TABLE invitations (
            id TEXT PRIMARY KEY,
            mac_key TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            used_at INTEGER,
            used_by TEXT
        ) STRICT;",
    ),
    M::up(
        "ALTER TABLE peers ADD COLUMN revoked_at INTEGER;
        ALTER TABLE peers ADD COLUMN announced_at INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            coordinator TEXT NOT NULL,
            plan TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed', 'cancelled')),
            reason TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            finished_at INTEGER
        ) STRICT;
        CREATE TABLE session_progress (
            session_id TEXT NOT NULL REFERENCES sessions(id),
            party TEXT NOT NULL,
            phase TEXT NOT NULL,
            at INTEGER NOT NULL,
            PRIMARY KEY (session_id, party)
        ) STRICT;
        CREATE TABLE session_results (
            session_id TEXT NOT NULL REFERENCES sessions(id),
            party_index INTEGER NOT NULL,
            envelope TEXT NOT NULL,
            PRIMARY KEY (session_id, party_index)
        ) STRICT;",
    ),
    M::up(
        "CREATE TABLE privacy_budgets (
            analyst TEXT NOT NULL,
            dataset TEXT NOT NULL,
            rho REAL NOT NULL CHECK (rho >= 0),
            set_at INTEGER NOT NULL,
            PRIMARY KEY (analyst, dataset)
        ) STRICT;
        CREATE TABLE privacy_spends (
            session_id TEXT PRIMARY KEY,
            analyst TEXT NOT NULL,
            dataset TEXT NOT NULL,
            rho REAL NOT NULL CHECK (rho >= 0),
            at INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX privacy_spends_by_analyst ON privacy_spends (analyst, dataset);",
    ),
    M::up(
        "CREATE TABLE analysts (
            name TEXT PRIMARY KEY,
            public_key TEXT NOT NULL,
            role TEXT NOT NULL,
            added_at INTEGER NOT NULL,
            revoked_at INTEGER
        ) STRICT;
        CREATE TABLE request_log (
            analyst TEXT NOT NULL,
            nonce TEXT NOT NULL,
            expires_at_ms INTEGER NOT NULL,
            received_at_ms INTEGER NOT NULL,
            PRIMARY KEY (analyst, nonce)
        ) STRICT;",
    ),
    // Consortia (crate::consortium): public records, key shares (secret), result attestations.
    M::up(
        "CREATE TABLE consortia (
            name TEXT PRIMARY KEY,
            members TEXT NOT NULL,
            threshold INTEGER NOT NULL,
            coordinator TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('creating', 'active', 'failed')),
            reason TEXT,
            group_key TEXT,
            public_key TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE consortium_key_shares (
            consortium TEXT PRIMARY KEY,
            secret TEXT NOT NULL
        ) STRICT;
        CREATE TABLE session_attestations (
            session_id TEXT PRIMARY KEY,
            consortium TEXT NOT NULL,
            body TEXT,
            error TEXT
        ) STRICT;",
    ),
    // The audit log (crate::audit): one canonical JSON entry of concord-audit per row.
    M::up(
        "CREATE TABLE audit_log (
            seq INTEGER PRIMARY KEY,
            entry TEXT NOT NULL
        ) STRICT;
        CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;",
    ),
    // Threshold unlock (crate::unlock): unlock keys (public), their shares (secret),
    // unlock requests (each member's decision) and the answers the requester collects.
    M::up(
        "CREATE TABLE unlock_keys (
            consortium TEXT PRIMARY KEY,
            members TEXT NOT NULL,
            threshold INTEGER NOT NULL,
            coordinator TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('creating', 'active', 'failed')),
            reason TEXT,
            public_key TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE unlock_key_shares (
            consortium TEXT PRIMARY KEY,
            secret TEXT NOT NULL
        ) STRICT;
        CREATE TABLE unlock_requests (
            id TEXT PRIMARY KEY,
            consortium TEXT NOT NULL,
            requester TEXT NOT NULL,
            digest TEXT NOT NULL,
            size INTEGER NOT NULL,
            sealed BLOB NOT NULL,
            reason TEXT NOT NULL,
            decision TEXT NOT NULL CHECK (decision IN ('pending', 'approved', 'rejected')),
            decided_by TEXT,
            decision_reason TEXT,
            decided_at INTEGER,
            created_at INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE unlock_responses (
            request_id TEXT NOT NULL,
            member TEXT NOT NULL,
            decision TEXT NOT NULL,
            reason TEXT,
            share TEXT,
            at INTEGER NOT NULL,
            PRIMARY KEY (request_id, member)
        ) STRICT;",
    ),
    // k-of-n approvals (crate::approval): each session's verified threshold signature.
    M::up(
        "CREATE TABLE session_approvals (
            session_id TEXT PRIMARY KEY,
            consortium TEXT NOT NULL,
            body TEXT NOT NULL
        ) STRICT;",
    ),
    // Peers' audit checkpoints, received with their heartbeats (crate::witness).
    M::up(
        "CREATE TABLE audit_witness (
            node TEXT NOT NULL,
            seq INTEGER NOT NULL,
            checkpoint TEXT NOT NULL,
            received_at INTEGER NOT NULL,
            PRIMARY KEY (node, seq)
        ) STRICT;",
    ),
];

/// Number of migrations: the schema version of a current store.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Whether a dataset's file matched its schema when last checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatasetStatus {
    /// The file matched its schema at `validated_at`.
    Valid,
    /// The file no longer matches (or cannot be read); the reason.
    Invalid(String),
}

/// A registered dataset, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetRecord {
    /// Unique name.
    pub name: String,
    /// Absolute path of the data file (local only, never sent to peers).
    pub file_path: PathBuf,
    /// The schema, as TOML text (public).
    pub schema_toml: String,
    /// SHA-256 of the file, hex.
    pub file_sha256: String,
    /// File size in bytes when hashed.
    pub file_size: u64,
    /// File modification time (ns since the Unix epoch) when hashed.
    pub file_mtime_ns: i64,
    /// Number of rows (local only).
    pub row_count: u64,
    /// When the file was last validated (or found invalid), Unix seconds.
    pub validated_at: i64,
    /// Current status.
    pub status: DatasetStatus,
}

/// One entry of the event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Sequence number (increasing).
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Kind, e.g. `dataset.added`.
    pub kind: String,
    /// Human-readable message.
    pub message: String,
}

/// A paired peer, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRecord {
    /// Unique name.
    pub name: String,
    /// MPC address (`host:port`).
    pub address: String,
    /// HTTP API address, if known (the inviter's, on the joining side).
    pub api_address: String,
    /// Ed25519 public key, hex (pinned).
    pub ed25519_public: String,
    /// TLS certificate fingerprint, hex (pinned).
    pub tls_fingerprint: String,
    /// When the pairing completed, Unix seconds.
    pub added_at: i64,
    /// When the pairing was revoked (`concord peer remove`), if it was.
    pub revoked_at: Option<i64>,
}

/// A pairing invitation, as stored (never its secret). `Debug` redacts the
/// MAC key, which completes the invitation while it is valid.
#[derive(Clone, PartialEq, Eq)]
pub struct InvitationRecord {
    /// SHA-256 of the secret, hex.
    pub id: String,
    /// MAC key derived from the secret, hex.
    pub mac_key: String,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// When it was used, if it was.
    pub used_at: Option<i64>,
}

impl core::fmt::Debug for InvitationRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InvitationRecord")
            .field("id", &self.id)
            .field("mac_key", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("used_at", &self.used_at)
            .finish()
    }
}

const PEER_COLUMNS: &str = "name, address, api_address, ed25519_public, tls_fingerprint, added_at, revoked_at";

/// The store: one SQLite connection.
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
    /// Signs the audit entries of every write ([`Store::set_auditor`]).
    pub(crate) auditor: Option<Auditor>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("auditor", &self.auditor).finish()
    }
}

/// A write transaction: the SQLite transaction (taken `IMMEDIATE`, so that
/// writers in other processes queue for the lock instead of failing), and the
/// audit records its events produce, appended to the audit log just before
/// the commit.
pub(crate) struct Tx<'c> {
    tx: Transaction<'c>,
    pending: RefCell<Vec<Pending>>,
}

impl<'c> std::ops::Deref for Tx<'c> {
    type Target = Transaction<'c>;
    fn deref(&self) -> &Transaction<'c> {
        &self.tx
    }
}

impl Tx<'_> {
    /// Audit `record` with this transaction's changes.
    pub(crate) fn audit(&self, record: Pending) {
        self.pending.borrow_mut().push(record);
    }
}

const DATASET_COLUMNS: &str = "name, file_path, schema_toml, file_sha256, file_size, file_mtime_ns, row_count, \
                               validated_at, invalid_reason";

impl Store {
    /// Open (creating if needed) the store at `path` and migrate it to the
    /// current schema version.
    pub fn open(path: &Path) -> Result<Store, NodeError> {
        let conn = Connection::open(path).map_err(|source| NodeError::Store { path: path.to_owned(), source })?;
        Store::setup(conn, path)
    }

    /// An in-memory store (tests).
    pub fn open_in_memory() -> Result<Store, NodeError> {
        let path = Path::new(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| NodeError::Store { path: path.to_owned(), source })?;
        Store::setup(conn, path)
    }

    fn setup(mut conn: Connection, path: &Path) -> Result<Store, NodeError> {
        let sql = |source| NodeError::Store { path: path.to_owned(), source };
        let _mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).map_err(sql)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql)?;
        Migrations::from_slice(MIGRATIONS)
            .to_latest(&mut conn)
            .map_err(|e| NodeError::Migration { path: path.to_owned(), reason: e.to_string() })?;
        Ok(Store { conn, path: path.to_owned(), auditor: None })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for the tables of other modules (`crate::consortium`).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The schema version (`user_version`).
    pub fn schema_version(&self) -> Result<usize, NodeError> {
        let v: i64 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| self.sql(e))?;
        usize::try_from(v).map_err(|_| self.corrupt(format!("negative user_version {v}")))
    }

    fn sql(&self, source: rusqlite::Error) -> NodeError {
        NodeError::Store { path: self.path.clone(), source }
    }

    fn corrupt(&self, reason: String) -> NodeError {
        NodeError::Corrupt { path: self.path.clone(), reason }
    }

    /// Run `f` in one write transaction; append the audit entries of its
    /// events before the commit, and write the signed head after it.
    pub(crate) fn write<T>(&mut self, f: impl FnOnce(&Tx<'_>) -> Result<T, NodeError>) -> Result<T, NodeError> {
        let path = self.path.clone();
        let sql = |source| NodeError::Store { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
        let tx = Tx { tx, pending: RefCell::new(Vec::new()) };
        let out = f(&tx)?;
        let pending = tx.pending.take();
        let head = crate::audit::append_pending(&tx, self.auditor.as_ref(), &path, pending)?;
        tx.tx.commit().map_err(sql)?;
        if let (Some(head), Some(auditor)) = (head, &self.auditor) {
            auditor.advance_head(&head);
        }
        Ok(out)
    }

    /// Register a dataset (and log it). Fails with
    /// [`NodeError::DuplicateDataset`] if the name is taken.
    pub fn add_dataset(&mut self, d: &DatasetRecord) -> Result<(), NodeError> {
        let path = self.path.clone();
        self.write(|tx| {
            let sql = |source| NodeError::Store { path: path.clone(), source };
            let taken: Option<i64> = tx
                .query_row("SELECT id FROM datasets WHERE name = ?1", [&d.name], |r| r.get(0))
                .optional()
                .map_err(sql)?;
            if taken.is_some() {
                return Err(NodeError::DuplicateDataset(d.name.clone()));
            }
            let (size, rows) = to_i64(d.file_size, d.row_count, &path)?;
            tx.execute(
                &format!("INSERT INTO datasets ({DATASET_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    d.name,
                    d.file_path.to_string_lossy(),
                    d.schema_toml,
                    d.file_sha256,
                    size,
                    d.file_mtime_ns,
                    rows,
                    d.validated_at,
                    invalid_reason(&d.status),
                ],
            )
            .map_err(sql)?;
            insert_event_with(
                tx,
                "dataset.added",
                &format!("dataset {:?} registered (sha256 {})", d.name, d.file_sha256),
                None,
                json!({ "dataset": d.name, "sha256": d.file_sha256 }),
            )
            .map_err(sql)
        })
    }

    /// Replace the stored facts of an existing dataset (after re-validation),
    /// logging `kind` / `message` with it.
    pub fn update_dataset(&mut self, d: &DatasetRecord, kind: &str, message: &str) -> Result<(), NodeError> {
        let path = self.path.clone();
        self.write(|tx| {
            let sql = |source| NodeError::Store { path: path.clone(), source };
            let (size, rows) = to_i64(d.file_size, d.row_count, &path)?;
            let n = tx
                .execute(
                    "UPDATE datasets SET file_path = ?2, schema_toml = ?3, file_sha256 = ?4, file_size = ?5,
                     file_mtime_ns = ?6, row_count = ?7, validated_at = ?8, invalid_reason = ?9 WHERE name = ?1",
                    params![
                        d.name,
                        d.file_path.to_string_lossy(),
                        d.schema_toml,
                        d.file_sha256,
                        size,
                        d.file_mtime_ns,
                        rows,
                        d.validated_at,
                        invalid_reason(&d.status),
                    ],
                )
                .map_err(sql)?;
            if n == 0 {
                return Err(NodeError::UnknownDataset(d.name.clone()));
            }
            insert_event(tx, kind, message).map_err(sql)
        })
    }

    /// All datasets, by name.
    pub fn list_datasets(&self) -> Result<Vec<DatasetRecord>, NodeError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {DATASET_COLUMNS} FROM datasets ORDER BY name"))
            .map_err(|e| self.sql(e))?;
        let rows = stmt.query_map([], read_dataset).map_err(|e| self.sql(e))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(|e| self.sql(e))?.map_err(|r| self.corrupt(r))?);
        }
        Ok(out)
    }

    /// The dataset named `name`, or [`NodeError::UnknownDataset`].
    pub fn get_dataset(&self, name: &str) -> Result<DatasetRecord, NodeError> {
        self.conn
            .query_row(&format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE name = ?1"), [name], read_dataset)
            .optional()
            .map_err(|e| self.sql(e))?
            .ok_or_else(|| NodeError::UnknownDataset(name.to_owned()))?
            .map_err(|r| self.corrupt(r))
    }

    /// Number of registered datasets.
    pub fn count_datasets(&self) -> Result<u64, NodeError> {
        let n: i64 = self.conn.query_row("SELECT COUNT(*) FROM datasets", [], |r| r.get(0)).map_err(|e| self.sql(e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Unregister a dataset (the file is not touched) and log it.
    pub fn remove_dataset(&mut self, name: &str) -> Result<(), NodeError> {
        let path = self.path.clone();
        self.write(|tx| {
            let sql = |source| NodeError::Store { path: path.clone(), source };
            let n = tx.execute("DELETE FROM datasets WHERE name = ?1", [name]).map_err(sql)?;
            if n == 0 {
                return Err(NodeError::UnknownDataset(name.to_owned()));
            }
            insert_event_with(
                tx,
                "dataset.removed",
                &format!("dataset {name:?} unregistered"),
                None,
                json!({ "dataset": name }),
            )
            .map_err(sql)
        })
    }

    /// Append an event to the log.
    pub fn record_event(&mut self, kind: &str, message: &str) -> Result<(), NodeError> {
        let path = self.path.clone();
        self.write(|tx| insert_event(tx, kind, message).map_err(|source| NodeError::Store { path, source }))
    }

    /// Record a new invitation (id = SHA-256 of its secret) and log it.
    pub fn create_invitation(&mut self, id: &str, mac_key: &str, expires_at: i64) -> Result<(), NodeError> {
        let path = self.path.clone();
        self.write(|tx| {
            let sql = |source| NodeError::Store { path: path.clone(), source };
            tx.execute(
                "INSERT INTO invitations (id, mac_key, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, mac_key, unix_now(), expires_at],
            )
            .map_err(sql)?;
            let short = id.get(..16).unwrap_or(id);
            insert_event(tx, "invitation.created", &format!("invitation {short} created, expires at {expires_at}"))
                .map_err(sql)
        })
    }

    /// The invitation with this id, if any.
    pub fn invitation(&self, id: &str) -> Result<Option<InvitationRecord>, NodeError> {
        self.conn
            .query_row("SELECT id, mac_key, expires_at, used_at FROM invitations WHERE id = ?1", [id], |r| {
                Ok(InvitationRecord { id: r.get(0)?, mac_key: r.get(1)?, expires_at: r.get(2)?, used_at: r.get(3)? })
            })
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// In one transaction: check that invitation `id` exists, is unused and
    /// has not expired at `now`, mark it used by `peer`, store `peer` (name,
    /// key and fingerprint unique) and log it. On any error nothing changes.
    pub fn accept_invitation(&mut self, id: &str, now: i64, peer: &PeerRecord) -> Result<(), NodeError> {
        let path = self.path.clone();
        self.write(|tx| {
            let sql = |source| NodeError::Store { path: path.clone(), source };
            let row: Option<(i64, Option<i64>)> = tx
                .query_row("SELECT expires_at, used_at FROM invitations WHERE id = ?1", [id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(sql)?;
            match row {
                None => return Err(NodeError::UnknownInvitation),
                Some((_, Some(used_at))) => return Err(NodeError::InvitationUsed { used_at }),
                Some((expires_at, None)) if now >= expires_at => {
                    return Err(NodeError::InvitationExpired { expires_at })
                }
                Some(_) => {}
            }
            replace_revoked(tx, peer).map_err(sql)?;
            check_new_peer(tx, peer).map_err(|e| with_path(e, &path))?;
            tx.execute("UPDATE invitations SET used_at = ?2, used_by = ?3 WHERE id = ?1", params![id, now, peer.name])
                .map_err(sql)?;
            insert_peer(tx, peer).map_err(sql)
        })
    }

    /// Store a peer (the joining side of a pairing) and log it.
    pub fn add_peer(&mut self, peer: &PeerRecord) -> Result<(), NodeError> {
        let path = self.path.clone();
        self.write(|tx| {
            replace_revoked(tx, peer).map_err(|source| NodeError::Store { path: path.clone(), source })?;
            check_new_peer(tx, peer).map_err(|e| with_path(e, &path))?;
            insert_peer(tx, peer).map_err(|source| NodeError::Store { path: path.clone(), source })
        })
    }

    /// All peers, by name.
    pub fn list_peers(&self) -> Result<Vec<PeerRecord>, NodeError> {
        let mut stmt =
            self.conn.prepare(&format!("SELECT {PEER_COLUMNS} FROM peers ORDER BY name")).map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(PeerRecord {
                    name: r.get(0)?,
                    address: r.get(1)?,
                    api_address: r.get(2)?,
                    ed25519_public: r.get(3)?,
                    tls_fingerprint: r.get(4)?,
                    added_at: r.get(5)?,
                    revoked_at: r.get(6)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    /// The `limit` most recent events, newest first.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<Event>, NodeError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare("SELECT id, at, kind, message FROM events ORDER BY id DESC LIMIT ?1")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([limit], |r| Ok(Event { id: r.get(0)?, at: r.get(1)?, kind: r.get(2)?, message: r.get(3)? }))
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }
}

/// The state of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Created; participants are being asked.
    Pending,
    /// Every participant accepted; the computation runs.
    Running,
    /// Finished; the result shares were delivered.
    Done,
    /// Failed, with the reason recorded.
    Failed,
    /// Cancelled by the analyst or an operator.
    Cancelled,
}

impl SessionState {
    /// Its name in the store and the API.
    pub fn name(self) -> &'static str {
        match self {
            SessionState::Pending => "pending",
            SessionState::Running => "running",
            SessionState::Done => "done",
            SessionState::Failed => "failed",
            SessionState::Cancelled => "cancelled",
        }
    }

    /// Parse a name.
    pub fn parse(s: &str) -> Option<SessionState> {
        Some(match s {
            "pending" => SessionState::Pending,
            "running" => SessionState::Running,
            "done" => SessionState::Done,
            "failed" => SessionState::Failed,
            "cancelled" => SessionState::Cancelled,
            _ => return None,
        })
    }

    /// Whether the state is final.
    pub fn is_terminal(self) -> bool {
        matches!(self, SessionState::Done | SessionState::Failed | SessionState::Cancelled)
    }

    /// Every state, in order.
    pub const ALL: [SessionState; 5] = [
        SessionState::Pending,
        SessionState::Running,
        SessionState::Done,
        SessionState::Failed,
        SessionState::Cancelled,
    ];
}

/// A session as stored on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id (hex).
    pub id: String,
    /// The coordinating node.
    pub coordinator: String,
    /// The session plan, JSON (see `crate::session::SessionPlan`).
    pub plan: String,
    /// Current state.
    pub state: SessionState,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    /// Created, Unix seconds.
    pub created_at: i64,
    /// Last change, Unix seconds.
    pub updated_at: i64,
    /// Reached a final state, Unix seconds.
    pub finished_at: Option<i64>,
}

/// One party's latest phase in a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The party's name.
    pub party: String,
    /// Its phase.
    pub phase: String,
    /// When it reached it, Unix seconds.
    pub at: i64,
}

/// An analyst's privacy budget on one dataset, in zCDP rho.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    /// The analyst.
    pub analyst: String,
    /// The dataset.
    pub dataset: String,
    /// The budget (the node's default unless set for this analyst and dataset).
    pub budget: f64,
    /// Spent so far (queries accepted by this node).
    pub spent: f64,
}

impl Budget {
    /// What is left (never negative).
    pub fn remaining(&self) -> f64 {
        (self.budget - self.spent).max(0.0)
    }
}

fn read_budget(tx: &Connection, analyst: &str, dataset: &str, default: f64) -> rusqlite::Result<Budget> {
    let budget: Option<f64> = tx
        .query_row("SELECT rho FROM privacy_budgets WHERE analyst = ?1 AND dataset = ?2", [analyst, dataset], |r| {
            r.get(0)
        })
        .optional()?;
    let spent: f64 = tx.query_row(
        "SELECT COALESCE(SUM(rho), 0.0) FROM privacy_spends WHERE analyst = ?1 AND dataset = ?2",
        [analyst, dataset],
        |r| r.get(0),
    )?;
    Ok(Budget { analyst: analyst.to_owned(), dataset: dataset.to_owned(), budget: budget.unwrap_or(default), spent })
}

impl Store {
    /// The budget of `analyst` on `dataset` (`default` unless one was set).
    pub fn budget(&self, analyst: &str, dataset: &str, default: f64) -> Result<Budget, NodeError> {
        read_budget(&self.conn, analyst, dataset, default).map_err(|e| self.sql(e))
    }

    /// Every budget set or spent from (with `default` where none was set), by analyst and dataset.
    pub fn list_budgets(&self, default: f64) -> Result<Vec<Budget>, NodeError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT analyst, dataset FROM privacy_budgets UNION SELECT analyst, dataset FROM privacy_spends \
                 ORDER BY 1, 2",
            )
            .map_err(|e| self.sql(e))?;
        let keys = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql(e))?;
        keys.iter().map(|(a, d)| self.budget(a, d, default)).collect()
    }

    /// Set the budget of `analyst` on `dataset` (and log it).
    pub fn set_budget(&mut self, analyst: &str, dataset: &str, rho: f64) -> Result<(), NodeError> {
        if !(rho.is_finite() && rho >= 0.0) {
            return Err(NodeError::InvalidBudget(format!("a budget must be a number >= 0, got {rho}")));
        }
        let path = self.path.clone();
        self.write(|tx| {
            let sql = |source| NodeError::Store { path: path.clone(), source };
            tx.execute(
                "INSERT INTO privacy_budgets (analyst, dataset, rho, set_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (analyst, dataset) DO UPDATE SET rho = excluded.rho, set_at = excluded.set_at",
                params![analyst, dataset, rho, unix_now()],
            )
            .map_err(sql)?;
            insert_event_with(
                tx,
                "budget.set",
                &format!("privacy budget of analyst {analyst:?} on dataset {dataset:?} set to rho {rho}"),
                None,
                json!({ "analyst": analyst, "dataset": dataset, "rho": rho.to_string() }),
            )
            .map_err(sql)
        })
    }

    /// Charge `rho` for session `id` to `analyst` on `dataset`, atomically:
    /// refused with [`NodeError::BudgetExceeded`] (nothing charged) if the
    /// spend would exceed the budget. Charging the same session twice is refused.
    pub fn spend_budget(
        &mut self,
        id: &str,
        analyst: &str,
        dataset: &str,
        rho: f64,
        default: f64,
    ) -> Result<Budget, NodeError> {
        if !(rho.is_finite() && rho >= 0.0) {
            return Err(NodeError::InvalidBudget(format!("a privacy cost must be a number >= 0, got {rho}")));
        }
        let path = self.path.clone();
        self.write(|tx| {
            let sql = |source| NodeError::Store { path: path.clone(), source };
            let before = read_budget(tx, analyst, dataset, default).map_err(sql)?;
            // A relative slack of 1e-12 absorbs the rounding of sums of floats.
            if before.spent + rho > before.budget * (1.0 + 1e-12) {
                return Err(NodeError::BudgetExceeded { cost: rho, budget: Box::new(before) });
            }
            tx.execute(
                "INSERT INTO privacy_spends (session_id, analyst, dataset, rho, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, analyst, dataset, rho, unix_now()],
            )
            .map_err(sql)?;
            insert_event_with(
                tx,
                "budget.spent",
                &format!(
                    "session {id}: analyst {analyst:?} spent rho {rho} on dataset {dataset:?} ({} of {} used)",
                    before.spent + rho,
                    before.budget
                ),
                Some(id),
                // Fractions as decimal strings: the audit body holds no floats.
                json!({ "analyst": analyst, "dataset": dataset, "rho": rho.to_string(),
                        "spent": (before.spent + rho).to_string(), "budget": before.budget.to_string() }),
            )
            .map_err(sql)?;
            Ok(Budget { spent: before.spent + rho, ..before })
        })
    }

    /// Give back what session `id` was charged (a session that failed or
    /// was cancelled before it started revealed nothing). Returns the rho refunded.
    pub fn refund_budget(&mut self, id: &str) -> Result<f64, NodeError> {
        let path = self.path.clone();
        self.write(|tx| refund(tx, id).map_err(|source| NodeError::Store { path: path.clone(), source }))
    }
}

fn refund(tx: &Tx<'_>, id: &str) -> rusqlite::Result<f64> {
    let row: Option<(String, String, f64)> = tx
        .query_row("SELECT analyst, dataset, rho FROM privacy_spends WHERE session_id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((analyst, dataset, rho)) = row else { return Ok(0.0) };
    tx.execute("DELETE FROM privacy_spends WHERE session_id = ?1", [id])?;
    insert_event_with(
        tx,
        "budget.refunded",
        &format!("session {id} never started: rho {rho} refunded to analyst {analyst:?} on dataset {dataset:?}"),
        Some(id),
        json!({ "analyst": analyst, "dataset": dataset, "rho": rho.to_string() }),
    )?;
    Ok(rho)
}

/// A registered analyst.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnalystEntry {
    /// The analyst's name.
    pub name: String,
    /// The public key, text form (`concord-analyst-v1:<hex>`).
    pub public_key: String,
    /// The role policies match.
    pub role: String,
    /// When registered, Unix seconds.
    pub added_at: i64,
    /// When revoked, if revoked.
    pub revoked_at: Option<i64>,
}

impl Store {
    /// Register analyst `name` with `public_key` and `role` (and log it).
    pub fn add_analyst(&mut self, name: &str, public_key: &str, role: &str) -> Result<(), NodeError> {
        let path = self.path.clone();
        self.write(|tx| {
            let sql = |source| NodeError::Store { path: path.clone(), source };
            let exists: Option<String> = tx
                .query_row("SELECT name FROM analysts WHERE name = ?1", [name], |r| r.get(0))
                .optional()
                .map_err(sql)?;
            if exists.is_some() {
                return Err(NodeError::DuplicateAnalyst(name.to_owned()));
            }
            tx.execute(
                "INSERT INTO analysts (name, public_key, role, added_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, public_key, role, unix_now()],
            )
            .map_err(sql)?;
            insert_event(
                tx,
                "analyst.added",
                &format!("analyst {name:?} registered with role {role:?}, key {public_key}"),
            )
            .map_err(sql)
        })
    }

    /// Revoke analyst `name`: its requests are refused from now on (and log it).
    pub fn revoke_analyst(&mut self, name: &str) -> Result<(), NodeError> {
        let path = self.path.clone();
        self.write(|tx| {
            let sql = |source| NodeError::Store { path: path.clone(), source };
            let n = tx
                .execute(
                    "UPDATE analysts SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                    params![name, unix_now()],
                )
                .map_err(sql)?;
            if n == 0 {
                return Err(NodeError::UnknownAnalyst(name.to_owned()));
            }
            insert_event(tx, "analyst.revoked", &format!("analyst {name:?} revoked")).map_err(sql)
        })
    }

    /// Registered analysts (revoked ones included), by name.
    pub fn list_analysts(&self) -> Result<Vec<AnalystEntry>, NodeError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, public_key, role, added_at, revoked_at FROM analysts ORDER BY name")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AnalystEntry {
                    name: r.get(0)?,
                    public_key: r.get(1)?,
                    role: r.get(2)?,
                    added_at: r.get(3)?,
                    revoked_at: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql(e))?;
        Ok(rows)
    }

    /// Analyst `name`, if registered.
    pub fn analyst(&self, name: &str) -> Result<Option<AnalystEntry>, NodeError> {
        Ok(self.list_analysts()?.into_iter().find(|a| a.name == name))
    }

    /// Record that `analyst` used `nonce` (valid until `expires_at_ms`):
    /// `false` if it had been used already. Forgets expired nonces.
    pub fn record_request_nonce(
        &mut self,
        analyst: &str,
        nonce: &str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<bool, NodeError> {
        let path = self.path.clone();
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.write(|tx| {
            let sql = |source| NodeError::Store { path: path.clone(), source };
            // Requests whose validity ended more than a day ago are refused as expired
            // anyway; their nonces are kept that long only to count queries per day.
            tx.execute("DELETE FROM request_log WHERE expires_at_ms < ?1", [ms(now_ms).saturating_sub(86_400_000)])
                .map_err(sql)?;
            let n = tx
                .execute(
                    "INSERT OR IGNORE INTO request_log (analyst, nonce, expires_at_ms, received_at_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![analyst, nonce, ms(expires_at_ms), ms(now_ms)],
                )
                .map_err(sql)?;
            Ok(n == 1)
        })
    }

    /// Requests of `analyst` accepted since the start of the UTC day of `now_ms`.
    pub fn requests_today(&self, analyst: &str, now_ms: u64) -> Result<u64, NodeError> {
        let day_start = i64::try_from(now_ms - now_ms % 86_400_000).unwrap_or(i64::MAX);
        let n: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM request_log WHERE analyst = ?1 AND received_at_ms >= ?2",
                params![analyst, day_start],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

const SESSION_COLUMNS: &str = "id, coordinator, plan, state, reason, created_at, updated_at, finished_at";

impl Store {
    /// Record a new session (state pending) and log it.
    pub fn create_session(&mut self, id: &str, coordinator: &str, plan: &str, summary: &str) -> Result<(), NodeError> {
        let path = self.path.clone();
        self.write(|tx| {
            let sql = |source| NodeError::Store { path: path.clone(), source };
            let now = unix_now();
            let exists: Option<String> =
                tx.query_row("SELECT id FROM sessions WHERE id = ?1", [id], |r| r.get(0)).optional().map_err(sql)?;
            if exists.is_some() {
                return Err(NodeError::DuplicateSession(id.to_owned()));
            }
            tx.execute(
                "INSERT INTO sessions (id, coordinator, plan, state, created_at, updated_at) VALUES (?1, ?2, ?3, 'pending', ?4, ?4)",
                params![id, coordinator, plan, now],
            )
            .map_err(sql)?;
            insert_event_with(
                tx,
                "session.created",
                &format!("session {id} created by {coordinator}: {summary}"),
                Some(id),
                json!({ "coordinator": coordinator }),
            )
            .map_err(sql)?;
            // What every party must agree on (concord_audit::cross_check): the plan's hash, the parties.
            tx.audit(Pending::new("session.accepted", Some(id), crate::audit::session_accepted_body(plan)));
            Ok(())
        })
    }

    /// Move session `id` to `state` (with `reason`) and log it. A session in
    /// a final state never changes: returns `false` then (and for `running`
    /// asked of a running session), `true` if it changed.
    pub fn set_session_state(
        &mut self,
        id: &str,
        state: SessionState,
        reason: Option<&str>,
    ) -> Result<bool, NodeError> {
        let path = self.path.clone();
        self.write(|tx| {
            let sql = |source| NodeError::Store { path: path.clone(), source };
            let now = unix_now();
            let current: Option<String> =
                tx.query_row("SELECT state FROM sessions WHERE id = ?1", [id], |r| r.get(0)).optional().map_err(sql)?;
            let Some(current) = current else { return Err(NodeError::UnknownSession(id.to_owned())) };
            let current = SessionState::parse(&current).ok_or_else(|| NodeError::Corrupt {
                path: path.clone(),
                reason: format!("session {id}: unknown state {current:?}"),
            })?;
            if current.is_terminal() || current == state {
                return Ok(false);
            }
            let finished = state.is_terminal().then_some(now);
            tx.execute(
                "UPDATE sessions SET state = ?2, reason = ?3, updated_at = ?4, finished_at = ?5 WHERE id = ?1",
                params![id, state.name(), reason, now, finished],
            )
            .map_err(sql)?;
            let message = match reason {
                Some(r) => format!("session {id} {}: {r}", state.name()),
                None => format!("session {id} {}", state.name()),
            };
            insert_event_with(tx, &format!("session.{}", state.name()), &message, Some(id), json!({})).map_err(sql)?;
            if state.is_terminal() {
                let mut body = json!({ "state": state.name() });
                if let Some(r) = reason {
                    body["reason"] = json!(r);
                }
                tx.audit(Pending::new(concord_audit::FINAL_KIND, Some(id), body));
            }
            // A session that ends before it started revealed nothing: its privacy cost is given back.
            if current == SessionState::Pending && state.is_terminal() && state != SessionState::Done {
                refund(tx, id).map_err(sql)?;
            }
            Ok(true)
        })
    }

    /// Record that `party` reached `phase` in session `id`.
    pub fn set_progress(&mut self, id: &str, party: &str, phase: &str) -> Result<(), NodeError> {
        let now = unix_now();
        self.conn
            .execute(
                "INSERT INTO session_progress (session_id, party, phase, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (session_id, party) DO UPDATE SET phase = excluded.phase, at = excluded.at",
                params![id, party, phase, now],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Every party's latest phase in session `id`.
    pub fn progress(&self, id: &str) -> Result<Vec<Progress>, NodeError> {
        let mut stmt = self
            .conn
            .prepare("SELECT party, phase, at FROM session_progress WHERE session_id = ?1 ORDER BY party")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([id], |r| Ok(Progress { party: r.get(0)?, phase: r.get(1)?, at: r.get(2)? }))
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    /// Store party `index`'s sealed result for session `id` (first one wins);
    /// returns how many results the session now has.
    pub fn put_result(&mut self, id: &str, index: usize, envelope: &str) -> Result<usize, NodeError> {
        let index = i64::try_from(index).unwrap_or(i64::MAX);
        self.conn
            .execute(
                "INSERT OR IGNORE INTO session_results (session_id, party_index, envelope) VALUES (?1, ?2, ?3)",
                params![id, index, envelope],
            )
            .map_err(|e| self.sql(e))?;
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM session_results WHERE session_id = ?1", [id], |r| r.get(0))
            .map_err(|e| self.sql(e))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The sealed results of session `id`, by party index.
    pub fn results(&self, id: &str) -> Result<Vec<(usize, String)>, NodeError> {
        let mut stmt = self
            .conn
            .prepare("SELECT party_index, envelope FROM session_results WHERE session_id = ?1 ORDER BY party_index")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([id], |r| Ok((usize::try_from(r.get::<_, i64>(0)?).unwrap_or(usize::MAX), r.get(1)?)))
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    /// Session `id`.
    pub fn session(&self, id: &str) -> Result<SessionRecord, NodeError> {
        let row = self
            .conn
            .query_row(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"), [id], read_session)
            .optional()
            .map_err(|e| self.sql(e))?;
        match row {
            None => Err(NodeError::UnknownSession(id.to_owned())),
            Some(r) => r.map_err(|reason| NodeError::Corrupt { path: self.path.clone(), reason }),
        }
    }

    /// The `limit` most recent sessions, newest first.
    pub fn list_sessions(&self, limit: usize) -> Result<Vec<SessionRecord>, NodeError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {SESSION_COLUMNS} FROM sessions ORDER BY created_at DESC, rowid DESC LIMIT ?1"))
            .map_err(|e| self.sql(e))?;
        let rows = stmt.query_map([limit], read_session).map_err(|e| self.sql(e))?;
        let rows = rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))?;
        rows.into_iter().map(|r| r.map_err(|reason| NodeError::Corrupt { path: self.path.clone(), reason })).collect()
    }

    /// Number of sessions per state.
    pub fn session_counts(&self) -> Result<Vec<(SessionState, u64)>, NodeError> {
        let mut out = Vec::new();
        for state in SessionState::ALL {
            let n: i64 = self
                .conn
                .query_row("SELECT COUNT(*) FROM sessions WHERE state = ?1", [state.name()], |r| r.get(0))
                .map_err(|e| self.sql(e))?;
            out.push((state, u64::try_from(n).unwrap_or(0)));
        }
        Ok(out)
    }

    /// At start-up: every session left pending or running by a previous run
    /// of the node failed; record why. Returns their ids.
    pub fn fail_interrupted_sessions(&mut self) -> Result<Vec<String>, NodeError> {
        let ids: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare("SELECT id FROM sessions WHERE state IN ('pending', 'running')")
                .map_err(|e| self.sql(e))?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.sql(e))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))?
        };
        for id in &ids {
            self.set_session_state(id, SessionState::Failed, Some("the node restarted during the session"))?;
        }
        Ok(ids)
    }

    /// Revoke the pairing with `name` (`concord peer remove`): it may no
    /// longer connect or take part in sessions. Logged.
    pub fn revoke_peer(&mut self, name: &str) -> Result<(), NodeError> {
        let path = self.path.clone();
        self.write(|tx| {
            let sql = |source| NodeError::Store { path: path.clone(), source };
            let n = tx
                .execute(
                    "UPDATE peers SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                    params![name, unix_now()],
                )
                .map_err(sql)?;
            if n == 0 {
                return Err(NodeError::UnknownPeer(name.to_owned()));
            }
            insert_event_with(
                tx,
                "peer.revoked",
                &format!("pairing with {name:?} revoked"),
                None,
                json!({ "peer": name }),
            )
            .map_err(sql)
        })
    }

    /// Record peer `name`'s new MPC address from a signed announcement made
    /// at `at` (Unix milliseconds; ignored unless newer than the last one). Returns whether it changed.
    pub fn update_peer_address(&mut self, name: &str, address: &str, at: i64) -> Result<bool, NodeError> {
        let path = self.path.clone();
        self.write(|tx| {
            let sql = |source| NodeError::Store { path: path.clone(), source };
            let row: Option<(String, i64)> = tx
                .query_row("SELECT address, announced_at FROM peers WHERE name = ?1", [name], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(sql)?;
            let Some((old, last)) = row else { return Err(NodeError::UnknownPeer(name.to_owned())) };
            if at <= last {
                return Ok(false);
            }
            tx.execute("UPDATE peers SET address = ?2, announced_at = ?3 WHERE name = ?1", params![name, address, at])
                .map_err(sql)?;
            if old != address {
                insert_event(
                    tx,
                    "peer.moved",
                    &format!("peer {name:?} announced its new address {address} (was {old})"),
                )
                .map_err(sql)?;
            }
            Ok(old != address)
        })
    }
}

/// Read one session row; the inner error is a corrupt value.
fn read_session(r: &Row<'_>) -> rusqlite::Result<Result<SessionRecord, String>> {
    let id: String = r.get(0)?;
    let state: String = r.get(3)?;
    let Some(state) = SessionState::parse(&state) else {
        return Ok(Err(format!("session {id}: unknown state {state:?}")));
    };
    Ok(Ok(SessionRecord {
        coordinator: r.get(1)?,
        plan: r.get(2)?,
        state,
        reason: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        finished_at: r.get(7)?,
        id,
    }))
}

/// A peer whose pairing was revoked may be paired again under the same name
/// (a replaced node, with a new identity): its revoked record is deleted, and
/// that is logged.
fn replace_revoked(tx: &Tx<'_>, peer: &PeerRecord) -> rusqlite::Result<()> {
    let old: Option<String> = tx
        .query_row("SELECT ed25519_public FROM peers WHERE name = ?1 AND revoked_at IS NOT NULL", [&peer.name], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(old) = old {
        tx.execute("DELETE FROM peers WHERE name = ?1 AND revoked_at IS NOT NULL", [&peer.name])?;
        insert_event_with(
            tx,
            "peer.replaced",
            &format!("the revoked pairing with {:?} (ed25519 {old}) is replaced by a new pairing", peer.name),
            None,
            json!({ "peer": peer.name, "old_ed25519_public": old }),
        )?;
    }
    Ok(())
}

fn check_new_peer(tx: &Transaction<'_>, peer: &PeerRecord) -> Result<(), NodeError> {
    let taken: Option<String> = tx
        .query_row(
            "SELECT name FROM peers WHERE name = ?1 OR ed25519_public = ?2 OR tls_fingerprint = ?3",
            params![peer.name, peer.ed25519_public, peer.tls_fingerprint],
            |r| r.get(0),
        )
        .optional()
        .map_err(|source| NodeError::Store { path: PathBuf::new(), source })?;
    match taken {
        Some(name) => Err(NodeError::DuplicatePeer(name)),
        None => Ok(()),
    }
}

fn insert_peer(tx: &Tx<'_>, peer: &PeerRecord) -> rusqlite::Result<()> {
    tx.execute(
        &format!("INSERT INTO peers ({PEER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)"),
        params![peer.name, peer.address, peer.api_address, peer.ed25519_public, peer.tls_fingerprint, peer.added_at],
    )?;
    insert_event_with(
        tx,
        "peer.paired",
        &format!(
            "paired with {:?} (ed25519 {}, tls {}, mpc {})",
            peer.name, peer.ed25519_public, peer.tls_fingerprint, peer.address
        ),
        None,
        json!({ "peer": peer.name, "ed25519_public": peer.ed25519_public, "tls_fingerprint": peer.tls_fingerprint,
                "address": peer.address }),
    )
}

fn insert_event(tx: &Tx<'_>, kind: &str, message: &str) -> rusqlite::Result<()> {
    insert_event_with(tx, kind, message, None, json!({}))
}

/// Record an event, and its audit entry (body: `message` and the fields of
/// `fields`, an object whose numbers must be integers; `session`: the
/// session it is about).
fn insert_event_with(
    tx: &Tx<'_>,
    kind: &str,
    message: &str,
    session: Option<&str>,
    fields: Value,
) -> rusqlite::Result<()> {
    tx.execute("INSERT INTO events (at, kind, message) VALUES (?1, ?2, ?3)", params![unix_now(), kind, message])?;
    tx.audit(Pending::event(kind, message, session, fields));
    Ok(())
}

fn with_path(e: NodeError, path: &Path) -> NodeError {
    match e {
        NodeError::Store { source, .. } => NodeError::Store { path: path.to_owned(), source },
        other => other,
    }
}

fn invalid_reason(status: &DatasetStatus) -> Option<&str> {
    match status {
        DatasetStatus::Valid => None,
        DatasetStatus::Invalid(reason) => Some(reason),
    }
}

fn to_i64(size: u64, rows: u64, path: &Path) -> Result<(i64, i64), NodeError> {
    let conv = |v: u64, what: &str| {
        i64::try_from(v)
            .map_err(|_| NodeError::Corrupt { path: path.to_owned(), reason: format!("{what} {v} too large") })
    };
    Ok((conv(size, "file size")?, conv(rows, "row count")?))
}

/// Read one dataset row; the inner error is a corrupt value.
fn read_dataset(r: &Row<'_>) -> rusqlite::Result<Result<DatasetRecord, String>> {
    let name: String = r.get(0)?;
    let size: i64 = r.get(4)?;
    let rows: i64 = r.get(6)?;
    let reason: Option<String> = r.get(8)?;
    let (Ok(file_size), Ok(row_count)) = (u64::try_from(size), u64::try_from(rows)) else {
        return Ok(Err(format!("dataset {name:?}: negative size or row count")));
    };
    Ok(Ok(DatasetRecord {
        file_path: PathBuf::from(r.get::<_, String>(1)?),
        schema_toml: r.get(2)?,
        file_sha256: r.get(3)?,
        file_size,
        file_mtime_ns: r.get(5)?,
        row_count,
        validated_at: r.get(7)?,
        status: reason.map_or(DatasetStatus::Valid, DatasetStatus::Invalid),
        name,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn peer(name: &str, key: &str) -> PeerRecord {
        PeerRecord {
            name: name.into(),
            address: "127.0.0.1:7301".into(),
            api_address: String::new(),
            ed25519_public: key.repeat(32),
            tls_fingerprint: key.repeat(32),
            added_at: 1,
            revoked_at: None,
        }
    }

    #[test]
    fn invitation_is_consumed_once_with_its_peer() {
        let mut s = Store::open_in_memory().unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        s.create_invitation("id1", "key", 100).unwrap();
        let inv = s.invitation("id1").unwrap().unwrap();
        assert_eq!((inv.expires_at, inv.used_at), (100, None));
        assert!(matches!(s.accept_invitation("nope", 50, &peer("b", "11")), Err(NodeError::UnknownInvitation)));
        s.accept_invitation("id1", 50, &peer("b", "11")).unwrap();
        assert_eq!(s.invitation("id1").unwrap().unwrap().used_at, Some(50));
        assert_eq!(s.list_peers().unwrap(), vec![peer("b", "11")]);
        let again = s.accept_invitation("id1", 51, &peer("c", "22"));
        assert!(matches!(again, Err(NodeError::InvitationUsed { used_at: 50 })), "{again:?}");
        assert_eq!(s.list_peers().unwrap().len(), 1);
        assert_eq!(s.recent_events(1).unwrap()[0].kind, "peer.paired");
    }

    #[test]
    fn expired_invitation_or_duplicate_peer_changes_nothing() {
        let mut s = Store::open_in_memory().unwrap();
        s.create_invitation("old", "key", 100).unwrap();
        let e = s.accept_invitation("old", 100, &peer("b", "11"));
        assert!(matches!(e, Err(NodeError::InvitationExpired { expires_at: 100 })), "{e:?}");
        assert_eq!(s.invitation("old").unwrap().unwrap().used_at, None);
        assert!(s.list_peers().unwrap().is_empty());

        s.add_peer(&peer("b", "11")).unwrap();
        s.create_invitation("new", "key", 200).unwrap();
        let e = s.accept_invitation("new", 150, &peer("b", "22"));
        assert!(matches!(e, Err(NodeError::DuplicatePeer(ref n)) if n == "b"), "{e:?}");
        let e = s.accept_invitation("new", 150, &peer("c", "11"));
        assert!(matches!(e, Err(NodeError::DuplicatePeer(ref n)) if n == "b"), "{e:?}");
        assert_eq!(s.invitation("new").unwrap().unwrap().used_at, None, "the invitation stays usable");
        assert_eq!(s.list_peers().unwrap().len(), 1);
    }

    #[test]
    fn budgets_are_charged_atomically_refused_when_exceeded_and_refunded_if_never_started() {
        let dir = std::env::temp_dir().join(format!("concord-budget-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.sqlite");
        {
            let mut s = Store::open(&path).unwrap();
            assert_eq!(s.budget("alice", "patients", 1.0).unwrap().spent, 0.0);
            s.create_session("s1", "a", "{}", "q").unwrap();
            let b = s.spend_budget("s1", "alice", "patients", 0.5, 1.0).unwrap();
            assert_eq!((b.spent, b.remaining()), (0.5, 0.5));
            // Another analyst and another dataset have their own budgets.
            s.spend_budget("s9", "bob", "patients", 0.9, 1.0).unwrap();
            s.spend_budget("s8", "alice", "visits", 0.9, 1.0).unwrap();
            // Exceeding: refused with the budget, nothing charged.
            match s.spend_budget("s2", "alice", "patients", 0.6, 1.0) {
                Err(NodeError::BudgetExceeded { cost, budget }) => {
                    assert_eq!((cost, budget.spent, budget.budget), (0.6, 0.5, 1.0));
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
            assert_eq!(s.budget("alice", "patients", 1.0).unwrap().spent, 0.5);
            // A session charged twice is refused by the store.
            assert!(s.spend_budget("s1", "alice", "patients", 0.1, 1.0).is_err());
            // The operator raises the budget: the same query now fits.
            s.set_budget("alice", "patients", 2.0).unwrap();
            assert!(s.set_budget("alice", "patients", f64::NAN).is_err());
            s.create_session("s2", "a", "{}", "q").unwrap();
            s.spend_budget("s2", "alice", "patients", 0.6, 1.0).unwrap();
            // s2 fails before it started: refunded. s1 ran: not refunded.
            assert!(s.set_session_state("s2", SessionState::Failed, Some("party c refused")).unwrap());
            assert!(s.set_session_state("s1", SessionState::Running, None).unwrap());
            assert!(s.set_session_state("s1", SessionState::Failed, Some("party c crashed")).unwrap());
        }
        // Persisted across a reopen (a restart).
        let s = Store::open(&path).unwrap();
        let b = s.budget("alice", "patients", 1.0).unwrap();
        assert_eq!((b.spent, b.budget), (0.5, 2.0));
        let all = s.list_budgets(1.0).unwrap();
        let keys: Vec<(&str, &str)> = all.iter().map(|b| (b.analyst.as_str(), b.dataset.as_str())).collect();
        assert_eq!(keys, [("alice", "patients"), ("alice", "visits"), ("bob", "patients")]);
        let kinds: Vec<String> = s.recent_events(50).unwrap().into_iter().map(|e| e.kind).collect();
        assert!(kinds.iter().any(|k| k == "budget.refunded") && kinds.iter().any(|k| k == "budget.spent"), "{kinds:?}");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn session_states_are_final_once_terminal_and_restarts_fail_active_ones() {
        let mut s = Store::open_in_memory().unwrap();
        s.create_session("s1", "a", "{}", "q").unwrap();
        assert!(matches!(s.create_session("s1", "a", "{}", "q"), Err(NodeError::DuplicateSession(_))));
        assert_eq!(s.session("s1").unwrap().state, SessionState::Pending);
        assert!(s.set_session_state("s1", SessionState::Running, None).unwrap());
        assert!(!s.set_session_state("s1", SessionState::Running, None).unwrap());
        assert!(s.set_session_state("s1", SessionState::Failed, Some("party b disconnected")).unwrap());
        // Final: neither done nor cancelled can overwrite the recorded failure.
        assert!(!s.set_session_state("s1", SessionState::Done, None).unwrap());
        let r = s.session("s1").unwrap();
        assert_eq!((r.state, r.reason.as_deref()), (SessionState::Failed, Some("party b disconnected")));
        assert!(r.finished_at.is_some());
        assert!(matches!(s.set_session_state("nope", SessionState::Done, None), Err(NodeError::UnknownSession(_))));

        s.create_session("s2", "a", "{}", "q").unwrap();
        s.create_session("s3", "a", "{}", "q").unwrap();
        s.set_session_state("s3", SessionState::Running, None).unwrap();
        let mut failed = s.fail_interrupted_sessions().unwrap();
        failed.sort();
        assert_eq!(failed, vec!["s2".to_owned(), "s3".to_owned()]);
        assert!(s.session("s3").unwrap().reason.unwrap().contains("restarted"));
        let counts = s.session_counts().unwrap();
        assert_eq!(counts.iter().find(|(st, _)| *st == SessionState::Failed).unwrap().1, 3);

        s.set_progress("s1", "b", "connecting").unwrap();
        s.set_progress("s1", "b", "computing").unwrap();
        assert_eq!(s.progress("s1").unwrap().len(), 1);
        assert_eq!(s.progress("s1").unwrap()[0].phase, "computing");
        assert_eq!(s.put_result("s1", 0, "e0").unwrap(), 1);
        assert_eq!(s.put_result("s1", 0, "other").unwrap(), 1, "the first result of a party wins");
        assert_eq!(s.results("s1").unwrap(), vec![(0, "e0".to_owned())]);
    }

    #[test]
    fn peers_move_only_forward_in_time_and_revocation_is_recorded() {
        let mut s = Store::open_in_memory().unwrap();
        s.add_peer(&peer("b", "11")).unwrap();
        assert!(s.update_peer_address("b", "10.0.0.2:7301", 10).unwrap());
        assert!(!s.update_peer_address("b", "10.0.0.3:7301", 10).unwrap(), "a replayed time is ignored");
        assert!(!s.update_peer_address("b", "10.0.0.3:7301", 9).unwrap(), "an older announcement is ignored");
        assert_eq!(s.list_peers().unwrap()[0].address, "10.0.0.2:7301");
        assert!(matches!(s.update_peer_address("x", "a:1", 11), Err(NodeError::UnknownPeer(_))));
        s.revoke_peer("b").unwrap();
        assert!(s.list_peers().unwrap()[0].revoked_at.is_some());
        assert!(matches!(s.revoke_peer("b"), Err(NodeError::UnknownPeer(_))));
        assert_eq!(s.recent_events(1).unwrap()[0].kind, "peer.revoked");
        // A replaced node (new identity, same name) may be paired again once revoked.
        s.add_peer(&peer("b", "22")).unwrap();
        let peers = s.list_peers().unwrap();
        assert_eq!(
            (peers.len(), peers[0].revoked_at, peers[0].ed25519_public.as_str()),
            (1, None, "22".repeat(32).as_str())
        );
        assert!(s.recent_events(2).unwrap().iter().any(|e| e.kind == "peer.replaced"));
        assert!(matches!(s.add_peer(&peer("b", "33")), Err(NodeError::DuplicatePeer(_))), "only a revoked one");
    }
}
