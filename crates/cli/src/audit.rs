//! `concord audit ...`: verify the node's tamper-evident audit log, export it
//! for an auditor, verify an export without the node, cross-check what
//! several nodes logged about a session, and print recent entries
//! (library: `concord-node::audit`, `concord-audit`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use concord_audit::{hex, ExportSummary};
use concord_node::dashboard::format_utc;
use concord_node::identity::{NodeIdentity, PublicIdentity, PUBLIC_FILE};
use concord_node::store::STORE_FILE;
use concord_node::{unhex, NodeConfig, Store, CONFIG_FILE};
use ed25519_dalek::VerifyingKey;

use crate::node::DirArg;

/// `concord audit` subcommands.
#[derive(Subcommand, Clone, Debug)]
pub enum AuditCommand {
    /// Verify the node's whole audit log against its public key and its signed head (data/audit.head).
    Verify {
        /// After checking that the entries verify on their own, re-sign the head (a head file lost in a
        /// crash, or a store restored from a backup); the rewrite is itself logged.
        #[arg(long)]
        rewrite_head: bool,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Write the portable export of the whole log (JSON lines with a signed checkpoint of the last entry).
    Export {
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Verify an export without the node; prints the key that signed it unless --key gives the expected one.
    VerifyExport {
        /// The export file.
        file: PathBuf,
        /// The node's published Ed25519 public key (64 hex digits: `ed25519_public` of `concord peer list`).
        #[arg(long)]
        key: Option<String>,
        /// A peer node's API (repeatable): check the export against the checkpoints of this node's log that
        /// the peer received with its heartbeats; a rewritten or cut log fails.
        #[arg(long = "witness", value_name = "URL")]
        witnesses: Vec<String>,
    },
    /// Verify several nodes' exports and check that they agree on one session.
    CrossCheck {
        /// The session id.
        #[arg(long)]
        session: String,
        /// Expected key of a node, NAME=ED25519_PUBLIC_HEX (repeatable); exports of other nodes are
        /// accepted with the key they carry (printed, to compare).
        #[arg(long = "key", value_name = "NAME=HEX")]
        keys: Vec<String>,
        /// The nodes' export files.
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
    },
    /// Print the most recent entries, oldest first.
    Log {
        /// How many entries.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        dir: DirArg,
    },
}

/// Give `store` the node's signing key so that every write is audited
/// (every command that opens a node's store calls this).
pub fn attach(store: &mut Store, dir: &Path, name: &str) -> Result<()> {
    let identity = NodeIdentity::load(dir, name)
        .with_context(|| format!("cannot load the signing key of node {name:?}, which signs its audit log"))?;
    store.set_auditor(name, identity.signing_key().clone())?;
    Ok(())
}

/// The configuration and store of node directory `dir` (no auditor).
fn open(dir: &Path) -> Result<(NodeConfig, Store)> {
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.exists() {
        bail!("{} not found: is {} a node directory?", config_path.display(), dir.display());
    }
    let config = NodeConfig::load(&config_path)?;
    let store = Store::open(&config.data_dir_in(dir).join(STORE_FILE))?;
    Ok((config, store))
}

/// Parse an Ed25519 public key given in hex.
fn parse_key(text: &str, what: &str) -> Result<VerifyingKey> {
    let bytes: [u8; 32] = unhex(text.trim())
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{what}: expected 64 hexadecimal digits (an Ed25519 public key), got {text:?}"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{what}: not an Ed25519 public key: {e}"))
}

