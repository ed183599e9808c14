//! Final statistics computed inside MPC (`concord run --reveal final`).
//!
//! By default the analyst learns the pooled sufficient statistics of every
//! aggregate (for `AVG` the count and the sum). With `--reveal final` the
//! three parties compute `AVG`, `VAR_*`, `STDDEV_*`, `COVAR_*`, `CORR`,
//! `REGR_SLOPE`, `REGR_INTERCEPT` and `REGR_R2` themselves, in fixed point
//! with [`FRAC`] fractional bits on the replicated engine
//! (`concord_engine::rep3`), and the analyst receives only shares of the
//! final value and of a NULL flag per group: no party and not the analyst
//! sees a count, a sum or a sum of squares. `COUNT`, `SUM` and `HISTOGRAM`
//! are their own sufficient statistics and are revealed as before.
//!
//! # Method (per group, vectorised over the groups)
//! With n, Sx, Sy, Sxx, Syy, Sxy the pooled sums (exact integers in
//! Z/2^64), C_xy = n Sxy - Sx Sy is exact (one multiplication round) and
//! n^2 times the population covariance. Then, with `divide` the
//! Newton-Raphson division of the engine (Catrina and Saxena, FC 2010):
//! mean = Sx / n; covar_pop = (C_xy / n) / n; covar_samp = (C_xy / n) / (n - 1);
//! var = covar(x, x); stddev = sqrt(var); corr = covar_pop / (sd_x sd_y);
//! slope = covar_pop / var_pop(x); intercept = mean_y - slope mean_x;
//! r2 = corr^2 (1 when var(y) = 0). NULL exactly where PostgreSQL returns
//! NULL: n = 0; n <= 1 for the sample forms; C_xx = 0 (or C_yy = 0 for
//! CORR) for the two-variable statistics; decided by secure zero tests,
//! never opened to the parties.
//!
//! # Rounds
//! Every stage (means, C products, zero tests, covariances, square roots,
//! quotients, products, NULL flags) is one batch over all aggregates and
//! groups whose columns have the same declared bounds, so the rounds grow
//! with the number of distinct bound classes (about 600 rounds each), not
//! with the number of aggregates or groups.
//!
//! # Precision
//! Each division has relative error within about 2^-15 plus a few units of
//! 2^-16 (see `Rep3Engine::divide`); a statistic goes through at most four
//! of them, so results are within about 2^-13 relative (plus 2^-14
//! absolute) of the exact value. The planner ([`FinalPlan::new`]) refuses
//! schemas whose bounds could overflow the 64-bit ring.

use concord_engine::rep3::Rep3Engine;
use concord_engine::EngineStats;
use concord_net::{PartyId, Transport};
use concord_protocol::rep3::RingShare;
use concord_query::plan::stats_for;
use concord_query::{Aggregate, ColumnId, Query, ResultTable, Schema, Stat, StatsPlan, Value};
use rand_core::RngCore;

use crate::AnalyticsError;

/// Fractional bits of the final statistics.
pub const FRAC: u32 = 16;

/// Bit length bound of the denominators and square-root inputs (see `Rep3Engine::divide`).
const L: u32 = 40;

/// A statistic computed inside MPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `AVG(x)`.
    Avg,
    /// `VAR_POP`, `VAR_SAMP` (sample: true).
    Var(bool),
    /// `STDDEV_POP`, `STDDEV_SAMP`.
    Stddev(bool),
    /// `COVAR_POP`, `COVAR_SAMP`.
    Covar(bool),
    /// `CORR(y, x)`.
    Corr,
    /// `REGR_SLOPE(y, x)`.
    Slope,
    /// `REGR_INTERCEPT(y, x)`.
    Intercept,
    /// `REGR_R2(y, x)`.
    R2,
}

/// One aggregate of the query computed inside MPC.
#[derive(Clone, Debug)]
pub struct FinalAgg {
    /// Position in the SELECT list.
    pub select: usize,
    /// What is computed.
    pub kind: Kind,
    /// x (the only column of one-column statistics).
    pub x: ColumnId,
    /// y for two-column statistics (`COVAR_*(y, x)` etc.), else x.
    pub y: ColumnId,
    /// Positions in `plan.stats` of n, Sx, Sy, Sxx, Syy, Sxy (those the kind needs).
    idx: [Option<usize>; 6],
    /// Bits of the largest |Sx|, |Sy|, |C_xy / n| 2^FRAC, |C_xy|.
    bits: (u32, u32, u32, u32),
    /// Bit length bound of the pooled count n (the divisions by n use it).
    l_n: u32,
    /// Bit length bound of a variance in fixed point (divisions by it, square roots).
    l_v: u32,
    /// The decimal exponent of the result: the value is scaled by 10^-exp.
    pub exp: i32,
}

