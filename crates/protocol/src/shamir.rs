//! Honest-majority semi-honest protocols over Shamir shares.
//!
//! Party p's evaluation point is p + 1. Routing is fixed per session by
//! [`ShamirPlan`]: for an input owned by o (and for the resharing sent by a
//! party o), the t parties after o cyclically, S_o = {o+1, ..., o+t} mod n,
//! draw their shares from the stream they share with o (PRSS), and o sends
//! shares only to the other n - 1 - t parties. The sharing polynomial is then
//! the unique degree-t polynomial through (0, secret) and the t pseudo-random
//! points; any t shares remain uniformly distributed.
//!
//! Multiplication (GRR, Gennaro-Rabin-Rabin 1998, with the PRSS shortcut):
//! 1. every party p in Q = {0, ..., 2t} computes d_p = a_p * b_p, a share of
//!    a degree-2t sharing of a*b;
//! 2. p shares lambda_p * d_p with degree t, lambda the Lagrange coefficients
//!    of Q at 0 (one round, n - 1 - t elements sent per element);
//! 3. every party sums the shares it holds of the n' = 2t + 1 sub-sharings:
//!    sum_p lambda_p d_p = a*b, now with degree t.
//!
//! Opening to all: party p sends its share to p+1, ..., p+t and reconstructs
//! from its own and those of p-1, ..., p-t (t elements sent per element).
//! Opening to r: parties r+1, ..., r+t send to r.

use concord_math::{batch, Field};
use concord_sharing::lagrange::Lagrange;
use concord_sharing::shamir::{Completer, ShamirParams};
use concord_sharing::ShareVec;

use crate::message::{self, Op};
use crate::prss::Prss;

/// Elements processed per step of the streaming kernels (fits in L1/L2).
const CHUNK: usize = 4096;
use crate::{Outgoing, PartyId, ProtocolError};

/// Who sends to whom when one party shares a vector.
#[derive(Clone, Debug)]
pub struct SharingRoute<F: Field> {
    /// The sharing party.
    pub owner: PartyId,
    /// The t parties whose shares come from the pairwise streams.
    pub seeded: Vec<PartyId>,
    /// The parties that receive their share in a message.
    pub send_to: Vec<PartyId>,
    /// Computes the shares of `send_to` and then of `owner`.
    completer: Completer<F>,
}

/// Precomputed routing and coefficients for one party of a Shamir session.
#[derive(Clone, Debug)]
pub struct ShamirPlan<F: Field> {
    params: ShamirParams,
    me: PartyId,
    routes: Vec<SharingRoute<F>>,
    /// Resharing parties Q and their recombination coefficients at 0 (n >= 2t+1 only).
    resharers: Option<(Vec<PartyId>, Vec<F>)>,
    open_send_to: Vec<PartyId>,
    open_recv_from: Vec<PartyId>,
    open_lagrange: Lagrange<F>,
    open_to: Vec<(Vec<PartyId>, Lagrange<F>)>,
}

fn wipe<F: Field>(d: &mut [F]) {
    for x in d.iter_mut() {
        x.zeroize();
    }
}

fn cyclic(start: PartyId, count: usize, n: usize) -> Vec<PartyId> {
    (1..=count).map(|k| (start + k) % n).collect()
}

impl<F: Field> ShamirPlan<F> {
    /// Plan for party `me` among `params.n()` with threshold `params.t()`.
    pub fn new(params: ShamirParams, me: PartyId) -> Result<Self, ProtocolError> {
        let (n, t) = (params.n(), params.t());
        if me >= n {
            return Err(ProtocolError::InvalidParams(format!("party {me} out of range for {n} parties")));
        }
        let mut routes = Vec::with_capacity(n);
        for owner in 0..n {
            let seeded = cyclic(owner, t, n);
            let send_to: Vec<PartyId> = (0..n).filter(|p| *p != owner && !seeded.contains(p)).collect();
            let mut targets = send_to.clone();
            targets.push(owner);
            let completer = Completer::new(params, &seeded, &targets)?;
            routes.push(SharingRoute { owner, seeded, send_to, completer });
        }
        let resharers = if params.supports_multiplication() {
            let q: Vec<PartyId> = (0..=2 * t).collect();
            let lag = Lagrange::<F>::at_zero(&q, n)?;
            Some((q, lag.coeffs().to_vec()))
        } else {
            None
        };
        let open_send_to = cyclic(me, t, n);
        let open_recv_from: Vec<PartyId> = (1..=t).map(|k| (me + n - k) % n).collect();
        let mut set = vec![me];
        set.extend_from_slice(&open_recv_from);
        let open_lagrange = Lagrange::at_zero(&set, n)?;
        let mut open_to = Vec::with_capacity(n);
        for r in 0..n {
            let senders = cyclic(r, t, n);
            let mut set = vec![r];
            set.extend_from_slice(&senders);
            open_to.push((senders, Lagrange::at_zero(&set, n)?));
        }
        Ok(ShamirPlan { params, me, routes, resharers, open_send_to, open_recv_from, open_lagrange, open_to })
    }

