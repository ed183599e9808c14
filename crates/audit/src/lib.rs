//! # concord-audit: the node's append-only, hash-chained, signed audit log
//!
//! Pure logic, no I/O: the node stores entries (their fields, or the line of
//! [`Entry::to_json`]) in its SQLite store and calls these functions.
//!
//! - [`append`] makes entry `n + 1` from entry `n`: its `prev_hash` is entry
//!   `n`'s hash (entry 0's is [`genesis_hash`] of the node's key, so chains of
//!   two nodes can never be spliced), its `hash` is SHA-256 over a canonical,
//!   domain-separated, length-prefixed encoding of every other field (body
//!   included, as canonical JSON), and its signature is Ed25519 (RFC 8032) over
//!   that hash. The byte encoding is specified in `NOTES.md`.
//! - [`verify`] checks a whole chain and names the first entry that was edited,
//!   removed, reordered, spliced from another chain or not signed by the key.
//! - The tail of a chain can be cut off without trace in the entries, so the
//!   node signs [`Checkpoint`]s of its head, keeps the newest in a head file and
//!   hands them to peers, who keep the newest they saw;
//!   [`verify_with_checkpoints`] reports truncation (a checkpoint beyond the
//!   end) and rewriting (a checkpoint whose hash differs from the chain's).
//! - [`export`] writes a portable JSON-lines file that an auditor checks
//!   without the node ([`verify_export`]); [`cross_check`] compares what several
//!   nodes logged about one session.
//!
//! This is the simple hash chain of Schneier and Kelsey, "Secure audit logs to
//! support computer forensics" (ACM TISSEC 2(2), 1999), with signatures instead
//! of evolving MAC keys, and truncation caught by checkpoints held by others, as
//! in the witnessed commitments of Crosby and Wallach, "Efficient data
//! structures for tamper-evident logging" (USENIX Security 2009); their history
//! tree (logarithmic proofs of consistency) is not used: logs here are small
//! enough to check whole.
//!
//! What it does not do: a node holding its key can rewrite its whole log before
//! it has handed out any checkpoint, and can log lies; the log makes later
//! changes evident, it does not make the first write true. [`cross_check`]
//! catches a node whose account of a session differs from the others'.

use std::fmt::Write as _;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

mod cross;
mod export;

pub use cross::{cross_check, CrossCheck, AGREED_FIELDS, FINAL_KIND, STATE_FIELD};
pub use export::{export, verify_export, ExportSummary, EXPORT_FORMAT, EXPORT_VERSION};

/// Domain tag of the genesis hash.
pub const TAG_GENESIS: &[u8] = b"concord-audit/v1/genesis\0";
/// Domain tag of an entry's hash.
pub const TAG_ENTRY: &[u8] = b"concord-audit/v1/entry\0";
/// Domain tag of the message signed for an entry (tag, then the entry's hash).
pub const TAG_ENTRY_SIGNATURE: &[u8] = b"concord-audit/v1/entry-signature\0";
/// Domain tag of the message signed for a checkpoint.
pub const TAG_CHECKPOINT: &[u8] = b"concord-audit/v1/checkpoint\0";
/// Deepest nesting of arrays and objects in a body (the body itself is depth 1).
pub const MAX_BODY_DEPTH: usize = 32;

