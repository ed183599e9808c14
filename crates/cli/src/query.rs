//! `concord query`: the analyst's client of a node's API. Submits a query
//! as a session, shows its progress, fetches the result shares (sealed to a
//! key generated for this query only), and reconstructs the answer here.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use concord_session::seal::{AnalystKey, Envelope};
use concord_session::{SessionOptions, SessionSpec, ShareReport};
use rand_chacha::rand_core::SeedableRng;
use serde_json::{json, Value};

use crate::node::{api_address, call};
use crate::run::{print_output, Format, InputCheckArg, OrderMethodArg, RevealArg, RunOutput, SchemeArg};

/// Arguments of `concord query`.
#[derive(Args, Clone, Debug)]
pub struct QueryArgs {
    /// The coordinating node's API, e.g. http://127.0.0.1:7300.
    #[arg(long, env = "CONCORD_NODE")]
    pub node: String,
    /// The query.
    #[arg(long)]
    pub sql: String,
    /// The parties (node names, comma-separated), in party order.
    #[arg(long, value_delimiter = ',', required = true)]
    pub parties: Vec<String>,
    /// The dataset every party computes on (default: the table after FROM).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Threshold t for Shamir sharing (default (n-1)/2; n-1 selects additive sharing).
    #[arg(long)]
    pub threshold: Option<usize>,
    /// Sharing scheme.
    #[arg(long, value_enum)]
    pub scheme: Option<SchemeArg>,
    /// Suppress every group with fewer than K rows (decided inside MPC).
    #[arg(long, value_name = "K")]
    pub min_group_size: Option<u64>,
    /// Input check against poisoned statistics.
    #[arg(long, value_enum, value_name = "POLICY")]
    pub input_check: Option<InputCheckArg>,
    /// What the analyst receives (see `concord run --help`).
    #[arg(long, value_enum, default_value = "sums")]
    pub reveal: RevealArg,
    /// How order statistics are computed.
    #[arg(long, value_enum, default_value = "auto")]
    pub order_method: OrderMethodArg,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Give up (and cancel the session) after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Your analyst name: every node keeps a privacy budget per analyst and dataset.
    #[arg(long, env = "CONCORD_ANALYST", default_value = "anonymous")]
    pub analyst: String,
    #[command(flatten)]
    pub privacy: crate::run::PrivacyArgs,
    /// Have this consortium's members sign the result (see `concord consortium`).
    #[arg(long, value_name = "NAME")]
    pub consortium: Option<String>,
    /// Write a self-contained, verifiable result file (`concord verify FILE --group-key KEY`).
    #[arg(long, value_name = "FILE", requires = "consortium")]
    pub result_file: Option<std::path::PathBuf>,
    /// Sign the request with this analyst secret key (`concord analyst new`);
    /// required by nodes with a policy. `--analyst` must be the name the nodes registered it under.
    #[arg(long, env = "CONCORD_ANALYST_KEY")]
    pub key: Option<std::path::PathBuf>,
    /// Validity of the signed request, in seconds.
    #[arg(long, default_value_t = 600)]
    pub request_ttl_secs: u64,
    /// Write the signed request to this file and stop (for `concord policy check`).
    #[arg(long)]
    pub request_out: Option<std::path::PathBuf>,
}

/// The signed request for this query.
fn signed_request(
    args: &QueryArgs,
    options: &SessionOptions,
    recipient: [u8; 32],
    rng: &mut rand_chacha::ChaCha20Rng,
) -> Result<Option<concord_access::SignedRequest>> {
    let Some(path) = &args.key else { return Ok(None) };
    let key = crate::access::read_key(path)?;
    let dataset = match &args.dataset {
        Some(d) => d.clone(),
        None => concord_node::service::from_table(&args.sql)
            .ok_or_else(|| anyhow!("the query names no table after FROM; give --dataset"))?,
    };
    let now = concord_node::access::now_ms();
    let request = concord_access::Request {
        version: concord_access::REQUEST_VERSION,
        analyst: args.analyst.clone(),
        sql: args.sql.clone(),
        dataset,
        parties: args.parties.clone(),
        options: concord_node::access::request_options(options).map_err(|e| anyhow!("{e}"))?,
        recipient: concord_access::RecipientKey(recipient),
        nonce: concord_access::Nonce::random(rng),
        issued_at_ms: now,
        expires_at_ms: now.saturating_add(args.request_ttl_secs.saturating_mul(1000)),
    };
    request.validate().map_err(|e| anyhow!("{e}"))?;
    Ok(Some(concord_access::sign(request, &key)))
}

fn phase_line(view: &Value) -> String {
    let progress = view["progress"].as_array().cloned().unwrap_or_default();
    let parts: Vec<String> = progress
        .iter()
        .map(|p| format!("{}: {}", p["party"].as_str().unwrap_or("?"), p["phase"].as_str().unwrap_or("?")))
        .collect();
    format!("{} | {}", view["state"].as_str().unwrap_or("?"), parts.join(", "))
}

