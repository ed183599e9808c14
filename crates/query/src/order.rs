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

/// How order statistics are computed (chosen by [`OrderPlan::choose_method`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderMethod {
    /// Binary search over the public value domain with secret counts
    /// (Shamir, any n >= 3).
    DomainSearch,
    /// Oblivious sort of every party's values padded to `max_rows`, then
    /// oblivious selection (replicated engine, exactly 3 parties; see
    /// [`SortLayout`]).
    ObliviousSort {
        /// The schema's per-party row bound: each party pads to it.
        max_rows: u64,
    },
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
            match self.method {
                OrderMethod::DomainSearch => parts.push(format!(
                    "order statistics: domain search over {}, {} steps",
                    cols.join(", "),
                    self.steps()
                )),
                OrderMethod::ObliviousSort { max_rows } => {
                    let cells = self.groups.saturating_mul(self.columns.len());
                    let per = if cells > 1 { format!("{cells} x ") } else { String::new() };
                    parts.push(format!(
                        "order statistics: oblivious sort of {per}3 x {max_rows} padded values (values in {})",
                        cols.join(", ")
                    ));
                }
            }
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

// ---------- The oblivious sort ([`OrderMethod::ObliviousSort`]) ----------
//
// Each party pads its values of every (group, column) cell to `max_rows`
// with dummies and inputs one sort key per slot (it knows which of its slots
// are real): key = cell 2^(B+1) + (1 - valid) 2^B + (v - lo), so one sort of
// every cell's keys leaves cell c in positions [c M, (c + 1) M) (M = 3
// max_rows) with its N real values first, ascending. Then, with p = P/D,
// k = sum_{j=1}^{M-1} [j D <= P (N - 1)] (= floor(p (N - 1)), one batch of
// comparisons with public j D; k = P (N - 1) when D = 1), r = P (N - 1) - k D,
// x_k = sum_i [i = k] x_i, x_{k+1} = sum_i [i = k + 1] x_i, and the answer
// times D, D x_k + r (x_{k+1} - x_k), is exact. When k = N - 1, r = 0, so
// x_{k+1} (a dummy or nothing) has weight 0. [`sort_select_in_clear`] is
// the same computation in plaintext.

/// Largest total padded size (3 x `max_rows` x groups x columns) for which
/// the planner considers the oblivious sort on its own (`auto`).
pub const SORT_AUTO_MAX_VALUES: u64 = 20_000;

/// Largest total padded size for which the oblivious sort can be forced.
pub const SORT_MAX_VALUES: u64 = 1 << 20;

/// Seconds per communication round assumed by the cost estimates (a LAN).
pub const ROUND_SECONDS: f64 = 1e-3;

/// Bytes per second per party assumed by the cost estimates.
pub const BYTES_PER_SECOND: f64 = 1e8;

/// The method asked for (`concord run --order-method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MethodChoice {
    /// The oblivious sort when it is possible, small (at most
    /// [`SORT_AUTO_MAX_VALUES`] padded values) and estimated cheaper; else
    /// the domain search.
    #[default]
    Auto,
    /// Always the domain search.
    Search,
    /// The oblivious sort, or an error saying why it is impossible.
    Sort,
}

/// Public sizes and bit lengths of the oblivious sort (identical at every party).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SortLayout {
    /// Slots per party and cell (the schema's `max_rows`).
    pub rows: usize,
    /// Padded values per cell, M = 3 `rows`.
    pub padded: usize,
    /// Cells: groups x searched columns.
    pub cells: usize,
    /// B: every v - lo is below 2^B.
    pub value_bits: u32,
    /// Signed bit length of the keys, for the sort.
    pub sort_bits: u32,
    /// Signed bit length of P (N - 1) - j D.
    pub rank_bits: u32,
    /// Signed bit length of k - i and of N - 1.
    pub index_bits: u32,
    /// Signed bit length of COUNT(*) - k_min (minimum group size).
    pub gate_bits: u32,
}

impl SortLayout {
    /// Total padded values sorted: cells x M.
    pub fn total(&self) -> usize {
        self.cells.saturating_mul(self.padded)
    }

