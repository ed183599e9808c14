//! `concord run`: one joint query over data split across parties, every
//! party in this process, connected by loopback TLS.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use concord_analytics::final_stats::{self, FinalPlan};
use concord_analytics::{AnalyticsError, CheckInput, OrderInput, PartyOutcome, Scheme};
use concord_data::LocalOrder;
use concord_engine::EngineStats;
use concord_query::input_check::{CheckPlan, InputCheck};
use concord_query::order::{MethodChoice, OrderPlan};
use concord_query::{Domain, Query, ResultTable, Schema, StatsPlan, Value};
use rand_chacha::rand_core::SeedableRng;

use concord_session::{order_revealed, Answer, SchemeChoice, SessionOptions, SessionSpec, ShareReport};

use crate::local::{loopback_parties, run_parties};

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text.
    Table,
    /// One JSON object.
    Json,
    /// CSV with a header row.
    Csv,
}

/// Sharing scheme choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SchemeArg {
    /// n-of-n additive sharing.
    Additive,
    /// t-of-n Shamir sharing.
    Shamir,
}

/// What to do about statistics outside the region in-bounds data allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InputCheckArg {
    /// Clamp every party's statistics to the feasible region inside MPC (nothing opened).
    Clamp,
    /// Open one bit per party and abort naming the parties whose statistics are infeasible.
    Reject,
    /// No check.
    Off,
}

impl From<InputCheckArg> for InputCheck {
    fn from(a: InputCheckArg) -> InputCheck {
        match a {
            InputCheckArg::Clamp => InputCheck::Clamp,
            InputCheckArg::Reject => InputCheck::Reject,
            InputCheckArg::Off => InputCheck::Off,
        }
    }
}

/// What the analyst receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RevealArg {
    /// The pooled sufficient statistics (exact), finalised by the analyst.
    Sums,
    /// Only the final statistics, computed inside MPC in fixed point (three parties).
    Final,
}

/// Arguments of `concord run`.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// The schema file (TOML) shared by every party.
    #[arg(long)]
    pub schema: PathBuf,
    /// A party and its data file (CSV or Parquet): NAME=FILE. Give at least two.
    #[arg(long = "party", value_name = "NAME=FILE", required = true)]
    pub parties: Vec<String>,
    /// The query.
    #[arg(long)]
    pub sql: String,
    /// Threshold t for Shamir sharing (default (n-1)/2; n-1 selects additive sharing).
    #[arg(long)]
    pub threshold: Option<usize>,
    /// Sharing scheme (default: additive for 2 parties, Shamir otherwise).
    #[arg(long, value_enum)]
    pub scheme: Option<SchemeArg>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Run every party as its own OS process (each reads only its own file);
    /// the result shares come back to this process, the analyst.
    #[arg(long)]
    pub processes: bool,
    /// Suppress every group with fewer than K rows (decided inside MPC;
    /// overrides the schema's `min_group_size`; 0 turns it off). Needs
    /// Shamir sharing with n >= 2t + 1.
    #[arg(long, value_name = "K")]
    pub min_group_size: Option<u64>,
    /// Check every party's contributed statistics against the declared
    /// bounds and max_rows inside MPC: clamp them (default with Shamir
    /// sharing and n >= 2t + 1), reject the query naming the party, or off
    /// (default with 2 parties or additive sharing, where it cannot run).
    #[arg(long, value_enum, value_name = "POLICY")]
    pub input_check: Option<InputCheckArg>,
    /// Test only: party NAME (or index) multiplies its local sums by FACTOR
    /// before sharing them (in-process runs only).
    #[arg(long, hide = true, value_name = "NAME=FACTOR")]
    pub poison: Vec<String>,
    /// What the analyst receives: `sums` (the pooled sufficient statistics, exact) or `final`
    /// (only AVG, VAR_*, STDDEV_*, COVAR_*, CORR, REGR_* values, computed inside MPC in fixed
    /// point with 16 fractional bits; exactly three parties).
    #[arg(long, value_enum, default_value = "sums")]
    pub reveal: RevealArg,
    /// How MIN, MAX, MEDIAN and PERCENTILE_CONT are computed: `search`
    /// (secure binary search over the declared range, any n >= 3), `sort`
    /// (oblivious sort of the values padded to max_rows, exactly 3
    /// parties), or `auto` (sort for small, cheaper cases).
    #[arg(long, value_enum, default_value = "auto")]
    pub order_method: OrderMethodArg,
    #[command(flatten)]
    pub privacy: PrivacyArgs,
}

