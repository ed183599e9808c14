//! Arbitrary bytes as a sealed file (`concord unseal`): parsing never
//! panics, and a file that parses keeps its bytes.
#![no_main]

use concord_threshold::SealedFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = SealedFile::from_bytes(data) {
        assert_eq!(file.as_bytes(), data);
        let _ = file.digest();
    }
});
