//! The header of every protocol message: which operation, which domain, and
//! the operation's sequence number, so that parties that drift apart fail
//! with a clear error instead of misreading each other's vectors.
//!
//! Layout (8 bytes): `op: u8 | domain: u8 | 0u8 | 0u8 | seq: u32 LE`, then
//! the payload (for vectors: the canonical element encoding of
//! `concord_math::batch::encode`).

use concord_math::{batch, Ring};

use crate::{PartyId, ProtocolError};

/// Header length in bytes.
pub const HEADER_LEN: usize = 8;

/// Protocol operations that send messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Seed agreement.
    Seed = 1,
    /// Input sharing.
    Input = 2,
    /// Shamir degree reduction (resharing).
    Reshare = 3,
    /// Opening to all parties.
    Open = 4,
    /// Opening to one party.
    OpenTo = 5,
    /// Beaver multiplication: the masked operands.
    BeaverOpen = 6,
    /// A message of a custom protocol built on the engine.
    Custom = 7,
    /// End of session: this party completed every operation.
    Done = 8,
}

impl Op {
    fn from_u8(b: u8) -> Option<Op> {
        Some(match b {
            1 => Op::Seed,
            2 => Op::Input,
            3 => Op::Reshare,
            4 => Op::Open,
            5 => Op::OpenTo,
            6 => Op::BeaverOpen,
            7 => Op::Custom,
            8 => Op::Done,
            _ => return None,
        })
    }
}

/// Domain codes carried in the header.
pub fn domain_code(name: &str) -> u8 {
    match name {
        "m61" => 1,
        "m127" => 2,
        "z64" => 3,
        "gf2" => 4,
        _ => 0,
    }
}

/// Encode a header followed by a vector of ring elements.
pub fn encode_vec<R: Ring>(op: Op, seq: u32, xs: &[R]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + xs.len() * R::BYTES);
    out.extend_from_slice(&[op as u8, domain_code(R::NAME), 0, 0]);
    out.extend_from_slice(&seq.to_le_bytes());
    batch::encode_into(xs, &mut out);
    out
}

/// Start a message of `len` elements of `R`: the header, with capacity for the elements.
pub fn start_vec<R: Ring>(op: Op, seq: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + len * R::BYTES);
    out.extend_from_slice(&[op as u8, domain_code(R::NAME), 0, 0]);
    out.extend_from_slice(&seq.to_le_bytes());
    out
}

/// Check the header of a vector message and that its payload holds exactly
/// `len` elements; return the payload (elements still to be validated by the
/// decoding kernel that consumes them).
pub fn expect_payload<'a, R: Ring>(
    peer: PartyId,
    msg: &'a [u8],
    op: Op,
    seq: u32,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], ProtocolError> {
    let payload = expect(peer, msg, op, domain_code(R::NAME), seq)?;
    if len.checked_mul(R::BYTES) != Some(payload.len()) {
        return Err(ProtocolError::WrongLength { peer, what, expected: len, got: payload.len() / R::BYTES });
    }
    Ok(payload)
}

/// Encode a header followed by raw bytes.
pub fn encode_bytes(op: Op, domain: u8, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&[op as u8, domain, 0, 0]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Encode a header followed by 64-bit words, little-endian (the replicated
/// engine's ring elements, domain `z64`, and bit-sliced words, domain `gf2`).
pub fn encode_words(op: Op, domain: u8, seq: u32, words: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + words.len() * 8);
    out.extend_from_slice(&[op as u8, domain, 0, 0]);
    out.extend_from_slice(&seq.to_le_bytes());
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

/// Check the header and decode exactly `len` 64-bit words (every bit pattern is valid).
pub fn expect_words(
    peer: PartyId,
    msg: &[u8],
    op: Op,
    domain: u8,
    seq: u32,
    len: usize,
    what: &'static str,
) -> Result<Vec<u64>, ProtocolError> {
    let payload = expect(peer, msg, op, domain, seq)?;
    if len.checked_mul(8) != Some(payload.len()) {
        return Err(ProtocolError::WrongLength { peer, what, expected: len, got: payload.len() / 8 });
    }
    Ok(payload.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
}

/// Check the header of `msg` from `peer` against what we expect; return the payload.
pub fn expect(peer: PartyId, msg: &[u8], op: Op, domain: u8, seq: u32) -> Result<&[u8], ProtocolError> {
    let (head, payload) = match msg.split_first_chunk::<HEADER_LEN>() {
        Some(x) => x,
        None => {
            return Err(ProtocolError::Malformed {
                peer,
                what: "protocol",
                reason: format!("{} bytes is shorter than the {HEADER_LEN}-byte header", msg.len()),
            })
        }
    };
    let got_op = Op::from_u8(head[0]);
    let got_seq = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if head[2] != 0 || head[3] != 0 {
        return Err(ProtocolError::Malformed {
            peer,
            what: "protocol",
            reason: "reserved header bytes are not zero".into(),
        });
    }
    if got_op != Some(op) || head[1] != domain || got_seq != seq {
        return Err(ProtocolError::OutOfSequence {
            peer,
            got: match got_op {
                Some(o) => format!("{o:?} #{got_seq} (domain {})", head[1]),
                None => format!("unknown operation {} #{got_seq}", head[0]),
            },
            expected: format!("{op:?} #{seq} (domain {domain})"),
        });
    }
    Ok(payload)
}

/// Check the header and decode a vector of exactly `len` elements (`None`: any length).
pub fn expect_vec<R: Ring>(
    peer: PartyId,
    msg: &[u8],
    op: Op,
    seq: u32,
    len: Option<usize>,
    what: &'static str,
) -> Result<Vec<R>, ProtocolError> {
    let payload = expect(peer, msg, op, domain_code(R::NAME), seq)?;
    let v = batch::decode::<R>(payload).map_err(|e| ProtocolError::Malformed { peer, what, reason: e.to_string() })?;
    if let Some(len) = len {
        if v.len() != len {
            return Err(ProtocolError::WrongLength { peer, what, expected: len, got: v.len() });
        }
    }
    Ok(v)
}
