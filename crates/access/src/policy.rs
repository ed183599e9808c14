//! A node's access policy (TOML) and its decision on one request.
//!
//! ```toml
//! [defaults]                        # all optional
//! require_operator_approval = false
//! max_queries_per_day = 100         # per analyst, on this node (absent: unlimited)
//! min_group_size = 10               # absent or 0: none
//! epsilon_default = 1.0             # used when a request gives no epsilon
//! max_epsilon = 2.0                 # refuse larger epsilons, and requests without one
//! budget = { rho = 0.5 }            # or { epsilon = 3.0, delta = 1e-6 }: carried to the DP accountant
//!
//! [[rule]]
//! name = "researchers-patients"
//! analysts = ["alice"]              # and/or roles = ["researcher"]
//! datasets = ["patients"]
//! columns = ["age", "bmi", "region"]            # columns aggregates may read
//! functions = ["COUNT", "SUM", "AVG", "HISTOGRAM", "MEDIAN"]
//! where_columns = ["region"]
//! group_by_columns = ["region"]
//! min_group_size = 5                # any [defaults] key may be overridden per rule
//! max_queries_per_day = 20
//! require_operator_approval = true
//! approvals = { k = 2, of = ["a", "b", "c"] }   # k-of-n data owners must approve (optional)
//! ```
//!
//! **Default deny.** The *first* rule (in file order) whose `analysts`
//! contains the analyst or whose `roles` contains the analyst's role, and
//! whose `datasets` contains the dataset, decides; later rules are not
//! consulted. No matching rule: denied. In a rule, an absent list allows
//! nothing (a rule without `where_columns` allows no WHERE clause) and `"*"`
//! allows everything. Column names compare case-insensitively, as in SQL.
//!
//! **Minimum group size.** A request asking for a smaller minimum group size
//! than the policy's is *raised*, not refused: the decision reports the
//! effective size (the larger of the request's, or else the schema's, and
//! the policy's). The coordinator puts it into the session; every node checks
//! the session against its own decision ([`Allowed::check_session`]) and
//! against the signed request ([`crate::VerifiedRequest::check_covers`]:
//! raising is allowed, lowering is not).
//!
//! **Epsilon.** The request's epsilon, or else the rule's `epsilon_default`;
//! with `max_epsilon` a larger one, or none at all, is denied. Budgets are
//! only carried ([`Budget`]); spending them is the DP accountant's job.

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use concord_query::{Aggregate, ColumnId, Predicate, Query, Schema};
use serde::Deserialize;
use toml::Spanned;

use crate::request::{Epsilon, RequestOptions};
use crate::{line_at, AccessError, VerifiedRequest};

/// The aggregate function names a policy may list (`COUNT` covers `COUNT(*)`).
#[rustfmt::skip]
pub const FUNCTIONS: &[&str] = &[
    "COUNT", "SUM", "AVG", "VAR_POP", "VAR_SAMP", "STDDEV_POP", "STDDEV_SAMP", "COVAR_POP", "COVAR_SAMP", "CORR",
    "REGR_SLOPE", "REGR_INTERCEPT", "REGR_R2", "LINREG", "HISTOGRAM", "MIN", "MAX", "MEDIAN", "PERCENTILE_CONT",
];

/// A privacy budget per analyst and dataset, carried unchanged to the DP code.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// zero-concentrated DP, rho > 0.
    Rho(f64),
    /// (epsilon, delta)-DP, for the DP code to convert.
    EpsilonDelta {
        /// epsilon > 0.
        epsilon: f64,
        /// delta in (0, 1).
        delta: f64,
    },
}

/// k of the named data owners must approve (with a threshold signature).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approvals {
    /// How many approvals are needed, 1..=`of.len()`.
    pub k: usize,
    /// The data owners who may approve.
    pub of: Vec<String>,
}

/// One rule, with the `[defaults]` already filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Unique name, reported in decisions.
    pub name: String,
    /// Line of the rule's `name` in the policy file.
    pub line: usize,
    /// Analysts the rule applies to.
    pub analysts: Vec<String>,
    /// Roles the rule applies to.
    pub roles: Vec<String>,
    /// Datasets the rule applies to.
    pub datasets: Vec<String>,
    /// Columns aggregates may read.
    pub columns: Vec<String>,
    /// Aggregate functions allowed (upper case, from [`FUNCTIONS`], or `*`).
    pub functions: Vec<String>,
    /// Columns WHERE may use.
    pub where_columns: Vec<String>,
    /// Columns GROUP BY may use.
    pub group_by_columns: Vec<String>,
    /// Minimum group size (0: none).
    pub min_group_size: u64,
    /// Queries per analyst per day on this node (`None`: unlimited).
    pub max_queries_per_day: Option<u64>,
    /// The node's operator must approve each query.
    pub require_operator_approval: bool,
    /// Epsilon when the request gives none.
    pub epsilon_default: Option<Epsilon>,
    /// Largest epsilon allowed; if set, a request without epsilon (and no default) is denied.
    pub max_epsilon: Option<Epsilon>,
    /// The privacy budget.
    pub budget: Option<Budget>,
    /// Data-owner approvals needed.
    pub approvals: Option<Approvals>,
}

