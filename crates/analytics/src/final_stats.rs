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
//! # Precision
//! Each division has relative error within about 2^-15 plus a few units of
//! 2^-16 (see `Rep3Engine::divide`); a statistic goes through at most four
//! of them, so results are within about 2^-13 relative (plus 2^-14
//! absolute) of the exact value. The planner ([`FinalPlan::new`]) refuses
//! schemas whose bounds could overflow the 64-bit ring.

use concord_engine::rep3::Rep3Engine;
use concord_engine::EngineStats;
use concord_net::{PartyId, Transport};
use concord_protocol::rep3::{BitShare, RingShare};
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
/// value (the analyst adds the three parties' components). **Secret**.
#[derive(Debug)]
pub struct FinalOutcome {
    /// Our party index.
    pub party: PartyId,
    /// First components, see [`FinalPlan::output_len`].
    pub components: Vec<u64>,
    /// Rounds and bytes of the whole session.
    pub stats: EngineStats,
}

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
    let mut e = Rep3Engine::new(net, rng).await?;
    let me = e.me();
    let len = local.len();
    if len != plan.revealed.len() || stats_per_group * plan.groups != len {
        return Err(AnalyticsError::Shares(format!(
            "{len} local statistics do not match the plan ({} groups)",
            plan.groups
        )));
    }
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
    for agg in &plan.aggs {
        let gather = |i: Option<usize>| -> Result<RingShare, AnalyticsError> {
            let i = i.unwrap_or(0);
            let idx: Vec<usize> = (0..plan.groups).map(|g| g * stats_per_group + i).collect();
            pooled.gather(&idx).map_err(|e| AnalyticsError::Engine(e.into()))
        };
        let [n, sx, sy, sxx, syy, sxy] = [0, 1, 2, 3, 4, 5].map(|k| gather(agg.idx[k]));
        let (value, null) = compute(&mut e, agg, n?, sx?, sy?, sxx?, syy?, sxy?).await?;
        let (vo, _) = value.expose();
        let (no, _) = null.expose();
        out.extend_from_slice(vo);
        out.extend_from_slice(no);
    }
    e.finish().await?;
    Ok(FinalOutcome { party: me, components: out, stats: e.stats() })
}

fn perr(e: concord_protocol::ProtocolError) -> AnalyticsError {
    AnalyticsError::Engine(e.into())
}

/// C_ab = n S_ab - S_a S_b, exact: one multiplication round.
async fn cprod<T: Transport>(
    e: &mut Rep3Engine<T>,
    n: &RingShare,
    a: &RingShare,
    b: &RingShare,
    ab: &RingShare,
) -> Result<RingShare, AnalyticsError> {
    let len = n.len();
    let p = e.mul(&RingShare::concat(&[n, a]), &RingShare::concat(&[ab, b])).await?;
    let first = p.slice(0..len).map_err(perr)?;
    let second = p.slice(len..2 * len).map_err(perr)?;
    first.sub(&second).map_err(perr)
}

/// (C / n) / m in fixed point, m = n (population) or n - 1 (sample).
async fn covar_fixed<T: Transport>(
    e: &mut Rep3Engine<T>,
    c: &RingShare,
    n: &RingShare,
    n1: &RingShare,
    sample: bool,
    (tbits, cbits, l_n): (u32, u32, u32),
) -> Result<RingShare, AnalyticsError> {
    let t = e.divide_wide(c, n, FRAC, l_n, cbits.min(62)).await?;
    let den = if sample { n1 } else { n };
    Ok(e.divide_wide(&t, den, 0, l_n, tbits.min(62)).await?)
}

