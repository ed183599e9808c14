//! Differentially private sessions: which queries may run with noise, how the
//! budget is split, each party's noise share, and the analyst's noisy answer
//! with its accuracy.
//!
//! **What runs.** `COUNT(*)`, `COUNT(col)`, `SUM(col)`, `AVG(col)` and
//! `HISTOGRAM(col, lo, hi, bins)`, with `WHERE` and `GROUP BY` (whose groups
//! are public: the declared category values). Order statistics, second
//! moments, a minimum group size (suppression would itself leak), the input
//! check and `--reveal final` are refused with the reason.
//!
//! **The releases.** The opened vector holds one noisy integer per statistic
//! and group. Statistics are grouped into *releases*: each `COUNT`, each sum of
//! a column, and all bins of one histogram (a row lands in one bin) are one
//! release; the cells of the groups of one release are disjoint (a row is in
//! one group), so by parallel composition a release costs its budget once,
//! whatever the number of groups. Under add/remove-one-row neighbours a count
//! and a histogram have sensitivity 1 and the sum of a column bounded by
//! `[lo, hi]` (rows outside are refused when the data are loaded)
//! `max(|lo|, |hi|)` in the column's scaled units. `SUM(col)` needs only the
//! sum (it is never NULL under DP); `AVG(col)` needs the column's non-null
//! count and sum, and is released as their ratio (post-processing).
//!
//! **The budget** is split evenly over the `k` releases: `epsilon / k` each
//! with discrete Laplace noise (`WITH PRIVACY (epsilon = ...)`; pure DP, and
//! `rho = k (epsilon / k)^2 / 2 = epsilon^2 / (2k)` in zCDP by composition), or
//! `rho / k` each with discrete Gaussian noise (`WITH PRIVACY (rho = ...)`).
//!
//! **The noise** is distributed (`concord_dp::distributed`): every party adds
//! a full independent sample of each cell's mechanism to its own local
//! statistic before sharing it, so the opened value carries `n` samples and no
//! party, nor any coalition of up to `n - 1` parties, sees the un-noised
//! aggregate. The field is always GF(2^127 - 1) under DP, so that the pooled
//! statistic plus `n` samples (each an `i64`) never wraps around.

use concord_dp::{accounting, estimate, Estimate, Mechanism, NoisePlan, Rho};
use concord_query::{Aggregate, ColumnType, Query, ResultTable, Schema, Stat, StatsPlan, Value};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use crate::{invalid, SessionError};

/// The `delta` at which a zCDP cost is shown as `(epsilon, delta)`-DP.
pub const SHOWN_DELTA: f64 = 1e-6;

/// The `epsilon` of the `(epsilon, SHOWN_DELTA)`-DP that `rho`-zCDP implies
/// (the tight conversion), if `rho` is a valid budget.
pub fn epsilon_at_shown_delta(rho: f64) -> Option<f64> {
    Rho::new(rho).and_then(|r| r.epsilon_at(SHOWN_DELTA)).ok()
}

/// [`epsilon_at_shown_delta`] with four decimals, `?` if there is none.
pub fn shown_epsilon(rho: f64) -> String {
    epsilon_at_shown_delta(rho).map_or_else(|| "?".to_string(), |e| format!("{e:.4}"))
}

/// A session's privacy parameter: exactly one of pure `epsilon`-DP (discrete
/// Laplace noise) and `rho`-zCDP (discrete Gaussian noise). JSON:
/// `{"epsilon": 0.5}` or `{"rho": 0.02}`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Privacy {
    /// Pure `epsilon`-DP.
    Epsilon(f64),
    /// `rho`-zCDP.
    Rho(f64),
}

impl Privacy {
    /// Checks the value (finite, in `(0, 1e6]`).
    pub fn validate(self) -> Result<Self, SessionError> {
        let p = match self {
            Privacy::Epsilon(v) => concord_query::PrivacyParam::Epsilon(v),
            Privacy::Rho(v) => concord_query::PrivacyParam::Rho(v),
        };
        p.validate().map_err(invalid)?;
        Ok(self)
    }

