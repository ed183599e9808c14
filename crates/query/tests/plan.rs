//! Statistics plans and the choice of the secure-sum domain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use concord_query::{choose_domain, parse, Domain, QueryError, Schema, Stat};

fn m(nonnull: &[usize], monomial: &[usize]) -> Stat {
    Stat::Moment { nonnull: nonnull.to_vec(), monomial: monomial.to_vec() }
}

const AGE: usize = 0;
const BMI: usize = 1;
const TEMP: usize = 4;

#[test]
fn plan_without_group_by() {
    let s = common::schema();
    let p = parse("SELECT COUNT(*), AVG(age), SUM(age), VAR_SAMP(age) FROM patients", &s).unwrap().plan(&s);
    assert_eq!(p.groups, vec![Vec::<u32>::new()]);
    assert_eq!(p.stats, vec![m(&[], &[]), m(&[AGE], &[]), m(&[AGE], &[AGE]), m(&[AGE], &[AGE, AGE])]);
    assert_eq!(p.len(), 4);
}

#[test]
fn plan_groups_cartesian() {
    let s = common::schema();
    let p = parse("SELECT sex, site, COUNT(age) FROM patients GROUP BY sex, site", &s).unwrap().plan(&s);
    assert_eq!(p.groups, vec![vec![0, 0], vec![0, 1], vec![0, 2], vec![1, 0], vec![1, 1], vec![1, 2]]);
    assert_eq!(p.stats, vec![m(&[AGE], &[])]);
    let p = parse("SELECT COUNT(*) FROM patients GROUP BY site, sex", &s).unwrap().plan(&s);
    assert_eq!(p.groups, vec![vec![0, 0], vec![0, 1], vec![1, 0], vec![1, 1], vec![2, 0], vec![2, 1]]);
}

#[test]
fn plan_bivariate_and_linreg() {
    let s = common::schema();
    let p = parse("SELECT CORR(bmi, age) FROM patients", &s).unwrap().plan(&s);
    let nn = [AGE, BMI];
    let mut want = vec![
        m(&nn, &[]),
        m(&nn, &[AGE]),
        m(&nn, &[BMI]),
        m(&nn, &[AGE, BMI]),
        m(&nn, &[AGE, AGE]),
        m(&nn, &[BMI, BMI]),
    ];
    want.sort();
    assert_eq!(p.stats, want);
    let p = parse("SELECT COVAR_POP(bmi, age) FROM patients", &s).unwrap().plan(&s);
    assert_eq!(p.stats.len(), 4);
    let p = parse("SELECT LINREG(bmi, age, temp) FROM patients", &s).unwrap().plan(&s);
    let nn = [AGE, BMI, TEMP];
    let mut want = vec![
        m(&nn, &[]),
        m(&nn, &[AGE]),
        m(&nn, &[TEMP]),
        m(&nn, &[BMI]),
        m(&nn, &[AGE, AGE]),
        m(&nn, &[AGE, TEMP]),
        m(&nn, &[TEMP, TEMP]),
        m(&nn, &[AGE, BMI]),
        m(&nn, &[BMI, TEMP]),
        m(&nn, &[BMI, BMI]),
    ];
    want.sort();
    assert_eq!(p.stats, want);
}

#[test]
fn plan_histogram_and_dedup() {
    let s = common::schema();
    let p = parse("SELECT HISTOGRAM(age, 0, 100, 3), HISTOGRAM(age, 0, 100, 3), SUM(age), AVG(age) FROM patients", &s)
        .unwrap()
        .plan(&s);
    let mut want: Vec<Stat> = (0..3).map(|index| Stat::Bin { col: AGE, lo: 0, hi: 100, bins: 3, index }).collect();
    want.push(m(&[AGE], &[]));
    want.push(m(&[AGE], &[AGE]));
    want.sort();
    assert_eq!(p.stats, want);
}

fn schema_with(max_rows: u64, lo: &str, hi: &str) -> Schema {
    Schema::from_toml(&format!(
        "table = \"t\"\nmax_rows = {max_rows}\n[[column]]\nname = \"x\"\ntype = \"int\"\nmin = {lo}\nmax = {hi}\n"
    ))
    .unwrap()
}

#[test]
fn domain_choice() {
    // Counts only: parties * max_rows.
    let s = schema_with(1000, "0", "10");
    let p = parse("SELECT COUNT(*) FROM t", &s).unwrap().plan(&s);
    assert_eq!(choose_domain(&p, &s, 3).unwrap(), (Domain::M61, 3000));
    // Sum of squares with |x| <= 1000 and 10^6 rows, 5 parties: 5e12, M61.
    let s = schema_with(1_000_000, "-1000", "10");
    let p = parse("SELECT VAR_POP(x) FROM t", &s).unwrap().plan(&s);
    assert_eq!(choose_domain(&p, &s, 5).unwrap(), (Domain::M61, 5_000_000_000_000));
    // |x| <= 2^40: x^2 * 10^9 rows far beyond 2^61, within 2^127.
    let s = schema_with(1_000_000_000, "0", "1099511627776");
    let p = parse("SELECT VAR_POP(x) FROM t", &s).unwrap().plan(&s);
    let (d, bound) = choose_domain(&p, &s, 10).unwrap();
    assert_eq!(d, Domain::M127);
    assert_eq!(bound, 10 * 1_000_000_000 * (1u128 << 80));
    // SUM alone stays in M61 for the same schema? 10 * 1e9 * 2^40 ~ 1.1e22 > 2^61: M127.
    let p = parse("SELECT SUM(x) FROM t", &s).unwrap().plan(&s);
    assert_eq!(choose_domain(&p, &s, 10).unwrap().0, Domain::M127);
    // Boundary: 2 * bound must be < 2^61 - 1.
    let s = schema_with(1, "0", "1");
    let p = parse("SELECT COUNT(*) FROM t", &s).unwrap().plan(&s);
    let parties = (1usize << 60) - 1; // 2 * bound = 2^61 - 2 < 2^61 - 1
    assert_eq!(choose_domain(&p, &s, parties).unwrap().0, Domain::M61);
    assert_eq!(choose_domain(&p, &s, parties + 1).unwrap().0, Domain::M127);
}

#[test]
fn domain_refused() {
    let s = schema_with(u64::MAX, "-9223372036854775808", "9223372036854775807");
    let p = parse("SELECT VAR_POP(x) FROM t", &s).unwrap().plan(&s);
    let e = choose_domain(&p, &s, 3).unwrap_err();
    assert!(matches!(e, QueryError::Overflow(_)));
    let msg = e.to_string();
    assert!(msg.contains("x * x") && msg.contains("max_rows") && msg.contains("2^127"), "{msg}");
    // Bound fits u128 but not the field: |x| <= 2^62, sum only, 2^63 rows * 4 parties = 2^127.
    let s = schema_with(1 << 63, "0", "4611686018427387904");
    let p = parse("SELECT SUM(x) FROM t", &s).unwrap().plan(&s);
    assert_eq!(choose_domain(&p, &s, 1).unwrap().0, Domain::M127);
    let e = choose_domain(&p, &s, 4).unwrap_err();
    assert!(e.to_string().contains("the sum of x"), "{e}");
    assert!(choose_domain(&p, &s, 0).is_err());
}
