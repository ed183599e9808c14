//! # concord-analytics: joint aggregates over rows split across parties
//!
//! Every party evaluates the query's local part on its own rows (in
//! `concord-data`): a vector of exact integer sums (counts, sums, sums of
//! squares and cross products, histogram bins; see `concord_query::Stat`).
//! This crate secret-shares those vectors, adds them under sharing, and hands
//! each party its **share of the totals**, which it sends to the analyst
//! only; the analyst reconstructs the totals ([`reconstruct`]) and finalises
//! the statistics (`concord_query::finalize`). No party opens anything, so
//! no party learns another party's sums or the totals.
//!
//! Linear aggregates need no secure multiplication (the secure-sum protocol
//! of the reference documents): with additive n-of-n sharing each party's
//! input is shared with no message at all (pairwise PRSS streams), and with
//! Shamir t-of-n each input costs one round of n - 1 - t messages per party.
//!
//! Order statistics (`MIN`, `MAX`, `MEDIAN`, `PERCENTILE_CONT`) and the
//! minimum group size need secure comparison, hence multiplication with an
//! honest majority: [`party_with_order`] runs them as an interactive phase
//! over Shamir sharing in GF(2^127-1) (n >= 2t + 1), driving the I/O-free
//! search of `concord_query::order` with `concord_engine::compare`. Its
//! opened values (the comparison bits, the order statistics, which groups
//! are suppressed) are **public to every party**, not only to the analyst.
//!
//! The input check ([`party_checked`], `concord_query::input_check`) runs in
//! the same Shamir session: every party's statistics, still separate
//! sharings after `input_all`, are compared with the feasible region implied
//! by the schema (one LTZ batch for all parties, groups and conditions) and
//! either clamped to it (two rounds of multiplications, nothing opened) or,
//! with `reject`, one bit per party is opened and the query aborted.

use concord_engine::bits::random_elements;
use concord_engine::compare::less_than_zero;
use concord_engine::{AdditiveEngine, EngineError, EngineStats, Mpc, ShamirEngine};
use concord_math::encoding::{decode_signed, encode_signed};
use concord_math::{Field, Ring, M127, M61};
use concord_net::{PartyId, Transport};
use concord_query::input_check::{CheckPlan, InputCheck, Lin, Var};
use concord_query::order::{self, OrderMethod, OrderPlan, OrderResults, OrderValue, Search, Target, KAPPA};
use concord_query::Domain;
use concord_sharing::shamir::{self, ShamirParams};
use concord_sharing::{additive, ShareVec, SharingError};
use rand_core::RngCore;
use zeroize_shim::Wipe;

pub mod final_stats;
mod sort;

/// Errors of the analytics layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalyticsError {
    /// The secure computation failed (names the culprit party where known).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Result shares that do not fit together.
    #[error("result shares: {0}")]
    Shares(String),
    /// A query or schema the chosen method cannot compute (the reason says why and what to change).
    #[error("{0}")]
    Unsupported(String),
    /// Reconstruction failed.
    #[error(transparent)]
    Sharing(#[from] SharingError),
    /// A local statistic does not fit the chosen domain (its value, private
    /// to this party, is deliberately not part of the message).
    #[error("local statistic {index} does not fit {domain:?}; the planner's bound was violated")]
    Overflow {
        /// Position in the vector.
        index: usize,
        /// The domain.
        domain: Domain,
    },
    /// Invalid parameters.
    #[error("{0}")]
    Params(String),
    /// The input check (`reject`) found the statistics of these parties
    /// infeasible: only that bit per party was opened.
    #[error(
        "input check: the statistics contributed by party {} are infeasible for the declared bounds and max_rows \
         (no in-bounds data could produce them); the query is aborted (one bit per party was opened, nothing else)",
        parties.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", party ")
    )]
    Rejected {
        /// The parties whose bit is set.
        parties: Vec<PartyId>,
    },
}

/// How the statistics are shared among the parties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// n-of-n additive sharing: private against any n - 1 colluding parties;
    /// every party's share is needed to reconstruct.
    Additive,
    /// t-of-n Shamir sharing: private against any t colluding parties; any
    /// t + 1 result shares reconstruct.
    Shamir {
        /// The threshold t.
        t: usize,
    },
}

impl Scheme {
    /// The default for `n` parties: additive for 2, Shamir with t = (n-1)/2 otherwise.
    pub fn default_for(n: usize) -> Scheme {
        if n <= 2 {
            Scheme::Additive
        } else {
            Scheme::Shamir { t: (n - 1) / 2 }
        }
    }

    /// Check against the number of parties.
    pub fn validate(&self, n: usize) -> Result<(), AnalyticsError> {
        if n < 2 {
            return Err(AnalyticsError::Params(format!("a joint query needs at least 2 parties, got {n}")));
        }
        if let Scheme::Shamir { t } = *self {
            if t == 0 || t >= n {
                return Err(AnalyticsError::Params(format!("threshold t = {t} must satisfy 1 <= t < n = {n}")));
            }
        }
        Ok(())
    }
}

