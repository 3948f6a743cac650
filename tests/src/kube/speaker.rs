//! `edgelb-speaker run` as the shipped DaemonSet runs it, inside a node's network namespace.
//!
//! What the kubelet would do for the pod, the harness does here:
//! - the container's `args` and `env` come from `deploy/manifests/20-speaker.yaml`; `$(VAR)`
//!   in args is expanded from the env, whose `fieldRef`s are filled in for this node
//!   (`spec.nodeName`, `status.hostIP`, `metadata.namespace`, `metadata.name`);
//! - each `hostPath` volume mount becomes a directory of the test, and an argument under a
//!   mount path is moved there (e.g. `--socket=/run/edgelb/speaker.sock`);
//! - the ServiceAccount token: a token of the pod's `serviceAccountName` (TokenRequest, as
//!   the kubelet's projected volume gets), in a file named by the kubeconfig (`tokenFile`) that
//!   `$KUBECONFIG` names, whose server is a [`Forwarder`] in the namespace; as the kubelet
//!   does, a new token replaces the file once the old one is 80 % through its life, so a
//!   speaker outlives its first token (a 50 000-Service bench runs for hours). The speaker
//!   never sees an admin credential.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;

use super::{Cluster, Forwarder};
use crate::lab::{Netns, NsProcess};

/// Where the speaker's API server forwarder listens inside its namespace.
pub const FORWARD_ADDR: &str = "127.0.0.1:6443";

/// How long a ServiceAccount token the harness requests is valid.
pub const TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);

/// When the harness replaces a speaker's token: at 80 % of its life, as the kubelet does for a
/// projected token. `EDGELB_TOKEN_ROTATE_SECS` sets it by hand (to watch a rotation).
pub fn token_rotation_period() -> std::time::Duration {
    std::env::var("EDGELB_TOKEN_ROTATE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_secs)
        .unwrap_or(TOKEN_LIFETIME * 4 / 5)
}

/// Writes `token` to `path` whole: a new file renamed over the old one, so a reader never
/// sees a half-written token.
fn write_token(path: &Path, token: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, token).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Replaces the token in `path` with a new one of `namespace/name` every
/// [`token_rotation_period`]; a failed request is tried again after a few seconds (the old
/// token is still valid for a fifth of its life). Aborted with the speaker.
fn rotate_token(
    admin: Client,
    namespace: String,
    name: String,
    path: PathBuf,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = token_rotation_period();
        loop {
            tokio::time::sleep(wait).await;
            let fresh = service_account_token(&admin, &namespace, &name).await;
            wait = match fresh.and_then(|t| write_token(&path, &t)) {
                Ok(()) => token_rotation_period(),
                Err(e) => {
                    eprintln!("token rotation for {namespace}/{name}: {e:#}; trying again in 5 s");
                    std::time::Duration::from_secs(5)
                }
            };
        }
    })
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A token of ServiceAccount `namespace/name`, valid for [`TOKEN_LIFETIME`] (`kubectl create
/// token`).
pub async fn service_account_token(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<String> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(TOKEN_LIFETIME.as_secs() as i64),
            ..Default::default()
        }),
        ..Default::default()
    };
    let out: TokenRequest = api
        .create_subresource("token", name, &PostParams::default(), &req)
        .await
        .with_context(|| format!("TokenRequest for ServiceAccount {namespace}/{name}"))?;
    out.status
        .and_then(|s| s.token)
        .with_context(|| format!("TokenRequest for {namespace}/{name}: no token in the answer"))
}

