//! Order statistics by oblivious sort on the three-party replicated engine
//! (`OrderMethod::ObliviousSort`, chosen by `OrderPlan::choose_method`).
//!
//! # Protocol (every step batched over all groups, columns and aggregates)
//!
//! With M = 3 `max_rows` padded values per (group, column) cell and the
//! layout of `concord_query::order::SortLayout`:
//!
//! 1. Each party inputs (`Rep3Engine::input`, one round per party) one key
//!    per slot of every cell, its values padded to `max_rows` with dummies
//!    (key = cell 2^(B+1) + (1 - valid) 2^B + (v - lo), computed locally:
//!    the party knows which of its slots are real), its number of values per
//!    cell and, with a minimum group size, its COUNT(*) per group.
//! 2. With a minimum group size k: [COUNT(*) < k] per group, opened.
//! 3. One `Rep3Engine::sort` of every key (shuffle, then quicksort with
//!    opened comparisons): cell c ends in positions [c M, (c + 1) M), its
//!    N real values first, ascending; x_i = key_i - c 2^(B+1) + lo.
//! 4. One sign batch: [N - 1 < 0] per cell (emptiness), and for each
//!    aggregate with p = P/D, D > 1, [P (N - 1) - j D < 0] for j = 1 .. M-1;
//!    one conversion to Z/2^64; k = (M - 1) - sum_j of those bits
//!    (= floor(p (N - 1))), or k = P (N - 1) when D = 1 (MIN, MAX);
//!    r = P (N - 1) - k D.
//! 5. One equality batch [k - i = 0] (and [k + 1 - i = 0] when D > 1) for
//!    i = 0 .. M-1, one conversion, one multiplication by the cell's x_i and
//!    local sums: x_k and x_{k+1}.
//! 6. One multiplication: D x_k + r (x_{k+1} - x_k); one opening, to every
//!    party, of the emptiness bits and these answers of the kept groups.
//!
//! Afterwards, on the same connections, the sums of the other aggregates
//! run as in `crate::party`, with this party's sums of suppressed groups
//! zeroed: they never reach the analyst.
//!
//! For an empty cell (N = 0) the opened answer is a public constant (all
//! its slots are dummies with key c 2^(B+1) + 2^B), so it reveals nothing.

use std::future::Future;
use std::sync::Arc;

use concord_engine::rep3::Rep3Engine;
use concord_engine::{EngineError, EngineStats};
use concord_net::{LinkStats, NetError, PartyId, Transport};
use concord_protocol::rep3::RingShare;
use concord_protocol::ProtocolError;
use concord_query::order::{sort_answer, OrderResults, OrderValue, SortLayout};
use concord_query::Domain;
use rand_core::RngCore;

use crate::{AnalyticsError, OrderInput, PartyOutcome, Scheme};

/// One transport used by two sessions in turn (the replicated engine, then
/// the secure sums); only the owner of the `Arc` shuts it down.
struct SharedLink<T>(Arc<T>);

impl<T: Transport> Transport for SharedLink<T> {
    fn me(&self) -> PartyId {
        self.0.me()
    }

    fn parties(&self) -> usize {
        self.0.parties()
    }

    fn send(&self, to: PartyId, payload: Vec<u8>) -> impl Future<Output = Result<(), NetError>> + Send {
        self.0.send(to, payload)
    }

    fn recv(&self, from: PartyId) -> impl Future<Output = Result<Vec<u8>, NetError>> + Send {
        self.0.recv(from)
    }

    fn abort(&self, reason: &str) -> impl Future<Output = ()> + Send {
        self.0.abort(reason)
    }

    fn stats(&self) -> LinkStats {
        self.0.stats()
    }

    async fn shutdown(&mut self) {}
}

fn ok<V>(r: Result<V, ProtocolError>) -> Result<V, AnalyticsError> {
    r.map_err(|e| AnalyticsError::Engine(e.into()))
}

fn plus(a: EngineStats, b: EngineStats) -> EngineStats {
    EngineStats {
        rounds: a.rounds + b.rounds,
        bytes_sent: a.bytes_sent + b.bytes_sent,
        bytes_received: a.bytes_received + b.bytes_received,
        messages_sent: a.messages_sent + b.messages_sent,
    }
}

