//! `concord init`, `concord dataset ...` and `concord node`: the node daemon
//! of one organisation (library: `concord-node`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use concord_node::datasets::{self, Revalidation};
use concord_node::identity::NodeIdentity;
use concord_node::server::{self, AppState};
use concord_node::store::STORE_FILE;
use concord_node::{DatasetStatus, NodeConfig, Store, CONFIG_FILE};

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

/// Arguments of `concord node`.
#[derive(Args, Clone, Debug)]
pub struct NodeArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// Listen address of the HTTP API (overrides `api_listen` of concord.toml; port 0 picks a free port).
    #[arg(long)]
    pub api_listen: Option<SocketAddr>,
}

/// `concord init`.
pub fn init(args: InitArgs) -> Result<()> {
    let dir = &args.dir.dir;
    concord_node::config::check_name(&args.name)
        .map_err(|r| anyhow::anyhow!("invalid node name {:?}: {r}", args.name))?;
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
    let config = NodeConfig::new(&args.name);
    config.write_commented(&config_path)?;
    let data_dir = config.data_dir_in(dir);
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut store = Store::open(&data_dir.join(STORE_FILE))?;
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

fn open_node(dir: &Path) -> Result<(NodeConfig, Store)> {
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.exists() {
        bail!("{} not found: run `concord init --name NAME --dir {}` first", config_path.display(), dir.display());
    }
    let config = NodeConfig::load(&config_path)?;
    let store = Store::open(&config.data_dir_in(dir).join(STORE_FILE))?;
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

/// `concord node`: serve the API until Ctrl-C or SIGTERM.
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
    store.record_event("node.started", &format!("node {:?} started", config.name))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = runtime.block_on(async {
        let addr = args.api_listen.unwrap_or(config.api_listen);
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        println!("listening on http://{bound}");
        std::io::stdout().flush()?;
        let state = AppState::new(&config.name, env!("CARGO_PKG_VERSION"), store);
        if config.dataset_check_secs > 0 {
            let period = Duration::from_secs(config.dataset_check_secs);
            tokio::spawn(datasets::revalidate_periodically(state.clone(), period));
        }
        server::serve(listener, state.clone(), shutdown_signal()).await?;
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
