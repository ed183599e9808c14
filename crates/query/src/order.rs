//! Order statistics (`MIN`, `MAX`, `MEDIAN`, `PERCENTILE_CONT`) and the
//! minimum group size: the public plan and the I/O-free parts of the
//! interactive protocol (the search state machine, the linear forms whose
//! signs are tested, the final interpolation), driven over MPC by
//! `concord-analytics`.
//!
//! # Domain search ([`OrderMethod::DomainSearch`])
//!
//! Values are integers after the schema's fixed-point encoding (a decimal
//! with scale s is value * 10^s) with public bounds [lo, hi]. For a group,
//! let N be the pooled number of non-null values and C(v) the pooled number
//! of values <= v (each party counts its own, the counts are secret-shared
//! and added). PostgreSQL's `percentile_cont(p)` over the sorted values
//! x_0 <= ... <= x_{N-1} is, with h = p (N - 1), k = floor(h),
//! x_k + (h - k)(x_{k+1} - x_k)
//! (<https://www.postgresql.org/docs/current/functions-aggregate.html>).
//! With p = P/D exact:
//!
//! - x_k is the smallest v with C(v) >= k + 1, i.e. D C(v) > P (N - 1):
//!   [`Target::Lower`], test bit LTZ(P (N - 1) - D C(v));
//! - x_{k+1} is the smallest v with C(v) >= k + 2, i.e. D (C(v) - 1) > P (N - 1):
//!   [`Target::Upper`], test bit LTZ(P (N - 1) + D - D C(v)) (needed only when
//!   0 < p < 1; when no such v exists, k = N - 1, the search ends at hi and the
//!   weight of x_{k+1} is 0);
//! - h - k = r / D with r = P (N - 1) - D k, which is not a linear function
//!   of the shares; but when x_k < x_{k+1} exactly k + 1 values are <= x_k,
//!   so k = C(x_k) - 1 and **r = P (N - 1) + D - D C(x_k)** is linear
//!   (the `Upper` form at v = x_k): it is computed from one more round of
//!   counts and opened. When x_k = x_{k+1} the answer is x_k and r is not
//!   computed.
//!
//! Each test is a binary search over [lo, hi]: ceil(log2(hi - lo + 1))
//! steps ([`search_steps`]), the candidate is the midpoint of the interval
//! still possible ([`Search`]); the opened bit at candidate v is
//! [v >= x_k] (or [v >= x_{k+1}]), a function of the result alone. MIN is
//! p = 0 and MAX p = 1 ([`crate::Aggregate::order_stat`]): one lower search.
//!
//! # Minimum group size
//!
//! For each group, the secret COUNT(*) c is compared with k:
//! [c >= k] = 1 - LTZ(c - k), opened; the aggregates of a group below k are
//! neither searched nor sent to the analyst.
//!
//! LTZ is Catrina and de Hoogh's (SCN 2010) protocol in
//! `concord_engine::compare::less_than_zero`, over GF(2^127-1) with
//! statistical parameter kappa = 40: its bit length must bound the tested
//! values ([`OrderPlan::search_bits`], [`OrderPlan::count_bits`]) and
//! bits + kappa + 1 < 127.

use num_bigint::BigInt;
use num_rational::BigRational;

use crate::decimal::format_scaled;
use crate::{ColumnId, ColumnType, Fraction, OrderStat, Query, QueryError, Schema, StatsPlan};

/// Largest denominator of p in `PERCENTILE_CONT(p)` (p has at most 6
/// digits after the point).
pub const MAX_DENOMINATOR: u64 = 1_000_000;

/// Statistical security parameter of the comparisons (GF(2^127-1)).
pub const KAPPA: usize = 40;

/// Bits of the field GF(2^127-1) in which the comparisons run.
const FIELD_BITS: usize = 127;

/// How order statistics are computed. Only the domain search exists; an
/// oblivious sort for small inputs may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderMethod {
    /// Binary search over the public value domain with secret counts.
    DomainSearch,
}

/// A numeric column searched by the order statistics, with its public
/// scaled bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderColumn {
    /// The column.
    pub col: ColumnId,
    /// Smallest declared value (scaled).
    pub lo: i64,
    /// Largest declared value (scaled).
    pub hi: i64,
}

