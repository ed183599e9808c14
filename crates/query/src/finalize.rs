//! The analyst's last step: from the pooled exact sums to the answer.
//!
//! Everything is computed in exact rational arithmetic from the integer sums
//! (scaled decimals included: a sum of products of columns with scales `s1`
//! and `s2` carries scale `s1 + s2` and is divided exactly); only the final
//! value of each cell is rounded to `f64` (standard deviations and
//! correlations take a square root of that rounded value). NULLs follow
//! PostgreSQL.

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

use crate::order::{OrderResults, OrderValue};
use crate::plan::stats_for;
use crate::{
    Aggregate, ColumnId, ColumnType, OrderStat, Query, QueryError, ResultTable, Schema, Stat, StatsPlan, Value,
};

/// Turns the pooled sums `totals` (entry `g * plan.stats.len() + s` is the
/// exact sum of statistic `s` in group `g`, as laid out by [`Query::plan`])
/// into the result table: the GROUP BY columns, then the select items; one
/// row per group of the plan, empty groups included (`COUNT` 0, other
/// aggregates NULL, as PostgreSQL does for no input rows).
///
/// Errors: wrong `totals` length or a plan that lacks a statistic the query
/// needs ([`QueryError::Totals`]); `LINREG` on a non-empty group whose
/// regressors are collinear ([`QueryError::Singular`]); a query with order
/// statistics (use [`finalize_with`]).
pub fn finalize(query: &Query, schema: &Schema, plan: &StatsPlan, totals: &[i128]) -> Result<ResultTable, QueryError> {
    finalize_with(query, schema, plan, totals, None)
}

/// [`finalize`] with the public results of the interactive phase
/// ([`crate::order`]): the order statistics (`MIN`, `MAX`, `MEDIAN`,
/// `PERCENTILE_CONT`, computed exactly from the opened order statistics,
/// NULL for a group with no non-null value) and the suppressed groups
/// (every aggregate of a suppressed group is [`Value::Suppressed`]; its
/// totals are ignored).
///
/// Errors as [`finalize`], and [`QueryError::Totals`] when `order` is
/// missing but needed, or does not match the plan or the query.
pub fn finalize_with(
    query: &Query,
    schema: &Schema,
    plan: &StatsPlan,
    totals: &[i128],
    order: Option<&OrderResults>,
) -> Result<ResultTable, QueryError> {
    let ns = plan.stats.len();
    let expected = plan.groups.len().checked_mul(ns);
    if expected != Some(totals.len()) {
        return Err(QueryError::Totals(format!(
            "expected {} totals ({} groups x {ns} statistics), got {}",
            plan.groups.len().saturating_mul(ns),
            plan.groups.len(),
            totals.len()
        )));
    }
    for (_, agg) in &query.select {
        for stat in stats_for(agg) {
            if plan.stats.binary_search(&stat).is_err() {
                return Err(QueryError::Totals(format!("the plan lacks the statistic {stat:?} needed by {agg:?}")));
            }
        }
    }
    if let Some(o) = order {
        let values = plan.groups.len().checked_mul(o.stats.len());
        if o.suppressed.len() != plan.groups.len() || values != Some(o.values.len()) {
            return Err(QueryError::Totals(format!(
                "the order results cover {} groups and {} values, the plan has {} groups and the query {} order \
                 statistics",
                o.suppressed.len(),
                o.values.len(),
                plan.groups.len(),
                o.stats.len()
            )));
        }
    }
    for (_, agg) in &query.select {
        if let Some(os) = agg.order_stat() {
            if order.is_none_or(|o| o.stats.binary_search(&os).is_err()) {
                return Err(QueryError::Totals(format!("the order results lack {os:?} needed by {agg:?}")));
            }
        }
    }
    let mut columns: Vec<String> = Vec::with_capacity(query.group_by.len() + query.select.len());
    for col in &query.group_by {
        columns.push(column(schema, *col)?.0.to_string());
    }
    columns.extend(query.select.iter().map(|(name, _)| name.clone()));
    let mut rows = Vec::with_capacity(plan.groups.len());
    for (g, key) in plan.groups.iter().enumerate() {
        if key.len() != query.group_by.len() {
            return Err(QueryError::Totals(format!(
                "group #{g} of the plan has {} keys but the query groups by {} columns",
                key.len(),
                query.group_by.len()
            )));
        }
        let mut row = Vec::with_capacity(columns.len());
        for (col, v) in query.group_by.iter().zip(key) {
            let label = match column(schema, *col)?.1 {
                ColumnType::Category { values } => values.get(*v as usize).cloned(),
                _ => None,
            };
            let label = label.ok_or_else(|| {
                QueryError::Totals(format!("group #{g}: value {v} is not a declared value of column #{col}"))
            })?;
            row.push(Value::Text(label));
        }
        if let Some(o) = order.filter(|o| o.suppressed.get(g).copied().unwrap_or(false)) {
            let k = o.min_group_size.unwrap_or(0);
            row.extend(query.select.iter().map(|_| Value::Suppressed(k)));
            rows.push(row);
            continue;
        }
        let group = Group { plan, totals: &totals[g * ns..(g + 1) * ns] };
        for (_, agg) in &query.select {
            if let (Some(os), Some(o)) = (agg.order_stat(), order) {
                let s = o.stats.binary_search(&os).map_err(|_| QueryError::Totals(format!("missing {os:?}")))?;
                let value = o.values.get(g * o.stats.len() + s).copied().flatten();
                row.push(order_cell(agg, os, value, schema)?);
                continue;
            }
            row.push(group.aggregate(agg, schema).map_err(|e| match e {
                QueryError::Singular(msg) if !key.is_empty() => {
                    QueryError::Singular(format!("{msg} in group {}", describe_group(query, schema, key)))
                }
                other => other,
            })?);
        }
        rows.push(row);
    }
    Ok(ResultTable { columns, rows })
}