/// A node's policy: its rules, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyToml {
    #[serde(default)]
    defaults: LimitsToml,
    #[serde(default)]
    rule: Vec<RuleToml>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsToml {
    require_operator_approval: Option<bool>,
    max_queries_per_day: Option<u64>,
    min_group_size: Option<u64>,
    epsilon_default: Option<Spanned<f64>>,
    max_epsilon: Option<Spanned<f64>>,
    budget: Option<Spanned<BudgetToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleToml {
    name: Spanned<String>,
    #[serde(default)]
    analysts: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    datasets: Vec<String>,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    functions: Vec<Spanned<String>>,
    #[serde(default)]
    where_columns: Vec<String>,
    #[serde(default)]
    group_by_columns: Vec<String>,
    require_operator_approval: Option<bool>,
    max_queries_per_day: Option<u64>,
    min_group_size: Option<u64>,
    epsilon_default: Option<Spanned<f64>>,
    max_epsilon: Option<Spanned<f64>>,
    budget: Option<Spanned<BudgetToml>>,
    approvals: Option<Spanned<ApprovalsToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetToml {
    rho: Option<f64>,
    epsilon: Option<f64>,
    delta: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalsToml {
    k: usize,
    of: Vec<String>,
}

impl Policy {
    /// Parses a policy (format in the [module docs](self)). Errors name the
    /// line: TOML syntax, unknown keys and wrong types as reported by `toml`;
    /// duplicate rule names, unknown functions, bad epsilons or budgets,
    /// `k > n` and rules that could never match by this crate.
    pub fn from_toml(text: &str) -> Result<Policy, AccessError> {
        let raw: PolicyToml =
            toml::from_str(text).map_err(|e| AccessError::Policy(e.to_string().trim_end().to_string()))?;
        let at = |span: std::ops::Range<usize>| line_at(text, span.start);
        let err = |line: usize, msg: String| AccessError::Policy(format!("line {line}: {msg}"));
        let epsilon = |v: &Option<Spanned<f64>>, key: &str| -> Result<Option<Epsilon>, AccessError> {
            v.as_ref()
                .map(|s| {
                    Epsilon::new(*s.get_ref())
                        .map_err(|_| err(at(s.span()), format!("`{key}` must be finite and > 0, got {}", s.get_ref())))
                })
                .transpose()
        };
        let budget = |v: &Option<Spanned<BudgetToml>>| -> Result<Option<Budget>, AccessError> {
            let Some(s) = v else { return Ok(None) };
            let b = s.get_ref();
            let pos = |x: f64| x.is_finite() && x > 0.0;
            match (b.rho, b.epsilon, b.delta) {
                (Some(rho), None, None) if pos(rho) => Ok(Some(Budget::Rho(rho))),
                (None, Some(epsilon), Some(delta)) if pos(epsilon) && pos(delta) && delta < 1.0 => {
                    Ok(Some(Budget::EpsilonDelta { epsilon, delta }))
                }
                _ => Err(err(
                    at(s.span()),
                    "`budget` must be { rho = R } with R > 0, or { epsilon = E, delta = D } with E > 0 and 0 < D < 1"
                        .into(),
                )),
            }
        };
        let d = &raw.defaults;
        let d_eps_default = epsilon(&d.epsilon_default, "epsilon_default")?;
        let d_max_epsilon = epsilon(&d.max_epsilon, "max_epsilon")?;
        let d_budget = budget(&d.budget)?;
        let mut rules: Vec<Rule> = Vec::with_capacity(raw.rule.len());
        for r in raw.rule {
            let line = at(r.name.span());
            let name = r.name.into_inner();
            let rule_err = |msg: String| err(line, format!("rule `{name}`: {msg}"));
            if name.trim().is_empty() || name == "default" {
                return Err(err(line, format!("rule name {name:?} is empty or reserved")));
            }
            if let Some(first) = rules.iter().find(|x| x.name == name) {
                return Err(rule_err(format!("duplicate rule name (first at line {})", first.line)));
            }
            if r.analysts.is_empty() && r.roles.is_empty() {
                return Err(rule_err("names no `analysts` and no `roles`, so it can never match".into()));
            }
            if r.datasets.is_empty() {
                return Err(rule_err("`datasets` is empty, so it can never match".into()));
            }
            let mut functions = Vec::with_capacity(r.functions.len());
            for f in &r.functions {
                let upper = f.get_ref().to_ascii_uppercase();
                if upper != "*" && !FUNCTIONS.contains(&upper.as_str()) {
                    return Err(err(
                        at(f.span()),
                        format!("rule `{name}`: unknown function `{}` (known: {})", f.get_ref(), FUNCTIONS.join(", ")),
                    ));
                }
                functions.push(upper);
            }
            let approvals = match &r.approvals {
                None => None,
                Some(s) => {
                    let a = s.get_ref();
                    let line = at(s.span());
                    let distinct: HashSet<&String> = a.of.iter().collect();
                    if a.k < 2 || a.k > a.of.len() {
                        return Err(err(
                            line,
                            format!(
                                "rule `{name}`: approvals need 2 <= k <= n (a threshold signature of k data owners; \
                                 for one, use require_operator_approval), got k = {} of n = {}",
                                a.k,
                                a.of.len()
                            ),
                        ));
                    }
                    if distinct.len() != a.of.len() {
                        return Err(err(line, format!("rule `{name}`: approvals `of` names a data owner twice")));
                    }
                    Some(Approvals { k: a.k, of: a.of.clone() })
                }
            };
            let epsilon_default = epsilon(&r.epsilon_default, "epsilon_default")?.or(d_eps_default);
            let max_epsilon = epsilon(&r.max_epsilon, "max_epsilon")?.or(d_max_epsilon);
            if let (Some(e), Some(m)) = (epsilon_default, max_epsilon) {
                if e > m {
                    return Err(rule_err(format!("epsilon_default {e} exceeds max_epsilon {m}")));
                }
            }
            rules.push(Rule {
                line,
                analysts: r.analysts,
                roles: r.roles,
                datasets: r.datasets,
                columns: r.columns,
                functions,
                where_columns: r.where_columns,
                group_by_columns: r.group_by_columns,
                min_group_size: r.min_group_size.or(d.min_group_size).unwrap_or(0),
                max_queries_per_day: r.max_queries_per_day.or(d.max_queries_per_day),
                require_operator_approval: r.require_operator_approval.or(d.require_operator_approval).unwrap_or(false),
                epsilon_default,
                max_epsilon,
                budget: budget(&r.budget)?.or(d_budget),
                approvals,
                name,
            });
        }
        Ok(Policy { rules })
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The decision on a request (see the [module docs](self)). Checks, in
    /// order, and denies at the first failure: a rule matches, the daily
    /// limit, functions, aggregated columns, WHERE columns, GROUP BY columns,
    /// epsilon.
    pub fn evaluate(&self, facts: &RequestFacts, usage: &Usage) -> Decision {
        let Some(rule) = self.rules.iter().find(|r| r.matches(facts)) else {
            return Decision::Deny(Denial {
                rule: "default".into(),
                reason: DenyReason::NoRule {
                    analyst: facts.analyst.clone(),
                    role: facts.role.clone(),
                    dataset: facts.dataset.clone(),
                },
            });
        };
        let deny = |reason| Decision::Deny(Denial { rule: rule.name.clone(), reason });
        if let Some(limit) = rule.max_queries_per_day {
            if usage.queries_today >= limit {
                return deny(DenyReason::RateLimit {
                    analyst: facts.analyst.clone(),
                    used: usage.queries_today,
                    limit,
                });
            }
        }
        let checks: [(&BTreeSet<String>, &Vec<String>, Part); 4] = [
            (&facts.functions, &rule.functions, Part::Function),
            (&facts.columns, &rule.columns, Part::Column),
            (&facts.where_columns, &rule.where_columns, Part::Where),
            (&facts.group_by_columns, &rule.group_by_columns, Part::GroupBy),
        ];
        for (used, allowed, part) in checks {
            if let Some(name) = used.iter().find(|u| !listed(allowed, u)) {
                return deny(DenyReason::NotAllowed { part, name: name.clone(), allowed: allowed.clone() });
            }
        }
        let (epsilon, epsilon_from_policy) = match facts.epsilon {
            Some(e) => (Some(e), false),
            None => (rule.epsilon_default, rule.epsilon_default.is_some()),
        };
        match (epsilon, rule.max_epsilon) {
            (None, Some(max)) => return deny(DenyReason::EpsilonRequired { max }),
            (Some(e), Some(max)) if e > max => return deny(DenyReason::EpsilonTooLarge { epsilon: e, max }),
            _ => {}
        }
        Decision::Allow(Allowed {
            rule: rule.name.clone(),
            needs_operator_approval: rule.require_operator_approval,
            approvals_required: rule.approvals.clone(),
            min_group_size: facts.min_group_size.max(rule.min_group_size),
            requested_min_group_size: facts.min_group_size,
            epsilon,
            epsilon_from_policy,
            budget: rule.budget,
        })
    }
}

fn listed(list: &[String], name: &str) -> bool {
    list.iter().any(|x| x == "*" || x.eq_ignore_ascii_case(name))
}

impl Rule {
    fn matches(&self, f: &RequestFacts) -> bool {
        let who = self.analysts.iter().any(|a| a == "*" || *a == f.analyst)
            || (!f.role.is_empty() && self.roles.iter().any(|r| r == "*" || *r == f.role));
        who && self.datasets.iter().any(|d| d == "*" || *d == f.dataset)
    }
}

/// What the policy looks at in a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestFacts {
    /// The analyst's name.
    pub analyst: String,
    /// The analyst's role.
    pub role: String,
    /// The dataset.
    pub dataset: String,
    /// Columns read by aggregates (schema spelling).
    pub columns: BTreeSet<String>,
    /// Aggregate functions used (upper case, as in [`FUNCTIONS`]).
    pub functions: BTreeSet<String>,
    /// Columns used in WHERE.
    pub where_columns: BTreeSet<String>,
    /// GROUP BY columns.
    pub group_by_columns: BTreeSet<String>,
    /// The minimum group size the request would run with: its own option,
    /// or else the schema's (0: none).
    pub min_group_size: u64,
    /// The request's epsilon.
    pub epsilon: Option<Epsilon>,
}

impl RequestFacts {
    /// Extracts the facts from a query parsed against `schema`.
    pub fn from_query(
        analyst: &str,
        role: &str,
        dataset: &str,
        schema: &Schema,
        query: &Query,
        options: &RequestOptions,
    ) -> Result<RequestFacts, AccessError> {
        let name =
            |id: ColumnId| {
                schema.columns.get(id).map(|c| c.name.clone()).ok_or_else(|| {
                    AccessError::Query(format!("column #{id} is not in the schema of `{}`", schema.table))
                })
            };
        let mut facts = RequestFacts {
            analyst: analyst.into(),
            role: role.into(),
            dataset: dataset.into(),
            columns: BTreeSet::new(),
            functions: BTreeSet::new(),
            where_columns: BTreeSet::new(),
            group_by_columns: BTreeSet::new(),
            min_group_size: options.min_group_size.or(schema.min_group_size).unwrap_or(0),
            epsilon: options.epsilon,
        };
        for (_, agg) in &query.select {
            let (function, cols) = aggregate_parts(agg);
            facts.functions.insert(function.into());
            for c in cols {
                facts.columns.insert(name(c)?);
            }
        }
        let mut filter_cols = Vec::new();
        if let Some(p) = &query.filter {
            predicate_columns(p, &mut filter_cols);
        }
        for c in filter_cols {
            facts.where_columns.insert(name(c)?);
        }
        for &c in &query.group_by {
            facts.group_by_columns.insert(name(c)?);
        }
        Ok(facts)
    }
}

impl VerifiedRequest {
    /// [`RequestFacts::from_query`] for this request's analyst, role, dataset
    /// and options.
    pub fn facts(&self, schema: &Schema, query: &Query) -> Result<RequestFacts, AccessError> {
        let r = self.request();
        RequestFacts::from_query(&r.analyst, self.role(), &r.dataset, schema, query, &r.options)
    }
}

fn aggregate_parts(a: &Aggregate) -> (&'static str, Vec<ColumnId>) {
    use Aggregate as A;
    match a {
        A::CountStar => ("COUNT", vec![]),
        A::Count(c) => ("COUNT", vec![*c]),
        A::Sum(c) => ("SUM", vec![*c]),
        A::Avg(c) => ("AVG", vec![*c]),
        A::VarPop(c) => ("VAR_POP", vec![*c]),
        A::VarSamp(c) => ("VAR_SAMP", vec![*c]),
        A::StddevPop(c) => ("STDDEV_POP", vec![*c]),
        A::StddevSamp(c) => ("STDDEV_SAMP", vec![*c]),
        A::CovarPop(y, x) => ("COVAR_POP", vec![*y, *x]),
        A::CovarSamp(y, x) => ("COVAR_SAMP", vec![*y, *x]),
        A::Corr(y, x) => ("CORR", vec![*y, *x]),
        A::RegrSlope(y, x) => ("REGR_SLOPE", vec![*y, *x]),
        A::RegrIntercept(y, x) => ("REGR_INTERCEPT", vec![*y, *x]),
        A::RegrR2(y, x) => ("REGR_R2", vec![*y, *x]),
        A::Linreg { y, xs } => ("LINREG", std::iter::once(*y).chain(xs.iter().copied()).collect()),
        A::Histogram { col, .. } => ("HISTOGRAM", vec![*col]),
        A::Min(c) => ("MIN", vec![*c]),
        A::Max(c) => ("MAX", vec![*c]),
        A::Median(c) => ("MEDIAN", vec![*c]),
        A::PercentileCont { col, .. } => ("PERCENTILE_CONT", vec![*col]),
    }
}

fn predicate_columns(p: &Predicate, out: &mut Vec<ColumnId>) {
    match p {
        Predicate::Compare { col, .. }
        | Predicate::InList { col, .. }
        | Predicate::Between { col, .. }
        | Predicate::IsNull { col, .. } => out.push(*col),
        Predicate::And(a, b) | Predicate::Or(a, b) => {
            predicate_columns(a, out);
            predicate_columns(b, out);
        }
        Predicate::Not(a) => predicate_columns(a, out),
    }
}

/// What the node counted for this analyst.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Queries this analyst ran on this node today (UTC day), this one excluded.
    pub queries_today: u64,
}

/// The policy's decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The request may run, under these conditions.
    Allow(Allowed),
    /// The request may not run.
    Deny(Denial),
}

/// The conditions of an allowed request.
#[derive(Clone, Debug, PartialEq)]
pub struct Allowed {
    /// The rule that allowed it.
    pub rule: String,
    /// The node's operator must approve before the query runs.
    pub needs_operator_approval: bool,
    /// Data-owner approvals needed before the query runs.
    pub approvals_required: Option<Approvals>,
    /// The minimum group size the session must use (0: none).
    pub min_group_size: u64,
    /// The minimum group size the request would have run with.
    pub requested_min_group_size: u64,
    /// The epsilon the session must use (`None`: no differential privacy).
    pub epsilon: Option<Epsilon>,
    /// Whether `epsilon` is the policy's default rather than the request's.
    pub epsilon_from_policy: bool,
    /// The privacy budget to charge (per analyst and dataset).
    pub budget: Option<Budget>,
}

/// A refusal.
#[derive(Clone, Debug, PartialEq)]
pub struct Denial {
    /// The rule that refused, or `default` when no rule matched.
    pub rule: String,
    /// Why.
    pub reason: DenyReason,
}

/// Which part of a query a [`DenyReason::NotAllowed`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// An aggregate function.
    Function,
    /// A column read by an aggregate.
    Column,
    /// A column in WHERE.
    Where,
    /// A column in GROUP BY.
    GroupBy,
}

