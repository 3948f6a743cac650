//! Three things only a real API server can show, with the speaker as deployed (shipped CRDs,
//! manifests and RBAC, the DaemonSet's args, the shipped ServiceAccount's token, inside a
//! node network namespace the test made):
//!
//! 1. **Objects the API server accepts but our types cannot decode never stop the
//!    speaker** (issue 11 item 3). Before the speaker starts (so its first list holds
//!    them): an `IPAddressPool` with a status condition whose `lastTransitionTime` is
//!    `2026-12-07T10:00:00x5Z` (the API server's `date-time` check lets any character stand
//!    before the fraction; no RFC 3339 parser does), and a `PolicyRoute` whose gateway is
//!    `10.0.0.1.5` (`format: ip` is not enforced). The speaker becomes ready, allocates for
//!    Services created before and after, and reports each bad object by name and field:
//!    `Valid=False` naming the field and value, and a Warning Event `InvalidSpec`.
//! 2. **Pass-through cannot blackhole** (item 5): a Service annotated
//!    `kubernetes.io/elb.pass-through: "true"` on a self-announced pool keeps `ipMode: VIP`,
//!    gets the condition `edgelb.io/PassThrough=False` and a Warning Event
//!    `PassThroughIgnored` naming it and the annotation; without the annotation the
//!    condition goes.
//! 3. **The view port through the API server's pod proxy** (item 4): the speaker's Pod
//!    object is created, the API server reaches its `[::]:7473` through its egress selector
//!    (harness `pod_net`). A token of a ServiceAccount bound to the shipped `edgelb-viewer`
//!    Role gets the view; one without it is refused by the API server, and, sent in
//!    `X-Edgelb-Authorization` behind an admin's proxy request, by the speaker itself (403):
//!    the header passes through the proxy while `Authorization` does not (401 without it).
//!    Repeated requests with one token make no further TokenReview (the audit log).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use http::Request;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

mod speaker_support;

use edgelb_tests::kube::objects::{
    create_namespace, edgelb_api, edgelb_resource, event, ingress, lb_service, ready_slice,
    speaker_requests, then_clean, Cleanup,
};
use edgelb_tests::kube::{self as harness, Cluster, Speaker, SYSTEM_NAMESPACE};
use edgelb_tests::lab::{Lan, Netns};

const TEST: &str = "kube_edges::bad_objects_pass_through_and_the_view_port";
const NODE: &str = "ke-node-a";
const NODE_IP: &str = "192.0.2.1";
const WAIT: Duration = Duration::from_secs(60);
const BAD_TIME: &str = "2026-12-07T10:00:00x5Z";
const VIEW_PORT: u16 = 7473;

fn pools(client: &Client) -> Api<DynamicObject> {
    edgelb_api(client, "IPAddressPool", "ipaddresspools")
}

fn routes(client: &Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &edgelb_resource("PolicyRoute", "policyroutes"),
    )
}

fn l2(client: &Client) -> Api<DynamicObject> {
    edgelb_api(client, "L2Advertisement", "l2advertisements")
}

fn object(v: Value) -> anyhow::Result<DynamicObject> {
    Ok(serde_json::from_value(v)?)
}

fn service(ns: &str, name: &str, annotations: Value) -> anyhow::Result<Service> {
    lb_service(
        ns,
        name,
        json!({"metadata": {"annotations": annotations}, "spec": {"selector": {"app": name}}}),
    )
}

/// The condition `type_` of a dynamic object, as JSON.
async fn condition(
    api: &Api<DynamicObject>,
    name: &str,
    type_: &str,
) -> anyhow::Result<Option<Value>> {
    let o = api.get(name).await?;
    Ok(o.data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned()))
}

