//! The interactive phase (order statistics, minimum group size) over the
//! simulated network, against the same search run in the clear and against
//! sorting the pooled values; its rounds against the comparison's cost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use concord_analytics::{check_comparison_scheme, party_with_order, reconstruct, OrderInput, PartyOutcome, Scheme};
use concord_engine::compare::less_than_zero_cost;
use concord_net::sim::{self, LinkParams};
use concord_net::Transport;
use concord_query::order::{percentile_cont_sorted, search_in_clear, OrderPlan};
use concord_query::{parse, Domain, Schema};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

const SCHEMA: &str = r#"
table = "t"
max_rows = 1000
[[column]]
name = "x"
type = "int"
min = -30
max = 30
[[column]]
name = "g"
type = "category"
values = ["a", "b", "c", "d"]
"#;

/// Party p's rows per group: values of x (None = NULL) for groups a, b, c, d.
fn data(parties: usize, seed: u64) -> Vec<Vec<Vec<Option<i64>>>> {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    (0..parties)
        .map(|p| {
            (0..4)
                .map(|g| {
                    // a: many rows; b: a few; c: only NULLs; d: none.
                    let rows = match g {
                        0 => 15 + p,
                        1 => 1 + (p % 2),
                        2 => 2,
                        _ => 0,
                    };
                    (0..rows)
                        .map(|_| {
                            let v = (rng.next_u64() % 61) as i64 - 30;
                            // Ties: a third of the values on a few points.
                            let v = if rng.next_u64() % 3 == 0 { v % 4 } else { v };
                            (g != 2 && rng.next_u64() % 10 != 0).then_some(v)
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

fn run(
    scheme: Scheme,
    plan: &OrderPlan,
    parties: &[Vec<Vec<Option<i64>>>],
    sums: Vec<Vec<i128>>,
) -> Vec<Result<PartyOutcome, String>> {
    let n = parties.len();
    let nets = sim::network(n, LinkParams::default(), 9).unwrap();
    let handles: Vec<_> = nets
        .into_iter()
        .zip(parties.to_vec())
        .zip(sums)
        .map(|((net, groups), local)| {
            let plan = plan.clone();
            std::thread::spawn(move || {
                let group_rows: Vec<u64> = groups.iter().map(|g| g.len() as u64).collect();
                let sorted: Vec<Vec<i64>> = groups
                    .iter()
                    .map(|g| {
                        let mut v: Vec<i64> = g.iter().flatten().copied().collect();
                        v.sort();
                        v
                    })
                    .collect();
                let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
                let mut rng = ChaCha12Rng::seed_from_u64(net.me() as u64 + 70);
                let input = OrderInput { plan: &plan, group_rows: &group_rows, sorted: &sorted };
                rt.block_on(party_with_order(net, scheme, Domain::M127, &local, Some(input), &mut rng))
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn ltz_rounds(k: usize) -> u64 {
    less_than_zero_cost(3, 1, 0, k, concord_query::order::KAPPA, 1).rounds
}

#[test]
fn order_statistics_and_group_gate_match_the_clear_search() {
    let schema = Schema::from_toml(SCHEMA).unwrap();
    let sql = "SELECT g, COUNT(*), MIN(x), MAX(x), MEDIAN(x), PERCENTILE_CONT(0.3) WITHIN GROUP (ORDER BY x) \
               FROM t GROUP BY g";
    let query = parse(sql, &schema).unwrap();
    let splan = query.plan(&schema);
    let parties = data(3, 5);
    for gate in [None, Some(5)] {
        let plan = query.order_plan(&schema, &splan, 3, gate).unwrap().unwrap();
        assert_eq!(plan.columns.len(), 1);
        // COUNT(*) per group is the only sum.
        let sums: Vec<Vec<i128>> = parties.iter().map(|p| p.iter().map(|g| g.len() as i128).collect()).collect();
        let out: Vec<PartyOutcome> =
            run(Scheme::Shamir { t: 1 }, &plan, &parties, sums).into_iter().map(|r| r.unwrap()).collect();
        let results = out[0].order.clone().unwrap();
        assert!(out.iter().all(|o| o.order.as_ref() == Some(&results)), "every party sees the same opened values");
        let totals = reconstruct(&out.iter().map(|o| &o.share).collect::<Vec<_>>()).unwrap();
        let mut any_remainder = false;
        for g in 0..4 {
            let rows: usize = parties.iter().map(|p| p[g].len()).sum();
            let suppressed = gate.is_some_and(|k| (rows as u64) < k);
            assert_eq!(results.suppressed[g], suppressed, "group {g} with {rows} rows, gate {gate:?}");
            // The analyst gets no sum of a suppressed group.
            assert_eq!(totals[g], if suppressed { 0 } else { rows as i128 });
            let per_party: Vec<Vec<i64>> = parties
                .iter()
                .map(|p| {
                    let mut v: Vec<i64> = p[g].iter().flatten().copied().collect();
                    v.sort();
                    v
                })
                .collect();
            let mut pooled = per_party.concat();
            pooled.sort();
            for (s, os) in plan.stats.iter().enumerate() {
                let got = results.values[g * plan.stats.len() + s];
                if suppressed {
                    assert_eq!(got, None);
                    continue;
                }
                assert_eq!(got, search_in_clear(&per_party, -30, 30, os.p), "group {g}, {os:?}");
                assert_eq!(got.map(|v| v.interpolate(os.p)), percentile_cont_sorted(&pooled, os.p));
                any_remainder |= got.is_some_and(|v| v.lower < v.upper);
            }
        }
        // Group c has only NULLs: NULL, not an error. With the gate, b (4 rows)
        // and d (none) are suppressed, a and c (6 rows) kept.
        assert_eq!(results.values[2 * plan.stats.len()], None);
        let expect_suppressed = if gate.is_some() { vec![false, true, false, true] } else { vec![false; 4] };
        assert_eq!(results.suppressed, expect_suppressed);
        assert!(any_remainder, "the data should exercise the interpolation");
        // Rounds of the interactive phase: the comparison batch, the openings,
        // 6 search steps (input, LTZ, open), and the remainder (input, open).
        let expected = ltz_rounds(plan.count_bits)
            + u64::from(gate.is_some())
            + 1
            + u64::from(plan.steps()) * (1 + ltz_rounds(plan.search_bits) + 1)
            + if any_remainder { 2 } else { 0 };
        assert_eq!(plan.steps(), 6);
        for o in &out {
            assert_eq!(o.order_stats.unwrap().rounds, expected, "party {}", o.share.party);
            // Seed agreement, the first input and the final confirmation.
            assert_eq!(o.stats.rounds, expected + 3);
        }
    }
}

#[test]
fn order_statistics_need_an_honest_majority() {
    assert!(check_comparison_scheme(Scheme::Shamir { t: 1 }, 3).is_ok());
    assert!(check_comparison_scheme(Scheme::Shamir { t: 2 }, 5).is_ok());
    for (scheme, n) in [(Scheme::Additive, 2), (Scheme::Additive, 3), (Scheme::Shamir { t: 2 }, 4)] {
        let e = check_comparison_scheme(scheme, n).unwrap_err().to_string();
        assert!(e.contains("honest majority") && e.contains("n >= 2t + 1"), "{e}");
    }
    // The parties refuse before any message.
    let schema = Schema::from_toml(SCHEMA).unwrap();
    let query = parse("SELECT MEDIAN(x) FROM t", &schema).unwrap();
    let plan = query.order_plan(&schema, &query.plan(&schema), 2, None).unwrap().unwrap();
    let parties = vec![vec![vec![Some(1)]], vec![vec![Some(2)]]];
    for r in run(Scheme::Additive, &plan, &parties, vec![vec![], vec![]]) {
        assert!(r.unwrap_err().contains("Shamir"));
    }
}
