//! Input checks: the feasible region of one party's statistics and the
//! clamping circuit of `concord_query::input_check`, in the clear.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use concord_query::input_check::{monomial_bounds, CheckPlan, InputCheck, CHECK_BITS};
use concord_query::{parse, QueryError, Schema, Stat, StatsPlan};
use proptest::prelude::*;

const SQL: &str = "SELECT sex, COUNT(*), AVG(age), VAR_POP(bmi), CORR(bmi, temp), COUNT(age), \
                   HISTOGRAM(age, 0, 120, 4) FROM patients GROUP BY sex";

fn setup(sql: &str) -> (Schema, concord_query::Query, StatsPlan, CheckPlan) {
    let schema = common::schema();
    let query = parse(sql, &schema).unwrap();
    let plan = query.plan(&schema);
    let check = CheckPlan::new(&schema, &plan).unwrap();
    (schema, query, plan, check)
}

fn index(plan: &StatsPlan, stat: &Stat) -> usize {
    plan.stats.iter().position(|s| s == stat).unwrap()
}

fn moment(nonnull: &[usize], monomial: &[usize]) -> Stat {
    Stat::Moment { nonnull: nonnull.to_vec(), monomial: monomial.to_vec() }
}

#[test]
fn per_row_bounds_of_sums_squares_and_products() {
    let s = common::schema();
    // age [0, 120], bmi [10.00, 80.00] scaled by 100, temp [-50.0, 50.0] scaled by 10.
    assert_eq!(monomial_bounds(&s, &[]).unwrap(), (1, 1));
    assert_eq!(monomial_bounds(&s, &[0]).unwrap(), (0, 120));
    assert_eq!(monomial_bounds(&s, &[0, 0]).unwrap(), (0, 14_400));
    assert_eq!(monomial_bounds(&s, &[1, 1]).unwrap(), (1_000_000, 64_000_000), "min x^2 > 0 when 0 is out of range");
    assert_eq!(monomial_bounds(&s, &[4, 4]).unwrap(), (0, 250_000), "min x^2 = 0 when lo <= 0 <= hi");
    assert_eq!(monomial_bounds(&s, &[1, 4]).unwrap(), (-4_000_000, 4_000_000));
    assert_eq!(monomial_bounds(&s, &[0, 1]).unwrap(), (0, 960_000));
    assert!(matches!(monomial_bounds(&s, &[0, 0, 0]), Err(QueryError::Unsupported(_))));
    assert!(monomial_bounds(&s, &[99]).is_err());
}

#[test]
fn policies_parse() {
    for p in [InputCheck::Clamp, InputCheck::Reject, InputCheck::Off] {
        assert_eq!(InputCheck::parse(p.name()), Some(p));
    }
    assert_eq!(InputCheck::parse("maybe"), None);
}

#[test]
fn the_plan_covers_every_statistic() {
    let (_, _, plan, check) = setup(SQL);
    let mut covered: Vec<usize> = check.counts.clone();
    covered.extend(check.bounded.iter().map(|b| b.stat));
    covered.sort_unstable();
    assert_eq!(covered, (0..plan.stats.len()).collect::<Vec<_>>());
    assert_eq!(check.histograms.len(), 1);
    assert_eq!(check.histograms[0].bins.len(), 4);
    // COUNT(age) is in the plan: it bounds the bins.
    let count_age = index(&plan, &moment(&[0], &[]));
    assert_eq!(check.histograms[0].count.map(|c| check.counts[c]), Some(count_age));
    assert_eq!(check.forms().len(), check.forms_per_group());
    assert_eq!(check.comparisons(InputCheck::Clamp, 3), 3 * 2 * check.forms_per_group());
    assert_eq!(check.condition_forms().len() * 6, check.comparisons(InputCheck::Reject, 3));
    assert_eq!(check.bits, CHECK_BITS);
    assert!(check.sound_range() >= check.honest_bound());
    // 2^84 / (64,000,000 + 1) for the sum of squares of bmi.
    assert!(check.sound_range() > 100 * check.honest_bound(), "{}", check.sound_range());
}

#[test]
fn bounds_that_do_not_fit_the_comparisons_are_refused() {
    let text = common::SCHEMA.replace("max_rows = 1000000", "max_rows = 1000000000000000000");
    let schema = Schema::from_toml(&text).unwrap();
    let query = parse("SELECT VAR_POP(bmi) FROM patients", &schema).unwrap();
    let err = CheckPlan::new(&schema, &query.plan(&schema)).unwrap_err();
    assert!(matches!(&err, QueryError::Overflow(m) if m.contains("--input-check off")), "{err}");
}

fn rows_strategy() -> impl Strategy<Value = Vec<common::Row>> {
    let row = (
        proptest::option::weighted(0.9, 0i64..=120),
        proptest::option::weighted(0.9, 1000i64..=8000),
        0i64..2,
        0i64..3,
        proptest::option::weighted(0.9, -500i64..=500),
    )
        .prop_map(|(a, b, s, t, e)| vec![a, b, Some(s), Some(t), e]);
    proptest::collection::vec(row, 0..40)
}