/// The public plan of `--reveal final`.
#[derive(Clone, Debug)]
pub struct FinalPlan {
    /// The aggregates computed inside MPC.
    pub aggs: Vec<FinalAgg>,
    /// Which entries of the totals vector (group-major) the analyst receives
    /// (those of `COUNT`, `SUM`, `HISTOGRAM`).
    pub revealed: Vec<bool>,
    /// Number of groups.
    pub groups: usize,
}

fn bits_of(v: u128) -> u32 {
    128 - v.leading_zeros()
}

fn refuse(msg: String) -> AnalyticsError {
    AnalyticsError::Unsupported(format!("--reveal final: {msg}"))
}

impl FinalPlan {
    /// Plan the final statistics of `query` for `parties` parties, or refuse
    /// with the reason (not three parties, an aggregate that cannot be
    /// computed this way, bounds that could overflow the ring).
    pub fn new(query: &Query, schema: &Schema, plan: &StatsPlan, parties: usize) -> Result<FinalPlan, AnalyticsError> {
        if parties != 3 {
            return Err(refuse(format!(
                "final statistics are computed on the three-party replicated engine, not with {parties} parties"
            )));
        }
        let n_max = u128::from(schema.max_rows).saturating_mul(parties as u128);
        if bits_of(n_max) > L - 1 {
            return Err(refuse(format!("{parties} parties x max_rows {} exceeds 2^{}", schema.max_rows, L - 1)));
        }
        let col = |c: ColumnId| -> Result<(u128, u128, i32, String), AnalyticsError> {
            let def = schema.columns.get(c).ok_or_else(|| refuse(format!("no column #{c}")))?;
            let (lo, hi) = def.ty.bounds().ok_or_else(|| refuse(format!("column {} is not numeric", def.name)))?;
            let half_range = (i128::from(hi) - i128::from(lo)).unsigned_abs().div_ceil(2);
            let max_abs = i128::from(lo).unsigned_abs().max(i128::from(hi).unsigned_abs());
            Ok((half_range, max_abs, def.ty.scale() as i32, def.name.clone()))
        };
        let pos = |s: &Stat| plan.stats.binary_search(s).ok();
        let mut aggs = Vec::new();
        let mut revealed_stats = vec![false; plan.stats.len()];
        for (select, (name, agg)) in query.select.iter().enumerate() {
            let (kind, y, x) = match agg {
                Aggregate::Avg(c) => (Kind::Avg, *c, *c),
                Aggregate::VarPop(c) => (Kind::Var(false), *c, *c),
                Aggregate::VarSamp(c) => (Kind::Var(true), *c, *c),
                Aggregate::StddevPop(c) => (Kind::Stddev(false), *c, *c),
                Aggregate::StddevSamp(c) => (Kind::Stddev(true), *c, *c),
                Aggregate::CovarPop(y, x) => (Kind::Covar(false), *y, *x),
                Aggregate::CovarSamp(y, x) => (Kind::Covar(true), *y, *x),
                Aggregate::Corr(y, x) => (Kind::Corr, *y, *x),
                Aggregate::RegrSlope(y, x) => (Kind::Slope, *y, *x),
                Aggregate::RegrIntercept(y, x) => (Kind::Intercept, *y, *x),
                Aggregate::RegrR2(y, x) => (Kind::R2, *y, *x),
                Aggregate::CountStar | Aggregate::Count(_) | Aggregate::Sum(_) | Aggregate::Histogram { .. } => {
                    for s in stats_for(agg) {
                        if let Some(i) = pos(&s) {
                            revealed_stats[i] = true;
                        }
                    }
                    continue;
                }
                Aggregate::Linreg { .. } => {
                    return Err(refuse(format!(
                        "{name}: LINREG needs a matrix inverse inside MPC, which is not supported; without \
                         --reveal final it reveals its sufficient statistics"
                    )))
                }
                _ => {
                    return Err(refuse(format!(
                        "{name}: order statistics already reveal only their answer; run them without --reveal final"
                    )))
                }
            };
            let (hx, mx, sx, nx) = col(x)?;
            let (hy, my, sy, ny) = col(y)?;
            // Stats in the order of `stats_for`: n, Sx, Sy, Sxy, then Sxx, Syy.
            let needed = stats_for(agg);
            let find = |mono: &[ColumnId]| {
                needed
                    .iter()
                    .find(|s| {
                        matches!(s, Stat::Moment { monomial, .. } if {
                            let mut m = mono.to_vec();
                            m.sort_unstable();
                            *monomial == m
                        })
                    })
                    .and_then(pos)
            };
            let two = x != y;
            let idx = [
                find(&[]),
                find(&[x]),
                if two { find(&[y]) } else { find(&[x]) },
                find(&[x, x]),
                if two { find(&[y, y]) } else { find(&[x, x]) },
                if two { find(&[x, y]) } else { find(&[x, x]) },
            ];
            // Bounds: |S| <= n m; |C_xy| <= n^2 hx hy; var <= hx^2.
            let s_bits = (bits_of(n_max.saturating_mul(mx)) + 1, bits_of(n_max.saturating_mul(my)) + 1);
            let c_over_n = n_max.saturating_mul(hx.max(1)).saturating_mul(hy.max(1));
            let t_bits = bits_of(c_over_n) + FRAC + 1;
            let c_bits = bits_of(n_max.saturating_mul(c_over_n)) + 1;
            let var_bits = bits_of(hx.max(hy).saturating_mul(hx.max(hy))) + FRAC;
            if s_bits.0.max(s_bits.1) > 62 || t_bits > 62 || c_bits > 62 {
                return Err(refuse(format!(
                    "{name}: with {parties} parties x max_rows {} and the bounds of {nx} and {ny}, the pooled sums \
                     could overflow the 64-bit ring; declare a smaller max_rows or narrower bounds",
                    schema.max_rows
                )));
            }
            if !matches!(kind, Kind::Avg | Kind::Covar(_) | Kind::Var(_)) && var_bits > 56 {
                return Err(refuse(format!(
                    "{name}: the variance of {nx} or {ny} could reach 2^{}, beyond the 2^{} the fixed-point \
                     division takes; narrow the declared bounds",
                    var_bits - FRAC,
                    56 - FRAC
                )));
            }
            let exp = match kind {
                Kind::Avg | Kind::Stddev(_) => sx,
                Kind::Var(_) => 2 * sx,
                Kind::Covar(_) => sx + sy,
                Kind::Corr | Kind::R2 => 0,
                Kind::Slope => sy - sx,
                Kind::Intercept => sy,
            };
            // n, Sx, Sy, Sxx, Syy, Sxy: which ones the kind reads.
            let uses: [bool; 6] = match kind {
                Kind::Avg => [true, true, false, false, false, false],
                Kind::Var(_) | Kind::Stddev(_) => [true, true, false, true, false, false],
                Kind::Covar(_) => [true, true, true, false, false, true],
                Kind::Slope | Kind::Intercept => [true, true, true, true, false, true],
                Kind::Corr | Kind::R2 => [true; 6],
            };
            if idx.iter().zip(uses).any(|(i, u)| u && i.is_none()) {
                return Err(refuse(format!("{name}: the plan lacks a statistic it needs")));
            }
            let l_n = (bits_of(n_max) + 1).max(2);
            let l_v = var_bits.max(2);
            aggs.push(FinalAgg { select, kind, x, y, idx, bits: (s_bits.0, s_bits.1, t_bits, c_bits), l_n, l_v, exp });
        }
        let ns = plan.stats.len();
        let revealed = (0..plan.groups.len() * ns).map(|i| revealed_stats[i % ns.max(1)]).collect();
        Ok(FinalPlan { aggs, revealed, groups: plan.groups.len() })
    }

