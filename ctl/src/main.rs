//! `edgelbctl` (also `kubectl edgelb` when installed as `kubectl-edgelb` on the PATH).
#![forbid(unsafe_code)]
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = edgelbctl::cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edgelbctl: cannot start the runtime: {e}");
            return std::process::ExitCode::from(edgelbctl::cli::EXIT_UNREACHABLE);
        }
    };
    let mut out = std::io::stdout().lock();
    let colour = edgelbctl::cli::use_colour();
    std::process::ExitCode::from(rt.block_on(edgelbctl::cli::run(&cli, &mut out, colour)))
}
