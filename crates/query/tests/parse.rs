//! SQL parsing: every aggregate, WHERE form, GROUP BY, and every refusal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use concord_query::{parse, Aggregate, CmpOp, Fraction, Literal, Predicate, QueryError};

const AGE: usize = 0;
const BMI: usize = 1;
const SEX: usize = 2;
const SITE: usize = 3;
const TEMP: usize = 4;

fn ok(sql: &str) -> concord_query::Query {
    parse(sql, &common::schema()).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn err(sql: &str) -> QueryError {
    match parse(sql, &common::schema()) {
        Ok(q) => panic!("{sql}: expected an error, got {q:?}"),
        Err(e) => e,
    }
}

fn aggs(sql: &str) -> Vec<Aggregate> {
    ok(sql).select.into_iter().map(|(_, a)| a).collect()
}

fn filter(sql_where: &str) -> Predicate {
    ok(&format!("SELECT COUNT(*) FROM patients WHERE {sql_where}")).filter.unwrap()
}

fn num(col: usize, op: CmpOp, v: i128) -> Predicate {
    Predicate::Compare { col, op, value: Literal::Number(v) }
}

#[test]
fn every_aggregate() {
    let a = aggs(
        "select count(*), COUNT(sex), sum(age), AVG(bmi), var_pop(age), VAR_SAMP(bmi), stddev_pop(temp), \
         STDDEV_SAMP(age), covar_pop(bmi, age), COVAR_SAMP(age, temp), corr(bmi, age), regr_slope(bmi, age), \
         regr_intercept(bmi, age), REGR_R2(bmi, age), linreg(bmi, age, temp), histogram(bmi, 10, 80.5, 7) \
         from patients;",
    );
    assert_eq!(
        a,
        vec![
            Aggregate::CountStar,
            Aggregate::Count(SEX),
            Aggregate::Sum(AGE),
            Aggregate::Avg(BMI),
            Aggregate::VarPop(AGE),
            Aggregate::VarSamp(BMI),
            Aggregate::StddevPop(TEMP),
            Aggregate::StddevSamp(AGE),
            Aggregate::CovarPop(BMI, AGE),
            Aggregate::CovarSamp(AGE, TEMP),
            Aggregate::Corr(BMI, AGE),
            Aggregate::RegrSlope(BMI, AGE),
            Aggregate::RegrIntercept(BMI, AGE),
            Aggregate::RegrR2(BMI, AGE),
            Aggregate::Linreg { y: BMI, xs: vec![AGE, TEMP] },
            Aggregate::Histogram { col: BMI, lo: 1000, hi: 8050, bins: 7 },
        ]
    );
}

#[test]
fn names_and_aliases() {
    let q = ok("SELECT COUNT(*) AS n, avg(age) mean_age, SUM(bmi) FROM Patients");
    let names: Vec<&str> = q.select.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["n", "mean_age", "SUM(bmi)"]);
    assert_eq!(q.group_by, Vec::<usize>::new());
    assert!(q.filter.is_none());
}

#[test]
fn group_by_and_bare_group_columns() {
    let q = ok("SELECT sex, site, COUNT(*) FROM patients GROUP BY sex, site");
    assert_eq!(q.group_by, vec![SEX, SITE]);
    assert_eq!(q.select, vec![("COUNT(*)".to_string(), Aggregate::CountStar)]);
    let q = ok("SELECT patients.sex, AVG(age) FROM patients GROUP BY SEX");
    assert_eq!(q.group_by, vec![SEX]);
    let q = ok("SELECT p.sex, AVG(p.age) FROM patients p GROUP BY p.sex");
    assert_eq!(q.group_by, vec![SEX]);
    assert_eq!(q.select[0].1, Aggregate::Avg(AGE));
}