fn service_condition(svc: &Service, type_: &str) -> Option<(String, String, String)> {
    svc.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

struct Lab {
    _lan: Lan,
    node: Netns,
}

fn lab() -> anyhow::Result<Lab> {
    let mut lan = Lan::new()?;
    let node = lan.join("ken", &format!("{NODE_IP}/24"))?;
    Ok(Lab { _lan: lan, node })
}

/// The objects the speaker finds at its first list: a good pool, a pool and a route it
/// cannot decode, an L2Advertisement, a Service asking for pass-through.
async fn before_start(client: &Client, ns: &str) -> anyhow::Result<()> {
    let pp = PostParams::default();
    harness::create_node(client, NODE, NODE_IP.parse()?, &[]).await?;
    create_namespace(client, ns).await?;
    let pools = pools(client);
    pools
        .create(
            &pp,
            &object(
                json!({"apiVersion": "edgelb.io/v1alpha1", "kind": "IPAddressPool",
                "metadata": {"name": "ke-good", "namespace": SYSTEM_NAMESPACE},
                "spec": {"addresses": ["192.0.2.20-192.0.2.21"]}}),
            )?,
        )
        .await?;
    pools
        .create(
            &pp,
            &object(
                json!({"apiVersion": "edgelb.io/v1alpha1", "kind": "IPAddressPool",
                "metadata": {"name": "ke-bad", "namespace": SYSTEM_NAMESPACE},
                "spec": {"addresses": ["192.0.2.30/32"]}}),
            )?,
        )
        .await?;
    // Another controller's condition, with a timestamp the API server accepts.
    pools
        .patch_status(
            "ke-bad",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Reviewed",
                "status": "True", "reason": "ByHand", "message": "reviewed",
                "lastTransitionTime": BAD_TIME}]}})),
        )
        .await
        .context("the API server refused the bad timestamp: the test needs another shape")?;
    routes(client)
        .create(
            &pp,
            &object(
                json!({"apiVersion": "edgelb.io/v1alpha1", "kind": "PolicyRoute",
                "metadata": {"name": "ke-bad-route"},
                "spec": {"table": 100, "gateways": ["10.0.0.1.5"],
                         "nodeSelector": {"matchLabels": {"ke.edgelb.io/no-node": "x"}}}}),
            )?,
        )
        .await?;
    l2(client)
        .create(
            &pp,
            &object(
                json!({"apiVersion": "edgelb.io/v1alpha1", "kind": "L2Advertisement",
                "metadata": {"name": "ke-lan", "namespace": SYSTEM_NAMESPACE},
                "spec": {"ipAddressPools": ["ke-good"]}}),
            )?,
        )
        .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    services
        .create(
            &pp,
            &service(ns, "web", json!({"kubernetes.io/elb.pass-through": "true"}))?,
        )
        .await?;
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .create(&pp, &ready_slice(ns, "web", NODE)?)
        .await?;
    Ok(())
}

async fn bad_objects_are_reported_and_allocation_goes_on(
    speaker: &Speaker,
    client: &Client,
    ns: &str,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    harness::eventually("speaker /readyz 200", WAIT, || async {
        Ok((speaker.get("/readyz")?.0 == 200).then_some(()))
    })
    .await?;
    eprintln!(
        "ready after {:?} with two undecodable objects",
        t0.elapsed()
    );
    let pools = pools(client);
    let valid = |api: Api<DynamicObject>, name: &'static str| {
        move || {
            let api = api.clone();
            async move { condition(&api, name, "Valid").await }
        }
    };
    let good = harness::eventually("ke-good Valid", WAIT, valid(pools.clone(), "ke-good")).await?;
    ensure!(good["status"] == "True", "ke-good: {good}");
    let bad = harness::eventually("ke-bad Valid", WAIT, valid(pools.clone(), "ke-bad")).await?;
    let msg = bad["message"].as_str().unwrap_or_default();
    ensure!(
        bad["status"] == "False"
            && msg.starts_with("status.conditions[0].lastTransitionTime: \"")
            && msg.contains(BAD_TIME),
        "ke-bad's Valid condition names the field and value: {bad}"
    );
    let route = harness::eventually(
        "ke-bad-route Valid",
        WAIT,
        valid(routes(client), "ke-bad-route"),
    )
    .await?;
    let msg = route["message"].as_str().unwrap_or_default();
    ensure!(
        route["status"] == "False" && msg.starts_with("spec.gateways[0]: \"10.0.0.1.5\""),
        "ke-bad-route's Valid condition names the field and value: {route}"
    );
    let system_events: Api<Event> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let ev = harness::eventually("InvalidSpec Event on ke-bad", WAIT, || {
        event(&system_events, "InvalidSpec", "ke-bad")
    })
    .await?;
    ensure!(
        ev.type_.as_deref() == Some("Warning")
            && ev
                .note
                .as_deref()
                .unwrap_or_default()
                .contains("lastTransitionTime"),
        "ke-bad's Event: {ev:?}"
    );
    // Allocation goes on: for the Service found at start and for one created now.
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let web = harness::eventually("web gets an IP", WAIT, || async {
        let i = ingress(&services, "web").await?;
        Ok((!i.is_empty()).then_some(i))
    })
    .await?;
    let pp = PostParams::default();
    services
        .create(&pp, &service(ns, "api", json!({}))?)
        .await?;
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .create(&pp, &ready_slice(ns, "api", NODE)?)
        .await?;
    let api = harness::eventually("api gets an IP", WAIT, || async {
        let i = ingress(&services, "api").await?;
        Ok((!i.is_empty()).then_some(i))
    })
    .await?;
    let mut ips: Vec<&str> = web.iter().chain(&api).map(|(ip, _)| ip.as_str()).collect();
    ips.sort();
    ensure!(
        ips == ["192.0.2.20", "192.0.2.21"],
        "web {web:?} and api {api:?} share ke-good's two IPs"
    );
    Ok(())
}

