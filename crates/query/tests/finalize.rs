//! Finalisation against a plaintext reference evaluation of the rows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::needless_range_loop)]

mod common;

use common::{eval, pooled, scale_of, Row};
use concord_query::{finalize, parse, Aggregate, ColumnType, Query, QueryError, Schema, Value};
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{ToPrimitive, Zero};
use proptest::prelude::*;

/// Deterministic pseudo-random rows within the test schema's bounds, ~10% NULLs.
fn rows(seed: u64, n: usize) -> Vec<Row> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move |m: i64| -> i64 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) % (m as u64)) as i64
    };
    (0..n)
        .map(|_| {
            let vals = [next(121), 1000 + next(7001), next(2), next(3), -500 + next(1001)];
            vals.iter().map(|v| if next(10) == 0 { None } else { Some(*v) }).collect()
        })
        .collect()
}

fn real(schema: &Schema, col: usize, v: i64) -> f64 {
    v as f64 / 10f64.powi(scale_of(schema, col))
}

/// PostgreSQL-like reference, computed in f64 directly from the rows (two-pass formulas).
fn reference(agg: &Aggregate, schema: &Schema, rows: &[&Row]) -> Value {
    let vals = |c: usize| -> Vec<f64> { rows.iter().filter_map(|r| r[c].map(|v| real(schema, c, v))).collect() };
    let pairs = |y: usize, x: usize| -> Vec<(f64, f64)> {
        rows.iter().filter_map(|r| Some((real(schema, y, r[y]?), real(schema, x, r[x]?)))).collect()
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let ss = |v: &[f64]| {
        let m = mean(v);
        v.iter().map(|a| (a - m) * (a - m)).sum::<f64>()
    };
    let sxy = |p: &[(f64, f64)]| {
        let my = p.iter().map(|a| a.0).sum::<f64>() / p.len() as f64;
        let mx = p.iter().map(|a| a.1).sum::<f64>() / p.len() as f64;
        p.iter().map(|(y, x)| (y - my) * (x - mx)).sum::<f64>()
    };
    match agg {
        Aggregate::CountStar => Value::Int(rows.len() as i128),
        Aggregate::Count(c) => Value::Int(rows.iter().filter(|r| r[*c].is_some()).count() as i128),
        Aggregate::Sum(c) => {
            let v: Vec<i64> = rows.iter().filter_map(|r| r[*c]).collect();
            if v.is_empty() {
                Value::Null
            } else if scale_of(schema, *c) == 0 {
                Value::Int(v.iter().map(|a| i128::from(*a)).sum())
            } else {
                Value::Number(vals(*c).iter().sum())
            }
        }
        Aggregate::Avg(c) => {
            let v = vals(*c);
            if v.is_empty() {
                Value::Null
            } else {
                Value::Number(mean(&v))
            }
        }
        Aggregate::VarPop(c) | Aggregate::StddevPop(c) | Aggregate::VarSamp(c) | Aggregate::StddevSamp(c) => {
            let v = vals(*c);
            let samp = matches!(agg, Aggregate::VarSamp(_) | Aggregate::StddevSamp(_));
            if v.is_empty() || (samp && v.len() < 2) {
                return Value::Null;
            }
            let var = ss(&v) / (v.len() - usize::from(samp)) as f64;
            Value::Number(if matches!(agg, Aggregate::StddevPop(_) | Aggregate::StddevSamp(_)) {
                var.sqrt()
            } else {
                var
            })
        }
        Aggregate::CovarPop(y, x) | Aggregate::CovarSamp(y, x) => {
            let p = pairs(*y, *x);
            let samp = matches!(agg, Aggregate::CovarSamp(..));
            if p.is_empty() || (samp && p.len() < 2) {
                return Value::Null;
            }
            Value::Number(sxy(&p) / (p.len() - usize::from(samp)) as f64)
        }
        Aggregate::Corr(y, x)
        | Aggregate::RegrSlope(y, x)
        | Aggregate::RegrIntercept(y, x)
        | Aggregate::RegrR2(y, x) => {
            let p = pairs(*y, *x);
            if p.is_empty() {
                return Value::Null;
            }
            let ys: Vec<f64> = p.iter().map(|a| a.0).collect();
            let xs: Vec<f64> = p.iter().map(|a| a.1).collect();
            let const_x = xs.iter().all(|a| *a == xs[0]);
            let const_y = ys.iter().all(|a| *a == ys[0]);
            if const_x || (matches!(agg, Aggregate::Corr(..)) && const_y) {
                return Value::Null;
            }
            let (sxx, syy, sxy) = (ss(&xs), ss(&ys), sxy(&p));
            Value::Number(match agg {
                Aggregate::Corr(..) => sxy / (sxx * syy).sqrt(),
                Aggregate::RegrSlope(..) => sxy / sxx,
                Aggregate::RegrIntercept(..) => mean(&ys) - sxy / sxx * mean(&xs),
                _ if const_y => 1.0,
                _ => sxy * sxy / (sxx * syy),
            })
        }
        Aggregate::Linreg { y, xs } => {
            let data: Vec<(f64, Vec<f64>)> = rows
                .iter()
                .filter_map(|r| {
                    let xv: Option<Vec<f64>> = xs.iter().map(|c| r[*c].map(|v| real(schema, *c, v))).collect();
                    Some((real(schema, *y, r[*y]?), xv?))
                })
                .collect();
            if data.is_empty() {
                return Value::Null;
            }
            // Centered normal equations for the slopes, then the intercept.
            let k = xs.len();
            let my = data.iter().map(|d| d.0).sum::<f64>() / data.len() as f64;
            let mx: Vec<f64> = (0..k).map(|j| data.iter().map(|d| d.1[j]).sum::<f64>() / data.len() as f64).collect();
            let mut a = vec![vec![0.0; k + 1]; k];
            for (yv, xv) in &data {
                for i in 0..k {
                    for j in 0..k {
                        a[i][j] += (xv[i] - mx[i]) * (xv[j] - mx[j]);
                    }
                    a[i][k] += (xv[i] - mx[i]) * (yv - my);
                }
            }
            let b = gauss_f64(a);
            let b0 = my - (0..k).map(|j| b[j] * mx[j]).sum::<f64>();
            Value::Array(std::iter::once(b0).chain(b).map(Value::Number).collect())
        }
        Aggregate::Histogram { col, lo, hi, bins } => {
            let mut counts = vec![0i128; *bins as usize];
            for r in rows {
                if let Some(v) = r[*col] {
                    let v = i128::from(v);
                    if *lo <= v && v < *hi {
                        counts[((v - lo) * i128::from(*bins)).div_euclid(hi - lo) as usize] += 1;
                    }
                }
            }
            Value::Array(counts.into_iter().map(Value::Int).collect())
        }
        // Order statistics are tested in tests/order.rs.
        Aggregate::Min(_) | Aggregate::Max(_) | Aggregate::Median(_) | Aggregate::PercentileCont { .. } => {
            unreachable!("not generated here")
        }
    }
}

/// Gaussian elimination with partial pivoting on an augmented f64 matrix.
fn gauss_f64(mut a: Vec<Vec<f64>>) -> Vec<f64> {
    let k = a.len();
    for c in 0..k {
        let p = (c..k).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap();
        a.swap(c, p);
        for r in c + 1..k {
            let f = a[r][c] / a[c][c];
            for j in c..=k {
                a[r][j] -= f * a[c][j];
            }
        }
    }
    let mut x = vec![0.0; k];
    for i in (0..k).rev() {
        x[i] = (a[i][k] - (i + 1..k).map(|j| a[i][j] * x[j]).sum::<f64>()) / a[i][i];
    }
    x
}

fn close(got: &Value, want: &Value, tol: f64) -> bool {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => (a - b).abs() <= tol * a.abs().max(b.abs()).max(1e-300),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| close(x, y, tol)),
        _ => got == want,
    }
}

