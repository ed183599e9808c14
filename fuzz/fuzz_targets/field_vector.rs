//! Arbitrary bytes as an encoded vector of M61, M127 or Z64 elements,
//! through every decoding kernel of `concord_math::batch`: `decode`,
//! `decode_into`, `decode_add_assign` and `decode_scale_add`. Never panics;
//! all four accept exactly the same inputs (whole number of canonical
//! elements, and for the in-place kernels exactly the accumulator's length);
//! accepted vectors re-encode to the input; `decode_add_assign` on a zero
//! accumulator equals `decode`, on any accumulator it adds, and
//! `decode_scale_add` adds `c` times the decoded vector.
#![no_main]

use concord_math::{batch, MathError, Ring, M127, M61, Z64};
use libfuzzer_sys::fuzz_target;

/// Reference: is `bytes` a whole number of canonical elements?
fn reference<R: Ring>(bytes: &[u8]) -> Option<Vec<R>> {
    if bytes.len() % R::BYTES != 0 {
        return None;
    }
    bytes.chunks_exact(R::BYTES).map(R::read_le).collect()
}

fn check<R: Ring>(sel: u8, c_bytes: [u8; 8], bytes: &[u8]) {
    let reference = reference::<R>(bytes);

    // decode
    match batch::decode::<R>(bytes) {
        Ok(v) => {
            assert_eq!(Some(&v), reference.as_ref());
            assert_eq!(v.len() * R::BYTES, bytes.len());
            assert_eq!(batch::encode(&v), bytes);
            let mut appended = vec![0xAA];
            batch::encode_into(&v, &mut appended);
            assert_eq!(&appended[1..], bytes);
        }
        Err(e) => {
            assert!(reference.is_none(), "{e}");
            match e {
                MathError::BadLength { len, elem, .. } => {
                    assert_eq!(len, bytes.len());
                    assert_eq!(elem, R::BYTES);
                    assert!(bytes.len() % R::BYTES != 0);
                }
                MathError::NonCanonical { index, .. } => {
                    // The first non-canonical element is the one reported.
                    let chunks: Vec<&[u8]> = bytes.chunks_exact(R::BYTES).collect();
                    assert!(R::read_le(chunks[index]).is_none());
                    assert!(chunks[..index].iter().all(|c| R::read_le(c).is_some()));
                }
                other => panic!("unexpected error {other:?}"),
            }
        }
    }

    // The in-place kernels get an accumulator of the right length or
    // (selector bits 2-3) one element more or less.
    let whole = bytes.len() / R::BYTES;
    let acc_len = match (sel >> 2) & 3 {
        2 => whole + 1,
        3 => whole.saturating_sub(1),
        _ => whole,
    };
    let fits = acc_len * R::BYTES == bytes.len();
    let expected = reference.as_ref().filter(|_| fits);

    // decode_into
    let mut out = vec![R::ONE; acc_len];
    match batch::decode_into(&mut out, bytes) {
        Ok(()) => assert_eq!(Some(&out), expected),
        Err(e) => assert!(expected.is_none(), "{e}"),
    }

    // decode_add_assign on zero: equals decode.
    let mut acc = vec![R::ZERO; acc_len];
    match batch::decode_add_assign(&mut acc, bytes) {
        Ok(()) => assert_eq!(Some(&acc), expected),
        Err(e) => assert!(expected.is_none(), "{e}"),
    }

    // decode_add_assign on a non-zero accumulator.
    let start: Vec<R> = (0..acc_len).map(|i| R::from_u64(i as u64 ^ u64::from_le_bytes(c_bytes))).collect();
    let mut acc = start.clone();
    match batch::decode_add_assign(&mut acc, bytes) {
        Ok(()) => {
            let v = expected.expect("accepted only what decode accepts");
            for ((a, s), x) in acc.iter().zip(&start).zip(v) {
                assert_eq!(*a, *s + *x);
            }
        }
        Err(e) => assert!(expected.is_none(), "{e}"),
    }

    // decode_scale_add with c from the input.
    let c = R::from_u64(u64::from_le_bytes(c_bytes));
    let mut acc = start.clone();
    match batch::decode_scale_add(&mut acc, c, bytes) {
        Ok(()) => {
            let v = expected.expect("accepted only what decode accepts");
            for ((a, s), x) in acc.iter().zip(&start).zip(v) {
                assert_eq!(*a, *s + c * *x);
            }
        }
        Err(e) => assert!(expected.is_none(), "{e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    // Byte 0 selects the ring (bits 0-1) and the accumulator length (bits
    // 2-3); bytes 1..9 are a scalar; the rest is the encoded vector.
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Some((c, bytes)) = rest.split_first_chunk::<8>() else {
        return;
    };
    match sel & 3 {
        0 => check::<M61>(sel, *c, bytes),
        1 => check::<M127>(sel, *c, bytes),
        2 => check::<Z64>(sel, *c, bytes),
        _ => {
            check::<M61>(sel, *c, bytes);
            check::<M127>(sel, *c, bytes);
            check::<Z64>(sel, *c, bytes);
        }
    }
});