    /// Values per party output: the revealed totals, then (value, null flag)
    /// per group and final aggregate.
    pub fn output_len(&self) -> usize {
        self.revealed.len() + 2 * self.groups * self.aggs.len()
    }
}

/// One party's share of the analyst's output: its first component of every
/// value (the analyst adds the three parties' components). **Secret**:
/// `Debug` prints only the length.
pub struct FinalOutcome {
    /// Our party index.
    pub party: PartyId,
    /// First components, see [`FinalPlan::output_len`].
    pub components: Vec<u64>,
    /// Rounds and bytes of the whole session.
    pub stats: EngineStats,
}

impl core::fmt::Debug for FinalOutcome {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "FinalOutcome(party {}, {} components, redacted)", self.party, self.components.len())
    }
}

/// A local statistic in Z/2^64. Sums that wrap are fine: every quantity the
/// plan divides or tests (S, C = n S_ab - S_a S_b) is checked to fit 62 bits,
/// and arithmetic mod 2^64 gives it exactly.
fn ring(v: i128) -> u64 {
    v as u64
}

/// One party's side of `--reveal final`: share its local statistics, add
/// them, compute every final statistic, and return its components of the
/// output for the analyst. Nothing is opened among the parties.
pub async fn party_final<T: Transport, G: RngCore + ?Sized>(
    net: T,
    plan: &FinalPlan,
    stats_per_group: usize,
    local: &[i128],
    rng: &mut G,
) -> Result<FinalOutcome, AnalyticsError> {
    let len = local.len();
    if len != plan.revealed.len() || stats_per_group * plan.groups != len {
        return Err(AnalyticsError::Shares(format!(
            "{len} local statistics do not match the plan ({} groups)",
            plan.groups
        )));
    }
    let mut e = Rep3Engine::new(net, rng).await?;
    let me = e.me();
    let mine: Vec<u64> = local.iter().map(|v| ring(*v)).collect();
    let mut pooled: Option<RingShare> = None;
    for owner in 0..3 {
        let s = e.input(owner, (owner == me).then_some(&mine[..]), len).await?;
        pooled = Some(match pooled {
            None => s,
            Some(p) => p.add(&s).map_err(concord_engine::EngineError::from)?,
        });
    }
    let pooled = pooled.ok_or_else(|| AnalyticsError::Shares("no input".into()))?;
    let (own, _) = pooled.expose();
    let mut out: Vec<u64> = own.iter().zip(&plan.revealed).map(|(v, r)| if *r { *v } else { 0 }).collect();
    let mut inputs = Vec::with_capacity(plan.aggs.len());
    for agg in &plan.aggs {
        let gather = |i: Option<usize>| -> Result<RingShare, AnalyticsError> {
            let i = i.unwrap_or(0);
            let idx: Vec<usize> = (0..plan.groups).map(|g| g * stats_per_group + i).collect();
            pooled.gather(&idx).map_err(perr)
        };
        let [n, sx, sy, sxx, syy, sxy] = [0, 1, 2, 3, 4, 5].map(|k| gather(agg.idx[k]));
        inputs.push(Moments { n: n?, sx: sx?, sy: sy?, sxx: sxx?, syy: syy?, sxy: sxy? });
    }
    // Aggregates whose bounds agree share every batch (the divisions' bit
    // budgets are set by the largest bound of a batch, so mixing columns of
    // very different ranges would cost precision); classes run one after another.
    let mut results: Vec<Option<(RingShare, RingShare)>> = vec![None; plan.aggs.len()];
    let mut classes: Vec<BoundClass> = plan.aggs.iter().map(|a| (a.bits, a.l_n, a.l_v)).collect();
    classes.sort_unstable();
    classes.dedup();
    for class in classes {
        let members: Vec<usize> = (0..plan.aggs.len())
            .filter(|&i| plan.aggs.get(i).is_some_and(|a| (a.bits, a.l_n, a.l_v) == class))
            .collect();
        let aggs: Vec<FinalAgg> = members.iter().filter_map(|&i| plan.aggs.get(i).cloned()).collect();
        let moments: Vec<Moments> = members.iter().filter_map(|&i| inputs.get(i).cloned()).collect();
        for (&i, r) in members.iter().zip(compute_all(&mut e, &aggs, &moments).await?) {
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(r);
            }
        }
    }
    for r in results {
        let (value, null) =
            r.ok_or_else(|| AnalyticsError::Shares("internal: an aggregate was not computed".into()))?;
        out.extend_from_slice(value.expose().0);
        out.extend_from_slice(null.expose().0);
    }
    e.finish().await?;
    Ok(FinalOutcome { party: me, components: out, stats: e.stats() })
}

