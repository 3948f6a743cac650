//! `edgelb-speaker`: the per-node daemon.
use clap::Parser;

/// The edgelb speaker daemon.
#[derive(Debug, Parser)]
#[command(name = "edgelb-speaker", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