/// Runs `sql` on `parties` through plan + pooled local sums + finalize and
/// compares every cell with the reference on the union of the rows.
fn check(sql: &str, parties: &[Vec<Row>], tol: f64) {
    let schema = common::schema();
    let q = parse(sql, &schema).unwrap();
    let plan = q.plan(&schema);
    let totals = pooled(&q, &plan, parties);
    let table = finalize(&q, &schema, &plan, &totals).unwrap();
    let names: Vec<String> = q
        .group_by
        .iter()
        .map(|c| schema.columns[*c].name.clone())
        .chain(q.select.iter().map(|(n, _)| n.clone()))
        .collect();
    assert_eq!(table.columns, names);
    assert_eq!(table.rows.len(), plan.groups.len());
    let all: Vec<&Row> = parties.iter().flatten().collect();
    for (key, out) in plan.groups.iter().zip(&table.rows) {
        let rows: Vec<&Row> = all
            .iter()
            .copied()
            .filter(|r| q.filter.as_ref().is_none_or(|f| eval(f, r) == Some(true)))
            .filter(|r| q.group_by.iter().zip(key).all(|(c, v)| r[*c] == Some(i64::from(*v))))
            .collect();
        for (j, (c, v)) in q.group_by.iter().zip(key).enumerate() {
            let ColumnType::Category { values } = &schema.columns[*c].ty else { panic!() };
            assert_eq!(out[j], Value::Text(values[*v as usize].clone()));
        }
        for (i, (name, agg)) in q.select.iter().enumerate() {
            let got = &out[q.group_by.len() + i];
            let want = reference(agg, &schema, &rows);
            assert!(close(got, &want, tol), "{sql}\ngroup {key:?}, {name}: got {got:?}, want {want:?}");
        }
    }
}

