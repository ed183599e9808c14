//! The Concord node: one long-running daemon per organisation.
//!
//! This crate is the node as a library (no command-line parsing):
//!
//! - [`config`]: `concord.toml`, written with comments, loaded strictly;
//! - [`identity`]: the node's Ed25519 signing key and TLS certificate, secret
//!   files written `0600` and never overwritten;
//! - [`store`]: the embedded SQLite store (versioned migrations, WAL) of
//!   datasets, peers and an append-only event log;
//! - [`audit`]: the tamper-evident audit log: every event becomes a signed,
//!   hash-chained entry (`concord-audit`) in the same transaction, with a
//!   signed head checkpoint in `DIR/data/audit.head`;
//! - [`pairing`]: one-time pairing invitations, HMAC-SHA256;
//! - [`datasets`]: registering local data files (validated against their
//!   schema, hashed) and re-validating them when they change;
//! - [`dashboard`]: the HTML dashboard page (peers, datasets, sessions,
//!   events), server-rendered, no JavaScript;
//! - [`server`]: the HTTP API (`/` the dashboard, `/healthz`, `/metrics`,
//!   `/api/datasets`, `/api/peers`, `/openapi.json`) with graceful shutdown.
//!
//! A node directory holds:
//!
//! ```text
//! DIR/concord.toml            configuration (0644)
//! DIR/identity/signing.key    Ed25519 secret key, hex (0600)
//! DIR/identity/tls.key        TLS private key, PEM (0600)
//! DIR/identity/tls.crt        TLS certificate, PEM (0644)
//! DIR/identity/public.json    public identity: name, Ed25519 public key, TLS fingerprint (0644)
//! DIR/data/concord.db         the store (data_dir is configurable)
//! DIR/data/audit.head         signed checkpoint of the audit log's head (one JSON line)
//! ```

pub mod access;
pub mod approval;
pub mod audit;
pub mod config;
pub mod consortium;
pub mod dashboard;
pub mod datasets;
mod error;
pub mod identity;
pub mod pairing;
pub mod rekey;
pub mod server;
pub mod service;
pub mod store;
#[cfg(test)]
mod testing;
pub mod unlock;
pub mod witness;

pub use config::{NodeConfig, PeerConfig};
pub use error::NodeError;
pub use identity::{NodeIdentity, PublicIdentity};
pub use store::{
    DatasetRecord, DatasetStatus, Event, InvitationRecord, PeerRecord, SessionRecord, SessionState, Store,
};

/// Name of the configuration file inside a node directory.
pub const CONFIG_FILE: &str = "concord.toml";

pub use concord_net::{hex, unhex};

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(unhex("0001ABff"), Some(bytes.to_vec()));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
