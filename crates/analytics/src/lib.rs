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

use concord_engine::{AdditiveEngine, EngineError, EngineStats, Mpc, ShamirEngine};
use concord_math::encoding::{decode_signed, encode_signed};
use concord_math::{Field, Ring, M127, M61};
use concord_net::{PartyId, Transport};
use concord_query::Domain;
use concord_sharing::shamir::{self, ShamirParams};
use concord_sharing::{additive, ShareVec, SharingError};
use rand_core::RngCore;
use zeroize_shim::Wipe;

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
