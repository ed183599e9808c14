//! # concord-session: one joint query, as every party and the analyst see it
//!
//! A *session* is one run of one query over data split across `n` parties.
//! This crate holds what every participant of a session must agree on and
//! do, independently of how the parties are started (threads, processes of
//! `concord run --processes`, or long-running nodes) and of how they talk:
//!
//! - [`SessionSpec`]: the public, self-contained description of the
//!   computation (query text, schema text, number of parties, sharing
//!   threshold, field, interactive phase, input check, what is revealed).
//!   The analyst's side chooses it once ([`SessionSpec::plan`]); every party
//!   re-derives the same plans from it ([`SessionSpec::prepare`]), so a party
//!   never trusts a plan it did not compute itself.
//! - [`Prepared::run_party`]: one party's run over any
//!   [`concord_net::Transport`], returning its [`ShareReport`] (its share of
//!   the result plus the public values of the interactive phase).
//! - [`Prepared::reconstruct`]: the analyst combines the `n` reports into the
//!   answer ([`Answer`]), checking that the publicly opened values agree.
//! - [`seal`]: a party's report is encrypted to the analyst (X25519,
//!   HKDF-SHA256 and ChaCha20-Poly1305, in the manner of RFC 9180's base
//!   mode), so that a coordinator relaying it learns nothing.
//!
//! The protocols themselves are in `concord-analytics` (secure sum, the
//! interactive phase after Catrina and de Hoogh 2010, the replicated engine
//! after Araki et al. 2016); this crate does no I/O except reading the
//! party's own data file in [`Prepared::local_input`].

use std::path::Path;

use concord_analytics::final_stats::{self, FinalPlan};
use concord_analytics::{AnalyticsError, CheckInput, OrderInput, ResultShare, Scheme};
use concord_data::LocalOrder;
use concord_engine::EngineStats;
use concord_net::Transport;
use concord_query::input_check::{CheckPlan, InputCheck};
use concord_query::order::{MethodChoice, OrderMethod, OrderPlan, OrderResults, OrderValue};
use concord_query::{Domain, Query, ResultTable, Schema, StatsPlan};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

pub mod privacy;
pub mod seal;

pub use privacy::{DpPlan, Privacy, PrivacyReport};

/// Errors of session planning, execution and reconstruction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The specification or the options are invalid (the message says which part and why).
    #[error("{0}")]
    Invalid(String),
    /// The party's data cannot be used (its file, or a value in it).
    #[error("party {party}: {reason}")]
    Data {
        /// The party index.
        party: usize,
        /// What was wrong.
        reason: String,
    },
    /// The secure computation failed.
    #[error(transparent)]
    Protocol(#[from] AnalyticsError),
    /// A party's report is malformed or disagrees with the others.
    #[error("party {party}: {reason}")]
    BadReport {
        /// The party whose report is at fault.
        party: usize,
        /// What was wrong.
        reason: String,
    },
    /// A sealed report cannot be opened (wrong key, or altered in transit).
    #[error("the sealed result of party {party} cannot be opened: {reason}")]
    Seal {
        /// The party whose envelope failed.
        party: usize,
        /// Why.
        reason: String,
    },
}

fn invalid(e: impl std::fmt::Display) -> SessionError {
    SessionError::Invalid(e.to_string())
}

/// The sharing scheme the analyst asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemeChoice {
    /// n-of-n additive sharing.
    Additive,
    /// t-of-n Shamir sharing.
    Shamir,
}

/// What the analyst asks for besides the query (all optional).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionOptions {
    /// Shamir threshold t (default (n-1)/2; n-1 selects additive sharing).
    #[serde(default)]
    pub threshold: Option<usize>,
    /// Sharing scheme (default: additive for 2 parties, Shamir otherwise).
    #[serde(default)]
    pub scheme: Option<SchemeChoice>,
    /// Minimum group size (overrides the schema's; 0 turns it off).
    #[serde(default)]
    pub min_group_size: Option<u64>,
    /// Input check: `clamp`, `reject` or `off` (default: clamp where it can run).
    #[serde(default)]
    pub input_check: Option<String>,
    /// Compute the final statistics inside MPC (three parties) instead of revealing sums.
    #[serde(default)]
    pub reveal_final: bool,
    /// Order method for MIN/MAX/MEDIAN/PERCENTILE_CONT: `auto`, `search` or `sort`.
    #[serde(default)]
    pub order_method: Option<String>,
    /// Differential privacy (else the query's `WITH PRIVACY` clause, if any).
    #[serde(default)]
    pub privacy: Option<Privacy>,
}

