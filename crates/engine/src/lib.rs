//! # concord-engine: run MPC protocols over a transport
//!
//! A [`Session`] is one party's side of a computation: its transport, its
//! PRSS streams (agreed in [`Session::setup`]), the operation counter that
//! keeps the parties in lockstep, and the round and byte counters. On top of
//! it, two engines implement the [`Mpc`] interface on secret-shared vectors:
//!
//! - [`ShamirEngine`]: t-of-n Shamir over a prime field, honest majority,
//!   multiplication by resharing (see `concord_protocol::shamir`);
//! - [`AdditiveEngine`]: n-of-n additive over any ring, multiplication with
//!   Beaver triples from a [`TripleProvider`] (see `concord_protocol::beaver`);
//! - [`rep3::Rep3Engine`]: three-party replicated sharing over Z/2^64 with
//!   bit-sliced boolean circuits, for fast comparisons, min/max and clamping.
//!
//! Every wait is bounded by the transport's timeout; on any error the engine
//! tells every peer it aborts, so they fail cleanly instead of hanging.
//!
//! ```no_run
//! # async fn demo<T: concord_net::Transport>(net: T) -> Result<(), concord_engine::EngineError> {
//! use concord_engine::{Mpc, ShamirEngine};
//! use concord_math::{Ring, M61};
//! use rand_chacha::rand_core::SeedableRng;
//! // Each party brings its own private randomness (from the OS in production).
//! let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(7);
//! let me = net.me();
//! let mut mpc = ShamirEngine::<M61, _>::new(net, 1, &mut rng).await?;
//! let mine = [M61::from_u64(3), M61::from_u64(4)];
//! let x = mpc.input(0, (me == 0).then_some(&mine[..]), 2).await?;
//! let y = mpc.input(1, (me == 1).then_some(&mine[..]), 2).await?;
//! let dot = mpc.inner_product(&x, &y).await?;
//! let value = mpc.open(&dot).await?; // [25]
//! # Ok(()) }
//! ```

use concord_math::{batch, Field, MathError, Ring};
use concord_net::{NetError, PartyId, Transport};
use concord_protocol::cost::BATCH;
use concord_protocol::message::{self, Op};
use concord_protocol::preprocessing::{InsecureDealer, Triples};
use concord_protocol::prss::{Prss, SeedSetup};
use concord_protocol::shamir::ShamirPlan;
use concord_protocol::{beaver, ProtocolError};
use concord_sharing::shamir::ShamirParams;
use concord_sharing::{ShareVec, SharingError};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

pub mod bits;
pub mod compare;
pub mod rep3;

pub use concord_sharing::ShareVec as Shared;

