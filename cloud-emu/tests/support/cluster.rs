//! Cluster-side pieces the cloud tests and the cloud bench share (kube_elb, kube_elb_traffic,
//! kube_elb_faults, benches/kube_cloud): a server-side apply of any object, a Node of an ENS
//! pool with its providerID, the namespace and credentials, a cloud-class Service, the
//! speaker as deployed with the cloud flags, the emulator's inventory and counters, and the
//! operator's clean-up when no speaker is left to remove our finalizers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};

use edgelb_daemon::api::openyurt::{NodePool, PoolService};
use edgelb_tests::kube::objects::{then_clean, Cleanup};
use edgelb_tests::kube::{self as harness, Cluster, Forwarder, NodeSpec, Speaker};
use edgelb_tests::lab::Netns;

use super::{count, Emulator};

/// Server-side apply of `body` (any kind, found by discovery) as field manager `manager`.
pub async fn apply(client: &Client, manager: &str, what: &str, body: Value) -> anyhow::Result<()> {
    let params = PatchParams::apply(manager).force();
    let obj: DynamicObject = serde_json::from_value(body.clone())?;
    let gvk = GroupVersionKind::try_from(obj.types.as_ref().context("types")?)?;
    let (res, _) = kube::discovery::pinned_kind(client, &gvk).await?;
    let name = obj.metadata.name.clone().unwrap_or_default();
    let api: Api<DynamicObject> = match &obj.metadata.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &res),
        None => Api::all_with(client.clone(), &res),
    };
    api.patch(&name, &params, &Patch::Apply(&body))
        .await
        .with_context(|| what.to_string())?;
    Ok(())
}

/// A ready Node in node pool `pool` whose `spec.providerID` is `<region>.<instance>`, as the
/// cloud's node controller sets it (another field manager, so the harness's own apply of the
/// Node never removes it).
pub async fn cloud_node(
    client: &Client,
    name: &str,
    ip: &str,
    pool: &str,
    region: &str,
    instance: &str,
) -> anyhow::Result<()> {
    harness::create_node(
        client,
        name,
        ip.parse()?,
        &[("apps.openyurt.io/nodepool", pool)],
    )
    .await?;
    apply(
        client,
        "cloud-node-controller",
        "providerID",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
               "spec": {"providerID": format!("{region}.{instance}")}}),
    )
    .await
}

/// An ENS NodePool `name` labelled `labels` (annotations: region, network, vSwitch).
pub async fn ens_pool(
    client: &Client,
    name: &str,
    region: &str,
    labels: Value,
) -> anyhow::Result<()> {
    apply(
        client,
        "cloud-tests",
        "NodePool",
        json!({"apiVersion": "apps.openyurt.io/v1beta1", "kind": "NodePool",
               "metadata": {"name": name, "labels": labels,
                            "annotations": {"alibabacloud.com/ens-region-id": region,
                                            "alibabacloud.com/ens-network-id": "n-emu1",
                                            "alibabacloud.com/ens-vswitch-id": "vsw-emu1"}},
               "spec": {"type": "Edge"}}),
    )
    .await
}

/// The cloud access key as a Secret in the speaker's namespace.
pub async fn credentials(
    client: &Client,
    name: &str,
    id: &str,
    secret: &str,
) -> anyhow::Result<()> {
    apply(
        client,
        "cloud-tests",
        "credentials Secret",
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": name, "namespace": harness::SYSTEM_NAMESPACE},
               "stringData": {"accessKeyID": id, "accessKeySecret": secret}}),
    )
    .await
}

/// Without a speaker nobody removes our finalizers: drops them from every Service and
/// PoolService of `ns`, as an operator would, so the namespace can go.
pub async fn clear_finalizers(client: &Client, ns: &str) {
    let clear = json!({"metadata": {"finalizers": null}});
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let pss: Api<PoolService> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default();
    for s in services
        .list(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let name = s.metadata.name.unwrap_or_default();
        let _ = services
            .patch(&name, &PatchParams::default(), &Patch::Merge(&clear))
            .await;
    }
    for p in pss.list(&lp).await.map(|l| l.items).unwrap_or_default() {
        let name = p.metadata.name.unwrap_or_default();
        let _ = pss
            .patch(&name, &PatchParams::default(), &Patch::Merge(&clear))
            .await;
    }
}

