//! # concord-dp: differential privacy for Concord's released aggregates
//!
//! The pure core (no I/O, no networking) of differentially private answers:
//!
//! - [`mechanism`]: the discrete Laplace and discrete Gaussian distributions with
//!   exact samplers (Canonne, Kamath and Steinke, "The Discrete Gaussian for
//!   Differential Privacy", NeurIPS 2020, arXiv:2004.00010: "CKS20"; the
//!   implementation is the `prio` crate's, drawing from the RNG passed in), their
//!   pmf, exact variance and exact 95% intervals, and their calibration from
//!   privacy parameters.
//! - [`accounting`]: zCDP (Bun and Steinke, TCC 2016) budgets as [`Rho`], with
//!   conversions from pure DP and to `(epsilon, delta)`-DP (CKS20, Corollary 13).
//! - [`distributed`]: noise shares drawn by each party and added to its share of
//!   the aggregate before opening, so nobody sees the un-noised value; each party
//!   draws a full sample, which keeps the centralised guarantee against any
//!   `t < n` colluders (post-processing of one honest party's sample) at `n` times
//!   the variance. Kairouz, Liu and Steinke, ICML 2021 (arXiv:2102.06387) is the
//!   reference for the cheaper split discrete Gaussian, not used here.
//! - [`estimate`]: sensitivities from declared bounds (add/remove-one-row
//!   neighbours), clamping, and [`Estimate`]s (value, noise standard deviation,
//!   95% interval) for COUNT, SUM, AVG, HISTOGRAM and GROUP BY cells.
//!
//! All randomness comes from a `rand_core::RngCore` passed in by the caller.

pub mod accounting;
pub mod distributed;
pub mod estimate;
pub mod mechanism;

pub use accounting::{epsilon_delta_of_rho, epsilon_delta_of_rho_tight, rho_of_gaussian, rho_of_laplace, Rho};
pub use distributed::{noise_share, NoisePlan, NoiseSum};
pub use estimate::{clamp, Estimate};
pub use mechanism::{Mechanism, Sampler};

/// Errors of the DP core.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DpError {
    /// A privacy or noise parameter out of its domain.
    #[error("invalid DP parameter: {0}")]
    InvalidParameter(String),
    /// A spend larger than the remaining budget.
    #[error("privacy budget exceeded: requested rho {requested}, remaining {remaining}")]
    BudgetExceeded {
        /// The rho asked for.
        requested: f64,
        /// The rho left.
        remaining: f64,
    },
    /// A value that does not fit its integer type.
    #[error("overflow: {0}")]
    Overflow(String),
}