/// Why a request was denied.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum DenyReason {
    /// No rule matches the analyst (or role) and dataset.
    NoRule {
        /// The analyst.
        analyst: String,
        /// The role.
        role: String,
        /// The dataset.
        dataset: String,
    },
    /// A function or column is not in the rule's list.
    NotAllowed {
        /// Which list.
        part: Part,
        /// The function or column.
        name: String,
        /// The rule's list.
        allowed: Vec<String>,
    },
    /// The analyst reached the daily limit.
    RateLimit {
        /// The analyst.
        analyst: String,
        /// Queries run today.
        used: u64,
        /// The limit.
        limit: u64,
    },
    /// The epsilon is larger than the rule allows.
    EpsilonTooLarge {
        /// The epsilon in force.
        epsilon: Epsilon,
        /// The maximum.
        max: Epsilon,
    },
    /// The rule requires DP, and neither the request nor the policy gives an epsilon.
    EpsilonRequired {
        /// The maximum.
        max: Epsilon,
    },
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::NoRule { analyst, role, dataset } => {
                write!(f, "no rule allows analyst `{analyst}` (role `{role}`) to query dataset `{dataset}`")
            }
            DenyReason::NotAllowed { part, name, allowed } => {
                let what = match part {
                    Part::Function => format!("function `{name}` is not allowed"),
                    Part::Column => format!("column `{name}` may not be read by aggregates"),
                    Part::Where => format!("column `{name}` may not appear in WHERE"),
                    Part::GroupBy => format!("column `{name}` may not appear in GROUP BY"),
                };
                let list = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
                write!(f, "{what} (allowed: {list})")
            }
            DenyReason::RateLimit { analyst, used, limit } => {
                write!(f, "analyst `{analyst}` has run {used} queries today; the limit is {limit} per day")
            }
            DenyReason::EpsilonTooLarge { epsilon, max } => write!(f, "epsilon {epsilon} exceeds the maximum {max}"),
            DenyReason::EpsilonRequired { max } => write!(
                f,
                "differential privacy is required (max_epsilon = {max}) but the request sets no epsilon and the policy has no epsilon_default"
            ),
        }
    }
}