/// The node's public key: `identity/public.json` (what peers pinned), checked
/// against the signing key when that can be read.
fn node_key(dir: &Path, name: &str) -> Result<(VerifyingKey, String)> {
    let path = NodeIdentity::dir_in(dir).join(PUBLIC_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let public: PublicIdentity =
        serde_json::from_str(&text).with_context(|| format!("{}: not a public identity", path.display()))?;
    let key = parse_key(&public.ed25519_public, &path.display().to_string())?;
    if let Ok(identity) = NodeIdentity::load(dir, name) {
        if identity.signing_key().verifying_key() != key {
            bail!("{} does not match the node's signing key: the identity was tampered with", path.display());
        }
    }
    Ok((key, public.ed25519_public))
}

fn time(ms: u64) -> String {
    format!("{} UTC", format_utc(i64::try_from(ms / 1000).unwrap_or(i64::MAX)))
}

/// `concord audit ...`.
pub fn audit(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify { rewrite_head, dir } => verify(&dir.dir, rewrite_head),
        AuditCommand::Export { out, dir } => {
            let (config, mut store) = open(&dir.dir)?;
            attach(&mut store, &dir.dir, &config.name)?;
            let bytes =
                store.audit_export().with_context(|| format!("cannot export the audit log of {:?}", config.name))?;
            std::fs::write(&out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;
            let summary = concord_audit::verify_export(&bytes, None)?;
            println!(
                "Exported {} audit entries of node {:?} to {} (checkpoint of entry {}, signed {}).",
                summary.entries.len(),
                summary.node,
                out.display(),
                summary.checkpoint.seq,
                time(summary.checkpoint.time_ms)
            );
            println!("  Ed25519 public key   {}", summary.public_key);
            println!("An auditor checks it with: concord audit verify-export FILE --key {}", summary.public_key);
            Ok(())
        }
        AuditCommand::VerifyExport { file, key, witnesses } => {
            let expected = key.as_deref().map(|k| parse_key(k, "--key")).transpose()?;
            let summary = read_export(&file, expected.as_ref())?;
            print_export(&file, &summary);
            check_witnesses(&summary, &witnesses)?;
            if expected.is_none() {
                println!(
                    "No --key given: compare the key above, all 64 digits, with the node's published ed25519_public \
                     (`concord peer list` or /api/peers on a peer, or its identity/public.json)."
                );
            } else {
                println!("Signed by the expected key.");
            }
            Ok(())
        }
        AuditCommand::CrossCheck { session, keys, files } => cross_check(&session, &keys, &files),
        AuditCommand::Log { limit, dir } => {
            let (config, store) = open(&dir.dir)?;
            let rows = store.recent_audit(limit)?;
            if rows.is_empty() {
                println!("The audit log of {:?} is empty.", config.name);
                return Ok(());
            }
            println!("{:>6}  {:<23}  {:<20}  {:<12}  BODY", "SEQ", "TIME (UTC)", "KIND", "SESSION");
            for (seq, text) in rows.into_iter().rev() {
                match concord_audit::Entry::from_json(&text) {
                    Ok(e) => {
                        let session = e.session.as_deref().map_or("-", |s| s.get(..12).unwrap_or(s));
                        let at = format_utc(i64::try_from(e.time_ms / 1000).unwrap_or(i64::MAX));
                        println!("{:>6}  {at:<23}  {:<20}  {session:<12}  {}", e.seq, e.kind, e.body);
                    }
                    Err(reason) => println!("{seq:>6}  (unreadable entry: {reason})"),
                }
            }
            println!("(entries are not verified here: run `concord audit verify`)");
            Ok(())
        }
    }
}

fn verify(dir: &Path, rewrite_head: bool) -> Result<()> {
    let (config, mut store) = open(dir)?;
    let (key, key_hex) = node_key(dir, &config.name)?;
    if rewrite_head {
        attach(&mut store, dir, &config.name)?;
        let cp = store.rewrite_audit_head().context("cannot re-sign the audit head")?;
        println!(
            "Re-signed the audit head at entry {} (an {} entry records the rewrite).",
            cp.seq,
            concord_node::audit::HEAD_REWRITTEN
        );
    }
    let report = store
        .verify_audit(&key)
        .with_context(|| format!("the audit log of node {:?} in {} does not verify", config.name, dir.display()))?;
    let Some(node) = report.node else {
        println!("The audit log of {:?} is empty: nothing to verify.", config.name);
        return Ok(());
    };
    if node != config.name {
        bail!("the audit log is node {node:?}'s, but this node is {:?}", config.name);
    }
    println!("Audit log of node {node:?}: OK");
    println!("  entries        {} (seq 0 to {})", report.entries, report.entries.saturating_sub(1));
    println!("  head hash      {}", hex(&report.head_hash));
    if let Some((first, last)) = report.time_range {
        println!("  time range     {} to {}", time(first), time(last));
    }
    if let Some(cp) = &report.checkpoint {
        let behind = report.entries.saturating_sub(cp.seq + 1);
        let note = if behind == 0 { String::new() } else { format!(" ({behind} later entries not yet covered)") };
        println!("  signed head    {} vouches for entry {}, signed {}{note}", HEAD_NAME, cp.seq, time(cp.time_ms));
    }
    println!("  public key     {key_hex} (identity/public.json)");
    if let Some(n) = report.unaudited_events.filter(|n| *n > 0) {
        println!("  note           {n} events were recorded before the audit log started (not audited)");
    }
    Ok(())
}

const HEAD_NAME: &str = concord_node::audit::HEAD_FILE;

fn read_export(file: &Path, expected: Option<&VerifyingKey>) -> Result<ExportSummary> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    concord_audit::verify_export(&bytes, expected)
        .with_context(|| format!("{}: the export does not verify", file.display()))
}

