//! `edgelbctl`: the operator's view of edgelb speakers.
#![forbid(unsafe_code)]
use clap::Parser;

/// Show peers, announcements, pools and routes of edgelb speakers.
#[derive(Debug, Parser)]
#[command(name = "edgelbctl", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
