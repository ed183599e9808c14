//! Correlated randomness consumed by the online phase.
//!
//! The engine asks a provider for triples through an interface that allows
//! a networked producer (oblivious-transfer-based triple generation, a later
//! issue) as well as [`InsecureDealer`], the test double used today.

use concord_math::{batch, Ring};
use concord_sharing::ShareVec;
use rand_chacha::ChaCha12Rng;

use crate::ProtocolError;

/// One party's shares of a batch of multiplication triples c = a * b.
pub struct Triples<R: Ring> {
    /// Shares of a.
    pub a: ShareVec<R>,
    /// Shares of b.
    pub b: ShareVec<R>,
    /// Shares of c = a * b.
    pub c: ShareVec<R>,
}

impl<R: Ring> Triples<R> {
    /// Number of triples.
    pub fn len(&self) -> usize {
        self.a.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.a.is_empty()
    }
}

impl<R: Ring> core::fmt::Debug for Triples<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Triples<{}>[{} triples, redacted]", R::NAME, self.len())
    }
}

/// **INSECURE TEST DOUBLE** for a trusted triple dealer.
///
/// Every party derives the same global triples from a seed common to all
/// parties and keeps its own share, so every party could compute every
/// other party's share: this gives the right shape and cost to the online
/// phase for tests and benchmarks, and no security. It exists until
/// dealer-free (oblivious-transfer) triples land.
pub struct InsecureDealer {
    me: usize,
    n: usize,
    rng: ChaCha12Rng,
}

impl InsecureDealer {
    /// A dealer double for party `me` of `n`, drawing from the common stream `rng`
    /// (identical at every party).
    pub fn new(me: usize, n: usize, rng: ChaCha12Rng) -> Self {
        InsecureDealer { me, n, rng }
    }

    /// Our shares of `count` fresh triples.
    pub fn triples<R: Ring>(&mut self, count: usize) -> Result<Triples<R>, ProtocolError> {
        if self.me >= self.n {
            return Err(ProtocolError::InvalidParams("dealer party out of range".into()));
        }
        // Global a and b, then n-1 random shares of each of a, b, c; the
        // last party's share is the remainder.
        let mut a = vec![R::ZERO; count];
        let mut b = vec![R::ZERO; count];
        R::fill_random(&mut self.rng, &mut a);
        R::fill_random(&mut self.rng, &mut b);
        let c = batch::mul(&a, &b);
        let mut mine = [Vec::new(), Vec::new(), Vec::new()];
        let mut rest = [a, b, c];
        let mut share = vec![R::ZERO; count];
        for p in 0..self.n - 1 {
            for (k, total) in rest.iter_mut().enumerate() {
                R::fill_random(&mut self.rng, &mut share);
                batch::sub_assign(total, &share);
                if p == self.me {
                    mine[k] = share.clone();
                }
            }
        }
        if self.me == self.n - 1 {
            mine = rest;
        }
        let [a, b, c] = mine;
        Ok(Triples { a: ShareVec::from_raw(a), b: ShareVec::from_raw(b), c: ShareVec::from_raw(c) })
    }
}
