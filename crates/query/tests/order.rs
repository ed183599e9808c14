//! Order statistics: the search state machine and interpolation of
//! `concord_query::order` against sorting the pooled data, the public plan,
//! and finalisation with opened order statistics and suppressed groups.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use concord_query::order::{
    percentile_cont_sorted, search_in_clear, search_steps, OrderResults, OrderValue, Search, KAPPA,
};
use concord_query::{finalize, finalize_with, parse, Fraction, OrderStat, QueryError, Value};
use num_bigint::BigInt;
use num_rational::BigRational;
use proptest::prelude::*;

/// PostgreSQL's percentile_cont written independently: h = p (N - 1) as an
/// exact rational, x[floor h] + (h - floor h)(x[floor h + 1] - x[floor h]).
fn reference(pooled: &[i64], num: u64, den: u64) -> Option<BigRational> {
    let mut v = pooled.to_vec();
    v.sort();
    if v.is_empty() {
        return None;
    }
    let h = BigRational::new(BigInt::from(num) * BigInt::from(v.len() - 1), BigInt::from(den));
    let fl = h.floor();
    let k: usize = fl.to_integer().try_into().unwrap();
    let x = |i: usize| BigRational::from_integer(BigInt::from(v[i]));
    if h == fl {
        return Some(x(k));
    }
    Some(x(k) + (h - fl) * (x(k + 1) - x(k)))
}

