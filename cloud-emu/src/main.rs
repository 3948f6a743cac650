//! `edgelb-ens-emulator`: serves the emulated ENS API on a local port. The first stdout line
//! is `listening on ADDR`. SIGTERM/SIGINT end it after writing the leak report.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use edgelb_cloud_emu::{dataplane, server, state};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Emulated Alibaba ENS ELB/EIP OpenAPI with a real data plane"
)]
struct Args {
    /// Address for the API (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// The account's AccessKey id.
    #[arg(long)]
    access_key_id: String,
    /// A file holding the AccessKey secret (never on the command line).
    #[arg(long)]
    access_key_secret_file: std::path::PathBuf,
    /// Timestamps further than this from now are refused (InvalidTimeStamp.Expired).
    #[arg(long, default_value_t = 900)]
    max_skew_secs: u64,
    /// Load balancer addresses (inside the data plane's namespace).
    #[arg(long, default_value = "10.99.0.0/24")]
    lb_pool: ipnet::Ipv4Net,
    /// EIP addresses (inside the data plane's namespace).
    #[arg(long, default_value = "10.98.0.0/24")]
    eip_pool: ipnet::Ipv4Net,
    /// How long a new load balancer stays Creating.
    #[arg(long, default_value_t = 300)]
    create_ms: u64,
    /// How long listener starts and EIP binds take.
    #[arg(long, default_value_t = 100)]
    transition_ms: u64,
    /// `ACTION=PER_SECOND` (or `*=PER_SECOND`): the account's limit per action; repeatable.
    #[arg(long)]
    limit: Vec<String>,
    /// Network namespace (in /run/netns) where load balancer addresses take traffic.
    #[arg(long)]
    dataplane_netns: Option<String>,
    /// Where to write the resources still alive at exit (JSON).
    #[arg(long)]
    leak_report: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let secret = std::fs::read_to_string(&args.access_key_secret_file)
        .with_context(|| format!("reading {}", args.access_key_secret_file.display()))?
        .trim()
        .to_string();
    let mut st = state::State::new(args.lb_pool, args.eip_pool);
    st.create_delay = Duration::from_millis(args.create_ms);
    st.transition_delay = Duration::from_millis(args.transition_ms);
    let emu = Arc::new(server::Emu::new(
        st,
        server::Auth {
            access_key_id: args.access_key_id.clone(),
            access_key_secret: secret,
            max_skew: Duration::from_secs(args.max_skew_secs),
        },
    ));
    for l in &args.limit {
        let (action, rate) = l
            .split_once('=')
            .with_context(|| format!("--limit {l}: ACTION=N"))?;
        let rate: f64 = rate
            .parse()
            .with_context(|| format!("--limit {l}: N is not a number"))?;
        emu.set_limit(action, rate, rate);
    }
    if let Some(ns) = &args.dataplane_netns {
        let ns = dataplane::Netns::enter(ns)?;
        tokio::spawn(dataplane::run(emu.clone(), ns));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .context("binding the API")?;
    println!("{}", server::announce(listener.local_addr()?));
    let api = tokio::spawn(server::serve(emu.clone(), listener));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    api.abort();
    let inventory = emu
        .state
        .lock()
        .map(|s| s.inventory(std::time::Instant::now()))
        .unwrap_or_default();
    let lbs = inventory["LoadBalancers"].as_array().map_or(0, Vec::len);
    let eips = inventory["EipAddresses"].as_array().map_or(0, Vec::len);
    eprintln!("leak report: {lbs} load balancers, {eips} EIPs alive");
    if let Some(path) = &args.leak_report {
        std::fs::write(path, serde_json::to_vec_pretty(&inventory)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