/// `--epsilon` / `--rho`: differential privacy for one query.
#[derive(Args, Clone, Debug, Default)]
pub struct PrivacyArgs {
    /// Differential privacy: every party adds discrete Laplace noise to its
    /// statistics before sharing them, for pure EPSILON-DP of the released
    /// answer (COUNT, SUM, AVG, HISTOGRAM, with WHERE and GROUP BY); each
    /// answer comes with its noise scale and 95% interval. Same as
    /// `WITH PRIVACY (epsilon = EPSILON)` after the query.
    #[arg(long, value_name = "EPSILON", conflicts_with = "rho")]
    pub epsilon: Option<f64>,
    /// Differential privacy with discrete Gaussian noise, for RHO-zCDP
    /// (`WITH PRIVACY (rho = RHO)`).
    #[arg(long, value_name = "RHO")]
    pub rho: Option<f64>,
}

impl PrivacyArgs {
    /// The privacy parameter asked for on the command line.
    pub fn privacy(&self) -> Option<concord_session::Privacy> {
        match (self.epsilon, self.rho) {
            (Some(e), _) => Some(concord_session::Privacy::Epsilon(e)),
            (None, Some(r)) => Some(concord_session::Privacy::Rho(r)),
            (None, None) => None,
        }
    }
}

/// `--order-method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OrderMethodArg {
    /// The planner chooses.
    Auto,
    /// Domain search.
    Search,
    /// Oblivious sort.
    Sort,
}

/// Arguments of the hidden `concord run-party`.
#[derive(Args, Clone, Debug)]
pub struct RunPartyArgs {
    #[command(flatten)]
    child: crate::procs::ChildArgs,
    /// The public run description, as JSON.
    #[arg(long)]
    spec: String,
    /// This party's data file.
    #[arg(long)]
    file: PathBuf,
}

/// `concord run-party`: one party of `concord run --processes`. Loads and
/// checks its own file, computes its local statistics, connects, and sends
/// its share of the result to the parent (the analyst).
pub fn run_party(a: RunPartyArgs) -> Result<()> {
    let spec: SessionSpec = serde_json::from_str(&a.spec).context("parsing --spec")?;
    let me = a.child.party;
    let prepared = spec.prepare()?;
    let local = prepared.local_input(me, &a.file)?;
    let (rt, net) = crate::procs::child_connect(&a.child, spec.parties, Duration::from_secs(60), || {})?;
    let mut rng = rand_chacha::ChaCha12Rng::from_os_rng();
    let report = rt.block_on(prepared.run_party(net, &local, &mut rng)).map_err(|e| anyhow!("party {me}: {e}"))?;
    crate::procs::result(&serde_json::to_string(&report)?)
}

/// The session options `concord run`'s arguments ask for.
fn session_options(args: &RunArgs) -> SessionOptions {
    SessionOptions {
        threshold: args.threshold,
        scheme: args.scheme.map(scheme_choice),
        min_group_size: args.min_group_size,
        input_check: args.input_check.map(|c| InputCheck::from(c).name().to_owned()),
        reveal_final: args.reveal == RevealArg::Final,
        order_method: Some(order_method_name(args.order_method).to_owned()),
        privacy: args.privacy.privacy(),
    }
}

/// A run through the session layer in this process (one thread per party,
/// loopback TLS): what `concord run` does with differential privacy.
fn execute_session(args: &RunArgs, schema_toml: &str, parties: &[PartySpec]) -> Result<RunOutput> {
    run_session(schema_toml, &args.sql, &session_options(args), parties)
}

/// Plan `sql` with `options` as a session and run it in this process (one
/// thread per party, loopback TLS); the analyst's answer.
pub fn run_session(schema_toml: &str, sql: &str, options: &SessionOptions, parties: &[PartySpec]) -> Result<RunOutput> {
    let n = parties.len();
    let spec = SessionSpec::plan(schema_toml, sql, n, options)?;
    let prepared = std::sync::Arc::new(spec.prepare()?);
    let locals = parties
        .iter()
        .enumerate()
        .map(|(i, p)| prepared.local_input(i, &p.file).with_context(|| format!("party {}", p.name)))
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    let inputs: Vec<_> = loopback_parties(n, "concord-run")?.into_iter().zip(locals).collect();
    let shared = prepared.clone();
    let results = run_parties(inputs, move |(lp, local)| {
        let prepared = shared.clone();
        async move {
            let me = lp.me;
            let net = lp.connect(Duration::from_secs(30)).await?;
            let mut rng = rand_chacha::ChaCha12Rng::from_os_rng();
            prepared
                .run_party(net, &local, &mut rng)
                .await
                .map_err(|e| anyhow::Error::new(e).context(format!("party {me}")))
        }
    })?;
    let reports = results.into_iter().collect::<Result<Vec<ShareReport>>>()?;
    let answer = prepared.reconstruct(&reports)?;
    Ok(RunOutput::from_answer(answer, start.elapsed().as_secs_f64()))
}

