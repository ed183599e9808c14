//! Arbitrary bytes as an analyst's signed request (`POST /api/sessions`,
//! and inside every plan a coordinator proposes): decoding never panics, and
//! a request that decodes re-encodes to the same request and hash.
#![no_main]

use concord_access::SignedRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(signed) = SignedRequest::from_json(text) else { return };
    let _ = signed.request.validate();
    let again = SignedRequest::from_json(&signed.to_json().unwrap()).unwrap();
    assert_eq!(again, signed);
    assert_eq!(again.request.hash(), signed.request.hash());
});
