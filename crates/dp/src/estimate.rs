//! Noisy answers with their accuracy: COUNT, SUM, AVG, HISTOGRAM and GROUP BY cells.
//!
//! **Neighbouring relation: add/remove one row** (unbounded DP). Under it:
//!
//! | release | sensitivity (L1 = L2) |
//! | --- | --- |
//! | `COUNT` | 1 |
//! | `SUM(x)`, x clamped to `[lo, hi]` | `max(|lo|, |hi|)` |
//! | centred sum `sum(2x - lo - hi)` (for AVG) | `hi - lo` |
//! | `HISTOGRAM` (all bins together) | 1: a row lands in exactly one bin |
//! | `GROUP BY` cells of one aggregate (all groups together) | that aggregate's: a row is in one group |
//!
//! (Under replace-one neighbouring the histogram's L1 sensitivity would be 2 and a
//! sum's `hi - lo`.) Histogram bins and GROUP BY cells each get independent noise
//! with the plan of the whole release; the group keys must be public (declared
//! category values), or a group's presence would leak.
//!
//! Values are clamped to the declared bounds before they are summed ([`clamp`]):
//! the sensitivity holds only for clamped inputs.
//!
//! **AVG** is released as `m + S / (2 C)` with `m = (lo + hi) / 2`,
//! `S = sum(2x - lo - hi)` (noisy) and `C` the noisy count (at least 1), clamped
//! to `[lo, hi]`. Centring halves the sum's sensitivity relative to `SUM(x)` when
//! `lo = 0`, and the count's noise only enters multiplied by `mean - m`. The budget
//! is split: a fraction `count_fraction` of epsilon (or of rho) to the count,
//! the rest to the centred sum; [`DEFAULT_COUNT_FRACTION`] is 1/4.

use crate::distributed::NoisePlan;
use crate::mechanism::Mechanism;
use crate::DpError;

/// Default share of an AVG's budget spent on its count.
pub const DEFAULT_COUNT_FRACTION: f64 = 0.25;

/// Clamps `value` into `[lo, hi]` (requires `lo <= hi`; if not, the bounds are swapped).
pub fn clamp(value: i64, lo: i64, hi: i64) -> i64 {
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    value.clamp(lo, hi)
}

fn check_bounds(lo: i64, hi: i64) -> Result<(), DpError> {
    if lo > hi {
        return Err(DpError::InvalidParameter(format!("bounds [{lo}, {hi}] are empty")));
    }
    Ok(())
}

/// Sensitivity of `COUNT` (add/remove one row).
pub const COUNT_SENSITIVITY: u64 = 1;
/// Sensitivity of a histogram or of the cells of a GROUP BY count (add/remove one row).
pub const HISTOGRAM_SENSITIVITY: u64 = 1;

/// Sensitivity of `SUM(x)` with `x` clamped to `[lo, hi]`: `max(|lo|, |hi|)`.
pub fn sum_sensitivity(lo: i64, hi: i64) -> Result<u64, DpError> {
    check_bounds(lo, hi)?;
    Ok(lo.unsigned_abs().max(hi.unsigned_abs()).max(1))
}

/// Sensitivity of the centred sum `sum(2x - lo - hi)`: `hi - lo` (at least 1).
pub fn centred_sum_sensitivity(lo: i64, hi: i64) -> Result<u64, DpError> {
    check_bounds(lo, hi)?;
    Ok(hi.abs_diff(lo).max(1))
}

/// The centred value `2x - lo - hi` of a clamped `x` (what each party sums for AVG).
pub fn centred(value: i64, lo: i64, hi: i64) -> i128 {
    2 * i128::from(clamp(value, lo, hi)) - i128::from(lo) - i128::from(hi)
}

/// A noisy answer and its accuracy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The released value.
    pub value: f64,
    /// Standard deviation of the noise in `value` (same unit as `value`).
    pub noise_scale: f64,
    /// A 95% confidence interval for the un-noised value.
    pub ci95: (f64, f64),
}

impl Estimate {
    /// An integer aggregate opened with the noise of `plan` (all `n` shares), reported
    /// in units of `unit` (1 for counts; `10^-scale` for fixed-point sums).
    /// The interval is exact: `value ± w` with `w` from [`crate::NoiseSum::ci95_halfwidth`].
    pub fn of_integer(noisy: i64, plan: &NoisePlan, unit: f64) -> Estimate {
        let total = plan.total_noise();
        let w = total.ci95_halfwidth() as f64 * unit;
        let value = noisy as f64 * unit;
        Estimate { value, noise_scale: total.sd() * unit, ci95: (value - w, value + w) }
    }
}

/// A noisy `COUNT` (plan built for sensitivity [`COUNT_SENSITIVITY`]).
pub fn estimate_count(noisy: i64, plan: &NoisePlan) -> Estimate {
    Estimate::of_integer(noisy, plan, 1.0)
}

/// A noisy `SUM` (plan built for [`sum_sensitivity`]), in units of `unit`.
pub fn estimate_sum(noisy: i64, plan: &NoisePlan, unit: f64) -> Estimate {
    Estimate::of_integer(noisy, plan, unit)
}