/// The public plan of the interactive phase (identical at every party).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderPlan {
    /// The method.
    pub method: OrderMethod,
    /// Number of groups (as in [`StatsPlan::groups`]).
    pub groups: usize,
    /// Number of sufficient statistics per group in the secure-sum vector
    /// (`StatsPlan::stats.len()`), so that suppressed groups can be blanked.
    pub sums_per_group: usize,
    /// The distinct order statistics of the query, sorted.
    pub stats: Vec<OrderStat>,
    /// The distinct columns of `stats`, sorted; the data layer provides
    /// each party's sorted values per group and column in this order.
    pub columns: Vec<OrderColumn>,
    /// Minimum group size k (`None`: no suppression).
    pub min_group_size: Option<u64>,
    /// LTZ bit length of the search tests and the remainder.
    pub search_bits: usize,
    /// LTZ bit length of [COUNT(*) >= k] and [N > 0].
    pub count_bits: usize,
}

/// Bit length of `x` (0 for 0).
fn bit_len(x: u128) -> usize {
    (128 - x.leading_zeros()) as usize
}

/// Steps of a binary search over [lo, hi]: ceil(log2(hi - lo + 1)) (0 if lo >= hi).
pub fn search_steps(lo: i64, hi: i64) -> u32 {
    let size = (i128::from(hi) - i128::from(lo) + 1).max(1) as u128;
    if size <= 1 {
        0
    } else {
        128 - (size - 1).leading_zeros()
    }
}

impl OrderPlan {
    /// Index of a column in [`OrderPlan::columns`].
    pub fn column_index(&self, col: ColumnId) -> Option<usize> {
        self.columns.iter().position(|c| c.col == col)
    }

    /// Lockstep steps of the searches: the largest [`search_steps`] of a
    /// searched column (0 when there are no order statistics).
    pub fn steps(&self) -> u32 {
        self.columns.iter().map(|c| search_steps(c.lo, c.hi)).max().unwrap_or(0)
    }

    /// Whether the query has order statistics.
    pub fn has_order_stats(&self) -> bool {
        !self.stats.is_empty()
    }

    /// One line for the run output, e.g. `order statistics: domain search
    /// over [18, 100] (age), 7 steps`.
    pub fn describe(&self, schema: &Schema) -> String {
        let mut parts = Vec::new();
        if self.has_order_stats() {
            let cols: Vec<String> = self
                .columns
                .iter()
                .map(|c| {
                    let (name, scale) = schema.columns.get(c.col).map_or(("?", 0), |d| (d.name.as_str(), d.ty.scale()));
                    format!(
                        "[{}, {}] ({name})",
                        format_scaled(i128::from(c.lo), scale),
                        format_scaled(i128::from(c.hi), scale)
                    )
                })
                .collect();
            let method = match self.method {
                OrderMethod::DomainSearch => "domain search",
            };
            parts.push(format!("order statistics: {method} over {}, {} steps", cols.join(", "), self.steps()));
        }
        if let Some(k) = self.min_group_size {
            parts.push(format!("minimum group size {k} (checked in MPC)"));
        }
        parts.join("; ")
    }
}

impl Query {
    /// Whether any aggregate is an order statistic.
    pub fn has_order_stats(&self) -> bool {
        self.select.iter().any(|(_, a)| a.order_stat().is_some())
    }