/// The shipped speaker DaemonSet (`deploy/manifests/20-speaker.yaml`).
pub fn shipped_daemonset() -> anyhow::Result<DaemonSet> {
    let path = super::workspace().join("deploy/manifests/20-speaker.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_norway::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The pod's facts the kubelet fills in.
#[derive(Clone, Debug)]
pub struct PodFacts {
    /// `spec.nodeName`.
    pub node: String,
    /// `status.hostIP` (the node's address; hostNetwork pods also have it as `podIP`).
    pub host_ip: IpAddr,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub pod_name: String,
}

/// A container's arguments and environment, as the kubelet runs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerCommand {
    /// `args`, `$(VAR)` expanded and mount paths mapped.
    pub args: Vec<String>,
    /// `env`, in order, fieldRefs filled in.
    pub env: Vec<(String, String)>,
}

/// The speaker container's command line and env as the kubelet would run it on `facts`'s
/// node, with mount paths mapped under `mounts_root`.
pub fn container_command(
    ds: &DaemonSet,
    facts: &PodFacts,
    mounts_root: &Path,
) -> anyhow::Result<ContainerCommand> {
    let spec = ds
        .spec
        .template
        .spec
        .as_ref()
        .context("DaemonSet without a pod template spec")?;
    let c: &Container = spec
        .containers
        .iter()
        .find(|c| c.name == "speaker")
        .context("DaemonSet without a `speaker` container")?;
    let mut env: Vec<(String, String)> = Vec::new();
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => expand(v, &env),
            (None, Some(from)) => {
                let field = from
                    .field_ref
                    .as_ref()
                    .map(|f| f.field_path.as_str())
                    .with_context(|| format!("env {}: only fieldRef is supported", e.name))?;
                match field {
                    "spec.nodeName" => facts.node.clone(),
                    "status.hostIP" | "status.podIP" => facts.host_ip.to_string(),
                    "metadata.namespace" => facts.namespace.clone(),
                    "metadata.name" => facts.pod_name.clone(),
                    other => bail!(
                        "env {}: fieldRef {other} is not filled in by the harness",
                        e.name
                    ),
                }
            }
            (None, None) => String::new(),
        };
        env.push((e.name.clone(), value));
    }
    // hostPath volumes by name, and where the container mounts them.
    let host_paths: BTreeMap<&str, &str> = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| {
            v.host_path
                .as_ref()
                .map(|h| (v.name.as_str(), h.path.as_str()))
        })
        .collect();
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        if let Some(host) = host_paths.get(m.name.as_str()) {
            let local = mounts_root.join(host.trim_start_matches('/').replace('/', "_"));
            std::fs::create_dir_all(&local)?;
            mounts.push((m.mount_path.clone(), local));
        }
    }
    let mut args: Vec<String> = Vec::new();
    for a in c.args.iter().flatten() {
        let mut a = expand(a, &env);
        for (mount, local) in &mounts {
            let prefix = format!("{}/", mount.trim_end_matches('/'));
            if let Some(pos) = a.find(&prefix) {
                a = format!(
                    "{}{}/{}",
                    &a[..pos],
                    local.display(),
                    &a[pos + prefix.len()..]
                );
            }
        }
        args.push(a);
    }
    Ok(ContainerCommand { args, env })
}

/// Kubernetes' `$(VAR)` expansion (unknown names stay as written, `$$` is a literal `$`).
fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(end) = tail.strip_prefix("$(").and_then(|t| t.find(')')) {
            let name = &tail[2..2 + end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&tail[..3 + end]),
            }
            rest = &tail[3 + end..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// A node for a speaker: its name and address, in a namespace the test created.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The Node object's name.
    pub name: String,
    /// The node's address (already configured in its namespace by the test).
    pub ip: IpAddr,
    /// Arguments appended after the DaemonSet's (e.g. `--lease-seconds=6` for a fast test).
    pub extra_args: Vec<String>,
}

impl NodeSpec {
    /// Node `name` at `ip`, with the DaemonSet's arguments only.
    pub fn new(name: &str, ip: IpAddr) -> NodeSpec {
        NodeSpec {
            name: name.to_string(),
            ip,
            extra_args: Vec::new(),
        }
    }
}

/// One running speaker; killed with its forwarder on drop.
pub struct Speaker {
    /// The node's name.
    pub node: String,
    /// The speaker process (SIGKILLed on drop).
    pub process: NsProcess,
    /// Its API server path; freeze, slow or cut it per node.
    pub forwarder: Forwarder,
    /// stdout and stderr.
    pub log: PathBuf,
    /// The DaemonSet's `--metrics-addr`, as reached inside the namespace.
    pub metrics: Option<SocketAddr>,
    ns: String,
    /// The argv it was started with (after `env ...`), for messages.
    pub argv: Vec<String>,
    /// The pod's name (`metadata.name` in its env) and namespace.
    pub pod: (String, String),
    ip: IpAddr,
    route: Option<super::PodRoute>,
    /// The token rotation, stopped with the speaker.
    _rotation: AbortOnDrop,
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker").field("node", &self.node).finish()
    }
}

