//! `concord`: the command-line front of Concord.

use anyhow::Result;
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod demo;
mod local;
mod procs;
mod run;

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
    /// One party of a `run --processes` run (started by `concord run`).
    #[command(hide = true)]
    RunParty(run::RunPartyArgs),
    /// One party of a `bench --transport tls` run (started by `concord bench`).
    #[command(hide = true)]
    BenchParty(bench::PartyArgs),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("CONCORD_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Demo => demo::run(),
        Command::Run(args) => run::run(args),
        Command::RunParty(args) => run::run_party(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchParty(args) => bench::run_party(args),
    }
}