    /// From the query's `WITH PRIVACY` clause.
    pub fn of_clause(p: concord_query::PrivacyParam) -> Privacy {
        match p {
            concord_query::PrivacyParam::Epsilon(v) => Privacy::Epsilon(v),
            concord_query::PrivacyParam::Rho(v) => Privacy::Rho(v),
        }
    }
}

impl std::fmt::Display for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Privacy::Epsilon(v) => write!(f, "epsilon = {v}"),
            Privacy::Rho(v) => write!(f, "rho = {v}"),
        }
    }
}

/// The privacy parameter a query asks for: its `WITH PRIVACY` clause and the
/// options' parameter must not disagree (either may be absent).
pub fn resolve(sql: &str, option: Option<Privacy>) -> Result<Option<Privacy>, SessionError> {
    let (_, clause) = concord_query::privacy_clause(sql).map_err(invalid)?;
    let clause = clause.map(Privacy::of_clause);
    match (clause, option.map(Privacy::validate).transpose()?) {
        (Some(a), Some(b)) if a != b => Err(invalid(format!(
            "the query says WITH PRIVACY ({a}) but the options ask for {b}; give the privacy parameter once"
        ))),
        (a, b) => Ok(a.or(b)),
    }
}

/// The statistics of a DP query: those of [`concord_query::plan::stats_for`]
/// except that `SUM` needs no count (it is never NULL under DP).
pub fn dp_stats_plan(query: &Query, schema: &Schema) -> StatsPlan {
    let mut plan = query.plan(schema);
    let needed: std::collections::BTreeSet<Stat> = query
        .select
        .iter()
        .flat_map(|(_, agg)| match agg {
            Aggregate::Sum(_) => concord_query::plan::stats_for(agg).into_iter().skip(1).collect(),
            _ => concord_query::plan::stats_for(agg),
        })
        .collect();
    plan.stats.retain(|s| needed.contains(s));
    plan
}

/// Checks that the pooled statistics plus every party's noise (each sample an
/// `i64`) stay within GF(2^127 - 1) with room for the sign, so that the opened
/// noisy value never wraps around.
pub fn check_domain(plan: &StatsPlan, schema: &Schema, parties: usize) -> Result<(), SessionError> {
    let (_, bound) = concord_query::choose_domain(plan, schema, parties).map_err(invalid)?;
    let noise = (parties as u128).saturating_mul(1u128 << 63);
    let limit = (1u128 << 126) - 1; // (2^127 - 1) / 2, rounded down.
    if bound.saturating_add(noise) >= limit {
        return Err(invalid(format!(
            "with differential privacy the pooled statistics ({bound} at most) plus {parties} noise samples do not \
             fit GF(2^127 - 1); lower max_rows or the column bounds"
        )));
    }
    Ok(())
}

/// One release: statistics that share a mechanism (a count, a column's sum,
/// one histogram's bins), and its noise.
#[derive(Clone, Debug, PartialEq)]
pub struct Release {
    /// What is released, in words.
    pub label: String,
    /// Its sensitivity (add/remove one row), in the statistic's integer units.
    pub sensitivity: u64,
    /// The noise of every cell of the release.
    pub noise: NoisePlan,
}

/// The DP plan of a session, derived identically by every party and the analyst.
#[derive(Clone, Debug, PartialEq)]
pub struct DpPlan {
    /// The parameter asked for.
    pub privacy: Privacy,
    /// The releases.
    pub releases: Vec<Release>,
    /// For each statistic of the plan, its release.
    pub release_of: Vec<usize>,
    /// The zCDP cost of the whole query (what is charged to the budgets).
    pub cost: Rho,
    /// Colluding parties tolerated (the sharing threshold `t`).
    pub tolerate: usize,
}