#[test]
fn where_forms() {
    assert_eq!(filter("age >= 18"), num(AGE, CmpOp::GtEq, 18));
    assert_eq!(filter("18 < age"), num(AGE, CmpOp::Gt, 18));
    assert_eq!(filter("18 <= age"), num(AGE, CmpOp::GtEq, 18));
    assert_eq!(filter("18 > age"), num(AGE, CmpOp::Lt, 18));
    assert_eq!(filter("18 = age"), num(AGE, CmpOp::Eq, 18));
    assert_eq!(filter("age <> 3"), num(AGE, CmpOp::NotEq, 3));
    assert_eq!(filter("age != 3"), num(AGE, CmpOp::NotEq, 3));
    assert_eq!(filter("bmi < 25.5"), num(BMI, CmpOp::Lt, 2550));
    assert_eq!(filter("temp > -1.5"), num(TEMP, CmpOp::Gt, -15));
    assert_eq!(filter("age = 2.0"), num(AGE, CmpOp::Eq, 2));
    assert_eq!(filter("sex = 'M'"), Predicate::Compare { col: SEX, op: CmpOp::Eq, value: Literal::Category(1) });
    assert_eq!(filter("'F' <> sex"), Predicate::Compare { col: SEX, op: CmpOp::NotEq, value: Literal::Category(0) });
    assert_eq!(
        filter("site IN ('A', 'C')"),
        Predicate::InList { col: SITE, values: vec![Literal::Category(0), Literal::Category(2)], negated: false }
    );
    assert_eq!(
        filter("age NOT IN (1, 2)"),
        Predicate::InList { col: AGE, values: vec![Literal::Number(1), Literal::Number(2)], negated: true }
    );
    assert_eq!(
        filter("bmi BETWEEN 18.5 AND 25"),
        Predicate::Between { col: BMI, lo: Literal::Number(1850), hi: Literal::Number(2500), negated: false }
    );
    assert_eq!(
        filter("age NOT BETWEEN -1 AND 3"),
        Predicate::Between { col: AGE, lo: Literal::Number(-1), hi: Literal::Number(3), negated: true }
    );
    assert_eq!(filter("bmi IS NULL"), Predicate::IsNull { col: BMI, negated: false });
    assert_eq!(filter("bmi IS NOT NULL"), Predicate::IsNull { col: BMI, negated: true });
    assert_eq!(
        filter("NOT (age > 1 AND (sex = 'F' OR bmi IS NULL))"),
        Predicate::Not(Box::new(Predicate::And(
            Box::new(num(AGE, CmpOp::Gt, 1)),
            Box::new(Predicate::Or(
                Box::new(Predicate::Compare { col: SEX, op: CmpOp::Eq, value: Literal::Category(0) }),
                Box::new(Predicate::IsNull { col: BMI, negated: false })
            ))
        )))
    );
}

/// Asserts an error of the given kind whose message contains every needle.
fn refused(sql: &str, unsupported: bool, needles: &[&str]) {
    let e = err(sql);
    assert_eq!(matches!(e, QueryError::Unsupported(_)), unsupported, "{sql}: wrong kind {e:?}");
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "{sql}: message {msg:?} should contain {n:?}");
    }
}

#[test]
fn reserved_aggregates() {
    for (sql, frag) in [
        ("SELECT PERCENTILE_DISC(0.5) WITHIN GROUP (ORDER BY age) FROM patients", "PERCENTILE_DISC(0.5)"),
        ("SELECT mode() WITHIN GROUP (ORDER BY age) FROM patients", "mode()"),
    ] {
        refused(sql, true, &["not available yet", frag, "column 8"]);
    }
}

fn frac(num: u64, den: u64) -> Fraction {
    Fraction::new(num, den).unwrap()
}

#[test]
fn order_statistics() {
    let a = aggs(
        "SELECT MIN(age), max(bmi), Median(temp), PERCENTILE_CONT(0.25) WITHIN GROUP (ORDER BY bmi), \
         percentile_cont(0.9) within group (order by age desc), PERCENTILE_CONT(1) WITHIN GROUP (ORDER BY age ASC), \
         PERCENTILE_CONT(0.000001) WITHIN GROUP (ORDER BY age), PERCENTILE_CONT(2.5e-1) WITHIN GROUP (ORDER BY age) \
         FROM patients",
    );
    assert_eq!(
        a,
        vec![
            Aggregate::Min(AGE),
            Aggregate::Max(BMI),
            Aggregate::Median(TEMP),
            Aggregate::PercentileCont { col: BMI, p: frac(1, 4) },
            // DESC: the 0.9 quantile of the descending order is the 0.1 quantile.
            Aggregate::PercentileCont { col: AGE, p: frac(1, 10) },
            Aggregate::PercentileCont { col: AGE, p: frac(1, 1) },
            Aggregate::PercentileCont { col: AGE, p: frac(1, 1_000_000) },
            Aggregate::PercentileCont { col: AGE, p: frac(1, 4) },
        ]
    );
    // MIN, MAX and MEDIAN are order statistics at p = 0, 1, 1/2.
    assert_eq!(Aggregate::Min(AGE).order_stat().unwrap().p, frac(0, 1));
    assert_eq!(Aggregate::Max(AGE).order_stat().unwrap().p, frac(1, 1));
    assert_eq!(Aggregate::Median(AGE).order_stat().unwrap().p, frac(1, 2));
    assert_eq!(Aggregate::Sum(AGE).order_stat(), None);
}