/// One party's share of the totals, for the analyst only. Zeroized on drop,
/// redacted in `Debug`.
#[derive(Clone)]
pub struct ResultShare {
    /// The party that holds it.
    pub party: PartyId,
    /// Number of parties.
    pub parties: usize,
    /// Sharing scheme.
    pub scheme: Scheme,
    /// Domain of the values.
    pub domain: Domain,
    values: Vec<u128>,
}

impl ResultShare {
    /// Rebuild a share received from a party (for example over a pipe or
    /// the network); [`reconstruct`] checks that the shares fit together.
    pub fn from_parts(party: PartyId, parties: usize, scheme: Scheme, domain: Domain, values: Vec<u128>) -> Self {
        ResultShare { party, parties, scheme, domain, values }
    }

    /// The canonical share values. **Secret** until combined by the analyst.
    pub fn expose(&self) -> &[u128] {
        &self.values
    }

    /// Number of statistics.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl Drop for ResultShare {
    fn drop(&mut self) {
        self.values.wipe();
    }
}

impl core::fmt::Debug for ResultShare {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "ResultShare(party {} of {}, {:?}, {:?}, {} values, redacted)",
            self.party,
            self.parties,
            self.scheme,
            self.domain,
            self.values.len()
        )
    }
}

/// What one party's run produced.
#[derive(Debug)]
pub struct PartyOutcome {
    /// The share of the totals, for the analyst.
    pub share: ResultShare,
    /// Rounds and bytes of this party.
    pub stats: EngineStats,
    /// This party's share of party 0's input, first elements (for showing
    /// what a party actually receives: uniformly random field elements).
    pub sample_of_received: Vec<u128>,
    /// The public results of the interactive phase ([`party_with_order`]),
    /// identical at every party.
    pub order: Option<OrderResults>,
    /// Rounds and bytes of the interactive phase alone (after the first
    /// input round, which it shares with the sums, and the input check).
    pub order_stats: Option<EngineStats>,
    /// Rounds and bytes of the input check alone, if it ran.
    pub check_stats: Option<EngineStats>,
}

mod zeroize_shim {
    /// Volatile-enough wipe of plain integers (the values are shares, not keys).
    pub trait Wipe {
        fn wipe(&mut self);
    }
    impl Wipe for Vec<u128> {
        fn wipe(&mut self) {
            for v in self.iter_mut() {
                *v = 0;
            }
            core::hint::black_box(&self);
        }
    }
}

fn encode_all<F: Field>(local: &[i128], domain: Domain) -> Result<Vec<F>, AnalyticsError> {
    local
        .iter()
        .enumerate()
        .map(|(index, &value)| encode_signed::<F>(value).map_err(|_| AnalyticsError::Overflow { index, domain }))
        .collect()
}

async fn run_engine<M: Mpc>(
    mpc: &mut M,
    local: &[M::Elem],
    scheme: Scheme,
    domain: Domain,
) -> Result<PartyOutcome, AnalyticsError> {
    let (me, n, len) = (mpc.me(), mpc.parties(), local.len());
    // Every party secret-shares its local statistics (one round)...
    let shared = mpc.input_all(local, len).await?;
    let sample = if me != 0 {
        shared.first().map(|s| s.expose().iter().take(4).map(|x| x.to_u128()).collect()).unwrap_or_default()
    } else {
        Vec::new()
    };
    // ...and the sharings are added locally: a sharing of the totals.
    let mut total = ShareVec::zeros(len);
    for s in &shared {
        total = mpc.add(&total, s)?;
    }
    mpc.finish().await?;
    let values = total.expose().iter().map(|x| x.to_u128()).collect();
    Ok(PartyOutcome {
        share: ResultShare { party: me, parties: n, scheme, domain, values },
        stats: mpc.stats(),
        sample_of_received: sample,
        order: None,
        order_stats: None,
        check_stats: None,
    })
}

async fn party_in<F: Field, T: Transport, G: RngCore + ?Sized>(
    net: T,
    scheme: Scheme,
    domain: Domain,
    local: &[i128],
    rng: &mut G,
) -> Result<PartyOutcome, AnalyticsError> {
    let values = encode_all::<F>(local, domain)?;
    match scheme {
        Scheme::Additive => {
            let mut mpc = AdditiveEngine::<F, T, _>::with_insecure_dealer(net, rng).await?;
            run_engine(&mut mpc, &values, scheme, domain).await
        }
        Scheme::Shamir { t } => {
            let mut mpc = ShamirEngine::<F, T>::new(net, t, rng).await?;
            run_engine(&mut mpc, &values, scheme, domain).await
        }
    }
}