/// `concord run --processes`: the parent is the analyst; every party is a
/// process that reads only its own file and reports its share.
fn execute_processes(args: &RunArgs, schema_toml: &str, parties: &[PartySpec]) -> Result<RunOutput> {
    let n = parties.len();
    let spec = SessionSpec::plan(schema_toml, &args.sql, n, &session_options(args))?;
    let prepared = spec.prepare()?;
    let spec_json = serde_json::to_string(&spec)?;
    let files: Vec<String> = parties.iter().map(|p| p.file.display().to_string()).collect();
    let start = Instant::now();
    let results = crate::procs::run_processes(
        n,
        "run-party",
        |i| vec!["--spec".into(), spec_json.clone(), "--file".into(), files.get(i).cloned().unwrap_or_default()],
        Duration::from_secs(60),
        None,
    )?;
    let reports = results
        .iter()
        .enumerate()
        .map(|(i, r)| serde_json::from_str(r).with_context(|| format!("party {i} sent an unreadable share")))
        .collect::<Result<Vec<ShareReport>>>()?;
    let answer = prepared.reconstruct(&reports)?;
    Ok(RunOutput::from_answer(answer, start.elapsed().as_secs_f64()))
}

/// The output of a `--reveal final` run.
fn final_output(
    table: ResultTable,
    stats: Vec<EngineStats>,
    start: Instant,
    plan: &StatsPlan,
    fplan: &FinalPlan,
) -> RunOutput {
    RunOutput::from_answer(Answer::of_final(table, stats, plan.len(), fplan), start.elapsed().as_secs_f64())
}

/// `--reveal final` in this process: every party on its own thread.
fn execute_final(
    query: &Query,
    schema: &Schema,
    plan: &StatsPlan,
    fplan: &FinalPlan,
    locals: Vec<Vec<i128>>,
) -> Result<RunOutput> {
    let start = Instant::now();
    let parties = loopback_parties(locals.len(), "concord-run")?;
    let inputs: Vec<_> = parties.into_iter().zip(locals).collect();
    let (fp, per) = (fplan.clone(), plan.stats.len());
    let results = run_parties(inputs, move |(lp, local)| {
        let fp = fp.clone();
        async move {
            let me = lp.me;
            let net = lp.connect(Duration::from_secs(30)).await?;
            let mut rng = rand_chacha::ChaCha12Rng::from_os_rng();
            final_stats::party_final(net, &fp, per, &local, &mut rng)
                .await
                .map_err(|e| anyhow::Error::new(e).context(format!("party {me}")))
        }
    })?;
    let outcomes: Vec<_> = results.into_iter().collect::<Result<Vec<_>>>()?;
    let refs: Vec<&[u64]> = outcomes.iter().map(|o| o.components.as_slice()).collect();
    let table = final_stats::finalize_final(query, schema, plan, fplan, &refs).map_err(|e| anyhow!("{e}"))?;
    Ok(final_output(table, outcomes.iter().map(|o| o.stats).collect(), start, plan, fplan))
}

/// The comparison-based parts of a run, if any: the interactive phase
/// (order statistics, minimum group size) and the input check.
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases<'a> {
    /// The interactive phase's plan.
    pub order: Option<&'a OrderPlan>,
    /// The input check's plan and policy (never `Off`).
    pub check: Option<(&'a CheckPlan, InputCheck)>,
}

/// A party's name and data file.
#[derive(Clone, Debug)]
pub struct PartySpec {
    /// Display name.
    pub name: String,
    /// Data file.
    pub file: PathBuf,
}

/// Parse NAME=FILE.
pub fn parse_party(s: &str) -> Result<PartySpec> {
    let (name, file) = s.split_once('=').ok_or_else(|| anyhow!("--party {s:?}: expected NAME=FILE"))?;
    if name.is_empty() || file.is_empty() {
        bail!("--party {s:?}: expected NAME=FILE with a non-empty name and file");
    }
    Ok(PartySpec { name: name.to_string(), file: PathBuf::from(file) })
}

