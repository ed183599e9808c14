//! GF(2^127 - 1).

use rand_core::RngCore;
use zeroize::Zeroize;

use crate::{impl_ops, Field, Ring};

const P: u128 = (1u128 << 127) - 1;

/// An element of GF(2^127 - 1), kept canonical in `0..p`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Zeroize)]
pub struct M127(u128);

impl core::fmt::Debug for M127 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "M127({})", self.0)
    }
}

/// Full 128 x 128 -> 256-bit product as (hi, lo).
#[inline(always)]
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    let (a0, a1) = (a as u64 as u128, a >> 64);
    let (b0, b1) = (b as u64 as u128, b >> 64);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 64) + (p01 as u64 as u128) + (p10 as u64 as u128);
    let lo = (p00 as u64 as u128) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
}

impl M127 {
    /// The prime 2^127 - 1.
    pub const P: u128 = P;

    /// The canonical representative.
    #[inline(always)]
    pub const fn value(self) -> u128 {
        self.0
    }

    /// Reduce `s <= 2p`.
    #[inline(always)]
    fn cond_sub(s: u128) -> u128 {
        if s >= P {
            s - P
        } else {
            s
        }
    }

    #[inline(always)]
    fn add_(a: Self, b: Self) -> Self {
        M127(Self::cond_sub(a.0 + b.0))
    }
    #[inline(always)]
    fn sub_(a: Self, b: Self) -> Self {
        let (d, borrow) = a.0.overflowing_sub(b.0);
        M127(if borrow { d.wrapping_add(P) } else { d })
    }
    #[inline(always)]
    fn mul_(a: Self, b: Self) -> Self {
        let (hi, lo) = mul_wide(a.0, b.0);
        // z = hi*2^128 + lo < 2^254; z mod p = (z & p) + (z >> 127), each part <= p.
        let low = lo & P;
        let high = (hi << 1) | (lo >> 127);
        M127(Self::cond_sub(low + high))
    }
    #[inline(always)]
    fn neg_(a: Self) -> Self {
        M127(if a.0 == 0 { 0 } else { P - a.0 })
    }
}

impl_ops!(M127);

impl Ring for M127 {
    const ZERO: Self = M127(0);
    const ONE: Self = M127(1);
    const BYTES: usize = 16;
    const NAME: &'static str = "m127";
    const MODULUS: u128 = P;
    const IS_FIELD: bool = true;

    #[inline(always)]
    fn from_u64(v: u64) -> Self {
        M127(v as u128)
    }
    fn from_u128(v: u128) -> Self {
        // v = b*2^127 + c, b in {0,1}.
        M127(Self::cond_sub((v & P) + (v >> 127)))
    }
    #[inline(always)]
    fn to_u128(self) -> u128 {
        self.0
    }
    #[inline(always)]
    fn random<R: RngCore + ?Sized>(rng: &mut R) -> Self {
        loop {
            let v = ((rng.next_u64() as u128) << 64 | rng.next_u64() as u128) >> 1;
            if v != P {
                return M127(v);
            }
        }
    }
    #[inline(always)]
    fn write_le(self, out: &mut [u8]) {
        out[..16].copy_from_slice(&self.0.to_le_bytes());
    }
    #[inline(always)]
    fn read_le(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 16] = bytes.try_into().ok()?;
        let v = u128::from_le_bytes(arr);
        (v < P).then_some(M127(v))
    }
}

impl Field for M127 {}
