//! The error type of the node library.

use std::path::PathBuf;

/// Errors of the node. Each names what was wrong: the file, the key, the
/// dataset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is malformed (syntax, unknown key, bad value).
    #[error("{}: {reason}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong, with the key and position as reported by the parser.
        reason: String,
    },
    /// A node identity already exists where a new one was to be written.
    #[error("{}: a node identity already exists here; refusing to overwrite it", path.display())]
    IdentityExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A key or certificate file is malformed.
    #[error("{}: {reason}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Generating the TLS certificate failed.
    #[error("cannot generate the TLS certificate: {0}")]
    Tls(String),
    /// A dataset or node name is not acceptable.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The schema file does not parse.
    #[error("{}: {reason}", path.display())]
    Schema {
        /// The schema file (or `<stored schema of dataset NAME>`).
        path: PathBuf,
        /// What the schema parser reported.
        reason: String,
    },
    /// The data file does not match its schema (file, row, column, reason as
    /// reported by the data layer).
    #[error("{0}")]
    Data(#[from] concord_data::DataError),
    /// The data file changed while it was being validated.
    #[error("{}: the file changed while it was being validated; try again", path.display())]
    ChangedDuringValidation {
        /// The file.
        path: PathBuf,
    },
    /// No dataset has this name.
    #[error("no dataset named {0:?}")]
    UnknownDataset(String),
    /// A dataset with this name is already registered.
    #[error("a dataset named {0:?} is already registered")]
    DuplicateDataset(String),
    /// No pairing invitation has this id.
    #[error("unknown_invitation: no such invitation on this node (a typo, or created on another node)")]
    UnknownInvitation,
    /// The invitation was already used.
    #[error("invitation_used: this invitation was already used (at {used_at}); ask for a new one")]
    InvitationUsed {
        /// When it was used, Unix seconds.
        used_at: i64,
    },
    /// The invitation expired.
    #[error("invitation_expired: this invitation expired at {expires_at} (Unix seconds); ask for a new one")]
    InvitationExpired {
        /// Expiry, Unix seconds.
        expires_at: i64,
    },
    /// No session with this id.
    #[error("unknown_session: no session {0:?} on this node")]
    UnknownSession(String),
    /// A session with this id exists already.
    #[error("a session {0:?} exists already")]
    DuplicateSession(String),
    /// A privacy budget or cost out of its domain.
    #[error("invalid budget: {0}")]
    InvalidBudget(String),
    /// A differentially private query would exceed an analyst's budget.
    #[error(
        "budget_exceeded: the query costs rho {cost:.6} but analyst {:?} has rho {:.6} left of {:.6} on dataset {:?}",
        budget.analyst, budget.remaining(), budget.budget, budget.dataset
    )]
    BudgetExceeded {
        /// The cost of the query.
        cost: f64,
        /// The budget before it.
        budget: Box<crate::store::Budget>,
    },
    /// No analyst with this name.
    #[error("unknown_analyst: no analyst named {0:?} is registered here (or it is revoked already)")]
    UnknownAnalyst(String),
    /// An analyst with this name exists.
    #[error("analyst_exists: an analyst named {0:?} is registered already")]
    DuplicateAnalyst(String),
    /// No peer with this name.
    #[error("unknown_peer: no paired peer named {0:?}")]
    UnknownPeer(String),
    /// A peer with this name, key or fingerprint is already paired.
    #[error("peer_exists: already paired with a node named {0:?} (same name, key or fingerprint)")]
    DuplicatePeer(String),
    /// The store (SQLite) failed.
    #[error("store {}: {source}", path.display())]
    Store {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// Migrating the store to the current schema failed.
    #[error("store {}: migration failed: {reason}", path.display())]
    Migration {
        /// The database file.
        path: PathBuf,
        /// The migration error.
        reason: String,
    },
    /// The store's audit log has entries, and a write was attempted without
    /// the node's signing key ([`crate::Store::set_auditor`]).
    #[error(
        "store {}: the audit log has entries, so every write must be audited: open the store with the node's \
         signing key (Store::set_auditor); nothing was written",
        path.display()
    )]
    AuditorRequired {
        /// The database file.
        path: PathBuf,
    },
    /// The audit log does not verify (the entry and what is wrong are in `source`).
    #[error("{}: the audit log does not verify: {source}", path.display())]
    AuditChain {
        /// The database file, or the head file for a checkpoint.
        path: PathBuf,
        /// What is wrong, naming the entry (`source.seq()`).
        #[source]
        source: concord_audit::AuditError,
    },
    /// The audit log or its head file cannot be used (unreadable, missing,
    /// another node's, or found tampered with when appending).
    #[error("{}: audit log: {reason}", path.display())]
    Audit {
        /// The database or head file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A value read back from the store is not what this version wrote.
    #[error("store {}: corrupt record: {reason}", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A consortium (key generation, key share, result statement) problem.
    #[error("consortium: {0}")]
    Consortium(String),
    /// A threshold unlock (unlock key, share, request) problem.
    #[error("unlock: {0}")]
    Unlock(String),
}

impl NodeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> NodeError {
        NodeError::Io { path: path.into(), source }
    }
}
