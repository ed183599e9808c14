//! Three-party replicated secret sharing over Z/2^64 and over GF(2), after
//! Araki, Furukawa, Lindell, Nof and Ohara, "High-Throughput Semi-Honest
//! Secure Three-Party Computation with an Honest Majority" (CCS 2016), with
//! the share conversions of Mohassel and Rindal, "ABY3" (CCS 2018).
//!
//! A secret x is split into three components x = x_0 + x_1 + x_2 (in
//! Z/2^64 for [`RingShare`], bitwise XOR for [`BitShare`]); party i holds
//! the pair (x_i, x_{i+1}), indices mod 3. Any one party's pair is uniformly
//! distributed; any two parties hold all three components. Semi-honest
//! security against one corrupted party (t = 1 of n = 3).
//!
//! Boolean shares are **bit-sliced**: a [`BitShare`] holds `planes` bit
//! positions of `len` elements, plane p's word w carrying bit p of elements
//! 64w .. 64w+63 (element 64w + l in bit l). One 64-bit AND then evaluates a
//! gate for 64 comparisons at once, and the whole comparison circuit costs
//! a few hundred word operations per 64 elements.
//!
//! Everything here is local: the functions compute what a party sends and
//! what it holds after it receives; `concord-engine` moves the messages.
//!
//! # Multiplication (one round)
//! With a zero-sharing a_0 + a_1 + a_2 = 0 from pairwise PRG streams
//! (a_i = F(k_i) - F(k_{i-1}), k_i known to parties i and i+1), party i
//! computes z_i = x_i y_i + x_i y_{i+1} + x_{i+1} y_i + a_i ([`RingShare::mul_local`];
//! for bits, AND and XOR: [`BitShare::and_local`]) and sends z_i to party
//! i-1, which then holds (z_{i-1}, z_i): one element per product per party.

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{PartyId, ProtocolError};

/// The party after `i` (mod 3): the one that holds our second component as its first.
pub fn next(i: PartyId) -> PartyId {
    (i + 1) % 3
}

/// The party before `i` (mod 3).
pub fn prev(i: PartyId) -> PartyId {
    (i + 2) % 3
}

/// Words of 64 bits needed for `len` bits.
pub fn words(len: usize) -> usize {
    len.div_ceil(64)
}

fn check_party(me: PartyId) -> Result<(), ProtocolError> {
    if me < 3 {
        Ok(())
    } else {
        Err(ProtocolError::InvalidParams(format!("replicated sharing has parties 0, 1, 2, not {me}")))
    }
}

fn check_len(left: usize, right: usize) -> Result<(), ProtocolError> {
    if left == right {
        Ok(())
    } else {
        Err(ProtocolError::LengthMismatch { left, right })
    }
}

/// One party's share of a vector over Z/2^64: its components (x_i, x_{i+1}).
///
/// Zeroized on drop; `Debug` prints only the length. Read the components
/// with [`RingShare::expose`].
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct RingShare {
    own: Vec<u64>,
    next: Vec<u64>,
}

impl core::fmt::Debug for RingShare {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RingShare[{} elements, redacted]", self.own.len())
    }
}

impl RingShare {
    /// Wrap components (x_i, x_{i+1}) produced by protocol code.
    pub fn from_parts(own: Vec<u64>, next: Vec<u64>) -> Result<Self, ProtocolError> {
        check_len(own.len(), next.len())?;
        Ok(RingShare { own, next })
    }

