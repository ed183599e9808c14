//! Arbitrary bytes as a peer-port preamble: never panics, a parsed preamble
//! is a prefix of the input and re-encodes to exactly that prefix.
#![no_main]

use concord_wire::{encode_preamble, parse_preamble, WireError, PREAMBLE_HEAD_LEN, PREAMBLE_MAX_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_preamble(data) {
        Ok(p) => {
            assert!(p.encoded_len() <= data.len());
            assert_eq!(&encode_preamble(&p)[..], &data[..p.encoded_len()]);
        }
        Err(WireError::Truncated { needed, got }) => {
            assert_eq!(got, data.len());
            assert!(needed == PREAMBLE_HEAD_LEN || needed == PREAMBLE_MAX_LEN);
            assert!(needed > got);
        }
        Err(_) => assert!(data.len() >= PREAMBLE_HEAD_LEN),
    }
});