/// One party of a query whose order statistics run by oblivious sort
/// (protocol in the module docs), then the secure sums of [`crate::party`]
/// (with the input check of `check`, [`crate::party_checked`]) on the same
/// connections. Exactly 3 parties.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn party_with_sort<T: Transport, G: RngCore + ?Sized>(
    net: T,
    scheme: Scheme,
    domain: Domain,
    local: &[i128],
    input: OrderInput<'_>,
    max_rows: u64,
    check: Option<crate::CheckInput<'_>>,
    rng: &mut G,
) -> Result<PartyOutcome, AnalyticsError> {
    let plan = input.plan;
    let layout = plan
        .sort_layout(net.parties(), max_rows)
        .map_err(|why| AnalyticsError::Params(format!("the oblivious sort is impossible: {why}")))?;
    let link = Arc::new(net);
    let mut rep = Rep3Engine::new(SharedLink(Arc::clone(&link)), rng).await?;
    let (results, kept) = sort_phase(&mut rep, input, local.len(), &layout).await?;
    rep.finish().await?;
    let order_stats = rep.stats();
    drop(rep);
    let mut sums = local.to_vec();
    let per = plan.sums_per_group;
    for (g, k) in kept.iter().enumerate() {
        if !k {
            if let Some(chunk) = sums.get_mut(g * per..(g + 1) * per) {
                chunk.fill(0);
            }
        }
    }
    // The sums, with the input check if one is asked for (Shamir, same connections).
    let link2 = SharedLink(Arc::clone(&link));
    let mut out = match check.filter(|c| c.policy != concord_query::input_check::InputCheck::Off) {
        Some(c) => crate::shamir_phase(link2, scheme, domain, &sums, None, Some(c), rng).await?,
        None => crate::party(link2, scheme, domain, &sums, rng).await?,
    };
    if let Ok(mut net) = Arc::try_unwrap(link) {
        net.shutdown().await;
    }
    out.stats = plus(out.stats, order_stats);
    out.order = Some(results);
    out.order_stats = Some(order_stats);
    Ok(out)
}

/// This party's private input vector: keys of every cell padded to
/// `max_rows`, then its value count per cell, then (with a minimum group
/// size) its COUNT(*) per group. Refuses data that break the schema.
fn local_keys(input: &OrderInput<'_>, sums_len: usize, l: &SortLayout, me: PartyId) -> Result<Vec<u64>, String> {
    let plan = input.plan;
    let (groups, ncols) = (plan.groups, plan.columns.len());
    if input.sorted.len() != l.cells
        || (plan.min_group_size.is_some() && input.group_rows.len() != groups)
        || groups.checked_mul(plan.sums_per_group) != Some(sums_len)
    {
        return Err(format!(
            "party {me}: local order input does not match the plan ({} value lists for {} cells, {} group counts, \
             {sums_len} sums)",
            input.sorted.len(),
            l.cells,
            input.group_rows.len()
        ));
    }
    let mut keys = Vec::with_capacity(l.cells * l.rows + l.cells + input.group_rows.len());
    for (cell, list) in input.sorted.iter().enumerate() {
        let col =
            plan.columns.get(cell % ncols.max(1)).ok_or_else(|| format!("party {me}: no column for cell {cell}"))?;
        if list.len() > l.rows {
            return Err(format!(
                "party {me} has more values in one group than the schema's max_rows = {}; the oblivious sort pads \
                 to max_rows",
                l.rows
            ));
        }
        let width = i128::from(col.hi) - i128::from(col.lo);
        for slot in 0..l.rows {
            let key = match list.get(slot) {
                Some(&v) => {
                    let off = i128::from(v) - i128::from(col.lo);
                    if !(0..=width).contains(&off) {
                        return Err(format!(
                            "party {me} has a value of column #{} outside its declared bounds",
                            col.col
                        ));
                    }
                    l.key(cell, Some(off as u64))
                }
                None => l.key(cell, None),
            };
            keys.push(key);
        }
    }
    keys.extend(input.sorted.iter().map(|v| v.len() as u64));
    if plan.min_group_size.is_some() {
        keys.extend(input.group_rows.iter().copied());
    }
    Ok(keys)
}

/// One order statistic of one group.
struct Job {
    group: usize,
    stat: usize,
    cell: usize,
    num: u64,
    den: u64,
}