/// The cell of an order statistic: NULL without values; MIN and MAX of an
/// int column as an exact integer (PostgreSQL keeps the argument type),
/// everything else as a number (PostgreSQL's `percentile_cont` returns
/// double precision), computed exactly and rounded once.
fn order_cell(agg: &Aggregate, os: OrderStat, value: Option<OrderValue>, schema: &Schema) -> Result<Value, QueryError> {
    let Some(v) = value else {
        return Ok(Value::Null);
    };
    let s = scale(schema, os.col)?;
    if s == 0 && matches!(agg, Aggregate::Min(_) | Aggregate::Max(_)) {
        return Ok(Value::Int(i128::from(v.lower)));
    }
    Ok(number(&(v.interpolate(os.p) / BigRational::from_integer(pow10(s)))))
}

fn describe_group(query: &Query, schema: &Schema, key: &[u32]) -> String {
    let parts: Vec<String> = query
        .group_by
        .iter()
        .zip(key)
        .map(|(c, v)| match schema.columns.get(*c) {
            Some(def) => match &def.ty {
                ColumnType::Category { values } => {
                    format!("{} = '{}'", def.name, values.get(*v as usize).map_or("?", |s| s.as_str()))
                }
                _ => format!("{} = {v}", def.name),
            },
            None => format!("#{c} = {v}"),
        })
        .collect();
    parts.join(", ")
}

fn column(schema: &Schema, col: ColumnId) -> Result<(&str, &ColumnType), QueryError> {
    schema
        .columns
        .get(col)
        .map(|c| (c.name.as_str(), &c.ty))
        .ok_or_else(|| QueryError::Totals(format!("column #{col} is not in the schema")))
}

fn scale(schema: &Schema, col: ColumnId) -> Result<u32, QueryError> {
    Ok(column(schema, col)?.1.scale())
}

fn pow10(e: u32) -> BigInt {
    num_traits::pow(BigInt::from(10), e as usize)
}

