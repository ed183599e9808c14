//! `concord`: the command-line front of Concord.

use anyhow::Result;
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod access;
mod audit;
mod bench;
mod bench_dp;
mod consortium;
mod demo;
mod local;
mod node;
mod plot;
mod procs;
mod query;
mod run;
mod unlock;

/// Concord: secure multiparty computation for organisations that may not share their data.
#[derive(Parser)]
#[command(name = "concord", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run three parties on this machine over loopback TLS on built-in data and show what each learns.
    Demo,
    /// Answer one SQL aggregate query over data split across parties (all parties in this process, loopback TLS).
    Run(run::RunArgs),
    /// Benchmark a protocol end to end: n parties over the simulated network or TLS processes.
    Bench(bench::BenchArgs),
    /// Create a node: identity (Ed25519 + TLS keys), commented concord.toml, store.
    Init(node::InitArgs),
    /// Register and list the datasets this node offers.
    Dataset {
        #[command(subcommand)]
        command: node::DatasetCommand,
    },
    /// Pair with other nodes by one-time invitation, and list peers.
    Peer {
        #[command(subcommand)]
        command: node::PeerCommand,
    },
    /// Analysts' keys (`new`), and the analysts registered on this node (`add`, `list`, `remove`).
    Analyst {
        #[command(subcommand)]
        command: access::AnalystCommand,
    },
    /// This node's policy: `concord policy check REQUEST.json` explains its decision on a signed request.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Sessions waiting for this node's operator: list, approve, reject, veto (also of running sessions).
    Approvals {
        #[command(subcommand)]
        command: Option<access::ApprovalsCommand>,
        /// This node's API.
        #[arg(long, env = "CONCORD_NODE", default_value = "http://127.0.0.1:7300", global = true)]
        node: String,
        /// Who decides (recorded with the decision).
        #[arg(long, env = "USER", default_value = "the operator", global = true)]
        by: String,
    },
    /// Analysts' differential privacy budgets on this node's datasets.
    Budget {
        #[command(subcommand)]
        command: node::BudgetCommand,
    },
    /// Run the node: HTTP API, dashboard and peer port (sessions, heartbeats) until Ctrl-C or SIGTERM.
    Node(node::NodeArgs),
    /// The node's tamper-evident audit log: verify, export, verify an export, cross-check a session, print.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Ask a node to run a query as a session with other nodes; reconstruct the answer here.
    Query(query::QueryArgs),
    /// Consortia of nodes: FROST key generation without a dealer; they sign session results.
    Consortium {
        #[command(subcommand)]
        command: consortium::ConsortiumCommand,
    },
    /// Check a result file offline: the consortium's signature, the shares, the answer.
    Verify(consortium::VerifyArgs),
    /// Threshold unlock: a consortium's unlock key, the unlock requests this node's operator decides.
    Unlock {
        #[command(subcommand)]
        command: unlock::UnlockCommand,
    },
    /// Seal a file to a consortium's unlock key, locally (k of the n members must approve to open it).
    Seal(unlock::SealArgs),
    /// Open a sealed file: request it through a member node, wait for k approvals, decrypt here.
    Unseal(unlock::UnsealArgs),
    /// One party of a `run --processes` run (started by `concord run`).
    #[command(hide = true)]
    RunParty(run::RunPartyArgs),
    /// One party of a `bench --transport tls` run (started by `concord bench`).
    #[command(hide = true)]
    BenchParty(bench::PartyArgs),
}

/// `concord policy` subcommands.
#[derive(Subcommand)]
enum PolicyCommand {
    /// Explain this node's decision on a signed request (from `concord query --request-out`), running nothing.
    Check {
        /// The signed request (JSON).
        request: std::path::PathBuf,
        #[command(flatten)]
        dir: node::DirArg,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // The node logs at info unless CONCORD_LOG says otherwise; other commands only errors.
    let default_level = if matches!(cli.command, Command::Node(_)) { "info" } else { "error" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONCORD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only on a terminal (a log file or a journal gets plain text), and never with NO_COLOR.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    match cli.command {
        Command::Demo => demo::run(),
        Command::Run(args) => run::run(args),
        Command::Init(args) => node::init(args),
        Command::Dataset { command } => node::dataset(command),
        Command::Peer { command } => node::peer(command),
        Command::Budget { command } => node::budget(command),
        Command::Analyst { command } => access::analyst(command),
        Command::Policy { command: PolicyCommand::Check { request, dir } } => access::policy_check(&request, &dir),
        Command::Approvals { command, node, by } => access::approvals(command, &node, &by),
        Command::Node(args) => node::node(args),
        Command::Audit { command } => audit::audit(command),
        Command::Query(args) => query::query(args),
        Command::Consortium { command } => consortium::consortium(command),
        Command::Verify(args) => consortium::verify(args),
        Command::Unlock { command } => unlock::unlock(command),
        Command::Seal(args) => unlock::seal(args),
        Command::Unseal(args) => unlock::unseal(args),
        Command::RunParty(args) => run::run_party(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchParty(args) => bench::run_party(args),
    }
}
