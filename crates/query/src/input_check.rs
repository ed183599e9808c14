//! Input checks: every party's contributed statistics checked (and, with
//! [`InputCheck::Clamp`], clamped) against what in-bounds data could
//! produce, decided inside MPC by `concord-analytics`. This module is the
//! public, I/O-free part: the feasible region of one party's statistics of
//! one group, as linear forms whose signs are tested, and the clamping
//! circuit (two rounds of products of shared values), with a plaintext
//! evaluation of both as the executable specification.
//!
//! # The feasible region
//!
//! With M = the schema's `max_rows` (the public bound on any one party's
//! rows) and, per group, for one party:
//!
//! - every count n (a [`Stat::Moment`] with no monomial: rows where the
//!   columns of `nonnull` are non-null) satisfies 0 <= n <= M;
//! - every other moment v, a sum over the same rows of a product of columns
//!   whose per-row value lies in [a, b] ([`monomial_bounds`]: the column's
//!   bounds for a sum, [min x^2, max x^2] for a sum of squares, with
//!   min x^2 = 0 when the column's range contains 0, the extremes of the
//!   four corner products for a cross product), satisfies n a <= v <= n b,
//!   with n the count of the same `nonnull` columns (every plan has it);
//! - every histogram bin count is in [0, n] and the bins of one histogram
//!   add up to at most n, n the count of non-null values of the column when
//!   the plan has it (`COUNT(col)` in the query), else M.
//!
//! Each condition is `form >= 0` for a linear form in the party's
//! statistics ([`CheckPlan::forms`]); a violation is the bit
//! LTZ(form) = [form < 0], one secure comparison per form, all parties,
//! groups and forms in one batch.
//!
//! # Clamping ([`CheckPlan::circuit`])
//!
//! Every count becomes n' = n + c_hi (M - n) + c_lo (0 - n) (c_lo = [n < 0],
//! c_hi = [n > M]). A moment v becomes
//! v' = u x + c_hi y, with u = 1 - c_lo - c_hi (n in range),
//! x = v + b_hi (b n - v) + b_lo (a n - v) (clamped to [a n, b n]) and
//! y = v + d_hi (b M - v) + d_lo (a M - v) (clamped to [a M, b M], the
//! region when n is clamped down to M); with n < 0, v' = 0. So (n', v') is
//! always feasible, and equal to (n, v) when (n, v) was. The products of
//! bits and values take one round, u x and c_hi y a second. For the bins of
//! a histogram whose total exceeds its bound the keep factors are
//! multiplied by (1 - t) (t the total's violation bit, in the first round):
//! all its bins become 0; each bin is clamped to [0, n]. (The total is
//! tested on the bins as contributed: a negative bin can hide an excess in
//! the others, which after clamping add up to at most (bins - 1) n.) Each
//! statistic is clamped on its own, not jointly (a sum and a sum of squares
//! may each be feasible yet not come from the same data).
//!
//! # Soundness range
//!
//! The comparisons run on [`CHECK_BITS`]-bit signed values: they are exact
//! when every contributed statistic lies in [-V, V], V =
//! [`CheckPlan::sound_range`] (2^84 divided by the largest coefficient of a
//! form, for example about 3 x 10^17 with a sum of squares of values up to
//! 8000), which must be at least what in-bounds data allows. A party
//! that deviates from the protocol to contribute a field element outside
//! that range is not reliably caught (a range proof would be needed).

use crate::{ColumnId, ColumnType, QueryError, Schema, Stat, StatsPlan};

/// Bit length of the input checks' comparisons: the largest that
/// GF(2^127-1) allows with kappa = [`crate::order::KAPPA`] (k + kappa <= 125).
pub const CHECK_BITS: usize = 127 - crate::order::KAPPA - 2;

/// What to do about statistics outside the feasible region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputCheck {
    /// Replace each out-of-range statistic by the nearest feasible value
    /// inside MPC; nothing is opened (nobody learns whether anyone cheated).
    Clamp,
    /// Open one bit per party (its statistics are infeasible) and abort the
    /// query naming the parties whose bit is set.
    Reject,
    /// No check.
    Off,
}

impl InputCheck {
    /// The name used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            InputCheck::Clamp => "clamp",
            InputCheck::Reject => "reject",
            InputCheck::Off => "off",
        }
    }

    /// Parse `clamp`, `reject` or `off`.
    pub fn parse(s: &str) -> Option<InputCheck> {
        match s {
            "clamp" => Some(InputCheck::Clamp),
            "reject" => Some(InputCheck::Reject),
            "off" => Some(InputCheck::Off),
            _ => None,
        }
    }
}

