//! The three-party replicated engine: Z/2^64 arithmetic and bit-sliced
//! boolean circuits (Araki, Furukawa, Lindell, Nof and Ohara, CCS 2016),
//! with the conversions of ABY3 (Mohassel and Rindal, CCS 2018), for fast
//! comparisons, equality, selection, min/max and clamping.
//!
//! Exactly three parties, semi-honest, one corruption (t = 1). Shares are
//! [`RingShare`] (arithmetic) and [`BitShare`] (boolean, 64 elements per
//! word); see `concord_protocol::rep3` for the local algebra.
//!
//! # Comparison: sign bit by a bit-sliced adder
//! For x in `[-2^(k-1), 2^(k-1))`, `[x < 0]` is bit k-1 of x mod 2^k. The
//! three components x_0 + x_1 + x_2 are each known to two parties, hence are
//! boolean-shared for free; then ([`Rep3Engine::msb`]):
//! 1. a carry-save layer turns three addends into two, s = x_0 ^ x_1 ^ x_2
//!    and c = 2 maj(x_0, x_1, x_2): one AND round, k - 1 ANDs;
//! 2. generate g_j = s_j c_j and propagate p_j = s_j ^ c_j on positions
//!    1 .. k-2 (position 0 never carries since c_0 = 0): one round, k - 2 ANDs;
//! 3. the carry into position k-1 by a prefix tree of (G, P) pairs
//!    (G = g_hi ^ p_hi g_lo, P = p_hi p_lo, no P for the lowest block):
//!    ceil(log2(k-2)) rounds, about 2(k-2) ANDs;
//! 4. the sign is s_{k-1} ^ c_{k-1} ^ carry (local).
//!
//! For 32-bit inputs, x < y is the sign of x - y on k = 33 bits: 7 rounds and
//! 118 ANDs, i.e. 118 bits (14.75 bytes) sent per party per comparison.
//!
//! # Equality
//! x = 0 mod 2^k iff A = x_0 + x_1 equals B = -x_2. Party 0 knows A and
//! parties 1 and 2 know B, so [A ^ B] needs one message of k bits from party
//! 0 to party 2 (masked by a stream party 2 does not know); then x = 0 is
//! the AND of the k complemented bits: 1 + ceil(log2 k) rounds, k - 1 ANDs.
//!
//! # Bit to arithmetic (selection)
//! With a preprocessed random bit r shared both as a bit and in Z/2^64 (a
//! "daBit", generated from PRSS bits by two multiplication rounds,
//! [`Rep3Engine::preprocess`]), [b] in Z/2^64 is c + [r] - 2c[r] for the
//! opened c = b ^ r: one round. Selection b ? x : y = y + [b](x - y) takes
//! one more.

use concord_math::Z64;
use concord_net::{PartyId, Transport};
use concord_protocol::message::{self, Op};
use concord_protocol::rep3::{self, next, prev, slice_bits, words, BitShare, RingShare};
use concord_protocol::ProtocolError;
use rand_chacha::rand_core::RngCore;

use crate::{EngineError, EngineStats, Session};

/// Domain code of ring messages.
const RING: u8 = 3;
/// Domain code of bit messages.
const BITS: u8 = 4;

/// Which extremum [`Rep3Engine::extremum`] finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extremum {
    /// The smallest value (the first one among ties).
    Min,
    /// The largest value (the first one among ties).
    Max,
}

/// One party of the three-party replicated engine.
pub struct Rep3Engine<T: Transport> {
    session: Session<T>,
    /// Preprocessed daBits: boolean components (whole words) ...
    pool_bits: (Vec<u64>, Vec<u64>),
    /// ... and the same bits in Z/2^64 (64 per word).
    pool_ring: (Vec<u64>, Vec<u64>),
    /// Words of the pool already used.
    pool_used: usize,
    /// Counters of preprocessing (kept apart from the online counters).
    preprocessing: EngineStats,
}

fn ring_of(own: Vec<u64>, next: Vec<u64>) -> Result<RingShare, EngineError> {
    Ok(RingShare::from_parts(own, next)?)
}

impl<T: Transport> Rep3Engine<T> {
    /// Set up a session over `net` (which must connect exactly 3 parties):
    /// one round of seed agreement.
    pub async fn new<G: RngCore + ?Sized>(net: T, rng: &mut G) -> Result<Self, EngineError> {
        if net.parties() != 3 {
            return Err(EngineError::Usage(format!(
                "the replicated engine runs exactly 3 parties, not {}",
                net.parties()
            )));
        }
        let session = Session::setup(net, rng).await?;
        Ok(Rep3Engine {
            session,
            pool_bits: (Vec::new(), Vec::new()),
            pool_ring: (Vec::new(), Vec::new()),
            pool_used: 0,
            preprocessing: EngineStats::default(),
        })
    }

    /// Our party index (0, 1 or 2).
    pub fn me(&self) -> PartyId {
        self.session.me()
    }

    /// Counters of everything so far (preprocessing included).
    pub fn stats(&self) -> EngineStats {
        self.session.stats()
    }

    /// Counters of [`Self::preprocess`] calls alone.
    pub fn preprocessing_stats(&self) -> EngineStats {
        self.preprocessing
    }

    /// The session (transport counters, abort).
    pub fn session(&mut self) -> &mut Session<T> {
        &mut self.session
    }

    /// End the session (see [`Session::finish`]).
    pub async fn finish(&mut self) -> Result<(), EngineError> {
        self.session.finish().await
    }

    async fn local<V>(&self, r: Result<V, ProtocolError>) -> Result<V, EngineError> {
        self.session.guard(r.map_err(EngineError::from)).await
    }

    /// Our component of a fresh zero-sharing of `len` ring elements.
    fn zero_ring(&mut self, len: usize) -> Result<Vec<u64>, EngineError> {
        let me = self.me();
        let a = self.session.prss().draw_to::<Z64>(next(me), len)?;
        let b = self.session.prss().draw_from::<Z64>(prev(me), len)?;
        Ok(a.iter().zip(&b).map(|(a, b)| a.value().wrapping_sub(b.value())).collect())
    }

    /// Our component of a fresh XOR zero-sharing of `len` words.
    fn zero_bits(&mut self, len: usize) -> Result<Vec<u64>, EngineError> {
        let me = self.me();
        let a = self.session.prss().draw_to::<Z64>(next(me), len)?;
        let b = self.session.prss().draw_from::<Z64>(prev(me), len)?;
        Ok(a.iter().zip(&b).map(|(a, b)| a.value() ^ b.value()).collect())
    }

    fn stream_to(&mut self, to: PartyId, len: usize) -> Result<Vec<u64>, EngineError> {
        Ok(self.session.prss().draw_to::<Z64>(to, len)?.into_iter().map(Z64::value).collect())
    }

    fn stream_from(&mut self, from: PartyId, len: usize) -> Result<Vec<u64>, EngineError> {
        Ok(self.session.prss().draw_from::<Z64>(from, len)?.into_iter().map(Z64::value).collect())
    }

