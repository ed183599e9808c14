//! # concord-sharing: secret sharing
//!
//! - [`additive`]: n-of-n additive sharing over any [`Ring`]: x = x_0 + ... + x_{n-1}.
//! - [`shamir`]: t-of-n Shamir sharing over a [`Field`] (Shamir, "How to
//!   share a secret", CACM 1979): party i holds f(i+1) for a random
//!   polynomial f of degree t with f(0) = x; any t+1 shares reconstruct x by
//!   Lagrange interpolation at 0, any t shares are uniformly distributed.
//! - [`lagrange`]: interpolation coefficients, precomputed once per set of
//!   parties and reused for every element of a vector.
//!
//! Shares are secret: they live in [`ShareVec`], which zeroizes on drop,
//! prints nothing of its contents, compares in constant time, and hands out
//! its raw values only through the explicitly named [`ShareVec::expose`].
//!
//! This crate does no I/O.

use concord_math::Ring;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

pub mod additive;
pub mod lagrange;
pub mod shamir;

pub use concord_math::{Field, Ring as RingTrait};

/// Index of a party, `0..n`. Party i's Shamir evaluation point is i + 1.
pub type PartyId = usize;

/// Errors of the sharing layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SharingError {
    /// Threshold and party count that cannot work together.
    #[error("invalid sharing parameters: {0}")]
    InvalidParams(String),
    /// A party index outside `0..n`.
    #[error("party {party} is out of range for {n} parties")]
    PartyOutOfRange {
        /// The index.
        party: PartyId,
        /// Number of parties.
        n: usize,
    },
    /// The same party appears twice in a reconstruction set.
    #[error("party {0} appears twice in the set")]
    DuplicateParty(PartyId),
    /// Too few shares to reconstruct.
    #[error("{have} shares cannot reconstruct a threshold-{t} secret: at least {need} are needed")]
    NotEnoughShares {
        /// Shares given.
        have: usize,
        /// Shares needed.
        need: usize,
        /// The threshold.
        t: usize,
    },
    /// A share vector of the wrong length.
    #[error("share of party {party} has {got} elements, expected {expected}")]
    LengthMismatch {
        /// The party whose share is off.
        party: PartyId,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
}

/// One party's share of a secret vector.
///
/// Zeroized on drop; `Debug` prints only the domain and length; equality is
/// constant time. Read the raw values with [`ShareVec::expose`].
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ShareVec<R: Ring>(Vec<R>);

impl<R: Ring> ShareVec<R> {
    /// Wrap raw share values (for protocol code that produced them).
    pub fn from_raw(values: Vec<R>) -> Self {
        ShareVec(values)
    }

    /// A share of the all-zero vector of length `len` (every party's share of a public 0).
    pub fn zeros(len: usize) -> Self {
        ShareVec(vec![R::ZERO; len])
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the vector is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The raw share values. **Secret**: this is one party's share; it must
    /// only be sent to a peer by a protocol, never logged or displayed.
    pub fn expose(&self) -> &[R] {
        &self.0
    }

    /// Mutable raw share values, for protocol code operating in place. **Secret**.
    pub fn expose_mut(&mut self) -> &mut Vec<R> {
        &mut self.0
    }
}

impl<R: Ring> core::fmt::Debug for ShareVec<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ShareVec<{}>[{} elements, redacted]", R::NAME, self.0.len())
    }
}

impl<R: Ring> ConstantTimeEq for ShareVec<R> {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        if self.0.len() != other.0.len() {
            return subtle::Choice::from(0);
        }
        self.0.iter().zip(&other.0).fold(subtle::Choice::from(1), |acc, (a, b)| acc & a.ct_eq(b))
    }
}

impl<R: Ring> PartialEq for ShareVec<R> {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}
impl<R: Ring> Eq for ShareVec<R> {}

pub(crate) fn check_set(parties: &[PartyId], n: usize) -> Result<(), SharingError> {
    for (i, &p) in parties.iter().enumerate() {
        if p >= n {
            return Err(SharingError::PartyOutOfRange { party: p, n });
        }
        if parties[..i].contains(&p) {
            return Err(SharingError::DuplicateParty(p));
        }
    }
    Ok(())
}
