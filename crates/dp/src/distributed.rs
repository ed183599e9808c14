//! Distributed noise: every party adds a share of noise to its share of the
//! aggregate, so the opened value is already noisy and no party ever sees the
//! un-noised aggregate.
//!
//! The construction is the conservative one: **each of the `n` parties draws a
//! full, independent sample of the target mechanism** (`L_Z(scale)` or
//! `N_Z(0, sigma^2)`), and the released noise is the sum of the `n` samples.
//! Against any `t <= n - 1` colluding parties, who know (and may subtract) their
//! own samples, the opened value is `f(D) + Z_h + R`, where `Z_h` is the sample of
//! one honest party and `R` (the other honest samples) is independent of `D` and
//! of `Z_h`. `f(D) + Z_h` is the centralised mechanism, and adding `R` and the
//! colluders' known samples is post-processing, so the release has exactly the
//! privacy of the centralised mechanism (`d / scale`-DP for the Laplace,
//! `d^2 / (2 sigma^2)`-zCDP for the Gaussian) for every `t < n`. The price is
//! accuracy: the noise variance is `n` times the centralised variance (standard
//! deviation `sqrt(n)` times). See docs/THREAT_MODEL.md, "Differential privacy:
//! distributed noise".
//!
//! Cheaper alternatives, not implemented: splitting a discrete Laplace into
//! differences of Polya (negative binomial) shares so that `n - t` honest shares
//! sum exactly to `L_Z(scale)` (needs an exact sampler for negative binomials of
//! non-integer order), and the distributed discrete Gaussian of Kairouz, Liu and
//! Steinke, "The Distributed Discrete Gaussian Mechanism for Federated Learning
//! with Secure Aggregation", ICML 2021 (arXiv:2102.06387), where each party adds
//! `N_Z(0, sigma^2 / (n - t))`: the sum of discrete Gaussians is not a discrete
//! Gaussian, and its privacy carries an extra term that their Theorem bounds; we
//! do not account with it until that bound is checked line by line.

use rand_core::RngCore;

use crate::mechanism::Mechanism;
use crate::DpError;

/// One party's noise share for a release protected by `mechanism`, with `parties`
/// parties of which up to `tolerate` may collude: a full independent sample of
/// `mechanism` (see the module documentation for why this is private for every
/// `tolerate < parties`; `tolerate` is checked, not used in the draw).
pub fn noise_share<R: RngCore + ?Sized>(
    mechanism: &Mechanism,
    parties: usize,
    tolerate: usize,
    rng: &mut R,
) -> Result<i64, DpError> {
    NoisePlan::new(*mechanism, parties, tolerate)?;
    mechanism.sample(rng)
}

/// The noise of one release split over the parties.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoisePlan {
    target: Mechanism,
    parties: usize,
    tolerate: usize,
}

impl NoisePlan {
    /// A plan: `target` is the centralised mechanism whose privacy the release must
    /// have, `parties >= 1`, `tolerate < parties` colluders.
    pub fn new(target: Mechanism, parties: usize, tolerate: usize) -> Result<Self, DpError> {
        if parties == 0 || tolerate >= parties {
            return Err(DpError::InvalidParameter(format!(
                "need parties >= 1 and tolerate < parties, got {parties} parties, {tolerate} colluders"
            )));
        }
        Ok(NoisePlan { target, parties, tolerate })
    }

    /// The centralised mechanism (its privacy is the release's privacy).
    pub fn target(&self) -> Mechanism {
        self.target
    }

    /// The number of parties.
    pub fn parties(&self) -> usize {
        self.parties
    }

    /// The number of colluders tolerated.
    pub fn tolerate(&self) -> usize {
        self.tolerate
    }

    /// The distribution each party samples its share from (the target itself).
    pub fn share_mechanism(&self) -> Mechanism {
        self.target
    }

    /// One party's share.
    pub fn sample_share<R: RngCore + ?Sized>(&self, rng: &mut R) -> Result<i64, DpError> {
        self.target.sample(rng)
    }

    /// The noise in the opened value: the sum of all `n` shares.
    pub fn total_noise(&self) -> NoiseSum {
        NoiseSum { share: self.target, count: self.parties }
    }

    /// What `tolerate` colluders do not know: the sum of the `n - t` honest shares.
    pub fn honest_noise(&self) -> NoiseSum {
        NoiseSum { share: self.target, count: self.parties - self.tolerate }
    }
}

/// The sum of `count` independent samples of `share`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseSum {
    /// The distribution of each summand.
    pub share: Mechanism,
    /// The number of summands.
    pub count: usize,
}