fn ratio(n: BigInt, d: BigInt) -> BigRational {
    BigRational::new(n, d)
}

fn number(r: &BigRational) -> Value {
    Value::Number(r.to_f64().unwrap_or(f64::NAN))
}

/// `sign * sqrt(r)` with the square root taken in `f64`.
fn sqrt_number(r: &BigRational, negative: bool) -> Value {
    let s = r.to_f64().unwrap_or(f64::NAN).sqrt();
    Value::Number(if negative { -s } else { s })
}

fn moment(nonnull: &[ColumnId], monomial: &[ColumnId]) -> Stat {
    let mut nonnull = nonnull.to_vec();
    nonnull.sort_unstable();
    nonnull.dedup();
    let mut monomial = monomial.to_vec();
    monomial.sort_unstable();
    Stat::Moment { nonnull, monomial }
}

struct Group<'a> {
    plan: &'a StatsPlan,
    totals: &'a [i128],
}

impl Group<'_> {
    fn get(&self, stat: &Stat) -> Result<BigInt, QueryError> {
        self.plan
            .stats
            .binary_search(stat)
            .ok()
            .and_then(|i| self.totals.get(i))
            .map(|v| BigInt::from(*v))
            .ok_or_else(|| QueryError::Totals(format!("the plan lacks the statistic {stat:?}")))
    }

    fn aggregate(&self, agg: &Aggregate, schema: &Schema) -> Result<Value, QueryError> {
        Ok(match agg {
            Aggregate::CountStar => Value::Int(self.int(&moment(&[], &[]))?),
            Aggregate::Count(c) => Value::Int(self.int(&moment(&[*c], &[]))?),
            Aggregate::Sum(c) => {
                let n = self.get(&moment(&[*c], &[]))?;
                if n.is_zero() {
                    return Ok(Value::Null);
                }
                let s = scale(schema, *c)?;
                let stat = moment(&[*c], &[*c]);
                if s == 0 {
                    Value::Int(self.int(&stat)?)
                } else {
                    number(&ratio(self.get(&stat)?, pow10(s)))
                }
            }
            Aggregate::Avg(c) => {
                let n = self.get(&moment(&[*c], &[]))?;
                if n.is_zero() {
                    return Ok(Value::Null);
                }
                let s1 = self.get(&moment(&[*c], &[*c]))?;
                number(&ratio(s1, n * pow10(scale(schema, *c)?)))
            }
            Aggregate::VarPop(c) | Aggregate::VarSamp(c) | Aggregate::StddevPop(c) | Aggregate::StddevSamp(c) => {
                let n = self.get(&moment(&[*c], &[]))?;
                let sample = matches!(agg, Aggregate::VarSamp(_) | Aggregate::StddevSamp(_));
                if n.is_zero() || (sample && n.is_one()) {
                    return Ok(Value::Null);
                }
                let s1 = self.get(&moment(&[*c], &[*c]))?;
                let s2 = self.get(&moment(&[*c], &[*c, *c]))?;
                let d = &n * s2 - &s1 * &s1;
                let denom = if sample { &n * (&n - 1) } else { &n * &n };
                let var = ratio(d, denom * pow10(2 * scale(schema, *c)?));
                if matches!(agg, Aggregate::VarPop(_) | Aggregate::VarSamp(_)) {
                    number(&var)
                } else {
                    sqrt_number(&var, false)
                }
            }
            Aggregate::CovarPop(y, x)
            | Aggregate::CovarSamp(y, x)
            | Aggregate::Corr(y, x)
            | Aggregate::RegrSlope(y, x)
            | Aggregate::RegrIntercept(y, x)
            | Aggregate::RegrR2(y, x) => self.bivariate(agg, *y, *x, schema)?,
            Aggregate::Linreg { y, xs } => self.linreg(*y, xs, schema)?,
            Aggregate::Min(_) | Aggregate::Max(_) | Aggregate::Median(_) | Aggregate::PercentileCont { .. } => {
                return Err(QueryError::Totals(format!("{agg:?} is an order statistic, not a sum")))
            }
            Aggregate::Histogram { col, lo, hi, bins } => Value::Array(
                (0..*bins)
                    .map(|index| {
                        self.int(&Stat::Bin { col: *col, lo: *lo, hi: *hi, bins: *bins, index }).map(Value::Int)
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    fn int(&self, stat: &Stat) -> Result<i128, QueryError> {
        self.plan
            .stats
            .binary_search(stat)
            .ok()
            .and_then(|i| self.totals.get(i))
            .copied()
            .ok_or_else(|| QueryError::Totals(format!("the plan lacks the statistic {stat:?}")))
    }

    fn bivariate(&self, agg: &Aggregate, y: ColumnId, x: ColumnId, schema: &Schema) -> Result<Value, QueryError> {
        let nn = [x, y];
        let n = self.get(&moment(&nn, &[]))?;
        let sample = matches!(agg, Aggregate::CovarSamp(..));
        if n.is_zero() || (sample && n.is_one()) {
            return Ok(Value::Null);
        }
        let (scale_x, scale_y) = (scale(schema, x)?, scale(schema, y)?);
        let sx = self.get(&moment(&nn, &[x]))?;
        let sy = self.get(&moment(&nn, &[y]))?;
        let sxy = self.get(&moment(&nn, &[x, y]))?;
        // n^2 times the (population) co-moments, exact integers at the summed scales.
        let dxy = &n * &sxy - &sx * &sy;
        let dxx = || -> Result<BigInt, QueryError> { Ok(&n * self.get(&moment(&nn, &[x, x]))? - &sx * &sx) };
        let dyy = || -> Result<BigInt, QueryError> { Ok(&n * self.get(&moment(&nn, &[y, y]))? - &sy * &sy) };
        Ok(match agg {
            Aggregate::CovarPop(..) | Aggregate::CovarSamp(..) => {
                let denom = if sample { &n * (&n - 1) } else { &n * &n };
                number(&ratio(dxy, denom * pow10(scale_x + scale_y)))
            }
            Aggregate::Corr(..) => {
                let (dxx, dyy) = (dxx()?, dyy()?);
                if dxx.is_zero() || dyy.is_zero() {
                    return Ok(Value::Null);
                }
                let negative = dxy.is_negative();
                sqrt_number(&ratio(&dxy * &dxy, dxx * dyy), negative)
            }
            Aggregate::RegrR2(..) => {
                let dxx = dxx()?;
                if dxx.is_zero() {
                    return Ok(Value::Null);
                }
                let dyy = dyy()?;
                if dyy.is_zero() {
                    return Ok(Value::Number(1.0));
                }
                number(&ratio(&dxy * &dxy, dxx * dyy))
            }
            Aggregate::RegrSlope(..) | Aggregate::RegrIntercept(..) => {
                let dxx = dxx()?;
                if dxx.is_zero() {
                    return Ok(Value::Null);
                }
                // Slope in real units: dxy / dxx * 10^(scale_x - scale_y).
                let slope = ratio(dxy * pow10(scale_x), dxx * pow10(scale_y));
                if matches!(agg, Aggregate::RegrSlope(..)) {
                    number(&slope)
                } else {
                    let mean_y = ratio(sy, &n * pow10(scale_y));
                    let mean_x = ratio(sx, &n * pow10(scale_x));
                    number(&(mean_y - slope * mean_x))
                }
            }
            _ => Value::Null,
        })
    }

    fn linreg(&self, y: ColumnId, xs: &[ColumnId], schema: &Schema) -> Result<Value, QueryError> {
        let mut nn = xs.to_vec();
        nn.push(y);
        let n = self.get(&moment(&nn, &[]))?;
        if n.is_zero() {
            return Ok(Value::Null);
        }
        let p = xs.len() + 1;
        // The normal equations in the scaled integer units: A b = c, with
        // A = X'X and c = X'y, X = [1, x1, ..., xk].
        let mut m: Vec<Vec<BigInt>> = vec![vec![BigInt::zero(); p + 1]; p];
        m[0][0] = n.clone();
        m[0][p] = self.get(&moment(&nn, &[y]))?;
        for (i, xi) in xs.iter().enumerate() {
            let sxi = self.get(&moment(&nn, &[*xi]))?;
            m[0][i + 1] = sxi.clone();
            m[i + 1][0] = sxi;
            m[i + 1][p] = self.get(&moment(&nn, &[*xi, y]))?;
            for (j, xj) in xs.iter().enumerate() {
                m[i + 1][j + 1] = self.get(&moment(&nn, &[*xi, *xj]))?;
            }
        }
        let b = solve_bareiss(m).ok_or_else(|| {
            QueryError::Singular("LINREG: the regressors are collinear (X'X is singular)".to_string())
        })?;
        // Back to real units: b_j(real) = b_j(scaled) * 10^(scale_j - scale_y), scale_0 = 0.
        let scale_y = scale(schema, y)?;
        let mut out = Vec::with_capacity(p);
        for (j, bj) in b.into_iter().enumerate() {
            let scale_j = if j == 0 { 0 } else { scale(schema, xs[j - 1])? };
            let factor = ratio(pow10(scale_j), pow10(scale_y));
            out.push(number(&(bj * factor)));
        }
        Ok(Value::Array(out))
    }
}

/// Solves the square system given as an augmented integer matrix `[A | c]`
/// (`p` rows, `p + 1` columns) exactly: Bareiss's fraction-free elimination
/// keeps every entry an integer (each division is exact), then
/// back-substitution in rationals. `None` if `A` is singular.
pub(crate) fn solve_bareiss(mut m: Vec<Vec<BigInt>>) -> Option<Vec<BigRational>> {
    let p = m.len();
    if m.iter().any(|row| row.len() != p + 1) {
        return None;
    }
    let mut prev = BigInt::one();
    for k in 0..p {
        if m[k][k].is_zero() {
            let swap = (k + 1..p).find(|&i| !m[i][k].is_zero())?;
            m.swap(k, swap);
        }
        for i in k + 1..p {
            for j in k + 1..=p {
                let v = (&m[i][j] * &m[k][k] - &m[i][k] * &m[k][j]) / &prev;
                m[i][j] = v;
            }
            m[i][k] = BigInt::zero();
        }
        prev = m[k][k].clone();
    }
    let mut x: Vec<BigRational> = vec![BigRational::zero(); p];
    for i in (0..p).rev() {
        let mut acc = BigRational::from_integer(m[i][p].clone());
        for j in i + 1..p {
            acc -= BigRational::from_integer(m[i][j].clone()) * &x[j];
        }
        x[i] = acc / BigRational::from_integer(m[i][i].clone());
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: i64, d: i64) -> BigRational {
        BigRational::new(BigInt::from(n), BigInt::from(d))
    }

    #[test]
    fn bareiss_small() {
        // 2x + y = 3, x + 3y = 5 -> x = 4/5, y = 7/5
        let m = vec![
            vec![BigInt::from(2), BigInt::from(1), BigInt::from(3)],
            vec![BigInt::from(1), BigInt::from(3), BigInt::from(5)],
        ];
        assert_eq!(solve_bareiss(m), Some(vec![r(4, 5), r(7, 5)]));
        // Needs a row swap.
        let m = vec![
            vec![BigInt::from(0), BigInt::from(1), BigInt::from(2)],
            vec![BigInt::from(1), BigInt::from(0), BigInt::from(3)],
        ];
        assert_eq!(solve_bareiss(m), Some(vec![r(3, 1), r(2, 1)]));
        let singular = vec![
            vec![BigInt::from(1), BigInt::from(2), BigInt::from(3)],
            vec![BigInt::from(2), BigInt::from(4), BigInt::from(6)],
        ];
        assert_eq!(solve_bareiss(singular), None);
    }
}
