//! Cloud load balancers end to end on a real API server (tests/src/kube: the shipped CRDs,
//! manifests and RBAC, the speaker run as the DaemonSet's pod with the shipped
//! ServiceAccount's token inside its node's network namespace, plus
//! `--class=alibabacloud.com/elb --elb-*`), against the ENS emulator started here on
//! loopback and reached from the node's namespace through a forwarder.
//!
//! A Service of class `alibabacloud.com/elb` selecting NodePool `np-e` (ENS annotations,
//! two nodes with providerIDs): the PoolService is fanned out and gets the cloud finalizer;
//! the emulator then holds exactly one ELB named `k8s/cube/ke-elb/np-e/ke-cluster` with a
//! listener on the Service's NodePort, both nodes' instances as backends and one EIP bound
//! to it; the EIP is the PoolService's and the Service's ingress. A node leaving the pool
//! leaves the backends; a port added adds a listener. The Service deleted: the ELB and EIP
//! are released, then the PoolService's finalizer goes, then the Service. The leak report
//! is empty; the access key's secret never appears in the speaker's log or in an Event.
//!
//! Health checks: the listener is created with the Service's health-check annotations (the
//! rest ENS's defaults) and `edgelbctl elb` shows them; an out-of-range value is refused by
//! a `CloudLoadBalancerInvalid` Event naming the annotation while the listener stays as it
//! was; a changed annotation is applied to the running listener in place
//! (`SetLoadBalancerTCPListenerAttribute`, no second create); a check changed on the cloud
//! behind the speaker's back is set back at the next resync; a removed URI annotation leaves
//! the listener's URI, as Alibaba's CCM does (no set at later resyncs).

#![allow(clippy::unwrap_used)]

/// The audit-log check the daemon's cluster tests use.
#[path = "../../daemon/tests/speaker_support/audit.rs"]
mod audit;
mod support;

use std::time::Duration;

use anyhow::{ensure, Context};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use edgelb_cloud::health::{
    ANNOTATION_HEALTHY_THRESHOLD, ANNOTATION_HEALTH_CHECK_INTERVAL, ANNOTATION_HEALTH_CHECK_TYPE,
    ANNOTATION_HEALTH_CHECK_URI, ANNOTATION_UNHEALTHY_THRESHOLD,
};
use edgelb_cloud::model::Protocol;
use edgelb_daemon::api::openyurt::PoolService;
use edgelb_tests::kube::{self as harness, Cluster, Speaker};
use edgelb_tests::lab::{Lan, Netns};
use support::cluster::{self, calls_by_action, inventory_until, lb, REGION, WAIT};
use support::{Emulator, SECRET};

const TEST: &str = "kube_elb::cloud_load_balancer_lifecycle";
const NS: &str = "ke-elb";
const NODE: &str = "ke-node-a";
const NODE_IP: &str = "192.0.2.41";
const NODE_B: &str = "ke-node-b";
const POOL: &str = "np-e";
const CREDENTIALS: &str = "ke-elb-credentials";
const LB_NAME: &str = "k8s/cube/ke-elb/np-e/ke-cluster";

async fn scenario(
    cluster: &Cluster,
    client: &Client,
    ns: &Netns,
    emu: &Emulator,
) -> anyhow::Result<()> {
    cluster::prepare(client, NS, CREDENTIALS).await?;
    cluster::cloud_node(client, NODE, NODE_IP, POOL, REGION, "i-e1").await?;
    cluster::cloud_node(client, NODE_B, "192.0.2.42", POOL, REGION, "i-e2").await?;
    cluster::ens_pool(client, POOL, REGION, json!({"k8s-svc": "cube"})).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let ports = json!([{"name": "http", "port": 80, "protocol": "TCP"}]);
    services
        .create(
            &PostParams::default(),
            &cluster::cloud_service(
                NS,
                "cube",
                "k8s-svc=cube",
                json!({ANNOTATION_HEALTHY_THRESHOLD: "4", ANNOTATION_HEALTH_CHECK_INTERVAL: "5"}),
                ports,
            )?,
        )
        .await?;
    let node_port = services.get("cube").await?.spec.unwrap().ports.unwrap()[0]
        .node_port
        .context("no nodePort allocated")?;

    let (speaker, _to_emu) = cluster::cloud_speaker(
        cluster,
        ns,
        NODE,
        NODE_IP,
        CREDENTIALS,
        "ke-cluster",
        emu.addr,
        100,
        &[],
    )
    .await?;
    let result = checks(client, &services, emu, node_port, &speaker).await;
    let log = speaker.logs();
    if result.is_err() {
        eprintln!("speaker log:\n{log}");
    }
    result?;
    ensure!(
        !log.contains(SECRET),
        "the access key secret is in the speaker's log"
    );
    Ok(())
}

