//! `concord consortium create|list`, the result file of `concord query
//! --consortium NAME --result-file FILE`, and `concord verify FILE
//! --group-key KEY` (offline: no node needed).
//!
//! A result file is self-contained: the answer, the session plan, every
//! party's sealed envelope, the analyst's per-query X25519 **secret** key
//! (disclosed after the fact: it was generated for this query only, so it
//! opens only this query's shares, which the answer already summarises) and
//! the consortium's attestation (a FROST signature over the statement of
//! [`concord_node::consortium::result_statement`]). `verify` recomputes the
//! statement from the plan and envelopes, checks the signature under the
//! group key given on the command line, opens the envelopes, reconstructs
//! the answer and compares it with the file's.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use concord_node::approval::ApprovalSignature;
use concord_node::consortium::{result_statement, Attestation, RESULT_FORMAT};
use concord_node::service::SessionPlan;
use concord_session::seal::{AnalystKey, Envelope};
use concord_session::ShareReport;
use concord_threshold::{GroupPublicKey, Signature};
use serde_json::{json, Value};

use crate::node::{api_address, call};

/// `concord consortium ...`.
#[derive(Subcommand, Clone, Debug)]
pub enum ConsortiumCommand {
    /// Create a consortium: the node asked (a member) runs a FROST key generation with the others (no dealer).
    Create {
        /// The consortium's name.
        name: String,
        /// The member nodes, comma-separated, in index order (the node asked must be one).
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
        /// How many members must sign a result (2 <= t <= n).
        #[arg(long)]
        threshold: u16,
        /// The member node's API, e.g. http://127.0.0.1:7300.
        #[arg(long, env = "CONCORD_NODE")]
        node: String,
    },
    /// List the consortia a node knows: name, members, threshold, group key, state.
    List {
        /// Ask this node's API (e.g. http://127.0.0.1:7300).
        #[arg(long, conflicts_with = "dir")]
        node: Option<String>,
        /// Read this node directory's store instead (the node need not run).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Refresh every member's key share (same group key, new shares; a share stolen before is useless after).
    Refresh {
        /// The consortium's name.
        name: String,
        /// A member node's API (it coordinates; every member must be up), e.g. http://127.0.0.1:7300.
        #[arg(long, env = "CONCORD_NODE")]
        node: String,
    },
    /// At a member that lost its key share (a replaced node): have t helpers rebuild it.
    Repair {
        /// The consortium's name.
        name: String,
        /// The helper members, comma-separated (at least the threshold; not the node repaired).
        #[arg(long, value_delimiter = ',', required = true)]
        helpers: Vec<String>,
        /// The consortium's group public key (`concord-group-v1:...`), obtained independently of the helpers.
        #[arg(long)]
        group_key: String,
        /// The API of the node being repaired, e.g. http://127.0.0.1:7300.
        #[arg(long, env = "CONCORD_NODE")]
        node: String,
    },
}

/// Arguments of `concord verify`.
#[derive(Args, Clone, Debug)]
pub struct VerifyArgs {
    /// The result file written by `concord query --result-file`.
    pub file: PathBuf,
    /// The consortium's group public key (`concord-group-v1:...`), obtained independently of the file.
    #[arg(long)]
    pub group_key: String,
    /// The group key of the data owners whose threshold approval the file carries, if it is
    /// another consortium than the one that signed the result (default: `--group-key`).
    #[arg(long)]
    pub approval_key: Option<String>,
}

/// `concord consortium ...`.
pub fn consortium(command: ConsortiumCommand) -> Result<()> {
    match command {
        ConsortiumCommand::Create { name, members, threshold, node } => {
            let addr = api_address(&node);
            let started = std::time::Instant::now();
            let body = json!({ "name": name, "members": members, "threshold": threshold });
            let v = call(&addr, "POST", "/api/consortia", Some(&body))?;
            println!(
                "Consortium {:?} is {}: {} of {} ({}); key generation took {:.3} s",
                v["name"].as_str().unwrap_or("?"),
                v["state"].as_str().unwrap_or("?"),
                v["threshold"],
                members.len(),
                members.join(", "),
                started.elapsed().as_secs_f64()
            );
            println!("group key {}", v["group_key"].as_str().unwrap_or("?"));
            Ok(())
        }
        ConsortiumCommand::Refresh { name, node } => {
            let started = std::time::Instant::now();
            let path = format!("/api/consortia/{name}/refresh");
            let v = call(&api_address(&node), "POST", &path, Some(&json!({})))?;
            println!(
                "Consortium {name:?} refreshed: every member holds a new key share; refresh took {:.3} s",
                started.elapsed().as_secs_f64()
            );
            println!("group key {} (unchanged)", v["group_key"].as_str().unwrap_or("?"));
            Ok(())
        }
        ConsortiumCommand::Repair { name, helpers, group_key, node } => {
            let started = std::time::Instant::now();
            let path = format!("/api/consortia/{name}/repair");
            let body = json!({ "helpers": helpers, "group_key": group_key });
            let v = call(&api_address(&node), "POST", &path, Some(&body))?;
            println!(
                "Consortium {name:?} repaired: the key share was rebuilt by {} and stored ({}); repair took {:.3} s",
                helpers.join(", "),
                v["state"].as_str().unwrap_or("?"),
                started.elapsed().as_secs_f64()
            );
            println!("group key {}", v["group_key"].as_str().unwrap_or("?"));
            Ok(())
        }
        ConsortiumCommand::List { node, dir, json } => {
            let list: Vec<Value> = match (node, dir) {
                (Some(node), _) => {
                    let v = call(&api_address(&node), "GET", "/api/consortia", None)?;
                    v["consortia"].as_array().cloned().unwrap_or_default()
                }
                (None, Some(dir)) => {
                    let (_, store) = crate::node::open_node(&dir)?;
                    concord_node::consortium::list(&store)?.into_iter().map(|r| json!(r)).collect()
                }
                (None, None) => bail!("give --node URL (a running node) or --dir DIR (a node directory)"),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&json!({ "consortia": list }))?);
                return Ok(());
            }
            if list.is_empty() {
                println!(
                    "No consortia. Create one with `concord consortium create NAME --members a,b,c --threshold 2`."
                );
                return Ok(());
            }
            println!("{:<16} {:<9} {:<5} {:<32} GROUP KEY", "NAME", "STATE", "T/N", "MEMBERS");
            for c in list {
                let members: Vec<&str> =
                    c["members"].as_array().map(|m| m.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
                println!(
                    "{:<16} {:<9} {:<5} {:<32} {}",
                    c["name"].as_str().unwrap_or("?"),
                    c["state"].as_str().unwrap_or("?"),
                    format!("{}/{}", c["threshold"], members.len()),
                    members.join(","),
                    c["group_key"].as_str().unwrap_or("-")
                );
                if let Some(reason) = c["reason"].as_str() {
                    println!("    {reason}");
                }
            }
            Ok(())
        }
    }
}

