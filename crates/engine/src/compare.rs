//! Secure comparison for the Shamir engine, after Catrina and de Hoogh,
//! "Improved Primitives for Secure Multiparty Integer Computation" (SCN 2010).
//!
//! Correctness first: every step is the textbook protocol, batched so that a
//! round is one engine round whatever the bit length and batch size, but
//! with no precomputation and no specialised kernels.
//!
//! - [`bit_lt_public`]: **BitLT**, `[c < r]` for a public `c` and a secret `r`
//!   given bit by bit, by a carry-propagation (generate / propagate) tree;
//! - [`random_bitwise`]: **PRandBitL** / the bit part of **PRandM**, a random
//!   `r` together with sharings of its bits;
//! - [`less_than_zero`]: **LTZ** = `-Trunc(a, k, k-1)`, computed through
//!   **Mod2m** (Protocol 3.2) with m = k - 1;
//! - [`less_than`]: `[a < b]` = LTZ(a - b).
//!
//! # Signed values
//!
//! A signed integer x is the field element x mod p (so -1 is p - 1). LTZ on
//! k bits accepts a in `[-2^(k-1), 2^(k-1))`; outside that range the result
//! is meaningless **and** the opened value may leak information about a.
//!
//! # Cost (n parties, threshold t, party `me`; one attempt of `random_bits`)
//!
//! BitLT on m bit positions (m >= 1) and `len` elements: ceil(log2 m) rounds
//! and 2(m - 1) - ceil(log2 m) multiplications per comparison
//! ([`bit_lt_rounds`], [`bit_lt_muls`], [`bit_lt_cost`]).
//!
//! LTZ on k bits with statistical parameter kappa:
//!
//! | step | rounds | field elements sent by `me` per comparison |
//! | --- | --- | --- |
//! | k + kappa random bits | n - t + 2 | (k + kappa) ((n-1-t) (1 + [me <= 2t]) + t) |
//! | open c | 1 | t |
//! | BitLT on k - 1 bits | ceil(log2(k-1)) | (2(k-2) - ceil(log2(k-1))) (n-1-t) [me <= 2t] |
//!
//! For n = 3, t = 1: k = 64, kappa = 40 takes 4 + 1 + 6 = 11 rounds and
//! 104 * 3 + 1 + 118 = 431 elements (6,896 bytes over GF(2^127-1)) per
//! comparison at a resharing party, plus headers ([`less_than_zero_cost`]).

use concord_math::{Field, Ring};
use concord_net::Transport;
use concord_protocol::cost::{self, Cost};
use concord_sharing::ShareVec;
use rand_chacha::rand_core::RngCore;

use crate::bits::{random_bits, random_bits_cost};
use crate::{EngineError, Mpc, ShamirEngine};

/// Default statistical security parameter kappa over GF(2^127-1): the opened
/// value c hides a up to statistical distance 2^-kappa.
pub const DEFAULT_KAPPA: usize = 40;

/// Rounds of [`bit_lt_public`] on `m` bit positions: ceil(log2 m) (0 for m <= 1).
pub fn bit_lt_rounds(m: usize) -> u64 {
    bit_lt_levels(m).len() as u64
}

/// Multiplications per comparison of [`bit_lt_public`] on `m` bit positions:
/// 2(m - 1) - ceil(log2 m) for m >= 1 (0 for m <= 1).
pub fn bit_lt_muls(m: usize) -> u64 {
    bit_lt_levels(m).iter().map(|&q| 2 * q as u64 - 1).sum()
}

/// Cost of [`bit_lt_public`] on the Shamir engine for party `me`: `m` bit
/// positions, `len` comparisons. One multiplication of `len (2q - 1)`
/// elements per level, where q is the number of pairs of the level.
pub fn bit_lt_cost(n: usize, t: usize, me: usize, m: usize, len: usize) -> Cost {
    if len == 0 {
        return Cost::default();
    }
    bit_lt_levels(m).iter().fold(Cost::default(), |acc, &q| acc + cost::shamir_mul(n, t, me, len * (2 * q - 1)))
}

/// Cost of [`less_than_zero`] (and [`less_than`]) for party `me` on `len`
/// comparisons of k-bit values with parameter `kappa`, when every random
/// bit succeeds at the first attempt (all but probability about
/// `(k + kappa) len / p`): random bits, one opening, BitLT on k - 1 bits.
pub fn less_than_zero_cost(n: usize, t: usize, me: usize, k: usize, kappa: usize, len: usize) -> Cost {
    if len == 0 {
        return Cost::default();
    }
    random_bits_cost(n, t, me, (k + kappa) * len) + cost::shamir_open(t, len) + bit_lt_cost(n, t, me, k - 1, len)
}