    /// One round: send `payload` to `to` (if any) and receive `len` words from `from` (if any).
    async fn send_recv(
        &mut self,
        op: Op,
        domain: u8,
        to: Option<(PartyId, &[u64])>,
        from: Option<(PartyId, usize)>,
        what: &'static str,
    ) -> Result<Option<Vec<u64>>, EngineError> {
        let seq = self.session.next_seq();
        let sends = to.map(|(p, w)| vec![(p, message::encode_words(op, domain, seq, w))]).unwrap_or_default();
        let from_ids: Vec<PartyId> = from.iter().map(|(p, _)| *p).collect();
        let got = self.session.exchange(sends, &from_ids).await?;
        match (from, got.first()) {
            (Some((p, len)), Some((_, m))) => {
                let r = message::expect_words(p, m, op, domain, seq, len, what);
                Ok(Some(self.local(r).await?))
            }
            _ => Ok(None),
        }
    }

    /// Share `len` values owned by `owner` (who passes `Some(values)`): one
    /// round, the owner sends one component to each other party.
    pub async fn input(
        &mut self,
        owner: PartyId,
        values: Option<&[u64]>,
        len: usize,
    ) -> Result<RingShare, EngineError> {
        let me = self.me();
        if owner > 2 {
            return Err(EngineError::Usage(format!("input owner {owner} is not a party (0, 1, 2)")));
        }
        if (me == owner) != values.is_some() {
            return Err(EngineError::Usage(format!("party {me} gave input values for owner {owner}'s input")));
        }
        // Components: x_o from the stream of (o-1, o), x_{o+1} from the
        // stream of (o, o+1), x_{o+2} = x - x_o - x_{o+1} sent by the owner.
        if me == owner {
            let values = values.unwrap_or_default();
            if values.len() != len {
                // Only the owner can see this: tell the peers instead of leaving them waiting.
                let err = EngineError::Usage(format!("{} input values given, {len} declared", values.len()));
                return self.session.guard(Err(err)).await;
            }
            let own = self.stream_from(prev(me), len)?;
            let nxt = self.stream_to(next(me), len)?;
            let third: Vec<u64> = (0..len).map(|k| values[k].wrapping_sub(own[k]).wrapping_sub(nxt[k])).collect();
            let seq = self.session.next_seq();
            let m = message::encode_words(Op::Input, RING, seq, &third);
            self.session.exchange(vec![(next(me), m.clone()), (prev(me), m)], &[]).await?;
            ring_of(own, nxt)
        } else if me == next(owner) {
            let own = self.stream_from(owner, len)?;
            let third = self.send_recv(Op::Input, RING, None, Some((owner, len)), "input").await?.unwrap_or_default();
            ring_of(own, third)
        } else {
            let nxt = self.stream_to(owner, len)?;
            let third = self.send_recv(Op::Input, RING, None, Some((owner, len)), "input").await?.unwrap_or_default();
            ring_of(third, nxt)
        }
    }

    /// Open a ring vector to all parties: one round, one element per element sent.
    pub async fn open(&mut self, x: &RingShare) -> Result<Vec<u64>, EngineError> {
        let me = self.me();
        let (own, nxt) = x.expose();
        let missing = self.send_recv(Op::Open, RING, Some((next(me), own)), Some((prev(me), x.len())), "open").await?;
        let missing = missing.unwrap_or_default();
        Ok((0..x.len()).map(|k| own[k].wrapping_add(nxt[k]).wrapping_add(missing[k])).collect())
    }

    /// Open a boolean share to all parties; returns its words (plane-major),
    /// bits beyond the element count cleared.
    pub async fn open_bits(&mut self, x: &BitShare) -> Result<Vec<u64>, EngineError> {
        let me = self.me();
        let (own, nxt) = x.expose();
        let n = own.len();
        let missing = self.send_recv(Op::Open, BITS, Some((next(me), own)), Some((prev(me), n)), "open").await?;
        let missing = missing.unwrap_or_default();
        let mut out: Vec<u64> = (0..n).map(|k| own[k] ^ nxt[k] ^ missing[k]).collect();
        let w = words(x.len());
        if !x.len().is_multiple_of(64) && w > 0 {
            let tail = rep3::low_mask((x.len() % 64) as u32);
            for p in 0..x.planes() {
                if let Some(last) = out.get_mut(p * w + w - 1) {
                    *last &= tail;
                }
            }
        }
        Ok(out)
    }

    /// Open a one-plane boolean share as booleans.
    pub async fn open_bools(&mut self, x: &BitShare) -> Result<Vec<bool>, EngineError> {
        let w = self.open_bits(x).await?;
        Ok(rep3::plane_bits(&w, x.len()))
    }

    /// Element-wise product: one round, one element sent per product.
    pub async fn mul(&mut self, x: &RingShare, y: &RingShare) -> Result<RingShare, EngineError> {
        let alpha = self.zero_ring(x.len())?;
        let z = self.local(x.mul_local(y, &alpha)).await?;
        let me = self.me();
        let got = self.send_recv(Op::Reshare, RING, Some((prev(me), &z)), Some((next(me), z.len())), "mul").await?;
        ring_of(z, got.unwrap_or_default())
    }

    /// Inner product: one round, one element sent whatever the length.
    pub async fn inner_product(&mut self, x: &RingShare, y: &RingShare) -> Result<RingShare, EngineError> {
        let alpha = self.zero_ring(1)?;
        let z = self.local(x.inner_local(y, alpha.first().copied().unwrap_or(0))).await?;
        let me = self.me();
        let got =
            self.send_recv(Op::Reshare, RING, Some((prev(me), &[z])), Some((next(me), 1)), "inner product").await?;
        ring_of(vec![z], got.unwrap_or_default())
    }

    /// Element-wise AND of two boolean shares of the same shape: one round,
    /// one bit sent per AND.
    pub async fn and(&mut self, x: &BitShare, y: &BitShare) -> Result<BitShare, EngineError> {
        let alpha = self.zero_bits(x.total_words())?;
        let z = self.local(x.and_local(y, &alpha)).await?;
        let me = self.me();
        let got = self.send_recv(Op::Reshare, BITS, Some((prev(me), &z)), Some((next(me), z.len())), "and").await?;
        self.local(x.with_components(z, got.unwrap_or_default())).await
    }