/// The answer as in `--format json`: columns, rows, privacy.
pub fn answer_json(answer: &concord_session::Answer) -> Value {
    let rows: Vec<Value> =
        answer.table.rows.iter().map(|r| Value::Array(r.iter().map(crate::run::value_json).collect())).collect();
    json!({
        "columns": answer.table.columns,
        "rows": rows,
        "privacy": answer.privacy.as_ref().map(crate::run::privacy_json),
    })
}

/// After `concord query --consortium`: the session's attestation must be
/// there; write the result file if asked.
pub fn after_query(
    view: &Value,
    consortium: &str,
    key: &AnalystKey,
    answer: &Value,
    file: Option<&std::path::Path>,
) -> Result<()> {
    let att = &view["attestation"];
    if let Some(e) = att["error"].as_str() {
        bail!("the result was computed, but consortium {consortium:?} did not sign it: {e}");
    }
    let att: Attestation = serde_json::from_value(att.clone())
        .with_context(|| format!("the session has no attestation by consortium {consortium:?}"))?;
    if att.consortium != consortium {
        bail!("the result is signed by consortium {:?}, not {consortium:?}", att.consortium);
    }
    eprintln!("signed by consortium {consortium:?} ({}), group key {}", att.signers.join(", "), att.group_key);
    let Some(path) = file else { return Ok(()) };
    let envelopes: Vec<Value> =
        view["results"].as_array().map(|rs| rs.iter().map(|r| r["envelope"].clone()).collect()).unwrap_or_default();
    let doc = json!({
        "format": RESULT_FORMAT,
        "session": view["id"],
        "answer": answer,
        "plan": view["plan"],
        "envelopes": envelopes,
        "analyst_secret_key": key.disclose(),
        "analyst_secret_key_note": "generated for this query only and disclosed after the fact: it opens only \
                                    this query's result shares, which the answer already summarises",
        "attestation": att,
        "approval": view["approval"],
    });
    std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("cannot write the result file {}", path.display()))?;
    eprintln!(
        "result file {} (check it with `concord verify {} --group-key {}`)",
        path.display(),
        path.display(),
        att.group_key
    );
    Ok(())
}

