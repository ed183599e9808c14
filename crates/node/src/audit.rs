//! The node's tamper-evident audit log (issue 6, part 5 "Accountability").
//!
//! The log itself (hash chain, Ed25519 signatures, checkpoints, export,
//! cross-checks) is the pure crate `concord-audit`; this module wires it into
//! the store:
//!
//! - **Every event is an entry.** Once a store has an auditor
//!   ([`Store::set_auditor`]: the node's name and Ed25519 signing key), every
//!   event recorded in a write transaction is appended to the table
//!   `audit_log` as a signed entry chained to the previous one, in the same
//!   transaction (kind = the event's kind, body `{"message": ..}` plus the
//!   structured fields the store gives: session, dataset, peer, analyst, ...).
//!   The first entry is `audit.started`, which counts the events recorded
//!   before the log existed (`unaudited_events`). Structured entries for
//!   cross-checks: `session.accepted` (`plan_hash`, `parties`, `dataset`,
//!   `analyst`, `coordinator`) when a session is stored, `session.finished`
//!   (`state`, `reason`) when it ends, `result.revealed` when the coordinator
//!   stores a sealed result share, `session.refused` when a proposal is
//!   refused; and [`Store::audit`] for any other.
//! - **The head is signed outside the database.** After each commit the
//!   node signs a [`Checkpoint`] of the last entry and writes it to
//!   `<data_dir>/audit.head` (temporary file, fsync, rename; a lock file
//!   keeps concurrent writers, e.g. the CLI next to a running node, from
//!   moving it backwards). A log cut short below that checkpoint no longer
//!   verifies ([`AuditError::Truncated`]).
//! - **Writes are refused rather than left unaudited.** A store whose log has
//!   entries refuses writes without an auditor ([`NodeError::AuditorRequired`]):
//!   an unaudited write would be a gap no verifier could see. A store whose
//!   log is empty (never opened with the key: tests, tools) writes without
//!   auditing, and the first audited write records how many events came
//!   before. Before appending, the store also checks the head file against
//!   the log and refuses to write over a truncated or rewritten log, so the
//!   node never hides the evidence by moving the head forward.
//!   `concord audit verify --rewrite-head` re-signs the head of a log that
//!   verifies on its own (after a crash right after the first write, or a
//!   restored backup), and logs that it did.
//!
//! What an attacker holding the signing key can do, and what peers and
//! auditors holding checkpoints or exports then still detect, is in
//! docs/THREAT_MODEL.md ("Audit log").

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use concord_audit::{AuditError, Checkpoint, Entry, Record};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::dashboard::AuditView;
use crate::server::AppState;
use crate::service::SessionPlan;
use crate::store::Store;
use crate::{hex, unix_now_ms, NodeError};

/// File name of the signed head checkpoint, in the store's directory.
pub const HEAD_FILE: &str = "audit.head";
/// Kind of the first entry of every log.
pub const STARTED: &str = "audit.started";
/// Kind of the entry recording that the head was re-signed by the operator.
pub const HEAD_REWRITTEN: &str = "audit.head_rewritten";
/// Kind of the entry of a session accepted (coordinator: created) by this node.
pub const SESSION_ACCEPTED: &str = "session.accepted";
/// Kind of the entry of a proposal this node refused.
pub const SESSION_REFUSED: &str = "session.refused";
/// Kind of the entry of a sealed result share the coordinator stored for the analyst.
pub const RESULT_REVEALED: &str = "result.revealed";
/// Kind given to an event whose own kind is not `[a-z0-9._-]{1,64}` (the
/// original kind is in the body's `event_kind`).
pub const OTHER_EVENT: &str = "event";

/// Signs the store's audit entries and head: the node's name and Ed25519
/// signing key. `Debug` never shows the key.
pub struct Auditor {
    name: String,
    key: SigningKey,
    head: Option<PathBuf>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("name", &self.name)
            .field("public_key", &hex(self.key.verifying_key().as_bytes()))
            .field("key", &"[REDACTED]")
            .field("head", &self.head)
            .finish()
    }
}

/// An audit record waiting for its transaction's commit.
#[derive(Debug)]
pub(crate) struct Pending {
    kind: String,
    session: Option<String>,
    body: Value,
    /// It records a row of `events` (counted in `audit.started`).
    from_event: bool,
}

impl Pending {
    /// A structured record.
    pub(crate) fn new(kind: &str, session: Option<&str>, body: Value) -> Pending {
        Pending { kind: kind.to_owned(), session: session.map(str::to_owned), body, from_event: false }
    }

    /// The record of an event: its kind (or [`OTHER_EVENT`] if it is not a
    /// valid audit kind), body `{"message": ..}` and the members of `fields`.
    pub(crate) fn event(kind: &str, message: &str, session: Option<&str>, fields: Value) -> Pending {
        let mut body = Map::new();
        body.insert("message".into(), Value::String(message.to_owned()));
        if let Value::Object(fields) = fields {
            body.extend(fields);
        }
        let kind = if valid_kind(kind) {
            kind.to_owned()
        } else {
            body.insert("event_kind".into(), Value::String(kind.to_owned()));
            OTHER_EVENT.to_owned()
        };
        // A session id out of the audit domain stays in the body rather than failing the write.
        let session = match session {
            Some(s) if valid_session(s) => Some(s.to_owned()),
            Some(s) => {
                body.insert("session_id".into(), Value::String(s.to_owned()));
                None
            }
            None => None,
        };
        Pending { kind, session, body: Value::Object(body), from_event: true }
    }
}

