//! Arbitrary bytes as a protocol message (8-byte header + payload), checked
//! against an expected (op, domain, seq, len) chosen from the first input
//! bytes, through `message::expect`, `expect_payload::<M61>` and
//! `expect_vec::<M127>` (and `expect_vec` for M61/Z64): never panics,
//! `expect` accepts exactly the messages whose header is the expected one,
//! errors name the peer, and anything accepted re-encodes (`encode_bytes` /
//! `encode_vec`) to the very bytes it came from.
#![no_main]

use concord_math::{Ring, M127, M61, Z64};
use concord_protocol::message::{
    domain_code, encode_bytes, encode_vec, expect, expect_payload, expect_vec, Op, HEADER_LEN,
};
use concord_protocol::ProtocolError;
use libfuzzer_sys::fuzz_target;

const OPS: [Op; 8] = [Op::Seed, Op::Input, Op::Reshare, Op::Open, Op::OpenTo, Op::BeaverOpen, Op::Custom, Op::Done];
/// Parameter bytes: op, domain, flags, seq (4), len (2), peer.
const PARAMS: usize = 10;

fn header(op: Op, domain: u8, seq: u32) -> [u8; HEADER_LEN] {
    let s = seq.to_le_bytes();
    [op as u8, domain, 0, 0, s[0], s[1], s[2], s[3]]
}

fn names_peer(e: &ProtocolError, peer: usize) {
    match e {
        ProtocolError::Malformed { peer: p, .. }
        | ProtocolError::OutOfSequence { peer: p, .. }
        | ProtocolError::WrongLength { peer: p, .. } => assert_eq!(*p, peer, "{e}"),
        other => panic!("a peer's bad message gave an error that names no peer: {other:?}"),
    }
    assert!(e.to_string().starts_with(&format!("party {peer} ")), "{e}");
}

/// `expect_vec::<R>`: accepted iff the header matches, the payload is a whole
/// number of canonical elements and (if given) the count is `len`.
fn check_vec<R: Ring>(peer: usize, msg: &[u8], op: Op, seq: u32, len: Option<usize>) {
    match expect_vec::<R>(peer, msg, op, seq, len, "fuzz") {
        Ok(v) => {
            if let Some(len) = len {
                assert_eq!(v.len(), len);
            }
            assert_eq!(encode_vec(op, seq, &v), msg);
        }
        Err(e) => {
            names_peer(&e, peer);
            let header_ok = msg.get(..HEADER_LEN) == Some(&header(op, domain_code(R::NAME), seq)[..]);
            if header_ok {
                let payload = &msg[HEADER_LEN..];
                let decodable = payload.len() % R::BYTES == 0
                    && payload.chunks_exact(R::BYTES).all(|c| R::read_le(c).is_some());
                assert!(!decodable || len.is_some_and(|l| l * R::BYTES != payload.len()), "{e}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((params, body)) = data.split_first_chunk::<PARAMS>() else {
        return;
    };
    let op = OPS[usize::from(params[0] % 8)];
    let domain = params[1];
    let flags = params[2];
    let seq = u32::from_le_bytes([params[3], params[4], params[5], params[6]]);
    let len = usize::from(u16::from_le_bytes([params[7], params[8]]));
    let peer = usize::from(params[9]);

    // Flag bit 0: prepend the header the check expects (domain per call), so
    // the fuzzer spends its time on payloads; otherwise the body is the whole
    // message and the header is fuzzed too.
    let with_header = |dom: u8| -> Vec<u8> {
        if flags & 1 == 1 {
            let mut m = header(op, dom, seq).to_vec();
            m.extend_from_slice(body);
            m
        } else {
            body.to_vec()
        }
    };

    // expect: accepted iff the header is exactly the expected one.
    let msg = with_header(domain);
    let expected_header = header(op, domain, seq);
    match expect(peer, &msg, op, domain, seq) {
        Ok(payload) => {
            assert_eq!(&msg[..HEADER_LEN], &expected_header);
            assert_eq!(payload, &msg[HEADER_LEN..]);
            assert_eq!(encode_bytes(op, domain, seq, payload), msg);
        }
        Err(e) => {
            names_peer(&e, peer);
            assert!(msg.get(..HEADER_LEN) != Some(&expected_header[..]), "{e}");
        }
    }

    // expect_payload::<M61>: header and exact byte length; elements unchecked.
    let msg = with_header(domain_code(M61::NAME));
    match expect_payload::<M61>(peer, &msg, op, seq, len, "fuzz") {
        Ok(payload) => {
            assert_eq!(payload.len(), len * M61::BYTES);
            assert_eq!(encode_bytes(op, domain_code(M61::NAME), seq, payload), msg);
        }
        Err(e) => {
            names_peer(&e, peer);
            let header_ok = msg.get(..HEADER_LEN) == Some(&header(op, domain_code(M61::NAME), seq)[..]);
            assert!(!header_ok || msg.len() - HEADER_LEN != len * M61::BYTES, "{e}");
        }
    }

    // expect_vec: fixed length (flag bit 1) or any length.
    let want = (flags & 2 == 2).then_some(len);
    check_vec::<M127>(peer, &with_header(domain_code(M127::NAME)), op, seq, want);
    check_vec::<M61>(peer, &with_header(domain_code(M61::NAME)), op, seq, want);
    check_vec::<Z64>(peer, &with_header(domain_code(Z64::NAME)), op, seq, want);
});