    /// `[x < 0]` for x in `[-2^(k-1), 2^(k-1))` (bit k-1 of x mod 2^k), as a
    /// one-plane boolean share; 1 <= k <= 64. Rounds: 0 for k = 1, 1 for
    /// k = 2, else 2 + ceil(log2(k - 2)).
    pub async fn msb(&mut self, x: &RingShare, k: u32) -> Result<BitShare, EngineError> {
        if !(1..=64).contains(&k) {
            return Err(EngineError::Usage(format!("bit length {k} is outside 1..=64")));
        }
        let (me, len, kk) = (self.me(), x.len(), k as usize);
        let mask = rep3::low_mask(k);
        let (own, nxt) = x.expose();
        let own_planes = slice_bits(&own.iter().map(|v| v & mask).collect::<Vec<_>>(), kk);
        let next_planes = slice_bits(&nxt.iter().map(|v| v & mask).collect::<Vec<_>>(), kk);
        // The three summands, each boolean-shared with one non-zero component.
        let xs: [BitShare; 3] = core::array::from_fn(|c| {
            let value = if c == me {
                Some(own_planes.clone())
            } else if c == next(me) {
                Some(next_planes.clone())
            } else {
                None
            };
            BitShare::from_component(me, c, len, kk, value)
        });
        // Step 1: carry-save. s = x0 ^ x1 ^ x2; maj = ((x0^x2) & (x1^x2)) ^ x2.
        let s = self.local(xs[0].xor(&xs[1]).and_then(|v| v.xor(&xs[2]))).await?;
        if k == 1 {
            return Ok(s);
        }
        let low = 0..kk - 1;
        let u = self.local(xs[0].xor(&xs[2]).and_then(|v| v.plane_range(low.clone()))).await?;
        let v = self.local(xs[1].xor(&xs[2]).and_then(|v| v.plane_range(low.clone()))).await?;
        let x2 = self.local(xs[2].plane_range(low)).await?;
        let uv = self.and(&u, &v).await?;
        // maj plane j is the carry into position j + 1.
        let maj = self.local(uv.xor(&x2)).await?;
        let top = self.local(s.plane(kk - 1).and_then(|a| maj.plane(kk - 2).and_then(|b| a.xor(&b)))).await?;
        if k == 2 {
            return Ok(top);
        }
        // Step 2: generate and propagate on positions 1 ..= k-2.
        let s_mid = self.local(s.plane_range(1..kk - 1)).await?;
        let c_mid = self.local(maj.plane_range(0..kk - 2)).await?;
        let g = self.and(&s_mid, &c_mid).await?;
        let p = self.local(s_mid.xor(&c_mid)).await?;
        // Step 3: the carry out of positions 1 ..= k-2.
        let carry = self.carry_tree(&g, &p).await?;
        // Step 4.
        self.local(top.xor(&carry)).await
    }

    /// The carry out of a block of positions with generate bits `g` and
    /// propagate bits `p` (one plane per position, lowest first) and no
    /// carry in: a tree of (G, P) combinations, one round per level.
    async fn carry_tree(&mut self, g: &BitShare, p: &BitShare) -> Result<BitShare, EngineError> {
        let m = g.planes();
        let mut nodes: Vec<(BitShare, Option<BitShare>)> = Vec::with_capacity(m);
        for j in 0..m {
            let gj = self.local(g.plane(j)).await?;
            // The lowest block's P is never needed (no carry comes in).
            let pj = if j == 0 { None } else { Some(self.local(p.plane(j)).await?) };
            nodes.push((gj, pj));
        }
        while nodes.len() > 1 {
            let mut lhs = Vec::new();
            let mut rhs = Vec::new();
            for pair in nodes.chunks(2) {
                if let [(g_lo, p_lo), (_, Some(p_hi))] = pair {
                    lhs.push(p_hi);
                    rhs.push(g_lo);
                    if let Some(p_lo) = p_lo {
                        lhs.push(p_hi);
                        rhs.push(p_lo);
                    }
                }
            }
            let a = self.local(BitShare::stack(&lhs)).await?;
            let b = self.local(BitShare::stack(&rhs)).await?;
            let prod = self.and(&a, &b).await?;
            let mut at = 0;
            let mut out = Vec::with_capacity(nodes.len().div_ceil(2));
            for pair in nodes.chunks(2) {
                match pair {
                    [(_, p_lo), (g_hi, Some(_))] => {
                        let pg = self.local(prod.plane(at)).await?;
                        let g_new = self.local(g_hi.xor(&pg)).await?;
                        at += 1;
                        let p_new = if p_lo.is_some() {
                            at += 1;
                            Some(self.local(prod.plane(at - 1)).await?)
                        } else {
                            None
                        };
                        out.push((g_new, p_new));
                    }
                    [single] => out.push(single.clone()),
                    _ => return Err(EngineError::Usage("internal: a carry block without propagate bits".into())),
                }
            }
            nodes = out;
        }
        match nodes.pop() {
            Some((g, _)) => Ok(g),
            None => Ok(BitShare::zeros(g.len(), 1)),
        }
    }

    /// `[x < y]` for signed integers of `bits` bits (1..=63): the sign of x - y on bits + 1 bits.
    pub async fn less_than(&mut self, x: &RingShare, y: &RingShare, bits: u32) -> Result<BitShare, EngineError> {
        check_bits(bits)?;
        let d = self.local(x.sub(y)).await?;
        self.msb(&d, bits + 1).await
    }

    /// `[x <= y]` = NOT `[y < x]`.
    pub async fn less_equal(&mut self, x: &RingShare, y: &RingShare, bits: u32) -> Result<BitShare, EngineError> {
        let gt = self.less_than(y, x, bits).await?;
        let me = self.me();
        self.local(gt.not(me)).await
    }

    /// `[x > y]` = `[y < x]`.
    pub async fn greater_than(&mut self, x: &RingShare, y: &RingShare, bits: u32) -> Result<BitShare, EngineError> {
        self.less_than(y, x, bits).await
    }

    /// `[x < 0]` (the sign) for signed integers of `bits` bits.
    pub async fn sign(&mut self, x: &RingShare, bits: u32) -> Result<BitShare, EngineError> {
        check_bits(bits)?;
        self.msb(x, bits).await
    }

    /// `[x == y]` for integers of `bits` bits (x - y = 0 mod 2^bits).
    pub async fn equal(&mut self, x: &RingShare, y: &RingShare, bits: u32) -> Result<BitShare, EngineError> {
        check_bits(bits)?;
        let d = self.local(x.sub(y)).await?;
        self.is_zero(&d, bits).await
    }

    /// `[x == 0 mod 2^k]`, 1 <= k <= 64: 1 + ceil(log2 k) rounds.
    pub async fn is_zero(&mut self, x: &RingShare, k: u32) -> Result<BitShare, EngineError> {
        if !(1..=64).contains(&k) {
            return Err(EngineError::Usage(format!("bit length {k} is outside 1..=64")));
        }
        let (me, len, kk) = (self.me(), x.len(), k as usize);
        let mask = rep3::low_mask(k);
        let total = kk * words(len);
        let (own, nxt) = x.expose();
        // [A ^ B] with A = x0 + x1 (party 0), B = -x2 (parties 1, 2):
        // component 2 = B, component 1 = s (stream of parties 0 and 1),
        // component 0 = A ^ s, sent by party 0 to party 2.
        let e = match me {
            0 => {
                let a: Vec<u64> = own.iter().zip(nxt).map(|(a, b)| a.wrapping_add(*b) & mask).collect();
                let s = self.stream_to(1, total)?;
                let c0: Vec<u64> = slice_bits(&a, kk).iter().zip(&s).map(|(a, s)| a ^ s).collect();
                self.send_recv(Op::Input, BITS, Some((2, &c0)), None, "equality").await?;
                BitShare::from_parts(len, kk, c0, s)
            }
            1 => {
                let s = self.stream_from(0, total)?;
                let b: Vec<u64> = nxt.iter().map(|v| v.wrapping_neg() & mask).collect();
                // Party 1 neither sends nor receives in this round; keep the sequence numbers in step.
                self.session.next_seq();
                BitShare::from_parts(len, kk, s, slice_bits(&b, kk))
            }
            _ => {
                let b: Vec<u64> = own.iter().map(|v| v.wrapping_neg() & mask).collect();
                let c0 = self.send_recv(Op::Input, BITS, None, Some((0, total)), "equality").await?;
                BitShare::from_parts(len, kk, slice_bits(&b, kk), c0.unwrap_or_default())
            }
        };
        let e = self.local(e.and_then(|e| e.not(me))).await?;
        // AND of all k planes of NOT(A ^ B), halving per round.
        let mut cur = e;
        while cur.planes() > 1 {
            let half = cur.planes() / 2;
            let a = self.local(cur.plane_range(0..half)).await?;
            let b = self.local(cur.plane_range(half..2 * half)).await?;
            let prod = self.and(&a, &b).await?;
            cur = if cur.planes() % 2 == 1 {
                let rest = self.local(cur.plane(2 * half)).await?;
                self.local(BitShare::stack(&[&prod, &rest])).await?
            } else {
                prod
            };
        }
        Ok(cur)
    }

