//! Per-pool entries: self-announced from the per-pool outcomes, cloud from the driver's
//! reports, the Service's union in pool-name order, and the cloud finalizer predicates.

use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::api::annotations::{NODEPOOL_LABEL, NODEPOOL_SELECTOR};
use crate::fixtures::{annotate, facts, regions, scoped_pool, service};
use crate::ipam::allocate;
use crate::snapshot::{Object, Selection, Store};
use k8s_openapi::api::core::v1::Service;

const NS: &str = "edgelb-system";

fn two_regions() -> Store {
    let mut store = Store::default();
    let scoped = [("hefei", "192.0.2.0/30", "np-hefei")];
    let nodes = [
        ("hf-1", "np-hefei"),
        ("cd-1", "np-chengdu"),
        ("bj-1", "np-beijing"),
    ];
    for o in regions(NS, &scoped, "203.0.113.0/30", &nodes) {
        store.apply(o, NS);
    }
    store
}

fn cube(class: Option<&str>) -> Service {
    let mut svc = annotate(
        service("default", "cube", 80),
        NODEPOOL_SELECTOR,
        "apps.openyurt.io/nodepool in (np-hefei,np-chengdu,np-beijing)",
    );
    if let (Some(spec), Some(c)) = (svc.spec.as_mut(), class) {
        spec.load_balancer_class = Some(c.to_string());
    }
    svc
}

fn pools() -> Vec<Arc<str>> {
    vec!["np-hefei".into(), "np-chengdu".into(), "np-beijing".into()]
}

fn ip(i: &LoadBalancerIngress) -> &str {
    i.ip.as_deref().unwrap_or_default()
}

#[test]
fn each_pool_says_whether_it_has_an_address_and_the_union_is_in_pool_name_order() {
    let mut store = two_regions();
    store.apply(
        Object::IPAddressPool(scoped_pool(
            NS,
            "chengdu",
            &["198.51.100.0/30"],
            &["np-chengdu"],
        )),
        NS,
    );
    let svc = cube(None);
    store.apply(Object::Service(svc.clone()), NS);
    let snap = store.snapshot(&Selection::default());
    let a = allocate(&snap, &Assignments::default());
    let key = ObjectKey::new("default", "cube");
    let cloud = CloudReports::default();
    let got = of_service(&snap, &a, &cloud, &key, &facts(&svc), &pools());
    let names: Vec<&str> = got.iter().map(|(p, _)| &**p).collect();
    assert_eq!(names, ["np-beijing", "np-chengdu", "np-hefei"]);
    // np-beijing has no IPAddressPool scoped to it: no address, and the pool is named.
    let (_, bj) = &got[0];
    assert!(bj.ingress.is_empty());
    assert_eq!(bj.reason, ALLOCATION_FAILED);
    assert!(bj.message.contains("np-beijing"), "{}", bj.message);
    let cond = bj.condition(Time(Timestamp::now()), Some(1));
    assert_eq!(
        (cond.status.as_str(), cond.type_.as_str()),
        ("False", CONDITION)
    );
    let (_, cd) = &got[1];
    assert_eq!(cd.reason, ASSIGNED);
    assert_eq!(
        cd.ingress.iter().map(ip).collect::<Vec<_>>(),
        ["198.51.100.0"]
    );
    assert!(cd.message.contains("np-chengdu") && cd.message.contains("chengdu"));
    let (_, hf) = &got[2];
    assert_eq!(hf.ingress.iter().map(ip).collect::<Vec<_>>(), ["192.0.2.0"]);
    assert_eq!(hf.condition(Time(Timestamp::now()), None).status, "True");
    // The Service: chengdu's then hefei's (pool-name order), beijing has none.
    let u = union(got.iter().map(|(_, e)| e));
    assert_eq!(
        u.iter().map(ip).collect::<Vec<_>>(),
        ["198.51.100.0", "192.0.2.0"]
    );
    // The same as the Service status the writer of record derives from the outcomes.
    let merged = a.merged(&key).expect("outcome").expect("some IPs");
    assert_eq!(
        merged
            .ips
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["198.51.100.0", "192.0.2.0"]
    );
}