/// Speaker flags for the cloud class against an emulator reached at `endpoint`, `rate`
/// calls per second.
pub fn speaker_args(credentials: &str, endpoint: &str, cluster: &str, rate: u32) -> Vec<String> {
    vec![
        "--class=alibabacloud.com/elb".into(),
        format!("--elb-credentials-secret={credentials}"),
        format!("--elb-endpoint=http://{endpoint}"),
        format!("--elb-cluster={cluster}"),
        format!("--elb-rate={rate}"),
        "--elb-resync-seconds=2".into(),
    ]
}

/// How long the cloud tests wait for one step.
pub const WAIT: Duration = Duration::from_secs(60);

/// Where a speaker reaches the emulator inside its node's namespace (a [`Forwarder`] to the
/// emulator on the host's loopback).
pub const EMU_IN_NS: &str = "127.0.0.1:18099";

/// The ENS node (region) of the cloud tests' pools.
pub const REGION: &str = "cn-emu-telecom";

/// The Lease of the writer of record (the shipped `--namespace`).
pub const LEASE: &str = "edgelb-leader";

/// What every cloud test starts with: the shipped fixtures, the credentials Secret and the
/// test's namespace.
pub async fn prepare(client: &Client, ns: &str, credentials_secret: &str) -> anyhow::Result<()> {
    edgelb_tests::kube::deploy::apply_dir(client, &harness::workspace().join("tests/fixtures"))
        .await?;
    credentials(client, credentials_secret, super::KEY_ID, super::SECRET).await?;
    harness::objects::create_namespace(client, ns).await
}

/// A Service `ns/name` of class `alibabacloud.com/elb` selecting the node pools labelled
/// `selector` (`key=value`), with extra `annotations` and the given `ports`.
pub fn cloud_service(
    ns: &str,
    name: &str,
    selector: &str,
    annotations: Value,
    ports: Value,
) -> anyhow::Result<Service> {
    let mut a = json!({"service.openyurt.io/nodepool-labelselector": selector});
    if let (Some(a), Some(extra)) = (a.as_object_mut(), annotations.as_object()) {
        a.extend(extra.clone());
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "annotations": a},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "alibabacloud.com/elb",
                 "selector": {"app": name}, "ports": ports}
    }))?)
}

/// The speaker as deployed on node `node` (address `ip`, namespace `netns`) with the cloud
/// flags (`rate` calls per second) and `extra` arguments, reaching the emulator at `emu`.
/// The returned [`Forwarder`] must live as long as the speaker.
#[allow(clippy::too_many_arguments)]
pub async fn cloud_speaker(
    cluster: &Cluster,
    netns: &Netns,
    node: &str,
    ip: &str,
    credentials_secret: &str,
    cluster_name: &str,
    emu: SocketAddr,
    rate: u32,
    extra: &[&str],
) -> anyhow::Result<(Speaker, Forwarder)> {
    let to_emu = Forwarder::start(netns.name(), EMU_IN_NS.parse()?, emu)?;
    let mut spec = NodeSpec::new(node, ip.parse()?);
    spec.extra_args = speaker_args(credentials_secret, EMU_IN_NS, cluster_name, rate);
    spec.extra_args.extend(extra.iter().map(|a| a.to_string()));
    let speaker = Speaker::deploy(cluster, netns, &spec, &harness::speaker_binary()?).await?;
    Ok((speaker, to_emu))
}

