//! An arbitrary byte stream parsed as a sequence of frames and fed to a
//! Reassembler, as a connection's reader would: never panics, never yields
//! a message over the limit, and the bytes of completed messages equal the
//! concatenated payloads of their frames.
#![no_main]

use concord_wire::{decode_header, FrameKind, Reassembler, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

const MAX_FRAME: usize = 4096;
const MAX_MESSAGE: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut r = Reassembler::new(MAX_MESSAGE);
    let mut expected: Vec<u8> = Vec::new();
    let mut rest = data;
    // Alternate the two feeding APIs, chosen by the first byte.
    let zero_copy = data.first().is_some_and(|b| b & 1 == 1);
    while let Some((hb, tail)) = rest.split_at_checked(HEADER_LEN) {
        let Ok(h) = decode_header(hb, MAX_FRAME) else {
            return;
        };
        // A truncated payload stands for a peer that lies about the length.
        let n = h.payload_len().min(tail.len());
        let (payload, tail) = tail.split_at(n);
        rest = tail;
        if h.kind != FrameKind::Data {
            assert!(r.push(&h, payload).is_err());
            expected.clear();
            continue;
        }
        let res = if zero_copy {
            match r.start_frame(&h) {
                Ok(buf) => {
                    buf.extend_from_slice(payload);
                    r.finish_frame()
                }
                Err(e) => Err(e),
            }
        } else {
            r.push(&h, payload)
        };
        match res {
            Ok(Some(m)) => {
                expected.extend_from_slice(payload);
                assert!(m.len() <= MAX_MESSAGE);
                assert_eq!(m, expected);
                expected.clear();
                assert!(!r.in_progress());
            }
            Ok(None) => {
                expected.extend_from_slice(payload);
                assert_eq!(r.buffered(), expected.len());
                assert!(r.buffered() <= MAX_MESSAGE);
            }
            Err(_) => {
                expected.clear();
                assert!(!r.in_progress());
            }
        }
    }
});
