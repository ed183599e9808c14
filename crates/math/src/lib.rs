//! # concord-math: the arithmetic under Concord's protocols
//!
//! Three domains, all with constant-size canonical encodings and no generic
//! big-integer code on the hot path:
//! - [`M61`]: the prime field GF(2^61 - 1), one `u64` per element;
//! - [`M127`]: the prime field GF(2^127 - 1), one `u128` per element;
//! - [`Z64`]: the ring Z/2^64 (wrapping `u64` arithmetic).
//!
//! Reduction modulo a Mersenne prime p = 2^k - 1 uses 2^k = 1 (mod p): a
//! double-width product z = hi * 2^k + lo reduces to hi + lo, followed by one
//! conditional subtraction (Crandall, "Method and apparatus for public key
//! exchange in a cryptographic system", US patent 5,159,632, 1992; see also
//! Knuth, TAOCP vol. 2, 4.3.2).
//!
//! The [`Ring`] trait gives every domain the same interface: arithmetic
//! operators, uniform sampling from a caller-supplied RNG, canonical
//! little-endian encoding with rejection of non-canonical bytes, and batch
//! kernels over slices ([`batch`]). [`encoding`] maps signed integers and
//! fixed-point numbers into a domain with overflow checks.
//!
//! This crate does no I/O. Field elements are public values; secret values
//! are wrapped by `concord-sharing`'s share types.

use core::fmt::Debug;
use core::ops::{Add, AddAssign, Mul, MulAssign, Neg, Sub, SubAssign};

use rand_core::RngCore;
use zeroize::Zeroize;

pub mod batch;
pub mod encoding;
mod m127;
mod m61;
mod z64;

pub use m127::M127;
pub use m61::M61;
pub use z64::Z64;

/// Errors of the arithmetic layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MathError {
    /// A value does not fit the domain's signed range.
    #[error("{value} does not fit {domain} (signed range {min}..={max})")]
    Overflow {
        /// The value, printed.
        value: String,
        /// The domain's name.
        domain: &'static str,
        /// Smallest representable value.
        min: i128,
        /// Largest representable value.
        max: i128,
    },
    /// A floating-point input is NaN or infinite.
    #[error("{0} is not a finite number")]
    NotFinite(String),
    /// Bytes that do not encode a canonical element (value >= modulus).
    #[error("element {index} is not a canonical {domain} element (value >= modulus)")]
    NonCanonical {
        /// Position of the element in the vector.
        index: usize,
        /// The domain's name.
        domain: &'static str,
    },
    /// A byte string whose length is not a whole number of elements.
    #[error("{len} bytes is not a whole number of {domain} elements of {elem} bytes")]
    BadLength {
        /// Byte length received.
        len: usize,
        /// The domain's name.
        domain: &'static str,
        /// Bytes per element.
        elem: usize,
    },
    /// Division by zero / inverse of zero.
    #[error("zero has no inverse")]
    ZeroInverse,
    /// Fractional bits out of range for fixed-point encoding.
    #[error("{frac_bits} fractional bits is too many for {domain}")]
    FracBits {
        /// Requested fractional bits.
        frac_bits: u32,
        /// The domain's name.
        domain: &'static str,
    },
}