#[test]
fn a_pool_not_allocated_yet_is_pending_and_a_service_wide_error_is_named_per_pool() {
    let store = two_regions();
    let svc = cube(None);
    let snap = store.snapshot(&Selection::default());
    let key = ObjectKey::new("default", "cube");
    let e = entry(
        &snap,
        &Assignments::default(),
        &CloudReports::default(),
        &key,
        &facts(&svc),
        &"np-hefei".into(),
    );
    assert_eq!(e.reason, PENDING);
    assert!(e.message.contains("np-hefei"));
    let bad = annotate(service("default", "cube", 80), NODEPOOL_SELECTOR, "a in (");
    let mut store = two_regions();
    store.apply(Object::Service(bad.clone()), NS);
    let snap = store.snapshot(&Selection::default());
    let a = allocate(&snap, &Assignments::default());
    let e = entry(
        &snap,
        &a,
        &CloudReports::default(),
        &key,
        &facts(&bad),
        &"np-hefei".into(),
    );
    assert_eq!(e.reason, PENDING);
    assert!(e.message.contains(NODEPOOL_SELECTOR), "{}", e.message);
}

fn cloud_ingress(ip: &str) -> Vec<LoadBalancerIngress> {
    vec![LoadBalancerIngress {
        ip: Some(ip.into()),
        ip_mode: Some("Proxy".into()),
        ..Default::default()
    }]
}

/// The driver reports `ip` for `key`'s load balancer of `pool` (its resources held).
fn cloud_assigned(cloud: &mut CloudReports, key: &ObjectKey, pool: &str, ip: &str) {
    cloud.entries.insert(
        (key.clone(), pool.into()),
        CloudEntry {
            ingress: cloud_ingress(ip),
            holds_resources: true,
            ..Default::default()
        },
    );
}

#[test]
fn a_cloud_class_reads_only_the_drivers_reports() {
    let mut store = two_regions();
    let svc = cube(Some("alibabacloud.com/elb"));
    store.apply(Object::Service(svc.clone()), NS);
    let snap = store.snapshot(&Selection::default());
    // Whatever ipam decided is not used for a cloud class.
    let a = allocate(&snap, &Assignments::default());
    let key = ObjectKey::new("default", "cube");
    let mut cloud = CloudReports::default();
    cloud_assigned(&mut cloud, &key, "np-hefei", "39.106.0.1");
    cloud_assigned(&mut cloud, &key, "np-chengdu", "144.121.0.1");
    cloud.entries.insert(
        (key.clone(), "np-beijing".into()),
        CloudEntry {
            reason: "QuotaExceeded".into(),
            message: "np-beijing: ENS quota".into(),
            holds_resources: false,
            ..Default::default()
        },
    );
    let got = of_service(&snap, &a, &cloud, &key, &facts(&svc), &pools());
    assert_eq!(got[0].1.reason, "QuotaExceeded");
    assert_eq!(got[1].1.reason, CLOUD_ASSIGNED);
    assert_eq!(got[2].1.ingress, cloud_ingress("39.106.0.1"));
    let u = union(got.iter().map(|(_, e)| e));
    assert_eq!(
        u.iter().map(ip).collect::<Vec<_>>(),
        ["144.121.0.1", "39.106.0.1"]
    );
    assert_eq!(cloud_union(&cloud, &key), u);
    // No report for a pool: pending, named.
    let e = entry(
        &snap,
        &a,
        &CloudReports::default(),
        &key,
        &facts(&svc),
        &"np-hefei".into(),
    );
    assert_eq!(e.reason, CLOUD_PENDING);
    assert!(e.message.contains("np-hefei"));
}