/// The public description of one session's computation; identical at every party.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// The query.
    pub sql: String,
    /// The schema, as TOML text (every party checks its own dataset against it).
    pub schema_toml: String,
    /// Number of parties.
    pub parties: usize,
    /// Shamir threshold; `None` for additive sharing.
    pub threshold: Option<usize>,
    /// Whether the field is GF(2^127-1) (else GF(2^61-1)).
    pub m127: bool,
    /// The minimum group size in force.
    #[serde(default)]
    pub min_group_size: Option<u64>,
    /// The input check policy (`clamp`, `reject`; absent: off).
    #[serde(default)]
    pub input_check: Option<String>,
    /// Compute the final statistics inside MPC.
    #[serde(default)]
    pub reveal_final: bool,
    /// The interactive phase uses the oblivious sort (else domain search).
    #[serde(default)]
    pub order_sort: bool,
    /// Differential privacy: every party adds noise before sharing (see [`privacy`]).
    #[serde(default)]
    pub privacy: Option<Privacy>,
}

/// Choose the scheme from a threshold and a scheme choice.
pub fn choose_scheme(n: usize, threshold: Option<usize>, scheme: Option<SchemeChoice>) -> Result<Scheme, SessionError> {
    let s = match (scheme, threshold) {
        (Some(SchemeChoice::Additive), None) => Scheme::Additive,
        (Some(SchemeChoice::Additive), Some(t)) if t + 1 == n => Scheme::Additive,
        (Some(SchemeChoice::Additive), Some(t)) => {
            return Err(invalid(format!(
                "additive sharing is n-of-n: its threshold is n - 1 = {}, not {t}",
                n.saturating_sub(1)
            )))
        }
        (Some(SchemeChoice::Shamir), t) => Scheme::Shamir { t: t.unwrap_or(n.saturating_sub(1) / 2) },
        (None, Some(t)) if t + 1 == n => Scheme::Additive,
        (None, Some(t)) => Scheme::Shamir { t },
        (None, None) => Scheme::default_for(n),
    };
    s.validate(n).map_err(invalid)?;
    Ok(s)
}

/// The input check policy: as asked, else clamp where it can run (Shamir
/// with n >= 2t + 1) and off otherwise (2 parties, additive sharing).
pub fn choose_input_check(asked: Option<InputCheck>, scheme: Scheme, n: usize) -> Result<InputCheck, SessionError> {
    let policy = match asked {
        Some(a) => a,
        None if concord_analytics::check_comparison_scheme(scheme, n).is_ok() => InputCheck::Clamp,
        None => InputCheck::Off,
    };
    concord_analytics::check_input_scheme(policy, scheme, n)?;
    Ok(policy)
}

/// The plan of the interactive phase with its order method chosen.
pub fn plan_order(
    schema: &Schema,
    query: &Query,
    plan: &StatsPlan,
    parties: usize,
    min_group_size: Option<u64>,
    choice: MethodChoice,
) -> Result<Option<OrderPlan>, SessionError> {
    let mut order = query.order_plan(schema, plan, parties, min_group_size).map_err(invalid)?;
    match order.as_mut() {
        Some(o) => {
            o.choose_method(choice, parties, schema.max_rows).map_err(|e| invalid(format!("order method sort: {e}")))?
        }
        None if choice == MethodChoice::Sort => {
            return Err(invalid("order method sort: the query has no MIN, MAX, MEDIAN or PERCENTILE_CONT"))
        }
        None => {}
    }
    Ok(order)
}

/// Parse an order method name (`auto`, `search`, `sort`).
pub fn parse_order_method(name: &str) -> Result<MethodChoice, SessionError> {
    match name {
        "auto" => Ok(MethodChoice::Auto),
        "search" => Ok(MethodChoice::Search),
        "sort" => Ok(MethodChoice::Sort),
        other => Err(invalid(format!("unknown order method {other:?}: expected auto, search or sort"))),
    }
}

