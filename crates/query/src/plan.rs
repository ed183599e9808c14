//! Sufficient-statistics plans: which exact integer sums each party computes
//! for a [`Query`], and which field is large enough to add them securely.

use std::collections::BTreeSet;

use num_bigint::BigUint;
use num_traits::ToPrimitive;

use crate::{Aggregate, ColumnId, ColumnType, Domain, Query, QueryError, Schema, Stat, StatsPlan};

/// `2^61 - 1`.
const P61: u128 = (1u128 << 61) - 1;
/// `2^127 - 1`.
const P127: u128 = (1u128 << 127) - 1;

fn moment(nonnull: &[ColumnId], monomial: &[ColumnId]) -> Stat {
    let mut nonnull = nonnull.to_vec();
    nonnull.sort_unstable();
    nonnull.dedup();
    let mut monomial = monomial.to_vec();
    monomial.sort_unstable();
    Stat::Moment { nonnull, monomial }
}

/// The statistics one aggregate needs (possibly with repeats).
pub fn stats_for(agg: &Aggregate) -> Vec<Stat> {
    match agg {
        Aggregate::CountStar => vec![moment(&[], &[])],
        Aggregate::Count(c) => vec![moment(&[*c], &[])],
        Aggregate::Sum(c) | Aggregate::Avg(c) => vec![moment(&[*c], &[]), moment(&[*c], &[*c])],
        Aggregate::VarPop(c) | Aggregate::VarSamp(c) | Aggregate::StddevPop(c) | Aggregate::StddevSamp(c) => {
            vec![moment(&[*c], &[]), moment(&[*c], &[*c]), moment(&[*c], &[*c, *c])]
        }
        Aggregate::CovarPop(y, x)
        | Aggregate::CovarSamp(y, x)
        | Aggregate::Corr(y, x)
        | Aggregate::RegrSlope(y, x)
        | Aggregate::RegrIntercept(y, x)
        | Aggregate::RegrR2(y, x) => {
            let nn = [*x, *y];
            let mut v = vec![moment(&nn, &[]), moment(&nn, &[*x]), moment(&nn, &[*y]), moment(&nn, &[*x, *y])];
            if matches!(agg, Aggregate::Corr(..) | Aggregate::RegrR2(..)) {
                v.push(moment(&nn, &[*x, *x]));
                v.push(moment(&nn, &[*y, *y]));
            } else if matches!(agg, Aggregate::RegrSlope(..) | Aggregate::RegrIntercept(..)) {
                v.push(moment(&nn, &[*x, *x]));
            }
            v
        }
        Aggregate::Linreg { y, xs } => {
            let mut nn = xs.clone();
            nn.push(*y);
            let mut v = vec![moment(&nn, &[]), moment(&nn, &[*y]), moment(&nn, &[*y, *y])];
            for (i, xi) in xs.iter().enumerate() {
                v.push(moment(&nn, &[*xi]));
                v.push(moment(&nn, &[*xi, *y]));
                for xj in &xs[i..] {
                    v.push(moment(&nn, &[*xi, *xj]));
                }
            }
            v
        }
        Aggregate::Histogram { col, lo, hi, bins } => {
            (0..*bins).map(|index| Stat::Bin { col: *col, lo: *lo, hi: *hi, bins: *bins, index }).collect()
        }
        // Order statistics are not sums: see `crate::order`.
        Aggregate::Min(_) | Aggregate::Max(_) | Aggregate::Median(_) | Aggregate::PercentileCont { .. } => Vec::new(),
    }
}