/// One self-announced Service, one region behind a cloud load balancer (its NodePool
/// annotated), one announced, one with a wrong class: each pool reads its own source, only
/// the announced pool gets an allocation key, and the union lists both addresses.
#[test]
fn a_self_announced_service_reads_the_cloud_only_in_pools_behind_it() {
    use crate::fixtures::node_pool;
    use crate::nodepool::POOL_CLOUD_CLASS;
    let mut store = two_regions();
    for (np, class) in [
        ("np-chengdu", "alibabacloud.com/elb"),
        ("np-beijing", "alibabacloud.com/clb"),
    ] {
        store.apply(
            Object::NodePool(node_pool(
                np,
                &[(NODEPOOL_LABEL, np)],
                &[(POOL_CLOUD_CLASS, class)],
            )),
            NS,
        );
    }
    let svc = cube(None);
    store.apply(Object::Service(svc.clone()), NS);
    let snap = store.snapshot(&Selection::default());
    let key = ObjectKey::new("default", "cube");
    let keys = crate::ipam::keys_of(crate::ipam::selected_node_pools, &snap, &key, &facts(&svc))
        .expect("keys");
    assert_eq!(
        keys.iter()
            .map(|k| k.node_pool.as_deref().unwrap_or("-"))
            .collect::<Vec<_>>(),
        ["np-hefei"]
    );
    let a = allocate(&snap, &Assignments::default());
    let mut cloud = CloudReports::default();
    cloud_assigned(&mut cloud, &key, "np-chengdu", "144.121.0.1");
    // Every selected pool (in name order), not only those behind the cloud.
    assert_eq!(
        pools_with_a_cloud_entry(&snap, &facts(&svc)).as_deref(),
        Some(&["np-beijing".into(), "np-chengdu".into(), "np-hefei".into()][..])
    );
    let got = of_service(&snap, &a, &cloud, &key, &facts(&svc), &pools());
    let (_, bj) = &got[0];
    assert_eq!(bj.reason, INVALID_POOL_CLASS);
    assert!(bj.message.contains("NodePool np-beijing"), "{}", bj.message);
    assert!(bj.message.contains(POOL_CLOUD_CLASS), "{}", bj.message);
    assert_eq!(got[1].1.reason, CLOUD_ASSIGNED);
    assert_eq!(got[2].1.reason, ASSIGNED);
    let u = union(got.iter().map(|(_, e)| e));
    assert_eq!(
        u.iter().map(ip).collect::<Vec<_>>(),
        ["144.121.0.1", "192.0.2.0"]
    );
    // Without the annotations the same Service is announced in every pool.
    assert!(pools_with_a_cloud_entry(&two_regions_snapshot(&svc), &facts(&svc)).is_none());
}

fn two_regions_snapshot(svc: &Service) -> Snapshot {
    let mut store = two_regions();
    store.apply(Object::Service(svc.clone()), NS);
    store.snapshot(&Selection::default())
}

#[test]
fn the_cloud_finalizer_goes_only_once_a_synced_driver_holds_nothing() {
    let key: PoolKey = (ObjectKey::new("default", "cube"), "np-hefei".into());
    let mut cloud = CloudReports::default();
    assert!(
        !cloud.released(&key),
        "not synced: an empty map proves nothing"
    );
    cloud.synced = true;
    assert!(cloud.released(&key));
    cloud.entries.insert(
        key.clone(),
        CloudEntry {
            holds_resources: true,
            ..Default::default()
        },
    );
    assert!(cloud.holds(&key) && !cloud.released(&key));
    let before = cloud.clone();
    cloud.entries.get_mut(&key).expect("entry").holds_resources = false;
    assert!(cloud.released(&key));
    assert_eq!(cloud.changed_services(&before), vec![key.0.clone()]);
    assert!(cloud.changed_services(&cloud).is_empty());
}

#[test]
fn the_status_body_applies_the_ingress_and_our_condition_only() {
    let e = PoolEntry {
        ingress: cloud_ingress("192.0.2.1"),
        reason: ASSIGNED.into(),
        message: "m".into(),
    };
    let t = Time(Timestamp::UNIX_EPOCH);
    let body = apply_body("cube-np-hefei", &e, t, Some(2));
    assert_eq!(body["kind"], "PoolService");
    assert_eq!(body["apiVersion"], POOLSERVICE_API_VERSION);
    assert_eq!(
        body["status"]["loadBalancer"]["ingress"][0]["ip"],
        "192.0.2.1"
    );
    assert_eq!(body["status"]["conditions"][0]["type"], CONDITION);
    assert_eq!(body["status"]["conditions"][0]["status"], "True");
    assert_eq!(body["status"]["conditions"][0]["observedGeneration"], 2);
    let none = PoolEntry {
        ingress: vec![],
        ..e
    };
    let body = apply_body("x", &none, Time(Timestamp::UNIX_EPOCH), None);
    assert_eq!(body["status"]["loadBalancer"], json!({}));
    assert_eq!(body["status"]["conditions"][0]["status"], "False");
}
