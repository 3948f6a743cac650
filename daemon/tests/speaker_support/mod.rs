//! Shared pieces of the speaker end-to-end tests: the cluster YAML each node reads, and
//! `edgelb-speaker` processes in node namespaces; [`l2`]: what the L2 lab tests share.
#![allow(dead_code)]

pub mod audit;
pub mod l2;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use edgelb_tests::kube::{Cluster, NodeSpec, Speaker};
use edgelb_tests::lab::{Netns, NsProcess};

/// `edgelb-speaker` as deployed (the harness's [`Speaker::deploy`]: the shipped DaemonSet's
/// args and ServiceAccount) on Node `name` at `ip`, in `ns`, with no extra arguments.
pub async fn deploy_speaker(
    cluster: &Cluster,
    ns: &Netns,
    name: &str,
    ip: &str,
) -> anyhow::Result<Speaker> {
    let node = NodeSpec::new(name, ip.parse().with_context(|| format!("node IP {ip}"))?);
    let binary = Path::new(env!("CARGO_BIN_EXE_edgelb-speaker"));
    Speaker::deploy(cluster, ns, &node, binary).await
}

/// A test's private directory (files, logs); removed on drop unless the test panics.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(tag: &str) -> anyhow::Result<Dir> {
        let p = std::env::temp_dir().join(format!("edgelb-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(Dir(p))
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var("EDGELB_KEEP_LAB").is_err() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// One Service of the cluster file.
#[derive(Clone, Debug)]
pub struct Svc {
    pub name: &'static str,
    pub ip: &'static str,
    pub local: bool,
    /// Nodes with a ready endpoint.
    pub endpoints: Vec<&'static str>,
}

/// The whole cluster as YAML: nodes, a pool, Services with EndpointSlices, plus `extra`
/// documents (peers, advertisements, Secrets).
pub fn cluster_yaml(nodes: &[(&str, &str)], pool: &str, services: &[Svc], extra: &str) -> String {
    let mut s = format!(
        "apiVersion: edgelb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {{name: lan, namespace: edgelb-system}}\n\
         spec: {{addresses: [\"{pool}\"]}}\n"
    );
    for (name, addr) in nodes {
        s.push_str(&format!(
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n\
             status: {{addresses: [{{type: InternalIP, address: \"{addr}\"}}]}}\n"
        ));
    }
    for svc in services {
        let policy = if svc.local { "Local" } else { "Cluster" };
        s.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {}, namespace: default}}\n\
             spec: {{type: LoadBalancer, loadBalancerClass: edgelb.io/speaker, loadBalancerIP: \"{}\", \
             externalTrafficPolicy: {policy}, ports: [{{port: 80}}]}}\n",
            svc.name, svc.ip
        ));
        let eps: Vec<String> = svc
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "{{addresses: [\"10.244.{}.{}\"], nodeName: {n}, conditions: {{ready: true}}}}",
                    i + 1,
                    i + 1
                )
            })
            .collect();
        s.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {}-1, namespace: default, labels: {{kubernetes.io/service-name: {}}}}}\n\
             addressType: IPv4\nendpoints: [{}]\n",
            svc.name,
            svc.name,
            eps.join(", ")
        ));
    }
    s.push_str(extra);
    s
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes `text` to `path` atomically (the speaker never reads half a file).
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A running `edgelb-speaker` in a node namespace; SIGKILLed on drop.
pub struct SpeakerProc {
    pub node: String,
    pub process: NsProcess,
    pub log: PathBuf,
}

impl SpeakerProc {
    pub fn start(
        ns: &Netns,
        node: &str,
        file: &Path,
        log: PathBuf,
        args: &[&str],
    ) -> anyhow::Result<SpeakerProc> {
        Self::start_logging(ns, node, file, log, args, "info")
    }

    /// [`SpeakerProc::start`] with the tracing filter `log_filter` (`RUST_LOG`), for a test
    /// that reads a decision logged at debug level.
    pub fn start_logging(
        ns: &Netns,
        node: &str,
        file: &Path,
        log: PathBuf,
        args: &[&str],
        log_filter: &str,
    ) -> anyhow::Result<SpeakerProc> {
        // `EDGELB_SPEAKER`: another build of the speaker (a release binary for figures, or
        // an older one to compare with), as `tests/benches/cluster_scale.rs` takes it.
        let bin = std::env::var("EDGELB_SPEAKER")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_edgelb-speaker").to_string());
        let file_s = file.to_string_lossy().into_owned();
        let filter = format!("RUST_LOG={log_filter}");
        let mut argv = vec![
            "env", &filter, &bin, "run", "--node", node, "--file", &file_s,
        ];
        // Each speaker its own local-API socket: speakers sharing the default path race on
        // remove-and-bind, and the loser exits at start.
        let socket = log.with_extension("sock").to_string_lossy().into_owned();
        if !args.contains(&"--socket") {
            argv.extend_from_slice(&["--socket", &socket]);
        }
        argv.extend_from_slice(args);
        let process = ns
            .spawn(&argv, Some(&log))
            .with_context(|| format!("starting the speaker of {node}"))?;
        Ok(SpeakerProc {
            node: node.to_string(),
            process,
            log,
        })
    }

    /// The log without terminal colour codes.
    pub fn logs(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// SIGTERM, then waits (bounded) for the exit; returns how long the exit took.
    pub fn terminate(&mut self, within: Duration) -> anyhow::Result<Duration> {
        let t = std::time::Instant::now();
        self.process.signal(libc::SIGTERM)?;
        self.process
            .wait_exit(within)
            .with_context(|| format!("{} after SIGTERM; log:\n{}", self.node, self.logs()))?;
        Ok(t.elapsed())
    }
}
