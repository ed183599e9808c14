//! The two noise distributions, their exact samplers and their exact moments.
//!
//! Both distributions live on the integers, so added to an integer aggregate
//! they leave no floating-point artefacts to exploit (Mironov, CCS 2012):
//!
//! - discrete Laplace `L_Z(t)`: `P(k) = tanh(1/(2t)) * exp(-|k|/t)` for all integers k;
//! - discrete Gaussian `N_Z(0, sigma^2)`: `P(k) = exp(-k^2/(2 sigma^2)) / sum_j exp(-j^2/(2 sigma^2))`.
//!
//! Samples are drawn by the exact algorithms of Canonne, Kamath and Steinke,
//! "The Discrete Gaussian for Differential Privacy", NeurIPS 2020
//! (arXiv:2004.00010, "CKS20"): Algorithm 1 (Bernoulli(exp(-gamma)) from
//! uniform rationals), Algorithm 2 (discrete Laplace as a geometric magnitude
//! with a random sign, rejecting "-0") and Algorithm 3 (discrete Gaussian by
//! rejection from a discrete Laplace). The implementation is the `prio`
//! crate's `dp::distributions` module (itself adapted from OpenDP), which
//! works in exact big-integer rational arithmetic and draws every random bit
//! from the RNG passed in. The parameters are `f64`, and the sampler uses the
//! exact binary rational value of that `f64`; no rounding happens anywhere.

use prio::dp::distributions::{DiscreteGaussian, DiscreteLaplace};
use prio::dp::Rational;
use rand::distr::Distribution;

use crate::DpError;

/// Largest parameter (scale or sigma) accepted: 2^60. Beyond it noise does not
/// fit comfortably in an `i64`.
pub const MAX_PARAMETER: f64 = 1_152_921_504_606_846_976.0;
/// Smallest parameter accepted: 2^-30 (noise is then 0 with overwhelming probability).
pub const MIN_PARAMETER: f64 = 1.0 / 1_073_741_824.0;

/// A noise distribution on the integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mechanism {
    /// Discrete Laplace `L_Z(scale)`: `P(k) = tanh(1/(2 scale)) * exp(-|k|/scale)`.
    /// Added to an integer query of L1 sensitivity `d` it gives `(d/scale)`-DP
    /// (CKS20, Section 2.2; Ghosh, Roughgarden, Sundararajan 2009).
    DiscreteLaplace {
        /// The scale `t > 0` (an `f64`, used as its exact binary rational value).
        scale: f64,
    },
    /// Discrete Gaussian `N_Z(0, sigma^2)`: `P(k) ∝ exp(-k^2/(2 sigma^2))`.
    /// Added to an integer query of L2 sensitivity `d` it gives `d^2/(2 sigma^2)`-zCDP
    /// (CKS20, Theorem 4). Its variance is slightly below `sigma^2` (CKS20, Corollary 9).
    ///
    /// The parameter is `sigma`, not `sigma^2`, because the exact sampler takes a
    /// rational `sigma`; [`Mechanism::sigma2`] gives `sigma^2`.
    DiscreteGaussian {
        /// The parameter `sigma > 0` (an `f64`, used as its exact binary rational value).
        sigma: f64,
    },
}

/// The next representable `f64` above a positive finite `x`.
pub(crate) fn next_up(x: f64) -> f64 {
    f64::from_bits(x.to_bits() + 1)
}

fn check_parameter(name: &str, x: f64) -> Result<(), DpError> {
    if !x.is_finite() || !(MIN_PARAMETER..=MAX_PARAMETER).contains(&x) {
        return Err(DpError::InvalidParameter(format!("{name} must be a finite number in [2^-30, 2^60], got {x}")));
    }
    Ok(())
}

/// The exact value of a positive finite `f64` in [2^-30, 2^60] as a rational.
fn exact_rational(x: f64) -> Result<Rational, DpError> {
    check_parameter("parameter", x)?;
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64;
    // Normal numbers only in this range: x = (2^52 + fraction) * 2^(exponent - 1075).
    let mut mantissa = u128::from((bits & ((1u64 << 52) - 1)) | (1u64 << 52));
    let mut shift = exponent - 1075;
    while shift < 0 && mantissa & 1 == 0 {
        mantissa >>= 1;
        shift += 1;
    }
    let (numerator, denominator) = if shift >= 0 { (mantissa << shift, 1u128) } else { (mantissa, 1u128 << (-shift)) };
    Rational::from_unsigned(numerator, denominator).map_err(|e| DpError::InvalidParameter(e.to_string()))
}