/// Above this many summands confidence intervals use the normal approximation.
const MAX_CONVOLVED: usize = 8;
/// Grid points on each side of 0 for one summand's pmf in the convolution.
const HALF_GRID: u64 = 1000;

impl NoiseSum {
    /// Variance: `count` times the share's.
    pub fn variance(&self) -> f64 {
        self.count as f64 * self.share.variance()
    }

    /// Standard deviation.
    pub fn sd(&self) -> f64 {
        self.variance().sqrt()
    }

    /// The pmf of the sum on the integer grid `-L..=L` (`L = count * tail_bound`), by
    /// exact convolution in `f64`; `None` if that grid would exceed 10^6 points.
    pub fn pmf_table(&self) -> Option<(i64, Vec<f64>)> {
        let l = self.share.tail_bound();
        let width = 2 * l + 1;
        if width.saturating_mul(self.count as u64) > 1_000_000 || self.count == 0 {
            return None;
        }
        let one: Vec<f64> = (-(l as i64)..=l as i64).map(|k| self.share.pmf(k)).collect();
        let mut acc = vec![1.0];
        for _ in 0..self.count {
            acc = convolve(&acc, &one);
        }
        Some((self.count as i64 * l as i64, acc))
    }

    /// Half-width `w` of a central interval `[-w, w]` holding at least 95% of the sum.
    ///
    /// One summand: exact ([`Mechanism::ci95_halfwidth`]). Up to 8 summands: numerical
    /// convolution of the pmf, exact when one summand's support (to 1e-12) fits in
    /// 2,001 integers; otherwise on a grid of step `h` (mass at each grid point
    /// `h * pmf`), and the result is widened by `count * h` to cover the binning.
    /// More summands: `ceil(1.96 sd)` (central limit).
    pub fn ci95_halfwidth(&self) -> u64 {
        if self.count <= 1 {
            return self.share.ci95_halfwidth();
        }
        if self.count > MAX_CONVOLVED {
            return (1.959_963_984_540_054 * self.sd()).ceil() as u64;
        }
        let l = self.share.tail_bound();
        let h = l.div_ceil(HALF_GRID).max(1);
        let half = (l / h) as i64;
        let mut one: Vec<f64> = (-half..=half).map(|j| h as f64 * self.share.pmf(j * h as i64)).collect();
        let total: f64 = one.iter().sum();
        one.iter_mut().for_each(|p| *p /= total);
        let mut acc = vec![1.0];
        for _ in 0..self.count {
            acc = convolve(&acc, &one);
        }
        let centre = acc.len() / 2;
        let mut mass = acc[centre];
        let mut w = 0usize;
        while mass < 0.95 && w < centre {
            w += 1;
            mass += acc[centre - w] + acc[centre + w];
        }
        let slack = if h > 1 { self.count as u64 * h } else { 0 };
        w as u64 * h + slack
    }
}

fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; a.len() + b.len() - 1];
    for (i, &x) in a.iter().enumerate() {
        if x < 1e-300 {
            continue;
        }
        for (o, &y) in out[i..].iter_mut().zip(b) {
            *o += x * y;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn plan_checks_parties() {
        let m = Mechanism::DiscreteLaplace { scale: 2.0 };
        assert!(NoisePlan::new(m, 3, 3).is_err());
        assert!(NoisePlan::new(m, 0, 0).is_err());
        let p = NoisePlan::new(m, 3, 2).unwrap();
        assert_eq!(p.total_noise().count, 3);
        assert_eq!(p.honest_noise().count, 1);
    }

    #[test]
    fn convolution_ci_matches_exact_and_binned_is_close() {
        // Small scale: exact grid; compare with the table.
        let s = NoiseSum { share: Mechanism::DiscreteLaplace { scale: 3.0 }, count: 3 };
        let (off, table) = s.pmf_table().unwrap();
        let w = s.ci95_halfwidth() as i64;
        let mass = |w: i64| table[(off - w) as usize..=(off + w) as usize].iter().sum::<f64>();
        assert!(mass(w) >= 0.95 && mass(w - 1) < 0.95);
        // Large scale: binned, must cover 95% and not be much wider than the normal figure.
        let big = NoiseSum { share: Mechanism::DiscreteLaplace { scale: 5000.0 }, count: 3 };
        let wb = big.ci95_halfwidth() as f64;
        assert!(wb > 1.9 * big.sd() && wb < 2.3 * big.sd(), "{wb} vs sd {}", big.sd());
    }
}