/// Removes what a cloud test made once no speaker is left: our finalizers, the namespace,
/// the node pools, the nodes, the credentials Secret and the Lease; waits until gone.
pub async fn cleanup(
    client: &Client,
    ns: &str,
    credentials_secret: &str,
    pools: &[&str],
    nodes: &[&str],
) -> anyhow::Result<()> {
    clear_finalizers(client, ns).await;
    let mut c = Cleanup::new()
        .add::<Namespace>(client, None, ns)
        .add::<Secret>(client, Some(harness::SYSTEM_NAMESPACE), credentials_secret)
        .add::<Lease>(client, Some(harness::SYSTEM_NAMESPACE), LEASE);
    for p in pools {
        c = c.add::<NodePool>(client, None, p);
    }
    for n in nodes {
        c = c.add::<Node>(client, None, n);
    }
    c.run(Duration::from_secs(120)).await
}

/// The load balancer named `name` in an inventory (or leak report).
pub fn lb<'a>(inv: &'a Value, name: &str) -> Option<&'a Value> {
    inv["LoadBalancers"]
        .as_array()?
        .iter()
        .find(|l| l["LoadBalancerName"] == name)
}

/// Polls the emulator's inventory until `f` holds (bounded by [`WAIT`]); the inventory.
pub async fn inventory_until(
    emu: &Emulator,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    harness::eventually(what, WAIT, || async {
        let inv = emu.inventory();
        Ok(f(&inv).then_some(inv))
    })
    .await
    .with_context(|| format!("inventory {:#}", emu.inventory()))
}

/// Answered calls per action from the emulator's counters, every answer code summed.
pub fn calls_by_action(emu: &Emulator) -> BTreeMap<String, u64> {
    let stats = emu.control("GET", "/control/stats", &Value::Null);
    stats
        .as_object()
        .into_iter()
        .flatten()
        .map(|(a, codes)| {
            let n = codes
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, c)| c.as_u64())
                .sum();
            (a.clone(), n)
        })
        .collect()
}

/// Answers with error `code`, over every action.
pub fn answers_with(emu: &Emulator, code: &str) -> u64 {
    let stats = emu.control("GET", "/control/stats", &Value::Null);
    stats
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, codes)| codes.get(code).and_then(Value::as_u64))
        .sum()
}

/// Waits until the emulator holds exactly `lbs` load balancers and `eips` EIPs (`0, 0`:
/// everything released); the inventory.
pub async fn inventory_holds(
    emu: &Emulator,
    what: &str,
    lbs: usize,
    eips: usize,
) -> anyhow::Result<Value> {
    inventory_until(emu, what, |inv| {
        count(inv, "LoadBalancers") == lbs && count(inv, "EipAddresses") == eips
    })
    .await
}

/// Waits until the Service `ns/service` and its PoolService `pool_service` are gone (what
/// was created for them released, our finalizers removed).
pub async fn gone(
    client: &Client,
    ns: &str,
    service: &str,
    pool_service: &str,
) -> anyhow::Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let pss: Api<PoolService> = Api::namespaced(client.clone(), ns);
    harness::eventually("the PoolService and the Service gone", WAIT, || async {
        Ok((pss.get_opt(pool_service).await?.is_none()
            && services.get_opt(service).await?.is_none())
        .then_some(()))
    })
    .await
}

/// Runs `scenario` for at most `limit`, then `cleanup` whatever happened (the harness's
/// `then_clean`).
pub async fn bounded(
    test: &str,
    limit: Duration,
    scenario: impl std::future::Future<Output = anyhow::Result<()>>,
    cleanup: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::time::timeout(limit, then_clean(test, scenario, cleanup))
        .await
        .with_context(|| format!("the test took over {} s", limit.as_secs()))?
}

/// Stops the emulator: its leak report must hold exactly `lbs` load balancers and `eips`
/// EIPs (what a test left on purpose, e.g. a user's own).
pub fn stop_leaving(emu: Emulator, lbs: usize, eips: usize) -> anyhow::Result<()> {
    let report = emu.stop();
    anyhow::ensure!(
        count(&report, "LoadBalancers") == lbs && count(&report, "EipAddresses") == eips,
        "leak report (expected {lbs} load balancers and {eips} EIPs): {report:#}"
    );
    Ok(())
}