    /// A share of the public vector `c` held by party `me` (component 0 carries it).
    pub fn public(me: PartyId, c: &[u64]) -> Self {
        let zeros = vec![0; c.len()];
        match me {
            0 => RingShare { own: c.to_vec(), next: zeros },
            2 => RingShare { own: zeros, next: c.to_vec() },
            _ => RingShare { own: zeros.clone(), next: zeros },
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.own.len()
    }

    /// Whether the vector is empty.
    pub fn is_empty(&self) -> bool {
        self.own.is_empty()
    }

    /// The components (x_i, x_{i+1}). **Secret**: send only as a protocol says.
    pub fn expose(&self) -> (&[u64], &[u64]) {
        (&self.own, &self.next)
    }

    /// Elements `range` of the vector.
    pub fn slice(&self, range: core::ops::Range<usize>) -> Result<Self, ProtocolError> {
        match (self.own.get(range.clone()), self.next.get(range.clone())) {
            (Some(a), Some(b)) => Ok(RingShare { own: a.to_vec(), next: b.to_vec() }),
            _ => Err(ProtocolError::InvalidParams(format!(
                "range {range:?} is outside a vector of {} elements",
                self.len()
            ))),
        }
    }

    /// Split into adjacent pairs: elements 0, 2, 4, .. and 1, 3, 5, .., and
    /// the last element alone if the length is odd.
    pub fn pairs(&self) -> (Self, Self, Self) {
        let h = self.len() / 2;
        let pick = |v: &[u64], start: usize| v.iter().skip(start).step_by(2).take(h).copied().collect::<Vec<_>>();
        let rest = |v: &[u64]| v.get(2 * h..).unwrap_or_default().to_vec();
        (
            RingShare { own: pick(&self.own, 0), next: pick(&self.next, 0) },
            RingShare { own: pick(&self.own, 1), next: pick(&self.next, 1) },
            RingShare { own: rest(&self.own), next: rest(&self.next) },
        )
    }

    /// The elements at public positions `idx` (in that order).
    pub fn gather(&self, idx: &[usize]) -> Result<Self, ProtocolError> {
        let mut own = Vec::with_capacity(idx.len());
        let mut next = Vec::with_capacity(idx.len());
        for &i in idx {
            match (self.own.get(i), self.next.get(i)) {
                (Some(a), Some(b)) => {
                    own.push(*a);
                    next.push(*b);
                }
                _ => {
                    return Err(ProtocolError::InvalidParams(format!(
                        "position {i} is outside a vector of {} elements",
                        self.len()
                    )))
                }
            }
        }
        Ok(RingShare { own, next })
    }

    /// The concatenation of `parts`.
    pub fn concat(parts: &[&RingShare]) -> Self {
        let mut own = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut next = Vec::with_capacity(own.capacity());
        for p in parts {
            own.extend_from_slice(&p.own);
            next.extend_from_slice(&p.next);
        }
        RingShare { own, next }
    }

    fn zip(&self, o: &RingShare, f: impl Fn(u64, u64) -> u64) -> Result<Self, ProtocolError> {
        check_len(self.len(), o.len())?;
        Ok(RingShare {
            own: self.own.iter().zip(&o.own).map(|(&a, &b)| f(a, b)).collect(),
            next: self.next.iter().zip(&o.next).map(|(&a, &b)| f(a, b)).collect(),
        })
    }

    /// `self + o`.
    pub fn add(&self, o: &RingShare) -> Result<Self, ProtocolError> {
        self.zip(o, u64::wrapping_add)
    }

    /// `self - o`.
    pub fn sub(&self, o: &RingShare) -> Result<Self, ProtocolError> {
        self.zip(o, u64::wrapping_sub)
    }

    /// `c * self` for a public `c`.
    pub fn scale(&self, c: u64) -> Self {
        RingShare {
            own: self.own.iter().map(|a| a.wrapping_mul(c)).collect(),
            next: self.next.iter().map(|a| a.wrapping_mul(c)).collect(),
        }
    }

    /// `self + c` for a public vector `c`, as party `me`.
    pub fn add_public(&self, me: PartyId, c: &[u64]) -> Result<Self, ProtocolError> {
        check_party(me)?;
        check_len(self.len(), c.len())?;
        let mut out = self.clone();
        let target = match me {
            0 => Some(&mut out.own),
            2 => Some(&mut out.next),
            _ => None,
        };
        if let Some(v) = target {
            for (x, c) in v.iter_mut().zip(c) {
                *x = x.wrapping_add(*c);
            }
        }
        Ok(out)
    }

    /// Party i's additive term of the product, z_i = x_i y_i + x_i y_{i+1} +
    /// x_{i+1} y_i + alpha_i, where `alpha` is its zero-sharing component.
    pub fn mul_local(&self, y: &RingShare, alpha: &[u64]) -> Result<Vec<u64>, ProtocolError> {
        check_len(self.len(), y.len())?;
        check_len(self.len(), alpha.len())?;
        Ok((0..self.len())
            .map(|k| {
                let (a0, a1, b0, b1) = (self.own[k], self.next[k], y.own[k], y.next[k]);
                a0.wrapping_mul(b0)
                    .wrapping_add(a0.wrapping_mul(b1))
                    .wrapping_add(a1.wrapping_mul(b0))
                    .wrapping_add(alpha[k])
            })
            .collect())
    }

    /// Party i's additive term of the inner product: the sum of its
    /// [`RingShare::mul_local`] terms, plus `alpha` (its zero-sharing component).
    pub fn inner_local(&self, y: &RingShare, alpha: u64) -> Result<u64, ProtocolError> {
        check_len(self.len(), y.len())?;
        let mut acc = alpha;
        for k in 0..self.len() {
            let (a0, a1, b0, b1) = (self.own[k], self.next[k], y.own[k], y.next[k]);
            acc = acc.wrapping_add(a0.wrapping_mul(b0.wrapping_add(b1))).wrapping_add(a1.wrapping_mul(b0));
        }
        Ok(acc)
    }

    /// The sum of all elements (a one-element share; local).
    pub fn sum(&self) -> Self {
        let add = |v: &[u64]| v.iter().fold(0u64, |a, b| a.wrapping_add(*b));
        RingShare { own: vec![add(&self.own)], next: vec![add(&self.next)] }
    }

    /// The components of the three summands x_0, x_1, x_2 as separate
    /// shares (each summand is known to two parties, so this is free):
    /// summand c is shared with component c equal to x_c and the others zero.
    pub fn summands(&self, me: PartyId) -> Result<[RingShare; 3], ProtocolError> {
        check_party(me)?;
        let zero = vec![0u64; self.len()];
        let mut out: [RingShare; 3] = core::array::from_fn(|_| RingShare { own: zero.clone(), next: zero.clone() });
        out[me].own = self.own.clone();
        out[next(me)].next = self.next.clone();
        Ok(out)
    }
}

/// One party's share of a bit-sliced boolean matrix: `planes` bit positions
/// of `len` elements, components (x_i, x_{i+1}) under XOR.
///
/// Bits of the last word beyond `len` are unspecified; every reader masks
/// them. Zeroized on drop; `Debug` prints only the shape.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct BitShare {
    len: usize,
    planes: usize,
    own: Vec<u64>,
    next: Vec<u64>,
}