/// Per-row bounds [a, b] of the product of the (scaled) values of
/// `monomial` (empty: 1; a column twice: its square). Category columns
/// count as their codes 0..values-1. Refuses monomials of more than two
/// columns and unknown columns.
pub fn monomial_bounds(schema: &Schema, monomial: &[ColumnId]) -> Result<(i128, i128), QueryError> {
    let col = |c: ColumnId| -> Result<(i128, i128), QueryError> {
        match schema.columns.get(c).map(|d| &d.ty) {
            Some(ColumnType::Int { min, max }) | Some(ColumnType::Decimal { min, max, .. }) => {
                Ok((i128::from(*min), i128::from(*max)))
            }
            Some(ColumnType::Category { values }) => Ok((0, values.len().saturating_sub(1) as i128)),
            None => Err(QueryError::Invalid(format!("input check: unknown column #{c}"))),
        }
    };
    match monomial {
        [] => Ok((1, 1)),
        [c] => col(*c),
        [c, d] if c == d => {
            let (lo, hi) = col(*c)?;
            let (sl, sh) = (lo * lo, hi * hi);
            let top = sl.max(sh);
            Ok((if lo <= 0 && 0 <= hi { 0 } else { sl.min(sh) }, top))
        }
        [c, d] => {
            let ((a, b), (p, q)) = (col(*c)?, col(*d)?);
            let corners = [a * p, a * q, b * p, b * q];
            let lo = corners.iter().copied().min().unwrap_or(0);
            let hi = corners.iter().copied().max().unwrap_or(0);
            Ok((lo, hi))
        }
        _ => Err(QueryError::Unsupported(format!(
            "input check: a product of {} columns (at most 2 are supported)",
            monomial.len()
        ))),
    }
}

/// A variable of the checking circuit, for one party and one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Var {
    /// The party's statistic at this index of the group's vector.
    Stat(usize),
    /// The violation bit of form i ([`CheckPlan::forms`]).
    Bit(usize),
    /// The i-th product of the first round.
    First(usize),
    /// The i-th product of the second round.
    Second(usize),
}

/// A linear combination `sum coef * var + constant` (public coefficients).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Lin {
    /// Terms.
    pub terms: Vec<(Var, i128)>,
    /// Constant.
    pub constant: i128,
}

impl Lin {
    fn var(v: Var) -> Lin {
        Lin { terms: vec![(v, 1)], constant: 0 }
    }

    fn constant(c: i128) -> Lin {
        Lin { terms: Vec::new(), constant: c }
    }

    fn plus(mut self, v: Var, coef: i128) -> Lin {
        self.terms.push((v, coef));
        self
    }

    /// Sum of the absolute coefficients.
    fn weight(&self) -> u128 {
        self.terms.iter().map(|(_, c)| c.unsigned_abs()).fold(0u128, u128::saturating_add)
    }
}

/// A statistic bounded by a count: v in [a n, b n].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bounded {
    /// Index of the statistic in the group's vector.
    pub stat: usize,
    /// Position in [`CheckPlan::counts`] of its count (`None`: the public M).
    pub count: Option<usize>,
    /// Per-row lower bound a.
    pub lo: i128,
    /// Per-row upper bound b.
    pub hi: i128,
    /// The histogram (position in [`CheckPlan::histograms`]) it is a bin of.
    pub histogram: Option<usize>,
}

/// The bins of one histogram, whose total is bounded by a count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// Indices of the bins in the group's vector.
    pub bins: Vec<usize>,
    /// Position in [`CheckPlan::counts`] of the column's non-null count (`None`: M).
    pub count: Option<usize>,
}

/// The clamping circuit for one party's statistics of one group: two rounds
/// of products (pairs of linear combinations), then the outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Circuit {
    /// Products of the first round (over statistics and bits).
    pub first: Vec<(Lin, Lin)>,
    /// Products of the second round (may use first-round products).
    pub second: Vec<(Lin, Lin)>,
    /// The clamped statistics: (index in the group's vector, value). The
    /// other statistics are kept as they are.
    pub outputs: Vec<(usize, Lin)>,
}

/// The public plan of the input check (identical at every party).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckPlan {
    /// M: the public bound on any party's rows (the schema's `max_rows`).
    pub max_rows: u64,
    /// Number of groups.
    pub groups: usize,
    /// Statistics per group (`StatsPlan::stats.len()`).
    pub per_group: usize,
    /// Indices of the count statistics, in [0, M].
    pub counts: Vec<usize>,
    /// Statistics bounded by a count.
    pub bounded: Vec<Bounded>,
    /// Histograms.
    pub histograms: Vec<Histogram>,
    /// LTZ bit length ([`CHECK_BITS`]).
    pub bits: usize,
}

