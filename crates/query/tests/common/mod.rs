//! Shared test helpers: a schema and a plaintext reference evaluator of plans
//! (what concord-data does locally at each party).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use concord_query::{CmpOp, ColumnType, Literal, Predicate, Query, Schema, Stat, StatsPlan};

pub const SCHEMA: &str = r#"
table = "patients"
max_rows = 1000000
[[column]]
name = "age"
type = "int"
min = 0
max = 120
[[column]]
name = "bmi"
type = "decimal"
scale = 2
min = 10.0
max = 80.0
[[column]]
name = "sex"
type = "category"
values = ["F", "M"]
[[column]]
name = "site"
type = "category"
values = ["A", "B", "C"]
[[column]]
name = "temp"
type = "decimal"
scale = 1
min = -50
max = 50
"#;

pub fn schema() -> Schema {
    Schema::from_toml(SCHEMA).unwrap()
}

/// One row: a scaled value (or category index) per column, None = NULL.
pub type Row = Vec<Option<i64>>;

fn lit(l: &Literal) -> i128 {
    match l {
        Literal::Number(n) => *n,
        Literal::Category(c) => i128::from(*c),
    }
}

/// SQL three-valued logic: Some(true/false) or None (unknown).
pub fn eval(p: &Predicate, row: &Row) -> Option<bool> {
    match p {
        Predicate::Compare { col, op, value } => {
            let v = i128::from(row[*col]?);
            let l = lit(value);
            Some(match op {
                CmpOp::Eq => v == l,
                CmpOp::NotEq => v != l,
                CmpOp::Lt => v < l,
                CmpOp::LtEq => v <= l,
                CmpOp::Gt => v > l,
                CmpOp::GtEq => v >= l,
            })
        }
        Predicate::InList { col, values, negated } => {
            let v = i128::from(row[*col]?);
            Some(values.iter().any(|l| lit(l) == v) != *negated)
        }
        Predicate::Between { col, lo, hi, negated } => {
            let v = i128::from(row[*col]?);
            Some((lit(lo) <= v && v <= lit(hi)) != *negated)
        }
        Predicate::IsNull { col, negated } => Some(row[*col].is_none() != *negated),
        Predicate::And(a, b) => match (eval(a, row), eval(b, row)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Predicate::Or(a, b) => match (eval(a, row), eval(b, row)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Predicate::Not(a) => eval(a, row).map(|b| !b),
    }
}

/// Local sums of one party for `plan`, group-major.
pub fn local_sums(query: &Query, plan: &StatsPlan, rows: &[Row]) -> Vec<i128> {
    let mut out = vec![0i128; plan.len()];
    for row in rows {
        if let Some(f) = &query.filter {
            if eval(f, row) != Some(true) {
                continue;
            }
        }
        let key: Option<Vec<u32>> = query.group_by.iter().map(|c| row[*c].map(|v| v as u32)).collect();
        // Rows with a NULL group key form a group PostgreSQL would output; the
        // public group set has no NULL group, so they are dropped.
        let Some(key) = key else { continue };
        let g = plan.groups.iter().position(|k| *k == key).unwrap();
        for (s, stat) in plan.stats.iter().enumerate() {
            let add: i128 = match stat {
                Stat::Moment { nonnull, monomial } => {
                    if nonnull.iter().any(|c| row[*c].is_none()) {
                        0
                    } else {
                        monomial.iter().map(|c| i128::from(row[*c].unwrap())).product()
                    }
                }
                Stat::Bin { col, lo, hi, bins, index } => match row[*col] {
                    None => 0,
                    Some(v) => {
                        let t = i128::from(*bins) * (i128::from(v) - lo);
                        let w = hi - lo;
                        let i = i128::from(*index);
                        i128::from(t >= i * w && t < (i + 1) * w)
                    }
                },
            };
            out[g * plan.stats.len() + s] += add;
        }
    }
    out
}

/// Elementwise sum of several parties' local sums.
pub fn pooled(query: &Query, plan: &StatsPlan, parties: &[Vec<Row>]) -> Vec<i128> {
    let mut total = vec![0i128; plan.len()];
    for p in parties {
        for (t, v) in total.iter_mut().zip(local_sums(query, plan, p)) {
            *t += v;
        }
    }
    total
}

pub fn scale_of(schema: &Schema, col: usize) -> i32 {
    match schema.columns[col].ty {
        ColumnType::Decimal { scale, .. } => scale as i32,
        _ => 0,
    }
}
