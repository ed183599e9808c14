//! Threshold unlock from the command line: `concord unlock setup|keys|key|
//! requests|approve|reject`, `concord seal` (local: the content never goes
//! to a node) and `concord unseal` (an unlock request through a member node;
//! the decryption shares come back, are checked here and the file is opened
//! here: the node never sees the content).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use concord_node::unlock::{open_sealed, Response};
use concord_threshold::{SealedFile, UnlockPublicKey};
use serde_json::{json, Value};

use crate::node::{api_address, call};

/// `concord unlock ...`.
#[derive(Subcommand, Clone, Debug)]
pub enum UnlockCommand {
    /// Make a consortium's unlock key: the node asked (a member) runs a threshold ElGamal key generation (no dealer).
    Setup {
        /// The consortium (its members and threshold are the key's).
        consortium: String,
        /// The member node's API, e.g. http://127.0.0.1:7300.
        #[arg(long, env = "CONCORD_NODE")]
        node: String,
    },
    /// List the unlock keys a node holds (consortium, threshold, state).
    Keys {
        /// The node's API.
        #[arg(long, env = "CONCORD_NODE")]
        node: String,
    },
    /// Print a consortium's unlock public key (JSON), for `concord seal --public-key`.
    Key {
        /// The consortium.
        consortium: String,
        /// The node's API.
        #[arg(long, env = "CONCORD_NODE")]
        node: String,
    },
    /// The unlock requests this node's operator is asked to decide.
    Requests {
        /// The node's API.
        #[arg(long, env = "CONCORD_NODE")]
        node: String,
        /// Also list decided requests.
        #[arg(long)]
        all: bool,
    },
    /// Approve an unlock request: this node computes its decryption share and sends it to the requester.
    Approve {
        /// The request id.
        id: String,
        /// The node's API.
        #[arg(long, env = "CONCORD_NODE")]
        node: String,
        /// Who decides (recorded).
        #[arg(long, env = "USER", default_value = "the operator")]
        by: String,
    },
    /// Reject an unlock request (the requester is told, with the reason).
    Reject {
        /// The request id.
        id: String,
        /// The node's API.
        #[arg(long, env = "CONCORD_NODE")]
        node: String,
        /// Why.
        #[arg(long, default_value = "no reason given")]
        reason: String,
        /// Who decides (recorded).
        #[arg(long, env = "USER", default_value = "the operator")]
        by: String,
    },
}

/// Arguments of `concord seal`.
#[derive(Args, Clone, Debug)]
pub struct SealArgs {
    /// The file to seal.
    pub file: PathBuf,
    /// Where to write the sealed file.
    #[arg(long)]
    pub out: PathBuf,
    /// The consortium whose unlock key seals it (its public key is fetched from --node).
    #[arg(long, requires = "node", conflicts_with = "public_key")]
    pub consortium: Option<String>,
    /// A node that holds the consortium's unlock key.
    #[arg(long, env = "CONCORD_NODE")]
    pub node: Option<String>,
    /// Seal offline with this unlock public key (the JSON of `concord unlock key`, or @FILE).
    #[arg(long)]
    pub public_key: Option<String>,
}