/// Noisy histogram bins or GROUP BY counts (plan built for [`HISTOGRAM_SENSITIVITY`]).
pub fn estimate_histogram(noisy: &[i64], plan: &NoisePlan) -> Vec<Estimate> {
    noisy.iter().map(|&v| estimate_count(v, plan)).collect()
}

/// The two noise plans of an AVG under pure DP: `count_fraction * epsilon` to the count,
/// the rest to the centred sum, both discrete Laplace.
pub fn avg_laplace_plans(
    epsilon: f64,
    lo: i64,
    hi: i64,
    count_fraction: f64,
    parties: usize,
    tolerate: usize,
) -> Result<AvgPlans, DpError> {
    check_fraction(count_fraction)?;
    let sum = Mechanism::laplace_for(epsilon * (1.0 - count_fraction), centred_sum_sensitivity(lo, hi)? as f64)?;
    let count = Mechanism::laplace_for(epsilon * count_fraction, COUNT_SENSITIVITY as f64)?;
    Ok(AvgPlans {
        sum: NoisePlan::new(sum, parties, tolerate)?,
        count: NoisePlan::new(count, parties, tolerate)?,
        lo,
        hi,
    })
}

/// The two noise plans of an AVG under zCDP: `count_fraction * rho` to the count,
/// the rest to the centred sum, both discrete Gaussian.
pub fn avg_gaussian_plans(
    rho: f64,
    lo: i64,
    hi: i64,
    count_fraction: f64,
    parties: usize,
    tolerate: usize,
) -> Result<AvgPlans, DpError> {
    check_fraction(count_fraction)?;
    let sum = Mechanism::gaussian_for_rho(rho * (1.0 - count_fraction), centred_sum_sensitivity(lo, hi)? as f64)?;
    let count = Mechanism::gaussian_for_rho(rho * count_fraction, COUNT_SENSITIVITY as f64)?;
    Ok(AvgPlans {
        sum: NoisePlan::new(sum, parties, tolerate)?,
        count: NoisePlan::new(count, parties, tolerate)?,
        lo,
        hi,
    })
}

fn check_fraction(f: f64) -> Result<(), DpError> {
    if !(f > 0.0 && f < 1.0) {
        return Err(DpError::InvalidParameter(format!("count_fraction must be in (0, 1), got {f}")));
    }
    Ok(())
}

/// The noise plans of one AVG release and its bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AvgPlans {
    /// Noise of the centred sum `sum(2x - lo - hi)`.
    pub sum: NoisePlan,
    /// Noise of the count.
    pub count: NoisePlan,
    /// Lower bound of the column.
    pub lo: i64,
    /// Upper bound of the column.
    pub hi: i64,
}

impl AvgPlans {
    /// The mean from the opened noisy centred sum and noisy count, in units of `unit`.
    ///
    /// `value = clamp(m + S / (2 max(C, 1)), lo, hi)`. The noise scale and interval come
    /// from the delta method (first order in the noise over the count):
    /// `sd^2 = Var(S) / (2C)^2 + (value - m)^2 Var(C) / C^2`, and the half-width
    /// combines the two exact 95% half-widths the same way; the interval is clipped to
    /// `[lo, hi]`. It is an approximation, accurate when the count's noise is small
    /// relative to the count.
    pub fn estimate(&self, noisy_centred_sum: i64, noisy_count: i64, unit: f64) -> Estimate {
        let (lo, hi) = (self.lo as f64, self.hi as f64);
        let m = 0.5 * (lo + hi);
        let c = noisy_count.max(1) as f64;
        let raw = m + noisy_centred_sum as f64 / (2.0 * c);
        let value = raw.clamp(lo, hi);
        let (s_noise, c_noise) = (self.sum.total_noise(), self.count.total_noise());
        let d = value - m;
        let sd = (s_noise.variance() / (4.0 * c * c) + d * d * c_noise.variance() / (c * c)).sqrt();
        let ws = s_noise.ci95_halfwidth() as f64 / (2.0 * c);
        let wc = d.abs() * c_noise.ci95_halfwidth() as f64 / c;
        let w = (ws * ws + wc * wc).sqrt();
        Estimate {
            value: value * unit,
            noise_scale: sd * unit,
            ci95: ((value - w).max(lo) * unit, (value + w).min(hi) * unit),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn sensitivities() {
        assert_eq!(sum_sensitivity(0, 120).unwrap(), 120);
        assert_eq!(sum_sensitivity(-300, 120).unwrap(), 300);
        assert_eq!(centred_sum_sensitivity(0, 120).unwrap(), 120);
        assert_eq!(centred(130, 0, 120), 120);
        assert_eq!(centred(-5, 0, 120), -120);
        assert!(sum_sensitivity(5, 1).is_err());
        assert_eq!(clamp(7, 10, 0), 7);
    }

    #[test]
    fn count_estimate_interval() {
        let plan = NoisePlan::new(Mechanism::laplace_for(1.0, 1.0).unwrap(), 3, 2).unwrap();
        let e = estimate_count(100, &plan);
        assert_eq!(e.value, 100.0);
        assert!(e.ci95.0 < 100.0 && e.ci95.1 > 100.0);
        assert!((e.noise_scale - (3.0 * plan.target().variance()).sqrt()).abs() < 1e-12);
    }
}