const ALL: &str = "COUNT(*), COUNT(bmi), COUNT(sex), SUM(age), SUM(bmi), SUM(temp), AVG(age), AVG(bmi), \
    VAR_POP(bmi), VAR_SAMP(age), STDDEV_POP(temp), STDDEV_SAMP(bmi), COVAR_POP(bmi, age), COVAR_SAMP(temp, bmi), \
    CORR(bmi, age), CORR(temp, temp), REGR_SLOPE(bmi, age), REGR_INTERCEPT(bmi, temp), REGR_R2(age, bmi), \
    LINREG(bmi, age, temp), LINREG(age, bmi), HISTOGRAM(bmi, 10, 80, 7), HISTOGRAM(temp, -50, 50.1, 3)";

fn parties() -> Vec<Vec<Row>> {
    vec![rows(1, 200), rows(2, 150), rows(3, 90)]
}

#[test]
fn every_aggregate_without_group_by() {
    check(&format!("SELECT {ALL} FROM patients"), &parties(), 1e-9);
}

#[test]
fn every_aggregate_with_group_by_and_where() {
    check(&format!("SELECT sex, {ALL} FROM patients GROUP BY sex"), &parties(), 1e-9);
    check(
        &format!("SELECT {ALL} FROM patients WHERE age >= 30 AND bmi IS NOT NULL GROUP BY site, sex"),
        &parties(),
        1e-9,
    );
    check(
        &format!("SELECT {ALL} FROM patients WHERE NOT (site IN ('A') OR temp BETWEEN -10 AND 10.5) GROUP BY sex"),
        &parties(),
        1e-9,
    );
}

#[test]
fn empty_and_tiny_groups_are_null_like_postgres() {
    // One row per party in a filter that keeps almost nothing.
    check(
        &format!(
            "SELECT {} FROM patients WHERE age = 7 GROUP BY site",
            ALL.replace("LINREG(bmi, age, temp), LINREG(age, bmi), ", "")
        ),
        &parties(),
        1e-9,
    );
    let schema = common::schema();
    let q = parse(&format!("SELECT {ALL} FROM patients WHERE age < 0"), &schema).unwrap();
    let plan = q.plan(&schema);
    let t = finalize(&q, &schema, &plan, &vec![0; plan.len()]).unwrap();
    let row = &t.rows[0];
    assert_eq!(row[0], Value::Int(0));
    assert_eq!(row[1], Value::Int(0));
    assert_eq!(row[3], Value::Null, "SUM of no rows is NULL");
    assert!(row[4..21].iter().all(|v| *v == Value::Null), "{row:?}");
    assert_eq!(row[21], Value::Array(vec![Value::Int(0); 7]));
}