fn perr(e: concord_protocol::ProtocolError) -> AnalyticsError {
    AnalyticsError::Engine(e.into())
}

/// The bit budgets that decide which aggregates share a batch.
type BoundClass = ((u32, u32, u32, u32), u32, u32);

/// A NULL flag's first part and, if it is an OR, the second with its place in the product batch.
type NullParts = (RingShare, Option<(RingShare, core::ops::Range<usize>)>);

/// The pooled moments of one aggregate, one element per group.
#[derive(Clone)]
struct Moments {
    n: RingShare,
    sx: RingShare,
    sy: RingShare,
    sxx: RingShare,
    syy: RingShare,
    sxy: RingShare,
}

/// Vectors gathered from every aggregate into one batch, with the ranges
/// each aggregate's parts occupy.
#[derive(Default)]
struct Batch {
    parts: Vec<RingShare>,
    len: usize,
}

impl Batch {
    /// Append `v`; returns its element range in the batch.
    fn push(&mut self, v: &RingShare) -> core::ops::Range<usize> {
        let r = self.len..self.len + v.len();
        self.len += v.len();
        self.parts.push(v.clone());
        r
    }
    fn all(&self) -> RingShare {
        let refs: Vec<&RingShare> = self.parts.iter().collect();
        RingShare::concat(&refs)
    }
}