async fn checks(
    client: &Client,
    services: &Api<Service>,
    emu: &Emulator,
    node_port: i32,
    speaker: &Speaker,
) -> anyhow::Result<()> {
    let pss: Api<PoolService> = Api::namespaced(client.clone(), NS);
    // Create: one ELB with the listener and both backends, one EIP bound to it.
    let t = std::time::Instant::now();
    let inv = inventory_until(emu, "ELB, listener, backends, EIP", |inv| {
        lb(inv, LB_NAME).is_some_and(|l| {
            l["Listeners"] == json!(["tcp/80"])
                && l["BackendServers"] == json!({"i-e1": 100, "i-e2": 100})
                && l["LoadBalancerStatus"] == "Active"
        }) && inv["EipAddresses"]
            .as_array()
            .is_some_and(|e| e.len() == 1 && e[0]["State"] == "InUse")
    })
    .await?;
    eprintln!("created in {:?}", t.elapsed());
    ensure!(
        inv["LoadBalancers"].as_array().map(Vec::len) == Some(1),
        "{inv:#}"
    );
    let eip = inv["EipAddresses"][0]["IpAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ps = pss.get("cube-np-e").await?;
    ensure!(
        ps.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "edgelb.io/cloud-resources"),
        "no cloud finalizer on the PoolService: {:?}",
        ps.metadata.finalizers
    );
    // The listener forwards to the Service's NodePort.
    let c = emu.client();
    let lb_id = lb(&inv, LB_NAME).unwrap()["LoadBalancerId"]
        .as_str()
        .unwrap()
        .to_string();
    let listeners = edgelb_cloud::ens::api::listeners(&c, &lb_id).await?;
    ensure!(
        listeners.len() == 1 && i32::from(listeners[0].backend_port) == node_port,
        "{listeners:?} vs nodePort {node_port}"
    );
    // The EIP is the PoolService's and the Service's ingress.
    harness::eventually("the EIP in the PoolService's status", WAIT, || async {
        let ps = pss.get("cube-np-e").await?;
        let ips: Vec<String> = ps
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.ip)
            .collect();
        Ok((ips == [eip.clone()]).then_some(()))
    })
    .await?;
    harness::eventually("the EIP in the Service's status", WAIT, || async {
        let ips = edgelb_tests::kube::objects::ingress(services, "cube").await?;
        Ok(ips.iter().any(|(ip, _)| *ip == eip).then_some(()))
    })
    .await?;
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let synced = harness::eventually("CloudLoadBalancerSynced Event", WAIT, || async {
        edgelb_tests::kube::objects::event(&events, "CloudLoadBalancerSynced", "cube-np-e").await
    })
    .await?;
    let note = synced.note.unwrap_or_default();
    ensure!(
        note.contains("CreateLoadBalancer") && note.contains(LB_NAME),
        "{note}"
    );
    // `edgelbctl elb`'s view (the local API socket) and the metrics: the load balancer,
    // EIP, listener and backends; calls per action; never the secret.
    let socket = speaker
        .argv
        .iter()
        .find_map(|a| a.strip_prefix("--socket="))
        .context("no --socket")?
        .to_string();
    let view = harness::eventually("the cloud section of the view", WAIT, || async {
        let v =
            edgelbctl::socket::view(std::path::Path::new(&socket), Duration::from_secs(5)).await?;
        Ok(v.cloud
            .clone()
            .filter(|c| {
                c.active
                    && c.load_balancers
                        .iter()
                        .any(|l| l.eip.as_deref() == Some(eip.as_str()) && l.converged)
            })
            .map(|_| v))
    })
    .await?;
    let cloud = view.cloud.clone().context("no cloud section")?;
    let l = &cloud.load_balancers[0];
    ensure!(
        l.listeners
            .iter()
            .any(|x| x.starts_with(&format!("tcp/80 -> {node_port}"))
                && x.contains("health check tcp every 5s timeout 5s healthy 4 unhealthy 3"))
            && l.backends == ["i-e1:100", "i-e2:100"]
            && l.load_balancer.is_some(),
        "{l:?}"
    );
    ensure!(
        !serde_json::to_string(&view)?.contains(SECRET),
        "the view carries the secret"
    );
    let (code, metrics) = speaker.get("/metrics")?;
    ensure!(
        code == 200 && metrics.contains("edgelb_cloud_calls_total{action=\"CreateLoadBalancer\"}"),
        "metrics: {metrics}"
    );

    health_checks(services, &events, emu, &lb_id, node_port).await?;

    // A node leaves the pool; a port is added.
    harness::create_node(
        client,
        NODE_B,
        "192.0.2.42".parse()?,
        &[("apps.openyurt.io/nodepool", "np-other")],
    )
    .await?;
    services
        .patch(
            "cube",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "nodePort": node_port},
                {"name": "https", "port": 443, "protocol": "TCP"}]}})),
        )
        .await?;
    inventory_until(emu, "backend left, listener added", |inv| {
        lb(inv, LB_NAME).is_some_and(|l| {
            l["BackendServers"] == json!({"i-e1": 100})
                && l["Listeners"] == json!(["tcp/80", "tcp/443"])
        })
    })
    .await?;

    // The Service deleted: ELB and EIP released, then the PoolService, then the Service.
    services.delete("cube", &Default::default()).await?;
    cluster::inventory_holds(emu, "everything released", 0, 0).await?;
    cluster::gone(client, NS, "cube", "cube-np-e").await?;
    // Credentials never in an Event.
    let all = events.list(&ListParams::default()).await?;
    for e in all.items {
        ensure!(
            !e.note.unwrap_or_default().contains(SECRET),
            "an Event carries the access key secret"
        );
    }
    Ok(())
}

