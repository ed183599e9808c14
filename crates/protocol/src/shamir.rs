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

use crate::prss::Prss;
use crate::{PartyId, ProtocolError};

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
            routes.push(SharingRoute {
                owner,
                seeded,
                send_to,
                completer,
            });
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
        Ok(ShamirPlan {
            params,
            me,
            routes,
            resharers,
            open_send_to,
            open_recv_from,
            open_lagrange,
            open_to,
        })
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
        self.routes
            .get(owner)
            .ok_or_else(|| ProtocolError::InvalidParams(format!("party {owner} out of range")))
    }

    /// Routing of a sharing by `owner`.
    pub fn sharing_route(&self, owner: PartyId) -> Result<&SharingRoute<F>, ProtocolError> {
        self.route(owner)
    }

    /// Input, owner side: our share and the messages (recipient, shares) to send.
    pub fn input_send(
        &self,
        prss: &mut Prss,
        secret: &[F],
    ) -> Result<(ShareVec<F>, Vec<(PartyId, Vec<F>)>), ProtocolError> {
        self.share_from_me(prss, secret)
    }

    /// Share `value` from this party with the PRSS shortcut; returns own share and messages.
    fn share_from_me(
        &self,
        prss: &mut Prss,
        value: &[F],
    ) -> Result<(ShareVec<F>, Vec<(PartyId, Vec<F>)>), ProtocolError> {
        let route = self.route(self.me)?;
        let mut fixed = Vec::with_capacity(route.seeded.len());
        for &j in &route.seeded {
            fixed.push(prss.draw_to::<F>(j, value.len())?);
        }
        let refs: Vec<&[F]> = fixed.iter().map(|v| v.as_slice()).collect();
        let mut shares = route.completer.complete(value, &refs)?;
        let own = shares.pop().unwrap_or_default();
        let msgs = route.send_to.iter().copied().zip(shares).collect();
        Ok((ShareVec::from_raw(own), msgs))
    }

    /// Whether we receive a message when `owner` shares (false: we draw our share from a stream).
    pub fn input_needs_message(&self, owner: PartyId) -> Result<bool, ProtocolError> {
        Ok(self.route(owner)?.send_to.contains(&self.me))
    }

    /// Input, receiver side: our share of `owner`'s vector of `len` elements.
    /// `received` is the decoded message, required iff [`Self::input_needs_message`].
    pub fn input_recv(
        &self,
        prss: &mut Prss,
        owner: PartyId,
        len: usize,
        received: Option<Vec<F>>,
    ) -> Result<ShareVec<F>, ProtocolError> {
        let route = self.route(owner)?;
        if route.seeded.contains(&self.me) {
            return Ok(ShareVec::from_raw(prss.draw_from::<F>(owner, len)?));
        }
        match received {
            Some(v) if v.len() == len => Ok(ShareVec::from_raw(v)),
            Some(v) => Err(ProtocolError::WrongLength {
                peer: owner,
                what: "input",
                expected: len,
                got: v.len(),
            }),
            None => Err(ProtocolError::Malformed {
                peer: owner,
                what: "input",
                reason: "no share received".into(),
            }),
        }
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

    /// Multiplication step 1-2: local products and our degree-t resharing of
    /// lambda_me * d. Returns our own contribution (if we are a resharer)
    /// and the messages to send.
    #[allow(clippy::type_complexity)]
    pub fn mul_send(
        &self,
        prss: &mut Prss,
        a: &ShareVec<F>,
        b: &ShareVec<F>,
    ) -> Result<(Option<Vec<F>>, Vec<(PartyId, Vec<F>)>), ProtocolError> {
        if a.len() != b.len() {
            return Err(ProtocolError::LengthMismatch {
                left: a.len(),
                right: b.len(),
            });
        }
        let mut d = batch::mul(a.expose(), b.expose());
        self.reshare_send(prss, &mut d)
    }

    /// Degree reduction of a local degree-2t share vector `d` (overwritten).
    #[allow(clippy::type_complexity)]
    pub fn reshare_send(
        &self,
        prss: &mut Prss,
        d: &mut [F],
    ) -> Result<(Option<Vec<F>>, Vec<(PartyId, Vec<F>)>), ProtocolError> {
        let (q, lambda) = self.resharers()?;
        let Some(pos) = q.iter().position(|p| *p == self.me) else {
            wipe(d);
            return Ok((None, Vec::new()));
        };
        batch::scale(d, lambda[pos]);
        let (own, msgs) = self.share_from_me(prss, d)?;
        wipe(d);
        Ok((Some(own.expose().to_vec()), msgs))
    }

    /// The parties whose resharing message we must receive, in order.
    pub fn reshare_expected_from(&self) -> Result<Vec<PartyId>, ProtocolError> {
        let (q, _) = self.resharers()?;
        Ok(q
            .iter()
            .copied()
            .filter(|&i| i != self.me && self.routes.get(i).is_some_and(|r| r.send_to.contains(&self.me)))
            .collect())
    }

    /// Multiplication step 3: sum our shares of the resharings.
    /// `received` pairs each party of [`Self::reshare_expected_from`] with its decoded vector.
    pub fn reshare_recv(
        &self,
        prss: &mut Prss,
        own: Option<Vec<F>>,
        received: Vec<(PartyId, Vec<F>)>,
        len: usize,
    ) -> Result<ShareVec<F>, ProtocolError> {
        let (q, _) = self.resharers()?;
        let mut acc = own.unwrap_or_else(|| vec![F::ZERO; len]);
        if acc.len() != len {
            return Err(ProtocolError::LengthMismatch { left: acc.len(), right: len });
        }
        for &i in q {
            if i == self.me {
                continue;
            }
            let route = self.route(i)?;
            if route.seeded.contains(&self.me) {
                let v = prss.draw_from::<F>(i, len)?;
                batch::add_assign(&mut acc, &v);
            }
        }
        for (i, v) in received {
            if v.len() != len {
                return Err(ProtocolError::WrongLength {
                    peer: i,
                    what: "reshare",
                    expected: len,
                    got: v.len(),
                });
            }
            batch::add_assign(&mut acc, &v);
        }
        Ok(ShareVec::from_raw(acc))
    }

    /// Opening to all: the parties we send our share to.
    pub fn open_send_to(&self) -> &[PartyId] {
        &self.open_send_to
    }

    /// Opening to all: the parties whose shares we receive, in order.
    pub fn open_recv_from(&self) -> &[PartyId] {
        &self.open_recv_from
    }

    /// Opening to all: reconstruct from our share and the received ones (in
    /// [`Self::open_recv_from`] order). **Reveals the value.**
    pub fn open_combine(&self, own: &ShareVec<F>, received: &[Vec<F>]) -> Result<Vec<F>, ProtocolError> {
        let mut shares: Vec<&[F]> = vec![own.expose()];
        shares.extend(received.iter().map(|v| v.as_slice()));
        Ok(self.open_lagrange.combine(&shares)?)
    }

    /// Opening to party `r`: the parties that send their shares to `r`.
    pub fn open_to_senders(&self, r: PartyId) -> Result<&[PartyId], ProtocolError> {
        self.open_to
            .get(r)
            .map(|(s, _)| s.as_slice())
            .ok_or_else(|| ProtocolError::InvalidParams(format!("party {r} out of range")))
    }

    /// Opening to us: reconstruct from our share and the senders' (in
    /// [`Self::open_to_senders`] order). **Reveals the value.**
    pub fn open_to_combine(&self, own: &ShareVec<F>, received: &[Vec<F>]) -> Result<Vec<F>, ProtocolError> {
        let (_, lag) = self
            .open_to
            .get(self.me)
            .ok_or_else(|| ProtocolError::InvalidParams("no plan for opening to us".into()))?;
        let mut shares: Vec<&[F]> = vec![own.expose()];
        shares.extend(received.iter().map(|v| v.as_slice()));
        Ok(lag.combine(&shares)?)
    }
}