/// The number of pairs combined at each level of the BitLT tree on `m` nodes.
fn bit_lt_levels(m: usize) -> Vec<usize> {
    let mut levels = Vec::new();
    let mut count = m;
    while count > 1 {
        levels.push(count / 2);
        count = count.div_ceil(2);
    }
    levels
}

/// 2^i in the ring (by doubling, so any i works).
fn pow2<R: Ring>(i: usize) -> R {
    if i < 128 {
        return R::from_u128(1u128 << i);
    }
    let mut w = R::from_u128(1u128 << 127);
    for _ in 127..i {
        w = w + w;
    }
    w
}

/// Element-wise product of a sharing with public coefficients (local, linear).
fn scale_each<R: Ring>(a: &[R], coeffs: impl Iterator<Item = R>) -> Vec<R> {
    a.iter().zip(coeffs).map(|(x, c)| *x * c).collect()
}

/// **BitLT** (Catrina and de Hoogh): a sharing of `[c_j < r_j]`
/// for each element j, where `c` holds public values and
/// `r_bits[i]` the sharings of bit i (least significant first) of secret
/// values r_j, one vector of the batch length per bit position. The caller
/// guarantees that the `r_bits` are sharings of 0 or 1.
///
/// Every public value must be below 2^m, m = `r_bits.len()`, and every
/// `r_bits[i]` must have `c.len()` elements; otherwise every party fails
/// identically with [`EngineError::Usage`] before any message.
///
/// # Protocol
///
/// For each position i, generate g_i = r_i AND NOT c_i (r is the larger at
/// i) and propagate p_i = NOT (c_i XOR r_i) (equal at i), both linear since
/// c_i is public. Then c < r iff the most significant differing position
/// has r_i = 1, i.e. the generate of the whole word under the associative
/// carry operator (g_hi, p_hi) o (g_lo, p_lo) = (g_hi + p_hi g_lo, p_hi p_lo)
/// (g_hi and p_hi exclude each other, so OR is a sum). The nodes are
/// combined pairwise from the least significant end in ceil(log2 m) levels;
/// each level is **one** `mpc.mul` over the concatenation of all its
/// products. The propagate of the node holding position 0 is never needed,
/// which saves one product per level.
///
/// # Cost
///
/// [`bit_lt_rounds`]`(m)` = ceil(log2 m) rounds and [`bit_lt_muls`]`(m)` =
/// 2(m - 1) - ceil(log2 m) multiplications per comparison
/// ([`bit_lt_cost`] on the Shamir engine). An empty batch returns at once.
pub async fn bit_lt_public<M: Mpc>(
    mpc: &mut M,
    c: &[u128],
    r_bits: &[ShareVec<M::Elem>],
) -> Result<ShareVec<M::Elem>, EngineError> {
    let len = c.len();
    let m = r_bits.len();
    if let Some(i) = r_bits.iter().position(|b| b.len() != len) {
        return Err(EngineError::Usage(format!(
            "BitLT: bit sharing {i} has {} elements, the public values {len}",
            r_bits[i].len()
        )));
    }
    if m < 128 {
        if let Some(j) = c.iter().position(|&v| v >> m != 0) {
            return Err(EngineError::Usage(format!("BitLT: public value at {j} does not fit in {m} bits")));
        }
    }
    if m == 0 || len == 0 {
        // r = 0 (no bits): c < 0 never holds.
        return Ok(ShareVec::zeros(len));
    }
    let one = M::Elem::ONE;
    let zero = M::Elem::ZERO;
    let bit = |j: usize, i: usize| i < 128 && (c[j] >> i) & 1 == 1;
    // Leaves: g_i = (1 - c_i) r_i, p_i = (2 c_i - 1) r_i + (1 - c_i).
    let mut g: Vec<ShareVec<M::Elem>> = Vec::with_capacity(m);
    let mut p: Vec<ShareVec<M::Elem>> = Vec::with_capacity(m);
    for (i, r) in r_bits.iter().enumerate() {
        let r = r.expose();
        g.push(ShareVec::from_raw(scale_each(r, (0..len).map(|j| if bit(j, i) { zero } else { one }))));
        if i == 0 {
            // The lowest node's propagate is never used.
            p.push(ShareVec::zeros(0));
            continue;
        }
        let signed = ShareVec::from_raw(scale_each(r, (0..len).map(|j| if bit(j, i) { one } else { -one })));
        let constant: Vec<M::Elem> = (0..len).map(|j| if bit(j, i) { zero } else { one }).collect();
        p.push(mpc.add_public(&signed, &constant)?);
    }
    while g.len() > 1 {
        let count = g.len();
        let q = count / 2;
        // Left factors: p_hi of every pair (for g), then p_hi of pairs 1.. (for p).
        // Right factors: g_lo of every pair, then p_lo of pairs 1..
        let mut left = Vec::with_capacity(len * (2 * q - 1));
        let mut right = Vec::with_capacity(len * (2 * q - 1));
        for k in 0..q {
            left.extend_from_slice(p[2 * k + 1].expose());
            right.extend_from_slice(g[2 * k].expose());
        }
        for k in 1..q {
            left.extend_from_slice(p[2 * k + 1].expose());
            right.extend_from_slice(p[2 * k].expose());
        }
        let prod = mpc.mul(&ShareVec::from_raw(left), &ShareVec::from_raw(right)).await?;
        let prod = prod.expose();
        let mut next_g = Vec::with_capacity(count.div_ceil(2));
        let mut next_p = Vec::with_capacity(count.div_ceil(2));
        for k in 0..q {
            let mut gk = g[2 * k + 1].expose().to_vec();
            concord_math::batch::add_assign(&mut gk, &prod[k * len..(k + 1) * len]);
            next_g.push(ShareVec::from_raw(gk));
            if k == 0 {
                next_p.push(ShareVec::zeros(0));
            } else {
                let at = (q + k - 1) * len;
                next_p.push(ShareVec::from_raw(prod[at..at + len].to_vec()));
            }
        }
        if count % 2 == 1 {
            // The most significant node passes through unchanged.
            next_g.push(std::mem::replace(&mut g[count - 1], ShareVec::zeros(0)));
            next_p.push(std::mem::replace(&mut p[count - 1], ShareVec::zeros(0)));
        }
        g = next_g;
        p = next_p;
    }
    Ok(g.pop().unwrap_or_else(|| ShareVec::zeros(len)))
}