/// Steps 1 to 6 of the module docs: the public results and which groups are kept.
async fn sort_phase<T: Transport>(
    rep: &mut Rep3Engine<T>,
    input: OrderInput<'_>,
    sums_len: usize,
    l: &SortLayout,
) -> Result<(OrderResults, Vec<bool>), AnalyticsError> {
    let plan = input.plan;
    let (groups, ncols, nstats) = (plan.groups, plan.columns.len(), plan.stats.len());
    let (me, rows, m, cells) = (rep.me(), l.rows, l.padded, l.cells);
    let mine = local_keys(&input, sums_len, l, me).map_err(EngineError::Usage);
    let mine = rep.session().guard(mine).await?;

    // 1. Inputs, one round per owner.
    let len = mine.len();
    let mut parts = Vec::with_capacity(3);
    for owner in 0..3 {
        parts.push(rep.input(owner, (owner == me).then_some(mine.as_slice()), len).await?);
    }
    let all = RingShare::concat(&parts.iter().collect::<Vec<_>>());
    let key_idx: Vec<usize> =
        (0..cells).flat_map(|c| (0..3).flat_map(move |o| (0..rows).map(move |s| o * len + c * rows + s))).collect();
    let keys = ok(all.gather(&key_idx))?;
    let pooled = |offset: usize, n: usize| -> Result<RingShare, AnalyticsError> {
        let mut acc = ok(all.slice(offset..offset + n))?;
        for o in 1..3 {
            acc = ok(acc.add(&ok(all.slice(o * len + offset..o * len + offset + n))?))?;
        }
        Ok(acc)
    };
    let big_n = pooled(cells * rows, cells)?;

    // 2. The minimum group size.
    let mut kept = vec![true; groups];
    if let Some(k) = plan.min_group_size {
        let c = pooled(cells * rows + cells, groups)?;
        let lt = rep.less_than(&c, &RingShare::public(me, &vec![k; groups]), l.gate_bits).await?;
        let below = rep.open_bools(&lt).await?;
        for (kept, b) in kept.iter_mut().zip(below) {
            *kept = !b;
        }
    }

    // 3. The sort; x_i = key_i - c 2^(B+1) + lo.
    let sorted = rep.sort(&keys, l.sort_bits).await?;
    let mut offsets = Vec::with_capacity(cells * m);
    for c in 0..cells {
        let lo = plan.columns.get(c % ncols.max(1)).map_or(0, |col| col.lo);
        offsets.extend(std::iter::repeat_n((lo as u64).wrapping_sub(l.cell_base(c)), m));
    }
    let x = ok(sorted.add_public(me, &offsets))?;

    // 4. Emptiness and ranks k.
    let mut jobs = Vec::with_capacity(groups * nstats);
    for g in 0..groups {
        for (s, os) in plan.stats.iter().enumerate() {
            let j =
                plan.column_index(os.col).ok_or_else(|| AnalyticsError::Params("a statistic without column".into()))?;
            jobs.push(Job { group: g, stat: s, cell: g * ncols + j, num: os.p.num(), den: os.p.den() });
        }
    }
    let mut rank = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let n = ok(big_n.slice(job.cell..job.cell + 1))?;
        rank.push(ok(n.scale(job.num).add_public(me, &[job.num.wrapping_neg()]))?);
    }
    let ones = vec![1u64.wrapping_neg(); cells];
    let mut batch = vec![ok(big_n.add_public(me, &ones))?];
    for (job, rk) in jobs.iter().zip(&rank) {
        if job.den > 1 {
            let minus: Vec<u64> = (1..m as u64).map(|j| j.wrapping_mul(job.den).wrapping_neg()).collect();
            batch.push(ok(ok(rk.gather(&vec![0; m - 1]))?.add_public(me, &minus))?);
        }
    }
    let signs = rep.msb(&RingShare::concat(&batch.iter().collect::<Vec<_>>()), l.rank_bits).await?;
    let signs = rep.bit_to_ring(&signs).await?;
    let empty = ok(signs.slice(0..cells))?;
    let mut at = cells;
    let mut ks = Vec::with_capacity(jobs.len());
    let mut rs = Vec::with_capacity(jobs.len());
    for (job, rk) in jobs.iter().zip(&rank) {
        if job.den > 1 {
            let below = ok(signs.slice(at..at + m - 1))?.sum();
            at += m - 1;
            let k = ok(RingShare::public(me, &[m as u64 - 1]).sub(&below))?;
            rs.push(ok(rk.sub(&k.scale(job.den)))?);
            ks.push(k);
        } else {
            ks.push(rk.clone());
        }
    }

    // 5. x_k and x_{k+1} by oblivious selection.
    let minus_i: Vec<u64> = (0..m as u64).map(u64::wrapping_neg).collect();
    let mut diffs = Vec::new();
    let mut blocks = Vec::new();
    for (job, k) in jobs.iter().zip(&ks) {
        let block = ok(x.slice(job.cell * m..(job.cell + 1) * m))?;
        diffs.push(ok(ok(k.gather(&vec![0; m]))?.add_public(me, &minus_i))?);
        blocks.push(block.clone());
        if job.den > 1 {
            let k1 = ok(k.add_public(me, &[1]))?;
            diffs.push(ok(ok(k1.gather(&vec![0; m]))?.add_public(me, &minus_i))?);
            blocks.push(block);
        }
    }
    let hits = rep.is_zero(&RingShare::concat(&diffs.iter().collect::<Vec<_>>()), l.index_bits).await?;
    let hits = rep.bit_to_ring(&hits).await?;
    let picked = rep.mul(&hits, &RingShare::concat(&blocks.iter().collect::<Vec<_>>())).await?;
    let pick = |t: usize| -> Result<RingShare, AnalyticsError> { Ok(ok(picked.slice(t * m..(t + 1) * m))?.sum()) };

    // 6. D x_k + r (x_{k+1} - x_k), then one opening.
    let (mut t, mut lower, mut gaps) = (0, Vec::with_capacity(jobs.len()), Vec::new());
    for job in &jobs {
        let xk = pick(t)?;
        t += 1;
        if job.den > 1 {
            gaps.push(ok(pick(t)?.sub(&xk))?);
            t += 1;
        }
        lower.push(xk.scale(job.den));
    }
    let mut answers = Vec::with_capacity(jobs.len());
    if gaps.is_empty() {
        answers = lower;
    } else {
        let r = RingShare::concat(&rs.iter().collect::<Vec<_>>());
        let prod = rep.mul(&r, &RingShare::concat(&gaps.iter().collect::<Vec<_>>())).await?;
        let mut at = 0;
        for (job, low) in jobs.iter().zip(lower) {
            if job.den > 1 {
                answers.push(ok(low.add(&ok(prod.slice(at..at + 1))?))?);
                at += 1;
            } else {
                answers.push(low);
            }
        }
    }
    let open_cells: Vec<usize> = (0..cells).filter(|c| kept.get(c / ncols.max(1)) == Some(&true)).collect();
    let open_jobs: Vec<usize> = (0..jobs.len()).filter(|&i| jobs.get(i).is_some_and(|j| kept[j.group])).collect();
    let mut to_open = vec![ok(empty.gather(&open_cells))?];
    for &i in &open_jobs {
        to_open.extend(answers.get(i).cloned());
    }
    let opened = rep.open(&RingShare::concat(&to_open.iter().collect::<Vec<_>>())).await?;
    let (empties, values_open) = opened.split_at(open_cells.len().min(opened.len()));
    let mut is_empty = vec![true; cells];
    for (&c, &b) in open_cells.iter().zip(empties) {
        is_empty[c] = match b {
            0 => false,
            1 => true,
            _ => return Err(AnalyticsError::Shares("an opened emptiness bit is neither 0 nor 1".into())),
        };
    }
    let mut values: Vec<Option<OrderValue>> = vec![None; groups * nstats];
    for (&i, &a) in open_jobs.iter().zip(values_open) {
        let job = &jobs[i];
        if !is_empty[job.cell] {
            values[job.group * nstats + job.stat] = Some(sort_answer(a as i64, job.den));
        }
    }
    let results = OrderResults {
        stats: plan.stats.clone(),
        min_group_size: plan.min_group_size,
        suppressed: kept.iter().map(|k| !k).collect(),
        values,
    };
    Ok((results, kept))
}
