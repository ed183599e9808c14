//! Additive n-of-n sharing over a ring: x = sum of all n shares; any n-1
//! shares are uniformly random and independent of x.

use concord_math::{batch, Ring};
use rand_core::RngCore;

use crate::{PartyId, ShareVec, SharingError};

/// Split `secret` into `n` additive shares: n-1 uniform vectors, the last
/// one the secret minus their sum. Returns the shares in party order.
pub fn share<R: Ring, G: RngCore + ?Sized>(
    secret: &[R],
    n: usize,
    rng: &mut G,
) -> Result<Vec<ShareVec<R>>, SharingError> {
    if n < 2 {
        return Err(SharingError::InvalidParams(format!("additive sharing needs at least 2 parties, got {n}")));
    }
    let mut last = secret.to_vec();
    let mut shares = Vec::with_capacity(n);
    for _ in 0..n - 1 {
        let mut s = vec![R::ZERO; secret.len()];
        R::fill_random(rng, &mut s);
        batch::sub_assign(&mut last, &s);
        shares.push(ShareVec::from_raw(s));
    }
    shares.push(ShareVec::from_raw(last));
    Ok(shares)
}

/// Reconstruct from all n shares (given with their party index).
/// **Opens the secret**: call only where the protocol reveals it.
pub fn reconstruct<R: Ring>(shares: &[(PartyId, &ShareVec<R>)], n: usize) -> Result<Vec<R>, SharingError> {
    let parties: Vec<PartyId> = shares.iter().map(|(p, _)| *p).collect();
    crate::check_set(&parties, n)?;
    if shares.len() != n {
        return Err(SharingError::NotEnoughShares { have: shares.len(), need: n, t: n - 1 });
    }
    let len = shares.first().map(|(_, s)| s.len()).unwrap_or(0);
    let mut out = vec![R::ZERO; len];
    for (p, s) in shares {
        if s.len() != len {
            return Err(SharingError::LengthMismatch { party: *p, expected: len, got: s.len() });
        }
        batch::add_assign(&mut out, s.expose());
    }
    Ok(out)
}
