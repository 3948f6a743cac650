//! Commands and exit codes. Exit codes a script can use:
//! - 0: done (and, with `peers --check`, every peer is Established);
//! - 1: `peers --check` found a peer that is not Established, or `explain` found nothing;
//! - 2: bad arguments (clap's own code);
//! - 3: the speaker cannot be reached or answered something unreadable.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use edgelb_view::LocalView;
use edgelb_view::DEFAULT_SOCKET;
use serde::Serialize;

use crate::format::{self, Output};

/// Success.
pub const EXIT_OK: u8 = 0;
/// A check failed (a peer is down) or the object was not found.
pub const EXIT_CHECK_FAILED: u8 = 1;
/// The speaker could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

/// Show peers, announcements, pools, routes and members of an edgelb speaker.
#[derive(Debug, Parser)]
#[command(name = "edgelbctl", version, about)]
pub struct Cli {
    /// The local speaker's socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET, env = "EDGELB_SOCKET")]
    pub socket: PathBuf,
    /// Ask the speaker on this node, through the Kubernetes API (pod proxy) instead of the socket.
    #[arg(long, global = true)]
    pub node: Option<String>,
    /// The speaker's namespace (with --node).
    #[arg(long, global = true, default_value = "edgelb-system")]
    pub namespace: String,
    /// The speaker's view port (`--view-addr`, TLS; with --node).
    #[arg(long, global = true, default_value_t = 7473)]
    pub port: u16,
    /// File with the bearer token to show the speaker (with --node); default: the
    /// kubeconfig's token. Needed when the kubeconfig uses a client certificate.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    pub output: Output,
    /// Give up after this many seconds.
    #[arg(long, global = true, default_value_t = 5)]
    pub timeout: u64,
    /// What to show.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Node, version, readiness, leader and counts.
    Status,
    /// BGP sessions: state, uptime, prefixes, last error.
    Peers {
        /// Exit 1 when any peer is not Established (for scripts and probes).
        #[arg(long)]
        check: bool,
    },
    /// IPs this node announces (BGP or L2), their Service, pool, owner and age.
    #[command(alias = "ann")]
    Announcements,
    /// IP pools with size, usage and allocation failures.
    Pools,
    /// Policy routes installed on this node.
    Routes,
    /// Speakers this node knows, with their health.
    Members,
    /// Cloud load balancers (ENS ELB) this speaker drives, one per (Service, node pool):
    /// load balancer, EIP, listeners, backends and the last error.
    Elb,
    /// Node pools (OpenYurt `NodePool` or node label), their nodes and entry points.
    #[command(alias = "np")]
    Nodepools,
    /// Everything about one Service: `svc/NAME` or `svc/NAMESPACE/NAME`.
    Explain {
        /// `svc/NAME` (namespace from -n) or `svc/NAMESPACE/NAME`.
        target: String,
        /// The Service's namespace when the target has none.
        #[arg(short = 'n', long = "service-namespace", default_value = "default")]
        service_namespace: String,
    },
}

/// Colour only on a terminal, and never under `NO_COLOR`.
pub fn use_colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// `svc/NAME` or `svc/NS/NAME` (also `service/`, `services/`) to `NS/NAME`.
pub fn service_key(target: &str, namespace: &str) -> Option<String> {
    let rest = ["svc/", "service/", "services/"]
        .iter()
        .find_map(|p| target.strip_prefix(p))
        .unwrap_or(target);
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [name] if !name.is_empty() => Some(format!("{namespace}/{name}")),
        [ns, name] if !ns.is_empty() && !name.is_empty() => Some(format!("{ns}/{name}")),
        _ => None,
    }
}

async fn fetch(cli: &Cli) -> anyhow::Result<LocalView> {
    let timeout = Duration::from_secs(cli.timeout.max(1));
    match &cli.node {
        None => crate::source::from_socket(&cli.socket, timeout).await,
        Some(node) => {
            let work = async {
                let token = crate::source::bearer_token(cli.token_file.as_deref()).await?;
                let client = kube::Client::try_default().await?;
                crate::source::from_node(&client, &cli.namespace, node, cli.port, &token).await
            };
            tokio::time::timeout(timeout, work)
                .await
                .map_err(|_| anyhow::anyhow!("no answer from node {node} within {timeout:?}"))?
        }
    }
}

fn structured<T: Serialize + ?Sized>(value: &T, output: Output) -> anyhow::Result<Option<String>> {
    Ok(match output {
        Output::Json => Some(serde_json::to_string_pretty(value)? + "\n"),
        Output::Yaml => Some(serde_norway::to_string(value)?),
        Output::Table | Output::Wide => None,
    })
}

/// What one command prints for a view, and its exit code (pure).
pub fn render(
    command: &Command,
    view: &LocalView,
    output: Output,
    colour: bool,
) -> anyhow::Result<(String, u8)> {
    let wide = output == Output::Wide;
    let text = |s: Option<String>, t: String| s.unwrap_or(t);
    Ok(match command {
        Command::Status => (
            text(structured(view, output)?, format::status_text(view)),
            EXIT_OK,
        ),
        Command::Peers { check } => {
            let down = view.peers.iter().any(|p| !p.is_up());
            let code = if *check && down {
                EXIT_CHECK_FAILED
            } else {
                EXIT_OK
            };
            let t = structured(&view.peers, output)?
                .unwrap_or_else(|| format::peers_table(view, wide, colour));
            (t, code)
        }
        Command::Announcements => (
            text(
                structured(view.announcements.as_slice(), output)?,
                format::announcements_table(view, wide),
            ),
            EXIT_OK,
        ),
        Command::Pools => (
            text(
                structured(view.pools.as_slice(), output)?,
                format::pools_table(view, wide),
            ),
            EXIT_OK,
        ),
        Command::Routes => (
            text(
                structured(&view.policy_routes, output)?,
                format::routes_table(view, wide),
            ),
            EXIT_OK,
        ),
        Command::Elb => (
            text(
                structured(&view.cloud, output)?,
                format::elb_table(view, wide),
            ),
            EXIT_OK,
        ),
        Command::Members => (
            text(
                structured(&view.members, output)?,
                format::members_table(view, wide, colour),
            ),
            EXIT_OK,
        ),
        Command::Nodepools => (
            text(
                structured(&view.node_pools, output)?,
                format::node_pools_table(view, wide, colour),
            ),
            EXIT_OK,
        ),
        Command::Explain {
            target,
            service_namespace,
        } => {
            let Some(key) = service_key(target, service_namespace) else {
                anyhow::bail!("explain: {target:?} is not svc/NAME or svc/NAMESPACE/NAME");
            };
            match format::explain(view, &key) {
                Some(e) => (
                    text(structured(&e, output)?, format::explain_text(&e, view.generated_at)),
                    EXIT_OK,
                ),
                None => (
                    format!("Service {key} is not known to the speaker on {} (not ours, or no such Service)\n", view.node),
                    EXIT_CHECK_FAILED,
                ),
            }
        }
    })
}

/// Runs the command and writes to `out`; returns the exit code.
pub async fn run(cli: &Cli, out: &mut impl Write, colour: bool) -> u8 {
    let view = match fetch(cli).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("edgelbctl: {e:#}");
            return EXIT_UNREACHABLE;
        }
    };
    match render(&cli.command, &view, cli.output, colour) {
        Ok((text, code)) => {
            if let Err(e) = out.write_all(text.as_bytes()) {
                eprintln!("edgelbctl: {e}");
            }
            code
        }
        Err(e) => {
            eprintln!("edgelbctl: {e:#}");
            EXIT_CHECK_FAILED
        }
    }
}
