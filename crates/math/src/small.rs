//! Small prime fields GF(P) for P < 2^31, for statistical tests and worked
//! examples where the whole field can be enumerated. Not for speed.

use rand_core::RngCore;
use zeroize::Zeroize;

use crate::{Field, Ring};

/// An element of GF(P) for a prime `P < 2^31` (primality is the user's promise).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Zeroize)]
pub struct SmallPrime<const P: u64>(u64);

impl<const P: u64> core::fmt::Debug for SmallPrime<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "GF{}({})", P, self.0)
    }
}

impl<const P: u64> SmallPrime<P> {
    /// The canonical representative.
    pub const fn value(self) -> u64 {
        self.0
    }
}

impl<const P: u64> core::ops::Add for SmallPrime<P> {
    type Output = Self;
    fn add(self, r: Self) -> Self {
        SmallPrime((self.0 + r.0) % P)
    }
}
impl<const P: u64> core::ops::Sub for SmallPrime<P> {
    type Output = Self;
    fn sub(self, r: Self) -> Self {
        SmallPrime((self.0 + P - r.0) % P)
    }
}
impl<const P: u64> core::ops::Mul for SmallPrime<P> {
    type Output = Self;
    fn mul(self, r: Self) -> Self {
        SmallPrime(self.0 * r.0 % P)
    }
}
impl<const P: u64> core::ops::Neg for SmallPrime<P> {
    type Output = Self;
    fn neg(self) -> Self {
        SmallPrime((P - self.0) % P)
    }
}
impl<const P: u64> core::ops::AddAssign for SmallPrime<P> {
    fn add_assign(&mut self, r: Self) {
        *self = *self + r;
    }
}
impl<const P: u64> core::ops::SubAssign for SmallPrime<P> {
    fn sub_assign(&mut self, r: Self) {
        *self = *self - r;
    }
}
impl<const P: u64> core::ops::MulAssign for SmallPrime<P> {
    fn mul_assign(&mut self, r: Self) {
        *self = *self * r;
    }
}
impl<const P: u64> subtle::ConstantTimeEq for SmallPrime<P> {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.0.ct_eq(&other.0)
    }
}

impl<const P: u64> Ring for SmallPrime<P> {
    const ZERO: Self = SmallPrime(0);
    const ONE: Self = SmallPrime(1);
    const BYTES: usize = 4;
    const NAME: &'static str = "small-prime";
    const MODULUS: u128 = P as u128;
    const IS_FIELD: bool = true;

    fn from_u64(v: u64) -> Self {
        SmallPrime(v % P)
    }
    fn from_u128(v: u128) -> Self {
        SmallPrime((v % P as u128) as u64)
    }
    fn to_u128(self) -> u128 {
        self.0 as u128
    }
    fn random<R: RngCore + ?Sized>(rng: &mut R) -> Self {
        // Rejection sampling below the largest multiple of P under 2^32.
        let zone = (u32::MAX as u64 + 1) / P * P;
        loop {
            let v = rng.next_u32() as u64;
            if v < zone {
                return SmallPrime(v % P);
            }
        }
    }
    fn write_le(self, out: &mut [u8]) {
        out[..4].copy_from_slice(&(self.0 as u32).to_le_bytes());
    }
    fn read_le(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 4] = bytes.try_into().ok()?;
        let v = u32::from_le_bytes(arr) as u64;
        (v < P).then_some(SmallPrime(v))
    }
}

impl<const P: u64> Field for SmallPrime<P> {}