/// Errors of the engine: the layer that failed, with the culprit where known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The transport failed (names the peer).
    #[error(transparent)]
    Net(#[from] NetError),
    /// A peer's message broke the protocol, or parameters are invalid.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Sharing parameters or sets were invalid.
    #[error(transparent)]
    Sharing(#[from] SharingError),
    /// An arithmetic encoding failed.
    #[error(transparent)]
    Math(#[from] MathError),
    /// The caller misused the engine (e.g. gave input values as a non-owner).
    #[error("{0}")]
    Usage(String),
}

impl EngineError {
    /// The party to blame, if one can be.
    pub fn culprit(&self) -> Option<PartyId> {
        match self {
            EngineError::Net(
                NetError::Timeout { peer, .. }
                | NetError::Disconnected { peer, .. }
                | NetError::PeerAborted { peer, .. }
                | NetError::BadFrame { peer, .. }
                | NetError::WrongSession { peer, .. }
                | NetError::MessageTooLarge { peer, .. },
            ) => Some(*peer),
            EngineError::Protocol(
                ProtocolError::Malformed { peer, .. }
                | ProtocolError::OutOfSequence { peer, .. }
                | ProtocolError::WrongLength { peer, .. },
            ) => Some(*peer),
            _ => None,
        }
    }
}

/// Rounds and bytes of one party, as measured by the engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Communication rounds (exchanges in which this party sent or received).
    pub rounds: u64,
    /// Protocol bytes sent (headers included, transport framing excluded).
    pub bytes_sent: u64,
    /// Protocol bytes received.
    pub bytes_received: u64,
    /// Messages sent.
    pub messages_sent: u64,
}

impl core::ops::Sub for EngineStats {
    type Output = EngineStats;
    fn sub(self, o: EngineStats) -> EngineStats {
        EngineStats {
            rounds: self.rounds - o.rounds,
            bytes_sent: self.bytes_sent - o.bytes_sent,
            bytes_received: self.bytes_received - o.bytes_received,
            messages_sent: self.messages_sent - o.messages_sent,
        }
    }
}

/// One party's side of a session: transport, PRSS streams, counters.
pub struct Session<T: Transport> {
    net: T,
    prss: Prss,
    seq: u32,
    stats: EngineStats,
}

impl<T: Transport> Session<T> {
    /// Agree on pairwise and common seeds with every peer (one round) and
    /// seed our private randomness from `rng`.
    pub async fn setup<G: RngCore + ?Sized>(net: T, rng: &mut G) -> Result<Self, EngineError> {
        let (me, n) = (net.me(), net.parties());
        let (mut setup, msgs) = SeedSetup::start(me, n, rng);
        let mut stats = EngineStats::default();
        let result: Result<Prss, EngineError> = async {
            for (to, bytes) in msgs.outgoing {
                let m = message::encode_bytes(Op::Seed, 0, 0, &bytes);
                stats.bytes_sent += m.len() as u64;
                stats.messages_sent += 1;
                net.send(to, m).await?;
            }
            for from in setup.expected_from() {
                let m = net.recv(from).await?;
                stats.bytes_received += m.len() as u64;
                let payload = message::expect(from, &m, Op::Seed, 0, 0)?;
                setup.receive(from, payload)?;
            }
            Ok(setup.finish()?)
        }
        .await;
        stats.rounds = 1;
        let mut prss = match result {
            Ok(p) => p,
            Err(e) => {
                net.abort(&format!("party {me}: seed agreement failed: {e}")).await;
                return Err(e);
            }
        };
        let mut local = [0u8; 32];
        rng.fill_bytes(&mut local);
        prss.set_local(ChaCha12Rng::from_seed(local));
        Ok(Session { net, prss, seq: 1, stats })
    }

    /// Our party index.
    pub fn me(&self) -> PartyId {
        self.net.me()
    }

    /// Number of parties.
    pub fn parties(&self) -> usize {
        self.net.parties()
    }

    /// Counters so far.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The transport (for its own counters).
    pub fn transport(&self) -> &T {
        &self.net
    }

    /// PRSS streams.
    pub fn prss(&mut self) -> &mut Prss {
        &mut self.prss
    }

    /// Next operation sequence number (identical at every party).
    pub fn next_seq(&mut self) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        s
    }

    /// One communication round: send every message, then receive one
    /// message from each party in `from` (in that order). Counts one round
    /// if anything was sent or received. On failure, aborts the session at
    /// every peer with the reason.
    pub async fn exchange(
        &mut self,
        sends: Vec<(PartyId, Vec<u8>)>,
        from: &[PartyId],
    ) -> Result<Vec<(PartyId, Vec<u8>)>, EngineError> {
        if sends.is_empty() && from.is_empty() {
            return Ok(Vec::new());
        }
        self.stats.rounds += 1;
        let res = self.exchange_inner(sends, from).await;
        if let Err(e) = &res {
            self.abort(e).await;
        }
        res
    }

    async fn exchange_inner(
        &mut self,
        sends: Vec<(PartyId, Vec<u8>)>,
        from: &[PartyId],
    ) -> Result<Vec<(PartyId, Vec<u8>)>, EngineError> {
        for (to, m) in sends {
            self.stats.bytes_sent += m.len() as u64;
            self.stats.messages_sent += 1;
            self.net.send(to, m).await?;
        }
        let mut out = Vec::with_capacity(from.len());
        for &p in from {
            let m = self.net.recv(p).await?;
            self.stats.bytes_received += m.len() as u64;
            out.push((p, m));
        }
        Ok(out)
    }

    /// End the session: tell every peer we completed every operation and
    /// wait until every peer says the same (one round), then close the
    /// transport gracefully. A party that aborted instead makes this fail,
    /// so either every party accepts its outputs or every party learns of
    /// the abort. No operation may follow.
    pub async fn finish(&mut self) -> Result<(), EngineError> {
        let seq = self.next_seq();
        let me = self.me();
        let others: Vec<PartyId> = (0..self.parties()).filter(|p| *p != me).collect();
        let m = message::encode_bytes(Op::Done, 0, seq, &[]);
        let sends = others.iter().map(|&p| (p, m.clone())).collect();
        let got = self.exchange(sends, &others).await?;
        for (p, m) in &got {
            let r = message::expect(*p, m, Op::Done, 0, seq).map(|_| ()).map_err(EngineError::from);
            self.guard(r).await?;
        }
        self.net.shutdown().await;
        Ok(())
    }

    /// Send messages as part of the current round (see [`Self::begin_round`]); aborts on failure.
    pub async fn send_all(&mut self, sends: Vec<(PartyId, Vec<u8>)>) -> Result<(), EngineError> {
        for (to, m) in sends {
            self.stats.bytes_sent += m.len() as u64;
            self.stats.messages_sent += 1;
            let r = self.net.send(to, m).await.map_err(EngineError::from);
            self.guard(r).await?;
        }
        Ok(())
    }

    /// Receive the next message from `from` as part of the current round; aborts on failure.
    pub async fn recv_one(&mut self, from: PartyId) -> Result<Vec<u8>, EngineError> {
        let r = self.net.recv(from).await.map_err(EngineError::from);
        let m = self.guard(r).await?;
        self.stats.bytes_received += m.len() as u64;
        Ok(m)
    }

    /// Receive one vector message from each party in `from` (in order) and
    /// check its header (operation, domain, sequence number) and that it
    /// carries exactly `len` elements of `R`; aborts on failure. Read the
    /// payloads with [`payloads`].
    pub async fn recv_vectors<R: Ring>(
        &mut self,
        from: &[PartyId],
        op: Op,
        seq: u32,
        len: usize,
        what: &'static str,
    ) -> Result<Vec<(PartyId, Vec<u8>)>, EngineError> {
        let mut got = Vec::with_capacity(from.len());
        for &p in from {
            let m = self.recv_one(p).await?;
            let r = message::expect_payload::<R>(p, &m, op, seq, len, what).map(|_| ()).map_err(EngineError::from);
            self.guard(r).await?;
            got.push((p, m));
        }
        Ok(got)
    }

    /// Count one communication round (for protocols that stream with
    /// [`Self::send_all`] and [`Self::recv_one`]).
    pub fn begin_round(&mut self) {
        self.stats.rounds += 1;
    }

    /// Tell every peer we abort because of `err` (best effort).
    pub async fn abort(&self, err: &EngineError) {
        // A peer's own abort need not be echoed back as ours.
        if !matches!(err, EngineError::Net(NetError::PeerAborted { .. })) {
            // The receiving transport names us (`party i aborted the session: ...`).
            self.net.abort(&err.to_string()).await;
        }
    }

    /// Pass `r` through; if it is an error, first abort the session at every
    /// peer with it. Wrap every local step of a protocol whose failure must
    /// end the session.
    pub async fn guard<V>(&self, r: Result<V, EngineError>) -> Result<V, EngineError> {
        if let Err(e) = &r {
            self.abort(e).await;
        }
        r
    }
}