/// Scaled bounds and scale of a numeric column.
fn numeric(schema: &Schema, col: usize) -> Result<(i64, i64, u32, &str), SessionError> {
    let c = schema.columns.get(col).ok_or_else(|| invalid(format!("column #{col} is not in the schema")))?;
    match c.ty {
        ColumnType::Int { min, max } => Ok((min, max, 0, &c.name)),
        ColumnType::Decimal { scale, min, max } => Ok((min, max, scale, &c.name)),
        ColumnType::Category { .. } => Err(invalid(format!("column {:?} is a category, not a number", c.name))),
    }
}

fn column_name(schema: &Schema, col: usize) -> String {
    schema.columns.get(col).map_or_else(|| format!("#{col}"), |c| c.name.clone())
}

impl DpPlan {
    /// The plan for `query` (whose statistics are `plan`, from [`dp_stats_plan`])
    /// among `parties` parties tolerating `tolerate` colluders; refuses, with
    /// the reason, anything DP does not cover here.
    pub fn new(
        privacy: Privacy,
        query: &Query,
        schema: &Schema,
        plan: &StatsPlan,
        parties: usize,
        tolerate: usize,
    ) -> Result<DpPlan, SessionError> {
        let privacy = privacy.validate()?;
        for (name, agg) in &query.select {
            match agg {
                Aggregate::CountStar
                | Aggregate::Count(_)
                | Aggregate::Sum(_)
                | Aggregate::Avg(_)
                | Aggregate::Histogram { .. } => {}
                _ => {
                    return Err(invalid(format!(
                        "with differential privacy a query may use COUNT, SUM, AVG and HISTOGRAM (with WHERE and \
                         GROUP BY); {name} is not supported"
                    )))
                }
            }
        }
        // Releases: one per count or sum statistic, one per histogram.
        let mut keys: Vec<(String, u64)> = Vec::new();
        let mut release_of = Vec::with_capacity(plan.stats.len());
        for stat in &plan.stats {
            let (label, sensitivity) = match stat {
                Stat::Moment { nonnull, monomial } if monomial.is_empty() => {
                    let label = match nonnull.as_slice() {
                        [] => "COUNT(*)".to_string(),
                        cols => format!(
                            "COUNT({})",
                            cols.iter().map(|c| column_name(schema, *c)).collect::<Vec<_>>().join(", ")
                        ),
                    };
                    (label, estimate::COUNT_SENSITIVITY)
                }
                Stat::Moment { monomial, .. } => match monomial.as_slice() {
                    [c] => {
                        let (lo, hi, _, name) = numeric(schema, *c)?;
                        let s = estimate::sum_sensitivity(lo, hi).map_err(|e| invalid(format!("{name}: {e}")))?;
                        (format!("SUM({name})"), s)
                    }
                    _ => return Err(invalid("with differential privacy, products of columns are not released")),
                },
                Stat::Bin { col, lo, hi, bins, .. } => (
                    format!("HISTOGRAM({}, {lo}, {hi}, {bins})", column_name(schema, *col)),
                    estimate::HISTOGRAM_SENSITIVITY,
                ),
            };
            let index = match keys.iter().position(|(l, _)| *l == label) {
                Some(i) => i,
                None => {
                    keys.push((label, sensitivity));
                    keys.len() - 1
                }
            };
            release_of.push(index);
        }
        let k = keys.len().max(1) as f64;
        let dp = |e: concord_dp::DpError| invalid(format!("privacy: {e}"));
        let mut cost = Rho::ZERO;
        let mut releases = Vec::with_capacity(keys.len());
        for (label, sensitivity) in keys {
            let (mechanism, rho) = match privacy {
                Privacy::Epsilon(eps) => {
                    let e = eps / k;
                    (Mechanism::laplace_for(e, sensitivity as f64).map_err(dp)?, accounting::rho_of_laplace(e))
                }
                Privacy::Rho(rho) => (Mechanism::gaussian_for_rho(rho / k, sensitivity as f64).map_err(dp)?, rho / k),
            };
            cost = cost.checked_add(Rho::new(rho).map_err(dp)?).map_err(dp)?;
            releases.push(Release {
                label,
                sensitivity,
                noise: NoisePlan::new(mechanism, parties, tolerate).map_err(dp)?,
            });
        }
        Ok(DpPlan { privacy, releases, release_of, cost, tolerate })
    }