/// Adapter: our callers' `rand_core` 0.9 RNG as the `rand` 0.10 RNG that `prio` draws from.
struct Rng010<'a, R: ?Sized>(&'a mut R);

impl<R: rand_core::RngCore + ?Sized> rand::TryRng for Rng010<'_, R> {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.0.next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(self.0.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}

/// Converts `prio`'s big integer to `i64` without naming its `num-bigint` version.
fn to_i64<B>(b: B) -> Result<i64, DpError>
where
    i64: TryFrom<B>,
{
    i64::try_from(b).map_err(|_| DpError::Overflow("noise sample does not fit in i64".into()))
}

/// A sampler prepared once (the exact rational parameter built) and used many times.
pub struct Sampler {
    inner: SamplerInner,
}

enum SamplerInner {
    Laplace(DiscreteLaplace),
    Gaussian(DiscreteGaussian),
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.inner {
            SamplerInner::Laplace(_) => "Sampler(DiscreteLaplace)",
            SamplerInner::Gaussian(_) => "Sampler(DiscreteGaussian)",
        })
    }
}

impl Sampler {
    /// One exact sample, all randomness from `rng`.
    pub fn sample<R: rand_core::RngCore + ?Sized>(&self, rng: &mut R) -> Result<i64, DpError> {
        let mut adapter = Rng010(rng);
        match &self.inner {
            SamplerInner::Laplace(d) => to_i64(d.sample(&mut adapter)),
            SamplerInner::Gaussian(d) => to_i64(d.sample(&mut adapter)),
        }
    }
}

impl Mechanism {
    /// Discrete Laplace with the given scale, checked.
    pub fn discrete_laplace(scale: f64) -> Result<Self, DpError> {
        check_parameter("discrete Laplace scale", scale)?;
        Ok(Mechanism::DiscreteLaplace { scale })
    }

    /// Discrete Gaussian with the given sigma, checked.
    pub fn discrete_gaussian(sigma: f64) -> Result<Self, DpError> {
        check_parameter("discrete Gaussian sigma", sigma)?;
        Ok(Mechanism::DiscreteGaussian { sigma })
    }

    /// Discrete Laplace for `epsilon`-DP on a query of L1 sensitivity `sensitivity`:
    /// scale = sensitivity / epsilon, rounded up to the next `f64` when the division
    /// is inexact (the sign of the fused `scale * epsilon - sensitivity` is exact), so
    /// the privacy is never less than asked for and exact scales stay short rationals.
    pub fn laplace_for(epsilon: f64, sensitivity: f64) -> Result<Self, DpError> {
        check_positive("epsilon", epsilon)?;
        check_positive("sensitivity", sensitivity)?;
        let scale = sensitivity / epsilon;
        let scale = if scale.mul_add(epsilon, -sensitivity) < 0.0 { next_up(scale) } else { scale };
        Self::discrete_laplace(scale)
    }

    /// Discrete Gaussian for `rho`-zCDP on a query of L2 sensitivity `sensitivity`
    /// (CKS20, Theorem 4): sigma^2 = sensitivity^2 / (2 rho), with sigma rounded up
    /// by three ulps (covering the rounding of the square root and the division) unless
    /// both were exact (checked with fused multiply-adds), so the privacy is never less
    /// than asked for.
    pub fn gaussian_for_rho(rho: f64, sensitivity: f64) -> Result<Self, DpError> {
        check_positive("rho", rho)?;
        check_positive("sensitivity", sensitivity)?;
        let two_rho = 2.0 * rho;
        let root = two_rho.sqrt();
        let sigma = sensitivity / root;
        let exact = root.mul_add(root, -two_rho) == 0.0 && sigma.mul_add(root, -sensitivity) == 0.0;
        Self::discrete_gaussian(if exact { sigma } else { next_up(next_up(next_up(sigma))) })
    }

    /// The parameter (`scale` or `sigma`).
    pub fn parameter(&self) -> f64 {
        match *self {
            Mechanism::DiscreteLaplace { scale } => scale,
            Mechanism::DiscreteGaussian { sigma } => sigma,
        }
    }

    /// `sigma^2` of a discrete Gaussian, `None` for the Laplace.
    pub fn sigma2(&self) -> Option<f64> {
        match *self {
            Mechanism::DiscreteGaussian { sigma } => Some(sigma * sigma),
            Mechanism::DiscreteLaplace { .. } => None,
        }
    }