/// The part `r` of a stage's output, if the stage ran and the part exists.
fn pick(batch: &Option<RingShare>, r: &Option<core::ops::Range<usize>>) -> Result<Option<RingShare>, AnalyticsError> {
    match (r, batch) {
        (Some(r), Some(v)) => Ok(Some(part(v, r)?)),
        _ => Ok(None),
    }
}

fn part(v: &RingShare, r: &core::ops::Range<usize>) -> Result<RingShare, AnalyticsError> {
    v.slice(r.clone()).map_err(perr)
}

/// `a OR b` for 0/1 ring values: a + b - ab (`ab` computed by the caller).
fn or_ring(a: &RingShare, b: &RingShare, ab: &RingShare) -> Result<RingShare, AnalyticsError> {
    a.add(b).and_then(|v| v.sub(ab)).map_err(perr)
}

/// Every final statistic of every aggregate, in stages whose vectors batch
/// all aggregates and groups, so that the rounds do not grow with the
/// number of aggregates: means; exact C products; zero tests; covariances
/// (two divisions); square roots; products of standard deviations;
/// quotients; products for the intercept and R^2; NULL flags. Returns
/// (value, NULL flag as 0/1) per aggregate.
async fn compute_all<T: Transport>(
    e: &mut Rep3Engine<T>,
    aggs: &[FinalAgg],
    m: &[Moments],
) -> Result<Vec<(RingShare, RingShare)>, AnalyticsError> {
    let me = e.me();
    let max = |f: fn(&FinalAgg) -> u32| aggs.iter().map(f).max().unwrap_or(2);
    let (l_n, l_v) = (max(|a| a.l_n), max(|a| a.l_v));
    let sbits = max(|a| a.bits.0.max(a.bits.1)).min(62);
    let (tbits, cbits) = (max(|a| a.bits.2).min(62), max(|a| a.bits.3).min(62));
    let two_var = |k: Kind| matches!(k, Kind::Corr | Kind::R2);
    let uses_x_var = |k: Kind| matches!(k, Kind::Corr | Kind::R2 | Kind::Slope | Kind::Intercept);
    // Stage 1: means (Sx / n, and Sy / n for the intercept).
    let mut means = Batch::default();
    let mut means_n = Batch::default();
    let mut mean_at = Vec::new();
    for (a, mm) in aggs.iter().zip(m) {
        let rx = matches!(a.kind, Kind::Avg | Kind::Intercept).then(|| {
            means_n.push(&mm.n);
            means.push(&mm.sx)
        });
        let ry = (a.kind == Kind::Intercept).then(|| {
            means_n.push(&mm.n);
            means.push(&mm.sy)
        });
        mean_at.push((rx, ry));
    }
    // Stage 2: C products, one multiplication round: n Sab - Sa Sb.
    let mut lhs = Batch::default();
    let mut rhs = Batch::default();
    let mut c_at = Vec::new();
    for (a, mm) in aggs.iter().zip(m) {
        let mut add = |x: &RingShare, y: &RingShare, xy: &RingShare| {
            let r = lhs.push(&mm.n);
            rhs.push(xy);
            lhs.push(x);
            rhs.push(y);
            r
        };
        let cxy = match a.kind {
            Kind::Avg => None,
            Kind::Var(_) | Kind::Stddev(_) => Some(add(&mm.sx, &mm.sx, &mm.sxx)),
            _ => Some(add(&mm.sx, &mm.sy, &mm.sxy)),
        };
        let cxx = uses_x_var(a.kind).then(|| add(&mm.sx, &mm.sx, &mm.sxx));
        let cyy = two_var(a.kind).then(|| add(&mm.sy, &mm.sy, &mm.syy));
        c_at.push((cxy, cxx, cyy));
    }
    let mean_vals =
        if means.len > 0 { Some(e.divide_wide(&means.all(), &means_n.all(), FRAC, l_n, sbits).await?) } else { None };
    let prods = if lhs.len > 0 { Some(e.mul(&lhs.all(), &rhs.all()).await?) } else { None };
    // C = first half (n Sab) minus the next (Sa Sb) of each pushed pair.
    let c_of = |r: &core::ops::Range<usize>| -> Result<RingShare, AnalyticsError> {
        let p = prods.as_ref().ok_or_else(|| AnalyticsError::Shares("internal: no products".into()))?;
        let first = part(p, r)?;
        let second = part(p, &(r.end..r.end + r.len()))?;
        first.sub(&second).map_err(perr)
    };
    // Stage 3: zero tests of n, n - 1, C_xx, C_yy (one batch, as 0/1 ring values).
    let ones = |len: usize| RingShare::public(me, &vec![1; len]);
    let mut zt = Batch::default();
    let mut z_at = Vec::new();
    let mut cs = Vec::new();
    for ((_, mm), (cxy, cxx, cyy)) in aggs.iter().zip(m).zip(&c_at) {
        let cxy = cxy.as_ref().map(c_of).transpose()?;
        let cxx = cxx.as_ref().map(c_of).transpose()?;
        let cyy = cyy.as_ref().map(c_of).transpose()?;
        let n1 = mm.n.sub(&ones(mm.n.len())).map_err(perr)?;
        let zn = zt.push(&mm.n);
        let zn1 = zt.push(&n1);
        let zx = cxx.as_ref().map(|c| zt.push(c));
        let zy = cyy.as_ref().map(|c| zt.push(c));
        z_at.push((zn, zn1, zx, zy, n1));
        cs.push((cxy, cxx, cyy));
    }
    let zero_bits = e.is_zero(&zt.all(), 63).await?;
    let zeros = e.bit_to_ring(&zero_bits).await?;
    // Stage 4: covariances (C / n) / m, m = n or n - 1.
    let mut cov_c = Batch::default();
    let mut cov_n = Batch::default();
    let mut cov_m = Batch::default();
    let mut cov_at = Vec::new();
    for ((a, mm), ((cxy, cxx, cyy), (_, _, _, _, n1))) in aggs.iter().zip(m).zip(cs.iter().zip(&z_at)) {
        let sample = matches!(a.kind, Kind::Var(true) | Kind::Stddev(true) | Kind::Covar(true));
        let mut add = |c: &RingShare| {
            cov_n.push(&mm.n);
            cov_m.push(if sample { n1 } else { &mm.n });
            cov_c.push(c)
        };
        cov_at.push((cxy.as_ref().map(&mut add), cxx.as_ref().map(&mut add), cyy.as_ref().map(&mut add)));
    }
    let covs = if cov_c.len > 0 {
        let t = e.divide_wide(&cov_c.all(), &cov_n.all(), FRAC, l_n, cbits).await?;
        Some(e.divide_wide(&t, &cov_m.all(), 0, l_n, tbits).await?)
    } else {
        None
    };
    let cov = |r: &Option<core::ops::Range<usize>>| pick(&covs, r);
    // Stage 5: square roots (STDDEV; sd_x, sd_y of CORR and R2).
    let mut sq = Batch::default();
    let mut sq_at = Vec::new();
    for (a, (rxy, rxx, ryy)) in aggs.iter().zip(&cov_at) {
        sq_at.push(match a.kind {
            Kind::Stddev(_) => (cov(rxy)?.map(|v| sq.push(&v)), None),
            k if two_var(k) => (cov(rxx)?.map(|v| sq.push(&v)), cov(ryy)?.map(|v| sq.push(&v))),
            _ => (None, None),
        });
    }
    let roots = if sq.len > 0 { Some(sqrt_scaled(e, &sq.all(), l_v).await?) } else { None };
    let root = |r: &Option<core::ops::Range<usize>>| pick(&roots, r);
    // Stage 6: sd_x sd_y for CORR and R2.
    let mut pa = Batch::default();
    let mut pb = Batch::default();
    let mut p_at = Vec::new();
    for (a, (rx, ry)) in aggs.iter().zip(&sq_at) {
        p_at.push(match (two_var(a.kind), root(rx)?, root(ry)?) {
            (true, Some(x), Some(y)) => {
                pb.push(&y);
                Some(pa.push(&x))
            }
            _ => None,
        });
    }
    let sd_prod = if pa.len > 0 { Some(e.fixed_mul(&pa.all(), &pb.all(), FRAC).await?) } else { None };
    // Stage 7: quotients covar_xy / var_x (slope, intercept) or / (sd_x sd_y) (corr, r2).
    let mut qn = Batch::default();
    let mut qd = Batch::default();
    let mut q_at = Vec::new();
    for ((a, (rxy, rxx, _)), pr) in aggs.iter().zip(&cov_at).zip(&p_at) {
        let den = match (a.kind, pr, &sd_prod) {
            (Kind::Slope | Kind::Intercept, _, _) => cov(rxx)?,
            (k, Some(r), Some(p)) if two_var(k) => Some(part(p, r)?),
            _ => None,
        };
        q_at.push(match (den, cov(rxy)?) {
            (Some(d), Some(num)) if uses_x_var(a.kind) => {
                qd.push(&d);
                Some(qn.push(&num))
            }
            _ => None,
        });
    }
    let quots = if qn.len > 0 { Some(e.divide(&qn.all(), &qd.all(), FRAC, l_v).await?) } else { None };
    let quot = |r: &Option<core::ops::Range<usize>>| pick(&quots, r);
    let mean = |r: &Option<core::ops::Range<usize>>| pick(&mean_vals, r);
    // Stage 8: slope * mean_x (intercept), corr * corr (r2), and the NULL ORs, one round.
    let mut ma = Batch::default();
    let mut mb = Batch::default();
    let mut fixed_at = Vec::new();
    for ((a, q), (mx, _)) in aggs.iter().zip(&q_at).zip(&mean_at) {
        fixed_at.push(match (a.kind, quot(q)?) {
            (Kind::Intercept, Some(s)) => mean(mx)?.map(|x| {
                mb.push(&x);
                ma.push(&s)
            }),
            (Kind::R2, Some(c)) => {
                mb.push(&c);
                Some(ma.push(&c))
            }
            _ => None,
        });
    }
    let fixed = if ma.len > 0 { Some(e.fixed_mul(&ma.all(), &mb.all(), FRAC).await?) } else { None };
    let mut oa = Batch::default();
    let mut ob = Batch::default();
    let mut or_at: Vec<NullParts> = Vec::new();
    for (a, (zn, zn1, zx, _, _)) in aggs.iter().zip(&z_at) {
        let first = part(&zeros, zn)?;
        let second = match a.kind {
            Kind::Var(true) | Kind::Stddev(true) | Kind::Covar(true) => Some(part(&zeros, zn1)?),
            k if uses_x_var(k) => zx.as_ref().map(|r| part(&zeros, r)).transpose()?,
            _ => None,
        };
        or_at.push(match second {
            Some(sec) => {
                ob.push(&sec);
                let r = oa.push(&first);
                (first, Some((sec, r)))
            }
            None => (first, None),
        });
    }
    let or_prod = if oa.len > 0 { Some(e.mul(&oa.all(), &ob.all()).await?) } else { None };
    // Assemble; CORR's NULL also when var(y) = 0, R2 is 1 when var(y) = 0.
    let mut sel_b = Batch::default();
    let mut sel_d = Batch::default();
    let mut out = Vec::with_capacity(aggs.len());
    let mut pending = Vec::new();
    for (i, a) in aggs.iter().enumerate() {
        let (rxy, _, _) = &cov_at[i];
        let null = match &or_at[i] {
            (f, Some((sec, r))) => {
                let p = or_prod.as_ref().ok_or_else(|| AnalyticsError::Shares("internal: no OR products".into()))?;
                or_ring(f, sec, &part(p, r)?)?
            }
            (f, None) => f.clone(),
        };
        let value = match a.kind {
            Kind::Avg => mean(&mean_at[i].0)?,
            Kind::Var(_) | Kind::Covar(_) => cov(rxy)?,
            Kind::Stddev(_) => root(&sq_at[i].0)?,
            Kind::Corr | Kind::Slope => quot(&q_at[i])?,
            Kind::Intercept => match (&fixed_at[i], &fixed, mean(&mean_at[i].1)?) {
                (Some(r), Some(f), Some(my)) => Some(my.sub(&part(f, r)?).map_err(perr)?),
                _ => None,
            },
            Kind::R2 => match (&fixed_at[i], &fixed) {
                (Some(r), Some(f)) => Some(part(f, r)?),
                _ => None,
            },
        };
        let value = value.ok_or_else(|| AnalyticsError::Shares(format!("internal: no value for {:?}", a.kind)))?;
        if two_var(a.kind) {
            // z_y = [C_yy = 0]: CORR NULL, R2 = 1.
            let zy = z_at[i].3.as_ref().map(|r| part(&zeros, r)).transpose()?;
            let zy = zy.ok_or_else(|| AnalyticsError::Shares("internal: no var(y) test".into()))?;
            let one = RingShare::public(me, &vec![1u64 << FRAC; value.len()]);
            let d = if a.kind == Kind::Corr {
                ones(zy.len()).sub(&null).map_err(perr)?
            } else {
                one.sub(&value).map_err(perr)?
            };
            sel_d.push(&d);
            pending.push((i, sel_b.push(&zy)));
        }
        out.push((value, null));
    }
    if sel_b.len > 0 {
        let prod = e.mul(&sel_b.all(), &sel_d.all()).await?;
        for (i, r) in pending {
            let p = part(&prod, &r)?;
            if let Some((value, null)) = out.get_mut(i) {
                if aggs.get(i).is_some_and(|a| a.kind == Kind::Corr) {
                    // null OR z_y = null + z_y (1 - null).
                    *null = null.add(&p).map_err(perr)?;
                } else {
                    // value + z_y (1 - value).
                    *value = value.add(&p).map_err(perr)?;
                }
            }
        }
    }
    Ok(out)
}