#[test]
fn postgres_null_rules_on_constant_columns() {
    // Two rows with the same x: VAR_SAMP defined (0), CORR / REGR_SLOPE NULL.
    let r = |age: i64, bmi: i64| vec![Some(age), Some(bmi), Some(0), Some(0), Some(0)];
    let parties = vec![vec![r(5, 2000)], vec![r(5, 3000)]];
    let schema = common::schema();
    let q = parse(
        "SELECT VAR_SAMP(age), CORR(bmi, age), REGR_SLOPE(bmi, age), REGR_R2(bmi, age), REGR_R2(age, bmi), \
         VAR_SAMP(temp), COVAR_SAMP(bmi, age) FROM patients",
        &schema,
    )
    .unwrap();
    let plan = q.plan(&schema);
    let t = finalize(&q, &schema, &plan, &pooled(&q, &plan, &parties)).unwrap();
    assert_eq!(
        t.rows[0],
        vec![
            Value::Number(0.0),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Number(1.0),
            Value::Number(0.0),
            Value::Number(0.0)
        ]
    );
    // A single row: sample statistics NULL.
    let t = finalize(&q, &schema, &plan, &pooled(&q, &plan, &parties[..1])).unwrap();
    assert_eq!(t.rows[0][0], Value::Null);
    assert_eq!(t.rows[0][6], Value::Null);
}

#[test]
fn decimal_sum_is_exact() {
    // 0.1 + 0.2 at scale 1: the exact sum 0.3, not 0.30000000000000004.
    let r = |t: i64| vec![None, None, None, None, Some(t)];
    let schema = common::schema();
    let q = parse("SELECT SUM(temp), AVG(temp) FROM patients", &schema).unwrap();
    let plan = q.plan(&schema);
    let t = finalize(&q, &schema, &plan, &pooled(&q, &plan, &[vec![r(1)], vec![r(2)]])).unwrap();
    assert_eq!(t.rows[0], vec![Value::Number(0.3), Value::Number(0.15)]);
}

#[test]
fn wrong_totals_and_singular() {
    let schema = common::schema();
    let q = parse("SELECT sex, LINREG(bmi, age) FROM patients GROUP BY sex", &schema).unwrap();
    let plan = q.plan(&schema);
    let e = finalize(&q, &schema, &plan, &[1, 2, 3]).unwrap_err();
    assert!(matches!(e, QueryError::Totals(_)), "{e}");
    assert!(e.to_string().contains("expected"), "{e}");
    // All rows with the same age: X'X singular.
    let r = |bmi: i64| vec![Some(40), Some(bmi), Some(1), Some(0), None];
    let e = finalize(&q, &schema, &plan, &pooled(&q, &plan, &[vec![r(2000), r(2500)]])).unwrap_err();
    assert!(matches!(e, QueryError::Singular(_)));
    assert!(e.to_string().contains("LINREG: the regressors are collinear (X'X is singular)"), "{e}");
    assert!(e.to_string().contains("sex = 'M'"), "{e}");
    // A plan from another query.
    let other = parse("SELECT COUNT(*) FROM patients", &schema).unwrap().plan(&schema);
    assert!(matches!(finalize(&q, &schema, &other, &[0]), Err(QueryError::Totals(_))));
}

/// Exact OLS solution of the normal equations, by plain rational Gauss-Jordan.
fn exact_ols(ys: &[BigRational], xs: &[Vec<BigRational>]) -> Vec<BigRational> {
    let p = xs[0].len() + 1;
    let one = BigRational::from_integer(BigInt::from(1));
    let mut a = vec![vec![BigRational::zero(); p + 1]; p];
    for (y, x) in ys.iter().zip(xs) {
        let row: Vec<BigRational> = std::iter::once(one.clone()).chain(x.iter().cloned()).collect();
        for i in 0..p {
            for j in 0..p {
                a[i][j] += &row[i] * &row[j];
            }
            a[i][p] += &row[i] * y;
        }
    }
    for c in 0..p {
        let piv = (c..p).find(|&r| !a[r][c].is_zero()).unwrap();
        a.swap(c, piv);
        for r in 0..p {
            if r != c {
                let f = &a[r][c] / &a[c][c];
                for j in c..=p {
                    let v = &f * &a[c][j];
                    a[r][j] -= v;
                }
            }
        }
    }
    (0..p).map(|i| &a[i][p] / &a[i][i]).collect()
}

