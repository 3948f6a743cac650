use super::*;
use crate::cloud_lb::testing::{World, CLASS, SYSTEM};
use crate::fixtures::endpoint_slice;
use crate::snapshot::Object;
use edgelb_cloud::model::{Ownership, Protocol, SkipReason};
use edgelb_cloud::plan::{ANNOTATION_LB_ID, ANNOTATION_MANAGED_BY_USER};

fn cfg() -> CloudConfig {
    CloudConfig {
        cluster: "c1".into(),
        ..CloudConfig::default()
    }
}

fn world() -> World {
    let mut w = World::new();
    w.pool("hz", &[("k8s-svc", "cube")], "cn-hangzhou-telecom");
    w.pool("cd", &[("k8s-svc", "cube")], "cn-chengdu-telecom");
    w.pool("bj", &[("k8s-svc", "web")], "cn-beijing-telecom");
    w.node("hz-1", "hz", Some("cn-hangzhou-telecom.i-hz1"));
    w.node("hz-2", "hz", None);
    w.node("cd-1", "cd", Some("alicloud://cn-chengdu-telecom.i-cd1"));
    w.service(
        "web",
        "cube",
        "k8s-svc=cube",
        &[(80, "TCP", 30080), (53, "UDP", 30053)],
        &[],
    );
    w.fan_out();
    w
}

#[test]
fn one_plan_per_selected_pool_with_listeners_backends_and_skipped_nodes() {
    let w = world();
    let work = work(&w.snapshot(), &cfg());
    let keys: Vec<String> = work.planned.keys().map(|k| k.to_string()).collect();
    assert_eq!(keys, ["web/cube-cd", "web/cube-hz"]);
    let hz = &work.planned[&ObjectKey::new("web", "cube-hz")];
    assert_eq!(hz.name, "k8s/cube/web/hz/c1");
    assert_eq!(&*hz.pool, "hz");
    let d = hz.outcome.as_ref().expect("planned");
    assert_eq!(d.network.region, "cn-hangzhou-telecom");
    let ports: BTreeMap<_, _> = d
        .listeners
        .iter()
        .map(|(k, s)| (*k, s.backend_port))
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([((Protocol::Tcp, 80), 30080), ((Protocol::Udp, 53), 30053)])
    );
    assert_eq!(d.backends, BTreeMap::from([("i-hz1".to_string(), 100)]));
    assert_eq!(d.skipped.len(), 1);
    assert_eq!(d.skipped[0].node, "hz-2");
    assert_eq!(d.skipped[0].reason, SkipReason::NoProviderId);
    assert_eq!(d.target.ownership, Ownership::Managed);
    let cd = work.planned[&ObjectKey::new("web", "cube-cd")]
        .outcome
        .clone()
        .expect("planned");
    assert_eq!(cd.backends, BTreeMap::from([("i-cd1".to_string(), 100)]));
    assert_eq!(
        work.regions(),
        BTreeSet::from([
            "cn-chengdu-telecom".to_string(),
            "cn-hangzhou-telecom".to_string()
        ])
    );
    assert!(work.kept_names().contains("k8s/cube/web/cd/c1"));
}

#[test]
fn local_policy_keeps_only_nodes_with_a_ready_endpoint() {
    let mut w = world();
    w.node("hz-3", "hz", Some("cn-hangzhou-telecom.i-hz3"));
    let snap = w.snapshot();
    drop(snap);
    w.edit_service("web", "cube", |svc| {
        svc.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
    });
    w.store.apply(
        Object::EndpointSlice(endpoint_slice(
            "web",
            "cube",
            "cube-1",
            ["hz-3".to_string()],
        )),
        "edgelb-system",
    );
    let work = work(&w.snapshot(), &cfg());
    let d = work.planned[&ObjectKey::new("web", "cube-hz")]
        .outcome
        .clone()
        .expect("planned");
    assert_eq!(d.backends.keys().collect::<Vec<_>>(), ["i-hz3"]);
    assert!(d
        .skipped
        .iter()
        .any(|s| s.node == "hz-1" && s.reason == SkipReason::NoLocalEndpoint));
}