/// Everything a run produced: the analyst's answer with its costs
/// (reachable directly through `Deref`), and what only an in-process run knows.
pub struct RunOutput {
    /// The answer and what it cost.
    pub answer: Answer,
    /// Party 1's share of party 0's first statistics (what a party receives; in-process runs only).
    pub sample_received: Vec<u128>,
    /// Seconds from the start of the secure computation to the analyst's answer.
    pub seconds: f64,
}

impl std::ops::Deref for RunOutput {
    type Target = Answer;
    fn deref(&self) -> &Answer {
        &self.answer
    }
}

impl RunOutput {
    /// The output of a session's answer that took `seconds`.
    pub fn from_answer(answer: Answer, seconds: f64) -> RunOutput {
        RunOutput { answer, sample_received: Vec::new(), seconds }
    }
}

/// The plan of the interactive phase with its order method chosen
/// (`--order-method`; identical at every party).
pub fn plan_order(
    schema: &Schema,
    query: &Query,
    plan: &StatsPlan,
    parties: usize,
    min_group_size: Option<u64>,
    method: OrderMethodArg,
) -> Result<Option<OrderPlan>> {
    let choice = match method {
        OrderMethodArg::Auto => MethodChoice::Auto,
        OrderMethodArg::Search => MethodChoice::Search,
        OrderMethodArg::Sort => MethodChoice::Sort,
    };
    concord_session::plan_order(schema, query, plan, parties, min_group_size, choice)
        .map_err(|e| anyhow!("{}", e.to_string().replacen("order method sort", "--order-method sort", 1)))
}

/// The input check's plan, `None` when off.
fn check_plan(schema: &Schema, plan: &StatsPlan, policy: InputCheck) -> Result<Option<CheckPlan>> {
    if policy == InputCheck::Off {
        return Ok(None);
    }
    CheckPlan::new(schema, plan).map(Some).map_err(|e| anyhow!("{e}"))
}

/// The input check policy: as asked, else clamp where it can run (Shamir
/// with n >= 2t + 1) and off otherwise (2 parties, additive sharing).
pub fn choose_input_check(asked: Option<InputCheckArg>, scheme: Scheme, n: usize) -> Result<InputCheck> {
    Ok(concord_session::choose_input_check(asked.map(InputCheck::from), scheme, n)?)
}

/// Test knob (`--poison NAME=FACTOR`): multiply a party's local sums (not
/// its counts) by FACTOR, as a dishonest party would.
fn poison(
    specs: &[String],
    parties: &[PartySpec],
    plan: &StatsPlan,
    locals: &mut [(Vec<i128>, Option<LocalOrder>)],
) -> Result<()> {
    for spec in specs {
        let (who, factor) = spec.split_once('=').ok_or_else(|| anyhow!("--poison {spec:?}: expected NAME=FACTOR"))?;
        let factor: i128 = factor.parse().map_err(|_| anyhow!("--poison {spec:?}: FACTOR must be an integer"))?;
        let index = parties
            .iter()
            .position(|p| p.name == who)
            .or_else(|| who.parse::<usize>().ok().filter(|&i| i < parties.len()))
            .ok_or_else(|| anyhow!("--poison {spec:?}: no party named {who:?}"))?;
        let per = plan.stats.len().max(1);
        if let Some((sums, _)) = locals.get_mut(index) {
            for (i, v) in sums.iter_mut().enumerate() {
                let is_sum = matches!(plan.stats.get(i % per), Some(concord_query::Stat::Moment { monomial, .. }) if !monomial.is_empty());
                if is_sum {
                    *v = v
                        .checked_mul(factor)
                        .ok_or_else(|| anyhow!("--poison {spec:?}: the poisoned sum overflows"))?;
                }
            }
        }
    }
    Ok(())
}

fn order_input<'a>(plan: Option<&'a OrderPlan>, local: Option<&'a LocalOrder>) -> Option<OrderInput<'a>> {
    match (plan, local) {
        (Some(plan), Some(l)) => Some(OrderInput { plan, group_rows: &l.group_rows, sorted: &l.sorted }),
        _ => None,
    }
}

/// Choose the scheme from the arguments.
pub fn choose_scheme(n: usize, threshold: Option<usize>, scheme: Option<SchemeArg>) -> Result<Scheme> {
    Ok(concord_session::choose_scheme(n, threshold, scheme.map(scheme_choice))?)
}

