//! The portable export: JSON lines that an auditor verifies without the node.
//!
//! ```text
//! {"format":"concord-audit-export","version":1,"node":"a","public_key":"<64 hex>"}
//! <one Entry::to_json line per entry, seq 0 to n>
//! {"checkpoint":<Checkpoint::to_json of entry n>}
//! ```
//!
//! Every line ends with `\n`. The file is canonical: [`verify_export`]
//! re-encodes each line and refuses any other spelling, so a changed byte is
//! never accepted.

use ed25519_dalek::VerifyingKey;
use serde::Deserialize;
use serde_json::Value;

use crate::{checkpoint_of, hex, json_string, unhex_key, verify_with_checkpoints, AuditError, Checkpoint, Entry};

/// The header's `format`.
pub const EXPORT_FORMAT: &str = "concord-audit-export";
/// The header's `version`.
pub const EXPORT_VERSION: u64 = 1;

/// What a verified export holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// The node's name.
    pub node: String,
    /// The key that signed every entry and the checkpoint, hex. When verified
    /// without an expected key, compare it with the node's published
    /// `ed25519_public`: anyone can make a consistent file with their own key.
    pub public_key: String,
    /// The entries, verified.
    pub entries: Vec<Entry>,
    /// The node's checkpoint of the last entry.
    pub checkpoint: Checkpoint,
}

/// Write the export of a whole, non-empty chain and the checkpoint of its last
/// entry; the chain is verified first (an export is never broken).
pub fn export(
    entries: &[Entry],
    checkpoint: &Checkpoint,
    node: &str,
    key: &VerifyingKey,
) -> Result<Vec<u8>, AuditError> {
    let summary = verify_with_checkpoints(entries, key, std::slice::from_ref(checkpoint))?;
    if summary.node.as_deref() != Some(node) {
        return Err(AuditError::Invalid(format!("the chain is not node {node:?}'s, or is empty")));
    }
    if summary.len != checkpoint.seq + 1 {
        return Err(AuditError::Invalid("the checkpoint is not of the last entry".into()));
    }
    let mut out = header(node, key);
    for e in entries {
        out.push_str(&e.to_json()?);
        out.push('\n');
    }
    out.push_str(&format!("{{\"checkpoint\":{}}}\n", checkpoint.to_json()));
    Ok(out.into_bytes())
}

fn header(node: &str, key: &VerifyingKey) -> String {
    let mut s = format!("{{\"format\":\"{EXPORT_FORMAT}\",\"version\":{EXPORT_VERSION},\"node\":");
    json_string(node, &mut s);
    s.push_str(&format!(",\"public_key\":\"{}\"}}\n", hex(key.as_bytes())));
    s
}

/// Verify an export. With `expected_key`, the file must be signed by it;
/// without, the key found is returned in [`ExportSummary::public_key`] for the
/// auditor to compare with the node's published key. Never panics.
pub fn verify_export(bytes: &[u8], expected_key: Option<&VerifyingKey>) -> Result<ExportSummary, AuditError> {
    let bad = |line: usize, reason: &str| AuditError::Export { line, reason: reason.to_owned() };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count();
        bad(line, "not UTF-8")
    })?;
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    if !text.ends_with('\n') {
        return Err(bad(lines.len().max(1), "the file does not end with a newline"));
    }
    if lines.len() < 3 {
        return Err(bad(lines.len() + 1, "an export has a header, at least one entry and a trailer"));
    }
    let last = lines.len();

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Header {
        format: String,
        version: u64,
        node: String,
        public_key: String,
    }
    let h: Header = serde_json::from_str(lines[0]).map_err(|e| bad(1, &format!("not a header: {e}")))?;
    if h.format != EXPORT_FORMAT {
        return Err(bad(1, &format!("format is not {EXPORT_FORMAT:?}")));
    }
    if h.version != EXPORT_VERSION {
        return Err(bad(1, &format!("unsupported version {}", h.version)));
    }
    let key = unhex_key(&h.public_key).ok_or_else(|| bad(1, "public_key is not an Ed25519 key in lower-case hex"))?;
    if format!("{}\n", lines[0]) != header(&h.node, &key) {
        return Err(bad(1, "header not in canonical form"));
    }
    if let Some(expected) = expected_key.filter(|k| **k != key) {
        return Err(AuditError::KeyMismatch { expected: hex(expected.as_bytes()), found: h.public_key });
    }

    let entries =
        (2..last).map(|n| Entry::from_json(lines[n - 1]).map_err(|e| bad(n, &e))).collect::<Result<Vec<_>, _>>()?;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Trailer {
        checkpoint: Value,
    }
    let trailer = lines[last - 1];
    let t: Trailer = serde_json::from_str(trailer).map_err(|e| bad(last, &format!("not a trailer: {e}")))?;
    let checkpoint = checkpoint_of(t.checkpoint).map_err(|e| bad(last, &e))?;
    if format!("{{\"checkpoint\":{}}}", checkpoint.to_json()) != trailer {
        return Err(bad(last, "trailer not in canonical form"));
    }

    let summary = verify_with_checkpoints(&entries, &key, std::slice::from_ref(&checkpoint))?;
    if summary.node.as_deref() != Some(h.node.as_str()) {
        return Err(bad(1, "the header names another node than the entries"));
    }
    if summary.len != checkpoint.seq + 1 {
        return Err(bad(last, "the checkpoint is not of the last entry"));
    }
    Ok(ExportSummary { node: h.node, public_key: h.public_key, entries, checkpoint })
}
