//! Node pools on a real API server (tests/src/kube), the speaker deployed as shipped (its
//! ServiceAccount's token, the shipped RBAC and CRDs, OpenYurt's NodePool CRD from
//! tests/fixtures as an OpenYurt cluster has it):
//!
//! the writer of record fans a Service out into one `PoolService` per selected NodePool,
//! named `<service>-<pool>`, labelled and owned by both, with a finalizer on the Service;
//! a foreign PoolService with a name it wants is left alone and reported; an invalid
//! selector is reported on its Service and stops nothing else; each lifecycle rule (pool
//! relabelled, selector changed, pool deleted, Service deleted) removes that PoolService,
//! and the finalizer goes last. Status: each PoolService carries its pool's IP and
//! condition (a pool without a range says why, naming the pool), the Service the union in
//! pool-name order; restarting every speaker (one by one, then all at once) moves no entry
//! point (sampled throughout). Every request the speakers made was allowed by the shipped
//! RBAC and is in `edgelb_daemon::access` (the audit log).

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
use edgelb_daemon::local_api::view::NodePoolView;
use edgelb_daemon::status::pool_ingress;
use edgelb_tests::kube::objects::{self, lb_service, then_clean, Cleanup};
use edgelb_tests::kube::{self as harness, deploy, Cluster, Speaker, SYSTEM_NAMESPACE};
use edgelb_tests::lab::{Lan, Netns};
use edgelb_view::LocalView;

const TEST: &str = "kube_pools::fan_out_and_lifecycle";
const NS: &str = "kp-pools";
const NODE: &str = "kp-node-a";
const NODE_IP: &str = "192.0.2.1";
const NODE_B: &str = "kp-node-b";
const NODE_B_IP: &str = "192.0.2.2";
const POOLS: [&str; 4] = ["kp-hefei", "kp-chengdu", "kp-other", "kp-taken"];
/// IPAddressPools scoped to one node pool each: (object, node pool, range, its one IP).
const RANGES: [(&str, &str, &str, &str); 2] = [
    ("kp-hefei-lan", "kp-hefei", "192.0.2.100/32", "192.0.2.100"),
    (
        "kp-chengdu-lan",
        "kp-chengdu",
        "192.0.2.110/32",
        "192.0.2.110",
    ),
];
/// How often the restart test samples the entry points.
const SAMPLE: Duration = Duration::from_millis(100);
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

/// A PoolService's ingress IPs and our condition (status, reason, message).
async fn pool_status(
    ps: &Api<PoolService>,
    name: &str,
) -> anyhow::Result<(Vec<String>, Option<(String, String, String)>)> {
    let st = ps.get(name).await?.status.unwrap_or_default();
    let ips = st
        .load_balancer
        .and_then(|lb| lb.ingress)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip)
        .collect();
    let cond = st
        .conditions
        .into_iter()
        .find(|c| c.type_ == pool_ingress::CONDITION)
        .map(|c| (c.status, c.reason, c.message));
    Ok((ips, cond))
}

/// The Service's ingress IPs in status order.
async fn service_ips(services: &Api<Service>, name: &str) -> anyhow::Result<Vec<String>> {
    Ok(objects::ingress(services, name)
        .await?
        .into_iter()
        .map(|(ip, _)| ip)
        .collect())
}

/// Every entry point the test looks at: each PoolService's IPs and the Service's.
type Points = Vec<(String, Vec<String>)>;

async fn points(services: &Api<Service>, ps: &Api<PoolService>) -> anyhow::Result<Points> {
    Ok(vec![
        (
            "cube-kp-chengdu".into(),
            pool_status(ps, "cube-kp-chengdu").await?.0,
        ),
        (
            "cube-kp-hefei".into(),
            pool_status(ps, "cube-kp-hefei").await?.0,
        ),
        ("Service cube".into(), service_ips(services, "cube").await?),
    ])
}

