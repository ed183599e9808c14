//! GF(2^61 - 1).

use rand_core::RngCore;
use zeroize::Zeroize;

use crate::{impl_ops, Field, Ring};

const P: u64 = (1u64 << 61) - 1;

/// An element of GF(2^61 - 1), kept canonical in `0..p`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Zeroize)]
pub struct M61(u64);

impl core::fmt::Debug for M61 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "M61({})", self.0)
    }
}

impl M61 {
    /// The prime 2^61 - 1.
    pub const P: u64 = P;

    /// The canonical representative.
    #[inline(always)]
    pub const fn value(self) -> u64 {
        self.0
    }

    /// Reduce `x < 2^62` (one fold is enough below 2^122 after [`Self::reduce128`]).
    #[inline(always)]
    fn reduce64(x: u64) -> u64 {
        let s = (x & P) + (x >> 61);
        // s <= p + 1; conditional subtraction, branch-free.
        let t = s.wrapping_sub(P);
        if (t as i64) < 0 {
            s
        } else {
            t
        }
    }

    /// Reduce a product `z < 2^122`: z = hi*2^61 + lo = hi + lo (mod p).
    #[inline(always)]
    pub(crate) fn reduce128(z: u128) -> u64 {
        let lo = (z as u64) & P;
        let hi = (z >> 61) as u64;
        Self::reduce64(lo + hi)
    }

    /// Reduce any `u128` (used by lazy accumulation).
    #[inline(always)]
    pub(crate) fn reduce_wide(z: u128) -> u64 {
        // z = a*2^122 + b*2^61 + c with each part < 2^61 (a < 2^6).
        let c = (z as u64) & P;
        let b = ((z >> 61) as u64) & P;
        let a = (z >> 122) as u64;
        Self::reduce64(c + b + a)
    }

    #[inline(always)]
    fn add_(a: Self, b: Self) -> Self {
        let s = a.0 + b.0;
        let t = s.wrapping_sub(P);
        M61(if (t as i64) < 0 { s } else { t })
    }
    #[inline(always)]
    fn sub_(a: Self, b: Self) -> Self {
        let d = a.0.wrapping_sub(b.0);
        M61(if (d as i64) < 0 { d.wrapping_add(P) } else { d })
    }
    #[inline(always)]
    fn mul_(a: Self, b: Self) -> Self {
        M61(Self::reduce128(a.0 as u128 * b.0 as u128))
    }
    #[inline(always)]
    fn neg_(a: Self) -> Self {
        M61(if a.0 == 0 { 0 } else { P - a.0 })
    }
}

impl_ops!(M61);

impl Ring for M61 {
    const ZERO: Self = M61(0);
    const ONE: Self = M61(1);
    const BYTES: usize = 8;
    const NAME: &'static str = "m61";
    const MODULUS: u128 = P as u128;
    const IS_FIELD: bool = true;

    #[inline(always)]
    fn from_u64(v: u64) -> Self {
        // v = (v >> 61)*2^61 + (v & p); v >> 61 < 8.
        M61(Self::reduce64((v & P) + (v >> 61)))
    }
    fn from_u128(v: u128) -> Self {
        M61(Self::reduce_wide(v))
    }
    #[inline(always)]
    fn to_u128(self) -> u128 {
        self.0 as u128
    }
    #[inline(always)]
    fn random<R: RngCore + ?Sized>(rng: &mut R) -> Self {
        loop {
            let v = rng.next_u64() >> 3;
            if v != P {
                return M61(v);
            }
        }
    }
    #[inline(always)]
    fn write_le(self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.0.to_le_bytes());
    }
    #[inline(always)]
    fn read_le(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 8] = bytes.try_into().ok()?;
        let v = u64::from_le_bytes(arr);
        (v < P).then_some(M61(v))
    }
    fn lincomb_into(out: &mut [Self], coeffs: &[Self], inputs: &[&[Self]]) {
        // Lazy reduction: up to 32 products of < 2^122 sum below 2^127.
        if coeffs.len() > 32 || inputs.len() < coeffs.len() {
            // Generic path for very wide combinations.
            let mut terms = coeffs.iter().zip(inputs);
            out.fill(M61(0));
            for (c, v) in &mut terms {
                for (o, x) in out.iter_mut().zip(v.iter()) {
                    *o = Self::add_(*o, Self::mul_(*c, *x));
                }
            }
            return;
        }
        match (coeffs, inputs) {
            ([c0, c1], [v0, v1]) => {
                for ((o, x), y) in out.iter_mut().zip(v0.iter()).zip(v1.iter()) {
                    let acc = c0.0 as u128 * x.0 as u128 + c1.0 as u128 * y.0 as u128;
                    *o = M61(Self::reduce_wide(acc));
                }
            }
            _ => {
                for (i, o) in out.iter_mut().enumerate() {
                    let mut acc = 0u128;
                    for (c, v) in coeffs.iter().zip(inputs) {
                        acc += c.0 as u128 * v[i].0 as u128;
                    }
                    *o = M61(Self::reduce_wide(acc));
                }
            }
        }
    }

    fn inner_product(a: &[Self], b: &[Self]) -> Self {
        // Lazy reduction: each product is < 2^122, so 32 of them sum below 2^127.
        let mut total = 0u64;
        for (ca, cb) in a.chunks(32).zip(b.chunks(32)) {
            let mut acc = 0u128;
            for (x, y) in ca.iter().zip(cb) {
                acc += x.0 as u128 * y.0 as u128;
            }
            total = Self::reduce64(total + Self::reduce_wide(acc));
        }
        M61(total)
    }
}

impl Field for M61 {}