/// Parse an input check name (`clamp`, `reject`, `off`).
pub fn parse_input_check(name: &str) -> Result<InputCheck, SessionError> {
    InputCheck::parse(name)
        .ok_or_else(|| invalid(format!("unknown input check {name:?}: expected clamp, reject or off")))
}

/// The field: GF(2^127-1) when secure comparisons run, else the smallest that holds the pooled sums.
pub fn pick_domain(plan: &StatsPlan, schema: &Schema, n: usize, comparisons: bool) -> Result<Domain, SessionError> {
    let (domain, _bound) = concord_query::choose_domain(plan, schema, n).map_err(invalid)?;
    Ok(if comparisons { Domain::M127 } else { domain })
}

impl SessionSpec {
    /// The analyst's side: choose every parameter of a session for `sql`
    /// over `schema_toml` with `parties` parties, refusing (with the reason)
    /// whatever cannot run.
    pub fn plan(
        schema_toml: &str,
        sql: &str,
        parties: usize,
        opts: &SessionOptions,
    ) -> Result<SessionSpec, SessionError> {
        if parties < 2 {
            return Err(invalid(format!("a joint query needs at least two parties, got {parties}")));
        }
        let schema = Schema::from_toml(schema_toml).map_err(|e| invalid(format!("schema: {e}")))?;
        let query = concord_query::parse(sql, &schema).map_err(invalid)?;
        if let Some(p) = privacy::resolve(sql, opts.privacy)? {
            return Self::plan_private(schema_toml, &schema, &query, sql, parties, opts, p);
        }
        let plan = query.plan(&schema);
        let scheme = choose_scheme(parties, opts.threshold, opts.scheme)?;
        let min_group_size = opts.min_group_size.or(schema.min_group_size);
        let choice = parse_order_method(opts.order_method.as_deref().unwrap_or("auto"))?;
        let order = plan_order(&schema, &query, &plan, parties, min_group_size, choice)?;
        if order.is_some() {
            concord_analytics::check_comparison_scheme(scheme, parties)?;
        }
        let asked_check = opts.input_check.as_deref().map(parse_input_check).transpose()?;
        if opts.reveal_final {
            if min_group_size.is_some_and(|k| k > 0) {
                return Err(invalid("reveal final does not support a minimum group size yet; reveal sums instead"));
            }
            if matches!(asked_check, Some(InputCheck::Clamp | InputCheck::Reject)) {
                return Err(invalid("reveal final runs on the replicated engine, which has no input check yet"));
            }
            if opts.threshold.is_some() || opts.scheme.is_some() {
                return Err(invalid(
                    "reveal final always uses three-party replicated sharing: give no threshold or scheme",
                ));
            }
            FinalPlan::new(&query, &schema, &plan, parties)?;
            return Ok(SessionSpec {
                sql: sql.to_owned(),
                schema_toml: schema_toml.to_owned(),
                parties,
                threshold: None,
                m127: false,
                min_group_size: None,
                input_check: None,
                reveal_final: true,
                order_sort: false,
                privacy: None,
            });
        }
        let policy = choose_input_check(asked_check, scheme, parties)?;
        let check = policy != InputCheck::Off;
        let domain = pick_domain(&plan, &schema, parties, order.is_some() || check)?;
        Ok(SessionSpec {
            sql: sql.to_owned(),
            schema_toml: schema_toml.to_owned(),
            parties,
            threshold: threshold_of(scheme),
            m127: domain == Domain::M127,
            min_group_size: order.as_ref().and_then(|o| o.min_group_size),
            input_check: check.then(|| policy.name().to_owned()),
            reveal_final: false,
            order_sort: order.as_ref().is_some_and(|o| matches!(o.method, OrderMethod::ObliviousSort { .. })),
            privacy: None,
        })
    }

