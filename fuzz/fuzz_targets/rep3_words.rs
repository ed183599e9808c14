//! Arbitrary bytes as a replicated-engine message (8-byte header + 64-bit
//! words), checked by `message::expect_words` against an expected
//! (op, domain, seq, len) taken from the first input bytes: never panics,
//! errors name the peer, and anything accepted re-encodes with
//! `encode_words` to the very bytes it came from.
#![no_main]

use concord_protocol::message::{encode_words, expect_words, Op};
use concord_protocol::ProtocolError;
use libfuzzer_sys::fuzz_target;

const OPS: [Op; 4] = [Op::Input, Op::Reshare, Op::Open, Op::Custom];

fuzz_target!(|data: &[u8]| {
    let Some((params, msg)) = data.split_first_chunk::<8>() else { return };
    let op = OPS[params[0] as usize % OPS.len()];
    let domain = 3 + params[1] % 2;
    let seq = u32::from_le_bytes([params[2], params[3], params[4], params[5]]);
    let len = u16::from_le_bytes([params[6], params[7]]) as usize % 512;
    let peer = (params[0] as usize) % 3;
    match expect_words(peer, msg, op, domain, seq, len, "fuzz") {
        Ok(words) => {
            assert_eq!(words.len(), len);
            assert_eq!(encode_words(op, domain, seq, &words), msg);
        }
        Err(
            ProtocolError::Malformed { peer: p, .. }
            | ProtocolError::OutOfSequence { peer: p, .. }
            | ProtocolError::WrongLength { peer: p, .. },
        ) => assert_eq!(p, peer),
        Err(e) => panic!("unexpected error kind: {e}"),
    }
});