    /// The lowest key of a cell, c 2^(B+1).
    pub fn cell_base(&self, cell: usize) -> u64 {
        (cell as u64) << (self.value_bits + 1)
    }

    /// The sort key of a slot: `Some(v - lo)` for a real value, `None` for a dummy.
    pub fn key(&self, cell: usize, offset: Option<u64>) -> u64 {
        self.cell_base(cell).wrapping_add(offset.unwrap_or(1u64 << self.value_bits))
    }
}

/// Estimated rounds and bytes sent per party.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CostEstimate {
    /// Communication rounds.
    pub rounds: u64,
    /// Bytes sent per party.
    pub bytes: u64,
}

impl CostEstimate {
    /// rounds x [`ROUND_SECONDS`] + bytes / [`BYTES_PER_SECOND`].
    pub fn seconds(&self) -> f64 {
        self.rounds as f64 * ROUND_SECONDS + self.bytes as f64 / BYTES_PER_SECOND
    }
}

fn ceil_log2(m: u128) -> u32 {
    if m <= 1 {
        0
    } else {
        128 - (m - 1).leading_zeros()
    }
}

/// Rounds of a replicated comparison (sign) on k bits.
fn rep3_msb_rounds(k: u32) -> u64 {
    2 + u64::from(ceil_log2(u128::from(k.saturating_sub(2))))
}

/// Rounds of a Shamir LTZ on k bits (n = 3, t = 1, kappa = 40).
fn shamir_ltz_rounds(k: usize) -> u64 {
    5 + u64::from(ceil_log2(k.saturating_sub(1) as u128))
}

/// Field elements (16 bytes) a resharing party sends per Shamir LTZ on k bits.
fn shamir_ltz_elements(k: usize) -> u64 {
    ((k + KAPPA) * 3 + 1 + 2 * k.saturating_sub(2)) as u64
}

impl OrderPlan {
    /// The layout of the oblivious sort for `parties` parties with the
    /// schema's `max_rows`, or why it is impossible.
    pub fn sort_layout(&self, parties: usize, max_rows: u64) -> Result<SortLayout, String> {
        if parties != 3 {
            return Err(format!("it runs on the three-party replicated engine, and this query has {parties} parties"));
        }
        if !self.has_order_stats() {
            return Err("the query has no MIN, MAX, MEDIAN or PERCENTILE_CONT to sort for".into());
        }
        let cells = self.groups.saturating_mul(self.columns.len());
        let total = u128::from(max_rows).saturating_mul(3).saturating_mul(cells as u128);
        if total > u128::from(SORT_MAX_VALUES) {
            return Err(format!(
                "it would sort {total} padded values (3 parties x max_rows {max_rows} x {cells} groups and columns), \
                 more than the {SORT_MAX_VALUES} it accepts; lower max_rows in the schema"
            ));
        }
        let rows = usize::try_from(max_rows).map_err(|_| format!("max_rows {max_rows} does not fit this machine"))?;
        let padded = rows.saturating_mul(3);
        let width = self.columns.iter().map(|c| i128::from(c.hi) - i128::from(c.lo)).max().unwrap_or(0).max(0);
        let value_bits = bit_len(width as u128) as u32;
        let key_len = bit_len((cells as u128) << (value_bits + 1)) as u32;
        let sort_bits = key_len + 1;
        let shift = ceil_log2(total);
        if sort_bits + shift > 62 {
            return Err(format!(
                "its keys need {} bits (value range {width}, {cells} cells, {total} positions); at most 62 are supported",
                sort_bits + shift
            ));
        }
        let max_den = self.stats.iter().map(|s| s.p.den()).max().unwrap_or(1);
        let rank_bits = bit_len(u128::from(max_den) * padded as u128) as u32 + 1;
        let magnitude = self.columns.iter().map(|c| c.lo.unsigned_abs().max(c.hi.unsigned_abs())).max().unwrap_or(0);
        if rank_bits > 62 || u128::from(max_den) * u128::from(magnitude) >= 1u128 << 62 {
            return Err(format!(
                "the answers times the denominator {max_den} of p would not fit 62 bits (values up to {magnitude})"
            ));
        }
        let index_bits = bit_len(padded as u128) as u32 + 1;
        let gate = u128::from(self.min_group_size.unwrap_or(0)).max(padded as u128);
        let gate_bits = bit_len(gate) as u32 + 1;
        if gate_bits > 62 {
            return Err(format!("the minimum group size {gate} needs {gate_bits}-bit comparisons; at most 62"));
        }
        Ok(SortLayout { rows, padded, cells, value_bits, sort_bits, rank_bits, index_bits, gate_bits })
    }

