//! Local statistics: WHERE with SQL NULL semantics, GROUP BY, moments, bins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, UInt32Array};
use concord_data::{load_table, local_stats, DataError, Table};
use concord_query::{CmpOp, ColumnDef, ColumnType, Literal, Predicate, Query, Schema, Stat, StatsPlan};

const AGE: usize = 0;
const WEIGHT: usize = 1;
const SEX: usize = 2;
const SITE: usize = 3;

fn schema() -> Schema {
    let col = |name: &str, ty| ColumnDef { name: name.to_string(), ty };
    let cat = |values: &[&str]| ColumnType::Category { values: values.iter().map(|v| v.to_string()).collect() };
    Schema {
        table: "patients".to_string(),
        max_rows: 1_000_000_000,
        min_group_size: None,
        columns: vec![
            col("age", ColumnType::Int { min: 0, max: 120 }),
            col("weight", ColumnType::Decimal { scale: 2, min: 0, max: 50000 }),
            col("sex", cat(&["F", "M"])),
            col("site", cat(&["north", "south", "east"])),
        ],
    }
}

/// The rows (age, weight, sex, site):
/// 1: 34, 70.50, F, north
/// 2: NULL, 80.25, M, south
/// 3: 61, NULL, F, south
/// 4: 50, 65.00, M, east
/// 5: 75, 90.10, NULL, north
/// 6: 20, 55.00, M, north
/// 7: 51, 72.30, F, east
/// 8: 100, 60.00, F, north
fn table() -> Table {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("concord-data-stats-{}-{unique}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("patients_a.csv");
    std::fs::write(
        &path,
        "age,weight,sex,site\n34,70.50,F,north\n,80.25,M,south\n61,,F,south\n50,65.00,M,east\n\
         75,90.10,,north\n20,55.00,M,north\n51,72.30,F,east\n100,60.00,F,north\n",
    )
    .unwrap();
    let table = load_table(&path, &schema());
    let _ = std::fs::remove_dir_all(&dir);
    table.unwrap()
}

fn count() -> Stat {
    moment(&[], &[])
}

fn moment(nonnull: &[usize], monomial: &[usize]) -> Stat {
    Stat::Moment { nonnull: nonnull.to_vec(), monomial: monomial.to_vec() }
}

fn query(filter: Option<Predicate>, group_by: Vec<usize>) -> Query {
    Query { select: Vec::new(), filter, group_by }
}

fn plan(groups: Vec<Vec<u32>>, stats: Vec<Stat>) -> StatsPlan {
    StatsPlan { groups, stats }
}

fn cmp(col: usize, op: CmpOp, v: i128) -> Predicate {
    Predicate::Compare { col, op, value: Literal::Number(v) }
}

fn cat_eq(col: usize, v: u32) -> Predicate {
    Predicate::Compare { col, op: CmpOp::Eq, value: Literal::Category(v) }
}

fn and(a: Predicate, b: Predicate) -> Predicate {
    Predicate::And(Box::new(a), Box::new(b))
}

fn or(a: Predicate, b: Predicate) -> Predicate {
    Predicate::Or(Box::new(a), Box::new(b))
}

fn not(a: Predicate) -> Predicate {
    Predicate::Not(Box::new(a))
}

/// COUNT(*) of the rows satisfying `filter`.
fn count_where(table: &Table, filter: Predicate) -> i128 {
    let out = local_stats(table, &query(Some(filter), vec![]), &plan(vec![vec![]], vec![count()])).unwrap();
    assert_eq!(out.len(), 1);
    out[0]
}

#[test]
fn moments_without_filter_or_groups() {
    let t = table();
    let stats = vec![
        count(),
        moment(&[AGE], &[]),
        moment(&[AGE], &[AGE]),
        moment(&[AGE], &[AGE, AGE]),
        moment(&[AGE, WEIGHT], &[]),
        moment(&[AGE, WEIGHT], &[WEIGHT]),
        moment(&[AGE, WEIGHT], &[AGE, WEIGHT]),
        moment(&[WEIGHT], &[WEIGHT]),
        moment(&[WEIGHT], &[WEIGHT, WEIGHT]),
        moment(&[SEX], &[]),
    ];
    let out = local_stats(&t, &query(None, vec![]), &plan(vec![vec![]], stats)).unwrap();
    let expected: Vec<i128> = vec![
        8,
        7,
        34 + 61 + 50 + 75 + 20 + 51 + 100,
        34 * 34 + 61 * 61 + 50 * 50 + 75 * 75 + 20 * 20 + 51 * 51 + 100 * 100,
        // Rows where both age and weight are non-null: 1, 4, 5, 6, 7, 8.
        6,
        7050 + 6500 + 9010 + 5500 + 7230 + 6000,
        34 * 7050 + 50 * 6500 + 75 * 9010 + 20 * 5500 + 51 * 7230 + 100 * 6000,
        7050 + 8025 + 6500 + 9010 + 5500 + 7230 + 6000,
        7050 * 7050 + 8025 * 8025 + 6500 * 6500 + 9010 * 9010 + 5500 * 5500 + 7230 * 7230 + 6000 * 6000,
        7,
    ];
    assert_eq!(out, expected);
    assert_eq!(expected[3], 26003);
    assert_eq!(expected[6], 2_319_180);
}

#[test]
fn where_null_semantics() {
    let t = table();
    // age > 50: rows 3, 5, 7, 8; the NULL age of row 2 is dropped.
    assert_eq!(count_where(&t, cmp(AGE, CmpOp::Gt, 50)), 4);
    // NOT (age > 50): rows 1, 4, 6; row 2 is dropped again.
    assert_eq!(count_where(&t, not(cmp(AGE, CmpOp::Gt, 50))), 3);
    assert_eq!(count_where(&t, cmp(AGE, CmpOp::LtEq, 50)), 3);
    assert_eq!(count_where(&t, Predicate::IsNull { col: AGE, negated: false }), 1);
    assert_eq!(count_where(&t, Predicate::IsNull { col: AGE, negated: true }), 7);
    // NULL OR TRUE is TRUE.
    assert_eq!(count_where(&t, or(cmp(AGE, CmpOp::Gt, 50), Predicate::IsNull { col: AGE, negated: false })), 5);
    // NOT (sex = F OR age < 30): only row 4 (M, 50) is TRUE; rows 2 (M, NULL)
    // and 5 (NULL, 75) are NULL.
    assert_eq!(count_where(&t, not(or(cat_eq(SEX, 0), cmp(AGE, CmpOp::Lt, 30)))), 1);
    // NULL AND FALSE is FALSE, so NOT of it is TRUE: row 2 (M, NULL) and row 5
    // (NULL sex, age 75 >= 30)... row 5: NULL AND FALSE = FALSE -> TRUE.
    // Rows: 1 (F, 34): F AND F = F -> T; 2 (M, NULL): F -> T; 3 (F, 61): F -> T;
    // 4 (M, 50): F -> T; 5 (NULL, 75): NULL AND F = F -> T; 6 (M, 20): F -> T;
    // 7, 8: F -> T. So all 8, since sex = F AND age < 30 matches no row.
    assert_eq!(count_where(&t, not(and(cat_eq(SEX, 0), cmp(AGE, CmpOp::Lt, 30)))), 8);
}

#[test]
fn where_comparisons_in_between() {
    let t = table();
    assert_eq!(count_where(&t, cmp(AGE, CmpOp::Eq, 50)), 1);
    assert_eq!(count_where(&t, cmp(AGE, CmpOp::NotEq, 50)), 6);
    assert_eq!(count_where(&t, cmp(AGE, CmpOp::Lt, 50)), 2);
    assert_eq!(count_where(&t, cmp(AGE, CmpOp::GtEq, 50)), 5);
    // sex <> F: rows 2, 4, 6 (row 5's NULL sex is dropped).
    assert_eq!(count_where(&t, Predicate::Compare { col: SEX, op: CmpOp::NotEq, value: Literal::Category(0) }), 3);
    // sex = M AND weight >= 65.00: rows 2 and 4.
    assert_eq!(count_where(&t, and(cat_eq(SEX, 1), cmp(WEIGHT, CmpOp::GtEq, 6500))), 2);
    let in_list =
        |negated| Predicate::InList { col: SITE, values: vec![Literal::Category(0), Literal::Category(2)], negated };
    assert_eq!(count_where(&t, in_list(false)), 6);
    assert_eq!(count_where(&t, in_list(true)), 2);
    let age_in = |negated| Predicate::InList {
        col: AGE,
        values: vec![Literal::Number(20), Literal::Number(100), Literal::Number(7)],
        negated,
    };
    assert_eq!(count_where(&t, age_in(false)), 2);
    // NOT IN drops the NULL age too.
    assert_eq!(count_where(&t, age_in(true)), 5);
    let between = |negated| Predicate::Between { col: AGE, lo: Literal::Number(50), hi: Literal::Number(75), negated };
    assert_eq!(count_where(&t, between(false)), 4);
    assert_eq!(count_where(&t, between(true)), 3);
    // Literals beyond i64: constant comparisons, still NULL on NULL.
    let big = 1i128 << 70;
    assert_eq!(count_where(&t, cmp(AGE, CmpOp::Lt, big)), 7);
    assert_eq!(count_where(&t, cmp(AGE, CmpOp::Gt, big)), 0);
    assert_eq!(count_where(&t, cmp(AGE, CmpOp::Eq, big)), 0);
    assert_eq!(count_where(&t, cmp(AGE, CmpOp::NotEq, big)), 7);
    assert_eq!(count_where(&t, cmp(AGE, CmpOp::GtEq, -big)), 7);
    assert_eq!(count_where(&t, not(cmp(AGE, CmpOp::LtEq, -big))), 7);
    // A filtered sum: SUM(weight) WHERE age > 50 = rows 5, 7, 8 (row 3's weight is NULL).
    let out = local_stats(
        &t,
        &query(Some(cmp(AGE, CmpOp::Gt, 50)), vec![]),
        &plan(vec![vec![]], vec![count(), moment(&[WEIGHT], &[WEIGHT])]),
    )
    .unwrap();
    assert_eq!(out, vec![4, 9010 + 7230 + 6000]);
}

#[test]
fn group_by_one_column() {
    let t = table();
    let stats = vec![count(), moment(&[AGE], &[AGE])];
    let groups = vec![vec![0], vec![1]];
    let out = local_stats(&t, &query(None, vec![SEX]), &plan(groups.clone(), stats.clone())).unwrap();
    // F: rows 1, 3, 7, 8; M: rows 2, 4, 6 (row 2's age is NULL); row 5 (NULL sex) in no group.
    assert_eq!(out, vec![4, 34 + 61 + 51 + 100, 3, 50 + 20]);

    let out = local_stats(&t, &query(Some(cmp(AGE, CmpOp::GtEq, 50)), vec![SEX]), &plan(groups, stats)).unwrap();
    assert_eq!(out, vec![3, 61 + 51 + 100, 1, 50]);
}

#[test]
fn group_by_two_columns() {
    let t = table();
    let mut groups = Vec::new();
    for sex in 0..2 {
        for site in 0..3 {
            groups.push(vec![sex, site]);
        }
    }
    let stats = vec![count(), moment(&[WEIGHT], &[WEIGHT])];
    let out = local_stats(&t, &query(None, vec![SEX, SITE]), &plan(groups, stats)).unwrap();
    assert_eq!(
        out,
        vec![
            2,
            7050 + 6000, // F north: rows 1, 8
            1,
            0, // F south: row 3, NULL weight
            1,
            7230, // F east: row 7
            1,
            5500, // M north: row 6
            1,
            8025, // M south: row 2
            1,
            6500, // M east: row 4
        ]
    );

    // Any order and subset of groups; a duplicated group gets the same sums.
    let out =
        local_stats(&t, &query(None, vec![SITE, SEX]), &plan(vec![vec![0, 0], vec![2, 1], vec![0, 0]], vec![count()]))
            .unwrap();
    assert_eq!(out, vec![2, 1, 2]);
}

#[test]
fn histogram_bins_at_exact_edges() {
    let t = table();
    let bins = |col, lo, hi, bins| -> Vec<i128> {
        let stats = (0..bins).map(|index| Stat::Bin { col, lo, hi, bins, index }).collect();
        local_stats(&t, &query(None, vec![]), &plan(vec![vec![]], stats)).unwrap()
    };
    // Ages 34, NULL, 61, 50, 75, 20, 51, 100 in [0, 100) by 25: 50 and 75 on
    // lower edges; 100 == hi not counted; NULL not counted.
    assert_eq!(bins(AGE, 0, 100, 4), vec![1, 1, 3, 1]);
    // lo = 20: the value equal to lo is in bin 0.
    assert_eq!(bins(AGE, 20, 100, 4), vec![2, 2, 2, 0]);
    // Non-integral width 100/3: 33 < 33.33 <= 34.
    assert_eq!(bins(AGE, 0, 100, 3), vec![1, 4, 1]);
    // Decimal column, scaled edges: [55.00, 90.10) by 11.70: 90.10 == hi not counted.
    assert_eq!(bins(WEIGHT, 5500, 9010, 3), vec![3, 2, 1]);
    // Grouped histogram.
    let stats = vec![
        Stat::Bin { col: AGE, lo: 0, hi: 100, bins: 2, index: 0 },
        Stat::Bin { col: AGE, lo: 0, hi: 100, bins: 2, index: 1 },
    ];
    let out = local_stats(&t, &query(None, vec![SEX]), &plan(vec![vec![0], vec![1]], stats)).unwrap();
    // F: 34, 61, 51, 100 -> [1, 2]; M: NULL, 50, 20 -> [1, 1].
    assert_eq!(out, vec![1, 2, 1, 1]);
}

#[test]
fn empty_plan_and_empty_table() {
    let t = table();
    assert!(local_stats(&t, &query(None, vec![]), &plan(vec![vec![]], vec![])).unwrap().is_empty());
    let empty = Table::new(
        schema(),
        vec![
            Arc::new(Int64Array::from(Vec::<Option<i64>>::new())) as ArrayRef,
            Arc::new(Int64Array::from(Vec::<Option<i64>>::new())),
            Arc::new(UInt32Array::from(Vec::<Option<u32>>::new())),
            Arc::new(UInt32Array::from(Vec::<Option<u32>>::new())),
        ],
    )
    .unwrap();
    let out = local_stats(
        &empty,
        &query(Some(cmp(AGE, CmpOp::Gt, 1)), vec![SEX]),
        &plan(vec![vec![0], vec![1]], vec![count(), moment(&[AGE], &[AGE])]),
    )
    .unwrap();
    assert_eq!(out, vec![0; 4]);
}

#[test]
fn overflow_names_the_statistic() {
    let schema = Schema {
        table: "t".to_string(),
        max_rows: 10,
        min_group_size: None,
        columns: vec![ColumnDef { name: "x".to_string(), ty: ColumnType::Int { min: i64::MIN, max: i64::MAX } }],
    };
    let t = Table::new(schema, vec![Arc::new(Int64Array::from(vec![i64::MAX; 4])) as ArrayRef]).unwrap();
    let err = local_stats(&t, &query(None, vec![]), &plan(vec![vec![]], vec![moment(&[0], &[0, 0])])).unwrap_err();
    assert!(matches!(err, DataError::Overflow { .. }), "{err:?}");
    assert!(err.to_string().contains("SUM(x*x)"), "{err}");
    // With no row selected, nothing overflows.
    let out =
        local_stats(&t, &query(Some(cmp(0, CmpOp::Lt, 0)), vec![]), &plan(vec![vec![]], vec![moment(&[0], &[0, 0])]))
            .unwrap();
    assert_eq!(out, vec![0]);
}

#[test]
fn refuses_mismatched_plans() {
    let t = table();
    let p = plan(vec![vec![]], vec![count()]);
    // GROUP BY a numeric column.
    let err = local_stats(&t, &query(None, vec![AGE]), &plan(vec![vec![0]], vec![count()])).unwrap_err();
    assert!(matches!(err, DataError::Plan { .. }), "{err:?}");
    // A category literal against a numeric column.
    let err = local_stats(&t, &query(Some(cat_eq(AGE, 0)), vec![]), &p).unwrap_err();
    assert!(matches!(err, DataError::Plan { .. }), "{err:?}");
    // An unknown column.
    let err = local_stats(&t, &query(Some(cmp(9, CmpOp::Eq, 0)), vec![]), &p).unwrap_err();
    assert!(matches!(err, DataError::Plan { .. }), "{err:?}");
    // A moment of a category column.
    let err = local_stats(&t, &query(None, vec![]), &plan(vec![vec![]], vec![moment(&[SEX], &[SEX])])).unwrap_err();
    assert!(matches!(err, DataError::Plan { .. }), "{err:?}");
    // A group with the wrong number of values.
    let err = local_stats(&t, &query(None, vec![SEX]), &plan(vec![vec![]], vec![count()])).unwrap_err();
    assert!(matches!(err, DataError::Plan { .. }), "{err:?}");
}

/// Cross-check against a naive row-by-row evaluation on generated data.
#[test]
fn matches_naive_evaluation_on_generated_rows() {
    let n = 50_000usize;
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let mut age = Vec::with_capacity(n);
    let mut weight = Vec::with_capacity(n);
    let mut sex = Vec::with_capacity(n);
    let mut site = Vec::with_capacity(n);
    for _ in 0..n {
        let r = next();
        age.push((r % 10 != 0).then(|| (next() % 121) as i64));
        weight.push((r % 7 != 0).then(|| (next() % 50001) as i64));
        sex.push((r % 13 != 0).then(|| (next() % 2) as u32));
        site.push((r % 11 != 0).then(|| (next() % 3) as u32));
    }
    let t = Table::new(
        schema(),
        vec![
            Arc::new(Int64Array::from(age.clone())) as ArrayRef,
            Arc::new(Int64Array::from(weight.clone())),
            Arc::new(UInt32Array::from(sex.clone())),
            Arc::new(UInt32Array::from(site.clone())),
        ],
    )
    .unwrap();
    // WHERE (age >= 30 OR weight < 200.00) AND NOT site = east
    let filter = and(or(cmp(AGE, CmpOp::GtEq, 30), cmp(WEIGHT, CmpOp::Lt, 20000)), not(cat_eq(SITE, 2)));
    let row_passes = |i: usize| -> bool {
        let a = age[i].map(|a| a >= 30);
        let w = weight[i].map(|w| w < 20000);
        let left = match (a, w) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        };
        let right = site[i].map(|s| s != 2);
        matches!((left, right), (Some(true), Some(true)))
    };
    let stats = vec![
        count(),
        moment(&[AGE], &[AGE]),
        moment(&[AGE, WEIGHT], &[AGE, WEIGHT]),
        Stat::Bin { col: WEIGHT, lo: 1000, hi: 40000, bins: 7, index: 3 },
    ];
    let groups = vec![vec![0], vec![1]];
    let out = local_stats(&t, &query(Some(filter), vec![SEX]), &plan(groups, stats)).unwrap();
    let mut expected = vec![0i128; 8];
    for i in 0..n {
        let Some(g) = sex[i] else { continue };
        if !row_passes(i) {
            continue;
        }
        let base = g as usize * 4;
        expected[base] += 1;
        if let Some(a) = age[i] {
            expected[base + 1] += i128::from(a);
            if let Some(w) = weight[i] {
                expected[base + 2] += i128::from(a) * i128::from(w);
            }
        }
        if let Some(w) = weight[i] {
            let d = 7 * (i128::from(w) - 1000);
            if (3 * 39000..4 * 39000).contains(&d) {
                expected[base + 3] += 1;
            }
        }
    }
    assert_eq!(out, expected);
    assert!(expected[0] > 1000 && expected[3] > 100);
}