impl CheckPlan {
    /// The check of `plan`'s statistics under `schema`'s bounds and
    /// `max_rows`. Refuses ([`QueryError::Overflow`]) when honest values
    /// could fall outside the comparisons' exact range.
    pub fn new(schema: &Schema, plan: &StatsPlan) -> Result<CheckPlan, QueryError> {
        let count_of = |nonnull: &[ColumnId]| -> Option<usize> {
            plan.stats
                .iter()
                .position(|s| matches!(s, Stat::Moment { nonnull: n, monomial } if n == nonnull && monomial.is_empty()))
        };
        let mut counts = Vec::new();
        for (i, s) in plan.stats.iter().enumerate() {
            if matches!(s, Stat::Moment { monomial, .. } if monomial.is_empty()) {
                counts.push(i);
            }
        }
        let pos = |stat: Option<usize>| stat.and_then(|s| counts.iter().position(|&c| c == s));
        let mut bounded = Vec::new();
        let mut histograms: Vec<(ColumnId, i128, i128, u32, Histogram)> = Vec::new();
        for (i, s) in plan.stats.iter().enumerate() {
            match s {
                Stat::Moment { monomial, .. } if monomial.is_empty() => {}
                Stat::Moment { nonnull, monomial } => {
                    let (lo, hi) = monomial_bounds(schema, monomial)?;
                    bounded.push(Bounded { stat: i, count: pos(count_of(nonnull)), lo, hi, histogram: None });
                }
                Stat::Bin { col, lo, hi, bins, .. } => {
                    let key = (*col, *lo, *hi, *bins);
                    let h = match histograms.iter().position(|(c, l, u, b, _)| (*c, *l, *u, *b) == key) {
                        Some(h) => h,
                        None => {
                            let count = pos(count_of(&[*col]));
                            histograms.push((*col, *lo, *hi, *bins, Histogram { bins: Vec::new(), count }));
                            histograms.len() - 1
                        }
                    };
                    if let Some(entry) = histograms.get_mut(h) {
                        entry.4.bins.push(i);
                        bounded.push(Bounded { stat: i, count: entry.4.count, lo: 0, hi: 1, histogram: Some(h) });
                    }
                }
            }
        }
        let check = CheckPlan {
            max_rows: schema.max_rows,
            groups: plan.groups.len(),
            per_group: plan.stats.len(),
            counts,
            bounded,
            histograms: histograms.into_iter().map(|h| h.4).collect(),
            bits: CHECK_BITS,
        };
        let honest = check.honest_bound();
        let sound = check.sound_range();
        if honest > sound {
            return Err(QueryError::Overflow(format!(
                "the input check compares {CHECK_BITS}-bit values: it is exact for statistics up to {sound} in \
                 absolute value, but max_rows {} x the declared bounds allows {honest}; lower max_rows or the \
                 column bounds in the schema, or turn the check off (--input-check off)",
                schema.max_rows
            )));
        }
        Ok(check)
    }

    /// M as a signed value.
    fn m(&self) -> i128 {
        i128::from(self.max_rows)
    }

    /// Number of forms (comparisons) per group and party.
    pub fn forms_per_group(&self) -> usize {
        2 * self.counts.len() + 4 * self.bounded.len() + 2 * self.histograms.len()
    }

    /// Number of comparisons for `parties` parties under `policy` (clamping
    /// compares every form, rejecting only the conditions).
    pub fn comparisons(&self, policy: InputCheck, parties: usize) -> usize {
        let per = match policy {
            InputCheck::Clamp => self.forms_per_group(),
            InputCheck::Reject => self.forms_per_group() - 2 * self.bounded.len(),
            InputCheck::Off => 0,
        };
        per.saturating_mul(self.groups).saturating_mul(parties)
    }

    fn count_var(&self, count: Option<usize>) -> Option<Var> {
        count.and_then(|c| self.counts.get(c)).map(|&s| Var::Stat(s))
    }

    /// `k n` (or `k M` without a count) as a linear combination.
    fn times_count(&self, count: Option<usize>, k: i128) -> Lin {
        match self.count_var(count) {
            Some(v) => Lin { terms: vec![(v, k)], constant: 0 },
            None => Lin::constant(k.saturating_mul(self.m())),
        }
    }