impl Allowed {
    /// For a participating node: refuses a session that is weaker than this
    /// decision requires, i.e. whose minimum group size (absent = 0) is below
    /// [`Allowed::min_group_size`], or, when this node set an epsilon, whose
    /// epsilon is absent or larger. (The coordinator's own decision may be
    /// stricter; every node checks its own.)
    pub fn check_session(&self, min_group_size: Option<u64>, epsilon: Option<Epsilon>) -> Result<(), AccessError> {
        let below = |what: &'static str, required: String, session: String| {
            Err(AccessError::BelowPolicy { what, required, session })
        };
        if min_group_size.unwrap_or(0) < self.min_group_size {
            let session = min_group_size.map_or("absent".into(), |m| m.to_string());
            return below("minimum group size", format!("at least {}", self.min_group_size), session);
        }
        if let Some(required) = self.epsilon {
            if epsilon.is_none_or(|e| e > required) {
                let session = epsilon.map_or("absent".into(), |e| e.to_string());
                return below("epsilon", format!("at most {required}"), session);
            }
        }
        Ok(())
    }
}

impl Decision {
    /// Whether the request may run (possibly after approvals).
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// Human-readable text, for `concord policy check`.
    pub fn explain(&self) -> String {
        match self {
            Decision::Deny(d) if d.rule == "default" => format!("DENY (default): {}", d.reason),
            Decision::Deny(d) => format!("DENY by rule `{}`: {}", d.rule, d.reason),
            Decision::Allow(a) => {
                let mut s = format!("ALLOW by rule `{}`\n", a.rule);
                let mgs = match (a.min_group_size, a.requested_min_group_size) {
                    (0, _) => "none".to_string(),
                    (m, r) if m > r => format!("{m} (raised from the requested {r})"),
                    (m, _) => m.to_string(),
                };
                s += &format!("  minimum group size: {mgs}\n");
                s += &match (a.epsilon, a.epsilon_from_policy) {
                    (None, _) => "  epsilon: none (no differential privacy)\n".to_string(),
                    (Some(e), true) => format!("  epsilon: {e} (the policy's default)\n"),
                    (Some(e), false) => format!("  epsilon: {e} (from the request)\n"),
                };
                match a.budget {
                    Some(Budget::Rho(rho)) => s += &format!("  privacy budget: rho = {rho} (zCDP)\n"),
                    Some(Budget::EpsilonDelta { epsilon, delta }) => {
                        s += &format!("  privacy budget: epsilon = {epsilon}, delta = {delta}\n")
                    }
                    None => {}
                }
                let op = if a.needs_operator_approval { "required" } else { "not required" };
                s += &format!("  operator approval: {op}\n");
                if let Some(ap) = &a.approvals_required {
                    s += &format!("  data-owner approvals: {} of {}\n", ap.k, ap.of.join(", "));
                }
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const SCHEMA: &str = r#"
table = "patients"
min_group_size = 3
[[column]]
name = "age"
type = "int"
min = 0
max = 120
[[column]]
name = "bmi"
type = "decimal"
scale = 1
min = 10
max = 80
[[column]]
name = "region"
type = "category"
values = ["north", "south"]
[[column]]
name = "ssn"
type = "int"
min = 0
max = 999999999
"#;

    const POLICY: &str = r#"
[defaults]
require_operator_approval = false
max_queries_per_day = 100
min_group_size = 10
epsilon_default = 1.0

[[rule]]
name = "researchers-patients"
analysts = ["alice"]
roles = ["researcher"]
datasets = ["patients"]
columns = ["age", "BMI", "region"]
functions = ["count", "SUM", "AVG", "HISTOGRAM", "MEDIAN"]
where_columns = ["region"]
group_by_columns = ["region"]
min_group_size = 5
max_queries_per_day = 20
require_operator_approval = true
approvals = { k = 2, of = ["a", "b", "c"] }
budget = { rho = 0.5 }

[[rule]]
name = "auditors"
roles = ["auditor"]
datasets = ["*"]
columns = ["*"]
functions = ["COUNT"]
max_epsilon = 0.5
epsilon_default = 0.25
"#;

    fn facts(analyst: &str, role: &str, sql: &str, options: &RequestOptions) -> RequestFacts {
        let schema = Schema::from_toml(SCHEMA).unwrap();
        let q = concord_query::parse(sql, &schema).unwrap();
        RequestFacts::from_query(analyst, role, "patients", &schema, &q, options).unwrap()
    }

    fn decide(analyst: &str, role: &str, sql: &str, options: &RequestOptions, today: u64) -> Decision {
        Policy::from_toml(POLICY)
            .unwrap()
            .evaluate(&facts(analyst, role, sql, options), &Usage { queries_today: today })
    }

    fn denial(d: Decision) -> String {
        match d {
            Decision::Deny(_) => d.explain(),
            Decision::Allow(a) => panic!("expected a denial, got {a:?}"),
        }
    }

    #[test]
    fn facts_are_extracted_from_the_query() {
        let f = facts(
            "alice",
            "researcher",
            "SELECT region, COUNT(*), CORR(age, bmi), LINREG(age, bmi, ssn) FROM patients \
             WHERE NOT (region = 'north' OR age BETWEEN 1 AND 5) AND bmi IS NOT NULL GROUP BY region",
            &RequestOptions::default(),
        );
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(f.functions, set(&["COUNT", "CORR", "LINREG"]));
        assert_eq!(f.columns, set(&["age", "bmi", "ssn"]));
        assert_eq!(f.where_columns, set(&["region", "age", "bmi"]));
        assert_eq!(f.group_by_columns, set(&["region"]));
        assert_eq!(f.min_group_size, 3, "the schema's when the request gives none");
        assert_eq!(f.epsilon, None);
    }

    #[test]
    fn allows_and_raises_the_minimum_group_size() {
        let mut o = RequestOptions { min_group_size: Some(2), ..Default::default() };
        let d =
            decide("alice", "", "SELECT region, AVG(bmi) FROM patients WHERE region = 'north' GROUP BY region", &o, 19);
        let Decision::Allow(a) = &d else { panic!("{d:?}") };
        assert_eq!(a.rule, "researchers-patients");
        assert!(a.needs_operator_approval);
        assert_eq!(a.approvals_required, Some(Approvals { k: 2, of: vec!["a".into(), "b".into(), "c".into()] }));
        assert_eq!((a.min_group_size, a.requested_min_group_size), (5, 2));
        assert_eq!(a.epsilon, Some(Epsilon::new(1.0).unwrap()));
        assert!(a.epsilon_from_policy);
        assert_eq!(a.budget, Some(Budget::Rho(0.5)));
        let half = Epsilon::new(0.5).unwrap();
        assert_eq!(a.check_session(Some(5), Some(half)), Ok(()));
        let e = |r: Result<(), AccessError>| r.unwrap_err().to_string();
        assert_eq!(
            e(a.check_session(Some(4), Some(half))),
            "the session's minimum group size is 4, but this node's policy requires at least 5"
        );
        assert_eq!(
            e(a.check_session(None, Some(half))),
            "the session's minimum group size is absent, but this node's policy requires at least 5"
        );
        assert_eq!(
            e(a.check_session(Some(9), Some(Epsilon::new(1.5).unwrap()))),
            "the session's epsilon is 1.5, but this node's policy requires at most 1.0"
        );
        assert_eq!(
            e(a.check_session(Some(9), None)),
            "the session's epsilon is absent, but this node's policy requires at most 1.0"
        );
        assert_eq!(
            d.explain(),
            "ALLOW by rule `researchers-patients`\n  minimum group size: 5 (raised from the requested 2)\n  \
             epsilon: 1.0 (the policy's default)\n  privacy budget: rho = 0.5 (zCDP)\n  operator approval: required\n  \
             data-owner approvals: 2 of a, b, c\n"
        );
        // A larger request is kept, and the request's epsilon wins.
        o.min_group_size = Some(50);
        o.epsilon = Some(Epsilon::new(0.1).unwrap());
        let Decision::Allow(a) = decide("bob", "researcher", "SELECT COUNT(*) FROM patients", &o, 0) else { panic!() };
        assert_eq!((a.min_group_size, a.epsilon_from_policy), (50, false));
        // The auditors' rule: defaults filled in, wildcards.
        let d = decide("carol", "auditor", "SELECT COUNT(ssn) FROM patients", &RequestOptions::default(), 0);
        assert!(d.is_allowed(), "{}", d.explain());
        assert!(
            d.explain().contains(
                "minimum group size: 10 (raised from the requested 3)\n  epsilon: 0.25 (the policy's default)\n"
            ),
            "{}",
            d.explain()
        );
        assert!(d.explain().contains("operator approval: not required\n"));
    }

    #[test]
    fn every_denial_names_its_cause() {
        let none = RequestOptions::default();
        let cases = [
            ("mallory", "", "SELECT COUNT(*) FROM patients", 0,
             "DENY (default): no rule allows analyst `mallory` (role ``) to query dataset `patients`"),
            ("alice", "", "SELECT COUNT(*) FROM patients", 20,
             "DENY by rule `researchers-patients`: analyst `alice` has run 20 queries today; the limit is 20 per day"),
            ("alice", "", "SELECT MAX(age) FROM patients", 0,
             "DENY by rule `researchers-patients`: function `MAX` is not allowed (allowed: COUNT, SUM, AVG, HISTOGRAM, MEDIAN)"),
            ("alice", "", "SELECT SUM(ssn) FROM patients", 0,
             "DENY by rule `researchers-patients`: column `ssn` may not be read by aggregates (allowed: age, BMI, region)"),
            ("alice", "", "SELECT COUNT(*) FROM patients WHERE age > 90", 0,
             "DENY by rule `researchers-patients`: column `age` may not appear in WHERE (allowed: region)"),
            ("carol", "auditor", "SELECT COUNT(*) FROM patients GROUP BY region", 0,
             "DENY by rule `auditors`: column `region` may not appear in GROUP BY (allowed: none)"),
        ];
        for (analyst, role, sql, today, want) in cases {
            assert_eq!(denial(decide(analyst, role, sql, &none, today)), want, "{sql}");
        }
        let mut other_dataset = facts("alice", "researcher", "SELECT COUNT(*) FROM patients", &none);
        other_dataset.dataset = "staff".into();
        let d = Policy::from_toml(POLICY).unwrap().evaluate(&other_dataset, &Usage::default());
        assert_eq!(
            denial(d),
            "DENY (default): no rule allows analyst `alice` (role `researcher`) to query dataset `staff`"
        );
        let big = RequestOptions { epsilon: Some(Epsilon::new(0.75).unwrap()), ..Default::default() };
        assert_eq!(
            denial(decide("carol", "auditor", "SELECT COUNT(*) FROM patients", &big, 0)),
            "DENY by rule `auditors`: epsilon 0.75 exceeds the maximum 0.5"
        );
        let p = Policy::from_toml(
            "[[rule]]\nname = \"dp\"\nanalysts = [\"*\"]\ndatasets = [\"patients\"]\nfunctions = [\"*\"]\nmax_epsilon = 2.0\n",
        )
        .unwrap();
        let d = p.evaluate(&facts("x", "", "SELECT COUNT(*) FROM patients", &none), &Usage::default());
        assert_eq!(
            denial(d),
            "DENY by rule `dp`: differential privacy is required (max_epsilon = 2.0) but the request sets no epsilon and the policy has no epsilon_default"
        );
        // The first matching rule decides, even when it denies.
        let p = Policy::from_toml(
            "[[rule]]\nname = \"narrow\"\nanalysts = [\"x\"]\ndatasets = [\"patients\"]\n\
             [[rule]]\nname = \"wide\"\nanalysts = [\"x\"]\ndatasets = [\"patients\"]\nfunctions = [\"*\"]\n",
        )
        .unwrap();
        let d = p.evaluate(&facts("x", "", "SELECT COUNT(*) FROM patients", &none), &Usage::default());
        assert_eq!(denial(d), "DENY by rule `narrow`: function `COUNT` is not allowed (allowed: none)");
    }

    #[test]
    fn parse_errors_name_the_line() {
        let rule = "[[rule]]\nname = \"r\"\nanalysts = [\"a\"]\ndatasets = [\"d\"]\n";
        let cases = [
            ("[defaults]\nmax_querys_per_day = 3\n", "line 2", "unknown field `max_querys_per_day`"),
            (&format!("{rule}colums = [\"x\"]\n"), "line 5", "unknown field `colums`"),
            (&format!("{rule}min_group_size = \"ten\"\n"), "line 5", "invalid type: string \"ten\""),
            (
                &format!("{rule}functions = [\"COUNT\",\n  \"SUMM\"]\n"),
                "line 6",
                "rule `r`: unknown function `SUMM` (known: COUNT, SUM,",
            ),
            (
                &format!("{rule}approvals = {{ k = 3, of = [\"a\", \"b\"] }}\n"),
                "line 5",
                "rule `r`: approvals need 2 <= k <= n (a threshold signature of k data owners; for one, use \
                 require_operator_approval), got k = 3 of n = 2",
            ),
            (&format!("{rule}approvals = {{ k = 1, of = [\"a\", \"b\"] }}\n"), "line 5", "got k = 1 of n = 2"),
            (
                &format!("{rule}approvals = {{ k = 2, of = [\"a\", \"a\"] }}\n"),
                "line 5",
                "rule `r`: approvals `of` names a data owner twice",
            ),
            (&format!("{rule}{rule}"), "line 6", "rule `r`: duplicate rule name (first at line 2)"),
            (
                "[[rule]]\nname = \"r\"\ndatasets = [\"d\"]\n",
                "line 2",
                "rule `r`: names no `analysts` and no `roles`, so it can never match",
            ),
            ("[[rule]]\nname = \"r\"\nroles = [\"x\"]\ndatasets = []\n", "line 2", "rule `r`: `datasets` is empty"),
            ("[[rule]]\nname = \"default\"\nroles = [\"x\"]\ndatasets = [\"d\"]\n", "line 2", "is empty or reserved"),
            ("[[rule]]\nname = \"r\"\nroles = [\"x\"]\n", "line 1", "missing field `datasets`"),
            ("[defaults]\n\nepsilon_default = -1.0\n", "line 3", "`epsilon_default` must be finite and > 0, got -1"),
            ("[defaults]\nmax_epsilon = 0.0\n", "line 2", "`max_epsilon` must be finite and > 0, got 0"),
            ("[defaults]\nbudget = { rho = 0.5, epsilon = 1.0 }\n", "line 2", "`budget` must be { rho = R }"),
            ("[defaults]\nbudget = { epsilon = 1.0, delta = 1.0 }\n", "line 2", "`budget` must be"),
            (
                &format!("[defaults]\nmax_epsilon = 1.0\n{rule}epsilon_default = 2.0\n"),
                "line 4",
                "rule `r`: epsilon_default 2.0 exceeds max_epsilon 1.0",
            ),
            ("[defaults\n", "line 1", "TOML parse error"),
        ];
        for (text, line, msg) in cases {
            let e = Policy::from_toml(text).unwrap_err().to_string();
            assert!(e.starts_with("policy: "), "{e}");
            assert!(e.contains(line) && e.contains(msg), "{text:?}:\n{e}");
        }
        let ok = Policy::from_toml(&format!("{rule}budget = {{ epsilon = 3.0, delta = 1e-6 }}\n")).unwrap();
        assert_eq!(ok.rules()[0].budget, Some(Budget::EpsilonDelta { epsilon: 3.0, delta: 1e-6 }));
        assert_eq!(ok.rules()[0].line, 2);
        assert!(Policy::from_toml("").unwrap().rules().is_empty());
    }
}