    /// Estimated cost of the oblivious sort (replicated engine, Z/2^64):
    /// input, gate, shuffle, about 2.5 log2(n) quicksort levels (measured:
    /// 16 levels for n = 300, 32 for n = 3000) of one
    /// comparison and one opening with about 1.39 n log2(n) comparisons of
    /// 4 ANDs per key bit, the rank comparisons, the selections and the
    /// final multiplication and opening.
    pub fn sort_cost(&self, l: &SortLayout) -> CostEstimate {
        let n = l.total().max(2) as f64;
        let lg = n.log2();
        let key = l.sort_bits + ceil_log2(l.total() as u128) + 1;
        let levels = (2.5 * lg).ceil() as u64;
        let comparisons = (1.39 * n * lg) as u64;
        let jobs = (self.groups * self.stats.len()) as u64;
        let m = l.padded as u64;
        let gate = u64::from(self.min_group_size.is_some());
        let rounds = 3
            + gate * (rep3_msb_rounds(l.gate_bits + 1) + 1)
            + 3
            + levels * (rep3_msb_rounds(key) + 1)
            + rep3_msb_rounds(l.rank_bits)
            + 1
            + 1
            + u64::from(ceil_log2(u128::from(l.index_bits)))
            + 4;
        let bytes = 8 * n as u64 * 3
            + comparisons * u64::from(4 * key) / 8
            + jobs * m * (u64::from(4 * l.rank_bits) / 8 + 8)
            + 2 * jobs * m * (u64::from(l.index_bits) / 8 + 16);
        CostEstimate { rounds, bytes }
    }

    /// Estimated cost of the domain search (Shamir over GF(2^127-1), n = 3,
    /// t = 1): the input, the count comparisons and openings, then per step
    /// one input, one LTZ and one opening, then the remainder.
    pub fn search_cost(&self) -> CostEstimate {
        let steps = u64::from(self.steps());
        let cells = (self.groups * self.columns.len()) as u64;
        let jobs: u64 = self.groups as u64 * self.stats.iter().map(|s| 1 + u64::from(needs_upper(s.p))).sum::<u64>();
        let gate = if self.min_group_size.is_some() { self.groups as u64 } else { 0 };
        let rounds = 1 + shamir_ltz_rounds(self.count_bits) + 2 + steps * (2 + shamir_ltz_rounds(self.search_bits)) + 2;
        let bytes = 16
            * ((cells + gate) * shamir_ltz_elements(self.count_bits)
                + jobs * steps * (shamir_ltz_elements(self.search_bits) + 3));
        CostEstimate { rounds, bytes }
    }

    /// Set [`OrderPlan::method`] (identically at every party): the domain
    /// search, the oblivious sort, or with [`MethodChoice::Auto`] the sort
    /// when it is possible, at most [`SORT_AUTO_MAX_VALUES`] padded values
    /// and estimated cheaper than the search. `Sort` when impossible is an
    /// error naming the reason.
    pub fn choose_method(&mut self, choice: MethodChoice, parties: usize, max_rows: u64) -> Result<(), QueryError> {
        self.method = OrderMethod::DomainSearch;
        match choice {
            MethodChoice::Search => {}
            MethodChoice::Sort => {
                self.sort_layout(parties, max_rows)
                    .map_err(|why| QueryError::Invalid(format!("the oblivious sort is impossible: {why}")))?;
                self.method = OrderMethod::ObliviousSort { max_rows };
            }
            MethodChoice::Auto => {
                if let Ok(l) = self.sort_layout(parties, max_rows) {
                    if l.total() as u64 <= SORT_AUTO_MAX_VALUES
                        && self.sort_cost(&l).seconds() < self.search_cost().seconds()
                    {
                        self.method = OrderMethod::ObliviousSort { max_rows };
                    }
                }
            }
        }
        Ok(())
    }
}

