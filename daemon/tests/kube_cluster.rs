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

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;
use serde_json::json;

mod speaker_support;

use edgelb_daemon::api::{IPAddressPool, L2Advertisement};
use edgelb_tests::kube::objects::{
    create_namespace, event, ingress, lb_service, ready_slice, then_clean, Cleanup,
};
use edgelb_tests::kube::{self as harness, Cluster, Speaker, SYSTEM_NAMESPACE};
use edgelb_tests::lab::{Lan, Netns};

const TEST: &str = "kube_cluster::speaker_as_deployed_twice";
const NODE: &str = "kc-node-a";
const NODE_IP: &str = "192.0.2.1";
const CLIENT_IP: &str = "192.0.2.100";
const VIP: &str = "192.0.2.10";
const WAIT: Duration = Duration::from_secs(60);

fn service(ns: &str, name: &str) -> anyhow::Result<Service> {
    lb_service(ns, name, json!({"spec": {"selector": {"app": name}}}))
}

async fn has_event(events: &Api<Event>, reason: &str, on: &str) -> anyhow::Result<Option<()>> {
    Ok(event(events, reason, on).await?.map(|_| ()))
}

/// The network side: the node's namespace and a client on one LAN.
struct Lab {
    _lan: Lan,
    node: Netns,
    client: Netns,
}

fn lab() -> anyhow::Result<Lab> {
    let mut lan = Lan::new()?;
    let node = lan.join("kcn", &format!("{NODE_IP}/24"))?;
    let client = lan.join("kcc", &format!("{CLIENT_IP}/24"))?;
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
    create_namespace(client, &ns).await?;
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
        .create(&pp, &ready_slice(&ns, "web", NODE)?)
        .await?;

    let speaker = speaker_support::deploy_speaker(cluster, &lab.node, NODE, NODE_IP).await?;
    let result = speaker.log_if_failed(checks(&speaker, &lab, client, &ns).await);
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
        .create(&pp, &ready_slice(ns, "api", NODE)?)
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
    let sys = Some(SYSTEM_NAMESPACE);
    Cleanup::new()
        .add::<Namespace>(client, None, &format!("kc-run{run}"))
        .add::<IPAddressPool>(client, sys, "kc-good")
        .add::<IPAddressPool>(client, sys, "kc-bad")
        .add::<L2Advertisement>(client, sys, "kc-lan")
        .add::<Lease>(client, sys, "edgelb-leader")
        .add::<Node>(client, None, NODE)
        .run(WAIT)
        .await
}

#[tokio::test]
async fn speaker_as_deployed_twice() -> anyhow::Result<()> {
    let Some((cluster, client)) = harness::cluster_for(TEST).await? else {
        return Ok(());
    };
    for run in 0..2 {
        then_clean(
            &format!("run {run}"),
            scenario(cluster, &client, run),
            cleanup(&client, run),
        )
        .await?;
    }
    speaker_support::audit::speaker_requests_were_granted_and_listed(cluster)
}