async fn scenario(
    cluster: &Cluster,
    client: &Client,
    nodes: &[(&str, &str, &Netns)],
) -> anyhow::Result<()> {
    let pp = PostParams::default();
    deploy::apply_dir(client, &harness::workspace().join("tests/fixtures")).await?;
    for ((name, ip, _), pool) in nodes.iter().zip(["kp-hefei", "kp-chengdu"]) {
        harness::create_node(
            client,
            name,
            ip.parse()?,
            &[("apps.openyurt.io/nodepool", pool)],
        )
        .await?;
    }
    let ranges = objects::edgelb_api(client, "IPAddressPool", "ipaddresspools");
    for (name, pool, cidr, _) in RANGES {
        ranges
            .create(
                &pp,
                &serde_json::from_value(json!({
                    "apiVersion": "edgelb.io/v1alpha1", "kind": "IPAddressPool",
                    "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE},
                    "spec": {"addresses": [cidr], "nodePools": [pool]}}))?,
            )
            .await
            .with_context(|| format!("IPAddressPool {name}"))?;
    }
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

    let mut speakers = Vec::new();
    for (name, ip, ns) in nodes {
        speakers.push(Some(
            speaker_support::deploy_speaker(cluster, ns, name, ip).await?,
        ));
    }
    let result = async {
        checks(
            client,
            &services,
            &ps,
            &pools,
            Some((cluster, nodes, &mut speakers)),
        )
        .await?;
        speaker_support::audit::speaker_requests_were_granted_and_listed(cluster)
    }
    .await;
    if result.is_err() {
        for s in speakers.iter().flatten() {
            eprintln!("speaker {} log:\n{}", s.node, s.logs());
        }
    }
    result
}

/// Each PoolService of ours carries its pool's IP and condition; the Service the union in
/// pool-name order; the foreign PoolService gets nothing from us.
async fn status_aggregation(
    services: &Api<Service>,
    ps: &Api<PoolService>,
) -> anyhow::Result<Points> {
    let t = Instant::now();
    let want: Points = vec![
        ("cube-kp-chengdu".into(), vec![RANGES[1].3.to_string()]),
        ("cube-kp-hefei".into(), vec![RANGES[0].3.to_string()]),
        (
            "Service cube".into(),
            vec![RANGES[1].3.to_string(), RANGES[0].3.to_string()],
        ),
    ];
    harness::eventually(
        "each pool's status and the Service's union",
        WAIT,
        || async { Ok((points(services, ps).await? == want).then_some(())) },
    )
    .await
    .with_context(|| format!("want {want:?}"))?;
    eprintln!("status aggregation: {:?}", t.elapsed());
    for name in ["cube-kp-chengdu", "cube-kp-hefei"] {
        let (_, cond) = pool_status(ps, name).await?;
        let (status, reason, message) = cond.context("no AddressAssigned condition")?;
        ensure!(
            status == "True" && reason == pool_ingress::ASSIGNED,
            "{name}: {status} {reason} {message}"
        );
        ensure!(
            message.contains(&name["cube-".len()..]),
            "{name}: {message}"
        );
    }
    let (ips, cond) = pool_status(ps, "cube-kp-taken").await?;
    ensure!(
        ips.is_empty() && cond.is_none(),
        "the foreign PoolService got a status from us: {ips:?} {cond:?}"
    );
    Ok(want)
}

/// The speaker's local view (what `edgelbctl nodepools` prints) lists the node pools with
/// their members, and its announcements and explain views carry the node pool.
async fn local_view_shows_pools(cluster: &Cluster) -> anyhow::Result<()> {
    let socket = cluster
        .dir()
        .join(format!("node-{NODE}/run_edgelb/speaker.sock"));
    let want = |p: &NodePoolView| match p.name.as_str() {
        "kp-hefei" => p.nodes == [NODE] && p.source == "NodePool",
        "kp-chengdu" => p.nodes == [NODE_B] && p.source == "NodePool",
        _ => true,
    };
    // Per node pool, the explain views of `cube`.
    let per_pool = |v: &LocalView| -> Vec<String> {
        v.services
            .iter()
            .filter(|s| s.service == format!("{NS}/cube"))
            .filter_map(|s| s.node_pool.clone())
            .collect()
    };
    // The node pools come with the snapshot, the explain views with the allocation of
    // record; a change may be shown up to a publication spacing later (CHANGES_EVERY), so
    // both are waited for.
    let view = harness::eventually(
        "the local view's node pools and explain views",
        WAIT,
        || async {
            let v = edgelbctl::socket::view(&socket, Duration::from_secs(5)).await?;
            let names: Vec<&str> = v.node_pools.iter().map(|p| p.name.as_str()).collect();
            let pools = per_pool(&v);
            let ok = ["kp-chengdu", "kp-hefei"].iter().all(|n| names.contains(n))
                && v.node_pools.iter().all(want)
                && ["kp-chengdu", "kp-hefei"]
                    .iter()
                    .all(|n| pools.contains(&n.to_string()));
            Ok(ok.then_some(v))
        },
    )
    .await
    .with_context(|| format!("local view at {}", socket.display()))?;
    let hefei = view
        .node_pools
        .iter()
        .find(|p| p.name == "kp-hefei")
        .context("kp-hefei")?;
    ensure!(
        hefei.labels.get("k8s-svc").map(String::as_str) == Some("cube"),
        "{hefei:?}"
    );
    Ok(())
}