    /// [`SessionSpec::plan`] of a differentially private query: refuses the
    /// options that do not combine with noise, and checks the query is covered.
    fn plan_private(
        schema_toml: &str,
        schema: &Schema,
        query: &Query,
        sql: &str,
        parties: usize,
        opts: &SessionOptions,
        p: Privacy,
    ) -> Result<SessionSpec, SessionError> {
        if opts.reveal_final {
            return Err(invalid(
                "differential privacy adds noise to the revealed sums: it cannot combine with reveal final",
            ));
        }
        if opts.min_group_size.is_some_and(|k| k > 0) {
            return Err(invalid(
                "differential privacy protects small groups by its noise; a minimum group size cannot be combined \
                 with it (suppressing a group would itself reveal that it is small)",
            ));
        }
        if opts.input_check.as_deref().is_some_and(|c| c != "off") {
            return Err(invalid(
                "the input check runs on un-noised statistics and cannot be combined with differential privacy yet; \
                 use input check off",
            ));
        }
        if opts.order_method.as_deref().is_some_and(|m| m == "sort") {
            return Err(invalid("order method sort: a differentially private query has no order statistics"));
        }
        let scheme = choose_scheme(parties, opts.threshold, opts.scheme)?;
        let plan = privacy::dp_stats_plan(query, schema);
        DpPlan::new(p, query, schema, &plan, parties, tolerated(scheme, parties))?;
        privacy::check_domain(&plan, schema, parties)?;
        Ok(SessionSpec {
            sql: sql.to_owned(),
            schema_toml: schema_toml.to_owned(),
            parties,
            threshold: threshold_of(scheme),
            m127: true,
            min_group_size: None,
            input_check: None,
            reveal_final: false,
            order_sort: false,
            privacy: Some(p),
        })
    }

    /// Every party's (and the analyst's) side: re-derive all plans from the
    /// specification, refusing an inconsistent one.
    pub fn prepare(&self) -> Result<Prepared, SessionError> {
        let schema = Schema::from_toml(&self.schema_toml).map_err(|e| invalid(format!("schema: {e}")))?;
        let query = concord_query::parse(&self.sql, &schema).map_err(invalid)?;
        let plan = query.plan(&schema);
        let n = self.parties;
        if n < 2 {
            return Err(invalid(format!("a session needs at least two parties, got {n}")));
        }
        if let Some(p) = self.privacy {
            return self.prepare_private(schema, query, p);
        }
        if self.reveal_final {
            let fplan = FinalPlan::new(&query, &schema, &plan, n)?;
            return Ok(Prepared {
                spec: self.clone(),
                schema,
                query,
                plan,
                order: None,
                check: None,
                policy: InputCheck::Off,
                final_plan: Some(fplan),
                scheme: Scheme::Shamir { t: 1 },
                domain: Domain::M61,
                dp: None,
            });
        }
        let scheme = self.scheme()?;
        let choice = if self.order_sort { MethodChoice::Sort } else { MethodChoice::Search };
        let order = plan_order(&schema, &query, &plan, n, self.min_group_size, choice)?;
        let policy = match self.input_check.as_deref() {
            None => InputCheck::Off,
            Some(name) => parse_input_check(name)?,
        };
        let check =
            if policy == InputCheck::Off { None } else { Some(CheckPlan::new(&schema, &plan).map_err(invalid)?) };
        let domain = if self.m127 { Domain::M127 } else { Domain::M61 };
        Ok(Prepared {
            spec: self.clone(),
            schema,
            query,
            plan,
            order,
            check,
            policy,
            final_plan: None,
            scheme,
            domain,
            dp: None,
        })
    }

    /// [`SessionSpec::prepare`] of a differentially private specification:
    /// the clause and the parameter agree, nothing else is asked for, the
    /// field is GF(2^127 - 1).
    fn prepare_private(&self, schema: Schema, query: Query, p: Privacy) -> Result<Prepared, SessionError> {
        let n = self.parties;
        if privacy::resolve(&self.sql, Some(p))? != Some(p) {
            return Err(invalid("the privacy parameter disagrees with the query's WITH PRIVACY clause"));
        }
        if self.reveal_final || self.input_check.is_some() || self.min_group_size.is_some() || self.order_sort {
            return Err(invalid(
                "a differentially private session has no reveal final, input check, minimum group size or sort",
            ));
        }
        if !self.m127 {
            return Err(invalid("a differentially private session computes in GF(2^127 - 1)"));
        }
        let scheme = self.scheme()?;
        let plan = privacy::dp_stats_plan(&query, &schema);
        let dp = DpPlan::new(p, &query, &schema, &plan, n, tolerated(scheme, n))?;
        privacy::check_domain(&plan, &schema, n)?;
        Ok(Prepared {
            spec: self.clone(),
            schema,
            query,
            plan,
            order: None,
            check: None,
            policy: InputCheck::Off,
            final_plan: None,
            scheme,
            domain: Domain::M127,
            dp: Some(dp),
        })
    }
}

