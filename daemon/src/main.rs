//! `edgelb-speaker`: the per-node daemon. Thin: arguments -> config -> run.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use edgelb_daemon::cloud_lb::CloudConfig;
use edgelb_daemon::local_api::view::LocalView;
use edgelb_daemon::membership::KeySource;
use edgelb_daemon::snapshot::Redacted;
use edgelb_daemon::snapshot::{Selection, Snapshot};
use edgelb_daemon::speaker::{
    self, restart_marker, AnnounceConfig, BgpStop, Config, GossipConfig, LeaseConfig,
};
use tokio::sync::watch;

/// The edgelb speaker daemon.
#[derive(Debug, Parser)]
#[command(name = "edgelb-speaker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once at start; boxing the big variant buys nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Write the CRD YAML (one file per kind) generated from the Rust types.
    Crds {
        /// Directory to write into.
        #[arg(long, default_value = "deploy/crds")]
        out: PathBuf,
    },
    /// Run the speaker, from the Kubernetes API or (with --file) standalone.
    Run(RunArgs),
    /// Remove every policy rule and route edgelb installed on this node (protocol 235) and
    /// nothing else; for uninstall (a running speaker would install them again).
    Cleanup,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// This node's name.
    #[arg(long)]
    node: String,
    /// Standalone mode: read every object from this multi-document YAML file.
    #[arg(long, conflicts_with = "kubeconfig")]
    file: Option<PathBuf>,
    /// Kubeconfig to use (default: in-cluster, or $KUBECONFIG).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Write the allocation results to this JSON file.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Our spec.loadBalancerClass (given twice, the last wins: a second DaemonSet for
    /// cloud load balancers appends `--class=alibabacloud.com/elb` to the shipped args).
    #[arg(long, default_value = edgelb_daemon::api::annotations::DEFAULT_LOAD_BALANCER_CLASS, overrides_with = "class")]
    class: String,
    /// Also serve LoadBalancer Services without a class.
    #[arg(long)]
    default_class: bool,
    /// The speaker's namespace (our CRs and Secrets live there).
    #[arg(long, default_value = "edgelb-system")]
    namespace: String,
    /// Lease term in seconds; the leader stops writing 2/3 of it after its last renewal,
    /// and renews every 2/15 of it (15: client-go's 15 s / 10 s / 2 s).
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Accept BGP connections on this address (e.g. `[::]:179`). Default: none, every
    /// session is opened by this speaker (routers use passive or dynamic neighbours).
    #[arg(long)]
    bgp_listen: Option<std::net::SocketAddr>,
    /// This node's address (repeatable); used after the Node object's InternalIPs for the
    /// BGP identifier and to find the L2 interface.
    #[arg(long = "node-address")]
    node_addresses: Vec<std::net::IpAddr>,
    /// Gossip (SWIM membership) on this address: an IP (`192.0.2.10`, `2001:db8::10`) with
    /// the port of --member-port, or `IP:PORT` / `[IPv6]:PORT`. Without it every Node counts
    /// as live and L2 IPs do not fail over between speakers.
    #[arg(long)]
    member_addr: Option<String>,
    /// The gossip port when --member-addr names none.
    #[arg(long, default_value_t = edgelb_daemon::membership::addr::DEFAULT_MEMBER_PORT)]
    member_port: u16,
    /// Other speakers' gossip addresses to join through (repeatable or comma-separated).
    #[arg(long = "member-peers", value_delimiter = ',')]
    member_peers: Vec<std::net::SocketAddr>,
    /// File holding the gossip key (HMAC-SHA256, at least 16 bytes; trailing whitespace
    /// ignored), read once at start. With --member-addr, this or --member-key-secret.
    #[arg(long, requires = "member_addr", conflicts_with = "member_key_secret")]
    member_key_file: Option<PathBuf>,
    /// Secret (in --namespace) holding the gossip key, followed as it changes: a plain `key`
    /// entry, or `key-<id>` entries and `current` (the id to send with). Read through the
    /// API in cluster mode, from the file's Secret objects with --file. The gossip starts
    /// once the Secret is read; a replaced key is phased in and out without a flag day.
    #[arg(long, requires = "member_addr")]
    member_key_secret: Option<String>,
    /// The local API's Unix socket (read-only JSON for edgelbctl; owner-only).
    #[arg(long, default_value = edgelb_daemon::local_api::server::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Serve /metrics, /healthz, /readyz (nothing else) on this address.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Cluster mode: serve the read-only /v1 views over TLS on this address, for
    /// `edgelbctl --node` through the API server's pod proxy, only to callers whose token
    /// the API server accepts and who may `get` `pods/proxy` in --namespace.
    #[arg(long, conflicts_with = "file")]
    view_addr: Option<std::net::SocketAddr>,
    /// What SIGTERM/SIGINT does to BGP peers with enableGracefulRestart: `restart` (no
    /// NOTIFICATION, the routers keep our routes for the restart time and the next start
    /// sets the R bit) or `withdraw` (Cease, routes gone at once).
    #[arg(long, value_enum, default_value_t = BgpStop::Restart)]
    bgp_stop: BgpStop,
    /// Cloud load balancers: the Secret (in --namespace) with the cloud account's
    /// `accessKeyID` and `accessKeySecret`. With it, the writer of record creates an ENS ELB
    /// (and EIP) per PoolService of class `alibabacloud.com/elb` (run such speakers with
    /// `--class alibabacloud.com/elb`) and per selected NodePool annotated
    /// `edgelb.io/cloud-load-balancer-class: alibabacloud.com/elb` of the speakers' own
    /// Services. The values are never logged.
    #[arg(long, conflicts_with = "file")]
    elb_credentials_secret: Option<String>,
    /// The ENS OpenAPI endpoint (`https://host[:port]`; `http://` for an emulator).
    #[arg(
        long,
        default_value = "https://ens.aliyuncs.com",
        requires = "elb_credentials_secret"
    )]
    elb_endpoint: String,
    /// The ENS region (node) of pools without the `alibabacloud.com/ens-region-id` annotation.
    #[arg(long, requires = "elb_credentials_secret")]
    elb_region: Option<String>,
    /// This cluster's name in the cloud resources' names (`k8s/<svc>/<ns>/<pool>/<cluster>`):
    /// unique among clusters sharing the account (leftovers with it are deleted).
    #[arg(long, default_value = "edgelb", requires = "elb_credentials_secret")]
    elb_cluster: String,
    /// Cloud API calls per second for the account.
    #[arg(long, default_value_t = 5.0, requires = "elb_credentials_secret")]
    elb_rate: f64,
    /// Seconds between two convergences of each load balancer (drift repair) and between
    /// sweeps for leftovers.
    #[arg(long, default_value_t = 60, requires = "elb_credentials_secret")]
    elb_resync_seconds: u64,
}