#[test]
fn the_lifecycle_rules_drop_the_plan() {
    // Pool relabelled.
    let mut w = world();
    w.pool("cd", &[("k8s-svc", "none")], "cn-chengdu-telecom");
    w.fan_out();
    let keys: Vec<String> = work(&w.snapshot(), &cfg())
        .planned
        .keys()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(keys, ["web/cube-hz"]);
    // Pool deleted.
    w.delete_pool("hz");
    w.delete_node("hz-1");
    w.delete_node("hz-2");
    w.fan_out();
    assert!(work(&w.snapshot(), &cfg()).planned.is_empty());
    // Service deleted.
    let mut w = world();
    w.delete_service("web", "cube");
    w.fan_out();
    assert!(work(&w.snapshot(), &cfg()).planned.is_empty());
}

#[test]
fn self_announced_classes_are_not_planned() {
    let mut w = World::new();
    w.selection.class = "edgelb.io/speaker".into();
    w.pool("hz", &[("k8s-svc", "cube")], "cn-hangzhou-telecom");
    w.node("hz-1", "hz", Some("cn-hangzhou-telecom.i-hz1"));
    let mut svc = crate::fixtures::service("web", "cube", 80);
    svc.metadata.annotations = Some(BTreeMap::from([(
        crate::api::annotations::NODEPOOL_SELECTOR.to_string(),
        "k8s-svc=cube".to_string(),
    )]));
    w.store.apply(Object::Service(svc), "edgelb-system");
    w.fan_out();
    let snap = w.snapshot();
    assert_eq!(
        snap.pool_services.len(),
        1,
        "the fan-out made its PoolService"
    );
    assert!(work(&snap, &cfg()).planned.is_empty());
}

#[test]
fn a_users_load_balancer_is_shared_only_with_cluster_policy() {
    let mut w = world();
    w.service(
        "web",
        "shop",
        "k8s-svc=cube",
        &[(443, "TCP", 30443)],
        &[(ANNOTATION_MANAGED_BY_USER, "true")],
    );
    w.edit_service("web", "cube", |cube| {
        cube.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ANNOTATION_MANAGED_BY_USER.into(), "true".into());
    });
    w.fan_out();
    w.annotate_pool_service("web", "cube-hz", &[(ANNOTATION_LB_ID, "lb-user")]);
    w.annotate_pool_service("web", "shop-hz", &[(ANNOTATION_LB_ID, "lb-user")]);
    let got = work(&w.snapshot(), &cfg());
    let d = got.planned[&ObjectKey::new("web", "shop-hz")]
        .outcome
        .clone()
        .expect("planned");
    assert_eq!(
        d.target.ownership,
        Ownership::UserManaged {
            lb_id: "lb-user".into(),
            manage_listeners: false
        }
    );
    assert_eq!(d.target.shared_with, ["web/cube"]);
    // Local on one of them: refused, naming the others.
    w.edit_service("web", "cube", |cube| {
        cube.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
    });
    let got = work(&w.snapshot(), &cfg());
    let err = got.planned[&ObjectKey::new("web", "cube-hz")]
        .outcome
        .clone()
        .expect_err("Local with a shared load balancer");
    assert!(
        err.to_string().contains("lb-user") && err.to_string().contains("web/shop"),
        "{err}"
    );
}

