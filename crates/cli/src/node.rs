//! `concord init`, `concord dataset ...` and `concord node`: the node daemon
//! of one organisation (library: `concord-node`).

use std::io::Write as _;

use rand_core::TryRngCore as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use concord_net::peer::PeerPort;
use concord_node::datasets::{self, Revalidation};
use concord_node::identity::NodeIdentity;
use concord_node::pairing::{self, Invitation, PairFields, PairReply, PairRequest};
use concord_node::server::{self, AppState};
use concord_node::service::{Service, Timing};
use concord_node::store::STORE_FILE;
use concord_node::{hex, unix_now, DatasetStatus, NodeConfig, PeerRecord, Store, CONFIG_FILE};

/// The node directory option shared by the node commands.
#[derive(Args, Clone, Debug)]
pub struct DirArg {
    /// The node directory (configuration, identity, store).
    #[arg(long, env = "CONCORD_DIR", default_value = "concord-node")]
    pub dir: PathBuf,
}

/// Arguments of `concord init`.
#[derive(Args, Clone, Debug)]
pub struct InitArgs {
    /// This node's name (its organisation), e.g. hospital-a.
    #[arg(long)]
    pub name: String,
    /// Listen address of the HTTP API, written to concord.toml (default 127.0.0.1:7300).
    #[arg(long)]
    pub api_listen: Option<SocketAddr>,
    /// Listen address for peers' MPC connections, written to concord.toml (default 127.0.0.1:7301).
    #[arg(long)]
    pub mpc_listen: Option<SocketAddr>,
    /// MPC address (HOST:PORT) given to peers at pairing, if not the listen address (default: --mpc-listen).
    #[arg(long)]
    pub advertise_address: Option<String>,
    #[command(flatten)]
    pub dir: DirArg,
}