    /// The forms of one group, over [`Var::Stat`] only; the statistics are
    /// feasible iff every form is >= 0. Layout: per count [n], [M - n];
    /// per bounded statistic [v - a n], [b n - v], [v - a M], [b M - v]
    /// (n = M without a count); per histogram [n - sum], [M - sum].
    pub fn forms(&self) -> Vec<Lin> {
        let m = self.m();
        let mut out = Vec::with_capacity(self.forms_per_group());
        for &c in &self.counts {
            out.push(Lin::var(Var::Stat(c)));
            out.push(Lin::constant(m).plus(Var::Stat(c), -1));
        }
        for b in &self.bounded {
            let v = Var::Stat(b.stat);
            out.push(self.times_count(b.count, -b.lo).plus(v, 1));
            out.push(self.times_count(b.count, b.hi).plus(v, -1));
            out.push(Lin::constant(b.lo.saturating_mul(-m)).plus(v, 1));
            out.push(Lin::constant(b.hi.saturating_mul(m)).plus(v, -1));
        }
        for h in &self.histograms {
            let mut total = self.times_count(h.count, 1);
            let mut cap = Lin::constant(m);
            for &bin in &h.bins {
                total = total.plus(Var::Stat(bin), -1);
                cap = cap.plus(Var::Stat(bin), -1);
            }
            out.push(total);
            out.push(cap);
        }
        out
    }

    /// The largest |statistic| a party that follows the protocol with
    /// in-bounds data can contribute (M x the largest per-row |bound|).
    pub fn honest_bound(&self) -> u128 {
        let m = u128::from(self.max_rows);
        self.bounded.iter().map(|b| m.saturating_mul(b.lo.unsigned_abs().max(b.hi.unsigned_abs()))).fold(m, u128::max)
    }

    /// V: the comparisons are exact when every contributed statistic lies
    /// in [-V, V] (every form then lies in [-2^(bits-1), 2^(bits-1))).
    pub fn sound_range(&self) -> u128 {
        let limit = (1u128 << (self.bits - 1)) - 1;
        self.forms()
            .iter()
            .filter(|f| f.weight() > 0)
            .map(|f| limit.saturating_sub(f.constant.unsigned_abs()) / f.weight())
            .min()
            .unwrap_or(limit)
    }

    /// Form index of count `c`'s bits: (c_lo, c_hi).
    fn count_bits(&self, c: usize) -> (Var, Var) {
        (Var::Bit(2 * c), Var::Bit(2 * c + 1))
    }

    /// The clamping circuit of one group (module docs).
    pub fn circuit(&self) -> Circuit {
        let m = self.m();
        let base_b = 2 * self.counts.len();
        let base_h = base_b + 4 * self.bounded.len();
        let mut first: Vec<(Lin, Lin)> = Vec::new();
        let mut outputs = Vec::new();
        let push = |first: &mut Vec<(Lin, Lin)>, a: Lin, b: Lin| {
            first.push((a, b));
            Var::First(first.len() - 1)
        };
        // Counts: n' = n + c_hi (M - n) + c_lo (-n).
        for (i, &c) in self.counts.iter().enumerate() {
            let (lo, hi) = self.count_bits(i);
            let n = Var::Stat(c);
            let p_hi = push(&mut first, Lin::var(hi), Lin::constant(m).plus(n, -1));
            let p_lo = push(&mut first, Lin::var(lo), Lin::constant(0).plus(n, -1));
            outputs.push((c, Lin::var(n).plus(p_hi, 1).plus(p_lo, 1)));
        }
        // Keep factors of each count (u, c_hi), public (1, 0) without one.
        let keeps = |count: Option<usize>| -> (Lin, Lin) {
            match count {
                Some(i) => {
                    let (lo, hi) = self.count_bits(i);
                    (Lin::constant(1).plus(lo, -1).plus(hi, -1), Lin::var(hi))
                }
                None => (Lin::constant(1), Lin::constant(0)),
            }
        };
        // Histograms: keep factors times (1 - t), (1 - t_M).
        let mut hist_keeps = Vec::with_capacity(self.histograms.len());
        for (j, h) in self.histograms.iter().enumerate() {
            let (k1, k2) = keeps(h.count);
            let (t, tm) = (Var::Bit(base_h + 2 * j), Var::Bit(base_h + 2 * j + 1));
            let p1 = push(&mut first, k1.clone(), Lin::var(t));
            let p2 = push(&mut first, k2.clone(), Lin::var(tm));
            hist_keeps.push((k1.plus(p1, -1), k2.plus(p2, -1)));
        }
        let mut second = Vec::new();
        for (j, b) in self.bounded.iter().enumerate() {
            let v = Var::Stat(b.stat);
            let bit = |k: usize| Var::Bit(base_b + 4 * j + k);
            // x = v + b_hi (b n - v) + b_lo (a n - v), y likewise with M.
            let x_hi = push(&mut first, Lin::var(bit(1)), self.times_count(b.count, b.hi).plus(v, -1));
            let x_lo = push(&mut first, Lin::var(bit(0)), self.times_count(b.count, b.lo).plus(v, -1));
            let y_hi = push(&mut first, Lin::var(bit(3)), Lin::constant(b.hi.saturating_mul(m)).plus(v, -1));
            let y_lo = push(&mut first, Lin::var(bit(2)), Lin::constant(b.lo.saturating_mul(m)).plus(v, -1));
            let x = Lin::var(v).plus(x_hi, 1).plus(x_lo, 1);
            let y = Lin::var(v).plus(y_hi, 1).plus(y_lo, 1);
            let (k1, k2) = match b.histogram.and_then(|h| hist_keeps.get(h)) {
                Some(k) => k.clone(),
                None => keeps(b.count),
            };
            second.push((k1, x));
            let s1 = Var::Second(second.len() - 1);
            second.push((k2, y));
            let s2 = Var::Second(second.len() - 1);
            outputs.push((b.stat, Lin::var(s1).plus(s2, 1)));
        }
        Circuit { first, second, outputs }
    }