#[test]
fn ill_conditioned_linreg_is_exact() {
    // x1 = age (int), x2 = w (scale 3) = age + noise in {-0.002..0.002}; y = 1 + 2 x1 - x2 + noise.
    let schema = Schema::from_toml(
        "table = \"t\"\nmax_rows = 1000000\n\
         [[column]]\nname = \"x1\"\ntype = \"int\"\nmin = 0\nmax = 1000\n\
         [[column]]\nname = \"x2\"\ntype = \"decimal\"\nscale = 3\nmin = -1\nmax = 1001\n\
         [[column]]\nname = \"y\"\ntype = \"decimal\"\nscale = 2\nmin = -100000\nmax = 100000\n",
    )
    .unwrap();
    let mut state = 12345u64;
    let mut next = move |m: i64| -> i64 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) % (m as u64)) as i64
    };
    let mut all: Vec<Row> = Vec::new();
    for _ in 0..300 {
        let x1 = next(1001);
        let x2 = x1 * 1000 + next(5) - 2;
        let y = 100 + 200 * x1 - x2 / 10 + next(21) - 10;
        all.push(vec![Some(x1), Some(x2), Some(y)]);
    }
    let q: Query = parse("SELECT LINREG(y, x1, x2) FROM t", &schema).unwrap();
    let plan = q.plan(&schema);
    let parties = vec![all[..100].to_vec(), all[100..].to_vec()];
    let t = finalize(&q, &schema, &plan, &pooled(&q, &plan, &parties)).unwrap();
    let Value::Array(got) = &t.rows[0][0] else { panic!("{:?}", t.rows[0]) };
    let got: Vec<f64> = got.iter().map(|v| if let Value::Number(x) = v { *x } else { panic!() }).collect();

    let rat = |v: i64, s: u32| BigRational::new(BigInt::from(v), BigInt::from(10i64.pow(s)));
    let ys: Vec<BigRational> = all.iter().map(|r| rat(r[2].unwrap(), 2)).collect();
    let xs: Vec<Vec<BigRational>> = all.iter().map(|r| vec![rat(r[0].unwrap(), 0), rat(r[1].unwrap(), 3)]).collect();
    let exact: Vec<f64> = exact_ols(&ys, &xs).iter().map(|r| r.to_f64().unwrap()).collect();
    assert_eq!(got, exact, "finalize must be the correctly rounded exact solution");

    // Naive f64 normal equations (uncentered X'X, as a float pipeline would do) drift.
    let mut a = vec![vec![0.0f64; 4]; 3];
    for r in &all {
        let row = [1.0, r[0].unwrap() as f64, r[1].unwrap() as f64 / 1000.0];
        let y = r[2].unwrap() as f64 / 100.0;
        for i in 0..3 {
            for j in 0..3 {
                a[i][j] += row[i] * row[j];
            }
            a[i][3] += row[i] * y;
        }
    }
    let float = gauss_f64(a);
    let drift = float.iter().zip(&exact).map(|(f, e)| ((f - e) / e).abs()).fold(0.0, f64::max);
    assert!(drift > 1e-9, "f64 normal equations unexpectedly accurate: drift {drift:e}, {float:?} vs {exact:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn sum_count_avg_match_reference(
        parties in prop::collection::vec(
            prop::collection::vec(
                (prop::option::weighted(0.8, 0i64..=120), prop::option::weighted(0.8, 1000i64..=8000), prop::option::of(0i64..2)),
                0..30,
            ),
            1..4,
        )
    ) {
        let parties: Vec<Vec<Row>> = parties
            .into_iter()
            .map(|p| p.into_iter().map(|(a, b, s)| vec![a, b, s, Some(0), None]).collect())
            .collect();
        check("SELECT COUNT(*), COUNT(age), SUM(age), AVG(age), SUM(bmi), AVG(bmi) FROM patients", &parties, 1e-12);
        check("SELECT sex, COUNT(*), SUM(age), AVG(bmi) FROM patients GROUP BY sex", &parties, 1e-12);
    }
}
