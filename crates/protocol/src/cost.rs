//! Rounds and elements sent per party for each operation on vectors of
//! `len` elements: the theoretical counts, which tests compare with what the
//! engine measures. Long vectors travel in batches of [`BATCH`] elements,
//! all sent before any is awaited (so still one round); every batch message
//! carries an 8-byte header ([`crate::message::HEADER_LEN`]).
//!
//! Shamir, n parties, threshold t, with PRSS (t shares of every fresh
//! sharing drawn from pairwise seeds):
//! - input by o: o sends (n - 1 - t) * len; one round if n - 1 - t > 0.
//! - multiplication: each p in {0..2t} sends (n - 1 - t) * len; one round.
//! - open to all: each party sends t * len; one round.
//! - open to one: t parties send len each; one round.
//!
//! So for n = 3, t = 1 over GF(2^61-1) an opened product costs each party
//! 8 + 8 = 16 bytes (plus 2 x 8 header bytes per batch).
//!
//! Additive with Beaver triples: input 0 messages; multiplication 2(n - 1) *
//! len per party; open (n - 1) * len per party; open to one: (n - 1) parties
//! send len each.

/// Elements per message: operations on longer vectors stream in batches of this size.
pub const BATCH: usize = 1 << 16;

/// Number of batch messages for a vector of `len` elements (at least one).
pub fn batches(len: usize) -> u64 {
    len.div_ceil(BATCH).max(1) as u64
}

/// Cost of one operation for one party.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Communication rounds.
    pub rounds: u64,
    /// Field/ring elements sent by this party.
    pub elements_sent: u64,
    /// Messages sent by this party.
    pub messages_sent: u64,
}

impl Cost {
    /// Bytes sent: elements of `elem_bytes` plus one header per message.
    pub fn bytes_sent(&self, elem_bytes: usize) -> u64 {
        self.elements_sent * elem_bytes as u64 + self.messages_sent * crate::message::HEADER_LEN as u64
    }
}

impl core::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            rounds: self.rounds + o.rounds,
            elements_sent: self.elements_sent + o.elements_sent,
            messages_sent: self.messages_sent + o.messages_sent,
        }
    }
}

/// Shamir input by `owner`, as seen by party `me`.
pub fn shamir_input(n: usize, t: usize, owner: usize, me: usize, len: usize) -> Cost {
    let fanout = (n - 1 - t) as u64;
    Cost {
        rounds: u64::from(fanout > 0),
        elements_sent: if me == owner { fanout * len as u64 } else { 0 },
        messages_sent: if me == owner { fanout * batches(len) } else { 0 },
    }
}

/// Shamir multiplication of two vectors, party `me`.
pub fn shamir_mul(n: usize, t: usize, me: usize, len: usize) -> Cost {
    let fanout = (n - 1 - t) as u64;
    let resharer = me <= 2 * t;
    Cost {
        rounds: 1,
        elements_sent: if resharer { fanout * len as u64 } else { 0 },
        messages_sent: if resharer { fanout * batches(len) } else { 0 },
    }
}

/// Shamir opening to all, any party.
pub fn shamir_open(t: usize, len: usize) -> Cost {
    Cost { rounds: 1, elements_sent: (t * len) as u64, messages_sent: t as u64 * batches(len) }
}

/// Additive multiplication with Beaver triples.
pub fn beaver_mul(n: usize, len: usize) -> Cost {
    Cost { rounds: 1, elements_sent: (2 * (n - 1) * len) as u64, messages_sent: (n - 1) as u64 }
}

/// Additive opening to all.
pub fn additive_open(n: usize, len: usize) -> Cost {
    Cost { rounds: 1, elements_sent: ((n - 1) * len) as u64, messages_sent: (n - 1) as u64 }
}