/// `concord dataset` subcommands.
#[derive(Subcommand, Clone, Debug)]
pub enum DatasetCommand {
    /// Register a local data file (CSV or Parquet): validated against the schema, hashed, recorded.
    Add {
        /// The dataset's name (letters, digits, '-', '_', '.').
        name: String,
        /// The data file.
        #[arg(long)]
        file: PathBuf,
        /// The schema file (TOML), the public description of the data.
        #[arg(long)]
        schema: PathBuf,
        #[command(flatten)]
        dir: DirArg,
    },
    /// List registered datasets (with local facts: row count, file).
    List {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Re-check registered datasets whose files changed (all, or the one named).
    Check {
        /// Only this dataset.
        name: Option<String>,
        #[command(flatten)]
        dir: DirArg,
    },
}

/// `concord budget` subcommands.
#[derive(Subcommand, Clone, Debug)]
pub enum BudgetCommand {
    /// Every analyst's privacy budget, spent and remaining, per dataset (zCDP rho, and (epsilon, 1e-6)).
    List {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Set an analyst's budget on a dataset (replaces the default of `[privacy] budget_rho`).
    Set {
        /// The analyst's name.
        #[arg(long)]
        analyst: String,
        /// The dataset.
        #[arg(long)]
        dataset: String,
        /// The budget, in zCDP rho (an epsilon-DP query costs epsilon^2 / 2 at most).
        #[arg(long)]
        rho: f64,
        #[command(flatten)]
        dir: DirArg,
    },
}

/// `concord budget ...`.
pub fn budget(command: BudgetCommand) -> Result<()> {
    match command {
        BudgetCommand::List { dir } => {
            let (config, store) = open_node(&dir.dir)?;
            let default = config.privacy.budget_rho;
            println!("Default budget per analyst and dataset: rho {default}");
            let list = store.list_budgets(default)?;
            if list.is_empty() {
                println!("No differentially private query has run here, and no budget was set.");
                return Ok(());
            }
            println!(
                "{:<20} {:<20} {:>10} {:>10} {:>10}  REMAINING (epsilon, 1e-6)",
                "ANALYST", "DATASET", "SPENT", "BUDGET", "LEFT"
            );
            for b in list {
                let eps = concord_session::privacy::shown_epsilon(b.remaining());
                println!(
                    "{:<20} {:<20} {:>10.6} {:>10.6} {:>10.6}  {eps}",
                    b.analyst,
                    b.dataset,
                    b.spent,
                    b.budget,
                    b.remaining()
                );
            }
            Ok(())
        }
        BudgetCommand::Set { analyst, dataset, rho, dir } => {
            concord_node::config::check_name(&analyst).map_err(|e| anyhow::anyhow!("analyst name {analyst:?}: {e}"))?;
            concord_node::config::check_name(&dataset).map_err(|e| anyhow::anyhow!("dataset name {dataset:?}: {e}"))?;
            let (_, mut store) = open_node(&dir.dir)?;
            store.set_budget(&analyst, &dataset, rho)?;
            let b = store.budget(&analyst, &dataset, rho)?;
            println!(
                "Budget of {analyst:?} on {dataset:?}: rho {rho} ({:.6} spent, {:.6} left)",
                b.spent,
                b.remaining()
            );
            Ok(())
        }
    }
}

/// `concord peer` subcommands.
#[derive(Subcommand, Clone, Debug)]
pub enum PeerCommand {
    /// Print a one-time invitation for another node (this node must be running `concord node`).
    Invite {
        /// Lifetime of the invitation, in seconds.
        #[arg(long, default_value_t = pairing::DEFAULT_TTL_SECS)]
        ttl_secs: u64,
        /// API address (HOST:PORT) the other node will contact (default: `api_listen` of concord.toml).
        #[arg(long, env = "CONCORD_INVITE_API")]
        api: Option<String>,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Pair with the node that printed INVITATION: exchange and pin each other's keys.
    Join {
        /// The invitation (`concord-invite:v1:...`).
        invitation: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// List paired peers (with their health, when the node is running).
    List {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Revoke the pairing with a peer: it can no longer connect or take part in sessions.
    Remove {
        /// The peer's name.
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
}

/// Arguments of `concord node`.
#[derive(Args, Clone, Debug)]
pub struct NodeArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// Listen address of the HTTP API (overrides `api_listen` of concord.toml; port 0 picks a free port).
    #[arg(long)]
    pub api_listen: Option<SocketAddr>,
    /// Listen address of the peer port (overrides `mpc_listen` of concord.toml).
    #[arg(long)]
    pub mpc_listen: Option<SocketAddr>,
}

/// `concord init`.
pub fn init(args: InitArgs) -> Result<()> {
    let dir = &args.dir.dir;
    concord_node::config::check_name(&args.name)
        .map_err(|r| anyhow::anyhow!("invalid node name {:?}: {r}", args.name))?;
    if let Some(a) = &args.advertise_address {
        concord_node::config::check_address(a)
            .map_err(|r| anyhow::anyhow!("invalid --advertise-address {a:?}: {r}"))?;
    }
    if let Some(existing) = NodeIdentity::exists_in(dir) {
        bail!("{} already holds a node identity ({}); refusing to overwrite it", dir.display(), existing.display());
    }
    let config_path = dir.join(CONFIG_FILE);
    if config_path.exists() {
        bail!("{} already exists; refusing to overwrite it", config_path.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let identity = NodeIdentity::generate(&args.name)?;
    identity.write(dir)?;
    let mut config = NodeConfig::new(&args.name);
    if let Some(a) = args.api_listen {
        config.api_listen = a;
    }
    if let Some(a) = args.mpc_listen {
        config.mpc_listen = a;
    }
    config.advertise_address = args.advertise_address;
    config.write_commented(&config_path)?;
    let data_dir = config.data_dir_in(dir);
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut store = Store::open(&data_dir.join(STORE_FILE))?;
    store.set_auditor(identity.name(), identity.signing_key().clone())?; // every write is audited
    store.record_event("node.init", &format!("node {:?} initialised", args.name))?;
    let public = identity.public();
    println!("Initialised node {:?} in {}", public.name, dir.display());
    println!();
    println!("  Ed25519 public key   {}", public.ed25519_public);
    println!("  TLS fingerprint      {}", public.tls_fingerprint);
    println!();
    println!("Secret keys are in {} (mode 0600); keep them there.", NodeIdentity::dir_in(dir).display());
    println!("Next steps:");
    println!("  edit {} (listen addresses, timeouts)", config_path.display());
    println!("  concord dataset add NAME --file DATA.csv --schema SCHEMA.toml --dir {}", dir.display());
    println!("  concord node --dir {}", dir.display());
    Ok(())
}

/// Open the node in `dir`: its configuration and store.
pub fn open_node(dir: &Path) -> Result<(NodeConfig, Store)> {
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.exists() {
        bail!("{} not found: run `concord init --name NAME --dir {}` first", config_path.display(), dir.display());
    }
    let config = NodeConfig::load(&config_path)?;
    let mut store = Store::open(&config.data_dir_in(dir).join(STORE_FILE))?;
    crate::audit::attach(&mut store, dir, &config.name)?; // every write is audited
    Ok((config, store))
}

/// `concord dataset ...`.
pub fn dataset(command: DatasetCommand) -> Result<()> {
    match command {
        DatasetCommand::Add { name, file, schema, dir } => {
            let (_, mut store) = open_node(&dir.dir)?;
            let d = datasets::register(&mut store, &name, &file, &schema)?;
            println!("Registered dataset {:?}: {} rows, sha256 {}", d.name, d.row_count, d.file_sha256);
            Ok(())
        }
        DatasetCommand::List { dir } => {
            let (_, store) = open_node(&dir.dir)?;
            let list = store.list_datasets()?;
            if list.is_empty() {
                println!("No datasets. Add one with `concord dataset add NAME --file FILE --schema SCHEMA`.");
                return Ok(());
            }
            println!("{:<20} {:<8} {:>10}  {:<16} FILE", "NAME", "STATUS", "ROWS", "SHA256");
            for d in list {
                let status = match &d.status {
                    DatasetStatus::Valid => "valid",
                    DatasetStatus::Invalid(_) => "invalid",
                };
                let short = d.file_sha256.get(..16).unwrap_or(&d.file_sha256);
                println!("{:<20} {:<8} {:>10}  {:<16} {}", d.name, status, d.row_count, short, d.file_path.display());
                if let DatasetStatus::Invalid(reason) = &d.status {
                    println!("    {reason}");
                }
            }
            Ok(())
        }
        DatasetCommand::Check { name, dir } => {
            let (_, mut store) = open_node(&dir.dir)?;
            let names = match name {
                Some(n) => vec![n],
                None => store.list_datasets()?.into_iter().map(|d| d.name).collect(),
            };
            let mut invalid = 0;
            for n in names {
                match datasets::revalidate(&mut store, &n)? {
                    Revalidation::Unchanged => println!("{n}: unchanged"),
                    Revalidation::Updated { rows, sha256 } => {
                        println!("{n}: changed, valid ({rows} rows, sha256 {sha256})")
                    }
                    Revalidation::Invalid(reason) => {
                        invalid += 1;
                        println!("{n}: INVALID: {reason}");
                    }
                }
            }
            if invalid > 0 {
                bail!("{invalid} dataset(s) invalid");
            }
            Ok(())
        }
    }
}

/// `concord peer ...`.
pub fn peer(command: PeerCommand) -> Result<()> {
    match command {
        PeerCommand::Invite { ttl_secs, api, dir } => {
            let dir = &dir.dir;
            let (config, mut store) = open_node(dir)?;
            if api.is_none() && config.api_listen.ip().is_unspecified() {
                bail!(
                    "api_listen is {}, which the other node cannot contact; give the address it reaches this node's API at with --api HOST:PORT",
                    config.api_listen
                );
            }
            let public = NodeIdentity::load(dir, &config.name)?.public();
            let mut secret = [0u8; 32];
            rand_core::OsRng.try_fill_bytes(&mut secret).context("operating system RNG failed")?;
            let ttl = i64::try_from(ttl_secs).context("--ttl-secs is too large")?;
            let expires = unix_now().saturating_add(ttl);
            let id = pairing::invitation_id(&secret);
            store.create_invitation(&id, &hex(&pairing::mac_key(&secret)), expires)?;
            let invitation = Invitation {
                api: api.unwrap_or_else(|| config.api_listen.to_string()),
                name: public.name,
                ed25519_public: public.ed25519_public,
                tls_fingerprint: public.tls_fingerprint,
                secret: hex(&secret),
                expires,
            };
            println!("{}", invitation.encode());
            secret.fill(0);
            eprintln!(
                "One-time invitation for node {:?}, valid {ttl_secs} s; give it to the other operator over a trusted channel.",
                config.name
            );
            eprintln!("They run: concord peer join INVITATION --dir THEIR_DIR (while `concord node` runs here)");
            Ok(())
        }
        PeerCommand::Join { invitation, dir } => join(&invitation, &dir.dir),
        PeerCommand::Remove { name, dir } => {
            let (_, mut store) = open_node(&dir.dir)?;
            store.revoke_peer(&name)?;
            println!("Revoked the pairing with {name:?}: it can no longer connect or take part in sessions.");
            Ok(())
        }
        PeerCommand::List { dir } => {
            let (config, store) = open_node(&dir.dir)?;
            let peers = store.list_peers()?;
            if peers.is_empty() {
                println!("No peers. Pair with `concord peer invite` here and `concord peer join` there.");
                return Ok(());
            }
            // Health comes from the running node's failure detector, if it runs.
            let health: serde_json::Value = http_request(&config.api_listen.to_string(), "GET", "/api/peers", None)
                .ok()
                .filter(|(status, _)| *status == 200)
                .and_then(|(_, body)| serde_json::from_str(&body).ok())
                .unwrap_or_default();
            let health_of = |name: &str| -> String {
                let found = health["peers"].as_array().and_then(|ps| ps.iter().find(|p| p["name"] == name));
                found.and_then(|p| p["health"].as_str()).unwrap_or("-").to_owned()
            };
            println!(
                "{:<20} {:<16} {:<16} {:<22} {:<22} {:<17} PAIRED_AT",
                "NAME", "TLS", "ED25519", "MPC", "API", "HEALTH"
            );
            for p in peers {
                let short = |s: &str| s.get(..16).unwrap_or(s).to_owned();
                let health = if p.revoked_at.is_some() { "revoked".to_owned() } else { health_of(&p.name) };
                let api = if p.api_address.is_empty() { "-" } else { &p.api_address };
                println!(
                    "{:<20} {:<16} {:<16} {:<22} {:<22} {:<17} {}",
                    p.name,
                    short(&p.tls_fingerprint),
                    short(&p.ed25519_public),
                    p.address,
                    api,
                    health,
                    p.added_at
                );
            }
            Ok(())
        }
    }
}

fn join(text: &str, dir: &Path) -> Result<()> {
    let invitation = Invitation::parse(text).map_err(anyhow::Error::msg)?;
    let now = unix_now();
    if now >= invitation.expires {
        bail!(
            "invitation_expired: the invitation from {:?} expired at {} ({} s ago); ask for a new one",
            invitation.name,
            invitation.expires,
            now - invitation.expires
        );
    }
    let (config, mut store) = open_node(dir)?;
    let public = NodeIdentity::load(dir, &config.name)?.public();
    let secret = invitation.secret_bytes();
    let key = pairing::mac_key(&secret);
    let id = pairing::invitation_id(&secret);
    let fields = PairFields {
        name: public.name,
        ed25519_public: public.ed25519_public,
        tls_fingerprint: public.tls_fingerprint,
        mpc_address: config.advertised_mpc_address(),
    };
    let mac = fields.mac(&key, &id, false);
    let request = PairRequest {
        invitation_id: id.clone(),
        fields,
        expect_ed25519_public: invitation.ed25519_public.clone(),
        expect_tls_fingerprint: invitation.tls_fingerprint.clone(),
        mac,
    };
    let (status, body) = post_json(&invitation.api, "/api/pair", &serde_json::to_string(&request)?)
        .with_context(|| format!("cannot reach node {:?} at {}", invitation.name, invitation.api))?;
    if status != 200 {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let code = v["error"]["code"].as_str().unwrap_or("http_error");
        let message = v["error"]["message"].as_str().unwrap_or(&body);
        bail!("{code}: node {:?} refused the pairing (HTTP {status}): {message}", invitation.name);
    }
    let reply: PairReply =
        serde_json::from_str(&body).with_context(|| format!("node {:?} sent a malformed reply", invitation.name))?;
    if !reply.fields.verify(&key, &id, true, &reply.mac) {
        bail!("bad_mac: the reply of {} does not verify: it does not know the invitation's secret", invitation.api);
    }
    if reply.fields.ed25519_public != invitation.ed25519_public
        || reply.fields.tls_fingerprint != invitation.tls_fingerprint
        || reply.fields.name != invitation.name
    {
        bail!(
            "identity_mismatch: the node at {} answered with a name, key or fingerprint other than the invitation's",
            invitation.api
        );
    }
    reply.fields.check().map_err(|e| anyhow::anyhow!("node {:?} sent a malformed reply: {e}", invitation.name))?;
    let peer = PeerRecord {
        name: reply.fields.name,
        address: reply.fields.mpc_address,
        api_address: invitation.api,
        ed25519_public: reply.fields.ed25519_public,
        tls_fingerprint: reply.fields.tls_fingerprint,
        added_at: unix_now(),
        revoked_at: None,
    };
    store.add_peer(&peer).with_context(|| {
        format!(
            "node {:?} recorded the pairing, but it cannot be stored here; remove the conflict and pair again",
            peer.name
        )
    })?;
    println!("Paired with {:?}", peer.name);
    println!("  Ed25519 public key   {}", peer.ed25519_public);
    println!("  TLS fingerprint      {}", peer.tls_fingerprint);
    println!("  MPC address          {}", peer.address);
    Ok(())
}

/// POST `body` (JSON) to `http://addr{path}` over plain HTTP/1.1; (status, body).
fn post_json(addr: &str, path: &str, body: &str) -> Result<(u16, String)> {
    http_request(addr, "POST", path, Some(body))
}

/// One plain HTTP/1.1 request with an optional JSON body; (status, body).
pub fn http_request(addr: &str, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
    use std::io::Read as _;
    use std::net::{TcpStream, ToSocketAddrs as _};
    let target = addr.to_socket_addrs()?.next().with_context(|| format!("{addr} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.take(64 << 20).read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, rest) = response.split_once("\r\n\r\n").context("malformed HTTP response")?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).context("malformed HTTP status line")?;
    Ok((status, rest.to_owned()))
}

/// `concord node`: serve the API and the peer port until Ctrl-C or SIGTERM.
pub fn node(args: NodeArgs) -> Result<()> {
    let dir = &args.dir.dir;
    let (config, mut store) = open_node(dir)?;
    let identity = NodeIdentity::load(dir, &config.name)?;
    let public = identity.public();
    tracing::info!(name = %public.name, ed25519 = %public.ed25519_public, tls = %public.tls_fingerprint, "node identity loaded");
    for d in store.list_datasets()? {
        match datasets::revalidate(&mut store, &d.name) {
            Ok(Revalidation::Invalid(reason)) => tracing::warn!(dataset = %d.name, %reason, "dataset invalid"),
            Ok(_) => {}
            Err(e) => tracing::error!(dataset = %d.name, error = %e, "cannot re-validate dataset"),
        }
    }
    for id in store.fail_interrupted_sessions()? {
        tracing::warn!(session = %id, "session interrupted by a restart: marked failed");
    }
    store.record_event("node.started", &format!("node {:?} started", config.name))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = runtime.block_on(async {
        let addr = args.api_listen.unwrap_or(config.api_listen);
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        let mpc_addr = args.mpc_listen.unwrap_or(config.mpc_listen);
        let mpc = tokio::net::TcpListener::bind(mpc_addr)
            .await
            .with_context(|| format!("cannot listen for peers on {mpc_addr}"))?;
        let mpc_bound = mpc.local_addr()?;
        let port = PeerPort::start(mpc)?;
        // Best effort: a closed stdout (a supervisor that read the first line) must not stop the node.
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "listening on http://{bound}");
        let _ = writeln!(stdout, "peer port {mpc_bound}");
        let _ = stdout.flush();
        let advertise = config.advertised_mpc_address();
        let me = PairFields {
            name: public.name.clone(),
            ed25519_public: public.ed25519_public.clone(),
            tls_fingerprint: public.tls_fingerprint.clone(),
            mpc_address: config.advertised_mpc_address(),
        };
        let timing = Timing {
            heartbeat_period: Duration::from_secs(config.heartbeat_period_secs.max(1)),
            heartbeat_timeout: Duration::from_secs(config.heartbeat_timeout_secs.max(1)),
            rpc_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(20),
            recv_timeout: Duration::from_secs(60),
        };
        let store = Arc::new(Mutex::new(store));
        let mut access = config.access.clone();
        access.policy = config.policy_in(&args.dir.dir);
        if let Some(p) = &access.policy {
            // Refuse to start on a policy that does not parse: better than refusing every query later.
            concord_node::access::load_policy(p).map_err(|e| anyhow::anyhow!("{e}"))?;
            tracing::info!(policy = %p.display(), "access control on: signed requests and the policy are required");
        } else {
            tracing::warn!("access control off (no [access] policy in concord.toml): unsigned queries are accepted");
        }
        let service =
            Service::new(identity, advertise, store.clone(), port.clone(), timing, config.privacy.clone(), access);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        service.spawn(stop_rx);
        let state = AppState::with_service(env!("CARGO_PKG_VERSION"), store, me, service.clone());
        if config.dataset_check_secs > 0 {
            let period = Duration::from_secs(config.dataset_check_secs);
            tokio::spawn(datasets::revalidate_periodically(state.clone(), period));
        }
        server::serve(listener, state.clone(), shutdown_signal()).await?;
        // Graceful shutdown: sessions still running here end cleanly on every node, with the reason.
        let _ = tokio::time::timeout(Duration::from_secs(10), service.shutdown()).await;
        let _ = stop_tx.send(true);
        port.shutdown();
        state.with_store(|s| s.record_event("node.stopped", &format!("node {:?} stopped", config.name)));
        Ok(())
    });
    // A dataset re-check in progress (hashing a large file) is not waited for long.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
}

/// The `host:port` of a node's API given as `http://host:port[/]` or `host:port`.
pub fn api_address(node: &str) -> String {
    node.trim_start_matches("http://").trim_end_matches('/').to_owned()
}

/// The node's JSON answer, or its error (code and message) as an error.
/// One call of a node's API: its JSON answer, or its error (code and message) as an error.
pub fn call(addr: &str, method: &str, path: &str, body: Option<&serde_json::Value>) -> Result<serde_json::Value> {
    let body = body.map(serde_json::Value::to_string);
    let (status, text) = http_request(addr, method, path, body.as_deref())
        .with_context(|| format!("cannot reach the node at http://{addr}"))?;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    if !(200..300).contains(&status) {
        let code = v["error"]["code"].as_str().unwrap_or("http_error");
        let message = v["error"]["message"].as_str().map_or_else(|| text.trim().to_owned(), str::to_owned);
        bail!("{code}: {message} (HTTP {status})");
    }
    Ok(v)
}