    /// The same distribution with a parameter `factor` times larger (rounded up).
    pub fn scaled(&self, factor: f64) -> Result<Self, DpError> {
        check_positive("factor", factor)?;
        match *self {
            Mechanism::DiscreteLaplace { scale } => Self::discrete_laplace(next_up(scale * factor)),
            Mechanism::DiscreteGaussian { sigma } => Self::discrete_gaussian(next_up(sigma * factor)),
        }
    }

    /// Builds the exact sampler (big-rational parameter) once.
    pub fn sampler(&self) -> Result<Sampler, DpError> {
        let param = exact_rational(self.parameter())?;
        let inner = match self {
            Mechanism::DiscreteLaplace { .. } => SamplerInner::Laplace(
                DiscreteLaplace::new(param).map_err(|e| DpError::InvalidParameter(e.to_string()))?,
            ),
            Mechanism::DiscreteGaussian { .. } => SamplerInner::Gaussian(
                DiscreteGaussian::new(param).map_err(|e| DpError::InvalidParameter(e.to_string()))?,
            ),
        };
        Ok(Sampler { inner })
    }

    /// One exact sample (builds the sampler each time; use [`Mechanism::sampler`] in loops).
    pub fn sample<R: rand_core::RngCore + ?Sized>(&self, rng: &mut R) -> Result<i64, DpError> {
        self.sampler()?.sample(rng)
    }

    /// `P(X = k)` in `f64` (for tests and confidence intervals).
    pub fn pmf(&self, k: i64) -> f64 {
        match *self {
            Mechanism::DiscreteLaplace { scale } => (0.5 / scale).tanh() * (-(k.unsigned_abs() as f64) / scale).exp(),
            Mechanism::DiscreteGaussian { sigma } => {
                let x = k as f64;
                (-x * x / (2.0 * sigma * sigma)).exp() / gaussian_normaliser(sigma)
            }
        }
    }

    /// The exact variance: `2 q / (1 - q)^2` with `q = exp(-1/scale)` for the Laplace;
    /// the pmf-weighted sum of k^2 for the Gaussian (equal to sigma^2 in `f64` once
    /// sigma >= 10, by Poisson summation the difference is below exp(-2 pi^2 sigma^2)).
    pub fn variance(&self) -> f64 {
        match *self {
            Mechanism::DiscreteLaplace { scale } => {
                let q = (-1.0 / scale).exp();
                let one_minus_q = -(-1.0 / scale).exp_m1();
                2.0 * q / (one_minus_q * one_minus_q)
            }
            Mechanism::DiscreteGaussian { sigma } => {
                if sigma >= 10.0 {
                    return sigma * sigma;
                }
                let bound = (40.0 * sigma).ceil() as i64 + 1;
                let z = gaussian_normaliser(sigma);
                (1..=bound)
                    .map(|k| 2.0 * (k * k) as f64 * (-((k * k) as f64) / (2.0 * sigma * sigma)).exp())
                    .sum::<f64>()
                    / z
            }
        }
    }

    /// Standard deviation (square root of [`Mechanism::variance`]).
    pub fn sd(&self) -> f64 {
        self.variance().sqrt()
    }

    /// The smallest integer `w >= 0` with `P(|X| <= w) >= 0.95`.
    ///
    /// Exact for the Laplace (closed form `P(|X| > w) = 2 q^(w+1) / (1 + q)`, checked at
    /// the neighbours against float rounding). For the Gaussian, the pmf is summed
    /// outward from 0 while sigma <= 10^5; beyond that the continuity-corrected normal
    /// quantile `ceil(1.959964 sigma - 1/2)` is used (the pmf is then the normal
    /// density at integer points to within a relative 10^-10).
    pub fn ci95_halfwidth(&self) -> u64 {
        match *self {
            Mechanism::DiscreteLaplace { scale } => {
                let q = (-1.0 / scale).exp();
                let tail = |w: u64| 2.0 * (-((w + 1) as f64) / scale).exp() / (1.0 + q);
                let guess = ((0.025 * (1.0 + q)).ln() / q.ln()).ceil() - 1.0;
                let mut w = if guess.is_finite() && guess > 0.0 { guess as u64 } else { 0 };
                while w > 0 && tail(w - 1) <= 0.05 {
                    w -= 1;
                }
                while tail(w) > 0.05 {
                    w += 1;
                }
                w
            }
            Mechanism::DiscreteGaussian { sigma } => {
                if sigma > 1e5 {
                    return (1.959_963_984_540_054 * sigma - 0.5).ceil().max(0.0) as u64;
                }
                let mut mass = self.pmf(0);
                let mut w = 0u64;
                while mass < 0.95 {
                    w += 1;
                    mass += 2.0 * self.pmf(w as i64);
                }
                w
            }
        }
    }

