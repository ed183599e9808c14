//! Vectorised kernels over slices and the canonical vector codec.
//!
//! Binary kernels process `min(len)` elements; callers check lengths first
//! (the engine does, and reports mismatches as errors). The loops are plain
//! element-wise code that the compiler unrolls and, for [`crate::Z64`],
//! vectorises.

use crate::{MathError, Ring};

/// `a[i] += b[i]`.
#[inline]
pub fn add_assign<R: Ring>(a: &mut [R], b: &[R]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += *y;
    }
}

/// `a[i] -= b[i]`.
#[inline]
pub fn sub_assign<R: Ring>(a: &mut [R], b: &[R]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x -= *y;
    }
}

/// `a[i] *= b[i]`.
#[inline]
pub fn mul_assign<R: Ring>(a: &mut [R], b: &[R]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x *= *y;
    }
}

/// `a[i] *= c`.
#[inline]
pub fn scale<R: Ring>(a: &mut [R], c: R) {
    for x in a.iter_mut() {
        *x *= c;
    }
}

/// `acc[i] += c * b[i]` (scaled accumulate, the Lagrange-combination kernel).
#[inline]
pub fn scale_add<R: Ring>(acc: &mut [R], c: R, b: &[R]) {
    for (x, y) in acc.iter_mut().zip(b) {
        *x += c * *y;
    }
}

/// `acc[i] += a[i] * b[i]` (multiply-add).
#[inline]
pub fn mul_add<R: Ring>(acc: &mut [R], a: &[R], b: &[R]) {
    for ((z, x), y) in acc.iter_mut().zip(a).zip(b) {
        *z += *x * *y;
    }
}

/// Element-wise product into a new vector.
#[inline]
pub fn mul<R: Ring>(a: &[R], b: &[R]) -> Vec<R> {
    a.iter().zip(b).map(|(x, y)| *x * *y).collect()
}

/// Inner product `sum a[i] * b[i]` (lazily reduced for [`crate::M61`]).
#[inline]
pub fn inner_product<R: Ring>(a: &[R], b: &[R]) -> R {
    R::inner_product(a, b)
}

/// Sum of all elements.
#[inline]
pub fn sum<R: Ring>(a: &[R]) -> R {
    a.iter().fold(R::ZERO, |s, x| s + *x)
}

/// Canonical encoding of a vector: elements in order, each `R::BYTES` little-endian bytes.
pub fn encode<R: Ring>(xs: &[R]) -> Vec<u8> {
    let mut out = vec![0u8; xs.len() * R::BYTES];
    for (x, chunk) in xs.iter().zip(out.chunks_exact_mut(R::BYTES)) {
        x.write_le(chunk);
    }
    out
}

/// Append the canonical encoding of `xs` to `out`.
pub fn encode_into<R: Ring>(xs: &[R], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + xs.len() * R::BYTES, 0);
    for (x, chunk) in xs.iter().zip(out[start..].chunks_exact_mut(R::BYTES)) {
        x.write_le(chunk);
    }
}

fn check_len<R: Ring>(acc_len: usize, bytes: &[u8]) -> Result<(), MathError> {
    if bytes.len() != acc_len * R::BYTES {
        return Err(MathError::BadLength { len: bytes.len(), domain: R::NAME, elem: R::BYTES });
    }
    Ok(())
}

/// Decode exactly `out.len()` canonical elements from `bytes` into `out`.
pub fn decode_into<R: Ring>(out: &mut [R], bytes: &[u8]) -> Result<(), MathError> {
    check_len::<R>(out.len(), bytes)?;
    for (index, (o, chunk)) in out.iter_mut().zip(bytes.chunks_exact(R::BYTES)).enumerate() {
        match R::read_le(chunk) {
            Some(x) => *o = x,
            None => return Err(MathError::NonCanonical { index, domain: R::NAME }),
        }
    }
    Ok(())
}

/// `acc[i] += decode(bytes)[i]` without materialising the decoded vector.
/// `bytes` must hold exactly `acc.len()` canonical elements; on error `acc`
/// may be partly updated (callers abort).
pub fn decode_add_assign<R: Ring>(acc: &mut [R], bytes: &[u8]) -> Result<(), MathError> {
    check_len::<R>(acc.len(), bytes)?;
    for (index, (a, chunk)) in acc.iter_mut().zip(bytes.chunks_exact(R::BYTES)).enumerate() {
        match R::read_le(chunk) {
            Some(x) => *a += x,
            None => return Err(MathError::NonCanonical { index, domain: R::NAME }),
        }
    }
    Ok(())
}

/// `acc[i] += c * decode(bytes)[i]` without materialising the decoded vector.
pub fn decode_scale_add<R: Ring>(acc: &mut [R], c: R, bytes: &[u8]) -> Result<(), MathError> {
    check_len::<R>(acc.len(), bytes)?;
    for (index, (a, chunk)) in acc.iter_mut().zip(bytes.chunks_exact(R::BYTES)).enumerate() {
        match R::read_le(chunk) {
            Some(x) => *a += c * x,
            None => return Err(MathError::NonCanonical { index, domain: R::NAME }),
        }
    }
    Ok(())
}

/// `out[i] = sum_k coeffs[k] * inputs[k][i]` (see [`Ring::lincomb_into`]).
#[inline]
pub fn lincomb_into<R: Ring>(out: &mut [R], coeffs: &[R], inputs: &[&[R]]) {
    R::lincomb_into(out, coeffs, inputs)
}

/// Decode a vector encoded by [`encode`], rejecting a length that is not a
/// whole number of elements and any non-canonical element (value >= modulus).
pub fn decode<R: Ring>(bytes: &[u8]) -> Result<Vec<R>, MathError> {
    if !bytes.len().is_multiple_of(R::BYTES) {
        return Err(MathError::BadLength { len: bytes.len(), domain: R::NAME, elem: R::BYTES });
    }
    let mut out = Vec::with_capacity(bytes.len() / R::BYTES);
    for (index, chunk) in bytes.chunks_exact(R::BYTES).enumerate() {
        match R::read_le(chunk) {
            Some(x) => out.push(x),
            None => return Err(MathError::NonCanonical { index, domain: R::NAME }),
        }
    }
    Ok(out)
}