/// The exact answer from the opened D x answer of the sort:
/// `lower` = floor(a / D), `upper` = `lower` + 1 and `remainder` = a mod D
/// when D does not divide a, so that [`OrderValue::interpolate`] gives a / D.
pub fn sort_answer(times_den: i64, den: u64) -> OrderValue {
    let d = i128::from(den.max(1));
    let a = i128::from(times_den);
    let lower = a.div_euclid(d);
    let remainder = a.rem_euclid(d);
    let lower64 = i64::try_from(lower).unwrap_or(if lower < 0 { i64::MIN } else { i64::MAX });
    let upper = if remainder == 0 { lower64 } else { lower64.saturating_add(1) };
    OrderValue { lower: lower64, upper, remainder: remainder as u64 }
}

/// The oblivious sort's selection (module comment above) in plaintext on
/// the parties' values of one cell padded to `rows` each: the opened
/// D x answer, `None` when N = 0. For tests and as an executable specification.
pub fn sort_select_in_clear(parties: &[Vec<i64>], rows: usize, p: Fraction) -> Option<i128> {
    let (big_p, big_d) = (i128::from(p.num()), i128::from(p.den()));
    let mut slots: Vec<(bool, i64)> = Vec::new();
    for values in parties {
        slots.extend(values.iter().map(|v| (false, *v)));
        slots.extend(std::iter::repeat_n((true, 0), rows.saturating_sub(values.len())));
    }
    slots.sort();
    let n = parties.iter().map(|v| v.len() as i128).sum::<i128>();
    if n == 0 {
        return None;
    }
    let rank = big_p * (n - 1);
    let k: i128 =
        if big_d == 1 { rank } else { (1..slots.len() as i128).filter(|j| j * big_d <= rank).count() as i128 };
    let r = rank - k * big_d;
    let pick = |i: i128| -> i128 {
        slots.iter().enumerate().filter(|(at, _)| *at as i128 == i).map(|(_, (_, v))| i128::from(*v)).sum()
    };
    let (xk, xk1) = (pick(k), pick(k + 1));
    Some(big_d * xk + r * (xk1 - xk))
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
    fn sort_selection_matches_percentile_cont() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        for round in 0..200 {
            let rows = 1 + (round % 6);
            let parties: Vec<Vec<i64>> =
                (0..3).map(|_| (0..next() as usize % (rows + 1)).map(|_| next() as i64 % 9 - 4).collect()).collect();
            let mut pooled: Vec<i64> = parties.concat();
            pooled.sort_unstable();
            for (num, den) in [(0, 1), (1, 1), (1, 2), (3, 10), (19, 20), (1, 3)] {
                let p = Fraction::new(num, den).unwrap();
                let got =
                    sort_select_in_clear(&parties, rows, p).map(|a| sort_answer(a as i64, p.den()).interpolate(p));
                let want = percentile_cont_sorted(&pooled, p);
                assert_eq!(got, want, "{parties:?} p = {num}/{den}");
            }
        }
    }

    #[test]
    fn sort_answers_are_exact() {
        let half = Fraction::new(1, 2).unwrap();
        assert_eq!(sort_answer(-7, 2), OrderValue { lower: -4, upper: -3, remainder: 1 });
        assert_eq!(sort_answer(-7, 2).interpolate(half), BigRational::new(BigInt::from(-7), BigInt::from(2)));
        assert_eq!(sort_answer(8, 2), OrderValue { lower: 4, upper: 4, remainder: 0 });
        assert_eq!(sort_answer(5, 1), OrderValue { lower: 5, upper: 5, remainder: 0 });
    }

    #[test]
    fn extreme_domain_search() {
        let p = Fraction::new(1, 2).unwrap();
        let v = search_in_clear(&[vec![i64::MIN, 5], vec![i64::MAX]], i64::MIN, i64::MAX, p);
        assert_eq!(v.map(|v| v.lower), Some(5));
    }
}