/// The session crate's scheme choice for `--scheme`.
pub fn scheme_choice(s: SchemeArg) -> SchemeChoice {
    match s {
        SchemeArg::Additive => SchemeChoice::Additive,
        SchemeArg::Shamir => SchemeChoice::Shamir,
    }
}

/// The name of an `--order-method`.
pub fn order_method_name(m: OrderMethodArg) -> &'static str {
    match m {
        OrderMethodArg::Auto => "auto",
        OrderMethodArg::Search => "search",
        OrderMethodArg::Sort => "sort",
    }
}

/// Load every party's data and compute its local statistics (each party's
/// own step; here all in this process). Refuses before any computation.
pub fn local_statistics(
    schema: &Schema,
    query: &Query,
    plan: &StatsPlan,
    parties: &[PartySpec],
) -> Result<Vec<Vec<i128>>> {
    Ok(local_inputs(schema, query, plan, None, parties)?.into_iter().map(|(sums, _)| sums).collect())
}

/// Every party's local statistics and, with an interactive phase, its
/// private order input (rows per group, sorted values per group and column).
pub fn local_inputs(
    schema: &Schema,
    query: &Query,
    plan: &StatsPlan,
    order: Option<&OrderPlan>,
    parties: &[PartySpec],
) -> Result<Vec<(Vec<i128>, Option<LocalOrder>)>> {
    parties
        .iter()
        .map(|p| {
            let table = concord_data::load_table(&p.file, schema).map_err(|e| anyhow!("party {}: {e}", p.name))?;
            let sums = concord_data::local_stats(&table, query, plan).map_err(|e| anyhow!("party {}: {e}", p.name))?;
            let order = order
                .map(|o| concord_data::local_order(&table, query, plan, o))
                .transpose()
                .map_err(|e| anyhow!("party {}: {e}", p.name))?;
            Ok((sums, order))
        })
        .collect()
}

/// Run the secure part: every party shares its statistics over loopback
/// TLS; the analyst reconstructs and finalises.
pub fn execute(
    schema: &Schema,
    query: &Query,
    plan: &StatsPlan,
    locals: Vec<Vec<i128>>,
    scheme: Scheme,
) -> Result<RunOutput> {
    execute_with(schema, query, plan, locals.into_iter().map(|l| (l, None)).collect(), Phases::default(), scheme, &[])
}