/// A random `r` per element with sharings of its `k` bits (**PRandBitL** in
/// Catrina and de Hoogh): `(bits, r)` where `bits[i]` is the sharing of bit i
/// (least significant first) of each of the `len` values and
/// r = sum 2^i r_i (mod p), uniform in [0, 2^k) when 2^k <= p.
///
/// One call to [`random_bits`] for all `k len` bits (cost
/// [`random_bits_cost`]`(n, t, me, k len)`).
pub async fn random_bitwise<F: Field, T: Transport>(
    mpc: &mut ShamirEngine<F, T>,
    k: usize,
    len: usize,
    rng: &mut impl RngCore,
) -> Result<(Vec<ShareVec<F>>, ShareVec<F>), EngineError> {
    let total = k.checked_mul(len).ok_or_else(|| EngineError::Usage(format!("{k} bits of {len} elements overflow")));
    let total = mpc.session().guard(total).await?;
    let all = random_bits(mpc, total, rng).await?;
    let all = all.expose();
    let mut bits = Vec::with_capacity(k);
    let mut r = vec![F::ZERO; len];
    for i in 0..k {
        let b = &all[i * len..(i + 1) * len];
        concord_math::batch::scale_add(&mut r, pow2::<F>(i), b);
        bits.push(ShareVec::from_raw(b.to_vec()));
    }
    Ok((bits, ShareVec::from_raw(r)))
}

/// Check that LTZ on k bits with parameter kappa runs without wrap-around in F.
fn check_ltz_params<F: Field>(k: usize, kappa: usize) -> Result<(), EngineError> {
    if k < 2 {
        return Err(EngineError::Usage(format!("LTZ needs k >= 2 bits, got k = {k}")));
    }
    let bits_p = (128 - F::MODULUS.leading_zeros()) as usize;
    let need = k.checked_add(kappa).and_then(|s| s.checked_add(1)).unwrap_or(usize::MAX);
    if need >= bits_p {
        return Err(EngineError::Usage(format!(
            "LTZ on k = {k} bits with kappa = {kappa} needs 2^(k + kappa + 1) < p, i.e. k + kappa + 1 < {bits_p} \
             over {}; reduce k or kappa (at most kappa = {}) or use a larger field",
            F::NAME,
            (bits_p - 2).saturating_sub(k)
        )));
    }
    Ok(())
}

