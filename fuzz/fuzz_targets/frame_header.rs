//! Arbitrary bytes as a frame header: decoding never panics, and whatever
//! decodes re-encodes to exactly the bytes it came from.
#![no_main]

use concord_wire::{decode_header, encode_header, FrameKind, HEADER_LEN, MAX_ABORT_REASON};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First two bytes choose the size limit, the rest is the header.
    let (limit, bytes) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])) << 8, rest),
        _ => (1 << 20, data),
    };
    match decode_header(bytes, limit) {
        Ok(h) => {
            assert!(bytes.len() >= HEADER_LEN);
            assert!(h.payload_len() <= limit);
            assert!(!h.more || h.kind == FrameKind::Data);
            if h.kind == FrameKind::Abort {
                assert!(h.payload_len() <= MAX_ABORT_REASON);
            }
            assert_eq!(&encode_header(&h)[..], &bytes[..HEADER_LEN]);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