/// sqrt of a fixed-point variance below 2^l_v: directly when l_v <= 40,
/// else of v / 4^j (exact truncation by 2j bits), times 2^j.
async fn sqrt_scaled<T: Transport>(
    e: &mut Rep3Engine<T>,
    v: &RingShare,
    l_v: u32,
) -> Result<RingShare, AnalyticsError> {
    if l_v <= L {
        return Ok(e.sqrt(v, FRAC, L).await?);
    }
    let j = (l_v - L).div_ceil(2);
    let scaled = e.truncate(v, 2 * j, l_v + 1).await?;
    let root = e.sqrt(&scaled, FRAC, L).await?;
    Ok(root.scale(1u64 << j))
}

/// The analyst's side: add the three parties' components, then build the
/// result table: the revealed totals finalised as usual, every MPC-computed
/// cell replaced by its fixed-point value (scaled back to the columns'
/// decimal scale) or NULL.
pub fn finalize_final(
    query: &Query,
    schema: &Schema,
    plan: &StatsPlan,
    fplan: &FinalPlan,
    outcomes: &[&[u64]],
) -> Result<ResultTable, AnalyticsError> {
    if outcomes.len() != 3 || outcomes.iter().any(|o| o.len() != fplan.output_len()) {
        return Err(AnalyticsError::Shares(format!(
            "expected 3 outputs of {} values, got {} of lengths {:?}",
            fplan.output_len(),
            outcomes.len(),
            outcomes.iter().map(|o| o.len()).collect::<Vec<_>>()
        )));
    }
    let sum: Vec<i64> =
        (0..fplan.output_len()).map(|i| outcomes.iter().fold(0u64, |acc, o| acc.wrapping_add(o[i])) as i64).collect();
    let nt = fplan.revealed.len();
    let totals: Vec<i128> = sum[..nt].iter().map(|v| i128::from(*v)).collect();
    let mut table = concord_query::finalize(query, schema, plan, &totals)
        .map_err(|e| AnalyticsError::Shares(format!("finalising the revealed totals: {e}")))?;
    let offset = query.group_by.len();
    let g = fplan.groups;
    for (a, agg) in fplan.aggs.iter().enumerate() {
        let base = nt + 2 * g * a;
        for (row_index, row) in table.rows.iter_mut().enumerate().take(g) {
            let value = sum[base + row_index];
            let null = sum[base + g + row_index];
            let cell = if null != 0 {
                Value::Null
            } else {
                Value::Number(value as f64 / f64::from(1u32 << FRAC) / 10f64.powi(agg.exp))
            };
            if let Some(c) = row.get_mut(offset + agg.select) {
                *c = cell;
            }
        }
    }
    Ok(table)
}
