//! Node pools on a real API server (tests/src/kube), the speaker deployed as shipped (its
//! ServiceAccount's token, the shipped RBAC and CRDs, OpenYurt's NodePool CRD from
//! tests/fixtures as an OpenYurt cluster has it):
//!
//! the writer of record fans a Service out into one `PoolService` per selected NodePool,
//! named `<service>-<pool>`, labelled and owned by both, with a finalizer on the Service;
//! a foreign PoolService with a name it wants is left alone and reported; an invalid
//! selector is reported on its Service and stops nothing else; each lifecycle rule (pool
//! relabelled, selector changed, pool deleted, Service deleted) removes that PoolService,
//! and the finalizer goes last.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

mod speaker_support;

use edgelb_daemon::api::openyurt::{
    NodePool, PoolService, FINALIZER, LABEL_MANAGED_BY, LABEL_POOL_NAME, LABEL_SERVICE_NAME,
};
use edgelb_tests::kube::objects::{self, lb_service, then_clean, Cleanup};
use edgelb_tests::kube::{self as harness, deploy, Cluster, SYSTEM_NAMESPACE};
use edgelb_tests::lab::{Lan, Netns};

const TEST: &str = "kube_pools::fan_out_and_lifecycle";
const NS: &str = "kp-pools";
const NODE: &str = "kp-node-a";
const NODE_IP: &str = "192.0.2.1";
const POOLS: [&str; 4] = ["kp-hefei", "kp-chengdu", "kp-other", "kp-taken"];
const WAIT: Duration = Duration::from_secs(60);

fn service(name: &str, selector: &str) -> anyhow::Result<Service> {
    lb_service(
        NS,
        name,
        json!({"metadata": {"annotations": {"service.openyurt.io/nodepool-labelselector": selector}},
               "spec": {"selector": {"app": name}}}),
    )
}

async fn label_pool(pools: &Api<NodePool>, name: &str, svc_label: &str) -> anyhow::Result<()> {
    let body = json!({"apiVersion": "apps.openyurt.io/v1beta1", "kind": "NodePool",
        "metadata": {"name": name, "labels": {"k8s-svc": svc_label},
                     "annotations": {"alibabacloud.com/ens-region-id": format!("cn-{name}")}},
        "spec": {"type": "Edge"}});
    pools
        .patch(
            name,
            &PatchParams::apply("kube-pools-test").force(),
            &Patch::Apply(&body),
        )
        .await
        .with_context(|| format!("NodePool {name}"))?;
    Ok(())
}

/// Names of the PoolServices of our test namespace, sorted.
async fn names(ps: &Api<PoolService>) -> anyhow::Result<Vec<String>> {
    let mut n: Vec<String> = ps
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    n.sort();
    Ok(n)
}

async fn wait_names(ps: &Api<PoolService>, what: &str, want: &[&str]) -> anyhow::Result<()> {
    let t = Instant::now();
    harness::eventually(what, WAIT, || async {
        let n = names(ps).await?;
        Ok((n == want).then_some(()))
    })
    .await
    .with_context(|| format!("want {want:?}, have {:?}", names_now(ps)))?;
    eprintln!("{what}: {:?}", t.elapsed());
    Ok(())
}

fn names_now(ps: &Api<PoolService>) -> String {
    let ps = ps.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()
            .and_then(|rt| rt.block_on(names(&ps)).ok())
    })
    .join()
    .ok()
    .flatten()
    .map(|n| format!("{n:?}"))
    .unwrap_or_default()
}

/// The note of the Event with `reason` about `on`, if any.
async fn event(events: &Api<Event>, reason: &str, on: &str) -> anyhow::Result<Option<String>> {
    Ok(objects::event(events, reason, on)
        .await?
        .map(|e| e.note.unwrap_or_default()))
}

async fn scenario(cluster: &Cluster, client: &Client, node_ns: &Netns) -> anyhow::Result<()> {
    let pp = PostParams::default();
    deploy::apply_dir(client, &harness::workspace().join("tests/fixtures")).await?;
    harness::create_node(
        client,
        NODE,
        NODE_IP.parse()?,
        &[("apps.openyurt.io/nodepool", "kp-hefei")],
    )
    .await?;
    let pools: Api<NodePool> = Api::all(client.clone());
    label_pool(&pools, "kp-hefei", "cube").await?;
    label_pool(&pools, "kp-chengdu", "cube").await?;
    label_pool(&pools, "kp-other", "web").await?;
    label_pool(&pools, "kp-taken", "cube").await?;
    objects::create_namespace(client, NS).await?;
    let ps: Api<PoolService> = Api::namespaced(client.clone(), NS);
    // A PoolService someone else keeps, with a name the fan-out wants.
    ps.create(
        &pp,
        &serde_json::from_value(json!({
            "apiVersion": "network.openyurt.io/v1alpha1", "kind": "PoolService",
            "metadata": {"name": "cube-kp-taken", "namespace": NS,
                         "labels": {LABEL_MANAGED_BY: "pool-service-controller"}},
            "spec": {"loadBalancerClass": "edgelb.io/speaker"}}))?,
    )
    .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    services
        .create(&pp, &service("cube", "k8s-svc=cube")?)
        .await?;
    services
        .create(&pp, &service("bad", "k8s-svc in cube")?)
        .await?;

    let speaker = speaker_support::deploy_speaker(cluster, node_ns, NODE, NODE_IP).await?;
    speaker.log_if_failed(checks(client, &services, &ps, &pools).await)
}

