//! Unit and property tests of the frame codec.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use proptest::prelude::*;

const SID: [u8; 16] = [7u8; 16];

fn data(len: u32, more: bool) -> FrameHeader {
    FrameHeader { kind: FrameKind::Data, more, session_id: SID, len }
}

#[test]
fn header_layout_is_byte_exact() {
    let mut sid = [0u8; 16];
    for (i, b) in sid.iter_mut().enumerate() {
        *b = i as u8;
    }
    let h = FrameHeader { kind: FrameKind::Data, more: true, session_id: sid, len: 0x0102_0304 };
    let b = encode_header(&h);
    let mut expected = vec![b'C', b'N', b'C', b'D', 1, 2, 1, 0];
    expected.extend_from_slice(&sid);
    expected.extend_from_slice(&[4, 3, 2, 1]);
    assert_eq!(b.as_slice(), expected.as_slice());
    assert_eq!(decode_header(&b, u32::MAX as usize), Ok(h));
}

#[test]
fn rejects_each_bad_field() {
    let good = encode_header(&data(10, false));
    let lim = 100;
    assert_eq!(
        decode_header(&good[..HEADER_LEN - 1], lim),
        Err(WireError::Truncated { needed: HEADER_LEN, got: HEADER_LEN - 1 })
    );
    let mut b = good;
    b[0] = b'X';
    assert_eq!(decode_header(&b, lim), Err(WireError::BadMagic { got: *b"XNCD" }));
    let mut b = good;
    b[4] = 2;
    assert_eq!(decode_header(&b, lim), Err(WireError::UnsupportedVersion { expected: 1, got: 2 }));
    for k in [0u8, 5, 255] {
        let mut b = good;
        b[5] = k;
        assert_eq!(decode_header(&b, lim), Err(WireError::UnknownKind { got: k }));
    }
    let mut b = good;
    b[6] = 0x02;
    assert!(matches!(decode_header(&b, lim), Err(WireError::BadFlags { flags: 0x02, .. })));
    let mut b = good;
    b[7] = 0x80;
    assert_eq!(decode_header(&b, lim), Err(WireError::NonZeroReserved { got: 0x80 }));
    let b = encode_header(&data(101, false));
    assert_eq!(decode_header(&b, lim), Err(WireError::OversizedFrame { len: 101, max: 100 }));
    // Exactly at the limit is fine.
    assert!(decode_header(&encode_header(&data(100, true)), lim).is_ok());
}

#[test]
fn kind_specific_lengths_and_flags() {
    let h = FrameHeader::new(FrameKind::Hello, SID, 5);
    assert!(matches!(
        decode_header(&encode_header(&h), 1 << 20),
        Err(WireError::BadPayloadLength { kind: FrameKind::Hello, expected: 4, got: 5 })
    ));
    let h = FrameHeader::new(FrameKind::Close, SID, 1);
    assert!(decode_header(&encode_header(&h), 1 << 20).is_err());
    let h = FrameHeader::new(FrameKind::Abort, SID, 1025);
    assert_eq!(decode_header(&encode_header(&h), 1 << 20), Err(WireError::AbortTooLong { got: 1025, max: 1024 }));
    let mut h = FrameHeader::new(FrameKind::Close, SID, 0);
    h.more = true;
    assert!(matches!(
        decode_header(&encode_header(&h), 1 << 20),
        Err(WireError::BadFlags { kind: FrameKind::Close, .. })
    ));
}

#[test]
fn hello_roundtrip_and_checks() {
    let h = Hello { party: 2, parties: 3 };
    let b = encode_hello(&h);
    assert_eq!(b, [2, 0, 3, 0]);
    assert_eq!(decode_hello(&b), Ok(h));
    assert!(matches!(decode_hello(&[0, 0, 3]), Err(WireError::BadPayloadLength { got: 3, .. })));
    assert_eq!(decode_hello(&[3, 0, 3, 0]), Err(WireError::BadHello { party: 3, parties: 3 }));
    assert!(decode_hello(&[0, 0, 1, 0]).is_err());
}

#[test]
fn abort_reason() {
    assert_eq!(decode_abort(&encode_abort("x")), Ok("x".to_owned()));
    assert_eq!(decode_abort(&[b'a', 0xff]), Err(WireError::AbortNotUtf8 { valid_up_to: 1 }));
    assert_eq!(decode_abort(&[b'a'; 1025]), Err(WireError::AbortTooLong { got: 1025, max: 1024 }));
    // Truncation respects character boundaries: 1023 ASCII bytes + a 2-byte char.
    let long = format!("{}é", "a".repeat(1023));
    let enc = encode_abort(&long);
    assert_eq!(enc.len(), 1023);
    assert!(decode_abort(&enc).is_ok());
}