/// After each reconcile that changed the view's Service-sized sections, hands the memory
/// it freed back to the kernel (1 s later, and again 10 s later once the BGP updates are
/// out; a burst of changes is coalesced). glibc keeps freed pages of its per-thread arenas:
/// loading 10 000 Services would leave tens of MB resident that nothing uses. Per change,
/// never on a timer at rest.
async fn release_after_changes(mut views: watch::Receiver<LocalView>) {
    let sections = |v: &LocalView| {
        [
            v.announcements.id(),
            v.allocations.id(),
            Arc::as_ptr(&v.pools) as usize,
            v.services.id(),
        ]
    };
    let mut last = sections(&views.borrow());
    while views.changed().await.is_ok() {
        let now = sections(&views.borrow_and_update());
        if now == last {
            continue;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        release_free_memory();
        tokio::time::sleep(Duration::from_secs(9)).await;
        release_free_memory();
        last = sections(&views.borrow_and_update());
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointer and only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// One glibc malloc arena (the default is eight per core): each runtime thread otherwise
/// allocates from an arena of its own, and memory freed in one arena cannot serve another's
/// allocations, so a load of 10 000 Services spread over the worker threads stayed resident
/// several times over. Two arenas still left ~6 MiB more resident than one at 10 000
/// Services (issue 17, `bench/steady.sh`); the speaker's work is one task at a time, and
/// glibc's per-thread caches serve most small allocations without the arena's lock. Set
/// before any thread starts; `MALLOC_ARENA_MAX` in the environment still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt takes two integers and only changes malloc's tuning.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// Colour in logs only on a terminal (the log goes to stdout), and never under a non-empty
/// `NO_COLOR` (no-color.org): log collectors store escape codes as text.
fn log_colour(is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Completes on SIGTERM or SIGINT.
async fn stop_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
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
        Command::Run(args) => {
            use std::io::IsTerminal;
            limit_malloc_arenas();
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_ansi(log_colour(
                    std::io::stdout().is_terminal(),
                    std::env::var_os("NO_COLOR"),
                ))
                .init();
            let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
            rt.block_on(run(args))
        }
        Command::Cleanup => cleanup(),
    }
}

/// `edgelb-speaker cleanup`: the policy-route actuator's cleanup, in this network namespace.
fn cleanup() -> anyhow::Result<()> {
    use edgelb_daemon::actuate::policy_route::{PolicyRouteActuator, EDGELB_RTPROT};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = rt
        .block_on(async { PolicyRouteActuator::new()?.cleanup().await })
        .context("removing edgelb policy rules and routes")?;
    println!(
        "removed {} policy rule(s) and {} route(s) with protocol {EDGELB_RTPROT}",
        report.rules_removed, report.routes_removed
    );
    Ok(())
}

/// The gossip address from --member-addr and --member-port.
fn member_addr(args: &RunArgs) -> anyhow::Result<Option<std::net::SocketAddr>> {
    args.member_addr
        .as_deref()
        .map(|t| edgelb_daemon::membership::addr::parse_member_addr(t, args.member_port))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--member-addr: {e}"))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let member_addr = member_addr(&args)?;
    let selection = Selection {
        class: args.class,
        default_class: args.default_class,
        namespace: args.namespace,
    };
    let gossip = match member_addr {
        Some(addr) => {
            let key = match (args.member_key_file, args.member_key_secret) {
                (Some(path), None) => KeySource::Bytes(Redacted(
                    std::fs::read(&path)
                        .with_context(|| format!("reading the gossip key {}", path.display()))?,
                )),
                (None, Some(secret)) => KeySource::Secret(secret),
                _ => anyhow::bail!(
                    "--member-addr needs one of --member-key-file or --member-key-secret"
                ),
            };
            Some(GossipConfig {
                addr,
                peers: args.member_peers,
                key,
            })
        }
        None => None,
    };
    let (publisher, _servers) =
        edgelb_daemon::local_api::publish::start(&args.node, &args.socket, args.metrics_addr)
            .await
            .context("starting the local API and metrics")?;
    let _release = tokio::spawn(release_after_changes(publisher.subscribe()));
    let cloud = args
        .elb_credentials_secret
        .clone()
        .map(|secret| CloudConfig {
            credentials_secret: secret,
            endpoint: args.elb_endpoint.clone(),
            region: args.elb_region.clone(),
            cluster: args.elb_cluster.clone(),
            rate_per_sec: args.elb_rate,
            resync: Duration::from_secs(args.elb_resync_seconds.max(1)),
            ..CloudConfig::default()
        });
    let cfg = Config {
        cloud,
        publisher: Some(publisher),
        node: args.node,
        selection: selection.clone(),
        state_file: args.state,
        announce: AnnounceConfig {
            bgp_listen: args.bgp_listen,
            node_addresses: args.node_addresses,
            gossip,
            bgp_stop: args.bgp_stop,
            restart_marker: Some(restart_marker::path_for_socket(&args.socket)),
            ..Default::default()
        },
    };
    let (tx, rx) = watch::channel(Snapshot::default());
    if let Some(file) = args.file {
        tracing::info!(file = %file.display(), node = %cfg.node, "standalone mode");
        let source = tokio::spawn(edgelb_daemon::source::file::watch_file(
            file,
            selection,
            Duration::from_millis(200),
            tx,
        ));
        let result = speaker::run_standalone(cfg, rx, stop_signal()).await;
        source.abort();
        return result.context("starting the announcers");
    }
    let client = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .context("loading kubeconfig")?;
            kube::Client::try_from(config).context("building the client")?
        }
        None => kube::Client::try_default()
            .await
            .context("connecting to the API server")?,
    };
    tracing::info!(node = %cfg.node, namespace = %selection.namespace, "cluster mode");
    let _view_port = match (args.view_addr, &cfg.publisher) {
        (Some(addr), Some(publisher)) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--view-addr {addr}"))?;
            let tls = edgelb_daemon::local_api::remote::self_signed(vec![cfg.node.clone()])
                .context("making the view port's certificate")?;
            tracing::info!(%addr, "view port listening (TLS; TokenReview and SubjectAccessReview per request)");
            Some(AbortOnDrop(tokio::spawn(
                edgelb_daemon::local_api::remote::serve(
                    listener,
                    tls,
                    client.clone(),
                    edgelb_daemon::local_api::remote::Access {
                        namespace: selection.namespace.clone(),
                    },
                    publisher.subscribe(),
                ),
            )))
        }
        _ => None,
    };
    let source = tokio::spawn(edgelb_daemon::source::kube::run(
        client.clone(),
        selection,
        tx,
    ));
    let lease = LeaseConfig {
        timings: edgelb_daemon::status::leader::LeaseTimings::for_duration(Duration::from_secs(
            args.lease_seconds,
        ))
        .context("--lease-seconds")?,
        ..Default::default()
    };
    let result = speaker::run_cluster(cfg, lease, client, rx, stop_signal()).await;
    source.abort();
    result.context("starting the announcers")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The speaker's arguments in a shipped manifest, with `$(NODE_IP)` as the kubelet
    /// substitutes it.
    fn shipped_args(path: &str, node_ip: &str) -> Vec<String> {
        let text =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
                .expect("manifest");
        let mut args = vec!["edgelb-speaker".to_string(), "run".to_string()];
        for line in text.lines() {
            let line = line.trim();
            if let Some(arg) = line.strip_prefix("- --") {
                if arg.starts_with("member-addr")
                    || arg.starts_with("member-port")
                    || arg.starts_with("node=")
                {
                    let arg = arg
                        .replace("$(NODE_IP)", node_ip)
                        .replace("$(NODE_NAME)", "edge-1")
                        .replace("{{ .Values.membership.port }}", "7946");
                    args.push(format!("--{arg}"));
                }
            }
        }
        args
    }

    #[test]
    fn logs_are_plain_off_a_terminal_and_under_no_color() {
        assert!(log_colour(true, None));
        assert!(!log_colour(false, None), "piped or in a container");
        assert!(!log_colour(true, Some("1".into())));
        assert!(
            log_colour(true, Some("".into())),
            "an empty NO_COLOR is unset"
        );
        // What the subscriber writes with that decision: no escape codes.
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(log_colour(false, None))
            .with_writer(move || Writer(w.clone()))
            .finish();
        tracing::subscriber::with_default(sub, || tracing::warn!(kind = "Service", "list failed"));
        let text = String::from_utf8(buf.lock().expect("lock").clone()).expect("utf8");
        assert!(
            text.contains("list failed") && !text.contains('\x1b'),
            "{text:?}"
        );
    }

    struct Writer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Writer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn shipped_member_flags_work_with_ipv4_and_ipv6_node_ips() {
        for path in [
            "../deploy/manifests/20-speaker.yaml",
            "../deploy/helm/edgelb/templates/daemonset.yaml",
        ] {
            for (ip, want) in [
                ("192.0.2.10", "192.0.2.10:7946"),
                ("2001:db8::10", "[2001:db8::10]:7946"),
            ] {
                let argv = shipped_args(path, ip);
                let cli =
                    Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{path}: {argv:?}: {e}"));
                let Command::Run(args) = cli.command else {
                    panic!("not run")
                };
                let addr = member_addr(&args).unwrap_or_else(|e| panic!("{path} {ip}: {e}"));
                assert_eq!(addr.map(|a| a.to_string()).as_deref(), Some(want), "{path}");
            }
        }
    }
}