fn valid_kind(kind: &str) -> bool {
    (1..=64).contains(&kind.len())
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn valid_session(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

fn now_ms() -> u64 {
    u64::try_from(unix_now_ms()).unwrap_or(0)
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Number of entries in the log.
fn log_len(conn: &Connection, path: &Path) -> Result<u64, NodeError> {
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))
        .map_err(|source| NodeError::Store { path: path.to_owned(), source })?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Parse a stored entry; a bad one is [`AuditError::Malformed`] naming its row.
fn parse_row(path: &Path, seq: i64, text: &str) -> Result<Entry, NodeError> {
    Entry::from_json(text).map_err(|reason| NodeError::AuditChain {
        path: path.to_owned(),
        source: AuditError::Malformed { seq: u64::try_from(seq).unwrap_or(0), reason },
    })
}

/// The entry with the highest seq.
fn last_entry(conn: &Connection, path: &Path) -> Result<Option<Entry>, NodeError> {
    let row: Option<(i64, String)> = conn
        .query_row("SELECT seq, entry FROM audit_log ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(|source| NodeError::Store { path: path.to_owned(), source })?;
    row.map(|(seq, text)| parse_row(path, seq, &text)).transpose()
}

/// The entry stored at row `seq`.
fn entry_at(conn: &Connection, path: &Path, seq: u64) -> Result<Option<Entry>, NodeError> {
    let Ok(seq) = i64::try_from(seq) else { return Ok(None) };
    let text: Option<String> = conn
        .query_row("SELECT entry FROM audit_log WHERE seq = ?1", [seq], |r| r.get(0))
        .optional()
        .map_err(|source| NodeError::Store { path: path.to_owned(), source })?;
    text.map(|t| parse_row(path, seq, &t)).transpose()
}

/// Read a head file: `None` if there is none.
pub fn read_head(path: &Path) -> Result<Option<Checkpoint>, NodeError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NodeError::io(path, e)),
    };
    let line = text.strip_suffix('\n').unwrap_or(&text);
    Checkpoint::from_json(line)
        .map(Some)
        .map_err(|e| NodeError::Audit { path: path.to_owned(), reason: format!("not a signed checkpoint: {e}") })
}

/// Append the audit entries of a transaction's `pending` records (called by
/// the store just before the commit). Returns the new head, `None` if
/// nothing was appended.
pub(crate) fn append_pending(
    conn: &Connection,
    auditor: Option<&Auditor>,
    path: &Path,
    pending: Vec<Pending>,
) -> Result<Option<Entry>, NodeError> {
    if pending.is_empty() {
        return Ok(None);
    }
    let Some(auditor) = auditor else {
        if log_len(conn, path)? > 0 {
            return Err(NodeError::AuditorRequired { path: path.to_owned() });
        }
        return Ok(None); // an unaudited store (no log yet)
    };
    let prev = last_entry(conn, path)?;
    auditor.check_head(conn, path, prev.as_ref())?;
    auditor.append_all(conn, path, prev, pending)
}

impl Auditor {
    fn new(name: &str, key: SigningKey, store_path: &Path) -> Auditor {
        let head = (store_path != Path::new(":memory:"))
            .then(|| store_path.parent().unwrap_or(Path::new(".")).join(HEAD_FILE));
        Auditor { name: name.to_owned(), key, head }
    }

    /// The head file, `None` for an in-memory store.
    pub fn head_path(&self) -> Option<&Path> {
        self.head.as_deref()
    }

    fn append_all(
        &self,
        conn: &Connection,
        path: &Path,
        mut prev: Option<Entry>,
        pending: Vec<Pending>,
    ) -> Result<Option<Entry>, NodeError> {
        let mut records = Vec::with_capacity(pending.len() + 1);
        if prev.is_none() {
            let events: i64 = conn
                .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
                .map_err(|source| NodeError::Store { path: path.to_owned(), source })?;
            let in_this_write = pending.iter().filter(|p| p.from_event).count();
            let before = u64::try_from(events).unwrap_or(0).saturating_sub(in_this_write as u64);
            let body = json!({
                "message": format!("audit log of node {:?} started", self.name),
                "public_key": hex(self.key.verifying_key().as_bytes()),
                "unaudited_events": before,
            });
            records.push(Pending::new(STARTED, None, body));
        }
        records.extend(pending);
        let time_ms = now_ms();
        for p in records {
            let kind = p.kind.clone();
            let record = Record { time_ms, kind: p.kind, session: p.session, body: p.body };
            let entry = concord_audit::append(prev.as_ref(), &self.name, record, &self.key).map_err(|e| {
                NodeError::Audit { path: path.to_owned(), reason: format!("cannot append a {kind:?} entry: {e}") }
            })?;
            let line = entry.to_json().map_err(|source| NodeError::AuditChain { path: path.to_owned(), source })?;
            let seq = i64::try_from(entry.seq)
                .map_err(|_| NodeError::Audit { path: path.to_owned(), reason: "seq overflow".into() })?;
            conn.execute("INSERT INTO audit_log (seq, entry) VALUES (?1, ?2)", params![seq, line])
                .map_err(|source| NodeError::Store { path: path.to_owned(), source })?;
            prev = Some(entry);
        }
        Ok(prev)
    }

    /// Before appending: the head file must agree with the log (signed by this
    /// key, this node's, within the log, the same hash at its seq). Otherwise
    /// the log was truncated or rewritten, and appending (then moving the head
    /// forward) would erase the evidence: refused.
    fn check_head(&self, conn: &Connection, path: &Path, last: Option<&Entry>) -> Result<(), NodeError> {
        let Some(head_path) = &self.head else { return Ok(()) };
        let refuse = |what: String| NodeError::Audit {
            path: head_path.clone(),
            reason: format!(
                "{what}; audited writes are refused until this is resolved (run `concord audit verify`; \
                 `--rewrite-head` re-signs the head of a log that verifies)"
            ),
        };
        let cp = read_head(head_path).map_err(|e| refuse(e.to_string()))?;
        let (cp, last) = match (cp, last) {
            (None, None) => return Ok(()),
            (None, Some(l)) => {
                return Err(refuse(format!(
                    "the head file is missing, but the log has {} entries (deleted, or the node stopped right \
                     after its first audited write)",
                    l.seq.saturating_add(1)
                )))
            }
            (Some(cp), None) => {
                return Err(refuse(AuditError::Truncated { checkpoint_seq: cp.seq, len: 0 }.to_string()));
            }
            (Some(cp), Some(l)) => (cp, l),
        };
        cp.verify(&self.key.verifying_key()).map_err(|e| refuse(e.to_string()))?;
        if cp.node != self.name {
            let e = AuditError::CheckpointNode { seq: cp.seq, expected: self.name.clone(), found: cp.node };
            return Err(refuse(e.to_string()));
        }
        if cp.seq > last.seq {
            let e = AuditError::Truncated { checkpoint_seq: cp.seq, len: last.seq.saturating_add(1) };
            return Err(refuse(e.to_string()));
        }
        let at = if cp.seq == last.seq { Some(last.clone()) } else { entry_at(conn, path, cp.seq)? };
        if at.is_none_or(|e| e.hash != cp.head_hash) {
            return Err(refuse(AuditError::Forked { seq: cp.seq }.to_string()));
        }
        Ok(())
    }