/// [`execute`] with the interactive phase of `order` (order statistics,
/// minimum group size) and the input check: every party's local
/// statistics and order input.
pub fn execute_with(
    schema: &Schema,
    query: &Query,
    plan: &StatsPlan,
    locals: Vec<(Vec<i128>, Option<LocalOrder>)>,
    phases: Phases<'_>,
    scheme: Scheme,
    names: &[String],
) -> Result<RunOutput> {
    let Phases { order, check } = phases;
    let n = locals.len();
    let domain = concord_session::pick_domain(plan, schema, n, order.is_some() || check.is_some())?;
    let stats_per_party = plan.len();
    let start = Instant::now();
    let parties = loopback_parties(n, "concord-run")?;
    let inputs: Vec<_> = parties.into_iter().zip(locals).collect();
    let order_plan = order.cloned();
    let check_plan = check.map(|(c, p)| (c.clone(), p));
    let results = run_parties(inputs, move |(lp, (local, local_order))| {
        let order_plan = order_plan.clone();
        let check_plan = check_plan.clone();
        async move {
            let me = lp.me;
            let net = lp.connect(Duration::from_secs(30)).await?;
            let mut rng = rand_chacha::ChaCha12Rng::from_os_rng();
            let input = order_input(order_plan.as_ref(), local_order.as_ref());
            let check = check_plan.as_ref().map(|(plan, policy)| CheckInput { plan, policy: *policy });
            concord_analytics::party_checked(net, scheme, domain, &local, input, check, &mut rng)
                .await
                .map_err(|e| anyhow::Error::new(e).context(format!("party {me}")))
        }
    })?;
    let mut outcomes: Vec<PartyOutcome> = Vec::with_capacity(n);
    let mut failures = Vec::new();
    let mut rejected: Option<Vec<usize>> = None;
    for r in results {
        match r {
            Ok(o) => outcomes.push(o),
            Err(e) => {
                if let Some(AnalyticsError::Rejected { parties }) = e.downcast_ref::<AnalyticsError>() {
                    rejected = Some(parties.clone());
                }
                failures.push(format!("{e:#}"))
            }
        }
    }
    if let Some(bad) = rejected {
        let labels: Vec<String> = bad
            .iter()
            .map(|&i| names.get(i).map_or_else(|| format!("party {i}"), |name| format!("{name} (party {i})")))
            .collect();
        bail!(
            "input check (reject): the statistics contributed by {} are infeasible for the declared bounds and \
             max_rows (no in-bounds data could produce them); the query is aborted. Only one bit per party was \
             opened to the parties.",
            labels.join(", ")
        );
    }
    if !failures.is_empty() {
        bail!("the secure computation failed: {}", failures.join("; "));
    }
    // The analyst: reconstruct the totals from the result shares and finalise.
    let shares: Vec<_> = outcomes.iter().map(|o| &o.share).collect();
    let totals = concord_analytics::reconstruct(&shares).map_err(|e| anyhow!("{e}"))?;
    // The opened values are public to every party; they must agree.
    let results = outcomes.first().and_then(|o| o.order.clone());
    if outcomes.iter().any(|o| o.order != results) {
        bail!("the parties report different opened order statistics; refusing the result");
    }
    let table =
        concord_query::finalize_with(query, schema, plan, &totals, results.as_ref()).map_err(|e| anyhow!("{e}"))?;
    Ok(RunOutput {
        answer: Answer {
            table,
            domain,
            scheme,
            stats: outcomes.iter().map(|o| o.stats).collect(),
            stats_per_party,
            order: order.map(|o| o.describe(schema)),
            order_revealed: order_revealed(order),
            order_stats: outcomes.iter().filter_map(|o| o.order_stats).collect(),
            suppressed: results.map(|r| r.suppressed.iter().filter(|s| **s).count()).unwrap_or(0),
            check: check.map(|(c, p)| (c.describe(p, n), p)),
            check_stats: outcomes.iter().filter_map(|o| o.check_stats).collect(),
            reveal_final: None,
            privacy: None,
        },
        sample_received: outcomes.get(1).map(|o| o.sample_of_received.clone()).unwrap_or_default(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn read(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading the {what} {}", path.display()))
}

/// `concord run`.
pub fn run(args: RunArgs) -> Result<()> {
    let parties: Vec<PartySpec> = args.parties.iter().map(|s| parse_party(s)).collect::<Result<_>>()?;
    if parties.len() < 2 {
        bail!("a joint query needs at least two --party NAME=FILE");
    }
    let schema_path = args.schema.display().to_string();
    let schema_toml = read(&args.schema, "schema")?;
    let schema = Schema::from_toml(&schema_toml).map_err(|e| anyhow!("{schema_path}: {e}"))?;
    let query = concord_query::parse(&args.sql, &schema).map_err(|e| anyhow!("{e}"))?;
    if concord_session::privacy::resolve(&args.sql, args.privacy.privacy())?.is_some() {
        if !args.poison.is_empty() {
            bail!("--poison is a test knob of runs without differential privacy");
        }
        let out = if args.processes {
            execute_processes(&args, &schema_toml, &parties)?
        } else {
            execute_session(&args, &schema_toml, &parties)?
        };
        return print_output(&out, args.format);
    }
    let plan = query.plan(&schema);
    let scheme = choose_scheme(parties.len(), args.threshold, args.scheme)?;
    let min_group_size = args.min_group_size.or(schema.min_group_size);
    let order = plan_order(&schema, &query, &plan, parties.len(), min_group_size, args.order_method)?;
    if order.is_some() {
        concord_analytics::check_comparison_scheme(scheme, parties.len()).map_err(|e| anyhow!("{e}"))?;
    }
    let final_plan = match args.reveal {
        RevealArg::Sums => None,
        RevealArg::Final => {
            if min_group_size.is_some_and(|k| k > 0) {
                bail!("--reveal final does not support a minimum group size yet; use --reveal sums");
            }
            if matches!(args.input_check, Some(InputCheckArg::Clamp | InputCheckArg::Reject)) {
                bail!(
                    "--reveal final runs on the replicated engine, which has no input check yet; use --input-check off"
                );
            }
            if args.threshold.is_some() || args.scheme.is_some() {
                bail!("--reveal final always uses three-party replicated sharing: drop --threshold and --scheme");
            }
            Some(FinalPlan::new(&query, &schema, &plan, parties.len()).map_err(|e| anyhow!("{e}"))?)
        }
    };
    if let (Some(fplan), false) = (&final_plan, args.processes) {
        let locals = local_statistics(&schema, &query, &plan, &parties)?;
        let out = execute_final(&query, &schema, &plan, fplan, locals)?;
        return print_output(&out, args.format);
    }
    let policy = if final_plan.is_some() {
        InputCheck::Off
    } else {
        choose_input_check(args.input_check, scheme, parties.len())?
    };
    let check = check_plan(&schema, &plan, policy)?;
    let check = check.as_ref().map(|c| (c, policy));
    let out = if args.processes {
        if !args.poison.is_empty() {
            bail!("--poison is a test knob of in-process runs; it cannot be combined with --processes");
        }
        execute_processes(&args, &schema_toml, &parties)?
    } else {
        let mut locals = local_inputs(&schema, &query, &plan, order.as_ref(), &parties)?;
        poison(&args.poison, &parties, &plan, &mut locals)?;
        let names: Vec<String> = parties.iter().map(|p| p.name.clone()).collect();
        execute_with(&schema, &query, &plan, locals, Phases { order: order.as_ref(), check }, scheme, &names)?
    };
    print_output(&out, args.format)
}

/// JSON for one result value.
pub fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Int(i) => {
            i64::try_from(*i).map(serde_json::Value::from).unwrap_or_else(|_| serde_json::Value::from(*i as f64))
        }
        Value::Number(x) => {
            serde_json::Number::from_f64(*x).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
        }
        Value::Text(s) => serde_json::Value::String(s.clone()),
        Value::Null => serde_json::Value::Null,
        Value::Array(a) => serde_json::Value::Array(a.iter().map(value_json).collect()),
        Value::Suppressed(_) => serde_json::Value::String(value_text(v)),
    }
}

/// Text for one result value.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Number(x) => {
            if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{x:.1}")
            } else {
                format!("{x:.10}").trim_end_matches('0').to_string()
            }
        }
        Value::Text(s) => s.clone(),
        Value::Null => "NULL".to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(value_text).collect::<Vec<_>>().join(", ")),
        Value::Suppressed(k) => format!("suppressed (fewer than {k} rows)"),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Print a run's answer and costs in `format`.