    /// One party's noise: a sample for every cell (`groups x statistics`,
    /// group-major like the statistics themselves), to add to its local
    /// statistics before sharing them.
    pub fn noise<R: RngCore + ?Sized>(&self, groups: usize, rng: &mut R) -> Result<Vec<i128>, SessionError> {
        let samplers = self
            .releases
            .iter()
            .map(|r| r.noise.share_mechanism().sampler())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("privacy: {e}")))?;
        let mut out = Vec::with_capacity(groups * self.release_of.len());
        for _ in 0..groups {
            for &r in &self.release_of {
                let s = samplers.get(r).ok_or_else(|| invalid("privacy: a statistic has no release"))?;
                out.push(i128::from(s.sample(rng).map_err(|e| invalid(format!("privacy: {e}")))?));
            }
        }
        Ok(out)
    }

    /// What the whole query costs, in words: the parameter, the zCDP cost and
    /// its `(epsilon, delta)` equivalent, the noise and who it protects against.
    pub fn describe(&self) -> String {
        let (mech, guarantee) = match self.privacy {
            Privacy::Epsilon(e) => ("discrete Laplace", format!("pure {e}-DP")),
            Privacy::Rho(r) => {
                let eps = shown_epsilon(r);
                ("discrete Gaussian", format!("{r}-zCDP, i.e. ({eps}, {SHOWN_DELTA:e})-DP"))
            }
        };
        format!(
            "{guarantee} over {} release(s), {mech} noise added by every party before opening (private against \
             any {} colluding part{}); charged rho = {:.6} to the analyst's budget on every node",
            self.releases.len(),
            self.tolerate,
            if self.tolerate == 1 { "y" } else { "ies" },
            self.cost.value()
        )
    }

    /// The analyst's side: the noisy answer and every cell's accuracy from the
    /// opened noisy `totals` (entry `g * stats + s`).
    pub fn answer(
        &self,
        query: &Query,
        schema: &Schema,
        plan: &StatsPlan,
        totals: &[i128],
    ) -> Result<(ResultTable, Vec<CellEstimate>), SessionError> {
        let ns = plan.stats.len();
        if Some(totals.len()) != plan.groups.len().checked_mul(ns) || self.release_of.len() != ns {
            return Err(invalid(format!(
                "expected {} noisy totals ({} groups x {ns} statistics), got {}",
                plan.groups.len().saturating_mul(ns),
                plan.groups.len(),
                totals.len()
            )));
        }
        let mut columns: Vec<String> = query.group_by.iter().map(|c| column_name(schema, *c)).collect();
        columns.extend(query.select.iter().map(|(name, _)| name.clone()));
        let mut rows = Vec::with_capacity(plan.groups.len());
        let mut estimates = Vec::new();
        for (g, key) in plan.groups.iter().enumerate() {
            let mut row = Vec::with_capacity(columns.len());
            for (col, v) in query.group_by.iter().zip(key) {
                let label = match schema.columns.get(*col).map(|c| &c.ty) {
                    Some(ColumnType::Category { values }) => values.get(*v as usize).cloned(),
                    _ => None,
                };
                row.push(Value::Text(label.ok_or_else(|| invalid(format!("group #{g} has an undeclared key")))?));
            }
            let cell = |stat: &Stat| -> Result<(f64, &NoisePlan), SessionError> {
                let s = plan.stats.binary_search(stat).map_err(|_| invalid(format!("the plan lacks {stat:?}")))?;
                let total = totals.get(g * ns + s).copied().unwrap_or_default();
                let r = self.release_of.get(s).and_then(|r| self.releases.get(*r));
                let r = r.ok_or_else(|| invalid("privacy: a statistic has no release"))?;
                Ok((total as f64, &r.noise))
            };
            for (name, agg) in &query.select {
                let stats = concord_query::plan::stats_for(agg);
                let mut push = |bin: Option<usize>, e: Estimate| {
                    estimates.push(CellEstimate { row: g, column: name.clone(), bin, estimate: e })
                };
                let value = match agg {
                    Aggregate::CountStar | Aggregate::Count(_) => {
                        let stat = stats.first().ok_or_else(|| invalid("COUNT has no statistic"))?;
                        let (v, noise) = cell(stat)?;
                        push(None, integer(v, noise, 1.0));
                        Value::Int(v as i128)
                    }
                    Aggregate::Sum(c) => {
                        let (_, _, scale, _) = numeric(schema, *c)?;
                        let stat = stats.get(1).ok_or_else(|| invalid("SUM has no statistic"))?;
                        let (v, noise) = cell(stat)?;
                        let unit = 10f64.powi(-(scale as i32));
                        push(None, integer(v, noise, unit));
                        if scale == 0 {
                            Value::Int(v as i128)
                        } else {
                            Value::Number(v * unit)
                        }
                    }
                    Aggregate::Avg(c) => {
                        let (lo, hi, scale, _) = numeric(schema, *c)?;
                        let (count_stat, sum_stat) = match stats.as_slice() {
                            [a, b] => (a, b),
                            _ => return Err(invalid("AVG needs a count and a sum")),
                        };
                        let (c_noisy, c_noise) = cell(count_stat)?;
                        let (s_noisy, s_noise) = cell(sum_stat)?;
                        let e = ratio(
                            s_noisy,
                            c_noisy,
                            s_noise,
                            c_noise,
                            lo as f64,
                            hi as f64,
                            10f64.powi(-(scale as i32)),
                        );
                        push(None, e);
                        Value::Number(e.value)
                    }
                    Aggregate::Histogram { .. } => {
                        let mut bins = Vec::with_capacity(stats.len());
                        for (b, stat) in stats.iter().enumerate() {
                            let (v, noise) = cell(stat)?;
                            push(Some(b), integer(v, noise, 1.0));
                            bins.push(Value::Int(v as i128));
                        }
                        Value::Array(bins)
                    }
                    _ => return Err(invalid(format!("{name} is not supported with differential privacy"))),
                };
                row.push(value);
            }
            rows.push(row);
        }
        Ok((ResultTable { columns, rows }, estimates))
    }
}