    /// After a commit: sign the new head and write it, unless the head file
    /// already vouches for this entry or a later one. Errors are logged: the
    /// write itself is committed.
    pub(crate) fn advance_head(&self, head: &Entry) {
        let cp = Checkpoint::sign(head, now_ms(), &self.key);
        if let Err(e) = self.store_head(&cp, false) {
            tracing::error!(error = %e, seq = head.seq, "cannot write the audit head checkpoint");
        }
    }

    /// Write `cp` to the head file (temporary file, fsync, rename), under a
    /// lock file; unless `force`, only if it is newer than the file's.
    fn store_head(&self, cp: &Checkpoint, force: bool) -> Result<(), NodeError> {
        let Some(path) = &self.head else { return Ok(()) };
        let dir = path.parent().unwrap_or(Path::new("."));
        let lock_path = dir.join(format!("{HEAD_FILE}.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| NodeError::io(&lock_path, e))?;
        lock.lock().map_err(|e| NodeError::io(&lock_path, e))?;
        if !force {
            if let Some(old) = read_head(path)? {
                if old.seq >= cp.seq {
                    return Ok(());
                }
            }
        }
        let tmp = dir.join(format!("{HEAD_FILE}.tmp"));
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)
            .map_err(|e| NodeError::io(&tmp, e))?;
        f.write_all(format!("{}\n", cp.to_json()).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| NodeError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| NodeError::io(path, e))?;
        Ok(())
    }
}

/// A verified log: what `concord audit verify` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    /// The node named by the entries (`None`: empty log).
    pub node: Option<String>,
    /// Number of entries.
    pub entries: u64,
    /// Hash of the last entry.
    pub head_hash: [u8; 32],
    /// Time of the first entry and of the last, ms since the Unix epoch.
    pub time_range: Option<(u64, u64)>,
    /// The head file's checkpoint (verified).
    pub checkpoint: Option<Checkpoint>,
    /// Events recorded before the log started (from `audit.started`).
    pub unaudited_events: Option<u64>,
}

impl Store {
    /// Sign every write's audit entries with node `name`'s key from now on.
    /// Refuses a key or name other than those of the log's existing entries.
    pub fn set_auditor(&mut self, name: &str, key: SigningKey) -> Result<(), NodeError> {
        crate::config::check_name(name).map_err(|reason| NodeError::InvalidName { name: name.to_owned(), reason })?;
        let path = self.path.clone();
        if let Some(first) = entry_at(&self.conn, &path, 0)? {
            concord_audit::verify(std::slice::from_ref(&first), &key.verifying_key()).map_err(|e| {
                NodeError::Audit {
                    path: path.clone(),
                    reason: format!("the log was not started with this node's key ({e})"),
                }
            })?;
            if first.node != name {
                return Err(NodeError::Audit {
                    path,
                    reason: format!("the log is node {:?}'s, not {name:?}'s (was the node renamed?)", first.node),
                });
            }
        }
        self.auditor = Some(Auditor::new(name, key, &path));
        Ok(())
    }

    /// The auditor, if one is set.
    pub fn auditor(&self) -> Option<&Auditor> {
        self.auditor.as_ref()
    }

    /// The head file of this store's log (`<data_dir>/audit.head`), `None` in memory.
    pub fn audit_head_path(&self) -> Option<PathBuf> {
        (self.path != Path::new(":memory:")).then(|| self.path.parent().unwrap_or(Path::new(".")).join(HEAD_FILE))
    }

    /// Append a structured entry (`kind`: `[a-z0-9._-]{1,64}`; `body`: an
    /// object whose numbers are integers). Without an auditor, refused if the
    /// log has entries, and not recorded if it has none.
    pub fn audit(&mut self, kind: &str, session: Option<&str>, body: Value) -> Result<(), NodeError> {
        self.write(|tx| {
            tx.audit(Pending::new(kind, session, body));
            Ok(())
        })
    }

    /// Number of entries in the audit log.
    pub fn audit_len(&self) -> Result<u64, NodeError> {
        log_len(&self.conn, &self.path)
    }