async fn pass_through_is_refused_on_a_self_announced_pool(
    client: &Client,
    ns: &str,
) -> anyhow::Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let web = ingress(&services, "web").await?;
    ensure!(
        web.iter().all(|(_, mode)| mode.as_deref() == Some("VIP")),
        "web asks for pass-through on a self-announced pool, ipMode must stay VIP: {web:?}"
    );
    let cond = harness::eventually("web's edgelb.io/PassThrough condition", WAIT, || async {
        Ok(service_condition(
            &services.get("web").await?,
            "edgelb.io/PassThrough",
        ))
    })
    .await?;
    ensure!(
        cond.0 == "False"
            && cond.1 == "PassThroughIgnored"
            && cond.2.contains("kubernetes.io/elb.pass-through")
            && cond.2.contains(&format!("Service {ns}/web"))
            && cond.2.contains("pool ke-good"),
        "web's condition: {cond:?}"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let ev = harness::eventually("PassThroughIgnored Event on web", WAIT, || {
        event(&events, "PassThroughIgnored", "web")
    })
    .await?;
    ensure!(
        ev.type_.as_deref() == Some("Warning") && ev.note.as_deref() == Some(cond.2.as_str()),
        "web's Event: {ev:?}"
    );
    // The annotation goes: so does the condition; the IP stays.
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"kubernetes.io/elb.pass-through": null}}}),
            ),
        )
        .await?;
    harness::eventually("web's condition removed", WAIT, || async {
        let svc = services.get("web").await?;
        Ok(service_condition(&svc, "edgelb.io/PassThrough")
            .is_none()
            .then_some(()))
    })
    .await?;
    ensure!(ingress(&services, "web").await? == web, "web's IP changed");
    Ok(())
}

/// `GET path` through the API server as `client`, with `x_token` in our header: (status,
/// body).
async fn get(client: &Client, path: &str, x_token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let mut req = Request::get(path);
    if let Some(t) = x_token {
        req = req.header("x-edgelb-authorization", format!("Bearer {t}"));
    }
    let resp = client
        .send(req.body(kube::client::Body::from(Vec::new()))?)
        .await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect_bytes().await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn token_reviews(cluster: &Cluster) -> anyhow::Result<usize> {
    Ok(speaker_requests(cluster, 0)?
        .0
        .iter()
        .filter(|e| {
            e.pointer("/objectRef/resource").and_then(Value::as_str) == Some("tokenreviews")
        })
        .count())
}

async fn client_with(cluster: &Cluster, name: &str, token: &str) -> anyhow::Result<Client> {
    let path = cluster.dir().join(format!("{name}.kubeconfig"));
    cluster.write_kubeconfig(&path, cluster.api_addr(), token)?;
    harness::client_from(&path).await
}

async fn view_port_through_the_pod_proxy(
    cluster: &Cluster,
    speaker: &Speaker,
    admin: &Client,
    ns: &str,
) -> anyhow::Result<()> {
    let pp = PostParams::default();
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    for name in ["ke-viewer", "ke-nobody"] {
        sas.create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": name}}))?,
        )
        .await?;
    }
    Api::<RoleBinding>::namespaced(admin.clone(), SYSTEM_NAMESPACE)
        .create(
            &pp,
            &serde_json::from_value(json!({
                "metadata": {"name": "ke-viewer"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "edgelb-viewer"},
                "subjects": [{"kind": "ServiceAccount", "name": "ke-viewer", "namespace": ns}]}))?,
        )
        .await?;
    let viewer_token = harness::service_account_token(admin, ns, "ke-viewer").await?;
    let nobody_token = harness::service_account_token(admin, ns, "ke-nobody").await?;
    let viewer = client_with(cluster, "ke-viewer", &viewer_token).await?;
    let nobody = client_with(cluster, "ke-nobody", &nobody_token).await?;
    let (pod, pod_ns) = &speaker.pod;
    let path = format!("/api/v1/namespaces/{pod_ns}/pods/https:{pod}:{VIEW_PORT}/proxy/v1/view");

    // Permitted (the RoleBinding may take a moment to reach the authorizer's cache).
    let body = harness::eventually(
        "the viewer gets the view through the pod proxy",
        WAIT,
        || async {
            let (code, body) = get(&viewer, &path, Some(&viewer_token)).await?;
            anyhow::ensure!(code == 200 || code == 403 || code == 503, "{code}: {body}");
            Ok((code == 200).then_some(body))
        },
    )
    .await?;
    let view: Value = serde_json::from_str(&body).with_context(|| format!("the view: {body}"))?;
    ensure!(view["node"] == NODE, "the view is the node's: {body}");

    // Denied by the API server: no pods/proxy grant.
    let (code, body) = get(&nobody, &path, Some(&nobody_token)).await?;
    ensure!(
        code == 403 && body.contains("\"kind\":\"Status\""),
        "the API server refuses ke-nobody's proxy request: {code} {body}"
    );
    // Denied by the speaker: the admin may use the proxy, the token in our header may not.
    let (code, body) = get(admin, &path, Some(&nobody_token)).await?;
    ensure!(
        code == 403
            && body.starts_with(&format!(
                "system:serviceaccount:{ns}:ke-nobody may not get pods/proxy in namespace {SYSTEM_NAMESPACE}"
            )),
        "the speaker refuses ke-nobody's token from X-Edgelb-Authorization: {code} {body}"
    );
    // The proxy removed the admin's Authorization: without our header there is no token.
    let (code, body) = get(admin, &path, None).await?;
    ensure!(
        code == 401 && body.contains("no bearer token"),
        "Authorization does not pass the pod proxy: {code} {body}"
    );

    // Ten more requests with the viewer's token: decided from the cache.
    let before = token_reviews(cluster)?;
    for _ in 0..10 {
        let (code, body) = get(&viewer, &path, Some(&viewer_token)).await?;
        ensure!(code == 200, "{code} {body}");
    }
    let after = token_reviews(cluster)?;
    ensure!(
        after - before <= 1,
        "10 requests with one token made {} TokenReviews",
        after - before
    );
    eprintln!(
        "TokenReviews by the speaker so far: {after} (10 cached requests made {})",
        after - before
    );
    Ok(())
}

