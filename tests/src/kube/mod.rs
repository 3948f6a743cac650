//! A real Kubernetes control plane for the cluster tests, and speakers deployed on it as
//! shipped.
//!
//! # What a test gets
//!
//! - [`Cluster::shared`]`(test)`: the test binary's one control plane (etcd, kube-apiserver
//!   with RBAC and ServiceAccount tokens, kube-controller-manager with only the namespace and
//!   garbage-collector controllers) on free loopback ports in a temp dir, started by the first
//!   test that asks (~10-20 s) and deployed as the README says: `deploy/crds/`,
//!   `deploy/manifests/` (server-side apply), and the gossip key Secret
//!   [`MEMBER_KEY_SECRET`]. Returns `Ok(None)` (printed `SKIPPED`) when the binaries are not
//!   built and `CI` is not `true`; with `CI=true` that is an error. Every call counts the test
//!   in `target/tmp/figures/cluster-tests.txt`, which `.ci/run` prints.
//! - [`Cluster::start`]: a control plane of the caller's own, nothing applied, stopped on drop.
//! - [`Cluster::admin_client`]: an admin (`system:masters`) client, for the test's own setup
//!   and checks only. Build one per runtime.
//! - [`create_node`]: a Node object with an InternalIP, as a kubelet registers it.
//! - [`Speaker::deploy`]`(cluster, netns, node, binary)`: `edgelb-speaker` run as the shipped
//!   DaemonSet's pod on that node (its args and env, fieldRefs filled in), inside the network
//!   namespace the test made, with a token of the shipped ServiceAccount only. Its API server
//!   path is a [`Forwarder`] in that namespace: [`Forwarder::freeze`], [`Forwarder::cut`],
//!   [`Forwarder::set_latency`], [`Forwarder::restore`] make the API server hang, vanish or
//!   slow down for that one speaker. [`Speaker::get`] reads `/readyz`, `/metrics`.
//! - [`service_account_token`], [`deploy::apply`] / [`deploy::parse_yaml`]: what `kubectl
//!   create token` and `kubectl apply --server-side` do.
//! - [`eventually`]: bounded polling for async checks.
//! - [`cluster_for`]`(test)`: the shared cluster and an admin client, the start of every
//!   cluster test.
//! - [`objects`]: the Service / EndpointSlice shapes ([`objects::lb_service`],
//!   [`objects::ready_slice`]), status and Event readers, a burst of Services
//!   ([`objects::create_services`]), the speakers' requests in the audit log, and
//!   [`objects::Cleanup`] / [`objects::then_clean`] (delete what the test made, wait until
//!   it is gone, whatever the scenario's result).
//! - [`Speaker::publish_pod`]: the speaker's Pod object (from the DaemonSet's template, its
//!   IP the node's), reachable through the API server's pod proxy: the API server's
//!   `cluster` egress goes through [`PodNetwork`], which dials into the node's namespace.
//!
//! # Isolation and cleanup
//!
//! Each test binary has its own API server (several test runs share a machine; CI runs test
//! binaries one after another), on ports picked free at start. Its processes are started by a
//! keeper thread with `PR_SET_PDEATHSIG`, so they die with the test process even when it is
//! killed; an owned [`Cluster`] also kills them by pid on drop. Speakers die with their
//! [`crate::lab::Netns`]. Objects a test creates are the test's to delete (a test must pass
//! twice in a row on the same cluster).
//!
//! Binaries: `bash .ci/k8s build` (run by `.ci/install`); `EDGELB_K8S_BIN` overrides the dir.

pub mod control_plane;
pub mod deploy;
pub mod forward;
pub mod objects;
pub mod pod_net;
pub mod speaker;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;

pub use control_plane::{binaries, client_from, Cluster};
pub use deploy::SYSTEM_NAMESPACE;
pub use forward::Forwarder;
pub use pod_net::{PodNetwork, PodRoute};
pub use speaker::{service_account_token, NodeSpec, Speaker};

/// The gossip key Secret the shipped DaemonSet names (`--member-key-secret`).
pub const MEMBER_KEY_SECRET: &str = "edgelb-memberlist";

/// The workspace root (this crate's parent).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// `target/tmp`, from the running test binary's path (`target/<profile>/deps/<bin>`).
pub fn target_tmp() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("tmp"))
}

/// Counts a cluster test that ran against a real API server (for `.ci/run`).
pub fn record_cluster_test(test: &str) {
    let Some(dir) = target_tmp().map(|t| t.join("figures")) else {
        return;
    };
    let _ = std::fs::create_dir_all(&dir);
    let line = format!("cluster test ran against a real API server: {test}\n");
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("cluster-tests.txt"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
}

/// `target/<profile>/edgelb-speaker`, beside the test binary's `deps/` (cargo builds it
/// before tests run). Tests of the daemon crate can use `env!("CARGO_BIN_EXE_edgelb-speaker")`.
pub fn speaker_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary has no target dir")?
        .join("edgelb-speaker");
    anyhow::ensure!(
        bin.exists(),
        "{} missing: run `cargo build -p edgelb-daemon` or `cargo test --workspace`",
        bin.display()
    );
    Ok(bin)
}

/// The test binary's shared cluster ([`Cluster::shared`]) and an admin client, or `None`
/// when the test cannot run here (namespaces disabled on purpose, or no control-plane
/// binaries outside CI; both printed).
pub async fn cluster_for(test: &str) -> anyhow::Result<Option<(&'static Cluster, Client)>> {
    if !crate::lab::enabled(test) {
        return Ok(None);
    }
    let Some(cluster) = Cluster::shared(test)? else {
        return Ok(None);
    };
    let admin = cluster.admin_client().await?;
    Ok(Some((cluster, admin)))
}

/// The environment variable `name` parsed, or `default` when unset or unparsable (test
/// and bench sizes: `EDGELB_CHAOS_SERVICES`, `SIZES`, ...).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Creates (or updates) Node `name` with `labels` and InternalIP `ip`, as a kubelet
/// registers itself.
pub async fn create_node(
    client: &Client,
    name: &str,
    ip: std::net::IpAddr,
    labels: &[(&str, &str)],
) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    let params = PatchParams::apply(deploy::FIELD_MANAGER).force();
    let node = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
    });
    nodes
        .patch(name, &params, &Patch::Apply(&node))
        .await
        .with_context(|| format!("creating Node {name}"))?;
    let status = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip.to_string()},
                          {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "edgelb test node"}],
        },
    });
    nodes
        .patch_status(name, &params, &Patch::Apply(&status))
        .await
        .with_context(|| format!("setting Node {name} status"))?;
    Ok(())
}

/// Polls `f` every 200 ms until it yields `Some`, or fails after `timeout` naming `what` and
/// the last error.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last = String::new();
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() > timeout {
            bail!("{what}: not within {timeout:?} (last error: {last})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
