//! Registering local data files and keeping them checked.
//!
//! A dataset is a name, a CSV or Parquet file and the schema it must match.
//! Registration validates every row once (via `concord_data::load_table`),
//! hashes the file (SHA-256, streamed) and stores the facts; nothing is
//! stored if anything fails. [`revalidate`] re-hashes the file and
//! re-validates it when it changed, updating the record or marking the
//! dataset invalid with the reason; [`revalidate_periodically`] does so for
//! every dataset while the node runs. Peers only ever learn the name and the
//! public schema.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use concord_query::Schema;
use sha2::{Digest, Sha256};

use crate::config::check_name;
use crate::server::AppState;
use crate::store::{DatasetRecord, DatasetStatus, Store};
use crate::{hex, unix_now, NodeError};

/// Size, modification time and SHA-256 of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileFacts {
    /// Bytes.
    pub size: u64,
    /// Modification time, ns since the Unix epoch (0 if unavailable).
    pub mtime_ns: i64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// Stat and hash `path` (streaming).
pub fn file_facts(path: &Path) -> Result<FileFacts, NodeError> {
    let (size, mtime_ns) = stat(path)?;
    let mut file = File::open(path).map_err(|e| NodeError::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| NodeError::io(path, e))?;
    Ok(FileFacts { size, mtime_ns, sha256: hex(&hasher.finalize()) })
}

fn stat(path: &Path) -> Result<(u64, i64), NodeError> {
    let meta = std::fs::metadata(path).map_err(|e| NodeError::io(path, e))?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0);
    Ok((meta.len(), mtime_ns))
}

/// Parse a schema's TOML; errors name `origin`.
pub fn parse_schema(text: &str, origin: &Path) -> Result<Schema, NodeError> {
    Schema::from_toml(text).map_err(|e| NodeError::Schema { path: origin.to_owned(), reason: e.to_string() })
}

/// Validate `file` against `schema`: hash it, load every row, and check the
/// file did not change meanwhile. Returns the file's facts and row count.
fn check_file(file: &Path, schema: &Schema) -> Result<(FileFacts, u64), NodeError> {
    let facts = file_facts(file)?;
    let table = concord_data::load_table(file, schema)?;
    let rows = u64::try_from(table.num_rows()).unwrap_or(u64::MAX);
    if stat(file)? != (facts.size, facts.mtime_ns) {
        return Err(NodeError::ChangedDuringValidation { path: file.to_owned() });
    }
    Ok((facts, rows))
}

/// Register dataset `name`: `file` (CSV or Parquet) must match the schema in
/// `schema_path`. On any error nothing is stored.
pub fn register(store: &mut Store, name: &str, file: &Path, schema_path: &Path) -> Result<DatasetRecord, NodeError> {
    check_name(name).map_err(|reason| NodeError::InvalidName { name: name.to_owned(), reason })?;
    if store.get_dataset(name).is_ok() {
        return Err(NodeError::DuplicateDataset(name.to_owned()));
    }
    let schema_toml = std::fs::read_to_string(schema_path).map_err(|e| NodeError::io(schema_path, e))?;
    let schema = parse_schema(&schema_toml, schema_path)?;
    let file_path = std::fs::canonicalize(file).map_err(|e| NodeError::io(file, e))?;
    let (facts, row_count) = check_file(&file_path, &schema)?;
    let record = DatasetRecord {
        name: name.to_owned(),
        file_path,
        schema_toml,
        file_sha256: facts.sha256,
        file_size: facts.size,
        file_mtime_ns: facts.mtime_ns,
        row_count,
        validated_at: unix_now(),
        status: DatasetStatus::Valid,
    };
    store.add_dataset(&record)?;
    tracing::info!(dataset = name, rows = row_count, sha256 = %record.file_sha256, "dataset registered");
    Ok(record)
}

/// What [`revalidate`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revalidation {
    /// Same content as recorded, still valid.
    Unchanged,
    /// The file changed and still matches its schema; the record is updated.
    Updated {
        /// New row count.
        rows: u64,
        /// New SHA-256, hex.
        sha256: String,
    },
    /// The file changed (or vanished) and no longer matches; the dataset is
    /// marked invalid with this reason.
    Invalid(String),
}

/// Re-check dataset `name`: re-hash its file and, if the content, the
/// modification time or the previous status differ, re-validate it and
/// record the result.
pub fn revalidate(store: &mut Store, name: &str) -> Result<Revalidation, NodeError> {
    let old = store.get_dataset(name)?;
    apply(store, recheck(old)?)
}