/// The payloads of messages checked by [`Session::recv_vectors`] (header stripped).
pub fn payloads(got: &[(PartyId, Vec<u8>)]) -> Vec<(PartyId, &[u8])> {
    got.iter().map(|(p, m)| (*p, m.get(message::HEADER_LEN..).unwrap_or(&[]))).collect()
}

/// Operations on secret-shared vectors, common to every sharing scheme.
///
/// Every party calls the same operations in the same order. Values are
/// elements of [`Mpc::Elem`]; see `concord_math::encoding` for integers and
/// fixed point.
#[allow(async_fn_in_trait)]
pub trait Mpc {
    /// The field or ring the shares live in.
    type Elem: Ring;

    /// Our party index.
    fn me(&self) -> PartyId;
    /// Number of parties.
    fn parties(&self) -> usize;
    /// Largest coalition that learns nothing (t for Shamir, n-1 for additive).
    fn threshold(&self) -> usize;
    /// Rounds and bytes so far.
    fn stats(&self) -> EngineStats;

    /// Party `owner` secret-shares `len` values; the owner passes `Some(values)`, the others `None`.
    async fn input(
        &mut self,
        owner: PartyId,
        values: Option<&[Self::Elem]>,
        len: usize,
    ) -> Result<ShareVec<Self::Elem>, EngineError>;

    /// Every party secret-shares a vector of `len` values at once (`mine` is
    /// ours); returns the sharings in party order. The default runs the
    /// inputs one after another; engines override it to use one round.
    async fn input_all(&mut self, mine: &[Self::Elem], len: usize) -> Result<Vec<ShareVec<Self::Elem>>, EngineError> {
        let me = self.me();
        let mut out = Vec::with_capacity(self.parties());
        for owner in 0..self.parties() {
            out.push(self.input(owner, (owner == me).then_some(mine), len).await?);
        }
        Ok(out)
    }