/// Errors of the audit log. Those about one entry name its `seq`
/// ([`AuditError::seq`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Bad input to [`append`], [`Checkpoint::sign`], [`export`] or [`cross_check`].
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A field out of its domain (kind, node name, session id, body).
    #[error("entry {seq}: malformed: {reason}")]
    Malformed {
        /// The entry.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// An entry's seq is beyond its position: entries before it are missing.
    #[error(
        "entry at position {position} has seq {found}, expected {position}: entries {position}..{found} were removed"
    )]
    Missing {
        /// Where the entry sits (the seq it should have).
        position: u64,
        /// Its seq.
        found: u64,
    },
    /// An entry's seq does not match its position and no entry is missing.
    #[error("entry at position {position} has seq {found}, expected {position}: entries were reordered or duplicated")]
    Reordered {
        /// Where the entry sits (the seq it should have).
        position: u64,
        /// Its seq.
        found: u64,
    },
    /// The stored hash is not the hash of the entry's fields.
    #[error("entry {seq}: hash mismatch: the entry was edited")]
    HashMismatch {
        /// The entry.
        seq: u64,
    },
    /// The signature does not verify under the node's key.
    #[error("entry {seq}: signature does not verify under the node's key (forged, or from another node's chain)")]
    BadSignature {
        /// The entry.
        seq: u64,
    },
    /// Entry 0 does not start from this key's genesis hash.
    #[error("entry 0: previous hash is not the genesis of this key: the chain is another node's")]
    GenesisMismatch,
    /// An entry's previous hash is not the hash of the entry before it.
    #[error("entry {seq}: previous hash does not match entry {}: an entry was removed, replaced or spliced", seq.saturating_sub(1))]
    PrevHashMismatch {
        /// The entry (at least 1).
        seq: u64,
    },
    /// An entry names another node than entry 0.
    #[error("entry {seq}: node {found:?}, but the chain is {expected:?}'s")]
    NodeMismatch {
        /// The entry.
        seq: u64,
        /// The chain's node (entry 0's).
        expected: String,
        /// This entry's node.
        found: String,
    },
    /// A checkpoint whose signature does not verify under the node's key.
    #[error("checkpoint of seq {seq}: signature does not verify under the node's key (forged, or another node's)")]
    CheckpointSignature {
        /// The seq it claims.
        seq: u64,
    },
    /// A checkpoint naming another node than the chain's.
    #[error("checkpoint of seq {seq} names node {found:?}, but the chain is {expected:?}'s")]
    CheckpointNode {
        /// The seq it claims.
        seq: u64,
        /// The chain's node.
        expected: String,
        /// The checkpoint's node.
        found: String,
    },
    /// A valid checkpoint vouches for an entry beyond the end of the chain.
    #[error("log truncated: a checkpoint vouches for entry {checkpoint_seq}, the log has {len} entries")]
    Truncated {
        /// The checkpoint's seq.
        checkpoint_seq: u64,
        /// Number of entries in the chain.
        len: u64,
    },
    /// A valid checkpoint's head hash differs from the chain's entry at its seq.
    #[error("log rewritten: entry {seq} differs from the node's signed checkpoint of it (fork)")]
    Forked {
        /// The entry.
        seq: u64,
    },
    /// A malformed export file (1-based line).
    #[error("export line {line}: {reason}")]
    Export {
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// An export signed by another key than the expected one.
    #[error("export is signed by key {found}, expected {expected}")]
    KeyMismatch {
        /// The expected key, hex.
        expected: String,
        /// The export's key, hex.
        found: String,
    },
    /// Nodes disagree on a session.
    #[error("session {session:?}: node {node:?} disagrees on {field}: {reason}")]
    Disagreement {
        /// The session.
        session: String,
        /// The node that disagrees.
        node: String,
        /// The field.
        field: String,
        /// How.
        reason: String,
    },
}

impl AuditError {
    /// The seq of the entry this error is about, if any (for [`AuditError::Missing`]
    /// and [`AuditError::Reordered`], the position: the seq expected there).
    pub fn seq(&self) -> Option<u64> {
        match self {
            AuditError::Malformed { seq, .. }
            | AuditError::HashMismatch { seq }
            | AuditError::BadSignature { seq }
            | AuditError::PrevHashMismatch { seq }
            | AuditError::NodeMismatch { seq, .. }
            | AuditError::Forked { seq } => Some(*seq),
            AuditError::Missing { position, .. } | AuditError::Reordered { position, .. } => Some(*position),
            AuditError::GenesisMismatch => Some(0),
            _ => None,
        }
    }
}

/// What the node records; [`append`] adds the chaining and the signature.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Time, ms since the Unix epoch.
    pub time_ms: u64,
    /// Kind, `[a-z0-9._-]{1,64}`: `request.received`, `policy.decision`,
    /// `approval`, `veto`, `session.started`, `session.finished`,
    /// `result.revealed`, `peer.paired`, `peer.removed`, `policy.changed`,
    /// `budget.spent`, or any other.
    pub kind: String,
    /// The session it is about, if any.
    pub session: Option<String>,
    /// Details: a JSON object whose numbers are integers (write fractions,
    /// such as privacy budgets, as decimal strings), nested at most
    /// [`MAX_BODY_DEPTH`] deep.
    pub body: Value,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the chain, from 0.
    pub seq: u64,
    /// Time, ms since the Unix epoch (not required to increase: clocks step back).
    pub time_ms: u64,
    /// The node's name.
    pub node: String,
    /// Kind (see [`Record::kind`]).
    pub kind: String,
    /// The session it is about, if any.
    pub session: Option<String>,
    /// Details (see [`Record::body`]).
    pub body: Value,
    /// Hash of the previous entry, or [`genesis_hash`] for entry 0.
    pub prev_hash: [u8; 32],
    /// SHA-256 of the entry's encoding (`NOTES.md`).
    pub hash: [u8; 32],
    /// Ed25519 signature of [`TAG_ENTRY_SIGNATURE`] followed by `hash`.
    pub signature: [u8; 64],
}