async fn annotate(services: &Api<Service>, a: serde_json::Value) -> anyhow::Result<()> {
    let patch = Patch::Merge(json!({"metadata": {"annotations": a}}));
    services
        .patch("cube", &PatchParams::default(), &patch)
        .await?;
    Ok(())
}

/// The listener's health check as the emulator holds it.
fn health_of(inv: &serde_json::Value) -> Option<&serde_json::Value> {
    lb(inv, LB_NAME).map(|l| &l["ListenerAttributes"]["tcp/80"])
}

/// Created with the annotations, refused out of range, changed in place.
async fn health_checks(
    services: &Api<Service>,
    events: &Api<Event>,
    emu: &Emulator,
    lb_id: &str,
    node_port: i32,
) -> anyhow::Result<()> {
    let inv = emu.inventory();
    let h = health_of(&inv).context("no listener attributes")?;
    ensure!(
        h["HealthyThreshold"] == 4
            && h["HealthCheckInterval"] == 5
            && h["UnhealthyThreshold"] == 3
            && h["HealthCheckConnectTimeout"] == 5
            && h["HealthCheckConnectPort"] == node_port
            && h["HealthCheckType"] == "tcp",
        "created with {h}"
    );
    // Out of range: an Event names the Service's annotation; the listener is untouched.
    annotate(services, json!({ANNOTATION_HEALTH_CHECK_INTERVAL: "51"})).await?;
    let invalid = harness::eventually("CloudLoadBalancerInvalid Event", WAIT, || async {
        edgelb_tests::kube::objects::event(events, "CloudLoadBalancerInvalid", "cube-np-e").await
    })
    .await?;
    let note = invalid.note.unwrap_or_default();
    ensure!(
        note.contains(ANNOTATION_HEALTH_CHECK_INTERVAL)
            && note.contains("ke-elb/cube")
            && note.contains("from 1 to 50"),
        "{note}"
    );
    ensure!(
        health_of(&emu.inventory()).is_some_and(|h| h["HealthCheckInterval"] == 5),
        "an invalid annotation changed the listener"
    );
    // Changed: an HTTP check, another threshold, the interval back to ENS's default.
    let creates = calls_by_action(emu)["CreateLoadBalancerTCPListener"];
    annotate(
        services,
        json!({
            ANNOTATION_HEALTH_CHECK_INTERVAL: null,
            ANNOTATION_HEALTH_CHECK_TYPE: "http",
            ANNOTATION_HEALTH_CHECK_URI: "/healthz",
            ANNOTATION_UNHEALTHY_THRESHOLD: "6",
        }),
    )
    .await?;
    let t = std::time::Instant::now();
    inventory_until(emu, "the health check changed in place", |inv| {
        health_of(inv).is_some_and(|h| {
            h["HealthCheckType"] == "http"
                && h["HealthCheckURI"] == "/healthz"
                && h["HealthCheckHttpCode"] == "http_2xx"
                && h["UnhealthyThreshold"] == 6
                && h["HealthyThreshold"] == 4
                && h["HealthCheckInterval"] == 2
        })
    })
    .await?;
    eprintln!("health check changed in {:?}", t.elapsed());
    let calls = calls_by_action(emu);
    ensure!(
        calls["CreateLoadBalancerTCPListener"] == creates
            && calls
                .get("SetLoadBalancerTCPListenerAttribute")
                .is_some_and(|n| *n >= 1),
        "not changed in place: {calls:?}"
    );
    // Still the same listener, running, on the same load balancer.
    let c = emu.client();
    let l = edgelb_cloud::ens::api::listeners(&c, lb_id).await?;
    ensure!(
        l.len() == 1 && i32::from(l[0].backend_port) == node_port,
        "{l:?}"
    );
    // Drift: someone sets a TCP check with other thresholds on the cloud; the next resync
    // (2 s here) sets the Service's back.
    let mut drifted = support::listener(u16::try_from(node_port)?);
    drifted.health.healthy_threshold = 9;
    edgelb_cloud::ens::api::set_listener_health(&c, lb_id, (Protocol::Tcp, 80), &drifted).await?;
    ensure!(
        health_of(&emu.inventory()).is_some_and(|h| h["HealthyThreshold"] == 9),
        "the drift was not made"
    );
    inventory_until(emu, "the drifted health check set back", |inv| {
        health_of(inv).is_some_and(|h| {
            h["HealthyThreshold"] == 4
                && h["HealthCheckType"] == "http"
                && h["UnhealthyThreshold"] == 6
        })
    })
    .await?;
    // The URI annotation removed (with another change, to see it taken): the listener
    // keeps /healthz, as Alibaba's CCM leaves it, and no set follows at later resyncs.
    annotate(
        services,
        json!({ANNOTATION_HEALTH_CHECK_URI: null, ANNOTATION_UNHEALTHY_THRESHOLD: "7"}),
    )
    .await?;
    inventory_until(emu, "the threshold changed", |inv| {
        health_of(inv).is_some_and(|h| h["UnhealthyThreshold"] == 7)
    })
    .await?;
    let sets = || {
        calls_by_action(emu)
            .get("SetLoadBalancerTCPListenerAttribute")
            .copied()
    };
    let before = sets();
    tokio::time::sleep(Duration::from_secs(5)).await; // two resyncs
    ensure!(
        health_of(&emu.inventory()).is_some_and(|h| h["HealthCheckURI"] == "/healthz"),
        "the URI was cleared: {:?}",
        health_of(&emu.inventory())
    );
    ensure!(
        sets() == before,
        "set again at a resync: {before:?} -> {:?}",
        sets()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_load_balancer_lifecycle() -> anyhow::Result<()> {
    let Some((cluster, client)) = harness::cluster_for(TEST).await? else {
        return Ok(());
    };
    let emu = Emulator::start(&[]);
    emu.register(&[("i-e1", "10.0.1.2"), ("i-e2", "10.0.1.3")]);
    let mut lan = Lan::new()?;
    let ns = lan.join("ken", &format!("{NODE_IP}/24"))?;
    cluster::bounded(
        TEST,
        Duration::from_secs(240),
        scenario(cluster, &client, &ns, &emu),
        cluster::cleanup(&client, NS, CREDENTIALS, &[POOL], &[NODE, NODE_B]),
    )
    .await?;
    // Every request of the speaker (the Secret's watch, Events, PoolService status and
    // finalizers) was allowed by the shipped RBAC and is in the access table.
    audit::speaker_requests_were_granted_and_listed(cluster)?;
    cluster::stop_leaving(emu, 0, 0)
}