    /// Every entry, by seq (a row that is not a canonical entry is an error naming its seq).
    pub fn audit_entries(&self) -> Result<Vec<Entry>, NodeError> {
        let sql = |source| NodeError::Store { path: self.path.clone(), source };
        let mut stmt = self.conn.prepare("SELECT seq, entry FROM audit_log ORDER BY seq").map_err(sql)?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))).map_err(sql)?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, text) = row.map_err(sql)?;
            out.push(parse_row(&self.path, seq, &text)?);
        }
        Ok(out)
    }

    /// The `limit` most recent rows (seq, stored entry), newest first, unparsed.
    pub fn recent_audit(&self, limit: usize) -> Result<Vec<(i64, String)>, NodeError> {
        let sql = |source| NodeError::Store { path: self.path.clone(), source };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare("SELECT seq, entry FROM audit_log ORDER BY seq DESC LIMIT ?1").map_err(sql)?;
        let rows = stmt.query_map([limit], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sql)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql)
    }

    /// The head file's checkpoint, if there is one (not verified).
    pub fn audit_head(&self) -> Result<Option<Checkpoint>, NodeError> {
        self.audit_head_path().map_or(Ok(None), |p| read_head(&p))
    }

    /// Verify the whole log under the node's public key and against the head
    /// file: the error names the entry and what is wrong (edited, removed,
    /// reordered, spliced from another chain, forged, truncated). A log with
    /// entries and no head file does not verify (truncation could not be ruled out).
    pub fn verify_audit(&self, key: &VerifyingKey) -> Result<AuditReport, NodeError> {
        // The head first: it is written only after its entries are committed, so
        // a write committed meanwhile (by a running node) cannot look like a truncation.
        let head_path = self.audit_head_path();
        let checkpoint = match &head_path {
            Some(p) => read_head(p)?,
            None => None,
        };
        let entries = self.audit_entries()?;
        if let (Some(p), None, false) = (&head_path, &checkpoint, entries.is_empty()) {
            return Err(NodeError::Audit {
                path: p.clone(),
                reason: format!(
                    "the head file is missing, but the log has {} entries: a truncation cannot be ruled out",
                    entries.len()
                ),
            });
        }
        let summary =
            concord_audit::verify_with_checkpoints(&entries, key, checkpoint.as_slice()).map_err(|source| {
                let path = match source {
                    AuditError::CheckpointSignature { .. } | AuditError::CheckpointNode { .. } => {
                        head_path.clone().unwrap_or_else(|| self.path.clone())
                    }
                    _ => self.path.clone(),
                };
                NodeError::AuditChain { path, source }
            })?;
        let time_range = entries.first().zip(entries.last()).map(|(a, b)| (a.time_ms, b.time_ms));
        let unaudited_events =
            entries.first().filter(|e| e.kind == STARTED).and_then(|e| e.body.get("unaudited_events")?.as_u64());
        Ok(AuditReport {
            node: summary.node,
            entries: summary.len,
            head_hash: summary.head_hash,
            time_range,
            checkpoint,
            unaudited_events,
        })
    }

    /// The portable export of the whole log (`concord_audit::export`), with a
    /// checkpoint of its last entry signed now (also written to the head
    /// file). Needs the auditor; the log must verify first.
    pub fn audit_export(&self) -> Result<Vec<u8>, NodeError> {
        let path = self.path.clone();
        let auditor = self.auditor.as_ref().ok_or_else(|| NodeError::AuditorRequired { path: path.clone() })?;
        let vk = auditor.key.verifying_key();
        self.verify_audit(&vk)?;
        let entries = self.audit_entries()?;
        let Some(last) = entries.last() else {
            return Err(NodeError::Audit { path, reason: "the log is empty: there is nothing to export".into() });
        };
        let cp = Checkpoint::sign(last, now_ms(), &auditor.key);
        auditor.store_head(&cp, false)?;
        concord_audit::export(&entries, &cp, &auditor.name, &vk)
            .map_err(|source| NodeError::AuditChain { path, source })
    }

    /// Re-sign the head after checking that the log verifies on its own
    /// (without the head file): for a head file lost in a crash right after
    /// the first audited write, or a store restored from a backup older than
    /// its head file. Appends an [`HEAD_REWRITTEN`] entry saying what the old
    /// head was, so the rewrite stays visible. Returns the new checkpoint.
    pub fn rewrite_audit_head(&mut self) -> Result<Checkpoint, NodeError> {
        let path = self.path.clone();
        let auditor = self.auditor.as_ref().ok_or_else(|| NodeError::AuditorRequired { path: path.clone() })?;
        let entries = self.audit_entries()?;
        concord_audit::verify(&entries, &auditor.key.verifying_key())
            .map_err(|source| NodeError::AuditChain { path: path.clone(), source })?;
        let previous = match self.audit_head() {
            Ok(Some(cp)) => json!({ "seq": cp.seq, "head_hash": hex(&cp.head_hash), "time_ms": cp.time_ms }),
            Ok(None) => json!("missing"),
            Err(e) => json!(format!("unreadable: {e}")),
        };
        let body = json!({
            "message": format!("the operator re-signed the audit head over {} verified entries", entries.len()),
            "previous_head": previous,
        });
        let sql = |source| NodeError::Store { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql)?;
        let head =
            auditor.append_all(&tx, &path, entries.last().cloned(), vec![Pending::new(HEAD_REWRITTEN, None, body)])?;
        tx.commit().map_err(sql)?;
        let head = head.ok_or_else(|| NodeError::Audit { path: path.clone(), reason: "nothing appended".into() })?;
        let cp = Checkpoint::sign(&head, now_ms(), &auditor.key);
        auditor.store_head(&cp, true)?;
        Ok(cp)
    }
}

/// The body of `session.accepted`: `plan_hash` (hex SHA-256 of the plan JSON
/// as stored), and from the plan `parties` (names, in order), `dataset`,
/// `analyst`, `coordinator` (only the hash if the plan does not parse).
pub fn session_accepted_body(plan_json: &str) -> Value {
    let mut body = json!({ "plan_hash": sha256_hex(plan_json.as_bytes()) });
    if let Ok(plan) = serde_json::from_str::<SessionPlan>(plan_json) {
        body["parties"] = json!(plan.parties.iter().map(|p| p.name.as_str()).collect::<Vec<_>>());
        body["dataset"] = json!(plan.dataset);
        body["analyst"] = json!(plan.analyst);
        body["coordinator"] = json!(plan.coordinator);
    }
    body
}

/// Record on the coordinator that party `index`'s sealed result share
/// (`envelope_json`, as stored) was stored for the analyst.
pub fn result_revealed(
    store: &mut Store,
    plan: &SessionPlan,
    index: usize,
    envelope_json: &str,
) -> Result<(), NodeError> {
    let party = plan.parties.get(index).map_or("?", |p| p.name.as_str());
    let key_prefix = plan.analyst_key.get(..16).unwrap_or(&plan.analyst_key);
    let body = json!({
        "to": format!("analyst key {key_prefix}"),
        "analyst": plan.analyst,
        "party": party,
        "party_index": index,
        "envelope_hash": sha256_hex(envelope_json.as_bytes()),
    });
    store.audit(RESULT_REVEALED, Some(&plan.id), body)
}