/// A node's signed statement that its chain has entry `seq` with hash `head_hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The node's name.
    pub node: String,
    /// Seq of the head entry.
    pub seq: u64,
    /// Hash of the head entry.
    pub head_hash: [u8; 32],
    /// When it was signed, ms since the Unix epoch.
    pub time_ms: u64,
    /// Ed25519 signature of [`Checkpoint::message`].
    pub signature: [u8; 64],
}

/// What a verified chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    /// The node (entry 0's), `None` for an empty chain.
    pub node: Option<String>,
    /// Number of entries.
    pub len: u64,
    /// Hash of the last entry ([`genesis_hash`] for an empty chain).
    pub head_hash: [u8; 32],
    /// Highest seq vouched for by a checkpoint, if any were given.
    pub witnessed_seq: Option<u64>,
}

/// The `prev_hash` of entry 0: SHA-256 of [`TAG_GENESIS`] and the node's public key.
pub fn genesis_hash(key: &VerifyingKey) -> [u8; 32] {
    Sha256::new().chain_update(TAG_GENESIS).chain_update(key.as_bytes()).finalize().into()
}

/// Sign `record` as the entry after `prev` (`None`: the first entry).
///
/// Refuses a `prev` of another node, or one that does not verify under `key`
/// (a corrupted store), so a chain is never extended from a bad entry.
pub fn append(prev: Option<&Entry>, node: &str, record: Record, key: &SigningKey) -> Result<Entry, AuditError> {
    let (seq, prev_hash) = match prev {
        None => (0, genesis_hash(&key.verifying_key())),
        Some(p) => {
            if p.node != node {
                return Err(AuditError::Invalid(format!("previous entry is node {:?}'s, not {node:?}'s", p.node)));
            }
            p.check(&key.verifying_key())
                .map_err(|e| AuditError::Invalid(format!("previous entry does not verify: {e}")))?;
            let seq = p.seq.checked_add(1).ok_or_else(|| AuditError::Invalid("seq overflow".into()))?;
            (seq, p.hash)
        }
    };
    let Record { time_ms, kind, session, body } = record;
    let mut entry = Entry {
        seq,
        time_ms,
        node: node.to_owned(),
        kind,
        session,
        body,
        prev_hash,
        hash: [0; 32],
        signature: [0; 64],
    };
    entry.hash = entry.compute_hash().map_err(|e| AuditError::Invalid(e.to_string()))?;
    entry.signature = key.sign(&entry_message(&entry.hash)).to_bytes();
    Ok(entry)
}

/// Verify a whole chain (from entry 0) under the node's key; the error names
/// the first bad entry.
///
/// Per entry, in this order: its seq is its position, its fields are valid, its
/// hash is the hash of its fields, entry 0 starts from the key's genesis, the
/// signature verifies, its `prev_hash` is the previous entry's hash, and it
/// names the same node as entry 0.
pub fn verify(entries: &[Entry], key: &VerifyingKey) -> Result<ChainSummary, AuditError> {
    let genesis = genesis_hash(key);
    let mut head = genesis;
    let chain_node = entries.first().map_or("", |e| e.node.as_str());
    for (position, entry) in (0u64..).zip(entries) {
        if entry.seq != position {
            let removed = entry.seq > position && !entries.iter().any(|e| e.seq == position);
            return Err(if removed {
                AuditError::Missing { position, found: entry.seq }
            } else {
                AuditError::Reordered { position, found: entry.seq }
            });
        }
        if entry.compute_hash()? != entry.hash {
            return Err(AuditError::HashMismatch { seq: position });
        }
        if position == 0 && entry.prev_hash != genesis {
            return Err(AuditError::GenesisMismatch);
        }
        entry.check_signature(key)?;
        if entry.prev_hash != head {
            return Err(AuditError::PrevHashMismatch { seq: position });
        }
        if entry.node != chain_node {
            return Err(AuditError::NodeMismatch {
                seq: position,
                expected: chain_node.to_owned(),
                found: entry.node.clone(),
            });
        }
        head = entry.hash;
    }
    Ok(ChainSummary {
        node: entries.first().map(|e| e.node.clone()),
        len: entries.len() as u64,
        head_hash: head,
        witnessed_seq: None,
    })
}

