//! Arbitrary bytes as the session specification a coordinator sends in a
//! plan (`propose`): decoding and re-deriving every plan from it never
//! panics, and a specification that prepares re-serialises to itself.
#![no_main]

use concord_session::SessionSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<SessionSpec>(data) else { return };
    if spec.parties > 64 {
        return; // plans are linear in the party count; keep runs short
    }
    if let Ok(prepared) = spec.prepare() {
        let again: SessionSpec = serde_json::from_str(&serde_json::to_string(&prepared.spec).unwrap()).unwrap();
        assert_eq!(again, spec);
    }
});