fn group(sums: &[i128], plan: &StatsPlan, g: usize) -> Vec<i128> {
    sums[g * plan.stats.len()..(g + 1) * plan.stats.len()].to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, rng_seed: proptest::test_runner::RngSeed::Fixed(5), ..ProptestConfig::default() })]

    /// In-bounds data is feasible, and clamping leaves it unchanged.
    #[test]
    fn honest_statistics_are_feasible_and_kept(rows in rows_strategy()) {
        let (_, query, plan, check) = setup(SQL);
        let sums = common::local_sums(&query, &plan, &rows);
        for g in 0..plan.groups.len() {
            let v = group(&sums, &plan, g);
            prop_assert!(check.feasible(&v), "group {g}: {:?} violates {:?}", v, check.violations(&v));
            prop_assert_eq!(check.clamp_in_clear(&v), v);
        }
    }

    /// Whatever a party contributes, the clamped statistics are feasible.
    #[test]
    fn clamped_statistics_are_always_feasible(v in proptest::collection::vec(-3_000_000_000_000i128..3_000_000_000_000, 16)) {
        let (_, _, plan, check) = setup(SQL);
        prop_assume!(plan.stats.len() == v.len());
        let c = check.clamp_in_clear(&v);
        let bins = &check.histograms[0].bins;
        if bins.iter().all(|&b| v[b] >= 0) {
            prop_assert!(check.feasible(&c), "{:?} -> {:?} violates {:?}", v, c, check.violations(&c));
        } else {
            // A negative bin hides an excess in the others from the total's
            // check: every condition but the histogram's total still holds.
            let viol = check.violations(&c);
            let total = viol.len() - 2;
            for (i, (bad, cond)) in viol.iter().zip(check.conditions()).enumerate() {
                prop_assert!(!(*bad && cond) || i >= total, "{:?} -> {:?} violates form {}", v, c, i);
            }
        }
    }

    /// A feasible vector with its sums multiplied is clamped to n x the bound.
    #[test]
    fn poisoned_sums_are_clamped_to_the_bound(rows in rows_strategy(), factor in 2i128..10_000) {
        let (_, query, plan, check) = setup("SELECT COUNT(*), SUM(age), AVG(temp) FROM patients");
        let honest = common::local_sums(&query, &plan, &rows);
        let (n_age, s_age) = (index(&plan, &moment(&[0], &[])), index(&plan, &moment(&[0], &[0])));
        let (n_temp, s_temp) = (index(&plan, &moment(&[4], &[])), index(&plan, &moment(&[4], &[4])));
        let mut poisoned = honest.clone();
        poisoned[s_age] *= factor;
        poisoned[s_temp] *= factor;
        let c = check.clamp_in_clear(&poisoned);
        prop_assert_eq!(c[s_age], poisoned[s_age].min(honest[n_age] * 120));
        let t = poisoned[s_temp];
        prop_assert_eq!(c[s_temp], t.clamp(honest[n_temp] * -500, honest[n_temp] * 500));
        prop_assert_eq!(c[n_age], honest[n_age]);
    }
}

#[test]
fn counts_out_of_range_are_clamped_with_their_sums() {
    let (schema, _, plan, check) = setup("SELECT COUNT(*), AVG(age) FROM patients");
    let (n, s) = (index(&plan, &moment(&[0], &[])), index(&plan, &moment(&[0], &[0])));
    let m = i128::from(schema.max_rows);
    let mut v = vec![0i128; plan.stats.len()];
    // A negative count: the count and its sum become 0.
    v[n] = -5;
    v[s] = 300;
    assert!(!check.feasible(&v));
    let c = check.clamp_in_clear(&v);
    assert_eq!((c[n], c[s]), (0, 0));
    // A count above max_rows: M, and the sum within [0, 120 M].
    v[n] = m + 7;
    v[s] = 121 * m + 1;
    let c = check.clamp_in_clear(&v);
    assert_eq!((c[n], c[s]), (m, 120 * m));
    v[s] = -1;
    assert_eq!(check.clamp_in_clear(&v)[s], 0);
    // A sum below n * lo for a column with lo > 0 (bmi >= 10.00).
    let (_, _, plan, check) = setup("SELECT AVG(bmi) FROM patients");
    let (n, s) = (index(&plan, &moment(&[1], &[])), index(&plan, &moment(&[1], &[1])));
    let mut v = vec![0i128; plan.stats.len()];
    v[n] = 10;
    v[s] = 5;
    assert_eq!(check.clamp_in_clear(&v)[s], 10 * 1000);
}

#[test]
fn histogram_bins_are_checked_against_their_count() {
    let (schema, _, plan, check) = setup("SELECT COUNT(age), HISTOGRAM(age, 0, 120, 3) FROM patients");
    let n = index(&plan, &moment(&[0], &[]));
    let bins: Vec<usize> = check.histograms[0].bins.clone();
    let mut v = vec![0i128; plan.stats.len()];
    v[n] = 10;
    v[bins[0]] = 4;
    v[bins[1]] = 5;
    assert!(check.feasible(&v));
    assert_eq!(check.clamp_in_clear(&v), v);
    // A negative bin: 0.
    v[bins[2]] = -1;
    assert!(!check.feasible(&v));
    assert_eq!(check.clamp_in_clear(&v)[bins[2]], 0);
    // Bins adding up to more than the count: all of them 0.
    v[bins[2]] = 2;
    assert!(!check.feasible(&v));
    let c = check.clamp_in_clear(&v);
    assert!(bins.iter().all(|&b| c[b] == 0), "{c:?}");
    assert_eq!(c[n], 10);
    // Without COUNT(age) the bound is max_rows.
    let (_, _, plan, check) = setup("SELECT HISTOGRAM(age, 0, 120, 2) FROM patients");
    assert_eq!(check.histograms[0].count, None);
    let m = i128::from(schema.max_rows);
    assert!(check.feasible(&[m, 0]));
    assert!(!check.feasible(&[m, 1]));
    assert_eq!(check.clamp_in_clear(&[m, 1]), vec![0, 0]);
    assert_eq!(check.clamp_in_clear(&[-3, 5]), vec![0, 5]);
    assert_eq!(plan.stats.len(), 2);
}