#[allow(clippy::too_many_arguments)]
async fn compute<T: Transport>(
    e: &mut Rep3Engine<T>,
    agg: &FinalAgg,
    n: RingShare,
    sx: RingShare,
    sy: RingShare,
    sxx: RingShare,
    syy: RingShare,
    sxy: RingShare,
) -> Result<(RingShare, RingShare), AnalyticsError> {
    let me = e.me();
    let g = n.len();
    let ones = RingShare::public(me, &vec![1; g]);
    let n1 = n.sub(&ones).map_err(perr)?;
    let (sbits_x, sbits_y, tbits, cbits) = agg.bits;
    let l_n = agg.l_n;
    let b = (tbits, cbits, l_n);
    // NULL flags: n = 0, n <= 1.
    let zero_n = e.is_zero(&n, l_n + 1).await?;
    let zero_n1 = e.is_zero(&n1, l_n + 1).await?;
    let sample_null = or(e, &zero_n, &zero_n1).await?;
    let (value, null_bits) = match agg.kind {
        Kind::Avg => (e.divide_wide(&sx, &n, FRAC, l_n, sbits_x.min(62)).await?, zero_n),
        Kind::Var(s) | Kind::Stddev(s) | Kind::Covar(s) => {
            let c = match agg.kind {
                Kind::Covar(_) => cprod(e, &n, &sx, &sy, &sxy).await?,
                _ => cprod(e, &n, &sx, &sx, &sxx).await?,
            };
            let v = covar_fixed(e, &c, &n, &n1, s, b).await?;
            let v = if matches!(agg.kind, Kind::Stddev(_)) { sqrt_scaled(e, &v, agg.l_v).await? } else { v };
            (v, if s { sample_null } else { zero_n })
        }
        Kind::Corr | Kind::Slope | Kind::Intercept | Kind::R2 => {
            let cxy = cprod(e, &n, &sx, &sy, &sxy).await?;
            let cxx = cprod(e, &n, &sx, &sx, &sxx).await?;
            let zero_cxx = e.is_zero(&cxx, 63).await?;
            let null_x = or(e, &zero_n, &zero_cxx).await?;
            let covar_xy = covar_fixed(e, &cxy, &n, &n1, false, b).await?;
            let var_x = covar_fixed(e, &cxx, &n, &n1, false, b).await?;
            match agg.kind {
                Kind::Slope | Kind::Intercept => {
                    let slope = e.divide(&covar_xy, &var_x, FRAC, agg.l_v).await?;
                    if agg.kind == Kind::Slope {
                        (slope, null_x)
                    } else {
                        let mx = e.divide_wide(&sx, &n, FRAC, l_n, sbits_x.min(62)).await?;
                        let my = e.divide_wide(&sy, &n, FRAC, l_n, sbits_y.min(62)).await?;
                        let sm = e.fixed_mul(&slope, &mx, FRAC).await?;
                        (my.sub(&sm).map_err(perr)?, null_x)
                    }
                }
                _ => {
                    let cyy = cprod(e, &n, &sy, &sy, &syy).await?;
                    let zero_cyy = e.is_zero(&cyy, 63).await?;
                    let var_y = covar_fixed(e, &cyy, &n, &n1, false, b).await?;
                    let sd = sqrt_scaled(e, &RingShare::concat(&[&var_x, &var_y]), agg.l_v).await?;
                    let sdx = sd.slice(0..g).map_err(perr)?;
                    let sdy = sd.slice(g..2 * g).map_err(perr)?;
                    let prod = e.fixed_mul(&sdx, &sdy, FRAC).await?;
                    let corr = e.divide(&covar_xy, &prod, FRAC, agg.l_v).await?;
                    if agg.kind == Kind::Corr {
                        (corr, or(e, &null_x, &zero_cyy).await?)
                    } else {
                        // REGR_R2 is 1 when var(y) = 0 (and var(x) > 0).
                        let r2 = e.fixed_mul(&corr, &corr, FRAC).await?;
                        let one = RingShare::public(me, &vec![1u64 << FRAC; g]);
                        (e.select(&zero_cyy, &one, &r2).await?, null_x)
                    }
                }
            }
        }
    };
    let null = e.bit_to_ring(&null_bits).await?;
    Ok((value, null))
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

async fn or<T: Transport>(e: &mut Rep3Engine<T>, a: &BitShare, b: &BitShare) -> Result<BitShare, AnalyticsError> {
    let ab = e.and(a, b).await?;
    let x = a.xor(b).and_then(|v| v.xor(&ab)).map_err(|e| AnalyticsError::Engine(e.into()))?;
    Ok(x)
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