/// [`verify`], then check the node's checkpoints (from its head file, or kept
/// by peers): each must verify under the key, name the chain's node, lie
/// within the chain ([`AuditError::Truncated`] otherwise) and match the
/// chain's hash at its seq ([`AuditError::Forked`] otherwise).
pub fn verify_with_checkpoints(
    entries: &[Entry],
    key: &VerifyingKey,
    checkpoints: &[Checkpoint],
) -> Result<ChainSummary, AuditError> {
    let mut summary = verify(entries, key)?;
    for cp in checkpoints {
        cp.verify(key)?;
    }
    for cp in checkpoints {
        if let Some(node) = summary.node.as_ref().filter(|n| **n != cp.node) {
            return Err(AuditError::CheckpointNode { seq: cp.seq, expected: node.clone(), found: cp.node.clone() });
        }
        match usize::try_from(cp.seq).ok().and_then(|i| entries.get(i)) {
            None => return Err(AuditError::Truncated { checkpoint_seq: cp.seq, len: summary.len }),
            Some(e) if e.hash != cp.head_hash => return Err(AuditError::Forked { seq: cp.seq }),
            Some(_) => summary.witnessed_seq = summary.witnessed_seq.max(Some(cp.seq)),
        }
    }
    Ok(summary)
}

impl Entry {
    /// SHA-256 of the entry's encoding (every field but `hash` and `signature`);
    /// [`AuditError::Malformed`] if a field is out of its domain.
    pub fn compute_hash(&self) -> Result<[u8; 32], AuditError> {
        let malformed = |reason: String| AuditError::Malformed { seq: self.seq, reason };
        check_name(&self.node).map_err(|e| malformed(format!("node name {e}")))?;
        check_kind(&self.kind).map_err(|e| malformed(format!("kind {e}")))?;
        if let Some(s) = &self.session {
            check_session(s).map_err(|e| malformed(format!("session id {e}")))?;
        }
        let body = canonical_body(&self.body).map_err(|e| malformed(format!("body {e}")))?;
        let mut h = Sha256::new();
        h.update(TAG_ENTRY);
        h.update(self.seq.to_be_bytes());
        h.update(self.time_ms.to_be_bytes());
        length_prefixed(&mut h, self.node.as_bytes());
        length_prefixed(&mut h, self.kind.as_bytes());
        match &self.session {
            None => h.update([0]),
            Some(s) => {
                h.update([1]);
                length_prefixed(&mut h, s.as_bytes());
            }
        }
        length_prefixed(&mut h, body.as_bytes());
        h.update(self.prev_hash);
        Ok(h.finalize().into())
    }

    fn check_signature(&self, key: &VerifyingKey) -> Result<(), AuditError> {
        key.verify_strict(&entry_message(&self.hash), &Signature::from_bytes(&self.signature))
            .map_err(|_| AuditError::BadSignature { seq: self.seq })
    }

    /// This entry alone: valid fields, hash and signature (not its links).
    fn check(&self, key: &VerifyingKey) -> Result<(), AuditError> {
        if self.compute_hash()? != self.hash {
            return Err(AuditError::HashMismatch { seq: self.seq });
        }
        self.check_signature(key)
    }

    /// The entry as one line of canonical JSON (no newline): the form of the
    /// export, and a form the node may store. Fails only on a malformed body.
    pub fn to_json(&self) -> Result<String, AuditError> {
        let body = canonical_body(&self.body).map_err(|e| AuditError::Malformed { seq: self.seq, reason: e })?;
        let mut s = format!("{{\"seq\":{},\"time_ms\":{},\"node\":", self.seq, self.time_ms);
        json_string(&self.node, &mut s);
        s.push_str(",\"kind\":");
        json_string(&self.kind, &mut s);
        s.push_str(",\"session\":");
        match &self.session {
            None => s.push_str("null"),
            Some(id) => json_string(id, &mut s),
        }
        let _ = write!(
            s,
            ",\"body\":{body},\"prev_hash\":\"{}\",\"hash\":\"{}\",\"signature\":\"{}\"}}",
            hex(&self.prev_hash),
            hex(&self.hash),
            hex(&self.signature)
        );
        Ok(s)
    }

