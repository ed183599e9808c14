//! Arbitrary bytes as an Abort payload: never panics, accepted reasons are
//! valid UTF-8 within the limit and roundtrip; encoding any string yields a
//! decodable payload.
#![no_main]

use concord_wire::{decode_abort, encode_abort, MAX_ABORT_REASON};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_abort(data) {
        Ok(s) => {
            assert!(s.len() <= MAX_ABORT_REASON);
            assert_eq!(s.as_bytes(), data);
            assert_eq!(encode_abort(&s), data);
        }
        Err(_) => assert!(data.len() > MAX_ABORT_REASON || std::str::from_utf8(data).is_err()),
    }
    let lossy = String::from_utf8_lossy(data);
    let enc = encode_abort(&lossy);
    assert!(enc.len() <= MAX_ABORT_REASON);
    let dec = decode_abort(&enc).ok();
    assert!(dec.is_some_and(|d| lossy.starts_with(&d)));
});