/// Run one party of a joint aggregation: secret-share `local` (this party's
/// statistics; every party passes a vector of the same length), add the
/// sharings, and return this party's share of the totals for the analyst.
///
/// The additive engine used here never multiplies, so the insecure dealer
/// test double behind it is never asked for a triple.
pub async fn party<T: Transport, G: RngCore + ?Sized>(
    net: T,
    scheme: Scheme,
    domain: Domain,
    local: &[i128],
    rng: &mut G,
) -> Result<PartyOutcome, AnalyticsError> {
    scheme.validate(net.parties())?;
    match domain {
        Domain::M61 => party_in::<M61, T, G>(net, scheme, domain, local, rng).await,
        Domain::M127 => party_in::<M127, T, G>(net, scheme, domain, local, rng).await,
    }
}

fn combine<F: Field>(shares: &[&ResultShare]) -> Result<Vec<i128>, AnalyticsError> {
    let first = shares.first().ok_or_else(|| AnalyticsError::Shares("no result shares".into()))?;
    let (n, scheme, len) = (first.parties, first.scheme, first.len());
    let mut vecs = Vec::with_capacity(shares.len());
    for s in shares {
        if s.parties != n || s.scheme != scheme || s.domain != first.domain || s.len() != len {
            return Err(AnalyticsError::Shares(format!(
                "party {}'s share does not match party {}'s (parties, scheme, domain or length differ)",
                s.party, first.party
            )));
        }
        let v: Option<Vec<F>> = s.values.iter().map(|&x| (x < F::MODULUS).then(|| F::from_u128(x))).collect();
        let v = v.ok_or_else(|| AnalyticsError::Shares(format!("party {}'s share is not canonical", s.party)))?;
        vecs.push((s.party, ShareVec::from_raw(v)));
    }
    let refs: Vec<(PartyId, &ShareVec<F>)> = vecs.iter().map(|(p, v)| (*p, v)).collect();
    let totals = match scheme {
        Scheme::Additive => additive::reconstruct(&refs, n)?,
        Scheme::Shamir { t } => shamir::reconstruct(&refs, ShamirParams::new::<F>(n, t)?)?,
    };
    Ok(totals.into_iter().map(decode_signed).collect())
}

/// The analyst's side: reconstruct the exact totals from the parties'
/// result shares (all n for additive sharing, any t + 1 for Shamir).
/// **Reveals the totals** to the caller.
pub fn reconstruct(shares: &[&ResultShare]) -> Result<Vec<i128>, AnalyticsError> {
    let first = shares.first().ok_or_else(|| AnalyticsError::Shares("no result shares".into()))?;
    match first.domain {
        Domain::M61 => combine::<M61>(shares),
        Domain::M127 => combine::<M127>(shares),
    }
}

/// Check that order statistics and the minimum group size can run: they
/// need secure comparison, i.e. multiplication, which Concord offers with
/// an honest majority only (Shamir, n >= 2t + 1, so n >= 3); the additive
/// engine's triples come from an insecure test dealer.
pub fn check_comparison_scheme(scheme: Scheme, parties: usize) -> Result<(), AnalyticsError> {
    let why = "MIN, MAX, MEDIAN, PERCENTILE_CONT and the minimum group size need secure comparison, which \
               multiplies shared values: Concord does that with Shamir sharing and an honest majority only \
               (n >= 2t + 1, hence at least 3 parties)";
    match scheme {
        Scheme::Shamir { t } if parties > 2 * t && t >= 1 => Ok(()),
        Scheme::Shamir { t } => {
            Err(AnalyticsError::Params(format!("{why}; got n = {parties} parties with threshold t = {t}")))
        }
        Scheme::Additive => Err(AnalyticsError::Params(format!(
            "{why}; got {parties}-party additive sharing (its multiplication triples would come from an insecure \
             test dealer){}",
            if parties < 3 { "; add a third party" } else { "; use --scheme shamir" }
        ))),
    }
}

/// One party's private input to the interactive phase: the public plan,
/// and its rows per group and sorted values per group and column, as
/// computed by `concord_data::local_order`.
#[derive(Clone, Copy, Debug)]
pub struct OrderInput<'a> {
    /// The public plan (identical at every party).
    pub plan: &'a OrderPlan,
    /// COUNT(*) per group (used only with a minimum group size).
    pub group_rows: &'a [u64],
    /// Sorted non-null values per group and searched column
    /// (`g * plan.columns.len() + j`).
    pub sorted: &'a [Vec<i64>],
}