    /// Element-wise product (one round).
    async fn mul(
        &mut self,
        a: &ShareVec<Self::Elem>,
        b: &ShareVec<Self::Elem>,
    ) -> Result<ShareVec<Self::Elem>, EngineError>;

    /// Inner product, a vector of one element.
    async fn inner_product(
        &mut self,
        a: &ShareVec<Self::Elem>,
        b: &ShareVec<Self::Elem>,
    ) -> Result<ShareVec<Self::Elem>, EngineError>;

    /// Open to every party. **Reveals the value to all.**
    async fn open(&mut self, a: &ShareVec<Self::Elem>) -> Result<Vec<Self::Elem>, EngineError>;

    /// Open to party `to` only: it gets `Some(value)`, the others `None`.
    async fn open_to(&mut self, to: PartyId, a: &ShareVec<Self::Elem>) -> Result<Option<Vec<Self::Elem>>, EngineError>;

    /// End the session: every party confirms it completed (one round); see [`Session::finish`].
    async fn finish(&mut self) -> Result<(), EngineError>;

    /// Add a public vector (every party calls it with the same constants).
    fn add_public(&self, a: &ShareVec<Self::Elem>, c: &[Self::Elem]) -> Result<ShareVec<Self::Elem>, EngineError>;

    /// `a + b` (local).
    fn add(&self, a: &ShareVec<Self::Elem>, b: &ShareVec<Self::Elem>) -> Result<ShareVec<Self::Elem>, EngineError> {
        same_len(a, b)?;
        let mut v = a.expose().to_vec();
        batch::add_assign(&mut v, b.expose());
        Ok(ShareVec::from_raw(v))
    }

    /// `a - b` (local).
    fn sub(&self, a: &ShareVec<Self::Elem>, b: &ShareVec<Self::Elem>) -> Result<ShareVec<Self::Elem>, EngineError> {
        same_len(a, b)?;
        let mut v = a.expose().to_vec();
        batch::sub_assign(&mut v, b.expose());
        Ok(ShareVec::from_raw(v))
    }

    /// `c * a` for a public scalar `c` (local).
    fn scale(&self, a: &ShareVec<Self::Elem>, c: Self::Elem) -> ShareVec<Self::Elem> {
        let mut v = a.expose().to_vec();
        batch::scale(&mut v, c);
        ShareVec::from_raw(v)
    }

    /// Sum of all elements, a vector of one element (local).
    fn sum(&self, a: &ShareVec<Self::Elem>) -> ShareVec<Self::Elem> {
        ShareVec::from_raw(vec![batch::sum(a.expose())])
    }
}

fn same_len<R: Ring>(a: &ShareVec<R>, b: &ShareVec<R>) -> Result<(), EngineError> {
    if a.len() != b.len() {
        return Err(ProtocolError::LengthMismatch { left: a.len(), right: b.len() }.into());
    }
    Ok(())
}

fn check_input<R: Ring>(
    me: PartyId,
    owner: PartyId,
    n: usize,
    values: Option<&[R]>,
    len: usize,
) -> Result<(), EngineError> {
    if owner >= n {
        return Err(EngineError::Usage(format!("input owner {owner} is not one of the {n} parties")));
    }
    match (me == owner, values) {
        (true, Some(v)) if v.len() == len => Ok(()),
        (true, Some(v)) => Err(EngineError::Usage(format!("input of {} values announced as {len}", v.len()))),
        (true, None) => Err(EngineError::Usage("the input owner must supply its values".into())),
        (false, Some(_)) => Err(EngineError::Usage(format!("party {me} supplied values for party {owner}'s input"))),
        (false, None) => Ok(()),
    }
}

/// An interpolation step of a [`ShamirPlan`]: own share, received payloads, output.
type Combine<F> = fn(&ShamirPlan<F>, &[F], &[(PartyId, &[u8])], &mut [F]) -> Result<(), ProtocolError>;

/// t-of-n Shamir engine over a prime field.
pub struct ShamirEngine<F: Field, T: Transport> {
    session: Session<T>,
    plan: ShamirPlan<F>,
}

impl<F: Field, T: Transport> ShamirEngine<F, T> {
    /// Set up a session (seed agreement) with threshold `t`.
    pub async fn new<G: RngCore + ?Sized>(net: T, t: usize, rng: &mut G) -> Result<Self, EngineError> {
        let params = ShamirParams::new::<F>(net.parties(), t)?;
        let plan = ShamirPlan::new(params, net.me())?;
        let session = Session::setup(net, rng).await?;
        Ok(ShamirEngine { session, plan })
    }