/// The threshold a specification records for `scheme` (`None` for additive sharing).
fn threshold_of(scheme: Scheme) -> Option<usize> {
    match scheme {
        Scheme::Shamir { t } => Some(t),
        _ => None,
    }
}

impl SessionSpec {
    /// The sharing scheme the specification records, checked against its party count.
    fn scheme(&self) -> Result<Scheme, SessionError> {
        let scheme = match self.threshold {
            Some(t) => Scheme::Shamir { t },
            None => Scheme::Additive,
        };
        scheme.validate(self.parties).map_err(invalid)?;
        Ok(scheme)
    }
}

/// Colluding parties a scheme tolerates: `t` for Shamir, `n - 1` for additive sharing.
pub fn tolerated(scheme: Scheme, n: usize) -> usize {
    match scheme {
        Scheme::Shamir { t } => t,
        _ => n.saturating_sub(1),
    }
}

/// A specification with every plan derived from it.
#[derive(Debug)]
pub struct Prepared {
    /// The specification.
    pub spec: SessionSpec,
    /// Its schema.
    pub schema: Schema,
    /// Its query.
    pub query: Query,
    /// The statistics every party computes locally.
    pub plan: StatsPlan,
    /// The interactive phase (order statistics, minimum group size), if any.
    pub order: Option<OrderPlan>,
    /// The input check's plan, if it runs.
    pub check: Option<CheckPlan>,
    /// The input check policy.
    pub policy: InputCheck,
    /// With `reveal_final`: the final statistics computed inside MPC.
    pub final_plan: Option<FinalPlan>,
    /// The sharing scheme.
    pub scheme: Scheme,
    /// The field.
    pub domain: Domain,
    /// With differential privacy: the noise and the accuracy of the answer.
    pub dp: Option<DpPlan>,
}

/// One party's private input to a session: its local statistics and, with
/// an interactive phase, its rows per group and sorted values.
#[derive(Debug)]
pub struct LocalInput {
    /// Local statistics, as in [`StatsPlan`].
    pub sums: Vec<i128>,
    /// The private order input.
    pub order: Option<LocalOrder>,
}

/// What one party sends the analyst at the end of a session.
///
/// `values` are the party's **secret** share of the result; the rest is
/// public (opened to every computing party anyway). `Debug` redacts the share.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareReport {
    /// The party's index.
    pub party: usize,
    /// Its share of the result (decimal field elements, or 64-bit components with `reveal_final`).
    pub values: Vec<String>,
    /// Rounds of the whole session at this party.
    pub rounds: u64,
    /// Bytes sent by this party.
    pub bytes_sent: u64,
    /// Bytes received by this party.
    pub bytes_received: u64,
    /// The public results of the interactive phase.
    #[serde(default)]
    pub order: Option<OrderReport>,
    /// Rounds and bytes sent of the input check, if it ran.
    #[serde(default)]
    pub check: Option<(u64, u64)>,
}

impl std::fmt::Debug for ShareReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareReport")
            .field("party", &self.party)
            .field("values", &format_args!("<{} redacted>", self.values.len()))
            .field("rounds", &self.rounds)
            .field("bytes_sent", &self.bytes_sent)
            .field("bytes_received", &self.bytes_received)
            .field("order", &self.order)
            .field("check", &self.check)
            .finish()
    }
}

/// [`OrderResults`] as a party reports them (public values).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderReport {
    /// Per group: suppressed.
    pub suppressed: Vec<bool>,
    /// (x_k, x_{k+1}, r) per group and order statistic, `None` for NULL or suppressed.
    pub values: Vec<Option<(i64, i64, u64)>>,
    /// Rounds of the interactive phase.
    pub rounds: u64,
    /// Bytes sent in the interactive phase.
    pub bytes_sent: u64,
}

impl OrderReport {
    fn new(r: &OrderResults, stats: EngineStats) -> Self {
        OrderReport {
            suppressed: r.suppressed.clone(),
            values: r.values.iter().map(|v| v.map(|v| (v.lower, v.upper, v.remainder))).collect(),
            rounds: stats.rounds,
            bytes_sent: stats.bytes_sent,
        }
    }