    /// Which forms are conditions of the feasible region (the others,
    /// [v - a M] and [b M - v], only serve the clamping when n > M).
    pub fn conditions(&self) -> Vec<bool> {
        let mut out = vec![true; 2 * self.counts.len()];
        for _ in &self.bounded {
            out.extend([true, true, false, false]);
        }
        out.extend(self.histograms.iter().flat_map(|_| [true, true]));
        out
    }

    /// The forms that are conditions ([`CheckPlan::conditions`]): what
    /// [`InputCheck::Reject`] compares.
    pub fn condition_forms(&self) -> Vec<Lin> {
        self.forms().into_iter().zip(self.conditions()).filter(|(_, c)| *c).map(|(f, _)| f).collect()
    }

    /// The sign bits [form < 0] of every form of one party's statistics of
    /// one group, in the clear (the reference for the MPC comparisons).
    pub fn violations(&self, group: &[i128]) -> Vec<bool> {
        self.forms().iter().map(|f| eval(f, group, &[], &[], &[]) < 0).collect()
    }

    /// Whether one party's statistics of one group are feasible (no
    /// condition violated).
    pub fn feasible(&self, group: &[i128]) -> bool {
        !self.violations(group).iter().zip(self.conditions()).any(|(v, c)| *v && c)
    }

    /// The clamping circuit evaluated in the clear on one party's
    /// statistics of one group (what the MPC computes under sharing).
    pub fn clamp_in_clear(&self, group: &[i128]) -> Vec<i128> {
        let bits: Vec<i128> = self.violations(group).into_iter().map(i128::from).collect();
        let c = self.circuit();
        let first: Vec<i128> = c
            .first
            .iter()
            .map(|(a, b)| eval(a, group, &bits, &[], &[]).saturating_mul(eval(b, group, &bits, &[], &[])))
            .collect();
        let second: Vec<i128> = c
            .second
            .iter()
            .map(|(a, b)| eval(a, group, &bits, &first, &[]).saturating_mul(eval(b, group, &bits, &first, &[])))
            .collect();
        let mut out = group.to_vec();
        for (i, lin) in &c.outputs {
            if let Some(slot) = out.get_mut(*i) {
                *slot = eval(lin, group, &bits, &first, &second);
            }
        }
        out
    }

    /// One line for the run output.
    pub fn describe(&self, policy: InputCheck, parties: usize) -> String {
        format!(
            "input check ({}): {} comparisons of every party's statistics against max_rows {} and the declared bounds",
            policy.name(),
            self.comparisons(policy, parties),
            self.max_rows
        )
    }
}

/// A linear combination evaluated in the clear (saturating; missing
/// variables count as 0).
pub fn eval(lin: &Lin, stats: &[i128], bits: &[i128], first: &[i128], second: &[i128]) -> i128 {
    lin.terms.iter().fold(lin.constant, |acc, (v, c)| {
        let x = match v {
            Var::Stat(i) => stats.get(*i),
            Var::Bit(i) => bits.get(*i),
            Var::First(i) => first.get(*i),
            Var::Second(i) => second.get(*i),
        };
        acc.saturating_add(x.copied().unwrap_or(0).saturating_mul(*c))
    })
}