/// Run one party of a query with order statistics and/or a minimum group
/// size: the secure sums of [`party`] and, in the same session, the
/// interactive phase of `concord_query::order` (Shamir over GF(2^127-1)
/// only: see [`check_comparison_scheme`]; `domain` must be
/// [`Domain::M127`]). Without `order` this is [`party`].
///
/// # Protocol (every step batched over all groups and aggregates)
///
/// 1. One `input_all` round: the local sums, COUNT(*) per group (with a
///    minimum group size k) and the number N of non-null values per group
///    and searched column; with [`party_checked`], the input check on every
///    party's sums; added to pooled sharings.
/// 2. One LTZ batch ([`less_than_zero`], kappa = [`KAPPA`], bit length
///    `plan.count_bits`) on [count - k] and [-N]; the bits [count < k] are
///    opened first, then [N > 0] only for the groups kept.
/// 3. `plan.steps()` lockstep steps of the binary searches (finished ones
///    padded): local counts at the candidates (`partition_point`), one
///    `input_all`, the linear form `concord_query::order::test_form`, one
///    LTZ batch (bit length `plan.search_bits`), one opening.
/// 4. Where x_k < x_{k+1}: counts at x_k, one `input_all`, r opened.
///
/// The share of the sums of suppressed groups is zeroed: it never reaches
/// the analyst. Every opened value is public to every party.
///
/// When `plan.method` is `OrderMethod::ObliviousSort` (exactly 3 parties),
/// the order statistics and the minimum group size run instead on the
/// replicated engine by oblivious sort and selection (protocol in the
/// `sort` module: only the answers, NULL-ness and the suppressed groups are
/// opened, to every party), then the sums as in [`party`] on the same
/// connections.
pub async fn party_with_order<T: Transport, G: RngCore + ?Sized>(
    net: T,
    scheme: Scheme,
    domain: Domain,
    local: &[i128],
    order: Option<OrderInput<'_>>,
    rng: &mut G,
) -> Result<PartyOutcome, AnalyticsError> {
    party_checked(net, scheme, domain, local, order, None, rng).await
}

/// The input check of a run: the public plan and the policy.
#[derive(Clone, Copy, Debug)]
pub struct CheckInput<'a> {
    /// The public plan (`CheckPlan::new` on the query's statistics plan).
    pub plan: &'a CheckPlan,
    /// Clamp or reject (`Off` skips the check).
    pub policy: InputCheck,
}

/// Check that the input check can run: like [`check_comparison_scheme`]
/// (Shamir with an honest majority, n >= 3), with a message that names it.
pub fn check_input_scheme(policy: InputCheck, scheme: Scheme, parties: usize) -> Result<(), AnalyticsError> {
    if policy == InputCheck::Off {
        return Ok(());
    }
    check_comparison_scheme(scheme, parties).map_err(|e| {
        AnalyticsError::Params(format!(
            "--input-check {} compares every party's statistics inside MPC: {e}; or use --input-check off",
            policy.name()
        ))
    })
}

/// [`party_with_order`] with the input check of `check` (module docs of
/// `concord_query::input_check`): after the input round, every party's
/// sums are compared with their feasible region, all parties, groups and
/// conditions in one LTZ batch ([`less_than_zero`], bit length
/// `plan.bits`), then
///
/// - `Clamp`: two rounds of multiplications evaluate
///   `concord_query::input_check::CheckPlan::circuit` on every party's
///   sharings; nothing is opened, so nobody learns whether a statistic was
///   out of range;
/// - `Reject`: per party the sum s of its violation bits is multiplied by a
///   fresh random [r] and r s opened (zero iff s = 0, else uniform): one
///   bit per party; if any is set every party fails with
///   [`AnalyticsError::Rejected`].
///
/// Needs Shamir over GF(2^127-1) with n >= 2t + 1 ([`check_input_scheme`]).
/// `None` (or `Off`) is [`party_with_order`].
pub async fn party_checked<T: Transport, G: RngCore + ?Sized>(
    net: T,
    scheme: Scheme,
    domain: Domain,
    local: &[i128],
    order: Option<OrderInput<'_>>,
    check: Option<CheckInput<'_>>,
    rng: &mut G,
) -> Result<PartyOutcome, AnalyticsError> {
    let check = check.filter(|c| c.policy != InputCheck::Off);
    if order.is_none() && check.is_none() {
        return party(net, scheme, domain, local, rng).await;
    }
    let n = net.parties();
    scheme.validate(n)?;
    match check {
        Some(c) if order.is_none() => check_input_scheme(c.policy, scheme, n)?,
        _ => check_comparison_scheme(scheme, n)?,
    }
    if let Some(input) = order {
        if let OrderMethod::ObliviousSort { max_rows } = input.plan.method {
            return sort::party_with_sort(net, scheme, domain, local, input, max_rows, check, rng).await;
        }
    }
    shamir_phase(net, scheme, domain, local, order, check, rng).await
}

/// The Shamir session of [`party_checked`]: the domain search (if `order`)
/// and the input check (if `check`) over GF(2^127-1), with the sums.
pub(crate) async fn shamir_phase<T: Transport, G: RngCore + ?Sized>(
    net: T,
    scheme: Scheme,
    domain: Domain,
    local: &[i128],
    order: Option<OrderInput<'_>>,
    check: Option<CheckInput<'_>>,
    rng: &mut G,
) -> Result<PartyOutcome, AnalyticsError> {
    let n = net.parties();
    let Scheme::Shamir { t } = scheme else {
        return Err(AnalyticsError::Params("order statistics and the input check need Shamir sharing".into()));
    };
    if domain != Domain::M127 {
        return Err(AnalyticsError::Params(format!(
            "order statistics, the minimum group size and the input check run over GF(2^127-1), got {domain:?}"
        )));
    }
    let values = encode_all::<M127>(local, domain)?;
    let mut mpc = ShamirEngine::<M127, T>::new(net, t, rng).await?;
    let me = mpc.me();
    let (total, results, sample, order_stats, check_stats) = match order {
        Some(input) => {
            let (total, results, sample, order_stats, check_stats) =
                order_phase(&mut mpc, &values, input, check, rng).await?;
            (total, Some(results), sample, Some(order_stats), check_stats)
        }
        None => {
            let (total, sample, check_stats) = checked_sum(&mut mpc, &values, values.len(), check, rng).await?;
            (total.expose().to_vec(), None, sample, None, check_stats)
        }
    };
    mpc.finish().await?;
    Ok(PartyOutcome {
        share: ResultShare {
            party: me,
            parties: n,
            scheme,
            domain,
            values: total.iter().map(|x| x.to_u128()).collect(),
        },
        stats: mpc.stats(),
        sample_of_received: sample,
        order: results,
        order_stats,
        check_stats,
    })
}

