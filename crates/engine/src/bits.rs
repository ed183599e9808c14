//! Shared random elements and shared uniformly random bits for the Shamir
//! engine: groundwork for comparison and bit decomposition.
//!
//! Random bits use the square-root trick of Damgard, Fitzi, Kiltz, Nielsen
//! and Toft, "Unconditionally secure constant-rounds multi-party computation
//! for equality, comparison, bits and exponentiation" (TCC 2006), protocol
//! RAN_2 (random bit), over a prime field with p = 3 (mod 4) such as
//! GF(2^61-1) and GF(2^127-1):
//!
//! 1. **RAN_p**: a sharing `[r]` of a uniform element unknown to any t parties
//!    ([`random_elements`]);
//! 2. **square and reveal**: `[r^2] = [r] * [r]`, open `s = r^2` (which reveals r
//!    only up to its sign); if s = 0 retry for that position;
//! 3. **root**: u = s^((p+1)/4), a square root of s since p = 3 (mod 4),
//!    taken in [0, (p-1)/2] so that every party holds the same root;
//! 4. **sign**: `[v] = u^(-1) [r]` is a sharing of `r / u = ±1`, each sign with
//!    probability 1/2 and independent of s;
//! 5. **bit**: `[b] = 2^(-1) ([v] + 1)`, a sharing of 0 or 1.
//!
//! # Cost (party `me`, n parties, threshold t, elements of B bytes, H = 8 header bytes)
//!
//! One attempt on m elements, k = `cost::batches(m)` messages per destination:
//!
//! | step | rounds | elements sent by `me` | messages |
//! | --- | --- | --- | --- |
//! | RAN_p: n inputs | n - t | (n-1-t) m | (n-1-t) k |
//! | `[r] * [r]` | 1 | (n-1-t) m if me <= 2t, else 0 | (n-1-t) k or 0 |
//! | open r^2 | 1 | t m | t k |
//!
//! so `rounds = n - t + 2` and
//! `bytes = (m B + k H) ((n-1-t) (1 + [me <= 2t]) + t)` (`[c]` is 1 if c holds, else 0),
//! that is (2n - 2 - t) B bytes per bit for the 2t + 1 resharing parties and
//! (n - 1) B for the others (plus headers): for n = 3, t = 1 over
//! GF(2^61-1), 24 bytes per bit per party, over GF(2^127-1) 48; for n = 5,
//! t = 2 over GF(2^61-1), 48. See [`random_bits_cost`].
//!
//! RAN_p counts n - t rounds at every party: its own input, plus the input of
//! each of the n - 1 - t owners that send it a share (the t owners whose
//! share for it comes from a PRSS stream need no message). The inputs run
//! one owner after the other (a party sends its own input once it holds the
//! earlier owners' shares), so a chain of messages can form; but owner o's
//! message delays the input of a later owner only if that owner is at least
//! o + t + 1, so the chain has at most 1 + floor((n-1)/(t+1)) <= n - t
//! message delays (2 for n = 3, t = 1). A position with s = 0 (probability 1/p per element, about 2^-61
//! over GF(2^61-1)) is regenerated in a further attempt on only those
//! positions, which costs the same formula with m = their count; the number
//! of attempts is public (all parties see s) and is 1 except with
//! probability at most len / p.

use concord_math::{batch, Field};
use concord_net::Transport;
use concord_protocol::cost::{self, Cost};
use concord_protocol::ProtocolError;
use concord_sharing::ShareVec;
use rand_chacha::rand_core::RngCore;

use crate::{EngineError, Mpc, ShamirEngine};

/// Attempts before [`random_bits`] gives up on positions whose r^2 keeps
/// opening to 0 (with independent uniform r, probability (1/p)^64 each).
pub const MAX_ATTEMPTS: usize = 64;

/// A sharing of `len` uniformly random elements unknown to any coalition of
/// at most t parties (RAN_p).
///
/// Every party inputs `len` uniform elements drawn from `rng` (its private
/// randomness) and the n sharings are added: the sum is uniform as long as
/// one contributor is honest. Every party must call it with the same `len`.
///
/// Cost for party `me`: n - t rounds, (n-1-t) `len` elements and
/// (n-1-t) `cost::batches(len)` messages sent ([`random_elements_cost`]).
pub async fn random_elements<F: Field, T: Transport>(
    mpc: &mut ShamirEngine<F, T>,
    len: usize,
    rng: &mut impl RngCore,
) -> Result<ShareVec<F>, EngineError> {
    let me = mpc.me();
    // Our secret contribution, zeroized on drop.
    let mut mine = ShareVec::zeros(len);
    F::fill_random(rng, mine.expose_mut());
    let mut acc = ShareVec::zeros(len);
    for owner in 0..mpc.parties() {
        let values = (owner == me).then_some(mine.expose());
        let share = mpc.input(owner, values, len).await?;
        acc = mpc.add(&acc, &share)?;
    }
    Ok(acc)
}