impl core::fmt::Debug for BitShare {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "BitShare[{} planes x {} elements, redacted]", self.planes, self.len)
    }
}

impl BitShare {
    /// Wrap components of `planes` planes of `len` elements (plane-major words).
    pub fn from_parts(len: usize, planes: usize, own: Vec<u64>, next: Vec<u64>) -> Result<Self, ProtocolError> {
        check_len(own.len(), planes * words(len))?;
        check_len(next.len(), planes * words(len))?;
        Ok(BitShare { len, planes, own, next })
    }

    /// Planes of `len` zero bits.
    pub fn zeros(len: usize, planes: usize) -> Self {
        let w = planes * words(len);
        BitShare { len, planes, own: vec![0; w], next: vec![0; w] }
    }

    /// Elements per plane.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bit positions.
    pub fn planes(&self) -> usize {
        self.planes
    }

    /// Total words per component.
    pub fn total_words(&self) -> usize {
        self.own.len()
    }

    /// The components (plane-major words). **Secret**.
    pub fn expose(&self) -> (&[u64], &[u64]) {
        (&self.own, &self.next)
    }

    /// Plane `p` alone.
    pub fn plane(&self, p: usize) -> Result<Self, ProtocolError> {
        self.plane_range(p..p + 1)
    }

    /// Planes `range`.
    pub fn plane_range(&self, range: core::ops::Range<usize>) -> Result<Self, ProtocolError> {
        let w = words(self.len);
        if range.start > range.end || range.end > self.planes {
            return Err(ProtocolError::InvalidParams(format!(
                "planes {range:?} are outside a share of {} planes",
                self.planes
            )));
        }
        let r = range.start * w..range.end * w;
        Ok(BitShare {
            len: self.len,
            planes: range.end - range.start,
            own: self.own[r.clone()].to_vec(),
            next: self.next[r].to_vec(),
        })
    }