    /// The session underneath (for custom protocols).
    pub fn session(&mut self) -> &mut Session<T> {
        &mut self.session
    }

    /// The precomputed plan.
    pub fn plan(&self) -> &ShamirPlan<F> {
        &self.plan
    }

    /// Degree reduction (one round): `local(range, out)` writes this
    /// party's degree-2t shares for the elements in `range`; the result is a
    /// degree-t sharing of the same values. Streams in batches of
    /// [`BATCH`]: every batch is computed and sent before any is awaited.
    pub async fn reduce_degree<G>(&mut self, len: usize, mut local: G) -> Result<ShareVec<F>, EngineError>
    where
        G: FnMut(std::ops::Range<usize>, &mut [F]),
    {
        let seq = self.session.next_seq();
        let expected = self.session.guard(self.plan.reshare_expected_from().map_err(EngineError::from)).await?;
        let mut out = vec![F::ZERO; len];
        let mut d = vec![F::ZERO; BATCH.min(len)];
        self.session.begin_round();
        for range in batches(len) {
            let m = range.len();
            local(range.clone(), &mut d[..m]);
            let step = self.plan.reshare_send(self.session.prss(), &mut d[..m], seq).map_err(EngineError::from);
            let (own, sends) = self.session.guard(step).await?;
            if let Some(own) = own {
                out[range].copy_from_slice(&own);
            }
            self.session.send_all(sends).await?;
        }
        for range in batches(len) {
            let got = self.session.recv_vectors::<F>(&expected, Op::Reshare, seq, range.len(), "reshare").await?;
            let payloads = payloads(&got);
            let step =
                self.plan.reshare_recv(self.session.prss(), &mut out[range], &payloads).map_err(EngineError::from);
            self.session.guard(step).await?;
        }
        Ok(ShareVec::from_raw(out))
    }

    /// Reduce a local degree-2t share vector to a degree-t sharing (one round).
    pub async fn reshare(&mut self, d: Vec<F>) -> Result<ShareVec<F>, EngineError> {
        self.reduce_degree(d.len(), |r, out| out.copy_from_slice(&d[r])).await
    }

    /// Open `a` with messages tagged `op`: send to `to`, combine what comes from `from`.
    async fn open_with(
        &mut self,
        a: &ShareVec<F>,
        op: Op,
        to: &[PartyId],
        from: &[PartyId],
        combine: Combine<F>,
    ) -> Result<Option<Vec<F>>, EngineError> {
        let seq = self.session.next_seq();
        if to.is_empty() && from.is_empty() {
            return Ok(None);
        }
        self.session.begin_round();
        let len = a.len();
        for range in batches(len) {
            let sends = fan_out(to, message::encode_vec(op, seq, &a.expose()[range]));
            self.session.send_all(sends).await?;
        }
        if from.is_empty() {
            return Ok(None);
        }
        let mut out = vec![F::ZERO; len];
        for range in batches(len) {
            let got = self.session.recv_vectors::<F>(from, op, seq, range.len(), "open").await?;
            let payloads = payloads(&got);
            let r =
                combine(&self.plan, &a.expose()[range.clone()], &payloads, &mut out[range]).map_err(EngineError::from);
            self.session.guard(r).await?;
        }
        Ok(Some(out))
    }
}

/// The batches of a vector of `len` elements (one empty batch for `len == 0`,
/// so that every operation exchanges at least one message).
fn batches(len: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let count = len.div_ceil(BATCH).max(1);
    (0..count).map(move |k| (k * BATCH)..((k + 1) * BATCH).min(len))
}

impl<F: Field, T: Transport> Mpc for ShamirEngine<F, T> {
    type Elem = F;

    fn me(&self) -> PartyId {
        self.session.me()
    }
    fn parties(&self) -> usize {
        self.session.parties()
    }
    fn threshold(&self) -> usize {
        self.plan.params().t()
    }
    fn stats(&self) -> EngineStats {
        self.session.stats()
    }