    /// The sharing parameters.
    pub fn params(&self) -> ShamirParams {
        self.params
    }

    /// Our party index.
    pub fn me(&self) -> PartyId {
        self.me
    }

    fn route(&self, owner: PartyId) -> Result<&SharingRoute<F>, ProtocolError> {
        self.routes.get(owner).ok_or_else(|| ProtocolError::InvalidParams(format!("party {owner} out of range")))
    }

    /// Routing of a sharing by `owner`.
    pub fn sharing_route(&self, owner: PartyId) -> Result<&SharingRoute<F>, ProtocolError> {
        self.route(owner)
    }

    /// Input, owner side: our share and the encoded messages (recipient, bytes) to send.
    pub fn input_send(
        &self,
        prss: &mut Prss,
        secret: &[F],
        seq: u32,
    ) -> Result<(ShareVec<F>, Outgoing), ProtocolError> {
        let (own, msgs) = self.share_from_me(prss, secret, Op::Input, seq)?;
        Ok((ShareVec::from_raw(own), msgs))
    }

    /// Share `value` from this party with the PRSS shortcut, streaming in
    /// chunks: draw the t seeded shares, evaluate the other parties' shares by
    /// Lagrange combination and encode them straight into their messages.
    fn share_from_me(
        &self,
        prss: &mut Prss,
        value: &[F],
        op: Op,
        seq: u32,
    ) -> Result<(Vec<F>, Outgoing), ProtocolError> {
        let route = self.route(self.me)?;
        let len = value.len();
        let mut msgs: Vec<(PartyId, Vec<u8>)> =
            route.send_to.iter().map(|&p| (p, message::start_vec::<F>(op, seq, len))).collect();
        let own_row = route
            .completer
            .row(route.send_to.len())
            .ok_or_else(|| ProtocolError::InvalidParams("sharing plan has no row for the owner".into()))?;
        let mut own = vec![F::ZERO; len];
        let mut fixed: Vec<Vec<F>> = vec![vec![F::ZERO; CHUNK.min(len)]; route.seeded.len()];
        let mut tmp = vec![F::ZERO; CHUNK.min(len)];
        let mut start = 0;
        while start < len {
            let end = (start + CHUNK).min(len);
            let m = end - start;
            for (buf, &j) in fixed.iter_mut().zip(&route.seeded) {
                prss.fill_to::<F>(j, &mut buf[..m])?;
            }
            let mut inputs: Vec<&[F]> = Vec::with_capacity(1 + fixed.len());
            inputs.push(&value[start..end]);
            inputs.extend(fixed.iter().map(|f| &f[..m]));
            for (k, (_, msg)) in msgs.iter_mut().enumerate() {
                let row = route
                    .completer
                    .row(k)
                    .ok_or_else(|| ProtocolError::InvalidParams("sharing plan row missing".into()))?;
                batch::lincomb_into(&mut tmp[..m], row, &inputs);
                batch::encode_into(&tmp[..m], msg);
            }
            batch::lincomb_into(&mut own[start..end], own_row, &inputs);
            start = end;
        }
        wipe(&mut tmp);
        for f in fixed.iter_mut() {
            wipe(f);
        }
        Ok((own, msgs))
    }

    /// Whether we receive a message when `owner` shares (false: we draw our share from a stream).
    pub fn input_needs_message(&self, owner: PartyId) -> Result<bool, ProtocolError> {
        Ok(self.route(owner)?.send_to.contains(&self.me))
    }

    /// Input, receiver side: write our share of the next `out.len()`
    /// elements of `owner`'s vector into `out`. `received` is the message
    /// payload, required iff [`Self::input_needs_message`].
    pub fn input_recv(
        &self,
        prss: &mut Prss,
        owner: PartyId,
        received: Option<&[u8]>,
        out: &mut [F],
    ) -> Result<(), ProtocolError> {
        let route = self.route(owner)?;
        if route.seeded.contains(&self.me) {
            return prss.fill_from::<F>(owner, out);
        }
        let payload = received.ok_or_else(|| ProtocolError::Malformed {
            peer: owner,
            what: "input",
            reason: "no share received".into(),
        })?;
        batch::decode_into(out, payload).map_err(|e| ProtocolError::Malformed {
            peer: owner,
            what: "input",
            reason: e.to_string(),
        })
    }

    fn resharers(&self) -> Result<&(Vec<PartyId>, Vec<F>), ProtocolError> {
        self.resharers.as_ref().ok_or_else(|| {
            ProtocolError::InvalidParams(format!(
                "multiplication needs n >= 2t + 1, have n={} t={}",
                self.params.n(),
                self.params.t()
            ))
        })
    }