    /// The planes of `parts` stacked (all of the same element count).
    pub fn stack(parts: &[&BitShare]) -> Result<Self, ProtocolError> {
        let len = parts.first().map_or(0, |p| p.len);
        let mut out = BitShare::zeros(len, 0);
        for p in parts {
            check_len(p.len, len)?;
            out.own.extend_from_slice(&p.own);
            out.next.extend_from_slice(&p.next);
            out.planes += p.planes;
        }
        Ok(out)
    }

    fn zip(&self, o: &BitShare, f: impl Fn(u64, u64) -> u64) -> Result<Self, ProtocolError> {
        check_len(self.len, o.len)?;
        check_len(self.planes, o.planes)?;
        Ok(BitShare {
            len: self.len,
            planes: self.planes,
            own: self.own.iter().zip(&o.own).map(|(&a, &b)| f(a, b)).collect(),
            next: self.next.iter().zip(&o.next).map(|(&a, &b)| f(a, b)).collect(),
        })
    }

    /// `self XOR o` (local).
    pub fn xor(&self, o: &BitShare) -> Result<Self, ProtocolError> {
        self.zip(o, |a, b| a ^ b)
    }

    /// `NOT self` (local: party 0 and 2 flip component 0).
    pub fn not(&self, me: PartyId) -> Result<Self, ProtocolError> {
        check_party(me)?;
        let mut out = self.clone();
        match me {
            0 => out.own.iter_mut().for_each(|w| *w = !*w),
            2 => out.next.iter_mut().for_each(|w| *w = !*w),
            _ => {}
        }
        Ok(out)
    }

    /// Party i's XOR term of `self AND y`: x_i y_i ^ x_i y_{i+1} ^ x_{i+1} y_i ^ alpha_i.
    pub fn and_local(&self, y: &BitShare, alpha: &[u64]) -> Result<Vec<u64>, ProtocolError> {
        check_len(self.len, y.len)?;
        check_len(self.planes, y.planes)?;
        check_len(self.own.len(), alpha.len())?;
        Ok((0..self.own.len())
            .map(|k| {
                let (a0, a1, b0, b1) = (self.own[k], self.next[k], y.own[k], y.next[k]);
                (a0 & b0) ^ (a0 & b1) ^ (a1 & b0) ^ alpha[k]
            })
            .collect())
    }

    /// The share after a multiplication round: our term and the one the next party sent.
    pub fn with_components(&self, own: Vec<u64>, next: Vec<u64>) -> Result<Self, ProtocolError> {
        BitShare::from_parts(self.len, self.planes, own, next)
    }

    /// The share, at party `me`, of a bit matrix whose only non-zero
    /// component is component `c`: `value` is that component (bit-sliced),
    /// given by the two parties that hold it and ignored by the third.
    pub fn from_component(me: PartyId, c: usize, len: usize, planes: usize, value: Option<Vec<u64>>) -> Self {
        let mut out = BitShare::zeros(len, planes);
        if let Some(v) = value {
            if v.len() == out.own.len() {
                if c == me {
                    out.own = v;
                } else if c == next(me) {
                    out.next = v;
                }
            }
        }
        out
    }
}

