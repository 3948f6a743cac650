//! Against a real API server, gated on `EDGELB_TEST_KUBECONFIG` (a kubeconfig path; use a
//! throw-away cluster: the test creates cluster-scoped CRDs and Nodes). Without it the test
//! prints a note and passes: it must compile everywhere, it runs where a cluster is.
//!
//! It applies `deploy/crds/`, creates two Nodes, a LoadBalancer Service with an
//! EndpointSlice, a valid and an invalid `IPAddressPool`, runs `edgelb-speaker` with that
//! kubeconfig, and checks the Service's `status.loadBalancer`, the Events, both pools'
//! `Valid` conditions, and that deleting the Service frees its IP for another.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use edgelb_daemon::api::IPAddressPool;

struct Cleanup {
    speaker: Option<Child>,
    client: Client,
    namespace: String,
    nodes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut c) = self.speaker.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let client = self.client.clone();
        let ns = self.namespace.clone();
        let nodes = self.nodes.clone();
        // Best effort, bounded: a fresh runtime on a plain thread (we may be inside one).
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Runtime::new() else {
                return;
            };
            rt.block_on(async move {
                let _ = tokio::time::timeout(Duration::from_secs(20), async {
                    let _ = Api::<Namespace>::all(client.clone())
                        .delete(&ns, &DeleteParams::default())
                        .await;
                    for n in nodes {
                        let _ = Api::<Node>::all(client.clone())
                            .delete(&n, &DeleteParams::default())
                            .await;
                    }
                })
                .await;
            });
        })
        .join();
    }
}

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(60) {
        match f().await {
            Ok(Some(v)) => {
                eprintln!("{what}: after {:?}", start.elapsed());
                return Ok(v);
            }
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("{what}: not within 60 s (last error: {last})")
}

fn crd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds")
}

fn service(ns: &str, name: &str) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "edgelb.io/speaker",
                 "selector": {"app": name}, "ports": [{"port": 80, "protocol": "TCP"}]}
    }))?)
}

async fn ingress_ips(api: &Api<Service>, name: &str) -> anyhow::Result<Vec<String>> {
    let svc = api.get(name).await?;
    Ok(svc
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip)
        .collect())
}

#[tokio::test]
async fn speaker_against_a_real_api_server() -> anyhow::Result<()> {
    let Some(kubeconfig) = std::env::var_os("EDGELB_TEST_KUBECONFIG") else {
        eprintln!("EDGELB_TEST_KUBECONFIG is not set: skipping the real API server suite");
        return Ok(());
    };
    let kubeconfig = PathBuf::from(kubeconfig);
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).context("reading kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = Client::try_from(config)?;
    let ns = format!("edgelb-test-{}", std::process::id());
    let nodes = vec![format!("{ns}-node-a"), format!("{ns}-node-b")];
    let mut guard = Cleanup {
        speaker: None,
        client: client.clone(),
        namespace: ns.clone(),
        nodes: nodes.clone(),
    };

    // CRDs, by server-side apply of the committed YAML.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let ssa = PatchParams::apply("edgelb-test").force();
    for entry in std::fs::read_dir(crd_dir())? {
        let path = entry?.path();
        let crd: CustomResourceDefinition =
            serde_norway::from_str(&std::fs::read_to_string(&path)?)
                .with_context(|| format!("parsing {}", path.display()))?;
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        crds.patch(&name, &ssa, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying {name}"))?;
        eventually(&format!("CRD {name} established"), || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let c = crds.get(&name).await?;
                let ok = c
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                Ok(ok.then_some(()))
            }
        })
        .await?;
    }

    let pp = PostParams::default();
    Api::<Namespace>::all(client.clone())
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    for (i, n) in nodes.iter().enumerate() {
        let node: Node = serde_json::from_value(
            json!({"metadata": {"name": n, "labels": {"topology.kubernetes.io/region": format!("r{i}")}}}),
        )?;
        Api::<Node>::all(client.clone()).create(&pp, &node).await?;
    }
    let pools: Api<IPAddressPool> = Api::namespaced(client.clone(), &ns);
    let good: IPAddressPool = serde_json::from_value(json!({
        "apiVersion": "edgelb.io/v1alpha1", "kind": "IPAddressPool",
        "metadata": {"name": "good", "namespace": ns}, "spec": {"addresses": ["192.0.2.10/32"]}}))?;
    let bad: IPAddressPool = serde_json::from_value(json!({
        "apiVersion": "edgelb.io/v1alpha1", "kind": "IPAddressPool",
        "metadata": {"name": "bad", "namespace": ns}, "spec": {"addresses": ["10.0.0.300/24"]}}))?;
    pools.create(&pp, &good).await?;
    pools.create(&pp, &bad).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services.create(&pp, &service(&ns, "web")?).await?;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": ns, "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.5"], "nodeName": nodes[0], "conditions": {"ready": true}}],
        "ports": [{"port": 8080, "protocol": "TCP"}]}))?;
    Api::<EndpointSlice>::namespaced(client.clone(), &ns)
        .create(&pp, &slice)
        .await?;

    guard.speaker = Some(
        Command::new(env!("CARGO_BIN_EXE_edgelb-speaker"))
            .args([
                "run",
                "--node",
                &nodes[0],
                "--namespace",
                &ns,
                "--lease-seconds",
                "6",
                "--kubeconfig",
            ])
            .arg(&kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting edgelb-speaker")?,
    );

    eventually("web gets 192.0.2.10", || {
        let s = services.clone();
        async move { Ok((ingress_ips(&s, "web").await? == ["192.0.2.10"]).then_some(())) }
    })
    .await?;
    let svc = services.get("web").await?;
    let mode = svc
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress)
        .unwrap_or_default();
    assert_eq!(mode[0].ip_mode.as_deref(), Some("VIP"));

    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    eventually("IPAllocated Event on web", || {
        let e = events.clone();
        async move {
            let list = e.list(&ListParams::default()).await?;
            Ok(list
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("IPAllocated")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web")
                })
                .then_some(()))
        }
    })
    .await?;

    let condition = |name: &'static str| {
        let pools = pools.clone();
        move || {
            let pools = pools.clone();
            async move {
                let p = pools.get(name).await?;
                Ok(p.status
                    .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Valid")))
            }
        }
    };
    let valid = eventually("good pool Valid=True", condition("good")).await?;
    assert_eq!(valid.status, "True");
    let invalid = eventually("bad pool Valid=False", condition("bad")).await?;
    assert_eq!(invalid.status, "False");
    assert_eq!(
        invalid.message,
        "spec.addresses[0]: \"10.0.0.300/24\" is not a CIDR or range"
    );

    // The pool holds one address: a second Service waits, and gets it once web is deleted.
    services.create(&pp, &service(&ns, "api")?).await?;
    eventually("AllocationFailed Event on api", || {
        let e = events.clone();
        async move {
            let list = e.list(&ListParams::default()).await?;
            Ok(list
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some("AllocationFailed"))
                .then_some(()))
        }
    })
    .await?;
    services.delete("web", &DeleteParams::default()).await?;
    eventually("api gets the freed 192.0.2.10", || {
        let s = services.clone();
        async move { Ok((ingress_ips(&s, "api").await? == ["192.0.2.10"]).then_some(())) }
    })
    .await?;
    drop(guard);
    Ok(())
}