    /// Generate at least `count` daBits ahead of the online phase: random
    /// bits from the pairwise streams (no communication), then their Z/2^64
    /// form by two multiplication rounds (r = r0 ^ r1 ^ r2 with
    /// a ^ b = a + b - 2ab). Counted in [`Self::preprocessing_stats`].
    pub async fn preprocess(&mut self, count: usize) -> Result<(), EngineError> {
        if count == 0 {
            return Ok(());
        }
        let before = self.stats();
        let me = self.me();
        let w = words(count);
        let len = w * 64;
        // Component me comes from the stream of (me-1, me), component me+1 from (me, me+1).
        let own = self.stream_from(prev(me), w)?;
        let nxt = self.stream_to(next(me), w)?;
        let own_ints = rep3::unslice_bits(&own, 1, len);
        let next_ints = rep3::unslice_bits(&nxt, 1, len);
        let r = self.local(RingShare::from_parts(own_ints, next_ints)).await?;
        let [r0, r1, r2] = self.local(r.summands(me)).await?;
        let p01 = self.mul(&r0, &r1).await?;
        let t = self.local(r0.add(&r1).and_then(|s| s.sub(&p01.scale(2)))).await?;
        let p = self.mul(&t, &r2).await?;
        let ring = self.local(t.add(&r2).and_then(|s| s.sub(&p.scale(2)))).await?;
        // Drop the used part of the pool, then append.
        let used = self.pool_used;
        self.pool_bits.0.drain(..used.min(self.pool_bits.0.len()));
        self.pool_bits.1.drain(..used.min(self.pool_bits.1.len()));
        let used_ring = (used * 64).min(self.pool_ring.0.len());
        self.pool_ring.0.drain(..used_ring);
        self.pool_ring.1.drain(..used_ring);
        self.pool_used = 0;
        self.pool_bits.0.extend_from_slice(&own);
        self.pool_bits.1.extend_from_slice(&nxt);
        let (ro, rn) = ring.expose();
        self.pool_ring.0.extend_from_slice(ro);
        self.pool_ring.1.extend_from_slice(rn);
        let after = self.stats();
        self.preprocessing.rounds += after.rounds - before.rounds;
        self.preprocessing.bytes_sent += after.bytes_sent - before.bytes_sent;
        self.preprocessing.bytes_received += after.bytes_received - before.bytes_received;
        self.preprocessing.messages_sent += after.messages_sent - before.messages_sent;
        Ok(())
    }

    /// daBits available without more preprocessing.
    pub fn dabits_available(&self) -> usize {
        (self.pool_bits.0.len() - self.pool_used) * 64
    }

    /// A one-plane bit share in Z/2^64 (0 or 1): one round with a
    /// preprocessed daBit per element (generated now if the pool is short).
    pub async fn bit_to_ring(&mut self, b: &BitShare) -> Result<RingShare, EngineError> {
        if b.planes() != 1 {
            return Err(EngineError::Usage(format!("bit_to_ring takes one plane, got {}", b.planes())));
        }
        self.bits_to_ring(b).await
    }

    /// Every plane of a bit share in Z/2^64, plane-major (`planes * len`
    /// elements): one round, one daBit per element (whole words per plane).
    pub async fn bits_to_ring(&mut self, b: &BitShare) -> Result<RingShare, EngineError> {
        let (len, w, planes) = (b.len(), words(b.len()), b.planes());
        let total = w * planes;
        if self.dabits_available() < total * 64 {
            self.preprocess(total * 64).await?;
        }
        let u = self.pool_used;
        let rb = BitShare::from_parts(
            len,
            planes,
            self.pool_bits.0[u..u + total].to_vec(),
            self.pool_bits.1[u..u + total].to_vec(),
        );
        let (mut ro, mut rn) = (Vec::with_capacity(planes * len), Vec::with_capacity(planes * len));
        for q in 0..planes {
            let start = (u + q * w) * 64;
            ro.extend_from_slice(&self.pool_ring.0[start..start + len]);
            rn.extend_from_slice(&self.pool_ring.1[start..start + len]);
        }
        self.pool_used += total;
        let masked = self.local(rb.and_then(|r| b.xor(&r))).await?;
        let opened = self.open_bits(&masked).await?;
        let c: Vec<bool> = (0..planes).flat_map(|q| rep3::plane_bits(&opened[q * w..(q + 1) * w], len)).collect();
        // [b] = c + [r] - 2c[r]: [r] where c = 0, 1 - [r] where c = 1.
        let flip = |v: &[u64]| -> Vec<u64> {
            v.iter().zip(&c).map(|(x, &ci)| if ci { x.wrapping_neg() } else { *x }).collect()
        };
        let flipped = ring_of(flip(&ro), flip(&rn))?;
        let ones: Vec<u64> = c.iter().map(|&ci| ci as u64).collect();
        self.local(flipped.add_public(self.me(), &ones)).await
    }

    /// The low `k` bits of the two addends A = x_0 + x_1 (known to party 0)
    /// and B = x_2 (known to parties 1 and 2) of x, boolean-shared, and the
    /// ring sharing of (A mod 2^k) >> d + (B mod 2^k) >> d. One round: party 0
    /// sends party 2 its masked bits of A and its masked A >> d.
    async fn addends(&mut self, x: &RingShare, k: u32, d: u32) -> Result<(BitShare, BitShare, RingShare), EngineError> {
        let (me, len, kk) = (self.me(), x.len(), k as usize);
        let mask = rep3::low_mask(k);
        let total = kk * words(len);
        let (own, nxt) = x.expose();
        let shr = |v: u64| if d >= 64 { 0 } else { v >> d };
        let seq = self.session.next_seq();
        let (a, b, hi) = match me {
            0 => {
                let av: Vec<u64> = own.iter().zip(nxt).map(|(p, q)| p.wrapping_add(*q) & mask).collect();
                let s = self.stream_to(1, total)?;
                let s2 = self.stream_to(1, len)?;
                let c0: Vec<u64> = slice_bits(&av, kk).iter().zip(&s).map(|(a, s)| a ^ s).collect();
                let h0: Vec<u64> = av.iter().zip(&s2).map(|(a, s)| shr(*a).wrapping_sub(*s)).collect();
                let mut payload = c0.clone();
                payload.extend_from_slice(&h0);
                self.session.exchange(vec![(2, message::encode_words(Op::Input, BITS, seq, &payload))], &[]).await?;
                (BitShare::from_parts(len, kk, c0, s), Ok(BitShare::zeros(len, kk)), ring_of(h0, s2)?)
            }
            1 => {
                let s = self.stream_from(0, total)?;
                let s2 = self.stream_from(0, len)?;
                let bv: Vec<u64> = nxt.iter().map(|v| v & mask).collect();
                let bh: Vec<u64> = bv.iter().map(|v| shr(*v)).collect();
                (
                    BitShare::from_parts(len, kk, s, vec![0; total]),
                    BitShare::from_parts(len, kk, vec![0; total], slice_bits(&bv, kk)),
                    ring_of(s2, bh)?,
                )
            }
            _ => {
                let bv: Vec<u64> = own.iter().map(|v| v & mask).collect();
                let bh: Vec<u64> = bv.iter().map(|v| shr(*v)).collect();
                let got = self.session.exchange(Vec::new(), &[0]).await?;
                let m = got.first().map(|(_, m)| m.as_slice()).unwrap_or_default();
                let r = message::expect_words(0, m, Op::Input, BITS, seq, total + len, "addends");
                let mut payload = self.local(r).await?;
                let h0 = payload.split_off(total);
                (
                    BitShare::from_parts(len, kk, vec![0; total], payload),
                    BitShare::from_parts(len, kk, slice_bits(&bv, kk), vec![0; total]),
                    ring_of(bh, h0)?,
                )
            }
        };
        Ok((self.local(a).await?, self.local(b).await?, hi))
    }