    /// A bound `L` with `P(|X| > L) < 1e-12` (support used for numerical convolutions).
    pub fn tail_bound(&self) -> u64 {
        match *self {
            Mechanism::DiscreteLaplace { scale } => {
                // 2 q^(L+1) / (1 + q) <= 2 exp(-(L+1)/scale) < 1e-12.
                (scale * (2e12f64).ln()).ceil() as u64
            }
            Mechanism::DiscreteGaussian { sigma } => (7.5 * sigma).ceil() as u64 + 1,
        }
    }
}

fn check_positive(name: &str, x: f64) -> Result<(), DpError> {
    if !(x.is_finite() && x > 0.0) {
        return Err(DpError::InvalidParameter(format!("{name} must be positive and finite, got {x}")));
    }
    Ok(())
}

/// `sum_k exp(-k^2/(2 sigma^2))`: summed directly for sigma < 10, else
/// `sqrt(2 pi) sigma` (Poisson summation: the relative correction is
/// `2 exp(-2 pi^2 sigma^2)`, below 10^-800).
fn gaussian_normaliser(sigma: f64) -> f64 {
    if sigma >= 10.0 {
        return (2.0 * std::f64::consts::PI).sqrt() * sigma;
    }
    let bound = (40.0 * sigma).ceil() as i64 + 1;
    1.0 + (1..=bound).map(|k| 2.0 * (-((k * k) as f64) / (2.0 * sigma * sigma)).exp()).sum::<f64>()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn pmf_sums_to_one() {
        for m in [
            Mechanism::DiscreteLaplace { scale: 0.7 },
            Mechanism::DiscreteLaplace { scale: 30.0 },
            Mechanism::DiscreteGaussian { sigma: 0.6 },
            Mechanism::DiscreteGaussian { sigma: 25.0 },
        ] {
            let l = m.tail_bound() as i64 + 10;
            let total: f64 = (-l..=l).map(|k| m.pmf(k)).sum();
            assert!((total - 1.0).abs() < 1e-9, "{m:?}: {total}");
            let var: f64 = (-l..=l).map(|k| (k * k) as f64 * m.pmf(k)).sum();
            assert!((var - m.variance()).abs() < 1e-7 * var.max(1.0), "{m:?}: {var} vs {}", m.variance());
        }
    }

    #[test]
    fn calibration_rounds_up_only_when_inexact() {
        assert_eq!(Mechanism::laplace_for(0.75, 120.0).unwrap().parameter(), 160.0);
        assert_eq!(Mechanism::gaussian_for_rho(0.5, 120.0).unwrap().parameter(), 120.0);
        let l = Mechanism::laplace_for(0.3, 1.0).unwrap().parameter();
        assert!(l * 0.3 >= 1.0 && l > 1.0 / 0.3 - 1e-12);
        let g = Mechanism::gaussian_for_rho(0.1, 3.0).unwrap().parameter();
        assert!(crate::rho_of_gaussian(3.0, g * g) <= 0.1);
    }

    #[test]
    fn exact_rational_is_exact() {
        for x in [1.0, 0.5, 3.75, 120.0 / 0.9, 1e-5, 1e15] {
            let r = exact_rational(x).unwrap();
            assert_eq!(r.to_f64().unwrap(), x);
        }
        assert!(exact_rational(f64::NAN).is_err());
        assert!(exact_rational(0.0).is_err());
    }

    #[test]
    fn ci_is_the_smallest() {
        for m in [
            Mechanism::DiscreteLaplace { scale: 0.3 },
            Mechanism::DiscreteLaplace { scale: 1.0 },
            Mechanism::DiscreteLaplace { scale: 133.4 },
            Mechanism::DiscreteGaussian { sigma: 0.4 },
            Mechanism::DiscreteGaussian { sigma: 3.0 },
            Mechanism::DiscreteGaussian { sigma: 500.0 },
        ] {
            let w = m.ci95_halfwidth() as i64;
            let mass = |w: i64| (-w..=w).map(|k| m.pmf(k)).sum::<f64>();
            assert!(mass(w) >= 0.95 - 1e-12, "{m:?}");
            assert!(w == 0 || mass(w - 1) < 0.95, "{m:?}");
        }
        // The large-sigma approximation agrees with the exact sum at the switch point.
        let exact = Mechanism::DiscreteGaussian { sigma: 1e5 }.ci95_halfwidth();
        let approx = (1.959_963_984_540_054 * 1e5f64 - 0.5).ceil() as u64;
        assert!(exact.abs_diff(approx) <= 1, "{exact} vs {approx}");
    }
}