/// Secret-share `mine` (every party's vector of the same length) in one
/// round, apply the input check to the first `sums_len` entries of every
/// party's sharing, and add the sharings; with the check's own cost.
async fn checked_sum<T: Transport, G: RngCore + ?Sized>(
    mpc: &mut ShamirEngine<M127, T>,
    mine: &[M127],
    sums_len: usize,
    check: Option<CheckInput<'_>>,
    rng: &mut G,
) -> Result<(ShareVec<M127>, Vec<u128>, Option<EngineStats>), AnalyticsError> {
    let len = mine.len();
    let mut shared = mpc.input_all(mine, len).await?;
    let sample = match shared.first() {
        Some(s) if mpc.me() != 0 => s.expose().iter().take(4).map(|x| x.to_u128()).collect(),
        _ => Vec::new(),
    };
    let mut check_stats = None;
    // Nothing to check (a query of order statistics only): no rounds spent.
    if let Some(c) = check.filter(|_| sums_len > 0) {
        let before = mpc.stats();
        apply_check(mpc, &mut shared, sums_len, c, rng).await?;
        check_stats = Some(mpc.stats() - before);
    }
    let mut total = ShareVec::zeros(len);
    for s in &shared {
        total = mpc.add(&total, s)?;
    }
    Ok((total, sample, check_stats))
}

/// A [`Lin`] with its coefficients in the field.
struct FieldLin {
    terms: Vec<(Var, M127)>,
    constant: M127,
}

impl FieldLin {
    fn new(lin: &Lin) -> Result<FieldLin, AnalyticsError> {
        Ok(FieldLin {
            terms: lin.terms.iter().map(|(v, c)| Ok((*v, field(*c)?))).collect::<Result<_, AnalyticsError>>()?,
            constant: field(lin.constant)?,
        })
    }

    /// The share of the combination (without the constant) and the constant.
    fn eval(&self, stats: &[M127], bits: &[M127], first: &[M127], second: &[M127]) -> (M127, M127) {
        let share = self.terms.iter().fold(M127::ZERO, |acc, (v, c)| {
            let x = match v {
                Var::Stat(i) => stats.get(*i),
                Var::Bit(i) => bits.get(*i),
                Var::First(i) => first.get(*i),
                Var::Second(i) => second.get(*i),
            };
            acc + x.copied().unwrap_or(M127::ZERO) * *c
        });
        (share, self.constant)
    }
}

/// One (party, group) cell's values: statistics, bits, first- and
/// second-round products.
type Cell<'a> = (&'a [M127], &'a [M127], &'a [M127], &'a [M127]);

