//! Lagrange interpolation coefficients for Shamir shares.
//!
//! For a set S of parties with evaluation points x_j = j + 1, the polynomial
//! of degree < |S| through (x_j, y_j) takes at a point z the value
//! sum_j lambda_j(z) y_j with lambda_j(z) = prod_{m in S, m != j} (z - x_m) / (x_j - x_m).
//! The coefficients depend only on S and z, so they are computed once and
//! applied to every element of a vector.

use concord_math::{batch, Field};

use crate::{PartyId, SharingError};

/// Evaluation point of party `p`.
#[inline]
pub fn point<F: Field>(p: PartyId) -> F {
    F::from_u64(p as u64 + 1)
}

/// Precomputed coefficients mapping the shares of a set of parties to the
/// polynomial's value at one point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lagrange<F: Field> {
    parties: Vec<PartyId>,
    coeffs: Vec<F>,
}

impl<F: Field> Lagrange<F> {
    /// Coefficients for interpolating at 0 (reconstruction) from `parties` among `n`.
    pub fn at_zero(parties: &[PartyId], n: usize) -> Result<Self, SharingError> {
        Self::at(parties, n, F::ZERO)
    }

    /// Coefficients for interpolating at the point `z` from the shares of `parties` among `n`.
    pub fn at(parties: &[PartyId], n: usize, z: F) -> Result<Self, SharingError> {
        crate::check_set(parties, n)?;
        if (n as u128) >= F::MODULUS {
            return Err(SharingError::InvalidParams(format!(
                "{n} parties need distinct non-zero points in a field of {} elements",
                F::MODULUS
            )));
        }
        Self::with_points(parties, &parties.iter().map(|&p| point::<F>(p)).collect::<Vec<_>>(), z)
    }

    /// Coefficients for points given explicitly (`points[k]` belongs to `labels[k]`).
    /// Used to interpolate through the secret's point 0 together with party points.
    pub fn with_points(labels: &[PartyId], points: &[F], z: F) -> Result<Self, SharingError> {
        let mut coeffs = Vec::with_capacity(points.len());
        for (j, &xj) in points.iter().enumerate() {
            let mut num = F::ONE;
            let mut den = F::ONE;
            for (m, &xm) in points.iter().enumerate() {
                if m != j {
                    num *= z - xm;
                    den *= xj - xm;
                }
            }
            let inv =
                den.inv().map_err(|_| SharingError::InvalidParams("two parties share an evaluation point".into()))?;
            coeffs.push(num * inv);
        }
        Ok(Lagrange { parties: labels.to_vec(), coeffs })
    }

    /// The parties, in the order their shares must be given.
    pub fn parties(&self) -> &[PartyId] {
        &self.parties
    }

    /// The coefficients, one per party in [`Self::parties`] order.
    pub fn coeffs(&self) -> &[F] {
        &self.coeffs
    }

    /// Combine share vectors given in [`Self::parties`] order, element by element.
    pub fn combine(&self, shares: &[&[F]]) -> Result<Vec<F>, SharingError> {
        if shares.len() != self.coeffs.len() {
            return Err(SharingError::NotEnoughShares {
                have: shares.len(),
                need: self.coeffs.len(),
                t: self.coeffs.len().saturating_sub(1),
            });
        }
        let len = shares.first().map(|s| s.len()).unwrap_or(0);
        for (s, &p) in shares.iter().zip(&self.parties) {
            if s.len() != len {
                return Err(SharingError::LengthMismatch { party: p, expected: len, got: s.len() });
            }
        }
        let mut out = vec![F::ZERO; len];
        batch::lincomb_into(&mut out, &self.coeffs, shares);
        Ok(out)
    }
}
