//! Arbitrary bytes as a Hello payload: never panics, and valid ones roundtrip.
#![no_main]

use concord_wire::{decode_hello, encode_hello};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = decode_hello(data) {
        assert!(h.party < h.parties && h.parties >= 2);
        assert_eq!(&encode_hello(&h)[..], data);
    }
});