    /// Parse [`Entry::to_json`]'s output; anything else (other spacing, key
    /// order, escapes, upper-case hex) is refused. Checks no hash or signature.
    pub fn from_json(line: &str) -> Result<Entry, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Line {
            seq: u64,
            time_ms: u64,
            node: String,
            kind: String,
            session: Option<String>,
            body: Value,
            prev_hash: String,
            hash: String,
            signature: String,
        }
        let l: Line = serde_json::from_str(line).map_err(|e| format!("not an entry: {e}"))?;
        let entry = Entry {
            seq: l.seq,
            time_ms: l.time_ms,
            node: l.node,
            kind: l.kind,
            session: l.session,
            body: l.body,
            prev_hash: unhex_array(&l.prev_hash).ok_or("prev_hash is not 64 lower-case hex digits")?,
            hash: unhex_array(&l.hash).ok_or("hash is not 64 lower-case hex digits")?,
            signature: unhex_array(&l.signature).ok_or("signature is not 128 lower-case hex digits")?,
        };
        match entry.to_json() {
            Ok(canonical) if canonical == line => Ok(entry),
            Ok(_) => Err("entry not in canonical form".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Checkpoint {
    /// The node signs a checkpoint of its head entry.
    pub fn sign(head: &Entry, time_ms: u64, key: &SigningKey) -> Checkpoint {
        let mut cp =
            Checkpoint { node: head.node.clone(), seq: head.seq, head_hash: head.hash, time_ms, signature: [0; 64] };
        cp.signature = key.sign(&cp.message()).to_bytes();
        cp
    }

    /// What is signed: [`TAG_CHECKPOINT`], the node name (u64 big-endian length,
    /// then its bytes), `seq` (u64 big-endian), `head_hash`, `time_ms` (u64 big-endian).
    pub fn message(&self) -> Vec<u8> {
        let mut m = TAG_CHECKPOINT.to_vec();
        m.extend_from_slice(&(self.node.len() as u64).to_be_bytes());
        m.extend_from_slice(self.node.as_bytes());
        m.extend_from_slice(&self.seq.to_be_bytes());
        m.extend_from_slice(&self.head_hash);
        m.extend_from_slice(&self.time_ms.to_be_bytes());
        m
    }

    /// Check the signature under the node's key.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), AuditError> {
        key.verify_strict(&self.message(), &Signature::from_bytes(&self.signature))
            .map_err(|_| AuditError::CheckpointSignature { seq: self.seq })
    }

    /// The checkpoint as one line of canonical JSON (for the head file and peers).
    pub fn to_json(&self) -> String {
        let mut s = String::from("{\"node\":");
        json_string(&self.node, &mut s);
        let _ = write!(
            s,
            ",\"seq\":{},\"head_hash\":\"{}\",\"time_ms\":{},\"signature\":\"{}\"}}",
            self.seq,
            hex(&self.head_hash),
            self.time_ms,
            hex(&self.signature)
        );
        s
    }

    /// A checkpoint from its JSON object in any key order (as served by a peer's
    /// API); strict about fields and their forms; checks no signature.
    pub fn from_value(value: Value) -> Result<Checkpoint, String> {
        checkpoint_of(value)
    }

    /// Parse [`Checkpoint::to_json`]'s output, strictly; checks no signature.
    pub fn from_json(line: &str) -> Result<Checkpoint, String> {
        let value: Value = serde_json::from_str(line).map_err(|e| format!("not a checkpoint: {e}"))?;
        let cp = checkpoint_of(value)?;
        if cp.to_json() != line {
            return Err("checkpoint not in canonical form".into());
        }
        Ok(cp)
    }
}

/// A checkpoint from its parsed JSON object.
pub(crate) fn checkpoint_of(value: Value) -> Result<Checkpoint, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        node: String,
        seq: u64,
        head_hash: String,
        time_ms: u64,
        signature: String,
    }
    let l = Line::deserialize(value).map_err(|e| format!("not a checkpoint: {e}"))?;
    Ok(Checkpoint {
        node: l.node,
        seq: l.seq,
        head_hash: unhex_array(&l.head_hash).ok_or("head_hash is not 64 lower-case hex digits")?,
        time_ms: l.time_ms,
        signature: unhex_array(&l.signature).ok_or("signature is not 128 lower-case hex digits")?,
    })
}

fn entry_message(hash: &[u8; 32]) -> Vec<u8> {
    [TAG_ENTRY_SIGNATURE, hash.as_slice()].concat()
}