    async fn input(&mut self, owner: PartyId, values: Option<&[F]>, len: usize) -> Result<ShareVec<F>, EngineError> {
        let me = self.me();
        self.session.guard(check_input(me, owner, self.parties(), values, len)).await?;
        let seq = self.session.next_seq();
        if let (true, Some(v)) = (me == owner, values) {
            let mut own = vec![F::ZERO; len];
            let mut any = false;
            for range in batches(len) {
                let step = self.plan.input_send(self.session.prss(), &v[range.clone()], seq).map_err(EngineError::from);
                let (share, sends) = self.session.guard(step).await?;
                own[range].copy_from_slice(share.expose());
                if !sends.is_empty() && !any {
                    self.session.begin_round();
                    any = true;
                }
                self.session.send_all(sends).await?;
            }
            return Ok(ShareVec::from_raw(own));
        }
        let needs = self.session.guard(self.plan.input_needs_message(owner).map_err(EngineError::from)).await?;
        let mut out = vec![F::ZERO; len];
        if needs {
            self.session.begin_round();
        }
        for range in batches(len) {
            let msg = if needs { Some(self.session.recv_one(owner).await?) } else { None };
            let payload = match &msg {
                Some(m) => {
                    let r = message::expect_payload::<F>(owner, m, Op::Input, seq, range.len(), "input")
                        .map_err(EngineError::from);
                    Some(self.session.guard(r).await?)
                }
                None => None,
            };
            let step =
                self.plan.input_recv(self.session.prss(), owner, payload, &mut out[range]).map_err(EngineError::from);
            self.session.guard(step).await?;
        }
        Ok(ShareVec::from_raw(out))
    }

    /// One round: every party sends its own input's shares (all batches),
    /// then receives the others'. Same bytes as n sequential inputs.
    async fn input_all(&mut self, mine: &[F], len: usize) -> Result<Vec<ShareVec<F>>, EngineError> {
        let (me, n) = (self.me(), self.parties());
        self.session.guard(check_input(me, me, n, Some(mine), len)).await?;
        let seq = self.session.next_seq();
        self.session.begin_round();
        let mut own = vec![F::ZERO; len];
        for range in batches(len) {
            let step = self.plan.input_send(self.session.prss(), &mine[range.clone()], seq).map_err(EngineError::from);
            let (share, sends) = self.session.guard(step).await?;
            own[range].copy_from_slice(share.expose());
            self.session.send_all(sends).await?;
        }
        let mut out = Vec::with_capacity(n);
        for owner in 0..n {
            if owner == me {
                out.push(ShareVec::from_raw(std::mem::take(&mut own)));
                continue;
            }
            let needs = self.session.guard(self.plan.input_needs_message(owner).map_err(EngineError::from)).await?;
            let mut v = vec![F::ZERO; len];
            for range in batches(len) {
                let got = if needs {
                    self.session.recv_vectors::<F>(&[owner], Op::Input, seq, range.len(), "input").await?
                } else {
                    Vec::new()
                };
                let payload = payloads(&got).first().map(|(_, p)| *p);
                let step =
                    self.plan.input_recv(self.session.prss(), owner, payload, &mut v[range]).map_err(EngineError::from);
                self.session.guard(step).await?;
            }
            out.push(ShareVec::from_raw(v));
        }
        Ok(out)
    }

    async fn mul(&mut self, a: &ShareVec<F>, b: &ShareVec<F>) -> Result<ShareVec<F>, EngineError> {
        self.session.guard(same_len(a, b)).await?;
        let (x, y) = (a.expose(), b.expose());
        self.reduce_degree(a.len(), |r, out| {
            for ((o, p), q) in out.iter_mut().zip(&x[r.clone()]).zip(&y[r]) {
                *o = *p * *q;
            }
        })
        .await
    }

    async fn inner_product(&mut self, a: &ShareVec<F>, b: &ShareVec<F>) -> Result<ShareVec<F>, EngineError> {
        self.session.guard(same_len(a, b)).await?;
        let d = batch::inner_product(a.expose(), b.expose());
        self.reshare(vec![d]).await
    }

    async fn open(&mut self, a: &ShareVec<F>) -> Result<Vec<F>, EngineError> {
        let to = self.plan.open_send_to().to_vec();
        let from = self.plan.open_recv_from().to_vec();
        let r = self.open_with(a, Op::Open, &to, &from, ShamirPlan::open_combine).await?;
        r.ok_or_else(|| EngineError::Usage("opening to all needs at least one peer share".into()))
    }

    async fn open_to(&mut self, to: PartyId, a: &ShareVec<F>) -> Result<Option<Vec<F>>, EngineError> {
        let senders = self.session.guard(self.plan.open_to_senders(to).map_err(EngineError::from)).await?.to_vec();
        let me = self.me();
        let (send_to, from) = if me == to {
            (Vec::new(), senders)
        } else if senders.contains(&me) {
            (vec![to], Vec::new())
        } else {
            (Vec::new(), Vec::new())
        };
        self.open_with(a, Op::OpenTo, &send_to, &from, ShamirPlan::open_to_combine).await
    }