    /// Carries of A + B for generate bits `g` and propagate bits `p` (one
    /// plane per position, lowest first): plane j of the result is the carry
    /// out of position j (into j + 1). Sklansky's parallel prefix: ceil(log2 k)
    /// rounds, at most k ANDs per level.
    async fn prefix_carries(&mut self, g: &BitShare, p: &BitShare) -> Result<BitShare, EngineError> {
        let k = g.planes();
        let mut gs = Vec::with_capacity(k);
        let mut ps = Vec::with_capacity(k);
        for j in 0..k {
            gs.push(self.local(g.plane(j)).await?);
            ps.push(self.local(p.plane(j)).await?);
        }
        let mut step = 1;
        while step < k {
            // Every j in the upper half of a block of 2*step combines with the
            // top of the lower half, src = (j / step) * step - 1.
            let upper: Vec<(usize, usize)> =
                (0..k).filter(|j| (j / step) % 2 == 1).map(|j| (j, (j / step) * step - 1)).collect();
            let mut lhs = Vec::with_capacity(2 * upper.len());
            let mut rhs = Vec::with_capacity(2 * upper.len());
            for &(j, src) in &upper {
                lhs.push(&ps[j]);
                rhs.push(&gs[src]);
                lhs.push(&ps[j]);
                rhs.push(&ps[src]);
            }
            let a = self.local(BitShare::stack(&lhs)).await?;
            let b = self.local(BitShare::stack(&rhs)).await?;
            let prod = self.and(&a, &b).await?;
            for (i, &(j, _)) in upper.iter().enumerate() {
                let pg = self.local(prod.plane(2 * i)).await?;
                gs[j] = self.local(gs[j].xor(&pg)).await?;
                ps[j] = self.local(prod.plane(2 * i + 1)).await?;
            }
            step *= 2;
        }
        let refs: Vec<&BitShare> = gs.iter().collect();
        self.local(BitShare::stack(&refs)).await
    }

    /// The low `k` bits of x, boolean-shared (k planes): 2 + ceil(log2 k) rounds.
    pub async fn bit_decompose(&mut self, x: &RingShare, k: u32) -> Result<BitShare, EngineError> {
        if !(1..=64).contains(&k) {
            return Err(EngineError::Usage(format!("bit length {k} is outside 1..=64")));
        }
        let (a, b, _) = self.addends(x, k, 0).await?;
        let g = self.and(&a, &b).await?;
        let p = self.local(a.xor(&b)).await?;
        let carries = self.prefix_carries(&g, &p).await?;
        // bit j = p_j ^ carry into j.
        let kk = k as usize;
        let mut bits = Vec::with_capacity(kk);
        bits.push(self.local(p.plane(0)).await?);
        for j in 1..kk {
            let pj = self.local(p.plane(j)).await?;
            let cj = self.local(carries.plane(j - 1)).await?;
            bits.push(self.local(pj.xor(&cj)).await?);
        }
        let refs: Vec<&BitShare> = bits.iter().collect();
        self.local(BitShare::stack(&refs)).await
    }

    /// Exact `floor(x / 2^d)` for signed x in `[-2^(k-1), 2^(k-1))`, 1 <= d < k <= 63.
    /// With x' = x + 2^(k-1) = A + B - w 2^k (A, B the k-bit addends, w the
    /// carry out), floor(x' / 2^d) = A >> d + B >> d + c_d - w 2^(k-d), c_d
    /// the carry into position d. 3 + ceil(log2 k) rounds, about
    /// k (1 + log2 k) ANDs and 2 daBits per element.
    pub async fn truncate(&mut self, x: &RingShare, d: u32, k: u32) -> Result<RingShare, EngineError> {
        if !(1..=63).contains(&k) || d == 0 || d >= k {
            return Err(EngineError::Usage(format!("truncation by {d} of {k}-bit values needs 1 <= d < k <= 63")));
        }
        let (me, n) = (self.me(), x.len());
        let shifted = self.local(x.add_public(me, &vec![1u64 << (k - 1); n])).await?;
        let (a, b, hi) = self.addends(&shifted, k, d).await?;
        let g = self.and(&a, &b).await?;
        let p = self.local(a.xor(&b)).await?;
        let carries = self.prefix_carries(&g, &p).await?;
        let cd = self.local(carries.plane(d as usize - 1)).await?;
        let w = self.local(carries.plane(k as usize - 1)).await?;
        let both = self.local(BitShare::stack(&[&cd, &w])).await?;
        let ring = self.bits_to_ring(&both).await?;
        let c_ring = self.local(ring.slice(0..n)).await?;
        let w_ring = self.local(ring.slice(n..2 * n)).await?;
        let offset = (1u64 << (k - 1 - d)).wrapping_neg();
        self.local(
            hi.add(&c_ring)
                .map(|v| v.sub(&w_ring.scale(1u64 << (k - d))))
                .and_then(|v| v.and_then(|v| v.add_public(me, &vec![offset; n]))),
        )
        .await
    }

    /// Fixed-point product: `x * y / 2^f`, exact floor, for a product within
    /// `[-2^62, 2^62)`.
    pub async fn fixed_mul(&mut self, x: &RingShare, y: &RingShare, f: u32) -> Result<RingShare, EngineError> {
        let p = self.mul(x, y).await?;
        self.truncate(&p, f, 63).await
    }