/// Check an export against the checkpoints each witness holds of its node.
fn check_witnesses(s: &ExportSummary, witnesses: &[String]) -> Result<()> {
    let key = parse_key(&s.public_key, "the export's key")?;
    for url in witnesses {
        let addr = crate::node::api_address(url);
        let path = format!("/api/audit/witness?node={}", url_encode(&s.node));
        let v = crate::node::call(&addr, "GET", &path, None)?;
        let mut held = Vec::new();
        for (i, cp) in v["checkpoints"].as_array().map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
            held.push(
                concord_audit::Checkpoint::from_value(cp.clone())
                    .map_err(|e| anyhow::anyhow!("witness {url}: checkpoint {i} is unreadable: {e}"))?,
            );
        }
        concord_audit::verify_with_checkpoints(&s.entries, &key, &held).with_context(|| {
            format!("the export contradicts a checkpoint of node {:?}'s log held by witness {url}", s.node)
        })?;
        match held.last() {
            Some(last) => println!(
                "  witness        {url}: {} checkpoints of {:?}'s log, up to entry {} (signed {}), all in this export",
                held.len(),
                s.node,
                last.seq,
                time(last.time_ms)
            ),
            None => println!("  witness        {url}: holds no checkpoint of {:?}'s log (nothing to compare)", s.node),
        }
    }
    Ok(())
}

/// Percent-encode a node name for a query string.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_export(file: &Path, s: &ExportSummary) {
    let (first, last) = (s.entries.first().map_or(0, |e| e.time_ms), s.entries.last().map_or(0, |e| e.time_ms));
    println!("{}: export of node {:?}: OK", file.display(), s.node);
    println!("  entries        {} ({} to {})", s.entries.len(), time(first), time(last));
    println!(
        "  checkpoint     entry {}, hash {}, signed {}",
        s.checkpoint.seq,
        hex(&s.checkpoint.head_hash),
        time(s.checkpoint.time_ms)
    );
    println!("  signed by      {}", s.public_key);
}

fn cross_check(session: &str, keys: &[String], files: &[PathBuf]) -> Result<()> {
    let mut expected = Vec::new();
    for k in keys {
        let (name, hex_key) = k.split_once('=').with_context(|| format!("--key {k:?}: expected NAME=HEX"))?;
        expected.push((name.to_owned(), parse_key(hex_key, &format!("--key {name}"))?));
    }
    let mut logs = Vec::with_capacity(files.len());
    for file in files {
        let summary = read_export(file, None)?;
        if let Some((_, key)) = expected.iter().find(|(n, _)| *n == summary.node) {
            read_export(file, Some(key))?;
        }
        print_export(file, &summary);
        logs.push(summary);
    }
    let view: Vec<(&str, &[concord_audit::Entry])> =
        logs.iter().map(|l| (l.node.as_str(), l.entries.as_slice())).collect();
    let agreed = concord_audit::cross_check(session, &view)
        .with_context(|| format!("the nodes' logs do not agree on session {session}"))?;
    println!("Session {session}: the {} nodes agree ({}).", agreed.nodes.len(), agreed.nodes.join(", "));
    for (field, value) in &agreed.agreed {
        println!("  {field:<14} {value}");
    }
    if !agreed.parties_missing.is_empty() {
        println!("  not compared   {} (no export given)", agreed.parties_missing.join(", "));
    }
    if expected.len() < logs.len() {
        println!(
            "Compare each key printed above with the node's published ed25519_public, or pin it with --key NAME=HEX."
        );
    }
    Ok(())
}