async fn checks(
    client: &Client,
    services: &Api<Service>,
    ps: &Api<PoolService>,
    pools: &Api<NodePool>,
) -> anyhow::Result<()> {
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    // Fan-out: one per selected pool; the foreign one stays as it was.
    wait_names(
        ps,
        "fan-out",
        &["cube-kp-chengdu", "cube-kp-hefei", "cube-kp-taken"],
    )
    .await?;
    let svc = services.get("cube").await?;
    ensure!(
        svc.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == FINALIZER),
        "no finalizer on the Service: {:?}",
        svc.metadata.finalizers
    );
    let hefei = ps.get("cube-kp-hefei").await?;
    let labels = hefei.metadata.labels.clone().unwrap_or_default();
    ensure!(
        labels.get(LABEL_SERVICE_NAME).map(String::as_str) == Some("cube"),
        "{labels:?}"
    );
    ensure!(
        labels.get(LABEL_POOL_NAME).map(String::as_str) == Some("kp-hefei"),
        "{labels:?}"
    );
    ensure!(
        labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some("edgelb"),
        "{labels:?}"
    );
    let owners: BTreeMap<String, String> = hefei
        .metadata
        .owner_references
        .iter()
        .flatten()
        .map(|o| (o.kind.clone(), o.uid.clone()))
        .collect();
    let pool_uid = pools
        .get("kp-hefei")
        .await?
        .metadata
        .uid
        .unwrap_or_default();
    ensure!(
        owners.get("Service") == svc.metadata.uid.as_ref()
            && owners.get("NodePool") == Some(&pool_uid),
        "owners {owners:?}"
    );
    ensure!(hefei.spec.load_balancer_class.as_deref() == Some("edgelb.io/speaker"));
    let taken = ps.get("cube-kp-taken").await?;
    ensure!(
        taken
            .metadata
            .labels
            .unwrap_or_default()
            .get(LABEL_MANAGED_BY)
            .map(String::as_str)
            == Some("pool-service-controller"),
        "the foreign PoolService was changed"
    );
    let note = harness::eventually("PoolServiceConflict Event", WAIT, || async {
        event(&events, "PoolServiceConflict", "cube").await
    })
    .await?;
    ensure!(note.contains("cube-kp-taken"), "{note}");
    let note = harness::eventually("InvalidNodePoolSelector Event", WAIT, || async {
        event(&events, "InvalidNodePoolSelector", "bad").await
    })
    .await?;
    ensure!(
        note.contains("Service kp-pools/bad")
            && note.contains("service.openyurt.io/nodepool-labelselector"),
        "{note}"
    );

    // The pool's labels stop matching.
    label_pool(pools, "kp-chengdu", "none").await?;
    wait_names(ps, "pool relabelled", &["cube-kp-hefei", "cube-kp-taken"]).await?;
    // The selector changes: selects kp-other too, then not kp-hefei.
    let annotate = |sel: &str| json!({"metadata": {"annotations": {"service.openyurt.io/nodepool-labelselector": sel}}});
    services
        .patch(
            "cube",
            &PatchParams::default(),
            &Patch::Merge(annotate("k8s-svc in (cube, web)")),
        )
        .await?;
    wait_names(
        ps,
        "selector widened",
        &["cube-kp-hefei", "cube-kp-other", "cube-kp-taken"],
    )
    .await?;
    // The pool is deleted.
    pools.delete("kp-other", &DeleteParams::default()).await?;
    wait_names(ps, "pool deleted", &["cube-kp-hefei", "cube-kp-taken"]).await?;
    services
        .patch(
            "cube",
            &PatchParams::default(),
            &Patch::Merge(annotate("k8s-svc=nothing")),
        )
        .await?;
    wait_names(ps, "selector changed", &["cube-kp-taken"]).await?;
    services
        .patch(
            "cube",
            &PatchParams::default(),
            &Patch::Merge(annotate("k8s-svc=cube")),
        )
        .await?;
    wait_names(ps, "selector back", &["cube-kp-hefei", "cube-kp-taken"]).await?;
    // The Service is deleted: its PoolServices go, then the finalizer, then the Service.
    services.delete("cube", &DeleteParams::default()).await?;
    wait_names(ps, "Service deleted", &["cube-kp-taken"]).await?;
    harness::eventually("the Service gone", WAIT, || async {
        Ok(services.get_opt("cube").await?.is_none().then_some(()))
    })
    .await?;
    Ok(())
}

async fn cleanup(client: &Client) -> anyhow::Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    // Without a speaker, nobody removes our finalizer: the test does (as an operator
    // uninstalling edgelb would).
    for s in services
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        if let Some(name) = s.metadata.name {
            let _ = services
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                )
                .await;
        }
    }
    let mut cleanup = Cleanup::new().add::<Namespace>(client, None, NS);
    for p in POOLS {
        cleanup = cleanup.add::<NodePool>(client, None, p);
    }
    cleanup
        .add::<Lease>(client, Some(SYSTEM_NAMESPACE), "edgelb-leader")
        .add::<Node>(client, None, NODE)
        .run(WAIT)
        .await
}

#[tokio::test]
async fn fan_out_and_lifecycle() -> anyhow::Result<()> {
    let Some((cluster, client)) = harness::cluster_for(TEST).await? else {
        return Ok(());
    };
    let mut lan = Lan::new()?;
    let node = lan.join("kpn", &format!("{NODE_IP}/24"))?;
    then_clean(
        "fan-out and lifecycle",
        scenario(cluster, &client, &node),
        cleanup(&client),
    )
    .await
}