/// The first difference between two answers (numbers equal to 12 digits).
fn difference(path: &str, file: &Value, shares: &Value) -> Option<String> {
    match (file, shares) {
        (Value::Number(a), Value::Number(b)) => {
            let (x, y) = (a.as_f64().unwrap_or(f64::NAN), b.as_f64().unwrap_or(f64::NAN));
            let same = a == b || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1.0);
            (!same).then(|| format!("{path} is {a} in the file, {b} from the shares"))
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            a.iter().zip(b).enumerate().find_map(|(i, (x, y))| difference(&format!("{path}[{i}]"), x, y))
        }
        (Value::Object(a), Value::Object(b)) if a.len() == b.len() => a.iter().find_map(|(k, x)| match b.get(k) {
            Some(y) => difference(&format!("{path}.{k}"), x, y),
            None => Some(format!("{path}.{k} is in the file, not in the reconstructed answer")),
        }),
        (a, b) if a == b => None,
        (a, b) => Some(format!("{path} is {a} in the file, {b} from the shares")),
    }
}

/// `concord verify`.
pub fn verify(args: VerifyArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let doc: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", args.file.display()))?;
    if doc["format"].as_str() != Some(RESULT_FORMAT) {
        bail!("{} is not a Concord result file (format {RESULT_FORMAT:?} expected)", args.file.display());
    }
    let key: GroupPublicKey = args.group_key.parse().map_err(|e| anyhow!("--group-key {:?}: {e}", args.group_key))?;
    let plan: SessionPlan = serde_json::from_value(doc["plan"].clone()).context("the file's plan")?;
    let envelopes: Vec<Envelope> = serde_json::from_value(doc["envelopes"].clone()).context("the file's envelopes")?;
    let att: Attestation = serde_json::from_value(doc["attestation"].clone()).context("the file's attestation")?;
    let mut failed: Vec<String> = Vec::new();
    let mut check = |what: &str, outcome: Result<String, String>| match outcome {
        Ok(detail) => println!("{what}: OK ({detail})"),
        Err(why) => {
            println!("{what}: FAILED: {why}");
            failed.push(format!("{what}: {why}"));
        }
    };

    // 1. The statement, recomputed from the plan and the envelopes.
    let statement = result_statement(&plan, &envelopes).map_err(|e| anyhow!("{e}"))?;
    let request_hash = concord_node::hex(&statement.request_hash);
    let transcript_hash = concord_node::hex(&statement.transcript_hash);
    check(
        "plan",
        if request_hash == att.request_hash {
            Ok(format!("session {}, request hash {}", plan.id, &request_hash[..16]))
        } else {
            Err(format!(
                "the plan's hash is {request_hash}, but the signed request hash is {} (the plan was changed)",
                att.request_hash
            ))
        },
    );
    check(
        "envelopes",
        if transcript_hash == att.transcript_hash {
            Ok(format!("{} envelopes, transcript hash {}", envelopes.len(), &transcript_hash[..16]))
        } else {
            Err(format!(
                "the envelopes hash to transcript {transcript_hash}, but the signed transcript hash is {} (an envelope \
                 was changed, added, removed or reordered)",
                att.transcript_hash
            ))
        },
    );
    // 2. The signature, under the key given on the command line (not the file's).
    let sig = att.signature.parse::<Signature>().map_err(|e| e.to_string());
    let verified = sig.and_then(|sig| {
        concord_threshold::verify(&key, &statement.digest(), &sig).map_err(|_| {
            let hint = if att.group_key == key.to_string() {
                "over the statement recomputed from the file's plan and envelopes".to_owned()
            } else {
                format!("(the file says it was signed by group key {}, another consortium's)", att.group_key)
            };
            format!("the signature does not verify under group key {key} {hint}")
        })
    });
    check(
        "signature",
        verified.map(|()| {
            format!("consortium {:?}, signed by {}, group key {key}", att.consortium, att.signers.join(", "))
        }),
    );
    // 2b. The data owners' threshold approval of the request, if the session needed one.
    if !doc["approval"].is_null() {
        let outcome = serde_json::from_value::<ApprovalSignature>(doc["approval"].clone())
            .map_err(|e| format!("the file's approval is malformed: {e}"))
            .and_then(|a| {
                let key = match &args.approval_key {
                    Some(k) => k.parse::<GroupPublicKey>().map_err(|e| format!("--approval-key {k:?}: {e}"))?,
                    None => key,
                };
                concord_node::approval::check(&plan, &a, &key).map(|()| {
                    format!(
                        "request {} approved by {} of consortium {:?} ({}), group key {key}",
                        a.request_hash.get(..16).unwrap_or(&a.request_hash),
                        a.signers.len(),
                        a.consortium,
                        a.signers.join(", ")
                    )
                })
            });
        check("approval", outcome);
    }
    // 3. The shares, opened with the disclosed per-query key.
    let analyst = doc["analyst_secret_key"]
        .as_str()
        .and_then(AnalystKey::from_disclosed)
        .ok_or_else(|| anyhow!("the file's analyst_secret_key is not 64 hex digits"))?;
    let mut reports: Vec<ShareReport> = Vec::with_capacity(envelopes.len());
    let mut open_errors = Vec::new();
    if concord_node::hex(&analyst.public()) != plan.analyst_key {
        open_errors.push("the disclosed key is not the one the plan's shares were sealed to".to_owned());
    } else {
        for (i, env) in envelopes.iter().enumerate() {
            let name = plan.parties.get(i).map_or("?", |p| p.name.as_str());
            match analyst.open(&plan.id, i, env).map_err(|e| e.to_string()).and_then(|plain| {
                serde_json::from_slice::<ShareReport>(&plain).map_err(|e| format!("not a result share: {e}"))
            }) {
                Ok(r) => reports.push(r),
                Err(e) => open_errors.push(format!("the envelope of party {i} ({name}): {e}")),
            }
        }
    }
    let opened = open_errors.is_empty();
    check(
        "shares",
        if opened {
            Ok(format!("{} opened with the disclosed key", reports.len()))
        } else {
            Err(open_errors.join("; "))
        },
    );
    // 4. The answer, reconstructed from the shares and compared with the file's.
    if opened {
        let outcome = plan
            .spec
            .prepare()
            .map_err(|e| e.to_string())
            .and_then(|p| p.reconstruct(&reports).map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot reconstruct the answer from the shares: {e}"))
            .and_then(|answer| {
                let rebuilt = answer_json(&answer);
                match difference("answer", &doc["answer"], &rebuilt) {
                    None => Ok(format!(
                        "{} rows, equal to the answer reconstructed from the signed shares",
                        rebuilt["rows"].as_array().map_or(0, Vec::len)
                    )),
                    Some(d) => Err(format!("the file's answer is not the one the signed shares give: {d}")),
                }
            });
        check("answer", outcome);
    } else {
        check("answer", Err("not checked: the shares could not be opened".into()));
    }
    if failed.is_empty() {
        println!("OK: the answer is what the signed shares of session {} give", plan.id);
        Ok(())
    } else {
        bail!("verification FAILED: {}", failed.join("; "))
    }
}