fn length_prefixed(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// A node name: 1 to 64 ASCII letters, digits, `-`, `_`, `.`, not starting
/// with `.` or `-` (the node's own rule).
fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not 1 to 64 of [A-Za-z0-9._-], starting with a letter, digit or '_'"))
    }
}

fn check_kind(kind: &str) -> Result<(), String> {
    if (1..=64).contains(&kind.len())
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        Ok(())
    } else {
        Err(format!("{kind:?} is not 1 to 64 of [a-z0-9._-]"))
    }
}

fn check_session(id: &str) -> Result<(), String> {
    if (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)) {
        Ok(())
    } else {
        Err(format!("{id:?} is not 1 to 128 of [A-Za-z0-9._:-]"))
    }
}

/// The body's canonical JSON (`NOTES.md`): an object, keys sorted by their
/// UTF-8 bytes, no white space, integers only, fixed string escapes.
pub fn canonical_body(body: &Value) -> Result<String, String> {
    if !body.is_object() {
        return Err("is not a JSON object".into());
    }
    let mut out = String::new();
    canonical(body, 1, &mut out)?;
    Ok(out)
}

fn canonical(value: &Value, depth: usize, out: &mut String) -> Result<(), String> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => {
                let _ = write!(out, "{i}");
            }
            (None, Some(u)) => {
                let _ = write!(out, "{u}");
            }
            _ => return Err(format!("holds the non-integer {n}: write fractions as decimal strings")),
        },
        Value::String(s) => json_string(s, out),
        Value::Array(_) | Value::Object(_) if depth > MAX_BODY_DEPTH => {
            return Err(format!("is nested deeper than {MAX_BODY_DEPTH}"));
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, depth + 1, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut fields: Vec<_> = map.iter().collect();
            fields.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(k, out);
                out.push(':');
                canonical(v, depth + 1, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// A JSON string: `"` and `\` escaped with `\`; U+0008, U+0009, U+000A, U+000C,
/// U+000D as `\b \t \n \f \r`; other characters below U+0020 as `\u00xx`
/// (lower-case hex); everything else as itself (UTF-8).
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Exactly `2 * N` lower-case hex digits (the one form [`hex`] writes).
fn unhex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        *o = digit(*pair.first()?)? << 4 | digit(*pair.get(1)?)?;
    }
    Some(out)
}

pub(crate) fn unhex_key(text: &str) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(&unhex_array(text)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_body_sorts_keys_escapes_and_refuses_floats() {
        let body = json!({"b": [1, -2, u64::MAX], "a": "q\"\\\n\u{1}\u{7f}é", "é": null, "Z": {"y": true, "x": false}});
        assert_eq!(
            canonical_body(&body).unwrap(),
            "{\"Z\":{\"x\":false,\"y\":true},\"a\":\"q\\\"\\\\\\n\\u0001\u{7f}é\",\"b\":[1,-2,18446744073709551615],\"é\":null}"
        );
        assert!(canonical_body(&json!({"rho": 0.5})).unwrap_err().contains("non-integer"));
        assert!(canonical_body(&json!([1])).is_err());
        let mut deep = json!(1);
        for _ in 0..MAX_BODY_DEPTH {
            deep = json!({ "d": deep });
        }
        assert!(canonical_body(&deep).is_ok());
        assert!(canonical_body(&json!({ "d": deep })).unwrap_err().contains("deeper"));
    }

    #[test]
    fn canonical_strings_parse_back() {
        let s: String = (0u32..0x300).filter_map(char::from_u32).collect();
        let mut out = String::new();
        json_string(&s, &mut out);
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
        assert_eq!(out, serde_json::to_string(&s).unwrap());
    }

    #[test]
    fn field_domains() {
        assert!(check_kind("session.finished").is_ok() && check_kind("budget_2-x").is_ok());
        for bad in ["", "Approval", "a b", "é", &"a".repeat(65)] {
            assert!(check_kind(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("node-a.example").is_ok() && check_name(".a").is_err() && check_name("").is_err());
        assert!(check_session(&"0f".repeat(16)).is_ok() && check_session("a/b").is_err());
    }

    #[test]
    fn hex_is_strict() {
        assert_eq!(unhex_array::<2>("0aff"), Some([10, 255]));
        assert_eq!(unhex_array::<2>("0AFF"), None);
        assert_eq!(unhex_array::<2>("0af"), None);
        assert_eq!(unhex_array::<1>("+f"), None);
        assert_eq!(hex(&[10, 255]), "0aff");
    }
}