impl Query {
    /// The plan of this query: the public groups (the cartesian product of
    /// the declared values of the GROUP BY columns, in declaration order, the
    /// first column varying slowest; one empty group without GROUP BY) and
    /// the sorted, deduplicated statistics every aggregate needs.
    ///
    /// A GROUP BY column that is not a category (which [`crate::parse()`]
    /// never produces) contributes no values, hence no groups.
    pub fn plan(&self, schema: &Schema) -> StatsPlan {
        let mut groups: Vec<Vec<u32>> = vec![Vec::new()];
        for col in &self.group_by {
            let n = match schema.columns.get(*col).map(|c| &c.ty) {
                Some(ColumnType::Category { values }) => u32::try_from(values.len()).unwrap_or(u32::MAX),
                _ => 0,
            };
            groups = groups
                .iter()
                .flat_map(|g| {
                    (0..n).map(move |v| {
                        let mut g = g.clone();
                        g.push(v);
                        g
                    })
                })
                .collect();
        }
        let stats: BTreeSet<Stat> = self.select.iter().flat_map(|(_, a)| stats_for(a)).collect();
        StatsPlan { groups, stats: stats.into_iter().collect() }
    }
}

/// Largest absolute per-row value of a column (1 for unknown or category columns).
fn max_abs(schema: &Schema, col: ColumnId) -> u128 {
    match schema.columns.get(col).map(|c| &c.ty) {
        Some(ColumnType::Int { min, max }) | Some(ColumnType::Decimal { min, max, .. }) => {
            u128::from(min.unsigned_abs().max(max.unsigned_abs()))
        }
        Some(ColumnType::Category { values }) => values.len().saturating_sub(1).max(1) as u128,
        None => 1,
    }
}

fn describe(stat: &Stat, schema: &Schema) -> String {
    let name = |c: &ColumnId| schema.columns.get(*c).map_or_else(|| format!("#{c}"), |d| d.name.clone());
    match stat {
        Stat::Moment { monomial, .. } if monomial.is_empty() => "the row count".to_string(),
        Stat::Moment { monomial, .. } => {
            format!("the sum of {}", monomial.iter().map(name).collect::<Vec<_>>().join(" * "))
        }
        Stat::Bin { col, .. } => format!("a histogram bin count of {}", name(col)),
    }
}

/// Chooses the field for the secure sums of `plan` among `parties` parties.
///
/// The bound is the largest possible absolute value of any pooled statistic:
/// `parties * max_rows * (largest per-row |product|)`, where a column's
/// per-row bound is `max(|min|, |max|)` (scaled) and counts and bins
/// contribute 1. Returns [`Domain::M61`] if `2 * bound < 2^61 - 1`, else
/// [`Domain::M127`] if `2 * bound < 2^127 - 1` (so that signed sums are
/// recovered exactly from their residues), together with the bound;
/// otherwise refuses, naming the statistic responsible.
pub fn choose_domain(plan: &StatsPlan, schema: &Schema, parties: usize) -> Result<(Domain, u128), QueryError> {
    if parties == 0 {
        return Err(QueryError::Invalid("choose_domain: the number of parties must be at least 1".into()));
    }
    let rows = BigUint::from(schema.max_rows) * BigUint::from(parties);
    let mut worst: Option<(BigUint, &Stat)> = None;
    for stat in &plan.stats {
        let per_row = match stat {
            Stat::Moment { monomial, .. } => {
                monomial.iter().fold(BigUint::from(1u8), |acc, c| acc * BigUint::from(max_abs(schema, *c)))
            }
            Stat::Bin { .. } => BigUint::from(1u8),
        };
        let bound = per_row * &rows;
        if worst.as_ref().is_none_or(|(b, _)| bound > *b) {
            worst = Some((bound, stat));
        }
    }
    let Some((bound, stat)) = worst else {
        return Ok((Domain::M61, 0));
    };
    let twice = &bound * 2u8;
    match bound.to_u128() {
        Some(b) if twice < BigUint::from(P61) => Ok((Domain::M61, b)),
        Some(b) if twice < BigUint::from(P127) => Ok((Domain::M127, b)),
        _ => Err(QueryError::Overflow(format!(
            "the pooled value of {} could reach {bound} in absolute value ({parties} parties x max_rows {} x the \
             largest per-row value), which does not fit the largest field GF(2^127 - 1) with room for its sign; \
             lower max_rows or the column bounds in the schema",
            describe(stat, schema),
            schema.max_rows
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p_constants() {
        assert_eq!(P61, 2_305_843_009_213_693_951);
        assert_eq!(P127, i128::MAX as u128);
    }
}