#[test]
fn split_sizes() {
    let v: Vec<_> = split_message(0, 4).collect();
    assert_eq!(v, vec![(0..0, false)]);
    let v: Vec<_> = split_message(8, 4).collect();
    assert_eq!(v, vec![(0..4, true), (4..8, false)]);
    let v: Vec<_> = split_message(9, 4).collect();
    assert_eq!(v, vec![(0..4, true), (4..8, true), (8..9, false)]);
    assert_eq!(split_message(9, 4).len(), 3);
    // 16 MiB in 1 MiB frames.
    let frames: Vec<_> = split_message(16 << 20, DEFAULT_MAX_FRAME_PAYLOAD).collect();
    assert_eq!(frames.len(), 16);
    assert!(frames.iter().all(|(r, _)| r.len() == DEFAULT_MAX_FRAME_PAYLOAD));
    // Zero frame size does not loop forever.
    assert_eq!(split_message(3, 0).count(), 3);
}

#[test]
fn reassembler_limits_and_errors() {
    let mut r = Reassembler::new(10);
    assert_eq!(r.push(&data(4, true), &[1; 4]), Ok(None));
    assert!(r.in_progress());
    assert_eq!(r.push(&data(6, false), &[2; 6]), Ok(Some(vec![1, 1, 1, 1, 2, 2, 2, 2, 2, 2])));
    assert!(!r.in_progress());
    // Exceeding the limit across frames.
    assert_eq!(r.push(&data(8, true), &[0; 8]), Ok(None));
    assert_eq!(r.push(&data(3, false), &[0; 3]), Err(WireError::MessageTooLarge { size: 11, max: 10 }));
    assert!(!r.in_progress());
    // Length mismatch.
    assert_eq!(r.push(&data(3, false), &[0; 2]), Err(WireError::LengthMismatch { announced: 3, got: 2 }));
    // Wrong kind.
    let h = FrameHeader::new(FrameKind::Close, SID, 0);
    assert!(matches!(r.push(&h, &[]), Err(WireError::UnexpectedKind { .. })));
    // start/finish with too few bytes appended.
    r.start_frame(&data(5, false)).unwrap().extend_from_slice(&[1, 2]);
    assert_eq!(r.finish_frame(), Err(WireError::LengthMismatch { announced: 5, got: 2 }));
    assert_eq!(r.finish_frame(), Err(WireError::NoFrameInProgress));
    // Empty message.
    assert_eq!(r.push(&data(0, false), &[]), Ok(Some(vec![])));
}

#[test]
fn message_frames_reassemble() {
    let msg: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut r = Reassembler::new(1 << 20);
    let mut out = None;
    let mut n = 0;
    for (hb, chunk) in message_frames(SID, &msg, 999) {
        let h = decode_header(&hb, 999).unwrap();
        assert_eq!(h.session_id, SID);
        assert!(out.is_none());
        out = r.push(&h, chunk).unwrap();
        n += 1;
    }
    assert_eq!(n, 11);
    assert_eq!(out, Some(msg));
}

fn arb_kind() -> impl Strategy<Value = FrameKind> {
    prop_oneof![Just(FrameKind::Hello), Just(FrameKind::Data), Just(FrameKind::Abort), Just(FrameKind::Close)]
}