/// A noisy integer (a count, a bin, a sum in units of `unit`): its exact
/// noise standard deviation and exact 95% interval for the un-noised value.
fn integer(noisy: f64, noise: &NoisePlan, unit: f64) -> Estimate {
    let total = noise.total_noise();
    let w = total.ci95_halfwidth() as f64 * unit;
    let value = noisy * unit;
    Estimate { value, noise_scale: total.sd() * unit, ci95: (value - w, value + w) }
}

/// `AVG` as noisy sum over noisy count (at least 1), clamped to the column's
/// bounds; noise scale and interval by the delta method (first order in the
/// count's noise over the count): `sd^2 = (Var(S) + v^2 Var(C)) / C^2`, the
/// half-width combining both exact 95% half-widths the same way, clipped to the bounds.
fn ratio(sum: f64, count: f64, s_noise: &NoisePlan, c_noise: &NoisePlan, lo: f64, hi: f64, unit: f64) -> Estimate {
    let c = count.max(1.0);
    let v = (sum / c).clamp(lo, hi);
    let (s, n) = (s_noise.total_noise(), c_noise.total_noise());
    let sd = ((s.variance() + v * v * n.variance()) / (c * c)).sqrt();
    let ws = s.ci95_halfwidth() as f64 / c;
    let wc = v.abs() * n.ci95_halfwidth() as f64 / c;
    let w = (ws * ws + wc * wc).sqrt();
    Estimate { value: v * unit, noise_scale: sd * unit, ci95: ((v - w).max(lo) * unit, (v + w).min(hi) * unit) }
}