    fn results(&self, plan: &OrderPlan) -> OrderResults {
        OrderResults {
            stats: plan.stats.clone(),
            min_group_size: plan.min_group_size,
            suppressed: self.suppressed.clone(),
            values: self
                .values
                .iter()
                .map(|v| v.map(|(lower, upper, remainder)| OrderValue { lower, upper, remainder }))
                .collect(),
        }
    }
}

/// The analyst's answer and what it cost.
#[derive(Debug)]
pub struct Answer {
    /// The result table.
    pub table: ResultTable,
    /// The field used.
    pub domain: Domain,
    /// The sharing scheme used.
    pub scheme: Scheme,
    /// Per party rounds and bytes.
    pub stats: Vec<EngineStats>,
    /// Number of statistics each party contributed.
    pub stats_per_party: usize,
    /// The interactive phase's description, if it ran.
    pub order: Option<String>,
    /// What the interactive phase opens to every computing party.
    pub order_revealed: &'static str,
    /// Per party rounds and bytes of the interactive phase.
    pub order_stats: Vec<EngineStats>,
    /// Number of groups suppressed by the minimum group size.
    pub suppressed: usize,
    /// The input check's description and policy, if it ran.
    pub check: Option<(String, InputCheck)>,
    /// Per party rounds and bytes of the input check.
    pub check_stats: Vec<EngineStats>,
    /// With `reveal_final`: what was computed inside MPC and revealed.
    pub reveal_final: Option<String>,
    /// With differential privacy: the cost and every cell's accuracy.
    pub privacy: Option<PrivacyReport>,
}

impl Answer {
    /// The answer of a `reveal_final` computation (three-party replicated
    /// sharing, nothing but the final values revealed).
    pub fn of_final(table: ResultTable, stats: Vec<EngineStats>, stats_per_party: usize, fplan: &FinalPlan) -> Answer {
        Answer {
            table,
            domain: Domain::M61,
            scheme: Scheme::Shamir { t: 1 },
            stats,
            stats_per_party,
            order: None,
            order_revealed: order_revealed(None),
            order_stats: Vec::new(),
            suppressed: 0,
            check: None,
            check_stats: Vec::new(),
            reveal_final: Some(describe_final(fplan)),
            privacy: None,
        }
    }
}

/// What the interactive phase of `order` opens to every computing party.
pub fn order_revealed(order: Option<&OrderPlan>) -> &'static str {
    match order.map(|o| o.method) {
        Some(OrderMethod::ObliviousSort { .. }) => {
            "the order statistics themselves (and which groups are suppressed or have no value); the sort's opened \
             comparisons are simulatable after its secret shuffle"
        }
        _ => {
            "the opened comparison bits, hence the order statistics (and which groups are suppressed or have no value)"
        }
    }
}

/// What `reveal_final` reveals, in words.
pub fn describe_final(fplan: &FinalPlan) -> String {
    format!(
        "final statistics computed inside MPC: {} aggregate(s) over {} group(s), three-party replicated sharing \
         over Z/2^64, fixed point with {} fractional bits (relative error within about 2^-13); the analyst \
         receives only those values and NULL flags{}",
        fplan.aggs.len(),
        fplan.groups,
        final_stats::FRAC,
        if fplan.revealed.iter().any(|r| *r) { ", plus the totals of COUNT, SUM and HISTOGRAM" } else { "" }
    )
}

fn stats(rounds: u64, bytes_sent: u64, bytes_received: u64) -> EngineStats {
    EngineStats { rounds, bytes_sent, bytes_received, messages_sent: 0 }
}

