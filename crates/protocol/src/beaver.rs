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

use crate::preprocessing::Triples;
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

/// State between the two steps of a multiplication.
pub struct MulState<R: Ring> {
    triples: Triples<R>,
    masked: Vec<R>,
}

/// Step 1: the masked operands e_p || f_p to broadcast (2L elements).
pub fn mul_send<R: Ring>(
    x: &ShareVec<R>,
    y: &ShareVec<R>,
    triples: Triples<R>,
) -> Result<(MulState<R>, Vec<R>), ProtocolError> {
    let len = x.len();
    if y.len() != len {
        return Err(ProtocolError::LengthMismatch { left: len, right: y.len() });
    }
    if triples.len() != len {
        return Err(ProtocolError::Preprocessing(format!("{} triples for {len} multiplications", triples.len())));
    }
    let mut masked = Vec::with_capacity(2 * len);
    masked.extend(x.expose().iter().zip(triples.a.expose()).map(|(x, a)| *x - *a));
    masked.extend(y.expose().iter().zip(triples.b.expose()).map(|(y, b)| *y - *b));
    Ok((MulState { triples, masked: masked.clone() }, masked))
}

/// Step 2: combine everyone's masked operands into our share of the product.
pub fn mul_finish<R: Ring>(
    me: PartyId,
    state: MulState<R>,
    received: &[(PartyId, Vec<R>)],
) -> Result<ShareVec<R>, ProtocolError> {
    let mut ef = state.masked;
    let len2 = ef.len();
    for (p, v) in received {
        if v.len() != len2 {
            return Err(ProtocolError::WrongLength { peer: *p, what: "beaver", expected: len2, got: v.len() });
        }
        batch::add_assign(&mut ef, v);
    }
    let len = len2 / 2;
    let (e, f) = ef.split_at(len);
    let t = &state.triples;
    let mut z = t.c.expose().to_vec();
    batch::mul_add(&mut z, e, t.b.expose());
    batch::mul_add(&mut z, f, t.a.expose());
    if me == 0 {
        batch::mul_add(&mut z, e, f);
    }
    Ok(ShareVec::from_raw(z))
}

/// Opening: the sum of all shares. **Reveals the value.**
pub fn open_combine<R: Ring>(own: &ShareVec<R>, received: &[(PartyId, Vec<R>)]) -> Result<Vec<R>, ProtocolError> {
    let mut out = own.expose().to_vec();
    for (p, v) in received {
        if v.len() != out.len() {
            return Err(ProtocolError::WrongLength { peer: *p, what: "open", expected: out.len(), got: v.len() });
        }
        batch::add_assign(&mut out, v);
    }
    Ok(out)
}