/// The permutation of `0..n` that Fisher-Yates draws from the words `r`
/// (`r.len() >= n`): for i = n-1 down to 1, swap i with r_i mod (i + 1). The
/// bias of the reduction is below n / 2^64.
pub fn permutation(r: &[u64], n: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (r.get(i).copied().unwrap_or(0) % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

/// `out[k] = v[perm[k]]` for each of the `v.len() / perm.len()` columns of `v` (column-major).
pub fn permute_columns(v: &[u64], perm: &[usize]) -> Vec<u64> {
    let n = perm.len();
    let mut out = Vec::with_capacity(v.len());
    if n == 0 {
        return out;
    }
    for col in v.chunks(n) {
        out.extend(perm.iter().map(|&i| col.get(i).copied().unwrap_or(0)));
    }
    out
}

/// Masks selecting, in each 2j-bit group, the low j bits (j = 32, 16, .., 1).
const TRANSPOSE_MASKS: [(usize, u64); 6] = [
    (32, 0x0000_0000_FFFF_FFFF),
    (16, 0x0000_FFFF_0000_FFFF),
    (8, 0x00FF_00FF_00FF_00FF),
    (4, 0x0F0F_0F0F_0F0F_0F0F),
    (2, 0x3333_3333_3333_3333),
    (1, 0x5555_5555_5555_5555),
];

/// Transpose a 64x64 bit matrix in place: afterwards bit c of `a[r]` is the
/// old bit r of `a[c]` (recursive block swaps, Hacker's Delight 7-3).
pub fn transpose64(a: &mut [u64; 64]) {
    for (j, m) in TRANSPOSE_MASKS {
        let mut k = 0;
        while k < 64 {
            if k & j == 0 {
                // Swap bits c + j of row k with bits c of row k + j, for c & j == 0.
                let t = ((a[k] >> j) ^ a[k + j]) & m;
                a[k] ^= t << j;
                a[k + j] ^= t;
            }
            k += 1;
        }
    }
}

/// Bit-slice `values`: the low `planes` bits, plane-major (`planes * words(len)` words).
pub fn slice_bits(values: &[u64], planes: usize) -> Vec<u64> {
    let w = words(values.len());
    let mut out = vec![0u64; planes * w];
    let mut block = [0u64; 64];
    for (bw, chunk) in values.chunks(64).enumerate() {
        block[..chunk.len()].copy_from_slice(chunk);
        block[chunk.len()..].iter_mut().for_each(|x| *x = 0);
        transpose64(&mut block);
        for (p, row) in block.iter().take(planes).enumerate() {
            out[p * w + bw] = *row;
        }
    }
    out
}

/// Inverse of [`slice_bits`]: the `len` values whose low `planes` bits are given.
pub fn unslice_bits(sliced: &[u64], planes: usize, len: usize) -> Vec<u64> {
    let w = words(len);
    let mut out = vec![0u64; len];
    let mut block = [0u64; 64];
    for bw in 0..w {
        block.iter_mut().for_each(|x| *x = 0);
        for (p, row) in block.iter_mut().take(planes).enumerate() {
            *row = sliced.get(p * w + bw).copied().unwrap_or(0);
        }
        transpose64(&mut block);
        let start = bw * 64;
        let end = (start + 64).min(len);
        out[start..end].copy_from_slice(&block[..end - start]);
    }
    out
}

/// The bits of one plane (of `len` elements) as booleans.
pub fn plane_bits(words_: &[u64], len: usize) -> Vec<bool> {
    (0..len).map(|k| words_.get(k / 64).is_some_and(|w| (w >> (k % 64)) & 1 == 1)).collect()
}

/// Mask with the low `bits` bits set (`bits` <= 64).
pub fn low_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_transpose(a: &[u64; 64]) -> [u64; 64] {
        let mut out = [0u64; 64];
        for (r, row) in out.iter_mut().enumerate() {
            for (c, src) in a.iter().enumerate() {
                *row |= ((src >> r) & 1) << c;
            }
        }
        out
    }

    #[test]
    fn transpose_matches_naive() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut a = [0u64; 64];
        for v in a.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *v = x;
        }
        let expect = naive_transpose(&a);
        transpose64(&mut a);
        assert_eq!(a, expect);
    }

    #[test]
    fn permutations_are_permutations_and_permute_every_column_alike() {
        let r: Vec<u64> = (0..50u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
        let p = permutation(&r, 50);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(p, sorted, "a 50-element shuffle left everything in place");
        let v: Vec<u64> = (0..100).collect();
        let out = permute_columns(&v, &p);
        for k in 0..50 {
            assert_eq!(out[k], p[k] as u64);
            assert_eq!(out[50 + k], 50 + p[k] as u64);
        }
    }

    #[test]
    fn slice_roundtrip() {
        let values: Vec<u64> = (0..200u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20).collect();
        let s = slice_bits(&values, 44);
        assert_eq!(s.len(), 44 * 4);
        // Plane 3, element 130 is bit 3 of values[130].
        assert_eq!((s[3 * 4 + 2] >> 2) & 1, (values[130] >> 3) & 1);
        assert_eq!(unslice_bits(&s, 44, 200), values);
    }

    /// Reconstruct a ring share triple.
    fn open_ring(s: &[RingShare; 3]) -> Vec<u64> {
        (0..s[0].len()).map(|k| s[0].own[k].wrapping_add(s[1].own[k]).wrapping_add(s[2].own[k])).collect()
    }

    fn share_ring(x: &[u64], r1: &[u64], r2: &[u64]) -> [RingShare; 3] {
        let c0: Vec<u64> = x.iter().zip(r1).zip(r2).map(|((x, a), b)| x.wrapping_sub(*a).wrapping_sub(*b)).collect();
        let c = [c0, r1.to_vec(), r2.to_vec()];
        core::array::from_fn(|i| RingShare { own: c[i].clone(), next: c[next(i)].clone() })
    }

    #[test]
    fn ring_mul_local_terms_sum_to_product() {
        let x = [3u64, u64::MAX, 1 << 63];
        let y = [5u64, 7, 3];
        let s = share_ring(&x, &[11, 12, 13], &[21, 22, 23]);
        let t = share_ring(&y, &[31, 32, 33], &[41, 42, 43]);
        // A zero sharing.
        let alpha = [[1u64, 2, 3], [10, 20, 30], [0u64.wrapping_sub(11), 0u64.wrapping_sub(22), 0u64.wrapping_sub(33)]];
        let z: Vec<Vec<u64>> = (0..3).map(|i| s[i].mul_local(&t[i], &alpha[i]).unwrap()).collect();
        for k in 0..3 {
            let sum = z[0][k].wrapping_add(z[1][k]).wrapping_add(z[2][k]);
            assert_eq!(sum, x[k].wrapping_mul(y[k]));
        }
        // Summands add up to the secret and each sits at the right parties.
        let sums: Vec<[RingShare; 3]> = (0..3).map(|i| s[i].summands(i).unwrap()).collect();
        for c in 0..3 {
            let per_party: [RingShare; 3] = core::array::from_fn(|i| sums[i][c].clone());
            let v = open_ring(&per_party);
            assert_eq!(v, s[c].own, "summand {c}");
        }
        assert_eq!(open_ring(&s), x.to_vec());
        let p: [RingShare; 3] = core::array::from_fn(|i| s[i].add_public(i, &[1, 1, 1]).unwrap());
        assert_eq!(open_ring(&p), vec![4, 0, (1 << 63) + 1]);
    }

    #[test]
    fn redacted_debug() {
        let s = RingShare::public(0, &[42]);
        assert_eq!(format!("{s:?}"), "RingShare[1 elements, redacted]");
        let b = BitShare::zeros(3, 2);
        assert!(!format!("{b:?}").contains('0'));
    }
}