fn sorted_parties(parties: &[Vec<i64>]) -> Vec<Vec<i64>> {
    parties
        .iter()
        .map(|p| {
            let mut p = p.clone();
            p.sort();
            p
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The search (with the exact forms the MPC driver uses) finds x_k and
    /// x_{k+1}, and the interpolation equals sorting the pooled values.
    #[test]
    fn search_equals_sorting(
        parties in prop::collection::vec(prop::collection::vec(-20i64..=20, 0..12), 1..4),
        num in 0u64..=1000,
        den in 1u64..=1000,
        lo_slack in 0i64..5,
        hi_slack in 0i64..5,
    ) {
        let num = num % (den + 1);
        let p = Fraction::new(num, den).unwrap();
        let sorted = sorted_parties(&parties);
        let (lo, hi) = (-20 - lo_slack, 20 + hi_slack);
        let pooled: Vec<i64> = parties.concat();
        let got = search_in_clear(&sorted, lo, hi, p).map(|v| v.interpolate(p));
        prop_assert_eq!(&got, &reference(&pooled, num, den));
        prop_assert_eq!(got, percentile_cont_sorted(&{ let mut v = pooled.clone(); v.sort(); v }, p));
    }

    /// MIN and MAX are p = 0 and p = 1; heavy ties.
    #[test]
    fn min_max_and_ties(parties in prop::collection::vec(prop::collection::vec(0i64..3, 1..30), 1..4)) {
        let sorted = sorted_parties(&parties);
        let pooled: Vec<i64> = parties.concat();
        let min = search_in_clear(&sorted, 0, 2, Fraction::new(0, 1).unwrap()).unwrap();
        let max = search_in_clear(&sorted, 0, 2, Fraction::new(1, 1).unwrap()).unwrap();
        prop_assert_eq!(min.lower, *pooled.iter().min().unwrap());
        prop_assert_eq!(max.lower, *pooled.iter().max().unwrap());
        prop_assert_eq!((min.upper, min.remainder, max.upper, max.remainder), (min.lower, 0, max.lower, 0));
    }
}

#[test]
fn known_values() {
    let half = Fraction::new(1, 2).unwrap();
    // Even count: the mean of the two middle values, and r reveals the parity.
    let v = search_in_clear(&[vec![1, 4], vec![2, 10]], 0, 10, half).unwrap();
    assert_eq!(v, OrderValue { lower: 2, upper: 4, remainder: 1 });
    assert_eq!(v.interpolate(half), BigRational::new(3.into(), 1.into()));
    // Odd count: r = 0, x_{k+1} is still found.
    let v = search_in_clear(&[vec![1, 4], vec![2]], 0, 10, half).unwrap();
    assert_eq!(v, OrderValue { lower: 2, upper: 4, remainder: 0 });
    // Ties in the middle: x_k = x_{k+1}, no remainder needed.
    let v = search_in_clear(&[vec![3, 3], vec![3, 9]], 0, 10, half).unwrap();
    assert_eq!(v, OrderValue { lower: 3, upper: 3, remainder: 0 });
    // A single value: there is no x_{k+1}; the upper search ends at hi, weight 0.
    let v = search_in_clear(&[vec![], vec![-7]], -10, 10, half).unwrap();
    assert_eq!((v.lower, v.upper, v.remainder), (-7, 10, 0));
    assert_eq!(v.interpolate(half), BigRational::from_integer((-7).into()));
    // No values.
    assert_eq!(search_in_clear(&[vec![], vec![]], 0, 10, half), None);
    // A one-value domain needs no step.
    assert_eq!(search_in_clear(&[vec![5]], 5, 5, half).unwrap().lower, 5);
}

#[test]
fn search_state_machine() {
    // Finds the smallest v >= 37 in ceil(log2(101)) = 7 steps from the midpoint.
    let mut s = Search::new(-50, 50);
    assert_eq!(s.candidate(), 0);
    let mut seen = Vec::new();
    for _ in 0..search_steps(-50, 50) {
        seen.push(s.candidate());
        s.update(s.candidate() >= 37);
    }
    assert_eq!(s.result(), Some(37));
    assert_eq!(seen.len(), 7);
    // Finished searches keep their candidate and ignore bits (padding).
    s.update(false);
    assert_eq!((s.candidate(), s.result()), (37, Some(37)));
    for target in [-50, 50, -49, 49] {
        let mut s = Search::new(-50, 50);
        for _ in 0..7 {
            s.update(s.candidate() >= target);
        }
        assert_eq!(s.result(), Some(target));
    }
}

const GROUPED: &str = "SELECT sex, COUNT(*), MIN(age), MAX(bmi), MEDIAN(age), \
     PERCENTILE_CONT(0.25) WITHIN GROUP (ORDER BY bmi) FROM patients GROUP BY sex";

#[test]
fn the_plan_of_the_interactive_phase() {
    let schema = common::schema();
    let q = parse(GROUPED, &schema).unwrap();
    let plan = q.plan(&schema);
    // MIN/MAX/MEDIAN/PERCENTILE_CONT need no sums; COUNT(*) does.
    assert_eq!(plan.stats.len(), 1);
    let o = q.order_plan(&schema, &plan, 3, None).unwrap().unwrap();
    assert_eq!(o.groups, 2);
    assert_eq!(o.stats.len(), 4);
    assert_eq!(o.columns.iter().map(|c| (c.col, c.lo, c.hi)).collect::<Vec<_>>(), vec![(0, 0, 120), (1, 1000, 8000)]);
    // bmi: 7001 values -> 13 steps.
    assert_eq!(o.steps(), 13);
    // 3 x 10^6 rows: |a| <= 4 (3 x 10^6 + 1) < 2^24, so 25 bits; counts 3 x 10^6 < 2^22: 23 bits.
    assert_eq!((o.search_bits, o.count_bits), (25, 23));
    let d = o.describe(&schema);
    assert!(d.contains("domain search over [0, 120] (age), [10.00, 80.00] (bmi), 13 steps"), "{d}");
    // Nothing to do without order statistics or a minimum group size.
    let q2 = parse("SELECT COUNT(*) FROM patients", &schema).unwrap();
    let p2 = q2.plan(&schema);
    assert_eq!(q2.order_plan(&schema, &p2, 3, None).unwrap(), None);
    assert_eq!(q2.order_plan(&schema, &p2, 3, Some(0)).unwrap(), None);
    let gate = q2.order_plan(&schema, &p2, 3, Some(10)).unwrap().unwrap();
    assert_eq!((gate.min_group_size, gate.stats.len(), gate.steps()), (Some(10), 0, 0));
    assert!(gate.describe(&schema).contains("minimum group size 10"));
    // A max_rows so large that the tested values exceed 127 - 40 - 2 bits is refused.
    let huge = concord_query::Schema::from_toml(
        "table = \"t\"\nmax_rows = 18000000000000000000\n[[column]]\nname = \"x\"\ntype = \"int\"\nmin = 0\nmax = 9\n",
    )
    .unwrap();
    let q3 = parse("SELECT PERCENTILE_CONT(0.123457) WITHIN GROUP (ORDER BY x) FROM t", &huge).unwrap();
    let e = q3.order_plan(&huge, &q3.plan(&huge), 1000, None).unwrap_err();
    assert!(matches!(e, QueryError::Overflow(ref m) if m.contains("max_rows")), "{e:?}");
    assert_eq!(KAPPA, 40);
}

#[test]
fn finalize_with_order_results_and_suppression() {
    let schema = common::schema();
    let q = parse(GROUPED, &schema).unwrap();
    let plan = q.plan(&schema);
    let o = q.order_plan(&schema, &plan, 3, Some(3)).unwrap().unwrap();
    let at = |col: usize, num: u64, den: u64| {
        o.stats.binary_search(&OrderStat { col, p: Fraction::new(num, den).unwrap() }).unwrap()
    };
    let mut values = vec![None; 8];
    let v = |lower, upper, remainder| Some(OrderValue { lower, upper, remainder });
    values[at(0, 0, 1)] = v(20, 20, 0);
    // MEDIAN over 40 .. 43 with r = 1 of D = 2: 41.5.
    values[at(0, 1, 2)] = v(40, 43, 1);
    // PERCENTILE_CONT(0.25) over bmi 20.00 .. 24.00 with r = 3 of D = 4: 23.00.
    values[at(1, 1, 4)] = v(2000, 2400, 3);
    values[at(1, 1, 1)] = v(3150, 3150, 0);
    let results =
        OrderResults { stats: o.stats.clone(), min_group_size: Some(3), suppressed: vec![false, true], values };
    let table = finalize_with(&q, &schema, &plan, &[7, 0], Some(&results)).unwrap();
    assert_eq!(
        table.rows[0],
        vec![
            Value::Text("F".into()),
            Value::Int(7),
            Value::Int(20),
            Value::Number(31.5),
            Value::Number(41.5),
            Value::Number(23.0)
        ]
    );
    assert_eq!(table.rows[1][0], Value::Text("M".into()));
    assert!(table.rows[1][1..].iter().all(|c| *c == Value::Suppressed(3)));
    // An empty (not suppressed) group is NULL.
    let empty = OrderResults { suppressed: vec![false, false], ..results.clone() };
    let table = finalize_with(&q, &schema, &plan, &[7, 0], Some(&empty)).unwrap();
    assert_eq!(table.rows[1][2..], [Value::Null, Value::Null, Value::Null, Value::Null]);
    assert_eq!(table.rows[1][1], Value::Int(0));
    // Without the order results, or with the wrong shape, finalisation refuses.
    assert!(matches!(finalize(&q, &schema, &plan, &[7, 0]), Err(QueryError::Totals(_))));
    let short = OrderResults { values: vec![None; 3], ..results };
    assert!(matches!(finalize_with(&q, &schema, &plan, &[7, 0], Some(&short)), Err(QueryError::Totals(_))));
}

#[test]
fn schema_min_group_size() {
    let base = "table = \"t\"\n[[column]]\nname = \"x\"\ntype = \"int\"\nmin = 0\nmax = 9\n";
    assert_eq!(concord_query::Schema::from_toml(base).unwrap().min_group_size, None);
    let s = concord_query::Schema::from_toml(&format!("min_group_size = 5\n{base}")).unwrap();
    assert_eq!(s.min_group_size, Some(5));
    let s = concord_query::Schema::from_toml(&format!("min_group_size = 0\n{base}")).unwrap();
    assert_eq!(s.min_group_size, None);
    for bad in ["min_group_size = -1", "min_group_size = \"5\""] {
        let e = concord_query::Schema::from_toml(&format!("{bad}\n{base}")).unwrap_err();
        assert!(e.to_string().contains("min_group_size"), "{e}");
    }
}

#[test]
fn the_planner_chooses_the_order_method() {
    use concord_query::order::{MethodChoice, OrderMethod};
    let schema = |max_rows: u64| {
        concord_query::Schema::from_toml(&format!(
            "table = \"t\"\nmax_rows = {max_rows}\n[[column]]\nname = \"x\"\ntype = \"int\"\nmin = -1000000\nmax = 1000000\n"
        ))
        .unwrap()
    };
    let plan_for = |max_rows: u64, parties: usize, choice: MethodChoice| {
        let s = schema(max_rows);
        let q = parse("SELECT MEDIAN(x) FROM t", &s).unwrap();
        let mut o = q.order_plan(&s, &q.plan(&s), parties, None).unwrap().unwrap();
        o.choose_method(choice, parties, max_rows).map(|()| o)
    };
    // Small, wide domain (21 steps), 3 parties: the sort is cheaper.
    let small = plan_for(100, 3, MethodChoice::Auto).unwrap();
    assert_eq!(small.method, OrderMethod::ObliviousSort { max_rows: 100 });
    let l = small.sort_layout(3, 100).unwrap();
    assert_eq!((l.padded, l.cells, l.total()), (300, 1, 300));
    assert!(small.sort_cost(&l).seconds() < small.search_cost().seconds());
    assert!(small.describe(&schema(100)).contains("oblivious sort of 3 x 100 padded values"));
    // Beyond the auto threshold, or 4 parties, or forced: the search.
    assert_eq!(plan_for(10_000, 3, MethodChoice::Auto).unwrap().method, OrderMethod::DomainSearch);
    assert_eq!(plan_for(100, 4, MethodChoice::Auto).unwrap().method, OrderMethod::DomainSearch);
    assert_eq!(plan_for(100, 3, MethodChoice::Search).unwrap().method, OrderMethod::DomainSearch);
    // Forced sort: beyond the auto threshold it still runs; 4 parties is refused.
    assert_eq!(
        plan_for(10_000, 3, MethodChoice::Sort).unwrap().method,
        OrderMethod::ObliviousSort { max_rows: 10_000 }
    );
    let e = plan_for(100, 4, MethodChoice::Sort).unwrap_err();
    assert!(e.to_string().contains("4 parties"), "{e}");
    let e = plan_for(1 << 30, 3, MethodChoice::Sort).unwrap_err();
    assert!(e.to_string().contains("lower max_rows"), "{e}");
}
