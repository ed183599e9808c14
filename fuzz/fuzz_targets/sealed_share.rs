//! Arbitrary bytes as what the analyst receives from a node: a sealed result
//! share (envelope JSON) and the reports inside. Opening never panics and
//! never succeeds on bytes not sealed to the key; arbitrary reports are
//! refused or reconstructed without panicking.
#![no_main]

use concord_session::seal::{AnalystKey, Envelope};
use concord_session::{SessionOptions, SessionSpec, ShareReport};
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;

const SCHEMA: &str = "table = \"t\"\nmax_rows = 1000\n[[column]]\nname = \"x\"\ntype = \"int\"\nmin = 0\nmax = 100\n";

fuzz_target!(|data: &[u8]| {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let key = AnalystKey::generate(&mut rng);
    if let Ok(env) = serde_json::from_slice::<Envelope>(data) {
        assert!(key.open("session", 0, &env).is_err(), "forged envelope opened");
    }
    let opts = SessionOptions { input_check: Some("off".into()), ..SessionOptions::default() };
    let Ok(spec) = SessionSpec::plan(SCHEMA, "SELECT COUNT(*), SUM(x) FROM t", 3, &opts) else { return };
    let Ok(prepared) = spec.prepare() else { return };
    if let Ok(reports) = serde_json::from_slice::<Vec<ShareReport>>(data) {
        let _ = prepared.reconstruct(&reports);
    }
});
