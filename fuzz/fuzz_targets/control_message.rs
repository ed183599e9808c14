//! Arbitrary bytes as a control message from a peer (`PeerRequest`: pings
//! with their audit checkpoints, announcements, plans, approvals, vetoes,
//! consortium, approval and rekey rounds) and as a reply: decoding never
//! panics, what decodes re-encodes and decodes again, and the strings a node
//! parses further (a heartbeat's checkpoint, a threshold approval's
//! signature) are parsed without panicking.
#![no_main]

use concord_node::consortium::ConsortiumMsg;
use concord_node::service::{PeerReply, PeerRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<PeerRequest>(data) {
        let text = serde_json::to_string(&req).unwrap();
        let _: PeerRequest = serde_json::from_str(&text).unwrap();
        match &req {
            PeerRequest::Ping { checkpoint: Some(line), .. } => {
                if let Ok(cp) = concord_audit::Checkpoint::from_json(line) {
                    assert_eq!(&cp.to_json(), line, "a parsed checkpoint is in canonical form");
                }
            }
            PeerRequest::Consortium(ConsortiumMsg::Approval { approval, .. }) => {
                let _ = approval.signature.parse::<concord_threshold::Signature>();
                let _ = approval.group_key.parse::<concord_threshold::GroupPublicKey>();
            }
            _ => {}
        }
    }
    if let Ok(reply) = serde_json::from_slice::<PeerReply>(data) {
        let text = serde_json::to_string(&reply).unwrap();
        let _: PeerReply = serde_json::from_str(&text).unwrap();
    }
});