#[test]
fn the_configured_region_fills_a_pool_without_one() {
    let mut w = World::new();
    let p = crate::fixtures::node_pool(
        "edge",
        &[("k8s-svc", "cube")],
        &[
            ("alibabacloud.com/ens-network-id", "n-1"),
            ("alibabacloud.com/ens-vswitch-id", "vsw-1"),
        ],
    );
    w.store.apply(Object::NodePool(p), "edgelb-system");
    w.service("web", "cube", "k8s-svc=cube", &[(80, "TCP", 30080)], &[]);
    w.fan_out();
    let snap = w.snapshot();
    let planned = &work(&snap, &cfg()).planned[&ObjectKey::new("web", "cube-edge")];
    let err = planned.outcome.clone().expect_err("no region");
    assert!(
        err.to_string().contains("alibabacloud.com/ens-region-id"),
        "{err}"
    );
    let with = CloudConfig {
        region: Some("cn-wuhan-telecom".into()),
        ..cfg()
    };
    let d = work(&snap, &with).planned[&ObjectKey::new("web", "cube-edge")]
        .outcome
        .clone()
        .expect("planned");
    assert_eq!(d.network.region, "cn-wuhan-telecom");
}

#[test]
fn only_this_clusters_names_are_ours() {
    assert!(is_our_name("k8s/cube/web/hz/c1", "c1"));
    assert!(!is_our_name("k8s/cube/web/hz/c2", "c1"));
    assert!(!is_our_name("k8s/cube/web/c1", "c1"));
    assert!(!is_our_name("k8s//web/hz/c1", "c1"));
    assert!(!is_our_name("my-own-lb", "c1"));
}

#[test]
fn a_pool_service_going_is_doomed_with_what_to_delete() {
    use crate::status::pool_ingress::{CloudEntry, CloudReports};
    let mut w = world();
    // The driver holds resources for both pools: the fan-out puts the finalizer on.
    let holds = |svc: &str, pool: &str| {
        (
            (ObjectKey::new("web", svc), Arc::<str>::from(pool)),
            CloudEntry {
                holds_resources: true,
                ..CloudEntry::default()
            },
        )
    };
    let reports = CloudReports {
        synced: true,
        entries: BTreeMap::from([holds("cube", "hz"), holds("cube", "cd")]),
    };
    w.fan_out_with(Some(&reports));
    let snap = w.snapshot();
    let got = work(&snap, &cfg());
    assert!(got.planned.values().all(|p| p.finalized));
    assert!(got.doomed.is_empty());
    // The pool's labels stop matching: its PoolService is marked deleted, and stays.
    w.pool("cd", &[("k8s-svc", "none")], "cn-chengdu-telecom");
    w.fan_out_with(Some(&reports));
    let got = work(&w.snapshot(), &cfg());
    assert_eq!(got.planned.len(), 1);
    let d = &got.doomed[&ObjectKey::new("web", "cube-cd")];
    assert_eq!(d.name, "k8s/cube/web/cd/c1");
    let t = d.target.clone().expect("a target");
    assert_eq!(t.region, "cn-chengdu-telecom");
    assert_eq!(t.ownership, Ownership::Managed);
    assert!(got.kept_names().contains("k8s/cube/web/cd/c1"));
    // Released: the finalizer goes, then the PoolService.
    let released = CloudReports {
        synced: true,
        entries: BTreeMap::from([holds("cube", "hz")]),
    };
    w.fan_out_with(Some(&released));
    let got = work(&w.snapshot(), &cfg());
    assert!(got.doomed.is_empty());
    assert_eq!(w.snapshot().pool_services.len(), 1);
}

