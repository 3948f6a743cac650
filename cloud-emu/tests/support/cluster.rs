//! Cluster-side pieces the cloud tests share (kube_elb_traffic, the cloud bench): a server-side
//! apply of any object, a Node of an ENS pool with its providerID, and the operator's
//! clean-up when no speaker is left to remove our finalizers.

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};

use edgelb_daemon::api::openyurt::PoolService;
use edgelb_tests::kube as harness;

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

/// Speaker flags for the cloud class against an emulator reached at `endpoint`.
pub fn speaker_args(credentials: &str, endpoint: &str, cluster: &str) -> Vec<String> {
    vec![
        "--class=alibabacloud.com/elb".into(),
        format!("--elb-credentials-secret={credentials}"),
        format!("--elb-endpoint=http://{endpoint}"),
        format!("--elb-cluster={cluster}"),
        "--elb-rate=100".into(),
        "--elb-resync-seconds=2".into(),
    ]
}

/// How long the cloud tests wait for one step.
pub const WAIT: Duration = Duration::from_secs(60);