/// Evaluate `lins` for every (party, group) cell: one vector, cell-major.
fn eval_all<T: Transport>(
    mpc: &ShamirEngine<M127, T>,
    lins: &[FieldLin],
    cells: &[Cell<'_>],
) -> Result<ShareVec<M127>, AnalyticsError> {
    let mut shares = Vec::with_capacity(cells.len() * lins.len());
    let mut constants = Vec::with_capacity(shares.capacity());
    for (stats, bits, first, second) in cells {
        for l in lins {
            let (s, c) = l.eval(stats, bits, first, second);
            shares.push(s);
            constants.push(c);
        }
    }
    Ok(mpc.add_public(&ShareVec::from_raw(shares), &constants)?)
}

/// The input check on every party's sharing (protocol in [`party_checked`]).
async fn apply_check<T: Transport, G: RngCore + ?Sized>(
    mpc: &mut ShamirEngine<M127, T>,
    shared: &mut [ShareVec<M127>],
    sums_len: usize,
    check: CheckInput<'_>,
    mut rng: &mut G,
) -> Result<(), AnalyticsError> {
    let plan = check.plan;
    let (groups, per) = (plan.groups, plan.per_group);
    let shape = if groups.checked_mul(per) != Some(sums_len) || shared.iter().any(|s| s.len() < sums_len) {
        Err(EngineError::Usage(format!(
            "party {}: the input check's plan ({groups} groups x {per} statistics) does not match the {sums_len} \
             local statistics",
            mpc.me()
        )))
    } else {
        Ok(())
    };
    mpc.session().guard(shape).await?;
    let clamp = check.policy == InputCheck::Clamp;
    let forms = if clamp { plan.forms() } else { plan.condition_forms() };
    let forms: Vec<FieldLin> = forms.iter().map(FieldLin::new).collect::<Result<_, _>>()?;
    let nf = forms.len();
    let cells_of = |shared: &[ShareVec<M127>]| -> Vec<Vec<M127>> {
        shared
            .iter()
            .flat_map(|s| (0..groups).map(move |g| s.expose().get(g * per..(g + 1) * per).unwrap_or(&[]).to_vec()))
            .collect()
    };
    let stats = cells_of(shared);
    let none: &[M127] = &[];
    let cells: Vec<_> = stats.iter().map(|s| (s.as_slice(), none, none, none)).collect();
    // One LTZ batch: every party, group and form.
    let a = eval_all(mpc, &forms, &cells)?;
    let bits = less_than_zero(mpc, &a, plan.bits, KAPPA, &mut rng).await?;
    let bits = bits.expose();
    let bits_of = |cell: usize| bits.get(cell * nf..(cell + 1) * nf).unwrap_or(&[]);
    if !clamp {
        // Reject: open r_p * (sum of party p's bits), one value per party.
        let sums: Vec<M127> = (0..shared.len())
            .map(|p| (0..groups).flat_map(|g| bits_of(p * groups + g).iter().copied()).fold(M127::ZERO, |a, b| a + b))
            .collect();
        let r = random_elements(mpc, sums.len(), &mut rng).await?;
        let masked = mpc.mul(&r, &ShareVec::from_raw(sums)).await?;
        let opened = mpc.open(&masked).await?;
        let parties: Vec<PartyId> =
            opened.iter().enumerate().filter(|(_, v)| **v != M127::ZERO).map(|(p, _)| p).collect();
        if !parties.is_empty() {
            return Err(AnalyticsError::Rejected { parties });
        }
        return Ok(());
    }
    // Clamp: the circuit, two rounds of products.
    let circuit = plan.circuit();
    let lift = |pairs: &[(Lin, Lin)]| -> Result<(Vec<FieldLin>, Vec<FieldLin>), AnalyticsError> {
        let left = pairs.iter().map(|(a, _)| FieldLin::new(a)).collect::<Result<_, _>>()?;
        let right = pairs.iter().map(|(_, b)| FieldLin::new(b)).collect::<Result<_, _>>()?;
        Ok((left, right))
    };
    let (l1, r1) = lift(&circuit.first)?;
    let (l2, r2) = lift(&circuit.second)?;
    let outputs: Vec<(usize, FieldLin)> =
        circuit.outputs.iter().map(|(i, l)| Ok((*i, FieldLin::new(l)?))).collect::<Result<_, AnalyticsError>>()?;
    let ncells = stats.len();
    let cells: Vec<_> = stats.iter().enumerate().map(|(c, s)| (s.as_slice(), bits_of(c), none, none)).collect();
    let (a, b) = (eval_all(mpc, &l1, &cells)?, eval_all(mpc, &r1, &cells)?);
    let first = mpc.mul(&a, &b).await?;
    let first = first.expose();
    let n1 = l1.len();
    let first_of = |c: usize| first.get(c * n1..(c + 1) * n1).unwrap_or(&[]);
    let cells: Vec<_> = stats.iter().enumerate().map(|(c, s)| (s.as_slice(), bits_of(c), first_of(c), none)).collect();
    let (a, b) = (eval_all(mpc, &l2, &cells)?, eval_all(mpc, &r2, &cells)?);
    let second = mpc.mul(&a, &b).await?;
    let second = second.expose();
    let n2 = l2.len();
    for c in 0..ncells {
        let (p, g) = (c / groups.max(1), c % groups.max(1));
        let cell_stats = stats.get(c).map(Vec::as_slice).unwrap_or(&[]);
        let snd = second.get(c * n2..(c + 1) * n2).unwrap_or(&[]);
        let mut values = Vec::with_capacity(outputs.len());
        let mut constants = Vec::with_capacity(outputs.len());
        for (_, l) in &outputs {
            let (v, k) = l.eval(cell_stats, bits_of(c), first_of(c), snd);
            values.push(v);
            constants.push(k);
        }
        let clamped = mpc.add_public(&ShareVec::from_raw(values), &constants)?;
        if let Some(target) = shared.get_mut(p) {
            let mut raw = target.expose().to_vec();
            for ((i, _), v) in outputs.iter().zip(clamped.expose()) {
                if let Some(slot) = raw.get_mut(g * per + i) {
                    *slot = *v;
                }
            }
            *target = ShareVec::from_raw(raw);
        }
    }
    Ok(())
}

/// Secret-share `mine` (every party's vector of the same length) in one
/// round and add the sharings.
async fn shared_sum<M: Mpc>(mpc: &mut M, mine: &[M::Elem]) -> Result<(ShareVec<M::Elem>, Vec<u128>), EngineError> {
    let len = mine.len();
    let shared = mpc.input_all(mine, len).await?;
    let sample = match shared.first() {
        Some(s) if mpc.me() != 0 => s.expose().iter().take(4).map(|x| x.to_u128()).collect(),
        _ => Vec::new(),
    };
    let mut total = ShareVec::zeros(len);
    for s in &shared {
        total = mpc.add(&total, s)?;
    }
    Ok((total, sample))
}

/// An opened comparison bit.
fn opened_bit(x: M127, what: &str) -> Result<bool, AnalyticsError> {
    match x.to_u128() {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(AnalyticsError::Shares(format!("an opened {what} bit is neither 0 nor 1"))),
    }
}

fn field(v: i128) -> Result<M127, AnalyticsError> {
    encode_signed::<M127>(v).map_err(|_| AnalyticsError::Params(format!("{v} does not fit GF(2^127-1)")))
}

/// `c_n [N] + c_c [C] + c_0` element-wise (local: linear in the shares).
fn linear_form<T: Transport>(
    mpc: &ShamirEngine<M127, T>,
    forms: &[(i128, i128, i128)],
    n: &[M127],
    c: &[M127],
) -> Result<ShareVec<M127>, AnalyticsError> {
    let mut lin = Vec::with_capacity(forms.len());
    let mut constants = Vec::with_capacity(forms.len());
    for ((f, n), c) in forms.iter().zip(n).zip(c) {
        lin.push(*n * field(f.0)? + *c * field(f.1)?);
        constants.push(field(f.2)?);
    }
    Ok(mpc.add_public(&ShareVec::from_raw(lin), &constants)?)
}

/// One search of the interactive phase.
struct Job {
    group: usize,
    stat: usize,
    /// Index into the per-(group, column) vectors.
    cell: usize,
    target: Target,
    search: Search,
}

/// Number of values <= v in a sorted list.
fn count_at_most(sorted: &[i64], v: i64) -> M127 {
    M127::from_u64(sorted.partition_point(|x| *x <= v) as u64)
}

type PhaseOutput = (Vec<M127>, OrderResults, Vec<u128>, EngineStats, Option<EngineStats>);

/// The interactive phase (protocol in [`party_with_order`]).
async fn order_phase<T: Transport, G: RngCore + ?Sized>(
    mpc: &mut ShamirEngine<M127, T>,
    sums: &[M127],
    input: OrderInput<'_>,
    check: Option<CheckInput<'_>>,
    mut rng: &mut G,
) -> Result<PhaseOutput, AnalyticsError> {
    let plan = input.plan;
    let (groups, ncols, nstats) = (plan.groups, plan.columns.len(), plan.stats.len());
    let gate = plan.min_group_size;
    let cells = groups.saturating_mul(ncols);
    let shape = if input.sorted.len() != cells
        || plan.stats.iter().any(|s| plan.column_index(s.col).is_none())
        || (gate.is_some() && input.group_rows.len() != groups)
        || groups.checked_mul(plan.sums_per_group) != Some(sums.len())
    {
        Err(EngineError::Usage(format!(
            "party {}: local order input does not match the plan ({} sorted lists for {groups} groups x {ncols} \
             columns, {} group counts, {} sums for {} per group)",
            mpc.me(),
            input.sorted.len(),
            input.group_rows.len(),
            sums.len(),
            plan.sums_per_group
        )))
    } else {
        Ok(())
    };
    mpc.session().guard(shape).await?;
    let columns: Vec<usize> = plan.stats.iter().map(|s| plan.column_index(s.col).unwrap_or(0)).collect();

    // 1. Sums, group sizes and counts of non-null values, in one round.
    let mut mine = sums.to_vec();
    if gate.is_some() {
        mine.extend(input.group_rows.iter().map(|&c| M127::from_u64(c)));
    }
    mine.extend(input.sorted.iter().map(|v| M127::from_u64(v.len() as u64)));
    let (total, sample, check_stats) = checked_sum(mpc, &mine, sums.len(), check, &mut *rng).await?;
    let before = mpc.stats();
    let total = total.expose();
    let (sum_part, rest) = total.split_at(sums.len().min(total.len()));
    let (rows_part, n_part) = rest.split_at(if gate.is_some() { groups.min(rest.len()) } else { 0 });

    // 2. [count < k] and [N > 0] in one comparison batch.
    let mut a = Vec::with_capacity(rows_part.len() + n_part.len());
    if let Some(k) = gate {
        let k = M127::from_u64(k);
        a.extend(rows_part.iter().map(|c| *c - k));
    }
    if plan.has_order_stats() {
        a.extend(n_part.iter().map(|n| -*n));
    }
    let ltz = less_than_zero(mpc, &ShareVec::from_raw(a), plan.count_bits, KAPPA, &mut rng).await?;
    let ltz = ltz.expose();
    let mut kept = vec![true; groups];
    let offset = if gate.is_some() { groups } else { 0 };
    if gate.is_some() && groups > 0 {
        let below = mpc.open(&ShareVec::from_raw(ltz[..groups].to_vec())).await?;
        for (k, b) in kept.iter_mut().zip(below) {
            *k = !opened_bit(b, "group size")?;
        }
    }
    let mut nonempty = vec![false; cells];
    if plan.has_order_stats() {
        let asked: Vec<usize> = (0..cells).filter(|&i| kept[i / ncols.max(1)]).collect();
        if !asked.is_empty() {
            let bits: Vec<M127> = asked.iter().map(|&i| ltz[offset + i]).collect();
            let opened = mpc.open(&ShareVec::from_raw(bits)).await?;
            for (&i, b) in asked.iter().zip(opened) {
                nonempty[i] = opened_bit(b, "non-empty")?;
            }
        }
    }

    // 3. The searches, in lockstep.
    let mut jobs: Vec<Job> = Vec::new();
    for (g, _) in kept.iter().enumerate().filter(|(_, k)| **k) {
        for (s, os) in plan.stats.iter().enumerate() {
            let j = columns[s];
            let cell = g * ncols + j;
            if !nonempty[cell] {
                continue;
            }
            let col = &plan.columns[j];
            jobs.push(Job { group: g, stat: s, cell, target: Target::Lower, search: Search::new(col.lo, col.hi) });
            if order::needs_upper(os.p) {
                jobs.push(Job { group: g, stat: s, cell, target: Target::Upper, search: Search::new(col.lo, col.hi) });
            }
        }
    }
    let forms: Vec<(i128, i128, i128)> =
        jobs.iter().map(|j| order::test_form(plan.stats[j.stat].p, j.target)).collect();
    let job_n: Vec<M127> = jobs.iter().map(|j| n_part[j.cell]).collect();
    if !jobs.is_empty() {
        for _ in 0..plan.steps() {
            let local: Vec<M127> =
                jobs.iter().map(|j| count_at_most(&input.sorted[j.cell], j.search.candidate())).collect();
            let (c, _) = shared_sum(mpc, &local).await?;
            let a = linear_form(mpc, &forms, &job_n, c.expose())?;
            let bits = less_than_zero(mpc, &a, plan.search_bits, KAPPA, &mut rng).await?;
            let opened = mpc.open(&bits).await?;
            for (j, b) in jobs.iter_mut().zip(opened) {
                j.search.update(opened_bit(b, "search")?);
            }
        }
    }
    let mut values: Vec<Option<OrderValue>> = vec![None; groups * nstats];
    for j in &jobs {
        let v = j.search.result().ok_or_else(|| AnalyticsError::Params("a search did not finish".into()))?;
        let slot = &mut values[j.group * nstats + j.stat];
        let entry = slot.get_or_insert(OrderValue { lower: v, upper: v, remainder: 0 });
        match j.target {
            Target::Lower => {
                entry.lower = v;
                if !order::needs_upper(plan.stats[j.stat].p) {
                    entry.upper = v;
                }
            }
            Target::Upper => entry.upper = v,
        }
    }

    // 4. The remainder r where the two order statistics differ.
    let pending: Vec<(usize, usize)> = jobs
        .iter()
        .filter(|j| j.target == Target::Lower)
        .map(|j| (j.group * nstats + j.stat, j.cell))
        .filter(|(slot, _)| values[*slot].is_some_and(|v| v.lower < v.upper))
        .collect();
    if !pending.is_empty() {
        let mut local = Vec::with_capacity(pending.len());
        let mut rforms = Vec::with_capacity(pending.len());
        let mut rn = Vec::with_capacity(pending.len());
        for &(slot, cell) in &pending {
            let v = values[slot].map_or(0, |v| v.lower);
            local.push(count_at_most(&input.sorted[cell], v));
            rforms.push(order::test_form(plan.stats[slot % nstats].p, Target::Upper));
            rn.push(n_part[cell]);
        }
        let (c, _) = shared_sum(mpc, &local).await?;
        let r = linear_form(mpc, &rforms, &rn, c.expose())?;
        let opened = mpc.open(&r).await?;
        for (&(slot, _), r) in pending.iter().zip(opened) {
            let den = plan.stats[slot % nstats].p.den();
            let r = u64::try_from(r.to_u128()).ok().filter(|&r| r < den).ok_or_else(|| {
                AnalyticsError::Shares(format!("the opened interpolation remainder is not below {den}"))
            })?;
            if let Some(v) = values[slot].as_mut() {
                v.remainder = r;
            }
        }
    }

    // Suppressed groups: their sums never leave this party.
    let mut sums_out = sum_part.to_vec();
    for (g, k) in kept.iter().enumerate() {
        if !k {
            let range = g * plan.sums_per_group..(g + 1) * plan.sums_per_group;
            if let Some(chunk) = sums_out.get_mut(range) {
                chunk.fill(M127::ZERO);
            }
        }
    }
    let results = OrderResults {
        stats: plan.stats.clone(),
        min_group_size: gate,
        suppressed: kept.iter().map(|k| !k).collect(),
        values,
    };
    Ok((sums_out, results, sample, mpc.stats() - before, check_stats))
}
