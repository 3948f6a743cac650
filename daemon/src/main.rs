//! `edgelb-speaker`: the per-node daemon. Thin: arguments -> config -> run.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// The edgelb speaker daemon.
#[derive(Debug, Parser)]
#[command(name = "edgelb-speaker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the CRD YAML (one file per kind) generated from the Rust types.
    Crds {
        /// Directory to write into.
        #[arg(long, default_value = "deploy/crds")]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { out } => {
            let written =
                edgelb_daemon::api::crd_gen::write_all(&out).context("generating CRDs")?;
            for path in written {
                println!("{path}");
            }
            Ok(())
        }
    }
}