    /// The plan of the interactive phase, or `None` when the query needs
    /// none (no order statistic and no minimum group size; `Some(0)` is
    /// off). `parties` bounds the pooled counts with the schema's
    /// `max_rows`; refuses when the tested values cannot fit the
    /// comparison's bit length in GF(2^127-1) with kappa = [`KAPPA`].
    pub fn order_plan(
        &self,
        schema: &Schema,
        plan: &StatsPlan,
        parties: usize,
        min_group_size: Option<u64>,
    ) -> Result<Option<OrderPlan>, QueryError> {
        let min_group_size = min_group_size.filter(|&k| k > 0);
        let mut stats: Vec<OrderStat> = self.select.iter().filter_map(|(_, a)| a.order_stat()).collect();
        stats.sort_unstable();
        stats.dedup();
        if stats.is_empty() && min_group_size.is_none() {
            return Ok(None);
        }
        let mut columns: Vec<OrderColumn> = Vec::new();
        for s in &stats {
            if columns.iter().any(|c| c.col == s.col) {
                continue;
            }
            let def = schema
                .columns
                .get(s.col)
                .ok_or_else(|| QueryError::Invalid(format!("order statistic of unknown column #{}", s.col)))?;
            let (lo, hi) = match def.ty {
                ColumnType::Int { min, max } | ColumnType::Decimal { min, max, .. } => (min, max),
                ColumnType::Category { .. } => {
                    return Err(QueryError::Invalid(format!(
                        "order statistics need an int or decimal column; {} is a category",
                        def.name
                    )))
                }
            };
            columns.push(OrderColumn { col: s.col, lo, hi });
        }
        columns.sort_by_key(|c| c.col);
        let pooled_rows = u128::from(schema.max_rows).saturating_mul(parties as u128);
        let too_big = |what: &str, bits: usize| {
            QueryError::Overflow(format!(
                "{what} needs {bits}-bit secure comparisons, more than the {} bits GF(2^127-1) allows with \
                 kappa = {KAPPA}; the bound comes from {parties} parties x max_rows {}: lower max_rows in the schema",
                FIELD_BITS - KAPPA - 2,
                schema.max_rows
            ))
        };
        let max_den = stats.iter().map(|s| s.p.den()).max().unwrap_or(1);
        // |P (N-1) + D - D C| <= D (N_max + 1).
        let search_bound = u128::from(max_den).saturating_mul(pooled_rows.saturating_add(1));
        let search_bits = (bit_len(search_bound) + 1).max(2);
        // |c - k| <= max(N_max, k), |N| <= N_max.
        let count_bound = pooled_rows.max(u128::from(min_group_size.unwrap_or(0)));
        let count_bits = (bit_len(count_bound) + 1).max(2);
        let limit = FIELD_BITS - KAPPA - 2;
        if stats.is_empty() {
            // No searches.
        } else if search_bits > limit || search_bound == u128::MAX {
            return Err(too_big("the order statistics' search", search_bits));
        }
        if count_bits > limit || count_bound == u128::MAX {
            return Err(too_big("the group size check", count_bits));
        }
        Ok(Some(OrderPlan {
            method: OrderMethod::DomainSearch,
            groups: plan.groups.len(),
            sums_per_group: plan.stats.len(),
            stats,
            columns,
            min_group_size,
            search_bits,
            count_bits,
        }))
    }
}

/// Which order statistic a search finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// x_k, k = floor(p (N - 1)).
    Lower,
    /// x_{k+1}.
    Upper,
}

/// The public linear form a = c_n N + c_c C + c_0 whose sign is tested
/// (bit = [a < 0]), as `(c_n, c_c, c_0)`:
/// `Lower`: P (N - 1) - D C; `Upper`: P (N - 1) + D - D C.
/// The `Upper` form at C = C(x_k) is also the remainder r (module docs).
pub fn test_form(p: Fraction, target: Target) -> (i128, i128, i128) {
    let (big_p, big_d) = (i128::from(p.num()), i128::from(p.den()));
    let upper = if target == Target::Upper { big_d } else { 0 };
    (big_p, -big_d, upper - big_p)
}

/// Whether a fraction needs the upper search (0 < p < 1).
pub fn needs_upper(p: Fraction) -> bool {
    p.num() != 0 && p.num() != p.den()
}

/// One binary search over [lo, hi]: the result lies in [low, high].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Search {
    low: i64,
    high: i64,
}

impl Search {
    /// A search over the whole declared domain.
    pub fn new(lo: i64, hi: i64) -> Search {
        Search { low: lo, high: hi.max(lo) }
    }

    /// The value to test next: the midpoint floor((low + high) / 2); when
    /// done, the result (a padding candidate whose bit is ignored).
    pub fn candidate(&self) -> i64 {
        let mid = (i128::from(self.low) + i128::from(self.high)).div_euclid(2);
        i64::try_from(mid).unwrap_or(self.low)
    }

    /// Take the opened bit [test holds at the candidate]: the result is
    /// then at most the candidate, else above it. Ignored when done.
    pub fn update(&mut self, holds: bool) {
        if self.done() {
            return;
        }
        let mid = self.candidate();
        if holds {
            self.high = mid;
        } else {
            self.low = mid.saturating_add(1).min(self.high);
        }
    }

    /// Whether a single value is left.
    pub fn done(&self) -> bool {
        self.low >= self.high
    }

    /// The result once done.
    pub fn result(&self) -> Option<i64> {
        self.done().then_some(self.low)
    }
}

/// What the interactive phase opened for one order statistic of one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderValue {
    /// x_k (scaled).
    pub lower: i64,
    /// x_{k+1} (scaled); equal to `lower` when not searched (p = 0 or 1).
    pub upper: i64,
    /// r, with h - k = r / D; 0 unless `lower < upper`.
    pub remainder: u64,
}