/// Record that this node refused the proposal of `plan` from `from`, with the
/// reason (never fails: a refusal that cannot be logged is logged to `tracing`).
pub fn session_refused(store: &mut Store, from: &str, plan: &SessionPlan, reason: &dyn std::fmt::Display) {
    let mut body = json!({
        "reason": reason.to_string(),
        "from": from,
        "coordinator": plan.coordinator,
        "dataset": plan.dataset,
        "analyst": plan.analyst,
    });
    let session = valid_session(&plan.id).then_some(plan.id.as_str());
    if session.is_none() {
        body["session_id"] = json!(plan.id);
    }
    if let Err(e) = store.audit(SESSION_REFUSED, session, body) {
        tracing::error!(error = %e, session = %plan.id, "cannot audit a refused session");
    }
}

/// The dashboard's audit trail: the `limit` most recent entries, newest first,
/// and a line about the head checkpoint.
pub fn dashboard_trail(store: &Store, limit: usize) -> Result<(Vec<AuditView>, String), NodeError> {
    let rows = store.recent_audit(limit)?;
    let entries = rows
        .into_iter()
        .map(|(seq, text)| match Entry::from_json(&text) {
            Ok(e) => AuditView {
                seq: e.seq,
                at: i64::try_from(e.time_ms / 1000).unwrap_or(i64::MAX),
                kind: e.kind,
                session: e.session.unwrap_or_default(),
                body: e.body.to_string(),
                hash: hex(&e.hash),
            },
            Err(reason) => AuditView {
                seq: u64::try_from(seq).unwrap_or(0),
                kind: "(unreadable)".into(),
                body: reason,
                ..AuditView::default()
            },
        })
        .collect();
    let total = store.audit_len()?;
    let head = match store.audit_head() {
        Ok(Some(cp)) => format!(
            "{total} entries; signed head checkpoint of entry {} (hash {}…) at {} UTC. \
             Verify the whole chain with `concord audit verify`.",
            cp.seq,
            hex(&cp.head_hash).get(..16).unwrap_or(""),
            crate::dashboard::format_utc(i64::try_from(cp.time_ms / 1000).unwrap_or(0))
        ),
        Ok(None) if total == 0 => "The audit log is empty.".to_owned(),
        Ok(None) => format!("{total} entries; no head checkpoint file."),
        Err(e) => format!("{total} entries; head checkpoint unreadable: {e}"),
    };
    Ok((entries, head))
}

/// Query of `GET /api/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// How many of the most recent entries (default 50, at most 1000).
    pub limit: Option<usize>,
}

/// Most entries `GET /api/audit` returns.
pub const API_MAX_LIMIT: usize = 1000;

fn api_error(status: StatusCode, code: &str, message: String) -> Response {
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), code, %message, "API request failed");
    } else {
        tracing::warn!(status = status.as_u16(), code, %message, "API request refused");
    }
    (status, Json(json!({ "error": { "code": code, "message": message } }))).into_response()
}

/// `GET /api/audit?limit=N`: the most recent entries, newest first (each as
/// its canonical JSON object), the number of entries and the head checkpoint.
pub async fn api_audit(State(state): State<AppState>, query: Result<Query<AuditQuery>, QueryRejection>) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    let limit = q.limit.unwrap_or(50);
    if limit > API_MAX_LIMIT {
        return api_error(StatusCode::BAD_REQUEST, "bad_request", format!("limit {limit} is above {API_MAX_LIMIT}"));
    }
    let answer = state.with_store(|s| -> Result<Value, NodeError> {
        let entries: Vec<Value> = s
            .recent_audit(limit)?
            .into_iter()
            .map(|(seq, text)| {
                serde_json::from_str(&text).unwrap_or_else(|e| json!({ "seq": seq, "unreadable": e.to_string() }))
            })
            .collect();
        let head = match s.audit_head() {
            Ok(Some(cp)) => serde_json::from_str(&cp.to_json()).unwrap_or(Value::Null),
            Ok(None) => Value::Null,
            Err(e) => json!({ "unreadable": e.to_string() }),
        };
        Ok(json!({ "count": s.audit_len()?, "head": head, "entries": entries }))
    });
    match answer {
        Some(Ok(v)) => Json(v).into_response(),
        Some(Err(e)) => api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        None => api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the store lock is poisoned".into()),
    }
}