pub fn print_output(out: &RunOutput, format: Format) -> Result<()> {
    let rounds = out.stats.iter().map(|s| s.rounds).max().unwrap_or(0);
    let bytes = out.stats.iter().map(|s| s.bytes_sent).max().unwrap_or(0);
    match format {
        Format::Json => {
            let rows: Vec<serde_json::Value> =
                out.table.rows.iter().map(|r| serde_json::Value::Array(r.iter().map(value_json).collect())).collect();
            let v = serde_json::json!({
                "columns": out.table.columns,
                "rows": rows,
                "privacy": out.privacy.as_ref().map(privacy_json),
                "stats": {
                    "rounds": rounds,
                    "bytes_per_party": bytes,
                    "seconds": out.seconds,
                    "parties": out.stats.len(),
                    "domain": match out.domain { Domain::M61 => "m61", Domain::M127 => "m127" },
                    "scheme": match out.scheme { Scheme::Additive => "additive".to_string(), Scheme::Shamir { t } => format!("shamir t={t}") },
                    "statistics_per_party": out.stats_per_party,
                    "order": out.order.as_ref().map(|d| serde_json::json!({
                        "plan": d,
                        "rounds": out.order_stats.iter().map(|s| s.rounds).max().unwrap_or(0),
                        "bytes_per_party": out.order_stats.iter().map(|s| s.bytes_sent).max().unwrap_or(0),
                        "revealed_to": format!("all computing parties, and the analyst: {}", out.order_revealed),
                    })),
                    "suppressed_groups": out.suppressed,
                    "reveal": out.reveal_final.as_ref().map_or(serde_json::json!("sums"), |d| serde_json::json!({ "final": d })),
                    "input_check": match &out.check {
                        None => serde_json::json!({ "policy": "off" }),
                        Some((d, p)) => serde_json::json!({
                            "policy": p.name(),
                            "plan": d,
                            "rounds": out.check_stats.iter().map(|s| s.rounds).max().unwrap_or(0),
                            "bytes_per_party": out.check_stats.iter().map(|s| s.bytes_sent).max().unwrap_or(0),
                            "revealed_to": match p {
                                InputCheck::Reject => "all computing parties: one bit per party (its statistics are infeasible)",
                                _ => "nobody (the comparison bits stay secret)",
                            },
                        }),
                    },
                },
            });
            println!("{v}");
        }
        Format::Csv => {
            println!("{}", out.table.columns.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","));
            for r in &out.table.rows {
                println!("{}", r.iter().map(|v| csv_field(&value_text(v))).collect::<Vec<_>>().join(","));
            }
            if let Some(p) = &out.privacy {
                eprintln!("{}", p.description);
                print_estimates(p);
            }
        }
        Format::Table if out.reveal_final.is_some() => {
            print_table(&out.table);
            eprintln!(
                "{} parties: {} rounds, {} bytes sent per party (max), {:.3} s",
                out.stats.len(),
                rounds,
                bytes,
                out.seconds
            );
            if let Some(d) = &out.reveal_final {
                eprintln!("{d}");
            }
        }
        Format::Table => {
            print_table(&out.table);
            eprintln!(
                "{} parties, {:?} sharing over {:?}, {} statistics per party: {} rounds, {} bytes sent per party (max), {:.3} s",
                out.stats.len(),
                out.scheme,
                out.domain,
                out.stats_per_party,
                rounds,
                bytes,
                out.seconds
            );
            if let Some(d) = &out.order {
                eprintln!(
                    "{d}: {} rounds, {} bytes sent per party (max) in the interactive phase",
                    out.order_stats.iter().map(|s| s.rounds).max().unwrap_or(0),
                    out.order_stats.iter().map(|s| s.bytes_sent).max().unwrap_or(0)
                );
                eprintln!(
                    "revealed to all {} computing parties, not only the analyst: {}",
                    out.stats.len(),
                    out.order_revealed
                );
            }
            if out.suppressed > 0 {
                eprintln!("{} group(s) suppressed: fewer rows than the minimum group size", out.suppressed);
            }
            if let Some(p) = &out.privacy {
                eprintln!("differential privacy: {}", p.description);
                print_estimates(p);
            }
            match &out.check {
                Some((d, p)) => eprintln!(
                    "{d}: {} rounds, {} bytes sent per party (max); {}",
                    out.check_stats.iter().map(|s| s.rounds).max().unwrap_or(0),
                    out.check_stats.iter().map(|s| s.bytes_sent).max().unwrap_or(0),
                    match p {
                        InputCheck::Reject => "one bit per party opened",
                        _ => "nothing opened",
                    }
                ),
                None => eprintln!("input check: off"),
            }
        }
    }
    Ok(())
}