    /// `2^(l-1-c)` for each positive x < 2^l whose leading one is bit c, and
    /// the one-hot planes of c: decomposition, a suffix OR, one conversion.
    async fn normaliser(&mut self, x: &RingShare, l: u32) -> Result<(RingShare, RingShare), EngineError> {
        let (me, n, ll) = (self.me(), x.len(), l as usize);
        let bits = self.bit_decompose(x, l).await?;
        // z_i = OR of bits i..l-1, from the top: reverse, prefix-OR by Sklansky (OR = a ^ b ^ ab).
        let mut z: Vec<BitShare> = Vec::with_capacity(ll);
        for i in (0..ll).rev() {
            z.push(self.local(bits.plane(i)).await?);
        }
        let mut step = 1;
        while step < ll {
            let upper: Vec<(usize, usize)> =
                (0..ll).filter(|j| (j / step) % 2 == 1).map(|j| (j, (j / step) * step - 1)).collect();
            let lhs: Vec<&BitShare> = upper.iter().map(|&(j, _)| &z[j]).collect();
            let rhs: Vec<&BitShare> = upper.iter().map(|&(_, s)| &z[s]).collect();
            let a = self.local(BitShare::stack(&lhs)).await?;
            let b = self.local(BitShare::stack(&rhs)).await?;
            let prod = self.and(&a, &b).await?;
            for (i, &(j, src)) in upper.iter().enumerate() {
                let pr = self.local(prod.plane(i)).await?;
                let or = self.local(z[j].xor(&z[src]).and_then(|v| v.xor(&pr))).await?;
                z[j] = or;
            }
            step *= 2;
        }
        // z[r] covers bits l-1-r .. l-1; one-hot of bit i = z(i) ^ z(i+1).
        let mut onehot = Vec::with_capacity(ll);
        for i in 0..ll {
            let zi = &z[ll - 1 - i];
            let h = if i + 1 < ll { self.local(zi.xor(&z[ll - 2 - i])).await? } else { zi.clone() };
            onehot.push(h);
        }
        let refs: Vec<&BitShare> = onehot.iter().collect();
        let stacked = self.local(BitShare::stack(&refs)).await?;
        let ring = self.bits_to_ring(&stacked).await?;
        let mut v = RingShare::public(me, &vec![0; n]);
        for i in 0..ll {
            let h = self.local(ring.slice(i * n..(i + 1) * n)).await?;
            v = self.local(v.add(&h.scale(1u64 << (ll - 1 - i)))).await?;
        }
        Ok((v, ring))
    }

    /// Division of fixed-point numbers (f fractional bits): `x / y` for
    /// y != 0 with |y| 2^f < 2^l (l <= 56), |x| 2^f < 2^41 and
    /// |x / y| < 2^(62 - l). Division by zero gives 0.
    ///
    /// After Catrina and Saxena (FC 2010, section 3.4), with exact
    /// truncations: (1) the sign s of y and |Y| = Y - 2sY; (2) v = 2^(l-1-c)
    /// for the leading one c of |Y| (bit decomposition, suffix OR, one
    /// conversion), so b = |Y| v / 2^l is in [0.5, 1); (3) Newton-Raphson
    /// for 1/b from w0 = 2.9142 - 2b, three iterations at F = 20 fractional
    /// bits (error of w0 below 0.086, squared each time); (4) M = X W / 2^F,
    /// then Q = M v / 2^(l - f) = (x / y) 2^f; (5) the sign restored.
    ///
    /// Error: relative about 2^-18 from W, plus the truncations, i.e. within
    /// |q| 2^-15 + 2^-f (2 + 2^-f / |y|) (checked by the tests).
    pub async fn divide(&mut self, x: &RingShare, y: &RingShare, f: u32, l: u32) -> Result<RingShare, EngineError> {
        self.divide_wide(x, y, f, l, 41).await
    }

    /// Fixed-point reciprocal `1 / y` (f fractional bits): [`Self::divide`] of the constant 1.
    pub async fn reciprocal(&mut self, y: &RingShare, f: u32, l: u32) -> Result<RingShare, EngineError> {
        let one = RingShare::public(self.me(), &vec![1u64 << f.min(40); y.len()]);
        self.divide(&one, y, f, l).await
    }

    /// [`Self::divide`] for numerators up to |X| < 2^x_bits (x_bits <= 62):
    /// X is brought to a 41-bit bound first (exact truncation by
    /// t = x_bits - 41 bits, or a left shift by -t when the bound is
    /// smaller, so that small numerators keep their relative precision),
    /// and the final shift adjusted by t; the quotient bound becomes
    /// |x / y| < 2^(62 - l + t).
    pub async fn divide_wide(
        &mut self,
        x: &RingShare,
        y: &RingShare,
        f: u32,
        l: u32,
        x_bits: u32,
    ) -> Result<RingShare, EngineError> {
        const F: u32 = 20;
        if !(2..=56).contains(&l) || f > 40 || !(1..=62).contains(&x_bits) {
            return Err(EngineError::Usage(format!(
                "division needs 2 <= l <= 56, f <= 40 and numerators of at most 62 bits (got f = {f}, l = {l}, \
                 {x_bits} bits)"
            )));
        }
        // Bring the numerator's bound to 41 bits: exact truncation by t > 0,
        // or a left shift by -t (so that small numerators keep their precision).
        let t = x_bits as i32 - 41;
        let x = match t {
            t if t > 0 => self.truncate(x, t as u32, x_bits + 1).await?,
            t if t < 0 => x.scale(1u64 << (-t) as u32),
            _ => x.clone(),
        };
        let (me, n) = (self.me(), y.len());
        // (1)
        let neg = self.msb(y, l + 1).await?;
        let s = self.bit_to_ring(&neg).await?;
        let sy = self.mul(&s, y).await?;
        let abs = self.local(y.sub(&sy.scale(2))).await?;
        // (2)
        let (v, _) = self.normaliser(&abs, l).await?;
        let yv = self.mul(&abs, &v).await?;
        let b = if l > F { self.truncate(&yv, l - F, l + 1).await? } else { yv.scale(1u64 << (F - l)) };
        // (3)
        let init = (2.9142f64 * f64::from(1u32 << F)).round() as u64;
        let mut w = self.local(RingShare::public(me, &vec![init; n]).sub(&b.scale(2))).await?;
        for _ in 0..3 {
            let t = self.fixed_mul(&b, &w, F).await?;
            let e = self.local(RingShare::public(me, &vec![2u64 << F; n]).sub(&t)).await?;
            w = self.fixed_mul(&w, &e, F).await?;
        }
        // (4)
        let m = self.fixed_mul(&x, &w, F).await?;
        let mv = self.mul(&m, &v).await?;
        // Q = M v / 2^(l - f - t), a left shift when l - f - t < 0.
        let shift = l as i32 - f as i32 - t;
        let q = match shift {
            s if s > 0 => self.truncate(&mv, s as u32, 63).await?,
            s if s < 0 => mv.scale(1u64 << (-s) as u32),
            _ => mv,
        };
        // (5)
        let sq = self.mul(&s, &q).await?;
        self.local(q.sub(&sq.scale(2))).await
    }