/// Add `GET /api/audit` and its schemas to the OpenAPI document.
pub fn add_openapi(doc: &mut Value) {
    let error = json!({ "description": "Error", "content": { "application/json": {
        "schema": { "$ref": "#/components/schemas/Error" } } } });
    doc["paths"]["/api/audit"] = json!({ "get": {
        "summary": "The most recent entries of the node's signed, hash-chained audit log, newest first, and its signed head checkpoint",
        "parameters": [ { "name": "limit", "in": "query", "required": false,
            "schema": { "type": "integer", "minimum": 0, "maximum": API_MAX_LIMIT, "default": 50 } } ],
        "responses": {
            "200": { "description": "Audit entries", "content": { "application/json": { "schema": {
                "type": "object", "required": ["count", "head", "entries"], "properties": {
                    "count": { "type": "integer", "description": "entries in the log" },
                    "head": { "nullable": true, "allOf": [ { "$ref": "#/components/schemas/AuditCheckpoint" } ] },
                    "entries": { "type": "array", "items": { "$ref": "#/components/schemas/AuditEntry" } } } } } } },
            "400": error.clone(), "500": error }
    } });
    let hex = |n: usize, what: &str| json!({ "type": "string", "pattern": format!("^[0-9a-f]{{{n}}}$"), "description": what });
    doc["components"]["schemas"]["AuditEntry"] = json!({ "type": "object",
        "description": "one entry (crates/audit/NOTES.md)",
        "required": ["seq", "time_ms", "node", "kind", "session", "body", "prev_hash", "hash", "signature"],
        "properties": {
            "seq": { "type": "integer" }, "time_ms": { "type": "integer" }, "node": { "type": "string" },
            "kind": { "type": "string" }, "session": { "type": "string", "nullable": true },
            "body": { "type": "object" },
            "prev_hash": hex(64, "SHA-256 of the previous entry"), "hash": hex(64, "SHA-256 of this entry"),
            "signature": hex(128, "Ed25519 signature of the hash") } });
    doc["components"]["schemas"]["AuditCheckpoint"] = json!({ "type": "object",
        "required": ["node", "seq", "head_hash", "time_ms", "signature"],
        "properties": {
            "node": { "type": "string" }, "seq": { "type": "integer" }, "head_hash": hex(64, "hash of entry seq"),
            "time_ms": { "type": "integer" }, "signature": hex(128, "Ed25519 signature") } });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::store::{DatasetRecord, DatasetStatus, PeerRecord, SessionState};
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("concord-audit-unit-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        fn store(&self) -> Store {
            Store::open(&self.0.join(crate::store::STORE_FILE)).unwrap()
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn dataset(name: &str) -> DatasetRecord {
        DatasetRecord {
            name: name.into(),
            file_path: PathBuf::from("/data/x.csv"),
            schema_toml: "table = \"t\"".into(),
            file_sha256: "00".repeat(32),
            file_size: 10,
            file_mtime_ns: 1,
            row_count: 3,
            validated_at: 1,
            status: DatasetStatus::Valid,
        }
    }

    fn peer(name: &str, k: &str) -> PeerRecord {
        PeerRecord {
            name: name.into(),
            address: "127.0.0.1:7301".into(),
            api_address: String::new(),
            ed25519_public: k.repeat(32),
            tls_fingerprint: k.repeat(32),
            added_at: 1,
            revoked_at: None,
        }
    }

    /// A plan as a coordinator stores it (JSON of a `SessionPlan`).
    fn plan_json(id: &str, parties: &[&str], sql: &str) -> String {
        let v = json!({
            "id": id, "coordinator": parties[0], "dataset": "patients",
            "parties": parties.iter().map(|p| json!({ "name": p, "address": "127.0.0.1:1", "tls_fingerprint": "ab".repeat(32) })).collect::<Vec<_>>(),
            "spec": { "sql": sql, "schema_toml": "table = \"patients\"", "parties": parties.len(), "threshold": 1, "m127": false },
            "analyst_key": "cd".repeat(32), "analyst": "alice", "created_at": 1,
        });
        let plan: SessionPlan = serde_json::from_value(v).unwrap();
        serde_json::to_string(&plan).unwrap()
    }

    /// Every kind of write of the store.
    fn busy(s: &mut Store) {
        s.add_dataset(&dataset("patients")).unwrap();
        s.add_peer(&peer("b", "11")).unwrap();
        s.create_invitation("inv", "mac", 100).unwrap();
        s.accept_invitation("inv", 50, &peer("c", "22")).unwrap();
        s.set_budget("alice", "patients", 2.5).unwrap();
        let id = "0f".repeat(16);
        s.create_session(&id, "a", &plan_json(&id, &["a", "b", "c"], "SELECT COUNT(*) FROM patients"), "q").unwrap();
        s.spend_budget(&id, "alice", "patients", 0.125, 1.0).unwrap();
        s.set_session_state(&id, SessionState::Running, None).unwrap();
        s.set_session_state(&id, SessionState::Done, None).unwrap();
        s.update_peer_address("b", "10.0.0.2:7301", 5).unwrap();
        s.revoke_peer("c").unwrap();
        s.record_event("Odd Kind!", "a kind outside the audit domain").unwrap();
        s.remove_dataset("patients").unwrap();
    }

    #[test]
    fn every_event_has_an_audit_entry_in_order_and_the_chain_and_head_verify() {
        let dir = Dir::new("every");
        let mut s = dir.store();
        s.set_auditor("a", key(1)).unwrap();
        busy(&mut s);
        let entries = s.audit_entries().unwrap();
        let mut events = s.recent_events(1000).unwrap();
        events.reverse();
        // Entries made from events, in order: kind (or `event`) and message.
        let from_events: Vec<&Entry> =
            entries.iter().filter(|e| e.body.get("message").is_some() && e.kind != STARTED).collect();
        assert_eq!(from_events.len(), events.len(), "{entries:#?}");
        for (e, ev) in from_events.iter().zip(&events) {
            assert_eq!(e.body["message"], ev.message.as_str());
            let kind = if ev.kind == "Odd Kind!" { OTHER_EVENT } else { ev.kind.as_str() };
            assert_eq!(e.kind, kind);
        }
        assert_eq!(entries[0].kind, STARTED);
        assert_eq!(entries[0].body["unaudited_events"], 0);
        let odd = entries.iter().find(|e| e.kind == OTHER_EVENT).unwrap();
        assert_eq!(odd.body["event_kind"], "Odd Kind!");
        // Structured entries of the session, with the fields cross-checks compare.
        let id = "0f".repeat(16);
        let accepted = entries.iter().find(|e| e.kind == SESSION_ACCEPTED).unwrap();
        assert_eq!(accepted.session.as_deref(), Some(id.as_str()));
        assert_eq!(accepted.body["parties"], json!(["a", "b", "c"]));
        assert_eq!(
            (accepted.body["dataset"].as_str(), accepted.body["analyst"].as_str()),
            (Some("patients"), Some("alice"))
        );
        let stored = s.session(&id).unwrap().plan;
        assert_eq!(accepted.body["plan_hash"], sha256_hex(stored.as_bytes()).as_str());
        let finished: Vec<&Entry> = entries.iter().filter(|e| e.kind == concord_audit::FINAL_KIND).collect();
        assert_eq!(finished.len(), 1);
        assert_eq!(finished[0].body, json!({ "state": "done" }));
        let spent = entries.iter().find(|e| e.kind == "budget.spent").unwrap();
        assert_eq!((spent.session.as_deref(), spent.body["rho"].as_str()), (Some(id.as_str()), Some("0.125")));
        let paired = entries.iter().find(|e| e.kind == "peer.paired").unwrap();
        assert_eq!(paired.body["peer"], "b");
        // The chain verifies under the key and against the head, which names the last entry.
        let report = s.verify_audit(&key(1).verifying_key()).unwrap();
        assert_eq!(report.entries, entries.len() as u64);
        assert_eq!(report.node.as_deref(), Some("a"));
        let cp = report.checkpoint.unwrap();
        assert_eq!((cp.seq, cp.head_hash), (entries.len() as u64 - 1, entries.last().unwrap().hash));
        // Not under another key.
        let e = s.verify_audit(&key(2).verifying_key()).unwrap_err();
        assert!(matches!(e, NodeError::AuditChain { source: AuditError::GenesisMismatch, .. }), "{e}");
        // The table refuses updates and deletes.
        assert!(s.conn.execute("DELETE FROM audit_log WHERE seq = 1", []).is_err());
        assert!(s.conn.execute("UPDATE audit_log SET entry = 'x' WHERE seq = 1", []).is_err());
        // A structured entry of the caller's.
        s.audit("approval", Some("s-1"), json!({ "by": "ops", "n": 3 })).unwrap();
        let last = s.audit_entries().unwrap().pop().unwrap();
        assert_eq!(
            (last.kind.as_str(), last.session.as_deref(), &last.body),
            ("approval", Some("s-1"), &json!({ "by": "ops", "n": 3 }))
        );
        // Floats are refused, and the write with them leaves nothing behind.
        let before = s.audit_len().unwrap();
        let e = s.audit("bad", None, json!({ "rho": 0.5 })).unwrap_err();
        assert!(e.to_string().contains("non-integer"), "{e}");
        assert_eq!(s.audit_len().unwrap(), before);
        s.verify_audit(&key(1).verifying_key()).unwrap();
    }

    #[test]
    fn without_an_auditor_writes_work_until_the_log_exists_then_are_refused() {
        let dir = Dir::new("noauditor");
        {
            // Never opened with the key: not audited.
            let mut s = dir.store();
            s.add_dataset(&dataset("x")).unwrap();
            s.record_event("test.kind", "before the log").unwrap();
            assert_eq!(s.audit_len().unwrap(), 0);
            assert!(s.audit_head().unwrap().is_none());
            // With the key: the log starts, and says what came before.
            s.set_auditor("a", key(1)).unwrap();
            s.record_event("test.kind", "audited").unwrap();
            let entries = s.audit_entries().unwrap();
            assert_eq!(entries.len(), 2);
            assert_eq!((entries[0].kind.as_str(), &entries[0].body["unaudited_events"]), (STARTED, &json!(2)));
        }
        // Reopened without the key: the write is refused and nothing changes.
        let mut s = dir.store();
        let events = s.recent_events(100).unwrap().len();
        let e = s.record_event("test.kind", "unaudited").unwrap_err();
        assert!(matches!(e, NodeError::AuditorRequired { .. }), "{e}");
        assert!(e.to_string().contains("signing key"), "{e}");
        assert!(s.add_dataset(&dataset("y")).is_err());
        assert_eq!(s.recent_events(100).unwrap().len(), events);
        assert!(s.get_dataset("y").is_err());
        // Reads work, and so does verification with the public key alone.
        assert_eq!(s.verify_audit(&key(1).verifying_key()).unwrap().entries, 2);
        // Another key or another name cannot continue this log.
        let e = s.set_auditor("a", key(2)).unwrap_err();
        assert!(e.to_string().contains("not started with this node's key"), "{e}");
        let e = s.set_auditor("b", key(1)).unwrap_err();
        assert!(e.to_string().contains("renamed"), "{e}");
        s.set_auditor("a", key(1)).unwrap();
        s.record_event("test.kind", "audited again").unwrap();
        assert_eq!(s.verify_audit(&key(1).verifying_key()).unwrap().entries, 3);
        // An in-memory store is audited too, without a head file.
        let mut m = Store::open_in_memory().unwrap();
        m.set_auditor("m", key(3)).unwrap();
        m.record_event("test.kind", "in memory").unwrap();
        assert_eq!(m.verify_audit(&key(3).verifying_key()).unwrap().entries, 2);
    }

    #[test]
    fn a_truncated_log_is_detected_and_not_written_over_until_the_head_is_rewritten() {
        let dir = Dir::new("truncate");
        let mut s = dir.store();
        s.set_auditor("a", key(1)).unwrap();
        for i in 0..6 {
            s.record_event("test.kind", &format!("event {i}")).unwrap();
        }
        assert_eq!(s.audit_len().unwrap(), 7);
        // An attacker with file access, without the key: drop the trigger, cut the tail.
        s.conn.execute_batch("DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE seq >= 5").unwrap();
        let e = s.verify_audit(&key(1).verifying_key()).unwrap_err();
        assert!(
            matches!(e, NodeError::AuditChain { source: AuditError::Truncated { checkpoint_seq: 6, len: 5 }, .. }),
            "{e}"
        );
        // The node refuses to append (which would move the head forward and hide the cut).
        let events = s.recent_events(100).unwrap().len();
        let e = s.record_event("test.kind", "after the cut").unwrap_err();
        assert!(e.to_string().contains("truncated") && e.to_string().contains("refused"), "{e}");
        assert_eq!(s.recent_events(100).unwrap().len(), events);
        // The operator re-signs the head of what is left: logged, and the log verifies again.
        let cp = s.rewrite_audit_head().unwrap();
        let entries = s.audit_entries().unwrap();
        let last = entries.last().unwrap();
        assert_eq!((cp.seq, last.kind.as_str()), (5, HEAD_REWRITTEN));
        assert_eq!(last.body["previous_head"]["seq"], 6);
        s.verify_audit(&key(1).verifying_key()).unwrap();
        s.record_event("test.kind", "after the rewrite").unwrap();
        // A deleted head file: the log no longer verifies and writes are refused.
        std::fs::remove_file(s.audit_head_path().unwrap()).unwrap();
        let e = s.verify_audit(&key(1).verifying_key()).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        assert!(s.record_event("test.kind", "x").unwrap_err().to_string().contains("missing"));
        // A rewritten chain (an edited entry re-hashed, without the key) is refused before appending too.
        s.rewrite_audit_head().unwrap();
        s.conn.execute_batch("DROP TRIGGER audit_log_no_update").unwrap();
        let text: String = s.conn.query_row("SELECT entry FROM audit_log WHERE seq = 2", [], |r| r.get(0)).unwrap();
        s.conn.execute("UPDATE audit_log SET entry = ?1 WHERE seq = 2", [text.replace("event 1", "event X")]).unwrap();
        let e = s.verify_audit(&key(1).verifying_key()).unwrap_err();
        assert!(matches!(e, NodeError::AuditChain { source: AuditError::HashMismatch { seq: 2 }, .. }), "{e}");
        assert!(s.rewrite_audit_head().is_err(), "a log that does not verify is never re-signed");
    }

    #[test]
    fn the_export_verifies_and_cross_checks_name_the_node_that_disagrees() {
        let id = "ab".repeat(16);
        let names = ["a", "b", "c"];
        let sql = "SELECT COUNT(*) FROM patients";
        let mut stores: Vec<Store> = (0..3u8)
            .map(|i| {
                let mut s = Store::open_in_memory().unwrap();
                s.set_auditor(names[usize::from(i)], key(i + 1)).unwrap();
                s
            })
            .collect();
        // The coordinator a and b store the plan; c stores another one (another query).
        for (i, s) in stores.iter_mut().enumerate() {
            let plan = plan_json(&id, &names, if i == 2 { "SELECT SUM(age) FROM patients" } else { sql });
            s.create_session(&id, "a", &plan, "q").unwrap();
            s.set_session_state(&id, SessionState::Running, None).unwrap();
            s.set_session_state(&id, SessionState::Done, None).unwrap();
        }
        let exports: Vec<Vec<u8>> = stores.iter().map(|s| s.audit_export().unwrap()).collect();
        let logs: Vec<concord_audit::ExportSummary> = exports
            .iter()
            .zip(1u8..)
            .map(|(x, k)| concord_audit::verify_export(x, Some(&key(k).verifying_key())).unwrap())
            .collect();
        let view: Vec<(&str, &[Entry])> = logs.iter().map(|l| (l.node.as_str(), l.entries.as_slice())).collect();
        match concord_audit::cross_check(&id, &view) {
            Err(AuditError::Disagreement { node, field, .. }) => {
                assert_eq!((node.as_str(), field.as_str()), ("c", "plan_hash"))
            }
            other => panic!("expected a disagreement, got {other:?}"),
        }
        // a and b agree on everything.
        let agreed = concord_audit::cross_check(&id, &view[..2]).unwrap();
        assert_eq!(agreed.agreed["state"], "done");
        assert_eq!(agreed.agreed["parties"], json!(["a", "b", "c"]));
        assert_eq!(agreed.parties_missing, ["c"]);

        // Same plan everywhere, but c's log says the session failed.
        let id2 = "cd".repeat(16);
        for (i, s) in stores.iter_mut().enumerate() {
            s.create_session(&id2, "a", &plan_json(&id2, &names, sql), "q").unwrap();
            s.set_session_state(&id2, SessionState::Running, None).unwrap();
            let (state, reason) =
                if i == 2 { (SessionState::Failed, Some("party c crashed")) } else { (SessionState::Done, None) };
            s.set_session_state(&id2, state, reason).unwrap();
        }
        let logs: Vec<Vec<Entry>> = stores.iter().map(|s| s.audit_entries().unwrap()).collect();
        let view: Vec<(&str, &[Entry])> = names.iter().zip(&logs).map(|(n, l)| (*n, l.as_slice())).collect();
        match concord_audit::cross_check(&id2, &view) {
            Err(e @ AuditError::Disagreement { .. }) => {
                let text = e.to_string();
                assert!(text.contains("\"c\"") && text.contains("state") && text.contains("failed"), "{text}");
            }
            other => panic!("expected a disagreement, got {other:?}"),
        }
        // A changed byte in an export is refused.
        let mut bad = exports[0].clone();
        let at = bad.len() / 2;
        bad[at] ^= 1;
        assert!(concord_audit::verify_export(&bad, None).is_err());
    }

    /// A participant hashes its own serialisation of the plan it received:
    /// it must be the coordinator's bytes, privacy parameters (floats) included.
    #[test]
    fn a_plan_hashes_the_same_after_the_participant_parses_and_stores_it() {
        use rand_core::{RngCore, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let mut values: Vec<f64> = (1..=2000).map(|i| f64::from(i) / 1000.0).collect();
        values.extend([1.0 / 3.0, 0.1 + 0.2, 1e-6, 1e6, std::f64::consts::LN_2]);
        // Random doubles in (0, 10), all 53 bits of mantissa.
        values.extend(
            (0..20_000).map(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 10.0 + f64::MIN_POSITIVE),
        );
        for v in values {
            for key in ["epsilon", "rho"] {
                let mut plan: Value = serde_json::from_str(&plan_json("ab", &["a", "b"], "q")).unwrap();
                plan["spec"]["privacy"] = json!({ key: v });
                let coordinator = serde_json::to_string(&serde_json::from_value::<SessionPlan>(plan).unwrap()).unwrap();
                let received: SessionPlan = serde_json::from_str(&coordinator).unwrap();
                let participant = serde_json::to_string(&received).unwrap();
                assert_eq!(
                    session_accepted_body(&coordinator)["plan_hash"],
                    session_accepted_body(&participant)["plan_hash"],
                    "{key} = {v:?}: {coordinator} vs {participant}"
                );
            }
        }
    }

    #[test]
    fn pending_event_records_map_kinds_and_sessions_into_the_audit_domain() {
        let p = Pending::event("peer.up", "m", Some("s-1"), json!({ "peer": "b" }));
        assert_eq!((p.kind.as_str(), p.session.as_deref()), ("peer.up", Some("s-1")));
        assert_eq!(p.body, json!({ "message": "m", "peer": "b" }));
        let p = Pending::event("Peer Up", "m", Some("a/b"), json!(null));
        assert_eq!((p.kind.as_str(), p.session.as_deref()), (OTHER_EVENT, None));
        assert_eq!(p.body, json!({ "message": "m", "event_kind": "Peer Up", "session_id": "a/b" }));
        assert!(format!("{:?}", Auditor::new("a", key(9), Path::new(":memory:"))).contains("REDACTED"));
        assert!(!format!("{:?}", Auditor::new("a", key(9), Path::new(":memory:"))).contains(&hex(&[9; 32])));
    }
}
