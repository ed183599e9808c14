//! Arbitrary bytes as an exported audit log, as an auditor receives it:
//! verification never panics (it accepts or refuses).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = concord_audit::verify_export(data, None);
});
