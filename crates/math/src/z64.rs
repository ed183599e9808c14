//! The ring Z/2^64.

use rand_core::RngCore;
use zeroize::Zeroize;

use crate::{impl_ops, Ring};

/// An element of Z/2^64 (wrapping arithmetic on `u64`).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Zeroize)]
pub struct Z64(u64);

impl core::fmt::Debug for Z64 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Z64({})", self.0)
    }
}

impl Z64 {
    /// The canonical representative.
    #[inline(always)]
    pub const fn value(self) -> u64 {
        self.0
    }
    #[inline(always)]
    fn add_(a: Self, b: Self) -> Self {
        Z64(a.0.wrapping_add(b.0))
    }
    #[inline(always)]
    fn sub_(a: Self, b: Self) -> Self {
        Z64(a.0.wrapping_sub(b.0))
    }
    #[inline(always)]
    fn mul_(a: Self, b: Self) -> Self {
        Z64(a.0.wrapping_mul(b.0))
    }
    #[inline(always)]
    fn neg_(a: Self) -> Self {
        Z64(a.0.wrapping_neg())
    }
}

impl_ops!(Z64);

impl Ring for Z64 {
    const ZERO: Self = Z64(0);
    const ONE: Self = Z64(1);
    const BYTES: usize = 8;
    const NAME: &'static str = "z64";
    const MODULUS: u128 = 1u128 << 64;
    const IS_FIELD: bool = false;

    #[inline(always)]
    fn from_u64(v: u64) -> Self {
        Z64(v)
    }
    fn from_u128(v: u128) -> Self {
        Z64(v as u64)
    }
    #[inline(always)]
    fn to_u128(self) -> u128 {
        self.0 as u128
    }
    #[inline(always)]
    fn random<R: RngCore + ?Sized>(rng: &mut R) -> Self {
        Z64(rng.next_u64())
    }
    #[inline(always)]
    fn write_le(self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.0.to_le_bytes());
    }
    #[inline(always)]
    fn read_le(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 8] = bytes.try_into().ok()?;
        Some(Z64(u64::from_le_bytes(arr)))
    }
}