    async fn finish(&mut self) -> Result<(), EngineError> {
        self.session.finish().await
    }

    fn add_public(&self, a: &ShareVec<F>, c: &[F]) -> Result<ShareVec<F>, EngineError> {
        if a.len() != c.len() {
            return Err(ProtocolError::LengthMismatch { left: a.len(), right: c.len() }.into());
        }
        // A public constant is a degree-0 sharing: every party adds it.
        let mut v = a.expose().to_vec();
        batch::add_assign(&mut v, c);
        Ok(ShareVec::from_raw(v))
    }
}

/// A source of Beaver triples. Implemented by the [`InsecureDealer`] test
/// double today; a dealer-free (oblivious-transfer) producer will use the
/// session to talk to its peers.
#[allow(async_fn_in_trait)]
pub trait TripleProvider<R: Ring> {
    /// Our shares of `count` fresh triples.
    async fn triples<T: Transport>(
        &mut self,
        session: &mut Session<T>,
        count: usize,
    ) -> Result<Triples<R>, EngineError>;
}

impl<R: Ring> TripleProvider<R> for InsecureDealer {
    async fn triples<T: Transport>(
        &mut self,
        _session: &mut Session<T>,
        count: usize,
    ) -> Result<Triples<R>, EngineError> {
        Ok(InsecureDealer::triples(self, count)?)
    }
}

/// n-of-n additive engine over any ring, multiplying with Beaver triples.
pub struct AdditiveEngine<R: Ring, T: Transport, P: TripleProvider<R>> {
    session: Session<T>,
    provider: P,
    pool: Vec<Triples<R>>,
}

impl<R: Ring, T: Transport> AdditiveEngine<R, T, InsecureDealer> {
    /// Set up with the **insecure** dealer test double (triples derived from the common seed).
    pub async fn with_insecure_dealer<G: RngCore + ?Sized>(net: T, rng: &mut G) -> Result<Self, EngineError> {
        let mut session = Session::setup(net, rng).await?;
        let (me, n) = (session.me(), session.parties());
        let mut seed = [0u8; 32];
        session.prss().common().fill_bytes(&mut seed);
        let dealer = InsecureDealer::new(me, n, ChaCha12Rng::from_seed(seed));
        Ok(AdditiveEngine { session, provider: dealer, pool: Vec::new() })
    }
}

impl<R: Ring, T: Transport, P: TripleProvider<R>> AdditiveEngine<R, T, P> {
    /// Set up with a triple provider.
    pub async fn new<G: RngCore + ?Sized>(net: T, provider: P, rng: &mut G) -> Result<Self, EngineError> {
        let session = Session::setup(net, rng).await?;
        Ok(AdditiveEngine { session, provider, pool: Vec::new() })
    }

    /// Produce `count` triples ahead of the online phase.
    pub async fn preprocess(&mut self, count: usize) -> Result<(), EngineError> {
        let t = self.provider.triples(&mut self.session, count).await;
        let t = self.session.guard(t).await?;
        self.pool.push(t);
        Ok(())
    }

    /// The session underneath.
    pub fn session(&mut self) -> &mut Session<T> {
        &mut self.session
    }

    async fn take_triples(&mut self, count: usize) -> Result<Triples<R>, EngineError> {
        if let Some(pos) = self.pool.iter().position(|t| t.len() == count) {
            return Ok(self.pool.swap_remove(pos));
        }
        let t = self.provider.triples(&mut self.session, count).await;
        self.session.guard(t).await
    }

    fn others(&self) -> Vec<PartyId> {
        let me = self.me();
        (0..self.parties()).filter(|p| *p != me).collect()
    }

    /// Send our share of `a` to `to`, and sum our share with those from `from`.
    async fn open_additive(
        &mut self,
        a: &ShareVec<R>,
        op: Op,
        to: &[PartyId],
        from: &[PartyId],
    ) -> Result<Option<Vec<R>>, EngineError> {
        let seq = self.session.next_seq();
        self.session.begin_round();
        for r in batches(a.len()) {
            let sends = fan_out(to, message::encode_vec(op, seq, &a.expose()[r]));
            self.session.send_all(sends).await?;
        }
        if from.is_empty() {
            return Ok(None);
        }
        let mut out = vec![R::ZERO; a.len()];
        for r in batches(a.len()) {
            let got = self.session.recv_vectors::<R>(from, op, seq, r.len(), "open").await?;
            let payloads = payloads(&got);
            let step = beaver::open_combine(&a.expose()[r.clone()], &payloads, &mut out[r]);
            self.session.guard(step.map_err(EngineError::from)).await?;
        }
        Ok(Some(out))
    }
}

