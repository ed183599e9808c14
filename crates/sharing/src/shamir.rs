//! Shamir t-of-n sharing over a prime field (Shamir 1979).
//!
//! Party i holds f(i + 1) where f is a uniformly random polynomial of degree
//! at most t with f(0) = x. Any t + 1 shares determine f and so x; any t
//! shares are uniformly distributed whatever x is.

use concord_math::Field;
use rand_core::RngCore;

use crate::lagrange::{point, Lagrange};
use crate::{PartyId, ShareVec, SharingError};

/// Number of parties n and threshold t (the largest coalition that learns nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShamirParams {
    n: usize,
    t: usize,
}

impl ShamirParams {
    /// Parameters with `1 <= t < n`; `n` must be below the field size.
    pub fn new<F: Field>(n: usize, t: usize) -> Result<Self, SharingError> {
        if t == 0 || t >= n {
            return Err(SharingError::InvalidParams(format!("threshold t={t} must satisfy 1 <= t < n={n}")));
        }
        if (n as u128) >= F::MODULUS {
            return Err(SharingError::InvalidParams(format!(
                "n={n} parties need distinct non-zero points in a field of {} elements",
                F::MODULUS
            )));
        }
        Ok(ShamirParams { n, t })
    }

    /// Number of parties.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Threshold.
    pub fn t(&self) -> usize {
        self.t
    }

    /// Whether multiplication by local product and resharing works (n >= 2t + 1).
    pub fn supports_multiplication(&self) -> bool {
        self.n > 2 * self.t
    }
}

/// Share every element of `secret` with an independent random polynomial of
/// degree t. Returns the n share vectors in party order.
pub fn share<F: Field, G: RngCore + ?Sized>(secret: &[F], params: ShamirParams, rng: &mut G) -> Vec<ShareVec<F>> {
    let (n, t) = (params.n, params.t);
    let len = secret.len();
    // Coefficients a_1..a_t for every element, stored coefficient-major.
    let mut coeffs = vec![F::ZERO; t * len];
    F::fill_random(rng, &mut coeffs);
    let mut shares = Vec::with_capacity(n);
    for p in 0..n {
        let x: F = point(p);
        // Horner: f(x) = (((a_t x + a_{t-1}) x + ...) x + a_1) x + s.
        let mut acc = vec![F::ZERO; len];
        for k in (0..t).rev() {
            let ak = &coeffs[k * len..(k + 1) * len];
            for (v, a) in acc.iter_mut().zip(ak) {
                *v = *v * x + *a;
            }
        }
        for (v, s) in acc.iter_mut().zip(secret) {
            *v = *v * x + *s;
        }
        shares.push(ShareVec::from_raw(acc));
    }
    use zeroize::Zeroize;
    coeffs.zeroize();
    shares
}

/// Reconstruct from at least t + 1 shares (the first t + 1 given are used).
/// **Opens the secret**: call only where the protocol reveals it.
pub fn reconstruct<F: Field>(shares: &[(PartyId, &ShareVec<F>)], params: ShamirParams) -> Result<Vec<F>, SharingError> {
    let need = params.t + 1;
    if shares.len() < need {
        return Err(SharingError::NotEnoughShares { have: shares.len(), need, t: params.t });
    }
    let used = &shares[..need];
    let parties: Vec<PartyId> = used.iter().map(|(p, _)| *p).collect();
    let lag = Lagrange::<F>::at_zero(&parties, params.n)?;
    let vals: Vec<&[F]> = used.iter().map(|(_, s)| s.expose()).collect();
    lag.combine(&vals)
}

/// Completes a sharing in which the secret and the shares of t chosen
/// parties are fixed in advance: the degree-t polynomial through
/// (0, secret) and the t fixed points is unique, and this evaluates it at
/// the remaining parties' points.
///
/// With the fixed shares drawn from seeds shared pairwise with those parties
/// (pseudo-random secret sharing), only the other n - 1 - t shares need to
/// be sent, which halves the traffic of input sharing and resharing for
/// three parties.
#[derive(Clone, Debug)]
pub struct Completer<F: Field> {
    fixed: Vec<PartyId>,
    targets: Vec<PartyId>,
    /// For each target: coefficients over [secret, fixed_0, ..., fixed_{t-1}].
    rows: Vec<Lagrange<F>>,
}

impl<F: Field> Completer<F> {
    /// `fixed`: the t parties whose shares are given; `targets`: the parties to compute.
    pub fn new(params: ShamirParams, fixed: &[PartyId], targets: &[PartyId]) -> Result<Self, SharingError> {
        if fixed.len() != params.t {
            return Err(SharingError::InvalidParams(format!(
                "a completer needs exactly t={} fixed parties, got {}",
                params.t,
                fixed.len()
            )));
        }
        let mut all = fixed.to_vec();
        all.extend_from_slice(targets);
        crate::check_set(&all, params.n)?;
        // Interpolation nodes: 0 (the secret) then the fixed parties' points.
        let mut points = vec![F::ZERO];
        points.extend(fixed.iter().map(|&p| point::<F>(p)));
        let mut labels = vec![usize::MAX];
        labels.extend_from_slice(fixed);
        let rows = targets
            .iter()
            .map(|&p| Lagrange::with_points(&labels, &points, point::<F>(p)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Completer { fixed: fixed.to_vec(), targets: targets.to_vec(), rows })
    }

    /// The parties whose shares are fixed.
    pub fn fixed(&self) -> &[PartyId] {
        &self.fixed
    }

    /// The parties whose shares are computed, in output order.
    pub fn targets(&self) -> &[PartyId] {
        &self.targets
    }

    /// Coefficients of target `k` (in [`Self::targets`] order) over
    /// `[secret, fixed_0, ..., fixed_{t-1}]`, for callers that stream.
    pub fn row(&self, k: usize) -> Option<&[F]> {
        self.rows.get(k).map(|r| r.coeffs())
    }

    /// Shares of the targets, given the secret and the fixed shares (in [`Self::fixed`] order).
    pub fn complete(&self, secret: &[F], fixed_shares: &[&[F]]) -> Result<Vec<Vec<F>>, SharingError> {
        let mut inputs: Vec<&[F]> = Vec::with_capacity(1 + fixed_shares.len());
        inputs.push(secret);
        inputs.extend_from_slice(fixed_shares);
        self.rows.iter().map(|row| row.combine(&inputs)).collect()
    }
}