    /// Fixed-point square root (f fractional bits) of y >= 0 with
    /// Y = y 2^f < 2^l, l even, l <= 40: normalise by an even power of two
    /// into b in [0.25, 1), Newton-Raphson for 1/sqrt(b) from the line
    /// through (0.25, 2) and (1, 1), four iterations at 20 fractional bits,
    /// sqrt(b) = b / sqrt(b), then undo the normalisation. sqrt(0) = 0.
    pub async fn sqrt(&mut self, y: &RingShare, f: u32, l: u32) -> Result<RingShare, EngineError> {
        const F: u32 = 20;
        if !(2..=40).contains(&l) || l % 2 == 1 || f % 2 == 1 || f > l {
            return Err(EngineError::Usage(format!("sqrt needs even f <= l <= 40 (got f = {f}, l = {l})")));
        }
        let (me, n, ll) = (self.me(), y.len(), l as usize);
        let (_, onehot) = self.normaliser(y, l).await?;
        // Leading one at bit c: m = floor((l - 1 - c) / 2), u = 4^m brings Y
        // into [2^(l-2), 2^l); sqrt(Y / 2^f) = sqrt(b) 2^((l - f) / 2 - m).
        let mut u = RingShare::public(me, &vec![0; n]);
        let mut back = RingShare::public(me, &vec![0; n]);
        for c in 0..ll {
            let h = self.local(onehot.slice(c * n..(c + 1) * n)).await?;
            let m = (ll - 1 - c) / 2;
            u = self.local(u.add(&h.scale(1u64 << (2 * m)))).await?;
            // 2^((l - f)/2 - m) in fixed point F: 2^(F + (l - f)/2 - m), exponent >= 0 as m <= (l-1)/2.
            let e = F as usize + (ll - f as usize) / 2 - m;
            back = self.local(back.add(&h.scale(1u64 << e))).await?;
        }
        let yu = self.mul(y, &u).await?;
        // b in fixed F: Y u / 2^(l - F).
        let b = if l > F { self.truncate(&yu, l - F, l + 1).await? } else { yu.scale(1u64 << (F - l)) };
        let one = 1u64 << F;
        // w0 = 7/3 - (4/3) b.
        let init = ((7.0 / 3.0) * f64::from(1u32 << F)).round() as u64;
        let bw = b.scale(4);
        let third = self.truncate_public_div3(&bw, F).await?;
        let mut w = self.local(RingShare::public(me, &vec![init; n]).sub(&third)).await?;
        for _ in 0..4 {
            // w <- w (3 - b w^2) / 2
            let w2 = self.fixed_mul(&w, &w, F).await?;
            let bw2 = self.fixed_mul(&b, &w2, F).await?;
            let e = self.local(RingShare::public(me, &vec![3 * one; n]).sub(&bw2)).await?;
            let we = self.fixed_mul(&w, &e, F).await?;
            w = self.truncate(&we, 1, 63).await?;
        }
        let root_b = self.fixed_mul(&b, &w, F).await?;
        // sqrt(y) 2^f = root_b 2^-F * 2^((l-f)/2 - m) * 2^f = root_b * back / 2^(2F - f).
        let prod = self.mul(&root_b, &back).await?;
        self.truncate(&prod, 2 * F - f, 63).await
    }

    /// `x * 1/3` for the Newton start of [`Self::sqrt`], in fixed point F: x * round(2^F / 3) / 2^F.
    async fn truncate_public_div3(&mut self, x: &RingShare, f: u32) -> Result<RingShare, EngineError> {
        let third = ((1u64 << f) as f64 / 3.0).round() as u64;
        self.truncate(&x.scale(third), f, 63).await
    }

    /// Oblivious selection `b ? x : y` for a one-plane bit share: two rounds.
    pub async fn select(&mut self, b: &BitShare, x: &RingShare, y: &RingShare) -> Result<RingShare, EngineError> {
        let bb = self.bit_to_ring(b).await?;
        let d = self.local(x.sub(y)).await?;
        let prod = self.mul(&bb, &d).await?;
        self.local(y.add(&prod)).await
    }

    /// Clamp signed `bits`-bit values to the public bounds `[lo, hi]`: both
    /// comparisons in one batch, then one selection round.
    pub async fn clamp(&mut self, x: &RingShare, lo: i64, hi: i64, bits: u32) -> Result<RingShare, EngineError> {
        check_bits(bits)?;
        if lo > hi {
            return Err(EngineError::Usage(format!("clamp bounds [{lo}, {hi}] are empty")));
        }
        let me = self.me();
        let n = x.len();
        let his = RingShare::public(me, &vec![hi as u64; n]);
        let los = RingShare::public(me, &vec![lo as u64; n]);
        // [hi - x < 0] = [x > hi] and [x - lo < 0] = [x < lo].
        let d_hi = self.local(his.sub(x)).await?;
        let d_lo = self.local(x.sub(&los)).await?;
        let bits_ = self.msb(&RingShare::concat(&[&d_hi, &d_lo]), bits + 1).await?;
        let b = self.bit_to_ring(&bits_).await?;
        let d_lo_neg = self.local(los.sub(x)).await?;
        let prod = self.mul(&b, &RingShare::concat(&[&d_hi, &d_lo_neg])).await?;
        let p_hi = self.local(prod.slice(0..n)).await?;
        let p_lo = self.local(prod.slice(n..2 * n)).await?;
        self.local(x.add(&p_hi).and_then(|v| v.add(&p_lo))).await
    }

    /// Minimum or maximum of a vector of signed `bits`-bit values, with its
    /// index (the first among ties), by a tree of ceil(log2 n) levels; each
    /// level is one batched comparison and one selection.
    pub async fn extremum(
        &mut self,
        x: &RingShare,
        bits: u32,
        which: Extremum,
    ) -> Result<(RingShare, RingShare), EngineError> {
        check_bits(bits)?;
        if x.is_empty() {
            return Err(EngineError::Usage("the extremum of an empty vector is undefined".into()));
        }
        let me = self.me();
        let mut vals = x.clone();
        let idx: Vec<u64> = (0..x.len() as u64).collect();
        let mut idxs = RingShare::public(me, &idx);
        while vals.len() > 1 {
            // Adjacent pairs keep indices in order, so ties go to the earlier one.
            let (a, b, rest_v) = vals.pairs();
            let (ia, ib, rest_i) = idxs.pairs();
            let h = a.len();
            // Keep a iff b does not beat it: min keeps a iff NOT b < a.
            let beats = match which {
                Extremum::Min => self.less_than(&b, &a, bits).await?,
                Extremum::Max => self.less_than(&a, &b, bits).await?,
            };
            let keep_a = self.local(beats.not(me)).await?;
            let c = self.bit_to_ring(&keep_a).await?;
            let c2 = RingShare::concat(&[&c, &c]);
            let da = self.local(a.sub(&b)).await?;
            let di = self.local(ia.sub(&ib)).await?;
            let prod = self.mul(&c2, &RingShare::concat(&[&da, &di])).await?;
            let pv = self.local(prod.slice(0..h)).await?;
            let pi = self.local(prod.slice(h..2 * h)).await?;
            let nv = self.local(b.add(&pv)).await?;
            let ni = self.local(ib.add(&pi)).await?;
            vals = RingShare::concat(&[&nv, &rest_v]);
            idxs = RingShare::concat(&[&ni, &rest_i]);
        }
        Ok((vals, idxs))
    }