/// The accuracy of one released cell.
#[derive(Clone, Debug, PartialEq)]
pub struct CellEstimate {
    /// Row of the result table (the group).
    pub row: usize,
    /// Column (the select item's name).
    pub column: String,
    /// The histogram bin, for `HISTOGRAM` cells.
    pub bin: Option<usize>,
    /// Value, noise standard deviation and 95% interval.
    pub estimate: Estimate,
}

/// What the analyst is told about the privacy of an answer.
#[derive(Clone, Debug, PartialEq)]
pub struct PrivacyReport {
    /// The parameter, the mechanism and the cost, in words.
    pub description: String,
    /// The zCDP cost charged.
    pub rho: f64,
    /// Every cell's accuracy.
    pub estimates: Vec<CellEstimate>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    const SCHEMA: &str = r#"
table = "patients"
max_rows = 100000
[[column]]
name = "age"
type = "int"
min = 0
max = 120
[[column]]
name = "bmi"
type = "decimal"
scale = 1
min = 10.0
max = 60.0
[[column]]
name = "region"
type = "category"
values = ["north", "south", "east"]
"#;

    fn prepare(sql: &str, privacy: Privacy) -> (Query, Schema, StatsPlan, DpPlan) {
        let schema = Schema::from_toml(SCHEMA).unwrap();
        let query = concord_query::parse(sql, &schema).unwrap();
        let plan = dp_stats_plan(&query, &schema);
        let dp = DpPlan::new(privacy, &query, &schema, &plan, 3, 1).unwrap();
        (query, schema, plan, dp)
    }

