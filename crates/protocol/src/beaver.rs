//! n-of-n additive sharing over any ring, with multiplication by Beaver
//! triples (Beaver, "Efficient multiparty protocols using circuit
//! randomization", CRYPTO 1991). Secure against any n - 1 semi-honest parties.
//!
//! Input by o: every other party j takes the next elements of the stream it
//! shares with o as its share; o takes x minus their sum. No message.
//!
//! Multiplication of [x], [y] with a triple ([a], [b], [c = ab]):
//! 1. every party p broadcasts e_p = x_p - a_p and f_p = y_p - b_p (one round,
//!    2(n - 1) elements sent per element);
//! 2. e = sum e_p, f = sum f_p are public;
//!    z_p = c_p + e b_p + f a_p (+ e f for party 0) is a share of xy.

use concord_math::{batch, Ring};
use concord_sharing::ShareVec;

use crate::message::{self, Op};
use crate::prss::Prss;
use crate::{PartyId, ProtocolError};

/// Input, owner side: our share (the others draw theirs from the streams).
pub fn input_send<R: Ring>(prss: &mut Prss, secret: &[R]) -> Result<ShareVec<R>, ProtocolError> {
    let mut own = secret.to_vec();
    for j in 0..prss.n() {
        if j != prss.me() {
            let s = prss.draw_to::<R>(j, secret.len())?;
            batch::sub_assign(&mut own, &s);
        }
    }
    Ok(ShareVec::from_raw(own))
}

/// Input, receiver side.
pub fn input_recv<R: Ring>(prss: &mut Prss, owner: PartyId, len: usize) -> Result<ShareVec<R>, ProtocolError> {
    Ok(ShareVec::from_raw(prss.draw_from::<R>(owner, len)?))
}

/// Step 1 for one batch: the message carrying e_p = x_p - a_p followed by
/// f_p = y_p - b_p (2m elements), to broadcast to every other party.
pub fn mul_message<R: Ring>(seq: u32, x: &[R], y: &[R], a: &[R], b: &[R]) -> Result<Vec<u8>, ProtocolError> {
    let m = x.len();
    if y.len() != m || a.len() != m || b.len() != m {
        return Err(ProtocolError::LengthMismatch { left: m, right: y.len().min(a.len()).min(b.len()) });
    }
    let mut msg = message::start_vec::<R>(Op::BeaverOpen, seq, 2 * m);
    let mut tmp = vec![R::ZERO; m.min(4096)];
    for (xs, ys) in [(x, a), (y, b)] {
        for (cx, cy) in xs.chunks(4096).zip(ys.chunks(4096)) {
            let k = cx.len();
            for ((t, p), q) in tmp[..k].iter_mut().zip(cx).zip(cy) {
                *t = *p - *q;
            }
            batch::encode_into(&tmp[..k], &mut msg);
        }
    }
    Ok(msg)
}

/// Step 2 for one batch: from our operands and triple shares and every other
/// party's payload (e_q || f_q), write our share of x * y into `out`:
/// z_p = c_p + e b_p + f a_p (+ e f at party 0) with e, f the public sums.
#[allow(clippy::too_many_arguments)]
pub fn mul_finish<R: Ring>(
    me: PartyId,
    x: &[R],
    y: &[R],
    t: (&[R], &[R], &[R]),
    received: &[(PartyId, &[u8])],
    out: &mut [R],
) -> Result<(), ProtocolError> {
    let (a, b, c) = t;
    let m = out.len();
    if x.len() != m || y.len() != m || a.len() != m || b.len() != m || c.len() != m {
        return Err(ProtocolError::LengthMismatch { left: m, right: x.len() });
    }
    let mut e: Vec<R> = x.iter().zip(a).map(|(p, q)| *p - *q).collect();
    let mut f: Vec<R> = y.iter().zip(b).map(|(p, q)| *p - *q).collect();
    for (peer, payload) in received {
        if payload.len() != 2 * m * R::BYTES {
            return Err(ProtocolError::WrongLength {
                peer: *peer,
                what: "beaver",
                expected: 2 * m,
                got: payload.len() / R::BYTES,
            });
        }
        let (pe, pf) = payload.split_at(m * R::BYTES);
        let bad = |e: concord_math::MathError| ProtocolError::Malformed {
            peer: *peer,
            what: "beaver",
            reason: e.to_string(),
        };
        batch::decode_add_assign(&mut e, pe).map_err(bad)?;
        batch::decode_add_assign(&mut f, pf).map_err(bad)?;
    }
    out.copy_from_slice(c);
    batch::mul_add(out, &e, b);
    batch::mul_add(out, &f, a);
    if me == 0 {
        batch::mul_add(out, &e, &f);
    }
    Ok(())
}

/// Opening one batch: `out` = our share plus every received share (payloads
/// decoded as they are added). **Reveals the value.**
pub fn open_combine<R: Ring>(own: &[R], received: &[(PartyId, &[u8])], out: &mut [R]) -> Result<(), ProtocolError> {
    if own.len() != out.len() {
        return Err(ProtocolError::LengthMismatch { left: own.len(), right: out.len() });
    }
    out.copy_from_slice(own);
    for (p, payload) in received {
        batch::decode_add_assign(out, payload).map_err(|e| ProtocolError::Malformed {
            peer: *p,
            what: "open",
            reason: e.to_string(),
        })?;
    }
    Ok(())
}