impl Speaker {
    /// Deploys a speaker as the DaemonSet's pod on `node` in namespace `ns`: forwarder,
    /// ServiceAccount token, kubeconfig, the container's args and env. `binary` is
    /// `edgelb-speaker` (`env!("CARGO_BIN_EXE_edgelb-speaker")` or [`super::speaker_binary`]).
    pub async fn deploy(
        cluster: &Cluster,
        ns: &Netns,
        node: &NodeSpec,
        binary: &Path,
    ) -> anyhow::Result<Speaker> {
        let ds = shipped_daemonset()?;
        let pod_ns = ds
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let sa = ds
            .spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .context("the DaemonSet names no serviceAccountName")?;
        let admin = cluster.admin_client().await?;
        let token = service_account_token(&admin, &pod_ns, &sa).await?;
        let listen: SocketAddr = FORWARD_ADDR.parse()?;
        let forwarder = Forwarder::start(ns.name(), listen, cluster.api_addr())?;
        let root = cluster.dir().join(format!("node-{}", node.name));
        std::fs::create_dir_all(&root)?;
        let kubeconfig = root.join("kubeconfig");
        let token_file = root.join("token");
        write_token(&token_file, &token)?;
        cluster.write_kubeconfig_with_token_file(&kubeconfig, forwarder.addr(), &token_file)?;
        let rotation = AbortOnDrop(rotate_token(admin, pod_ns.clone(), sa, token_file));
        let facts = PodFacts {
            node: node.name.clone(),
            host_ip: node.ip,
            namespace: pod_ns.clone(),
            pod_name: format!("edgelb-speaker-{}", node.name),
        };
        let pod = (facts.pod_name.clone(), pod_ns);
        let ContainerCommand { mut args, env } = container_command(&ds, &facts, &root)?;
        args.extend(node.extra_args.iter().cloned());
        let metrics = args
            .iter()
            .find_map(|a| a.strip_prefix("--metrics-addr="))
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .map(|a| {
                if a.ip().is_unspecified() {
                    SocketAddr::new(node.ip, a.port())
                } else {
                    a
                }
            });
        let mut argv: Vec<String> = vec!["env".into()];
        for (k, v) in &env {
            argv.push(format!("{k}={v}"));
        }
        argv.push(format!("KUBECONFIG={}", kubeconfig.display()));
        argv.push("NO_COLOR=1".into());
        argv.push(binary.display().to_string());
        argv.extend(args);
        let log = root.join("speaker.log");
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let process = ns
            .spawn(&refs, Some(&log))
            .with_context(|| format!("starting the speaker of {}", node.name))?;
        Ok(Speaker {
            node: node.name.clone(),
            process,
            forwarder,
            log,
            metrics,
            ns: ns.name().to_string(),
            argv,
            pod,
            ip: node.ip,
            route: None,
            _rotation: rotation,
        })
    }

    /// Creates the speaker's Pod object as the DaemonSet controller and kubelet would (the
    /// template's spec on this node; Running, its IP the node's: hostNetwork) and makes
    /// that IP reachable for the API server, so `pods/https:POD:PORT/proxy` reaches this
    /// speaker. The test deletes the Pod ([`Speaker::delete_pod`]).
    pub async fn publish_pod(&mut self, cluster: &Cluster, admin: &Client) -> anyhow::Result<()> {
        let ds = shipped_daemonset()?;
        let template = ds.spec.template;
        let mut spec = template.spec.context("DaemonSet without a pod spec")?;
        spec.node_name = Some(self.node.clone());
        let (name, ns) = &self.pod;
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: template.metadata.and_then(|m| m.labels),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
            status: None,
        };
        let api: Api<Pod> = Api::namespaced(admin.clone(), ns);
        api.create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("creating Pod {ns}/{name}"))?;
        let ip = self.ip.to_string();
        let status = serde_json::json!({"status": {
            "phase": "Running", "hostIP": ip, "hostIPs": [{"ip": ip}],
            "podIP": ip, "podIPs": [{"ip": ip}]}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("setting Pod {ns}/{name}'s status"))?;
        self.route = Some(cluster.route_pod(self.ip, &self.ns)?);
        Ok(())
    }

    /// Deletes the Pod of [`Speaker::publish_pod`] at once (no kubelet confirms a graceful
    /// deletion here) and waits until it is gone.
    pub async fn delete_pod(admin: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::namespaced(admin.clone(), ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        let _ = api.delete(name, &dp).await;
        super::eventually(
            "the speaker's Pod gone",
            std::time::Duration::from_secs(30),
            || async { Ok(api.get_opt(name).await?.is_none().then_some(())) },
        )
        .await
    }

    /// The speaker's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Prints the speaker's argv and log when `result` is an error (a failing test's
    /// evidence); returns `result`.
    pub fn log_if_failed<T>(&self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        if result.is_err() {
            eprintln!(
                "speaker of {} argv: {:?}\nspeaker log:\n{}",
                self.node,
                self.argv,
                self.logs()
            );
        }
        result
    }

    /// `GET path` on the metrics port (`/readyz`, `/healthz`, `/metrics`): (status, body).
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let addr = self
            .metrics
            .context("the DaemonSet gives the speaker no --metrics-addr")?;
        super::forward::http_get_in(&self.ns, addr, path)
    }
}