async fn scenario(cluster: &Cluster, admin: &Client, ns: &str) -> anyhow::Result<()> {
    let lab = lab()?;
    before_start(admin, ns).await?;
    let mut speaker = speaker_support::deploy_speaker(cluster, &lab.node, NODE, NODE_IP).await?;
    let result = async {
        speaker.publish_pod(cluster, admin).await?;
        bad_objects_are_reported_and_allocation_goes_on(&speaker, admin, ns).await?;
        pass_through_is_refused_on_a_self_announced_pool(admin, ns).await?;
        view_port_through_the_pod_proxy(cluster, &speaker, admin, ns).await
    }
    .await;
    let result = speaker.log_if_failed(result);
    let log = speaker.logs();
    for bad in ["Forbidden", "forbidden", " 403", "panicked"] {
        if result.is_ok() {
            ensure!(!log.contains(bad), "the speaker's log has {bad:?}");
        }
    }
    drop(speaker);
    result
}

async fn cleanup(client: &Client, ns: &str) -> anyhow::Result<()> {
    let sys = Some(SYSTEM_NAMESPACE);
    Speaker::delete_pod(client, SYSTEM_NAMESPACE, &format!("edgelb-speaker-{NODE}")).await?;
    Cleanup::new()
        .add::<Namespace>(client, None, ns)
        .add_dynamic(&pools(client), "ke-good")
        .add_dynamic(&pools(client), "ke-bad")
        .add_dynamic(&routes(client), "ke-bad-route")
        .add_dynamic(&l2(client), "ke-lan")
        .add::<RoleBinding>(client, sys, "ke-viewer")
        .add::<Lease>(client, sys, "edgelb-leader")
        .add::<Node>(client, None, NODE)
        .run(WAIT)
        .await
}

#[tokio::test]
async fn bad_objects_pass_through_and_the_view_port() -> anyhow::Result<()> {
    let Some((cluster, admin)) = harness::cluster_for(TEST).await? else {
        return Ok(());
    };
    // Twice on the same cluster: each run must leave nothing behind.
    for run in 0..2 {
        let ns = format!("ke-run{run}");
        then_clean(
            &format!("run {run}"),
            scenario(cluster, &admin, &ns),
            cleanup(&admin, &ns),
        )
        .await?;
    }
    Ok(())
}