fn arb_header() -> impl Strategy<Value = FrameHeader> {
    (arb_kind(), any::<bool>(), any::<[u8; 16]>(), any::<u32>()).prop_map(|(kind, more, sid, len)| {
        let (more, len) = match kind {
            FrameKind::Data => (more, len),
            FrameKind::Hello => (false, HELLO_LEN as u32),
            FrameKind::Close => (false, 0),
            FrameKind::Abort => (false, len % (MAX_ABORT_REASON as u32 + 1)),
        };
        FrameHeader { kind, more, session_id: sid, len }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn prop_header_roundtrip(h in arb_header()) {
        let b = encode_header(&h);
        prop_assert_eq!(decode_header(&b, u32::MAX as usize), Ok(h));
    }

    #[test]
    fn prop_header_byte_corruption_rejected(h in arb_header(), pos in 0usize..8, x in 1u8..=255) {
        // Bytes 0..8 are magic, version, kind, flags, reserved. Flipping any
        // magic/version/reserved byte, or the kind byte to anything other than
        // another valid kind, must be rejected.
        let mut b = encode_header(&h);
        b[pos] ^= x;
        let r = decode_header(&b, u32::MAX as usize);
        match pos {
            5 => {
                // A kind corrupted into another valid kind may still decode, but
                // never to the original header.
                if let Ok(d) = r { prop_assert_ne!(d, h); }
            }
            6 => {
                // MORE toggled on a Data frame is a valid header, but a different one.
                if let Ok(d) = r {
                    prop_assert_eq!(h.kind, FrameKind::Data);
                    prop_assert_eq!(x, FLAG_MORE);
                    prop_assert_ne!(d, h);
                }
            }
            _ => prop_assert!(r.is_err()),
        }
    }

    #[test]
    fn prop_every_corruption_of_fixed_bytes_rejected(h in arb_header()) {
        let good = encode_header(&h);
        for pos in [0usize, 1, 2, 3, 4, 7] {
            for x in 1..=255u8 {
                let mut b = good;
                b[pos] ^= x;
                prop_assert!(decode_header(&b, u32::MAX as usize).is_err(), "pos {} xor {}", pos, x);
            }
        }
        for k in 0..=255u8 {
            let mut b = good;
            b[5] = k;
            let r = decode_header(&b, u32::MAX as usize);
            if FrameKind::from_byte(k).is_none() {
                prop_assert_eq!(r, Err(WireError::UnknownKind { got: k }));
            }
        }
    }

    #[test]
    fn prop_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..2000) {
        let _ = decode_header(&bytes, max);
        let _ = decode_hello(&bytes);
        let _ = decode_abort(&bytes);
    }

    #[test]
    fn prop_split_reassemble(len in 0usize..5000, step in 1usize..700) {
        let msg: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let mut r = Reassembler::new(len);
        let mut got = None;
        let mut frames = 0;
        for (hb, chunk) in message_frames(SID, &msg, step) {
            let h = decode_header(&hb, step).unwrap();
            prop_assert!(got.is_none());
            got = r.push(&h, chunk).unwrap();
            frames += 1;
        }
        prop_assert_eq!(frames, len.div_ceil(step).max(1));
        prop_assert_eq!(got, Some(msg));
    }

    #[test]
    fn prop_reassembler_arbitrary_sequences(frames in proptest::collection::vec((any::<bool>(), 0usize..50, any::<bool>()), 0..40)) {
        let mut r = Reassembler::new(100);
        for (more, len, lie) in frames {
            let h = data(len as u32, more);
            let payload = vec![1u8; if lie { len + 1 } else { len }];
            match r.push(&h, &payload) {
                Ok(Some(m)) => prop_assert!(m.len() <= 100),
                Ok(None) => prop_assert!(r.buffered() <= 100),
                Err(_) => prop_assert!(!r.in_progress()),
            }
        }
    }
}

#[test]
fn preamble_layout_is_byte_exact() {
    let sid: [u8; 16] = *b"0123456789abcdef";
    let s = encode_preamble(&Preamble::Session(sid));
    let mut expected = b"CONCORD\x01\x01".to_vec();
    expected.extend_from_slice(&sid);
    assert_eq!(s, expected);
    assert_eq!(s.len(), PREAMBLE_MAX_LEN);
    assert_eq!(parse_preamble(&s), Ok(Preamble::Session(sid)));
    let c = encode_preamble(&Preamble::Control);
    assert_eq!(c, b"CONCORD\x01\x02".to_vec());
    assert_eq!(parse_preamble(&c), Ok(Preamble::Control));
    // Trailing bytes (the TLS ClientHello) are not part of the preamble.
    let mut more = c.clone();
    more.extend_from_slice(b"\x16\x03\x01");
    assert_eq!(parse_preamble(&more), Ok(Preamble::Control));
}

#[test]
fn preamble_rejects_bad_input() {
    assert_eq!(parse_preamble(b"CONC"), Err(WireError::Truncated { needed: PREAMBLE_HEAD_LEN, got: 4 }));
    assert_eq!(parse_preamble(b"CONCORD\x01\x01abc"), Err(WireError::Truncated { needed: PREAMBLE_MAX_LEN, got: 12 }));
    assert_eq!(parse_preamble(b"CONCORD\x02\x02"), Err(WireError::BadPreambleMagic { got: *b"CONCORD\x02" }));
    assert_eq!(parse_preamble(b"GET / HTTP/1.1\r\n"), Err(WireError::BadPreambleMagic { got: *b"GET / HT" }));
    assert_eq!(parse_preamble(b"CONCORD\x01\x03"), Err(WireError::UnknownPreambleKind { got: 3 }));
    assert_eq!(parse_preamble(b"CONCORD\x01\x00"), Err(WireError::UnknownPreambleKind { got: 0 }));
}

proptest! {
    #[test]
    fn preamble_parse_never_panics_and_roundtrips(data in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Ok(p) = parse_preamble(&data) {
            prop_assert_eq!(&encode_preamble(&p)[..], &data[..p.encoded_len()]);
        }
    }
}