/// The same message to every party in `to` (the last one takes the original).
fn fan_out(to: &[PartyId], m: Vec<u8>) -> Vec<(PartyId, Vec<u8>)> {
    let mut sends = Vec::with_capacity(to.len());
    if let Some((last, rest)) = to.split_last() {
        sends.extend(rest.iter().map(|&p| (p, m.clone())));
        sends.push((*last, m));
    }
    sends
}

impl<R: Ring, T: Transport, P: TripleProvider<R>> Mpc for AdditiveEngine<R, T, P> {
    type Elem = R;

    fn me(&self) -> PartyId {
        self.session.me()
    }
    fn parties(&self) -> usize {
        self.session.parties()
    }
    fn threshold(&self) -> usize {
        self.parties() - 1
    }
    fn stats(&self) -> EngineStats {
        self.session.stats()
    }

    async fn input(&mut self, owner: PartyId, values: Option<&[R]>, len: usize) -> Result<ShareVec<R>, EngineError> {
        let me = self.me();
        self.session.guard(check_input(me, owner, self.parties(), values, len)).await?;
        let _ = self.session.next_seq();
        let r = match values {
            Some(v) => beaver::input_send(self.session.prss(), v),
            None => beaver::input_recv(self.session.prss(), owner, len),
        };
        self.session.guard(r.map_err(EngineError::from)).await
    }

    async fn mul(&mut self, a: &ShareVec<R>, b: &ShareVec<R>) -> Result<ShareVec<R>, EngineError> {
        self.session.guard(same_len(a, b)).await?;
        let t = self.take_triples(a.len()).await?;
        let seq = self.session.next_seq();
        let others = self.others();
        let (x, y) = (a.expose(), b.expose());
        let (ta, tb, tc) = (t.a.expose(), t.b.expose(), t.c.expose());
        self.session.begin_round();
        for r in batches(a.len()) {
            let m = beaver::mul_message(seq, &x[r.clone()], &y[r.clone()], &ta[r.clone()], &tb[r.clone()]);
            let m = self.session.guard(m.map_err(EngineError::from)).await?;
            let sends = fan_out(&others, m);
            self.session.send_all(sends).await?;
        }
        let mut out = vec![R::ZERO; a.len()];
        let me = self.me();
        for r in batches(a.len()) {
            let got = self.session.recv_vectors::<R>(&others, Op::BeaverOpen, seq, 2 * r.len(), "beaver").await?;
            let payloads = payloads(&got);
            let step = beaver::mul_finish(
                me,
                &x[r.clone()],
                &y[r.clone()],
                (&ta[r.clone()], &tb[r.clone()], &tc[r.clone()]),
                &payloads,
                &mut out[r],
            );
            self.session.guard(step.map_err(EngineError::from)).await?;
        }
        Ok(ShareVec::from_raw(out))
    }

    async fn inner_product(&mut self, a: &ShareVec<R>, b: &ShareVec<R>) -> Result<ShareVec<R>, EngineError> {
        let prod = self.mul(a, b).await?;
        Ok(self.sum(&prod))
    }

    async fn open(&mut self, a: &ShareVec<R>) -> Result<Vec<R>, EngineError> {
        let others = self.others();
        let r = self.open_additive(a, Op::Open, &others, &others).await?;
        r.ok_or_else(|| EngineError::Usage("opening needs at least two parties".into()))
    }

    async fn open_to(&mut self, to: PartyId, a: &ShareVec<R>) -> Result<Option<Vec<R>>, EngineError> {
        if to >= self.parties() {
            return Err(EngineError::Usage(format!("party {to} is not one of the {} parties", self.parties())));
        }
        if self.me() == to {
            let others = self.others();
            self.open_additive(a, Op::OpenTo, &[], &others).await
        } else {
            self.open_additive(a, Op::OpenTo, &[to], &[]).await
        }
    }

    async fn finish(&mut self) -> Result<(), EngineError> {
        self.session.finish().await
    }

    fn add_public(&self, a: &ShareVec<R>, c: &[R]) -> Result<ShareVec<R>, EngineError> {
        if a.len() != c.len() {
            return Err(ProtocolError::LengthMismatch { left: a.len(), right: c.len() }.into());
        }
        // Only party 0 adds the constant, so the shares still sum to a + c.
        let mut v = a.expose().to_vec();
        if self.me() == 0 {
            batch::add_assign(&mut v, c);
        }
        Ok(ShareVec::from_raw(v))
    }
}
