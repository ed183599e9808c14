//! Seeds shared pairwise and by all parties, and the PRG streams drawn from them.
//!
//! Every ordered pair (i, j) has a stream known to exactly i and j, keyed by
//! the seed the pair shares; i uses it to draw the share it would otherwise
//! send to j. Both ends draw the same number of elements in the same order,
//! so the streams stay in lockstep. The common seed is known to every party.
//!
//! The streams are ChaCha with 8 rounds (Bernstein 2008): the best known
//! attack reaches 7 rounds, and Aumasson ("Too Much Crypto", 2019) argues 8
//! rounds keep a comfortable margin; the PRG is the hottest kernel of
//! resharing, so the 1.5x over ChaCha12 matters.
//!
//! Seed agreement: for every pair i < j, party i samples a 32-byte seed and
//! sends it to j over the session's authenticated, encrypted channel; party
//! 0 samples the common seed and sends it to all. ([`SeedSetup`].)

use concord_math::Ring;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::{ChaCha12Rng, ChaCha8Rng};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{PartyId, ProtocolError};

/// A 32-byte secret seed: zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Seed([u8; 32]);

impl Seed {
    /// Wrap raw seed bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Seed(b)
    }
    /// A fresh seed from `rng`.
    pub fn random<G: RngCore + ?Sized>(rng: &mut G) -> Self {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        Seed(b)
    }
    /// The raw bytes. **Secret**: only for sending to the one peer that shares it.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
    fn stream(&self, id: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::from_seed(self.0);
        rng.set_stream(id);
        rng
    }
}

impl core::fmt::Debug for Seed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Seed(redacted)")
    }
}

/// Seed agreement, step by step.
pub struct SeedSetup {
    me: PartyId,
    n: usize,
    mine: Vec<Option<Seed>>,
    common: Option<Seed>,
}

/// The seed messages party `me` must send: to every j > me its pairwise
/// seed, and (party 0 only) the common seed to everyone.
pub struct SeedMessages {
    /// (recipient, 32 or 64 bytes: pairwise seed, then the common seed if party 0 sends one).
    pub outgoing: Vec<(PartyId, Vec<u8>)>,
}

impl SeedSetup {
    /// Step 1: sample the seeds this party is responsible for.
    pub fn start<G: RngCore + ?Sized>(me: PartyId, n: usize, rng: &mut G) -> (Self, SeedMessages) {
        let mut mine: Vec<Option<Seed>> = (0..n).map(|_| None).collect();
        let common = (me == 0).then(|| Seed::random(rng));
        let mut outgoing = Vec::new();
        for (j, slot) in mine.iter_mut().enumerate().skip(me + 1) {
            let s = Seed::random(rng);
            let mut msg = s.expose().to_vec();
            if let Some(c) = &common {
                msg.extend_from_slice(c.expose());
            }
            *slot = Some(s);
            outgoing.push((j, msg));
        }
        (SeedSetup { me, n, mine, common }, SeedMessages { outgoing })
    }

    /// The parties this party must receive a seed message from (every i < me).
    pub fn expected_from(&self) -> Vec<PartyId> {
        (0..self.me).collect()
    }

    /// Step 2: take the seed message of party `from` (< me).
    pub fn receive(&mut self, from: PartyId, msg: &[u8]) -> Result<(), ProtocolError> {
        let want = if from == 0 { 64 } else { 32 };
        if from >= self.me || msg.len() != want {
            return Err(ProtocolError::Malformed {
                peer: from,
                what: "seed",
                reason: format!("expected {want} bytes from a lower-numbered party, got {}", msg.len()),
            });
        }
        let mut b = [0u8; 32];
        b.copy_from_slice(&msg[..32]);
        if let Some(slot) = self.mine.get_mut(from) {
            *slot = Some(Seed::from_bytes(b));
        }
        if from == 0 {
            b.copy_from_slice(&msg[32..64]);
            self.common = Some(Seed::from_bytes(b));
        }
        b.zeroize();
        Ok(())
    }