/// **LTZ**: a sharing of `[a_j < 0]` (1 or 0) for each signed k-bit value
/// a_j in `[-2^(k-1), 2^(k-1))` (Catrina and de Hoogh:
/// LTZ(a, k) = -Trunc(a, k, k-1), with Trunc through **Mod2m**, Protocol 3.2).
///
/// With m = k - 1 and k + kappa random bits r_i per element:
///
/// 1. **PRandM**: r' = sum_{i<m} 2^i r_i (bits kept), r'' = sum_{i>=m} 2^(i-m) r_i
///    (kappa + 1 bits), r = 2^m r'' + r' ([`random_bitwise`]);
/// 2. open c = 2^(k-1) + a + r; since 0 <= 2^(k-1) + a < 2^k and r < 2^(k+kappa),
///    c < 2^(k+kappa+1) < p does not wrap, and c hides a up to statistical
///    distance 2^k / 2^(k+kappa) = 2^-kappa;
/// 3. **Mod2m**: c' = c mod 2^m, u = **BitLT**(c', r') ([`bit_lt_public`]),
///    `[a mod 2^m] = c' - [r'] + 2^m [u]`;
/// 4. **Trunc**: `[d] = ([a] - [a mod 2^m]) 2^-m` = floor(a / 2^m), which is -1 or 0;
///    LTZ = -d.
///
/// Requires k >= 2 and 2^(k+kappa+1) < p (k + kappa <= 125 over GF(2^127-1),
/// k + kappa <= 59 over GF(2^61-1)); otherwise every party fails with
/// [`EngineError::Usage`] (and aborts the session) before any message.
/// Over GF(2^127-1) use kappa = [`DEFAULT_KAPPA`] = 40 (k <= 85). Over
/// GF(2^61-1) with k = 32, kappa is at most 27: c then hides a only up to
/// statistical distance 2^-27 (per comparison), far weaker than 2^-40;
/// prefer GF(2^127-1) where that matters.
///
/// # Cost
///
/// n - t + 2 + 1 + ceil(log2(k-1)) rounds (11 for n = 3, t = 1, k = 64),
/// see the module documentation and [`less_than_zero_cost`]. An empty
/// batch returns at once after the parameter check.
pub async fn less_than_zero<F: Field, T: Transport>(
    mpc: &mut ShamirEngine<F, T>,
    a: &ShareVec<F>,
    k: usize,
    kappa: usize,
    rng: &mut impl RngCore,
) -> Result<ShareVec<F>, EngineError> {
    mpc.session().guard(check_ltz_params::<F>(k, kappa)).await?;
    let len = a.len();
    if len == 0 {
        return Ok(ShareVec::zeros(0));
    }
    let m = k - 1;
    // PRandM: r = 2^m r'' + r', the bits of r' kept.
    let (bits, r) = random_bitwise(mpc, k + kappa, len, rng).await?;
    let mut r_low = vec![F::ZERO; len];
    for (i, b) in bits[..m].iter().enumerate() {
        concord_math::batch::scale_add(&mut r_low, pow2::<F>(i), b.expose());
    }
    // c = 2^(k-1) + a + r, opened.
    let masked = mpc.add_public(&mpc.add(a, &r)?, &vec![pow2::<F>(k - 1); len])?;
    let c = mpc.open(&masked).await?;
    // Mod2m.
    let mask = (1u128 << m) - 1;
    let c_low: Vec<u128> = c.iter().map(|v| v.to_u128() & mask).collect();
    // Cannot fail on parameters (c' < 2^m, lengths match); `mul` aborts on its own errors.
    let u = bit_lt_public(mpc, &c_low, &bits[..m]).await?;
    // [a mod 2^m] = c' - [r'] + 2^m [u].
    let mut a_mod = mpc.scale(&u, pow2::<F>(m)).expose().to_vec();
    concord_math::batch::sub_assign(&mut a_mod, &r_low);
    let c_low_f: Vec<F> = c_low.iter().map(|&v| F::from_u128(v)).collect();
    let a_mod = mpc.add_public(&ShareVec::from_raw(a_mod), &c_low_f)?;
    // LTZ = -Trunc(a) = ([a mod 2^m] - [a]) 2^-m.
    let inv = pow2::<F>(m).inv()?;
    let diff = mpc.sub(&a_mod, a)?;
    Ok(mpc.scale(&diff, inv))
}

/// `[a_j < b_j]` for signed values, as **LTZ**(a - b) on k bits
/// ([`less_than_zero`]): a_j - b_j must lie in `[-2^(k-1), 2^(k-1))`, which
/// holds when a_j and b_j are (k-1)-bit signed values, in `[-2^(k-2), 2^(k-2))`.
/// Same cost and parameter limits as [`less_than_zero`].
pub async fn less_than<F: Field, T: Transport>(
    mpc: &mut ShamirEngine<F, T>,
    a: &ShareVec<F>,
    b: &ShareVec<F>,
    k: usize,
    kappa: usize,
    rng: &mut impl RngCore,
) -> Result<ShareVec<F>, EngineError> {
    let d = mpc.sub(a, b);
    let d = mpc.session().guard(d).await?;
    less_than_zero(mpc, &d, k, kappa, rng).await
}
