//! The speaker as deployed, against a real API server (tests/src/kube): the shipped CRDs,
//! manifests and RBAC, the speaker run with the shipped DaemonSet's args and env, a token of
//! the shipped ServiceAccount, inside a node network namespace on a LAN the test made (every
//! Service IP is announced only there).
//!
//! One scenario, run twice on the same cluster (each run must clean up after itself):
//! a Service of our class gets the pool's IP in its status (`ipMode: VIP`) with an
//! `IPAllocated` Event, the node answers ARP for it on the LAN, `/readyz` turns 200, a valid
//! and an invalid pool get their `Valid` conditions, a second Service waits for the pool
//! (`AllocationFailed`) and gets the IP once the first is deleted; the speaker's log holds no
//! authorization error. Cleanup deletes the test's namespace, pools, Node and Lease, and
//! checks that they are gone.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::Client;
use serde_json::json;

mod speaker_support;

use edgelb_daemon::api::{IPAddressPool, L2Advertisement};
use edgelb_tests::kube::{self as harness, Cluster, NodeSpec, Speaker, SYSTEM_NAMESPACE};
use edgelb_tests::lab::{self, Lan, Netns};

const TEST: &str = "kube_cluster::speaker_as_deployed_twice";
const NODE: &str = "kc-node-a";
const NODE_IP: &str = "192.0.2.1";
const CLIENT_IP: &str = "192.0.2.100";
const VIP: &str = "192.0.2.10";
const WAIT: Duration = Duration::from_secs(60);

fn service(ns: &str, name: &str) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "edgelb.io/speaker",
                 "selector": {"app": name}, "ports": [{"port": 80, "protocol": "TCP"}]}
    }))?)
}

fn slice(ns: &str, service: &str) -> anyhow::Result<EndpointSlice> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("{service}-1"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.5"], "nodeName": NODE, "conditions": {"ready": true}}],
        "ports": [{"port": 8080, "protocol": "TCP"}]}))?)
}

async fn ingress(api: &Api<Service>, name: &str) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let svc = api.get(name).await?;
    Ok(svc
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip.map(|ip| (ip, i.ip_mode)))
        .collect())
}

async fn has_event(events: &Api<Event>, reason: &str, on: &str) -> anyhow::Result<Option<()>> {
    let list = events.list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .any(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(on)
        })
        .then_some(()))
}

/// The network side: the node's namespace and a client on one LAN.
struct Lab {
    _lan: Lan,
    node: Netns,
    client: Netns,
}

fn lab() -> anyhow::Result<Lab> {
    let mut lan = Lan::new()?;
    let node = Netns::new("kcn")?;
    let client = Netns::new("kcc")?;
    lan.attach(&node, "eth0")?;
    lan.attach(&client, "eth0")?;
    node.addr("eth0", &format!("{NODE_IP}/24"))?;
    client.addr("eth0", &format!("{CLIENT_IP}/24"))?;
    Ok(Lab {
        _lan: lan,
        node,
        client,
    })
}

/// MACs that answered ARP for `ip` on the client's LAN.
fn arp_answers(client: &Netns, ip: &str) -> anyhow::Result<Vec<String>> {
    let out = client.output(&["arping", "-c", "1", "-w", "1", "-I", "eth0", ip])?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        text.contains("reply"),
        "arping: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_hexdigit() && c != ':'))
        .filter(|w| w.len() == 17 && w.matches(':').count() == 5)
        .map(str::to_ascii_lowercase)
        .collect())
}

fn mac_of(ns: &Netns, dev: &str) -> anyhow::Result<String> {
    let out = ns.ip(&["-br", "link", "show", dev])?;
    out.split_whitespace()
        .nth(2)
        .map(str::to_ascii_lowercase)
        .context("no MAC in `ip -br link`")
}

async fn scenario(cluster: &Cluster, client: &Client, run: u32) -> anyhow::Result<()> {
    let ns = format!("kc-run{run}");
    let lab = lab()?;
    harness::create_node(
        client,
        NODE,
        NODE_IP.parse()?,
        &[("topology.kubernetes.io/region", "r0")],
    )
    .await?;
    let pp = PostParams::default();
    Api::<Namespace>::all(client.clone())
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await
        .with_context(|| format!("creating namespace {ns}"))?;
    let pools: Api<IPAddressPool> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    pools
        .create(
            &pp,
            &serde_json::from_value(json!({
                "apiVersion": "edgelb.io/v1alpha1", "kind": "IPAddressPool",
                "metadata": {"name": "kc-good"}, "spec": {"addresses": [format!("{VIP}/32")]}}))?,
        )
        .await?;
    pools
        .create(
            &pp,
            &serde_json::from_value(json!({
                "apiVersion": "edgelb.io/v1alpha1", "kind": "IPAddressPool",
                "metadata": {"name": "kc-bad"}, "spec": {"addresses": ["10.0.0.300/24"]}}))?,
        )
        .await?;
    Api::<L2Advertisement>::namespaced(client.clone(), SYSTEM_NAMESPACE)
        .create(
            &pp,
            &serde_json::from_value(json!({
                "apiVersion": "edgelb.io/v1alpha1", "kind": "L2Advertisement",
                "metadata": {"name": "kc-lan"}, "spec": {"ipAddressPools": ["kc-good"]}}))?,
        )
        .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services.create(&pp, &service(&ns, "web")?).await?;
    Api::<EndpointSlice>::namespaced(client.clone(), &ns)
        .create(&pp, &slice(&ns, "web")?)
        .await?;

    let speaker = Speaker::deploy(
        cluster,
        &lab.node,
        &NodeSpec {
            name: NODE.into(),
            ip: NODE_IP.parse::<IpAddr>()?,
            extra_args: vec![],
        },
        std::path::Path::new(env!("CARGO_BIN_EXE_edgelb-speaker")),
    )
    .await?;
    let result = checks(&speaker, &lab, client, &ns).await;
    if result.is_err() {
        eprintln!(
            "speaker argv: {:?}\nspeaker log:\n{}",
            speaker.argv,
            speaker.logs()
        );
    }
    drop(speaker);
    result
}

