//! Arbitrary bytes as a control message from a peer (`PeerRequest`: pings,
//! announcements, plans, approvals, vetoes, consortium rounds) and as a
//! reply: decoding never panics, and what decodes re-encodes and decodes again.
#![no_main]

use concord_node::service::{PeerReply, PeerRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<PeerRequest>(data) {
        let text = serde_json::to_string(&req).unwrap();
        let _: PeerRequest = serde_json::from_str(&text).unwrap();
    }
    if let Ok(reply) = serde_json::from_slice::<PeerReply>(data) {
        let text = serde_json::to_string(&reply).unwrap();
        let _: PeerReply = serde_json::from_str(&text).unwrap();
    }
});