#[test]
fn order_statistics_refusals() {
    refused(
        "SELECT PERCENTILE_CONT(1.5) WITHIN GROUP (ORDER BY age) FROM patients",
        false,
        &["between 0 and 1", "`1.5` at line 1, column 24"],
    );
    refused(
        "SELECT PERCENTILE_CONT(-0.5) WITHIN GROUP (ORDER BY age) FROM patients",
        false,
        &["between 0 and 1", "-0.5"],
    );
    refused(
        "SELECT PERCENTILE_CONT(0.1234567) WITHIN GROUP (ORDER BY age) FROM patients",
        false,
        &["at most 6 digits", "0.1234567"],
    );
    refused("SELECT PERCENTILE_CONT('a') WITHIN GROUP (ORDER BY age) FROM patients", false, &["number literal"]);
    refused("SELECT PERCENTILE_CONT(0.5) FROM patients", false, &["WITHIN GROUP (ORDER BY column)"]);
    refused(
        "SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY age, bmi) FROM patients",
        false,
        &["exactly one column"],
    );
    refused(
        "SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY sex) FROM patients",
        false,
        &["numeric", "sex is a category"],
    );
    refused("SELECT MIN(sex) FROM patients", false, &["MIN needs a numeric", "sex is a category", "column 12"]);
    refused("SELECT MEDIAN(age, bmi) FROM patients", false, &["MEDIAN takes one numeric column"]);
    refused(
        "SELECT SUM(age) WITHIN GROUP (ORDER BY age) FROM patients",
        true,
        &["only supported with PERCENTILE_CONT"],
    );
}

#[test]
fn unsupported_sql() {
    refused("SELECT COUNT(*) FROM patients ORDER BY 1", true, &["ORDER BY", "ORDER BY 1", "column 31"]);
    refused("SELECT COUNT(*) FROM patients LIMIT 5", true, &["`LIMIT 5` at line 1, column 31"]);
    refused("SELECT DISTINCT COUNT(*) FROM patients", true, &["DISTINCT", "column 8"]);
    refused("SELECT COUNT(DISTINCT age) FROM patients", true, &["DISTINCT", "COUNT(DISTINCT age)"]);
    refused(
        "SELECT COUNT(*) FROM patients GROUP BY sex HAVING COUNT(*) > 5",
        true,
        &["HAVING COUNT(*) > 5", "column 44"],
    );
    refused("SELECT COUNT(*) FROM patients JOIN visits ON true", true, &["JOIN visits ON true", "column 31"]);
    refused("SELECT COUNT(*) FROM patients, visits", true, &["visits"]);
    refused("SELECT COUNT(*) FROM (SELECT * FROM patients) t", true, &["subqueries", "SELECT * FROM patients"]);
    refused("SELECT COUNT(*) FROM patients WHERE age IN (SELECT age FROM patients)", true, &["subqueries"]);
    refused("SELECT * FROM patients", true, &["SELECT *", "column 8"]);
    refused("SELECT SUM(age + 1) FROM patients", true, &["age + 1", "column 12"]);
    refused("SELECT SUM(age) + 1 FROM patients", true, &["SUM(age) + 1"]);
    refused("SELECT SUM(age) OVER () FROM patients", true, &["window", "SUM(age) OVER ()"]);
    refused("SELECT FOO(age) FROM patients", true, &["unknown aggregate", "FOO(age)"]);
    refused("SELECT COUNT(*) FROM patients UNION SELECT COUNT(*) FROM patients", true, &["UNION"]);
    refused("WITH x AS (SELECT 1) SELECT COUNT(*) FROM patients", true, &["WITH"]);
    refused("SELECT COUNT(*) FROM patients; SELECT 1", true, &["exactly one statement", "SELECT 1"]);
    refused("DELETE FROM patients", true, &["only SELECT", "DELETE FROM patients"]);
    refused("SELECT COUNT(*) FROM patients WHERE age LIKE '1%'", true, &["age LIKE '1%'"]);
    refused("SELECT COUNT(*) FROM patients WHERE age > bmi", true, &["two columns", "age > bmi"]);
    refused("SELECT COUNT(*) FROM patients WHERE sex < 'M'", true, &["sex < 'M'", "=, <>"]);
    refused("SELECT COUNT(*) FROM patients WHERE sex BETWEEN 'F' AND 'M'", true, &["BETWEEN", "category"]);
}