async fn checks(speaker: &Speaker, lab: &Lab, client: &Client, ns: &str) -> anyhow::Result<()> {
    let t0 = Instant::now();
    harness::eventually("speaker /readyz 200", WAIT, || async {
        Ok((speaker.get("/readyz")?.0 == 200).then_some(()))
    })
    .await?;
    eprintln!("ready after {:?}", t0.elapsed());
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let got = harness::eventually("web gets the pool's IP", WAIT, || async {
        let i = ingress(&services, "web").await?;
        Ok((!i.is_empty()).then_some(i))
    })
    .await?;
    ensure!(
        got == [(VIP.to_string(), Some("VIP".to_string()))],
        "web's status.loadBalancer.ingress: {got:?}"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    harness::eventually("IPAllocated Event on web", WAIT, || {
        has_event(&events, "IPAllocated", "web")
    })
    .await?;
    let want_mac = mac_of(&lab.node, "eth0")?;
    let macs = harness::eventually("an ARP answer for the VIP on the LAN", WAIT, || async {
        let m = arp_answers(&lab.client, VIP)?;
        Ok((!m.is_empty()).then_some(m))
    })
    .await?;
    ensure!(
        macs.iter().all(|m| *m == want_mac),
        "ARP for {VIP}: answers {macs:?}, want only the node's {want_mac}"
    );

    let pools: Api<IPAddressPool> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let valid = |name: &'static str| {
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
    let good = harness::eventually("kc-good Valid", WAIT, valid("kc-good")).await?;
    ensure!(good.status == "True", "kc-good: {good:?}");
    let bad = harness::eventually("kc-bad Valid", WAIT, valid("kc-bad")).await?;
    ensure!(bad.status == "False", "kc-bad: {bad:?}");
    ensure!(
        bad.message == "spec.addresses[0]: \"10.0.0.300/24\" is not a CIDR or range",
        "kc-bad message: {}",
        bad.message
    );

    // The pool holds one address: a second Service waits, and gets it once web is deleted.
    let pp = PostParams::default();
    services.create(&pp, &service(ns, "api")?).await?;
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .create(&pp, &slice(ns, "api")?)
        .await?;
    harness::eventually("AllocationFailed Event on api", WAIT, || {
        has_event(&events, "AllocationFailed", "api")
    })
    .await?;
    ensure!(
        ingress(&services, "api").await?.is_empty(),
        "api got an IP from a full pool"
    );
    services.delete("web", &DeleteParams::default()).await?;
    harness::eventually("api gets the freed IP", WAIT, || async {
        let i = ingress(&services, "api").await?;
        Ok((i.iter().any(|(ip, _)| ip == VIP)).then_some(()))
    })
    .await?;

    let log = speaker.logs();
    for bad in ["Forbidden", "forbidden", " 403"] {
        ensure!(
            !log.contains(bad),
            "the speaker's log has {bad:?}: the shipped RBAC denied it something"
        );
    }
    Ok(())
}

/// Deletes what the scenario created and waits until it is gone.
async fn cleanup(client: &Client, run: u32) -> anyhow::Result<()> {
    let ns = format!("kc-run{run}");
    let dp = DeleteParams::default();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let pools: Api<IPAddressPool> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let l2: Api<L2Advertisement> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let nodes: Api<Node> = Api::all(client.clone());
    let _ = namespaces.delete(&ns, &dp).await;
    for p in ["kc-good", "kc-bad"] {
        let _ = pools.delete(p, &dp).await;
    }
    let _ = l2.delete("kc-lan", &dp).await;
    let _ = leases.delete("edgelb-leader", &dp).await;
    let _ = nodes.delete(NODE, &dp).await;
    harness::eventually("the test's objects gone", WAIT, || async {
        let left = [
            namespaces.get_opt(&ns).await?.is_some(),
            pools.get_opt("kc-good").await?.is_some(),
            pools.get_opt("kc-bad").await?.is_some(),
            l2.get_opt("kc-lan").await?.is_some(),
            leases.get_opt("edgelb-leader").await?.is_some(),
            nodes.get_opt(NODE).await?.is_some(),
        ];
        Ok((!left.contains(&true)).then_some(()))
    })
    .await
}

#[tokio::test]
async fn speaker_as_deployed_twice() -> anyhow::Result<()> {
    if !lab::enabled(TEST) {
        return Ok(());
    }
    let Some(cluster) = Cluster::shared(TEST)? else {
        return Ok(());
    };
    let client = cluster.admin_client().await?;
    for run in 0..2 {
        let t = Instant::now();
        let result = scenario(cluster, &client, run).await;
        let cleaned = cleanup(&client, run).await;
        result.with_context(|| format!("run {run}"))?;
        cleaned.with_context(|| format!("cleanup of run {run}"))?;
        eprintln!("run {run}: passed and cleaned up in {:?}", t.elapsed());
    }
    speaker_support::audit::speaker_requests_were_granted_and_listed(cluster)
}