#[test]
fn local_order_sorts_each_group_and_column_once() {
    use concord_data::local_order;
    use concord_query::Aggregate;
    let t = table();
    let schema = schema();
    // SELECT sex, MEDIAN(age), MIN(weight) FROM patients WHERE site <> 'south' GROUP BY sex
    let q = Query {
        select: vec![("m".into(), Aggregate::Median(AGE)), ("w".into(), Aggregate::Min(WEIGHT))],
        filter: Some(not(cat_eq(SITE, 1))),
        group_by: vec![SEX],
    };
    let p = q.plan(&schema);
    let o = q.order_plan(&schema, &p, 3, Some(2)).unwrap().unwrap();
    let local = local_order(&t, &q, &p, &o).unwrap();
    // Rows kept: 1 (F), 4 (M), 5 (NULL sex: no group), 6 (M), 7 (F), 8 (F).
    assert_eq!(local.group_rows, vec![3, 2]);
    // Group-major, columns in plan order (age, weight); NULLs dropped, sorted.
    assert_eq!(local.sorted, vec![vec![34, 51, 100], vec![6000, 7050, 7230], vec![20, 50], vec![5500, 6500]]);
    // A plan that does not match is refused, not indexed out of bounds.
    let mut bad = o.clone();
    bad.groups = 5;
    assert!(matches!(local_order(&t, &q, &p, &bad), Err(DataError::Plan { .. })));
}