impl OrderValue {
    /// The exact answer in scaled units: x_k + r (x_{k+1} - x_k) / D.
    pub fn interpolate(&self, p: Fraction) -> BigRational {
        let lower = BigRational::from_integer(BigInt::from(self.lower));
        if self.upper == self.lower || self.remainder == 0 {
            return lower;
        }
        let delta = BigInt::from(self.upper) - BigInt::from(self.lower);
        lower + BigRational::new(BigInt::from(self.remainder) * delta, BigInt::from(p.den()))
    }
}

/// Everything the interactive phase made public (known to every party),
/// for [`crate::finalize::finalize_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderResults {
    /// The order statistics, as in [`OrderPlan::stats`].
    pub stats: Vec<OrderStat>,
    /// The minimum group size applied, if any.
    pub min_group_size: Option<u64>,
    /// Per group: whether it was suppressed.
    pub suppressed: Vec<bool>,
    /// Per group and statistic (`g * stats.len() + s`): `None` when the
    /// group has no non-null value (NULL) or is suppressed.
    pub values: Vec<Option<OrderValue>>,
}

/// PostgreSQL's `percentile_cont(p)` over sorted values, exact (the
/// plaintext reference): `None` for no values.
pub fn percentile_cont_sorted(sorted: &[i64], p: Fraction) -> Option<BigRational> {
    let n = sorted.len() as u128;
    let last = n.checked_sub(1)?;
    let scaled = u128::from(p.num()) * last;
    let k = usize::try_from(scaled / u128::from(p.den())).ok()?;
    let r = scaled % u128::from(p.den());
    let xk = BigInt::from(*sorted.get(k)?);
    if r == 0 {
        return Some(BigRational::from_integer(xk));
    }
    let xk1 = BigInt::from(*sorted.get(k + 1)?);
    Some(BigRational::from_integer(xk.clone()) + BigRational::new(BigInt::from(r) * (xk1 - xk), BigInt::from(p.den())))
}

/// The protocol of the module docs run in the clear on the parties' sorted
/// values (the same state machine, forms and interpolation that the MPC
/// driver uses, with the signs computed in plaintext): for tests and as an
/// executable specification. `None` when no party has a value.
pub fn search_in_clear(parties: &[Vec<i64>], lo: i64, hi: i64, p: Fraction) -> Option<OrderValue> {
    let count = |v: i64| -> i128 { parties.iter().map(|s| s.partition_point(|x| *x <= v) as i128).sum() };
    let n: i128 = parties.iter().map(|s| s.len() as i128).sum();
    if n == 0 {
        return None;
    }
    let sign = |form: (i128, i128, i128), c: i128| form.0 * n + form.1 * c + form.2;
    let mut searches = vec![(Search::new(lo, hi), Target::Lower)];
    if needs_upper(p) {
        searches.push((Search::new(lo, hi), Target::Upper));
    }
    for _ in 0..search_steps(lo, hi) {
        for (s, t) in searches.iter_mut() {
            let v = s.candidate();
            s.update(sign(test_form(p, *t), count(v)) < 0);
        }
    }
    let lower = searches.first()?.0.result()?;
    let upper = match searches.get(1) {
        Some((s, _)) => s.result()?,
        None => lower,
    };
    let remainder = if lower < upper { sign(test_form(p, Target::Upper), count(lower)) } else { 0 };
    Some(OrderValue { lower, upper, remainder: u64::try_from(remainder).ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        assert_eq!(search_steps(0, 0), 0);
        assert_eq!(search_steps(0, 1), 1);
        assert_eq!(search_steps(0, 2), 2);
        assert_eq!(search_steps(0, 3), 2);
        assert_eq!(search_steps(18, 100), 7);
        assert_eq!(search_steps(i64::MIN, i64::MAX), 64);
    }

    #[test]
    fn fractions_reduce_and_bound() {
        assert_eq!(Fraction::new(500_000, 1_000_000), Fraction::new(1, 2));
        assert_eq!(Fraction::new(3, 2), None);
        assert_eq!(Fraction::new(1, 0), None);
        assert_eq!(Fraction::new(1, 1_000_001), None);
        assert_eq!(Fraction::new(0, 7).map(|f| (f.num(), f.den())), Some((0, 1)));
    }

    #[test]
    fn extreme_domain_search() {
        let p = Fraction::new(1, 2).unwrap();
        let v = search_in_clear(&[vec![i64::MIN, 5], vec![i64::MAX]], i64::MIN, i64::MAX, p);
        assert_eq!(v.map(|v| v.lower), Some(5));
    }
}