impl Prepared {
    /// What this session computes and reveals, in words, one line per fact:
    /// what every operator is shown before approving it.
    pub fn describe(&self) -> Vec<String> {
        let name = |c: &usize| self.schema.columns.get(*c).map_or_else(|| format!("#{c}"), |d| d.name.clone());
        let stats: Vec<String> = self
            .plan
            .stats
            .iter()
            .map(|s| match s {
                concord_query::Stat::Moment { monomial, .. } if monomial.is_empty() => "row count".to_string(),
                concord_query::Stat::Moment { monomial, .. } => {
                    format!("sum of {}", monomial.iter().map(name).collect::<Vec<_>>().join(" * "))
                }
                concord_query::Stat::Bin { col, index, .. } => format!("{} histogram bin {index}", name(col)),
            })
            .collect();
        let mut lines = vec![
            format!("query: {}", self.spec.sql),
            format!(
                "computes: {} statistic(s) in each of {} group(s): {}",
                self.plan.stats.len(),
                self.plan.groups.len(),
                stats.join(", ")
            ),
            format!(
                "sharing: {:?} among {} parties ({} colluding parties learn nothing)",
                self.scheme,
                self.spec.parties,
                tolerated(self.scheme, self.spec.parties)
            ),
        ];
        lines.push(match (&self.dp, &self.final_plan) {
            (Some(dp), _) => format!("revealed to the analyst only: noisy totals; {}", dp.describe()),
            (None, Some(f)) => format!("revealed to the analyst only: {}", describe_final(f)),
            (None, None) => "revealed to the analyst only: the exact pooled totals of these statistics".to_string(),
        });
        let mut parties = Vec::new();
        if let Some(o) = &self.order {
            parties.push(format!("{}: {}", o.describe(&self.schema), order_revealed(Some(o))));
        }
        if self.policy == InputCheck::Reject {
            parties.push("the input check opens one bit per party (whether its statistics are feasible)".to_string());
        }
        lines.push(if parties.is_empty() {
            "revealed to the computing parties: nothing (they see only secret shares)".to_string()
        } else {
            format!("revealed to the computing parties: {}", parties.join("; "))
        });
        lines
    }

    /// Load party `me`'s data file, check it against the schema, and compute
    /// its local statistics (and order input).
    pub fn local_input(&self, me: usize, file: &Path) -> Result<LocalInput, SessionError> {
        let data = |e: concord_data::DataError| SessionError::Data { party: me, reason: e.to_string() };
        let table = concord_data::load_table(file, &self.schema).map_err(data)?;
        let sums = concord_data::local_stats(&table, &self.query, &self.plan).map_err(data)?;
        let order = self
            .order
            .as_ref()
            .map(|o| concord_data::local_order(&table, &self.query, &self.plan, o))
            .transpose()
            .map_err(data)?;
        Ok(LocalInput { sums, order })
    }

    /// Run this party's side of the session over `net` and return its report for the analyst.
    pub async fn run_party<T: Transport, G: RngCore + CryptoRng>(
        &self,
        net: T,
        local: &LocalInput,
        rng: &mut G,
    ) -> Result<ShareReport, SessionError> {
        let me = net.me();
        if let Some(fplan) = &self.final_plan {
            let out = final_stats::party_final(net, fplan, self.plan.stats.len(), &local.sums, rng).await?;
            return Ok(ShareReport {
                party: me,
                values: out.components.iter().map(|v| v.to_string()).collect(),
                rounds: out.stats.rounds,
                bytes_sent: out.stats.bytes_sent,
                bytes_received: out.stats.bytes_received,
                order: None,
                check: None,
            });
        }
        let input = match (&self.order, &local.order) {
            (Some(plan), Some(l)) => Some(OrderInput { plan, group_rows: &l.group_rows, sorted: &l.sorted }),
            _ => None,
        };
        let check = self.check.as_ref().map(|plan| CheckInput { plan, policy: self.policy });
        // With differential privacy, this party's noise share goes into its
        // own statistics before they are shared (see `privacy`).
        let noisy;
        let sums = match &self.dp {
            Some(dp) => {
                let noise = dp.noise(self.plan.groups.len(), rng)?;
                if noise.len() != local.sums.len() {
                    return Err(invalid("the noise does not match the local statistics"));
                }
                noisy = local.sums.iter().zip(noise).map(|(s, e)| s + e).collect::<Vec<i128>>();
                &noisy
            }
            None => &local.sums,
        };
        let out = concord_analytics::party_checked(net, self.scheme, self.domain, sums, input, check, rng).await?;
        Ok(ShareReport {
            party: me,
            values: out.share.expose().iter().map(|v| v.to_string()).collect(),
            rounds: out.stats.rounds,
            bytes_sent: out.stats.bytes_sent,
            bytes_received: out.stats.bytes_received,
            order: out.order.as_ref().map(|r| OrderReport::new(r, out.order_stats.unwrap_or_default())),
            check: out.check_stats.map(|s| (s.rounds, s.bytes_sent)),
        })
    }