/// Arguments of `concord unseal`.
#[derive(Args, Clone, Debug)]
pub struct UnsealArgs {
    /// The sealed file.
    pub file: PathBuf,
    /// A member node of the consortium: it forwards the request and collects the decryption shares.
    #[arg(long, env = "CONCORD_NODE")]
    pub node: String,
    /// Where to write the content.
    #[arg(long)]
    pub out: PathBuf,
    /// Why (shown to every member's operator).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// The consortium (needed only if the node holds several unlock keys).
    #[arg(long)]
    pub consortium: Option<String>,
    /// Give up after this many seconds without enough approvals.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

fn rng() -> rand_chacha::ChaCha12Rng {
    <rand_chacha::ChaCha12Rng as rand_core::SeedableRng>::from_os_rng()
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

/// The active unlock key of `consortium` on the node at `addr`.
fn fetch_key(addr: &str, consortium: &str) -> Result<UnlockPublicKey> {
    let v = call(addr, "GET", "/api/unlock-keys", None)?;
    let k = v["unlock_keys"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["consortium"] == consortium))
        .ok_or_else(|| anyhow!("the node at http://{addr} has no unlock key for consortium {consortium:?}"))?;
    if k["state"] != "active" {
        bail!("the unlock key of consortium {consortium:?} is {} on http://{addr}", str_of(&k["state"]));
    }
    serde_json::from_value(k["public_key"].clone())
        .with_context(|| format!("the node at http://{addr} served an unreadable unlock public key"))
}

/// `concord unlock ...`.
pub fn unlock(command: UnlockCommand) -> Result<()> {
    match command {
        UnlockCommand::Setup { consortium, node } => {
            let addr = api_address(&node);
            let started = Instant::now();
            let v = call(&addr, "POST", "/api/unlock-keys", Some(&json!({ "consortium": consortium })))?;
            let members: Vec<&str> =
                v["members"].as_array().map(|m| m.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            println!(
                "Unlock key of consortium {consortium:?} is {}: any {} of {} ({}) unlock; key generation took {:.3} s",
                str_of(&v["state"]),
                v["threshold"],
                members.len(),
                members.join(", "),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        UnlockCommand::Keys { node } => {
            let v = call(&api_address(&node), "GET", "/api/unlock-keys", None)?;
            let keys = v["unlock_keys"].as_array().cloned().unwrap_or_default();
            if keys.is_empty() {
                println!("No unlock keys. Make one with `concord unlock setup CONSORTIUM --node URL`.");
            }
            for k in keys {
                let n = k["members"].as_array().map_or(0, Vec::len);
                println!(
                    "{:<16} {:<9} {}/{}  shared key {}",
                    str_of(&k["consortium"]),
                    str_of(&k["state"]),
                    k["threshold"],
                    n,
                    k["public_key"]["shared_key"].as_str().unwrap_or("-")
                );
                if let Some(r) = k["reason"].as_str() {
                    println!("    {r}");
                }
            }
            Ok(())
        }
        UnlockCommand::Key { consortium, node } => {
            let key = fetch_key(&api_address(&node), &consortium)?;
            println!("{}", serde_json::to_string(&key)?);
            Ok(())
        }
        UnlockCommand::Requests { node, all } => {
            let v = call(&api_address(&node), "GET", "/api/unlock-requests", None)?;
            let list: Vec<Value> = v["unlock_requests"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| all || r["decision"] == "pending")
                .collect();
            if list.is_empty() {
                println!("No unlock request waits for this node's operator.");
            }
            for r in list {
                println!(
                    "request {}  {}  from {}  consortium {}  file {} ({} bytes)",
                    str_of(&r["id"]),
                    str_of(&r["decision"]),
                    str_of(&r["requester"]),
                    str_of(&r["consortium"]),
                    str_of(&r["digest"]),
                    r["size"]
                );
                println!("  reason: {}", r["reason"].as_str().filter(|s| !s.is_empty()).unwrap_or("(none given)"));
            }
            Ok(())
        }
        UnlockCommand::Approve { id, node, by } => {
            let v = call(
                &api_address(&node),
                "POST",
                &format!("/api/unlock-requests/{id}/approve"),
                Some(&json!({ "by": by })),
            )?;
            println!("approved unlock request {id}: decryption share sent to {}", str_of(&v["requester"]));
            Ok(())
        }
        UnlockCommand::Reject { id, node, reason, by } => {
            let body = json!({ "by": by, "reason": reason });
            let v = call(&api_address(&node), "POST", &format!("/api/unlock-requests/{id}/reject"), Some(&body))?;
            println!("rejected unlock request {id} (the requester {} is told)", str_of(&v["requester"]));
            Ok(())
        }
    }
}

/// `concord seal`.
pub fn seal(args: SealArgs) -> Result<()> {
    let key: UnlockPublicKey = match (&args.public_key, &args.consortium, &args.node) {
        (Some(text), _, _) => {
            let text = match text.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?,
                None => text.clone(),
            };
            serde_json::from_str(text.trim())
                .context("--public-key is not an unlock public key (JSON of `concord unlock key`)")?
        }
        (None, Some(c), Some(node)) => fetch_key(&api_address(node), c)?,
        _ => bail!("give --consortium NAME --node URL, or --public-key KEY to seal offline"),
    };
    let plain = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let started = Instant::now();
    let sealed = concord_threshold::seal(&key, &plain, &mut rng())
        .with_context(|| format!("cannot seal {}", args.file.display()))?;
    std::fs::write(&args.out, sealed.as_bytes()).with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "sealed {} ({} bytes) to {} ({} bytes, digest {}) in {:.3} s: any {} of the {} members must approve to open it",
        args.file.display(),
        plain.len(),
        args.out.display(),
        sealed.as_bytes().len(),
        concord_node::hex(&sealed.digest()),
        started.elapsed().as_secs_f64(),
        key.threshold(),
        key.n()
    );
    Ok(())
}

/// What the requester node says about a request.
struct Status {
    threshold: usize,
    members: Vec<String>,
    key: UnlockPublicKey,
    responses: Vec<Response>,
}

fn status(addr: &str, id: &str) -> Result<Status> {
    let v = call(addr, "GET", &format!("/api/unlock-requests/{id}"), None)?;
    let threshold =
        v["threshold"].as_u64().ok_or_else(|| anyhow!("the node's view of request {id} has no threshold"))?;
    let members: Vec<String> = serde_json::from_value(v["members"].clone()).context("members of the request")?;
    let key: UnlockPublicKey =
        serde_json::from_value(v["public_key"].clone()).context("unlock public key of the request")?;
    let responses: Vec<Response> = serde_json::from_value(v["responses"].clone()).context("answers to the request")?;
    Ok(Status { threshold: usize::try_from(threshold).unwrap_or(usize::MAX), members, key, responses })
}

/// `concord unseal`.
pub fn unseal(args: UnsealArgs) -> Result<()> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let file = SealedFile::from_bytes(&bytes)
        .with_context(|| format!("{} is not a usable sealed file", args.file.display()))?;
    let addr = api_address(&args.node);
    let started = Instant::now();
    let mut body = json!({ "sealed": concord_node::hex(&bytes), "reason": args.reason });
    if let Some(c) = &args.consortium {
        body["consortium"] = json!(c);
    }
    let v = call(&addr, "POST", "/api/unlock-requests", Some(&body))?;
    let id = v["id"].as_str().ok_or_else(|| anyhow!("the node at http://{addr} answered no request id"))?.to_owned();
    eprintln!(
        "request {id} (consortium {}, file {}) sent to every member; waiting for approvals",
        str_of(&v["consortium"]),
        str_of(&v["digest"])
    );
    let deadline = started + Duration::from_secs(args.timeout);
    let mut last = String::new();
    let mut refused: Vec<(String, String)> = Vec::new();
    loop {
        let st = status(&addr, &id)?;
        let shares: Vec<(String, concord_threshold::DecryptionShare)> = st
            .responses
            .iter()
            .filter(|r| !refused.iter().any(|(m, _)| *m == r.member))
            .filter_map(|r| r.share.clone().map(|s| (r.member.clone(), s)))
            .collect();
        let approved: Vec<&str> =
            st.responses.iter().filter(|r| r.decision == "approved").map(|r| r.member.as_str()).collect();
        let line = format!(
            "{} of {} approvals ({})",
            approved.len(),
            st.threshold,
            if approved.is_empty() { "none yet".to_owned() } else { format!("approved: {}", approved.join(", ")) }
        );
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if shares.len() >= st.threshold {
            let opening = open_sealed(&st.key, &st.members, &file, &shares)
                .with_context(|| format!("cannot open {}", args.file.display()))?;
            for (m, why) in &opening.refused {
                eprintln!("the decryption share from node {m:?} is refused: {why}");
                refused.push((m.clone(), why.clone()));
            }
            if let Some(plain) = opening.plaintext {
                std::fs::write(&args.out, &plain).with_context(|| format!("cannot write {}", args.out.display()))?;
                println!(
                    "unsealed {} to {} ({} bytes) with {} valid decryption shares in {:.3} s",
                    args.file.display(),
                    args.out.display(),
                    plain.len(),
                    opening.valid,
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
        }
        let valid = shares.iter().filter(|(m, _)| !refused.iter().any(|(r, _)| r == m)).count();
        let pending = st.responses.iter().filter(|r| r.decision == "pending").count();
        let impossible = valid + pending < st.threshold;
        if impossible || Instant::now() >= deadline {
            let missing: Vec<String> = st
                .responses
                .iter()
                .filter(|r| r.decision != "approved" || refused.iter().any(|(m, _)| *m == r.member))
                .map(|r| match (r.decision.as_str(), refused.iter().find(|(m, _)| *m == r.member)) {
                    (_, Some((_, why))) => format!("{:?} (forged share: {why})", r.member),
                    ("rejected", _) => format!("{:?} (rejected: {})", r.member, r.reason.as_deref().unwrap_or("")),
                    ("unreachable", _) => {
                        format!("{:?} (unreachable: {})", r.member, r.reason.as_deref().unwrap_or(""))
                    }
                    _ => format!("{:?} (no answer)", r.member),
                })
                .collect();
            bail!(
                "cannot unseal {}: {} of the {} approvals needed{} (request {id}); not approved by: {}",
                args.file.display(),
                valid,
                st.threshold,
                if impossible { String::new() } else { format!(" after {} s", args.timeout) },
                missing.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