/// A sharing of `len` independent uniformly random bits (0 or 1 in the
/// field), unknown to any coalition of at most t parties: the square-root
/// trick of Damgard et al. (TCC 2006), steps in the module documentation.
///
/// Needs p = 3 (mod 4) (both Mersenne fields qualify) and n >= 2t + 1 (for
/// the multiplication). Every party must call it with the same `len`; the
/// private randomness comes from `rng`. Cost of the (almost always single)
/// attempt: n - t + 2 rounds and, for party `me`,
/// ((n-1-t)(1 + [me <= 2t]) + t) (len B + `cost::batches(len)` H) bytes
/// ([`random_bits_cost`]). `len == 0` returns at once without communication.
pub async fn random_bits<F: Field, T: Transport>(
    mpc: &mut ShamirEngine<F, T>,
    len: usize,
    rng: &mut impl RngCore,
) -> Result<ShareVec<F>, EngineError> {
    let check = if F::MODULUS % 4 == 3 {
        Ok(())
    } else {
        Err(EngineError::Usage(format!(
            "random bits by square roots need a prime p = 3 (mod 4), {} has p = {} (mod 4)",
            F::NAME,
            F::MODULUS % 4
        )))
    };
    mpc.session().guard(check).await?;
    let half = F::from_u64(2).inv()?;
    let mut out: Option<ShareVec<F>> = None;
    // Positions of the output still to fill.
    let mut pending: Vec<usize> = (0..len).collect();
    for _ in 0..MAX_ATTEMPTS {
        if pending.is_empty() {
            return Ok(out.unwrap_or_else(|| ShareVec::zeros(len)));
        }
        let m = pending.len();
        // RAN_p: [r].
        let r = random_elements(mpc, m, rng).await?;
        // Square and reveal: s = r^2.
        let r2 = mpc.mul(&r, &r).await?;
        let s = mpc.open(&r2).await?;
        // Root: u = s^((p+1)/4) in [0, (p-1)/2], for the positions with s != 0.
        let good: Vec<usize> = (0..m).filter(|&j| s[j] != F::ZERO).collect();
        let roots = good.iter().map(|&j| canonical_sqrt(s[j])).collect::<Result<Vec<F>, EngineError>>();
        let mut u_inv = mpc.session().guard(roots).await?;
        batch_invert(&mut u_inv)?;
        // Sign: [v] = u^-1 [r] (local, public coefficients).
        let r_good =
            if good.len() == m { r } else { ShareVec::from_raw(good.iter().map(|&j| r.expose()[j]).collect()) };
        let v = ShareVec::from_raw(batch::mul(r_good.expose(), &u_inv));
        // Bit: [b] = 2^-1 [v] + 2^-1.
        let b = mpc.add_public(&mpc.scale(&v, half), &vec![half; good.len()])?;
        if good.len() == len {
            // First attempt, no zero: the common case.
            return Ok(b);
        }
        let o = out.get_or_insert_with(|| ShareVec::zeros(len));
        let dst = o.expose_mut();
        for (&j, &x) in good.iter().zip(b.expose()) {
            dst[pending[j]] = x;
        }
        pending = (0..m).filter(|&j| s[j] == F::ZERO).map(|j| pending[j]).collect();
    }
    if pending.is_empty() {
        return Ok(out.unwrap_or_else(|| ShareVec::zeros(len)));
    }
    let err = EngineError::Protocol(ProtocolError::InvalidParams(format!(
        "random bits: r^2 opened to 0 at {} position(s) in each of {MAX_ATTEMPTS} attempts; \
         the parties' randomness is not random",
        pending.len()
    )));
    mpc.session().guard(Err(err)).await
}

/// Cost of [`random_elements`] of `len` elements for party `me`: n - t
/// rounds (its own input and the n - 1 - t inputs whose share it receives in
/// a message), and the elements and messages of its own input.
pub fn random_elements_cost(n: usize, t: usize, me: usize, len: usize) -> Cost {
    let own = cost::shamir_input(n, t, me, me, len);
    Cost { rounds: (n - t) as u64, ..own }
}

/// Cost of one attempt of [`random_bits`] on `len` elements for party `me`:
/// [`random_elements_cost`] + `cost::shamir_mul` + `cost::shamir_open`,
/// that is n - t + 2 rounds. Bytes: `random_bits_cost(..).bytes_sent(F::BYTES)`.
pub fn random_bits_cost(n: usize, t: usize, me: usize, len: usize) -> Cost {
    random_elements_cost(n, t, me, len) + cost::shamir_mul(n, t, me, len) + cost::shamir_open(t, len)
}

/// The square root u = s^((p+1)/4) of a non-zero square s in [0, (p-1)/2].
fn canonical_sqrt<F: Field>(s: F) -> Result<F, EngineError> {
    // (p + 1) / 4 without overflow for p close to 2^128.
    let e = F::MODULUS / 4 + 1;
    let u = s.pow(e);
    if u * u != s {
        return Err(EngineError::Protocol(ProtocolError::InvalidParams(
            "an opened r^2 is not a square: the opening was corrupted".into(),
        )));
    }
    Ok(if u.to_u128() > (F::MODULUS - 1) / 2 { -u } else { u })
}

/// Invert every element in place with one field inversion (Montgomery's
/// trick). The elements are public and non-zero.
fn batch_invert<F: Field>(xs: &mut [F]) -> Result<(), EngineError> {
    let mut prefix = Vec::with_capacity(xs.len());
    let mut acc = F::ONE;
    for &x in xs.iter() {
        prefix.push(acc);
        acc *= x;
    }
    let mut inv = acc.inv()?;
    for (x, p) in xs.iter_mut().zip(prefix).rev() {
        let xi = inv * p;
        inv *= *x;
        *x = xi;
    }
    Ok(())
}