/// A commutative ring with a canonical fixed-size encoding.
///
/// Implemented by [`M61`], [`M127`] and [`Z64`]. All operators are total and
/// constant-time in their inputs (no data-dependent branches beyond what the
/// compiler turns into conditional moves).
pub trait Ring:
    Copy
    + Clone
    + Default
    + PartialEq
    + Eq
    + Debug
    + Send
    + Sync
    + Zeroize
    + subtle::ConstantTimeEq
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
{
    /// Additive identity.
    const ZERO: Self;
    /// Multiplicative identity.
    const ONE: Self;
    /// Bytes of the canonical encoding.
    const BYTES: usize;
    /// Short name (`m61`, `m127`, `z64`).
    const NAME: &'static str;
    /// The modulus (2^64 for [`Z64`]).
    const MODULUS: u128;
    /// Whether every non-zero element is invertible.
    const IS_FIELD: bool;

    /// The element congruent to `v`.
    fn from_u64(v: u64) -> Self;
    /// The element congruent to `v` (reduced modulo the modulus).
    fn from_u128(v: u128) -> Self;
    /// Canonical representative in `0..MODULUS`.
    fn to_u128(self) -> u128;
    /// A uniformly random element drawn from `rng`.
    fn random<R: RngCore + ?Sized>(rng: &mut R) -> Self;
    /// Write the canonical little-endian encoding into `out[..Self::BYTES]`.
    fn write_le(self, out: &mut [u8]);
    /// Parse a canonical encoding of exactly `Self::BYTES` bytes; `None` if
    /// the length is wrong or the value is not reduced.
    fn read_le(bytes: &[u8]) -> Option<Self>;

    /// The element congruent to the signed `v` (negative values wrap).
    fn from_i64(v: i64) -> Self {
        if v < 0 {
            -Self::from_u64(v.unsigned_abs())
        } else {
            Self::from_u64(v as u64)
        }
    }

    /// `self^e` by square-and-multiply.
    fn pow(self, mut e: u128) -> Self {
        let mut base = self;
        let mut acc = Self::ONE;
        while e > 0 {
            if e & 1 == 1 {
                acc *= base;
            }
            base *= base;
            e >>= 1;
        }
        acc
    }

    /// Fill `out` with independent uniform elements from `rng`.
    fn fill_random<R: RngCore + ?Sized>(rng: &mut R, out: &mut [Self]) {
        for x in out.iter_mut() {
            *x = Self::random(rng);
        }
    }

    /// `out[i] = sum_k coeffs[k] * inputs[k][i]` for every `i < out.len()`;
    /// every input must be at least `out.len()` long. The kernel of
    /// Lagrange interpolation over vectors.
    fn lincomb_into(out: &mut [Self], coeffs: &[Self], inputs: &[&[Self]]) {
        let mut terms = coeffs.iter().zip(inputs);
        match terms.next() {
            Some((c, v)) => {
                for (o, x) in out.iter_mut().zip(v.iter()) {
                    *o = *c * *x;
                }
            }
            None => out.fill(Self::ZERO),
        }
        for (c, v) in terms {
            for (o, x) in out.iter_mut().zip(v.iter()) {
                *o += *c * *x;
            }
        }
    }

    /// Inner product of two equal-length slices (extra elements of the longer one are ignored).
    fn inner_product(a: &[Self], b: &[Self]) -> Self {
        let mut acc = Self::ZERO;
        for (x, y) in a.iter().zip(b) {
            acc += *x * *y;
        }
        acc
    }
}

/// A ring in which every non-zero element has a multiplicative inverse.
pub trait Field: Ring {
    /// The inverse of `self`, or [`MathError::ZeroInverse`] for zero.
    fn inv(self) -> Result<Self, MathError> {
        if self == Self::ZERO {
            return Err(MathError::ZeroInverse);
        }
        // Fermat: x^(p-2) = x^-1 for prime p.
        Ok(self.pow(Self::MODULUS - 2))
    }
}

/// Implements the operator traits of a ring type from its inherent
/// `add_`, `sub_`, `mul_`, `neg_` functions.
macro_rules! impl_ops {
    ($t:ty) => {
        impl core::ops::Add for $t {
            type Output = $t;
            #[inline(always)]
            fn add(self, rhs: $t) -> $t {
                <$t>::add_(self, rhs)
            }
        }
        impl core::ops::Sub for $t {
            type Output = $t;
            #[inline(always)]
            fn sub(self, rhs: $t) -> $t {
                <$t>::sub_(self, rhs)
            }
        }
        impl core::ops::Mul for $t {
            type Output = $t;
            #[inline(always)]
            fn mul(self, rhs: $t) -> $t {
                <$t>::mul_(self, rhs)
            }
        }
        impl core::ops::Neg for $t {
            type Output = $t;
            #[inline(always)]
            fn neg(self) -> $t {
                <$t>::neg_(self)
            }
        }
        impl core::ops::AddAssign for $t {
            #[inline(always)]
            fn add_assign(&mut self, rhs: $t) {
                *self = <$t>::add_(*self, rhs);
            }
        }
        impl core::ops::SubAssign for $t {
            #[inline(always)]
            fn sub_assign(&mut self, rhs: $t) {
                *self = <$t>::sub_(*self, rhs);
            }
        }
        impl core::ops::MulAssign for $t {
            #[inline(always)]
            fn mul_assign(&mut self, rhs: $t) {
                *self = <$t>::mul_(*self, rhs);
            }
        }
        impl subtle::ConstantTimeEq for $t {
            fn ct_eq(&self, other: &$t) -> subtle::Choice {
                self.0.ct_eq(&other.0)
            }
        }
    };
}
pub(crate) use impl_ops;

pub mod small;
