//! `concord analyst`, `concord policy check` and `concord approvals`: the
//! analysts' keys, the operator's registry and policy, and the operator's
//! decisions on sessions that wait for them.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use concord_access::{AnalystPublicKey, AnalystSecretKey, SignedRequest};
use concord_node::access::{load_policy, StoreRegistry};
use rand_chacha::rand_core::SeedableRng;
use serde_json::{json, Value};

use crate::node::{call, open_node, DirArg};

/// `concord analyst` subcommands.
#[derive(Subcommand, Clone, Debug)]
pub enum AnalystCommand {
    /// Create an analyst key pair: the secret key goes to FILE (mode 0600,
    /// never overwritten); the public key is printed, for node operators.
    New {
        /// Where to write the secret key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key of a secret key file.
    Show {
        /// The secret key file.
        key: PathBuf,
    },
    /// Register an analyst on this node: their requests are then verified against this key.
    Add {
        /// The analyst's name (as they will sign requests).
        name: String,
        /// Their public key (`concord-analyst-v1:...`).
        public_key: String,
        /// Their role, matched by the policy's `roles`.
        #[arg(long, default_value = "analyst")]
        role: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// List the analysts registered on this node.
    List {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Revoke an analyst: their requests are refused from now on.
    Remove {
        /// The analyst's name.
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
}

/// Read an analyst's secret key file.
pub fn read_key(path: &Path) -> Result<AnalystSecretKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the analyst key {}", path.display()))?;
    AnalystSecretKey::from_text(text.trim()).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// `concord analyst ...`.
pub fn analyst(command: AnalystCommand) -> Result<()> {
    match command {
        AnalystCommand::New { out } => {
            let key = AnalystSecretKey::generate(&mut rand_chacha::ChaCha20Rng::from_os_rng());
            let mut file = open_secret(&out)?;
            file.write_all(key.expose_text().as_bytes())
                .and_then(|()| file.write_all(b"\n"))
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{}", key.public_key().to_text());
            eprintln!(
                "secret key written to {} (keep it; give node operators the public key above: \
                 concord analyst add NAME KEY --role ROLE)",
                out.display()
            );
            Ok(())
        }
        AnalystCommand::Show { key } => {
            println!("{}", read_key(&key)?.public_key().to_text());
            Ok(())
        }
        AnalystCommand::Add { name, public_key, role, dir } => {
            concord_node::config::check_name(&name).map_err(|e| anyhow!("analyst name {name:?}: {e}"))?;
            concord_node::config::check_name(&role).map_err(|e| anyhow!("role {role:?}: {e}"))?;
            let key = AnalystPublicKey::from_text(public_key.trim()).map_err(|e| anyhow!("{e}"))?;
            let (_, mut store) = open_node(&dir.dir)?;
            store.add_analyst(&name, &key.to_text(), &role)?;
            println!("Registered analyst {name:?} (role {role:?}, key fingerprint {})", key.fingerprint());
            Ok(())
        }
        AnalystCommand::List { dir } => {
            let (_, store) = open_node(&dir.dir)?;
            let list = store.list_analysts()?;
            if list.is_empty() {
                println!("No analysts registered. Add one with `concord analyst add NAME KEY --role ROLE`.");
            }
            for a in list {
                let state = if a.revoked_at.is_some() { "revoked" } else { "active" };
                println!("{:<20} {:<12} {:<8} {}", a.name, a.role, state, a.public_key);
            }
            Ok(())
        }
        AnalystCommand::Remove { name, dir } => {
            let (_, mut store) = open_node(&dir.dir)?;
            store.revoke_analyst(&name)?;
            println!("Revoked analyst {name:?}: their requests are refused from now on.");
            Ok(())
        }
    }
}

#[cfg(unix)]
fn open_secret(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (an existing key is never overwritten)", path.display()))
}

#[cfg(not(unix))]
fn open_secret(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {} (an existing key is never overwritten)", path.display()))
}

/// `concord policy check REQUEST`: this node's decision on a signed request
/// (signature, registration, validity, the policy), without running anything
/// and without consuming the request's nonce.
pub fn policy_check(request: &Path, dir: &DirArg) -> Result<()> {
    let (config, store) = open_node(&dir.dir)?;
    let Some(path) = config.policy_in(&dir.dir) else {
        bail!("this node has no policy ([access] policy in concord.toml): it accepts unsigned queries (open mode)");
    };
    let policy = load_policy(&path).map_err(|e| anyhow!("{e}"))?;
    let text = std::fs::read_to_string(request).with_context(|| format!("reading {}", request.display()))?;
    let signed = SignedRequest::from_json(&text).map_err(|e| anyhow!("{}: {e}", request.display()))?;
    let registry = StoreRegistry(&store);
    let mut fresh = concord_access::MemoryReplayGuard::new();
    let max_ms = config.access.max_request_lifetime_secs.saturating_mul(1000);
    let verified = concord_access::verify(&signed, &registry, concord_node::access::now_ms(), &mut fresh, max_ms)
        .map_err(|e| anyhow!("the request would be refused: {e}"))?;
    let dataset = store.get_dataset(&signed.request.dataset)?;
    let schema = concord_query::Schema::from_toml(&dataset.schema_toml).map_err(|e| anyhow!("schema: {e}"))?;
    let query = concord_query::parse(&signed.request.sql, &schema).map_err(|e| anyhow!("{e}"))?;
    let facts = verified.facts(&schema, &query).map_err(|e| anyhow!("{e}"))?;
    let today = store.requests_today(verified.analyst(), concord_node::access::now_ms())?;
    let decision = policy.evaluate(&facts, &concord_access::Usage { queries_today: today });
    println!(
        "request {} by analyst {:?} (role {:?})",
        verified.request().hash_hex(),
        verified.analyst(),
        verified.role()
    );
    println!("{}", decision.explain());
    if !decision.is_allowed() {
        bail!("denied by this node's policy ({})", path.display());
    }
    Ok(())
}

/// `concord approvals` subcommands.
#[derive(Subcommand, Clone, Debug)]
pub enum ApprovalsCommand {
    /// Sessions waiting for this node's operator, each with its full plan in words.
    List,
    /// Approve a waiting session.
    Approve {
        /// The session id.
        id: String,
    },
    /// Reject a waiting session: it ends on every node with the reason.
    Reject {
        /// The session id.
        id: String,
        /// Why (shown to the analyst and on every node).
        #[arg(long)]
        reason: String,
    },
    /// Veto a pending or running session at any moment: it aborts on every node with the reason.
    Veto {
        /// The session id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

/// `concord approvals ...` against the node's API (the operator's own node).
pub fn approvals(command: Option<ApprovalsCommand>, node: &str, by: &str) -> Result<()> {
    let addr = crate::node::api_address(node);
    match command.unwrap_or(ApprovalsCommand::List) {
        ApprovalsCommand::List => {
            let v = call(&addr, "GET", "/api/approvals", None)?;
            let list = v["approvals"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("No session waits for this node's approval.");
            }
            for a in list {
                println!(
                    "session {}  analyst {}  coordinator {}  dataset {}  parties {}",
                    a["id"].as_str().unwrap_or("?"),
                    a["analyst"].as_str().unwrap_or("?"),
                    a["coordinator"].as_str().unwrap_or("?"),
                    a["dataset"].as_str().unwrap_or("?"),
                    a["parties"].as_array().map_or_else(String::new, |p| {
                        p.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")
                    })
                );
                if let Some(h) = a["signed_request"].as_str() {
                    println!("  signed request {h}");
                }
                for line in a["description"].as_array().cloned().unwrap_or_default() {
                    println!("  {}", line.as_str().unwrap_or(""));
                }
            }
            Ok(())
        }
        ApprovalsCommand::Approve { id } => {
            let v = call(&addr, "POST", &format!("/api/sessions/{id}/approve"), Some(&json!({ "by": by })))?;
            println!("approved session {id} ({})", v["state"].as_str().unwrap_or("?"));
            Ok(())
        }
        ApprovalsCommand::Reject { id, reason } | ApprovalsCommand::Veto { id, reason } => {
            let v =
                call(&addr, "POST", &format!("/api/sessions/{id}/veto"), Some(&json!({ "by": by, "reason": reason })))?;
            println!(
                "session {id} ended: {} ({})",
                v["state"].as_str().unwrap_or("?"),
                v["reason"].as_str().unwrap_or("")
            );
            Ok(())
        }
    }
}