    #[test]
    fn releases_and_costs() {
        let (_, _, plan, dp) = prepare(
            "SELECT COUNT(*), SUM(bmi), AVG(age), HISTOGRAM(age, 0, 120, 4) FROM patients GROUP BY region",
            Privacy::Epsilon(1.0),
        );
        // COUNT(*), SUM(bmi), COUNT(age) and SUM(age), one histogram: five releases.
        let labels: Vec<&str> = dp.releases.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels.len(), 5, "{labels:?}");
        assert!(labels.contains(&"HISTOGRAM(age, 0, 120, 4)") && labels.contains(&"SUM(bmi)"), "{labels:?}");
        // SUM(bmi) needs no count of bmi; the four bins share one release.
        assert_eq!(plan.stats.len(), 8);
        assert_eq!(dp.release_of.len(), 8);
        // epsilon / 5 each: rho = 5 * (1/5)^2 / 2 = 0.1.
        assert!((dp.cost.value() - 0.1).abs() < 1e-12);
        let bmi = dp.releases.iter().find(|r| r.label == "SUM(bmi)").unwrap();
        assert_eq!(bmi.sensitivity, 600); // 60.0 at scale 1.
        assert_eq!(bmi.noise.target(), Mechanism::laplace_for(0.2, 600.0).unwrap());
        let (_, _, _, g) = prepare("SELECT COUNT(*), AVG(age) FROM patients", Privacy::Rho(0.3));
        assert!((g.cost.value() - 0.3).abs() < 1e-12);
        assert!(g.describe().contains("discrete Gaussian"), "{}", g.describe());
    }

    #[test]
    fn refuses_what_dp_does_not_cover() {
        let schema = Schema::from_toml(SCHEMA).unwrap();
        for (sql, want) in [
            ("SELECT MEDIAN(age) FROM patients", "MEDIAN(age) is not supported"),
            ("SELECT VAR_POP(age) FROM patients", "VAR_POP(age) is not supported"),
            ("SELECT CORR(age, bmi) FROM patients", "CORR(age, bmi) is not supported"),
        ] {
            let query = concord_query::parse(sql, &schema).unwrap();
            let plan = dp_stats_plan(&query, &schema);
            let e = DpPlan::new(Privacy::Epsilon(1.0), &query, &schema, &plan, 3, 1).unwrap_err().to_string();
            assert!(e.contains(want), "{sql}: {e}");
        }
        let query = concord_query::parse("SELECT COUNT(*) FROM patients", &schema).unwrap();
        let plan = dp_stats_plan(&query, &schema);
        let e = DpPlan::new(Privacy::Epsilon(-1.0), &query, &schema, &plan, 3, 1).unwrap_err().to_string();
        assert!(e.contains("epsilon must be"), "{e}");
    }

    #[test]
    fn resolve_clause_and_option() {
        let sql = "SELECT COUNT(*) FROM t WITH PRIVACY (epsilon = 0.5)";
        assert_eq!(resolve(sql, None).unwrap(), Some(Privacy::Epsilon(0.5)));
        assert_eq!(resolve(sql, Some(Privacy::Epsilon(0.5))).unwrap(), Some(Privacy::Epsilon(0.5)));
        assert!(resolve(sql, Some(Privacy::Epsilon(1.0))).unwrap_err().to_string().contains("give the privacy"));
        assert_eq!(resolve("SELECT COUNT(*) FROM t", Some(Privacy::Rho(0.1))).unwrap(), Some(Privacy::Rho(0.1)));
        assert_eq!(resolve("SELECT COUNT(*) FROM t", None).unwrap(), None);
        assert!(resolve("SELECT COUNT(*) FROM t", Some(Privacy::Rho(f64::INFINITY))).is_err());
    }

    #[test]
    fn noisy_answers_are_centred_on_the_truth_with_honest_intervals() {
        // 200 runs of the analyst's side on exact totals plus three parties' noise:
        // about 95% of the intervals cover the truth, and the mean error is near 0.
        let (query, schema, plan, dp) =
            prepare("SELECT COUNT(*), SUM(age), AVG(age) FROM patients GROUP BY region", Privacy::Epsilon(1.0));
        let groups = plan.groups.len();
        let ns = plan.stats.len();
        // Truth per group: 1000 rows, ages summing to 40000 (mean 40).
        let truth: Vec<i128> = (0..groups)
            .flat_map(|_| {
                plan.stats.iter().map(|s| match s {
                    Stat::Moment { monomial, .. } if monomial.is_empty() => 1000,
                    _ => 40_000,
                })
            })
            .collect();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let (mut covered, mut cells, mut err_sum) = (0, 0, 0.0);
        for _ in 0..200 {
            let mut totals = truth.clone();
            for _ in 0..3 {
                for (t, n) in totals.iter_mut().zip(dp.noise(groups, &mut rng).unwrap()) {
                    *t += n;
                }
            }
            let (table, est) = dp.answer(&query, &schema, &plan, &totals).unwrap();
            assert_eq!(table.rows.len(), groups);
            assert_eq!(est.len(), groups * 3);
            for e in &est {
                let want = match e.column.as_str() {
                    "COUNT(*)" => 1000.0,
                    "SUM(age)" => 40_000.0,
                    _ => 40.0,
                };
                cells += 1;
                if e.estimate.ci95.0 <= want && want <= e.estimate.ci95.1 {
                    covered += 1;
                }
                if e.column == "AVG(age)" {
                    err_sum += e.estimate.value - want;
                }
            }
        }
        let rate = covered as f64 / cells as f64;
        assert!((0.93..=0.995).contains(&rate), "coverage {rate}");
        assert!((err_sum / (200.0 * groups as f64)).abs() < 0.05, "bias {}", err_sum);
        assert_eq!(ns, 3);
    }
}