/// `concord query`.
pub fn query(args: QueryArgs) -> Result<()> {
    let addr = api_address(&args.node);
    let mut rng = rand_chacha::ChaCha20Rng::from_os_rng();
    let key = AnalystKey::generate(&mut rng);
    let options = SessionOptions {
        threshold: args.threshold,
        scheme: args.scheme.map(crate::run::scheme_choice),
        min_group_size: args.min_group_size,
        input_check: args.input_check.map(|c| concord_query::input_check::InputCheck::from(c).name().to_owned()),
        reveal_final: args.reveal == RevealArg::Final,
        order_method: Some(crate::run::order_method_name(args.order_method).to_owned()),
        privacy: args.privacy.privacy(),
    };
    let signed = signed_request(&args, &options, key.public(), &mut rng)?;
    if let Some(out) = &args.request_out {
        let signed =
            signed.ok_or_else(|| anyhow!("--request-out needs --key: only a signed request can be checked"))?;
        std::fs::write(out, signed.to_json().map_err(|e| anyhow!("{e}"))?)
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("signed request {} written to {}", signed.request.hash_hex(), out.display());
        return Ok(());
    }
    let request = json!({
        "sql": args.sql,
        "parties": args.parties,
        "dataset": signed.as_ref().map(|s| s.request.dataset.clone()).or(args.dataset.clone()),
        "options": options,
        "analyst_key": concord_session::seal::hex(&key.public()),
        "analyst": args.analyst,
        "request": signed,
        "consortium": args.consortium,
    });
    let start = Instant::now();
    let created = call(&addr, "POST", "/api/sessions", Some(&request))?;
    let id = created["id"].as_str().ok_or_else(|| anyhow!("the node answered without a session id"))?.to_owned();
    let n = args.parties.len() as u64;
    let bar = indicatif::ProgressBar::new(n);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} session {prefix} [{bar:20}] {pos}/{len} parties done  {msg}",
        )
        .map_err(|e| anyhow!("{e}"))?
        .progress_chars("=> "),
    );
    bar.set_prefix(id.get(..8).unwrap_or(&id).to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    let deadline = start + Duration::from_secs(args.timeout_secs);
    let view = loop {
        let v = call(&addr, "GET", &format!("/api/sessions/{id}?wait_ms=1000"), None)?;
        let done = v["progress"]
            .as_array()
            .map_or(0, |ps| ps.iter().filter(|p| p["phase"].as_str().is_some_and(|s| s.starts_with("done"))).count());
        bar.set_position(done as u64);
        bar.set_message(phase_line(&v));
        match v["state"].as_str() {
            Some("done" | "failed" | "cancelled") => break v,
            _ if Instant::now() >= deadline => {
                bar.finish_and_clear();
                let _ = call(
                    &addr,
                    "POST",
                    &format!("/api/sessions/{id}/cancel"),
                    Some(&json!({"reason": "the analyst's timeout"})),
                );
                bail!("session {id} did not finish within {} s; cancelled", args.timeout_secs);
            }
            _ => {}
        }
    };
    bar.finish_and_clear();
    let state = view["state"].as_str().unwrap_or("?");
    if state != "done" {
        let reason = view["reason"].as_str().unwrap_or("no reason recorded");
        bail!("session {id} {state}: {reason}");
    }
    // The analyst checks that the plan is what it asked for before trusting it.
    let spec: SessionSpec = serde_json::from_value(view["plan"]["spec"].clone()).context("the session's plan")?;
    let parties: Vec<String> = serde_json::from_value(view["parties"].clone()).context("the session's parties")?;
    if spec.sql != args.sql || parties != args.parties {
        bail!("the node ran another query or party list than requested; refusing the result");
    }
    let asked = concord_session::privacy::resolve(&args.sql, options.privacy)?;
    if asked.is_some() && spec.privacy != asked {
        bail!("the node ran the query with other privacy parameters than requested; refusing the result");
    }
    if view["plan"]["analyst_key"].as_str() != Some(concord_session::seal::hex(&key.public()).as_str()) {
        bail!("the session's results are sealed to another key than this query's; refusing the result");
    }
    let results = view["results"].as_array().cloned().unwrap_or_default();
    let mut reports: Vec<ShareReport> = Vec::with_capacity(results.len());
    for (i, r) in results.iter().enumerate() {
        if r["party"].as_u64() != Some(i as u64) {
            bail!("result share {i} is missing or out of order");
        }
        let env: Envelope =
            serde_json::from_value(r["envelope"].clone()).with_context(|| format!("result share {i}"))?;
        let plain = key.open(&id, i, &env)?;
        reports.push(serde_json::from_slice(&plain).with_context(|| format!("party {i}'s result share"))?);
    }
    let prepared = spec.prepare()?;
    let answer = prepared.reconstruct(&reports)?;
    if let Some(c) = &args.consortium {
        let answer = crate::consortium::answer_json(&answer);
        crate::consortium::after_query(&view, c, &key, &answer, args.result_file.as_deref())?;
    }
    let out = RunOutput::from_answer(answer, start.elapsed().as_secs_f64());
    print_output(&out, args.format)?;
    eprintln!("session {id} through node {addr}: {:.3} s end to end", start.elapsed().as_secs_f64());
    Ok(())
}
