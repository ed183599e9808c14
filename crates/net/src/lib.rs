//! # concord-net: transports for Concord
//!
//! Every protocol in Concord talks to its peers through one narrow interface,
//! [`Transport`]: send a byte message to a party, receive the next message
//! from a party, abort, and report traffic counters. Nothing above this crate
//! knows whether the bytes travel through memory or over a socket.
//!
//! Two implementations:
//! - [`sim`]: an in-process simulated network, deterministic for a seed, with
//!   per-link latency, bandwidth, jitter and packet loss (recovered by
//!   retransmission), for tests and parameter sweeps;
//! - [`tls`]: TCP with mutually authenticated TLS 1.3 (RFC 8446, via rustls),
//!   peers pinned by the SHA-256 fingerprint of their certificate, carrying
//!   the versioned frames of [`concord_wire`].
//!
//! [`peer`] lets a long-running node serve several sessions and node-to-node
//! control requests through one TCP port: a cleartext preamble routes each
//! connection before its TLS handshake.
//!
//! Guarantees of every transport: messages on one ordered link (a to b) are
//! delivered exactly once and in order; every receive waits at most the
//! configured timeout; a peer's abort or disconnect surfaces as an error that
//! names the peer.

use std::future::Future;
use std::time::Duration;

pub mod peer;
pub mod sim;
pub mod tls;

/// Index of a party in a session, `0..n`.
pub type PartyId = usize;

/// Traffic counters of one party's transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Payload bytes handed to `send` (what the protocol sent).
    pub payload_bytes_sent: u64,
    /// Payload bytes returned by `recv`.
    pub payload_bytes_received: u64,
    /// Bytes written to the medium including framing (and TLS records for [`tls`]).
    pub wire_bytes_sent: u64,
    /// Bytes read from the medium including framing (and TLS records for [`tls`]).
    pub wire_bytes_received: u64,
    /// Number of messages sent.
    pub messages_sent: u64,
}

/// Errors of the transport layer. Where a peer can be blamed, it is named.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A party index outside `0..n` or equal to our own was used as a peer.
    #[error("party {party} is not a peer of party {me} in a session of {n} parties")]
    NoSuchPeer {
        /// The index given.
        party: PartyId,
        /// Our own index.
        me: PartyId,
        /// Number of parties.
        n: usize,
    },
    /// Waiting for a message from `peer` took longer than the configured timeout.
    #[error("timed out after {after:?} waiting for a message from party {peer}")]
    Timeout {
        /// The silent peer.
        peer: PartyId,
        /// How long we waited.
        after: Duration,
    },
    /// The peer's connection closed or broke.
    #[error("party {peer} disconnected: {reason}")]
    Disconnected {
        /// The peer.
        peer: PartyId,
        /// What happened.
        reason: String,
    },
    /// The peer told us it aborted the session.
    #[error("party {peer} aborted the session: {reason}")]
    PeerAborted {
        /// The peer.
        peer: PartyId,
        /// Its stated reason.
        reason: String,
    },
    /// The peer sent bytes that are not a valid frame, or a frame we did not expect.
    #[error("party {peer} sent a bad frame: {source}")]
    BadFrame {
        /// The peer.
        peer: PartyId,
        /// What was wrong with it.
        #[source]
        source: concord_wire::WireError,
    },
    /// A frame carried a session id other than ours.
    #[error("party {peer} sent a frame for session {got}, expected session {expected}")]
    WrongSession {
        /// The peer.
        peer: PartyId,
        /// Session id received (hex).
        got: String,
        /// Our session id (hex).
        expected: String,
    },
    /// A certificate presented in the TLS handshake is not the pinned one.
    #[error("peer at {addr} presented certificate {fingerprint}, which is not pinned for this session")]
    UnpinnedCertificate {
        /// The remote address.
        addr: String,
        /// Hex SHA-256 fingerprint of the presented certificate.
        fingerprint: String,
    },
    /// TLS handshake or configuration failed.
    #[error("TLS with {who}: {reason}")]
    Tls {
        /// The peer (party index or address).
        who: String,
        /// What failed.
        reason: String,
    },
    /// A socket operation failed.
    #[error("I/O with {who}: {source}")]
    Io {
        /// The peer (party index or address) or local resource.
        who: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A message larger than the configured maximum was sent or announced.
    #[error("message of {size} bytes to/from party {peer} exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The peer.
        peer: PartyId,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The transport was configured inconsistently.
    #[error("invalid transport configuration: {0}")]
    Config(String),
    /// The peer refused the certificate we presented in the TLS handshake
    /// (it has not pinned or paired it).
    #[error("peer at {addr} refused our certificate {fingerprint}: {reason}")]
    CertificateRefused {
        /// The remote address.
        addr: String,
        /// Hex SHA-256 fingerprint of our certificate.
        fingerprint: String,
        /// What the peer said (the TLS alert), or what we saw.
        reason: String,
    },
    /// A control message larger than the limit was sent or announced.
    #[error("control message of {size} bytes to/from {who} exceeds the limit of {limit} bytes")]
    ControlMessageTooLarge {
        /// The other end (address).
        who: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The peer port cannot serve the request (shut down, session already registered).
    #[error("peer port: {0}")]
    PeerPort(String),
}

/// The one interface between protocols and the network.
///
/// Implementations must deliver messages on each ordered link exactly once
/// and in order, bound every wait by a timeout, and surface aborts and
/// disconnects as errors naming the peer. `send` may return before the
/// message has been delivered.
pub trait Transport: Send + Sync + 'static {
    /// Our own party index.
    fn me(&self) -> PartyId;
    /// Number of parties in the session (including us).
    fn parties(&self) -> usize;
    /// Queue `payload` for delivery to party `to`.
    fn send(&self, to: PartyId, payload: Vec<u8>) -> impl Future<Output = Result<(), NetError>> + Send;
    /// Receive the next message from party `from`, waiting at most the configured timeout.
    fn recv(&self, from: PartyId) -> impl Future<Output = Result<Vec<u8>, NetError>> + Send;
    /// Tell every peer that we abort the session, with `reason`; best effort, never blocks long.
    fn abort(&self, reason: &str) -> impl Future<Output = ()> + Send;
    /// Traffic counters so far.
    fn stats(&self) -> LinkStats;
    /// End the session gracefully: deliver every queued message, tell every
    /// peer we close, and stop (bounded time, best effort). Nothing may be
    /// sent afterwards.
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send;
}

/// Check that `peer` is a valid peer index for a party `me` among `n`.
pub fn check_peer(peer: PartyId, me: PartyId, n: usize) -> Result<(), NetError> {
    if peer >= n || peer == me {
        Err(NetError::NoSuchPeer { party: peer, me, n })
    } else {
        Ok(())
    }
}

/// Lower-case hex of `bytes` (fingerprints and session ids in messages).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Decode lower- or upper-case hexadecimal (surrounding white space
/// ignored); `None` if malformed.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    let pairs = text.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 2);
    for pair in pairs {
        let hi = char::from(*pair.first()?).to_digit(16)?;
        let lo = char::from(*pair.get(1)?).to_digit(16)?;
        out.push(u8::try_from(hi * 16 + lo).ok()?);
    }
    Some(out)
}