/// A self-announced Service over two pools, one annotated as behind the cloud load
/// balancer: only that pool is planned; a PoolService of the other pool is never doomed
/// (it never carried the cloud finalizer).
#[test]
fn a_self_announced_service_is_planned_only_in_pools_behind_the_cloud() {
    use crate::api::annotations::DEFAULT_LOAD_BALANCER_CLASS;
    use crate::nodepool::POOL_CLOUD_CLASS;
    let mut w = World::new();
    w.selection.class = DEFAULT_LOAD_BALANCER_CLASS.into();
    w.pool("hz", &[("k8s-svc", "cube")], "cn-hangzhou-telecom");
    w.pool("cd", &[("k8s-svc", "cube")], "cn-chengdu-telecom");
    w.node("hz-1", "hz", Some("cn-hangzhou-telecom.i-hz1"));
    w.node("cd-1", "cd", Some("cn-chengdu-telecom.i-cd1"));
    let mut cd = (**w.snapshot().node_pool_objects.get("cd").expect("cd")).clone();
    cd.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(POOL_CLOUD_CLASS.into(), CLASS.into());
    w.store.apply(Object::NodePool(cd), SYSTEM);
    w.service("web", "cube", "k8s-svc=cube", &[(80, "TCP", 30080)], &[]);
    // World's Services are of the cloud class: make this one the speakers' own.
    w.edit_service("web", "cube", |svc| {
        svc.spec.as_mut().expect("spec").load_balancer_class =
            Some(DEFAULT_LOAD_BALANCER_CLASS.into());
    });
    w.fan_out();
    let got = work(&w.snapshot(), &cfg());
    let keys: Vec<String> = got.planned.keys().map(|k| k.to_string()).collect();
    assert_eq!(keys, ["web/cube-cd"]);
    assert_eq!(
        got.planned[&ObjectKey::new("web", "cube-cd")].name,
        "k8s/cube/web/cd/c1"
    );
    // hz relabelled away: its PoolService goes, but nothing of the cloud was ever made for it.
    w.pool("hz", &[("k8s-svc", "other")], "cn-hangzhou-telecom");
    let after = work(&w.snapshot(), &cfg());
    assert!(
        after.doomed.is_empty(),
        "{:?}",
        after.doomed.keys().collect::<Vec<_>>()
    );
    assert_eq!(after.planned.len(), 1);
}

#[test]
fn health_check_annotations_reach_each_listener_and_a_bad_one_stops_only_its_service() {
    use edgelb_cloud::health::{
        ANNOTATION_HEALTHY_THRESHOLD, ANNOTATION_HEALTH_CHECK_INTERVAL,
        ANNOTATION_HEALTH_CHECK_TYPE, ANNOTATION_HEALTH_CHECK_URI,
    };
    let mut w = world();
    w.service(
        "web",
        "cube",
        "k8s-svc=cube",
        &[(80, "TCP", 30080), (53, "UDP", 30053)],
        &[
            (ANNOTATION_HEALTHY_THRESHOLD, "5"),
            (ANNOTATION_HEALTH_CHECK_TYPE, "http"),
            (ANNOTATION_HEALTH_CHECK_URI, "/healthz"),
        ],
    );
    w.service(
        "web",
        "bad",
        "k8s-svc=web",
        &[(80, "TCP", 30081)],
        &[(ANNOTATION_HEALTH_CHECK_INTERVAL, "60")],
    );
    w.fan_out();
    let work = work(&w.snapshot(), &cfg());
    let d = work.planned[&ObjectKey::new("web", "cube-hz")]
        .outcome
        .clone()
        .expect("planned");
    let tcp = &d.listeners[&(Protocol::Tcp, 80)].health;
    assert_eq!(tcp.healthy_threshold, 5);
    assert_eq!(
        tcp.http.as_ref().and_then(|h| h.uri.as_deref()),
        Some("/healthz")
    );
    // UDP listeners keep their UDP probe, with the same thresholds.
    let udp = &d.listeners[&(Protocol::Udp, 53)].health;
    assert_eq!((udp.healthy_threshold, udp.http.is_some()), (5, false));
    let err = work.planned[&ObjectKey::new("web", "bad-bj")]
        .outcome
        .clone()
        .expect_err("out of range");
    let text = err.to_string();
    assert!(
        text.contains("web/bad")
            && text.contains(ANNOTATION_HEALTH_CHECK_INTERVAL)
            && text.contains("\"60\"")
            && text.contains("from 1 to 50"),
        "{text}"
    );
    assert!(work.regions().contains("cn-hangzhou-telecom"));
}