    /// The analyst's side: combine the parties' reports (in party order)
    /// into the answer. Refuses reports that are malformed, mislabelled,
    /// or whose public values disagree.
    pub fn reconstruct(&self, reports: &[ShareReport]) -> Result<Answer, SessionError> {
        let n = self.spec.parties;
        if reports.len() != n {
            return Err(invalid(format!("expected {n} result shares, got {}", reports.len())));
        }
        let mut shares = Vec::with_capacity(n);
        let mut per_party = Vec::with_capacity(n);
        let mut opened: Option<OrderReport> = None;
        let mut order_stats = Vec::new();
        let mut check_stats = Vec::new();
        for (i, r) in reports.iter().enumerate() {
            let bad = |reason: String| SessionError::BadReport { party: i, reason };
            if r.party != i {
                return Err(bad(format!("its share is labelled as party {}", r.party)));
            }
            let values = r
                .values
                .iter()
                .enumerate()
                // The value itself is not echoed: it is (meant to be) a secret share.
                .map(|(k, v)| v.parse::<u128>().map_err(|_| bad(format!("share value {k} is not a decimal number"))))
                .collect::<Result<Vec<u128>, _>>()?;
            if self.order.is_some() != r.order.is_some() {
                return Err(bad("it did not report the public results of the interactive phase as planned".into()));
            }
            if let Some(o) = &r.order {
                order_stats.push(stats(o.rounds, o.bytes_sent, 0));
                let mine = OrderReport { rounds: 0, bytes_sent: 0, ..o.clone() };
                match &opened {
                    None => opened = Some(mine),
                    Some(first) if *first == mine => {}
                    Some(_) => return Err(bad("it reports other opened order statistics than party 0".into())),
                }
            }
            if let Some((rounds, bytes)) = r.check {
                check_stats.push(stats(rounds, bytes, 0));
            }
            shares.push(ResultShare::from_parts(i, n, self.scheme, self.domain, values));
            per_party.push(stats(r.rounds, r.bytes_sent, r.bytes_received));
        }
        if let Some(fplan) = &self.final_plan {
            let comps: Vec<Vec<u64>> = shares.iter().map(|s| s.expose().iter().map(|v| *v as u64).collect()).collect();
            let refs: Vec<&[u64]> = comps.iter().map(|c| c.as_slice()).collect();
            let table = final_stats::finalize_final(&self.query, &self.schema, &self.plan, fplan, &refs)?;
            return Ok(Answer::of_final(table, per_party, self.plan.len(), fplan));
        }
        let refs: Vec<_> = shares.iter().collect();
        let totals = concord_analytics::reconstruct(&refs)?;
        if let Some(dp) = &self.dp {
            let (table, estimates) = dp.answer(&self.query, &self.schema, &self.plan, &totals)?;
            let privacy = Some(PrivacyReport { description: dp.describe(), rho: dp.cost.value(), estimates });
            return Ok(Answer {
                table,
                domain: self.domain,
                scheme: self.scheme,
                stats: per_party,
                stats_per_party: self.plan.len(),
                order: None,
                order_revealed: order_revealed(None),
                order_stats,
                suppressed: 0,
                check: None,
                check_stats,
                reveal_final: None,
                privacy,
            });
        }
        let results = match (&self.order, &opened) {
            (Some(plan), Some(o)) => Some(o.results(plan)),
            _ => None,
        };
        let table = concord_query::finalize_with(&self.query, &self.schema, &self.plan, &totals, results.as_ref())
            .map_err(invalid)?;
        Ok(Answer {
            table,
            domain: self.domain,
            scheme: self.scheme,
            stats: per_party,
            stats_per_party: self.plan.len(),
            order: self.order.as_ref().map(|o| o.describe(&self.schema)),
            order_revealed: order_revealed(self.order.as_ref()),
            order_stats,
            suppressed: results.map(|r| r.suppressed.iter().filter(|s| **s).count()).unwrap_or(0),
            check: self.check.as_ref().map(|c| (c.describe(self.policy, n), self.policy)),
            check_stats,
            reveal_final: None,
            privacy: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_report_debug_redacts_the_share() {
        let r = ShareReport {
            party: 1,
            values: vec!["123456789".into()],
            rounds: 3,
            bytes_sent: 10,
            bytes_received: 10,
            order: None,
            check: None,
        };
        let shown = format!("{r:?}");
        assert!(!shown.contains("123456789") && shown.contains("redacted"), "{shown}");
    }
}