/// The outcome of [`recheck`], to be recorded by [`apply`].
#[derive(Debug)]
pub struct Recheck {
    outcome: Revalidation,
    update: Option<(DatasetRecord, &'static str, String)>,
}

impl Recheck {
    /// What was found.
    pub fn outcome(&self) -> &Revalidation {
        &self.outcome
    }
}

/// Re-check a dataset's file against its stored record, without touching
/// the store (so a long hash or validation holds no lock). An unreadable or
/// invalid file is an outcome ([`Revalidation::Invalid`]), not an error.
pub fn recheck(old: DatasetRecord) -> Result<Recheck, NodeError> {
    let name = old.name.clone();
    let schema = parse_schema(&old.schema_toml, &PathBuf::from(format!("<stored schema of dataset {name}>")))?;
    let facts = match file_facts(&old.file_path) {
        Ok(f) => f,
        Err(e) => return Ok(invalid(old, e.to_string())),
    };
    let same = facts.sha256 == old.file_sha256 && facts.size == old.file_size;
    if same && facts.mtime_ns == old.file_mtime_ns && old.status == DatasetStatus::Valid {
        return Ok(Recheck { outcome: Revalidation::Unchanged, update: None });
    }
    match check_file(&old.file_path, &schema) {
        Ok((facts, rows)) => {
            let sha256 = facts.sha256.clone();
            let new = DatasetRecord {
                file_sha256: facts.sha256,
                file_size: facts.size,
                file_mtime_ns: facts.mtime_ns,
                row_count: rows,
                validated_at: unix_now(),
                status: DatasetStatus::Valid,
                ..old
            };
            // No row count: the event log is shown on the dashboard, and row counts stay local.
            let msg = format!("dataset {name:?} re-validated (sha256 {sha256})");
            let outcome = if same { Revalidation::Unchanged } else { Revalidation::Updated { rows, sha256 } };
            Ok(Recheck { outcome, update: Some((new, "dataset.revalidated", msg)) })
        }
        Err(e @ (NodeError::Data(_) | NodeError::Io { .. } | NodeError::ChangedDuringValidation { .. })) => {
            Ok(invalid(old, e.to_string()))
        }
        Err(e) => Err(e),
    }
}

fn invalid(old: DatasetRecord, reason: String) -> Recheck {
    let msg = format!("dataset {:?} is invalid: {reason}", old.name);
    let new = DatasetRecord { validated_at: unix_now(), status: DatasetStatus::Invalid(reason.clone()), ..old };
    Recheck { outcome: Revalidation::Invalid(reason), update: Some((new, "dataset.invalid", msg)) }
}

/// Record the outcome of [`recheck`] (one transaction with its event).
pub fn apply(store: &mut Store, r: Recheck) -> Result<Revalidation, NodeError> {
    if let Some((new, kind, msg)) = &r.update {
        store.update_dataset(new, kind, msg)?;
        match &r.outcome {
            Revalidation::Invalid(reason) => tracing::warn!(dataset = %new.name, %reason, "dataset invalid"),
            _ => {
                tracing::info!(dataset = %new.name, rows = new.row_count, sha256 = %new.file_sha256, "dataset re-validated")
            }
        }
    }
    Ok(r.outcome)
}

/// Re-check every dataset every `period`, hashing and validating outside the
/// store's lock, until the task is dropped. Errors are logged.
pub async fn revalidate_periodically(state: AppState, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let records = match state.with_store(|s| s.list_datasets()) {
            Some(Ok(records)) => records,
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot list datasets to re-check them");
                continue;
            }
            None => return,
        };
        for old in records {
            let name = old.name.clone();
            let checked = match tokio::task::spawn_blocking(move || recheck(old)).await {
                Ok(Ok(checked)) => checked,
                Ok(Err(e)) => {
                    tracing::error!(dataset = %name, error = %e, "cannot re-check dataset");
                    continue;
                }
                Err(e) => {
                    tracing::error!(dataset = %name, error = %e, "dataset re-check task failed");
                    continue;
                }
            };
            match state.with_store(|s| apply(s, checked)) {
                Some(Ok(_)) => {}
                // Removed meanwhile: nothing to record.
                Some(Err(NodeError::UnknownDataset(_))) => {}
                Some(Err(e)) => tracing::error!(dataset = %name, error = %e, "cannot record dataset re-check"),
                None => return,
            }
        }
    }
}