    /// Apply one secret, uniformly random permutation to every column of
    /// `x` (`cols` columns of equal length, concatenated). Three steps, one
    /// per pair of parties (Araki et al., "Secure Graph Analysis at Scale",
    /// CCS 2021, resharing-based shuffle): the pair (a, b) draws a
    /// permutation and two masks z, z' from its common stream; a holds
    /// A = x_a + x_b and b holds B = x_c, so A + B = x; each permutes its
    /// part and the new components are y_a = pi(A) - z - z' (a sends it to
    /// c), y_b = z, y_c = pi(B) + z' (b sends it to c). c sees two uniform
    /// vectors; each party misses one of the three permutations. Three
    /// rounds, at most 2 elements per element received by the third party.
    pub async fn shuffle(&mut self, x: &RingShare, cols: usize) -> Result<RingShare, EngineError> {
        if cols == 0 || !x.len().is_multiple_of(cols) {
            return Err(EngineError::Usage(format!("{} elements do not split into {cols} columns", x.len())));
        }
        let (me, total, n) = (self.me(), x.len(), x.len() / cols);
        let mut cur = x.clone();
        for j in 0..3 {
            let (a, b, c) = (j, next(j), prev(j));
            let seq = self.session.next_seq();
            cur = if me == a {
                let perm = rep3::permutation(&self.stream_to(b, n)?, n);
                let z = self.stream_to(b, total)?;
                let z2 = self.stream_to(b, total)?;
                let (own, nx) = cur.expose();
                let sum: Vec<u64> = own.iter().zip(nx).map(|(p, q)| p.wrapping_add(*q)).collect();
                let pa = rep3::permute_columns(&sum, &perm);
                let ya: Vec<u64> = (0..total).map(|k| pa[k].wrapping_sub(z[k]).wrapping_sub(z2[k])).collect();
                self.session.exchange(vec![(c, message::encode_words(Op::Custom, RING, seq, &ya))], &[]).await?;
                ring_of(ya, z)?
            } else if me == b {
                let perm = rep3::permutation(&self.stream_from(a, n)?, n);
                let z = self.stream_from(a, total)?;
                let z2 = self.stream_from(a, total)?;
                let pb = rep3::permute_columns(cur.expose().1, &perm);
                let yc: Vec<u64> = (0..total).map(|k| pb[k].wrapping_add(z2[k])).collect();
                self.session.exchange(vec![(c, message::encode_words(Op::Custom, RING, seq, &yc))], &[]).await?;
                ring_of(z, yc)?
            } else {
                let got = self.session.exchange(Vec::new(), &[a, b]).await?;
                let mut parts = Vec::with_capacity(2);
                for (p, m) in &got {
                    let r = message::expect_words(*p, m, Op::Custom, RING, seq, total, "shuffle");
                    parts.push(self.local(r).await?);
                }
                let yc = parts.pop().unwrap_or_default();
                let ya = parts.pop().unwrap_or_default();
                ring_of(yc, ya)?
            };
        }
        Ok(cur)
    }

    /// Sort signed `bits`-bit values ascending: make the keys distinct
    /// (key = value * 2^s + position), shuffle keys and values together,
    /// then quicksort the shuffled keys with opened comparisons, all
    /// partitions of a level in one batch (Hamada, Kikuchi, Ikarashi, Chida
    /// and Takahashi, "Practically Efficient Multi-party Sorting Protocols
    /// from Comparison Sort Algorithms", ICISC 2012). After a secret random
    /// shuffle of distinct keys, the opened outcomes depend only on that
    /// shuffle, not on the data. Returns the sorted (still secret) values.
    pub async fn sort(&mut self, x: &RingShare, bits: u32) -> Result<RingShare, EngineError> {
        check_bits(bits)?;
        let (me, n) = (self.me(), x.len());
        if n <= 1 {
            return Ok(x.clone());
        }
        let shift = ceil_log2(n as u64) as u32;
        let key_bits = bits + shift;
        if key_bits > 62 {
            return Err(EngineError::Usage(format!(
                "sorting {n} values of {bits} bits needs {key_bits}-bit keys; at most 62 are supported"
            )));
        }
        let positions: Vec<u64> = (0..n as u64).collect();
        let keys = self.local(x.scale(1u64 << shift).add_public(me, &positions)).await?;
        let both = self.shuffle(&RingShare::concat(&[&keys, x]), 2).await?;
        let keys = self.local(both.slice(0..n)).await?;
        let values = self.local(both.slice(n..2 * n)).await?;
        // order[k]: which shuffled element sits at sorted position k, refined per level.
        let mut order: Vec<usize> = (0..n).collect();
        let mut parts: Vec<(usize, usize)> = vec![(0, n)];
        while !parts.is_empty() {
            let mut lhs = Vec::new();
            let mut piv = Vec::new();
            for &(start, end) in &parts {
                for &e in &order[start + 1..end] {
                    lhs.push(e);
                    piv.push(order[start]);
                }
            }
            let a = self.local(keys.gather(&lhs)).await?;
            let b = self.local(keys.gather(&piv)).await?;
            let lt = self.less_than(&a, &b, key_bits).await?;
            let below = self.open_bools(&lt).await?;
            let mut at = 0;
            let mut next_parts = Vec::new();
            for &(start, end) in &parts {
                let pivot = order[start];
                let (mut lo, mut hi) = (Vec::new(), Vec::new());
                for &e in &order[start + 1..end] {
                    if below.get(at).copied().unwrap_or(false) {
                        lo.push(e);
                    } else {
                        hi.push(e);
                    }
                    at += 1;
                }
                let (nl, nh) = (lo.len(), hi.len());
                for (slot, e) in
                    order[start..end].iter_mut().zip(lo.into_iter().chain(core::iter::once(pivot)).chain(hi))
                {
                    *slot = e;
                }
                if nl >= 2 {
                    next_parts.push((start, start + nl));
                }
                if nh >= 2 {
                    next_parts.push((end - nh, end));
                }
            }
            parts = next_parts;
        }
        self.local(values.gather(&order)).await
    }
}

fn check_bits(bits: u32) -> Result<(), EngineError> {
    if (1..=63).contains(&bits) {
        Ok(())
    } else {
        Err(EngineError::Usage(format!("integer bit length {bits} is outside 1..=63")))
    }
}

/// Rounds of [`Rep3Engine::msb`] on k bits.
pub fn msb_rounds(k: u32) -> u64 {
    match k {
        0 | 1 => 0,
        2 => 1,
        _ => 2 + ceil_log2(k as u64 - 2),
    }
}

/// ANDs per element of [`Rep3Engine::msb`] on k bits (= bits each party sends).
pub fn msb_ands(k: u32) -> u64 {
    if k <= 1 {
        return 0;
    }
    let k = k as u64;
    if k == 2 {
        return 1;
    }
    // carry-save (k-1), generate (k-2), and the tree.
    (k - 1) + (k - 2) + tree_ands(k - 2)
}

fn tree_ands(m: u64) -> u64 {
    // Nodes as (has_p); the lowest has none.
    let mut nodes: Vec<bool> = (0..m).map(|j| j != 0).collect();
    let mut ands = 0;
    while nodes.len() > 1 {
        let mut out = Vec::new();
        for pair in nodes.chunks(2) {
            match pair {
                [lo, _] => {
                    ands += 1 + u64::from(*lo);
                    out.push(*lo);
                }
                [single] => out.push(*single),
                _ => {}
            }
        }
        nodes = out;
    }
    ands
}

fn ceil_log2(m: u64) -> u64 {
    if m <= 1 {
        0
    } else {
        64 - (m - 1).leading_zeros() as u64
    }
}

/// Rounds of [`Rep3Engine::is_zero`] on k bits.
pub fn is_zero_rounds(k: u32) -> u64 {
    1 + ceil_log2(k as u64)
}