    /// Step 3: all seeds known; build the streams.
    pub fn finish(self) -> Result<Prss, ProtocolError> {
        let me = self.me;
        let missing =
            |peer: PartyId| ProtocolError::Malformed { peer, what: "seed", reason: "no seed received".into() };
        let common = self.common.clone().ok_or_else(|| missing(0))?;
        let mut out_streams = Vec::with_capacity(self.n);
        let mut in_streams = Vec::with_capacity(self.n);
        for (j, s) in self.mine.iter().enumerate() {
            if j == me {
                out_streams.push(None);
                in_streams.push(None);
                continue;
            }
            let s = s.as_ref().ok_or_else(|| missing(j))?;
            // Stream id sender * n + receiver keeps the two directions of a pair apart.
            out_streams.push(Some(s.stream((me * self.n + j) as u64)));
            in_streams.push(Some(s.stream((j * self.n + me) as u64)));
        }
        Ok(Prss { me, n: self.n, out_streams, in_streams, common: common.stream(u64::MAX), local: None })
    }
}

/// The PRG streams of one party.
pub struct Prss {
    me: PartyId,
    n: usize,
    out_streams: Vec<Option<ChaCha8Rng>>,
    in_streams: Vec<Option<ChaCha8Rng>>,
    common: ChaCha8Rng,
    local: Option<ChaCha12Rng>,
}

impl core::fmt::Debug for Prss {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Prss(party {} of {}, redacted)", self.me, self.n)
    }
}

impl Prss {
    /// Our party index.
    pub fn me(&self) -> PartyId {
        self.me
    }
    /// Number of parties.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Fill `out` from the stream this party shares with `to` (what it would send `to`).
    pub fn fill_to<R: Ring>(&mut self, to: PartyId, out: &mut [R]) -> Result<(), ProtocolError> {
        let rng = self
            .out_streams
            .get_mut(to)
            .and_then(Option::as_mut)
            .ok_or_else(|| ProtocolError::InvalidParams(format!("no stream to party {to}")))?;
        R::fill_random(rng, out);
        Ok(())
    }

    /// Fill `out` from the stream `from` uses for what it would send us.
    pub fn fill_from<R: Ring>(&mut self, from: PartyId, out: &mut [R]) -> Result<(), ProtocolError> {
        let rng = self
            .in_streams
            .get_mut(from)
            .and_then(Option::as_mut)
            .ok_or_else(|| ProtocolError::InvalidParams(format!("no stream from party {from}")))?;
        R::fill_random(rng, out);
        Ok(())
    }

    /// Draw `len` elements of the stream this party shares with `to` for messages it would send `to`.
    pub fn draw_to<R: Ring>(&mut self, to: PartyId, len: usize) -> Result<Vec<R>, ProtocolError> {
        let rng = self
            .out_streams
            .get_mut(to)
            .and_then(Option::as_mut)
            .ok_or_else(|| ProtocolError::InvalidParams(format!("no stream to party {to}")))?;
        let mut v = vec![R::ZERO; len];
        R::fill_random(rng, &mut v);
        Ok(v)
    }

    /// Draw `len` elements of the stream `from` uses for messages it would send us.
    pub fn draw_from<R: Ring>(&mut self, from: PartyId, len: usize) -> Result<Vec<R>, ProtocolError> {
        let rng = self
            .in_streams
            .get_mut(from)
            .and_then(Option::as_mut)
            .ok_or_else(|| ProtocolError::InvalidParams(format!("no stream from party {from}")))?;
        let mut v = vec![R::ZERO; len];
        R::fill_random(rng, &mut v);
        Ok(v)
    }

    /// The stream every party shares (for test doubles and public coins).
    pub fn common(&mut self) -> &mut ChaCha8Rng {
        &mut self.common
    }

    /// This party's private randomness (seeded from the caller's RNG at first use).
    pub fn set_local(&mut self, rng: ChaCha12Rng) {
        self.local = Some(rng);
    }

    /// Private randomness; `None` until [`Self::set_local`].
    pub fn local(&mut self) -> Option<&mut ChaCha12Rng> {
        self.local.as_mut()
    }

    /// Run seed agreement for all `n` parties in memory (tests and single-process tools).
    pub fn all_in_memory<G: RngCore + ?Sized>(n: usize, rng: &mut G) -> Result<Vec<Prss>, ProtocolError> {
        let mut setups = Vec::with_capacity(n);
        let mut msgs = Vec::with_capacity(n);
        for me in 0..n {
            let (s, m) = SeedSetup::start(me, n, rng);
            setups.push(s);
            msgs.push(m);
        }
        for (from, m) in msgs.iter().enumerate() {
            for (to, bytes) in &m.outgoing {
                if let Some(s) = setups.get_mut(*to) {
                    s.receive(from, bytes)?;
                }
            }
        }
        setups.into_iter().map(SeedSetup::finish).collect()
    }
}