/// Restarts every speaker (one by one, then all at once) while sampling the entry points
/// every [`SAMPLE`]: none may change, and after the all-at-once restart a new term (its
/// writer re-reading the record) must have run for a while.
async fn restart_every_speaker(
    cluster: &Cluster,
    client: &Client,
    services: &Api<Service>,
    ps: &Api<PoolService>,
    nodes: &[(&str, &str, &Netns)],
    speakers: &mut [Option<Speaker>],
    want: &Points,
) -> anyhow::Result<()> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (services, ps, want, stop) = (services.clone(), ps.clone(), want.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut n, mut errors, mut moved) = (0usize, 0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match points(&services, &ps).await {
                    Ok(p) if p == want => n += 1,
                    Ok(p) => moved.push(p),
                    Err(_) => errors += 1,
                }
                tokio::time::sleep(SAMPLE).await;
            }
            (n, errors, moved)
        })
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let t = Instant::now();
    // One by one: each comes back before the next goes.
    for (i, (name, ip, ns)) in nodes.iter().enumerate() {
        speakers[i] = None;
        speakers[i] = Some(speaker_support::deploy_speaker(cluster, ns, name, ip).await?);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    eprintln!(
        "rolling restart of {} speakers: {:?}",
        nodes.len(),
        t.elapsed()
    );
    // All at once: every speaker is gone, then all come back; wait until the Lease is
    // renewed after they all stopped (a new process leads: its writer read the record
    // again and decided every Service), then a while longer.
    for s in speakers.iter_mut() {
        *s = None;
    }
    let stopped = k8s_openapi::jiff::Timestamp::now();
    let t = Instant::now();
    for (i, (name, ip, ns)) in nodes.iter().enumerate() {
        speakers[i] = Some(speaker_support::deploy_speaker(cluster, ns, name, ip).await?);
    }
    harness::eventually("a new term after the all-at-once restart", WAIT, || async {
        let now = leases.get("edgelb-leader").await?.spec.unwrap_or_default();
        let renewed = now.renew_time.as_ref().is_some_and(|r| r.0 > stopped);
        Ok((now.holder_identity.is_some() && renewed).then_some(()))
    })
    .await?;
    eprintln!("all-at-once restart: a new term after {:?}", t.elapsed());
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (n, errors, moved) = sampler.await?;
    eprintln!(
        "restart of every speaker: {n} samples unchanged, {errors} failed reads, {} moved",
        moved.len()
    );
    ensure!(
        moved.is_empty(),
        "entry points moved during the restarts: {moved:?} (want {want:?})"
    );
    ensure!(n >= 50, "only {n} samples ({errors} failed reads)");
    Ok(())
}

/// The speakers of the restart test: the cluster, the nodes and their running speakers.
type Restart<'a> = (
    &'a Cluster,
    &'a [(&'a str, &'a str, &'a Netns)],
    &'a mut Vec<Option<Speaker>>,
);

async fn checks(
    client: &Client,
    services: &Api<Service>,
    ps: &Api<PoolService>,
    pools: &Api<NodePool>,
    restart: Option<Restart<'_>>,
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
    let want = status_aggregation(services, ps).await?;
    if let Some((cluster, nodes, speakers)) = restart {
        local_view_shows_pools(cluster).await?;
        restart_every_speaker(cluster, client, services, ps, nodes, speakers, &want).await?;
    }
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
    harness::eventually(
        "the Service's union without the relabelled pool",
        WAIT,
        || async { Ok((service_ips(services, "cube").await? == [RANGES[0].3]).then_some(())) },
    )
    .await?;
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
    let ranges = objects::edgelb_api(client, "IPAddressPool", "ipaddresspools");
    for (name, ..) in RANGES {
        cleanup = cleanup.add_dynamic(&ranges, name);
    }
    for p in POOLS {
        cleanup = cleanup.add::<NodePool>(client, None, p);
    }
    cleanup
        .add::<Lease>(client, Some(SYSTEM_NAMESPACE), "edgelb-leader")
        .add::<Node>(client, None, NODE)
        .add::<Node>(client, None, NODE_B)
        .run(WAIT)
        .await
}

#[tokio::test]
async fn fan_out_and_lifecycle() -> anyhow::Result<()> {
    let Some((cluster, client)) = harness::cluster_for(TEST).await? else {
        return Ok(());
    };
    let mut lan = Lan::new()?;
    let a = lan.join("kpn", &format!("{NODE_IP}/24"))?;
    let b = lan.join("kpm", &format!("{NODE_B_IP}/24"))?;
    let nodes = [(NODE, NODE_IP, &a), (NODE_B, NODE_B_IP, &b)];
    then_clean(
        "fan-out and lifecycle",
        scenario(cluster, &client, &nodes),
        cleanup(&client),
    )
    .await
}