#[test]
fn invalid_queries() {
    refused("SELECT SUM(agee) FROM patients", false, &["unknown column", "`agee`", "did you mean `age`", "column 12"]);
    refused("SELECT COUNT(*) FROM patients WHERE bim > 1", false, &["`bim`", "did you mean `bmi`"]);
    refused("SELECT COUNT(*) FROM people", false, &["unknown table", "people", "patients"]);
    refused("SELECT COUNT(*) FROM patients WHERE age = 1.5", false, &["age is an int column", "1.5", "column 43"]);
    refused("SELECT COUNT(*) FROM patients WHERE bmi = 1.555", false, &["2 digits", "1.555"]);
    refused("SELECT COUNT(*) FROM patients WHERE sex = 'X'", false, &["'X'", "declared values", "'F', 'M'"]);
    refused("SELECT COUNT(*) FROM patients WHERE sex = 1", false, &["single-quoted", "1"]);
    refused("SELECT COUNT(*) FROM patients WHERE age = 'old'", false, &["number literal", "'old'"]);
    refused("SELECT COUNT(*) FROM patients WHERE age = NULL", false, &["IS NULL"]);
    refused(
        "SELECT COUNT(*) FROM patients GROUP BY age",
        false,
        &["GROUP BY needs a category column with declared values, so that the set of groups is public; age is int"],
    );
    refused("SELECT age, COUNT(*) FROM patients GROUP BY sex", false, &["GROUP BY", "`age`"]);
    refused("SELECT SUM(sex) FROM patients", false, &["SUM needs a numeric", "sex is a category"]);
    refused("SELECT CORR(age, site) FROM patients", false, &["CORR", "site is a category"]);
    refused("SELECT SUM(age, bmi) FROM patients", false, &["SUM takes one", "SUM(age, bmi)"]);
    refused("SELECT CORR(age) FROM patients", false, &["two numeric columns"]);
    refused("SELECT LINREG(age) FROM patients", false, &["at least one regressor"]);
    refused("SELECT LINREG(age, bmi, bmi) FROM patients", false, &["twice"]);
    refused("SELECT HISTOGRAM(age, 10, 5, 3) FROM patients", false, &["lo < hi"]);
    refused("SELECT HISTOGRAM(age, 0, 10, 0) FROM patients", false, &["bins", "10000"]);
    refused("SELECT HISTOGRAM(age, 0, 10, 10001) FROM patients", false, &["bins"]);
    refused("SELECT HISTOGRAM(age, 0, 10, 2.5) FROM patients", false, &["bins"]);
    refused("SELECT HISTOGRAM(bmi, 0.001, 10, 2) FROM patients", false, &["0.001"]);
    refused("SELECT HISTOGRAM(sex, 0, 1, 2) FROM patients", false, &["numeric"]);
    refused("SELECT COUNT(*) FROM patients GROUP BY sex, sex", false, &["twice"]);
    refused("SELECT COUNT(*)", false, &["missing FROM"]);
}

#[test]
fn syntax_error_keeps_position() {
    let e = err("SELECT COUNT(* FROM patients");
    assert!(matches!(e, QueryError::Syntax(_)), "{e:?}");
    assert!(e.to_string().contains("Line: 1"), "{e}");
    assert!(matches!(err(""), QueryError::Invalid(_)));
}
