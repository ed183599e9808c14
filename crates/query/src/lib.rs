//! Concord query layer, free of I/O.
//!
//! Several parties (for example hospitals) each hold rows of the same public
//! table. An analyst asks one SQL aggregate question of the union of their
//! rows. This crate turns that question into something the parties can answer
//! without revealing their rows:
//!
//! * [`schema`]: the public table description ([`Schema::from_toml`]), with
//!   bounds on every numeric column and the declared values of every category
//!   column;
//! * [`parse`](mod@parse): the supported SQL subset ([`parse()`]), resolved
//!   against the schema into a [`Query`];
//! * [`plan`]: the *sufficient statistics* of the query ([`Query::plan`]):
//!   exact integer sums (counts, sums, sums of products, histogram bin
//!   counts) per public group, which each party computes on its own rows and
//!   which are then added up securely; [`choose_domain`] picks a field large
//!   enough that the pooled sums cannot wrap around;
//! * [`order`]: order statistics (`MIN`, `MAX`, `MEDIAN`,
//!   `PERCENTILE_CONT`) and the minimum group size, which need secure
//!   comparison: the public [`order::OrderPlan`] and the I/O-free search
//!   state machine and interpolation driven by `concord-analytics`;
//! * [`input_check`]: the feasible region of one party's statistics
//!   (counts in [0, max_rows], sums between count x bounds, ...) as linear
//!   forms, and the circuit that clamps them inside MPC (`concord-analytics`);
//! * [`finalize`](mod@finalize): the analyst's last step ([`finalize()`]),
//!   turning the pooled exact sums into the answer.
//!
//! Aggregates follow PostgreSQL's semantics (NULL inputs are ignored,
//! aggregates of no rows are NULL except `COUNT`, which is 0, two-argument
//! statistics use the rows where both arguments are non-null; see
//! <https://www.postgresql.org/docs/current/functions-aggregate.html>).
//! Derived statistics are computed from the exact sums in exact rational
//! arithmetic and only the final value is rounded to `f64`. `LINREG` (ordinary
//! least squares with intercept) solves the normal equations `X'X b = X'y`
//! exactly: the integer system is reduced by fraction-free Gaussian elimination
//! (E. H. Bareiss, "Sylvester's identity and multistep integer-preserving
//! Gaussian elimination", Mathematics of Computation 22 (1968) 565-578) and
//! back-substituted in exact rationals, so ill-conditioning of `X'X` does not
//! cost accuracy.

pub mod model;
pub use model::*;

mod decimal;
pub mod finalize;
pub mod input_check;
pub mod order;
pub mod parse;
pub mod plan;
pub mod privacy;
pub mod schema;

pub use finalize::{finalize, finalize_with};
pub use parse::parse;
pub use plan::choose_domain;
pub use privacy::{privacy_clause, PrivacyParam};

/// Everything that can go wrong in this crate. Every message is meant for the
/// analyst or the schema author: it names the offending column, SQL fragment
/// (with its position) or statistic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The schema file is not valid TOML (the message keeps toml's line and column).
    #[error("schema: {0}")]
    Toml(String),
    /// The schema is valid TOML but not a valid schema.
    #[error("schema: {0}")]
    Schema(String),
    /// The query is not valid SQL (the message keeps sqlparser's line and column).
    #[error("SQL syntax error: {0}")]
    Syntax(String),
    /// The query is valid SQL but wrong for this schema (unknown column or
    /// table, wrong argument, literal not representable, ...).
    #[error("{0}")]
    Invalid(String),
    /// The query uses SQL outside the supported subset, or an aggregate that
    /// is reserved but not available yet.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The pooled sums could exceed the largest available field.
    #[error("{0}")]
    Overflow(String),
    /// The totals passed to [`finalize()`] do not match the plan.
    #[error("{0}")]
    Totals(String),
    /// `LINREG`: `X'X` is singular.
    #[error("{0}")]
    Singular(String),
}
