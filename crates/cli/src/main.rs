//! `concord`: the command-line front of Concord.

use anyhow::Result;
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod demo;
mod local;

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
    /// Benchmark a protocol end to end: n parties over the simulated network or TLS processes.
    Bench(bench::BenchArgs),
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
        Command::Bench(args) => bench::run(args),
        Command::BenchParty(args) => bench::run_party(args),
    }
}
