//! # concord-protocol: MPC protocol logic without I/O
//!
//! The round functions of Concord's semi-honest protocols, written as pure
//! functions from a party's state and the messages it received to its new
//! state and the messages it must send (the shape of `mpz`'s core crates and
//! `frost-core`'s per-round functions). The engine (`concord-engine`) moves
//! the messages; nothing here knows a socket or a clock.
//!
//! - [`prss`]: pairwise and common seeds and the PRG streams derived from
//!   them (pseudo-random secret sharing, Cramer, Damgard and Ishai, TCC 2005).
//! - [`shamir`]: honest-majority protocols over Shamir shares: input
//!   sharing, multiplication by local product and degree reduction through
//!   resharing (Gennaro, Rabin and Rabin, PODC 1998, "GRR"), opening to all or
//!   to one party. t of the n - 1 - ... shares of every fresh sharing are
//!   drawn from pairwise seeds instead of being sent.
//! - [`beaver`]: n-of-n additive sharing over any ring with multiplication by
//!   Beaver triples (Beaver, CRYPTO 1991).
//! - [`rep3`]: three-party replicated sharing over Z/2^64 and bit-sliced
//!   GF(2) (Araki et al., CCS 2016): local parts of multiplication and AND.
//! - [`preprocessing`]: the triple interface and [`preprocessing::InsecureDealer`],
//!   a test double.
//! - [`message`]: the 8-byte header that tags every protocol message.
//! - [`cost`]: rounds and elements sent per party, per operation.

use concord_sharing::SharingError;

pub mod beaver;
pub mod cost;
pub mod message;
pub mod preprocessing;
pub mod prss;
pub mod rep3;
pub mod shamir;

pub use concord_sharing::PartyId;

/// Encoded messages to send: (recipient, bytes).
pub type Outgoing = Vec<(PartyId, Vec<u8>)>;

/// Errors of protocol logic. Where a peer's message is at fault, it is named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Parameters that the protocol cannot run with.
    #[error("invalid protocol parameters: {0}")]
    InvalidParams(String),
    /// A peer's message does not decode.
    #[error("party {peer} sent a malformed {what} message: {reason}")]
    Malformed {
        /// The peer.
        peer: PartyId,
        /// Which message.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A peer's message is not the one the protocol expects next.
    #[error("party {peer} sent {got}, expected {expected}: the parties are not running the same protocol")]
    OutOfSequence {
        /// The peer.
        peer: PartyId,
        /// What came.
        got: String,
        /// What was expected.
        expected: String,
    },
    /// A peer's vector has the wrong length.
    #[error("party {peer} sent {got} elements for {what}, expected {expected}")]
    WrongLength {
        /// The peer.
        peer: PartyId,
        /// Which message.
        what: &'static str,
        /// Expected count.
        expected: usize,
        /// Received count.
        got: usize,
    },
    /// Operands of different lengths.
    #[error("operand lengths differ: {left} vs {right}")]
    LengthMismatch {
        /// Left operand length.
        left: usize,
        /// Right operand length.
        right: usize,
    },
    /// The preprocessing source failed or ran dry.
    #[error("preprocessing: {0}")]
    Preprocessing(String),
    /// An error from the sharing layer.
    #[error(transparent)]
    Sharing(#[from] SharingError),
}