    /// Degree reduction, steps 1-2: our degree-t resharing of lambda_me * d
    /// for a local degree-2t share vector `d` (overwritten and wiped).
    /// Returns our own contribution (if we are a resharer) and the encoded
    /// messages to send.
    pub fn reshare_send(
        &self,
        prss: &mut Prss,
        d: &mut [F],
        seq: u32,
    ) -> Result<(Option<Vec<F>>, Outgoing), ProtocolError> {
        let (q, lambda) = self.resharers()?;
        let Some(pos) = q.iter().position(|p| *p == self.me) else {
            wipe(d);
            return Ok((None, Vec::new()));
        };
        batch::scale(d, lambda[pos]);
        let (own, msgs) = self.share_from_me(prss, d, Op::Reshare, seq)?;
        wipe(d);
        Ok((Some(own), msgs))
    }

    /// The parties whose resharing message we must receive, in order.
    pub fn reshare_expected_from(&self) -> Result<Vec<PartyId>, ProtocolError> {
        let (q, _) = self.resharers()?;
        Ok(q.iter()
            .copied()
            .filter(|&i| i != self.me && self.routes.get(i).is_some_and(|r| r.send_to.contains(&self.me)))
            .collect())
    }

    /// Degree reduction, step 3: add our shares of the other parties'
    /// resharings into `acc`, which holds our own contribution (or zeros if
    /// we do not reshare). `received` pairs each party of
    /// [`Self::reshare_expected_from`] with its message payload for this batch.
    pub fn reshare_recv(
        &self,
        prss: &mut Prss,
        acc: &mut [F],
        received: &[(PartyId, &[u8])],
    ) -> Result<(), ProtocolError> {
        let (q, _) = self.resharers()?;
        let mut tmp = vec![F::ZERO; CHUNK.min(acc.len())];
        for &i in q {
            if i == self.me || !self.route(i)?.seeded.contains(&self.me) {
                continue;
            }
            for chunk in acc.chunks_mut(CHUNK) {
                let m = chunk.len();
                prss.fill_from::<F>(i, &mut tmp[..m])?;
                batch::add_assign(chunk, &tmp[..m]);
            }
        }
        wipe(&mut tmp);
        for (i, payload) in received {
            batch::decode_add_assign(acc, payload).map_err(|e| ProtocolError::Malformed {
                peer: *i,
                what: "reshare",
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Opening to all: the parties we send our share to.
    pub fn open_send_to(&self) -> &[PartyId] {
        &self.open_send_to
    }

    /// Opening to all: the parties whose shares we receive, in order.
    pub fn open_recv_from(&self) -> &[PartyId] {
        &self.open_recv_from
    }

    /// Opening to all: reconstruct from our share and the received payloads
    /// (in [`Self::open_recv_from`] order). **Reveals the value.**
    pub fn open_combine(&self, own: &[F], received: &[(PartyId, &[u8])], out: &mut [F]) -> Result<(), ProtocolError> {
        combine_encoded(&self.open_lagrange, own, received, out)
    }

    /// Opening to party `r`: the parties that send their shares to `r`.
    pub fn open_to_senders(&self, r: PartyId) -> Result<&[PartyId], ProtocolError> {
        self.open_to
            .get(r)
            .map(|(s, _)| s.as_slice())
            .ok_or_else(|| ProtocolError::InvalidParams(format!("party {r} out of range")))
    }

    /// Opening to us: reconstruct from our share and the senders' payloads
    /// (in [`Self::open_to_senders`] order). **Reveals the value.**
    pub fn open_to_combine(
        &self,
        own: &[F],
        received: &[(PartyId, &[u8])],
        out: &mut [F],
    ) -> Result<(), ProtocolError> {
        let (_, lag) = self
            .open_to
            .get(self.me)
            .ok_or_else(|| ProtocolError::InvalidParams("no plan for opening to us".into()))?;
        combine_encoded(lag, own, received, out)
    }
}

/// Interpolate at 0 from our share (first in `lag`'s order) and encoded
/// shares of the other parties, decoding as we go.
fn combine_encoded<F: Field>(
    lag: &Lagrange<F>,
    own: &[F],
    received: &[(PartyId, &[u8])],
    out: &mut [F],
) -> Result<(), ProtocolError> {
    let coeffs = lag.coeffs();
    if coeffs.len() != received.len() + 1 || own.len() != out.len() {
        return Err(ProtocolError::InvalidParams(format!(
            "{} shares of {} elements for an interpolation over {} into {}",
            received.len() + 1,
            own.len(),
            coeffs.len(),
            out.len()
        )));
    }
    for (o, x) in out.iter_mut().zip(own) {
        *o = coeffs[0] * *x;
    }
    for ((peer, payload), c) in received.iter().zip(&coeffs[1..]) {
        batch::decode_scale_add(out, *c, payload).map_err(|e| ProtocolError::Malformed {
            peer: *peer,
            what: "open",
            reason: e.to_string(),
        })?;
    }
    Ok(())
}
