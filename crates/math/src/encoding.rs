//! Signed integers and fixed-point numbers as ring elements.
//!
//! A signed integer v is represented by v mod M (M the modulus), so the
//! representable range is `-(M/2) ..= (M-1)/2`; decoding takes the centred
//! representative. A fixed-point number x with f fractional bits is the
//! signed integer round(x * 2^f) (Catrina and Saxena, "Secure Computation
//! with Fixed-Point Numbers", FC 2010). Every conversion checks for overflow.

use crate::{MathError, Ring};

/// Largest signed integer representable in `R`.
pub fn signed_max<R: Ring>() -> i128 {
    ((R::MODULUS - 1) / 2) as i128
}

/// Smallest signed integer representable in `R`.
pub fn signed_min<R: Ring>() -> i128 {
    -((R::MODULUS / 2) as i128)
}

/// Encode the signed integer `v`, refusing values outside the signed range.
pub fn encode_signed<R: Ring>(v: i128) -> Result<R, MathError> {
    let (min, max) = (signed_min::<R>(), signed_max::<R>());
    if v < min || v > max {
        return Err(MathError::Overflow { value: v.to_string(), domain: R::NAME, min, max });
    }
    Ok(if v < 0 { -R::from_u128(v.unsigned_abs()) } else { R::from_u128(v as u128) })
}

/// Decode the centred representative: values above `(M-1)/2` are negative.
pub fn decode_signed<R: Ring>(x: R) -> i128 {
    let u = x.to_u128();
    if u > (R::MODULUS - 1) / 2 {
        // u - M, computed without overflowing i128 (M <= 2^127 for the
        // fields; 2^64 for Z64).
        -((R::MODULUS - u) as i128)
    } else {
        u as i128
    }
}

/// Fixed-point codec with `frac_bits` fractional bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedPoint {
    frac_bits: u32,
}

impl FixedPoint {
    /// A codec with `frac_bits` fractional bits; refuses a count that leaves
    /// no integer bits in `R`.
    pub fn new<R: Ring>(frac_bits: u32) -> Result<Self, MathError> {
        let modulus_bits = 128 - R::MODULUS.leading_zeros();
        if frac_bits + 2 >= modulus_bits || frac_bits > 100 {
            return Err(MathError::FracBits { frac_bits, domain: R::NAME });
        }
        Ok(FixedPoint { frac_bits })
    }

    /// Fractional bits.
    pub fn frac_bits(&self) -> u32 {
        self.frac_bits
    }

    /// Encode `x` as round(x * 2^f), refusing non-finite and out-of-range values.
    pub fn encode<R: Ring>(&self, x: f64) -> Result<R, MathError> {
        if !x.is_finite() {
            return Err(MathError::NotFinite(x.to_string()));
        }
        let scaled = (x * (self.frac_bits as f64).exp2()).round();
        // f64 -> i128 saturates; anything at the saturation bounds is out of range anyway.
        if scaled.abs() >= 2f64.powi(126) {
            return Err(MathError::Overflow {
                value: x.to_string(),
                domain: R::NAME,
                min: signed_min::<R>(),
                max: signed_max::<R>(),
            });
        }
        encode_signed::<R>(scaled as i128).map_err(|_| MathError::Overflow {
            value: x.to_string(),
            domain: R::NAME,
            min: signed_min::<R>(),
            max: signed_max::<R>(),
        })
    }

    /// Decode to the nearest `f64`.
    pub fn decode<R: Ring>(&self, x: R) -> f64 {
        decode_signed(x) as f64 / (self.frac_bits as f64).exp2()
    }
}