/// The privacy report as JSON: the cost and every cell's noise scale and 95% interval.
pub fn privacy_json(p: &concord_session::PrivacyReport) -> serde_json::Value {
    let cells: Vec<serde_json::Value> = p
        .estimates
        .iter()
        .map(|c| {
            serde_json::json!({
                "row": c.row,
                "column": c.column,
                "bin": c.bin,
                "value": c.estimate.value,
                "noise_sd": c.estimate.noise_scale,
                "ci95": [c.estimate.ci95.0, c.estimate.ci95.1],
            })
        })
        .collect();
    serde_json::json!({ "description": p.description, "rho": p.rho, "cells": cells })
}

/// Every noisy cell's noise scale and 95% interval, on stderr.
fn print_estimates(p: &concord_session::PrivacyReport) {
    eprintln!("noisy cells (value, noise standard deviation, 95% interval for the exact value):");
    for c in &p.estimates {
        let bin = c.bin.map_or_else(String::new, |b| format!(" bin {b}"));
        let e = &c.estimate;
        eprintln!(
            "  row {} {}{bin}: {:.4} ± {:.4} (sd), 95% CI [{:.4}, {:.4}]",
            c.row + 1,
            c.column,
            e.value,
            e.noise_scale,
            e.ci95.0,
            e.ci95.1
        );
    }
}

/// Print a result table with aligned columns.
pub fn print_table(t: &ResultTable) {
    let cells: Vec<Vec<String>> = t.rows.iter().map(|r| r.iter().map(value_text).collect()).collect();
    let widths: Vec<usize> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|r| r.get(i).map_or(0, |s| s.len())).max().unwrap_or(0).max(c.len()))
        .collect();
    let line = |items: Vec<&str>| {
        items.iter().zip(&widths).map(|(s, w)| format!("{s:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    println!("{}", line(t.columns.iter().map(String::as_str).collect()));
    println!("{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
    for r in &cells {
        println!("{}", line(r.iter().map(String::as_str).collect()));
    }
}
