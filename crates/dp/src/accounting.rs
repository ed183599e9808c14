//! Privacy accounting in zero-concentrated differential privacy (zCDP).
//!
//! zCDP (Bun and Steinke, "Concentrated Differential Privacy: Simplifications,
//! Extensions, and Lower Bounds", TCC 2016) composes by adding the `rho` of each
//! release, which makes a per-analyst budget a single number. The conversions:
//!
//! - `epsilon`-DP implies `epsilon^2 / 2`-zCDP (Bun–Steinke, Proposition 1.4);
//! - the discrete Gaussian `N_Z(0, sigma^2)` on a query of L2 sensitivity `d`
//!   is `d^2 / (2 sigma^2)`-zCDP (CKS20, Theorem 4);
//! - `rho`-zCDP implies `(rho + 2 sqrt(rho ln(1/delta)), delta)`-DP for every
//!   `delta > 0` (Bun–Steinke, Proposition 1.3), and the tighter
//!   `epsilon = inf_{alpha > 1} alpha rho + (ln(1/delta) + (alpha - 1) ln(alpha - 1) - alpha ln(alpha)) / (alpha - 1)`
//!   (CKS20, Corollary 13, solved for epsilon).

use crate::DpError;

/// `epsilon`-DP implies `epsilon^2 / 2`-zCDP.
pub fn rho_of_laplace(epsilon: f64) -> f64 {
    epsilon * epsilon / 2.0
}

/// The zCDP of the discrete Gaussian `N_Z(0, sigma2)` on a query of L2 sensitivity
/// `sensitivity`: `sensitivity^2 / (2 sigma2)` (CKS20, Theorem 4).
pub fn rho_of_gaussian(sensitivity: f64, sigma2: f64) -> f64 {
    sensitivity * sensitivity / (2.0 * sigma2)
}

fn check_conversion(rho: f64, delta: f64) -> Result<(), DpError> {
    if !(rho.is_finite() && rho >= 0.0) {
        return Err(DpError::InvalidParameter(format!("rho must be finite and >= 0, got {rho}")));
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(DpError::InvalidParameter(format!("delta must be in (0, 1), got {delta}")));
    }
    Ok(())
}

/// `rho`-zCDP implies `(epsilon, delta)`-DP with `epsilon = rho + 2 sqrt(rho ln(1/delta))`
/// (Bun–Steinke 2016, Proposition 1.3).
pub fn epsilon_delta_of_rho(rho: f64, delta: f64) -> Result<f64, DpError> {
    check_conversion(rho, delta)?;
    Ok(rho + 2.0 * (rho * (1.0 / delta).ln()).sqrt())
}

/// The tighter conversion of CKS20 (Corollary 13): the infimum over `alpha > 1` of
/// `alpha rho + (ln(1/delta) + (alpha - 1) ln(alpha - 1) - alpha ln(alpha)) / (alpha - 1)`,
/// minimised numerically (log-spaced grid then golden section); never above
/// [`epsilon_delta_of_rho`], and clamped at 0 below.
pub fn epsilon_delta_of_rho_tight(rho: f64, delta: f64) -> Result<f64, DpError> {
    let simple = epsilon_delta_of_rho(rho, delta)?;
    if rho == 0.0 {
        return Ok(0.0);
    }
    let log_inv_delta = (1.0 / delta).ln();
    // Parametrise alpha = 1 + e^u.
    let f = |u: f64| {
        let am1 = u.exp();
        let alpha = 1.0 + am1;
        alpha * rho + (log_inv_delta + am1 * u - alpha * alpha.ln()) / am1
    };
    let (lo, hi, steps) = (-20.0f64, 25.0f64, 450);
    let mut best_u = lo;
    let mut best = f64::INFINITY;
    for i in 0..=steps {
        let u = lo + (hi - lo) * i as f64 / steps as f64;
        let v = f(u);
        if v < best {
            best = v;
            best_u = u;
        }
    }
    let step = (hi - lo) / steps as f64;
    let (mut a, mut b) = (best_u - step, best_u + step);
    let g = 0.5 * (5f64.sqrt() - 1.0);
    for _ in 0..80 {
        let c = b - g * (b - a);
        let d = a + g * (b - a);
        if f(c) < f(d) {
            b = d;
        } else {
            a = c;
        }
    }
    let refined = f(0.5 * (a + b));
    Ok(best.min(refined).min(simple).max(0.0))
}

/// A zCDP budget or cost: a finite, non-negative `rho`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Rho(f64);

impl Rho {
    /// Zero.
    pub const ZERO: Rho = Rho(0.0);

    /// A checked `rho` (finite, >= 0; NaN rejected).
    pub fn new(rho: f64) -> Result<Rho, DpError> {
        if rho.is_finite() && rho >= 0.0 {
            Ok(Rho(rho))
        } else {
            Err(DpError::InvalidParameter(format!("rho must be finite and >= 0, got {rho}")))
        }
    }

    /// The cost of an `epsilon`-DP release: `epsilon^2 / 2`.
    pub fn of_epsilon(epsilon: f64) -> Result<Rho, DpError> {
        if !(epsilon.is_finite() && epsilon >= 0.0) {
            return Err(DpError::InvalidParameter(format!("epsilon must be finite and >= 0, got {epsilon}")));
        }
        Rho::new(rho_of_laplace(epsilon))
    }

    /// The value.
    pub fn value(self) -> f64 {
        self.0
    }

    /// Composition: `self + other`, an error if the sum overflows to infinity.
    pub fn checked_add(self, other: Rho) -> Result<Rho, DpError> {
        Rho::new(self.0 + other.0)
    }

    /// Spending `cost` from the budget `self`: `self - cost`, or
    /// [`DpError::BudgetExceeded`] if that would go below zero. No tolerance is applied:
    /// a spend that exceeds the budget by one rounding error is refused.
    pub fn checked_sub(self, cost: Rho) -> Result<Rho, DpError> {
        if cost.0 > self.0 {
            return Err(DpError::BudgetExceeded { requested: cost.0, remaining: self.0 });
        }
        Rho::new(self.0 - cost.0)
    }

    /// The `(epsilon, delta)`-DP this budget implies (tight conversion).
    pub fn epsilon_at(self, delta: f64) -> Result<f64, DpError> {
        epsilon_delta_of_rho_tight(self.0, delta)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(rho_of_laplace(1.0), 0.5);
        assert_eq!(rho_of_gaussian(1.0, 2.0), 0.25);
        let simple = epsilon_delta_of_rho(0.5, 1e-6).unwrap();
        assert!((simple - (0.5 + 2.0 * (0.5 * 1e6f64.ln()).sqrt())).abs() < 1e-12);
        let tight = epsilon_delta_of_rho_tight(0.5, 1e-6).unwrap();
        assert!(tight < simple && tight > 0.5 * simple, "{tight} {simple}");
    }

    #[test]
    fn budget_refuses_overspend() {
        let b = Rho::new(1.0).unwrap();
        let left = b.checked_sub(Rho::new(0.25).unwrap()).unwrap();
        assert_eq!(left.value(), 0.75);
        assert!(matches!(left.checked_sub(Rho::new(0.8).unwrap()), Err(DpError::BudgetExceeded { .. })));
        assert!(Rho::new(f64::NAN).is_err());
        assert!(Rho::new(-0.1).is_err());
        assert!(Rho::new(f64::MAX).unwrap().checked_add(Rho::new(f64::MAX).unwrap()).is_err());
    }
}
